// Test helper for the HTTP request parsers: the ApiError a call is refused with (a test failure
// when it is not refused).
#pragma once
#include <gtest/gtest.h>

#include <functional>

#include "coordinator/http_openai.h"

namespace pipellm::coord {

inline ApiError refusal_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const HttpError& e) {
    return e.error();
  }
  ADD_FAILURE() << "no refusal";
  return {};
}

}  // namespace pipellm::coord
