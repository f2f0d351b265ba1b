// Forward values of the layers against hand-computed cases and naive reference loops, batch-norm
// running statistics (PyTorch's rule), prediction modes (network-wide and per layer), and the
// errors a user gets for shapes that do not fit.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "catch.hpp"
#include "direct_conv.hpp"
#include "errors.hpp"
#include "tolerance.hpp"
#include "varnet/layers/activations.hpp"
#include "varnet/layers/batchnorm.hpp"
#include "varnet/layers/conv2d.hpp"
#include "varnet/layers/dropout.hpp"
#include "varnet/layers/flatten.hpp"
#include "varnet/layers/linear.hpp"
#include "varnet/layers/pooling.hpp"
#include "varnet/layers/variance.hpp"
#include "varnet/nn/network.hpp"
#include "varnet/ops/conv.hpp"

using varnet::ConstView;
using varnet::Context;
using varnet::ConvOptions;
using varnet::Network;
using varnet::PredictMode;
using varnet::Shape;
using varnet::Tensor;
using varnet::VarianceOptions;

namespace {

using varnet::test::direct_conv;
using varnet::test::error_of;
using varnet::test::has;

template <class T>
std::vector<T> copy(ConstView<T> v) {
  return std::vector<T>(v.begin(), v.end());
}

const Context kTrain = Context::train(1, 2, 3);

}  // namespace

TEST_CASE("layers: Linear forward, hand-computed", "[layers]") {
  Network<double> net;
  net.emplace<varnet::Linear<double>>("lin", 2, 3);
  net.build(Shape(1, 2), 1);
  const double w[] = {1, 2, 3, 4, 5, 6}, b[] = {0.5, -1, 2};
  std::copy(w, w + 6, net.find("lin.weight"));
  std::copy(b, b + 3, net.find("lin.bias"));
  Tensor<double> x(Shape(2, 2));
  x[0] = 1, x[1] = 2, x[2] = -1, x[3] = 0.5;
  const std::vector<double> y = copy(net.forward(x.view(), kTrain));
  const std::vector<double> expect = {5.5, 10, 19, 0.5, -2, 0};
  const tol::Mismatch m = tol::compare<double>(y, expect, 6);
  INFO(m);
  CHECK(m.ok());
}

TEST_CASE("layers: Linear without bias declares no bias", "[layers]") {
  Network<double> net;
  net.emplace<varnet::Linear<double>>("lin", 3, 2, false);
  net.build(Shape(1, 3), 1);
  CHECK(net.table().find("lin.bias") == nullptr);
  CHECK(net.params().size() == 6);
}

TEST_CASE("layers: Conv2d on a 1x1x4x4 input, stride 2, pad 1, hand-computed", "[layers]") {
  Network<double> net;
  net.emplace<varnet::Conv2d<double>>("conv", 1, 1, ConvOptions{3, 2, 1, true});
  net.build(Shape(1, 1, 4, 4), 1);
  double* w = net.find("conv.weight");
  for (int i = 0; i < 9; ++i) w[i] = i + 1;  // 1..9, row-major 3x3
  *net.find("conv.bias") = 0.25;
  Tensor<double> x(Shape(1, 1, 4, 4));
  for (int i = 0; i < 16; ++i) x[i] = i + 1;  // 1..16
  const ConstView<double> y = net.forward(x.view(), kTrain);
  REQUIRE(y.shape == Shape(1, 1, 2, 2));
  // y[0,0]: the window centred on x(0,0) sees x(0..1, 0..1) = 1 2 / 5 6 under w(1..2, 1..2)
  // = 5 6 / 8 9: 1*5 + 2*6 + 5*8 + 6*9 = 111.
  // y[0,1]: centred on x(0,2): x(0..1, 1..3) = 2 3 4 / 6 7 8 under w rows 1..2:
  // 2*4 + 3*5 + 4*6 + 6*7 + 7*8 + 8*9 = 217.
  // y[1,0]: centred on x(2,0): x(1..3, 0..1) = 5 6 / 9 10 / 13 14 under w cols 1..2:
  // 5*2 + 6*3 + 9*5 + 10*6 + 13*8 + 14*9 = 363.
  // y[1,1]: centred on x(2,2): the full 3x3 window 6 7 8 / 10 11 12 / 14 15 16:
  // 6+14+24 + 40+55+72 + 98+120+144 = 573.
  const double expect[] = {111.25, 217.25, 363.25, 573.25};
  for (int i = 0; i < 4; ++i) {
    INFO("y[" << i << "] = " << y[i]);
    CHECK(y[i] == expect[i]);
  }
  const Tensor<double> ref = direct_conv(x, w, net.find("conv.bias"), 1, 3, 2, 1);
  const tol::Mismatch m = tol::compare<double>(y.data, ref.data(), 4);
  INFO(m);
  CHECK(m.ok());
}

