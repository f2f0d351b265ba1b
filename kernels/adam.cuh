// Adam over a network's flat parameter buffer in one kernel; the CPU twin is varnet::Adam in
// include/varnet/nn/optimizer.hpp. The scalars are computed on the host exactly as the CPU does,
// and the per-element arithmetic follows the CPU's operation order with round-to-nearest
// intrinsics (no fused multiply-adds) and a correctly rounded sqrt, as the CPU's, so both
// backends take the same step (bit for bit in tests/emulation; a CPU build that fuses the CPU
// side's multiply-adds may differ by an ulp):
//   m = b1 m + (1 - b1) g
//   v = b2 v + (1 - b2) g^2
//   p = p - (step m) / (sqrt(v / c2) + eps),   step = lr / c1,  c_i = 1 - beta_i^t
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/math.cuh"

namespace varnet::kernels {

template <class T>
struct AdamScalars {
  T b1, b2, one_minus_b1, one_minus_b2, c2, step, eps;
};

// The scalars of update t (from 1) at learning rate lr, exactly as varnet::Adam::step computes
// them (host code).
template <class T>
AdamScalars<T> adam_scalars(double beta1, double beta2, double eps, int64_t t, double lr) {
  AdamScalars<T> a;
  a.b1 = T(beta1);
  a.b2 = T(beta2);
  a.one_minus_b1 = 1 - a.b1;
  a.one_minus_b2 = 1 - a.b2;
  const T c1 = T(1 - std::pow(beta1, double(t)));
  a.c2 = T(1 - std::pow(beta2, double(t)));
  a.step = T(lr) / c1;
  a.eps = T(eps);
  return a;
}

template <class T>
__global__ void adam_update_kernel(int64_t count, AdamScalars<T> a, T* __restrict__ p,
                                   const T* __restrict__ g, T* __restrict__ m, T* __restrict__ v) {
  for (int64_t k = thread_index(); k < count; k += grid_stride()) {
    const T gk = g[k];
    const T mk = add_rn(mul_rn(a.b1, m[k]), mul_rn(a.one_minus_b1, gk));
    const T vk = add_rn(mul_rn(a.b2, v[k]), mul_rn(a.one_minus_b2, mul_rn(gk, gk)));
    m[k] = mk;
    v[k] = vk;
    p[k] = sub_rn(p[k], div_rn(mul_rn(a.step, mk), add_rn(sqrt_rn(div_rn(vk, a.c2)), a.eps)));
  }
}

}  // namespace varnet::kernels
