// Launch configuration shared by the host launchers: 256-thread blocks and grid-stride loops, so
// the grid is capped and any element count works with one launch.
#pragma once

#include <algorithm>
#include <cstdint>

namespace varnet::cuda {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;

// Blocks for `work` items at `threads` per block, in [1, kMaxBlocks].
inline unsigned grid_for(int64_t work, int threads = kThreads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, kMaxBlocks));
}

// True when every index of a kernel over `elements` items fits comfortably in int32 arithmetic
// (including the grid-stride step past the end).
inline bool fits_int32(int64_t elements) {
  return elements < (int64_t(1) << 30);
}

}  // namespace varnet::cuda
