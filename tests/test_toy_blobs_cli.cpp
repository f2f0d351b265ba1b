// The toy_blobs example (E6) end to end at a small size: it trains, writes the activation CSV and
// the plot, refuses to replace them without --overwrite (and replaces them with it), and rejects
// bad arguments. The executable's path comes from VARNET_TOY_BLOBS (set by CMake); without it the
// test is skipped with a warning.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

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
  // The plot is protected too, without the CSV beside it.
  fs::remove(csv);
  const auto png_only = run(args);
  CHECK(png_only.status == 2);
  CHECK(png_only.out.find("--png") != std::string::npos);
  CHECK(!fs::exists(csv));

  const auto bad = run("--epochs 0 --csv " + (dir.path / "b.csv").string());
  CHECK(bad.status == 2);
  CHECK(bad.out.find("--epochs") != std::string::npos);
  const auto nowhere = run("--csv " + (dir.path / "missing" / "c.csv").string());
  CHECK(nowhere.status == 2);
  CHECK(nowhere.out.find("a path in an existing directory") != std::string::npos);
}

// PAPER.md E6 at the example's default size (2,000 points a set, 60 epochs, about 2 s): the
// variance layer's activations have mean 0 for every class, so mean propagation gives every test
// point the same class (0.25 on 4 balanced classes), while ensembles of sampled networks classify
// the blobs; the classes differ in the spread of their activations.
TEST_CASE("toy_blobs: mean propagation at chance, ensembles accurate, spread carries the class",
          "[cli]") {
  if (!std::getenv("VARNET_TOY_BLOBS")) {
    WARN("VARNET_TOY_BLOBS is not set: toy_blobs CLI test skipped");
    return;
  }
  fixture::TempDir dir("varnet_toy_blobs_e6_");
  const fs::path csv = dir.path / "a.csv";
  const auto r = fixture::run_program("VARNET_TOY_BLOBS",
                                      "--samples 1,10 --act-samples 2 --csv " + csv.string() +
                                          " --png " + (dir.path / "a.png").string(),
                                      dir.path / "log.txt");
  INFO(r.out);
  REQUIRE(r.status == 0);
  CHECK(fixture::json_number(r.out, "test_acc_mean") == 0.25);
  CHECK(fixture::json_number(r.out, "test_acc_10") > 0.95);
  CHECK(fixture::json_number(r.out, "test_acc_10") >= fixture::json_number(r.out, "test_acc_1"));

  // class,point,sample,a1,a2: two samples of each of the 2,000 test points, classes 0-3 in turn.
  std::ifstream in(csv);
  std::string line;
  std::getline(in, line);
  std::map<std::pair<int, int>, std::pair<double, double>> first_sample;
  double square_sum[4] = {}, count[4] = {};
  int rows = 0, resampled = 0;
  while (std::getline(in, line)) {
    const std::vector<std::string> f = fixture::csv_fields(line);
    REQUIRE(f.size() == 5);
    const int c = std::stoi(f[0]), i = std::stoi(f[1]);
    const std::string& sample = f[2];
    const std::pair<double, double> a{std::stod(f[3]), std::stod(f[4])};
    REQUIRE(c == i % 4);
    ++rows;
    square_sum[c] += a.first * a.first + a.second * a.second;
    count[c] += 2;
    if (sample == "0")
      first_sample[{c, i}] = a;
    else if (first_sample.at({c, i}) != a)
      ++resampled;
  }
  CHECK(rows == 2 * 2000);
  CHECK(resampled > 1900);  // the second sample is another draw of the noise
  // The classes' activation spreads (root mean square) span orders of magnitude.
  double lo = INFINITY, hi = 0;
  for (int c = 0; c < 4; ++c) {
    const double rms = std::sqrt(square_sum[c] / count[c]);
    lo = std::min(lo, rms);
    hi = std::max(hi, rms);
  }
  CHECK(hi > 10 * lo);
}
