// The vgg example end to end on generated data: a CIFAR-10-format directory (trains, evaluates,
// mean propagation at chance) and an MNIST-format one padded to 32x32; --device cuda trains the
// baselines with a checkpoint where there is a GPU and is refused cleanly where there is none;
// unknown directories and damaged files give a clear message and exit status 2. The
// executable's path comes from VARNET_VGG (set by CMake); without it the test is skipped with a
// warning.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "mnist_fixture.hpp"
#include "varnet/core/random.hpp"
#include "varnet/nn/checkpoint.hpp"

namespace fs = std::filesystem;
using fixture::json_number;
using fixture::Run;
using fixture::TempDir;

namespace {

Run run(const std::string& args, const fs::path& log) {
  return fixture::run_program("VARNET_VGG", args, log);
}

// A CIFAR-10 binary file of n records of 4 classes, which neither crops nor flips change: class
// k < 3 has a bright channel k, class 3 none, on noise.
void write_cifar10(const fs::path& p, int n, uint64_t salt) {
  std::vector<uint8_t> b;
  const varnet::NoiseKey key{salt, 0, 0, 0};
  for (int i = 0; i < n; ++i) {
    const int k = i % 4;
    b.push_back(uint8_t(k));
    for (int e = 0; e < 3072; ++e) {
      const float u = varnet::uniform_at(key, uint64_t(i) * 3072 + uint64_t(e));
      b.push_back(uint8_t(e / 1024 == k ? 100 + 100 * u : 100 * u));
    }
  }
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  REQUIRE(out.good());
}

}  // namespace

TEST_CASE("vgg: trains on generated CIFAR-10 files; mean propagation at chance", "[cli]") {
  if (!std::getenv("VARNET_VGG")) {
    WARN("VARNET_VGG is not set: vgg CLI test skipped");
    return;
  }
  TempDir dir("varnet_vgg_cli_");
  for (int b = 1; b <= 5; ++b)
    write_cifar10(dir.path / ("data_batch_" + std::to_string(b) + ".bin"), 48, uint64_t(b));
  write_cifar10(dir.path / "test_batch.bin", 32, 9);
  const fs::path log = dir.path / "log.txt";
  const std::string data = "--data " + dir.path.string() + " --width 0.125 ";

  // One variance layer (conv12) learns in a few steps, and still makes mean propagation constant.
  // (conv 11-13 and fc 1 together, the reference's choice, stay at chance here for 40 steps.)
  const Run ok = run(
      data + "--var-layers 12 --epochs 5 --batch 30 --lr 0.01 --samples 4 --eval-batch 32", log);
  INFO(ok.out);
  REQUIRE(ok.status == 0);
  CHECK(ok.out.find("CIFAR-10: train 240 images, test 32, 3x32x32, 10 classes") !=
        std::string::npos);
  CHECK(ok.out.find("conv12: VarianceConv2d") != std::string::npos);
  CHECK(ok.out.find("epoch 5/5") != std::string::npos);
  CHECK(json_number(ok.out, "test_acc_4") > 0.6);  // chance: 0.25
  // A constant prediction on 4 balanced classes: exactly one in four right.
  CHECK(json_number(ok.out, "test_acc_mean") == Approx(0.25));
  CHECK(json_number(ok.out, "width") == 0.125);

  SECTION("a truncated batch is named, and exits with status 2") {
    const fs::path t = dir.path / "data_batch_2.bin";
    fs::resize_file(t, fs::file_size(t) - 10);
    const Run bad = run(data + "--epochs 1", log);
    CHECK(bad.status == 2);
    CHECK(bad.out.find("data_batch_2.bin: expected whole CIFAR-10 records") != std::string::npos);
  }
}

