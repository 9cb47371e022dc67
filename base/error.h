// Errors carry their context (file, tensor, key, byte offset) in the message.
#pragma once
#include <stdexcept>
#include <string>

namespace pipellm {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A bad input file (GGUF structure, metadata, tensor layout).
class FormatError : public Error {
 public:
  using Error::Error;
};

// A caller asked for something invalid (flag, request parameter, config value).
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

}  // namespace pipellm
