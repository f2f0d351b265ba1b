// Catch2 v2/v3 compatibility: tests include this instead of a Catch2 header.
#pragma once

#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#include <string>
// v3's name for v2's Contains string matcher.
namespace Catch::Matchers {
inline StdString::ContainsMatcher ContainsSubstring(const std::string& s) {
  return Contains(s);
}
}  // namespace Catch::Matchers
#endif
