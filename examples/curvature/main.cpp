// curvature: PAPER.md claim E4. Trains a LeNet-5 with variance layers, estimates for each layer
// and each weight group (output unit or channel) the criterion dL ~= 0.5 sum_i H_ii Var(w_i)
// (eval/curvature.hpp: Hutchinson and diagonal Fisher), makes groups deterministic in order of
// increasing |dL|, and reports the ensemble's accuracy against the fraction of weights still
// random, next to a random order (the control) and to whole layers in criterion order.
//
//   curvature [--data DIR] [--var-layers 1,2] [--out DIR] ...   (--help)
//
// A variance layer's weights have expectation 0, which is not a parameter of the network: the
// criterion of layer L is estimated (in double) on a twin in which L is a deterministic layer
// with zero weights and the other variance layers keep sampling. Making a group of a variance
// layer deterministic sets its standard deviations to 0, i.e. its weights to their expectation.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include "../common/cli.hpp"
#include "../common/lenet_run.hpp"
#include "../common/plot.hpp"
#include "varnet/varnet.hpp"

namespace {

using varnet::str;
using T = float;
namespace fs = std::filesystem;

const char* kHelp =
    R"(curvature: which random weights can be replaced by their expectations? (E4)

  --data DIR            MNIST-format directory (4 IDX files, raw or .gz)
                        [/usr/share/datasets/fashion-mnist]
  --var-layers LIST     the variance layers (1-4) of LeNet-5 [1,2]
  --epochs E            training epochs [5]
  --train-limit N       use the first N training images only [all]
  --batch B             mini-batch size [128]
  --lr LR               Adam learning rate, decayed linearly to 0 [0.001]
  --seed S              seed of initialisation, noise, data order and probes [0]
  --curv-examples N     training images the criterion is estimated on [500]
  --probes P            Hutchinson probes (2 passes over those images each) [16]
  --fisher-examples N   images of the diagonal Fisher (one backward pass each) [200]
  --steps S             evaluation points along each order (by weights made deterministic) [10]
  --samples K           ensemble size of the evaluation [10]
  --test-limit N        evaluate on the first N test images [1000]
  --out DIR             where curvature.csv, curvature_layers.csv, curvature.png go
                        [curvature_out]
  --overwrite           allow replacing existing outputs
  --help                this text
)";

const char* kLayers[4] = {"conv1", "conv2", "fc1", "fc2"};

struct Config {
  std::string data, out;
  std::vector<int> var_layers;
  varnet::examples::TrainSettings train;
  int64_t train_limit, curv_examples, probes, fisher_examples, steps, samples, test_limit;
  bool overwrite;
};

Config parse(int argc, char** argv) {
  const varnet::cli::Args a(argc, argv,
                            {"--data", "--var-layers", "--epochs", "--train-limit", "--batch",
                             "--lr", "--seed", "--curv-examples", "--probes", "--fisher-examples",
                             "--steps", "--samples", "--test-limit", "--out"},
                            {"--help", "--overwrite"});
  if (a.has("--help")) {
    std::cout << kHelp;
    std::exit(0);
  }
  Config c;
  c.data = a.get("--data", "/usr/share/datasets/fashion-mnist");
  for (int64_t l : a.get_int_list("--var-layers", "1,2", 1, 4)) c.var_layers.push_back(int(l));
  varnet::check(!c.var_layers.empty(), "--var-layers", "at least one layer", "none");
  c.train.epochs = a.get_int("--epochs", 5, 1, 100000);
  c.train_limit = a.get_int("--train-limit", 0, 0, INT64_MAX);
  c.train.batch = a.get_int("--batch", 128, 2, 65536);
  c.train.lr = a.get_double("--lr", 1e-3, 1e-12, 10);
  c.train.seed = uint64_t(a.get_int("--seed", 0, 0, INT64_MAX));
  c.curv_examples = a.get_int("--curv-examples", 500, 1, INT64_MAX);
  c.probes = a.get_int("--probes", 16, 1, 100000);
  c.fisher_examples = a.get_int("--fisher-examples", 200, 1, INT64_MAX);
  c.steps = a.get_int("--steps", 10, 1, 1000);
  c.samples = a.get_int("--samples", 10, 1, 10000);
  c.test_limit = a.get_int("--test-limit", 1000, 0, INT64_MAX);
  c.out = a.get("--out", "curvature_out");
  c.overwrite = a.has("--overwrite");
  varnet::examples::check_outputs(
      "--out", c.out, {"curvature.csv", "curvature_layers.csv", "curvature.png"}, c.overwrite);
  return c;
}

