// Winograd F(4x4, 3x3) convolutions (ops/winograd.hpp, ops/winograd_conv.hpp): the tile
// transforms against the direct sum, the backward transforms as exact adjoints, whole
// convolutions against im2col on odd shapes and every padding, float accuracy, the layer's
// gradient check, and the algorithm rule and its errors.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "catch.hpp"
#include "gradcheck.hpp"
#include "varnet/layers/conv2d.hpp"
#include "varnet/ops/winograd.hpp"
#include "varnet/ops/winograd_conv.hpp"

using varnet::ConvAlgorithm;
using varnet::ConvOptions;
using varnet::Shape;
using varnet::ops::ConvGeometry;
namespace wg = varnet::winograd;

namespace {

template <class T>
std::vector<T> random_values(int64_t n, uint64_t seed, double lo = -1, double hi = 1) {
  gradcheck::Rng rng(seed);
  std::vector<T> v(static_cast<size_t>(n));
  for (T& e : v) e = T(rng.uniform(lo, hi));
  return v;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double e : v) m = std::max(m, std::abs(e));
  return m;
}

// max |a - b| / max(max |b|, floor): the error relative to the result's scale.
template <class A, class B>
double scaled_error(const std::vector<A>& a, const std::vector<B>& b) {
  REQUIRE(a.size() == b.size());
  double err = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return err / scale;
}

struct Case {
  int64_t n, c, o, h, w, pad;
  bool bias;
};

// Odd sizes (planes not multiples of 4, a single partial tile, one channel), every padding,
// batches across more than one group of samples.
const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {1, 1, 1, 3, 3, 0, false},  {2, 3, 2, 5, 7, 1, true},    {3, 2, 3, 9, 6, 2, false},
      {1, 4, 5, 8, 8, 1, true},   {11, 3, 4, 7, 11, 1, true},  {2, 5, 3, 13, 4, 0, true},
      {17, 2, 2, 6, 6, 2, false}, {1, 16, 16, 4, 5, 1, false},
  };
  return all;
}

ConvGeometry geometry(const Case& k) {
  return ConvGeometry{k.c, k.h, k.w, k.o, 3, 3, 1, k.pad};
}

// Forward and backward of one case by both algorithms, in T.
template <class T>
struct Both {
  std::vector<T> y_im2col, y_winograd;
  std::vector<T> dw_im2col, dw_winograd, db_im2col, db_winograd, dx_im2col, dx_winograd;
};

template <class T>
Both<T> run_both(const Case& k, uint64_t seed) {
  namespace ops = varnet::ops;
  const ConvGeometry g = geometry(k);
  const int64_t ysize = k.n * k.o * g.out_h() * g.out_w(), xsize = k.n * k.c * k.h * k.w;
  const auto x = random_values<T>(xsize, seed);
  const auto w = random_values<T>(k.o * k.c * 9, seed + 1);
  const auto bias = random_values<T>(k.o, seed + 2);
  const auto dy = random_values<T>(ysize, seed + 3);
  const T* b = k.bias ? bias.data() : nullptr;
  Both<T> r;
  r.y_im2col.assign(size_t(ysize), T(0));
  r.y_winograd.assign(size_t(ysize), T(-7));  // every element must be written
  ops::conv_forward_samples(x.data(), w.data(), b, r.y_im2col.data(), k.n, g);
  std::vector<T> scratch(
      size_t(std::max(ops::winograd_forward_scratch(g), ops::winograd_backward_scratch(k.n, g))));
  ops::winograd_forward(x.data(), w.data(), b, r.y_winograd.data(), k.n, g, scratch.data());

  // Gradients accumulate into non-zero buffers; dx is overwritten.
  r.dw_im2col = random_values<T>(k.o * k.c * 9, seed + 4);
  r.dw_winograd = r.dw_im2col;
  r.db_im2col = random_values<T>(k.o, seed + 5);
  r.db_winograd = r.db_im2col;
  r.dx_im2col.assign(size_t(xsize), T(3));
  r.dx_winograd.assign(size_t(xsize), T(-3));
  std::vector<T> partials(size_t(ops::conv_backward_scratch(k.n, g)));
  ops::conv_backward_samples(x.data(), dy.data(), w.data(), r.dw_im2col.data(), r.db_im2col.data(),
                             r.dx_im2col.data(), k.n, g, partials.data());
  ops::winograd_backward(x.data(), dy.data(), w.data(), r.dw_winograd.data(), r.db_winograd.data(),
                         r.dx_winograd.data(), k.n, g, scratch.data());
  return r;
}

}  // namespace

