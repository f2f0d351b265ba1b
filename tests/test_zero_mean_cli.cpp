// The zero_mean example (E3) end to end on a generated MNIST-format set: variational dropout
// training, the log alpha CSV and plot, the conversion of every layer (forced with the lowest
// threshold, -20, below any log alpha) to a zero-mean variance layer, the fine-tuning of both
// networks, the refusal to overwrite earlier results, and bad arguments. The executable's path
// comes from VARNET_ZERO_MEAN (set by CMake); without it the test is skipped with a warning.
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
  return fixture::run_program("VARNET_ZERO_MEAN", args, log);
}

}  // namespace

TEST_CASE("zero_mean: trains, converts to zero means, fine-tunes, reports", "[cli]") {
  if (!std::getenv("VARNET_ZERO_MEAN")) {
    WARN("VARNET_ZERO_MEAN is not set: zero_mean CLI test skipped");
    return;
  }
  fixture::TempDir dir("varnet_zero_mean_");
  fixture::write_set(dir.path, "train", 512, 20, 5);
  fixture::write_set(dir.path, "t10k", 128, 20, 6);
  const fs::path log = dir.path / "log.txt", out = dir.path / "out";
  const std::string args = "--data " + dir.path.string() + " --out " + out.string() +
                           " --epochs 2 --finetune-epochs 1 --batch 32 --samples 4 "
                           "--eval-batch 64 --large-log-alpha -20";
  const Run ok = run(args, log);
  INFO(ok.out);
  REQUIRE(ok.status == 0);
  CHECK(fs::file_size(out / "log_alpha.png") > 1000);
  std::ifstream csv(out / "log_alpha.csv");
  std::string header, line;
  std::getline(csv, header);
  CHECK(header == "epoch,phase,conv1,conv2,fc1,fc2");
  int rows = 0;
  while (std::getline(csv, line)) ++rows;
  CHECK(rows == 4);  // epochs 0, 1, 2 and one continued epoch
  CHECK(ok.out.find("\"converted\":[\"conv1\",\"conv2\",\"fc1\",\"fc2\"]") != std::string::npos);
  // The learned-mean network predicts with its means; with every mean zeroed, mean propagation
  // is a constant: chance (1 of 4 classes).
  CHECK(fixture::json_number(ok.out, "mean_acc", "learned_mean") > 0.5);
  CHECK(fixture::json_number(ok.out, "mean_acc", "zero_mean") <= 0.3);
  CHECK(fixture::json_number(ok.out, "kl_per_image", "zero_mean") ==
        0);  // zero-mean layers: KL = 0

  SECTION("earlier results are not overwritten without --overwrite") {
    const Run again = run(args, log);
    CHECK(again.status == 2);
    CHECK(again.out.find("--overwrite") != std::string::npos);
  }
  SECTION("bad arguments give a message and exit status 2") {
    const Run bad = run("--data " + dir.path.string() + " --epochs 0", log);
    CHECK(bad.status == 2);
    CHECK(bad.out.find("--epochs: expected an integer in [1") != std::string::npos);
    const Run missing = run(
        "--data " + (dir.path / "nowhere").string() + " --out " + (dir.path / "o2").string(), log);
    CHECK(missing.status == 2);
  }
}
