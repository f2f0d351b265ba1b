// parallel_for: a static OpenMP loop when OpenMP is enabled, a plain loop otherwise. Small loops
// stay serial, since waking the thread team costs more than they do.
#pragma once

#include <cstdint>

namespace varnet {

template <class F>
void parallel_for(int64_t n, F&& body, int64_t serial_below = 2) {
#if defined(_OPENMP)
  if (n >= serial_below) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#else
  (void)serial_below;
#endif
  for (int64_t i = 0; i < n; ++i) body(i);
}

}  // namespace varnet
