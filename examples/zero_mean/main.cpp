// zero_mean: PAPER.md claim E3, variational dropout with one alpha per layer converging to a
// variance layer.
//
//   zero_mean [--data DIR] [--epochs 10] [--finetune-epochs 3] [--out DIR] ...   (--help)
//
// 1. Trains LeNet-5 with a variational dropout layer (w ~ N(theta, alpha theta^2), one learned
//    alpha per layer) in place of each of its 4 weight layers, logging every layer's log alpha
//    per epoch (CSV and PNG plot).
// 2. For every layer whose log alpha ended above --large-log-alpha, sets the weights' means to
//    zero, keeping their variances: a variance layer with sigma = sqrt(alpha) |theta|. Reports the
//    ensemble accuracy before and after.
// 3. Trains both networks for --finetune-epochs more: (a) the learned-mean network as it was,
//    (b) the zero-mean network as a variance network; compares their training objectives
//    (mean CE over the training set + KL / N; a zero-mean layer's KL to the log-uniform prior is
//    0, its alpha being infinite) and test accuracies.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "../common/cli.hpp"
#include "../common/lenet_run.hpp"
#include "../common/plot.hpp"
#include "../common/training.hpp"
#include "convert.hpp"
#include "varnet/varnet.hpp"

namespace {

using varnet::str;
using T = float;
namespace fs = std::filesystem;

const char* kHelp =
    R"(zero_mean: does variational dropout with per-layer alpha become a variance network? (E3)

  --data DIR             MNIST-format directory (4 IDX files, raw or .gz)
                         [/usr/share/datasets/fashion-mnist]
  --epochs E             variational dropout training epochs [10]
  --finetune-epochs F    further epochs for both networks after the conversion [3]
  --batch B              mini-batch size [128]
  --lr LR                Adam learning rate, decayed linearly to 0 over each phase [0.001]
  --alpha-lr-scale S     learning-rate multiplier of the log alpha parameters [10]
  --log-alpha-init A     initial log alpha of every layer [-5]
  --kl-warmup E          epochs over which the KL weight grows from 0 to 1 [0]
  --large-log-alpha L    layers whose log alpha ends above L get zero means [3]
  --samples K            ensemble size of the test evaluations [10]
  --train-limit N        use the first N training images only [all]
  --eval-batch B         evaluation batch size [1000]
  --seed S               seed of initialisation, noise and data order [0]
  --out DIR              where log_alpha.csv and log_alpha.png go (created) [zero_mean_out]
  --overwrite            allow replacing existing output files
  --help                 this text

Prints a per-epoch line, the table of results, and a JSON line last.
)";

struct Config {
  std::string data, out;
  int64_t epochs, finetune_epochs, batch, samples, train_limit, eval_batch, seed;
  double lr, alpha_lr_scale, log_alpha_init, kl_warmup, large_log_alpha;
  bool overwrite;
};

Config parse(int argc, char** argv) {
  const varnet::cli::Args a(
      argc, argv,
      {"--data", "--epochs", "--finetune-epochs", "--batch", "--lr", "--alpha-lr-scale",
       "--log-alpha-init", "--kl-warmup", "--large-log-alpha", "--samples", "--train-limit",
       "--eval-batch", "--seed", "--out"},
      {"--help", "--overwrite"});
  if (a.has("--help")) {
    std::cout << kHelp;
    std::exit(0);
  }
  Config c;
  c.data = a.get("--data", "/usr/share/datasets/fashion-mnist");
  c.epochs = a.get_int("--epochs", 10, 1, 100000);
  c.finetune_epochs = a.get_int("--finetune-epochs", 3, 0, 100000);
  c.batch = a.get_int("--batch", 128, 2, 65536);
  c.lr = a.get_double("--lr", 1e-3, 1e-12, 10);
  c.alpha_lr_scale = a.get_double("--alpha-lr-scale", 10, 0, 1e6);
  c.log_alpha_init = a.get_double("--log-alpha-init", -5, -20, 20);
  c.kl_warmup = a.get_double("--kl-warmup", 0, 0, 1e6);
  c.large_log_alpha = a.get_double("--large-log-alpha", 3, -20, 20);
  c.samples = a.get_int("--samples", 10, 1, 10000);
  c.train_limit = a.get_int("--train-limit", 0, 0, INT64_MAX);
  c.eval_batch = a.get_int("--eval-batch", 1000, 2, 65536);
  c.seed = a.get_int("--seed", 0, 0, INT64_MAX);
  c.out = a.get("--out", "zero_mean_out");
  c.overwrite = a.has("--overwrite");
  // Check the outputs now, not after an hour of training.
  varnet::examples::check_outputs("--out", c.out, {"log_alpha.csv", "log_alpha.png"}, c.overwrite);
  return c;
}

const char* kLayers[4] = {"conv1", "conv2", "fc1", "fc2"};

