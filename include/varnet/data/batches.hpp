// Data order and mini-batches.
//
// The order of an epoch is a pure function of (seed, epoch), drawn from Philox with an unbiased
// bounded draw written out here rather than std::shuffle or std::uniform_int_distribution, whose
// algorithms differ between standard libraries. A run therefore sees the same batches on every
// platform, and a resumed run sees exactly the batches of an uninterrupted one.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "varnet/core/error.hpp"
#include "varnet/core/random.hpp"
#include "varnet/core/tensor.hpp"
#include "varnet/data/idx.hpp"

namespace varnet::data {

namespace detail {

// Consumes the Philox words of one key in order: word k is lane k % 4 of block k / 4.
class WordStream {
 public:
  explicit WordStream(const NoiseKey& key) : key_(key) {}

  uint32_t next32() {
    if (lane_ == 4) {
      block_ = key_.block(next_block_++);
      lane_ = 0;
    }
    return block_.v[lane_++];
  }
  uint64_t next64() {
    const uint64_t lo = next32();
    return lo | (uint64_t(next32()) << 32);
  }

  // Uniform on [0, bound), bound >= 1, without bias. Bounds that fit 32 bits use Lemire's
  // multiply-and-reject ("Fast random integer generation in an interval", 2019), one word per
  // draw almost always; larger bounds reject 64-bit draws masked to the next power of two, which
  // needs no 128-bit multiply and so behaves the same on every compiler.
  uint64_t below(uint64_t bound) {
    if (bound <= 0xFFFFFFFFull) {
      const uint32_t s = static_cast<uint32_t>(bound);
      uint64_t m = uint64_t(next32()) * s;
      uint32_t low = static_cast<uint32_t>(m);
      if (low < s) {
        const uint32_t threshold = (0u - s) % s;  // 2^32 mod s
        while (low < threshold) {
          m = uint64_t(next32()) * s;
          low = static_cast<uint32_t>(m);
        }
      }
      return m >> 32;
    }
    uint64_t mask = bound - 1;
    mask |= mask >> 1;
    mask |= mask >> 2;
    mask |= mask >> 4;
    mask |= mask >> 8;
    mask |= mask >> 16;
    mask |= mask >> 32;
    for (;;) {
      const uint64_t x = next64() & mask;
      if (x < bound) return x;
    }
  }

 private:
  NoiseKey key_;
  Philox4x32::Counter block_{};
  uint64_t next_block_ = 0;
  unsigned lane_ = 4;
};

}  // namespace detail

// A permutation of 0 .. n-1 for one epoch (Fisher-Yates, last position first).
inline std::vector<int64_t> shuffled_order(int64_t n, uint64_t seed, uint32_t epoch) {
  check(n >= 0, "shuffled_order", "a non-negative number of items", n);
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  detail::WordStream words(NoiseKey{seed, 0, epoch, stream::kShuffle});
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(words.below(static_cast<uint64_t>(i) + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

// Copies items order[first .. first + count) of d into x (count, C, H, W), converted to T, and
// their labels into y. x and y keep their capacity, so the last, smaller batch allocates nothing.
template <class T>
void gather_batch(const LabeledImages& d, const std::vector<int64_t>& order, int64_t first,
                  int64_t count, Tensor<T>& x, std::vector<int32_t>& y) {
  const Shape& s = d.images.shape();
  const std::string where = "gather_batch(" + d.source + ")";
  check(d.labels.size() == static_cast<size_t>(s.n), where, str("one label per image (", s.n, ")"),
        d.labels.size(), " labels");
  const int64_t size = static_cast<int64_t>(order.size());
  check(first >= 0 && count >= 0 && first <= size && count <= size - first, where,
        str("a range of items within the order's ", size, " entries"), "first ", first, ", count ",
        count);
  x.resize(s.with_batch(count));
  y.resize(static_cast<size_t>(count));
  const int64_t per = s.per_sample();
  const float* src = d.images.data();
  T* dst = x.data();
  for (int64_t k = 0; k < count; ++k) {
    const int64_t item = order[static_cast<size_t>(first + k)];
    check(item >= 0 && item < s.n, where, str("item indices in [0, ", s.n, ")"), item,
          " at position ", first + k, " of the order");
    const float* from = src + item * per;
    T* to = dst + k * per;
    for (int64_t e = 0; e < per; ++e) to[e] = static_cast<T>(from[e]);
    y[static_cast<size_t>(k)] = d.labels[static_cast<size_t>(item)];
  }
}

}  // namespace varnet::data
