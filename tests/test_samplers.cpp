// Statistical checks of every sampler: LRT outputs have the mean and variance the layer promises,
// Bernoulli and uniform weights have the intended values and moments, the raw Philox normals and
// uniforms have the right moments, and dropout keeps the right fraction with the right scale.
//
// Bounds are z-tests: |estimate - truth| <= 5 standard errors. All seeds are fixed, so the tests
// are deterministic; at 5 sigma a correct sampler fails a given bound with probability ~6e-7.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "catch.hpp"
#include "direct_conv.hpp"
#include "tolerance.hpp"
#include "varnet/core/random.hpp"
#include "varnet/layers/dropout.hpp"
#include "varnet/layers/linear.hpp"
#include "varnet/layers/variance.hpp"
#include "varnet/nn/network.hpp"
#include "varnet/ops/noise_cpu.hpp"

using varnet::ConstView;
using varnet::Context;
using varnet::ConvOptions;
using varnet::Network;
using varnet::NoiseKey;
using varnet::PredictMode;
using varnet::Shape;
using varnet::Tensor;
using varnet::VarianceOptions;
using varnet::VarianceParam;
using varnet::WeightDist;
using varnet::test::direct_conv_variance;

namespace {

constexpr double kSigmas = 5.0;

// Running moments of one scalar.
struct Moments {
  double n = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0;
  void add(double x) {
    n += 1;
    s1 += x;
    s2 += x * x;
    s3 += x * x * x;
    s4 += x * x * x * x;
  }
  double mean() const { return s1 / n; }
  // unbiased
  double var() const { return (s2 - s1 * s1 / n) / (n - 1); }
  // central moments about the known mean 0 (standardised samples)
  double skew0() const { return (s3 / n) / std::pow(s2 / n, 1.5); }
  double kurt0() const { return (s4 / n) / ((s2 / n) * (s2 / n)); }
};

// z-test of a sample mean of n draws with known variance var.
bool mean_ok(double est, double truth, double var, double n) {
  return std::abs(est - truth) <= kSigmas * std::sqrt(var / n);
}
// z-test of a sample variance of n Gaussian draws: SE = var * sqrt(2 / (n - 1)).
bool gaussian_var_ok(double est, double truth, double n) {
  return std::abs(est - truth) <= kSigmas * truth * std::sqrt(2.0 / (n - 1));
}

}  // namespace

TEST_CASE("samplers: Gaussian VarianceLinear output has mean b and variance (x*x) sigma2^T",
          "[samplers]") {
  const int64_t B = 2, I = 5, O = 3;
  const int S = 4000;
  VarianceOptions vo;
  vo.bias = true;
  vo.param = GENERATE(VarianceParam::sigma, VarianceParam::log_sigma2);
  INFO("parameter " << varnet::to_string(vo.param));
  Network<double> net;
  net.emplace<varnet::VarianceLinear<double>>("var", I, O, vo);
  net.build(Shape(1, I), 3);
  const double* p = net.find(vo.param == VarianceParam::sigma ? "var.sigma" : "var.log_sigma2");
  const double* b = net.find("var.bias");
  Tensor<double> x(Shape(B, I));
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = 0.3 + 0.1 * double(i) * (i % 2 ? -1 : 1);

  std::vector<double> v(size_t(B * O), vo.e0);
  for (int64_t r = 0; r < B; ++r)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < I; ++i) {
        const double pi = p[o * I + i];
        const double s2 = vo.param == VarianceParam::sigma ? pi * pi : std::exp(pi);
        v[size_t(r * O + o)] += x.at(r, i) * x.at(r, i) * s2;
      }

  std::vector<Moments> m(size_t(B * O));
  Moments z;         // standardised, pooled
  double cross = 0;  // sum of z(0,0) z(1,1): different rows and units must be uncorrelated
  for (int k = 0; k < S; ++k) {
    const ConstView<double> y = net.forward(x.view(), Context::train(11, 1, uint32_t(k)));
    for (int64_t e = 0; e < B * O; ++e) {
      m[size_t(e)].add(y[e]);
      z.add((y[e] - b[e % O]) / std::sqrt(v[size_t(e)]));
    }
    cross += (y[0] - b[0]) / std::sqrt(v[0]) * (y[O + 1] - b[1]) / std::sqrt(v[size_t(O + 1)]);
  }
  for (int64_t e = 0; e < B * O; ++e) {
    INFO("element " << e << ": mean " << m[size_t(e)].mean() << " vs bias " << b[e % O]
                    << ", variance " << m[size_t(e)].var() << " vs " << v[size_t(e)]);
    CHECK(mean_ok(m[size_t(e)].mean(), b[e % O], v[size_t(e)], S));
    CHECK(gaussian_var_ok(m[size_t(e)].var(), v[size_t(e)], S));
  }
  INFO("pooled standardised: skewness " << z.skew0() << ", kurtosis " << z.kurt0()
                                        << ", correlation " << cross / S);
  CHECK(std::abs(z.skew0()) <= kSigmas * std::sqrt(6.0 / z.n));
  CHECK(std::abs(z.kurt0() - 3) <= kSigmas * std::sqrt(24.0 / z.n));
  CHECK(std::abs(cross / S) <= kSigmas / std::sqrt(double(S)));
}

