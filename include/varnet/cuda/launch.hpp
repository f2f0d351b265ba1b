// Launch configuration shared by the host launchers: 256-thread blocks and grid-stride loops, so
// the grid is capped and any element count works with one launch. Host code only (dim3 comes
// from the CUDA runtime's header, or from the emulation's stand-in in tests/emulation).
#pragma once

#include <cuda_runtime.h>

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

namespace detail {
// A 2-D grid: x blocks over `inner` items (kThreads each, at most 65,535 blocks), y over `outer`
// items (at most 65,535); the kernels loop over what the grid does not cover.
inline dim3 grid_2d(int64_t inner, int64_t outer) {
  const int64_t x = std::clamp<int64_t>((inner + kThreads - 1) / kThreads, 1, 65535);
  return dim3(static_cast<unsigned>(x),
              static_cast<unsigned>(std::clamp<int64_t>(outer, 1, 65535)));
}
}  // namespace detail

}  // namespace varnet::cuda
