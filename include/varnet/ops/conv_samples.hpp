// Convolutions on the CPU one sample at a time, in parallel over the samples of a batch.
//
// Why not one GEMM for the whole batch (ops/conv.hpp's layout, which the GPU uses): batched columns
// are R x N P values (16 MB for LeNet-5's conv2 at batch 128), written once and read back several
// times per pass, always from memory. One sample's columns (R x P: 125 KB there) stay in the core's
// L2 cache from im2col through the GEMM to the epilogue, and GEMMs of one sample's size run as fast
// on one core as the batched GEMM does (benchmarks/NOTES.md). Backward rebuilds a sample's columns
// from x instead of keeping them: a copy out of x (which is small), cheaper than reading stored
// columns back.
//
// Layouts per sample: x_b (C, H, W), columns (R, P) with R = C KH KW, P = OH OW, y_b (O, P), all
// contiguous: y_b = W (O, R) * columns needs no scatter.
//
// Weight gradients sum over samples. So that the result does not depend on the number of
// threads, samples are taken in fixed groups of kSampleGroup: each group sums into its own
// buffer (part of the layer's scratch) and the groups are added in order afterwards.
#pragma once

#include <algorithm>
#include <cassert>
#include <cstdint>

#include "varnet/core/aligned.hpp"
#include "varnet/core/parallel.hpp"
#include "varnet/ops/conv.hpp"
#include "varnet/ops/gemm.hpp"

