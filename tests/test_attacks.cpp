// eval/attacks.hpp: the ensemble input gradient against central differences, FGSM on a linear
// model against its closed form, and PGD's constraints.
#include <cmath>
#include <cstdint>
#include <vector>

#include "catch.hpp"
#include "errors.hpp"
#include "gradcheck.hpp"
#include "tolerance.hpp"
#include "varnet/eval/attacks.hpp"
#include "varnet/layers/activations.hpp"
#include "varnet/layers/conv2d.hpp"
#include "varnet/layers/dropout.hpp"
#include "varnet/layers/flatten.hpp"
#include "varnet/layers/linear.hpp"
#include "varnet/layers/variance.hpp"

namespace {

using namespace varnet;

// A small stochastic network: Gaussian variance convolution (LRT noise), tanh, dense output.
Network<double> small_variance_net() {
  Network<double> net;
  net.emplace<VarianceConv2d<double>>("vconv", 1, 2, ConvOptions{3, 1, 0, true}, VarianceOptions{});
  net.emplace<Tanh<double>>("tanh");
  net.emplace<Flatten<double>>("flatten");
  net.emplace<VarianceLinear<double>>("vfc", 18, 5, VarianceOptions{});
  net.emplace<Tanh<double>>("tanh2");
  net.emplace<Linear<double>>("out", 5, 3);
  net.build(Shape(1, 1, 5, 5), 11);
  return net;
}

Tensor<double> unit_inputs(Shape s, uint64_t seed) {
  Tensor<double> x(s);
  gradcheck::Rng rng(seed);
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = rng.uniform(0, 1);
  return x;
}

}  // namespace

TEST_CASE("the K-sample ensemble input gradient matches central differences", "[attacks]") {
  Network<double> net = small_variance_net();
  Tensor<double> x = unit_inputs(Shape(3, 1, 5, 5), 5);
  const std::vector<int32_t> y = {0, 2, 1};
  AttackOptions o;
  o.samples = 4;
  o.seed = 9;
  Tensor<double> g, unused;
  const LossResult r = ensemble_input_gradient(net, x.view(), y.data(), o, 7, g);
  REQUIRE(g.shape() == x.shape());
  // The loss is a deterministic function of x: the noise is fixed by (seed, iteration, stream).
  const auto loss = [&] {
    return ensemble_input_gradient(net, x.view(), y.data(), o, 7, unused).loss;
  };
  CHECK(loss() == r.loss);
  const double h = 1e-6;
  std::vector<double> numeric(size_t(x.numel())), analytic(g.data(), g.data() + g.numel());
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double orig = x[i];
    x[i] = orig + h;
    const double fp = loss();
    x[i] = orig - h;
    const double fm = loss();
    x[i] = orig;
    numeric[size_t(i)] = (fp - fm) / (2 * h);
  }
  // as gradcheck.hpp: differences in double with h = 1e-6 are good to ~1e-9 relative
  const tol::Mismatch m = tol::compare<double>(analytic, numeric, x.numel(), 1e-7, 1e-6);
  INFO("dL/dx vs central differences: " << m);
  CHECK(m.ok());
  // The K samples differ: one sample alone gives another loss; and each iteration draws fresh
  // noise (PGD's steps must not all see the same samples).
  CHECK(ensemble_input_gradient(net, x.view(), y.data(), o, 8, unused).loss != r.loss);
  o.samples = 1;
  CHECK(ensemble_input_gradient(net, x.view(), y.data(), o, 7, unused).loss != r.loss);
  // Parameter gradients are left zeroed.
  for (double v : net.grads()) REQUIRE(v == 0);
}

TEST_CASE("the ensemble input gradient through dropout matches central differences", "[attacks]") {
  // Dropout draws its mask again in backward from the sample's context, so each of the K
  // backward passes must run under its own sample's context (the variance layers above keep
  // their noise from forward and would not notice).
  Network<double> net;
  net.emplace<Linear<double>>("fc1", 6, 8, true);
  net.emplace<Tanh<double>>("tanh");
  net.emplace<Dropout<double>>("drop", 0.5);
  net.emplace<Linear<double>>("out", 8, 3, true);
  net.build(Shape(1, 6), 2);
  Tensor<double> x = unit_inputs(Shape(2, 6), 3);
  const std::vector<int32_t> y = {2, 0};
  AttackOptions o;
  o.samples = 3;
  o.seed = 4;
  Tensor<double> g, unused;
  ensemble_input_gradient(net, x.view(), y.data(), o, 0, g);
  const auto loss = [&] {
    return ensemble_input_gradient(net, x.view(), y.data(), o, 0, unused).loss;
  };
  // gradcheck's defaults: h = 1e-6, tolerances 1e-7 absolute and 1e-6 relative; all 12 inputs.
  const tol::Mismatch m =
      gradcheck::difference(x.data(), g.data(), x.numel(), loss, gradcheck::Options{});
  INFO("dL/dx vs central differences: " << m);
  CHECK(m.ok());
}