TEST_CASE("winograd: one tile equals the direct 3x3 correlation", "[winograd]") {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    const auto dv = random_values<double>(36, seed), gv = random_values<double>(9, seed + 100);
    double d[6][6], g[3][3], u[6][6], v[6][6], m[6][6], y[4][4];
    for (int i = 0; i < 36; ++i) d[i / 6][i % 6] = dv[size_t(i)];
    for (int i = 0; i < 9; ++i) g[i / 3][i % 3] = gv[size_t(i)];
    wg::filter_transform(g, u);
    wg::input_transform(d, v);
    for (int i = 0; i < 6; ++i)
      for (int j = 0; j < 6; ++j) m[i][j] = u[i][j] * v[i][j];
    wg::output_transform(m, y);
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        double direct = 0;
        for (int a = 0; a < 3; ++a)
          for (int b = 0; b < 3; ++b) direct += g[a][b] * d[i + a][j + b];
        INFO("seed " << seed << ", output (" << i << ", " << j << ")");
        CHECK(std::abs(y[i][j] - direct) <= 1e-13);
      }
  }
}

TEST_CASE("winograd: the backward transforms are the forward ones' adjoints", "[winograd]") {
  // <A^T m A, y> = <m, A y A^T> and <G g G^T, u> = <g, G^T u G> for random tensors.
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    const auto mv = random_values<double>(36, seed), yv = random_values<double>(16, seed + 50);
    const auto gv = random_values<double>(9, seed + 70), uv = random_values<double>(36, seed + 90);
    double m[6][6], y[4][4], g[3][3], u[6][6], fy[4][4], am[6][6], fu[6][6], ag[3][3];
    for (int i = 0; i < 36; ++i) m[i / 6][i % 6] = mv[size_t(i)], u[i / 6][i % 6] = uv[size_t(i)];
    for (int i = 0; i < 16; ++i) y[i / 4][i % 4] = yv[size_t(i)];
    for (int i = 0; i < 9; ++i) g[i / 3][i % 3] = gv[size_t(i)];
    wg::output_transform(m, fy);
    wg::output_grad_transform(y, am);
    wg::filter_transform(g, fu);
    wg::filter_grad_transform(u, ag);
    double lhs1 = 0, rhs1 = 0, lhs2 = 0, rhs2 = 0;
    for (int i = 0; i < 16; ++i) lhs1 += fy[i / 4][i % 4] * y[i / 4][i % 4];
    for (int i = 0; i < 36; ++i) rhs1 += m[i / 6][i % 6] * am[i / 6][i % 6];
    for (int i = 0; i < 36; ++i) lhs2 += fu[i / 6][i % 6] * u[i / 6][i % 6];
    for (int i = 0; i < 9; ++i) rhs2 += g[i / 3][i % 3] * ag[i / 3][i % 3];
    INFO("seed " << seed);
    CHECK(std::abs(lhs1 - rhs1) <= 1e-12 * (1 + std::abs(lhs1)));
    CHECK(std::abs(lhs2 - rhs2) <= 1e-13 * (1 + std::abs(lhs2)));
  }
}

TEST_CASE("winograd: convolutions equal im2col's in double, forward and backward", "[winograd]") {
  for (const Case& k : cases()) {
    INFO("n " << k.n << ", " << k.c << " -> " << k.o << ", " << k.h << "x" << k.w << ", pad "
              << k.pad << (k.bias ? ", bias" : ""));
    const Both<double> r = run_both<double>(k, 1000 + uint64_t(k.h * 31 + k.w));
    // Double-precision rounding through transforms with coefficients up to 8 and 1/24: far
    // below 1e-12 of the result's scale; an indexing error is O(1).
    CHECK(scaled_error(r.y_winograd, r.y_im2col) < 1e-12);
    CHECK(scaled_error(r.dw_winograd, r.dw_im2col) < 1e-12);
    CHECK(scaled_error(r.db_winograd, r.db_im2col) < 1e-12);
    CHECK(scaled_error(r.dx_winograd, r.dx_im2col) < 1e-12);
  }
}

