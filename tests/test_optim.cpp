// Optimizers, schedules and the loss against hand-computed values, the Trainer's non-finite
// guard, and two short training runs on 4 Gaussian blobs (PAPER.md E6's data):
//   - a variance first layer learns (ensembles far above chance, mean propagation at chance);
//   - a zero-mean output layer cannot learn from the single-sample cross-entropy (PAPER.md
//     section 5: E[CE] >= log C), but can from the K-sample objective.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "catch.hpp"
#include "errors.hpp"
#include "gradcheck.hpp"
#include "tolerance.hpp"
#include "varnet/core/random.hpp"
#include "varnet/layers/activations.hpp"
#include "varnet/layers/batchnorm.hpp"
#include "varnet/layers/dropout.hpp"
#include "varnet/layers/linear.hpp"
#include "varnet/layers/mean_field.hpp"
#include "varnet/layers/variance.hpp"
#include "varnet/nn/loss.hpp"
#include "varnet/nn/network.hpp"
#include "varnet/nn/optimizer.hpp"
#include "varnet/nn/trainer.hpp"

using varnet::Adam;
using varnet::ConstView;
using varnet::Context;
using varnet::cross_entropy;
using varnet::LinearDecay;
using varnet::Network;
using varnet::PredictMode;
using varnet::Sgd;
using varnet::Shape;
using varnet::Tensor;
using varnet::TensorView;
using varnet::Trainer;

namespace {

using varnet::test::error_of;
using varnet::test::has;

}  // namespace

TEST_CASE("optim: Adam matches a hand-computed two-step update", "[optim]") {
  // p0 = (1, -2, 0.5), g1 = (0.1, -0.2, 0), g2 = (0.3, 0.1, -0.5), lr 0.01, betas (0.9, 0.999),
  // eps 1e-8. Step 1: the bias-corrected m/sqrt(v) is g/|g|, so p moves by lr (1 - 1e-7) against
  // the sign of g, and not at all where g = 0. Step 2, first element: m = 0.039, mhat = 0.039/0.19,
  // v = 9.999e-5, vhat = v/0.001999, p = 0.990000001 - 0.01 mhat / (sqrt(vhat) + eps).
  const std::vector<double> step1 = {0.99000000099999985, -1.9900000005, 0.5};
  const std::vector<double> step2 = {0.98082219022055894, -1.9873366302718676, 0.50744136802524875};
  SECTION("double") {
    std::vector<double> p = {1.0, -2.0, 0.5};
    Adam<double> adam(3);
    adam.step(p, std::vector<decltype(p)::value_type>{0.1, -0.2, 0.0}, 0.01);
    const tol::Mismatch m1 = tol::compare<double>(p, step1, 3);
    INFO("after step 1: " << m1);
    CHECK(m1.ok());
    adam.step(p, std::vector<decltype(p)::value_type>{0.3, 0.1, -0.5}, 0.01);
    const tol::Mismatch m2 = tol::compare<double>(p, step2, 3);
    INFO("after step 2: " << m2);
    CHECK(m2.ok());
    CHECK(adam.steps() == 2);
  }
  SECTION("float") {
    std::vector<float> p = {1.0f, -2.0f, 0.5f};
    Adam<float> adam(3);
    adam.step(p, std::vector<decltype(p)::value_type>{0.1f, -0.2f, 0.0f}, 0.01);
    adam.step(p, std::vector<decltype(p)::value_type>{0.3f, 0.1f, -0.5f}, 0.01);
    const tol::Mismatch m = tol::compare<float>(p, step2, 3);
    INFO(m);
    CHECK(m.ok());
  }
  SECTION("options: beta1 0.95 (the CIFAR recipe) changes the second step only") {
    std::vector<double> p = {1.0}, q = {1.0};
    Adam<double> a(1), b(1, varnet::AdamOptions{0.95, 0.999, 1e-8});
    a.step(p, std::vector<decltype(p)::value_type>{0.1}, 0.01);
    b.step(q, std::vector<decltype(q)::value_type>{0.1}, 0.01);
    CHECK(p[0] == q[0]);
    a.step(p, std::vector<decltype(p)::value_type>{0.3}, 0.01);
    b.step(q, std::vector<decltype(q)::value_type>{0.3}, 0.01);
    // m = 0.95 * 0.005 + 0.05 * 0.3 = 0.01975, mhat = m / (1 - 0.9025)
    const double mhat = 0.01975 / (1 - 0.95 * 0.95);
    const double vhat = (0.999 * 1e-5 + 0.001 * 0.09) / (1 - 0.999 * 0.999);
    CHECK(tol::close<double>(q[0], 0.990000001 - 0.01 * mhat / (std::sqrt(vhat) + 1e-8), 1e-15,
                             1e-12));
    CHECK(p[0] != q[0]);
  }
  SECTION("size mismatches are errors") {
    std::vector<double> p(3), g(2);
    Adam<double> adam(3);
    CHECK(has(error_of([&] { adam.step(p, g, 0.1); }), "Adam::step"));
    CHECK_FALSE(error_of([] { Adam<double>(3, varnet::AdamOptions{1.0, 0.999, 1e-8}); }).empty());
  }
}

