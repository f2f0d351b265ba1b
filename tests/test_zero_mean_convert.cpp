// The zero_mean example's conversion (examples/zero_mean/convert.hpp): a variational dropout
// layer, w ~ N(theta, alpha theta^2), becomes a variance layer with the same weight variances.
// Both layers sample their outputs with the local reparameterization trick from the same noise
// key (the layer's place in the network), so the converted layer's sampled output must equal the
// variational dropout layer's sampled output minus its mean: y_b = y_a - E[y_a], element by
// element, in double.
#include <cmath>
#include <string>
#include <vector>

#include "../examples/zero_mean/convert.hpp"
#include "catch.hpp"
#include "varnet/varnet.hpp"

namespace {

using varnet::Context;
using varnet::Network;
using varnet::PredictMode;
using varnet::Shape;

std::vector<double> forward(Network<double>& net, const varnet::Tensor<double>& x,
                            PredictMode mode) {
  const auto y = net.forward(x.view(), Context::eval(11, mode, 3));
  return std::vector<double>(y.data, y.data + y.numel());
}

varnet::Tensor<double> input(Shape s) {
  varnet::Tensor<double> x(s);
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = std::sin(0.7 * double(i) + 0.3);
  return x;
}

// Converts `a` (its one layer "layer" variational dropout with raw log alpha `log_alpha`) into
// `b` (a variance layer) and checks y_b = y_a - E[y_a] on `x`.
void check_converted(Network<double>& a, Network<double>& b, const varnet::Tensor<double>& x,
                     double log_alpha) {
  const Shape in = x.shape().with_batch(1);
  a.build(in, 5);
  b.build(in, 6);
  *a.find("layer.log_alpha") = log_alpha;
  varnet::examples::convert_to_zero_mean(a, b);
  const std::vector<double> ya = forward(a, x, PredictMode::sample),
                            ma = forward(a, x, PredictMode::mean),
                            yb = forward(b, x, PredictMode::sample);
  REQUIRE(yb.size() == ya.size());
  double largest = 0;
  for (size_t i = 0; i < ya.size(); ++i) {
    INFO("element " << i << " of " << ya.size());
    CHECK(yb[i] == Approx(ya[i] - ma[i]).epsilon(1e-9).margin(1e-12));
    largest = std::max(largest, std::abs(yb[i]));
  }
  CHECK(largest > 1e-2);  // the noise is not negligible: the comparison means something
}

}  // namespace

TEST_CASE("zero-mean conversion keeps a dense layer's output variances", "[zero_mean]") {
  varnet::DropoutOptions d;
  for (double log_alpha : {-1.5, 0.4, 23.0}) {  // 23: beyond the clip at 20 the layer applies
    INFO("log alpha " << log_alpha);
    Network<double> a, b;
    a.emplace<varnet::VariationalDropoutLinear<double>>("layer", 37, 9, d);
    b.emplace<varnet::VarianceLinear<double>>("layer", 37, 9, varnet::VarianceOptions{});
    check_converted(a, b, input(Shape(3, 37)), log_alpha);
  }
}

TEST_CASE("zero-mean conversion keeps a convolution's output variances", "[zero_mean]") {
  varnet::DropoutOptions d;
  varnet::ConvOptions conv;
  conv.kernel = 3;
  conv.pad = 1;
  conv.bias = false;
  d.bias = false;
  Network<double> a, b;
  a.emplace<varnet::VariationalDropoutConv2d<double>>("layer", 2, 5, conv, d);
  b.emplace<varnet::VarianceConv2d<double>>("layer", 2, 5, conv, varnet::VarianceOptions{});
  check_converted(a, b, input(Shape(2, 2, 6, 7)), -0.8);
}

TEST_CASE("zero-mean conversion of LeNet-5 copies every other tensor by name", "[zero_mean]") {
  using varnet::LayerKind;
  varnet::LeNet5Config ca, cb;
  ca.kinds = {LayerKind::vdo, LayerKind::vdo, LayerKind::vdo, LayerKind::vdo};
  cb.kinds = {LayerKind::variance, LayerKind::vdo, LayerKind::variance, LayerKind::vdo};
  const Shape in(1, 1, 28, 28);
  Network<double> a = varnet::make_lenet5<double>(ca, in, 1);
  Network<double> b = varnet::make_lenet5<double>(cb, in, 2);
  // Make every tensor of `a` differ from `b`'s initial values, state (batch norm) included.
  for (size_t i = 0; i < a.params().size(); ++i) a.params()[i] += 0.25 + 1e-3 * double(i % 7);
  for (size_t i = 0; i < a.state().size(); ++i) a.state()[i] += 0.5;
  varnet::examples::convert_to_zero_mean(a, b);
  int copied = 0, converted = 0;
  for (const auto& e : b.table().entries()) {
    INFO(e.name);
    const double* pb = b.find(e.name);
    if (e.name == "conv1.sigma" || e.name == "fc1.sigma") {
      const std::string layer = e.name.substr(0, e.name.find('.'));
      const double* theta = a.find(layer + ".theta");
      const double sd = std::exp(0.5 * *a.find(layer + ".log_alpha"));
      for (int64_t i = 0; i < e.shape.numel(); ++i)
        REQUIRE(pb[i] == Approx(sd * std::abs(theta[i])).epsilon(1e-12));
      ++converted;
    } else {
      const double* pa = a.find(e.name);
      for (int64_t i = 0; i < e.shape.numel(); ++i) REQUIRE(pb[i] == pa[i]);
      ++copied;
    }
  }
  CHECK(converted == 2);
  CHECK(copied > 10);  // biases, batch norm parameters and statistics, conv2 and fc2
}