TEST_CASE("layers: Conv2d matches a direct convolution loop", "[layers]") {
  struct Case {
    int64_t n, c, h, w, o, k, stride, pad;
    bool bias;
  };
  const Case c = GENERATE(Case{2, 3, 7, 5, 4, 3, 1, 1, true}, Case{1, 2, 8, 9, 3, 5, 2, 2, false},
                          Case{3, 1, 5, 5, 2, 1, 2, 0, true}, Case{2, 2, 6, 7, 3, 3, 2, 0, true},
                          Case{1, 4, 4, 4, 5, 4, 1, 1, false}, Case{2, 1, 3, 3, 1, 3, 3, 2, true});
  INFO("input (" << c.n << ", " << c.c << ", " << c.h << ", " << c.w << "), " << c.o
                 << " outputs, kernel " << c.k << ", stride " << c.stride << ", pad " << c.pad);
  Network<double> net;
  net.emplace<varnet::Conv2d<double>>("conv", c.c, c.o, ConvOptions{c.k, c.stride, c.pad, c.bias});
  net.build(Shape(1, c.c, c.h, c.w), 7);
  Tensor<double> x(Shape(c.n, c.c, c.h, c.w));
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = std::sin(0.37 * double(i) + 0.1);
  const ConstView<double> y = net.forward(x.view(), kTrain);
  const Tensor<double> ref =
      direct_conv(x, net.find("conv.weight"), c.bias ? net.find("conv.bias") : nullptr, c.o, c.k,
                  c.stride, c.pad);
  REQUIRE(y.shape == ref.shape());
  const tol::Mismatch m = tol::compare<double>(y.data, ref.data(), ref.numel());
  INFO(m);
  CHECK(m.ok());
}

// The batched layout (ops/conv.hpp) is what the GPU kernels compute and what their parity tests
// compare against; the CPU layers never call it, so it is checked here on its own.
TEST_CASE(
    "layers: batched im2col, W * columns and the channel-major scatter give the direct "
    "convolution; col2im is im2col's adjoint",
    "[layers]") {
  struct Case {
    int64_t n, c, h, w, o, k, stride, pad;
  };
  const Case c = GENERATE(Case{2, 3, 7, 5, 4, 3, 1, 1}, Case{1, 2, 8, 9, 3, 5, 2, 2},
                          Case{3, 1, 5, 6, 2, 3, 1, 2}, Case{2, 2, 6, 7, 3, 3, 2, 0},
                          Case{1, 4, 4, 4, 5, 4, 1, 1}, Case{2, 1, 3, 3, 1, 3, 3, 2});
  INFO("input (" << c.n << ", " << c.c << ", " << c.h << ", " << c.w << "), " << c.o
                 << " outputs, kernel " << c.k << ", stride " << c.stride << ", pad " << c.pad);
  varnet::ops::ConvGeometry g;
  g.in_c = c.c, g.in_h = c.h, g.in_w = c.w, g.out_c = c.o, g.k_h = c.k, g.k_w = c.k;
  g.stride = c.stride, g.pad = c.pad;
  const int64_t R = g.rows(), P = g.plane(), NP = c.n * P;
  Tensor<double> x(Shape(c.n, c.c, c.h, c.w));
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = std::sin(0.37 * double(i) + 0.1);
  std::vector<double> w(size_t(c.o * R)), bias(size_t(c.o));
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::cos(0.23 * double(i));
  for (size_t i = 0; i < bias.size(); ++i) bias[i] = 0.5 - 0.3 * double(i);

  std::vector<double> cols(size_t(R * NP), -7.0);  // not zero: im2col must write every entry
  varnet::ops::im2col(x.data(), c.n, g, cols.data());
  std::vector<double> y2(size_t(c.o * NP), 0.0);  // Y2 (O, N * P) = W (O, R) * cols (R, N * P)
  for (int64_t o = 0; o < c.o; ++o)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t j = 0; j < NP; ++j)
        y2[size_t(o * NP + j)] += w[size_t(o * R + r)] * cols[size_t(r * NP + j)];
  Tensor<double> y(Shape(c.n, c.o, g.out_h(), g.out_w()));
  varnet::ops::channel_major_to_nchw(y2.data(), bias.data(), c.n, c.o, P, y.data());
  const Tensor<double> ref = direct_conv(x, w.data(), bias.data(), c.o, c.k, c.stride, c.pad);
  const tol::Mismatch m = tol::compare<double>(y.data(), ref.data(), ref.numel());
  INFO(m);
  CHECK(m.ok());

  // The scatter's inverse brings Y2 back (without the bias).
  varnet::ops::channel_major_to_nchw(y2.data(), static_cast<const double*>(nullptr), c.n, c.o, P,
                                     y.data());
  std::vector<double> back(y2.size(), 0.0);
  varnet::ops::nchw_to_channel_major(y.data(), c.n, c.o, P, back.data());
  CHECK(back == y2);

  // <im2col(x), D> = <x, col2im(D)> for any D: col2im is the transpose that backward needs.
  std::vector<double> d(cols.size());
  for (size_t i = 0; i < d.size(); ++i) d[i] = std::cos(0.71 * double(i) + 0.3);
  Tensor<double> dx(x.shape());
  for (int64_t i = 0; i < dx.numel(); ++i) dx[i] = 99.0;  // col2im overwrites
  varnet::ops::col2im(d.data(), c.n, g, dx.data());
  double lhs = 0, rhs = 0;
  for (size_t i = 0; i < d.size(); ++i) lhs += cols[i] * d[i];
  for (int64_t i = 0; i < x.numel(); ++i) rhs += x[i] * dx[i];
  CHECK(lhs == Approx(rhs).epsilon(1e-12));
}

