// The examples' command-line parser (examples/common/cli.hpp) on its own: every flag it accepts
// means what it says, and everything else is refused with the flag, what was expected and what
// was found. The programs' CLI tests run it end to end; these reach the cases one by one.
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../examples/common/cli.hpp"
#include "catch.hpp"
#include "errors.hpp"
#include "mnist_fixture.hpp"

namespace {

using varnet::cli::Args;
using varnet::test::error_of;
using varnet::test::has;

const std::set<std::string> kValued = {"--epochs", "--lr", "--seed", "--samples", "--dist"};
const std::set<std::string> kSwitches = {"--overwrite", "--help"};

// Args over `words` (the program name is added in front).
Args parse(std::vector<std::string> words) {
  words.insert(words.begin(), "program");
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  return Args(int(argv.size()), argv.data(), kValued, kSwitches);
}

// The error of parsing `words`, or of reading them back with `read`.
template <class Read>
std::string error_reading(const std::vector<std::string>& words, Read&& read) {
  return error_of([&] { read(parse(words)); });
}

std::string int_error(const std::string& value, int64_t lo = 1, int64_t hi = 100) {
  return error_reading({"--epochs", value},
                       [&](const Args& a) { a.get_int("--epochs", 5, lo, hi); });
}

std::string double_error(const std::string& value) {
  return error_reading({"--lr", value},
                       [](const Args& a) { a.get_double("--lr", 1e-3, 1e-12, 10); });
}

std::string list_error(const std::string& value) {
  return error_reading({"--samples", value},
                       [](const Args& a) { a.get_int_list("--samples", "1", 1, 1000); });
}

}  // namespace

TEST_CASE("cli::Args reads valued flags and switches, and defaults the rest", "[cli]") {
  const Args a = parse({"--epochs", "7", "--overwrite", "--lr", "0.25", "--samples", "1,10,100"});
  CHECK(a.has("--epochs"));
  CHECK(a.has("--overwrite"));
  CHECK_FALSE(a.has("--help"));
  CHECK_FALSE(a.has("--seed"));
  CHECK(a.get_int("--epochs", 5, 1, 100) == 7);
  CHECK(a.get_int("--seed", 42, 0, 100) == 42);
  CHECK(a.get_double("--lr", 1e-3, 1e-12, 10) == 0.25);
  CHECK(a.get_int_list("--samples", "1", 1, 1000) == std::vector<int64_t>{1, 10, 100});
  CHECK(a.get_int_list("--dist", "", 1, 4).empty());
  CHECK(parse({"--samples", "none"}).get_int_list("--samples", "1", 1, 1000).empty());
  CHECK(a.get_choice("--dist", "gaussian", {"gaussian", "uniform"}) == "gaussian");
  CHECK(parse({"--dist", "uniform"}).get_choice("--dist", "gaussian", {"gaussian", "uniform"}) ==
        "uniform");
  // The range's ends are inside it.
  CHECK(parse({"--epochs", "1"}).get_int("--epochs", 5, 1, 100) == 1);
  CHECK(parse({"--epochs", "100"}).get_int("--epochs", 5, 1, 100) == 100);
  CHECK(parse({"--seed", "9223372036854775807"}).get_int("--seed", 0, 0, INT64_MAX) == INT64_MAX);
  CHECK(parse({"--lr", "10"}).get_double("--lr", 1e-3, 1e-12, 10) == 10);
}

TEST_CASE("cli::Args refuses words that are not known flags with their values", "[cli]") {
  SECTION("a stray word (a value without its flag)") {
    const std::string e = error_of([] { parse({"--epochs", "3", "5"}); });
    CHECK(has(e, "command line: expected a flag starting with --, found '5'"));
  }
  SECTION("an unknown or misspelt flag, even with a value after it") {
    const std::string e = error_of([] { parse({"--epoch", "3"}); });
    CHECK(has(e, "command line: expected a known flag (see --help), found '--epoch'"));
  }
  SECTION("a valued flag at the end without its value") {
    const std::string e = error_of([] { parse({"--overwrite", "--epochs"}); });
    CHECK(has(e, "--epochs: expected a value after it, found the end of the command line"));
  }
  SECTION("a flag given twice") {
    const std::string e = error_of([] {
      parse({"--epochs", "3", "--lr", "0.1", "--epochs", "4"});
    });
    CHECK(has(e, "--epochs: expected the flag once, found it twice"));
  }
  SECTION("a switch is not given a value") {
    const std::string e = error_of([] { parse({"--overwrite", "yes"}); });
    CHECK(has(e, "found 'yes'"));
  }
}