TEST_CASE("winograd: float results stay within 2e-5 of the exact convolution", "[winograd]") {
  // F(4x4, 3x3) in float loses a few bits to its transforms (Lavin and Gray report about 10x
  // im2col's error); measured here, the worst of these three is 4.6e-6 of the result's
  // scale, so 2e-5 fails on any real error while absorbing the expected rounding.
  const Case k{4, 32, 16, 12, 12, 1, true};
  const Both<double> exact = run_both<double>(k, 77);
  const Both<float> f = run_both<float>(k, 77);
  CHECK(max_abs(exact.y_im2col) > 1);
  CHECK(scaled_error(f.y_winograd, exact.y_im2col) < 2e-5);
  CHECK(scaled_error(f.dw_winograd, exact.dw_im2col) < 2e-5);
  CHECK(scaled_error(f.dx_winograd, exact.dx_im2col) < 2e-5);
  // and the float im2col itself is closer, as the transforms predict
  CHECK(scaled_error(f.y_im2col, exact.y_im2col) < scaled_error(f.y_winograd, exact.y_im2col));
}

TEST_CASE("gradcheck: Conv2d by Winograd", "[winograd][gradcheck]") {
  for (const Case& k : cases()) {
    if (k.n > 3 || k.c * k.o > 30) continue;  // central differences over every weight: keep small
    INFO("n " << k.n << ", " << k.c << " -> " << k.o << ", " << k.h << "x" << k.w << ", pad "
              << k.pad);
    ConvOptions o{3, 1, k.pad, k.bias, ConvAlgorithm::Winograd};
    gradcheck::Options opt;
    opt.input = Shape(k.n, k.c, k.h, k.w);
    auto layer = std::make_unique<varnet::Conv2d<double>>(k.c, k.o, o);
    REQUIRE(layer->winograd(opt.input));
    gradcheck::check_layer(std::move(layer), opt);
  }
}

TEST_CASE("winograd: Auto's rule and the refusals", "[winograd]") {
  using varnet::ops::uses_winograd;
  // The VGG-like network's layers: Winograd at 32x32, 16x16 and 8x8 from 16 channels on.
  CHECK(uses_winograd(ConvAlgorithm::Auto, ConvGeometry{64, 32, 32, 64, 3, 3, 1, 1}));
  CHECK(uses_winograd(ConvAlgorithm::Auto, ConvGeometry{256, 8, 8, 256, 3, 3, 1, 1}));
  CHECK_FALSE(uses_winograd(ConvAlgorithm::Auto, ConvGeometry{3, 32, 32, 64, 3, 3, 1, 1}));
  CHECK_FALSE(uses_winograd(ConvAlgorithm::Auto, ConvGeometry{512, 4, 4, 512, 3, 3, 1, 1}));
  CHECK_FALSE(uses_winograd(ConvAlgorithm::Auto, ConvGeometry{64, 32, 32, 64, 5, 5, 1, 2}));
  CHECK_FALSE(uses_winograd(ConvAlgorithm::Auto, ConvGeometry{64, 32, 32, 64, 3, 3, 2, 1}));
  CHECK_FALSE(uses_winograd(ConvAlgorithm::Im2col, ConvGeometry{64, 32, 32, 64, 3, 3, 1, 1}));
  CHECK(uses_winograd(ConvAlgorithm::Winograd, ConvGeometry{1, 3, 3, 1, 3, 3, 1, 0}));

  const auto refused = [](ConvOptions o) {
    o.algorithm = ConvAlgorithm::Winograd;
    CHECK_THROWS_WITH(varnet::Conv2d<float>(4, 4, o),
                      Catch::Contains("a 3x3 kernel, stride 1 and padding 0-2 for Winograd") &&
                          Catch::Contains(std::string("kernel ") + std::to_string(o.kernel)));
  };
  refused(ConvOptions{5, 1, 2});
  refused(ConvOptions{3, 2, 1});
  refused(ConvOptions{3, 1, 3});
  CHECK_NOTHROW(varnet::Conv2d<float>(4, 4, ConvOptions{3, 1, 2, true, ConvAlgorithm::Winograd}));
  CHECK(varnet::Conv2d<float>(4, 4, ConvOptions{3, 1, 1, true, ConvAlgorithm::Winograd})
            .describe()
            .find("winograd") != std::string::npos);
}
