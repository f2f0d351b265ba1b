// The dropout-family baselines (layers/mean_field.hpp, layers/weight_posteriors.hpp): gradient
// checks in double for every layer and mode, the KL term (value against a numerical integral of
// the exact KL, gradient against differences), mean mode against the deterministic layers, the
// sampled output's moments, and the sparsity and compression accounting.
#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "catch.hpp"
#include "gradcheck.hpp"
#include "varnet/layers/conv2d.hpp"
#include "varnet/layers/kl.hpp"
#include "varnet/layers/linear.hpp"
#include "varnet/layers/mean_field.hpp"
#include "varnet/nn/network.hpp"
#include "varnet/nn/sparsity.hpp"

using gradcheck::check_layer;
using gradcheck::Options;
using varnet::Context;
using varnet::ConvOptions;
using varnet::DropoutOptions;
using varnet::Layer;
using varnet::Network;
using varnet::PredictMode;
using varnet::Shape;
using varnet::Tensor;

namespace {

enum class Family { gdo, vdo, svdo };

const char* family_name(Family f) {
  return f == Family::gdo ? "gdo" : f == Family::vdo ? "vdo" : "svdo";
}

template <class T>
std::unique_ptr<Layer<T>> make_dense(Family f, int64_t in, int64_t out, DropoutOptions o) {
  switch (f) {
    case Family::gdo:
      return std::make_unique<varnet::GaussianDropoutLinear<T>>(in, out, o);
    case Family::vdo:
      return std::make_unique<varnet::VariationalDropoutLinear<T>>(in, out, o);
    case Family::svdo:
      return std::make_unique<varnet::SparseVDLinear<T>>(in, out, o);
  }
  return nullptr;
}

template <class T>
std::unique_ptr<Layer<T>> make_conv(Family f, int64_t in_c, int64_t out_c, ConvOptions c,
                                    DropoutOptions o) {
  switch (f) {
    case Family::gdo:
      return std::make_unique<varnet::GaussianDropoutConv2d<T>>(in_c, out_c, c, o);
    case Family::vdo:
      return std::make_unique<varnet::VariationalDropoutConv2d<T>>(in_c, out_c, c, o);
    case Family::svdo:
      return std::make_unique<varnet::SparseVDConv2d<T>>(in_c, out_c, c, o);
  }
  return nullptr;
}

// Parameters of a layer called "layer" away from their initial values: theta U(-0.6, 0.6),
// log alpha -0.7 (vdo), log sigma2 U(-6, -1) (svdo: with theta this small, a good share of the
// weights has log alpha > 3 and is pruned in mean mode).
void randomize(Network<double>& net, Family f, uint64_t seed) {
  gradcheck::Rng rng(seed);
  const int64_t n = net.table().find("layer.theta")->shape.numel();
  double* theta = net.find("layer.theta");
  for (int64_t i = 0; i < n; ++i) theta[i] = rng.uniform(-0.6, 0.6);
  if (f == Family::vdo) *net.find("layer.log_alpha") = -0.7;
  if (f == Family::svdo) {
    double* ls2 = net.find("layer.log_sigma2");
    for (int64_t i = 0; i < n; ++i) ls2[i] = rng.uniform(-6, -1);
  }
}

Options options(Shape in, Family f, bool mean_mode) {
  Options o;
  o.input = in;
  o.prepare = [f](Network<double>& net) { randomize(net, f, 5); };
  if (mean_mode) o.ctx.mode = PredictMode::mean;
  return o;
}

const Family kFamilies[] = {Family::gdo, Family::vdo, Family::svdo};

}  // namespace

TEST_CASE("gradcheck: dropout-family dense layers", "[gradcheck][baselines]") {
  const Family f = GENERATE(Family::gdo, Family::vdo, Family::svdo);
  const bool bias = GENERATE(true, false);
  const bool mean_mode = GENERATE(false, true);
  INFO(family_name(f) << ", bias " << bias << ", mean mode " << mean_mode);
  DropoutOptions o;
  o.bias = bias;
  o.alpha = 0.6;
  check_layer(make_dense<double>(f, 7, 5, o), options(Shape(3, 7), f, mean_mode));
  SECTION("batch 1, another step and stream") {
    Options opt = options(Shape(1, 6), f, mean_mode);
    opt.ctx = Context::train(91, 4321, 3);
    if (mean_mode) opt.ctx.mode = PredictMode::mean;
    check_layer(make_dense<double>(f, 6, 3, o), opt);
  }
}

