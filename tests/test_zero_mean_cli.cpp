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

struct Run {
  int status = -1;
  std::string out;
};

Run run(const std::string& args, const fs::path& log) {
  const std::string cmd =
      std::string(std::getenv("VARNET_ZERO_MEAN")) + " " + args + " > " + log.string() + " 2>&1";
  Run r;
  const int raw = std::system(cmd.c_str());
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  std::ifstream in(log);
  r.out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return r;
}

// The number after "key": inside the JSON object that follows "object":
double json_number(const std::string& out, const std::string& object, const std::string& key) {
  const size_t o = out.rfind("\"" + object + "\":{");
  REQUIRE(o != std::string::npos);
  const size_t at = out.find("\"" + key + "\":", o);
  REQUIRE(at != std::string::npos);
  return std::strtod(out.c_str() + at + key.size() + 3, nullptr);
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
  CHECK(json_number(ok.out, "learned_mean", "mean_acc") > 0.5);
  CHECK(json_number(ok.out, "zero_mean", "mean_acc") <= 0.3);
  CHECK(json_number(ok.out, "zero_mean", "kl_per_image") == 0);  // zero-mean layers: KL = 0

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
