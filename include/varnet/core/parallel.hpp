// parallel_for: a static OpenMP loop when OpenMP is enabled, a plain loop otherwise. Loops with
// little work stay serial: waking the thread team costs microseconds, and far more when other
// processes load the cores.
#pragma once

#include <algorithm>
#include <cstdint>

namespace varnet {

// Runs body(i) for i in [0, n). `work_per_item` estimates the elements each call touches; the
// loop runs in parallel only when the total reaches kParallelWork.
constexpr int64_t kParallelWork = int64_t(1) << 15;

template <class F>
void parallel_for(int64_t n, F&& body, int64_t work_per_item = 1) {
#if defined(_OPENMP)
  if (n >= 2 && n * work_per_item >= kParallelWork) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#else
  (void)work_per_item;
#endif
  for (int64_t i = 0; i < n; ++i) body(i);
}

// Runs body(begin, end) on consecutive ranges that cover [0, n): an elementwise pass over a
// whole tensor, split across the cores when it is large (a weight matrix's 400 K elements take
// longer on one core than the GEMM beside them takes on two).
template <class F>
void parallel_ranges(int64_t n, F&& body) {
  constexpr int64_t kRange = int64_t(1) << 14;
  const int64_t ranges = (n + kRange - 1) / kRange;
  parallel_for(
      ranges, [&](int64_t r) { body(r * kRange, std::min(n, (r + 1) * kRange)); }, kRange);
}

}  // namespace varnet
