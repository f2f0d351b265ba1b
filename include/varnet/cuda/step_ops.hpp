// Host launchers for the training-step kernels in kernels/train_step.cuh: the device-side batch
// gather, the scheduled Adam update, the step's loss sums with the step counter's advance, and
// the ensemble's probability sums. Same conventions as cuda/ops.hpp.
#pragma once

#include <cstdint>

#include "kernels/train_step.cuh"
#include "varnet/core/error.hpp"
#include "varnet/cuda/check.hpp"
#include "varnet/cuda/handle.hpp"
#include "varnet/cuda/launch.hpp"

namespace varnet::cuda {

// x (batch, per) and y (batch) from the device data set (images (items, per), labels (items))
// at positions (*step - *first_step) * batch + i of the device order (device words), cropped and
// flipped per image when aug.on (keyed by the device word *epoch).
template <class T>
void gather_batch(GpuContext& ctx, const float* images, const int32_t* labels, const int32_t* order,
                  const uint32_t* step, const uint32_t* first_step, const uint32_t* epoch,
                  int64_t batch, int64_t per, const kernels::GatherAugment& aug, T* x, int32_t* y) {
  check(!aug.on || (aug.pad >= 0 && aug.c * aug.h * aug.w == per), "cuda::gather_batch",
        str("augmentation of images of ", per, " values with a padding >= 0"), "C ", aug.c, ", H ",
        aug.h, ", W ", aug.w, ", pad ", aug.pad);
  if (batch * per <= 0) return;
  launch(kernels::gather_batch_kernel<T>, grid_for(batch * per), kThreads, ctx.stream(), images,
         labels, order, step, first_step, epoch, batch, per, aug, x, y);
  VARNET_CUDA_CHECK_LAUNCH("gather_batch_kernel");
}

// Adam over `count` parameters at the device step counter (kernels::AdamSchedule), each step
// multiplied by lr_scale[k] (count device values; null: by 1, the same arithmetic as without
// scales); sets *nonfinite to 1 when a gradient is not finite.
template <class T>
void adam_scheduled(GpuContext& ctx, int64_t count, const kernels::AdamSchedule& sched,
                    const uint32_t* step, T* p, const T* g, T* m, T* v, const T* lr_scale,
                    int32_t* nonfinite) {
  if (count <= 0) return;
  launch_with_barriers(kernels::adam_scheduled_kernel<T>, grid_for(count), kThreads, ctx.stream(),
                       count, sched, step, p, g, m, v, lr_scale, nonfinite);
  VARNET_CUDA_CHECK_LAUNCH("adam_scheduled_kernel");
}

// Before a step's KL: *scale = T(the KL weight of step *step) from the device schedule
// (kernels::kKlScheduleWords doubles), *step_kl = 0.
template <class T>
void kl_step_begin(GpuContext& ctx, const double* schedule, const uint32_t* step, T* scale,
                   double* step_kl) {
  launch(kernels::kl_step_begin_kernel<T>, 1, 1, ctx.stream(), schedule, step, scale, step_kl);
  VARNET_CUDA_CHECK_LAUNCH("kl_step_begin_kernel");
}

// After a step's KL, summed into totals[3]: totals[4] = the step's KL (0 when its weight is 0, as
// the host reports it), totals[2] += it.
template <class T>
void kl_step_end(GpuContext& ctx, const double* schedule, const uint32_t* step, double* totals) {
  launch(kernels::kl_step_end_kernel<T>, 1, 1, ctx.stream(), schedule, step, totals);
  VARNET_CUDA_CHECK_LAUNCH("kl_step_end_kernel");
}

// totals (2 doubles) += (mean row loss, correct rows); bad_labels = 1 on a label out of range;
// then *step += 1. Launch it last in a step.
template <class T>
void finish_step(GpuContext& ctx, int64_t n, const T* row_loss, const int32_t* row_correct,
                 double* totals, int32_t* bad_labels, uint32_t* step) {
  launch_with_barriers(kernels::finish_step_kernel<T>, 1, 256, ctx.stream(), n, row_loss,
                       row_correct, totals, bad_labels, step);
  VARNET_CUDA_CHECK_LAUNCH("finish_step_kernel");
}

// sums (n, c) += softmax of logits (n, c), in double; with samples > 1, logits is (samples, n, c)
// (stacked samples) and each sample's softmax is added, in sample order.
template <class T>
void softmax_accumulate(GpuContext& ctx, int64_t n, int64_t c, const T* logits, double* sums,
                        int samples = 1) {
  if (n <= 0) return;
  check(samples >= 1, "cuda::softmax_accumulate", "at least one sample", samples);
  launch(kernels::softmax_accumulate_kernel<T>, grid_for(n, 128), 128, ctx.stream(), n, c, samples,
         logits, sums);
  VARNET_CUDA_CHECK_LAUNCH("softmax_accumulate_kernel");
}

}  // namespace varnet::cuda
