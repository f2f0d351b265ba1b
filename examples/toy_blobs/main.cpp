// toy_blobs: the paper's toy problem (PAPER.md E6). Four Gaussian blobs in the plane (unit
// covariance, centres (3,3), (3,10), (10,3), (10,10)), classified by an MLP with a 2-unit
// Gaussian variance layer in the middle. The variance layer's weights have zero mean, so its
// activations have the same mean (0) for every class: the class can only be carried by their
// variances, and mean propagation, which replaces the weights by their means, is at chance.
//
//   toy_blobs [--epochs 60] [--png docs/toy_blobs.png] [--csv docs/toy_blobs.csv] ...  (--help)
//
// Steps: draw the data (seeded); train with Adam; print the test accuracy with mean propagation
// and with ensembles (with NLL, ECE and mutual information); write samples of the 2-unit
// activations of every test point as CSV and as a scatter plot coloured by class.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "../common/cli.hpp"
#include "../common/plot.hpp"
#include "varnet/core/random.hpp"
#include "varnet/data/batches.hpp"
#include "varnet/eval/metrics.hpp"
#include "varnet/layers/activations.hpp"
#include "varnet/layers/linear.hpp"
#include "varnet/layers/variance.hpp"
#include "varnet/nn/network.hpp"
#include "varnet/nn/optimizer.hpp"
#include "varnet/nn/trainer.hpp"

namespace {

using varnet::str;
using T = float;

const char* kHelp =
    R"(toy_blobs: four Gaussian blobs and an MLP with a 2-unit variance layer (PAPER.md E6)

  --points N           points per class, for training and for test each [500]
  --hidden H           width of the hidden layers around the variance layer [32]
  --epochs E           training epochs [60]
  --batch B            mini-batch size [100]
  --lr LR              Adam learning rate, decayed linearly to 0 [0.01]
  --train-samples K    samples per step of the K-sample objective [1]
  --samples LIST       ensemble sizes to evaluate [1,10,100]
  --act-samples S      activation samples written per test point [1]
  --seed S             seed of data, initialisation and noise [0]
  --csv PATH           activation samples as CSV [docs/toy_blobs.csv]
  --png PATH           scatter plot of the activation samples [docs/toy_blobs.png]
  --overwrite          allow replacing existing files at --csv and --png
  --help               this text

The network: 2 -> Linear(H) -> ReLU -> Linear(H) -> ReLU -> VarianceLinear(2, Gaussian, no bias)
-> Linear(H) -> ReLU -> Linear(4). Inputs are scaled to (x - 6.5) / 3.5.
)";

struct Config {
  int64_t points, hidden, epochs, batch, train_samples, act_samples, seed;
  double lr;
  std::vector<int64_t> samples;
  std::string csv, png;
};

Config parse(int argc, char** argv) {
  const varnet::cli::Args a(
      argc, argv,
      {"--points", "--hidden", "--epochs", "--batch", "--lr", "--train-samples", "--samples",
       "--act-samples", "--seed", "--csv", "--png"},
      {"--help", "--overwrite"});
  if (a.has("--help")) {
    std::cout << kHelp;
    std::exit(0);
  }
  Config c;
  c.points = a.get_int("--points", 500, 1, 1000000);
  c.hidden = a.get_int("--hidden", 32, 1, 4096);
  c.epochs = a.get_int("--epochs", 60, 1, 100000);
  c.batch = a.get_int("--batch", 100, 1, 1000000);
  c.lr = a.get_double("--lr", 1e-2, 1e-12, 10);
  c.train_samples = a.get_int("--train-samples", 1, 1, 64);
  c.samples = a.get_int_list("--samples", "1,10,100", 1, 10000);
  c.act_samples = a.get_int("--act-samples", 1, 1, 1000);
  c.seed = a.get_int("--seed", 0, 0, INT64_MAX);
  c.csv = a.get("--csv", "docs/toy_blobs.csv");
  c.png = a.get("--png", "docs/toy_blobs.png");
  varnet::cli::check_new_file("--csv", c.csv, a.has("--overwrite"));
  varnet::cli::check_new_file("--png", c.png, a.has("--overwrite"));
  varnet::check(c.batch <= 4 * c.points, "--batch",
                str("at most the training set size ", 4 * c.points), c.batch);
  return c;
}

constexpr uint32_t kDataStream = 0xFF10;  // the blobs' noise: (seed, step = which set)

