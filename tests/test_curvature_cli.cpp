// The curvature example end to end on a generated MNIST-format set: trains a variance LeNet-5 for
// one epoch, estimates the criterion on a few images, walks the orders, and writes the table,
// CSVs and PNG; bad arguments and existing outputs exit with status 2. The executable's path
// comes from VARNET_CURVATURE (set by CMake); without it the test is skipped with a warning.
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

namespace {

using fixture::Run;

Run run(const std::string& args, const fs::path& log) {
  return fixture::run_program("VARNET_CURVATURE", args, log);
}

struct Point {
  std::string order;
  int step;
  double fraction_random, accuracy;
};

// The rows of a CSV file after its header, split into fields.
std::vector<std::vector<std::string>> csv_rows(const fs::path& p) {
  std::ifstream in(p);
  std::string line;
  std::getline(in, line);
  std::vector<std::vector<std::string>> out;
  while (std::getline(in, line)) out.push_back(fixture::csv_fields(line));
  return out;
}

// curvature.csv: order,step,fraction_random,accuracy.
std::vector<Point> read_points(const fs::path& p) {
  std::vector<Point> out;
  for (const auto& f : csv_rows(p)) {
    REQUIRE(f.size() == 4);
    out.push_back({f[0], std::stoi(f[1]), std::stod(f[2]), std::stod(f[3])});
  }
  return out;
}

struct GroupRow {
  std::string layer;
  int64_t weights;
  double hutchinson, fisher;
};

// curvature_layers.csv: layer,group,weights,dl_hutchinson,dl_fisher.
std::vector<GroupRow> read_groups(const fs::path& p) {
  std::vector<GroupRow> out;
  for (const auto& f : csv_rows(p)) {
    REQUIRE(f.size() == 5);
    out.push_back({f[0], std::stoll(f[2]), std::stod(f[3]), std::stod(f[4])});
  }
  return out;
}

// The fraction of weights still random at each of `steps` + 1 points when the groups are made
// deterministic in order of increasing |criterion| (the order the example must follow): at point
// s, groups are added until at least s / steps of the weights are deterministic.
std::vector<double> expected_fractions(const std::vector<GroupRow>& groups,
                                       double GroupRow::*criterion, int steps) {
  std::vector<size_t> order(groups.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::abs(groups[a].*criterion) < std::abs(groups[b].*criterion);
  });
  int64_t total = 0, done = 0;
  for (const auto& g : groups) total += g.weights;
  std::vector<double> out;
  size_t next = 0;
  for (int s = 0; s <= steps; ++s) {
    while (next < order.size() && double(done) < double(total) * s / steps)
      done += groups[order[next++]].weights;
    out.push_back(1.0 - double(done) / double(total));
  }
  return out;
}

}  // namespace

TEST_CASE("curvature: ranks groups, walks the orders, writes table, CSVs and plot", "[cli]") {
  if (!std::getenv("VARNET_CURVATURE")) {
    WARN("VARNET_CURVATURE is not set: curvature CLI test skipped");
    return;
  }
  fixture::TempDir dir("varnet_curv_cli_");
  fixture::write_set(dir.path, "train", 256, 20, 7);
  fixture::write_set(dir.path, "t10k", 64, 20, 8);
  const fs::path log = dir.path / "log.txt", out = dir.path / "out";
  const std::string common = "--data " + dir.path.string() +
                             " --epochs 1 --batch 32 --lr 0.003 --test-limit 32 "
                             "--curv-examples 32 --probes 2 --fisher-examples 8 --steps 4 "
                             "--samples 2 --out " +
                             out.string();

  const Run ok = run(common, log);
  INFO(ok.out);
  REQUIRE(ok.status == 0);
  CHECK(ok.out.find("| layer | weights | groups |") != std::string::npos);
  CHECK(ok.out.find("| conv2 | 25000 | 50 |") != std::string::npos);
  CHECK(ok.out.find("order layers") != std::string::npos);
  const std::string csv = fixture::read_file(out / "curvature.csv");
  CHECK(csv.rfind("order,step,fraction_random,accuracy\n", 0) == 0);
  // 3 group orders of 5 points and the layer order of 3 (none, one, both layers deterministic).
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 1 + 3 * 5 + 3);
  CHECK(csv.find("random,4,0,") != std::string::npos);  // the end of a walk: nothing random
  const std::string groups = fixture::read_file(out / "curvature_layers.csv");
  CHECK(std::count(groups.begin(), groups.end(), '\n') == 1 + 20 + 50);
  CHECK(fs::file_size(out / "curvature.png") > 1000);
  CHECK(ok.out.find("criterion conv1  on 32 images") != std::string::npos);  // --curv-examples

  // Every walk starts from the same trained variance network, all of it random, and the group
  // walks end with every weight at its expectation, 0: the network's output no longer depends
  // on the image, and every test image (8 of each of the 4 classes) gets the same class.
  const std::vector<Point> pts = read_points(out / "curvature.csv");
  std::map<std::string, std::vector<Point>> walks;
  for (const Point& p : pts) walks[p.order].push_back(p);
  REQUIRE(walks.size() == 4);
  const double start = walks["random"].front().accuracy;
  CHECK(start >= 0.5);
  for (const auto& [order, w] : walks) {
    INFO("order " << order);
    CHECK(w.front().step == 0);
    CHECK(w.front().fraction_random == 1);
    CHECK(w.front().accuracy == start);
    CHECK(w.back().fraction_random == 0);
    CHECK(w.back().accuracy == 0.25);
  }
  // The groups go in order of increasing |dL| of their criterion: the fractions of weights
  // still random follow from curvature_layers.csv (groups of 25 and 500 weights).
  const std::vector<GroupRow> rows = read_groups(out / "curvature_layers.csv");
  for (const auto& [order, criterion] :
       {std::pair{"hutchinson", &GroupRow::hutchinson}, std::pair{"fisher", &GroupRow::fisher}}) {
    INFO("order " << order);
    const std::vector<double> expected = expected_fractions(rows, criterion, 4);
    REQUIRE(walks[order].size() == expected.size());
    for (size_t s = 0; s < expected.size(); ++s)
      CHECK(walks[order][s].fraction_random == Approx(expected[s]).margin(1e-5));
  }
  // Whole layers go in order of increasing |dL Hutchinson|: the layer made deterministic first
  // is the one whose groups' criteria sum to less.
  double sum_conv1 = 0, sum_conv2 = 0;
  for (const auto& g : rows) (g.layer == "conv1" ? sum_conv1 : sum_conv2) += g.hutchinson;
  const std::string first = std::abs(sum_conv1) < std::abs(sum_conv2) ? "conv1" : "conv2";
  CHECK(ok.out.find("order layers     step  1  " + first) != std::string::npos);

  const Run again = run(common, log);
  CHECK(again.status == 2);
  CHECK(again.out.find("--overwrite") != std::string::npos);
  const Run samples = run(common + " --overwrite --test-limit 0 --steps 0", log);
  CHECK(samples.status == 2);
  CHECK(samples.out.find("--test-limit: expected the flag once") != std::string::npos);
  const Run steps = run("--steps 0 --out " + out.string(), log);
  CHECK(steps.status == 2);
  CHECK(steps.out.find("--steps: expected an integer in [1") != std::string::npos);
  const Run layers = run(common + " --overwrite --var-layers 5", log);
  CHECK(layers.status == 2);
}
