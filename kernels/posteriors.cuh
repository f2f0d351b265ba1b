// The factorized Gaussian weight posteriors of the dropout family on the GPU; the CPU twins are
// GaussianDropoutPosterior, VariationalDropoutPosterior and SparseVDPosterior in
// include/varnet/layers/weight_posteriors.hpp, with the KL of include/varnet/layers/kl.hpp:
//
//   gaussian dropout     s2 = alpha theta^2 (alpha fixed)           no KL
//   variational dropout  s2 = alpha theta^2, alpha = exp(clamp(log alpha, [-20, 20])), one per
//                        layer; KL = n KL(log alpha)
//   sparse VD            s2 = exp(log sigma2) per weight; log alpha = log sigma2 -
//                        log(theta^2 + 1e-8), clamped to [-10, 10] for the KL and pruning
//
// Each kernel is the CPU loop with the same operations in the same order (round-to-nearest
// intrinsics, so nvcc fuses nothing the CPU does not): the elementwise results are the CPU's up
// to the last ulp of exp and log. The sums (the KL, variational dropout's d log alpha) are fixed
// order reductions in double: each block reduces a grid-stride share in a tree, one more block
// sums the blocks' partials. No float atomics, so every run gives the same bits.
#pragma once

#include <cstdint>

#include "kernels/math.cuh"
#include "varnet/layers/kl.hpp"

namespace varnet::kernels {

enum class PosteriorKind : int32_t { gaussian_dropout, variational_dropout, sparse_vd };

// A posterior's configuration, from the host policy (cuda/baseline_ops.hpp).
struct PosteriorSpec {
  PosteriorKind kind = PosteriorKind::gaussian_dropout;
  double alpha = 1;            // gaussian dropout
  double log_alpha_min = -20;  // variational dropout and sparse VD: the clamp of log
  double log_alpha_max = 20;   //   alpha
  double tiny = 1e-8;          // sparse VD: log alpha = log sigma2 - log(theta^2 + tiny)
  double threshold = 3;        // sparse VD: pruned in mean mode when log alpha > it
  bool prune = false;          //   and prune is set
};

// One layer's posterior on the device: theta and aux (log alpha (1) or log sigma2 (n); null for
// gaussian dropout), their gradients (backward only), and the number of weights.
template <class T>
struct PosteriorArgs {
  PosteriorSpec spec;
  const T* theta = nullptr;
  const T* aux = nullptr;
  T* dtheta = nullptr;
  T* daux = nullptr;
  int64_t n = 0;
};

// Threads per block of the reducing kernels (a power of two: the tree needs it), and the most
// blocks they use: the partial sums of one reduction fit kPosteriorMaxBlocks doubles.
constexpr int kPosteriorThreads = 256;
constexpr int kPosteriorMaxBlocks = 256;

// Sum of v over the block's kPosteriorThreads threads in a fixed tree; every thread must call it.
// The result is returned to every thread.
__device__ __forceinline__ double block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int width = kPosteriorThreads / 2; width > 0; width >>= 1) {
    if (static_cast<int>(threadIdx.x) < width)
      shared[threadIdx.x] = add_rn(shared[threadIdx.x], shared[threadIdx.x + width]);
    __syncthreads();
  }
  const double r = shared[0];
  __syncthreads();  // shared may be reused by the caller
  return r;
}

// std::clamp(x, lo, hi): a NaN stays NaN.
__device__ __forceinline__ double clamp_log_alpha(double x, double lo, double hi) {
  return x < lo ? lo : (hi < x ? hi : x);
}

// kl::sigmoid, kl::softplus_neg, kl::log_uniform and kl::log_uniform_grad, in the same order.
__device__ __forceinline__ double kl_sigmoid(double z) {
  return z >= 0 ? div_rn(1.0, add_rn(1.0, exp(-z))) : div_rn(exp(z), add_rn(1.0, exp(z)));
}
__device__ __forceinline__ double kl_softplus_neg(double a) {
  return a > 0 ? log1p(exp(-a)) : add_rn(-a, log1p(exp(a)));
}
__device__ __forceinline__ double kl_log_uniform(double la) {
  const double s = kl_sigmoid(add_rn(kl::k2, mul_rn(kl::k3, la)));
  return add_rn(sub_rn(kl::k1, mul_rn(kl::k1, s)), mul_rn(0.5, kl_softplus_neg(la)));
}
__device__ __forceinline__ double kl_log_uniform_grad(double la) {
  const double s = kl_sigmoid(add_rn(kl::k2, mul_rn(kl::k3, la)));
  return sub_rn(mul_rn(mul_rn(mul_rn(-kl::k1, kl::k3), s), sub_rn(1.0, s)),
                mul_rn(0.5, kl_sigmoid(-la)));
}