TEST_CASE("optim: Adam's per-range learning-rate scale", "[optim]") {
  // Two identical Adams on the same gradients; the second scales parameters [2, 5) by 3. After
  // the same steps, its moves there are 3x the first's (the moments do not depend on lr), and
  // elsewhere identical.
  const std::vector<float> g = {0.3f, -1.0f, 0.5f, 2.0f, -0.1f, 0.7f};
  varnet::Adam<float> a(6), b(6);
  b.set_lr_scale(2, 3, 3.0);
  std::vector<float> pa(6, 1.0f), pb(6, 1.0f);
  for (int s = 0; s < 3; ++s) {
    a.step(pa, g, 0.01);
    b.step(pb, g, 0.01);
  }
  for (size_t i = 0; i < 6; ++i) {
    INFO("element " << i);
    const float expect = (i >= 2 && i < 5) ? 3 * (pa[i] - 1.0f) : pa[i] - 1.0f;
    CHECK(pb[i] - 1.0f == Approx(expect).epsilon(1e-5));
  }
  CHECK_THROWS_WITH(b.set_lr_scale(4, 3, 1.0),
                    Catch::Matchers::ContainsSubstring("a range inside"));
  CHECK_THROWS_WITH(b.set_lr_scale(0, 1, -1.0), Catch::Matchers::ContainsSubstring("scale >= 0"));
}

TEST_CASE("optim: SGD with heavy-ball momentum, as torch.optim.SGD", "[optim]") {
  std::vector<double> p = {1.0, -1.0};
  Sgd<double> sgd(2, 0.9);
  sgd.step(p, std::vector<decltype(p)::value_type>{0.5, -2.0}, 0.1);  // b = g, p -= lr b
  CHECK(tol::close<double>(p[0], 0.95));
  CHECK(tol::close<double>(p[1], -0.8));
  sgd.step(p, std::vector<decltype(p)::value_type>{1.0, 0.0}, 0.1);  // b = 0.9 b + g = (1.45, -1.8)
  CHECK(tol::close<double>(p[0], 0.95 - 0.145));
  CHECK(tol::close<double>(p[1], -0.8 + 0.18));
  SECTION("momentum 0 is plain gradient descent") {
    std::vector<double> q = {2.0};
    Sgd<double> plain(1, 0.0);
    plain.step(q, std::vector<decltype(q)::value_type>{1.0}, 0.5);
    plain.step(q, std::vector<decltype(q)::value_type>{1.0}, 0.5);
    CHECK(q[0] == 1.0);
  }
}

TEST_CASE("optim: LinearDecay falls linearly to 0 and stays there", "[optim]") {
  const LinearDecay s{1e-3, 100};
  CHECK(s.at(0) == 1e-3);
  CHECK(tol::close<double>(s.at(25), 7.5e-4));
  CHECK(tol::close<double>(s.at(50), 5e-4));
  CHECK(tol::close<double>(s.at(99), 1e-5));
  CHECK(s.at(100) == 0);
  CHECK(s.at(150) == 0);
  CHECK(LinearDecay{2e-3, 0}.at(10) == 2e-3);  // no horizon: constant
}

TEST_CASE("optim: KlWarmup rises linearly from 0 to beta over its steps", "[optim]") {
  const varnet::KlWarmup w{2.0, 8};
  CHECK(w.at(0) == 0);  // the first step trains on the likelihood alone
  CHECK(w.at(1) == 0.25);
  CHECK(w.at(4) == 1.0);
  CHECK(w.at(7) == 1.75);
  CHECK(w.at(8) == 2.0);
  CHECK(w.at(1000) == 2.0);
  CHECK(varnet::KlWarmup{0.5, 0}.at(0) == 0.5);  // no warm-up: beta from the start
}

