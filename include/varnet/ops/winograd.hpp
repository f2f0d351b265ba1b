// Winograd's minimal filtering F(4x4, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional
// Neural Networks", 2016): the tile transforms both backends share, host and device.
//
// A 3x3 convolution (cross-correlation, as every CNN computes it) of a 6x6 input tile d gives a
// 4x4 output tile
//   y = A^T [ (G g G^T) . (B^T d B) ] A          (. the elementwise product)
// with the interpolation points 0, 1, -1, 2, -2 and infinity. Over channels the elementwise
// product becomes, for each of the 36 "points" xi of the 6x6 transformed tile, a matrix product
//   M[xi] (O, T) = U[xi] (O, C) V[xi] (C, T),   U = G g G^T per (o, c),  V = B^T d B per (c, tile),
// 36 GEMMs with a reduction over C, against im2col's one GEMM with a reduction over 9 C: 16
// outputs cost 36 multiplications instead of 144, a quarter.
//
// Backward differentiates that same computation (exact in exact arithmetic, so it is the
// convolution's gradient):
//   dM = A dY A^T per (o, tile)               (output_grad_transform, 4x4 -> 6x6)
//   dU[xi] (O, C) = dM[xi] (O, T) V[xi]^T      (36 GEMMs, the reduction over tiles)
//   dg = G^T dU G per (o, c)                   (filter_grad_transform, 6x6 -> 3x3)
// and the input gradient is a convolution of dy with the filter rotated by 180 degrees and its
// channels swapped, with padding 2 - pad: the forward algorithm again (filter_transform with
// `flipped`).
//
// Layouts, all row-major: a transformed tile is point-major, xi = 6 i + j; buffers hold the 36
// points as 36 consecutive matrices, U (36, O, C), V (36, C, T), M (36, O, T).
#pragma once

#include <cstdint>

#include "varnet/core/host_device.hpp"

namespace varnet::winograd {

constexpr int kOut = 4;                    // output tile side, m
constexpr int kIn = 6;                     // input tile side, m + r - 1
constexpr int kPoints = kIn * kIn;         // 36
constexpr int64_t kMaxPad = 2;             // padding 0..2: the input gradient's 2 - pad >= 0
constexpr int64_t tiles(int64_t extent) {  // tiles of kOut covering an output extent
  return (extent + kOut - 1) / kOut;
}

// ---- 1-D transforms (one row or column of a tile); `s` is the output's stride ----

// t = B^T d, 6 -> 6.
template <class T>
VARNET_HOST_DEVICE void input_1d(T d0, T d1, T d2, T d3, T d4, T d5, T* t, int s) {
  t[0 * s] = T(4) * d0 - T(5) * d2 + d4;
  t[1 * s] = -T(4) * (d1 + d2) + d3 + d4;
  t[2 * s] = T(4) * (d1 - d2) - d3 + d4;
  t[3 * s] = T(2) * (d3 - d1) - d2 + d4;
  t[4 * s] = T(2) * (d1 - d3) - d2 + d4;
  t[5 * s] = T(4) * d1 - T(5) * d3 + d5;
}

// u = G g, 3 -> 6.
template <class T>
VARNET_HOST_DEVICE void filter_1d(T g0, T g1, T g2, T* u, int s) {
  const T sixth = T(1) / T(6), even = g0 + g2;
  u[0 * s] = g0 / T(4);
  u[1 * s] = -(even + g1) * sixth;
  u[2 * s] = -(even - g1) * sixth;
  u[3 * s] = g0 / T(24) + g1 / T(12) + g2 / T(6);
  u[4 * s] = g0 / T(24) - g1 / T(12) + g2 / T(6);
  u[5 * s] = g2;
}

// y = A^T m, 6 -> 4.
template <class T>
VARNET_HOST_DEVICE void output_1d(T m0, T m1, T m2, T m3, T m4, T m5, T* y, int s) {
  const T p12 = m1 + m2, d12 = m1 - m2, p34 = m3 + m4, d34 = m3 - m4;
  y[0 * s] = m0 + p12 + p34;
  y[1 * s] = d12 + T(2) * d34;
  y[2 * s] = p12 + T(4) * p34;
  y[3 * s] = d12 + T(8) * d34 + m5;
}

// dm = A dy, 4 -> 6 (the adjoint of output_1d).
template <class T>
VARNET_HOST_DEVICE void output_grad_1d(T y0, T y1, T y2, T y3, T* m, int s) {
  const T e = y0 + y2, o = y1 + y3, e4 = y0 + T(4) * y2, o2 = T(2) * y1 + T(8) * y3;
  m[0 * s] = y0;
  m[1 * s] = e + o;
  m[2 * s] = e - o;
  m[3 * s] = e4 + o2;
  m[4 * s] = e4 - o2;
  m[5 * s] = y3;
}

// dg = G^T du, 6 -> 3 (the adjoint of filter_1d).
template <class T>
VARNET_HOST_DEVICE void filter_grad_1d(T u0, T u1, T u2, T u3, T u4, T u5, T* g, int s) {
  g[0 * s] = u0 / T(4) - (u1 + u2) / T(6) + (u3 + u4) / T(24);
  g[1 * s] = (u2 - u1) / T(6) + (u3 - u4) / T(12);
  g[2 * s] = (u3 + u4 - u1 - u2) / T(6) + u5;
}

// ---- 2-D transforms: the 1-D one down the columns, then along the rows ----

// v (6x6) = B^T d B.
template <class T>
VARNET_HOST_DEVICE void input_transform(const T (&d)[kIn][kIn], T (&v)[kIn][kIn]) {
  T t[kIn][kIn];
  for (int j = 0; j < kIn; ++j)
    input_1d(d[0][j], d[1][j], d[2][j], d[3][j], d[4][j], d[5][j], &t[0][j], kIn);
  for (int i = 0; i < kIn; ++i)
    input_1d(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5], &v[i][0], 1);
}