TEST_CASE("gradcheck: dropout-family conv layers", "[gradcheck][baselines]") {
  const Family f = GENERATE(Family::gdo, Family::vdo, Family::svdo);
  const bool mean_mode = GENERATE(false, true);
  INFO(family_name(f) << ", mean mode " << mean_mode);
  DropoutOptions o;
  o.alpha = 0.6;
  SECTION("3x3, stride 2, pad 1, odd sizes, bias") {
    o.bias = true;
    check_layer(make_conv<double>(f, 2, 3, ConvOptions{3, 2, 1}, o),
                options(Shape(2, 2, 5, 7), f, mean_mode));
  }
  SECTION("5x5, stride 1, pad 2, no bias") {
    check_layer(make_conv<double>(f, 2, 2, ConvOptions{5, 1, 2}, o),
                options(Shape(2, 2, 6, 5), f, mean_mode));
  }
  SECTION("3x3, pad 1, bias, several sample groups (ops::kSampleGroup) and a ragged one") {
    o.bias = true;
    check_layer(make_conv<double>(f, 2, 3, ConvOptions{3, 1, 1}, o),
                options(Shape(2 * varnet::ops::kSampleGroup + 3, 2, 4, 4), f, mean_mode));
  }
  SECTION("1x1, batch 1") {
    check_layer(make_conv<double>(f, 3, 2, ConvOptions{1, 1, 0}, o),
                options(Shape(1, 3, 3, 4), f, mean_mode));
  }
}

TEST_CASE("the KL term's gradient matches differences of the KL", "[gradcheck][baselines]") {
  const Family f = GENERATE(Family::gdo, Family::vdo, Family::svdo);
  const bool conv = GENERATE(false, true);
  INFO(family_name(f) << (conv ? ", conv" : ", dense"));
  Network<double> net;
  DropoutOptions o;
  o.bias = true;
  if (conv)
    net.add(make_conv<double>(f, 2, 3, ConvOptions{3, 1, 1}, o), "layer");
  else
    net.add(make_dense<double>(f, 6, 4, o), "layer");
  net.build(conv ? Shape(1, 2, 4, 4) : Shape(1, 6), 3);
  randomize(net, f, 8);
  // vdo: log alpha inside the clipping range [-20, 20], and above it, where the KL is flat
  const double vdo_log_alpha = GENERATE(1.3, 21.0);
  if (f == Family::vdo) *net.find("layer.log_alpha") = vdo_log_alpha;
  if (f == Family::svdo) {  // a weight clipped at each end of [-10, 10]: no gradient there
    double *theta = net.find("layer.theta"), *ls2 = net.find("layer.log_sigma2");
    theta[0] = 1e-4, ls2[0] = -1;  // log alpha = -1 - log(2e-8) = 16.7
    theta[1] = 0.5, ls2[1] = -16;  // log alpha = -16 - log(0.25) = -14.6
  }
  INFO("vdo log alpha " << vdo_log_alpha);
  const double kl0 = net.kl();
  if (f == Family::gdo)
    CHECK(kl0 == 0);  // fixed alpha: no regularizer
  else
    CHECK(kl0 > 0);

  // analytic: grads = 0.75 * dKL/dparams, on top of a poison value that must stay added to
  const double P = 0.8125, scale = 0.75;
  std::fill(net.grads().begin(), net.grads().end(), P);
  CHECK(net.add_kl_gradient(scale) == Approx(kl0).epsilon(1e-12));
  std::vector<double> analytic(net.params().size()), numeric(net.params().size());
  const double h = 1e-6;
  for (size_t i = 0; i < net.params().size(); ++i) {
    analytic[i] = (net.grads()[i] - P) / scale;
    double& p = net.params()[i];
    const double orig = p;
    p = orig + h;
    const double fp = net.kl();
    p = orig - h;
    const double fm = net.kl();
    p = orig;
    numeric[i] = (fp - fm) / (2 * h);
  }
  const tol::Mismatch m =
      tol::compare<double>(analytic, numeric, int64_t(analytic.size()), 1e-6, 1e-6);
  INFO("worst element " << m.worst << ": analytic " << m.a << ", numeric " << m.b);
  CHECK(m.count == 0);
}

