// Variance layers: zero-mean random weights whose variances carry all the information
// (Neklyudov et al., ICLR 2019). Dense (VarianceLinear) and convolutional (VarianceConv2d).
//
// Each weight w has mean 0 and variance sigma2, under one of three distributions scaled to the
// same variance:
//   gaussian   N(0, sigma2), sampled through the local reparameterization trick: the output is
//              Gaussian with mean b and variance v = (x*x) . sigma2^T, y = b + eps sqrt(v + e0);
//   bernoulli  +sigma or -sigma with probability 1/2 each;
//   uniform    U(-sqrt(3) sigma, sqrt(3) sigma).
// Bernoulli and uniform weights cannot use the LRT exactly: as in the reference code, one weight
// tensor is drawn per mini-batch (per step and stream) and shared by all rows.
// The learned parameter is sigma itself (sigma2 = sigma^2, as the reference) or log sigma2.
// In mean mode every weight is replaced by its expectation, 0: the output is the bias alone.
#pragma once

#include <cmath>

#include "varnet/layers/conv2d.hpp"
#include "varnet/layers/layer.hpp"
#include "varnet/ops/conv_samples.hpp"
#include "varnet/ops/dense.hpp"
#include "varnet/ops/lrt.hpp"

namespace varnet {

enum class WeightDist { gaussian, bernoulli, uniform };
enum class VarianceParam { sigma, log_sigma2 };

inline const char* to_string(WeightDist d) {
  return d == WeightDist::gaussian    ? "gaussian"
         : d == WeightDist::bernoulli ? "bernoulli"
                                      : "uniform";
}
inline WeightDist parse_weight_dist(const std::string& s) {
  if (s == "gaussian") return WeightDist::gaussian;
  if (s == "bernoulli") return WeightDist::bernoulli;
  if (s == "uniform") return WeightDist::uniform;
  fail("weight distribution", "'gaussian', 'bernoulli' or 'uniform'", "'" + s + "'");
}
inline const char* to_string(VarianceParam p) {
  return p == VarianceParam::sigma ? "sigma" : "log_sigma2";
}

struct VarianceOptions {
  WeightDist dist = WeightDist::gaussian;
  VarianceParam param = VarianceParam::sigma;
  bool bias = false;
  double e0 = 1e-8;  // added to the output variance: keeps sqrt and dL/dv finite as v -> 0
};

// Parameter -> variance, weight sampling, and the chain rule back to the parameter.
template <class T>
struct ZeroMeanWeights {
  VarianceOptions opt;

  const char* param_name() const {
    return opt.param == VarianceParam::sigma ? "sigma" : "log_sigma2";
  }
  Init init(int64_t fan_in) const {
    const double bound = 1.0 / std::sqrt(double(fan_in));
    return opt.param == VarianceParam::sigma ? Init::uniform(bound)
                                             : Init::log_square_uniform(bound);
  }
  // s2 = sigma^2 or exp(log sigma2)
  void variance(const T* p, T* s2, int64_t n) const {
    parallel_ranges(n, [&](int64_t b, int64_t e) {
      const auto P = ops::ConstVectorMap<T>(p + b, e - b).array();
      auto S = ops::VectorMap<T>(s2 + b, e - b).array();
      if (opt.param == VarianceParam::sigma)
        S = P.square();
      else
        S = P.exp();
    });
  }
  // dp += ds2 * d sigma2 / dp
  void grad_from_variance(const T* p, const T* s2, const T* ds2, T* dp, int64_t n) const {
    parallel_ranges(n, [&](int64_t b, int64_t e) {
      const auto P = ops::ConstVectorMap<T>(p + b, e - b).array();
      const auto dS = ops::ConstVectorMap<T>(ds2 + b, e - b).array();
      auto dP = ops::VectorMap<T>(dp + b, e - b).array();
      if (opt.param == VarianceParam::sigma)
        dP += T(2) * P * dS;
      else
        dP += ops::ConstVectorMap<T>(s2 + b, e - b).array() * dS;
    });
  }
  // w = sd * xi with xi = +-1 (bernoulli) or U(-sqrt 3, sqrt 3) (uniform); element i of the
  // weight tensor takes word i of the layer's noise.
  void sample(const NoiseKey& key, const T* p, T* w, T* xi, int64_t n) const {
    if (opt.dist == WeightDist::bernoulli) {
      ops::fill_from_words(key, 0, n, xi, [](uint32_t x) { return (x & 1u) ? 1.0f : -1.0f; });
    } else {
      ops::fill_from_words(key, 0, n, xi, [](uint32_t x) {
        return 1.7320508075688772f * (2.0f * uniform_open01(x) - 1.0f);
      });
    }
    for (int64_t i = 0; i < n; ++i) w[i] = standard_deviation(p[i]) * xi[i];
  }
  // dp += dw * dw/dp
  void grad_from_weight(const T* p, const T* xi, const T* dw, T* dp, int64_t n) const {
    for (int64_t i = 0; i < n; ++i) {
      if (opt.param == VarianceParam::sigma)
        dp[i] += dw[i] * xi[i];
      else
        dp[i] += dw[i] * xi[i] * T(0.5) * std::exp(T(0.5) * p[i]);
    }
  }
  // sigma is used signed (its sign does not change the distribution): w = sigma * xi.
  T standard_deviation(T p) const {
    return opt.param == VarianceParam::sigma ? p : std::exp(T(0.5) * p);
  }
};

inline std::string describe_variance(const VarianceOptions& o) {
  return str(to_string(o.dist), ", ", to_string(o.param), o.bias ? ", bias" : "");
}

// y (N, O) with every element equal to the bias (or 0).
template <class T>
void fill_with_bias(const T* bias, int64_t rows, int64_t o, int64_t p, T* y) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < o; ++c)
      std::fill(y + (r * o + c) * p, y + (r * o + c + 1) * p, bias ? bias[c] : T(0));
}