TEST_CASE(
    "vgg: MNIST-format data padded to 32x32; the GPU path or its refusal; unknown directories",
    "[cli]") {
  if (!std::getenv("VARNET_VGG")) {
    WARN("VARNET_VGG is not set: vgg CLI test skipped");
    return;
  }
  TempDir dir("varnet_vgg_cli_mnist_");
  fixture::write_set(dir.path, "train", 96, 28, 1);
  fixture::write_set(dir.path, "t10k", 32, 28, 2);
  const fs::path log = dir.path / "log.txt";
  const std::string data = "--data " + dir.path.string() + " ";

  const Run ok =
      run(data +
              "--width 0.125 --epochs 1 --batch 32 --augment off --samples 2 --test-limit 16 "
              "--eval-batch 16",
          log);
  INFO(ok.out);
  REQUIRE(ok.status == 0);
  CHECK(ok.out.find("MNIST-format IDX, 28x28 zero-padded to 32x32: train 96 images, test 16, "
                    "1x32x32, 4 classes") != std::string::npos);
  CHECK(ok.out.find("\"augment\":false") != std::string::npos);
  CHECK(json_number(ok.out, "test_images") == 16);

  // The flags reach the network: width, weight distribution and parameterization (the summary),
  // Adam's beta1 (the checkpoint's optimizer settings); --dist none leaves no variance layer.
  const std::string quick = data +
                            "--width 0.125 --epochs 1 --batch 32 --augment off --samples 2 "
                            "--test-limit 16 --eval-batch 16 ";
  const fs::path opts_ckpt = dir.path / "opts.ckpt";
  const Run opts = run(quick +
                           "--var-layers 12,14 --dist bernoulli --param log_sigma2 --beta1 0.8 "
                           "--checkpoint " +
                           opts_ckpt.string(),
                       log);
  INFO(opts.out);
  REQUIRE(opts.status == 0);
  CHECK(opts.out.find(
            "conv12: VarianceConv2d(64 -> 64, 3x3, stride 1, pad 1), bernoulli, log_sigma2") !=
        std::string::npos);
  CHECK(opts.out.find("fc1: VarianceLinear(64 -> 64, bernoulli, log_sigma2)") != std::string::npos);
  CHECK(std::stod(varnet::read_checkpoint(opts_ckpt.string()).info.config.at("optimizer.beta1")) ==
        Approx(0.8));
  const Run none = run(quick + "--dist none", log);
  INFO(none.out);
  REQUIRE(none.status == 0);
  CHECK(none.out.find("Variance") == std::string::npos);
  // Variational dropout: the KL weight warms up over --kl-warmup epochs (half of it after the
  // first of 2), and --alpha-lr-scale 0 keeps every log alpha at its initial -5.
  const Run vdo = run(quick + "--layer-kind vdo --kl-warmup 2 --alpha-lr-scale 0", log);
  INFO(vdo.out);
  REQUIRE(vdo.status == 0);
  CHECK(vdo.out.find("(weight 0.5)") != std::string::npos);
  for (const char* layer : {"conv11", "conv12", "conv13"})
    CHECK(vdo.out.find(std::string(layer) +
                       "   VariationalDropoutConv2d       36864         -5.000") !=
          std::string::npos);

  // Sparse variational dropout prunes at --threshold; --train-samples 2 trains another network
  // than one sample a step from the same seed ("epoch 1/1  loss L  train acc A" differs).
  const Run svdo = run(quick + "--layer-kind svdo --threshold -20", log);
  INFO(svdo.out);
  REQUIRE(svdo.status == 0);
  CHECK(svdo.out.find("conv13: SparseVDConv2d(64 -> 64, 3x3, stride 1, pad 1), pruned at log "
                      "alpha > -20") != std::string::npos);
  const Run k1 = run(quick, log), k2 = run(quick + "--train-samples 2", log);
  REQUIRE(k1.status == 0);
  REQUIRE(k2.status == 0);
  REQUIRE(!fixture::epoch_loss_line(k1.out, "1/1").empty());
  CHECK(fixture::epoch_loss_line(k1.out, "1/1") != fixture::epoch_loss_line(k2.out, "1/1"));

  // --device cuda takes every layer kind, with a checkpoint, where there is a GPU; it is refused
  // cleanly elsewhere.
  const fs::path gpu_ckpt = dir.path / "gpu.ckpt";
  const Run cuda_kind = run(data +
                                "--device cuda --layer-kind vdo --width 0.125 --epochs 1 "
                                "--batch 32 --augment off --samples 2 --test-limit 16 "
                                "--eval-batch 16 --kl-warmup 1 --alpha-lr-scale 10 --checkpoint " +
                                gpu_ckpt.string(),
                            log);
  INFO(cuda_kind.out);
  if (fixture::refused_for_no_gpu(cuda_kind)) {
    WARN("no GPU: vgg --device cuda with variational dropout refused, as expected");
    CHECK(!fs::exists(gpu_ckpt));
  } else {
    REQUIRE(cuda_kind.status == 0);
    CHECK(cuda_kind.out.find("epoch 1/1") != std::string::npos);
    CHECK(cuda_kind.out.find("  kl ") != std::string::npos);
    CHECK(cuda_kind.out.find("\"layer_kind\":\"vdo\"") != std::string::npos);
    CHECK(varnet::read_checkpoint(gpu_ckpt.string()).info.step == 3u);  // 96 images, batch 32
  }
  // A checkpoint that is not there is named, on either device.
  const Run cuda_resume = run(
      data + "--device cuda --width 0.125 --batch 32 --resume " + (dir.path / "x.ckpt").string(),
      log);
  CHECK(cuda_resume.status == 2);
  CHECK((cuda_resume.out.find("x.ckpt") != std::string::npos ||
         fixture::refused_for_no_gpu(cuda_resume)));  // a build without CUDA refuses first
  // Every convolution by Winograd, 2x2 planes and the one-channel conv1 included.
  const Run wino = run(data +
                           "--conv winograd --width 0.125 --epochs 1 --batch 32 --augment off "
                           "--samples 2 --test-limit 16 --eval-batch 16",
                       log);
  INFO(wino.out);
  CHECK(wino.status == 0);
  CHECK(wino.out.find("\"conv\":\"winograd\"") != std::string::npos);
  CHECK(wino.out.find("conv1: Conv2d(1 -> 8, 3x3, stride 1, pad 1), winograd") !=
        std::string::npos);
  const Run bad_conv = run(data + "--conv fft", log);
  CHECK(bad_conv.status == 2);
  CHECK(bad_conv.out.find("--conv: expected one of") != std::string::npos);
  CHECK(bad_conv.out.find("'fft'") != std::string::npos);
  const Run bad_width = run(data + "--width 0", log);
  CHECK(bad_width.status == 2);
  CHECK(bad_width.out.find("--width: expected a number in") != std::string::npos);
  const Run labels = run(data + "--cifar100-labels coarse", log);
  CHECK(labels.status == 2);
  CHECK(labels.out.find("--cifar100-labels: expected a CIFAR-100 directory with it, found "
                        "MNIST-format IDX") != std::string::npos);
  const Run bad_layer = run(data + "--var-layers 16", log);
  CHECK(bad_layer.status == 2);
  const fs::path empty = dir.path / "empty";
  fs::create_directories(empty);
  const Run nothing = run("--data " + empty.string(), log);
  CHECK(nothing.status == 2);
  CHECK(nothing.out.find("found none of data_batch_1.bin, train.bin, train-images-idx3-ubyte") !=
        std::string::npos);
}