TEST_CASE("layers: MaxPool2d forward and tie handling", "[layers]") {
  SECTION("kernel 2, stride 2 on 4x4") {
    Network<double> net;
    net.emplace<varnet::MaxPool2d<double>>("pool", 2);
    net.build(Shape(1, 1, 4, 4), 1);
    Tensor<double> x(Shape(1, 1, 4, 4));
    const double v[] = {1, 5, 2, 0, 3, -1, 7, 4, -2, -3, 0, 0, -4, -1, 0, 9};
    std::copy(v, v + 16, x.data());
    const std::vector<double> y = copy(net.forward(x.view(), kTrain));
    CHECK(y == std::vector<double>{5, 7, -1, 9});
  }
  SECTION("kernel 3, stride 2 on 6x6 (overlapping windows), the last column and row dropped") {
    Network<double> net;
    net.emplace<varnet::MaxPool2d<double>>("pool", 3, 2);
    net.build(Shape(1, 1, 6, 6), 1);
    CHECK(net.output_shape() == Shape(1, 1, 2, 2));
    Tensor<double> x(Shape(1, 1, 6, 6));
    for (int i = 0; i < 36; ++i) x[i] = double((i * 7) % 36);  // a permutation of 0..35
    const std::vector<double> y = copy(net.forward(x.view(), kTrain));
    // window (0,0): rows 0-2, cols 0-2; (0,1): rows 0-2, cols 2-4; etc.
    std::vector<double> expect(4, -1);
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j)
        for (int a = 0; a < 3; ++a)
          for (int b = 0; b < 3; ++b)
            expect[size_t(i * 2 + j)] =
                std::max(expect[size_t(i * 2 + j)], x[(2 * i + a) * 6 + 2 * j + b]);
    CHECK(y == expect);
    CHECK(y == std::vector<double>{26, 34, 32, 33});
  }
  SECTION("ties send the gradient to the first maximum only") {
    Network<double> net;
    net.emplace<varnet::MaxPool2d<double>>("pool", 2);
    net.build(Shape(1, 1, 2, 2), 1);
    Tensor<double> x(Shape(1, 1, 2, 2), 3.0);
    net.forward(x.view(), kTrain);
    Tensor<double> g(Shape(1, 1, 1, 1), 1.0);
    const std::vector<double> dx = copy(net.backward(g.view(), kTrain, 0, true));
    CHECK(dx == std::vector<double>{1, 0, 0, 0});
    const double later[] = {0, 3, 1, 3};  // tie between the second and the fourth
    std::copy(later, later + 4, x.data());
    net.forward(x.view(), kTrain);
    CHECK(copy(net.backward(g.view(), kTrain, 0, true)) == std::vector<double>{0, 1, 0, 0});
  }
}

