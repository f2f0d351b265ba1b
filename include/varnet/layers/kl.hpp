// KL divergence from a factorized Gaussian weight posterior N(theta, alpha theta^2) to the
// log-uniform prior, per weight, in the approximation of Molchanov et al. (2017):
//
//   KL(log alpha) ~= k1 - k1 * sigmoid(k2 + k3 * log alpha) + 0.5 * log1p(exp(-log alpha))
//   k1 = 0.63576, k2 = 1.87320, k3 = 1.48695
//
// It depends on alpha alone and tends to 0 as alpha -> infinity: a zero-mean (variance) weight
// pays nothing. tests/test_baselines.cpp compares it with the exact KL (a numerical integral).
#pragma once

#include <cmath>

namespace varnet::kl {

inline constexpr double k1 = 0.63576, k2 = 1.87320, k3 = 1.48695;

inline double sigmoid(double z) {
  return z >= 0 ? 1 / (1 + std::exp(-z)) : std::exp(z) / (1 + std::exp(z));
}

// log1p(exp(-a)) without overflow for very negative a
inline double softplus_neg(double a) {
  return a > 0 ? std::log1p(std::exp(-a)) : -a + std::log1p(std::exp(a));
}

inline double log_uniform(double log_alpha) {
  return k1 - k1 * sigmoid(k2 + k3 * log_alpha) + 0.5 * softplus_neg(log_alpha);
}

// d KL / d log alpha
inline double log_uniform_grad(double log_alpha) {
  const double s = sigmoid(k2 + k3 * log_alpha);
  return -k1 * k3 * s * (1 - s) - 0.5 * sigmoid(-log_alpha);
}

}  // namespace varnet::kl
