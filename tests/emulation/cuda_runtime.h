// A host stand-in for <cuda_runtime.h>, so that the unmodified kernels in kernels/*.cuh, and the
// GPU backend's host code with them, compile with a plain C++20 compiler and run on the CPU
// (tests/emulation/test_emulated_*.cpp, and the [cuda] suite as test_emulated_cuda_suite).
// It is first on those tests' include paths only; nothing else sees it, and it needs no CUDA
// toolkit.
//
// What it provides, and why:
//   - the CUDA keywords as host C++: __global__/__device__/__host__ vanish, __forceinline__ is
//     inline, and __shared__ is `static` (one copy per kernel instantiation, which is the running
//     block's, because emu::launch runs blocks one after another);
//   - dim3/uint3/float4, thread-local threadIdx/blockIdx and global blockDim/gridDim;
//   - __syncthreads as a std::barrier over the running block's threads, or as a switch between
//     fibers (emulated_fibers.h);
//   - the round-to-nearest intrinsics (__fadd_rn, __dmul_rn, ...) as plain IEEE operations.
//     Compile with -ffp-contract=off, or the host compiler may fuse a * b + c, differently in a
//     kernel and in its CPU twin. Device math (expf, log1p, ...) is the host libm's (<math.h>,
//     global namespace, as device code calls it);
//   - emu::launch(grid, block, threaded, body), which runs `body` (a lambda calling the kernel)
//     once per emulated thread, and emu::launch_fibers for the same with fibers; see there;
//   - the runtime API the library calls (emulated_runtime.h, included at the end), through which
//     cuda::launch (include/varnet/cuda/launch.hpp) runs kernels on emulated streams.
//
// What it cannot emulate:
//   - warps: no warp-synchronous execution, shuffles, votes or atomics (the kernels use none);
//     code relying on lockstep within a warp would pass here and fail on a GPU, or the reverse;
//   - true concurrency: blocks, and a block's threads between two barriers, run one after
//     another. The order varies from launch to launch (Schedule, below), so a kernel that
//     depends on it fails some launches; but two threads whose accesses interleave within one
//     statement (a lost update) are never caught;
//   - the memory model: the barrier orders everything, which is stronger than CUDA's; and a
//     __shared__ array keeps the previous block's values where a GPU has garbage, so a read
//     before a write goes unnoticed;
//   - the device's libm: CUDA's expf, logf, tanhf, ... may differ from glibc's in the last ulp,
//     so where a kernel calls them the test compares with a tolerance;
//   - FMA contraction: nvcc contracts a * b + c in plain expressions by default; here nothing is
//     contracted, so only the kernels' *_rn-ordered arithmetic is checked against its device
//     behaviour. Plain expressions may round differently on the device;
//   - resources: registers, shared-memory size (the launch limits on threads and blocks are
//     checked by emu::launch_on; scripts/kernel-resources.py reports what ptxas allots).
#pragma once

#if defined(__CUDACC__)
#error "tests/emulation/cuda_runtime.h is for host compilers; nvcc must use the real header"
#endif

#include <math.h>  // expf, logf, ... in the global namespace, as device code calls them

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "emulated_fibers.h"

// Tests check this to make sure the shim, not the toolkit's header, was found.
#define VARNET_CUDA_EMULATION 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}  // NOLINT
};
struct alignas(16) float4 {  // the 16-byte vector some kernels load and store
  float x, y, z, w;
};

// The running thread's indices (each emulated thread sets its own), and the launch's shape.
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;

// Round-to-nearest arithmetic: what IEEE operations do anyway, without contraction.
// clang-format off
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
// clang-format on

