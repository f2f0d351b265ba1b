// Gradient checks for every layer, for LeNet-5 end to end and for the cross-entropy loss:
// analytic backward against central differences in double (see gradcheck.hpp for what else each
// layer check proves: accumulation, poisoned buffers, dx overwritten, dx = nullptr).
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "catch.hpp"
#include "gradcheck.hpp"
#include "tolerance.hpp"
#include "varnet/layers/activations.hpp"
#include "varnet/layers/batchnorm.hpp"
#include "varnet/layers/conv2d.hpp"
#include "varnet/layers/dropout.hpp"
#include "varnet/layers/flatten.hpp"
#include "varnet/layers/linear.hpp"
#include "varnet/layers/pooling.hpp"
#include "varnet/layers/variance.hpp"
#include "varnet/models/lenet5.hpp"
#include "varnet/nn/loss.hpp"

using gradcheck::check_layer;
using gradcheck::InputKind;
using gradcheck::Options;
using varnet::ConstView;
using varnet::Context;
using varnet::ConvOptions;
using varnet::Network;
using varnet::PredictMode;
using varnet::Shape;
using varnet::Tensor;
using varnet::TensorView;
using varnet::VarianceOptions;
using varnet::VarianceParam;
using varnet::WeightDist;

namespace {

Options with_input(Shape s, InputKind kind = InputKind::uniform) {
  Options o;
  o.input = s;
  o.input_kind = kind;
  return o;
}

// Replaces every trainable parameter by U(lo, hi): batch-norm scales and shifts start at 1 and 0,
// which would hide a gradient that ignores them.
void randomize_params(Network<double>& net, double lo, double hi, uint64_t seed) {
  gradcheck::Rng rng(seed);
  for (double& p : net.params()) p = rng.uniform(lo, hi);
}

struct ConvCase {
  int64_t in_c, out_c, h, w, kernel, stride, pad;
  bool bias;
};

const std::vector<ConvCase>& conv_cases() {
  static const std::vector<ConvCase> cases = {
      {2, 3, 5, 7, 1, 1, 0, true}, {3, 2, 5, 6, 1, 2, 0, false}, {2, 3, 7, 5, 3, 1, 1, false},
      {3, 2, 7, 7, 3, 2, 0, true}, {2, 2, 5, 5, 3, 2, 2, true},  {1, 1, 3, 3, 3, 1, 0, true},
      {2, 2, 6, 5, 5, 1, 2, true}, {1, 3, 9, 8, 5, 2, 1, false}, {2, 2, 5, 5, 5, 1, 0, false},
      {1, 2, 4, 3, 5, 2, 2, true},
  };
  return cases;
}

const char* dist_name(WeightDist d) {
  return varnet::to_string(d);
}

}  // namespace

TEST_CASE("gradcheck: Linear", "[gradcheck]") {
  const bool bias = GENERATE(true, false);
  INFO("bias " << bias);
  check_layer(std::make_unique<varnet::Linear<double>>(7, 5, bias), with_input(Shape(3, 7)));
}

TEST_CASE("gradcheck: Conv2d", "[gradcheck]") {
  const size_t i = GENERATE(range(size_t(0), conv_cases().size()));
  const ConvCase c = conv_cases()[i];
  INFO("case " << i);
  check_layer(std::make_unique<varnet::Conv2d<double>>(
                  c.in_c, c.out_c, ConvOptions{c.kernel, c.stride, c.pad, c.bias}),
              with_input(Shape(2, c.in_c, c.h, c.w)));
}