TEST_CASE("samplers: Gaussian VarianceLinear noise is normal_at of the output element",
          "[samplers]") {
  // The LRT noise of y[n, o] is normal_at(NoiseKey{seed, layer, step, stream}, n * O + o): the
  // contract the GPU backend reproduces.
  const int64_t B = 3, I = 4, O = 5;
  VarianceOptions vo;
  vo.bias = true;
  Network<double> net;
  net.emplace<varnet::Linear<double>>("first", I, I);  // so that the variance layer has id 1
  net.emplace<varnet::VarianceLinear<double>>("var", I, O, vo);
  net.build(Shape(1, I), 8);
  const double* sigma = net.find("var.sigma");
  const double* b = net.find("var.bias");
  Tensor<double> x(Shape(B, I));
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = std::sin(1.0 + double(i));
  const Context ctx = Context::train(0xABCDEF12345ull, 17, 3);
  const ConstView<double> y = net.forward(x.view(), ctx);
  // the input of the variance layer is the Linear's output; recompute it by hand
  const double* w1 = net.find("first.weight");
  const double* b1 = net.find("first.bias");
  const NoiseKey key{ctx.seed, 1, ctx.step, ctx.stream};
  for (int64_t r = 0; r < B; ++r)
    for (int64_t o = 0; o < O; ++o) {
      double v = vo.e0;
      for (int64_t i = 0; i < I; ++i) {
        double h = b1[i];
        for (int64_t j = 0; j < I; ++j) h += w1[i * I + j] * x.at(r, j);
        v += h * h * sigma[o * I + i] * sigma[o * I + i];
      }
      const double eps = varnet::normal_at(key, uint64_t(r * O + o));
      const double expect = b[o] + eps * std::sqrt(v);
      // the layer's bulk noise matches normal_at to a few float ulps of max(1, |eps|)
      const double bound =
          16 * double(std::numeric_limits<float>::epsilon()) * std::max(1.0, std::abs(eps));
      INFO("y[" << r << ", " << o << "] = " << y[r * O + o] << ", expected " << expect);
      CHECK(std::abs(y[r * O + o] - expect) <= bound * std::sqrt(v) + 1e-12);
    }
}

namespace {

// Checks y[e] = b[channel of e] + normal_at(key, e) sqrt(v[e]) for every element e of y (N, O,
// P): to a few float ulps in double (the noise is drawn in float), and to the rounding of the
// float GEMM and epilogue in float. Returns the number of elements that differ.
template <class T>
int64_t count_lrt_mismatches(ConstView<T> y, const double* v, const T* b, int64_t O, int64_t P,
                             const NoiseKey& key) {
  const double feps = double(std::numeric_limits<float>::epsilon());
  const double rel = std::is_same_v<T, float> ? 64 * feps : 16 * feps;
  int64_t bad = 0;
  for (int64_t e = 0; e < y.numel(); ++e) {
    const double eps = varnet::normal_at(key, uint64_t(e));
    const double s = std::sqrt(v[e]);
    const double expect = double(b[(e / P) % O]) + eps * s;
    if (std::abs(double(y[e]) - expect) > rel * std::max(1.0, std::abs(eps)) * s + 1e-12) {
      if (bad++ < 3)
        UNSCOPED_INFO("y[" << e << "] = " << double(y[e]) << ", expected " << expect << " (noise "
                           << eps << ", sd " << s << ")");
    }
  }
  return bad;
}

}  // namespace

