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

// LeNet-5 on 1x20x20 inputs (odd sizes: conv1 16x16, conv2 4x4, fc1 200 -> 500) with all four
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

// n images with labels (i * stride) % 10.
data::LabeledImages labeled(int64_t n, int64_t stride) {
  data::LabeledImages d;
  d.images = images<float>(n);
  d.classes = 10;
  for (int64_t i = 0; i < n; ++i) d.labels.push_back(int32_t((i * stride) % 10));
  return d;
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
  const data::LabeledImages d = labeled(23, 7);
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

namespace {

// The ensemble's NLL and accuracy computed the long way: a whole forward pass per sample.
template <class T>
std::pair<double, double> by_full_passes(Network<T>& net, const data::LabeledImages& d,
                                         const EnsembleOptions& o) {
  Tensor<T> x(d.images.shape());
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = T(d.images[i]);
  const int64_t n = x.shape().n, c = net.output_shape().c;
  std::vector<double> sum(size_t(n * c), 0.0), p(size_t(n * c));
  for (int k = 0; k < o.samples; ++k) {
    const Context ctx =
        Context::eval(o.seed, o.mode, stream::kEnsembleBase + uint32_t(k), o.batch_stats);
    softmax_rows(net.forward(x.view(), ctx).data, n, c, p.data());
    for (size_t i = 0; i < p.size(); ++i) sum[i] += p[i];
  }
  double nll = 0, correct = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double* row = sum.data() + i * c;
    int64_t best = 0;
    for (int64_t j = 1; j < c; ++j)
      if (row[j] > row[best]) best = j;
    correct += best == d.labels[size_t(i)];
    nll -= std::log(std::max(row[d.labels[size_t(i)]] / o.samples, 1e-12));
  }
  return {nll / double(n), correct / double(n)};
}

}  // namespace

TEST_CASE("ensembles run the layers before the first noisy one once per batch", "[stacked]") {
  LeNet5Config cfg;
  cfg.variance_layers = {3, 4};  // conv1 .. flatten deterministic: a prefix of 9 layers
  Network<double> net = make_lenet5<double>(cfg, Shape(1, 1, 20, 20), 8);
  for (double& s : net.state()) s = 0.5 + 0.1 * std::sin(double(&s - net.state().data()));
  CHECK(net.first_noisy_layer(Context::eval(0, PredictMode::sample, 0)) == 9);
  CHECK(net.first_noisy_layer(Context::eval(0, PredictMode::mean, 0)) == net.size());
  const data::LabeledImages d = labeled(12, 3);
  EnsembleOptions o;
  o.samples = 6;
  o.batch = 12;  // one batch: the long way's noise rows are the same
  o.seed = 5;
  for (bool batch_stats : {false, true})
    for (int per : {1, 4}) {
      CAPTURE(batch_stats, per);
      o.batch_stats = batch_stats;
      o.samples_per_pass = per;
      const EnsembleResult e = evaluate_ensemble(net, d, o);
      const auto [nll, acc] = by_full_passes(net, d, o);
      CHECK(e.nll == Approx(nll).epsilon(1e-12));
      CHECK(e.accuracy == acc);
    }
  // A partial pass cannot be backpropagated, and its input must have its first layer's shape.
  const Tensor<double> x = images<double>(2);
  net.forward_range(0, 3, x.view(), Context::eval(0, PredictMode::sample, 0));
  const Tensor<double> dy(Shape(2, 10));
  CHECK(test::has(test::error_of([&] { net.backward(dy.view(), Context::train(0, 0)); }),
                  "a forward pass over every layer on this slot first"));
  CHECK(test::has(test::error_of([&] {
                    net.forward_range(9, net.size(), x.view(),
                                      Context::eval(0, PredictMode::sample, 0));
                  }),
                  "Network::forward_range: expected input of shape (N > 0, 200, 1, 1)"));
  CHECK(test::has(test::error_of([&] {
                    net.forward_range(5, 3, x.view(), Context::eval(0, PredictMode::sample, 0));
                  }),
                  "expected a range of the network's layers, found layers 5-3 of 13"));
}