TEST_CASE("loss: cross-entropy values for known logits", "[optim][loss]") {
  SECTION("uniform logits give log C and gradient (1/C - onehot) / N") {
    const int64_t n = 3, c = 10;
    Tensor<double> z(Shape(n, c), 0.7), d(Shape(n, c));
    const std::vector<int32_t> y = {0, 4, 9};
    std::vector<TensorView<double>> dv{d.view()};
    const varnet::LossResult r = cross_entropy<double>({z.view()}, y.data(), &dv);
    CHECK(tol::close<double>(r.loss, std::log(10.0)));
    CHECK(r.correct == 1);  // a tie predicts the first class, as the GPU kernel: row 0 only
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < c; ++j)
        CHECK(tol::close<double>(d.at(i, j), (0.1 - (j == y[size_t(i)])) / 3.0));
  }
  SECTION("logits (1, 2, 3): -log softmax") {
    Tensor<double> z(Shape(2, 3));
    for (int i = 0; i < 6; ++i) z[i] = 1 + i % 3;
    const std::vector<int32_t> y = {2, 0};
    const double lse = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
    CHECK(tol::close<double>(lse - 3, 0.40760596444438013));
    const varnet::LossResult r = cross_entropy<double>({z.view()}, y.data());
    CHECK(tol::close<double>(r.loss, ((lse - 3) + (lse - 1)) / 2));
    CHECK(r.correct == 1);
  }
  SECTION("large logits stay finite") {
    Tensor<float> z(Shape(1, 3));
    z[0] = 1000.0f, z[1] = -1000.0f, z[2] = 999.0f;
    const std::vector<int32_t> y = {2};
    const varnet::LossResult r = cross_entropy<float>({z.view()}, y.data());
    CHECK(tol::close<float>(r.loss, std::log1p(std::exp(1.0))));
  }
}

TEST_CASE("loss: the K-sample cross-entropy", "[optim][loss]") {
  const int64_t n = 2, c = 4;
  Tensor<double> a(Shape(n, c)), b(Shape(n, c));
  for (int64_t i = 0; i < n * c; ++i) a[i] = std::sin(double(i)), b[i] = std::cos(3.0 * double(i));
  const std::vector<int32_t> y = {3, 1};
  SECTION("K identical samples equal the single-sample loss, gradient split evenly") {
    Tensor<double> d1(Shape(n, c));
    std::vector<TensorView<double>> dv1{d1.view()};
    const double single = cross_entropy<double>({a.view()}, y.data(), &dv1).loss;
    const int K = 3;
    std::vector<Tensor<double>> d;
    std::vector<TensorView<double>> dv;
    for (int k = 0; k < K; ++k) d.emplace_back(Shape(n, c));
    for (auto& t : d) dv.push_back(t.view());
    const double multi = cross_entropy<double>({a.view(), a.view(), a.view()}, y.data(), &dv).loss;
    CHECK(tol::close<double>(multi, single));
    for (int k = 0; k < K; ++k)
      for (int64_t i = 0; i < n * c; ++i) CHECK(tol::close<double>(d[size_t(k)][i], d1[i] / K));
  }
  SECTION("a tie of the averaged probabilities predicts the first tied class") {
    // Sample 0 favours class 0, sample 1 class 1, by the same margin; with two classes every
    // sum involved has the same two terms, so the tie is exact.
    Tensor<double> s0(Shape(1, 2)), s1(Shape(1, 2));
    s0[0] = 2, s0[1] = 0;
    s1[0] = 0, s1[1] = 2;
    const std::vector<int32_t> first = {0}, second = {1};
    CHECK(cross_entropy<double>({s0.view(), s1.view()}, first.data()).correct == 1);
    CHECK(cross_entropy<double>({s0.view(), s1.view()}, second.data()).correct == 0);
  }
  SECTION("two samples: -log of the mean probability of the label") {
    double expect = 0;
    for (int64_t i = 0; i < n; ++i) {
      double sa = 0, sb = 0;
      for (int64_t j = 0; j < c; ++j) sa += std::exp(a.at(i, j)), sb += std::exp(b.at(i, j));
      const int32_t l = y[size_t(i)];
      expect -= std::log((std::exp(a.at(i, l)) / sa + std::exp(b.at(i, l)) / sb) / 2);
    }
    expect /= double(n);
    CHECK(tol::close<double>(cross_entropy<double>({a.view(), b.view()}, y.data()).loss, expect));
  }
}