// One variance layer: its name, its sigma tensor, and the criterion per group.
struct RandomLayer {
  std::string name;
  int64_t weights = 0, groups = 0;
  varnet::CurvatureEstimate est;
  double measured = 0;  // loss with the layer deterministic minus with it random
};

// Var(w_i) of a variance layer's weights: sigma^2 (or exp(log sigma2)).
std::vector<double> variances(varnet::Network<T>& net, const std::string& layer) {
  const std::string name =
      net.table().find(layer + ".sigma") ? layer + ".sigma" : layer + ".log_sigma2";
  const int64_t n = net.table().find(name)->shape.numel();
  const T* p = net.find(name);
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    v[size_t(i)] = name.back() == 'a' ? double(p[i]) * double(p[i]) : std::exp(double(p[i]));
  return v;
}

// The double-precision twin in which `layer` is deterministic with zero weights (its
// expectation); every other tensor copied by name, the other variance layers still sampling.
varnet::Network<double> twin(varnet::Network<T>& net, const Config& c, int layer, varnet::Shape in,
                             int64_t classes) {
  varnet::LeNet5Config cfg;
  cfg.classes = classes;
  for (int l = 1; l <= 4; ++l) {
    const bool random = std::count(c.var_layers.begin(), c.var_layers.end(), l) > 0;
    cfg.kinds.push_back(random && l != layer ? varnet::LayerKind::variance
                                             : varnet::LayerKind::deterministic);
  }
  varnet::Network<double> t = varnet::make_lenet5<double>(cfg, in, c.train.seed);
  for (const auto& e : t.table().entries()) {
    double* dst = t.find(e.name);
    const bool shared = net.table().find(e.name) != nullptr;
    const T* src = shared ? net.find(e.name) : nullptr;
    for (int64_t i = 0; i < e.shape.numel(); ++i) dst[i] = shared ? double(src[i]) : 0.0;
  }
  for (int l : c.var_layers)
    if (l != layer) t.set_mode_override(kLayers[l - 1], varnet::PredictMode::sample);
  return t;
}

double accuracy(varnet::Network<T>& net, const varnet::data::LabeledImages& d, int samples,
                uint64_t seed) {
  varnet::EnsembleOptions o;
  o.samples = samples;
  o.batch = 500;
  o.seed = seed;
  return varnet::evaluate_ensemble(net, d, o).accuracy;
}

// Single-sample training loss on `d`; used for the measured effect of a layer's noise.
double sample_loss(varnet::Network<T>& net, const varnet::data::LabeledImages& d, uint64_t seed) {
  varnet::EnsembleOptions o;
  o.samples = 1;
  o.batch = 500;
  o.seed = seed;
  return varnet::evaluate_ensemble(net, d, o).nll;
}

std::vector<RandomLayer> estimate(varnet::Network<T>& net, const varnet::data::LabeledImages& sub,
                                  const Config& c, int64_t classes) {
  varnet::CurvatureOptions co;
  co.probes = int(c.probes);
  co.fisher_examples = c.fisher_examples;
  co.seed = c.train.seed;
  co.batch = 250;
  const double random_loss = sample_loss(net, sub, c.train.seed);
  std::vector<RandomLayer> out;
  for (int l : c.var_layers) {
    RandomLayer r;
    r.name = kLayers[l - 1];
    const std::vector<double> var = variances(net, r.name);
    varnet::Network<double> t = twin(net, c, l, sub.images.shape().with_batch(1), classes);
    r.est = varnet::estimate_curvature(t, sub, {{r.name, r.name + ".weight", var}}, co)[0];
    r.weights = int64_t(var.size());
    r.groups = r.est.groups;
    net.set_mode_override(r.name, varnet::PredictMode::mean);
    r.measured = sample_loss(net, sub, c.train.seed) - random_loss;
    net.set_mode_override(r.name, std::nullopt);
    std::printf("criterion %-6s on %lld images  dL Hutchinson %.4g  Fisher %.4g  measured %.4g\n",
                r.name.c_str(), (long long)sub.images.shape().n, r.est.delta_hutchinson,
                r.est.delta_fisher, r.measured);
    std::fflush(stdout);
    out.push_back(std::move(r));
  }
  return out;
}

struct Group {
  size_t layer;
  int64_t index, weights;
  double hutchinson, fisher;
};