// Variational dropout's log alpha as used: clamp(log alpha, [min, max]).
template <class T>
__device__ __forceinline__ double shared_log_alpha(const PosteriorArgs<T>& p) {
  return clamp_log_alpha(double(p.aux[0]), p.spec.log_alpha_min, p.spec.log_alpha_max);
}
// Sparse VD's log alpha of weight i before the clamp: log sigma2 - log(theta^2 + tiny).
template <class T>
__device__ __forceinline__ double raw_log_alpha(const PosteriorArgs<T>& p, int64_t i) {
  const double t = double(p.theta[i]);
  return sub_rn(double(p.aux[i]), log(add_rn(mul_rn(t, t), p.spec.tiny)));
}
// Sparse VD: weight i is zero in mean mode.
template <class T>
__device__ __forceinline__ bool pruned(const PosteriorArgs<T>& p, int64_t i) {
  return p.spec.prune && clamp_log_alpha(raw_log_alpha(p, i), p.spec.log_alpha_min,
                                         p.spec.log_alpha_max) > p.spec.threshold;
}

// s2 (n) = the weights' variances. Elementwise, grid-stride.
template <class T>
__global__ void posterior_variance_kernel(PosteriorArgs<T> p, T* __restrict__ s2) {
  if (p.spec.kind == PosteriorKind::sparse_vd) {
    for (int64_t i = thread_index(); i < p.n; i += grid_stride()) s2[i] = vexp(p.aux[i]);
    return;
  }
  const T a = p.spec.kind == PosteriorKind::gaussian_dropout ? T(p.spec.alpha)
                                                             : T(exp(shared_log_alpha(p)));
  for (int64_t i = thread_index(); i < p.n; i += grid_stride())
    s2[i] = mul_rn(mul_rn(a, p.theta[i]), p.theta[i]);
}

