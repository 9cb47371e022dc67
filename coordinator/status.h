// Outcomes of coordinator operations, independent of any front door (gRPC maps them to its
// status codes, HTTP to its status numbers).
#pragma once
#include <string>

#include "base/error.h"

namespace pipellm::coord {

enum class Code { Ok, InvalidArgument, ResourceExhausted, Unavailable, Cancelled, DeadlineExceeded, Internal };
const char* code_name(Code c);

// A refused request: the code says which, the message names the parameter or limit.
class RequestError : public Error {
 public:
  RequestError(Code code, const std::string& message) : Error(message), code_(code) {}
  Code code() const { return code_; }

 private:
  Code code_;
};

}  // namespace pipellm::coord
