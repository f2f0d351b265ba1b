// The examples' GPU path (declared in gpu_run.hpp): cuda::Network, cuda::Trainer and the GPU
// ensemble over the host network built by the example.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

#include "gpu_run.hpp"
#include "resumable.hpp"
#include "run_loop.hpp"
#include "training.hpp"
#include "varnet/cuda.hpp"
#include "varnet/cuda/ensemble.hpp"
#include "varnet/cuda/network.hpp"
#include "varnet/cuda/trainer.hpp"

namespace varnet::examples {

namespace {
// One GPU context for the program: the first use picks the current device. Never destroyed:
// cuBLAS handles must not be destroyed from static destructors, after the runtime may be gone.
cuda::GpuContext& gpu() {
  static cuda::GpuContext* ctx = new cuda::GpuContext();
  return *ctx;
}

void print_device() {
  int device = 0;
  VARNET_CUDA_CHECK(cudaGetDevice(&device));
  cudaDeviceProp p{};
  VARNET_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  std::printf("GPU %d: %s (sm_%d%d, %.0f GiB)\n", device, p.name, p.major, p.minor,
              double(p.totalGlobalMem) / double(1 << 30));
}
}  // namespace

double train_on_gpu(Network<float>& net, Adam<float>& adam, Trainer<float, Adam<float>>& trainer,
                    const data::LabeledImages& train, const GpuTrainSettings& s,
                    const RunConfig& config, const RunStart& start) {
  using Clock = std::chrono::steady_clock;
  int count = 0;
  check(cudaGetDeviceCount(&count) == cudaSuccess && count > 0, "--device cuda",
        "a CUDA GPU on this machine", "none (cudaGetDeviceCount found ", count, ")");
  print_device();
  gpu().set_tf32(s.tf32);
  const int64_t n = train.images.shape().n, steps_per_epoch = n / s.batch;
  const bool has_kl = net.kl() > 0;  // variational and sparse variational dropout, as on the CPU
  cuda::Network<float> dev(gpu(), net);
  cuda::TrainerOptions o;
  o.samples = s.samples;
  o.seed = s.seed;
  o.batch = s.batch;
  o.lr = s.lr;
  o.graph = s.graph;
  o.check_finite = s.check_finite;
  o.adam = s.adam;
  o.augment = s.augment;
  o.augment_options = s.augment_options;
  // The CPU loop's set_kl_weight(beta.at(step) / N) before every step, computed on the device.
  if (has_kl) o.kl = cuda::KlSchedule{s.beta, double(n)};
  cuda::Trainer<float> gpu_trainer(dev, o);
  gpu_trainer.import_state(adam, trainer.steps());  // a resumed run's Adam state and step
  scale_log_alpha_lr(gpu_trainer, net, s.alpha_lr_scale);
  const cuda::DeviceData data(gpu(), train);
  // A checkpoint as the CPU run writes it: the device state through the host objects.
  const auto checkpoint = [&](int64_t e, int64_t done, double loss, int64_t correct) {
    dev.download(net);
    gpu_trainer.export_state(adam);
    trainer.set_steps(gpu_trainer.steps());
    save_run(s.checkpoint, net, adam, trainer, config, s.seed, steps_per_epoch, e, done, loss,
             correct);
  };
  double seconds = 0;
  for (int64_t e = start.epoch; e < s.epochs; ++e) {
    const auto order = data::shuffled_order(n, s.seed, uint32_t(e));
    const auto t0 = Clock::now();
    double loss = 0, kl = 0;
    int64_t correct = 0;
    if (e == start.epoch) loss = start.loss, correct = start.correct;
    // Steps [step, steps_per_epoch) of the epoch, cut where the CPU loop checkpoints: after
    // every global step that is a multiple of checkpoint_every.
    for (int64_t step = e == start.epoch ? start.step : 0; step < steps_per_epoch;) {
      int64_t chunk = steps_per_epoch - step;
      if (s.checkpoint_every > 0) {
        const int64_t at = int64_t(gpu_trainer.steps());
        chunk = std::min(chunk, (at / s.checkpoint_every + 1) * s.checkpoint_every - at);
      }
      const std::vector<int64_t> rest(order.begin() + step * s.batch, order.end());
      const cuda::GpuEpochResult r = gpu_trainer.run_epoch(data, rest, chunk, uint32_t(e));
      loss += r.loss_sum;
      correct += r.correct;
      kl = r.last_kl;
      step += chunk;
      if (s.checkpoint_every > 0 && gpu_trainer.steps() % uint64_t(s.checkpoint_every) == 0)
        checkpoint(e, step, loss, correct);
    }
    const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
    seconds += sec;
    std::printf("epoch %lld/%lld  loss %.4f  train acc %.4f  %.0f img/s  (%.1f s, GPU%s%s)",
                (long long)e + 1, (long long)s.epochs, loss / double(steps_per_epoch),
                double(correct) / double(steps_per_epoch * s.batch),
                double(steps_per_epoch * s.batch) / sec, sec, s.graph ? ", CUDA graph" : "",
                s.tf32 ? ", TF32" : "");
    if (has_kl) {
      dev.download(net);  // for the weight report
      std::printf("  kl %.1f (weight %.3g)  compression %.2f", kl, s.beta.at(gpu_trainer.steps()),
                  weight_report(net, s.threshold).compression());
    }
    std::printf("\n");
    std::fflush(stdout);
  }
  dev.download(net);
  gpu_trainer.export_state(adam);
  trainer.set_steps(gpu_trainer.steps());
  if (!s.checkpoint.empty()) checkpoint(s.epochs, 0, 0, 0);
  return seconds;
}

std::string evaluate_report_gpu(Network<float>& net, const data::LabeledImages& test,
                                const std::vector<int64_t>& samples, int64_t eval_batch,
                                uint64_t seed, bool tf32) {
  gpu().set_tf32(tf32);
  cuda::Network<float> dev(gpu(), net);
  const cuda::DeviceData data(gpu(), test);
  return evaluate_report_by(
      [&](const EnsembleOptions& o) { return cuda::evaluate_ensemble(dev, data, o); }, samples,
      eval_batch, seed);
}

}  // namespace varnet::examples
