// 3x3 stride-1 convolutions on the CPU by Winograd's F(4x4, 3x3) (ops/winograd.hpp has the
// algorithm and the layouts): a quarter of im2col's multiplications, in 36 GEMMs per group of
// samples.
//
// Work is split as in ops/conv_samples.hpp: groups of kSampleGroup samples in parallel, each
// group's tiles transformed into a per-thread buffer (36, C, group tiles) that the group's GEMMs
// read while it is in cache; the weight gradient sums over groups in a fixed order, so results do
// not depend on the number of threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "varnet/core/error.hpp"
#include "varnet/ops/conv.hpp"
#include "varnet/ops/conv_samples.hpp"
#include "varnet/ops/gemm.hpp"
#include "varnet/ops/winograd.hpp"

namespace varnet::ops {

// Whether F(4x4, 3x3) computes this convolution: a 3x3 kernel, stride 1, padding at most 2.
inline bool winograd_applies(const ConvGeometry& g) {
  return g.k_h == 3 && g.k_w == 3 && g.stride == 1 && g.pad >= 0 && g.pad <= winograd::kMaxPad;
}

// ConvAlgorithm::Auto's rule, the same on both backends: Winograd where it applies and the
// layer is wide enough for its 36 GEMMs (reductions over C) to be efficient, on planes of at
// least 8x8 outputs (smaller ones waste much of a 4x4 tile, or give a GEMM of a few columns).
inline bool winograd_pays(const ConvGeometry& g) {
  return winograd_applies(g) && g.out_h() >= 8 && g.out_w() >= 8 && g.in_c >= 16 && g.out_c >= 16;
}

namespace detail {
inline void require_winograd(const ConvGeometry& g) {
  check(winograd_applies(g), "convolution", "a 3x3 kernel, stride 1 and padding 0-2 for Winograd",
        "kernel ", g.k_h, "x", g.k_w, ", stride ", g.stride, ", pad ", g.pad);
}
}  // namespace detail

// Throws unless a layer of this kernel, stride and padding can take algorithm `a` (only
// ConvAlgorithm::Winograd has conditions); layers call it at construction.
inline void check_conv_algorithm(ConvAlgorithm a, int64_t kernel, int64_t stride, int64_t pad) {
  if (a == ConvAlgorithm::Winograd)
    detail::require_winograd(ConvGeometry{1, kernel, kernel, 1, kernel, kernel, stride, pad});
}

inline bool uses_winograd(ConvAlgorithm a, const ConvGeometry& g) {
  if (a == ConvAlgorithm::Im2col) return false;
  if (a == ConvAlgorithm::Auto) return winograd_pays(g);
  detail::require_winograd(g);
  return true;
}

// The tile grid of a plane of outputs.
struct WinogradGrid {
  int64_t rows = 0, cols = 0;
  explicit WinogradGrid(int64_t out_h, int64_t out_w)
      : rows(winograd::tiles(out_h)), cols(winograd::tiles(out_w)) {}
  int64_t per_sample() const { return rows * cols; }
};

// u (36, O, C) = G g G^T for each filter of w (O, C, 3, 3); when `flipped`, u (36, C, O) for
// the filters rotated by 180 degrees with the channels swapped (the input gradient's filters).
template <class T>
void winograd_filters(const T* w, int64_t O, int64_t C, bool flipped, T* u) {
  parallel_for(
      O,
      [&](int64_t o) {
        for (int64_t c = 0; c < C; ++c) {
          T g[3][3], t[winograd::kIn][winograd::kIn];
          winograd::load_filter(w, C, o, c, flipped, g);
          winograd::filter_transform(g, t);
          const int64_t at = flipped ? c * O + o : o * C + c;
          for (int xi = 0; xi < winograd::kPoints; ++xi)
            u[xi * O * C + at] = t[xi / winograd::kIn][xi % winograd::kIn];
        }
      },
      C * winograd::kPoints);
}

// The per-tile transforms below work on runs of kRun consecutive tiles of a sample (row-major
// over the tile grid) at a time, with the run as the innermost index of every staging array: the
// 1-D transforms then vectorise across tiles, and each of the 36 points is read or written as one
// contiguous run of the (36, C, ld) buffers. (One tile at a time, 36 accesses a matrix apart, took
// several times as long as the GEMMs, at 64 channels.)
constexpr int kRun = 16;
using winograd::kIn;
using winograd::kOut;
using winograd::kPoints;

// dst[xi * stride + [0, run)] = block[xi][0, run) for the 36 points; full runs as fixed-size
// copies (vector moves; a variable-length copy became `rep movs`, slow for 64 bytes).
template <class T>
void store_points(const T (&block)[kPoints][kRun], int run, T* dst, int64_t stride) {
  if (run == kRun) {
    for (int xi = 0; xi < kPoints; ++xi)
      std::memcpy(dst + xi * stride, block[xi], sizeof(block[xi]));
    return;
  }
  for (int xi = 0; xi < kPoints; ++xi)
    for (int jj = 0; jj < run; ++jj) dst[xi * stride + jj] = block[xi][jj];
}

// block[xi][0, kRun) = src[xi * stride + [0, run)], zero past run.
template <class T>
void load_points(const T* src, int64_t stride, int run, T (&block)[kPoints][kRun]) {
  if (run == kRun) {
    for (int xi = 0; xi < kPoints; ++xi)
      std::memcpy(block[xi], src + xi * stride, sizeof(block[xi]));
    return;
  }
  for (int xi = 0; xi < kPoints; ++xi)
    for (int jj = 0; jj < kRun; ++jj) block[xi][jj] = jj < run ? src[xi * stride + jj] : T(0);
}

// v (36, C, ld), columns [0, grid tiles): the transformed input tiles of one sample x (C, H, W).
// Tile (i, j) of the output grid reads the 6x6 window at (4 i - pad, 4 j - pad).
template <class T>
void winograd_inputs(const T* x, int64_t C, int64_t H, int64_t W, int64_t pad,
                     const WinogradGrid& grid, T* v, int64_t ld) {
  alignas(64) T d[kIn][kIn][kRun], t[kIn][kIn][kRun], out[kPoints][kRun];
  const int64_t tiles = grid.per_sample();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t0 = 0; t0 < tiles; t0 += kRun) {
      const int run = int(std::min<int64_t>(kRun, tiles - t0));
      for (int jj = 0; jj < kRun; ++jj) {
        T w[kIn][kIn] = {};
        const int64_t tile = t0 + jj, i = tile / grid.cols, j = tile - i * grid.cols;
        if (jj < run) winograd::load_window(x + c * H * W, H, W, i * kOut - pad, j * kOut - pad, w);
        for (int a = 0; a < kIn; ++a)
          for (int b = 0; b < kIn; ++b) d[a][b][jj] = w[a][b];
      }
      for (int b = 0; b < kIn; ++b)  // down the columns: t = B^T d
        for (int jj = 0; jj < kRun; ++jj)
          winograd::input_1d(d[0][b][jj], d[1][b][jj], d[2][b][jj], d[3][b][jj], d[4][b][jj],
                             d[5][b][jj], &t[0][b][jj], kIn * kRun);
      for (int a = 0; a < kIn; ++a)  // along the rows: v = t B
        for (int jj = 0; jj < kRun; ++jj)
          winograd::input_1d(t[a][0][jj], t[a][1][jj], t[a][2][jj], t[a][3][jj], t[a][4][jj],
                             t[a][5][jj], &out[a * kIn][jj], kRun);
      store_points(out, run, v + c * ld + t0, C * ld);
    }
}