template <class T>
class VarianceLinear : public Layer<T> {
 public:
  VarianceLinear(int64_t in_features, int64_t out_features, VarianceOptions o = {})
      : in_(in_features), out_(out_features), w_{o} {
    check(in_ > 0 && out_ > 0, "VarianceLinear", "positive feature counts", in_, " -> ", out_);
  }

  std::string kind() const override { return "VarianceLinear"; }
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  std::string describe() const override {
    return str(kind(), "(", in_, " -> ", out_, ", ", describe_variance(w_.opt), ")");
  }
  bool stochastic() const override { return true; }
  // Gaussian weights: LRT noise per output element. Bernoulli, uniform: one weight draw per pass.
  bool stacks_samples() const override { return w_.opt.dist == WeightDist::gaussian; }
  const VarianceOptions& options() const { return w_.opt; }
  const ParamRef& variance_param() const { return param_; }
  WeightStats weight_stats(double) const override { return unpruned_weights(out_ * in_); }

  Shape output_shape(const Shape& in) const override {
    this->expect_input(in, in_, 1, 1);
    return Shape(in.n, out_);
  }
  void declare(ParamTable& t) override {
    param_ =
        t.declare(this->name() + "." + w_.param_name(), Shape(out_, in_), w_.init(in_), this->id());
    if (w_.opt.bias)
      bias_ = t.declare(this->name() + ".bias", Shape(out_, 1), Init::fan_in(in_), this->id());
  }
  int64_t scratch_size(const Shape& in) const override {
    const int64_t OI = out_ * in_;
    if (w_.opt.dist == WeightDist::gaussian) return 2 * OI + in.n * in_ + in.n * out_;
    return 3 * OI;
  }

  void forward(ConstView<T> x, TensorView<T> y, T* scratch, const Context& ctx) override {
    const int64_t n = x.shape.n, OI = out_ * in_;
    if (this->mode(ctx) == PredictMode::mean) return fill_with_bias(bias(), n, out_, 1, y.data);
    const T* p = this->param(param_);
    if (w_.opt.dist == WeightDist::gaussian) {
      T *s2 = scratch, *x2 = scratch + 2 * OI, *v = x2 + n * in_;
      w_.variance(p, s2, OI);
      parallel_ranges(n * in_, [&](int64_t b, int64_t e) {
        ops::VectorMap<T>(x2 + b, e - b).array() =
            ops::ConstVectorMap<T>(x.data + b, e - b).array().square();
      });
      ops::matrix(v, n, out_).noalias() =
          ops::matrix(static_cast<const T*>(x2), n, in_) *
          ops::matrix(static_cast<const T*>(s2), out_, in_).transpose();
      ops::lrt_forward(this->batch_noise(ctx), ops::LrtLayout{n, out_, 1, false}, bias(), false,
                       T(w_.opt.e0), v, y.data);
    } else {
      T *w = scratch, *xi = scratch + OI;
      w_.sample(this->noise_key(ctx), p, w, xi, OI);
      ops::dense_forward(x.data, static_cast<const T*>(w), bias(), y.data, n, in_, out_);
    }
  }

