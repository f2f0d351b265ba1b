// lenet5 --device cuda on the emulated GPU (tests/emulation): the example's GPU path
// (examples/common/gpu_run.cu: its training loop, CUDA graph, evaluation, KL warm-up, checkpoints
// and resume) compiled against the stand-in CUDA runtime, cuBLAS and cuRAND, run on the CPU and
// compared with the CPU path of the same binary from the same seed. Both draw the same noise, so
// they follow one trajectory up to float rounding (the emulated cuBLAS sums in another order than
// Eigen). Evidence about the example's host code, not a substitute for a GPU run (docs/gpu.md).
// The binary's path comes from VARNET_LENET5_EMULATED, set by CMake when the emulated [cuda]
// suite is built (the sanitizer stage of scripts/test.sh); without it the test is skipped.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "catch.hpp"
#include "mnist_fixture.hpp"
#include "varnet/varnet.hpp"

namespace fs = std::filesystem;

namespace {

using fixture::json_number;
using fixture::Run;
using fixture::TempDir;
using fixture::write_set;

// 4 steps an epoch at batch 32, and 8 images that the epochs drop (the last partial batch)
constexpr int kTrain = 136, kTest = 32, kTrained = 128;

Run run(const std::string& args, const fs::path& log) {
  return fixture::run_program("VARNET_LENET5_EMULATED", args, log);
}

bool skipped() {
  if (std::getenv("VARNET_LENET5_EMULATED")) return false;
  WARN("VARNET_LENET5_EMULATED is not set (no emulated [cuda] suite in this build): skipped");
  return true;
}

// The number after `label` in the progress line of epoch `epoch` ("2/3").
double progress_number(const std::string& out, const std::string& epoch, const std::string& label) {
  const size_t line = out.find("epoch " + epoch + "  loss ");
  REQUIRE(line != std::string::npos);
  const size_t at = out.find(label, line);
  REQUIRE(at < out.find('\n', line));
  return std::stod(out.substr(at + label.size()));
}

// The JSON line up to the training speed: the evaluation's numbers, nothing timed.
std::string json_results(const std::string& out) {
  const size_t at = out.rfind("{\"test_acc_mean\"");
  REQUIRE(at != std::string::npos);
  return out.substr(at, out.find(",\"train_img_per_s\"", at) - at);
}

// The GPU run follows the CPU run: each epoch's loss (printed to 4 decimals) and training
// accuracy, and the final evaluation; an accuracy may differ by one image where rounding tips a
// prediction, an NLL by 1e-3 of itself.
void check_follows(const Run& cpu, const Run& gpu, int epochs) {
  for (int e = 1; e <= epochs; ++e) {
    const std::string ep = std::to_string(e) + "/" + std::to_string(epochs);
    INFO("epoch " << ep);
    CHECK(progress_number(gpu.out, ep, "loss ") ==
          Approx(progress_number(cpu.out, ep, "loss ")).margin(2e-4));
    CHECK(progress_number(gpu.out, ep, "train acc ") ==
          Approx(progress_number(cpu.out, ep, "train acc ")).margin(1.0 / kTrained + 1e-4));
  }
  for (const char* key : {"test_acc_mean", "test_acc_1", "test_acc_10_batchstats"}) {
    INFO(key);
    CHECK(json_number(gpu.out, key) == Approx(json_number(cpu.out, key)).margin(1.0 / kTest));
  }
  for (const char* key : {"test_nll_mean", "test_nll_1", "test_nll_10_batchstats"}) {
    INFO(key);
    CHECK(json_number(gpu.out, key) == Approx(json_number(cpu.out, key)).epsilon(1e-3));
  }
}

}  // namespace

