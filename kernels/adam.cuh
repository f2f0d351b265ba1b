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

#include <cstdint>

#include "kernels/math.cuh"

namespace varnet::kernels {

template <class T>
struct AdamScalars {
  T b1, b2, one_minus_b1, one_minus_b2, c2, step, eps;
};

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
