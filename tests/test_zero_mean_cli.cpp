// The zero_mean example (E3) end to end on a generated MNIST-format set: variational dropout
// training, the log alpha CSV and plot, the conversion of every layer (forced with the lowest
// threshold, -20, below any log alpha) to a zero-mean variance layer, the fine-tuning of both
// networks, the refusal to overwrite earlier results, and bad arguments. The executable's path
// comes from VARNET_ZERO_MEAN (set by CMake); without it the test is skipped with a warning.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "mnist_fixture.hpp"
#include "varnet/varnet.hpp"

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
  std::vector<std::string> rows;
  while (std::getline(csv, line)) {
    const std::vector<std::string> f = fixture::csv_fields(line);
    REQUIRE(f.size() == 6);
    rows.push_back(f[0] + "," + f[1]);
  }
  // Epochs 0 (the initial values), 1 and 2 of variational dropout, then the learned-mean
  // network's continuation, numbered on.
  CHECK(rows == std::vector<std::string>{"0,vdo", "1,vdo", "2,vdo", "3,continued"});
  CHECK(ok.out.find("\"converted\":[\"conv1\",\"conv2\",\"fc1\",\"fc2\"]") != std::string::npos);
  // The learned-mean network predicts with its means; with every mean zeroed, mean propagation
  // is a constant: chance (1 of 4 classes).
  CHECK(fixture::json_number(ok.out, "mean_acc", "learned_mean") > 0.5);
  CHECK(fixture::json_number(ok.out, "mean_acc", "zero_mean") <= 0.3);
  CHECK(fixture::json_number(ok.out, "kl_per_image", "zero_mean") ==
        0);  // zero-mean layers: KL = 0
  // The fine-tuned zero-mean network was trained: its training cross-entropy moved.
  CHECK(fixture::json_number(ok.out, "train_ce", "zero_mean_finetuned") !=
        fixture::json_number(ok.out, "train_ce", "zero_mean"));

  SECTION("earlier results are not overwritten without --overwrite") {
    const Run again = run(args, log);
    CHECK(again.status == 2);
    CHECK(again.out.find("--overwrite") != std::string::npos);
    // The plot is protected too, without the CSV beside it.
    fs::remove(out / "log_alpha.csv");
    const Run png = run(args, log);
    CHECK(png.status == 2);
    CHECK(png.out.find("log_alpha.png") != std::string::npos);
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

// With --alpha-lr-scale 0 every log alpha stays at --log-alpha-init, so the KL is known: that of
// a freshly built network. --train-limit sets N (the KL is per training image), and one sample
// per test prediction (--samples 1) makes the test NLL the same measurement as the training
// cross-entropy, on the other set.
TEST_CASE("zero_mean: --train-limit, --alpha-lr-scale, KL per training image", "[cli]") {
  if (!std::getenv("VARNET_ZERO_MEAN")) {
    WARN("VARNET_ZERO_MEAN is not set: zero_mean CLI test skipped");
    return;
  }
  fixture::TempDir dir("varnet_zero_mean_limit_");
  fixture::write_set(dir.path, "train", 512, 20, 5);
  fixture::write_set(dir.path, "t10k", 128, 20, 6);
  const Run r = run("--data " + dir.path.string() + " --out " + (dir.path / "out").string() +
                        " --train-limit 256 --alpha-lr-scale 0 --log-alpha-init -4 --epochs 1"
                        " --finetune-epochs 0 --batch 32 --samples 1 --eval-batch 64",
                    dir.path / "log.txt");
  INFO(r.out);
  REQUIRE(r.status == 0);
  CHECK(fixture::json_number(r.out, "train_images") == 256);
  for (const char* layer : {"conv1", "conv2", "fc1", "fc2"})
    CHECK(fixture::json_number(r.out, layer, "log_alpha_at_conversion") == -4);
  varnet::LeNet5Config cfg;
  cfg.kinds.assign(4, varnet::LayerKind::vdo);
  cfg.dropout.log_alpha_init = -4;
  cfg.classes = 4;
  varnet::Network<float> net = varnet::make_lenet5<float>(cfg, varnet::Shape(1, 1, 20, 20), 0);
  CHECK(fixture::json_number(r.out, "kl_per_image", "learned_mean") ==
        Approx(net.kl() / 256).epsilon(1e-5));
  CHECK(fixture::json_number(r.out, "train_ce", "learned_mean") !=
        fixture::json_number(r.out, "test_nll", "learned_mean"));
}
