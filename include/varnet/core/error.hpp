// varnet::Error and the checks that raise it.
//
// Preconditions a user can violate (shapes, files, arguments) throw varnet::Error whose message
// says where it happened, what was expected and what was found. Internal invariants use assert.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace varnet {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
inline void append(std::ostringstream&) {}
template <class First, class... Rest>
void append(std::ostringstream& os, First&& first, Rest&&... rest) {
  os << std::forward<First>(first);
  append(os, std::forward<Rest>(rest)...);
}
}  // namespace detail

// Concatenates any streamable values into a string: str("layer ", 3, ": ", shape).
template <class... Args>
std::string str(Args&&... args) {
  std::ostringstream os;
  detail::append(os, std::forward<Args>(args)...);
  return os.str();
}

// Throws "<where>: expected <expected>, found <found>".
[[noreturn]] inline void fail(const std::string& where, const std::string& expected,
                              const std::string& found) {
  throw Error(where + ": expected " + expected + ", found " + found);
}

// Checks a user-facing precondition; the message pieces are only built when it fails. `where`
// and `expected` are taken as they come (string literals stay pointers), so that a passing check
// allocates nothing: checks run inside training steps.
template <class Cond, class Where, class Expected, class... Args>
void check(const Cond& ok, const Where& where, const Expected& expected, Args&&... found) {
  if (!ok) fail(str(where), str(expected), str(std::forward<Args>(found)...));
}

}  // namespace varnet
