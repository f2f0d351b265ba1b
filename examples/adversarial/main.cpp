// adversarial: PAPER.md claim E5. Trains (or loads) a variance LeNet-5 and its low-variance
// rivals, attacks each with FGSM and PGD whose gradient goes through the K-sample ensemble, and
// reports the ensemble's accuracy against epsilon.
//
//   adversarial [--data DIR] [--models LIST] [--eps LIST] [--out DIR] ...   (--help)
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>
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
    R"(adversarial: ensembles of a variance LeNet-5 and its rivals under FGSM and PGD (E5)

  --data DIR           MNIST-format directory (4 IDX files, raw or .gz)
                       [/usr/share/datasets/fashion-mnist]
  --models LIST        which networks, of variance,deterministic,dropout,gdo,vdo [all five]
  --var-layers LIST    the stochastic weight layers (1-4) of every stochastic model [1]
  --dropout-p P        binary dropout's drop probability [0.5]
  --alpha A            Gaussian dropout's alpha (p = 0.5 matches alpha = 1) [1]
  --log-alpha-init A   variational dropout's initial log alpha (learned) [-5]
  --epochs E           training epochs [5]
  --train-limit N      use the first N training images only [all]
  --batch B            mini-batch size [128]
  --lr LR              Adam learning rate, decayed linearly to 0 [0.001]
  --seed S             seed of initialisation, noise, data order and attacks [0]
  --save-dir DIR       save each trained network as DIR/<model>.safetensors
  --load-dir DIR       load the networks from DIR (written by --save-dir) instead of training
  --eps LIST           L-infinity radii, inputs in [0, 1] [0,0.02,0.05,0.1,0.2]
  --attack-samples K   noise samples in the attacker's loss [10]
  --pgd-iters I        PGD steps, of size 2.5 epsilon / I, from a random start [10]
  --samples K          ensemble size of the evaluation [10]
  --test-limit N       attack the first N test images [1000]
  --out DIR            where adversarial.csv and adversarial.png go [adversarial_out]
  --overwrite          allow replacing existing outputs (and --save-dir files)
  --help               this text

Deterministic networks are attacked and evaluated with one sample (all samples are equal).
)";

const std::vector<std::string> kModels = {"variance", "deterministic", "dropout", "gdo", "vdo"};
const char* kLayers[4] = {"conv1", "conv2", "fc1", "fc2"};

struct Config {
  std::string data, out, save_dir, load_dir;
  std::vector<std::string> models;
  std::vector<int> var_layers;
  std::vector<double> eps;
  double dropout_p, alpha, log_alpha_init;
  varnet::examples::TrainSettings train;
  int64_t train_limit, test_limit, attack_samples, pgd_iters, samples;
  bool overwrite;
};

// Splits "a,b,c" at commas.
std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string part; std::getline(in, part, ',');) out.push_back(part);
  return out;
}

std::vector<std::string> parse_models(const std::string& s) {
  std::vector<std::string> out;
  for (const auto& m : split(s)) {
    bool known = false;
    for (const auto& k : kModels) known = known || k == m;
    varnet::check(known, "--models", "names of variance,deterministic,dropout,gdo,vdo",
                  "'" + m + "'");
    out.push_back(m);
  }
  varnet::check(!out.empty(), "--models", "at least one model", "none");
  return out;
}

std::vector<double> parse_eps(const std::string& s) {
  std::vector<double> out;
  for (const auto& p : split(s)) {
    char* end = nullptr;
    const double v = std::strtod(p.c_str(), &end);
    varnet::check(!p.empty() && end && *end == '\0' && v >= 0 && v <= 1, "--eps",
                  "comma-separated numbers in [0, 1]", "'" + p + "'");
    out.push_back(v);
  }
  varnet::check(!out.empty(), "--eps", "at least one epsilon", "none");
  return out;
}