TEST_CASE("gradcheck: VarianceLinear, every distribution and parameterization", "[gradcheck]") {
  const WeightDist dist =
      GENERATE(WeightDist::gaussian, WeightDist::bernoulli, WeightDist::uniform);
  const VarianceParam param = GENERATE(VarianceParam::sigma, VarianceParam::log_sigma2);
  const bool bias = GENERATE(true, false);
  INFO(dist_name(dist) << ", " << varnet::to_string(param) << ", bias " << bias);
  VarianceOptions vo;
  vo.dist = dist;
  vo.param = param;
  vo.bias = bias;
  SECTION("sample mode") {
    check_layer(std::make_unique<varnet::VarianceLinear<double>>(6, 5, vo),
                with_input(Shape(4, 6)));
  }
  SECTION("sample mode, another step and stream") {
    Options o = with_input(Shape(3, 6));
    o.ctx = Context::train(77, 1234, 5);
    check_layer(std::make_unique<varnet::VarianceLinear<double>>(6, 4, vo), o);
  }
  SECTION("mean mode through the context") {
    Options o = with_input(Shape(4, 6));
    o.ctx.mode = PredictMode::mean;
    check_layer(std::make_unique<varnet::VarianceLinear<double>>(6, 5, vo), o);
  }
  SECTION("mean mode through the layer's override") {
    auto layer = std::make_unique<varnet::VarianceLinear<double>>(6, 5, vo);
    layer->set_mode_override(PredictMode::mean);
    check_layer(std::move(layer), with_input(Shape(4, 6)));
  }
}

TEST_CASE("gradcheck: VarianceConv2d, every distribution and parameterization", "[gradcheck]") {
  const WeightDist dist =
      GENERATE(WeightDist::gaussian, WeightDist::bernoulli, WeightDist::uniform);
  const VarianceParam param = GENERATE(VarianceParam::sigma, VarianceParam::log_sigma2);
  const bool bias = GENERATE(true, false);
  INFO(dist_name(dist) << ", " << varnet::to_string(param) << ", bias " << bias);
  VarianceOptions vo;
  vo.dist = dist;
  vo.param = param;
  vo.bias = bias;
  SECTION("3x3, stride 2, pad 1, odd sizes") {
    check_layer(std::make_unique<varnet::VarianceConv2d<double>>(2, 3, ConvOptions{3, 2, 1}, vo),
                with_input(Shape(2, 2, 5, 7)));
  }
  SECTION("5x5, stride 1, pad 2") {
    check_layer(std::make_unique<varnet::VarianceConv2d<double>>(2, 2, ConvOptions{5, 1, 2}, vo),
                with_input(Shape(2, 2, 6, 5)));
  }
  SECTION("1x1, stride 1, pad 0") {
    check_layer(std::make_unique<varnet::VarianceConv2d<double>>(3, 2, ConvOptions{1, 1, 0}, vo),
                with_input(Shape(2, 3, 3, 4)));
  }
  SECTION("mean mode through the context") {
    Options o = with_input(Shape(2, 2, 5, 7));
    o.ctx.mode = PredictMode::mean;
    check_layer(std::make_unique<varnet::VarianceConv2d<double>>(2, 3, ConvOptions{3, 2, 1}, vo),
                o);
  }
  SECTION("mean mode through the layer's override") {
    auto layer = std::make_unique<varnet::VarianceConv2d<double>>(2, 3, ConvOptions{3, 1, 1}, vo);
    layer->set_mode_override(PredictMode::mean);
    check_layer(std::move(layer), with_input(Shape(2, 2, 5, 4)));
  }
}

TEST_CASE("gradcheck: convolutions over several sample groups", "[gradcheck]") {
  // Convolutions sum weight gradients per group of ops::kSampleGroup samples, then over the
  // groups: a batch of 2 groups and a ragged third checks the group bookkeeping.
  const int64_t n = 2 * varnet::ops::kSampleGroup + 3;
  SECTION("Conv2d") {
    check_layer(std::make_unique<varnet::Conv2d<double>>(2, 3, ConvOptions{3, 1, 1, true}),
                with_input(Shape(n, 2, 4, 5)));
  }
  SECTION("VarianceConv2d, gaussian and bernoulli") {
    VarianceOptions vo;
    vo.bias = true;
    vo.dist = GENERATE(WeightDist::gaussian, WeightDist::bernoulli);
    check_layer(std::make_unique<varnet::VarianceConv2d<double>>(2, 3, ConvOptions{3, 1, 1}, vo),
                with_input(Shape(n, 2, 4, 5)));
  }
}