// Four unit-covariance blobs, `per_class` points each, drawn from Philox; `which`: 0 training,
// 1 test. Classes alternate 0, 1, 2, 3, 0, ...
varnet::data::LabeledImages blobs(int64_t per_class, uint64_t seed, uint32_t which) {
  const double centres[4][2] = {{3, 3}, {3, 10}, {10, 3}, {10, 10}};
  varnet::data::LabeledImages d;
  d.images = varnet::Tensor<float>(varnet::Shape(4 * per_class, 2));
  const varnet::NoiseKey key{seed, 0, which, kDataStream};
  for (int64_t i = 0; i < 4 * per_class; ++i) {
    const int cls = int(i % 4);
    for (int j = 0; j < 2; ++j) {
      const double v = centres[cls][j] + varnet::normal_at(key, uint64_t(2 * i + j));
      d.images.at(i, j) = float((v - 6.5) / 3.5);
    }
    d.labels.push_back(cls);
  }
  d.classes = 4;
  d.source = which == 0 ? "training blobs" : "test blobs";
  return d;
}

// An identity layer that copies what passes through it into `sink` when one is set: a window on
// the variance layer's activations that leaves the network and its training untouched.
class Tap : public varnet::Layer<T> {
 public:
  varnet::Tensor<T>* sink = nullptr;
  std::string kind() const override { return "Tap"; }
  varnet::Shape output_shape(const varnet::Shape& in) const override { return in; }
  void forward(varnet::ConstView<T> x, varnet::TensorView<T> y, T*,
               const varnet::Context&) override {
    std::copy(x.data, x.data + x.numel(), y.data);
    if (!sink) return;
    sink->resize(x.shape);
    std::copy(x.data, x.data + x.numel(), sink->data());
  }
  void backward(varnet::ConstView<T>, varnet::ConstView<T>, varnet::ConstView<T> dy,
                varnet::TensorView<T> dx, T*, const varnet::Context&) override {
    if (dx.data) std::copy(dy.data, dy.data + dy.numel(), dx.data);
  }
};

// The classes' spreads differ by orders of magnitude: plot on a symmetric log scale.
double symlog(double a) {
  return std::copysign(std::log10(1 + std::abs(a)), a);
}

