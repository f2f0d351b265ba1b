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
#include "varnet/ops/noise_cpu.hpp"

namespace varnet::ops {

struct LrtLayout {
  int64_t n = 0, o = 0, p = 1;
  bool channel_major = false;
  int64_t v_index(int64_t b, int64_t c, int64_t i) const {
    return channel_major ? (c * n + b) * p + i : (b * o + c) * p + i;
  }
};

// y (N, O, P) = mean + eps * sqrt(v + e0), where mean is y's current content when
// `add_to_y`, else bias[o] (or 0). v is replaced by r = eps / (2 s).
template <class T>
void lrt_forward(const NoiseKey& key, const LrtLayout& L, const T* bias, bool add_to_y, T e0, T* v,
                 T* y) {
  const int64_t per_sample = L.o * L.p;  // contiguous in y: one bulk noise call per sample
  parallel_for(
      L.n,
      [&](int64_t b) {
        thread_local AlignedVector<T> eps;
        eps.resize(static_cast<size_t>(per_sample));
        fill_normal(key, static_cast<uint64_t>(b * per_sample), per_sample, eps.data());
        for (int64_t c = 0; c < L.o; ++c) {
          T* yrow = y + (b * L.o + c) * L.p;
          T* vrow = v + L.v_index(b, c, 0);
          const T* erow = eps.data() + c * L.p;
          const T base = bias ? bias[c] : T(0);
          for (int64_t i = 0; i < L.p; ++i) {
            const T s = std::sqrt(vrow[i] + e0);
            yrow[i] = (add_to_y ? yrow[i] : base) + erow[i] * s;
            vrow[i] = erow[i] / (T(2) * s);
          }
        }
      },
      8 * per_sample);
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
