// The kernels around a GPU training step that read their per-step values from device memory, so
// that one captured CUDA graph can replay every step (include/varnet/cuda/trainer.hpp):
//   - the step counter: a device word `step`; the noise of step s is keyed by s, and the last
//     kernel of a step increments the word;
//   - the mini-batch: the data set and the epoch's order live on the device, and step s of an
//     epoch that starts at step s0 gathers order[(s - s0) B .. (s - s0 + 1) B), augmented per
//     image (crop and flip) when asked, keyed by the epoch word;
//   - Adam's scalars: the learning rate of the linear decay and the bias corrections at t = s + 1
//     + adam_offset, computed as varnet::Adam::step and LinearDecay::at compute them on the host,
//     and optional per-parameter learning-rate scales (varnet::Adam::set_lr_scale);
//   - the KL weight of step s, beta(s) / N with beta's linear warm-up (varnet::KlWarmup), from a
//     schedule in device memory, and the step's KL summed into the epoch's;
//   - the epoch's loss and correct count, summed on the device and read once per epoch.
// Also the ensemble's probability sums for GPU evaluation.
#pragma once

#include <cstdint>

#include "kernels/adam.cuh"
#include "kernels/math.cuh"
#include "varnet/core/random.hpp"

namespace varnet::kernels {

// Per-image augmentation on the device, the twin of data::draw_crop_flip and crop_flip_image
// (include/varnet/data/augment.hpp): image item's window and flip come from one Philox block of
// NoiseKey{seed, 0, epoch, stream::kAugment} at the item's index.
struct GatherAugment {
  bool on = false;
  int64_t pad = 4;
  bool flip = true;
  uint64_t seed = 0;
  int64_t c = 1, h = 1, w = 1;  // the image shape
};

// x (B, per) and labels (B) = images and labels of items order[(*step - *first_step) B + i],
// cropped and flipped when aug.on (epoch: the device word that keys the augmentation). The item
// indices were checked on the host when the order was uploaded.
template <class T>
__global__ void gather_batch_kernel(const float* __restrict__ images,
                                    const int32_t* __restrict__ labels,
                                    const int32_t* __restrict__ order, const uint32_t* step,
                                    const uint32_t* first_step, const uint32_t* epoch,
                                    int64_t batch, int64_t per, GatherAugment aug,
                                    T* __restrict__ x, int32_t* __restrict__ y) {
  const int64_t base = int64_t(*step - *first_step) * batch;
  const int64_t total = batch * per;
  for (int64_t k = thread_index(); k < total; k += grid_stride()) {
    const int64_t row = k / per, e = k - row * per;
    const int64_t item = order[base + row];
    if (e == 0) y[row] = labels[item];
    if (!aug.on) {
      x[k] = static_cast<T>(images[item * per + e]);
      continue;
    }
    const NoiseKey key{aug.seed, 0, *epoch, stream::kAugment};
    const Philox4x32::Counter w = key.block(static_cast<uint64_t>(item));
    const uint64_t span = static_cast<uint64_t>(2 * aug.pad + 1);
    const int64_t top = int64_t((uint64_t(w.v[0]) * span) >> 32);
    const int64_t left = int64_t((uint64_t(w.v[1]) * span) >> 32);
    const bool flip = aug.flip && (w.v[2] & 1u);
    const int64_t plane = aug.h * aug.w, ch = e / plane, rest = e - ch * plane;
    const int64_t r = rest / aug.w, qd = rest - r * aug.w;
    const int64_t q = flip ? aug.w - 1 - qd : qd;  // dst(r, qd) = window(r, q)
    const int64_t sr = r + top - aug.pad, sq = q + left - aug.pad;
    const bool inside = sr >= 0 && sr < aug.h && sq >= 0 && sq < aug.w;
    x[k] = inside ? static_cast<T>(images[item * per + ch * plane + sr * aug.w + sq]) : T(0);
  }
}

// The host schedule of a training run: LinearDecay{lr_base, lr_total} and AdamOptions.
struct AdamSchedule {
  double lr_base = 1e-3;
  int64_t lr_total = 1;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  int64_t adam_offset = 0;  // Adam's step count minus the trainer's (0 unless resumed oddly)
};

// Adam's scalars for trainer step s, as varnet::Adam::step with lr = LinearDecay::at(s).
template <class T>
__device__ AdamScalars<T> adam_scalars_at(const AdamSchedule& a, uint32_t s) {
  const double frac = __ddiv_rn(double(s), double(a.lr_total));
  const double lr = a.lr_total <= 0 ? a.lr_base : __dmul_rn(a.lr_base, fmax(0.0, 1.0 - frac));
  const double t = double(int64_t(s) + 1 + a.adam_offset);
  AdamScalars<T> r;
  r.b1 = T(a.beta1);
  r.b2 = T(a.beta2);
  r.one_minus_b1 = T(1) - r.b1;
  r.one_minus_b2 = T(1) - r.b2;
  const T c1 = T(1.0 - pow(a.beta1, t));
  r.c2 = T(1.0 - pow(a.beta2, t));
  r.step = T(lr) / c1;
  r.eps = T(a.eps);
  return r;
}

// One Adam step at the device step counter; sets *nonfinite when a gradient is not finite (the
// host reads the flag once per epoch). lr_scale (count values, or null: 1 everywhere) multiplies
// each parameter's step as varnet::Adam does: p - ((step scale) m) / (sqrt(v / c2) + eps).
template <class T>
__global__ void adam_scheduled_kernel(int64_t count, AdamSchedule sched, const uint32_t* step,
                                      T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m,
                                      T* __restrict__ v, const T* __restrict__ lr_scale,
                                      int32_t* __restrict__ nonfinite) {
  __shared__ AdamScalars<T> a;
  if (threadIdx.x == 0) a = adam_scalars_at<T>(sched, *step);
  __syncthreads();
  bool bad = false;
  for (int64_t k = thread_index(); k < count; k += grid_stride()) {
    const T gk = g[k];
    bad |= !isfinite(gk);
    const T mk = add_rn(mul_rn(a.b1, m[k]), mul_rn(a.one_minus_b1, gk));
    const T vk = add_rn(mul_rn(a.b2, v[k]), mul_rn(a.one_minus_b2, mul_rn(gk, gk)));
    m[k] = mk;
    v[k] = vk;
    const T num = lr_scale ? mul_rn(mul_rn(a.step, lr_scale[k]), mk) : mul_rn(a.step, mk);
    p[k] = sub_rn(p[k], div_rn(num, add_rn(sqrt_rn(div_rn(vk, a.c2)), a.eps)));
  }
  if (bad) *nonfinite = 1;
}

// The KL weight's schedule in device memory, three doubles: beta, the warm-up's steps, N. The
// weight of step s is KlWarmup{beta, warmup}.at(s) / N, with the host's operations in the host's
// order: beta (warm-up <= 0), else beta * min(1, s / warmup); then / N.
constexpr int kKlScheduleWords = 3;
__device__ __forceinline__ double kl_weight_at(const double* schedule, uint32_t s) {
  const double beta = schedule[0], warmup = schedule[1], items = schedule[2];
  const double b = warmup <= 0 ? beta : mul_rn(beta, fmin(1.0, div_rn(double(s), warmup)));
  return div_rn(b, items);
}

// Before a step's KL: *scale = T(the weight of step *step) (the host Trainer's T(kl_weight)),
// *step_kl = 0. One thread.
template <class T>
__global__ void kl_step_begin_kernel(const double* __restrict__ schedule, const uint32_t* step,
                                     T* __restrict__ scale, double* __restrict__ step_kl) {
  if (thread_index() != 0) return;
  *scale = T(kl_weight_at(schedule, *step));
  *step_kl = 0;
}

// After a step's KL (totals[3], summed by the layers): the step's KL as the host Trainer reports
// it, 0 when the step's weight is 0 (the host skips the KL then), into totals[4] (the last step's)
// and added to totals[2] (the epoch's). One thread. T: as posterior_sum_kernel's.
template <class T>
__global__ void kl_step_end_kernel(const double* __restrict__ schedule, const uint32_t* step,
                                   double* __restrict__ totals) {
  if (thread_index() != 0) return;
  const double kl = kl_weight_at(schedule, *step) != 0 ? totals[3] : 0.0;
  totals[2] = add_rn(totals[2], kl);
  totals[4] = kl;
}

// totals[0] += sum of row_loss / n, totals[1] += correct rows; counts[0] += rows with a label
// outside [0, C). One block; the step's batch is small. Then advances the step counter: this is
// the step's last kernel, launched after every reader of the counter.
template <class T>
__global__ void finish_step_kernel(int64_t n, const T* __restrict__ row_loss,
                                   const int32_t* __restrict__ row_correct,
                                   double* __restrict__ totals, int32_t* __restrict__ bad_labels,
                                   uint32_t* step) {
  __shared__ double loss_part[256];
  __shared__ double correct_part[256];
  double loss = 0, correct = 0;
  int32_t bad = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    loss += double(row_loss[i]);
    if (row_correct[i] < 0)
      bad = 1;
    else
      correct += double(row_correct[i]);
  }
  loss_part[threadIdx.x] = loss;
  correct_part[threadIdx.x] = correct;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) {
      loss_part[threadIdx.x] += loss_part[threadIdx.x + s];
      correct_part[threadIdx.x] += correct_part[threadIdx.x + s];
    }
    __syncthreads();
  }
  if (bad) *bad_labels = 1;
  if (threadIdx.x == 0) {
    totals[0] += loss_part[0] / double(n);
    totals[1] += correct_part[0];
    *step += 1;
  }
}

// sums (N, C) += softmax(logits (K, N, C)) of each of the K stacked samples in double, as
// varnet::for_each_ensemble_batch computes each sample's probabilities. One thread per row.
template <class T>
__global__ void softmax_accumulate_kernel(int64_t n, int64_t c, int samples,
                                          const T* __restrict__ logits, double* __restrict__ sums) {
  for (int64_t row = thread_index(); row < n; row += grid_stride())
    for (int k = 0; k < samples; ++k) {  // in sample order, as one call per sample would add
      const T* z = logits + (k * n + row) * c;
      T mx = z[0];
      for (int64_t j = 1; j < c; ++j) mx = z[j] > mx ? z[j] : mx;
      double s = 0;
      for (int64_t j = 0; j < c; ++j) s += exp(double(z[j] - mx));
      for (int64_t j = 0; j < c; ++j) sums[row * c + j] += exp(double(z[j] - mx)) / s;
    }
}

}  // namespace varnet::kernels
