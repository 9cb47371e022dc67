// Streams generated text while watching for stop strings: text that could still become the
// start of a stop string is held back until it cannot, and a found stop string (and anything
// after it) is never emitted.
#pragma once
#include <string>
#include <vector>

namespace pipellm {

class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops);

  // Adds a piece of text; returns the text that is now safe to emit. After a stop string is
  // found, stopped() is true and later calls return "".
  std::string push(const std::string& piece);
  // The held-back text, at the end of generation (no stop string followed).
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace pipellm