int run(const Config& c) {
  const auto t_start = std::chrono::steady_clock::now();
  const varnet::data::LabeledImages train = blobs(c.points, uint64_t(c.seed), 0);
  const varnet::data::LabeledImages test = blobs(c.points, uint64_t(c.seed), 1);
  std::printf("4 blobs, %lld training and %lld test points\n", (long long)(4 * c.points),
              (long long)(4 * c.points));

  varnet::Network<T> net;
  const int64_t h = c.hidden;
  net.emplace<varnet::Linear<T>>("fc1", 2, h);
  net.emplace<varnet::ReLU<T>>("relu1");
  net.emplace<varnet::Linear<T>>("fc2", h, h);
  net.emplace<varnet::ReLU<T>>("relu2");
  net.emplace<varnet::VarianceLinear<T>>("var", h, 2, varnet::VarianceOptions{});
  Tap& tap = net.emplace<Tap>("tap");
  net.emplace<varnet::Linear<T>>("fc3", 2, h);
  net.emplace<varnet::ReLU<T>>("relu3");
  net.emplace<varnet::Linear<T>>("out", h, 4);
  net.build(varnet::Shape(1, 2), uint64_t(c.seed));
  std::cout << "MLP:\n" << net.summary();

  varnet::Adam<T> adam(net.params().size());
  varnet::Trainer<T, varnet::Adam<T>> trainer(net, adam, int(c.train_samples), uint64_t(c.seed));
  const int64_t n = train.images.shape().n, steps_per_epoch = n / c.batch;
  const varnet::LinearDecay lr{c.lr, steps_per_epoch * c.epochs};
  varnet::Tensor<T> x;
  std::vector<int32_t> y;
  for (int64_t e = 0; e < c.epochs; ++e) {
    const auto order = varnet::data::shuffled_order(n, uint64_t(c.seed), uint32_t(e));
    double loss = 0;
    int64_t correct = 0;
    for (int64_t s = 0; s < steps_per_epoch; ++s) {
      varnet::data::gather_batch(train, order, s * c.batch, c.batch, x, y);
      const varnet::LossResult r = trainer.step(x.view(), y.data(), lr.at(trainer.steps()));
      loss += r.loss;
      correct += r.correct;
    }
    if ((e + 1) % 10 == 0 || e == 0 || e + 1 == c.epochs) {
      std::printf("epoch %lld/%lld  loss %.4f  train acc %.4f\n", (long long)e + 1,
                  (long long)c.epochs, loss / double(steps_per_epoch),
                  double(correct) / double(steps_per_epoch * c.batch));
      std::fflush(stdout);
    }
  }

  // Evaluation on the test blobs.
  varnet::EnsembleOptions o;
  o.seed = uint64_t(c.seed);
  o.samples = 1;
  o.mode = varnet::PredictMode::mean;
  const varnet::UncertaintyMetrics mean = varnet::evaluate_uncertainty(net, test, o);
  std::printf("test mean propagation      acc %.4f  nll %.4f\n", mean.accuracy, mean.nll);
  std::string json = str("{\"test_acc_mean\":", mean.accuracy);
  o.mode = varnet::PredictMode::sample;
  for (int64_t k : c.samples) {
    o.samples = int(k);
    const varnet::UncertaintyMetrics m = varnet::evaluate_uncertainty(net, test, o);
    std::printf("test ensemble of %-8lld  acc %.4f  nll %.4f  ece %.4f  mutual info %.4f\n",
                (long long)k, m.accuracy, m.nll, m.ece, m.mutual_information);
    json += str(",\"test_acc_", k, "\":", m.accuracy, ",\"test_nll_", k, "\":", m.nll);
  }

  // Samples of the variance layer's 2-unit activations for every test point.
  varnet::Tensor<T> acts, xt(test.images.shape());
  for (int64_t i = 0; i < xt.numel(); ++i) xt[i] = test.images[i];
  std::vector<varnet::plot::Series> series(4);
  const char* names[4] = {"class 0 (3,3)", "class 1 (3,10)", "class 2 (10,3)", "class 3 (10,10)"};
  for (int cls = 0; cls < 4; ++cls) series[size_t(cls)] = {names[cls], {}, {}, false};
  std::string csv = "class,point,sample,a1,a2\n";
  double square_sum[4][2] = {}, count[4] = {};
  tap.sink = &acts;
  for (int64_t s = 0; s < c.act_samples; ++s) {
    net.forward(xt.view(), varnet::Context::eval(uint64_t(c.seed), varnet::PredictMode::sample,
                                                 varnet::stream::kEnsembleBase + uint32_t(s)));
    for (int64_t i = 0; i < acts.shape().n; ++i) {
      const int32_t cls = test.labels[size_t(i)];
      csv += str(cls, ",", i, ",", s, ",", acts.at(i, 0), ",", acts.at(i, 1), "\n");
      square_sum[cls][0] += double(acts.at(i, 0)) * acts.at(i, 0);
      square_sum[cls][1] += double(acts.at(i, 1)) * acts.at(i, 1);
      count[cls] += 1;
      series[size_t(cls)].x.push_back(symlog(acts.at(i, 0)));
      series[size_t(cls)].y.push_back(symlog(acts.at(i, 1)));
    }
  }
  tap.sink = nullptr;
  std::printf("activation spread per class (root mean square of a1, a2; their mean is 0):\n");
  for (int cls = 0; cls < 4; ++cls)
    std::printf("  %-16s %.3g  %.3g\n", names[cls], std::sqrt(square_sum[cls][0] / count[cls]),
                std::sqrt(square_sum[cls][1] / count[cls]));
  {
    std::FILE* f = std::fopen(c.csv.c_str(), "wb");
    varnet::check(f != nullptr, "--csv", "a writable path", "'" + c.csv + "'");
    const bool ok = std::fwrite(csv.data(), 1, csv.size(), f) == csv.size();
    varnet::check(std::fclose(f) == 0 && ok, "--csv", "a complete write", "a write error on '",
                  c.csv, "'");
  }
  varnet::plot::Figure fig;
  fig.title = "Variance layer activations, test blobs, one sample each";
  fig.xlabel = "unit 1: sign(a) log10(1 + |a|)";
  fig.ylabel = "unit 2: sign(a) log10(1 + |a|)";
  // Widest cloud first, so that the narrow ones are drawn on top of it.
  std::vector<int> by_spread = {0, 1, 2, 3};
  std::sort(by_spread.begin(), by_spread.end(), [&](int a, int b) {
    return square_sum[a][0] + square_sum[a][1] > square_sum[b][0] + square_sum[b][1];
  });
  for (int cls : by_spread) fig.series.push_back(series[size_t(cls)]);
  fig.width = 720;
  fig.height = 640;
  varnet::plot::write_png(fig, c.png);
  std::printf("wrote %s and %s (%.1f s in all)\n", c.csv.c_str(), c.png.c_str(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count());
  std::cout << json << ",\"epochs\":" << c.epochs << ",\"seed\":" << c.seed << "}" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return varnet::cli::run_main("toy_blobs", [&] { return run(parse(argc, argv)); });
}
