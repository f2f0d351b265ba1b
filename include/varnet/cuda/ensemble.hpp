// Test-time ensembles on the GPU: the twin of varnet::evaluate_ensemble (eval/ensemble.hpp) for a
// cuda::Network over a DeviceData set. Per batch, the K samples' softmax probabilities are summed
// on the device in double (sample k uses stream kEnsembleBase + k, as on the host), and the host
// reads the (b, C) sums once per batch to count correct predictions and the NLL exactly as the
// CPU does. Mean propagation is PredictMode::mean with K = 1.
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
  DeviceBuffer<T> x(size_t(std::min(opt.batch, n) * per));
  DeviceBuffer<double> sums(size_t(std::min(opt.batch, n) * c));
  std::vector<double> host_sums;
  EnsembleResult r;
  r.samples = opt.samples;
  int64_t correct = 0;
  for (int64_t first = 0; first < n; first += opt.batch) {
    const int64_t b = std::min(opt.batch, n - first);
    const float* images = d.images.data() + first * per;
    const T* in = nullptr;
    if constexpr (std::is_same_v<T, float>) {
      in = images;
    } else {  // the data set is float: convert the batch
      const std::vector<float> hf = to_host(images, size_t(b * per), gpu.stream());
      x.upload(std::vector<T>(hf.begin(), hf.end()), gpu.stream());
      in = x.data();
    }
    sums.resize(size_t(b * c));
    sums.zero(gpu.stream());
    for (int k = 0; k < opt.samples; ++k) {
      const Context ctx =
          Context::eval(opt.seed, opt.mode, stream::kEnsembleBase + uint32_t(k), opt.batch_stats);
      softmax_accumulate(gpu, b, c, net.forward(in, b, ctx), sums.data());
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