// The contract of the test above in both precisions, through the paths a small layer never
// takes: the float epilogue (AVX2 where built with it, with a scalar tail), and outputs per sample
// that span several of the CPU's 1,024-element noise chunks, where a chunk that drew from the
// wrong offset would repeat noise with the right moments.
TEMPLATE_TEST_CASE(
    "samplers: LRT noise is normal_at of the output element, float and double, "
    "across noise chunks",
    "[samplers]", float, double) {
  using T = TestType;
  const Context ctx = Context::train(0x5EED1234ull, 6, 2);
  const NoiseKey key{ctx.seed, 0, ctx.step, ctx.stream};
  VarianceOptions vo;
  vo.bias = true;

  SECTION("VarianceLinear 3 -> 2,053: 3 chunks per row, odd tails") {
    const int64_t B = 2, I = 3, O = 2053;
    Network<T> net;
    net.template emplace<varnet::VarianceLinear<T>>("var", I, O, vo);
    net.build(Shape(1, I), 4);
    const T* sigma = net.find("var.sigma");
    Tensor<T> x(Shape(B, I));
    for (int64_t i = 0; i < x.numel(); ++i) x[i] = T(0.4 + 0.3 * std::sin(double(i)));
    std::vector<double> v(size_t(B * O), vo.e0);
    for (int64_t r = 0; r < B; ++r)
      for (int64_t o = 0; o < O; ++o)
        for (int64_t i = 0; i < I; ++i) {
          const double s = double(sigma[o * I + i]), xv = double(x.at(r, i));
          v[size_t(r * O + o)] += xv * xv * s * s;
        }
    const ConstView<T> y = net.forward(x.view(), ctx);
    CHECK(count_lrt_mismatches(y, v.data(), net.find("var.bias"), O, 1, key) == 0);
  }
  SECTION("VarianceConv2d 2 -> 5 channels, 3x3 pad 1 on 15x15: chunks across channel runs") {
    const int64_t N = 2, C = 2, H = 15, W = 15, O = 5, K = 3;
    Network<T> net;
    net.template emplace<varnet::VarianceConv2d<T>>("var", C, O, ConvOptions{K, 1, 1}, vo);
    net.build(Shape(1, C, H, W), 4);
    Tensor<T> x(Shape(N, C, H, W));
    for (int64_t i = 0; i < x.numel(); ++i) x[i] = T(std::cos(0.37 * double(i)));
    const Shape os = net.output_shape().with_batch(N);
    REQUIRE(os.numel() / N > 1024);
    const Tensor<double> v = direct_conv_variance(x, net.find("var.sigma"), O, K, 1, 1, vo.e0);
    const ConstView<T> y = net.forward(x.view(), ctx);
    CHECK(count_lrt_mismatches(y, v.data(), net.find("var.bias"), O, os.plane(), key) == 0);
  }
}

TEST_CASE("samplers: Gaussian VarianceConv2d output has mean b and variance conv(x*x, sigma2)",
          "[samplers]") {
  const int64_t N = 2, C = 2, H = 5, W = 6, O = 2, K = 3, stride = 2, pad = 1;
  const int S = 4000;
  VarianceOptions vo;
  vo.bias = true;
  Network<double> net;
  net.emplace<varnet::VarianceConv2d<double>>("var", C, O, ConvOptions{K, stride, pad}, vo);
  net.build(Shape(1, C, H, W), 5);
  const double* sigma = net.find("var.sigma");
  const double* b = net.find("var.bias");
  Tensor<double> x(Shape(N, C, H, W));
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = std::cos(0.7 * double(i));
  const Shape os = net.output_shape().with_batch(N);
  REQUIRE(os == Shape(N, O, 3, 3));

  const Tensor<double> v = direct_conv_variance(x, sigma, O, K, stride, pad, vo.e0);

  const int64_t E = os.numel();
  std::vector<Moments> m(static_cast<size_t>(E));
  for (int k = 0; k < S; ++k) {
    const ConstView<double> y = net.forward(x.view(), Context::train(12, 4, uint32_t(k)));
    for (int64_t e = 0; e < E; ++e) m[size_t(e)].add(y[e]);
  }
  int64_t bad = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t o = (e / os.plane()) % O;
    const bool ok =
        mean_ok(m[size_t(e)].mean(), b[o], v[e], S) && gaussian_var_ok(m[size_t(e)].var(), v[e], S);
    if (!ok) {
      ++bad;
      INFO("element " << e << ": mean " << m[size_t(e)].mean() << " vs bias " << b[o]
                      << ", variance " << m[size_t(e)].var() << " vs " << v[e]);
      CHECK(ok);
    }
  }
  CHECK(bad == 0);
}

