// Batch normalisation on the GPU; the CPU twin is BatchNorm in include/varnet/layers/batchnorm.hpp,
// with the same formulas, per channel c over its L = N * P values (P = H * W, 1 for dense):
//   batch statistics: mean = sum x / L, var = sum (x - mean)^2 / L (biased, around the rounded
//   mean the layer uses), and in training the running estimates
//     running_mean = (1 - m) running_mean + m mean,
//     running_var  = (1 - m) running_var + m var L / (L - 1)   (unbiased, as PyTorch);
//   otherwise mean and var are the running estimates.
//   inv_std = 1 / sqrt(var + eps);  y = gamma ((x - mean) inv_std) + beta.
//   backward, xhat = (x - mean) inv_std recomputed from x and the saved mean and inv_std:
//     dgamma += sum dy xhat,  dbeta += sum dy,
//     dx = gamma inv_std (dy - mean_dy - xhat proj), mean_dy = sum dy / L and
//     proj = sum dy xhat / L with batch statistics, both 0 with running ones.
// The elementwise steps use the CPU's operation order with round-to-nearest intrinsics (no
// contraction into fused multiply-adds); the sums use double accumulators, so they are at least
// as accurate as the CPU's float sums.
//
// Layout: x, y, dy, dx (N, C, P) contiguous; channel c is the N runs x[b, c, 0 .. P).
// One block of kBatchNormThreads threads per channel (grid-stride over channels), reducing with
// a shared-memory tree.
#pragma once

#include <cstdint>

#include "kernels/math.cuh"
#include "varnet/core/host_device.hpp"

namespace varnet::kernels {

// Threads per block of the batch-norm kernels (a power of two: the tree reduction needs it).
constexpr int kBatchNormThreads = 256;

struct BatchNormShape {
  int64_t n = 0, c = 0, p = 1;
  VARNET_HOST_DEVICE int64_t count() const { return n * p; }  // L: values per channel
};

// The flat index of value k in [0, L) of channel ch: sample k / P, position k % P.
__device__ __forceinline__ int64_t bn_index(const BatchNormShape& s, int64_t ch, int64_t k) {
  const int64_t b = k / s.p;
  return (b * s.c + ch) * s.p + (k - b * s.p);
}

// The sum of every thread's v in the block, returned to all threads. `shared` holds
// kBatchNormThreads values; every thread of the block must call this (it synchronises).
__device__ __forceinline__ double bn_block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int width = kBatchNormThreads / 2; width > 0; width >>= 1) {
    if (static_cast<int>(threadIdx.x) < width) shared[threadIdx.x] += shared[threadIdx.x + width];
    __syncthreads();
  }
  const double total = shared[0];
  __syncthreads();  // shared is reused by the next reduction
  return total;
}

// The per-channel parameters and statistics of the forward pass.
template <class T>
struct BatchNormForwardArgs {
  const T* gamma = nullptr;    // (C)
  const T* beta = nullptr;     // (C)
  T* running_mean = nullptr;   // (C): read without batch statistics, updated with update_running
  T* running_var = nullptr;    // (C)
  bool batch = true;           // batch statistics (training, or batch_stats_in_eval)
  bool update_running = true;  // training: update the running estimates (needs batch)
  T momentum = T(0.1);
  T eps = T(1e-5);
  T* used_mean = nullptr;  // (C) out: the mean used, kept for backward
  T* inv_std = nullptr;    // (C) out: 1 / sqrt(var + eps), kept for backward
};

// running = (1 - m) running + m mean;  running_var = (1 - m) running_var + m var L / (L - 1).
template <class T>
__device__ __forceinline__ void bn_update_running(const BatchNormForwardArgs<T>& a, int64_t ch,
                                                  T mean, T var, T count) {
  const T m = a.momentum, keep = sub_rn(T(1), m);
  a.running_mean[ch] = add_rn(mul_rn(keep, a.running_mean[ch]), mul_rn(m, mean));
  const T unbiased = div_rn(mul_rn(mul_rn(m, var), count), sub_rn(count, T(1)));
  a.running_var[ch] = add_rn(mul_rn(keep, a.running_var[ch]), unbiased);
}

