// The examples' GPU path (declared in gpu_run.hpp): cuda::Network, cuda::Trainer and the GPU
// ensemble over the host network built by the example.
#include <chrono>
#include <cstdio>
#include <memory>

#include "gpu_run.hpp"
#include "run_loop.hpp"
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

double train_on_gpu(Network<float>& net, const data::LabeledImages& train,
                    const GpuTrainSettings& s) {
  int count = 0;
  check(cudaGetDeviceCount(&count) == cudaSuccess && count > 0, "--device cuda",
        "a CUDA GPU on this machine", "none (cudaGetDeviceCount found ", count, ")");
  print_device();
  gpu().set_tf32(s.tf32);
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
  cuda::Trainer<float> trainer(dev, o);
  const cuda::DeviceData data(gpu(), train);
  const int64_t n = train.images.shape().n, steps = n / s.batch;
  double seconds = 0;
  for (int64_t e = 0; e < s.epochs; ++e) {
    const auto order = data::shuffled_order(n, s.seed, uint32_t(e));
    const auto t0 = std::chrono::steady_clock::now();
    const cuda::GpuEpochResult r = trainer.run_epoch(data, order, steps, uint32_t(e));
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    seconds += sec;
    std::printf("epoch %lld/%lld  loss %.4f  train acc %.4f  %.0f img/s  (%.1f s, GPU%s%s)\n",
                (long long)e + 1, (long long)s.epochs, r.loss, r.accuracy, double(r.images) / sec,
                sec, s.graph ? ", CUDA graph" : "", s.tf32 ? ", TF32" : "");
    std::fflush(stdout);
  }
  dev.download(net);
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
