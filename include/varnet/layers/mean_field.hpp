// Dense and convolutional layers with factorized Gaussian weights w ~ N(theta, sigma2), sampled
// with the local reparameterization trick (PAPER.md section 1), for any posterior of
// layers/weight_posteriors.hpp:
//
//   sample mode  m = x . theta^T (+ b),  v = (x*x) . sigma2^T,  y = m + eps sqrt(v + e0)
//   mean mode    y = x . mean_weights^T (+ b)   (theta, or theta pruned for sparse VD)
//
// Backward (g = dL/dy, r = eps / (2 s) kept by lrt_forward in place of v):
//   d theta += g^T x,  d sigma2 = (g r)^T (x*x),  dx = g theta + 2 x ((g r) sigma2)
// and the posterior maps d sigma2 back to its own parameters.
//
// The variance layers (layers/variance.hpp) are the zero-mean member of this family; they stay
// separate because they have no theta and sample Bernoulli and uniform weights too.
#pragma once

#include <algorithm>
#include <utility>

#include "varnet/layers/conv2d.hpp"
#include "varnet/layers/layer.hpp"
#include "varnet/layers/weight_posteriors.hpp"
#include "varnet/ops/conv_samples.hpp"
#include "varnet/ops/dense.hpp"
#include "varnet/ops/lrt.hpp"

namespace varnet {

// What the dense and conv layers share: parameters, the posterior, KL and statistics.
template <class T, class Posterior, class Base>
class MeanFieldBase : public Base {
 public:
  template <class... BaseArgs>
  MeanFieldBase(DropoutOptions o, BaseArgs&&... args)
      : Base(std::forward<BaseArgs>(args)...), post_{o} {
    post_.validate();
  }

  bool stochastic() const override { return true; }
  bool stacks_samples() const override { return true; }  // LRT: noise per output element
  const DropoutOptions& options() const { return post_.opt; }
  const Posterior& posterior() const { return post_; }
  const ParamRef& theta_ref() const { return theta_; }
  const ParamRef& aux_ref() const { return aux_; }

  double kl() const override { return post_.kl(view()); }
  double add_kl_gradient(T scale) override { return post_.add_kl_gradient(view(), scale); }
  WeightStats weight_stats(double threshold) const override {
    return post_.stats(view(), threshold);
  }

 protected:
  // Registers theta (O, ...), the posterior's second tensor and the bias.
  void declare_tensors(ParamTable& t, const Shape& weights, int64_t out, int64_t fan_in) {
    n_ = weights.numel();
    theta_ = t.declare(this->name() + ".theta", weights, Init::fan_in(fan_in), this->id());
    if (post_.aux_name())
      aux_ = t.declare(this->name() + "." + post_.aux_name(), post_.aux_shape(weights),
                       post_.aux_init(), this->id());
    if (post_.opt.bias)
      bias_ = t.declare(this->name() + ".bias", Shape(out, 1), Init::fan_in(fan_in), this->id());
  }
  PosteriorView<T> view() const {
    const bool aux = post_.aux_name() != nullptr;
    return PosteriorView<T>{this->param(theta_), aux ? this->param(aux_) : nullptr,
                            this->grad(theta_), aux ? this->grad(aux_) : nullptr, n_};
  }
  const T* theta() const { return this->param(theta_); }
  const T* bias() const { return post_.opt.bias ? this->param(bias_) : nullptr; }
  T* bias_grad() const { return post_.opt.bias ? this->grad(bias_) : nullptr; }
  std::string describe_posterior() const {
    return str(post_.describe(), post_.opt.bias ? ", bias" : "");
  }

  Posterior post_;
  ParamRef theta_, aux_, bias_;
  int64_t n_ = 0;
};

// Dense: input (N, I, 1, 1), theta (O, I), output (N, O, 1, 1).
template <class T, class Posterior>
class MeanFieldLinear : public MeanFieldBase<T, Posterior, Layer<T>> {
  using Base = MeanFieldBase<T, Posterior, Layer<T>>;

