// Winograd F(4x4, 3x3) convolution kernels: the tile transforms of include/varnet/ops/winograd.hpp
// (the same functions the CPU runs), one thread per (channel, tile). The 36 GEMMs between them
// are cuBLAS's (include/varnet/cuda/winograd.hpp).
//
// Kernels over every (channel, tile) take their index type I as im2col's do (int32 when the
// launcher finds the buffers small enough: 64-bit division is several times slower).
//
// Tiles are numbered over the whole batch, t = (n * rows + i) * cols + j for a tile grid of
// rows x cols per sample, and buffers are (36, channels, ld) with ld >= the tile count: threads
// with consecutive t read and write consecutive addresses of each of the 36 matrices. Columns
// [tiles, ld) are padding the weight gradient's chunked reduction reads: the kernels that write
// a (36, channels, ld) buffer zero them.
#pragma once

#include <cstdint>

#include "varnet/core/host_device.hpp"
#include "varnet/ops/winograd.hpp"

namespace varnet::kernels {

// The tile grid of one sample's output plane (h, w) and the batch's padded column count.
struct WinogradTiles {
  int64_t n = 0, rows = 0, cols = 0;  // samples, tiles down and across a plane
  int64_t ld = 0;                     // columns of the (36, channels, ld) buffers, >= tiles()
  VARNET_HOST_DEVICE int64_t per_sample() const { return rows * cols; }
  VARNET_HOST_DEVICE int64_t tiles() const { return n * rows * cols; }
};

// u (36, O, C) = G g G^T for each filter of w (O, C, 3, 3); with `flipped`, u (36, C, O) for the
// rotated filters with channels swapped (the input gradient's). One thread per (o, c).
template <class T>
__global__ void winograd_filter_kernel(const T* __restrict__ w, int64_t O, int64_t C, bool flipped,
                                       T* __restrict__ u) {
  const int64_t OC = O * C;
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < OC;
       k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = k / C, c = k - o * C;
    T g[3][3], t[winograd::kIn][winograd::kIn];
    winograd::load_filter(w, C, o, c, flipped, g);
    winograd::filter_transform(g, t);
    const int64_t at = flipped ? c * O + o : k;
#pragma unroll
    for (int xi = 0; xi < winograd::kPoints; ++xi)
      u[xi * OC + at] = t[xi / winograd::kIn][xi % winograd::kIn];
  }
}

// v (36, C, ld) = B^T d B for every (c, tile) of x (N, C, H, W): tile (i, j) of sample b reads the
// 6x6 window at (4 i - pad, 4 j - pad) of plane (b, c). Zero in columns [tiles, ld).
template <class T, class I>
__global__ void winograd_input_kernel(const T* __restrict__ x, I C, I H, I W, I pad,
                                      WinogradTiles g, T* __restrict__ v) {
  const I ld = I(g.ld), cols = I(g.cols), per = I(g.per_sample()), tiles = I(g.tiles());
  const I total = C * ld;
  for (I k = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); k < total;
       k += I(gridDim.x) * I(blockDim.x)) {
    const I c = k / ld, t = k - c * ld;
    T out[winograd::kIn][winograd::kIn] = {};
    if (t < tiles) {
      const I b = t / per, r = t - b * per, i = r / cols, j = r - i * cols;
      T d[winograd::kIn][winograd::kIn];
      winograd::load_window(x + (b * C + c) * H * W, H, W, i * winograd::kOut - pad,
                            j * winograd::kOut - pad, d);
      winograd::input_transform(d, out);
    }
#pragma unroll
    for (int xi = 0; xi < winograd::kPoints; ++xi)
      v[xi * total + k] = out[xi / winograd::kIn][xi % winograd::kIn];
  }
}

