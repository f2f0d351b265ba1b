// Conv2d: the deterministic 2-D convolution, any kernel size, stride and zero padding.
// Input (N, C, H, W), weight (O, C, KH, KW) stored as (O, R), output (N, O, OH, OW).
#pragma once

#include "varnet/layers/layer.hpp"
#include "varnet/ops/conv_samples.hpp"

namespace varnet {

struct ConvOptions {
  int64_t kernel = 3;  // square kernel, KH = KW
  int64_t stride = 1;
  int64_t pad = 0;
  bool bias = true;
};

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
  Conv2d(int64_t in_c, int64_t out_c, ConvOptions o) : ConvShaped<T>(in_c, out_c, o) {}

  std::string kind() const override { return "Conv2d"; }
  void declare(ParamTable& t) override {
    weight_ = t.declare(this->name() + ".weight", this->weight_shape(),
                        Init::fan_in(this->fan_in()), this->id());
    if (this->opt_.bias)
      bias_ = t.declare(this->name() + ".bias", Shape(this->out_c_, 1),
                        Init::fan_in(this->fan_in()), this->id());
  }
  // the sample groups' weight and bias gradients (ops/conv_samples.hpp)
  int64_t scratch_size(const Shape& in) const override {
    return ops::conv_backward_scratch(in.n, this->geometry(in));
  }
  void forward(ConstView<T> x, TensorView<T> y, T*, const Context&) override {
    ops::conv_forward_samples(x.data, this->param(weight_),
                              this->opt_.bias ? this->param(bias_) : nullptr, y.data, x.shape.n,
                              this->geometry(x.shape));
  }
  void backward(ConstView<T> x, ConstView<T>, ConstView<T> dy, TensorView<T> dx, T* scratch,
                const Context&) override {
    ops::conv_backward_samples(x.data, dy.data, this->param(weight_), this->grad(weight_),
                               this->opt_.bias ? this->grad(bias_) : nullptr, dx.data, x.shape.n,
                               this->geometry(x.shape), scratch);
  }

 private:
  ParamRef weight_, bias_;
};

}  // namespace varnet