Config parse(int argc, char** argv) {
  const varnet::cli::Args a(
      argc, argv,
      {"--data", "--models", "--var-layers", "--dropout-p", "--alpha", "--log-alpha-init",
       "--epochs", "--train-limit", "--batch", "--lr", "--seed", "--save-dir", "--load-dir",
       "--eps", "--attack-samples", "--pgd-iters", "--samples", "--test-limit", "--out"},
      {"--help", "--overwrite"});
  if (a.has("--help")) {
    std::cout << kHelp;
    std::exit(0);
  }
  Config c;
  c.data = a.get("--data", "/usr/share/datasets/fashion-mnist");
  c.models = parse_models(a.get("--models", "variance,deterministic,dropout,gdo,vdo"));
  for (int64_t l : a.get_int_list("--var-layers", "1", 1, 4)) c.var_layers.push_back(int(l));
  varnet::check(!c.var_layers.empty(), "--var-layers", "at least one layer", "none");
  c.dropout_p = a.get_double("--dropout-p", 0.5, 0.0, 0.99);
  c.alpha = a.get_double("--alpha", 1.0, 1e-6, 1e6);
  c.log_alpha_init = a.get_double("--log-alpha-init", -5, -20, 20);
  c.train.epochs = a.get_int("--epochs", 5, 1, 100000);
  c.train_limit = a.get_int("--train-limit", 0, 0, INT64_MAX);
  c.train.batch = a.get_int("--batch", 128, 2, 65536);
  c.train.lr = a.get_double("--lr", 1e-3, 1e-12, 10);
  c.train.seed = uint64_t(a.get_int("--seed", 0, 0, INT64_MAX));
  c.save_dir = a.get("--save-dir", "");
  c.load_dir = a.get("--load-dir", "");
  varnet::check(c.save_dir.empty() || c.load_dir.empty(), "--save-dir",
                "either --save-dir or --load-dir", "both");
  c.eps = parse_eps(a.get("--eps", "0,0.02,0.05,0.1,0.2"));
  c.attack_samples = a.get_int("--attack-samples", 10, 1, 16383);
  c.pgd_iters = a.get_int("--pgd-iters", 10, 1, 10000);
  c.samples = a.get_int("--samples", 10, 1, 10000);
  c.test_limit = a.get_int("--test-limit", 1000, 0, INT64_MAX);
  c.out = a.get("--out", "adversarial_out");
  c.overwrite = a.has("--overwrite");
  // Refuse now, not after the training.
  varnet::examples::check_outputs("--out", c.out, {"adversarial.csv", "adversarial.png"},
                                  c.overwrite);
  if (!c.save_dir.empty()) {
    std::vector<std::string> files;
    for (const auto& m : c.models) files.push_back(m + ".safetensors");
    varnet::examples::check_outputs("--save-dir", c.save_dir, files, c.overwrite);
  }
  if (!c.load_dir.empty())
    for (const auto& m : c.models) {
      const fs::path p = fs::path(c.load_dir) / (m + ".safetensors");
      varnet::check(fs::exists(p), "--load-dir", "a file per model, written by --save-dir",
                    "no file '" + p.string() + "'");
    }
  return c;
}

varnet::LeNet5Config model_config(const Config& c, const std::string& model, int64_t classes) {
  varnet::LeNet5Config cfg;
  cfg.variance_layers = c.var_layers;
  cfg.kind =
      model == "deterministic" ? varnet::LayerKind::deterministic : varnet::parse_layer_kind(model);
  if (model == "deterministic") cfg.variance_layers.clear();
  cfg.dropout_p = c.dropout_p;
  cfg.dropout.alpha = c.alpha;
  cfg.dropout.log_alpha_init = c.log_alpha_init;
  cfg.classes = classes;
  return cfg;
}

// The learned log alphas of a variational dropout network, e.g. "conv1 -3.21".
std::string log_alphas(varnet::Network<T>& net) {
  std::string s;
  for (const char* l : kLayers)
    if (net.table().find(std::string(l) + ".log_alpha"))
      s += str(s.empty() ? "" : "  ", l, " ", *net.find(std::string(l) + ".log_alpha"));
  return s;
}

struct Row {
  std::string model, attack;
  double eps, accuracy, nll;
};