// y (O, OH, OW) (+ bias[o]) of one sample from m (36, O, ld), columns [0, grid tiles).
template <class T>
void winograd_outputs(const T* m, int64_t O, int64_t OH, int64_t OW, const WinogradGrid& grid,
                      int64_t ld, const T* bias, T* y) {
  alignas(64) T in[kPoints][kRun], t[kOut][kIn][kRun], out[kOut][kOut][kRun];
  const int64_t tiles = grid.per_sample();
  for (int64_t o = 0; o < O; ++o)
    for (int64_t t0 = 0; t0 < tiles; t0 += kRun) {
      const int run = int(std::min<int64_t>(kRun, tiles - t0));
      load_points(m + o * ld + t0, O * ld, run, in);
      for (int b = 0; b < kIn; ++b)  // t = A^T m
        for (int jj = 0; jj < kRun; ++jj)
          winograd::output_1d(in[b][jj], in[kIn + b][jj], in[2 * kIn + b][jj], in[3 * kIn + b][jj],
                              in[4 * kIn + b][jj], in[5 * kIn + b][jj], &t[0][b][jj], kIn * kRun);
      for (int a = 0; a < kOut; ++a)  // y = t A
        for (int jj = 0; jj < kRun; ++jj)
          winograd::output_1d(t[a][0][jj], t[a][1][jj], t[a][2][jj], t[a][3][jj], t[a][4][jj],
                              t[a][5][jj], &out[a][0][jj], kRun);
      const T add = bias ? bias[o] : T(0);
      for (int jj = 0; jj < run; ++jj) {
        const int64_t tile = t0 + jj, i = tile / grid.cols, j = tile - i * grid.cols;
        const int64_t r0 = i * kOut, c0 = j * kOut;
        const int64_t rows = std::min<int64_t>(kOut, OH - r0),
                      cols = std::min<int64_t>(kOut, OW - c0);
        T* dst = y + (o * OH + r0) * OW + c0;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cols; ++c) dst[r * OW + c] = out[r][c][jj] + add;
      }
    }
}

