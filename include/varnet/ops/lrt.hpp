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

#include <cmath>
#include <cstdint>
#include <vector>

#include "varnet/core/aligned.hpp"
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

// One sample b of lrt_forward: y_b (O, P) = mean + eps * sqrt(v + e0), where mean is y_b's
// content when `add_to_y`, else bias[o] (or 0); channel c of v is the P values at
// v + c * v_channel_stride, replaced by r = eps / (2 s).
template <class T>
void lrt_forward_sample(const NoiseKey& key, int64_t b, int64_t o, int64_t p, const T* bias,
                        bool add_to_y, T e0, T* v, int64_t v_channel_stride, T* y) {
  const int64_t per_sample = o * p;  // contiguous in y: one bulk noise call per sample
  thread_local AlignedVector<T> eps;
  if (eps.size() < static_cast<size_t>(per_sample)) eps.resize(static_cast<size_t>(per_sample));
  fill_normal(key, static_cast<uint64_t>(b * per_sample), per_sample, eps.data());
  // s = u / sqrt(u) and 1 / s from one reciprocal square root of u = v + e0 (a SIMD estimate and
  // a Newton step in float: within a few ulps of sqrt and a division, at a fraction of the cost).
  if (v_channel_stride == p) {  // v_b is one contiguous (O, P) block, as y_b is: one pass each
    auto Y = VectorMap<T>(y, per_sample).array();
    auto V = VectorMap<T>(v, per_sample).array();
    const auto E = ConstVectorMap<T>(eps.data(), per_sample).array();
    V += e0;
    if (add_to_y) {
      Y += E * (V * V.rsqrt());
    } else {
      Y = E * (V * V.rsqrt());
      if (bias && p == 1)
        Y += ConstVectorMap<T>(bias, o).array();
      else if (bias)
        for (int64_t c = 0; c < o; ++c) Y.segment(c * p, p) += bias[c];
    }
    V = (T(0.5) * E) * V.rsqrt();
    return;
  }
  // Channel-major v: the same, one channel at a time.
  for (int64_t c = 0; c < o; ++c) {
    auto Y = VectorMap<T>(y + c * p, p).array();
    auto V = VectorMap<T>(v + c * v_channel_stride, p).array();
    const auto E = ConstVectorMap<T>(eps.data() + c * p, p).array();
    V += e0;
    if (add_to_y)
      Y += E * (V * V.rsqrt());
    else
      Y = E * (V * V.rsqrt()) + (bias ? bias[c] : T(0));
    V = (T(0.5) * E) * V.rsqrt();
  }
}

// y (N, O, P) = mean + eps * sqrt(v + e0), where mean is y's current content when
// `add_to_y`, else bias[o] (or 0). v is replaced by r = eps / (2 s).
template <class T>
void lrt_forward(const NoiseKey& key, const LrtLayout& L, const T* bias, bool add_to_y, T e0, T* v,
                 T* y) {
  parallel_for(
      L.n,
      [&](int64_t b) {
        lrt_forward_sample(key, b, L.o, L.p, bias, add_to_y, e0, v + L.v_index(b, 0, 0),
                           L.channel_major ? L.n * L.p : L.p, y + b * L.o * L.p);
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