TEST_CASE("loss: bad labels and shapes are errors", "[optim][loss]") {
  Tensor<double> z(Shape(3, 4), 0.0);
  const std::vector<int32_t> high = {0, 4, 1}, low = {0, 1, -1};
  std::string e = error_of([&] { cross_entropy<double>({z.view()}, high.data()); });
  INFO(e);
  CHECK(has(e, "label 4"));
  CHECK(has(e, "row 1"));
  CHECK(has(e, "[0, 4)"));
  e = error_of([&] { cross_entropy<double>({z.view()}, low.data()); });
  CHECK(has(e, "label -1"));
  CHECK(has(e, "row 2"));
  const std::vector<int32_t> ok = {0, 1, 2};
  Tensor<double> one_class(Shape(3, 1), 0.0), other(Shape(3, 5), 0.0);
  CHECK_FALSE(error_of([&] { cross_entropy<double>({one_class.view()}, ok.data()); }).empty());
  CHECK_FALSE(error_of([&] {
                cross_entropy<double>({z.view(), other.view()}, ok.data());
              }).empty());
  CHECK_FALSE(error_of([&] { cross_entropy<double>({}, ok.data()); }).empty());
}

TEST_CASE("optim: the Trainer stops at a non-finite loss", "[optim]") {
  Network<float> net;
  net.emplace<varnet::Linear<float>>("fc", 3, 2);
  net.build(Shape(1, 3), 1);
  Adam<float> adam(net.params().size());
  Trainer<float, Adam<float>> trainer(net, adam, 1, 1);
  Tensor<float> x(Shape(2, 3), 1.0f);
  x[4] = std::nanf("");
  const std::vector<int32_t> y = {0, 1};
  const std::vector<float> before(net.params().begin(), net.params().end());
  std::string message;
  try {
    trainer.step(x.view(), y.data(), 1e-3);
  } catch (const varnet::NonFiniteError& e) {
    message = e.what();
  }
  INFO(message);
  CHECK(has(message, "training step 0"));
  CHECK(std::equal(before.begin(), before.end(), net.params().begin()));  // no update
}

// The Trainer's plumbing: K forward and backward passes under matching noise (the variance and
// mean-field layers keep their noise from forward, dropout draws its mask again), the loss's
// gradient, the KL term's weight, all summed into the one update. Plain SGD at lr 1 makes the
// update minus the gradient, which must be the gradient of mean CE over the K samples (noise as
// the Trainer's step 0 draws it) + kl_weight * KL, by central differences.
TEST_CASE("optim: a Trainer step follows the gradient of the K-sample objective plus the KL term",
          "[optim]") {
  const int K = GENERATE(1, 3);
  INFO("K = " << K);
  const uint64_t seed = 77;
  const double kl_weight = 0.05;
  Network<double> net;
  net.emplace<varnet::VarianceLinear<double>>("var", 4, 6, varnet::VarianceOptions{});
  net.emplace<varnet::ReLU<double>>("relu");
  net.emplace<varnet::Dropout<double>>("drop", 0.3);  // recomputes its mask from the context
  net.emplace<varnet::SparseVDLinear<double>>("svd", 6, 3, varnet::DropoutOptions{});
  net.build(Shape(1, 4), 11);
  Tensor<double> x(Shape(5, 4));
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = 1.5 * std::sin(0.9 * double(i) + 0.2);
  const std::vector<int32_t> y = {0, 1, 2, 0, 1};

  const auto objective = [&] {
    std::vector<ConstView<double>> logits;
    for (int k = 0; k < K; ++k)
      logits.push_back(net.forward(x.view(), Context::train(seed, 0, uint32_t(k)), size_t(k)));
    return cross_entropy(logits, y.data()).loss + kl_weight * net.kl();
  };
  auto& params = net.params();
  const std::vector<double> start(params.begin(), params.end());
  Sgd<double> sgd(params.size(), 0.0);
  Trainer<double, Sgd<double>> trainer(net, sgd, K, seed);
  trainer.set_kl_weight(kl_weight);
  const varnet::LossResult r = trainer.step(x.view(), y.data(), 1.0);
  std::vector<double> grad(params.size());
  for (size_t i = 0; i < grad.size(); ++i) grad[i] = start[i] - params[i];
  std::copy(start.begin(), start.end(), params.begin());
  CHECK(tol::close<double>(r.kl, net.kl()));

  gradcheck::Options o;
  o.max_per_tensor = 1000;  // every parameter: the network is small
  const tol::Mismatch m =
      gradcheck::difference(params.data(), grad.data(), int64_t(grad.size()), objective, o);
  INFO(m);
  CHECK(m.ok());
}

