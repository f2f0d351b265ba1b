// Max pooling on the GPU; the CPU twin is MaxPool2d in include/varnet/layers/pooling.hpp, with
// the same semantics:
//   x (N, C, H, W) -> y (N, C, OH, OW), OH = (H - k) / s + 1, OW = (W - k) / s + 1, no padding;
//   each output is the first maximum of its k x k window in row-major window order (a later
//   element replaces the best only when strictly greater), found again in backward rather than
//   stored as an index.
// Index arithmetic is done in I = int32_t when the tensors are small enough (the launcher
// decides), as in im2col.cuh.
#pragma once

#include <cstdint>

#include "kernels/math.cuh"
#include "varnet/core/host_device.hpp"

namespace varnet::kernels {

// x viewed as `planes` = N * C planes of (in_h, in_w); y as planes of (out_h, out_w).
struct PoolShape {
  int64_t planes = 0;
  int64_t in_h = 0, in_w = 0;
  int64_t out_h = 0, out_w = 0;
  int64_t k = 2, stride = 2;
  VARNET_HOST_DEVICE int64_t in_plane() const { return in_h * in_w; }
  VARNET_HOST_DEVICE int64_t out_plane() const { return out_h * out_w; }
};

// Offset within a plane of width w of the first maximum of window (i, j): MaxPool2d::argmax.
template <class T, class I>
__device__ __forceinline__ I window_argmax(const T* __restrict__ src, I w, I k, I s, I i, I j) {
  I best = i * s * w + j * s;
  T best_v = src[best];
  for (I a = 0; a < k; ++a)
    for (I b = 0; b < k; ++b) {
      const I at = (i * s + a) * w + j * s + b;
      const T v = src[at];
      if (v > best_v) {
        best = at;
        best_v = v;
      }
    }
  return best;
}

// One thread per output element: y = x at the first maximum of its window.
template <class T, class I>
__global__ void max_pool_forward_kernel(const T* __restrict__ x, PoolShape ps, T* __restrict__ y) {
  const I in_w = I(ps.in_w), ow = I(ps.out_w), k = I(ps.k), s = I(ps.stride);
  const I in_plane = I(ps.in_plane()), out_plane = I(ps.out_plane());
  const I total = I(ps.planes) * out_plane;
  for (I idx = I(thread_index()); idx < total; idx += I(grid_stride())) {
    const I plane = idx / out_plane, p = idx - plane * out_plane;
    const I i = p / ow, j = p - i * ow;
    const T* src = x + plane * in_plane;
    y[idx] = src[window_argmax(src, in_w, k, s, i, j)];
  }
}

// One thread per input element (a gather, so no atomics and a fixed order): dx is the sum of
// dy over the windows whose first maximum is this element, added in the row-major window order
// in which the CPU scatters them, so the sums match the CPU's bit for bit; 0 where no window
// picks the element (or none covers it). Overwrites dx.
template <class T, class I>
__global__ void max_pool_backward_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                         PoolShape ps, T* __restrict__ dx) {
  const I in_w = I(ps.in_w), oh = I(ps.out_h), ow = I(ps.out_w), k = I(ps.k), s = I(ps.stride);
  const I in_plane = I(ps.in_plane()), out_plane = I(ps.out_plane());
  const I total = I(ps.planes) * in_plane;
  for (I idx = I(thread_index()); idx < total; idx += I(grid_stride())) {
    const I plane = idx / in_plane, p = idx - plane * in_plane;
    const I h = p / in_w, w = p - h * in_w;
    // Windows (i, j) covering (h, w): i s <= h < i s + k, i.e. i in [ceil((h - k + 1) / s),
    // h / s], clipped to the output.
    const I i0 = h < k ? I(0) : (h - k) / s + 1, i1 = h / s < oh ? h / s : oh - 1;
    const I j0 = w < k ? I(0) : (w - k) / s + 1, j1 = w / s < ow ? w / s : ow - 1;
    const T* src = x + plane * in_plane;
    const T* g = dy + plane * out_plane;
    T sum = T(0);
    for (I i = i0; i <= i1; ++i)
      for (I j = j0; j <= j1; ++j)
        if (window_argmax(src, in_w, k, s, i, j) == p) sum = add_rn(sum, g[i * ow + j]);
    dx[idx] = sum;
  }
}

}  // namespace varnet::kernels