  void backward(ConstView<T> x, ConstView<T>, ConstView<T> dy, TensorView<T> dx, T* scratch,
                const Context& ctx) override {
    const int64_t n = x.shape.n, OI = out_ * in_;
    T* db = w_.opt.bias ? this->grad(bias_) : nullptr;
    if (db) ops::bias_backward(dy.data, n, out_, 1, db);
    if (this->mode(ctx) == PredictMode::mean) {
      if (dx.data) std::fill(dx.begin(), dx.end(), T(0));
      return;
    }
    const T* p = this->param(param_);
    T* dp = this->grad(param_);
    if (w_.opt.dist == WeightDist::gaussian) {
      T *s2 = scratch, *ds2 = scratch + OI, *x2 = scratch + 2 * OI, *v = x2 + n * in_;
      ops::lrt_backward(ops::LrtLayout{n, out_, 1, false}, dy.data, v);  // v now holds dL/dv
      const auto dV = ops::matrix(static_cast<const T*>(v), n, out_);
      ops::matrix(ds2, out_, in_).noalias() =
          dV.transpose() * ops::matrix(static_cast<const T*>(x2), n, in_);
      w_.grad_from_variance(p, s2, ds2, dp, OI);
      if (dx.data) {  // dx = 2 x * (dL/dv . sigma2)
        auto DX = ops::matrix(dx.data, n, in_);
        DX.noalias() = dV * ops::matrix(static_cast<const T*>(s2), out_, in_);
        parallel_ranges(n * in_, [&](int64_t b, int64_t e) {
          ops::VectorMap<T>(dx.data + b, e - b).array() *=
              T(2) * ops::ConstVectorMap<T>(x.data + b, e - b).array();
        });
      }
    } else {
      T *w = scratch, *xi = scratch + OI, *dw = scratch + 2 * OI;
      std::fill(dw, dw + OI, T(0));
      ops::dense_backward(x.data, dy.data, static_cast<const T*>(w), dw, static_cast<T*>(nullptr),
                          dx.data, n, in_, out_);
      w_.grad_from_weight(p, xi, dw, dp, OI);
    }
  }

 private:
  const T* bias() const { return w_.opt.bias ? this->param(bias_) : nullptr; }
  int64_t in_, out_;
  ZeroMeanWeights<T> w_;
  ParamRef param_, bias_;
};

template <class T>
class VarianceConv2d : public ConvShaped<T> {
 public:
  // ConvOptions::bias is ignored; VarianceOptions::bias decides.
  VarianceConv2d(int64_t in_c, int64_t out_c, ConvOptions conv, VarianceOptions o = {})
      : ConvShaped<T>(in_c, out_c, with_bias(conv, o.bias)), w_{o} {}

  std::string kind() const override { return "VarianceConv2d"; }
  std::string describe() const override {
    return ConvShaped<T>::describe() + ", " + describe_variance(w_.opt);
  }
  bool stochastic() const override { return true; }
  // Gaussian weights: LRT noise per output element. Bernoulli, uniform: one weight draw per pass.
  bool stacks_samples() const override { return w_.opt.dist == WeightDist::gaussian; }
  const VarianceOptions& options() const { return w_.opt; }
  const ParamRef& variance_param() const { return param_; }

  void declare(ParamTable& t) override {
    param_ = t.declare(this->name() + "." + w_.param_name(), this->weight_shape(),
                       w_.init(this->fan_in()), this->id());
    if (w_.opt.bias)
      bias_ = t.declare(this->name() + ".bias", Shape(this->out_c_, 1),
                        Init::fan_in(this->fan_in()), this->id());
  }
  // gaussian: sigma2 (O, R); r = eps / (2 s), in backward dL/dv (N, O, P); the sample groups'
  //           dL/dsigma2 (ops/conv_samples.hpp)
  // others:   w, xi, dw (O, R); the sample groups' weight and bias gradients
  int64_t scratch_size(const Shape& in) const override {
    const auto g = this->geometry(in);
    const int64_t OR = g.out_c * g.rows();
    if (w_.opt.dist == WeightDist::gaussian)
      return OR + in.n * g.out_c * g.plane() + ops::sample_groups(in.n) * OR;
    return 3 * OR + ops::conv_backward_scratch(in.n, g);
  }

