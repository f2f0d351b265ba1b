// Linear: the deterministic dense layer, y = x W^T (+ b).
// Input (N, I, 1, 1) (use Flatten after convolutions), weight (O, I), output (N, O, 1, 1).
#pragma once

#include "varnet/layers/layer.hpp"
#include "varnet/ops/dense.hpp"

namespace varnet {

template <class T>
class Linear : public Layer<T> {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true)
      : in_(in_features), out_(out_features), has_bias_(bias) {
    check(in_ > 0 && out_ > 0, "Linear", "positive feature counts", in_, " -> ", out_);
  }

  std::string kind() const override { return "Linear"; }
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  bool has_bias() const { return has_bias_; }
  std::string describe() const override {
    return str(kind(), "(", in_, " -> ", out_, has_bias_ ? ", bias" : "", ")");
  }
  Shape output_shape(const Shape& in) const override {
    this->expect_input(in, in_, 1, 1);
    return Shape(in.n, out_);
  }
  void declare(ParamTable& t) override {
    weight_ = t.declare(this->name() + ".weight", Shape(out_, in_), Init::fan_in(in_), this->id());
    if (has_bias_)
      bias_ = t.declare(this->name() + ".bias", Shape(out_, 1), Init::fan_in(in_), this->id());
  }
  void forward(ConstView<T> x, TensorView<T> y, T*, const Context&) override {
    ops::dense_forward(x.data, this->param(weight_), bias(), y.data, x.shape.n, in_, out_);
  }
  void backward(ConstView<T> x, ConstView<T>, ConstView<T> dy, TensorView<T> dx, T*,
                const Context&) override {
    ops::dense_backward(x.data, dy.data, this->param(weight_), this->grad(weight_),
                        has_bias_ ? this->grad(bias_) : nullptr, dx.data, x.shape.n, in_, out_);
  }

  WeightStats weight_stats(double) const override { return unpruned_weights(out_ * in_); }
  const ParamRef& weight_ref() const { return weight_; }

 private:
  const T* bias() const { return has_bias_ ? this->param(bias_) : nullptr; }
  int64_t in_, out_;
  bool has_bias_;
  ParamRef weight_, bias_;
};

}  // namespace varnet
