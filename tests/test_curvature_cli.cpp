// The curvature example end to end on a generated MNIST-format set: trains a variance LeNet-5 for
// one epoch, estimates the criterion on a few images, walks the orders, and writes the table,
// CSVs and PNG; bad arguments and existing outputs exit with status 2. The executable's path
// comes from VARNET_CURVATURE (set by CMake); without it the test is skipped with a warning.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "catch.hpp"
#include "mnist_fixture.hpp"

namespace fs = std::filesystem;

namespace {

using fixture::Run;

Run run(const std::string& args, const fs::path& log) {
  return fixture::run_program("VARNET_CURVATURE", args, log);
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