// The float path of 2x2/2 pooling runs four windows at a time in SSE registers (ops/pool2x2.hpp)
// with a scalar tail: checked against the plain "first maximum" loop on widths that use the
// vector loop, the tail or both, odd heights and widths, many ties and NaNs.
TEST_CASE("layers: MaxPool2d 2x2 float fast path against a naive loop", "[layers]") {
  for (const int w : {2, 7, 8, 9, 12, 17, 24}) {
    const int h = w % 2 ? w + 2 : w + 1;  // odd heights leave the last row out
    const int oh = h / 2, ow = w / 2;
    Network<float> net;
    net.emplace<varnet::MaxPool2d<float>>("pool", 2);
    net.build(Shape(1, 3, h, w), 1);
    Tensor<float> x(Shape(2, 3, h, w));
    uint32_t state = 12345;  // three levels from an LCG: ties in every position of a window
    for (int64_t i = 0; i < x.numel(); ++i) {
      state = state * 1664525u + 1013904223u;
      x[i] = float(state >> 30) - 1;
    }
    x[5] = std::nanf("");
    x[int64_t(w) + 1] = std::nanf("");
    const std::vector<float> y = copy(net.forward(x.view(), kTrain));
    Tensor<float> g(Shape(2, 3, oh, ow));
    for (int64_t i = 0; i < g.numel(); ++i) g[i] = float(i + 1);
    const std::vector<float> dx = copy(net.backward(g.view(), kTrain, 0, true));
    std::vector<float> want_y(y.size()), want_dx(dx.size(), 0.0f);
    for (int p = 0; p < 6; ++p)
      for (int i = 0; i < oh; ++i)
        for (int j = 0; j < ow; ++j) {
          int64_t best = int64_t(p) * h * w + 2 * i * w + 2 * j;
          for (const int64_t at : {best + 1, best + w, best + w + 1})
            if (x[at] > x[best]) best = at;
          const int64_t o = (int64_t(p) * oh + i) * ow + j;
          want_y[size_t(o)] = x[best];
          want_dx[size_t(best)] = g[o];
        }
    INFO("width " << w << ", height " << h);
    for (size_t i = 0; i < y.size(); ++i) {
      INFO("output " << i);
      CHECK((y[i] == want_y[i] || (std::isnan(y[i]) && std::isnan(want_y[i]))));
    }
    CHECK(dx == want_dx);
  }
}

TEST_CASE("layers: activations and Flatten forward values", "[layers]") {
  Tensor<double> x(Shape(1, 5));
  const double v[] = {-2, -0.5, 0, 0.5, 3};
  std::copy(v, v + 5, x.data());
  SECTION("ReLU") {
    Network<double> net;
    net.emplace<varnet::ReLU<double>>("f");
    net.build(Shape(1, 5), 1);
    CHECK(copy(net.forward(x.view(), kTrain)) == std::vector<double>{0, 0, 0, 0.5, 3});
  }
  SECTION("LeakyReLU") {
    Network<double> net;
    net.emplace<varnet::LeakyReLU<double>>("f", 0.25);
    net.build(Shape(1, 5), 1);
    CHECK(copy(net.forward(x.view(), kTrain)) == std::vector<double>{-0.5, -0.125, 0, 0.5, 3});
  }
  SECTION("Tanh") {
    Network<double> net;
    net.emplace<varnet::Tanh<double>>("f");
    net.build(Shape(1, 5), 1);
    const std::vector<double> y = copy(net.forward(x.view(), kTrain));
    for (int i = 0; i < 5; ++i) CHECK(tol::close<double>(y[size_t(i)], std::tanh(v[i])));
  }
  SECTION("Flatten keeps (C, H, W) order") {
    Network<double> net;
    net.emplace<varnet::Flatten<double>>("f");
    net.build(Shape(1, 2, 2, 3), 1);
    CHECK(net.output_shape() == Shape(1, 12));
    Tensor<double> x4(Shape(2, 2, 2, 3));
    for (int64_t i = 0; i < x4.numel(); ++i) x4[i] = double(i);
    const ConstView<double> y = net.forward(x4.view(), kTrain);
    CHECK(y.shape == Shape(2, 12));
    CHECK(copy(y) == std::vector<double>(x4.data(), x4.data() + 24));
  }
}

