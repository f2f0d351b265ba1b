// Factorized Gaussian weight posteriors w ~ N(theta, sigma2) of the dropout family (PAPER.md
// section 2), as policies for the layers in layers/mean_field.hpp:
//
//   GaussianDropoutPosterior     theta;                     sigma2 = alpha theta^2, alpha fixed
//   VariationalDropoutPosterior  theta, one log alpha;      sigma2 = alpha theta^2, KL
//   SparseVDPosterior            theta, log sigma2 per w;   log alpha = log sigma2 - log theta^2,
//                                                           KL, pruning at a log alpha threshold
//
// A posterior owns no memory: the layer hands it a PosteriorView of its parameter and gradient
// tensors. Each posterior gives the variance of every weight and the chain rule back to its
// parameters, the weights of mean mode (the expectations, pruned for sparse VD), the KL to the
// log-uniform prior and its gradient, and per-layer statistics.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>

#include "varnet/core/params.hpp"
#include "varnet/layers/kl.hpp"
#include "varnet/layers/layer.hpp"

namespace varnet {

struct DropoutOptions {
  double alpha = 1.0;              // Gaussian dropout's fixed alpha (binary dropout p: p / (1 - p))
  double log_alpha_init = -5.0;    // variational dropout's initial log alpha (as the reference)
  double log_sigma2_init = -10.0;  // sparse VD's initial log sigma2 (as the reference)
  double threshold = 3.0;          // sparse VD: weights with log alpha above it are pruned
  bool prune = true;               // sparse VD: prune in mean mode
  bool bias = false;
  double e0 = 1e-8;  // added to the output variance: keeps sqrt and dL/dv finite as v -> 0
};

// The parameter tensors of one layer's posterior and their gradients; aux is the posterior's
// second tensor (log alpha, log sigma2), or null. n: the number of weights.
template <class T>
struct PosteriorView {
  const T* theta = nullptr;
  const T* aux = nullptr;
  T* dtheta = nullptr;
  T* daux = nullptr;
  int64_t n = 0;
};

namespace detail {
// Weight stats from a per-weight log alpha function.
template <class F>
WeightStats log_alpha_stats(int64_t n, double threshold, F&& log_alpha) {
  WeightStats s;
  s.weights = n;
  s.has_log_alpha = true;
  int64_t above = 0;
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double la = log_alpha(i);
    sum += la;
    above += la > threshold;
  }
  s.mean_log_alpha = n ? sum / double(n) : 0;
  s.fraction_above = n ? double(above) / double(n) : 0;
  s.kept = n;
  return s;
}
}  // namespace detail

// The weights' means are theta, their variances alpha theta^2 with alpha fixed: multiplicative
// Gaussian noise w = theta (1 + sqrt(alpha) xi). No regularizer.
template <class T>
struct GaussianDropoutPosterior {
  DropoutOptions opt;

  static const char* family() { return "GaussianDropout"; }
  std::string describe() const { return str("alpha ", opt.alpha); }
  void validate() const {
    check(opt.alpha > 0 && std::isfinite(opt.alpha), "GaussianDropout", "alpha > 0", opt.alpha);
  }
  const char* aux_name() const { return nullptr; }
  Shape aux_shape(const Shape&) const { return Shape(); }
  Init aux_init() const { return Init::constant(0); }

  void variance(const PosteriorView<T>& p, T* s2) const {
    const T a = T(opt.alpha);
    for (int64_t i = 0; i < p.n; ++i) s2[i] = a * p.theta[i] * p.theta[i];
  }
  void grad_from_variance(const PosteriorView<T>& p, const T*, const T* ds2) const {
    const T a2 = T(2 * opt.alpha);
    for (int64_t i = 0; i < p.n; ++i) p.dtheta[i] += a2 * p.theta[i] * ds2[i];
  }
  void mean_weights(const PosteriorView<T>& p, T* w) const { std::copy(p.theta, p.theta + p.n, w); }
  void grad_from_mean_weights(const PosteriorView<T>& p, const T* dw) const {
    for (int64_t i = 0; i < p.n; ++i) p.dtheta[i] += dw[i];
  }
  double kl(const PosteriorView<T>&) const { return 0; }
  double add_kl_gradient(const PosteriorView<T>&, T) const { return 0; }
  WeightStats stats(const PosteriorView<T>& p, double threshold) const {
    const double la = std::log(opt.alpha);
    return detail::log_alpha_stats(p.n, threshold, [&](int64_t) { return la; });
  }
};

// Variational dropout with one learned log alpha for the whole layer (Kingma et al. 2015;
// Molchanov et al. 2017). log alpha is clipped to [-20, 20] where it is used (as the TensorFlow
// reference), with no gradient outside that range.
template <class T>
struct VariationalDropoutPosterior {
  DropoutOptions opt;
  static constexpr double kLogAlphaMin = -20, kLogAlphaMax = 20;

  static const char* family() { return "VariationalDropout"; }
  std::string describe() const { return "learned log alpha"; }
  void validate() const {
    check(std::isfinite(opt.log_alpha_init), "VariationalDropout", "a finite initial log alpha",
          opt.log_alpha_init);
  }
  const char* aux_name() const { return "log_alpha"; }
  Shape aux_shape(const Shape&) const { return Shape(1, 1); }
  Init aux_init() const { return Init::constant(opt.log_alpha_init); }

  static double log_alpha(const PosteriorView<T>& p) {
    return std::clamp(double(p.aux[0]), kLogAlphaMin, kLogAlphaMax);
  }
  static bool log_alpha_free(const PosteriorView<T>& p) {
    return p.aux[0] > kLogAlphaMin && p.aux[0] < kLogAlphaMax;
  }

