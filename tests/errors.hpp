// Helpers for tests of error messages.
#pragma once

#include <string>

#include "varnet/core/error.hpp"

namespace varnet::test {

// The message of the varnet::Error that f throws ("" when it throws none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const varnet::Error& e) {
    return e.what();
  }
  return "";
}

inline bool has(const std::string& message, const std::string& part) {
  return message.find(part) != std::string::npos;
}

}  // namespace varnet::test