namespace emu {

// A launch that broke the rules: __syncthreads in a sequential launch, threads of one block that
// called __syncthreads a different number of times, or an exception inside a threaded kernel.
struct LaunchError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
inline thread_local std::barrier<>* t_barrier = nullptr;  // the running block's, threaded only
inline thread_local int64_t t_syncs = 0;                  // __syncthreads calls of this thread

// Worker threads kept for the whole run: creating 256 threads cost 11 ms (34 ms under ASan), as
// much as twenty barrier phases, so launches reuse them rather than start threads per block.
// One launch at a time.
class Pool {
 public:
  using Job = std::function<void(unsigned worker)>;
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(m_);
      stop_ = true;
    }
    start_.notify_all();
    for (auto& t : threads_) t.join();
  }
  // Runs job(w) on workers w < n, each on its own thread; returns when all have returned.
  void run(unsigned n, const Job& job) {
    std::unique_lock<std::mutex> lock(m_);
    while (threads_.size() < n) {
      const unsigned w = unsigned(threads_.size());
      threads_.emplace_back([this, w] { loop(w); });
    }
    job_ = &job;
    active_ = n;
    pending_ = n;
    ++generation_;
    start_.notify_all();
    done_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  void loop(unsigned w) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(m_);
    for (;;) {
      start_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      if (w >= active_) continue;
      const Job* job = job_;
      lock.unlock();
      (*job)(w);
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }
  std::mutex m_;
  std::condition_variable start_, done_;
  std::vector<std::thread> threads_;
  const Job* job_ = nullptr;
  unsigned active_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};
inline Pool& pool() {
  static Pool p;
  return p;
}

inline uint3 coords(unsigned i, const dim3& d) {
  return uint3{i % d.x, i / d.x % d.y, i / (d.x * d.y)};
}
}  // namespace detail

// The order in which the emulation runs what a GPU runs concurrently: the blocks of a launch,
// and the threads of a block between two __syncthreads.
//   kVaried (the default): each launch draws its order from a fixed pseudo-random sequence:
//     forward, reverse, or shuffled (threads reshuffled at every barrier). A kernel whose
//     threads or blocks depend on each other's order (a missing barrier, two threads writing
//     one output) then gives different answers in different launches, and the tests comparing
//     it with the CPU see it. Race-free kernels give the same answer in every order.
//   kForward: blocks and threads in increasing index, the same every launch; to tell whether a
//     failure depends on the order. The environment variable VARNET_EMU_SCHEDULE=forward|varied
//     sets the schedule for a whole run; set_schedule() changes it.
enum class Schedule { kVaried, kForward };