varnet::Network<T> build(const Config& c, const std::vector<varnet::LayerKind>& kinds,
                         varnet::Shape in, int64_t classes) {
  varnet::LeNet5Config cfg;
  cfg.kinds = kinds;
  cfg.dropout.log_alpha_init = c.log_alpha_init;
  cfg.classes = classes;
  return varnet::make_lenet5<T>(cfg, in, uint64_t(c.seed));
}

varnet::Adam<T> make_adam(varnet::Network<T>& net, double alpha_lr_scale) {
  varnet::Adam<T> adam(net.params().size());
  varnet::examples::scale_log_alpha_lr(adam, net, alpha_lr_scale);
  return adam;
}

double log_alpha_of(varnet::Network<T>& net, const std::string& layer) {
  return double(*net.find(layer + ".log_alpha"));
}

struct Measured {
  double test_acc = 0, test_nll = 0, mean_acc = 0, train_ce = 0, kl_per_image = 0;
  double objective() const { return train_ce + kl_per_image; }
};

// Test ensemble and mean propagation; the training objective with one noise sample per image.
Measured measure(varnet::Network<T>& net, const varnet::data::MnistFormatData& d, const Config& c) {
  varnet::EnsembleOptions o;
  o.samples = int(c.samples);
  o.batch = c.eval_batch;
  o.seed = uint64_t(c.seed);
  Measured m;
  const auto test = varnet::evaluate_ensemble(net, d.test, o);
  m.test_acc = test.accuracy;
  m.test_nll = test.nll;
  o.samples = 1;
  m.train_ce = varnet::evaluate_ensemble(net, d.train, o).nll;
  o.mode = varnet::PredictMode::mean;
  m.mean_acc = varnet::evaluate_ensemble(net, d.test, o).accuracy;
  m.kl_per_image = net.kl() / double(d.train.images.shape().n);
  return m;
}

// Trains `net` for `epochs` with the KL weight (warm-up only in the first phase) and a fresh Adam.
void train(varnet::Network<T>& net, const varnet::data::LabeledImages& train_set, const Config& c,
           int64_t epochs, uint32_t first_epoch, double warmup, const std::string& label,
           const std::function<void(int64_t)>& after_epoch = {}) {
  varnet::Adam<T> adam = make_adam(net, c.alpha_lr_scale);
  // A seed per phase: the trainer counts steps from 0 again, and must not replay phase 1's noise.
  varnet::Trainer<T, varnet::Adam<T>> trainer(net, adam, 1, uint64_t(c.seed) + first_epoch);
  const int64_t steps = train_set.images.shape().n / c.batch;
  const varnet::LinearDecay lr{c.lr, steps * epochs};
  const varnet::KlWarmup beta{1.0, int64_t(warmup * double(steps))};
  for (int64_t e = 0; e < epochs; ++e) {
    const auto r = varnet::examples::train_epoch(trainer, train_set, uint64_t(c.seed),
                                                 uint32_t(first_epoch + e), c.batch, lr, &beta);
    std::printf("%s epoch %lld/%lld  loss %.4f  kl/N %.4f  train acc %.4f  %.0f img/s",
                label.c_str(), (long long)e + 1, (long long)epochs, r.loss,
                r.kl / double(train_set.images.shape().n), r.accuracy,
                double(r.images) / r.seconds);
    for (const char* l : kLayers)
      if (net.table().find(std::string(l) + ".log_alpha"))
        std::printf("  %s %.2f", l, log_alpha_of(net, l));
    std::printf("\n");
    std::fflush(stdout);
    if (after_epoch) after_epoch(e + 1);
  }
}

// log_alpha.csv and log_alpha.png: each layer's log alpha per epoch; the epochs after
// `vdo_epochs` are the learned-mean network's continuation (phase 3 (a)).
void write_trajectory(const Config& c, const std::vector<std::vector<double>>& trajectory,
                      int64_t vdo_epochs) {
  const fs::path csv = fs::path(c.out) / "log_alpha.csv", png = fs::path(c.out) / "log_alpha.png";
  std::ofstream f(csv);
  f << "epoch,phase,conv1,conv2,fc1,fc2\n";
  for (const auto& row : trajectory) {
    f << row[0] << (row[0] <= double(vdo_epochs) ? ",vdo" : ",continued");
    for (size_t i = 1; i < row.size(); ++i) f << "," << row[i];
    f << "\n";
  }
  f.close();
  varnet::check(bool(f), "writing the CSV", "a complete write", "an error on '", csv.string(), "'");
  varnet::plot::Figure fig;
  fig.title = str("log alpha per layer (conversion after epoch ", vdo_epochs, ")");
  fig.xlabel = "epoch";
  fig.ylabel = "log alpha";
  for (size_t l = 0; l < 4; ++l) {
    varnet::plot::Series s;
    s.label = kLayers[l];
    for (const auto& row : trajectory) {
      s.x.push_back(row[0]);
      s.y.push_back(row[l + 1]);
    }
    fig.series.push_back(s);
  }
  varnet::plot::write_png(fig, png.string());
  std::cout << "wrote " << csv.string() << " and " << png.string() << "\n";
}