TEST_CASE("layers: BatchNorm normalises with batch statistics and updates running ones as PyTorch",
          "[layers]") {
  // PyTorch: running_mean = 0.9 running_mean + 0.1 mean; running_var = 0.9 running_var + 0.1
  // var_unbiased; the output uses the biased batch variance.
  const double eps = 1e-5;
  SECTION("dense input (N, C)") {
    Network<double> net;
    net.emplace<varnet::BatchNorm<double>>("bn", 2);
    net.build(Shape(1, 2), 1);
    double* gamma = net.find("bn.weight");
    double* beta = net.find("bn.bias");
    gamma[0] = 2, gamma[1] = 0.5, beta[0] = 1, beta[1] = -1;
    Tensor<double> x(Shape(4, 2));
    const double v[] = {1, 0, 2, 0, 3, 1, 4, -1};  // channel 0: 1 2 3 4; channel 1: 0 0 1 -1
    std::copy(v, v + 8, x.data());
    const std::vector<double> y = copy(net.forward(x.view(), kTrain));
    const double m0 = 2.5, var0 = 1.25, m1 = 0, var1 = 0.5;
    for (int n = 0; n < 4; ++n) {
      CHECK(tol::close<double>(y[size_t(2 * n)], 2 * (v[2 * n] - m0) / std::sqrt(var0 + eps) + 1));
      CHECK(tol::close<double>(y[size_t(2 * n + 1)],
                               0.5 * (v[2 * n + 1] - m1) / std::sqrt(var1 + eps) - 1));
    }
    const double* rm = net.find("bn.running_mean");
    const double* rv = net.find("bn.running_var");
    double erm0 = 0.1 * m0, erv0 = 0.9 + 0.1 * var0 * 4 / 3;
    double erm1 = 0.1 * m1, erv1 = 0.9 + 0.1 * var1 * 4 / 3;
    CHECK(tol::close<double>(rm[0], erm0));
    CHECK(tol::close<double>(rv[0], erv0));
    CHECK(tol::close<double>(rm[1], erm1));
    CHECK(tol::close<double>(rv[1], erv1));

    // a second batch: the momentum applies to the running values, not to the initial ones
    for (int64_t i = 0; i < 8; ++i) x[i] = 2 * v[i] + 1;  // channel 0: 3 5 7 9; 1: 1 1 3 -1
    net.forward(x.view(), kTrain);
    erm0 = 0.9 * erm0 + 0.1 * 6, erv0 = 0.9 * erv0 + 0.1 * 20.0 / 3;
    erm1 = 0.9 * erm1 + 0.1 * 1, erv1 = 0.9 * erv1 + 0.1 * 8.0 / 3;
    CHECK(tol::close<double>(rm[0], erm0));
    CHECK(tol::close<double>(rv[0], erv0));
    CHECK(tol::close<double>(rm[1], erm1));
    CHECK(tol::close<double>(rv[1], erv1));

    // evaluation uses the running statistics and leaves them alone
    const std::vector<double> ye =
        copy(net.forward(x.view(), Context::eval(1, PredictMode::sample, 0)));
    for (int n = 0; n < 4; ++n)
      CHECK(
          tol::close<double>(ye[size_t(2 * n)], 2 * (x[2 * n] - erm0) / std::sqrt(erv0 + eps) + 1));
    CHECK(tol::close<double>(rm[0], erm0));
    CHECK(tol::close<double>(rv[0], erv0));

    // evaluation with batch statistics normalises like training but updates nothing
    const std::vector<double> yb =
        copy(net.forward(x.view(), Context::eval(1, PredictMode::sample, 0, true)));
    CHECK(tol::close<double>(yb[0], 2 * (3 - 6) / std::sqrt(5 + eps) + 1));
    CHECK(tol::close<double>(rm[0], erm0));
    CHECK(tol::close<double>(rv[0], erv0));
  }
  SECTION("conv input (N, C, H, W): statistics over N, H and W") {
    Network<double> net;
    net.emplace<varnet::BatchNorm<double>>("bn", 2);
    net.build(Shape(1, 2, 1, 3), 1);
    Tensor<double> x(Shape(2, 2, 1, 3));
    // channel 0: 1 2 3 | 4 5 6 -> mean 3.5, biased var 35/12; channel 1: all 2 -> var 0
    const double v[] = {1, 2, 3, 2, 2, 2, 4, 5, 6, 2, 2, 2};
    std::copy(v, v + 12, x.data());
    const std::vector<double> y = copy(net.forward(x.view(), kTrain));
    const double var0 = 35.0 / 12;
    CHECK(tol::close<double>(y[0], (1 - 3.5) / std::sqrt(var0 + eps)));
    CHECK(tol::close<double>(y[7], (5 - 3.5) / std::sqrt(var0 + eps)));
    CHECK(y[3] == 0);
    CHECK(tol::close<double>(net.find("bn.running_mean")[0], 0.35));
    CHECK(tol::close<double>(net.find("bn.running_var")[0], 0.9 + 0.1 * var0 * 6 / 5));
    CHECK(tol::close<double>(net.find("bn.running_mean")[1], 0.2));
    CHECK(tol::close<double>(net.find("bn.running_var")[1], 0.9));
  }
  SECTION("one value per channel cannot give batch statistics") {
    Network<double> net;
    net.emplace<varnet::BatchNorm<double>>("bn", 3);
    net.build(Shape(1, 3), 1);
    Tensor<double> x(Shape(1, 3), 1.0);
    const std::string e = error_of([&] { net.forward(x.view(), kTrain); });
    INFO(e);
    CHECK(has(e, "BatchNorm 'bn'"));
    // evaluation with running statistics works on a single sample
    CHECK(
        error_of([&] { net.forward(x.view(), Context::eval(1, PredictMode::sample, 0)); }).empty());
  }
}

