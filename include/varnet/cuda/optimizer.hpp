// Adam on the GPU over a flat device parameter buffer: the twin of varnet::Adam
// (include/varnet/nn/optimizer.hpp), with the same options, bias correction and step count. The
// moment buffers live on the device; each step is one kernel (kernels/adam.cuh).
#pragma once

#include <cstdint>

#include "varnet/nn/optimizer.hpp"

#include "varnet/cuda/device_buffer.hpp"
#include "varnet/cuda/handle.hpp"
#include "varnet/cuda/ops.hpp"

namespace varnet::cuda {

template <class T>
class Adam {
 public:
  Adam(GpuContext& ctx, int64_t size, AdamOptions o = {}) : opt_(o), size_(size) {
    check(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1 && o.eps > 0, "cuda::Adam",
          "beta1, beta2 in [0, 1) and eps > 0", "beta1 ", o.beta1, ", beta2 ", o.beta2, ", eps ",
          o.eps);
    check(size >= 0, "cuda::Adam", "a parameter count >= 0", size);
    m_.resize(static_cast<size_t>(size));
    v_.resize(static_cast<size_t>(size));
    m_.zero(ctx.stream());
    v_.zero(ctx.stream());
  }

  // params -= the Adam step for grads (both `size` elements on the device), on ctx's stream.
  void step(GpuContext& ctx, T* params, const T* grads, double lr) {
    ++t_;
    const auto a = kernels::adam_scalars<T>(opt_.beta1, opt_.beta2, opt_.eps, t_, lr);
    adam_update(ctx, size_, a, params, grads, m_.data(), v_.data());
  }
  int64_t steps() const { return t_; }
  int64_t size() const { return size_; }

 private:
  AdamOptions opt_;
  int64_t size_;
  DeviceBuffer<T> m_, v_;
  int64_t t_ = 0;
};

}  // namespace varnet::cuda
