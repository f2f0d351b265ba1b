// Softmax cross-entropy over K samples' logits (the K-sample objective's log-mean-exp); the CPU
// twin is varnet::cross_entropy in include/varnet/nn/loss.hpp, whose formulas and operation
// order this follows:
//   lp_k = log_softmax(z_k),  loss = -log mean_k exp(lp_k[y]),
//   dL/dz_k = w_k (softmax(z_k) - onehot(y)) / N,  w_k = p_k(y) / sum_j p_j(y),
//   prediction = arg max_j sum_k softmax(z_k)[j] (first maximum on ties).
// Layouts: logits and dlogits (K, N, C) (sample k's (N, C) logits at offset k N C); labels (N).
// One thread per row: classifier heads are narrow (C ~ 10..1000) and the batch is the parallel
// dimension.
#pragma once

#include <cstdint>

#include "kernels/math.cuh"

namespace varnet::kernels {

// At most this many samples per call (the per-row log-sum-exps live in registers/local memory).
constexpr int kMaxXentSamples = 64;

// row_loss[i] = -log mean_k p_k(y_i); row_correct[i] = 1 when the prediction is the label, 0
// when not, -1 when the label is outside [0, C) (row_loss is then NaN). dlogits may be null.
template <class T>
__global__ void softmax_xent_forward_kernel(int samples, int64_t n, int64_t c,
                                            const T* __restrict__ logits,
                                            const int32_t* __restrict__ labels,
                                            T* __restrict__ dlogits, T* __restrict__ row_loss,
                                            int32_t* __restrict__ row_correct) {
  for (int64_t row = thread_index(); row < n; row += grid_stride()) {
    const int32_t y = labels[row];
    if (y < 0 || y >= c) {
      row_loss[row] = T(NAN);
      row_correct[row] = -1;
      continue;
    }
    T lse[kMaxXentSamples];
    T mx = T(-INFINITY);
    for (int k = 0; k < samples; ++k) {
      const T* z = logits + (k * n + row) * c;
      T zmax = z[0];
      for (int64_t j = 1; j < c; ++j) zmax = z[j] > zmax ? z[j] : zmax;
      T s = T(0);
      for (int64_t j = 0; j < c; ++j) s += vexp(z[j] - zmax);
      lse[k] = zmax + vlog(s);
      const T lpy = z[y] - lse[k];
      mx = lpy > mx ? lpy : mx;
    }
    T total = T(0);
    for (int k = 0; k < samples; ++k) total += vexp((logits[(k * n + row) * c + y] - lse[k]) - mx);
    const T log_mean = mx + vlog(total) - vlog(T(samples));
    row_loss[row] = -log_mean;

    int64_t best = 0;
    T best_p = T(0);
    for (int64_t j = 0; j < c; ++j) {
      T avg = T(0);
      for (int k = 0; k < samples; ++k) avg += vexp(logits[(k * n + row) * c + j] - lse[k]);
      if (j == 0 || avg > best_p) {
        best = j;
        best_p = avg;
      }
    }
    row_correct[row] = best == y ? 1 : 0;

    if (!dlogits) continue;
    for (int k = 0; k < samples; ++k) {
      const T* z = logits + (k * n + row) * c;
      T* d = dlogits + (k * n + row) * c;
      const T wk = (vexp((z[y] - lse[k]) - mx) / total) / T(n);
      for (int64_t j = 0; j < c; ++j) d[j] = wk * vexp(z[j] - lse[k]);
      d[y] -= wk;
    }
  }
}

}  // namespace varnet::kernels