TEST_CASE(
    "layers: variance layers start as the reference: sigma ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))",
    "[layers]") {
  // sigma itself, or log sigma2 = log(u^2) with u drawn the same way. Checked: every sigma^2
  // within bound^2, the largest near it, and the mean of sigma^2 at bound^2 / 3 within 5
  // standard errors (u^2 for u ~ U(-b, b) has variance 4 b^4 / 45).
  VarianceOptions vo;
  vo.param = GENERATE(varnet::VarianceParam::sigma, varnet::VarianceParam::log_sigma2);
  const bool conv = GENERATE(false, true);
  INFO(varnet::to_string(vo.param)
       << (conv ? ", VarianceConv2d 12 -> 40, 3x3" : ", VarianceLinear 150 -> 60"));
  Network<double> net;
  int64_t fan_in = 0;
  if (conv) {
    net.emplace<varnet::VarianceConv2d<double>>("v", 12, 40, ConvOptions{3, 1, 1}, vo);
    net.build(Shape(1, 12, 5, 5), 31);
    fan_in = 12 * 9;
  } else {
    net.emplace<varnet::VarianceLinear<double>>("v", 150, 60, vo);
    net.build(Shape(1, 150), 31);
    fan_in = 150;
  }
  const bool sigma = vo.param == varnet::VarianceParam::sigma;
  const auto& ref = *net.table().find(sigma ? "v.sigma" : "v.log_sigma2");
  const double* p = net.find(sigma ? "v.sigma" : "v.log_sigma2");
  const int64_t n = ref.shape.numel();
  const double b2 = 1.0 / double(fan_in);
  double largest = 0, sum = 0;
  int64_t outside = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double s2 = sigma ? p[i] * p[i] : std::exp(p[i]);
    outside += s2 > b2 * (1 + 1e-12) + 1e-12;  // log_square_uniform adds 1e-12 to u^2
    largest = std::max(largest, s2);
    sum += s2;
  }
  INFO(n << " values; bound^2 " << b2 << ", largest sigma^2 " << largest << ", mean "
         << sum / double(n));
  CHECK(outside == 0);
  CHECK(largest > 0.95 * b2);
  CHECK(std::abs(sum / double(n) - b2 / 3) <= 5 * std::sqrt(4.0 / 45 / double(n)) * b2);
}

TEST_CASE("layers: a variance layer in mean mode outputs its bias, whatever the input",
          "[layers]") {
  VarianceOptions vo;
  vo.bias = GENERATE(true, false);
  vo.dist = GENERATE(varnet::WeightDist::gaussian, varnet::WeightDist::bernoulli,
                     varnet::WeightDist::uniform);
  INFO(varnet::to_string(vo.dist) << ", bias " << vo.bias);
  const Context mean = Context::eval(5, PredictMode::mean, 3);
  SECTION("VarianceLinear") {
    Network<double> net;
    net.emplace<varnet::VarianceLinear<double>>("v", 4, 3, vo);
    net.build(Shape(1, 4), 2);
    Tensor<double> x(Shape(3, 4));
    for (int64_t i = 0; i < x.numel(); ++i) x[i] = double(i) - 5;
    const std::vector<double> y = copy(net.forward(x.view(), mean));
    for (int64_t r = 0; r < 3; ++r)
      for (int64_t o = 0; o < 3; ++o)
        CHECK(y[size_t(r * 3 + o)] == (vo.bias ? net.find("v.bias")[o] : 0.0));
    // in sample mode the output does depend on the input
    const std::vector<double> ys = copy(net.forward(x.view(), kTrain));
    CHECK(ys != y);
  }
  SECTION("VarianceConv2d") {
    Network<double> net;
    net.emplace<varnet::VarianceConv2d<double>>("v", 2, 3, ConvOptions{3, 1, 1}, vo);
    net.build(Shape(1, 2, 4, 5), 2);
    Tensor<double> x(Shape(2, 2, 4, 5));
    for (int64_t i = 0; i < x.numel(); ++i) x[i] = std::cos(double(i));
    const ConstView<double> y = net.forward(x.view(), mean);
    REQUIRE(y.shape == Shape(2, 3, 4, 5));
    int64_t wrong = 0;
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t o = 0; o < 3; ++o)
        for (int64_t p = 0; p < 20; ++p)
          wrong += y[(n * 3 + o) * 20 + p] != (vo.bias ? net.find("v.bias")[o] : 0.0);
    CHECK(wrong == 0);
  }
}

