// Zero-mean weights drawn once per step (Bernoulli and uniform variance layers); the CPU twin is
// ZeroMeanWeights::sample and grad_from_weight in include/varnet/layers/variance.hpp:
//   w = sd * xi,  sd = sigma (used signed) or exp(log sigma2 / 2),
//   xi = +-1 (bernoulli: the word's lowest bit) or sqrt(3) (2 u - 1) (uniform, u in (0, 1)),
//   element i of the weight tensor taking word i of the layer's noise (Philox block i / 4);
//   backward: dp += dw * dw/dp = dw xi (sigma) or dw xi exp(p / 2) / 2 (log sigma2).
#pragma once

#include <cstdint>

#include "kernels/math.cuh"
#include "varnet/core/random.hpp"

namespace varnet::kernels {

// w and xi (count) from the parameter p. step: as in lrt.cuh, a device word that replaces
// key.step when not null. One thread per group of 4 elements (one Philox block).
template <class T>
__global__ void sample_weights_kernel(NoiseKey key, const uint32_t* step, bool bernoulli,
                                      bool log_sigma2, int64_t count, const T* __restrict__ p,
                                      T* __restrict__ w, T* __restrict__ xi) {
  if (step) key.step = *step;
  const int64_t groups = (count + 3) / 4;
  for (int64_t g = thread_index(); g < groups; g += grid_stride()) {
    const Philox4x32::Counter words = key.block(static_cast<uint64_t>(g));
    for (int lane = 0; lane < 4 && 4 * g + lane < count; ++lane) {
      const int64_t i = 4 * g + lane;
      const uint32_t x = words.v[lane];
      const float z = bernoulli ? ((x & 1u) ? 1.0f : -1.0f)
                                : 1.7320508075688772f * (2.0f * uniform_open01(x) - 1.0f);
      const T sd = log_sigma2 ? vexp(mul_rn(T(0.5), p[i])) : p[i];
      xi[i] = static_cast<T>(z);
      w[i] = mul_rn(sd, static_cast<T>(z));
    }
  }
}

// dp += dw * dw/dp (accumulates).
template <class T>
__global__ void weight_backward_kernel(int64_t count, bool log_sigma2, const T* __restrict__ p,
                                       const T* __restrict__ xi, const T* __restrict__ dw,
                                       T* __restrict__ dp) {
  for (int64_t i = thread_index(); i < count; i += grid_stride()) {
    const T d = mul_rn(dw[i], xi[i]);
    dp[i] = add_rn(dp[i], log_sigma2 ? mul_rn(mul_rn(d, T(0.5)), vexp(mul_rn(T(0.5), p[i]))) : d);
  }
}

}  // namespace varnet::kernels
