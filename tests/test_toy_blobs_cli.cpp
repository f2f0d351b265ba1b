// The toy_blobs example (E6) end to end at a small size: it trains, writes the activation CSV and
// the plot, refuses to replace them without --overwrite (and replaces them with it), and rejects
// bad arguments. The executable's path comes from VARNET_TOY_BLOBS (set by CMake); without it the
// test is skipped with a warning.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "catch.hpp"
#include "mnist_fixture.hpp"

namespace fs = std::filesystem;

TEST_CASE("toy_blobs: trains, writes its outputs, never replaces them silently", "[cli]") {
  if (!std::getenv("VARNET_TOY_BLOBS")) {
    WARN("VARNET_TOY_BLOBS is not set: toy_blobs CLI test skipped");
    return;
  }
  fixture::TempDir dir("varnet_toy_blobs_");
  const fs::path log = dir.path / "log.txt", csv = dir.path / "a.csv", png = dir.path / "a.png";
  const auto run = [&](const std::string& args) {
    return fixture::run_program("VARNET_TOY_BLOBS", args, log);
  };
  const std::string args = "--points 50 --epochs 2 --batch 20 --samples 1,10 --csv " +
                           csv.string() + " --png " + png.string();
  const auto ok = run(args);
  INFO(ok.out);
  REQUIRE(ok.status == 0);
  CHECK(fs::file_size(png) > 1000);
  std::ifstream in(csv);
  std::string header;
  std::getline(in, header);
  CHECK(header == "class,point,sample,a1,a2");
  const auto csv_size = fs::file_size(csv);

  // Earlier results stay as they were without --overwrite; with it they are written again.
  const auto again = run(args);
  CHECK(again.status == 2);
  CHECK(again.out.find("--overwrite") != std::string::npos);
  CHECK(fs::file_size(csv) == csv_size);
  CHECK(run(args + " --overwrite").status == 0);

  const auto bad = run("--epochs 0 --csv " + (dir.path / "b.csv").string());
  CHECK(bad.status == 2);
  CHECK(bad.out.find("--epochs") != std::string::npos);
  const auto nowhere = run("--csv " + (dir.path / "missing" / "c.csv").string());
  CHECK(nowhere.status == 2);
  CHECK(nowhere.out.find("a path in an existing directory") != std::string::npos);
}
