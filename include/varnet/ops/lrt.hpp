// The local reparameterization trick's elementwise epilogues on the CPU.
//
// A Gaussian stochastic layer computes the output mean m and variance v with GEMMs, then
//   y = m + eps * sqrt(v + e0),  eps = normal_at(key, index of y in (N, O, P) order).
// Backward needs dL/dv = g * eps / (2 s) with s = sqrt(v + e0): forward stores
// r = eps / (2 s) in place of v, so backward is one multiply and the noise is never regenerated
// (the GPU backend recomputes eps instead; both give the same numbers).
//
// v (and r) are laid out channel-major (O, N * P) for convolutions, or (N, O) for dense layers,
// which is the same as (N, O, P) with P = 1; `channel_major` says which.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "varnet/core/parallel.hpp"
#include "varnet/core/random.hpp"
#include "varnet/ops/gemm.hpp"
#include "varnet/ops/noise_cpu.hpp"

namespace varnet::ops {

struct LrtLayout {
  int64_t n = 0, o = 0, p = 1;
  bool channel_major = false;
  int64_t v_index(int64_t b, int64_t c, int64_t i) const {
    return channel_major ? (c * n + b) * p + i : (b * o + c) * p + i;
  }
};

// The epilogue on a run of `len` elements of one channel (or, for dense layers, of consecutive
// features): u = v + e0, y = mean + eps * sqrt(u), v = r = eps / (2 sqrt(u)). The mean is y's
// content when `add_to_y`, else bias_run[i] when given (dense: one bias per element), else
// `bias` (conv: one per channel). sqrt(u) = u / sqrt(u) and 1 / sqrt(u) come from one reciprocal
// square root (a SIMD estimate and a Newton step in float: within a few ulps of sqrt and a
// division, at a fraction of the cost).
template <class T>
void lrt_epilogue_run(int64_t len, const T* eps, T* v, T* y, bool add_to_y, T bias,
                      const T* bias_run, T e0) {
  int64_t i = 0;
#ifdef VARNET_NORMAL_AVX2
  if constexpr (std::is_same_v<T, float>) {  // one pass, all in registers
    const __m256 e0v = _mm256_set1_ps(e0), half = _mm256_set1_ps(0.5f),
                 three_halves = _mm256_set1_ps(1.5f), bias_v = _mm256_set1_ps(bias);
    for (; i + 8 <= len; i += 8) {
      const __m256 u = _mm256_add_ps(_mm256_loadu_ps(v + i), e0v);
      const __m256 est = _mm256_rsqrt_ps(u);
      // Newton: rs = est (3/2 - u est^2 / 2)
      const __m256 rs = _mm256_mul_ps(
          est, _mm256_fnmadd_ps(_mm256_mul_ps(half, u), _mm256_mul_ps(est, est), three_halves));
      const __m256 e = _mm256_loadu_ps(eps + i);
      const __m256 mean = add_to_y   ? _mm256_loadu_ps(y + i)
                          : bias_run ? _mm256_loadu_ps(bias_run + i)
                                     : bias_v;
      _mm256_storeu_ps(y + i, _mm256_fmadd_ps(e, _mm256_mul_ps(u, rs), mean));
      _mm256_storeu_ps(v + i, _mm256_mul_ps(_mm256_mul_ps(half, e), rs));
    }
  }
#endif
  for (; i < len; ++i) {
    const T u = v[i] + e0, rs = T(1) / std::sqrt(u);
    const T mean = add_to_y ? y[i] : bias_run ? bias_run[i] : bias;
    y[i] = mean + eps[i] * (u * rs);
    v[i] = T(0.5) * eps[i] * rs;
  }
}

// One sample b of lrt_forward: y_b (O, P) = mean + eps * sqrt(v + e0), where mean is y_b's
// content when `add_to_y`, else bias[o] (or 0); channel c of v is the P values at
// v + c * v_channel_stride, replaced by r = eps / (2 s). The noise is drawn a chunk at a time
// into a buffer that stays in L1, and each chunk goes through the epilogue channel by channel.
template <class T>
void lrt_forward_sample(const NoiseKey& key, int64_t b, int64_t o, int64_t p, const T* bias,
                        bool add_to_y, T e0, T* v, int64_t v_channel_stride, T* y) {
  const int64_t per_sample = o * p;  // contiguous in y, and in the noise stream
  constexpr int64_t kChunk = 1024;
  alignas(64) T eps[kChunk];
  const bool dense_bias = bias && p == 1 && v_channel_stride == p && !add_to_y;
  for (int64_t i0 = 0; i0 < per_sample; i0 += kChunk) {
    const int64_t i1 = std::min(per_sample, i0 + kChunk);
    fill_normal(key, static_cast<uint64_t>(b * per_sample + i0), i1 - i0, eps);
    if (v_channel_stride == p && (dense_bias || !bias || add_to_y)) {  // one run for the chunk
      lrt_epilogue_run(i1 - i0, eps, v + i0, y + i0, add_to_y, T(0),
                       dense_bias ? bias + i0 : static_cast<const T*>(nullptr), e0);
      continue;
    }
    for (int64_t c = i0 / p; c * p < i1; ++c) {  // the runs of the channels the chunk meets
      const int64_t j0 = std::max(i0, c * p), j1 = std::min(i1, (c + 1) * p);
      lrt_epilogue_run(j1 - j0, eps + (j0 - i0), v + c * v_channel_stride + (j0 - c * p), y + j0,
                       add_to_y, bias ? bias[c] : T(0), static_cast<const T*>(nullptr), e0);
    }
  }
}

// y (N, O, P) = mean + eps * sqrt(v + e0), where mean is y's current content when
// `add_to_y`, else bias[o] (or 0). v is replaced by r = eps / (2 s). Row b draws as row
// noise.row_in_sample(b) with noise.row_key(b) (one key unless the batch stacks samples).
template <class T>
void lrt_forward(const BatchNoise& noise, const LrtLayout& L, const T* bias, bool add_to_y, T e0,
                 T* v, T* y) {
  parallel_for(
      L.n,
      [&](int64_t b) {
        lrt_forward_sample(noise.row_key(b), noise.row_in_sample(b), L.o, L.p, bias, add_to_y, e0,
                           v + L.v_index(b, 0, 0), L.channel_major ? L.n * L.p : L.p,
                           y + b * L.o * L.p);
      },
      8 * L.o * L.p);
}

// r (the buffer lrt_forward left) becomes dL/dv = dy * r.
template <class T>
void lrt_backward(const LrtLayout& L, const T* dy, T* r) {
  parallel_for(
      L.n * L.o,
      [&](int64_t job) {
        const int64_t b = job / L.o, c = job % L.o;
        const T* g = dy + job * L.p;
        T* rrow = r + L.v_index(b, c, 0);
        for (int64_t i = 0; i < L.p; ++i) rrow[i] *= g[i];
      },
      L.p);
}

}  // namespace varnet::ops
