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

// The ConvShape of a geometry g (an ops::ConvGeometry), unchecked: cuda::conv_shape checks it.
template <class Geometry>
ConvShape make_conv_shape(const Geometry& g) {
  ConvShape s;
  s.in_c = g.in_c;
  s.in_h = g.in_h;
  s.in_w = g.in_w;
  s.out_c = g.out_c;
  s.k_h = g.k_h;
  s.k_w = g.k_w;
  s.stride = g.stride;
  s.pad = g.pad;
  s.out_h = g.out_h();
  s.out_w = g.out_w();
  return s;
}

// Grid (x over the N P columns, y over the R rows, both grid-stride): a block's threads share
// one row r, so the row's channel and kernel offsets are decoded once per block and a thread
// decodes only its column (two divisions). cols[r, n*P + p] = x at that window position (0 in
// padding), cols2 the same squared. Either output may be null (im2col alone, or squares alone,
// as the variance convolution needs).
template <class T, class I>
__global__ void im2col_forward_kernel(const T* __restrict__ x, I n, ConvShape gs,
                                      T* __restrict__ cols, T* __restrict__ cols2) {
  const I in_c = I(gs.in_c), in_h = I(gs.in_h), in_w = I(gs.in_w), k_h = I(gs.k_h), k_w = I(gs.k_w),
          stride = I(gs.stride), pad = I(gs.pad), ow = I(gs.out_w);
  const I P = I(gs.out_h) * ow, NP = n * P, R = I(gs.rows());
  for (I r = I(blockIdx.y); r < R; r += I(gridDim.y)) {
    const I c = r / (k_h * k_w), kh = (r / k_w) % k_h, kw = r % k_w;
    const T* plane = x + c * in_h * in_w;  // channel c of sample 0
    T* out = cols ? cols + r * NP : nullptr;
    T* out2 = cols2 ? cols2 + r * NP : nullptr;
    for (I col = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); col < NP;
         col += I(gridDim.x) * I(blockDim.x)) {
      const I b = col / P, p = col - b * P;
      const I i = p / ow, j = p - i * ow;
      const I ih = i * stride - pad + kh, iw = j * stride - pad + kw;
      T val = T(0);
      if (ih >= 0 && ih < in_h && iw >= 0 && iw < in_w)
        val = plane[(b * in_c * in_h + ih) * in_w + iw];
      if (out) out[col] = val;
      if (out2) out2[col] = mul_rn(val, val);
    }
  }
}

// col2im: one thread per input element (n, c, h, w) sums the column entries that read it, in
// the (kh, kw) order of the CPU loop, so no atomics are needed and the sums match the CPU's
// bit for bit. Overwrites dx. With times_2x (the variance convolution's input gradient), the
// sum is multiplied by 2 x at the same element: dx = 2 x * col2im(dcols). Grid: x over the
// H W positions of a plane, y over the N C planes (grid-stride), so a thread decodes its row and
// column with one division; Unit: stride 1 (the common case), where no division by the stride
// is needed.
template <class T, class I, bool Unit>
__global__ void im2col_backward_kernel(const T* __restrict__ dcols, I n, ConvShape gs,
                                       const T* __restrict__ times_2x, T* __restrict__ dx) {
  const I in_c = I(gs.in_c), in_h = I(gs.in_h), in_w = I(gs.in_w), k_h = I(gs.k_h), k_w = I(gs.k_w),
          stride = I(gs.stride), pad = I(gs.pad), oh = I(gs.out_h), ow = I(gs.out_w);
  const I P = oh * ow, NP = n * P, HW = in_h * in_w, planes = n * in_c;
  for (I plane = I(blockIdx.y); plane < planes; plane += I(gridDim.y)) {
    const I b = plane / in_c, c = plane - b * in_c;
    const T* base = dcols + c * k_h * k_w * NP + b * P;  // row (c, 0, 0), sample b
    for (I pos = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); pos < HW;
         pos += I(gridDim.x) * I(blockDim.x)) {
      const I ih = pos / in_w, iw = pos - ih * in_w;
      T sum = T(0);
      for (I kh = 0; kh < k_h; ++kh) {
        const I ti = ih + pad - kh;  // = i * stride for the output row i that reads (ih, kh)
        if (ti < 0 || (!Unit && ti % stride != 0)) continue;
        const I i = Unit ? ti : ti / stride;
        if (i >= oh) continue;
        for (I kw = 0; kw < k_w; ++kw) {
          const I tj = iw + pad - kw;
          if (tj < 0 || (!Unit && tj % stride != 0)) continue;
          const I j = Unit ? tj : tj / stride;
          if (j >= ow) continue;
          sum = add_rn(sum, base[(kh * k_w + kw) * NP + i * ow + j]);
        }
      }
      const I idx = plane * HW + pos;
      dx[idx] = times_2x ? mul_rn(sum, mul_rn(T(2), times_2x[idx])) : sum;
    }
  }
}

}  // namespace varnet::kernels