std::vector<Group> groups_of(const std::vector<RandomLayer>& layers) {
  std::vector<Group> g;
  for (size_t l = 0; l < layers.size(); ++l)
    for (int64_t i = 0; i < layers[l].groups; ++i)
      g.push_back({l, i, layers[l].weights / layers[l].groups,
                   layers[l].est.group_hutchinson[size_t(i)],
                   layers[l].est.group_fisher[size_t(i)]});
  return g;
}

struct Point {
  std::string order;
  int64_t step;
  double fraction_random, accuracy;
};

// Makes group g deterministic: its weights' standard deviations 0 (log sigma2 very negative).
void make_deterministic(varnet::Network<T>& net, const std::vector<RandomLayer>& layers,
                        const Group& g) {
  const std::string layer = layers[g.layer].name;
  const bool sigma = net.table().find(layer + ".sigma") != nullptr;
  T* p = net.find(layer + (sigma ? ".sigma" : ".log_sigma2")) + g.index * g.weights;
  std::fill(p, p + g.weights, sigma ? T(0) : T(-1e4));
}

// Walks `order` (indices into groups), evaluating at every 1/steps of the weights.
std::vector<Point> walk(varnet::Network<T>& net, const std::vector<RandomLayer>& layers,
                        const std::vector<Group>& groups, const std::vector<size_t>& order,
                        const std::string& name, const varnet::data::LabeledImages& test,
                        const Config& c) {
  const std::vector<T> saved(net.params().begin(), net.params().end());
  int64_t total = 0, done = 0;
  for (const Group& g : groups) total += g.weights;
  std::vector<Point> pts;
  size_t next = 0;
  for (int64_t s = 0; s <= c.steps; ++s) {
    while (next < order.size() && double(done) < double(total) * double(s) / double(c.steps)) {
      make_deterministic(net, layers, groups[order[next]]);
      done += groups[order[next++]].weights;
    }
    const double acc = accuracy(net, test, int(c.samples), c.train.seed);
    pts.push_back({name, s, 1.0 - double(done) / double(total), acc});
    std::printf("order %-10s step %2lld  random %.3f  accuracy %.4f\n", name.c_str(), (long long)s,
                pts.back().fraction_random, acc);
    std::fflush(stdout);
  }
  std::copy(saved.begin(), saved.end(), net.params().begin());
  return pts;
}

// Whole layers made deterministic (mean mode) in order of increasing |dL| (Hutchinson).
std::vector<Point> walk_layers(varnet::Network<T>& net, const std::vector<RandomLayer>& layers,
                               const varnet::data::LabeledImages& test, const Config& c) {
  std::vector<size_t> order(layers.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::abs(layers[a].est.delta_hutchinson) < std::abs(layers[b].est.delta_hutchinson);
  });
  int64_t total = 0, done = 0;
  for (const auto& l : layers) total += l.weights;
  std::vector<Point> pts;
  for (size_t s = 0; s <= order.size(); ++s) {
    if (s > 0) {
      net.set_mode_override(layers[order[s - 1]].name, varnet::PredictMode::mean);
      done += layers[order[s - 1]].weights;
    }
    const double acc = accuracy(net, test, int(c.samples), c.train.seed);
    pts.push_back({"layers", int64_t(s), 1.0 - double(done) / double(total), acc});
    std::printf("order layers     step %2zu  %-6s random %.3f  accuracy %.4f\n", s,
                s ? layers[order[s - 1]].name.c_str() : "-", pts.back().fraction_random, acc);
    std::fflush(stdout);
  }
  for (const auto& l : layers) net.set_mode_override(l.name, std::nullopt);
  return pts;
}

std::vector<size_t> sorted_by(const std::vector<Group>& g, double Group::*field) {
  std::vector<size_t> order(g.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::abs(g[a].*field) < std::abs(g[b].*field);
  });
  return order;
}