namespace detail {
enum class Order { kForward, kReverse, kShuffled };
struct LaunchOrder {
  Order kind;
  uint64_t seed;  // for the shuffles
};

inline uint64_t mix(uint64_t x) {  // splitmix64's finaliser
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// idx = [0, n) in the given order; `seed` picks the shuffle (Fisher-Yates).
inline void arrange(std::vector<unsigned>& idx, unsigned n, Order order, uint64_t seed) {
  idx.resize(n);
  for (unsigned i = 0; i < n; ++i) idx[i] = order == Order::kReverse ? n - 1 - i : i;
  if (order != Order::kShuffled) return;
  for (unsigned i = n; i > 1; --i) {
    seed = mix(seed);
    std::swap(idx[i - 1], idx[unsigned(seed % i)]);
  }
}

inline Schedule schedule_from_environment() {
  const char* v = std::getenv("VARNET_EMU_SCHEDULE");
  const std::string s = v ? v : "";
  if (s.empty() || s == "varied") return Schedule::kVaried;
  if (s == "forward") return Schedule::kForward;
  throw std::invalid_argument("VARNET_EMU_SCHEDULE: expected 'varied' or 'forward', found '" + s +
                              "'");
}
inline Schedule& schedule_setting() {
  static Schedule s = schedule_from_environment();
  return s;
}
inline std::atomic<uint64_t> launch_serial{0};

// The next launch's order: a hash of the launch's serial number picks it, so that a kernel
// launched at a fixed position in a repeated sequence (a training step) still meets every order.
inline LaunchOrder next_launch_order() {
  const uint64_t h = mix(launch_serial.fetch_add(1, std::memory_order_relaxed));
  if (schedule_setting() == Schedule::kForward) return {Order::kForward, h};
  return {static_cast<Order>(h % 3), mix(h)};
}
}  // namespace detail

inline Schedule schedule() {
  return detail::schedule_setting();
}
inline void set_schedule(Schedule s) {
  detail::schedule_setting() = s;
}

// Runs body() once per thread of a grid x block launch, with threadIdx, blockIdx, blockDim and
// gridDim set as the kernel expects; body is typically [&] { some_kernel<T>(args...); }.
//   threaded = false: plain loops over blocks and threads on the calling thread. Fast; for
//     kernels without __syncthreads (calling it throws LaunchError).
//   threaded = true: blocks one after another, each block's threads as concurrent std::threads
//     meeting at a std::barrier in __syncthreads (a thread that returns drops out of it, so a
//     divergent barrier cannot deadlock). Throws LaunchError unless every thread of a block made
//     the same number of __syncthreads calls. Slow (about 0.6 ms per barrier phase for 256
//     threads on 2 cores): keep such launches to a few blocks.
template <class Body>
void launch(dim3 grid, dim3 block, bool threaded, Body&& body) {
  gridDim = grid;
  blockDim = block;
  const unsigned blocks = grid.x * grid.y * grid.z, threads = block.x * block.y * block.z;
  if (!threaded) {
    // Blocks, and threads within a block, in the launch's order (forward under
    // Schedule::kForward); no two may depend on each other, as on a GPU.
    const detail::LaunchOrder order = detail::next_launch_order();
    std::vector<unsigned> block_order, thread_order;
    detail::arrange(block_order, blocks, order.kind, order.seed);
    detail::arrange(thread_order, threads, order.kind, detail::mix(order.seed + 1));
    std::vector<uint3> thread_coords(threads);
    for (unsigned t = 0; t < threads; ++t) thread_coords[t] = detail::coords(t, block);
    detail::t_barrier = nullptr;
    for (unsigned b : block_order) {
      blockIdx = detail::coords(b, grid);
      for (unsigned t : thread_order) {
        threadIdx = thread_coords[t];
        body();
      }
    }
    return;
  }
  // Workers run the blocks in order; each block gets a fresh barrier (arrive_and_drop lowers a
  // barrier's count for good), and every worker waits at `block_end` before the next block, so
  // no block starts while another still uses the __shared__ arrays.
  std::vector<std::unique_ptr<std::barrier<>>> bars;
  for (unsigned b = 0; b < blocks; ++b)
    bars.push_back(std::make_unique<std::barrier<>>(std::ptrdiff_t(threads)));
  std::barrier<> block_end(static_cast<std::ptrdiff_t>(threads));
  std::vector<int64_t> syncs(size_t(blocks) * threads, 0);
  std::mutex error_mutex;
  std::string error;
  detail::pool().run(threads, [&](unsigned t) {
    for (unsigned b = 0; b < blocks; ++b) {
      blockIdx = detail::coords(b, grid);
      threadIdx = detail::coords(t, block);
      detail::t_barrier = bars[b].get();
      detail::t_syncs = 0;
      try {
        body();
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (error.empty()) error = e.what();
      }
      syncs[size_t(b) * threads + t] = detail::t_syncs;
      detail::t_barrier = nullptr;
      bars[b]->arrive_and_drop();
      block_end.arrive_and_wait();
    }
  });
  if (!error.empty()) throw LaunchError("exception in a threaded launch: " + error);
  for (unsigned b = 0; b < blocks; ++b)
    for (unsigned t = 1; t < threads; ++t)
      if (syncs[size_t(b) * threads + t] != syncs[size_t(b) * threads])
        throw LaunchError("divergent __syncthreads in block " + std::to_string(b) + ": thread " +
                          std::to_string(t) + " made " +
                          std::to_string(syncs[size_t(b) * threads + t]) + " calls, thread 0 " +
                          std::to_string(syncs[size_t(b) * threads]));
}

}  // namespace emu

