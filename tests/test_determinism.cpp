// Reproducibility: one seed gives bit-identical networks, outputs, gradients and training runs;
// noise is a pure function of (seed, layer, step, stream, element), so changing any of the step,
// stream or seed changes the output and nothing else does (not the batch around a row, not the
// calls in between, not splitting a run in two; not the thread count, up to GEMM rounding).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "catch.hpp"
#include "tolerance.hpp"
#include "varnet/layers/variance.hpp"
#include "varnet/models/lenet5.hpp"
#include "varnet/nn/network.hpp"
#include "varnet/nn/optimizer.hpp"
#include "varnet/nn/trainer.hpp"

using varnet::Adam;
using varnet::ConstView;
using varnet::Context;
using varnet::LeNet5Config;
using varnet::Network;
using varnet::PredictMode;
using varnet::Shape;
using varnet::Tensor;
using varnet::Trainer;

namespace {

const Shape kImage(1, 1, 16, 16);
constexpr int64_t kBatch = 8;

Network<float> lenet(uint64_t seed, varnet::WeightDist dist = varnet::WeightDist::gaussian) {
  LeNet5Config cfg;
  cfg.variance_layers = {1, 2, 3};
  cfg.variance.dist = dist;
  return varnet::make_lenet5<float>(cfg, kImage, seed);
}

// A fixed batch of images in [0, 1) and labels in [0, 10).
struct Batch {
  Tensor<float> x{kImage.with_batch(kBatch)};
  std::vector<int32_t> y;
  explicit Batch(uint32_t salt) {
    const varnet::NoiseKey key{99, 0, salt, 0};
    for (int64_t i = 0; i < x.numel(); ++i) x[i] = varnet::uniform_at(key, uint64_t(i));
    for (int64_t i = 0; i < kBatch; ++i) y.push_back(int32_t((i * 7 + salt) % 10));
  }
};

template <class Vec>
bool same_bits(const Vec& a, const Vec& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), a.size() * sizeof(typename Vec::value_type)) == 0;
}
template <class T>
bool same_bits(ConstView<T> a, ConstView<T> b) {
  return a.shape == b.shape && std::memcmp(a.data, b.data, size_t(a.numel()) * sizeof(T)) == 0;
}
std::vector<float> copy(ConstView<float> v) {
  return std::vector<float>(v.begin(), v.end());
}

// Trains `net` for `steps` Adam steps with the K-sample objective on alternating batches.
std::vector<double> train(Network<float>& net, int samples, int steps, uint64_t seed) {
  Adam<float> adam(net.params().size());
  Trainer<float, Adam<float>> trainer(net, adam, samples, seed);
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    const Batch b(uint32_t(s % 2));
    losses.push_back(trainer.step(b.x.view(), b.y.data(), 1e-3).loss);
  }
  return losses;
}

}  // namespace

TEST_CASE("determinism: one seed builds identical networks, another seed a different one",
          "[determinism]") {
  Network<float> a = lenet(5), b = lenet(5), c = lenet(6);
  CHECK(same_bits(a.params(), b.params()));
  CHECK(same_bits(a.state(), b.state()));
  CHECK_FALSE(same_bits(a.params(), c.params()));
}

TEST_CASE("determinism: outputs and gradients are bit-identical across separately built networks",
          "[determinism]") {
  const varnet::WeightDist dist = GENERATE(
      varnet::WeightDist::gaussian, varnet::WeightDist::bernoulli, varnet::WeightDist::uniform);
  INFO(varnet::to_string(dist));
  Network<float> a = lenet(5, dist), b = lenet(5, dist);
  const Batch batch(0);
  const Context ctx = Context::train(123, 4, 1);
  const ConstView<float> ya = a.forward(batch.x.view(), ctx);
  const ConstView<float> yb = b.forward(batch.x.view(), ctx);
  CHECK(same_bits(ya, yb));
  Tensor<float> g(ya.shape);
  for (int64_t i = 0; i < g.numel(); ++i) g[i] = float(i % 5) - 2.0f;
  a.zero_grad();
  b.zero_grad();
  const std::vector<float> dxa = copy(a.backward(g.view(), ctx, 0, true));
  const std::vector<float> dxb = copy(b.backward(g.view(), ctx, 0, true));
  CHECK(same_bits(dxa, dxb));
  CHECK(same_bits(a.grads(), b.grads()));
  CHECK(same_bits(a.state(), b.state()));  // batch-norm running statistics
}

TEST_CASE("determinism: noise depends on seed, step and stream, and on nothing else",
          "[determinism]") {
  Network<float> net = lenet(5);
  const Batch batch(0);
  const Context base = Context::train(123, 4, 1);
  const std::vector<float> y0 = copy(net.forward(batch.x.view(), base));

  SECTION("the same context again, after other calls, gives the same bits") {
    net.forward(batch.x.view(), Context::train(7, 8, 9));
    net.forward(batch.x.view(), Context::train(123, 5, 1), 1);  // another slot
    CHECK(same_bits(copy(net.forward(batch.x.view(), base)), y0));
  }
  SECTION("another step changes the output") {
    CHECK_FALSE(same_bits(copy(net.forward(batch.x.view(), Context::train(123, 5, 1))), y0));
  }
  SECTION("another stream changes the output") {
    CHECK_FALSE(same_bits(copy(net.forward(batch.x.view(), Context::train(123, 4, 2))), y0));
  }
  SECTION("another seed changes the output") {
    CHECK_FALSE(same_bits(copy(net.forward(batch.x.view(), Context::train(124, 4, 1))), y0));
  }
  SECTION("mean mode is not stochastic: any step, stream or seed gives the same bits") {
    // every variance layer outputs its bias (0), so the whole output is a constant
    const std::vector<float> m0 =
        copy(net.forward(batch.x.view(), Context::eval(1, PredictMode::mean, 0)));
    const std::vector<float> m1 =
        copy(net.forward(batch.x.view(), Context::eval(2, PredictMode::mean, 7)));
    CHECK(same_bits(m0, m1));
  }
}

