// Local reparameterization trick epilogues on the GPU (the CPU twins are in
// include/varnet/ops/lrt.hpp).
//
// Forward:  y = mean + eps * sqrt(v + e0),  eps = normal_at(key, e) for element e of y in
//           (N, O, P) order, mean = y's content (add_to_y), else bias[o] (or 0).
// Backward: dL/dv = g * eps / (2 sqrt(v + e0)), eps recomputed from the key: unlike the CPU,
//           which overwrites v with r = eps / (2 s), the GPU keeps v and stores no noise. The
//           arithmetic is ordered as on the CPU (r first, then r * g) and done with
//           round-to-nearest intrinsics. r itself is rounded differently: eps / (2 s) here, the
//           CPU's 0.5 eps (1 / s) (with a refined rsqrt under AVX2), so the two dL/dv agree to a
//           few ulps (about 2e-7 relative in float), not bit for bit.
// Input gradient: dx = dx_mean + 2 x * t, t = dL/dv . sigma2 (a GEMM result), in one pass.
//
// step: when not null, the key's step is read from this device word when the kernel runs, so that
// a captured CUDA graph replays a training step with the next step's noise.
// noise: a BatchNoise; a batch that stacks samples draws each sample's elements from its own
// stream, as the CPU's row-wise lrt_forward does (one thread per Philox group of a sample).
//
// Layouts: y, dy (N, O, P) contiguous; v channel-major (O, N * P) for convolutions, or
// (N, O, P) (P = 1 for dense layers).
#pragma once

#include <cstdint>

#include "kernels/math.cuh"
#include "varnet/core/random.hpp"

namespace varnet::kernels {

// The device twin of ops::LrtLayout.
struct LrtShape {
  int64_t n = 0, o = 0, p = 1;
  bool channel_major = false;
  VARNET_HOST_DEVICE int64_t v_index(int64_t b, int64_t c, int64_t i) const {
    return channel_major ? (c * n + b) * p + i : (b * o + c) * p + i;
  }
  VARNET_HOST_DEVICE int64_t numel() const { return n * o * p; }
};

// The Philox groups of y: 4 elements each, a sample's elements starting a group.
__device__ __forceinline__ int64_t lrt_groups(const BatchNoise& noise, const LrtShape& s) {
  return noise.groups(s.numel(), s.o * s.p);
}

// Calls f(e, c, v_index, eps) for the elements e of group g of y (up to 4, BatchNoise::group):
// they share one Philox block, so one Philox call and two Box-Muller transforms give all four
// normals. Forward and backward walk the elements identically, so backward recomputes
// forward's eps.
template <class F>
__device__ __forceinline__ void for_each_lane(const BatchNoise& noise, const LrtShape& s, int64_t g,
                                              F&& f) {
  const BatchNoise::Group grp = noise.group(g, s.numel(), s.o * s.p);
  const Philox4x32::Counter w = grp.key.block(grp.block);
  float z[4];
  box_muller(w.v[0], w.v[1], z[0], z[1]);
  box_muller(w.v[2], w.v[3], z[2], z[3]);
  int64_t e = grp.first;
  const int64_t row = e / s.p;
  int64_t i = e - row * s.p, c = row % s.o, b = row / s.o;
  for (int lane = 0; lane < 4 && e < grp.end; ++lane, ++e) {
    f(e, c, s.v_index(b, c, i), z[lane]);
    if (++i == s.p) {
      i = 0;
      if (++c == s.o) {
        c = 0;
        ++b;
      }
    }
  }
}

// y = mean + eps * sqrt(v + e0), one thread per group of 4 elements. With parts > 1, v holds
// `parts` partial results part_stride apart (cuda::gemm_parts): v[k] is their sum, in order,
// and is written back to the first part, where backward reads it.
template <class T>
__global__ void lrt_forward_kernel(BatchNoise noise, const uint32_t* step, LrtShape s,
                                   const T* __restrict__ bias, bool add_to_y, T e0, T* v, int parts,
                                   int64_t part_stride, T* __restrict__ y) {
  if (step) noise.key.step = *step;
  const int64_t groups = lrt_groups(noise, s);
  for (int64_t g = thread_index(); g < groups; g += grid_stride())
    for_each_lane(noise, s, g, [&](int64_t e, int64_t c, int64_t k, float eps) {
      T vk = v[k];
      if (parts > 1) {
        for (int p = 1; p < parts; ++p) vk = add_rn(vk, v[k + p * part_stride]);
        v[k] = vk;
      }
      const T sd = vsqrt(vk + e0);
      const T mean = add_to_y ? y[e] : (bias ? bias[c] : T(0));
      y[e] = add_rn(mean, mul_rn(static_cast<T>(eps), sd));
    });
}

// dv[v_index(e)] = dy[e] * eps_e / (2 sqrt(v[v_index(e)] + e0)). dv may be v (in place).
template <class T>
__global__ void lrt_backward_kernel(BatchNoise noise, const uint32_t* step, LrtShape s, T e0,
                                    const T* __restrict__ dy, const T* v, T* dv) {
  if (step) noise.key.step = *step;
  const int64_t groups = lrt_groups(noise, s);
  for (int64_t g = thread_index(); g < groups; g += grid_stride())
    for_each_lane(noise, s, g, [&](int64_t e, int64_t, int64_t k, float eps) {
      const T sd = vsqrt(v[k] + e0);
      const T r = div_rn(static_cast<T>(eps), mul_rn(T(2), sd));
      dv[k] = mul_rn(r, dy[e]);
    });
}

// dx = dx_mean + t * (2 x), elementwise over `count` elements; dx_mean may be null (no mean
// path, as in variance layers), and dx may alias t or dx_mean.
template <class T>
__global__ void lrt_input_backward_kernel(int64_t count, const T* __restrict__ x, const T* t,
                                          const T* dx_mean, T* dx) {
  for (int64_t k = thread_index(); k < count; k += grid_stride()) {
    const T from_var = mul_rn(t[k], mul_rn(T(2), x[k]));
    dx[k] = dx_mean ? add_rn(dx_mean[k], from_var) : from_var;
  }
}

}  // namespace varnet::kernels