// dm (36, O, ld), columns [0, grid tiles) = A dY A^T for the 4x4 blocks of one sample's output
// gradient dy (O, OH, OW), zero beyond its edge.
template <class T>
void winograd_output_grads(const T* dy, int64_t O, int64_t OH, int64_t OW, const WinogradGrid& grid,
                           T* dm, int64_t ld) {
  alignas(64) T d[kOut][kOut][kRun], t[kIn][kOut][kRun], out[kPoints][kRun];
  const int64_t tiles = grid.per_sample();
  for (int64_t o = 0; o < O; ++o)
    for (int64_t t0 = 0; t0 < tiles; t0 += kRun) {
      const int run = int(std::min<int64_t>(kRun, tiles - t0));
      for (int jj = 0; jj < kRun; ++jj) {
        T blk[kOut][kOut] = {};
        const int64_t tile = t0 + jj, i = tile / grid.cols, j = tile - i * grid.cols;
        if (jj < run) winograd::load_block(dy + o * OH * OW, OH, OW, i * kOut, j * kOut, blk);
        for (int a = 0; a < kOut; ++a)
          for (int b = 0; b < kOut; ++b) d[a][b][jj] = blk[a][b];
      }
      for (int b = 0; b < kOut; ++b)  // t = A dy
        for (int jj = 0; jj < kRun; ++jj)
          winograd::output_grad_1d(d[0][b][jj], d[1][b][jj], d[2][b][jj], d[3][b][jj], &t[0][b][jj],
                                   kOut * kRun);
      for (int a = 0; a < kIn; ++a)  // dm = t A^T
        for (int jj = 0; jj < kRun; ++jj)
          winograd::output_grad_1d(t[a][0][jj], t[a][1][jj], t[a][2][jj], t[a][3][jj],
                                   &out[a * kIn][jj], kRun);
      store_points(out, run, dm + o * ld + t0, O * ld);
    }
}

// dw (O, C, 3, 3) += G^T dU G from du (36, O, C).
template <class T>
void winograd_filter_grads(const T* du, int64_t O, int64_t C, T* dw) {
  parallel_for(
      O,
      [&](int64_t o) {
        for (int64_t c = 0; c < C; ++c) {
          T t[winograd::kIn][winograd::kIn], g[3][3];
          for (int xi = 0; xi < winograd::kPoints; ++xi)
            t[xi / winograd::kIn][xi % winograd::kIn] = du[xi * O * C + o * C + c];
          winograd::filter_grad_transform(t, g);
          T* f = dw + (o * C + c) * 9;
          for (int k = 0; k < 9; ++k) f[k] += g[k / 3][k % 3];
        }
      },
      C * winograd::kPoints);
}

// Scratch values winograd_forward needs: the transformed filters.
inline int64_t winograd_forward_scratch(const ConvGeometry& g) {
  return winograd::kPoints * g.out_c * g.in_c;
}
// Scratch values winograd_backward needs: the rotated filters' transforms, then the groups'
// transformed weight gradients and bias gradients.
inline int64_t winograd_backward_scratch(int64_t n, const ConvGeometry& g) {
  const int64_t ou = winograd::kPoints * g.out_c * g.in_c;
  return ou + sample_groups(n) * (ou + g.out_c);
}

