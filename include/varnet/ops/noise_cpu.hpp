// Bulk noise on the CPU from the counter-based stream of core/random.hpp, a Philox block at a
// time: uniform words exactly as uniform_at, normals as normal_at up to a few ulps.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>

#include "varnet/core/random.hpp"

namespace varnet::ops {

// out[i] ~ normal_at(key, first + i), i < count. The Box-Muller transform runs on Eigen arrays
// (SIMD log, sin, cos), in chunks whose length is a multiple of the packet size, so each element
// goes through the same vector code wherever the chunk starts: the value of an element does not
// depend on how a tensor is split. It agrees with the scalar normal_at (and the GPU) to a few
// ulps, not bit for bit, since Eigen's vector log/sin/cos round differently from libm.
template <class T>
void fill_normal(const NoiseKey& key, uint64_t first, int64_t count, T* out) {
  if (count <= 0) return;
  constexpr int64_t kMaxBlocks = 64;  // 128 Box-Muller pairs, 256 normals per chunk
  using Pairs = Eigen::Array<float, Eigen::Dynamic, 1>;
  thread_local Pairs u1(2 * kMaxBlocks), u2(2 * kMaxBlocks), r(2 * kMaxBlocks), z0(2 * kMaxBlocks),
      z1(2 * kMaxBlocks);
  const uint64_t end = first + static_cast<uint64_t>(count);
  for (uint64_t b = first >> 2; 4 * b < end; b += kMaxBlocks) {
    // Round the pair count up to a multiple of 16 (a whole number of packets).
    const int64_t blocks = std::min<int64_t>(kMaxBlocks, int64_t(((end + 3) >> 2) - b));
    const int64_t pairs = (2 * blocks + 15) / 16 * 16;
    for (int64_t i = 0; i < blocks; ++i) {
      const Philox4x32::Counter w = key.block(b + uint64_t(i));
      u1[2 * i] = uniform_open01(w.v[0]);
      u2[2 * i] = uniform_open01(w.v[1]);
      u1[2 * i + 1] = uniform_open01(w.v[2]);
      u2[2 * i + 1] = uniform_open01(w.v[3]);
    }
    for (int64_t i = 2 * blocks; i < pairs; ++i) u1[i] = u2[i] = 0.5f;
    auto U1 = u1.head(pairs), U2 = u2.head(pairs);
    r.head(pairs) = (-2.0f * U1.log()).sqrt();
    z0.head(pairs) = r.head(pairs) * (6.2831853071795864f * U2).cos();
    z1.head(pairs) = r.head(pairs) * (6.2831853071795864f * U2).sin();
    // Element 4(b + i) + lane: lanes 0, 1 from pair 2i, lanes 2, 3 from pair 2i + 1.
    const uint64_t lo = std::max(first, 4 * b), hi = std::min(end, 4 * (b + uint64_t(blocks)));
    for (uint64_t e = lo; e < hi; ++e) {
      const uint64_t pair = 2 * (e / 4 - b) + ((e & 2u) >> 1);
      out[e - first] = static_cast<T>((e & 1u) ? z1[int64_t(pair)] : z0[int64_t(pair)]);
    }
  }
}

// out[i] = uniform_at(key, first + i) mapped by f.
template <class T, class F>
void fill_from_words(const NoiseKey& key, uint64_t first, int64_t count, T* out, F&& f) {
  uint64_t e = first;
  const uint64_t end = first + static_cast<uint64_t>(count);
  while (e < end) {
    const Philox4x32::Counter w = key.block(e >> 2);
    for (unsigned lane = static_cast<unsigned>(e & 3u); lane < 4 && e < end; ++lane, ++e)
      *out++ = static_cast<T>(f(w.v[lane]));
  }
}

}  // namespace varnet::ops