int run(const Config& c) {
  std::cout << "reading " << c.data << "\n";
  varnet::data::MnistFormatData d = varnet::data::load_mnist_dir(c.data);
  if (c.train_limit > 0 && c.train_limit < d.train.images.shape().n) {
    d.train.images.resize(d.train.images.shape().with_batch(c.train_limit));
    d.train.labels.resize(size_t(c.train_limit));
  }
  const varnet::Shape in = d.train.images.shape().with_batch(1);
  const int64_t classes = std::max(d.train.classes, d.test.classes);
  varnet::check(d.train.images.shape().n >= c.batch, "--batch",
                str("at most the training set size ", d.train.images.shape().n), c.batch);

  // 1. variational dropout everywhere, log alpha per epoch
  using varnet::LayerKind;
  const std::vector<LayerKind> all_vdo(4, LayerKind::vdo);
  varnet::Network<T> a = build(c, all_vdo, in, classes);
  std::cout << "LeNet-5, variational dropout with one alpha per layer:\n" << a.summary();
  std::vector<std::vector<double>> trajectory;  // per epoch: epoch, log alpha of each layer
  const auto record = [&](int64_t epoch) {
    std::vector<double> row{double(epoch)};
    for (const char* l : kLayers) row.push_back(log_alpha_of(a, l));
    trajectory.push_back(row);
  };
  record(0);
  train(a, d.train, c, c.epochs, 0, c.kl_warmup, "vdo", record);

  const std::vector<double> at_conversion = trajectory.back();

  // 2. zero means for the layers whose alpha grew large
  std::vector<LayerKind> kinds = all_vdo;
  std::string converted;
  for (int l = 0; l < 4; ++l)
    if (log_alpha_of(a, kLayers[l]) > c.large_log_alpha) {
      kinds[size_t(l)] = LayerKind::variance;
      converted += str(converted.empty() ? "" : ",", "\"", kLayers[l], "\"");
    }
  std::cout << "layers with log alpha > " << c.large_log_alpha << ": "
            << (converted.empty() ? "none" : converted) << "\n";
  varnet::Network<T> b = build(c, kinds, in, classes);
  varnet::examples::convert_to_zero_mean(a, b);

  const Measured a0 = measure(a, d, c), b0 = measure(b, d, c);

  // 3. both trained further; objectives compared
  Measured a1 = a0, b1 = b0;
  if (c.finetune_epochs > 0) {
    train(a, d.train, c, c.finetune_epochs, uint32_t(c.epochs), 0, "(a) learned mean",
          [&](int64_t e) { record(c.epochs + e); });
    train(b, d.train, c, c.finetune_epochs, uint32_t(c.epochs), 0, "(b) zero mean");
    a1 = measure(a, d, c);
    b1 = measure(b, d, c);
  }

  write_trajectory(c, trajectory, c.epochs);

  const auto row = [&](const char* what, const Measured& m) {
    std::printf("| %-44s | %8.4f | %8.4f | %9.4f | %9.4f | %8.4f | %9.4f |\n", what, m.test_acc,
                m.test_nll, m.mean_acc, m.train_ce, m.kl_per_image, m.objective());
  };
  std::printf(
      "\n| %-44s | acc K=%-2lld | nll K=%-2lld | mean acc  | train CE  | KL / N   | objective |\n",
      "network", (long long)c.samples, (long long)c.samples);
  std::printf("|%s|----------|----------|-----------|-----------|----------|-----------|\n",
              std::string(46, '-').c_str());
  row("(a) learned mean, after training", a0);
  row("(b) zero mean, right after conversion", b0);
  if (c.finetune_epochs > 0) {
    row(str("(a) learned mean, +", c.finetune_epochs, " epochs").c_str(), a1);
    row(str("(b) zero mean, +", c.finetune_epochs, " epochs").c_str(), b1);
  }
  std::printf("\n");

  std::string la;
  for (int l = 0; l < 4; ++l)
    la += str(l ? "," : "", "\"", kLayers[l], "\":", at_conversion[size_t(l + 1)]);
  const auto js = [](const Measured& m) {
    return str("{\"test_acc\":", m.test_acc, ",\"test_nll\":", m.test_nll,
               ",\"mean_acc\":", m.mean_acc, ",\"train_ce\":", m.train_ce,
               ",\"kl_per_image\":", m.kl_per_image, ",\"objective\":", m.objective(), "}");
  };
  std::cout << "{\"log_alpha_at_conversion\":{" << la << "},\"converted\":[" << converted
            << "],\"learned_mean\":" << js(a0) << ",\"zero_mean\":" << js(b0)
            << ",\"learned_mean_finetuned\":" << js(a1) << ",\"zero_mean_finetuned\":" << js(b1)
            << ",\"epochs\":" << c.epochs << ",\"finetune_epochs\":" << c.finetune_epochs
            << ",\"samples\":" << c.samples << ",\"alpha_lr_scale\":" << c.alpha_lr_scale
            << ",\"seed\":" << c.seed << ",\"train_images\":" << d.train.images.shape().n << "}"
            << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return varnet::cli::run_main("zero_mean", [&] { return run(parse(argc, argv)); });
}
