// Timing helpers the GPU benchmarks share: CUDA events, the median of repeated timed runs, and
// reproducible random inputs.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "varnet/cuda/check.hpp"
#include "varnet/cuda/handle.hpp"

namespace varnet::bench {

namespace vc = varnet::cuda;

struct Events {
  cudaEvent_t start = nullptr, stop = nullptr;
  Events() {
    VARNET_CUDA_CHECK(cudaEventCreate(&start));
    VARNET_CUDA_CHECK(cudaEventCreate(&stop));
  }
  Events(const Events&) = delete;
  Events& operator=(const Events&) = delete;
  ~Events() {
    (void)cudaEventDestroy(start);
    (void)cudaEventDestroy(stop);
  }
};

// Median milliseconds of `body` over `repeats` timed runs after `warmup` untimed ones.
inline double median_ms(vc::GpuContext& ctx, int warmup, int repeats,
                        const std::function<void()>& body) {
  Events ev;
  for (int i = 0; i < warmup; ++i) body();
  ctx.synchronize();
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    VARNET_CUDA_CHECK(cudaEventRecord(ev.start, ctx.stream()));
    body();
    VARNET_CUDA_CHECK(cudaEventRecord(ev.stop, ctx.stream()));
    VARNET_CUDA_CHECK(cudaEventSynchronize(ev.stop));
    float t = 0;
    VARNET_CUDA_CHECK(cudaEventElapsedTime(&t, ev.start, ev.stop));
    ms.push_back(double(t));
  }
  std::sort(ms.begin(), ms.end());
  const size_t h = ms.size() / 2;
  return ms.size() % 2 ? ms[h] : 0.5 * (ms[h - 1] + ms[h]);
}

inline std::vector<float> random_vector(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

}  // namespace varnet::bench
