// Conv2d: the deterministic 2-D convolution, any kernel size, stride and zero padding.
// Input (N, C, H, W), weight (O, C, KH, KW) stored as (O, R), output (N, O, OH, OW).
#pragma once

#include "varnet/layers/layer.hpp"
#include "varnet/ops/conv_samples.hpp"
#include "varnet/ops/winograd_conv.hpp"

namespace varnet {

struct ConvOptions {
  int64_t kernel = 3;  // square kernel, KH = KW
  int64_t stride = 1;
  int64_t pad = 0;
  bool bias = true;
  // Deterministic Conv2d only; the stochastic convolutions always use im2col (their variance
  // products must stay non-negative, which Winograd's signed transforms do not guarantee).
  ConvAlgorithm algorithm = ConvAlgorithm::Auto;
};

inline const char* to_string(ConvAlgorithm a) {
  return a == ConvAlgorithm::Auto ? "auto" : a == ConvAlgorithm::Im2col ? "im2col" : "winograd";
}
inline ConvAlgorithm parse_conv_algorithm(const std::string& s) {
  for (ConvAlgorithm a : {ConvAlgorithm::Auto, ConvAlgorithm::Im2col, ConvAlgorithm::Winograd})
    if (s == to_string(a)) return a;
  throw Error(str("convolution algorithm: expected auto, im2col or winograd, found '", s, "'"));
}

// The pieces every convolution-shaped layer shares: geometry from the input shape and checks.
template <class T>
class ConvShaped : public Layer<T> {
 public:
  ConvShaped(int64_t in_c, int64_t out_c, ConvOptions o) : in_c_(in_c), out_c_(out_c), opt_(o) {
    check(in_c > 0 && out_c > 0 && o.kernel > 0 && o.stride > 0 && o.pad >= 0, "convolution",
          "positive channels, kernel and stride, non-negative padding", "in ", in_c, ", out ",
          out_c, ", kernel ", o.kernel, ", stride ", o.stride, ", pad ", o.pad);
  }
  Shape output_shape(const Shape& in) const override {
    check(in.c == in_c_, this->where(), str("input with ", in_c_, " channels"), "input of shape ",
          in);
    const ops::ConvGeometry g = geometry(in);
    check(in.h + 2 * opt_.pad >= opt_.kernel && in.w + 2 * opt_.pad >= opt_.kernel, this->where(),
          str("an input of at least ", opt_.kernel, "x", opt_.kernel, " after padding"),
          "input of shape ", in);
    return Shape(in.n, out_c_, g.out_h(), g.out_w());
  }
  std::string describe() const override {
    return str(this->kind(), "(", in_c_, " -> ", out_c_, ", ", opt_.kernel, "x", opt_.kernel,
               ", stride ", opt_.stride, ", pad ", opt_.pad, opt_.bias ? ", bias" : "", ")");
  }
  int64_t fan_in() const { return in_c_ * opt_.kernel * opt_.kernel; }
  int64_t in_channels() const { return in_c_; }
  int64_t out_channels() const { return out_c_; }
  const ConvOptions& conv_options() const { return opt_; }
  WeightStats weight_stats(double) const override { return unpruned_weights(out_c_ * fan_in()); }

 protected:
  ops::ConvGeometry geometry(const Shape& in) const {
    return ops::ConvGeometry{in_c_,       in.h,        in.w,        out_c_,
                             opt_.kernel, opt_.kernel, opt_.stride, opt_.pad};
  }
  Shape weight_shape() const { return Shape(out_c_, in_c_, opt_.kernel, opt_.kernel); }
  int64_t in_c_, out_c_;
  ConvOptions opt_;
};

template <class T>
class Conv2d : public ConvShaped<T> {
 public:
  Conv2d(int64_t in_c, int64_t out_c, ConvOptions o) : ConvShaped<T>(in_c, out_c, o) {
    ops::check_conv_algorithm(o.algorithm, o.kernel, o.stride, o.pad);
  }

  std::string kind() const override { return "Conv2d"; }
  std::string describe() const override {
    const ConvAlgorithm a = this->opt_.algorithm;
    return ConvShaped<T>::describe() + (a == ConvAlgorithm::Auto ? "" : str(", ", to_string(a)));
  }
  void declare(ParamTable& t) override {
    weight_ = t.declare(this->name() + ".weight", this->weight_shape(),
                        Init::fan_in(this->fan_in()), this->id());
    if (this->opt_.bias)
      bias_ = t.declare(this->name() + ".bias", Shape(this->out_c_, 1),
                        Init::fan_in(this->fan_in()), this->id());
  }
  // Whether this layer computes an input of this shape by Winograd (ConvOptions::algorithm).
  bool winograd(const Shape& in) const {
    return ops::uses_winograd(this->opt_.algorithm, this->geometry(in));
  }
  // im2col: the sample groups' weight and bias gradients (ops/conv_samples.hpp). Winograd: the
  // transformed filters in forward, the groups' transformed gradients in backward.
  int64_t scratch_size(const Shape& in) const override {
    const ops::ConvGeometry g = this->geometry(in);
    if (!winograd(in)) return ops::conv_backward_scratch(in.n, g);
    return std::max(ops::winograd_forward_scratch(g), ops::winograd_backward_scratch(in.n, g));
  }
  void forward(ConstView<T> x, TensorView<T> y, T* scratch, const Context&) override {
    const T* bias = this->opt_.bias ? this->param(bias_) : nullptr;
    const ops::ConvGeometry g = this->geometry(x.shape);
    if (winograd(x.shape))
      ops::winograd_forward(x.data, this->param(weight_), bias, y.data, x.shape.n, g, scratch);
    else
      ops::conv_forward_samples(x.data, this->param(weight_), bias, y.data, x.shape.n, g);
  }
  void backward(ConstView<T> x, ConstView<T>, ConstView<T> dy, TensorView<T> dx, T* scratch,
                const Context&) override {
    T* dbias = this->opt_.bias ? this->grad(bias_) : nullptr;
    const ops::ConvGeometry g = this->geometry(x.shape);
    if (winograd(x.shape))
      ops::winograd_backward(x.data, dy.data, this->param(weight_), this->grad(weight_), dbias,
                             dx.data, x.shape.n, g, scratch);
    else
      ops::conv_backward_samples(x.data, dy.data, this->param(weight_), this->grad(weight_), dbias,
                                 dx.data, x.shape.n, g, scratch);
  }

 private:
  ParamRef weight_, bias_;
};

}  // namespace varnet
