// Kernel launches and their configuration, shared by the host launchers: 256-thread blocks and
// grid-stride loops, so the grid is capped and any element count works with one launch. Host code
// only: dim3 and cudaStream_t come from the CUDA runtime's header, or from the host emulation's
// stand-in (tests/emulation/cuda_runtime.h), which runs the library's GPU code on the CPU.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>

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

// kernel<<<grid, block, 0, stream>>>(args...): every kernel launch of the library goes through
// launch() or launch_with_barriers(). Under nvcc both are exactly that launch. Under the host
// emulation they hand the kernel to the emulated stream (run now, or recorded while the stream is
// captured into a graph), and the two differ: launch_with_barriers() is for kernels that call
// __syncthreads, whose block's threads the emulation must run side by side; launch() runs the
// threads one after another, and a __syncthreads there fails the emulated launch. Check the
// launch with VARNET_CUDA_CHECK_LAUNCH afterwards, as after a <<<>>> launch.
#if defined(VARNET_CUDA_EMULATION)
namespace detail {
template <class... Params, class... Args>
void emulated_launch(bool barriers, void (*kernel)(Params...), dim3 grid, dim3 block,
                     cudaStream_t stream, Args&&... args) {
  // The arguments are converted and copied at the launch, as CUDA copies kernel parameters.
  std::tuple<std::decay_t<Params>...> packed(std::forward<Args>(args)...);
  emu::launch_on(stream, grid, block, barriers, [kernel, packed] { std::apply(kernel, packed); });
}
}  // namespace detail
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream, Args&&... args) {
  detail::emulated_launch(false, kernel, grid, block, stream, std::forward<Args>(args)...);
}
template <class... Params, class... Args>
void launch_with_barriers(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream,
                          Args&&... args) {
  detail::emulated_launch(true, kernel, grid, block, stream, std::forward<Args>(args)...);
}
#elif defined(__CUDACC__)
// clang-format 14 would split >>> in a .hpp.
// clang-format off
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream, Args&&... args) {
  kernel<<<grid, block, 0, stream>>>(std::forward<Args>(args)...);
}
template <class... Params, class... Args>
void launch_with_barriers(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream,
                          Args&&... args) {
  kernel<<<grid, block, 0, stream>>>(std::forward<Args>(args)...);
}
// clang-format on
#endif  // a host compiler without the emulation has no launch(): kernels need nvcc

}  // namespace varnet::cuda