 public:
  MeanFieldLinear(int64_t in_features, int64_t out_features, DropoutOptions o = {})
      : Base(o), in_(in_features), out_(out_features) {
    check(in_ > 0 && out_ > 0, kind(), "positive feature counts", in_, " -> ", out_);
  }

  std::string kind() const override { return std::string(Posterior::family()) + "Linear"; }
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  std::string describe() const override {
    return str(kind(), "(", in_, " -> ", out_, ", ", this->describe_posterior(), ")");
  }
  Shape output_shape(const Shape& in) const override {
    this->expect_input(in, in_, 1, 1);
    return Shape(in.n, out_);
  }
  void declare(ParamTable& t) override { this->declare_tensors(t, Shape(out_, in_), out_, in_); }
  // sample: sigma2, d sigma2 (O, I); x*x (N, I); v (N, O).  mean: weights, their gradient (O, I)
  int64_t scratch_size(const Shape& in) const override {
    return 2 * out_ * in_ + in.n * (in_ + out_);
  }

  void forward(ConstView<T> x, TensorView<T> y, T* scratch, const Context& ctx) override {
    const int64_t n = x.shape.n, OI = out_ * in_;
    const auto p = this->view();
    if (this->mode(ctx) == PredictMode::mean) {
      this->post_.mean_weights(p, scratch);
      return ops::dense_forward(x.data, static_cast<const T*>(scratch), this->bias(), y.data, n,
                                in_, out_);
    }
    T *s2 = scratch, *x2 = scratch + 2 * OI, *v = x2 + n * in_;
    this->post_.variance(p, s2);
    ops::dense_forward(x.data, this->theta(), this->bias(), y.data, n, in_, out_);
    ops::VectorMap<T>(x2, n * in_).array() =
        ops::ConstVectorMap<T>(x.data, n * in_).array().square();
    ops::matrix(v, n, out_).noalias() =
        ops::matrix(static_cast<const T*>(x2), n, in_) *
        ops::matrix(static_cast<const T*>(s2), out_, in_).transpose();
    ops::lrt_forward(this->batch_noise(ctx), ops::LrtLayout{n, out_, 1, false},
                     static_cast<const T*>(nullptr), true, T(this->post_.opt.e0), v, y.data);
  }

  void backward(ConstView<T> x, ConstView<T>, ConstView<T> dy, TensorView<T> dx, T* scratch,
                const Context& ctx) override {
    const int64_t n = x.shape.n, OI = out_ * in_;
    const auto p = this->view();
    if (this->mode(ctx) == PredictMode::mean) {
      T *w = scratch, *dw = scratch + OI;
      std::fill(dw, dw + OI, T(0));
      ops::dense_backward(x.data, dy.data, static_cast<const T*>(w), dw, this->bias_grad(), dx.data,
                          n, in_, out_);
      return this->post_.grad_from_mean_weights(p, dw);
    }
    T *s2 = scratch, *ds2 = scratch + OI, *x2 = scratch + 2 * OI, *v = x2 + n * in_;
    // d theta += dy^T x, db += column sums of dy
    ops::dense_backward(x.data, dy.data, this->theta(), p.dtheta, this->bias_grad(),
                        static_cast<T*>(nullptr), n, in_, out_);
    ops::lrt_backward(ops::LrtLayout{n, out_, 1, false}, dy.data, v);  // v now holds dL/dv
    const auto dV = ops::matrix(static_cast<const T*>(v), n, out_);
    ops::matrix(ds2, out_, in_).noalias() =
        dV.transpose() * ops::matrix(static_cast<const T*>(x2), n, in_);
    this->post_.grad_from_variance(p, s2, ds2);
    if (dx.data) {  // dx = 2 x * (dL/dv . sigma2) + dy . theta
      auto DX = ops::matrix(dx.data, n, in_);
      DX.noalias() = dV * ops::matrix(static_cast<const T*>(s2), out_, in_);
      DX.array() *= T(2) * ops::matrix(x.data, n, in_).array();
      DX.noalias() += ops::matrix(dy.data, n, out_) * ops::matrix(this->theta(), out_, in_);
    }
  }