// y (N, C, P) from x; writes used_mean and inv_std, and the running estimates when asked.
template <class T>
__global__ void batch_norm_forward_kernel(const T* __restrict__ x, BatchNormShape s,
                                          BatchNormForwardArgs<T> a, T* __restrict__ y) {
  __shared__ double partial[kBatchNormThreads];
  const int64_t L = s.count();
  for (int64_t ch = blockIdx.x; ch < s.c; ch += gridDim.x) {
    T mean, var;
    if (a.batch) {  // the same for the whole block, so the reductions' barriers are safe
      double sum = 0;
      for (int64_t k = threadIdx.x; k < L; k += blockDim.x) sum += double(x[bn_index(s, ch, k)]);
      mean = T(bn_block_sum(sum, partial) / double(L));
      double sq = 0;
      for (int64_t k = threadIdx.x; k < L; k += blockDim.x) {
        const double d = double(x[bn_index(s, ch, k)]) - double(mean);
        sq += d * d;
      }
      var = T(bn_block_sum(sq, partial) / double(L));
      if (a.update_running && threadIdx.x == 0) bn_update_running(a, ch, mean, var, T(L));
    } else {
      mean = a.running_mean[ch];
      var = a.running_var[ch];
    }
    const T is = div_rn(T(1), sqrt_rn(add_rn(var, a.eps)));
    if (threadIdx.x == 0) {
      a.used_mean[ch] = mean;
      a.inv_std[ch] = is;
    }
    const T g = a.gamma[ch], b = a.beta[ch];
    for (int64_t k = threadIdx.x; k < L; k += blockDim.x) {
      const int64_t at = bn_index(s, ch, k);
      y[at] = add_rn(mul_rn(g, mul_rn(sub_rn(x[at], mean), is)), b);
    }
  }
}

// What the backward pass reads besides x and dy, and what it writes.
template <class T>
struct BatchNormBackwardArgs {
  const T* gamma = nullptr;      // (C)
  const T* used_mean = nullptr;  // (C) from forward
  const T* inv_std = nullptr;    // (C) from forward
  bool batch = true;             // forward used batch statistics
  T* dgamma = nullptr;           // (C) accumulates
  T* dbeta = nullptr;            // (C) accumulates
};

// dgamma, dbeta += the channel sums; dx (N, C, P) overwritten when not null. dx may alias dy:
// a channel's dy is read in full (the reductions end in a barrier) before its dx is written.
template <class T>
__global__ void batch_norm_backward_kernel(const T* __restrict__ x, const T* dy, BatchNormShape s,
                                           BatchNormBackwardArgs<T> a, T* dx) {
  __shared__ double partial[kBatchNormThreads];
  const int64_t L = s.count();
  for (int64_t ch = blockIdx.x; ch < s.c; ch += gridDim.x) {
    const T mean = a.used_mean[ch], is = a.inv_std[ch];
    double sum_dy = 0, sum_dy_xhat = 0;
    for (int64_t k = threadIdx.x; k < L; k += blockDim.x) {
      const int64_t at = bn_index(s, ch, k);
      const T g = dy[at], xhat = mul_rn(sub_rn(x[at], mean), is);
      sum_dy += double(g);
      sum_dy_xhat += double(g) * double(xhat);
    }
    sum_dy = bn_block_sum(sum_dy, partial);
    sum_dy_xhat = bn_block_sum(sum_dy_xhat, partial);
    if (threadIdx.x == 0) {
      a.dgamma[ch] = add_rn(a.dgamma[ch], T(sum_dy_xhat));
      a.dbeta[ch] = add_rn(a.dbeta[ch], T(sum_dy));
    }
    if (!dx) continue;  // the same for the whole block
    const T k_scale = mul_rn(a.gamma[ch], is);
    // Batch statistics depend on x too: subtract the mean and the projection on xhat.
    const T mean_dy = a.batch ? T(sum_dy / double(L)) : T(0);
    const T proj = a.batch ? T(sum_dy_xhat / double(L)) : T(0);
    for (int64_t k = threadIdx.x; k < L; k += blockDim.x) {
      const int64_t at = bn_index(s, ch, k);
      const T xhat = mul_rn(sub_rn(x[at], mean), is);
      dx[at] = mul_rn(k_scale, sub_rn(sub_rn(dy[at], mean_dy), mul_rn(xhat, proj)));
    }
  }
}

}  // namespace varnet::kernels