// Attacks `net` at every epsilon and evaluates its ensemble on the result.
std::vector<Row> sweep(varnet::Network<T>& net, const std::string& model,
                       const varnet::data::LabeledImages& test, const Config& c) {
  const bool deterministic = model == "deterministic";
  varnet::EnsembleOptions eo;
  eo.samples = deterministic ? 1 : int(c.samples);
  eo.batch = 500;
  eo.seed = c.train.seed;
  std::vector<Row> rows;
  std::optional<varnet::EnsembleResult> clean;
  for (double eps : c.eps)
    for (varnet::AttackKind kind : {varnet::AttackKind::fgsm, varnet::AttackKind::pgd}) {
      varnet::AttackOptions ao;
      ao.epsilon = eps;
      ao.iterations = int(c.pgd_iters);
      ao.step = eps > 0 ? 2.5 * eps / double(c.pgd_iters) : 1.0;
      ao.samples = deterministic ? 1 : int(c.attack_samples);
      ao.seed = c.train.seed + 1;
      ao.batch = 100;
      // epsilon 0 leaves the images as they are: no attack to run, and one clean evaluation.
      if (eps == 0 && !clean) clean = varnet::evaluate_ensemble(net, test, eo);
      const varnet::EnsembleResult r =
          eps > 0 ? varnet::evaluate_ensemble(net, varnet::attack_dataset(net, test, kind, ao), eo)
                  : *clean;
      std::printf("%-13s %-4s epsilon %-5g accuracy %.4f  nll %.4f", model.c_str(),
                  varnet::to_string(kind), eps, r.accuracy, r.nll);
      if (kind == varnet::AttackKind::pgd && eps > 0)
        std::printf("  (%d steps of %g from a random start)", ao.iterations, ao.step);
      std::printf("\n");
      std::fflush(stdout);
      rows.push_back({model, varnet::to_string(kind), eps, r.accuracy, r.nll});
    }
  return rows;
}

// The table: one row per model and attack, one column per epsilon.
void print_table(const std::vector<Row>& rows, const Config& c) {
  std::printf("\n| model | attack |");
  for (double e : c.eps) std::printf(" eps %g |", e);
  std::printf("\n|---|---|");
  for (size_t i = 0; i < c.eps.size(); ++i) std::printf("---|");
  std::printf("\n");
  for (size_t i = 0; i < rows.size(); i += 2 * c.eps.size())
    for (size_t a = 0; a < 2; ++a) {
      std::printf("| %s | %s |", rows[i].model.c_str(), rows[i + a].attack.c_str());
      for (size_t e = 0; e < c.eps.size(); ++e)
        std::printf(" %.3f |", rows[i + 2 * e + a].accuracy);
      std::printf("\n");
    }
  std::printf("\n");
}

void write_outputs(const std::vector<Row>& rows, const Config& c) {
  std::string csv = "model,attack,epsilon,accuracy,nll\n";
  for (const Row& r : rows)
    csv += str(r.model, ",", r.attack, ",", r.eps, ",", r.accuracy, ",", r.nll, "\n");
  const std::string path = varnet::examples::write_text(c.out, "adversarial.csv", csv);
  varnet::plot::Figure fig;
  fig.title = str("Ensemble accuracy under attack (K = ", c.samples, ")");
  fig.xlabel = "epsilon";
  fig.ylabel = "accuracy";
  for (const auto& model : c.models)
    for (const char* attack : {"fgsm", "pgd"}) {
      varnet::plot::Series s;
      s.label = model + " " + attack;
      for (const Row& r : rows)
        if (r.model == model && r.attack == attack) {
          s.x.push_back(r.eps);
          s.y.push_back(r.accuracy);
        }
      fig.series.push_back(s);
    }
  const std::string png = (fs::path(c.out) / "adversarial.png").string();
  varnet::plot::write_png(fig, png);
  std::printf("wrote %s and %s\n", path.c_str(), png.c_str());
}

int run(const Config& c) {
  const varnet::data::MnistFormatData d =
      varnet::examples::load_limited(c.data, c.train_limit, c.test_limit);
  const varnet::Shape in = d.train.images.shape().with_batch(1);
  const int64_t classes = std::max(d.train.classes, d.test.classes);
  std::vector<Row> rows;
  for (const auto& model : c.models) {
    varnet::Network<T> net =
        varnet::make_lenet5<T>(model_config(c, model, classes), in, c.train.seed);
    if (!c.load_dir.empty()) {
      varnet::load_network(net, (fs::path(c.load_dir) / (model + ".safetensors")).string());
      std::printf("%-13s loaded from %s\n", model.c_str(), c.load_dir.c_str());
    } else {
      varnet::examples::train_lenet(net, d.train, c.train, model);
    }
    if (model == "vdo") std::printf("vdo final log alpha: %s\n", log_alphas(net).c_str());
    if (!c.save_dir.empty())
      varnet::save_network(net, (fs::path(c.save_dir) / (model + ".safetensors")).string(),
                           {{"model", "lenet5"}, {"layer_kind", model}});
    const std::vector<Row> r = sweep(net, model, d.test, c);
    rows.insert(rows.end(), r.begin(), r.end());
  }
  print_table(rows, c);
  write_outputs(rows, c);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return varnet::cli::run_main("adversarial", [&] { return run(parse(argc, argv)); });
}