 private:
  int64_t in_, out_;
};

// Convolution: input (N, C, H, W), theta (O, C, K, K) stored as (O, R), output (N, O, OH, OW).
template <class T, class Posterior>
class MeanFieldConv2d : public MeanFieldBase<T, Posterior, ConvShaped<T>> {
  using Base = MeanFieldBase<T, Posterior, ConvShaped<T>>;

 public:
  // ConvOptions::bias is ignored; DropoutOptions::bias decides.
  MeanFieldConv2d(int64_t in_c, int64_t out_c, ConvOptions conv, DropoutOptions o = {})
      : Base(o, in_c, out_c, with_bias(conv, o.bias)) {}

  std::string kind() const override { return std::string(Posterior::family()) + "Conv2d"; }
  std::string describe() const override {
    return ConvShaped<T>::describe() + ", " + this->describe_posterior();
  }
  void declare(ParamTable& t) override {
    this->declare_tensors(t, this->weight_shape(), this->out_c_, this->fan_in());
  }
  // sample: sigma2 (O, R); r = eps / (2 s), in backward dL/dv (N, O, P); the sample groups'
  //         dL/dtheta and dL/dsigma2 (ops/conv_samples.hpp)
  // mean:   weights, their gradient (O, R); the sample groups' weight and bias gradients
  int64_t scratch_size(const Shape& in) const override {
    const auto g = this->geometry(in);
    const int64_t OR = g.out_c * g.rows();
    return std::max(OR + in.n * g.out_c * g.plane() + ops::sample_groups(in.n) * 2 * OR,
                    2 * OR + ops::conv_backward_scratch(in.n, g));
  }

  void forward(ConstView<T> x, TensorView<T> y, T* scratch, const Context& ctx) override {
    const auto g = this->geometry(x.shape);
    const int64_t n = x.shape.n, R = g.rows(), O = g.out_c, P = g.plane(), OR = O * R;
    const auto p = this->view();
    if (this->mode(ctx) == PredictMode::mean) {
      T* w = scratch;
      this->post_.mean_weights(p, w);
      return ops::conv_forward_samples(x.data, static_cast<const T*>(w), this->bias(), y.data, n,
                                       g);
    }
    T *s2 = scratch, *r = scratch + OR;
    this->post_.variance(p, s2);
    const BatchNoise noise = this->batch_noise(ctx);
    const int64_t xs = x.shape.per_sample();
    parallel_for(
        n,
        [&](int64_t s) {  // m_s = theta . cols + b, v_s = sigma2 . cols^2, then the LRT epilogue
          T* cols = ops::thread_buffer<T, 0>(R * P);
          T* cols2 = ops::thread_buffer<T, 1>(R * P);
          ops::im2col_sample(x.data + s * xs, g, cols);
          ops::VectorMap<T>(cols2, R * P).array() = ops::VectorMap<T>(cols, R * P).array().square();
          T *ys = y.data + s * O * P, *v = r + s * O * P;
          auto M = ops::matrix(ys, O, P);
          M.noalias() =
              ops::matrix(this->theta(), O, R) * ops::matrix(static_cast<const T*>(cols), R, P);
          if (const T* b = this->bias()) M.colwise() += ops::ConstVectorMap<T>(b, O);
          ops::matrix(v, O, P).noalias() = ops::matrix(static_cast<const T*>(s2), O, R) *
                                           ops::matrix(static_cast<const T*>(cols2), R, P);
          ops::lrt_forward_sample(noise.row_key(s), noise.row_in_sample(s), O, P,
                                  static_cast<const T*>(nullptr), true, T(this->post_.opt.e0), v, P,
                                  ys);
        },
        2 * O * R * P);
  }

