// Host launchers for the baselines' kernels: the weight posteriors of the dropout family
// (kernels/posteriors.cuh) and binary dropout (kernels/dropout.cuh). Same conventions as
// cuda/ops.hpp: each checks its arguments (varnet::Error), launches asynchronously on the
// context's stream and checks the launch. All pointers are device pointers.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/dropout.cuh"
#include "kernels/posteriors.cuh"
#include "varnet/core/error.hpp"
#include "varnet/core/random.hpp"
#include "varnet/cuda/check.hpp"
#include "varnet/cuda/handle.hpp"
#include "varnet/cuda/launch.hpp"
#include "varnet/layers/weight_posteriors.hpp"

namespace varnet::cuda {

// ---- weight posteriors (kernels/posteriors.cuh) ----

// The device description of a host posterior policy (layers/weight_posteriors.hpp).
template <class T>
kernels::PosteriorSpec posterior_spec(const GaussianDropoutPosterior<T>& p) {
  kernels::PosteriorSpec s;
  s.kind = kernels::PosteriorKind::gaussian_dropout;
  s.alpha = p.opt.alpha;
  return s;
}
template <class T>
kernels::PosteriorSpec posterior_spec(const VariationalDropoutPosterior<T>&) {
  kernels::PosteriorSpec s;
  s.kind = kernels::PosteriorKind::variational_dropout;
  s.log_alpha_min = VariationalDropoutPosterior<T>::kLogAlphaMin;
  s.log_alpha_max = VariationalDropoutPosterior<T>::kLogAlphaMax;
  return s;
}
template <class T>
kernels::PosteriorSpec posterior_spec(const SparseVDPosterior<T>& p) {
  kernels::PosteriorSpec s;
  s.kind = kernels::PosteriorKind::sparse_vd;
  s.log_alpha_min = SparseVDPosterior<T>::kLogAlphaMin;
  s.log_alpha_max = SparseVDPosterior<T>::kLogAlphaMax;
  s.tiny = SparseVDPosterior<T>::kTiny;
  s.threshold = p.opt.threshold;
  s.prune = p.opt.prune;
  return s;
}

// True when the posterior has a KL term (variational dropout and sparse VD).
inline bool posterior_has_kl(const kernels::PosteriorSpec& s) {
  return s.kind != kernels::PosteriorKind::gaussian_dropout;
}

// Blocks of the reducing posterior kernels for n weights: one per kPosteriorThreads weights, at
// most kPosteriorMaxBlocks. It depends on n alone, and so does the order of the sums.
inline int posterior_blocks(int64_t n) {
  const int64_t b = (n + kernels::kPosteriorThreads - 1) / kernels::kPosteriorThreads;
  return static_cast<int>(std::clamp<int64_t>(b, 1, kernels::kPosteriorMaxBlocks));
}

namespace detail {
// theta, and aux unless gaussian dropout; with `grads`, their gradients too.
template <class T>
void expect_posterior(const kernels::PosteriorArgs<T>& p, bool grads, const char* op) {
  const bool aux = p.spec.kind != kernels::PosteriorKind::gaussian_dropout;
  check(p.n >= 0 && p.theta != nullptr && (!aux || p.aux != nullptr), op,
        "n >= 0, a theta pointer, and an aux pointer (log alpha, log sigma2) when the posterior "
        "has one",
        "n ", p.n, (p.theta ? "" : ", a null theta"), (aux && !p.aux ? ", a null aux" : ""));
  if (grads)
    check(p.dtheta != nullptr && (!aux || p.daux != nullptr), op,
          "gradient pointers for theta (and aux)", "a null pointer");
}
}  // namespace detail

// s2 (n) = the weights' variances (alpha theta^2, or exp(log sigma2)).
template <class T>
void posterior_variance(GpuContext& ctx, const kernels::PosteriorArgs<T>& p, T* s2) {
  detail::expect_posterior(p, false, "cuda::posterior_variance");
  if (p.n == 0) return;
  launch(kernels::posterior_variance_kernel<T>, grid_for(p.n), kThreads, ctx.stream(), p, s2);
  VARNET_CUDA_CHECK_LAUNCH("posterior_variance_kernel");
}

// d theta / d aux += the chain rule of s2 applied to ds2 (n). partial: kPosteriorMaxBlocks
// doubles of workspace for variational dropout's d log alpha (unused, and may be null, otherwise).
template <class T>
void posterior_grad_from_variance(GpuContext& ctx, const kernels::PosteriorArgs<T>& p, const T* s2,
                                  const T* ds2, double* partial) {
  detail::expect_posterior(p, true, "cuda::posterior_grad_from_variance");
  if (p.n == 0) return;
  static_assert(kernels::kPosteriorThreads == kThreads, "the launch sizes below assume it");
  if (p.spec.kind != kernels::PosteriorKind::variational_dropout) {
    launch(kernels::posterior_grad_from_variance_kernel<T>, grid_for(p.n), kThreads, ctx.stream(),
           p, s2, ds2, partial);
    VARNET_CUDA_CHECK_LAUNCH("posterior_grad_from_variance_kernel");
    return;
  }
  check(partial != nullptr, "cuda::posterior_grad_from_variance",
        "a workspace for the partial sums of d log alpha", "a null pointer");
  const int blocks = posterior_blocks(p.n);
  launch_with_barriers(kernels::posterior_grad_from_variance_kernel<T>, blocks,
                       kernels::kPosteriorThreads, ctx.stream(), p, s2, ds2, partial);
  VARNET_CUDA_CHECK_LAUNCH("posterior_grad_from_variance_kernel");
  launch_with_barriers(kernels::posterior_log_alpha_grad_kernel<T>, 1, kernels::kPosteriorThreads,
                       ctx.stream(), p, partial, blocks);
  VARNET_CUDA_CHECK_LAUNCH("posterior_log_alpha_grad_kernel");
}

// w (n) = the weights of mean mode (theta; sparse VD's pruned weights zeroed).
template <class T>
void posterior_mean_weights(GpuContext& ctx, const kernels::PosteriorArgs<T>& p, T* w) {
  detail::expect_posterior(p, false, "cuda::posterior_mean_weights");
  if (p.n == 0) return;
  launch(kernels::posterior_mean_weights_kernel<T>, grid_for(p.n), kThreads, ctx.stream(), p, w);
  VARNET_CUDA_CHECK_LAUNCH("posterior_mean_weights_kernel");
}

// d theta += dw (n), except at sparse VD's pruned weights.
template <class T>
void posterior_grad_from_mean_weights(GpuContext& ctx, const kernels::PosteriorArgs<T>& p,
                                      const T* dw) {
  check(p.dtheta != nullptr, "cuda::posterior_grad_from_mean_weights", "a d theta pointer",
        "a null pointer");
  detail::expect_posterior(p, false, "cuda::posterior_grad_from_mean_weights");
  if (p.n == 0) return;
  launch(kernels::posterior_grad_from_mean_weights_kernel<T>, grid_for(p.n), kThreads, ctx.stream(),
         p, dw);
  VARNET_CUDA_CHECK_LAUNCH("posterior_grad_from_mean_weights_kernel");
}

// *kl_sum (a device double) += the posterior's KL to the log-uniform prior; when scale (a device
// value, the KL weight) is not null, the gradients += scale * dKL/dparams too, as the host's
// add_kl_gradient(scale). Nothing for gaussian dropout. partial: kPosteriorMaxBlocks doubles of
// workspace (sparse VD).
template <class T>
void posterior_kl(GpuContext& ctx, const kernels::PosteriorArgs<T>& p, const T* scale,
                  double* kl_sum, double* partial) {
  detail::expect_posterior(p, scale != nullptr, "cuda::posterior_kl");
  check(kl_sum != nullptr, "cuda::posterior_kl", "a device double for the KL", "a null pointer");
  if (!posterior_has_kl(p.spec) || p.n == 0) return;
  if (p.spec.kind == kernels::PosteriorKind::variational_dropout) {
    launch(kernels::variational_dropout_kl_kernel<T>, 1, 1, ctx.stream(), p, scale, kl_sum);
    VARNET_CUDA_CHECK_LAUNCH("variational_dropout_kl_kernel");
    return;
  }
  check(partial != nullptr, "cuda::posterior_kl", "a workspace for the KL's partial sums",
        "a null pointer");
  const int blocks = posterior_blocks(p.n);
  launch_with_barriers(kernels::sparse_vd_kl_kernel<T>, blocks, kernels::kPosteriorThreads,
                       ctx.stream(), p, scale, partial);
  VARNET_CUDA_CHECK_LAUNCH("sparse_vd_kl_kernel");
  launch_with_barriers(kernels::posterior_sum_kernel<T>, 1, kernels::kPosteriorThreads,
                       ctx.stream(), partial, blocks, kl_sum);
  VARNET_CUDA_CHECK_LAUNCH("posterior_sum_kernel");
}

// ---- binary dropout (kernels/dropout.cuh) ----

// out (count) = in * mask / (1 - p) with the mask of `noise` (step as in lrt_forward), the
// tensor being rows of `row_numel` elements (only a stacked BatchNoise needs them); backward is
// the same call on dy (the mask is a pure function of the noise). p in [0, 1).
template <class T>
void dropout_forward(GpuContext& ctx, const BatchNoise& noise, int64_t count, double p, const T* in,
                     T* out, const uint32_t* step = nullptr, int64_t row_numel = 1) {
  check(p >= 0 && p < 1, "cuda::dropout_forward", "a drop probability in [0, 1)", p);
  check(row_numel > 0 && count % row_numel == 0, "cuda::dropout_forward", "a tensor of whole rows",
        count, " elements in rows of ", row_numel);
  if (count <= 0) return;
  check_stacked_rows(noise, count / row_numel, "cuda::dropout_forward");
  const float keep = static_cast<float>(1 - p);
  const T scale = T(1) / T(1 - p);
  launch(kernels::dropout_forward_kernel<T>, grid_for(noise.groups(count, row_numel)), kThreads,
         ctx.stream(), noise, step, count, row_numel, keep, scale, in, out);
  VARNET_CUDA_CHECK_LAUNCH("dropout_forward_kernel");
}

}  // namespace varnet::cuda
