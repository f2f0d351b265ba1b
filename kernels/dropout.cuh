// Binary dropout on the GPU; the CPU twin is Dropout::apply in include/varnet/layers/dropout.hpp:
//   out = in * mask / (1 - p),  mask = uniform_open01(word e) < keep ? 1 : 0  (keep = 1 - p),
// word e of the layer's noise for element e (Philox block e / 4, lane e % 4), as
// ops::fill_from_words draws it from element 0. Forward and backward apply the same mask.
#pragma once

#include <cstdint>

#include "kernels/math.cuh"
#include "varnet/core/random.hpp"

namespace varnet::kernels {

// out (count) = (mask * in) * scale, `row_numel` elements per row. step: as in lrt.cuh, a device
// word that replaces the key's step when not null. One thread per Philox group of 4 elements
// (BatchNoise::group: with stacked samples, each sample's elements from its own stream).
template <class T>
__global__ void dropout_forward_kernel(BatchNoise noise, const uint32_t* step, int64_t count,
                                       int64_t row_numel, float keep, T scale,
                                       const T* __restrict__ in, T* __restrict__ out) {
  if (step) noise.key.step = *step;
  const int64_t groups = noise.groups(count, row_numel);
  for (int64_t g = thread_index(); g < groups; g += grid_stride()) {
    const BatchNoise::Group grp = noise.group(g, count, row_numel);
    const Philox4x32::Counter words = grp.key.block(grp.block);
    // A group holds at most 4 elements. The lane is a compile-time index once the loop is
    // unrolled, so the four words stay in registers (indexed by i - grp.first they went to the
    // stack).
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = grp.first + lane;
      if (i >= grp.end) break;
      const T mask = static_cast<T>(uniform_open01(words.v[lane]) < keep ? 1.0f : 0.0f);
      out[i] = mul_rn(mul_rn(mask, in[i]), scale);
    }
  }
}

}  // namespace varnet::kernels