TEST_CASE("layers: per-layer prediction mode overrides the network-wide one", "[layers]") {
  VarianceOptions vo;
  vo.bias = true;
  Network<double> net;
  net.emplace<varnet::VarianceLinear<double>>("v1", 4, 6, vo);
  net.emplace<varnet::ReLU<double>>("relu");
  net.emplace<varnet::VarianceLinear<double>>("v2", 6, 3, vo);
  net.build(Shape(1, 4), 3);
  Tensor<double> x(Shape(2, 4)), x2(Shape(2, 4));
  for (int64_t i = 0; i < 8; ++i) x[i] = 0.5 + 0.1 * double(i), x2[i] = -1.0 + 0.3 * double(i);
  const double* b2 = net.find("v2.bias");
  const auto sample = [](uint32_t stream) { return Context::train(9, 1, stream); };

  SECTION("network-wide sample, output layer set to mean: the output is its bias") {
    net.set_mode_override("v2", PredictMode::mean);
    for (uint32_t s = 0; s < 3; ++s) {
      const std::vector<double> y = copy(net.forward(x.view(), sample(s)));
      for (int64_t r = 0; r < 2; ++r)
        for (int64_t o = 0; o < 3; ++o) CHECK(y[size_t(r * 3 + o)] == b2[o]);
    }
  }
  SECTION("network-wide sample, first layer set to mean: the output no longer sees the input") {
    net.set_mode_override("v1", PredictMode::mean);
    const std::vector<double> y = copy(net.forward(x.view(), sample(0)));
    CHECK(copy(net.forward(x2.view(), sample(0))) == y);
    CHECK(copy(net.forward(x.view(), sample(1))) != y);  // v2 still samples
    net.set_mode_override("v1", std::nullopt);           // cleared: back to the network-wide mode
    CHECK(copy(net.forward(x2.view(), sample(0))) != y);
  }
  SECTION("network-wide mean, output layer set to sample: the output varies with the stream") {
    net.set_mode_override("v2", PredictMode::sample);
    const std::vector<double> y0 =
        copy(net.forward(x.view(), Context::eval(9, PredictMode::mean, 0)));
    const std::vector<double> y1 =
        copy(net.forward(x.view(), Context::eval(9, PredictMode::mean, 1)));
    CHECK(y0 != y1);
    // v1 is in mean mode: the input does not matter
    CHECK(copy(net.forward(x2.view(), Context::eval(9, PredictMode::mean, 1))) == y1);
  }
}