  void variance(const PosteriorView<T>& p, T* s2) const {
    const T a = T(std::exp(log_alpha(p)));
    for (int64_t i = 0; i < p.n; ++i) s2[i] = a * p.theta[i] * p.theta[i];
  }
  // s2 = alpha theta^2: d theta = 2 alpha theta ds2, d log alpha = sum s2 ds2
  void grad_from_variance(const PosteriorView<T>& p, const T* s2, const T* ds2) const {
    const T a2 = T(2 * std::exp(log_alpha(p)));
    double dla = 0;
    for (int64_t i = 0; i < p.n; ++i) {
      p.dtheta[i] += a2 * p.theta[i] * ds2[i];
      dla += double(s2[i]) * double(ds2[i]);
    }
    if (log_alpha_free(p)) p.daux[0] += T(dla);
  }
  void mean_weights(const PosteriorView<T>& p, T* w) const { std::copy(p.theta, p.theta + p.n, w); }
  void grad_from_mean_weights(const PosteriorView<T>& p, const T* dw) const {
    for (int64_t i = 0; i < p.n; ++i) p.dtheta[i] += dw[i];
  }
  // One alpha shared by n weights counts n times.
  double kl(const PosteriorView<T>& p) const { return double(p.n) * kl::log_uniform(log_alpha(p)); }
  double add_kl_gradient(const PosteriorView<T>& p, T scale) const {
    if (log_alpha_free(p))
      p.daux[0] += T(double(scale) * double(p.n) * kl::log_uniform_grad(log_alpha(p)));
    return kl(p);
  }
  WeightStats stats(const PosteriorView<T>& p, double threshold) const {
    WeightStats s = detail::log_alpha_stats(p.n, threshold, [&](int64_t) { return log_alpha(p); });
    s.kl = kl(p);
    return s;
  }
};

// Sparse variational dropout, additive parameterization (Molchanov et al. 2017): each weight has
// theta and log sigma2; log alpha = log sigma2 - log(theta^2 + 1e-8), clipped to [-10, 10] (as the
// reference) where the KL and pruning use it. Mean mode zeroes weights with log alpha above the
// threshold when opt.prune is set.
template <class T>
struct SparseVDPosterior {
  DropoutOptions opt;
  static constexpr double kLogAlphaMin = -10, kLogAlphaMax = 10, kTiny = 1e-8;

  static const char* family() { return "SparseVD"; }
  std::string describe() const {
    return opt.prune ? str("pruned at log alpha > ", opt.threshold) : std::string("unpruned");
  }
  void validate() const {
    check(std::isfinite(opt.log_sigma2_init) && std::isfinite(opt.threshold), "SparseVD",
          "a finite initial log sigma2 and threshold", opt.log_sigma2_init, " and ", opt.threshold);
  }
  const char* aux_name() const { return "log_sigma2"; }
  Shape aux_shape(const Shape& weights) const { return weights; }
  Init aux_init() const { return Init::constant(opt.log_sigma2_init); }

  static double raw_log_alpha(const PosteriorView<T>& p, int64_t i) {
    const double t = double(p.theta[i]);
    return double(p.aux[i]) - std::log(t * t + kTiny);
  }
  static double log_alpha(const PosteriorView<T>& p, int64_t i) {
    return std::clamp(raw_log_alpha(p, i), kLogAlphaMin, kLogAlphaMax);
  }
  bool pruned(const PosteriorView<T>& p, int64_t i) const {
    return opt.prune && log_alpha(p, i) > opt.threshold;
  }

  void variance(const PosteriorView<T>& p, T* s2) const {
    for (int64_t i = 0; i < p.n; ++i) s2[i] = std::exp(p.aux[i]);
  }
  void grad_from_variance(const PosteriorView<T>& p, const T* s2, const T* ds2) const {
    for (int64_t i = 0; i < p.n; ++i) p.daux[i] += s2[i] * ds2[i];
  }
  void mean_weights(const PosteriorView<T>& p, T* w) const {
    for (int64_t i = 0; i < p.n; ++i) w[i] = pruned(p, i) ? T(0) : p.theta[i];
  }
  void grad_from_mean_weights(const PosteriorView<T>& p, const T* dw) const {
    for (int64_t i = 0; i < p.n; ++i)
      if (!pruned(p, i)) p.dtheta[i] += dw[i];
  }
  double kl(const PosteriorView<T>& p) const {
    double s = 0;
    for (int64_t i = 0; i < p.n; ++i) s += kl::log_uniform(log_alpha(p, i));
    return s;
  }
  // d log alpha / d log sigma2 = 1, d log alpha / d theta = -2 theta / (theta^2 + 1e-8)
  double add_kl_gradient(const PosteriorView<T>& p, T scale) const {
    double sum = 0;
    for (int64_t i = 0; i < p.n; ++i) {
      const double la = raw_log_alpha(p, i);
      sum += kl::log_uniform(std::clamp(la, kLogAlphaMin, kLogAlphaMax));
      if (la <= kLogAlphaMin || la >= kLogAlphaMax) continue;  // clipped: no gradient
      const double g = double(scale) * kl::log_uniform_grad(la);
      const double t = double(p.theta[i]);
      p.daux[i] += T(g);
      p.dtheta[i] += T(-2 * t / (t * t + kTiny) * g);
    }
    return sum;
  }
  WeightStats stats(const PosteriorView<T>& p, double threshold) const {
    WeightStats s =
        detail::log_alpha_stats(p.n, threshold, [&](int64_t i) { return log_alpha(p, i); });
    s.kept = 0;  // what mean mode actually keeps, by the layer's own threshold
    for (int64_t i = 0; i < p.n; ++i) s.kept += !pruned(p, i);
    s.kl = kl(p);
    return s;
  }
};

}  // namespace varnet
