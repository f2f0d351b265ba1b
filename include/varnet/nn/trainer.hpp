// One optimisation step: K forward passes (one noise sample each, in workspace slots 0..K-1),
// the K-sample cross-entropy, K backward passes, a non-finite check, and the optimizer update.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "varnet/nn/loss.hpp"
#include "varnet/nn/network.hpp"
#include "varnet/ops/gemm.hpp"

namespace varnet {

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
    const LossResult r = cross_entropy(out_, labels, &dout_);
    if (check_finite_ && !std::isfinite(r.loss))
      throw NonFiniteError(
          str("training step ", step_, ": expected a finite loss, found ", r.loss));
    for (int k = 0; k < samples_; ++k)
      net_.backward(dout_[size_t(k)], Context::train(seed_, step_, uint32_t(k)), size_t(k));
    if (check_finite_) check_gradients();
    opt_.step(net_.params(), net_.grads(), lr);
    ++step_;
    return r;
  }

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
  uint32_t step_ = 0;
  std::vector<Tensor<T>> dlogits_;
  std::vector<ConstView<T>> out_;
  std::vector<TensorView<T>> dout_;
};

}  // namespace varnet
