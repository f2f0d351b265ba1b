// Convolution geometry and the batched im2col layout.
//
// Layouts: x (N, C, H, W); W (O, R) with R = C * KH * KW; columns (R, N * P) with P = OH * OW,
// column n * P + p holding the receptive field of output position p of sample n; the GEMM
// result Y2 = W * columns is (O, N * P), "channel-major", and is scattered to y (N, O, OH, OW).
//
// The CPU layers convolve one sample at a time (ops/conv_samples.hpp says why); the batched
// functions here are the layout of the GPU's kernels (kernels/im2col.cuh) and their CPU reference
// in the parity tests (tests/cuda, tests/emulation). tests/test_layers.cpp checks them against a
// direct convolution.
#pragma once

#include <algorithm>
#include <cstdint>

#include "varnet/core/parallel.hpp"
#include "varnet/ops/gemm.hpp"

namespace varnet {

// How a deterministic convolution is computed (ConvOptions::algorithm). Auto: Winograd's
// F(4x4, 3x3) where ops::winograd_pays says it is worth it, im2col and GEMM elsewhere. Winograd
// is refused at construction for kernels other than 3x3 at stride 1 and padding 0-2.
enum class ConvAlgorithm { Auto, Im2col, Winograd };

}  // namespace varnet

namespace varnet::ops {

struct ConvGeometry {
  int64_t in_c = 0, in_h = 0, in_w = 0;
  int64_t out_c = 0, k_h = 0, k_w = 0;
  int64_t stride = 1, pad = 0;

  int64_t out_h() const { return (in_h + 2 * pad - k_h) / stride + 1; }
  int64_t out_w() const { return (in_w + 2 * pad - k_w) / stride + 1; }
  int64_t rows() const { return in_c * k_h * k_w; }    // R
  int64_t plane() const { return out_h() * out_w(); }  // P
};

// The output columns j in [j0, j1) of kernel column kw read input columns inside the image (stride
// 1); the others read the zero padding.
inline void inside_columns(const ConvGeometry& g, int64_t kw, int64_t& j0, int64_t& j1) {
  j0 = std::clamp<int64_t>(g.pad - kw, 0, g.out_w());
  j1 = std::clamp<int64_t>(g.in_w + g.pad - kw, j0, g.out_w());
}

// columns (R, N * P) from x (N, C, H, W); zero where the window reaches into the padding.
template <class T>
void im2col(const T* x, int64_t n, const ConvGeometry& g, T* cols) {
  const int64_t oh = g.out_h(), ow = g.out_w(), P = oh * ow, NP = n * P;
  parallel_for(
      g.rows() * n,
      [&](int64_t job) {
        const int64_t r = job / n, b = job % n;
        const int64_t c = r / (g.k_h * g.k_w), kh = (r / g.k_w) % g.k_h, kw = r % g.k_w;
        const T* plane = x + (b * g.in_c + c) * g.in_h * g.in_w;
        T* dst = cols + r * NP + b * P;
        for (int64_t i = 0; i < oh; ++i) {
          const int64_t ih = i * g.stride - g.pad + kh;
          T* row = dst + i * ow;
          if (ih < 0 || ih >= g.in_h) {
            std::fill(row, row + ow, T(0));
            continue;
          }
          const T* src = plane + ih * g.in_w;
          if (g.stride == 1) {  // a contiguous run, zero-padded at both ends
            int64_t j0 = 0, j1 = ow;
            inside_columns(g, kw, j0, j1);
            std::fill(row, row + j0, T(0));
            std::copy(src + j0 - g.pad + kw, src + j1 - g.pad + kw, row + j0);
            std::fill(row + j1, row + ow, T(0));
            continue;
          }
          for (int64_t j = 0; j < ow; ++j) {
            const int64_t iw = j * g.stride - g.pad + kw;
            row[j] = (iw >= 0 && iw < g.in_w) ? src[iw] : T(0);
          }
        }
      },
      P);
}

// dx (N, C, H, W) = the adjoint of im2col applied to dcols (R, N * P). Overwrites dx.
template <class T>
void col2im(const T* dcols, int64_t n, const ConvGeometry& g, T* dx) {
  const int64_t oh = g.out_h(), ow = g.out_w(), P = oh * ow, NP = n * P;
  parallel_for(
      n * g.in_c,
      [&](int64_t job) {
        const int64_t b = job / g.in_c, c = job % g.in_c;
        T* plane = dx + job * g.in_h * g.in_w;
        std::fill(plane, plane + g.in_h * g.in_w, T(0));
        for (int64_t kh = 0; kh < g.k_h; ++kh)
          for (int64_t kw = 0; kw < g.k_w; ++kw) {
            const T* src = dcols + ((c * g.k_h + kh) * g.k_w + kw) * NP + b * P;
            for (int64_t i = 0; i < oh; ++i) {
              const int64_t ih = i * g.stride - g.pad + kh;
              if (ih < 0 || ih >= g.in_h) continue;
              T* row = plane + ih * g.in_w;
              for (int64_t j = 0; j < ow; ++j) {
                const int64_t iw = j * g.stride - g.pad + kw;
                if (iw >= 0 && iw < g.in_w) row[iw] += src[i * ow + j];
              }
            }
          }
      },
      g.k_h * g.k_w * P);
}

// y (N, O, P) = Y2 (O, N * P) (+ bias[o]).
template <class T>
void channel_major_to_nchw(const T* y2, const T* bias, int64_t n, int64_t o, int64_t p, T* y) {
  parallel_for(
      n * o,
      [&](int64_t job) {
        const int64_t b = job / o, c = job % o;
        const T* src = y2 + c * n * p + b * p;
        T* dst = y + job * p;
        const T add = bias ? bias[c] : T(0);
        for (int64_t i = 0; i < p; ++i) dst[i] = src[i] + add;
      },
      p);
}

// Y2 (O, N * P) = y (N, O, P).
template <class T>
void nchw_to_channel_major(const T* y, int64_t n, int64_t o, int64_t p, T* y2) {
  parallel_for(
      n * o,
      [&](int64_t job) {
        const int64_t b = job / o, c = job % o;
        std::copy(y + job * p, y + (job + 1) * p, y2 + c * n * p + b * p);
      },
      p);
}

// db[o] += sum over n, p of dy (N, O, P).
template <class T>
void bias_backward(const T* dy, int64_t n, int64_t o, int64_t p, T* db) {
  for (int64_t c = 0; c < o; ++c) {
    T s = 0;
    for (int64_t b = 0; b < n; ++b) s += ConstVectorMap<T>(dy + (b * o + c) * p, p).sum();
    db[c] += s;
  }
}

}  // namespace varnet::ops