  void forward(ConstView<T> x, TensorView<T> y, T* scratch, const Context& ctx) override {
    const auto g = this->geometry(x.shape);
    const int64_t n = x.shape.n, R = g.rows(), O = g.out_c, P = g.plane(), OR = O * R;
    if (this->mode(ctx) == PredictMode::mean) return fill_with_bias(bias(), n, O, P, y.data);
    const T* p = this->param(param_);
    if (w_.opt.dist != WeightDist::gaussian) {
      T *w = scratch, *xi = scratch + OR;
      w_.sample(this->noise_key(ctx), p, w, xi, OR);
      return ops::conv_forward_samples(x.data, static_cast<const T*>(w), bias(), y.data, n, g);
    }
    T *s2 = scratch, *r = scratch + OR;
    w_.variance(p, s2, OR);
    const BatchNoise noise = this->batch_noise(ctx);
    const int64_t xs = x.shape.per_sample();
    parallel_for(
        n,
        [&](int64_t s) {  // v_s = sigma2 . im2col(x_s)^2, then the LRT epilogue, all in cache
          T* cols2 = ops::thread_buffer<T, 0>(R * P);
          ops::im2col_sample(x.data + s * xs, g, cols2, ops::Square{});
          T* v = r + s * O * P;
          ops::matrix(v, O, P).noalias() = ops::matrix(static_cast<const T*>(s2), O, R) *
                                           ops::matrix(static_cast<const T*>(cols2), R, P);
          ops::lrt_forward_sample(noise.row_key(s), noise.row_in_sample(s), O, P, bias(), false,
                                  T(w_.opt.e0), v, P, y.data + s * O * P);
        },
        O * R * P);
  }

  void backward(ConstView<T> x, ConstView<T>, ConstView<T> dy, TensorView<T> dx, T* scratch,
                const Context& ctx) override {
    const auto g = this->geometry(x.shape);
    const int64_t n = x.shape.n, R = g.rows(), O = g.out_c, P = g.plane(), OR = O * R;
    T* db = w_.opt.bias ? this->grad(bias_) : nullptr;
    if (db) ops::bias_backward(dy.data, n, O, P, db);
    if (this->mode(ctx) == PredictMode::mean) {
      if (dx.data) std::fill(dx.begin(), dx.end(), T(0));
      return;
    }
    const T* p = this->param(param_);
    T* dp = this->grad(param_);
    if (w_.opt.dist != WeightDist::gaussian) {
      T *w = scratch, *xi = scratch + OR, *dw = scratch + 2 * OR;
      std::fill(dw, dw + OR, T(0));
      ops::conv_backward_samples(x.data, dy.data, static_cast<const T*>(w), dw,
                                 static_cast<T*>(nullptr), dx.data, n, g, scratch + 3 * OR);
      return w_.grad_from_weight(p, xi, dw, dp, OR);
    }
    T *s2 = scratch, *r = scratch + OR, *partials = r + n * O * P;
    const int64_t xs = x.shape.per_sample();
    ops::accumulate_over_samples(
        n, OR, partials,
        [&](int64_t s, T* acc) {
          T* dv = r + s * O * P;  // r becomes dL/dv = dy * r
          ops::VectorMap<T>(dv, O * P).array() *=
              ops::ConstVectorMap<T>(dy.data + s * O * P, O * P).array();
          T* cols2 = ops::thread_buffer<T, 0>(R * P);
          ops::im2col_sample(x.data + s * xs, g, cols2, ops::Square{});
          const auto dV = ops::matrix(static_cast<const T*>(dv), O, P);
          ops::matrix(acc, O, R).noalias() +=
              dV * ops::matrix(static_cast<const T*>(cols2), R, P).transpose();
          if (dx.data) {  // dx_s = 2 x_s * col2im(sigma2^T . dL/dv)
            T* dcols = ops::thread_buffer<T, 1>(R * P);
            ops::matrix(dcols, R, P).noalias() =
                ops::matrix(static_cast<const T*>(s2), O, R).transpose() * dV;
            T* dxs = dx.data + s * xs;
            ops::col2im_sample(static_cast<const T*>(dcols), g, dxs);
            ops::VectorMap<T>(dxs, xs).array() *=
                T(2) * ops::ConstVectorMap<T>(x.data + s * xs, xs).array();
          }
        },
        3 * OR * P);
    w_.grad_from_variance(p, s2, partials, dp, OR);
  }

 private:
  static ConvOptions with_bias(ConvOptions c, bool b) {
    c.bias = b;
    return c;
  }
  const T* bias() const { return w_.opt.bias ? this->param(bias_) : nullptr; }
  ZeroMeanWeights<T> w_;
  ParamRef param_, bias_;
};

}  // namespace varnet
