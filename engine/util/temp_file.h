// A file written once and removed when its owner goes: the coordinator's generated pipeline
// config lives as long as the stages that read it may be (re)launched.
#pragma once
#include <string>

namespace pipellm {

class TempFile {
 public:
  // Creates $TMPDIR/<prefix>XXXXXX<suffix> (mode 0600) holding `content`. Throws Error naming
  // the path on failure.
  TempFile(const std::string& prefix, const std::string& suffix, const std::string& content);
  ~TempFile();
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace pipellm