namespace varnet::ops {

constexpr int64_t kSampleGroup = 8;
inline int64_t sample_groups(int64_t n) {
  return (n + kSampleGroup - 1) / kSampleGroup;
}

// A per-thread buffer of at least `size` values; `Slot` tells apart buffers used together. It
// grows to the largest size asked for and is reused: no allocation once a step has run.
template <class T, int Slot>
T* thread_buffer(int64_t size) {
  thread_local AlignedVector<T> buf;
  if (buf.size() < static_cast<size_t>(size)) buf.resize(static_cast<size_t>(size));
  return buf.data();
}

struct Identity {
  template <class T>
  T operator()(T v) const {
    return v;
  }
};
struct Square {
  template <class T>
  T operator()(T v) const {
    return v * v;
  }
};

// cols (R, P) = f(im2col(x_b)) for one sample x_b (C, H, W); padding gives f(0) = 0 for both f.
template <class T, class F = Identity>
void im2col_sample(const T* x, const ConvGeometry& g, T* cols, F f = {}) {
  const int64_t oh = g.out_h(), ow = g.out_w(), P = oh * ow;
  for (int64_t r = 0; r < g.rows(); ++r) {
    const int64_t c = r / (g.k_h * g.k_w), kh = (r / g.k_w) % g.k_h, kw = r % g.k_w;
    const T* plane = x + c * g.in_h * g.in_w;
    T* dst = cols + r * P;
    int64_t j0 = 0, j1 = ow;
    if (g.stride == 1) inside_columns(g, kw, j0, j1);
    for (int64_t i = 0; i < oh; ++i) {
      const int64_t ih = i * g.stride - g.pad + kh;
      T* row = dst + i * ow;
      if (ih < 0 || ih >= g.in_h) {
        for (int64_t j = 0; j < ow; ++j) row[j] = T(0);
        continue;
      }
      const T* src = plane + ih * g.in_w;
      if (g.stride == 1) {  // a contiguous run, zero-padded at both ends
        const T* s = src - g.pad + kw;
        for (int64_t j = 0; j < j0; ++j) row[j] = T(0);
        for (int64_t j = j0; j < j1; ++j) row[j] = f(s[j]);
        for (int64_t j = j1; j < ow; ++j) row[j] = T(0);
        continue;
      }
      for (int64_t j = 0; j < ow; ++j) {
        const int64_t iw = j * g.stride - g.pad + kw;
        row[j] = (iw >= 0 && iw < g.in_w) ? f(src[iw]) : T(0);
      }
    }
  }
}

// dx_b (C, H, W) = the adjoint of im2col_sample applied to dcols (R, P). Overwrites dx_b.
template <class T>
void col2im_sample(const T* dcols, const ConvGeometry& g, T* dx) {
  const int64_t oh = g.out_h(), ow = g.out_w(), P = oh * ow;
  std::fill(dx, dx + g.in_c * g.in_h * g.in_w, T(0));
  for (int64_t r = 0; r < g.rows(); ++r) {
    const int64_t c = r / (g.k_h * g.k_w), kh = (r / g.k_w) % g.k_h, kw = r % g.k_w;
    T* plane = dx + c * g.in_h * g.in_w;
    const T* src = dcols + r * P;
    int64_t j0 = 0, j1 = ow;
    if (g.stride == 1) inside_columns(g, kw, j0, j1);
    for (int64_t i = 0; i < oh; ++i) {
      const int64_t ih = i * g.stride - g.pad + kh;
      if (ih < 0 || ih >= g.in_h) continue;
      T* row = plane + ih * g.in_w;
      const T* s = src + i * ow;
      if (g.stride == 1) {
        T* d = row - g.pad + kw;
        for (int64_t j = j0; j < j1; ++j) d[j] += s[j];
        continue;
      }
      for (int64_t j = 0; j < ow; ++j) {
        const int64_t iw = j * g.stride - g.pad + kw;
        if (iw >= 0 && iw < g.in_w) row[iw] += s[j];
      }
    }
  }
}

// Runs body(b0, count, acc) for the samples [b0, b0 + count) of each group of kSampleGroup
// samples, in parallel over the groups, where acc is the group's `width` accumulators, zeroed
// first. Afterwards partials[0, width) holds the sum over all groups, added in group order, so
// the result does not depend on the number of threads. partials: sample_groups(n) * width values.
template <class T, class F>
void accumulate_over_groups(int64_t n, int64_t width, T* partials, F&& body,
                            int64_t work_per_sample) {
  assert(n > 0 && "partials[0, width) is only written for a non-empty batch");
  const int64_t groups = sample_groups(n);
  parallel_for(
      groups,
      [&](int64_t gi) {
        T* acc = partials + gi * width;
        std::fill(acc, acc + width, T(0));
        const int64_t b0 = gi * kSampleGroup;
        body(b0, std::min(n - b0, kSampleGroup), acc);
      },
      kSampleGroup * work_per_sample);
  auto total = VectorMap<T>(partials, width);
  for (int64_t gi = 1; gi < groups; ++gi) total += VectorMap<T>(partials + gi * width, width);
}

// As accumulate_over_groups, with body(b, acc) called for each sample b < n in turn.
template <class T, class F>
void accumulate_over_samples(int64_t n, int64_t width, T* partials, F&& body,
                             int64_t work_per_sample) {
  accumulate_over_groups(
      n, width, partials,
      [&](int64_t b0, int64_t count, T* acc) {
        for (int64_t b = b0; b < b0 + count; ++b) body(b, acc);
      },
      work_per_sample);
}

// Scratch values conv_backward_samples needs: the groups' weight and bias gradients.
inline int64_t conv_backward_scratch(int64_t n, const ConvGeometry& g) {
  return sample_groups(n) * (g.out_c * g.rows() + g.out_c);
}

// y (N, O, P) = conv(x, W) + b, one sample at a time.
template <class T>
void conv_forward_samples(const T* x, const T* w, const T* bias, T* y, int64_t n,
                          const ConvGeometry& g) {
  const int64_t R = g.rows(), P = g.plane(), O = g.out_c;
  const int64_t x_size = g.in_c * g.in_h * g.in_w;
  parallel_for(
      n,
      [&](int64_t b) {
        T* cols = thread_buffer<T, 0>(R * P);
        im2col_sample(x + b * x_size, g, cols);
        auto Y = matrix(y + b * O * P, O, P);
        Y.noalias() = matrix(w, O, R) * matrix(static_cast<const T*>(cols), R, P);
        if (bias) Y.colwise() += ConstVectorMap<T>(bias, O);
      },
      O * R * P);
}

// dW += sum_b dy_b cols_b^T, db += sums of dy (when db), dx_b = col2im(W^T dy_b) (when dx).
// partials: conv_backward_scratch(n, g) values.
template <class T>
void conv_backward_samples(const T* x, const T* dy, const T* w, T* dw, T* db, T* dx, int64_t n,
                           const ConvGeometry& g, T* partials) {
  const int64_t R = g.rows(), P = g.plane(), O = g.out_c, OR = O * R;
  const int64_t x_size = g.in_c * g.in_h * g.in_w;
  accumulate_over_samples(
      n, OR + O, partials,
      [&](int64_t b, T* acc) {
        T* cols = thread_buffer<T, 0>(R * P);
        im2col_sample(x + b * x_size, g, cols);
        const auto dY = matrix(dy + b * O * P, O, P);
        matrix(acc, O, R).noalias() += dY * matrix(static_cast<const T*>(cols), R, P).transpose();
        VectorMap<T>(acc + OR, O) += dY.rowwise().sum();
        if (dx) {
          T* dcols = thread_buffer<T, 1>(R * P);
          matrix(dcols, R, P).noalias() = matrix(w, O, R).transpose() * dY;
          col2im_sample(static_cast<const T*>(dcols), g, dx + b * x_size);
        }
      },
      3 * OR * P);
  if (dw) VectorMap<T>(dw, OR) += ConstVectorMap<T>(partials, OR);
  if (db) VectorMap<T>(db, O) += ConstVectorMap<T>(partials + OR, O);
}

}  // namespace varnet::ops
