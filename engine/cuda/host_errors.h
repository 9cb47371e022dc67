// An exception met inside a CUDA host function (cudaLaunchHostFunc), which cannot throw through
// CUDA: recorded there, thrown on the stage's thread after the stream ran the step.
#pragma once
#include <mutex>
#include <string>

#include "base/error.h"

namespace pipellm::cuda {

class HostErrors {
 public:
  // The first message since the last rethrow() is kept.
  void record(const std::string& message) {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (error_.empty()) error_ = message;
  }
  // Throws Error with the recorded message, if any, and forgets it.
  void rethrow() {
    std::string e;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      e.swap(error_);
    }
    if (!e.empty()) throw Error(e);
  }

 private:
  std::mutex mutex_;
  std::string error_;
};

}  // namespace pipellm::cuda