TEST_CASE("gradcheck: activations", "[gradcheck]") {
  const Shape s(2, 3, 4, 5);
  SECTION("ReLU") {
    check_layer(std::make_unique<varnet::ReLU<double>>(), with_input(s, InputKind::away_from_zero));
  }
  SECTION("LeakyReLU") {
    check_layer(std::make_unique<varnet::LeakyReLU<double>>(0.1),
                with_input(s, InputKind::away_from_zero));
  }
  SECTION("Tanh") {
    check_layer(std::make_unique<varnet::Tanh<double>>(), with_input(s));
  }
}

TEST_CASE("gradcheck: MaxPool2d", "[gradcheck]") {
  SECTION("kernel 2, stride 2, odd width") {
    check_layer(std::make_unique<varnet::MaxPool2d<double>>(2, 2),
                with_input(Shape(2, 3, 6, 7), InputKind::distinct));
  }
  SECTION("kernel 3, stride 2 (overlapping windows)") {
    check_layer(std::make_unique<varnet::MaxPool2d<double>>(3, 2),
                with_input(Shape(2, 2, 7, 7), InputKind::distinct));
  }
}

TEST_CASE("gradcheck: BatchNorm", "[gradcheck]") {
  const Shape shape = GENERATE(Shape(5, 4), Shape(3, 2, 4, 5));
  INFO("input " << shape);
  const int64_t c = shape.c;
  Options o = with_input(shape);
  o.prepare = [](Network<double>& net) {
    randomize_params(net, 0.5, 1.5, 3);  // gamma in [0.5, 1.5), beta likewise
    gradcheck::Rng rng(4);
    const int64_t cc = net.layer(0).output_shape(net.input_shape()).c;
    double* mean = net.find("layer.running_mean");
    double* var = net.find("layer.running_var");
    for (int64_t i = 0; i < cc; ++i) {
      mean[i] = rng.uniform(-0.5, 0.5);
      var[i] = rng.uniform(0.5, 2.0);
    }
  };
  SECTION("training: batch statistics") {
    o.ctx = Context::train(1, 0);
    check_layer(std::make_unique<varnet::BatchNorm<double>>(c), o);
  }
  SECTION("evaluation with running statistics") {
    o.ctx = Context::eval(1, PredictMode::sample, 0, false);
    check_layer(std::make_unique<varnet::BatchNorm<double>>(c), o);
  }
  SECTION("evaluation with batch statistics") {
    o.ctx = Context::eval(1, PredictMode::sample, 0, true);
    check_layer(std::make_unique<varnet::BatchNorm<double>>(c), o);
  }
}

TEST_CASE("gradcheck: Flatten and Dropout", "[gradcheck]") {
  SECTION("Flatten") {
    check_layer(std::make_unique<varnet::Flatten<double>>(), with_input(Shape(2, 3, 4, 5)));
  }
  SECTION("Dropout p = 0.3, sample mode") {
    check_layer(std::make_unique<varnet::Dropout<double>>(0.3), with_input(Shape(2, 3, 4, 5)));
  }
  SECTION("Dropout p = 0.3, mean mode") {
    Options o = with_input(Shape(2, 3, 4, 5));
    o.ctx.mode = PredictMode::mean;
    check_layer(std::make_unique<varnet::Dropout<double>>(0.3), o);
  }
}

namespace {

gradcheck::LossFn ce_loss(const std::vector<int32_t>& labels) {
  return [labels](ConstView<double> out, TensorView<double>* dout) {
    std::vector<ConstView<double>> logits{out};
    if (!dout) return varnet::cross_entropy<double>(logits, labels.data()).loss;
    std::vector<TensorView<double>> d{*dout};
    return varnet::cross_entropy<double>(logits, labels.data(), &d).loss;
  };
}

}  // namespace