namespace {

// y of a one-input variance layer fed x = 1 is the sampled weight vector. Returns the weights of
// S draws (streams), after checking that every row of the batch saw the same weights.
std::vector<double> sampled_weights(WeightDist dist, VarianceParam param, bool conv, int64_t O,
                                    int S, std::vector<double>& sd) {
  VarianceOptions vo;
  vo.dist = dist;
  vo.param = param;
  Network<double> net;
  const Shape in = conv ? Shape(1, 1, 1, 1) : Shape(1, 1);
  if (conv)
    net.emplace<varnet::VarianceConv2d<double>>("var", 1, O, ConvOptions{1, 1, 0}, vo);
  else
    net.emplace<varnet::VarianceLinear<double>>("var", 1, O, vo);
  net.build(in, 9);
  const double* p = net.find(param == VarianceParam::sigma ? "var.sigma" : "var.log_sigma2");
  sd.resize(size_t(O));
  for (int64_t o = 0; o < O; ++o)
    sd[size_t(o)] = param == VarianceParam::sigma ? std::abs(p[o]) : std::exp(0.5 * p[o]);
  Tensor<double> x(in.with_batch(2), 1.0);
  std::vector<double> w;
  bool shared = true;
  for (int k = 0; k < S; ++k) {
    const ConstView<double> y = net.forward(x.view(), Context::train(21, 2, uint32_t(k)));
    for (int64_t o = 0; o < O; ++o) {
      w.push_back(y[o]);
      shared = shared && y[o] == y[O + o];
    }
  }
  CHECK(shared);  // one weight tensor per mini-batch, shared by all rows
  return w;
}

}  // namespace

TEST_CASE("samplers: Bernoulli weights are +-sigma with probability 1/2", "[samplers]") {
  const VarianceParam param = GENERATE(VarianceParam::sigma, VarianceParam::log_sigma2);
  const bool conv = GENERATE(false, true);
  INFO(varnet::to_string(param) << (conv ? ", VarianceConv2d" : ", VarianceLinear"));
  const int64_t O = 64;
  const int S = 2000;
  std::vector<double> sd;
  const std::vector<double> w = sampled_weights(WeightDist::bernoulli, param, conv, O, S, sd);
  int64_t positive = 0, exact = 0;
  std::vector<int64_t> per_weight(size_t(O), 0);
  for (size_t i = 0; i < w.size(); ++i) {
    const double s = sd[i % size_t(O)];
    exact += tol::close<double>(std::abs(w[i]), s, 0, 1e-15);
    positive += w[i] > 0;
    per_weight[i % size_t(O)] += w[i] > 0;
  }
  const double n = double(w.size());
  CHECK(exact == int64_t(w.size()));
  INFO("fraction positive " << double(positive) / n);
  CHECK(mean_ok(double(positive) / n, 0.5, 0.25, n));
  for (int64_t o = 0; o < O; ++o) {
    INFO("weight " << o << ": " << per_weight[size_t(o)] << " of " << S << " positive");
    CHECK(mean_ok(double(per_weight[size_t(o)]) / S, 0.5, 0.25, S));
  }
}

TEST_CASE("samplers: uniform weights lie in [-sqrt3 sigma, sqrt3 sigma] with variance sigma^2",
          "[samplers]") {
  const VarianceParam param = GENERATE(VarianceParam::sigma, VarianceParam::log_sigma2);
  const bool conv = GENERATE(false, true);
  INFO(varnet::to_string(param) << (conv ? ", VarianceConv2d" : ", VarianceLinear"));
  const int64_t O = 64;
  const int S = 2000;
  std::vector<double> sd;
  const std::vector<double> w = sampled_weights(WeightDist::uniform, param, conv, O, S, sd);
  Moments m;
  std::vector<int64_t> bins(10, 0);
  int64_t outside = 0;
  const double r3 = std::sqrt(3.0);
  for (size_t i = 0; i < w.size(); ++i) {
    const double u = w[i] / sd[i % size_t(O)];  // U(-sqrt 3, sqrt 3)
    outside += std::abs(u) > r3 * (1 + 1e-6);
    m.add(u);
    bins[size_t(std::min(9.0, std::max(0.0, std::floor((u + r3) / (2 * r3) * 10))))]++;
  }
  const double n = m.n;
  CHECK(outside == 0);
  INFO("standardised mean " << m.mean() << ", variance " << m.var());
  CHECK(mean_ok(m.mean(), 0, 1, n));
  // Var(u^2) = E u^4 - 1 = 9/5 - 1 for U(-sqrt 3, sqrt 3)
  CHECK(std::abs(m.var() - 1) <= kSigmas * std::sqrt(0.8 / n));
  for (size_t k = 0; k < bins.size(); ++k) {
    INFO("bin " << k << ": " << bins[k] << " of " << n);
    CHECK(mean_ok(double(bins[k]) / n, 0.1, 0.09, n));
  }
}