// ---- training on 4 Gaussian blobs ----

namespace {

constexpr int64_t kClasses = 4;

struct Blobs {
  Tensor<float> x;
  std::vector<int32_t> y;
};

// Unit-covariance blobs centred at (3,3), (3,10), (10,3), (10,10) (PAPER.md E6), coordinates
// divided by 10; `per` points per class, interleaved.
Blobs make_blobs(int64_t per, uint32_t salt) {
  const double centre[4][2] = {{3, 3}, {3, 10}, {10, 3}, {10, 10}};
  const varnet::NoiseKey key{2024, 0, salt, 0};
  Blobs b;
  b.x = Tensor<float>(Shape(kClasses * per, 2));
  for (int64_t i = 0; i < kClasses * per; ++i) {
    const int32_t c = int32_t(i % kClasses);
    b.y.push_back(c);
    for (int d = 0; d < 2; ++d)
      b.x[2 * i + d] = float((centre[c][d] + varnet::normal_at(key, uint64_t(2 * i + d))) / 10);
  }
  return b;
}

struct RunResult {
  double first_epoch_loss = 0, last_epoch_loss = 0;
};

// Adam with a linearly decaying learning rate, batch 50, a fresh shuffle every epoch.
RunResult train(Network<float>& net, const Blobs& data, int samples, int epochs, double lr) {
  const int64_t n = data.x.shape().n, batch = 50, steps_per_epoch = n / batch;
  Adam<float> adam(net.params().size());
  Trainer<float, Adam<float>> trainer(net, adam, samples, 7);
  const LinearDecay schedule{lr, epochs * steps_per_epoch};
  std::vector<int64_t> order(static_cast<size_t>(n));
  Tensor<float> xb(Shape(batch, 2));
  std::vector<int32_t> yb(static_cast<size_t>(batch));
  RunResult r;
  int64_t step = 0;
  for (int e = 0; e < epochs; ++e) {
    for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
    const varnet::NoiseKey key{7, 0, uint32_t(e), varnet::stream::kShuffle};
    for (int64_t i = n - 1; i > 0; --i)
      std::swap(
          order[size_t(i)],
          order[size_t(int64_t(varnet::uniform_at(key, uint64_t(i)) * float(i + 1)) % (i + 1))]);
    double total = 0;
    for (int64_t s = 0; s < steps_per_epoch; ++s) {
      for (int64_t i = 0; i < batch; ++i) {
        const int64_t src = order[size_t(s * batch + i)];
        xb[2 * i] = data.x[2 * src];
        xb[2 * i + 1] = data.x[2 * src + 1];
        yb[size_t(i)] = data.y[size_t(src)];
      }
      total += trainer.step(xb.view(), yb.data(), schedule.at(step++)).loss;
    }
    const double mean = total / double(steps_per_epoch);
    if (e == 0) r.first_epoch_loss = mean;
    r.last_epoch_loss = mean;
  }
  return r;
}

// Accuracy of the averaged probabilities of `samples` noise draws (PredictMode::mean: 1 draw).
double ensemble_accuracy(Network<float>& net, const Blobs& data, int samples, PredictMode mode) {
  const int64_t n = data.x.shape().n;
  std::vector<double> prob(size_t(n * kClasses), 0.0);
  for (int k = 0; k < samples; ++k) {
    const ConstView<float> z = net.forward(
        data.x.view(), Context::eval(3, mode, varnet::stream::kEnsembleBase + uint32_t(k)));
    for (int64_t i = 0; i < n; ++i) {
      double mx = z[i * kClasses], s = 0;
      for (int64_t j = 1; j < kClasses; ++j) mx = std::max(mx, double(z[i * kClasses + j]));
      for (int64_t j = 0; j < kClasses; ++j) s += std::exp(z[i * kClasses + j] - mx);
      for (int64_t j = 0; j < kClasses; ++j)
        prob[size_t(i * kClasses + j)] += std::exp(z[i * kClasses + j] - mx) / s;
    }
  }
  int64_t correct = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double* p = prob.data() + i * kClasses;
    correct += std::max_element(p, p + kClasses) - p == data.y[size_t(i)];
  }
  return double(correct) / double(n);
}

}  // namespace

