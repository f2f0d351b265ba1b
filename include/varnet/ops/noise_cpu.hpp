// Bulk noise on the CPU from the counter-based stream of core/random.hpp: uniform words exactly
// as uniform_at, normals as normal_at up to an ulp or two.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "varnet/core/random.hpp"
#include "varnet/ops/normal_avx2.hpp"

namespace varnet::ops {

// out[i] ~ normal_at(key, first + i), i < count. With AVX2 and FMA it agrees with the scalar
// normal_at (and the GPU) to an ulp or two of max(1, |z|), not bit for bit: the SIMD log rounds
// differently from libm's logf. Each element goes through the same code wherever a fill starts,
// so the value of an element does not depend on how a tensor is split.
template <class T>
void fill_normal(const NoiseKey& key, uint64_t first, int64_t count, T* out) {
  if (count <= 0) return;
  const uint64_t end = first + static_cast<uint64_t>(count);
#ifdef VARNET_NORMAL_AVX2
  // Eight Philox blocks (32 elements) per step in registers (ops/normal_avx2.hpp); the steps
  // that the range covers only in part go through a buffer.
  for (uint64_t b = first >> 2; 4 * b < end; b += 8) {
    __m256 z[4];
    avx2::normals32(key, b, z);
    const uint64_t e0 = 4 * b, lo = std::max(first, e0), hi = std::min(end, e0 + 32);
    T* dst = out + (lo - first);
    if constexpr (std::is_same_v<T, float>) {
      if (lo == e0 && hi == e0 + 32) {
        for (int k = 0; k < 4; ++k) _mm256_storeu_ps(dst + 8 * k, z[k]);
        continue;
      }
    }
    alignas(32) float zz[32];
    for (int k = 0; k < 4; ++k) _mm256_store_ps(zz + 8 * k, z[k]);
    std::copy(zz + (lo - e0), zz + (hi - e0), dst);
  }
#else
  // Philox over chunks of counters (vectorised by the compiler), then the scalar Box-Muller of
  // normal_at: bit for bit the same numbers.
  constexpr int kMaxBlocks = 64;
  alignas(64) uint32_t c0[kMaxBlocks], c1[kMaxBlocks], c2[kMaxBlocks], c3[kMaxBlocks];
  alignas(64) float zz[4 * kMaxBlocks];
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
    for (int i = 0; i < blocks; ++i) {
      box_muller(c0[i], c1[i], zz[4 * i], zz[4 * i + 1]);
      box_muller(c2[i], c3[i], zz[4 * i + 2], zz[4 * i + 3]);
    }
    const uint64_t lo = std::max(first, 4 * b), hi = std::min(end, 4 * (b + uint64_t(blocks)));
    std::copy(zz + (lo - 4 * b), zz + (hi - 4 * b), out + (lo - first));
  }
#endif
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