TEST_CASE("samplers: Bernoulli and uniform layers have the Gaussian layer's output moments",
          "[samplers]") {
  // All three zero-mean variants are scaled to the same weight variance, so y = x w^T has mean b
  // and variance (x*x) sigma2^T whatever the distribution.
  const WeightDist dist = GENERATE(WeightDist::bernoulli, WeightDist::uniform);
  INFO(varnet::to_string(dist));
  const int64_t I = 6, O = 4;
  const int S = 4000;
  VarianceOptions vo;
  vo.dist = dist;
  vo.bias = true;
  Network<double> net;
  net.emplace<varnet::VarianceLinear<double>>("var", I, O, vo);
  net.build(Shape(1, I), 13);
  const double* sigma = net.find("var.sigma");
  const double* b = net.find("var.bias");
  Tensor<double> x(Shape(1, I));
  for (int64_t i = 0; i < I; ++i) x[i] = 0.5 + 0.25 * double(i % 3) - 0.6 * double(i % 2);
  std::vector<Moments> m(static_cast<size_t>(O));
  for (int k = 0; k < S; ++k) {
    const ConstView<double> y = net.forward(x.view(), Context::train(31, 6, uint32_t(k)));
    for (int64_t o = 0; o < O; ++o) m[size_t(o)].add(y[o]);
  }
  for (int64_t o = 0; o < O; ++o) {
    double v = 0, v4 = 0;  // variance, and sum of x^4 sigma^4 for the 4th moment
    for (int64_t i = 0; i < I; ++i) {
      const double t = x[i] * x[i] * sigma[o * I + i] * sigma[o * I + i];
      v += t;
      v4 += t * t;
    }
    // Var of the sample variance: (mu4 - v^2) / n, mu4 = 3 v^2 + (kurt - 3) sum x^4 sigma^4,
    // with weight kurtosis 1 (Bernoulli) or 9/5 (uniform).
    const double kurt = dist == WeightDist::bernoulli ? 1.0 : 1.8;
    const double mu4 = 3 * v * v + (kurt - 3) * v4;
    INFO("unit " << o << ": mean " << m[size_t(o)].mean() << " vs " << b[o] << ", variance "
                 << m[size_t(o)].var() << " vs " << v);
    CHECK(mean_ok(m[size_t(o)].mean(), b[o], v, S));
    CHECK(std::abs(m[size_t(o)].var() - v) <= kSigmas * std::sqrt((mu4 - v * v) / S));
  }
}

