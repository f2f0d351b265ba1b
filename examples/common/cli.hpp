// A small command-line parser for the examples: --flag value pairs and boolean --switches, with
// errors that name the flag, what was expected and what was found. No dependency beyond C++17.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "varnet/core/error.hpp"

namespace varnet::cli {

class Args {
 public:
  // `valued`: flags that take a value; `switches`: flags that do not.
  Args(int argc, char** argv, const std::set<std::string>& valued,
       const std::set<std::string>& switches) {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      check(a.rfind("--", 0) == 0, "command line", "a flag starting with --", "'" + a + "'");
      if (switches.count(a)) {
        switches_.insert(a);
        continue;
      }
      check(valued.count(a) > 0, "command line", "a known flag (see --help)", "'" + a + "'");
      check(i + 1 < argc, a, "a value after it", "the end of the command line");
      check(!values_.count(a), a, "the flag once", "it twice");
      values_[a] = argv[++i];
    }
  }

  bool has(const std::string& f) const { return switches_.count(f) || values_.count(f); }
  std::string get(const std::string& f, const std::string& dflt) const {
    auto it = values_.find(f);
    return it == values_.end() ? dflt : it->second;
  }
  int64_t get_int(const std::string& f, int64_t dflt, int64_t lo, int64_t hi) const {
    auto it = values_.find(f);
    if (it == values_.end()) return dflt;
    return parse_int(f, it->second, lo, hi);
  }
  double get_double(const std::string& f, double dflt, double lo, double hi) const {
    auto it = values_.find(f);
    if (it == values_.end()) return dflt;
    char* end = nullptr;
    const double v = std::strtod(it->second.c_str(), &end);
    check(end && *end == '\0' && !it->second.empty() && v >= lo && v <= hi, f,
          str("a number in [", lo, ", ", hi, "]"), "'", it->second, "'");
    return v;
  }
  // "1,2,3" -> {1, 2, 3}; "" or "none" -> {}.
  std::vector<int64_t> get_int_list(const std::string& f, const std::string& dflt, int64_t lo,
                                    int64_t hi) const {
    const std::string s = get(f, dflt);
    std::vector<int64_t> out;
    if (s.empty() || s == "none") return out;
    size_t start = 0;
    while (start <= s.size()) {
      const size_t comma = s.find(',', start);
      const std::string part =
          s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      out.push_back(parse_int(f, part, lo, hi));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    return out;
  }
  std::string get_choice(const std::string& f, const std::string& dflt,
                         const std::vector<std::string>& choices) const {
    const std::string v = get(f, dflt);
    std::string list;
    for (const auto& c : choices) {
      if (c == v) return v;
      list += (list.empty() ? "" : "|") + c;
    }
    fail(f, "one of " + list, "'" + v + "'");
  }

 private:
  static int64_t parse_int(const std::string& f, const std::string& s, int64_t lo, int64_t hi) {
    char* end = nullptr;
    errno = 0;  // strtoll clamps a value out of its range to LLONG_MIN or LLONG_MAX
    const long long v = std::strtoll(s.c_str(), &end, 10);
    check(end && *end == '\0' && !s.empty() && errno != ERANGE && v >= lo && v <= hi, f,
          str("an integer in [", lo, ", ", hi, "]"), "'", s, "'");
    return v;
  }
  std::map<std::string, std::string> values_;
  std::set<std::string> switches_;
};

// Output paths are checked before any work, so that a long run never fails at its end: `path`
// must lie in an existing directory...
inline void check_in_existing_directory(const std::string& flag, const std::string& path) {
  const std::filesystem::path p(path);
  check(std::filesystem::is_directory(p.has_parent_path() ? p.parent_path() : "."), flag,
        "a path in an existing directory", "'" + path + "'");
}

// ...and, unless `overwrite` (--overwrite), not exist yet: an earlier result is never replaced
// silently.
inline void check_new_file(const std::string& flag, const std::string& path, bool overwrite) {
  check_in_existing_directory(flag, path);
  check(overwrite || !std::filesystem::exists(path), flag,
        "a path that does not exist yet (or --overwrite)", "an existing file '" + path + "'");
}

// An example's main: runs `body`, and turns errors into a message on stderr and an exit status
// (2: bad input, with what was expected and what was found; 3: anything else).
template <class Body>
int run_main(const char* program, Body&& body) {
  try {
    return body();
  } catch (const Error& e) {
    std::cerr << program << ": error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << program << ": unexpected error: " << e.what() << "\n";
    return 3;
  }
}

}  // namespace varnet::cli