TEST_CASE("gradcheck: LeNet-5 end to end, variance layers 1-3", "[gradcheck][lenet5]") {
  // every distribution on 16x16 inputs; the full 28x28 size once (its forward costs ~5x more)
  const int which = GENERATE(0, 1, 2, 3);
  const WeightDist dist = which == 1   ? WeightDist::bernoulli
                          : which == 2 ? WeightDist::uniform
                                       : WeightDist::gaussian;
  const int64_t side = which == 3 ? 28 : 16;
  INFO(dist_name(dist) << ", " << side << "x" << side << " inputs");
  varnet::LeNet5Config cfg;
  cfg.variance_layers = {1, 2, 3};
  cfg.variance.dist = dist;
  cfg.classes = 10;
  Network<double> net = varnet::make_lenet5<double>(cfg, Shape(1, 1, side, side), 21);
  // batch-norm scales and shifts start at 1 and 0; move them so that their gradients matter
  gradcheck::Rng prng(8);
  for (const auto& e : net.table().entries()) {
    const bool is_bn = e.name.rfind("bn", 0) == 0;
    if (!is_bn || !e.trainable) continue;
    double* p = net.params().data() + e.offset;
    const bool scale = e.name.find(".weight") != std::string::npos;
    for (int64_t i = 0; i < e.shape.numel(); ++i)
      p[i] = scale ? prng.uniform(0.5, 1.5) : prng.uniform(-0.5, 0.5);
  }
  Tensor<double> x(Shape(3, 1, side, side));
  gradcheck::Rng rng(5);
  gradcheck::fill_input(x, InputKind::unit_interval, rng);
  const std::vector<int32_t> labels{3, 0, 7};
  Options o;
  o.input = x.shape();
  o.ctx = Context::train(42, 9, 1);
  o.max_per_tensor = side == 16 ? 10 : 4;
  gradcheck::check_network(net, x, ce_loss(labels), o);
}

TEST_CASE("gradcheck: cross-entropy, single- and K-sample", "[gradcheck][loss]") {
  const int K = GENERATE(1, 3);
  const int64_t n = 4, c = 5;
  INFO("K = " << K);
  gradcheck::Rng rng(11);
  std::vector<Tensor<double>> logits;
  for (int k = 0; k < K; ++k) {
    logits.emplace_back(Shape(n, c));
    for (int64_t i = 0; i < n * c; ++i) logits.back()[i] = rng.uniform(-3, 3);
  }
  const std::vector<int32_t> labels{1, 4, 0, 2};
  const auto loss = [&]() {
    std::vector<ConstView<double>> views;
    for (auto& t : logits) views.push_back(t.view());
    return varnet::cross_entropy<double>(views, labels.data()).loss;
  };
  std::vector<Tensor<double>> d;
  std::vector<ConstView<double>> views;
  std::vector<TensorView<double>> dviews;
  for (auto& t : logits) {
    d.emplace_back(t.shape(), std::numeric_limits<double>::quiet_NaN());
    views.push_back(t.view());
    dviews.push_back(d.back().view());
  }
  const double l0 = varnet::cross_entropy<double>(views, labels.data(), &dviews).loss;
  CHECK(tol::close<double>(l0, loss()));
  const double h = 1e-6;
  for (int k = 0; k < K; ++k) {
    std::vector<double> num(size_t(n * c));
    for (int64_t i = 0; i < n * c; ++i) {
      double& v = logits[size_t(k)][i];
      const double orig = v;
      v = orig + h;
      const double fp = loss();
      v = orig - h;
      const double fm = loss();
      v = orig;
      num[size_t(i)] = (fp - fm) / (2 * h);
    }
    const tol::Mismatch m = tol::compare<double>(d[size_t(k)].data(), num, n * c, 1e-8, 1e-6);
    INFO("sample " << k << ": dL/dlogits vs central differences: " << m);
    CHECK(m.ok());
  }
}