TEST_CASE("samplers: normal_at, uniform_at, sign_at and bernoulli_at moments", "[samplers]") {
  const int64_t n = 1 << 20;
  const NoiseKey key{0x1234567890ull, 7, 11, 3};
  SECTION("normal_at: mean 0, variance 1, skewness 0, kurtosis 3, tails") {
    Moments m;
    int64_t tail2 = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double z = varnet::normal_at(key, uint64_t(i));
      m.add(z);
      tail2 += std::abs(z) > 2;
    }
    INFO("mean " << m.mean() << ", variance " << m.var() << ", skewness " << m.skew0()
                 << ", kurtosis " << m.kurt0() << ", P(|z| > 2) " << double(tail2) / double(n));
    CHECK(mean_ok(m.mean(), 0, 1, double(n)));
    CHECK(gaussian_var_ok(m.var(), 1, double(n)));
    CHECK(std::abs(m.skew0()) <= kSigmas * std::sqrt(6.0 / double(n)));
    CHECK(std::abs(m.kurt0() - 3) <= kSigmas * std::sqrt(24.0 / double(n)));
    const double p2 = std::erfc(2 / std::sqrt(2.0));
    CHECK(mean_ok(double(tail2) / double(n), p2, p2 * (1 - p2), double(n)));
  }
  SECTION("ops::fill_normal (what the layers use): mean 0, variance 1, kurtosis 3") {
    std::vector<float> z(static_cast<size_t>(n));
    varnet::ops::fill_normal(key, 3, n, z.data());
    Moments m;
    for (float v : z) m.add(v);
    INFO("mean " << m.mean() << ", variance " << m.var() << ", kurtosis " << m.kurt0());
    CHECK(mean_ok(m.mean(), 0, 1, double(n)));
    CHECK(gaussian_var_ok(m.var(), 1, double(n)));
    CHECK(std::abs(m.kurt0() - 3) <= kSigmas * std::sqrt(24.0 / double(n)));
  }
  SECTION("normal_at: neighbouring elements are uncorrelated") {
    // the four lanes of a Philox block feed two Box-Muller pairs: check within and across pairs
    double c01 = 0, c12 = 0, c03 = 0;
    const int64_t blocks = n / 4;
    for (int64_t b = 0; b < blocks; ++b) {
      float z[4];
      for (int l = 0; l < 4; ++l) z[l] = varnet::normal_at(key, uint64_t(4 * b + l));
      c01 += double(z[0]) * z[1];
      c12 += double(z[1]) * z[2];
      c03 += double(z[0]) * z[3];
    }
    const double bound = kSigmas / std::sqrt(double(blocks));
    CHECK(std::abs(c01 / double(blocks)) <= bound);
    CHECK(std::abs(c12 / double(blocks)) <= bound);
    CHECK(std::abs(c03 / double(blocks)) <= bound);
  }
  SECTION("uniform_at: in (0, 1), mean 1/2, variance 1/12") {
    Moments m;
    int64_t outside = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double u = varnet::uniform_at(key, uint64_t(i));
      outside += !(u > 0 && u < 1);
      m.add(u);
    }
    CHECK(outside == 0);
    INFO("mean " << m.mean() << ", variance " << m.var());
    CHECK(mean_ok(m.mean(), 0.5, 1.0 / 12, double(n)));
    // Var(u^2 about the mean) = 1/80 - 1/144 for U(0, 1)
    CHECK(std::abs(m.var() - 1.0 / 12) <= kSigmas * std::sqrt((1.0 / 80 - 1.0 / 144) / double(n)));
  }
  SECTION("sign_at: +-1 with probability 1/2; bernoulli_at(0.3): 1 with probability 0.3") {
    int64_t plus = 0, ones = 0, other = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float s = varnet::sign_at(key, uint64_t(i));
      const float b = varnet::bernoulli_at(key, uint64_t(i), 0.3f);
      plus += s == 1.0f;
      other += (s != 1.0f && s != -1.0f) + (b != 0.0f && b != 1.0f);
      ones += b == 1.0f;
    }
    CHECK(other == 0);
    CHECK(mean_ok(double(plus) / double(n), 0.5, 0.25, double(n)));
    CHECK(mean_ok(double(ones) / double(n), 0.3, 0.21, double(n)));
  }
}

TEST_CASE("samplers: dropout keeps a fraction 1 - p and scales by 1 / (1 - p)", "[samplers]") {
  const double p = GENERATE(0.3, 0.5, 0.8);
  INFO("p = " << p);
  const Shape in(4, 5, 32, 32);
  Network<double> net;
  net.emplace<varnet::Dropout<double>>("drop", p);
  net.build(in, 1);
  Tensor<double> x(in);
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = 1.0 + double(i % 7);
  const double scale = 1.0 / (1.0 - p);
  const ConstView<double> y = net.forward(x.view(), Context::train(3, 4, 0));
  int64_t kept = 0, wrong = 0;
  std::vector<uint8_t> mask0(size_t(x.numel()));
  for (int64_t i = 0; i < x.numel(); ++i) {
    if (y[i] == 0) continue;
    ++kept;
    mask0[size_t(i)] = 1;
    wrong += !tol::close<double>(y[i], x[i] * scale);
  }
  const double n = double(x.numel());
  CHECK(wrong == 0);
  INFO("kept " << double(kept) / n);
  CHECK(mean_ok(double(kept) / n, 1 - p, p * (1 - p), n));

  // another stream draws an independent mask: agreement is (1-p)^2 + p^2 on average
  const ConstView<double> y1 = net.forward(x.view(), Context::train(3, 4, 1));
  int64_t agree = 0;
  for (int64_t i = 0; i < x.numel(); ++i) agree += (y1[i] != 0) == (mask0[size_t(i)] != 0);
  const double q = (1 - p) * (1 - p) + p * p;
  CHECK(mean_ok(double(agree) / n, q, q * (1 - q), n));

  // mean mode is the identity
  const ConstView<double> ym = net.forward(x.view(), Context::eval(3, PredictMode::mean, 0));
  int64_t differ = 0;
  for (int64_t i = 0; i < x.numel(); ++i) differ += ym[i] != x[i];
  CHECK(differ == 0);
}