TEST_CASE("FGSM on a linear model equals its closed form", "[attacks]") {
  Network<double> net;
  net.emplace<Linear<double>>("fc", 6, 4, true);
  net.build(Shape(1, 6), 3);
  double* W = net.find("fc.weight");  // (4, 6)
  const double* b = net.find("fc.bias");
  for (int c = 0; c < 4; ++c) W[c * 6 + 2] = 0;  // input 2 has a zero gradient: it must not move
  Tensor<double> x = unit_inputs(Shape(5, 6), 8);
  x[0] = 0.0;  // on the range's edges: clipping shows
  x[1] = 1.0;
  const std::vector<int32_t> y = {3, 0, 1, 2, 1};
  AttackOptions o;
  o.epsilon = 0.25;
  o.samples = 3;  // a deterministic network: K identical samples, same sign
  const Tensor<double> adv = fgsm(net, x.view(), y.data(), o);
  for (int64_t n = 0; n < 5; ++n) {
    // dL/dx = W^T (softmax(W x + b) - onehot(y)) / N; only its sign matters
    double z[4], s = 0;
    for (int c = 0; c < 4; ++c) {
      z[c] = b[c];
      for (int i = 0; i < 6; ++i) z[c] += W[c * 6 + i] * x.at(n, i);
      s += std::exp(z[c]);
    }
    for (int i = 0; i < 6; ++i) {
      double gi = 0;
      for (int c = 0; c < 4; ++c) gi += W[c * 6 + i] * (std::exp(z[c]) / s - (c == y[size_t(n)]));
      const double expected =
          std::min(1.0, std::max(0.0, x.at(n, i) + 0.25 * ((gi > 0) - (gi < 0))));
      INFO("example " << n << ", input " << i << ", gradient " << gi);
      CHECK(adv.at(n, i) == expected);
    }
  }
}

TEST_CASE("PGD stays in the epsilon ball and the valid range, and raises the loss", "[attacks]") {
  // The constraints hold for any network; on a deterministic one (the same convolution and dense
  // layers, no noise) the gradient steps also visibly raise the loss.
  Network<double> deterministic;
  deterministic.emplace<Conv2d<double>>("conv", 1, 2, ConvOptions{3, 1, 0, true});
  deterministic.emplace<Tanh<double>>("tanh");
  deterministic.emplace<Flatten<double>>("flatten");
  deterministic.emplace<Linear<double>>("out", 18, 3);
  deterministic.build(Shape(1, 1, 5, 5), 4);
  Network<double> variance = small_variance_net();
  Tensor<double> x = unit_inputs(Shape(4, 1, 5, 5), 21);
  for (int64_t i = 0; i < x.numel(); i += 7) x[i] = (i / 7) % 2 ? 1.0 : 0.0;
  const std::vector<int32_t> y = {1, 0, 2, 1};
  AttackOptions o;
  o.epsilon = 0.1;
  o.step = 0.04;  // several steps reach the ball's surface and push against it
  o.iterations = 8;
  o.samples = 4;
  o.lo = 0;
  o.hi = 1;
  for (bool is_variance : {true, false}) {
    Network<double>& net = is_variance ? variance : deterministic;
    for (bool random_start : {true, false}) {
      INFO((is_variance ? "variance" : "deterministic")
           << " network, random start " << random_start);
      o.random_start = random_start;
      const Tensor<double> adv = pgd(net, x.view(), y.data(), o);
      int64_t on_surface = 0;
      for (int64_t i = 0; i < x.numel(); ++i) {
        INFO("element " << i << ": x " << x[i] << ", adversarial " << adv[i]);
        REQUIRE(adv[i] >= x[i] - o.epsilon);
        REQUIRE(adv[i] <= x[i] + o.epsilon);
        REQUIRE(adv[i] >= o.lo);
        REQUIRE(adv[i] <= o.hi);
        on_surface += adv[i] == x[i] - o.epsilon || adv[i] == x[i] + o.epsilon || adv[i] == o.lo ||
                      adv[i] == o.hi;
      }
      if (is_variance) continue;
      CHECK(on_surface > x.numel() / 2);
      Tensor<double> g;
      const double clean = ensemble_input_gradient(net, x.view(), y.data(), o, 0, g).loss;
      const double attacked = ensemble_input_gradient(net, adv.view(), y.data(), o, 0, g).loss;
      CHECK(attacked > clean + 0.01);
    }
  }
}