void print_layers(const std::vector<RandomLayer>& layers) {
  std::printf(
      "\n| layer | weights | groups | sum Var(w) | dL Hutchinson | dL Fisher | measured |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (const auto& l : layers)
    std::printf("| %s | %lld | %lld | %.4g | %.4g | %.4g | %.4g |\n", l.name.c_str(),
                (long long)l.weights, (long long)l.groups, l.est.variance_sum,
                l.est.delta_hutchinson, l.est.delta_fisher, l.measured);
}

void print_points(const std::vector<Point>& pts, const std::vector<std::string>& orders) {
  std::printf("\n| step |");
  for (const auto& o : orders) std::printf(" %s: random | acc |", o.c_str());
  std::printf("\n|---|");
  for (size_t i = 0; i < orders.size(); ++i) std::printf("---|---|");
  std::printf("\n");
  for (int64_t s = 0;; ++s) {
    std::string line = str("| ", s, " |");
    bool any = false;
    for (const auto& o : orders) {
      const auto it = std::find_if(pts.begin(), pts.end(),
                                   [&](const Point& p) { return p.order == o && p.step == s; });
      any = any || it != pts.end();
      char cell[64] = "  |  |";
      if (it != pts.end())
        std::snprintf(cell, sizeof cell, " %.3f | %.3f |", it->fraction_random, it->accuracy);
      line += cell;
    }
    if (!any) break;
    std::printf("%s\n", line.c_str());
  }
  std::printf("\n");
}

void write_outputs(const std::vector<RandomLayer>& layers, const std::vector<Point>& pts,
                   const std::vector<std::string>& orders, const Config& c) {
  std::string csv = "order,step,fraction_random,accuracy\n";
  for (const Point& p : pts)
    csv += str(p.order, ",", p.step, ",", p.fraction_random, ",", p.accuracy, "\n");
  varnet::examples::write_text(c.out, "curvature.csv", csv);
  std::string lc = "layer,group,weights,dl_hutchinson,dl_fisher\n";
  for (const auto& l : layers)
    for (int64_t g = 0; g < l.groups; ++g)
      lc += str(l.name, ",", g, ",", l.weights / l.groups, ",", l.est.group_hutchinson[size_t(g)],
                ",", l.est.group_fisher[size_t(g)], "\n");
  varnet::examples::write_text(c.out, "curvature_layers.csv", lc);
  varnet::plot::Figure fig;
  fig.title = str("Weights made deterministic in criterion order (K = ", c.samples, ")");
  fig.xlabel = "fraction of weights still random";
  fig.ylabel = "ensemble accuracy";
  for (const auto& o : orders) {
    varnet::plot::Series s;
    s.label = o;
    for (const Point& p : pts)
      if (p.order == o) {
        s.x.push_back(p.fraction_random);
        s.y.push_back(p.accuracy);
      }
    fig.series.push_back(s);
  }
  varnet::plot::write_png(fig, (fs::path(c.out) / "curvature.png").string());
  std::printf("wrote curvature.csv, curvature_layers.csv and curvature.png in %s\n", c.out.c_str());
}

int run(const Config& c) {
  varnet::data::MnistFormatData d =
      varnet::examples::load_limited(c.data, c.train_limit, c.test_limit);
  const varnet::Shape in = d.train.images.shape().with_batch(1);
  const int64_t classes = std::max(d.train.classes, d.test.classes);
  varnet::LeNet5Config cfg;
  cfg.variance_layers = c.var_layers;
  cfg.classes = classes;
  varnet::Network<T> net = varnet::make_lenet5<T>(cfg, in, c.train.seed);
  varnet::examples::train_lenet(net, d.train, c.train, "variance");

  varnet::data::LabeledImages sub = d.train;
  varnet::examples::keep_first(sub, c.curv_examples);
  const std::vector<RandomLayer> layers = estimate(net, sub, c, classes);
  const std::vector<Group> groups = groups_of(layers);

  std::vector<size_t> random(groups.size());
  const auto shuffled = varnet::data::shuffled_order(int64_t(groups.size()), c.train.seed + 7, 0);
  for (size_t i = 0; i < groups.size(); ++i) random[i] = size_t(shuffled[i]);
  std::vector<Point> pts =
      walk(net, layers, groups, sorted_by(groups, &Group::hutchinson), "hutchinson", d.test, c);
  for (const auto& p :
       walk(net, layers, groups, sorted_by(groups, &Group::fisher), "fisher", d.test, c))
    pts.push_back(p);
  for (const auto& p : walk(net, layers, groups, random, "random", d.test, c)) pts.push_back(p);
  for (const auto& p : walk_layers(net, layers, d.test, c)) pts.push_back(p);

  const std::vector<std::string> orders = {"hutchinson", "fisher", "random", "layers"};
  print_layers(layers);
  print_points(pts, orders);
  write_outputs(layers, pts, orders, c);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return varnet::cli::run_main("curvature", [&] { return run(parse(argc, argv)); });
}
