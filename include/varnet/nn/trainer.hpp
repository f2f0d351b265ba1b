// One optimisation step: K forward passes (one noise sample each, in workspace slots 0..K-1),
// the K-sample cross-entropy, K backward passes, the KL term's gradient, a non-finite check, and
// the optimizer update.
//
// The objective per step is  mean CE + kl_weight * KL,  the variational objective
// N * mean CE + beta * KL divided by N: set kl_weight = beta / N (set_kl_weight, any step).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "varnet/nn/loss.hpp"
#include "varnet/nn/network.hpp"
#include "varnet/ops/gemm.hpp"

namespace varnet {

// beta(step) = beta * min(1, step / warmup_steps): the KL weight's linear warm-up (no warm-up
// when warmup_steps is 0). Trainer::set_kl_weight takes beta(step) / N.
struct KlWarmup {
  double beta = 1;
  int64_t warmup_steps = 0;
  double at(int64_t step) const {
    return warmup_steps <= 0 ? beta : beta * std::min(1.0, double(step) / double(warmup_steps));
  }
};

// Raised when the loss or a gradient is not finite; the message names the step (and the tensor).
class NonFiniteError : public Error {
 public:
  using Error::Error;
};

template <class T, class Optimizer>
class Trainer {
 public:
  // `samples`: K of the K-sample objective (1: the usual single-sample cross-entropy).
  // `check_finite`: stop at the first non-finite loss or gradient instead of corrupting the run.
  Trainer(Network<T>& net, Optimizer& opt, int samples, uint64_t seed, bool check_finite = true)
      : net_(net), opt_(opt), samples_(samples), seed_(seed), check_finite_(check_finite) {
    check(samples >= 1 && samples <= 1024, "Trainer", "a sample count K in [1, 1024]", samples);
    dlogits_.resize(size_t(samples));
    out_.resize(size_t(samples));
    dout_.resize(size_t(samples));
  }

  // Runs one step on a batch and returns its loss and correct count (before the update).
  LossResult step(ConstView<T> x, const int32_t* labels, double lr) {
    net_.zero_grad();
    for (int k = 0; k < samples_; ++k) {
      out_[size_t(k)] = net_.forward(x, Context::train(seed_, step_, uint32_t(k)), size_t(k));
      dlogits_[size_t(k)].resize(out_[size_t(k)].shape);
      dout_[size_t(k)] = dlogits_[size_t(k)].view();
    }
    LossResult r = cross_entropy(out_, labels, &dout_);
    if (check_finite_ && !std::isfinite(r.loss))
      throw NonFiniteError(
          str("training step ", step_, ": expected a finite loss, found ", r.loss));
    for (int k = 0; k < samples_; ++k)
      net_.backward(dout_[size_t(k)], Context::train(seed_, step_, uint32_t(k)), size_t(k));
    if (kl_weight_ != 0) {
      r.kl = net_.add_kl_gradient(T(kl_weight_));
      if (check_finite_ && !std::isfinite(r.kl))
        throw NonFiniteError(str("training step ", step_, ": expected a finite KL, found ", r.kl));
    }
    if (check_finite_) check_gradients();
    opt_.step(net_.params(), net_.grads(), lr);
    ++step_;
    return r;
  }

  // The weight of the KL term in the per-sample objective (0: no KL gradient, and steps report
  // kl = 0 without computing it).
  void set_kl_weight(double w) {
    check(w >= 0 && std::isfinite(w), "Trainer", "a finite KL weight >= 0", w);
    kl_weight_ = w;
  }
  double kl_weight() const { return kl_weight_; }
  uint32_t steps() const { return step_; }
  void set_steps(uint32_t s) { step_ = s; }

 private:
  void check_gradients() const {
    const auto& g = net_.grads();
    if (ops::ConstVectorMap<T>(g.data(), int64_t(g.size())).allFinite()) return;
    for (const auto& e : net_.table().entries()) {
      if (!e.trainable) continue;
      for (int64_t i = 0; i < e.shape.numel(); ++i)
        if (!std::isfinite(g[size_t(e.offset + i)]))
          throw NonFiniteError(str("training step ", step_, ": expected finite gradients, found ",
                                   g[size_t(e.offset + i)], " in '", e.name, "' (layer '",
                                   net_.layer(e.layer).name(), "') at element ", i));
    }
  }

  Network<T>& net_;
  Optimizer& opt_;
  int samples_;
  uint64_t seed_;
  bool check_finite_;
  double kl_weight_ = 0;
  uint32_t step_ = 0;
  std::vector<Tensor<T>> dlogits_;
  std::vector<ConstView<T>> out_;
  std::vector<TensorView<T>> dout_;
};

}  // namespace varnet