TEST_CASE("training: a variance first layer learns 4 blobs; mean propagation gives chance",
          "[optim][training]") {
  const Blobs train_set = make_blobs(100, 1), test_set = make_blobs(100, 2);
  Network<float> net;
  net.emplace<varnet::VarianceLinear<float>>("var", 2, 32);  // Gaussian, sigma, no bias
  net.emplace<varnet::BatchNorm<float>>("bn", 32);
  net.emplace<varnet::ReLU<float>>("relu");
  net.emplace<varnet::Linear<float>>("out", 32, kClasses);
  net.build(Shape(1, 2), 3);
  const RunResult r = train(net, train_set, 1, 60, 1e-2);
  const double ens = ensemble_accuracy(net, test_set, 10, PredictMode::sample);
  const double mean = ensemble_accuracy(net, test_set, 1, PredictMode::mean);
  INFO("training loss " << r.first_epoch_loss << " -> " << r.last_epoch_loss
                        << "; test accuracy: 10-sample ensemble " << ens << ", mean propagation "
                        << mean);
  CHECK(r.last_epoch_loss < 0.6 * r.first_epoch_loss);
  CHECK(ens > 0.9);
  // the variance layer outputs 0 in mean mode, so every test point gets the same prediction:
  // exactly one class in four is right
  CHECK(mean == 0.25);
}

TEST_CASE("training: a zero-mean output layer needs the K-sample objective", "[optim][training]") {
  // PAPER.md section 5: logits symmetric around 0 give E[CE] >= log C, so the single-sample
  // objective drives the output variance to 0, i.e. uniform predictions; the K-sample objective
  // (the ensemble likelihood) rewards a large variance on the right class.
  const double log_c = std::log(double(kClasses));
  const Blobs data = make_blobs(100, 1);
  const int K = GENERATE(1, 8);
  SECTION("every weight layer a variance layer") {
    Network<float> net;
    net.emplace<varnet::VarianceLinear<float>>("var1", 2, 32);
    net.emplace<varnet::BatchNorm<float>>("bn", 32);
    net.emplace<varnet::ReLU<float>>("relu");
    net.emplace<varnet::VarianceLinear<float>>("var2", 32, kClasses);
    net.build(Shape(1, 2), 3);
    const RunResult r = train(net, data, K, 40, 3e-2);
    const double ens = ensemble_accuracy(net, data, 10, PredictMode::sample);
    INFO("K = " << K << ": training loss " << r.first_epoch_loss << " -> " << r.last_epoch_loss
                << ", log C = " << log_c << ", 10-sample ensemble accuracy " << ens);
    if (K == 1) {
      CHECK(std::abs(r.last_epoch_loss - log_c) < 0.1);
    } else {
      // Learns, but slowly (as PAPER.md section 5 found for deep all-variance stacks): 40-80
      // epochs end 0.07-0.13 below log C, while the single-sample run sits within 0.002 of it.
      CHECK(r.last_epoch_loss < log_c - 0.05);
      CHECK(ens > 0.35);
    }
  }
  SECTION("a deterministic hidden layer, a variance output layer") {
    Network<float> net;
    net.emplace<varnet::Linear<float>>("fc", 2, 32);
    net.emplace<varnet::ReLU<float>>("relu");
    net.emplace<varnet::VarianceLinear<float>>("var", 32, kClasses);
    net.build(Shape(1, 2), 3);
    const RunResult r = train(net, data, K, 40, 3e-2);
    const double ens = ensemble_accuracy(net, data, 10, PredictMode::sample);
    INFO("K = " << K << ": training loss " << r.first_epoch_loss << " -> " << r.last_epoch_loss
                << ", log C = " << log_c << ", 10-sample ensemble accuracy " << ens);
    if (K == 1) {
      CHECK(std::abs(r.last_epoch_loss - log_c) < 0.1);
    } else {
      CHECK(r.last_epoch_loss < log_c - 0.3);
      CHECK(ens > 0.6);
    }
  }
}