TEST_CASE("cli::Args::get_int takes whole decimal integers in range only", "[cli]") {
  const std::string expected = "--epochs: expected an integer in [1, 100], found ";
  CHECK(has(int_error("0"), expected + "'0'"));
  CHECK(has(int_error("101"), expected + "'101'"));
  CHECK(has(int_error("-3"), expected + "'-3'"));
  CHECK(has(int_error("3x"), expected + "'3x'"));
  CHECK(has(int_error("2.5"), expected + "'2.5'"));
  CHECK(has(int_error(""), expected + "''"));
  CHECK(has(int_error("", 0, 100), "expected an integer in [0, 100], found ''"));
  CHECK(has(int_error("ten"), expected + "'ten'"));
  // Past int64: strtoll clamps to INT64_MAX, which the range [0, INT64_MAX] would accept.
  CHECK(has(int_error("99999999999999999999", 0, INT64_MAX), "found '99999999999999999999'"));
  CHECK(has(int_error("-99999999999999999999", INT64_MIN, 0), "found '-99999999999999999999'"));
}

TEST_CASE("cli::Args::get_double takes finite numbers in range only", "[cli]") {
  const std::string expected = "--lr: expected a number in [1e-12, 10], found ";
  CHECK(has(double_error("0"), expected + "'0'"));
  CHECK(has(double_error("10.5"), expected + "'10.5'"));
  CHECK(has(double_error("100"), expected + "'100'"));
  CHECK(has(double_error("nan"), expected + "'nan'"));
  CHECK(has(double_error("inf"), expected + "'inf'"));
  CHECK(has(double_error("0.01x"), expected + "'0.01x'"));
  CHECK(has(double_error(""), expected + "''"));
  CHECK(double_error("1e-3").empty());
}

TEST_CASE("cli::Args::get_int_list refuses empty items and items out of range", "[cli]") {
  const std::string expected = "--samples: expected an integer in [1, 1000], found ";
  CHECK(has(list_error("1,4,"), expected + "''"));
  CHECK(has(list_error(",1"), expected + "''"));
  CHECK(has(list_error("1,,4"), expected + "''"));
  CHECK(has(list_error("1,0"), expected + "'0'"));
  CHECK(has(list_error("1,1001"), expected + "'1001'"));
  CHECK(has(list_error("1;4"), expected + "'1;4'"));
}

TEST_CASE("cli::Args::get_choice names the choices", "[cli]") {
  const std::string e = error_reading({"--dist", "cauchy"}, [](const Args& a) {
    a.get_choice("--dist", "gaussian", {"gaussian", "bernoulli", "uniform"});
  });
  CHECK(has(e, "--dist: expected one of gaussian|bernoulli|uniform, found 'cauchy'"));
}

TEST_CASE("cli::check_new_file: an existing directory, and no earlier file without --overwrite",
          "[cli]") {
  namespace fs = std::filesystem;
  fixture::TempDir dir("varnet_cli_args_");
  const std::string fresh = (dir.path / "model.safetensors").string();
  const std::string old = (dir.path / "old.csv").string();
  std::ofstream(old) << "earlier result\n";

  CHECK(error_of([&] { varnet::cli::check_new_file("--save", fresh, false); }).empty());
  CHECK(error_of([&] { varnet::cli::check_new_file("--save", old, true); }).empty());
  const std::string exists = error_of([&] { varnet::cli::check_new_file("--csv", old, false); });
  CHECK(has(exists,
            "--csv: expected a path that does not exist yet (or --overwrite), found an "
            "existing file '" +
                old + "'"));
  const std::string missing = (dir.path / "nowhere" / "model.safetensors").string();
  for (bool overwrite : {false, true}) {
    const std::string e =
        error_of([&] { varnet::cli::check_new_file("--save", missing, overwrite); });
    CHECK(has(e, "--save: expected a path in an existing directory, found '" + missing + "'"));
  }
  // A bare file name lies in the working directory.
  CHECK(error_of([&] { varnet::cli::check_in_existing_directory("--png", "plot.png"); }).empty());
  CHECK(fs::exists(old));  // checked, never touched
}

TEST_CASE("cli::run_main: exit status 2 for bad input, 3 for anything else", "[cli]") {
  CHECK(varnet::cli::run_main("program", [] { return 0; }) == 0);
  CHECK(varnet::cli::run_main("program", [] { return 7; }) == 7);
  CHECK(varnet::cli::run_main("program",
                              []() -> int { varnet::fail("--epochs", "an integer", "'x'"); }) == 2);
  CHECK(varnet::cli::run_main("program", []() -> int { throw std::runtime_error("disk"); }) == 3);
}
