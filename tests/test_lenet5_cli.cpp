// The lenet5 example end to end on a generated MNIST-format data set (not Fashion-MNIST): it
// trains, evaluates, saves a loadable model, and rejects bad arguments and damaged files with a
// clear message and a non-zero exit. The executable's path comes from VARNET_LENET5 (set by
// CMake); without it the test is skipped with a warning.
#include <zlib.h>

#include <cstdio>
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

using fixture::json_number;
using fixture::TempDir;
using fixture::write_set;

using fixture::Run;

Run run(const std::string& args, const fs::path& log) {
  return fixture::run_program("VARNET_LENET5", args, log);
}

// The summary line of layer `name` ("conv1: VarianceConv2d(...) -> ..."), or "" when absent.
std::string summary_line(const std::string& out, const std::string& name) {
  const size_t at = out.find("\n  " + name + ": ");
  return at == std::string::npos ? "" : out.substr(at + 3, out.find('\n', at + 1) - at - 3);
}

}  // namespace

TEST_CASE("lenet5: trains on generated MNIST-format data, saves, rejects bad input", "[cli]") {
  if (!std::getenv("VARNET_LENET5")) {
    WARN("VARNET_LENET5 is not set: lenet5 CLI test skipped");
    return;
  }
  TempDir dir("varnet_cli_");
  write_set(dir.path, "train", 512, 20, 1);
  write_set(dir.path, "t10k", 128, 20, 2);
  const fs::path log = dir.path / "log.txt", model = dir.path / "model.safetensors";
  const std::string data = "--data " + dir.path.string() + " ";

  const Run ok =
      run(data + "--epochs 3 --batch 32 --lr 0.003 --samples 1,4 --eval-batch 64 --save " +
              model.string(),
          log);
  INFO(ok.out);
  REQUIRE(ok.status == 0);
  CHECK(ok.out.find("epoch 3/3") != std::string::npos);
  CHECK(json_number(ok.out, "test_acc_4") > 0.9);      // the ensemble predicts
  CHECK(json_number(ok.out, "test_acc_mean") < 0.35);  // mean propagation: chance of 4 classes
  CHECK(fs::exists(model));

  SECTION("the saved model loads into the same architecture, not into another") {
    varnet::LeNet5Config cfg;
    cfg.classes = 4;
    auto net = varnet::make_lenet5<float>(cfg, varnet::Shape(1, 1, 20, 20), 9);
    const auto meta = varnet::load_network(net, model.string());
    CHECK(meta.at("model") == "lenet5");
    cfg.variance_layers = {1, 2};
    auto other = varnet::make_lenet5<float>(cfg, varnet::Shape(1, 1, 20, 20), 9);
    CHECK_THROWS_WITH(varnet::load_network(other, model.string()),
                      Catch::Matchers::ContainsSubstring("conv2.sigma"));
  }
  SECTION("an existing --save target is not overwritten without --overwrite") {
    const Run again = run(data + "--epochs 1 --batch 32 --save " + model.string(), log);
    CHECK(again.status == 2);
    CHECK(again.out.find("--overwrite") != std::string::npos);
  }
  SECTION("bad arguments and damaged data give a message and exit status 2") {
    const Run bad_epochs = run(data + "--epochs 0", log);
    CHECK(bad_epochs.status == 2);
    CHECK(bad_epochs.out.find("--epochs: expected an integer in [1") != std::string::npos);
    const Run bad_dist = run(data + "--dist cauchy", log);
    CHECK(bad_dist.status == 2);
    CHECK(bad_dist.out.find("gaussian|bernoulli|uniform|none") != std::string::npos);
    const Run unknown = run(data + "--epoch 3", log);
    CHECK(unknown.status == 2);
    const Run every = run(data + "--checkpoint-every 8", log);
    CHECK(every.status == 2);
    CHECK(every.out.find("--checkpoint-every: expected --checkpoint PATH with it, found no "
                         "--checkpoint") != std::string::npos);
    // An output path that cannot be written is refused before any training.
    const Run nowhere = run(
        data + "--epochs 1 --batch 32 --save " + (dir.path / "no" / "m.safetensors").string(), log);
    CHECK(nowhere.status == 2);
    CHECK(nowhere.out.find("--save: expected a path in an existing directory") !=
          std::string::npos);
    CHECK(nowhere.out.find("epoch 1/1") == std::string::npos);
    const Run bad_device = run(data + "--device gpu", log);
    CHECK(bad_device.status == 2);
    CHECK(bad_device.out.find("cpu|cuda") != std::string::npos);
    const Run missing = run("--data " + (dir.path / "nowhere").string(), log);
    CHECK(missing.status == 2);
    CHECK(missing.out.find("nowhere") != std::string::npos);
    // Truncate the test images: the error names the file.
    const fs::path t = dir.path / "t10k-images-idx3-ubyte.gz";
    fs::resize_file(t, fs::file_size(t) / 2);
    const Run truncated = run(data + "--epochs 1 --batch 32", log);
    CHECK(truncated.status == 2);
    CHECK(truncated.out.find("t10k-images-idx3-ubyte.gz") != std::string::npos);
  }
}

