// im2col and its adjoint (col2im) on the GPU; the CPU twins are ops::im2col / ops::col2im in
// include/varnet/ops/conv.hpp, with the same layouts:
//   x (N, C, H, W);  columns (R, N * P), R = C * KH * KW, P = OH * OW, column n * P + p holding
//   the receptive field of output position p of sample n, zero where it reaches into padding.
// Index arithmetic is done in I = int32_t when the tensors are small enough (the launcher
// decides), since 64-bit division is several times slower on the GPU.
#pragma once

#include <cstdint>

#include "kernels/math.cuh"
#include "varnet/core/host_device.hpp"

namespace varnet::kernels {

// The device twin of ops::ConvGeometry, with the output size precomputed.
struct ConvShape {
  int64_t in_c = 0, in_h = 0, in_w = 0;
  int64_t out_c = 0, k_h = 0, k_w = 0;
  int64_t stride = 1, pad = 0;
  int64_t out_h = 0, out_w = 0;
  VARNET_HOST_DEVICE int64_t rows() const { return in_c * k_h * k_w; }
  VARNET_HOST_DEVICE int64_t plane() const { return out_h * out_w; }
};

// One thread per column element: cols[r, n*P + p] = x at that window position (0 in padding),
// cols2 the same squared. Either output may be null (im2col alone, or squares alone, as the
// variance convolution needs).
template <class T, class I>
__global__ void im2col_forward_kernel(const T* __restrict__ x, I n, ConvShape gs,
                                      T* __restrict__ cols, T* __restrict__ cols2) {
  const I in_c = I(gs.in_c), in_h = I(gs.in_h), in_w = I(gs.in_w), k_h = I(gs.k_h), k_w = I(gs.k_w),
          stride = I(gs.stride), pad = I(gs.pad), ow = I(gs.out_w);
  const I P = I(gs.out_h) * ow, NP = n * P, total = I(gs.rows()) * NP;
  for (I idx = I(thread_index()); idx < total; idx += I(grid_stride())) {
    const I r = idx / NP, rest = idx - r * NP;
    const I b = rest / P, p = rest - b * P;
    const I i = p / ow, j = p - i * ow;
    const I c = r / (k_h * k_w), kh = (r / k_w) % k_h, kw = r % k_w;
    const I ih = i * stride - pad + kh, iw = j * stride - pad + kw;
    T val = T(0);
    if (ih >= 0 && ih < in_h && iw >= 0 && iw < in_w)
      val = x[((b * in_c + c) * in_h + ih) * in_w + iw];
    if (cols) cols[idx] = val;
    if (cols2) cols2[idx] = mul_rn(val, val);
  }
}

// col2im: one thread per input element (n, c, h, w) sums the column entries that read it, in
// the (kh, kw) order of the CPU loop, so no atomics are needed and the sums match the CPU's
// bit for bit. Overwrites dx. With times_2x (the variance convolution's input gradient), the
// sum is multiplied by 2 x at the same element: dx = 2 x * col2im(dcols).
template <class T, class I>
__global__ void im2col_backward_kernel(const T* __restrict__ dcols, I n, ConvShape gs,
                                       const T* __restrict__ times_2x, T* __restrict__ dx) {
  const I in_c = I(gs.in_c), in_h = I(gs.in_h), in_w = I(gs.in_w), k_h = I(gs.k_h), k_w = I(gs.k_w),
          stride = I(gs.stride), pad = I(gs.pad), oh = I(gs.out_h), ow = I(gs.out_w);
  const I P = oh * ow, NP = n * P, total = n * in_c * in_h * in_w;
  for (I idx = I(thread_index()); idx < total; idx += I(grid_stride())) {
    const I iw = idx % in_w, ih = (idx / in_w) % in_h, c = (idx / (in_w * in_h)) % in_c,
            b = idx / (in_w * in_h * in_c);
    T sum = T(0);
    for (I kh = 0; kh < k_h; ++kh) {
      const I ti = ih + pad - kh;  // = i * stride for the output row i that reads (ih, kh)
      if (ti < 0 || ti % stride != 0) continue;
      const I i = ti / stride;
      if (i >= oh) continue;
      for (I kw = 0; kw < k_w; ++kw) {
        const I tj = iw + pad - kw;
        if (tj < 0 || tj % stride != 0) continue;
        const I j = tj / stride;
        if (j >= ow) continue;
        sum = add_rn(sum, dcols[((c * k_h + kh) * k_w + kw) * NP + b * P + i * ow + j]);
      }
    }
    dx[idx] = times_2x ? mul_rn(sum, mul_rn(T(2), times_2x[idx])) : sum;
  }
}

}  // namespace varnet::kernels