// y (N, O, OH, OW) = conv(x, w) + bias for x (N, C, H, W), w (O, C, 3, 3), stride 1.
// u: winograd_forward_scratch(g) values.
template <class T>
void winograd_forward(const T* x, const T* w, const T* bias, T* y, int64_t n, const ConvGeometry& g,
                      T* u) {
  if (n == 0) return;
  const int64_t C = g.in_c, O = g.out_c, OH = g.out_h(), OW = g.out_w();
  const int64_t x_size = C * g.in_h * g.in_w, y_size = O * OH * OW;
  const WinogradGrid grid(OH, OW);
  const int64_t per = grid.per_sample();
  winograd_filters(w, O, C, false, u);
  parallel_for(
      sample_groups(n),
      [&](int64_t gi) {
        const int64_t b0 = gi * kSampleGroup, count = std::min(n - b0, kSampleGroup);
        const int64_t ld = count * per;
        T* v = thread_buffer<T, 0>(winograd::kPoints * C * ld);
        T* m = thread_buffer<T, 1>(winograd::kPoints * O * ld);
        for (int64_t s = 0; s < count; ++s)
          winograd_inputs(x + (b0 + s) * x_size, C, g.in_h, g.in_w, g.pad, grid, v + s * per, ld);
        for (int xi = 0; xi < winograd::kPoints; ++xi)
          matrix(m + xi * O * ld, O, ld).noalias() =
              matrix(static_cast<const T*>(u) + xi * O * C, O, C) *
              matrix(static_cast<const T*>(v) + xi * C * ld, C, ld);
        for (int64_t s = 0; s < count; ++s)
          winograd_outputs(static_cast<const T*>(m) + s * per, O, OH, OW, grid, ld, bias,
                           y + (b0 + s) * y_size);
      },
      kSampleGroup * winograd::kPoints * (C + O) * per);
}

// dw += the weight gradient, db += sums of dy (when db), dx = the input gradient (when dx,
// overwritten), for the convolution winograd_forward computes. scratch:
// winograd_backward_scratch(n, g) values.
template <class T>
void winograd_backward(const T* x, const T* dy, const T* w, T* dw, T* db, T* dx, int64_t n,
                       const ConvGeometry& g, T* scratch) {
  if (n == 0) return;
  const int64_t C = g.in_c, O = g.out_c, H = g.in_h, W = g.in_w, OH = g.out_h(), OW = g.out_w();
  const int64_t x_size = C * H * W, y_size = O * OH * OW, OC = winograd::kPoints * O * C;
  const WinogradGrid grid(OH, OW), dgrid(H, W);  // the input gradient's own tile grid
  const int64_t per = grid.per_sample(), dper = dgrid.per_sample();
  const int64_t pad_back = 2 - g.pad;  // dx = conv(dy, rotated filters, pad 2 - pad)
  T* flipped = scratch;
  T* partials = scratch + OC;
  if (dx) winograd_filters(w, O, C, true, flipped);
  accumulate_over_groups(
      n, OC + O, partials,
      [&](int64_t b0, int64_t count, T* acc) {
        const int64_t ld = count * per, dld = count * dper;
        T* v = thread_buffer<T, 0>(winograd::kPoints * C * std::max(ld, dld));
        T* dm = thread_buffer<T, 1>(winograd::kPoints * O * std::max(ld, dld));
        for (int64_t s = 0; s < count; ++s) {
          const T* dy_s = dy + (b0 + s) * y_size;
          winograd_inputs(x + (b0 + s) * x_size, C, H, W, g.pad, grid, v + s * per, ld);
          winograd_output_grads(dy_s, O, OH, OW, grid, dm + s * per, ld);
          for (int64_t o = 0; o < O; ++o)
            acc[OC + o] += ConstVectorMap<T>(dy_s + o * OH * OW, OH * OW).sum();
        }
        for (int xi = 0; xi < winograd::kPoints; ++xi)  // dU[xi] += dM[xi] V[xi]^T
          matrix(acc + xi * O * C, O, C).noalias() +=
              matrix(static_cast<const T*>(dm) + xi * O * ld, O, ld) *
              matrix(static_cast<const T*>(v) + xi * C * ld, C, ld).transpose();
        if (!dx) return;
        // The input gradient: dy's tiles into dm's buffer, the products into v's.
        for (int64_t s = 0; s < count; ++s)
          winograd_inputs(dy + (b0 + s) * y_size, O, OH, OW, pad_back, dgrid, dm + s * dper, dld);
        for (int xi = 0; xi < winograd::kPoints; ++xi)
          matrix(v + xi * C * dld, C, dld).noalias() =
              matrix(static_cast<const T*>(flipped) + xi * C * O, C, O) *
              matrix(static_cast<const T*>(dm) + xi * O * dld, O, dld);
        for (int64_t s = 0; s < count; ++s)
          winograd_outputs(static_cast<const T*>(v) + s * dper, C, H, W, dgrid, dld,
                           static_cast<const T*>(nullptr), dx + (b0 + s) * x_size);
      },
      winograd::kPoints * (C + O) * (per + dper));
  if (dw) winograd_filter_grads(static_cast<const T*>(partials), O, C, dw);
  if (db)
    for (int64_t o = 0; o < O; ++o) db[o] += partials[OC + o];
}

}  // namespace varnet::ops