  void backward(ConstView<T> x, ConstView<T>, ConstView<T> dy, TensorView<T> dx, T* scratch,
                const Context& ctx) override {
    const auto g = this->geometry(x.shape);
    const int64_t n = x.shape.n, R = g.rows(), O = g.out_c, P = g.plane(), OR = O * R;
    const auto p = this->view();
    if (this->mode(ctx) == PredictMode::mean) {
      T *w = scratch, *dw = scratch + OR;
      std::fill(dw, dw + OR, T(0));
      ops::conv_backward_samples(x.data, dy.data, static_cast<const T*>(w), dw, this->bias_grad(),
                                 dx.data, n, g, scratch + 2 * OR);
      return this->post_.grad_from_mean_weights(p, dw);
    }
    T *s2 = scratch, *r = scratch + OR, *partials = r + n * O * P;
    if (T* db = this->bias_grad()) ops::bias_backward(dy.data, n, O, P, db);
    const int64_t xs = x.shape.per_sample();
    ops::accumulate_over_samples(
        n, 2 * OR, partials,
        [&](int64_t s, T* acc) {
          T* dv = r + s * O * P;  // r becomes dL/dv = dy * r
          const auto dM = ops::matrix(dy.data + s * O * P, O, P);
          ops::VectorMap<T>(dv, O * P).array() *= ops::ConstVectorMap<T>(dM.data(), O * P).array();
          const auto dV = ops::matrix(static_cast<const T*>(dv), O, P);
          T* cols = ops::thread_buffer<T, 0>(R * P);
          T* cols2 = ops::thread_buffer<T, 1>(R * P);
          ops::im2col_sample(x.data + s * xs, g, cols);
          ops::VectorMap<T>(cols2, R * P).array() = ops::VectorMap<T>(cols, R * P).array().square();
          const auto C = ops::matrix(static_cast<const T*>(cols), R, P);
          ops::matrix(acc, O, R).noalias() += dM * C.transpose();
          ops::matrix(acc + OR, O, R).noalias() +=
              dV * ops::matrix(static_cast<const T*>(cols2), R, P).transpose();
          if (dx.data) {
            // 2 x * col2im(D) = col2im(2 cols * D), since every column entry of a pixel holds that
            // pixel's x: one col2im for both terms, dx = col2im(theta^T dM + 2 cols * (sigma2^T
            // dV)).
            auto D = ops::matrix(cols2, R, P);
            D.noalias() = ops::matrix(static_cast<const T*>(s2), O, R).transpose() * dV;
            D.array() *= T(2) * C.array();
            D.noalias() += ops::matrix(this->theta(), O, R).transpose() * dM;
            ops::col2im_sample(static_cast<const T*>(cols2), g, dx.data + s * xs);
          }
        },
        6 * OR * P);
    ops::VectorMap<T>(p.dtheta, OR) += ops::ConstVectorMap<T>(partials, OR);
    this->post_.grad_from_variance(p, s2, partials + OR);
  }

 private:
  static ConvOptions with_bias(ConvOptions c, bool b) {
    c.bias = b;
    return c;
  }
};

template <class T>
using GaussianDropoutLinear = MeanFieldLinear<T, GaussianDropoutPosterior<T>>;
template <class T>
using GaussianDropoutConv2d = MeanFieldConv2d<T, GaussianDropoutPosterior<T>>;
template <class T>
using VariationalDropoutLinear = MeanFieldLinear<T, VariationalDropoutPosterior<T>>;
template <class T>
using VariationalDropoutConv2d = MeanFieldConv2d<T, VariationalDropoutPosterior<T>>;
template <class T>
using SparseVDLinear = MeanFieldLinear<T, SparseVDPosterior<T>>;
template <class T>
using SparseVDConv2d = MeanFieldConv2d<T, SparseVDPosterior<T>>;

}  // namespace varnet
