// Dropout: binary (Bernoulli) dropout with drop probability p and inverted scaling, so that the
// expectation of the output is the input. In sample mode (training, or Monte Carlo ensembles at
// evaluation) each element is kept with probability 1 - p; in mean mode it is the identity.
// The mask is a pure function of the noise key, so backward recomputes it.
#pragma once

#include "varnet/layers/layer.hpp"
#include "varnet/ops/noise_cpu.hpp"

namespace varnet {

template <class T>
class Dropout : public Layer<T> {
 public:
  explicit Dropout(double p = 0.5) : p_(p) {
    check(p >= 0 && p < 1, "Dropout", "a drop probability in [0, 1)", p);
  }
  std::string kind() const override { return "Dropout"; }
  double p() const { return p_; }
  std::string describe() const override { return str(kind(), "(p = ", p_, ")"); }
  bool stochastic() const override { return true; }
  Shape output_shape(const Shape& in) const override { return in; }
  bool stacks_samples() const override { return true; }  // a mask element per output element
  void forward(ConstView<T> x, TensorView<T> y, T*, const Context& ctx) override {
    apply(x.data, y.data, x.numel(), x.shape.per_sample(), ctx);
  }
  void backward(ConstView<T>, ConstView<T>, ConstView<T> dy, TensorView<T> dx, T*,
                const Context& ctx) override {
    if (dx.data) apply(dy.data, dx.data, dy.numel(), dy.shape.per_sample(), ctx);
  }

 private:
  // out = in * mask / (1 - p); both directions use the same mask, element e of each sample's
  // block (the whole batch unless it stacks samples) drawn from word e of that sample's key.
  void apply(const T* in, T* out, int64_t n, int64_t row_numel, const Context& ctx) const {
    if (this->mode(ctx) == PredictMode::mean || p_ == 0) {
      std::copy(in, in + n, out);
      return;
    }
    const float keep = static_cast<float>(1 - p_);
    const T scale = T(1) / T(1 - p_);
    const BatchNoise noise = this->batch_noise(ctx);
    const int64_t per = noise.sample_numel(n, row_numel);
    for (int64_t first = 0; first < n; first += per)
      ops::fill_from_words(noise.row_key(first / row_numel), 0, per, out + first,
                           [&](uint32_t w) { return uniform_open01(w) < keep ? 1.0f : 0.0f; });
    for (int64_t i = 0; i < n; ++i) out[i] = out[i] * in[i] * scale;
  }
  double p_;
};

}  // namespace varnet