TEST_CASE("variational dropout: log alpha outside [-20, 20] gets no gradient from the likelihood",
          "[baselines]") {
  // The layer uses clamp(log alpha, -20, 20): beyond either end the output does not depend on
  // it, so dL/d log alpha = sum s2 dL/ds2 must not be passed on; theta's gradient is unchanged.
  const varnet::VariationalDropoutPosterior<double> post{};
  const double theta[3] = {0.5, -0.2, 0.1}, ds2[3] = {0.3, -1.0, 2.0};
  const double log_alpha = GENERATE(-21.0, -19.5, 1.3, 19.5, 21.0);
  INFO("log alpha " << log_alpha);
  double aux = log_alpha, dtheta[3] = {0, 0, 0}, daux = 0, s2[3];
  const varnet::PosteriorView<double> v{theta, &aux, dtheta, &daux, 3};
  post.variance(v, s2);
  post.grad_from_variance(v, s2, ds2);
  const double alpha = std::exp(std::clamp(log_alpha, -20.0, 20.0));
  double expect_daux = 0;
  for (int i = 0; i < 3; ++i) {
    CHECK(s2[i] == Approx(alpha * theta[i] * theta[i]).epsilon(1e-12));
    CHECK(dtheta[i] == Approx(2 * alpha * theta[i] * ds2[i]).epsilon(1e-12));
    expect_daux += s2[i] * ds2[i];
  }
  if (std::abs(log_alpha) < 20)
    CHECK(daux == Approx(expect_daux).epsilon(1e-12));
  else
    CHECK(daux == 0);
}

// E log|1 + s xi|, xi ~ N(0, 1), by u = 1 + s xi = +-e^t: the log singularity at u = 0 becomes
// the smooth integrand t e^t (N(e^t) + N(-e^t)), integrated by Simpson's rule.
double expected_log_abs(double s) {
  const auto normal = [s](double u) {
    const double z = (u - 1) / s;
    return std::exp(-0.5 * z * z) / (s * std::sqrt(2 * M_PI));
  };
  const double lo = -60, hi = std::log(1 + 40 * s);
  const int n = 200000;
  const double h = (hi - lo) / n;
  double sum = 0;
  for (int i = 0; i <= n; ++i) {
    const double t = lo + i * h, e = std::exp(t);
    const double w = (i == 0 || i == n) ? 1 : (i % 2 ? 4 : 2);
    sum += w * t * e * (normal(e) + normal(-e));
  }
  return sum * h / 3;
}

TEST_CASE("the KL approximation agrees with the exact KL to the log-uniform prior",
          "[baselines][kl]") {
  // Exact: KL(alpha) = -0.5 log alpha + E log|1 + sqrt(alpha) xi| + C, with C = (gamma + log 2)/2
  // = -E log|xi|, the constant that makes KL -> 0 as alpha -> infinity. Molchanov et al.'s fit
  // is good to about 0.01 nats; measured here its largest error over log alpha in [-8, 8] is
  // 0.0085, near log alpha = -4.
  const double C = (0.57721566490153286 + std::log(2.0)) / 2;
  for (int la = -8; la <= 8; ++la) {
    const double exact = -0.5 * la + expected_log_abs(std::exp(0.5 * la)) + C;
    INFO("log alpha " << la << ": exact " << exact << ", approximation "
                      << varnet::kl::log_uniform(la));
    CHECK(std::abs(varnet::kl::log_uniform(la) - exact) < 0.01);
  }
  // and its derivative against differences of the approximation itself
  for (double la = -9.5; la <= 9.5; la += 0.5) {
    const double h = 1e-6;
    const double num =
        (varnet::kl::log_uniform(la + h) - varnet::kl::log_uniform(la - h)) / (2 * h);
    CHECK(varnet::kl::log_uniform_grad(la) == Approx(num).epsilon(1e-6).margin(1e-9));
  }
}