// y (N, O, OH, OW) = A^T m A (+ bias[o]) for every (o, tile), m (36, O, ld).
template <class T, class I>
__global__ void winograd_output_kernel(const T* __restrict__ m, I O, I OH, I OW, WinogradTiles g,
                                       const T* __restrict__ bias, T* __restrict__ y) {
  const I ld = I(g.ld), cols = I(g.cols), per = I(g.per_sample()), tiles = I(g.tiles());
  const I total = O * tiles;
  for (I k = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); k < total;
       k += I(gridDim.x) * I(blockDim.x)) {
    const I o = k / tiles, t = k - o * tiles;
    const I b = t / per, r = t - b * per, i = r / cols, j = r - i * cols;
    T in[winograd::kIn][winograd::kIn], out[winograd::kOut][winograd::kOut];
#pragma unroll
    for (int xi = 0; xi < winograd::kPoints; ++xi)
      in[xi / winograd::kIn][xi % winograd::kIn] = m[(xi * O + o) * ld + t];
    winograd::output_transform(in, out);
    const T add = bias ? bias[o] : T(0);
    const I r0 = i * winograd::kOut, c0 = j * winograd::kOut;
    T* plane = y + (b * O + o) * OH * OW;
#pragma unroll
    for (int a = 0; a < winograd::kOut; ++a)
#pragma unroll
      for (int e = 0; e < winograd::kOut; ++e)
        if (r0 + a < OH && c0 + e < OW) plane[(r0 + a) * OW + c0 + e] = out[a][e] + add;
  }
}

// dm (36, O, ld) = A dY A^T for every (o, tile) of dy (N, O, OH, OW), zero beyond the plane's edge
// and in columns [tiles, ld).
template <class T, class I>
__global__ void winograd_output_grad_kernel(const T* __restrict__ dy, I O, I OH, I OW,
                                            WinogradTiles g, T* __restrict__ dm) {
  const I ld = I(g.ld), cols = I(g.cols), per = I(g.per_sample()), tiles = I(g.tiles());
  const I total = O * ld;
  for (I k = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); k < total;
       k += I(gridDim.x) * I(blockDim.x)) {
    const I o = k / ld, t = k - o * ld;
    T out[winograd::kIn][winograd::kIn] = {};
    if (t < tiles) {
      const I b = t / per, r = t - b * per, i = r / cols, j = r - i * cols;
      T blk[winograd::kOut][winograd::kOut];
      winograd::load_block(dy + (b * O + o) * OH * OW, OH, OW, i * winograd::kOut,
                           j * winograd::kOut, blk);
      winograd::output_grad_transform(blk, out);
    }
#pragma unroll
    for (int xi = 0; xi < winograd::kPoints; ++xi)
      dm[xi * total + k] = out[xi / winograd::kIn][xi % winograd::kIn];
  }
}

// The chunked weight-gradient GEMM's operands: entry s * 36 + xi of a, b and c points at chunk s
// (columns [s L, s L + L)) of dM[xi] (O, ld), V[xi] (C, ld), and at partial (s, xi) (O, C).
template <class T>
__global__ void winograd_grad_pointers_kernel(const T* dm, const T* v, T* parts, int64_t O,
                                              int64_t C, int64_t ld, int64_t L, int chunks,
                                              const T** a, const T** b, T** c) {
  const int total = chunks * winograd::kPoints;
  for (int k = int(blockIdx.x * blockDim.x + threadIdx.x); k < total;
       k += int(gridDim.x * blockDim.x)) {
    const int s = k / winograd::kPoints, xi = k - s * winograd::kPoints;
    a[k] = dm + xi * O * ld + s * L;
    b[k] = v + xi * C * ld + s * L;
    c[k] = parts + int64_t(k) * O * C;
  }
}

// dw (O, C, 3, 3) += G^T dU G per (o, c), dU[xi] = the sum of the chunks' partials (s, xi) (O, C)
// in chunk order. One thread per (o, c).
template <class T>
__global__ void winograd_filter_grad_kernel(const T* __restrict__ parts, int chunks, int64_t O,
                                            int64_t C, T* __restrict__ dw) {
  const int64_t OC = O * C;
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < OC;
       k += int64_t(gridDim.x) * blockDim.x) {
    T du[winograd::kIn][winograd::kIn], g[3][3];
#pragma unroll
    for (int xi = 0; xi < winograd::kPoints; ++xi) {
      T sum = T(0);
      for (int s = 0; s < chunks; ++s) sum += parts[(int64_t(s) * winograd::kPoints + xi) * OC + k];
      du[xi / winograd::kIn][xi % winograd::kIn] = sum;
    }
    winograd::filter_grad_transform(du, g);
    T* f = dw + k * 9;
#pragma unroll
    for (int e = 0; e < 9; ++e) f[e] += g[e / 3][e % 3];
  }
}

}  // namespace varnet::kernels
