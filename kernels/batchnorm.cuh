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
//
// Work split (so that a few wide channels, as after LeNet's first convolution, fill the GPU):
//   1. partial kernels: block (j, c) reduces chunk j (kBatchNormChunk consecutive values) of
//      channel c and writes its partial results;
//   2. finalize kernels: one block per channel merges its chunks' partials in a fixed order
//      (deterministic: no atomics) and works out the channel's scalars;
//   3. apply kernels: one thread per element.
// Forward partials are (count, mean, M2) in double (Chan et al.'s merge); the variance around the
// rounded float mean the layer uses is then M2 / L + (mean - rounded mean)^2, exactly the CPU's
// sum (x - mean)^2 / L up to rounding. Backward partials are sum dy and sum dy xhat, in double.
#pragma once

#include <cstdint>

#include "kernels/math.cuh"
#include "varnet/core/host_device.hpp"

namespace varnet::kernels {

// Threads per block of the reduction kernels (a power of two: the tree reduction needs it), and
// values per partial block (each thread holds kBatchNormChunk / kBatchNormThreads of them).
constexpr int kBatchNormThreads = 256;
constexpr int kBatchNormPerThread = 4;
constexpr int kBatchNormChunk = kBatchNormThreads * kBatchNormPerThread;

struct BatchNormShape {
  int64_t n = 0, c = 0, p = 1;
  VARNET_HOST_DEVICE int64_t count() const { return n * p; }  // L: values per channel
  VARNET_HOST_DEVICE int64_t chunks() const {
    return (count() + kBatchNormChunk - 1) / kBatchNormChunk;
  }
  VARNET_HOST_DEVICE int64_t numel() const { return n * c * p; }
};

// The flat index of value k in [0, L) of channel ch: sample k / P, position k % P.
template <class I>
__device__ __forceinline__ I bn_index(I c, I p, I ch, I k) {
  const I b = k / p;
  return (b * c + ch) * p + (k - b * p);
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

// Chan et al.: the (count, mean, M2) of two disjoint sets from each one's.
struct BnMoments {
  double n = 0, mean = 0, m2 = 0;
};
__device__ __forceinline__ BnMoments bn_merge(const BnMoments& a, const BnMoments& b) {
  if (a.n == 0) return b;
  if (b.n == 0) return a;
  BnMoments r;
  r.n = a.n + b.n;
  const double d = b.mean - a.mean;
  r.mean = a.mean + d * (b.n / r.n);
  r.m2 = a.m2 + b.m2 + d * d * (a.n * b.n / r.n);
  return r;
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
  T* used_mean = nullptr;     // (C) out: the mean used, kept for backward
  T* inv_std = nullptr;       // (C) out: 1 / sqrt(var + eps), kept for backward
  double* partial = nullptr;  // (C, chunks, 3) scratch for the batch statistics
  bool relu = false;          // y = max(batch norm, 0): a ReLU after the layer, fused
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

// Block (j, ch): the moments of chunk j of channel ch -> partial[(ch * chunks + j) * 3 + 0..2].
template <class T, class I>
__global__ void batch_norm_moments_kernel(const T* __restrict__ x, BatchNormShape s,
                                          double* __restrict__ partial) {
  __shared__ double shared[kBatchNormThreads];
  const I L = I(s.count()), ch = I(blockIdx.y), j = I(blockIdx.x);
  const I first = j * kBatchNormChunk;
  double v[kBatchNormPerThread];
  double sum = 0, n = 0;
  for (int r = 0; r < kBatchNormPerThread; ++r) {
    const I k = first + I(r * kBatchNormThreads) + I(threadIdx.x);
    v[r] = k < L ? double(x[bn_index<I>(I(s.c), I(s.p), ch, k)]) : 0.0;
    if (k < L) sum += v[r], n += 1;
  }
  const double count = bn_block_sum(n, shared);
  const double mean = bn_block_sum(sum, shared) / count;
  double sq = 0;
  for (int r = 0; r < kBatchNormPerThread; ++r) {
    const I k = first + I(r * kBatchNormThreads) + I(threadIdx.x);
    if (k < L) sq += (v[r] - mean) * (v[r] - mean);
  }
  const double m2 = bn_block_sum(sq, shared);
  if (threadIdx.x == 0) {
    double* out = partial + (int64_t(ch) * s.chunks() + j) * 3;
    out[0] = count;
    out[1] = mean;
    out[2] = m2;
  }
}

// One block per channel: merges the chunks' moments (or takes the running estimates), writes
// used_mean and inv_std, and updates the running estimates when asked.
template <class T>
__global__ void batch_norm_stats_kernel(BatchNormShape s, BatchNormForwardArgs<T> a) {
  __shared__ double sn[kBatchNormThreads], smean[kBatchNormThreads], sm2[kBatchNormThreads];
  const int64_t chunks = s.chunks();
  for (int64_t ch = blockIdx.x; ch < s.c; ch += gridDim.x) {
    T mean, var;
    if (a.batch) {  // the same for the whole block, so the barriers are safe
      BnMoments acc;
      for (int64_t j = threadIdx.x; j < chunks; j += blockDim.x) {
        const double* in = a.partial + (ch * chunks + j) * 3;
        acc = bn_merge(acc, BnMoments{in[0], in[1], in[2]});
      }
      sn[threadIdx.x] = acc.n;
      smean[threadIdx.x] = acc.mean;
      sm2[threadIdx.x] = acc.m2;
      __syncthreads();
      for (int width = kBatchNormThreads / 2; width > 0; width >>= 1) {
        if (static_cast<int>(threadIdx.x) < width) {
          const BnMoments m =
              bn_merge(BnMoments{sn[threadIdx.x], smean[threadIdx.x], sm2[threadIdx.x]},
                       BnMoments{sn[threadIdx.x + width], smean[threadIdx.x + width],
                                 sm2[threadIdx.x + width]});
          sn[threadIdx.x] = m.n;
          smean[threadIdx.x] = m.mean;
          sm2[threadIdx.x] = m.m2;
        }
        __syncthreads();
      }
      const double L = sn[0], exact_mean = smean[0], m2 = sm2[0];
      __syncthreads();  // the next channel reuses the shared arrays
      mean = T(exact_mean);
      const double shift = exact_mean - double(mean);  // the variance around the rounded mean
      var = T(m2 / L + shift * shift);
      if (a.update_running && threadIdx.x == 0) bn_update_running(a, ch, mean, var, T(L));
    } else {
      mean = a.running_mean[ch];
      var = a.running_var[ch];
    }
    if (threadIdx.x == 0) {
      a.used_mean[ch] = mean;
      a.inv_std[ch] = div_rn(T(1), sqrt_rn(add_rn(var, a.eps)));
    }
  }
}

// y = gamma ((x - mean) inv_std) + beta, then max(y, 0) when relu; one thread per element.
template <class T, class I>
__global__ void batch_norm_apply_kernel(const T* __restrict__ x, BatchNormShape s,
                                        const T* __restrict__ gamma, const T* __restrict__ beta,
                                        const T* __restrict__ mean, const T* __restrict__ inv_std,
                                        bool relu, T* __restrict__ y) {
  const I total = I(s.numel()), p = I(s.p), c = I(s.c);
  for (I k = I(thread_index()); k < total; k += I(grid_stride())) {
    const I ch = (k / p) % c;
    const T v = add_rn(mul_rn(gamma[ch], mul_rn(sub_rn(x[k], mean[ch]), inv_std[ch])), beta[ch]);
    y[k] = relu && !(v > T(0)) ? T(0) : v;
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
  double* partial = nullptr;     // (C, chunks, 2) scratch: sum dy, sum dy xhat per chunk
  T* mean_dy = nullptr;          // (C) scratch: the mean of dy (0 with running statistics)
  T* proj = nullptr;             // (C) scratch: the mean of dy xhat (0 with running ones)
  const T* relu_y = nullptr;     // forward fused a ReLU: its output; dy counts where it is > 0
};

// The gradient reaching the batch norm's output: dy, masked by a fused ReLU's output.
template <class T, class I>
__device__ __forceinline__ T bn_grad_in(const BatchNormBackwardArgs<T>& a, const T* dy, I at) {
  return a.relu_y && !(a.relu_y[at] > T(0)) ? T(0) : dy[at];
}

// Block (j, ch): sum dy and sum dy xhat over chunk j of channel ch -> partial[(ch chunks + j) 2].
template <class T, class I>
__global__ void batch_norm_grad_sums_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                            BatchNormShape s, BatchNormBackwardArgs<T> a) {
  __shared__ double shared[kBatchNormThreads];
  const I L = I(s.count()), ch = I(blockIdx.y), j = I(blockIdx.x);
  const T mean = a.used_mean[ch], is = a.inv_std[ch];
  double sum_dy = 0, sum_dy_xhat = 0;
  for (int r = 0; r < kBatchNormPerThread; ++r) {
    const I k = j * kBatchNormChunk + I(r * kBatchNormThreads) + I(threadIdx.x);
    if (k < L) {
      const I at = bn_index<I>(I(s.c), I(s.p), ch, k);
      const T g = bn_grad_in(a, dy, at), xhat = mul_rn(sub_rn(x[at], mean), is);
      sum_dy += double(g);
      sum_dy_xhat += double(g) * double(xhat);
    }
  }
  sum_dy = bn_block_sum(sum_dy, shared);
  sum_dy_xhat = bn_block_sum(sum_dy_xhat, shared);
  if (threadIdx.x == 0) {
    double* out = a.partial + (int64_t(ch) * s.chunks() + j) * 2;
    out[0] = sum_dy;
    out[1] = sum_dy_xhat;
  }
}

// One block per channel: the chunks' sums in a fixed order; dgamma, dbeta += them; mean_dy and
// proj for the input gradient.
template <class T>
__global__ void batch_norm_grad_stats_kernel(BatchNormShape s, BatchNormBackwardArgs<T> a) {
  __shared__ double shared[kBatchNormThreads];
  const int64_t chunks = s.chunks();
  for (int64_t ch = blockIdx.x; ch < s.c; ch += gridDim.x) {
    double sum_dy = 0, sum_dy_xhat = 0;
    for (int64_t j = threadIdx.x; j < chunks; j += blockDim.x) {
      sum_dy += a.partial[(ch * chunks + j) * 2];
      sum_dy_xhat += a.partial[(ch * chunks + j) * 2 + 1];
    }
    sum_dy = bn_block_sum(sum_dy, shared);
    sum_dy_xhat = bn_block_sum(sum_dy_xhat, shared);
    if (threadIdx.x == 0) {
      a.dgamma[ch] = add_rn(a.dgamma[ch], T(sum_dy_xhat));
      a.dbeta[ch] = add_rn(a.dbeta[ch], T(sum_dy));
      // Batch statistics depend on x too: subtract the mean and the projection on xhat.
      const double L = double(s.count());
      a.mean_dy[ch] = a.batch ? T(sum_dy / L) : T(0);
      a.proj[ch] = a.batch ? T(sum_dy_xhat / L) : T(0);
    }
  }
}

// dx = gamma inv_std (dy - mean_dy - xhat proj), one thread per element. dx may alias dy.
template <class T, class I>
__global__ void batch_norm_grad_apply_kernel(const T* __restrict__ x, const T* dy, BatchNormShape s,
                                             BatchNormBackwardArgs<T> a, T* dx) {
  const I total = I(s.numel()), p = I(s.p), c = I(s.c);
  for (I k = I(thread_index()); k < total; k += I(grid_stride())) {
    const I ch = (k / p) % c;
    const T is = a.inv_std[ch];
    const T xhat = mul_rn(sub_rn(x[k], a.used_mean[ch]), is);
    const T g = bn_grad_in(a, dy, k);
    dx[k] =
        mul_rn(mul_rn(a.gamma[ch], is), sub_rn(sub_rn(g, a.mean_dy[ch]), mul_rn(xhat, a.proj[ch])));
  }
}

}  // namespace varnet::kernels
