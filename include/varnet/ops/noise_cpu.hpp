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
  constexpr int kMaxBlocks = 64;  // 128 Box-Muller pairs, 256 normals per chunk
  using Pairs = Eigen::Array<float, 2 * kMaxBlocks, 1>;
  alignas(64) uint32_t c0[kMaxBlocks], c1[kMaxBlocks], c2[kMaxBlocks], c3[kMaxBlocks];
  alignas(64) Pairs u1, u2, z0, z1;
  alignas(64) float zz[4 * kMaxBlocks];
  const uint64_t end = first + static_cast<uint64_t>(count);
  for (uint64_t b = first >> 2; 4 * b < end; b += kMaxBlocks) {
    const int blocks = static_cast<int>(std::min<uint64_t>(kMaxBlocks, ((end + 3) >> 2) - b));
    const Philox4x32::Counter base = key.counter(b);
    for (int i = 0; i < blocks; ++i) {  // the counters of blocks b .. b + blocks - 1
      const uint64_t block = b + static_cast<uint64_t>(i);
      c0[i] = static_cast<uint32_t>(block);
      c1[i] = static_cast<uint32_t>(block >> 32);
      c2[i] = base.v[2];
      c3[i] = base.v[3];
    }
    Philox4x32::generate_lanes(c0, c1, c2, c3, blocks, key.key());
    // Pair 2i takes words 0, 1 of block i, pair 2i + 1 words 2, 3. Unused tail pairs get 0.5, so
    // every chunk runs the same whole packets: an element's value does not depend on the split.
    for (int i = 0; i < blocks; ++i) {
      u1[2 * i] = uniform_open01(c0[i]);
      u2[2 * i] = uniform_open01(c1[i]);
      u1[2 * i + 1] = uniform_open01(c2[i]);
      u2[2 * i + 1] = uniform_open01(c3[i]);
    }
    for (int i = 2 * blocks; i < 2 * kMaxBlocks; ++i) u1[i] = u2[i] = 0.5f;
    const Pairs r = (-2.0f * u1.log()).sqrt();
    z0 = r * (6.2831853071795864f * u2).cos();
    z1 = r * (6.2831853071795864f * u2).sin();
    // Element 4(b + i) + lane: lanes 0, 1 from pair 2i, lanes 2, 3 from pair 2i + 1, i.e.
    // element 4b + 2k + j is z_j of pair k: the output interleaves z0 and z1.
    for (int k = 0; k < 2 * blocks; ++k) {
      zz[2 * k] = z0[k];
      zz[2 * k + 1] = z1[k];
    }
    const uint64_t lo = std::max(first, 4 * b), hi = std::min(end, 4 * (b + uint64_t(blocks)));
    std::copy(zz + (lo - 4 * b), zz + (hi - 4 * b), out + (lo - first));
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