TEST_CASE("lenet5: sparse variational dropout on every layer reports KL and sparsity", "[cli]") {
  if (!std::getenv("VARNET_LENET5")) {
    WARN("VARNET_LENET5 is not set: lenet5 CLI test skipped");
    return;
  }
  TempDir dir("varnet_cli_svdo_");
  write_set(dir.path, "train", 512, 20, 3);
  write_set(dir.path, "t10k", 128, 20, 4);
  const fs::path log = dir.path / "log.txt";
  const std::string data = "--data " + dir.path.string() + " ";
  // beta = 0.1: with 512 training images the full KL (beta = 1) prunes so hard that accuracy
  // stays near 0.86 after 3 epochs.
  const fs::path model = dir.path / "svdo.safetensors";
  const Run ok = run(data +
                         "--layer-kind svdo --var-layers 1,2,3,4 --epochs 3 --batch 32 --lr 0.003 "
                         "--kl-warmup 2 --kl-beta 0.1 --samples 1,4 --eval-batch 64 --save " +
                         model.string(),
                     log);
  INFO(ok.out);
  REQUIRE(ok.status == 0);
  // The KL weight grows over the first 2 epochs (16 steps each): half of 0.1 after the first.
  const size_t epoch1 = ok.out.find("epoch 1/3");
  REQUIRE(epoch1 != std::string::npos);
  CHECK(ok.out.substr(epoch1, ok.out.find('\n', epoch1) - epoch1).find("(weight 0.05)") !=
        std::string::npos);
  CHECK(ok.out.find("SparseVDConv2d") != std::string::npos);
  CHECK(json_number(ok.out, "test_acc_4") > 0.9);
  CHECK(json_number(ok.out, "test_acc_mean") > 0.9);  // unlike a variance network
  CHECK(json_number(ok.out, "kl") > 0);
  CHECK(json_number(ok.out, "compression") >= 1);
  CHECK(ok.out.find("\"frac_log_alpha_above_threshold\":") != std::string::npos);
  // The JSON line and the saved model's metadata report the run's settings.
  CHECK(json_number(ok.out, "kl_beta") == 0.1);
  CHECK(json_number(ok.out, "kl_warmup") == 2);
  CHECK(json_number(ok.out, "threshold") == 3);
  const auto meta = varnet::load_safetensors(model.string()).metadata;
  CHECK(meta.at("layer_kind") == "svdo");
  CHECK(meta.at("var_layers") == "[1,2,3,4]");

  // The same run on the GPU where there is one (the baselines' layers, the KL warm-up and the
  // log alphas' learning-rate scale on the device), refused cleanly elsewhere.
  const Run gpu = run(data +
                          "--device cuda --layer-kind svdo --var-layers 1,2,3,4 --epochs 3 "
                          "--batch 32 --lr 0.003 --kl-warmup 1 --kl-beta 0.1 --samples 1,4 "
                          "--eval-batch 64",
                      log);
  INFO(gpu.out);
  if (fixture::refused_for_no_gpu(gpu)) {
    WARN("no GPU: lenet5 --device cuda with sparse VD refused, as expected");
  } else {
    REQUIRE(gpu.status == 0);
    CHECK(gpu.out.find("epoch 3/3") != std::string::npos);
    CHECK(gpu.out.find(", GPU") != std::string::npos);
    CHECK(gpu.out.find("  kl ") != std::string::npos);  // the progress line's KL, as on the CPU
    CHECK(gpu.out.find("\"device\":\"cuda\"") != std::string::npos);
    CHECK(json_number(gpu.out, "test_acc_4") > 0.9);
    CHECK(json_number(gpu.out, "test_acc_mean") > 0.9);
    CHECK(json_number(gpu.out, "kl") > 0);
  }

  const Run bad = run(data + "--layer-kind gdo --dist bernoulli", log);
  CHECK(bad.status == 2);
  CHECK(bad.out.find("--dist only with --layer-kind variance") != std::string::npos);
  const Run unknown = run(data + "--layer-kind magic", log);
  CHECK(unknown.status == 2);
  CHECK(unknown.out.find("variance|gdo|vdo|svdo|dropout|deterministic") != std::string::npos);
}