TEST_CASE("determinism: a row's noise does not depend on the rest of the batch", "[determinism]") {
  // Element (n, o) draws normal_at(key, n * O + o): the first rows of a larger batch see exactly
  // the noise they see alone. (The GEMM may round differently for other batch sizes, hence a
  // tolerance; a changed noise draw would be off by O(1).)
  const int64_t I = 9, O = 7;
  varnet::VarianceOptions vo;
  vo.bias = true;
  const varnet::WeightDist dist = GENERATE(
      varnet::WeightDist::gaussian, varnet::WeightDist::bernoulli, varnet::WeightDist::uniform);
  vo.dist = dist;
  INFO(varnet::to_string(dist));
  Network<double> net;
  net.emplace<varnet::VarianceLinear<double>>("var", I, O, vo);
  net.build(Shape(1, I), 4);
  Tensor<double> big(Shape(5, I));
  for (int64_t i = 0; i < big.numel(); ++i) big[i] = std::sin(double(i));
  const Context ctx = Context::train(8, 3, 2);
  const std::vector<double> yb = [&] {
    const ConstView<double> y = net.forward(big.view(), ctx);
    return std::vector<double>(y.begin(), y.end());
  }();
  const ConstView<double> y2 = net.forward(big.view().sample_range(0, 2), ctx);
  const tol::Mismatch m = tol::compare<double>(y2.data, yb, 2 * O);
  INFO("first two rows alone vs in a batch of five: " << m);
  CHECK(m.ok());
}

#if defined(_OPENMP)
TEST_CASE("determinism: the noise does not depend on the thread count", "[determinism]") {
  // Not bit for bit: Eigen's GEMM picks its blocking from the thread count, so sums round
  // differently. A noise draw that depended on the scheduling would be off by O(1).
  const int before = omp_get_max_threads();
  Network<float> a = lenet(5), b = lenet(5);
  const Batch batch(1);
  const Context ctx = Context::train(3, 1, 0);
  omp_set_num_threads(1);
  const std::vector<float> y1 = copy(a.forward(batch.x.view(), ctx));
  omp_set_num_threads(2);
  const std::vector<float> y2 = copy(b.forward(batch.x.view(), ctx));
  omp_set_num_threads(before);
  const tol::Mismatch m = tol::compare<float>(y1, y2, int64_t(y1.size()), 1e-4, 1e-3);
  INFO("one thread vs two: " << m);
  CHECK(m.ok());
}
#endif

TEST_CASE("determinism: Trainer runs with Adam are bit-identical for one seed", "[determinism]") {
  const int K = GENERATE(1, 3);
  INFO("K = " << K);
  Network<float> a = lenet(5), b = lenet(5);
  const std::vector<double> la = train(a, K, 3, 77);
  const std::vector<double> lb = train(b, K, 3, 77);
  CHECK(la == lb);
  for (double l : la) CHECK(std::isfinite(l));
  CHECK(same_bits(a.params(), b.params()));
  CHECK(same_bits(a.grads(), b.grads()));
  CHECK(same_bits(a.state(), b.state()));
  // training moved the parameters
  Network<float> fresh = lenet(5);
  CHECK_FALSE(same_bits(a.params(), fresh.params()));

  SECTION("another training seed gives another run") {
    Network<float> c = lenet(5);
    train(c, K, 3, 78);
    CHECK_FALSE(same_bits(a.params(), c.params()));
  }
}

TEST_CASE("determinism: K-sample training differs from single-sample training", "[determinism]") {
  Network<float> a = lenet(5), b = lenet(5);
  train(a, 1, 2, 77);
  const std::vector<double> l4 = train(b, 4, 2, 77);
  for (double l : l4) CHECK(std::isfinite(l));
  CHECK_FALSE(same_bits(a.params(), b.params()));
}

TEST_CASE("determinism: a run split in two (resumed at its step) equals an uninterrupted run",
          "[determinism]") {
  Network<float> a = lenet(5), b = lenet(5);
  train(a, 2, 4, 77);
  Adam<float> adam(b.params().size());
  {
    Trainer<float, Adam<float>> first(b, adam, 2, 77);
    for (int s = 0; s < 2; ++s) {
      const Batch batch(uint32_t(s % 2));
      first.step(batch.x.view(), batch.y.data(), 1e-3);
    }
  }
  Trainer<float, Adam<float>> second(b, adam, 2, 77);
  second.set_steps(2);
  for (int s = 2; s < 4; ++s) {
    const Batch batch(uint32_t(s % 2));
    second.step(batch.x.view(), batch.y.data(), 1e-3);
  }
  CHECK(same_bits(a.params(), b.params()));
}
