// Bulk noise on the CPU: the same values as normal_at / uniform_at / sign_at element by element
// (core/random.hpp), generated a Philox block at a time.
#pragma once

#include <cstdint>

#include "varnet/core/random.hpp"

namespace varnet::ops {

// out[i] = normal_at(key, first + i), i < count.
template <class T>
void fill_normal(const NoiseKey& key, uint64_t first, int64_t count, T* out) {
  uint64_t e = first;
  const uint64_t end = first + static_cast<uint64_t>(count);
  while (e < end) {
    const Philox4x32::Counter w = key.block(e >> 2);
    float z[4];
    box_muller(w.v[0], w.v[1], z[0], z[1]);
    box_muller(w.v[2], w.v[3], z[2], z[3]);
    for (unsigned lane = static_cast<unsigned>(e & 3u); lane < 4 && e < end; ++lane, ++e)
      *out++ = static_cast<T>(z[lane]);
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
