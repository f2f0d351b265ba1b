// Softmax cross-entropy, single-sample and K-sample (cross-entropy of the log-mean-exp of the K
// samples' log-softmax outputs: the ensemble likelihood the K-sample objective maximises).
// Logits are (N, C); labels are class indices. Losses are means over the batch.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "varnet/core/error.hpp"
#include "varnet/core/tensor.hpp"

namespace varnet {

struct LossResult {
  double loss = 0;      // mean over the batch
  int64_t correct = 0;  // rows whose arg max of the (averaged) probabilities is the label
  double kl = 0;        // the network's KL term when the Trainer's KL weight is not 0
};

namespace detail {
template <class T>
void check_labels(const char* where, ConstView<T> logits, const int32_t* labels) {
  for (int64_t i = 0; i < logits.shape.n; ++i)
    if (labels[i] < 0 || labels[i] >= logits.shape.c)
      fail(where, str("labels in [0, ", logits.shape.c, ")"),
           str("label ", labels[i], " at row ", i));
}
// log-softmax of one row into out; returns nothing, out may alias nothing.
template <class T>
void log_softmax_row(const T* z, int64_t c, T* out) {
  T mx = z[0];
  for (int64_t j = 1; j < c; ++j) mx = std::max(mx, z[j]);
  T s = 0;
  for (int64_t j = 0; j < c; ++j) s += std::exp(z[j] - mx);
  const T lse = mx + std::log(s);
  for (int64_t j = 0; j < c; ++j) out[j] = z[j] - lse;
}
}  // namespace detail

// Mean cross-entropy over K samples' logits, each (N, C); K = 1 is the usual softmax
// cross-entropy. When `dlogits` is given (K views shaped like the logits) it receives
// dL/dlogits of the mean loss. Accuracy counts the arg max of the averaged probabilities.
template <class T>
LossResult cross_entropy(const std::vector<ConstView<T>>& logits, const int32_t* labels,
                         const std::vector<TensorView<T>>* dlogits = nullptr) {
  check(!logits.empty(), "cross_entropy", "at least one sample of logits", "none");
  const Shape s = logits[0].shape;
  check(s.h == 1 && s.w == 1 && s.c > 1, "cross_entropy", "logits of shape (N, C > 1, 1, 1)", s);
  for (const auto& l : logits)  // (if, not check: a passing check builds no message strings)
    if (l.shape != s)
      fail("cross_entropy", str("every sample's logits of shape ", s), str(l.shape));
  if (dlogits && dlogits->size() != logits.size())
    fail("cross_entropy", str(logits.size(), " gradient buffers"), str(dlogits->size()));
  detail::check_labels("cross_entropy", logits[0], labels);
  const int64_t n = s.n, c = s.c, K = static_cast<int64_t>(logits.size());
  // Per-thread buffers: a training step allocates nothing after the first.
  thread_local std::vector<T> lp, weight, avg;
  lp.resize(static_cast<size_t>(K * c));
  weight.resize(static_cast<size_t>(K));
  avg.resize(static_cast<size_t>(c));
  LossResult r;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t y = labels[i];
    T mx = -INFINITY;
    for (int64_t k = 0; k < K; ++k) {
      detail::log_softmax_row(logits[size_t(k)].data + i * c, c, lp.data() + k * c);
      mx = std::max(mx, lp[size_t(k * c + y)]);
    }
    // log mean_k p_k(y), and each sample's responsibility w_k = p_k(y) / sum_j p_j(y)
    T s_ = 0;
    for (int64_t k = 0; k < K; ++k) s_ += std::exp(lp[size_t(k * c + y)] - mx);
    const T log_mean = mx + std::log(s_) - std::log(T(K));
    r.loss -= double(log_mean);
    std::fill(avg.begin(), avg.end(), T(0));
    for (int64_t k = 0; k < K; ++k) {
      weight[size_t(k)] = std::exp(lp[size_t(k * c + y)] - mx) / s_;
      for (int64_t j = 0; j < c; ++j) avg[size_t(j)] += std::exp(lp[size_t(k * c + j)]);
    }
    int64_t best = 0;
    for (int64_t j = 1; j < c; ++j)
      if (avg[size_t(j)] > avg[size_t(best)]) best = j;
    r.correct += best == y;
    if (!dlogits) continue;
    // d(-log mean_k p_k(y)) / dz_k = w_k (softmax(z_k) - onehot(y)), divided by N for the mean.
    for (int64_t k = 0; k < K; ++k) {
      T* d = (*dlogits)[size_t(k)].data + i * c;
      const T wk = weight[size_t(k)] / T(n);
      for (int64_t j = 0; j < c; ++j) d[j] = wk * std::exp(lp[size_t(k * c + j)]);
      d[y] -= wk;
    }
  }
  r.loss /= double(n);
  return r;
}

}  // namespace varnet