// u (6x6) = G g G^T for a 3x3 filter g.
template <class T>
VARNET_HOST_DEVICE void filter_transform(const T (&g)[3][3], T (&u)[kIn][kIn]) {
  T t[kIn][3];
  for (int j = 0; j < 3; ++j) filter_1d(g[0][j], g[1][j], g[2][j], &t[0][j], 3);
  for (int i = 0; i < kIn; ++i) filter_1d(t[i][0], t[i][1], t[i][2], &u[i][0], 1);
}

// y (4x4) = A^T m A.
template <class T>
VARNET_HOST_DEVICE void output_transform(const T (&m)[kIn][kIn], T (&y)[kOut][kOut]) {
  T t[kOut][kIn];
  for (int j = 0; j < kIn; ++j)
    output_1d(m[0][j], m[1][j], m[2][j], m[3][j], m[4][j], m[5][j], &t[0][j], kIn);
  for (int i = 0; i < kOut; ++i)
    output_1d(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5], &y[i][0], 1);
}

// dm (6x6) = A dy A^T.
template <class T>
VARNET_HOST_DEVICE void output_grad_transform(const T (&dy)[kOut][kOut], T (&dm)[kIn][kIn]) {
  T t[kIn][kOut];
  for (int j = 0; j < kOut; ++j)
    output_grad_1d(dy[0][j], dy[1][j], dy[2][j], dy[3][j], &t[0][j], kOut);
  for (int i = 0; i < kIn; ++i) output_grad_1d(t[i][0], t[i][1], t[i][2], t[i][3], &dm[i][0], 1);
}

// dg (3x3) = G^T du G.
template <class T>
VARNET_HOST_DEVICE void filter_grad_transform(const T (&du)[kIn][kIn], T (&dg)[3][3]) {
  T t[3][kIn];
  for (int j = 0; j < kIn; ++j)
    filter_grad_1d(du[0][j], du[1][j], du[2][j], du[3][j], du[4][j], du[5][j], &t[0][j], kIn);
  for (int i = 0; i < 3; ++i)
    filter_grad_1d(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5], &dg[i][0], 1);
}

// ---- tiles of a plane ----

// The 6x6 window of plane (h, w) whose top-left corner is (r0, c0), zero outside the plane.
template <class T>
VARNET_HOST_DEVICE void load_window(const T* plane, int64_t h, int64_t w, int64_t r0, int64_t c0,
                                    T (&d)[kIn][kIn]) {
  if (r0 >= 0 && c0 >= 0 && r0 + kIn <= h && c0 + kIn <= w) {  // inside: no tests per value
    for (int i = 0; i < kIn; ++i)
      for (int j = 0; j < kIn; ++j) d[i][j] = plane[(r0 + i) * w + c0 + j];
    return;
  }
  for (int i = 0; i < kIn; ++i)
    for (int j = 0; j < kIn; ++j) {
      const int64_t r = r0 + i, c = c0 + j;
      d[i][j] = (r >= 0 && r < h && c >= 0 && c < w) ? plane[r * w + c] : T(0);
    }
}

// The 4x4 block of plane (h, w) at (r0, c0), zero outside the plane.
template <class T>
VARNET_HOST_DEVICE void load_block(const T* plane, int64_t h, int64_t w, int64_t r0, int64_t c0,
                                   T (&y)[kOut][kOut]) {
  for (int i = 0; i < kOut; ++i)
    for (int j = 0; j < kOut; ++j) {
      const int64_t r = r0 + i, c = c0 + j;
      y[i][j] = (r < h && c < w) ? plane[r * w + c] : T(0);
    }
}

// The filter (3x3) of weight (O, C, 3, 3) at (o, c), rotated by 180 degrees when `flipped`.
template <class T>
VARNET_HOST_DEVICE void load_filter(const T* w, int64_t C, int64_t o, int64_t c, bool flipped,
                                    T (&g)[3][3]) {
  const T* f = w + (o * C + c) * 9;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) g[i][j] = flipped ? f[(2 - i) * 3 + (2 - j)] : f[i * 3 + j];
}

}  // namespace varnet::winograd
