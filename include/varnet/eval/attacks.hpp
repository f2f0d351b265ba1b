// Gradient-based adversarial attacks (L-infinity) that differentiate through the K-sample
// ensemble: the attacker knows the weights are random.
//
// The attacker's loss is the K-sample cross-entropy of nn/loss.hpp (the cross-entropy of the
// mean of K samples' probabilities), over K forward passes with different noise streams; its
// input gradient is the sum of the K backward passes' input gradients.
//   FGSM: x' = clip(x + epsilon sign(dL/dx))
//   PGD:  x_0 = clip(x + U(-epsilon, epsilon)) (random start) or x; then `iterations` times
//         x_{t+1} = project(x_t + step sign(dL/dx_t)), with fresh noise at every iteration;
//   clip keeps inputs in the valid range [lo, hi] and project also keeps |x' - x| <= epsilon.
// The attacker draws its noise from streams of its own (stream::kAttackBase + k, step = the
// iteration), so it never sees the noise that evaluate_ensemble uses to score the result.
// Attacks write the network's parameter gradients as a side effect and leave them zeroed.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "varnet/core/context.hpp"
#include "varnet/core/error.hpp"
#include "varnet/core/random.hpp"
#include "varnet/core/tensor.hpp"
#include "varnet/data/batches.hpp"
#include "varnet/data/idx.hpp"
#include "varnet/nn/loss.hpp"
#include "varnet/nn/network.hpp"