TEST_CASE("lenet5: --train-limit, and a class that only the test set has", "[cli]") {
  if (!std::getenv("VARNET_LENET5")) {
    WARN("VARNET_LENET5 is not set: lenet5 CLI test skipped");
    return;
  }
  TempDir dir("varnet_cli_limit_");
  write_set(dir.path, "train", 512, 20, 5, 3);  // classes 0-2 only
  write_set(dir.path, "t10k", 64, 20, 6);       // classes 0-3
  const fs::path log = dir.path / "log.txt";
  const Run r = run("--data " + dir.path.string() +
                        " --train-limit 200 --epochs 1 --batch 32 --samples 1 --eval-batch 64",
                    log);
  INFO(r.out);
  REQUIRE(r.status == 0);
  CHECK(r.out.find("train 200 images, test 64, 20x20, 4 classes") != std::string::npos);
  // The network has an output for class 3 too: it is evaluated (and never right), not refused.
  CHECK(r.out.find("fc2: Linear(500 -> 4)") != std::string::npos);
  CHECK(json_number(r.out, "train_images") == 200);
  CHECK(json_number(r.out, "test_acc_1") <= 0.75);
}

TEST_CASE("lenet5: the flags reach the network, the optimizer and the schedule", "[cli]") {
  if (!std::getenv("VARNET_LENET5")) {
    WARN("VARNET_LENET5 is not set: lenet5 CLI test skipped");
    return;
  }
  TempDir dir("varnet_cli_flags_");
  write_set(dir.path, "train", 512, 20, 7);  // 16 steps an epoch at batch 32
  write_set(dir.path, "t10k", 128, 20, 8);   // 32 images of each of the 4 classes
  const fs::path log = dir.path / "log.txt";
  const std::string common = "--data " + dir.path.string() +
                             " --batch 32 --lr 0.003 --seed 5 --samples 1 --eval-batch 64 ";

  // The weight distribution and parameterization of the chosen layers (the summary).
  const Run opts =
      run(common + "--epochs 1 --var-layers 1,3 --dist bernoulli --param log_sigma2", log);
  INFO(opts.out);
  REQUIRE(opts.status == 0);
  for (const char* layer : {"conv1", "fc1"}) {
    CHECK(summary_line(opts.out, layer).find("Variance") != std::string::npos);
    CHECK(summary_line(opts.out, layer).find("bernoulli, log_sigma2") != std::string::npos);
  }
  CHECK(summary_line(opts.out, "conv2").rfind("conv2: Conv2d(", 0) == 0);
  CHECK(opts.out.find("\"var_layers\":[1,3],\"dist\":\"bernoulli\",\"param\":\"log_sigma2\"") !=
        std::string::npos);

  // --dist none: the deterministic twin, without a variance layer.
  const Run none = run(common + "--epochs 1 --dist none", log);
  INFO(none.out);
  REQUIRE(none.status == 0);
  CHECK(none.out.find("Variance") == std::string::npos);
  CHECK(none.out.find("\"var_layers\":[]") != std::string::npos);

  // The baselines' own settings: Gaussian dropout's alpha, binary dropout's p.
  const Run gdo = run(common + "--epochs 1 --layer-kind gdo --alpha 0.25 --var-layers 2", log);
  INFO(gdo.out);
  REQUIRE(gdo.status == 0);
  CHECK(summary_line(gdo.out, "conv2").find("alpha 0.25") != std::string::npos);
  const Run drop = run(common + "--epochs 1 --layer-kind dropout --dropout-p 0.25", log);
  INFO(drop.out);
  REQUIRE(drop.status == 0);
  CHECK(drop.out.find("Dropout(p = 0.25)") != std::string::npos);

  // --alpha-lr-scale 0 freezes variational dropout's log alphas at their initial -5 (the KL
  // term alone would raise them: test_adversarial_cli).
  const Run vdo =
      run(common + "--epochs 1 --layer-kind vdo --var-layers 1,2 --alpha-lr-scale 0", log);
  INFO(vdo.out);
  REQUIRE(vdo.status == 0);
  CHECK(json_number(vdo.out, "mean_log_alpha") == -5);

  // --threshold reaches the sparse layers: at -20 mean propagation prunes every weight, so the
  // logits are fc2's bias alone and one class is predicted for all (32 of 128 right), while the
  // sampled networks predict (0.67 here; mean propagation 0.53 at the default threshold 3).
  const Run pruned = run(common +
                             "--epochs 1 --layer-kind svdo --var-layers 1,2,3,4 --kl-beta 0.1 "
                             "--threshold -20",
                         log);
  INFO(pruned.out);
  REQUIRE(pruned.status == 0);
  CHECK(summary_line(pruned.out, "conv1").find("pruned at log alpha > -20") != std::string::npos);
  CHECK(json_number(pruned.out, "test_acc_mean") == 0.25);
  CHECK(json_number(pruned.out, "test_acc_1") > 0.5);

  // The learning rate decays to 0 over the whole run, not the first epoch: the weights still move
  // between the checkpoint at step 24 (in epoch 2) and the end (step 32).
  const fs::path ckpt = dir.path / "run.ckpt";
  const Run two =
      run(common + "--epochs 2 --checkpoint " + ckpt.string() + " --checkpoint-every 12", log);
  INFO(two.out);
  REQUIRE(two.status == 0);
  const varnet::CheckpointFile at24 = varnet::read_checkpoint(ckpt.string() + ".prev");
  const varnet::CheckpointFile at32 = varnet::read_checkpoint(ckpt.string());
  REQUIRE(at24.info.step == 24);
  REQUIRE(at32.info.step == 32);
  for (const char* name : {"conv1.sigma", "fc2.weight"}) {
    INFO(name);
    REQUIRE(at24.file.find(name) != nullptr);
    REQUIRE(at32.file.find(name) != nullptr);
    const bool moved = at24.file.find(name)->bytes != at32.file.find(name)->bytes;
    CHECK(moved);  // (not the byte vectors: Catch2 would print them as raw characters)
  }

  // --train-samples: two samples a step train another network than one, from the same seed.
  const Run k2 = run(common + "--epochs 2 --train-samples 2", log);
  INFO(k2.out);
  REQUIRE(k2.status == 0);
  REQUIRE(!fixture::epoch_loss_line(two.out, "1/2").empty());
  CHECK(fixture::epoch_loss_line(k2.out, "1/2") != fixture::epoch_loss_line(two.out, "1/2"));

  // A batch larger than the training set is refused by name before training.
  const Run big = run("--data " + dir.path.string() + " --epochs 1 --batch 1024", log);
  CHECK(big.status == 2);
  CHECK(big.out.find("--batch: expected at most the training set size 512, found 1024") !=
        std::string::npos);
}