TEST_CASE("layers: shape errors name the layers and the shapes", "[layers]") {
  SECTION("incompatible consecutive layers") {
    Network<double> net;
    net.emplace<varnet::Linear<double>>("first", 10, 5);
    net.emplace<varnet::Linear<double>>("second", 6, 3);
    const std::string e = error_of([&] { net.build(Shape(1, 10), 1); });
    INFO(e);
    CHECK(has(e, "'first'"));
    CHECK(has(e, "'second'"));
    CHECK(has(e, "(1, 5, 1, 1)"));  // what the first produces
    CHECK(has(e, "(N, 6, 1, 1)"));  // what the second expects
  }
  SECTION("a convolution after a dense layer, channel mismatch") {
    Network<double> net;
    net.emplace<varnet::Conv2d<double>>("c1", 1, 4, ConvOptions{3, 1, 1});
    net.emplace<varnet::Conv2d<double>>("c2", 3, 2, ConvOptions{3, 1, 1});
    const std::string e = error_of([&] { net.build(Shape(1, 1, 8, 8), 1); });
    INFO(e);
    CHECK(has(e, "'c1'"));
    CHECK(has(e, "'c2'"));
    CHECK(has(e, "(1, 4, 8, 8)"));
    CHECK(has(e, "3 channels"));
  }
  SECTION("the first layer against the network input") {
    Network<double> net;
    net.emplace<varnet::VarianceLinear<double>>("v", 7, 2);
    const std::string e = error_of([&] { net.build(Shape(1, 8), 1); });
    INFO(e);
    CHECK(has(e, "'v'"));
    CHECK(has(e, "network input"));
    CHECK(has(e, "(1, 8, 1, 1)"));
    CHECK(has(e, "(N, 7, 1, 1)"));
  }
  SECTION("a kernel larger than the (padded) input") {
    const bool variance = GENERATE(false, true);
    Network<double> net;
    if (variance)
      net.emplace<varnet::VarianceConv2d<double>>("big", 1, 2, ConvOptions{5, 1, 0});
    else
      net.emplace<varnet::Conv2d<double>>("big", 1, 2, ConvOptions{5, 1, 0});
    const std::string e = error_of([&] { net.build(Shape(1, 1, 3, 4), 1); });
    INFO(e);
    CHECK(has(e, "'big'"));
    CHECK(has(e, "5x5"));
    CHECK(has(e, "(1, 1, 3, 4)"));
    // padding 1 makes it fit: 3 + 2 >= 5
    Network<double> ok;
    ok.emplace<varnet::Conv2d<double>>("big", 1, 2, ConvOptions{5, 1, 1});
    CHECK(error_of([&] { ok.build(Shape(1, 1, 3, 4), 1); }).empty());
    CHECK(ok.output_shape() == Shape(1, 2, 1, 2));
  }
  SECTION("a pooling window larger than the input") {
    Network<double> net;
    net.emplace<varnet::MaxPool2d<double>>("pool", 3);
    const std::string e = error_of([&] { net.build(Shape(1, 2, 2, 5), 1); });
    INFO(e);
    CHECK(has(e, "'pool'"));
    CHECK(has(e, "(1, 2, 2, 5)"));
  }
  SECTION("forward with a wrong input shape") {
    Network<double> net;
    net.emplace<varnet::Conv2d<double>>("c", 1, 2, ConvOptions{3, 1, 0});
    net.build(Shape(1, 1, 6, 6), 1);
    Tensor<double> x(Shape(2, 1, 6, 5));
    const std::string e = error_of([&] { net.forward(x.view(), kTrain); });
    INFO(e);
    CHECK(has(e, "Network::forward"));
    CHECK(has(e, "(2, 1, 6, 5)"));
    CHECK(has(e, "(N > 0, 1, 6, 6)"));
    Tensor<double> empty(Shape(0, 1, 6, 6));
    CHECK_FALSE(error_of([&] { net.forward(empty.view(), kTrain); }).empty());
  }
  SECTION("backward without a forward, or with a wrong gradient shape") {
    Network<double> net;
    net.emplace<varnet::Linear<double>>("l", 3, 2);
    net.build(Shape(1, 3), 1);
    Tensor<double> g(Shape(2, 2)), x(Shape(2, 3), 1.0), bad(Shape(2, 3));
    CHECK(has(error_of([&] { net.backward(g.view(), kTrain); }), "Network::backward"));
    net.forward(x.view(), kTrain);
    const std::string e = error_of([&] { net.backward(bad.view(), kTrain); });
    INFO(e);
    CHECK(has(e, "(2, 2, 1, 1)"));
    CHECK(has(e, "(2, 3, 1, 1)"));
  }
  SECTION("duplicate layer names") {
    Network<double> net;
    net.emplace<varnet::ReLU<double>>("act");
    const std::string e = error_of([&] { net.emplace<varnet::Tanh<double>>("act"); });
    INFO(e);
    CHECK(has(e, "'act'"));
    CHECK(has(e, "unique"));
    CHECK(net.size() == 1);
  }
  SECTION("adding after build, building twice") {
    Network<double> net;
    net.emplace<varnet::ReLU<double>>("act");
    net.build(Shape(1, 3), 1);
    CHECK_FALSE(error_of([&] { net.emplace<varnet::Tanh<double>>("t"); }).empty());
    CHECK_FALSE(error_of([&] { net.build(Shape(1, 3), 1); }).empty());
  }
  SECTION("bad layer arguments") {
    CHECK_FALSE(error_of([] { varnet::Linear<double>(0, 3); }).empty());
    CHECK_FALSE(error_of([] { varnet::Conv2d<double>(1, 2, ConvOptions{3, 0, 0}); }).empty());
    CHECK_FALSE(error_of([] { varnet::Dropout<double>(1.0); }).empty());
    CHECK_FALSE(error_of([] { varnet::BatchNorm<double>(2, 0.0); }).empty());
  }
}