namespace varnet {

namespace stream {
constexpr uint32_t kAttackBase = 0x8000;   // attacker's sample k uses kAttackBase + k (k < 0x4000)
constexpr uint32_t kAttackStart = 0xFF02;  // PGD's random start
}  // namespace stream

struct AttackOptions {
  double epsilon = 0.1;      // L-infinity radius
  double step = 0.01;        // PGD step size
  int iterations = 10;       // PGD steps
  bool random_start = true;  // PGD: start at a uniform point of the ball
  double lo = 0, hi = 1;     // valid input range
  int samples = 10;          // K: noise samples in the attacker's loss
  PredictMode mode = PredictMode::sample;
  bool batch_stats = false;  // batch norm with the batch's own statistics
  uint64_t seed = 0;
  int64_t batch = 100;  // attack_dataset: examples per attacked batch (K workspaces each)
};

enum class AttackKind { fgsm, pgd };

inline const char* to_string(AttackKind k) {
  return k == AttackKind::fgsm ? "fgsm" : "pgd";
}

namespace detail {
inline void check_attack(const AttackOptions& o) {
  check(o.epsilon >= 0 && std::isfinite(o.epsilon), "attack", "epsilon >= 0", o.epsilon);
  check(o.step > 0 && std::isfinite(o.step), "attack", "a positive step size", o.step);
  check(o.iterations >= 1, "attack", "at least one iteration", o.iterations);
  check(o.lo < o.hi, "attack", "a valid range lo < hi", "[", o.lo, ", ", o.hi, "]");
  check(o.samples >= 1 && o.samples < 0x4000, "attack", "a sample count in [1, 16383]", o.samples);
  check(o.batch >= 1, "attack", "a positive batch size", o.batch);
}
template <class T>
T sign(T v) {
  return T((v > 0) - (v < 0));
}
}  // namespace detail

// dL/dx of the K-sample cross-entropy (mean over the batch) at x, into `grad` (resized to x's
// shape); returns the loss and the ensemble's correct count. `iteration` selects the noise
// (Context::step), so successive PGD steps see fresh samples.
template <class T>
LossResult ensemble_input_gradient(Network<T>& net, ConstView<typename Network<T>::Scalar> x,
                                   const int32_t* labels, const AttackOptions& o,
                                   uint32_t iteration, Tensor<T>& grad) {
  check(o.samples >= 1 && o.samples < 0x4000, "ensemble_input_gradient",
        "a sample count in [1, 16383]", o.samples);
  const size_t K = size_t(o.samples);
  const auto context = [&](size_t k) {
    Context c = Context::eval(o.seed, o.mode, stream::kAttackBase + uint32_t(k), o.batch_stats);
    c.step = iteration;
    return c;
  };
  std::vector<ConstView<T>> out(K);
  std::vector<Tensor<T>> dlogits(K);
  std::vector<TensorView<T>> dout(K);
  for (size_t k = 0; k < K; ++k) {
    out[k] = net.forward(x, context(k), k);
    dlogits[k].resize(out[k].shape);
    dout[k] = dlogits[k].view();
  }
  const LossResult r = cross_entropy(out, labels, &dout);
  grad.resize(x.shape);
  grad.fill(T(0));
  for (size_t k = 0; k < K; ++k) {
    const ConstView<T> dx = net.backward(dout[k], context(k), k, /*input_grad=*/true);
    for (int64_t i = 0; i < dx.numel(); ++i) grad[i] += dx[i];
  }
  net.zero_grad();
  return r;
}

// FGSM: one step of size epsilon along the sign of the input gradient, clipped to [lo, hi].
template <class T>
Tensor<T> fgsm(Network<T>& net, ConstView<typename Network<T>::Scalar> x, const int32_t* labels,
               const AttackOptions& o) {
  detail::check_attack(o);
  Tensor<T> g;
  ensemble_input_gradient(net, x, labels, o, 0, g);
  Tensor<T> adv(x.shape);
  const T eps = T(o.epsilon), lo = T(o.lo), hi = T(o.hi);
  for (int64_t i = 0; i < x.numel(); ++i)
    adv[i] = std::clamp(x[i] + eps * detail::sign(g[i]), lo, hi);
  return adv;
}

// PGD with an optional random start; every iterate stays in the epsilon ball around x and in
// [lo, hi].
template <class T>
Tensor<T> pgd(Network<T>& net, ConstView<typename Network<T>::Scalar> x, const int32_t* labels,
              const AttackOptions& o) {
  detail::check_attack(o);
  const T eps = T(o.epsilon), step = T(o.step), lo = T(o.lo), hi = T(o.hi);
  const auto project = [&](T v, T centre) {
    return std::clamp(std::clamp(v, centre - eps, centre + eps), lo, hi);
  };
  Tensor<T> adv(x.shape);
  const NoiseKey start{o.seed, 0, 0, stream::kAttackStart};
  for (int64_t i = 0; i < x.numel(); ++i) {
    const T u = o.random_start ? T(2 * uniform_at(start, uint64_t(i)) - 1) : T(0);
    adv[i] = project(x[i] + eps * u, x[i]);
  }
  Tensor<T> g;
  for (int t = 0; t < o.iterations; ++t) {
    ensemble_input_gradient(net, adv.view(), labels, o, uint32_t(t), g);
    for (int64_t i = 0; i < x.numel(); ++i)
      adv[i] = project(adv[i] + step * detail::sign(g[i]), x[i]);
  }
  return adv;
}

// Attacks every example of `d` in batches of o.batch and returns the adversarial data set (same
// labels). The network runs in T; images are stored as float, like the data set's.
template <class T>
data::LabeledImages attack_dataset(Network<T>& net, const data::LabeledImages& d, AttackKind kind,
                                   const AttackOptions& o,
                                   const std::function<void(int64_t)>& on_batch = {}) {
  detail::check_attack(o);
  const int64_t n = d.images.shape().n, per = d.images.shape().per_sample();
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
  data::LabeledImages out;
  out.images = Tensor<float>(d.images.shape());
  out.labels = d.labels;
  out.classes = d.classes;
  out.source = str(d.source, " (", to_string(kind), ", epsilon ", o.epsilon, ")");
  Tensor<T> x;
  std::vector<int32_t> y;
  for (int64_t first = 0; first < n; first += o.batch) {
    const int64_t b = std::min(o.batch, n - first);
    data::gather_batch(d, order, first, b, x, y);
    // PGD's random start and the attacker's noise differ between batches through the seed.
    AttackOptions ob = o;
    ob.seed = o.seed + uint64_t(first / o.batch) * 0x9E3779B97F4A7C15ull;
    const Tensor<T> adv = kind == AttackKind::fgsm ? fgsm(net, x.view(), y.data(), ob)
                                                   : pgd(net, x.view(), y.data(), ob);
    for (int64_t i = 0; i < b * per; ++i) out.images[first * per + i] = float(adv[i]);
    if (on_batch) on_batch(first + b);
  }
  return out;
}

}  // namespace varnet
