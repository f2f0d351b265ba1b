// Test-time ensembles: the predicted probabilities of K noise samples averaged, with accuracy and
// negative log-likelihood. Mean propagation is the same call with PredictMode::mean and K = 1.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "varnet/core/random.hpp"
#include "varnet/data/batches.hpp"
#include "varnet/data/idx.hpp"
#include "varnet/nn/network.hpp"

namespace varnet {

struct EnsembleOptions {
  int samples = 10;
  PredictMode mode = PredictMode::sample;
  bool batch_stats = false;  // batch norm with the test batch's own statistics
  int64_t batch = 1000;
  uint64_t seed = 0;
  // Noise samples stacked into one forward pass (Context::rows_per_sample): the same noise as one
  // pass per sample, so the same numbers up to GEMM rounding, with fewer and larger GEMMs. 0: the
  // backend's choice (the CPU runs one sample per pass, since a batch of 1000 already fills its
  // cores; cuda::evaluate_ensemble stacks up to kGpuStackedRows rows). Networks whose noisy layers
  // draw one weight tensor per pass (Bernoulli or uniform variance layers), and batch statistics,
  // always run one per pass.
  int samples_per_pass = 0;
};

// How many of opt.samples noise samples one pass of `net` over a batch of b images runs under
// `ctx`: samples_per_pass (or `fallback` when 0), at most opt.samples, and 1 when the network
// cannot stack samples.
template <class Net>
int ensemble_samples_per_pass(const Net& net, const EnsembleOptions& opt, const Context& ctx,
                              int fallback) {
  check(opt.samples_per_pass >= 0, "evaluate_ensemble", "samples per pass >= 0 (0: automatic)",
        opt.samples_per_pass);
  const int want = opt.samples_per_pass > 0 ? opt.samples_per_pass : fallback;
  return net.can_stack_samples(ctx) ? std::max(1, std::min(want, opt.samples)) : 1;
}

// probs (rows, C) = softmax of z (rows, C), in double.
template <class T>
void softmax_rows(const T* z, int64_t rows, int64_t c, double* probs) {
  for (int64_t i = 0; i < rows; ++i) {
    const T* row = z + i * c;
    double* p = probs + i * c;
    T mx = row[0];
    for (int64_t j = 1; j < c; ++j) mx = std::max(mx, row[j]);
    double s = 0;
    for (int64_t j = 0; j < c; ++j) s += std::exp(double(row[j] - mx));
    for (int64_t j = 0; j < c; ++j) p[j] = std::exp(double(row[j] - mx)) / s;
  }
}

struct EnsembleResult {
  double accuracy = 0;
  double nll = 0;  // mean -log p(label), p clamped below at 1e-12
  int samples = 0;
};

// Runs the opt.samples noise samples of `net` over `d`, batch by batch, and calls
// consume(probs, b, labels) per batch: probs holds every sample's softmax as doubles, (K, b, C)
// sample-major (probs[(k * b + i) * C + j]), labels the batch's b labels. Sample k uses stream
// stream::kEnsembleBase + k, so every consumer sees the same noise, however many samples share a
// pass (opt.samples_per_pass). `on_batch`, when set, is called after each batch with the number
// of images done (for progress output).
template <class T, class Consume>
void for_each_ensemble_batch(Network<T>& net, const data::LabeledImages& d,
                             const EnsembleOptions& opt, Consume&& consume,
                             const std::function<void(int64_t)>& on_batch = {}) {
  check(opt.samples >= 1 && opt.samples < 0x4000, "evaluate_ensemble",
        "a sample count in [1, 16383]", opt.samples);
  check(opt.batch >= 1, "evaluate_ensemble", "a positive batch size", opt.batch);
  const int64_t n = d.images.shape().n, c = net.output_shape().c;
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
  const Context base = Context::eval(opt.seed, opt.mode, stream::kEnsembleBase, opt.batch_stats);
  const int per_pass = ensemble_samples_per_pass(net, opt, base, 1);
  // The layers before the first noisy one give every sample the same output (batch statistics
  // included: the batch is the same): they run once per batch on slot 0, the rest per pass on
  // slot 1.
  const size_t layers = net.size(), prefix = opt.samples > 1 ? net.first_noisy_layer(base) : 0;
  const size_t rest_slot = prefix > 0 ? 1 : 0;
  Tensor<T> x, stacked;
  std::vector<int32_t> y;
  std::vector<double> probs;
  for (int64_t first = 0; first < n; first += opt.batch) {
    const int64_t b = std::min(opt.batch, n - first);
    data::gather_batch(d, order, first, b, x, y);
    probs.resize(size_t(opt.samples * b * c));
    const ConstView<T> h = prefix > 0 ? net.forward_range(0, prefix, x.view(), base) : x.view();
    if (per_pass > 1) {  // per_pass copies of h: a pass of kc samples reads the first kc
      stacked.resize(h.shape.with_batch(per_pass * b));
      for (int j = 0; j < per_pass; ++j)
        std::copy(h.data, h.data + h.numel(), stacked.data() + j * h.numel());
    }
    for (int k = 0; k < opt.samples; k += per_pass) {
      const int kc = std::min(per_pass, opt.samples - k);
      const uint32_t s = stream::kEnsembleBase + uint32_t(k);
      ConstView<T> in = h;
      Context ctx = Context::eval(opt.seed, opt.mode, s, opt.batch_stats);
      if (kc > 1) {  // sample j's noise on copy j
        in = ConstView<T>(stacked.data(), h.shape.with_batch(kc * b));
        ctx = Context::eval_stacked(opt.seed, opt.mode, s, b);
      }
      const ConstView<T> z = net.forward_range(prefix, layers, in, ctx, rest_slot);
      softmax_rows(z.data, kc * b, c, probs.data() + k * b * c);
    }
    consume(static_cast<const double*>(probs.data()), b, static_cast<const int32_t*>(y.data()));
    if (on_batch) on_batch(first + b);
  }
}

// Evaluates `net` on `data` with an ensemble of opt.samples noise samples (probabilities
// averaged). `on_batch` as for for_each_ensemble_batch. eval/metrics.hpp's evaluate_uncertainty
// gives calibration and uncertainty measures from the same samples.
template <class T>
EnsembleResult evaluate_ensemble(Network<T>& net, const data::LabeledImages& d,
                                 const EnsembleOptions& opt,
                                 const std::function<void(int64_t)>& on_batch = {}) {
  const int64_t n = d.images.shape().n, c = net.output_shape().c;
  EnsembleResult r;
  r.samples = opt.samples;
  int64_t correct = 0;
  std::vector<double> sum;
  const auto consume = [&](const double* probs, int64_t b, const int32_t* y) {
    sum.assign(size_t(b * c), 0.0);
    for (int k = 0; k < opt.samples; ++k)
      for (int64_t i = 0; i < b * c; ++i) sum[size_t(i)] += probs[k * b * c + i];
    for (int64_t i = 0; i < b; ++i) {
      const double* p = sum.data() + i * c;
      int64_t best = 0;
      for (int64_t j = 1; j < c; ++j)
        if (p[j] > p[best]) best = j;
      correct += best == y[i];
      r.nll -= std::log(std::max(p[y[i]] / opt.samples, 1e-12));
    }
  };
  for_each_ensemble_batch(net, d, opt, consume, on_batch);
  r.accuracy = double(correct) / double(n);
  r.nll /= double(n);
  return r;
}

}  // namespace varnet