TEST_CASE("PGD's random start is uniform over the whole epsilon ball", "[attacks]") {
  // With a step far smaller than epsilon, one iteration leaves each input near its random start
  // x + epsilon U(-1, 1): about a quarter of them below x - epsilon / 2, a quarter above
  // x + epsilon / 2 (inputs at 0.5, so the range [0, 1] clips nothing).
  Network<double> net = small_variance_net();
  Tensor<double> x(Shape(8, 1, 5, 5), 0.5);
  const std::vector<int32_t> y(8, 1);
  AttackOptions o;
  o.epsilon = 0.2;
  o.step = 1e-6;
  o.iterations = 1;
  o.samples = 1;
  const Tensor<double> adv = pgd(net, x.view(), y.data(), o);
  int64_t low = 0, high = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    low += adv[i] < 0.5 - o.epsilon / 2;
    high += adv[i] > 0.5 + o.epsilon / 2;
  }
  INFO(low << " of " << x.numel() << " below x - epsilon / 2, " << high
           << " above x + epsilon / 2");
  // 200 inputs: each count is about 50, standard deviation about 6.
  CHECK(low > 25);
  CHECK(high > 25);
}

TEST_CASE("attack_dataset attacks in batches and keeps the labels", "[attacks]") {
  Network<double> net = small_variance_net();
  data::LabeledImages d;
  d.images = Tensor<float>(Shape(7, 1, 5, 5));
  for (int64_t i = 0; i < d.images.numel(); ++i) d.images[i] = float((i * 37 % 101) / 100.0);
  d.labels = {0, 1, 2, 0, 1, 2, 0};
  d.classes = 3;
  AttackOptions o;
  o.samples = 2;
  o.batch = 7;  // one batch: the same as attacking the tensor directly
  const data::LabeledImages a = attack_dataset(net, d, AttackKind::fgsm, o);
  CHECK(a.labels == d.labels);
  REQUIRE(a.images.shape() == d.images.shape());
  Tensor<double> x(d.images.shape());
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = d.images[i];
  const Tensor<double> direct = fgsm(net, x.view(), d.labels.data(), o);
  for (int64_t i = 0; i < x.numel(); ++i) REQUIRE(a.images[i] == float(direct[i]));
  o.batch = 3;
  int64_t done = 0;
  const data::LabeledImages p =
      attack_dataset(net, d, AttackKind::pgd, o, [&](int64_t k) { done = k; });
  CHECK(done == 7);
  for (int64_t i = 0; i < x.numel(); ++i) {
    REQUIRE(std::abs(p.images[i] - d.images[i]) <= float(o.epsilon) * 1.0001f);
  }
  // Batches draw their own random start and noise: two identical examples in different batches
  // (0 and 3 of batches of 3) are attacked differently.
  data::LabeledImages same = d;
  for (int64_t i = 0; i < same.images.numel(); ++i) same.images[i] = float(i % 25) / 25.0f;
  same.labels.assign(7, 1);
  const data::LabeledImages q = attack_dataset(net, same, AttackKind::pgd, o);
  int64_t differ = 0;
  for (int64_t e = 0; e < 25; ++e) differ += q.images[e] != q.images[3 * 25 + e];
  CHECK(differ > 0);
}

TEST_CASE("attack options are checked", "[attacks]") {
  using varnet::test::error_of;
  using varnet::test::has;
  Network<double> net = small_variance_net();
  Tensor<double> x = unit_inputs(Shape(1, 1, 5, 5), 1);
  const int32_t y = 0;
  AttackOptions o;
  o.epsilon = -1;
  CHECK(has(error_of([&] { fgsm(net, x.view(), &y, o); }), "epsilon >= 0, found -1"));
  o.epsilon = 0.1;
  o.lo = 1;
  CHECK(has(error_of([&] { pgd(net, x.view(), &y, o); }), "lo < hi, found [1, 1]"));
  o.lo = 0;
  o.iterations = 0;
  CHECK(has(error_of([&] { pgd(net, x.view(), &y, o); }), "at least one iteration, found 0"));
}
