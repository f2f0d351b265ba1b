// Test-time ensembles on the GPU: the twin of varnet::evaluate_ensemble (eval/ensemble.hpp) for a
// cuda::Network over a DeviceData set. Per batch, the K samples' softmax probabilities are summed
// on the device in double (sample k uses stream kEnsembleBase + k, as on the host), and the host
// reads the (b, C) sums once per batch to count correct predictions and the NLL exactly as the
// CPU does. Mean propagation is PredictMode::mean with K = 1.
// The layers before the first noisy one (a VGG's deterministic convolutions) run once per batch,
// the rest once per pass. The K samples run stacked: one pass over K copies of the batch
// (Context::rows_per_sample), up to kGpuStackedRows rows and half the free device memory a pass
// unless opt.samples_per_pass says otherwise: fewer, larger launches, the same noise as one pass
// per sample (so the same numbers up to GEMM rounding). The passes run in a workspace slot of their
// own, freed at the end: training slots (and a trainer's captured graph) are left as they were.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "varnet/eval/ensemble.hpp"

#include "varnet/cuda/network.hpp"
#include "varnet/cuda/step_ops.hpp"
#include "varnet/cuda/trainer.hpp"

namespace varnet::cuda {

// At most this many rows in one stacked ensemble pass when EnsembleOptions::samples_per_pass is 0
// (16 samples of a 1000-image batch of LeNet-5 on 28x28 inputs: about 6 GB of workspace).
constexpr int64_t kGpuStackedRows = 16384;

// Samples per stacked pass over batches of b images when opt.samples_per_pass is 0: as many of
// the `samples` as fit in kGpuStackedRows rows and, for layers [first, end), in half the device
// memory free now.
template <class T>
int automatic_samples_per_pass(const Network<T>& net, int64_t b, int samples, size_t first = 0) {
  size_t free_bytes = 0, total_bytes = 0;
  VARNET_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  // The rest's workspace and the stacked copies of what enters it.
  const auto bytes = [&](int64_t rows) {
    return net.workspace_bytes(rows, first) +
           rows * net.layer_input(first).per_sample() * int64_t(sizeof(T));
  };
  int k = 1;
  while (k < samples && int64_t(k + 1) * b <= kGpuStackedRows &&
         bytes(int64_t(k + 1) * b) <= int64_t(free_bytes / 2))
    ++k;
  return k;
}

template <class T>
EnsembleResult evaluate_ensemble(Network<T>& net, const DeviceData& d, const EnsembleOptions& opt,
                                 const std::function<void(int64_t)>& on_batch = {}) {
  check(opt.samples >= 1 && opt.samples < 0x4000, "cuda::evaluate_ensemble",
        "a sample count in [1, 16383]", opt.samples);
  check(opt.batch >= 1, "cuda::evaluate_ensemble", "a positive batch size", opt.batch);
  check(d.shape.with_batch(1) == net.input_shape(), "cuda::evaluate_ensemble",
        str("images of one sample's shape ", net.input_shape()), d.shape);
  GpuContext& gpu = net.gpu();
  const int64_t n = d.shape.n, c = net.output_shape().per_sample(), per = d.shape.per_sample();
  const std::vector<int32_t> labels = d.labels.download(gpu.stream());
  const int64_t b_max = std::min(opt.batch, n);
  const Context base = Context::eval(opt.seed, opt.mode, stream::kEnsembleBase, opt.batch_stats);
  // The layers before the first noisy one give every sample the same output: they run once per
  // batch (on their own slot), the rest per pass, as on the host (eval/ensemble.hpp).
  const size_t layers = net.layer_count(),
               prefix = opt.samples > 1 ? net.first_noisy_layer(base) : 0;
  const int per_pass =
      b_max == 0 ? 1
                 : ensemble_samples_per_pass(
                       net, opt, base, automatic_samples_per_pass(net, b_max, opt.samples, prefix));
  const int64_t h_per = net.layer_input(prefix).per_sample();  // one image's values entering it
  // Workspace slots of their own, freed on the way out (even by an exception).
  struct Slot {
    Network<T>& net;
    size_t index;
    ~Slot() { net.release_slot(index); }
  } prefix_slot{net, net.open_slot()}, rest_slot{net, net.open_slot()};
  DeviceBuffer<T> converted, stacked;
  DeviceBuffer<double> sums(size_t(b_max * c));
  std::vector<double> host_sums;
  EnsembleResult r;
  r.samples = opt.samples;
  int64_t correct = 0;
  for (int64_t first = 0; first < n; first += opt.batch) {
    const int64_t b = std::min(opt.batch, n - first);
    const float* images = d.images.data() + first * per;
    const T* x = nullptr;  // the batch as T
    if constexpr (std::is_same_v<T, float>) {
      x = images;
    } else {  // the data set is float: convert the batch
      const std::vector<float> hf = to_host(images, size_t(b * per), gpu.stream());
      converted.upload(std::vector<T>(hf.begin(), hf.end()), gpu.stream());
      x = converted.data();
    }
    const T* h = prefix > 0 ? net.forward_range(0, prefix, x, b, base, prefix_slot.index) : x;
    const T* in = h;
    if (per_pass > 1) {  // per_pass copies of h: a pass of kc samples reads the first kc
      stacked.resize(size_t(per_pass * b * h_per));
      for (int j = 0; j < per_pass; ++j)
        VARNET_CUDA_CHECK(cudaMemcpyAsync(stacked.data() + j * b * h_per, h,
                                          size_t(b * h_per) * sizeof(T), cudaMemcpyDeviceToDevice,
                                          gpu.stream()));
      in = stacked.data();
    }
    sums.resize(size_t(b * c));
    sums.zero(gpu.stream());
    for (int k = 0; k < opt.samples; k += per_pass) {
      const int kc = std::min(per_pass, opt.samples - k);
      const uint32_t s = stream::kEnsembleBase + uint32_t(k);
      const Context ctx = kc > 1 ? Context::eval_stacked(opt.seed, opt.mode, s, b)
                                 : Context::eval(opt.seed, opt.mode, s, opt.batch_stats);
      const T* z = net.forward_range(prefix, layers, in, kc * b, ctx, rest_slot.index);
      softmax_accumulate(gpu, b, c, z, sums.data(), kc);
    }
    host_sums.resize(size_t(b * c));
    sums.download(host_sums.data(), gpu.stream());
    for (int64_t i = 0; i < b; ++i) {
      const double* p = host_sums.data() + i * c;
      const int32_t y = labels[size_t(first + i)];
      check(y >= 0 && y < c, "cuda::evaluate_ensemble", str("labels in [0, ", c, ")"), y);
      int64_t best = 0;
      for (int64_t j = 1; j < c; ++j)
        if (p[j] > p[best]) best = j;
      correct += best == y;
      r.nll -= std::log(std::max(p[y] / opt.samples, 1e-12));
    }
    if (on_batch) on_batch(first + b);
  }
  r.accuracy = n > 0 ? double(correct) / double(n) : 0;
  r.nll = n > 0 ? r.nll / double(n) : 0;
  return r;
}

}  // namespace varnet::cuda