// The chain rule from ds2 (n) back to the parameters (accumulates):
//   gaussian dropout     d theta += 2 alpha theta ds2
//   variational dropout  d theta += 2 alpha theta ds2; partial[block] = the block's share of
//                        d log alpha = sum s2 ds2 (posterior_log_alpha_grad_kernel adds it)
//   sparse VD            d log sigma2 += s2 ds2
// Launch with kPosteriorThreads threads; for variational dropout with posterior_blocks(n) blocks.
template <class T>
__global__ void posterior_grad_from_variance_kernel(PosteriorArgs<T> p, const T* __restrict__ s2,
                                                    const T* __restrict__ ds2,
                                                    double* __restrict__ partial) {
  if (p.spec.kind == PosteriorKind::sparse_vd) {
    for (int64_t i = thread_index(); i < p.n; i += grid_stride())
      p.daux[i] = add_rn(p.daux[i], mul_rn(s2[i], ds2[i]));
    return;
  }
  const bool shared = p.spec.kind == PosteriorKind::variational_dropout;
  const T a2 = shared ? T(mul_rn(2.0, exp(shared_log_alpha(p)))) : T(2 * p.spec.alpha);
  double dla = 0;
  for (int64_t i = thread_index(); i < p.n; i += grid_stride()) {
    p.dtheta[i] = add_rn(p.dtheta[i], mul_rn(mul_rn(a2, p.theta[i]), ds2[i]));
    if (shared) dla = add_rn(dla, mul_rn(double(s2[i]), double(ds2[i])));
  }
  if (!shared) return;  // uniform over the grid: no thread of a block waits in block_sum alone
  __shared__ double part[kPosteriorThreads];
  const double s = block_sum(dla, part);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Variational dropout: d log alpha += the sum of `blocks` partials, unless log alpha is clamped.
// One block of kPosteriorThreads threads.
template <class T>
__global__ void posterior_log_alpha_grad_kernel(PosteriorArgs<T> p,
                                                const double* __restrict__ partial, int blocks) {
  __shared__ double part[kPosteriorThreads];
  double v = 0;
  for (int b = threadIdx.x; b < blocks; b += kPosteriorThreads) v = add_rn(v, partial[b]);
  const double s = block_sum(v, part);
  const double raw = double(p.aux[0]);
  if (threadIdx.x == 0 && raw > p.spec.log_alpha_min && raw < p.spec.log_alpha_max)
    p.daux[0] = add_rn(p.daux[0], T(s));
}

// w (n) = the weights of mean mode: theta, with sparse VD's pruned weights zeroed.
template <class T>
__global__ void posterior_mean_weights_kernel(PosteriorArgs<T> p, T* __restrict__ w) {
  const bool prune = p.spec.kind == PosteriorKind::sparse_vd && p.spec.prune;
  for (int64_t i = thread_index(); i < p.n; i += grid_stride())
    w[i] = prune && pruned(p, i) ? T(0) : p.theta[i];
}

// d theta += dw (n), except at sparse VD's pruned weights.
template <class T>
__global__ void posterior_grad_from_mean_weights_kernel(PosteriorArgs<T> p,
                                                        const T* __restrict__ dw) {
  const bool prune = p.spec.kind == PosteriorKind::sparse_vd && p.spec.prune;
  for (int64_t i = thread_index(); i < p.n; i += grid_stride())
    if (!(prune && pruned(p, i))) p.dtheta[i] = add_rn(p.dtheta[i], dw[i]);
}

// Variational dropout's KL, n KL(log alpha), added to *kl_sum; with a scale (a device value: the
// trainer's KL weight), d log alpha += scale n dKL/dlog alpha unless log alpha is clamped. One
// thread.
template <class T>
__global__ void variational_dropout_kl_kernel(PosteriorArgs<T> p, const T* __restrict__ scale,
                                              double* __restrict__ kl_sum) {
  if (thread_index() != 0) return;
  const double la = shared_log_alpha(p), n = double(p.n);
  const double raw = double(p.aux[0]);
  if (scale && raw > p.spec.log_alpha_min && raw < p.spec.log_alpha_max)
    p.daux[0] = add_rn(p.daux[0], T(mul_rn(mul_rn(double(*scale), n), kl_log_uniform_grad(la))));
  *kl_sum = add_rn(*kl_sum, mul_rn(n, kl_log_uniform(la)));
}

// Sparse VD's KL: partial[block] = the block's share of sum KL(clamp(log alpha_i)); with a scale
// (a device value), for every weight whose log alpha is inside (min, max), with g = scale
// dKL/dlog alpha: d log sigma2 += g, d theta += -2 theta / (theta^2 + tiny) g. Launch
// posterior_blocks(n) blocks of kPosteriorThreads threads, then posterior_sum_kernel.
template <class T>
__global__ void sparse_vd_kl_kernel(PosteriorArgs<T> p, const T* __restrict__ scale,
                                    double* __restrict__ partial) {
  const double lo = p.spec.log_alpha_min, hi = p.spec.log_alpha_max;
  const double sc = scale ? double(*scale) : 0.0;
  double sum = 0;
  for (int64_t i = thread_index(); i < p.n; i += grid_stride()) {
    const double la = raw_log_alpha(p, i);
    sum = add_rn(sum, kl_log_uniform(clamp_log_alpha(la, lo, hi)));
    if (!scale || la <= lo || la >= hi) continue;  // clamped: no gradient
    const double g = mul_rn(sc, kl_log_uniform_grad(la));
    const double t = double(p.theta[i]);
    p.daux[i] = add_rn(p.daux[i], T(g));
    p.dtheta[i] = add_rn(p.dtheta[i],
                         T(mul_rn(div_rn(mul_rn(-2.0, t), add_rn(mul_rn(t, t), p.spec.tiny)), g)));
  }
  __shared__ double part[kPosteriorThreads];
  const double s = block_sum(sum, part);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// *out += the sum of `blocks` partials, in a fixed order. One block of kPosteriorThreads threads.
// T: the layer's type (a template, as every kernel here, so that a header defines it once).
template <class T>
__global__ void posterior_sum_kernel(const double* __restrict__ partial, int blocks,
                                     double* __restrict__ out) {
  __shared__ double part[kPosteriorThreads];
  double v = 0;
  for (int b = threadIdx.x; b < blocks; b += kPosteriorThreads) v = add_rn(v, partial[b]);
  const double s = block_sum(v, part);
  if (threadIdx.x == 0) *out = add_rn(*out, s);
}

}  // namespace varnet::kernels