TEST_CASE("vgg: a run resumed from a mid-epoch checkpoint saves the same network, bit for bit",
          "[cli]") {
  if (!std::getenv("VARNET_VGG")) {
    WARN("VARNET_VGG is not set: vgg CLI test skipped");
    return;
  }
  TempDir dir("varnet_vgg_cli_resume_");
  for (int b = 1; b <= 5; ++b)
    write_cifar10(dir.path / ("data_batch_" + std::to_string(b) + ".bin"), 12, uint64_t(b));
  write_cifar10(dir.path / "test_batch.bin", 16, 9);
  const fs::path log = dir.path / "log.txt", ckpt = dir.path / "run.ckpt";
  // 6 steps per epoch, 2 epochs, augmented: checkpoints at step 8 (epoch 2, step 2) and 12.
  const std::string args = "--data " + dir.path.string() +
                           " --width 0.125 --epochs 2 --batch 10 --samples 1 --eval-batch 16 ";
  const Run straight = run(args + "--save " + (dir.path / "a.safetensors").string(), log);
  INFO(straight.out);
  REQUIRE(straight.status == 0);
  const Run checkpointed =
      run(args + "--checkpoint " + ckpt.string() + " --checkpoint-every 8", log);
  REQUIRE(checkpointed.status == 0);
  // The checkpoint before the last is the one at step 8.
  const fs::path mid = dir.path / "mid.ckpt";
  fs::copy_file(varnet::previous_checkpoint_path(ckpt.string()), mid);
  REQUIRE(varnet::read_checkpoint(mid.string()).info.step == 8);
  const Run resumed = run(
      args + "--resume " + mid.string() + " --save " + (dir.path / "b.safetensors").string(), log);
  INFO(resumed.out);
  REQUIRE(resumed.status == 0);
  CHECK(resumed.out.find("resumed at epoch 2, step 2 of 6 (training step 8)") != std::string::npos);
  CHECK(fixture::read_file(dir.path / "a.safetensors") ==
        fixture::read_file(dir.path / "b.safetensors"));
  // Another --augment is another run: the checkpoint refuses it.
  const Run other = run(args + "--augment off --resume " + mid.string(), log);
  CHECK(other.status == 2);
  CHECK(other.out.find("augment") != std::string::npos);
}