namespace emu {

// Runs a launch as launch(grid, block, true, body) does, with each block's threads as fibers
// on the calling thread instead of OS threads (emulated_fibers.h): the same checks, far faster
// barriers. Between two barriers the threads run one at a time, in the launch's order (Schedule).
// Falls back to threads where fibers are missing.
template <class Body>
void launch_fibers(dim3 grid, dim3 block, Body& body) {
#if defined(VARNET_EMU_FIBERS)
  gridDim = grid;
  blockDim = block;
  const unsigned blocks = grid.x * grid.y * grid.z, threads = block.x * block.y * block.z;
  thread_local fibers::Scheduler s;  // keeps its stacks from launch to launch
  if (s.fibers.size() < threads) s.fibers.resize(threads);
  s.run_body = [](void* b) { (*static_cast<Body*>(b))(); };
  s.body = &body;
  std::vector<uint3> coords(threads);
  for (unsigned t = 0; t < threads; ++t) coords[t] = detail::coords(t, block);
  struct Active {  // t_scheduler is set for this launch only, however it ends
    explicit Active(fibers::Scheduler* p) { fibers::t_scheduler = p; }
    ~Active() { fibers::t_scheduler = nullptr; }
  } active(&s);
  const detail::LaunchOrder order = detail::next_launch_order();
  std::vector<unsigned> block_order, thread_order;
  detail::arrange(block_order, blocks, order.kind, order.seed);
  for (unsigned b : block_order) {
    blockIdx = detail::coords(b, grid);
    for (unsigned t = 0; t < threads; ++t) fibers::prepare(s.fibers[t]);
    // Rounds: each unfinished thread runs to its next __syncthreads or its end, in the launch's
    // order (a fresh shuffle each round when shuffled), so a read of another thread's write with
    // no barrier between them sees the write in some launches and misses it in others. A thread
    // that has returned drops out of later barriers, as in the threaded mode.
    uint64_t round = 0;
    for (bool running = true; running; ++round) {
      running = false;
      detail::arrange(thread_order, threads, order.kind,
                      detail::mix(order.seed ^ (uint64_t(b) << 20) ^ round));
      for (unsigned t : thread_order) {
        fibers::Fiber& f = s.fibers[t];
        if (f.done) continue;
        threadIdx = coords[t];
        s.current = &f;
        varnet_emu_switch(&s.sp, f.sp);
        running = running || !f.done;
      }
    }
    for (unsigned t = 0; t < threads; ++t)
      if (!s.fibers[t].error.empty())
        throw LaunchError("exception in block " + std::to_string(b) + ", thread " +
                          std::to_string(t) + ": " + s.fibers[t].error);
    for (unsigned t = 1; t < threads; ++t)
      if (s.fibers[t].syncs != s.fibers[0].syncs)
        throw LaunchError("divergent __syncthreads in block " + std::to_string(b) + ": thread " +
                          std::to_string(t) + " made " + std::to_string(s.fibers[t].syncs) +
                          " calls, thread 0 " + std::to_string(s.fibers[0].syncs));
  }
#else
  launch(grid, block, true, body);
#endif
}

}  // namespace emu

inline void __syncthreads() {
#if defined(VARNET_EMU_FIBERS)
  if (emu::fibers::t_scheduler) return emu::fibers::barrier();
#endif
  if (!emu::detail::t_barrier)
    throw emu::LaunchError(
        "__syncthreads in a sequential launch (launch it threaded, or with "
        "cuda::launch_with_barriers in the library)");
  ++emu::detail::t_syncs;
  emu::detail::t_barrier->arrive_and_wait();
}

// The runtime API (memory, streams, graphs, events, errors) for the library's host code.
#include "emulated_runtime.h"
