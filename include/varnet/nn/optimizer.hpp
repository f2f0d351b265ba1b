// Optimizers over a network's flat parameter buffer (one loop each), and learning-rate schedules.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "varnet/core/aligned.hpp"
#include "varnet/core/error.hpp"
#include "varnet/core/parallel.hpp"
#include "varnet/ops/gemm.hpp"

namespace varnet {

namespace detail {
// A double as text that reads back to the same value (17 significant digits).
inline std::string exact_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}
}  // namespace detail

struct AdamOptions {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
};

// Adam (Kingma and Ba) with bias correction, as PyTorch's torch.optim.Adam.
template <class T>
class Adam {
 public:
  Adam(size_t size, AdamOptions o = {}) : opt_(o), m_(size, T(0)), v_(size, T(0)) {
    check(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1 && o.eps > 0, "Adam",
          "beta1, beta2 in [0, 1) and eps > 0", "beta1 ", o.beta1, ", beta2 ", o.beta2, ", eps ",
          o.eps);
  }
  template <class Params, class Grads>
  void step(Params& params, const Grads& grads, double lr) {
    if (params.size() != m_.size() || grads.size() != m_.size())
      fail("Adam::step", str(m_.size(), " parameters and gradients"),
           str(params.size(), " and ", grads.size()));
    ++t_;
    const T b1 = T(opt_.beta1), b2 = T(opt_.beta2);
    const T c1 = T(1 - std::pow(opt_.beta1, double(t_)));
    const T c2 = T(1 - std::pow(opt_.beta2, double(t_)));
    const T step = T(lr) / c1, eps = T(opt_.eps);
    // One pass over fixed ranges on all cores: each element's arithmetic does not depend on the
    // split, so the result does not depend on the thread count.
    parallel_ranges(static_cast<int64_t>(m_.size()), [&](int64_t b, int64_t e) {
      const int64_t n = e - b;
      auto p = ops::VectorMap<T>(params.data() + b, n).array();
      auto g = ops::ConstVectorMap<T>(grads.data() + b, n).array();
      auto m = ops::VectorMap<T>(m_.data() + b, n).array();
      auto v = ops::VectorMap<T>(v_.data() + b, n).array();
      m = b1 * m + (1 - b1) * g;
      v = b2 * v + (1 - b2) * g.square();
      // A correctly rounded square root, as the GPU's sqrt_rn: Eigen's vectorised sqrt (under
      // its default EIGEN_FAST_MATH) is an rsqrt estimate refined once, an ulp off on some
      // elements (tests/emulation/test_emulated_training.cpp). Scalar, and cheap beside a step.
      const auto root = (v / c2).unaryExpr([](T x) { return std::sqrt(x); });
      if (lr_scale_.empty())
        p -= step * m / (root + eps);
      else
        p -= step * ops::ConstVectorMap<T>(lr_scale_.data() + b, n).array() * m / (root + eps);
    });
  }
  // Multiplies the learning rate of parameters [offset, offset + count) by `scale`, e.g. a faster
  // rate for dropout rates (Adam moves a parameter by about lr per step, whatever its gradient).
  // Configuration, not state: a resumed run sets it again.
  void set_lr_scale(int64_t offset, int64_t count, double scale) {
    check(offset >= 0 && count >= 0 && offset + count <= int64_t(m_.size()), "Adam::set_lr_scale",
          str("a range inside the ", m_.size(), " parameters"), "[", offset, ", ", offset + count,
          ")");
    check(scale >= 0 && std::isfinite(scale), "Adam::set_lr_scale", "a finite scale >= 0", scale);
    if (lr_scale_.empty()) lr_scale_.assign(m_.size(), T(1));
    std::fill(lr_scale_.begin() + offset, lr_scale_.begin() + offset + count, T(scale));
  }
  int64_t steps() const { return t_; }

  // State for checkpoints (nn/checkpoint.hpp): the name, the settings a resumed run must share,
  // the moment buffers m and v (one entry per parameter), and the update count t.
  static std::string name() { return "adam"; }
  std::map<std::string, std::string> settings() const {
    return {{"beta1", detail::exact_text(opt_.beta1)},
            {"beta2", detail::exact_text(opt_.beta2)},
            {"eps", detail::exact_text(opt_.eps)}};
  }
  std::vector<std::pair<std::string, const AlignedVector<T>*>> buffers() const {
    return {{"m", &m_}, {"v", &v_}};
  }
  std::vector<std::pair<std::string, AlignedVector<T>*>> buffers() {
    return {{"m", &m_}, {"v", &v_}};
  }
  void set_steps(int64_t t) {
    check(t >= 0, "Adam::set_steps", "a non-negative update count", t);
    t_ = t;
  }

 private:
  AdamOptions opt_;
  AlignedVector<T> m_, v_;
  AlignedVector<T> lr_scale_;  // empty: 1 everywhere
  int64_t t_ = 0;
};

// SGD with (heavy-ball) momentum, as torch.optim.SGD: b = mu b + g, p -= lr b.
template <class T>
class Sgd {
 public:
  Sgd(size_t size, double momentum = 0.9) : momentum_(momentum), b_(size, T(0)) {
    check(momentum >= 0 && momentum < 1, "Sgd", "momentum in [0, 1)", momentum);
  }
  template <class Params, class Grads>
  void step(Params& params, const Grads& grads, double lr) {
    if (params.size() != b_.size() || grads.size() != b_.size())
      fail("Sgd::step", str(b_.size(), " parameters and gradients"),
           str(params.size(), " and ", grads.size()));
    const int64_t n = static_cast<int64_t>(b_.size());
    auto b = ops::VectorMap<T>(b_.data(), n).array();
    b = T(momentum_) * b + ops::ConstVectorMap<T>(grads.data(), n).array();
    ops::VectorMap<T>(params.data(), n).array() -= T(lr) * b;
    ++t_;
  }
  int64_t steps() const { return t_; }

  // State for checkpoints, as Adam's: the momentum buffer and the update count.
  static std::string name() { return "sgd"; }
  std::map<std::string, std::string> settings() const {
    return {{"momentum", detail::exact_text(momentum_)}};
  }
  std::vector<std::pair<std::string, const AlignedVector<T>*>> buffers() const {
    return {{"momentum", &b_}};
  }
  std::vector<std::pair<std::string, AlignedVector<T>*>> buffers() { return {{"momentum", &b_}}; }
  void set_steps(int64_t t) {
    check(t >= 0, "Sgd::set_steps", "a non-negative update count", t);
    t_ = t;
  }

 private:
  double momentum_;
  AlignedVector<T> b_;
  int64_t t_ = 0;
};

// lr(step) = base * (1 - step / total): linear decay towards 0 over `total` steps.
struct LinearDecay {
  double base = 1e-3;
  int64_t total = 1;
  double at(int64_t step) const {
    return total <= 0 ? base : base * std::max(0.0, 1.0 - double(step) / double(total));
  }
};

}  // namespace varnet