TEST_CASE("mean mode equals the deterministic layer with the same theta", "[baselines]") {
  const Family f = GENERATE(Family::gdo, Family::vdo, Family::svdo);
  const bool prune = GENERATE(false, true);
  INFO(family_name(f) << ", prune " << prune);
  DropoutOptions o;
  o.bias = true;
  o.prune = prune;
  const Context mean = Context::eval(1, PredictMode::mean, 0);
  gradcheck::Rng rng(3);

  // theta, with sparse VD's pruned weights zeroed when pruning is on
  const auto expected_weights = [&](Network<double>& net, int64_t n) {
    std::vector<double> w(net.find("layer.theta"), net.find("layer.theta") + n);
    if (f == Family::svdo && prune) {
      const double* ls2 = net.find("layer.log_sigma2");
      int64_t zeroed = 0;
      for (int64_t i = 0; i < n; ++i)
        if (ls2[i] - std::log(w[size_t(i)] * w[size_t(i)] + 1e-8) > 3) w[size_t(i)] = 0, ++zeroed;
      CHECK(zeroed > 0);  // the case must exercise pruning
      CHECK(zeroed < n);
    }
    return w;
  };

  SECTION("dense") {
    Network<double> a, b;
    a.add(make_dense<double>(f, 9, 4, o), "layer");
    b.emplace<varnet::Linear<double>>("layer", 9, 4, true);
    a.build(Shape(1, 9), 11);
    b.build(Shape(1, 9), 12);
    randomize(a, f, 21);
    const auto w = expected_weights(a, 36);
    std::copy(w.begin(), w.end(), b.find("layer.weight"));
    std::copy(a.find("layer.bias"), a.find("layer.bias") + 4, b.find("layer.bias"));
    Tensor<double> x(Shape(5, 9));
    for (int64_t i = 0; i < x.numel(); ++i) x[i] = rng.uniform();
    const auto ya = a.forward(x.view(), mean), yb = b.forward(x.view(), mean);
    for (int64_t i = 0; i < ya.numel(); ++i) CHECK(ya[i] == yb[i]);
  }
  SECTION("conv") {
    Network<double> a, b;
    const ConvOptions c{3, 2, 1, true};
    a.add(make_conv<double>(f, 2, 3, c, o), "layer");
    b.emplace<varnet::Conv2d<double>>("layer", 2, 3, c);
    a.build(Shape(1, 2, 7, 6), 11);
    b.build(Shape(1, 2, 7, 6), 12);
    randomize(a, f, 22);
    const auto w = expected_weights(a, 54);
    std::copy(w.begin(), w.end(), b.find("layer.weight"));
    std::copy(a.find("layer.bias"), a.find("layer.bias") + 3, b.find("layer.bias"));
    Tensor<double> x(Shape(2, 2, 7, 6));
    for (int64_t i = 0; i < x.numel(); ++i) x[i] = rng.uniform();
    const auto ya = a.forward(x.view(), mean), yb = b.forward(x.view(), mean);
    for (int64_t i = 0; i < ya.numel(); ++i) CHECK(ya[i] == yb[i]);
  }
}

TEST_CASE("sampled outputs have mean x.theta and variance (x*x).sigma2", "[baselines][samplers]") {
  // One dense unit, 4 inputs, 20000 independent draws (noise streams); float, as in training.
  for (Family f : kFamilies) {
    INFO(family_name(f));
    DropoutOptions o;
    o.alpha = 0.5;
    Network<float> net;
    net.add(make_dense<float>(f, 4, 1, o), "layer");
    net.build(Shape(1, 4), 2);
    const float theta[4] = {0.5f, -0.25f, 1.0f, 0.75f};
    std::copy(theta, theta + 4, net.find("layer.theta"));
    if (f == Family::vdo) *net.find("layer.log_alpha") = std::log(0.5f);
    if (f == Family::svdo)
      for (int i = 0; i < 4; ++i)
        net.find("layer.log_sigma2")[i] = std::log(0.5f * theta[i] * theta[i]);
    // every family now has sigma2 = 0.5 theta^2
    const float x[4] = {1.0f, 2.0f, -0.5f, 0.4f};
    double m = 0, v = 0;
    for (int i = 0; i < 4; ++i)
      m += double(x[i]) * theta[i], v += 0.5 * double(x[i] * x[i]) * theta[i] * theta[i];
    Tensor<float> in(Shape(1, 4));
    std::copy(x, x + 4, in.data());
    const int draws = 20000;
    double s1 = 0, s2 = 0;
    for (int k = 0; k < draws; ++k) {
      const double y = net.forward(in.view(), Context::train(7, 0, uint32_t(k)))[0];
      s1 += y;
      s2 += y * y;
    }
    const double mean = s1 / draws, var = s2 / draws - mean * mean;
    // standard errors: sqrt(v / draws) for the mean, about v sqrt(2 / draws) for the variance
    CHECK(std::abs(mean - m) < 5 * std::sqrt(v / draws));
    CHECK(std::abs(var - v) < 5 * v * std::sqrt(2.0 / draws));
  }
}