TEST_CASE(
    "lenet5 --device cuda (emulated): trains as on the CPU, graph or not, and resumes bit "
    "for bit",
    "[cli][emulated]") {
  if (skipped()) return;
  TempDir dir("varnet_emulated_");
  write_set(dir.path, "train", kTrain, 20, 11);
  write_set(dir.path, "t10k", kTest, 20, 12);
  const fs::path log = dir.path / "log.txt";
  const std::string common = "--data " + dir.path.string() +
                             " --epochs 2 --batch 32 --lr 0.01 --seed 5 --var-layers 1,3 "
                             "--samples 1 --eval-batch 32 ";
  const fs::path straight = dir.path / "straight.safetensors";

  const Run cpu = run(common + "--device cpu", log);
  INFO(cpu.out);
  REQUIRE(cpu.status == 0);
  const Run gpu = run(common + "--device cuda --save " + straight.string(), log);
  INFO(gpu.out);
  REQUIRE(gpu.status == 0);
  CHECK(gpu.out.find("GPU, CUDA graph)") != std::string::npos);
  CHECK(gpu.out.find("\"device\":\"cuda\"") != std::string::npos);
  CHECK(json_number(gpu.out, "test_acc_1") > 0.7);  // it learns (chance: 0.25)
  check_follows(cpu, gpu, 2);

  // Launching each kernel instead of replaying the captured graph changes no number.
  const Run eager = run(common + "--device cuda --no-graph", log);
  INFO(eager.out);
  REQUIRE(eager.status == 0);
  CHECK(eager.out.find("CUDA graph") == std::string::npos);
  for (const char* epoch : {"1/2", "2/2"})
    CHECK(fixture::epoch_loss_line(eager.out, epoch) == fixture::epoch_loss_line(gpu.out, epoch));
  CHECK(json_results(eager.out) == json_results(gpu.out));

  // Checkpoints at steps 3 and 6 and at the end (8): the checkpointed run, and a run resumed from
  // the one at step 6 (in epoch 2), save the straight run's model bit for bit.
  const fs::path ckpt = dir.path / "run.ckpt", cut = dir.path / "cut.safetensors",
                 resumed = dir.path / "resumed.safetensors";
  const Run with_ckpt = run(common + "--device cuda --checkpoint " + ckpt.string() +
                                " --checkpoint-every 3 --save " + cut.string(),
                            log);
  INFO(with_ckpt.out);
  REQUIRE(with_ckpt.status == 0);
  REQUIRE(varnet::read_checkpoint(ckpt.string() + ".prev").info.step == 6);
  const Run again = run(
      common + "--device cuda --resume " + ckpt.string() + ".prev --save " + resumed.string(), log);
  INFO(again.out);
  REQUIRE(again.status == 0);
  CHECK(again.out.find("resumed at epoch 2, step 2 of 4 (training step 6)") != std::string::npos);
  const std::string want = fixture::read_file(straight);
  REQUIRE(!want.empty());
  CHECK((fixture::read_file(cut) == want));
  CHECK((fixture::read_file(resumed) == want));
}

TEST_CASE(
    "lenet5 --device cuda (emulated): the baselines, their KL warm-up and log alpha "
    "learning rate, as on the CPU",
    "[cli][emulated]") {
  if (skipped()) return;
  TempDir dir("varnet_emulated_kl_");
  write_set(dir.path, "train", kTrain, 20, 13);
  write_set(dir.path, "t10k", kTest, 20, 14);
  const fs::path log = dir.path / "log.txt";
  const std::string common = "--data " + dir.path.string() +
                             " --epochs 2 --batch 32 --lr 0.01 --seed 6 --samples 1 "
                             "--eval-batch 32 --kl-warmup 2 ";

  // Sparse variational dropout everywhere: the KL weight is half of 0.1 after the first of the
  // two warm-up epochs on both devices, and the KL itself agrees.
  const std::string svdo = common + "--layer-kind svdo --var-layers 1,2,3,4 --kl-beta 0.1 ";
  const Run cpu = run(svdo + "--device cpu", log), gpu = run(svdo + "--device cuda", log);
  INFO(cpu.out);
  INFO(gpu.out);
  REQUIRE(cpu.status == 0);
  REQUIRE(gpu.status == 0);
  const size_t epoch1 = gpu.out.find("epoch 1/2");
  REQUIRE(epoch1 != std::string::npos);
  CHECK(gpu.out.substr(epoch1, gpu.out.find('\n', epoch1) - epoch1).find("(weight 0.05)") !=
        std::string::npos);
  check_follows(cpu, gpu, 2);
  CHECK(json_number(gpu.out, "kl") == Approx(json_number(cpu.out, "kl")).epsilon(1e-3));

  // Variational dropout with its log alphas' learning rate scaled by 10, and the objective of
  // two samples a step. With one sample the two paths agree to every printed digit. With two they
  // agree to about 1e-4 in the first epoch's loss but not bit for bit, and the test NLLs end
  // about 0.6% apart: a rounding difference after the K-sample cross-entropy (which matches the
  // CPU bit for bit in test_emulated_kernels), not traced further, that Adam's first steps (about
  // lr whatever a gradient's size) spread over the weights. So the check is relative: the GPU's
  // two-sample run must be ten times closer to the CPU's two-sample run than the CPU's one-sample
  // run is (half its NLL here).
  const std::string vdo = common + "--layer-kind vdo --var-layers 1,2 --alpha-lr-scale 10 ";
  const Run one = run(vdo + "--device cpu", log);
  const Run vcpu = run(vdo + "--train-samples 2 --device cpu", log);
  const Run vgpu = run(vdo + "--train-samples 2 --device cuda", log);
  INFO(one.out);
  INFO(vcpu.out);
  INFO(vgpu.out);
  REQUIRE(one.status == 0);
  REQUIRE(vcpu.status == 0);
  REQUIRE(vgpu.status == 0);
  for (const char* key : {"test_nll_mean", "test_nll_1"}) {
    INFO(key);
    const double gap = std::abs(json_number(vcpu.out, key) - json_number(one.out, key));
    CHECK(gap > 0);
    CHECK(std::abs(json_number(vgpu.out, key) - json_number(vcpu.out, key)) < 0.1 * gap);
  }
  // conv2's log alphas rise from -5 by about 0.2 (at most about 0.08 without the scale of 10) on
  // both devices alike.
  const double log_alpha = json_number(vcpu.out, "mean_log_alpha");
  CHECK(log_alpha > -4.9);
  CHECK(json_number(vgpu.out, "mean_log_alpha") == Approx(log_alpha).margin(0.01));
}
