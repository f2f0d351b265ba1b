// Stacked noise samples (Context::rows_per_sample, BatchNoise): one forward pass over K copies of
// a batch must give the K one-sample passes' outputs, for every layer family that can stack, and
// evaluate_ensemble must give the same result however many samples share a pass. Layers that
// cannot stack (one weight draw per pass) and contexts that would mix samples are refused.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "catch.hpp"
#include "errors.hpp"
#include "varnet/eval/ensemble.hpp"
#include "varnet/eval/metrics.hpp"
#include "varnet/models/lenet5.hpp"

namespace {

using namespace varnet;

// LeNet-5 on 1x20x20 inputs (odd sizes: conv1 16x16, conv2 4x4, fc1 50 -> 500) with all four
// weight layers of one kind, batch-norm running statistics made non-trivial.
template <class T>
Network<T> lenet(LayerKind kind, WeightDist dist = WeightDist::gaussian) {
  LeNet5Config cfg;
  cfg.kind = kind;
  cfg.variance_layers = {1, 2, 3, 4};
  cfg.variance.dist = dist;
  cfg.dropout_p = 0.3;
  Network<T> net = make_lenet5<T>(cfg, Shape(1, 1, 20, 20), 11);
  for (const ParamEntry& e : net.table().entries()) {
    if (e.trainable) continue;
    const bool var = e.name.find("running_var") != std::string::npos;
    T* s = net.state().data() + e.offset;
    for (int64_t i = 0; i < e.shape.numel(); ++i)
      s[i] = (var ? T(1) : T(0)) + T(0.2) * T(std::sin(double(e.offset + i)));
  }
  return net;
}

template <class T>
Tensor<T> images(int64_t n, int64_t copies = 1) {
  Tensor<T> x(Shape(n * copies, 1, 20, 20));
  const int64_t per = 400;
  for (int64_t c = 0; c < copies; ++c)
    for (int64_t i = 0; i < n * per; ++i) x[c * n * per + i] = T(std::sin(0.37 * double(i)));
  return x;
}

// Max |stacked - separate| over the K samples, relative to the largest output.
template <class T>
double stacked_gap(Network<T>& net, int64_t b, int k) {
  const Tensor<T> x = images<T>(b), xs = images<T>(b, k);
  const uint32_t base = stream::kEnsembleBase + 5;
  const ConstView<T> zs =
      net.forward(xs.view(), Context::eval_stacked(9, PredictMode::sample, base, b));
  const std::vector<T> stacked(zs.data, zs.data + zs.numel());
  double gap = 0, scale = 0;
  for (int s = 0; s < k; ++s) {
    const ConstView<T> z = net.forward(x.view(), Context::eval(9, PredictMode::sample, base + s));
    for (int64_t i = 0; i < z.numel(); ++i) {
      gap = std::max(gap, std::abs(double(stacked[size_t(s * z.numel() + i)] - z.data[i])));
      scale = std::max(scale, std::abs(double(z.data[i])));
    }
  }
  return gap / scale;
}

TEST_CASE("BatchNoise's flat groups cover each sample's elements as its rows draw them",
          "[stacked]") {
  const NoiseKey key{5, 3, 7, stream::kEnsembleBase};
  for (int64_t rows : {0, 1, 3})
    for (int64_t row_numel : {1, 5, 8}) {
      CAPTURE(rows, row_numel);
      const BatchNoise noise(key, rows);
      const int64_t n = 6, numel = n * row_numel;
      std::vector<int> seen(size_t(numel), 0);
      for (int64_t g = 0; g < noise.groups(numel, row_numel); ++g) {
        const BatchNoise::Group grp = noise.group(g, numel, row_numel);
        REQUIRE(grp.first < grp.end);
        REQUIRE(grp.end - grp.first <= 4);
        for (int64_t e = grp.first; e < grp.end; ++e) {
          const int64_t row = e / row_numel;
          // what the row-wise code draws for element e: row_key(row), element
          // row_in_sample(row) * row_numel + e % row_numel, i.e. block >> 2, lane & 3
          const int64_t local = noise.row_in_sample(row) * row_numel + e % row_numel;
          CHECK(grp.key.stream == noise.row_key(row).stream);
          CHECK(int64_t(grp.block) * 4 + (e - grp.first) == local);
          ++seen[size_t(e)];
        }
      }
      for (int c : seen) CHECK(c == 1);
    }
}

TEST_CASE("a stacked pass gives the separate samples' outputs", "[stacked]") {
  for (LayerKind kind :
       {LayerKind::variance, LayerKind::gdo, LayerKind::vdo, LayerKind::svdo, LayerKind::dropout}) {
    CAPTURE(to_string(kind));
    Network<double> net = lenet<double>(kind);
    // Only the dense GEMMs see a different batch size, which may change their summation order.
    CHECK(stacked_gap(net, 3, 4) < 1e-13);
    CHECK(stacked_gap(net, 1, 3) < 1e-13);  // batch 1
    Network<float> netf = lenet<float>(kind);
    CHECK(stacked_gap(netf, 5, 3) < 1e-5);
  }
}

TEST_CASE("stacked samples draw different noise, the first one the plain pass's", "[stacked]") {
  Network<double> net = lenet<double>(LayerKind::variance);
  const Tensor<double> x = images<double>(2), xs = images<double>(2, 2);
  const ConstView<double> z = net.forward(
      xs.view(), Context::eval_stacked(1, PredictMode::sample, stream::kEnsembleBase, 2));
  double diff = 0, size = 0;
  for (int64_t i = 0; i < 20; ++i) {
    diff = std::max(diff, std::abs(z.data[i] - z.data[20 + i]));
    size = std::max(size, std::abs(z.data[i]));
  }
  CHECK(diff > 0.1 * size);  // the two copies of the batch are two samples
  const std::vector<double> two(z.data, z.data + 20);
  const ConstView<double> one =
      net.forward(x.view(), Context::eval(1, PredictMode::sample, stream::kEnsembleBase));
  for (int64_t i = 0; i < 20; ++i) CHECK(one.data[i] == Approx(two[size_t(i)]).epsilon(1e-13));
}

TEST_CASE("evaluate_ensemble gives the same result for any number of samples per pass",
          "[stacked]") {
  Network<double> net = lenet<double>(LayerKind::variance);
  data::LabeledImages d;
  d.images = images<float>(23);
  d.classes = 10;
  for (int64_t i = 0; i < 23; ++i) d.labels.push_back(int32_t((i * 7) % 10));
  EnsembleOptions o;
  o.samples = 7;
  o.batch = 10;  // the last batch partial
  o.seed = 4;
  const EnsembleResult one = evaluate_ensemble(net, d, o);
  const UncertaintyMetrics m1 = evaluate_uncertainty(net, d, o);
  for (int per : {3, 7, 50}) {
    CAPTURE(per);
    o.samples_per_pass = per;
    const EnsembleResult e = evaluate_ensemble(net, d, o);
    CHECK(e.accuracy == one.accuracy);
    CHECK(e.nll == Approx(one.nll).epsilon(1e-12));
    const UncertaintyMetrics m = evaluate_uncertainty(net, d, o);
    CHECK(m.mutual_information == Approx(m1.mutual_information).epsilon(1e-10));
    CHECK(m.brier == Approx(m1.brier).epsilon(1e-12));
  }
  o.samples_per_pass = -1;
  CHECK(test::has(test::error_of([&] { evaluate_ensemble(net, d, o); }),
                  "samples per pass >= 0 (0: automatic), found -1"));
}

TEST_CASE("layers with one weight draw per pass and mixing contexts cannot stack", "[stacked]") {
  Network<double> bern = lenet<double>(LayerKind::variance, WeightDist::bernoulli);
  const Context stacked = Context::eval_stacked(1, PredictMode::sample, stream::kEnsembleBase, 2);
  CHECK_FALSE(bern.can_stack_samples(stacked));
  const Tensor<double> xs = images<double>(2, 3);
  CHECK(test::has(test::error_of([&] { bern.forward(xs.view(), stacked); }),
                  "layer 'conv1' (VarianceConv2d("));
  // In mean mode nothing is drawn: any network stacks.
  CHECK(bern.can_stack_samples(Context::eval(1, PredictMode::mean, 0)));

  Network<double> net = lenet<double>(LayerKind::variance);
  CHECK(net.can_stack_samples(stacked));
  CHECK_FALSE(net.can_stack_samples(Context::eval(1, PredictMode::sample, 0, true)));
  Context rows4 = stacked;
  rows4.rows_per_sample = 4;
  CHECK(test::has(test::error_of([&] { net.forward(xs.view(), rows4); }),
                  "a batch of whole stacked samples of 4 rows, found 6 rows"));
  Context train = Context::train(1, 0);
  train.rows_per_sample = 2;
  CHECK(test::has(test::error_of([&] { net.forward(xs.view(), train); }),
                  "found a training context"));
  Context high = stacked;
  high.stream = 0xFFFE;
  CHECK(test::has(test::error_of([&] { net.forward(xs.view(), high); }), "streams below 65536"));

  // evaluate_ensemble falls back to one sample per pass for such networks.
  data::LabeledImages d;
  d.images = images<float>(6);
  d.classes = 10;
  d.labels.assign(6, 3);
  EnsembleOptions o;
  o.samples = 4;
  o.seed = 2;
  const EnsembleResult a = evaluate_ensemble(bern, d, o);
  o.samples_per_pass = 4;
  const EnsembleResult b = evaluate_ensemble(bern, d, o);
  CHECK(a.nll == b.nll);
  o.batch_stats = true;
  const EnsembleResult c = evaluate_ensemble(net, d, o);
  o.samples_per_pass = 1;
  CHECK(evaluate_ensemble(net, d, o).nll == c.nll);
}

}  // namespace