TEST_CASE("sparsity and compression accounting on layers with known log alphas", "[baselines]") {
  Network<double> net;
  DropoutOptions o;
  net.emplace<varnet::SparseVDLinear<double>>("sparse", 3, 2, o);         // 6 weights
  net.emplace<varnet::VariationalDropoutLinear<double>>("vdo", 2, 2, o);  // 4 weights
  net.emplace<varnet::Linear<double>>("plain", 2, 5, true);  // 10 weights (+ 5 biases: no)
  net.build(Shape(1, 3), 1);
  // theta = 1, so log alpha = log sigma2 - log(1 + 1e-8)
  std::fill(net.find("sparse.theta"), net.find("sparse.theta") + 6, 1.0);
  const double ls2[6] = {-5, 0, 3.5, 4, 10, 12};
  std::copy(ls2, ls2 + 6, net.find("sparse.log_sigma2"));
  *net.find("vdo.log_alpha") = 4;

  const varnet::WeightReport r = varnet::weight_report(net, 3.0);
  REQUIRE(r.layers.size() == 3);
  const auto& s = r.layers[0].stats;
  CHECK(r.layers[0].name == "sparse");
  CHECK(s.weights == 6);
  CHECK(s.has_log_alpha);
  CHECK(s.fraction_above == Approx(4.0 / 6));  // 3.5, 4, 10, 12 (clipped to 10)
  CHECK(s.kept == 2);
  const double shift = std::log(1 + 1e-8);
  CHECK(s.mean_log_alpha == Approx((-5 + 0 + 3.5 + 4 + 10 + 10) / 6.0 - 4 * shift / 6));
  double kl = 0;
  for (double v : {-5.0, 0.0, 3.5, 4.0, 10.0, 10.0}) kl += varnet::kl::log_uniform(v - shift);
  CHECK(s.kl == Approx(kl).epsilon(1e-9));

  const auto& v = r.layers[1].stats;  // one alpha for the layer, never pruned
  CHECK(v.weights == 4);
  CHECK(v.kept == 4);
  CHECK(v.mean_log_alpha == 4);
  CHECK(v.fraction_above == 1);
  CHECK(v.kl == Approx(4 * varnet::kl::log_uniform(4)));

  const auto& p = r.layers[2].stats;
  CHECK(p.weights == 10);
  CHECK(p.kept == 10);
  CHECK_FALSE(p.has_log_alpha);

  CHECK(r.weights == 20);
  CHECK(r.kept == 16);
  CHECK(r.compression() == Approx(20.0 / 16));
  CHECK(r.kl == Approx(s.kl + v.kl));
  CHECK(net.kl() == Approx(r.kl));

  // without pruning, sparse VD keeps everything but still reports its log alphas
  Network<double> unpruned;
  o.prune = false;
  unpruned.emplace<varnet::SparseVDLinear<double>>("sparse", 3, 2, o);
  unpruned.build(Shape(1, 3), 1);
  std::fill(unpruned.find("sparse.theta"), unpruned.find("sparse.theta") + 6, 1.0);
  std::copy(ls2, ls2 + 6, unpruned.find("sparse.log_sigma2"));
  const auto u = varnet::weight_report(unpruned, 3.0);
  CHECK(u.kept == 6);
  CHECK(u.layers[0].stats.fraction_above == Approx(4.0 / 6));
}

TEST_CASE("bad dropout options are refused with what was expected", "[baselines][errors]") {
  DropoutOptions o;
  o.alpha = -1;
  CHECK_THROWS_WITH(varnet::GaussianDropoutLinear<float>(3, 2, o),
                    Catch::Matchers::ContainsSubstring("alpha > 0"));
  o = DropoutOptions{};
  o.log_alpha_init = NAN;
  CHECK_THROWS_WITH(varnet::VariationalDropoutConv2d<float>(1, 2, ConvOptions{3, 1, 0}, o),
                    Catch::Matchers::ContainsSubstring("finite initial log alpha"));
  CHECK_THROWS_WITH(varnet::SparseVDLinear<float>(0, 2),
                    Catch::Matchers::ContainsSubstring("positive feature counts"));
}
