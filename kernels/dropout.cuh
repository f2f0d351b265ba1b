// Binary dropout on the GPU; the CPU twin is Dropout::apply in include/varnet/layers/dropout.hpp:
//   out = in * mask / (1 - p),  mask = uniform_open01(word e) < keep ? 1 : 0  (keep = 1 - p),
// word e of the layer's noise for element e (Philox block e / 4, lane e % 4), as
// ops::fill_from_words draws it from element 0. Forward and backward apply the same mask.
#pragma once

#include <cstdint>

#include "kernels/math.cuh"
#include "varnet/core/random.hpp"

namespace varnet::kernels {

// out (count) = (mask * in) * scale. step: as in lrt.cuh, a device word that replaces key.step
// when not null. One thread per group of 4 elements (one Philox block).
template <class T>
__global__ void dropout_forward_kernel(NoiseKey key, const uint32_t* step, int64_t count,
                                       float keep, T scale, const T* __restrict__ in,
                                       T* __restrict__ out) {
  if (step) key.step = *step;
  const int64_t groups = (count + 3) / 4;
  for (int64_t g = thread_index(); g < groups; g += grid_stride()) {
    const Philox4x32::Counter words = key.block(static_cast<uint64_t>(g));
    for (int lane = 0; lane < 4 && 4 * g + lane < count; ++lane) {
      const int64_t i = 4 * g + lane;
      const T mask = static_cast<T>(uniform_open01(words.v[lane]) < keep ? 1.0f : 0.0f);
      out[i] = mul_rn(mul_rn(mask, in[i]), scale);
    }
  }
}

}  // namespace varnet::kernels
