// lenet5: trains and evaluates a variance LeNet-5 (PAPER.md sections 5-6) on MNIST-format data.
//
//   lenet5 [--data DIR] [--var-layers 1] [--dist gaussian] [--epochs 5] ...   (--help lists all)
//
// Steps: parse and check the arguments; read the four IDX files; build LeNet-5 with the chosen
// weight layers as variance layers; train with Adam and a linearly decaying learning rate,
// printing a line per epoch; evaluate mean propagation and ensembles; print a JSON line last.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "../common/cli.hpp"
#include "../common/gpu_run.hpp"
#include "../common/report.hpp"
#include "../common/resumable.hpp"
#include "../common/run_loop.hpp"
#include "../common/training.hpp"
#include "varnet/varnet.hpp"

namespace {

using varnet::str;
using varnet::examples::json_list;
using varnet::examples::weight_json;

const char* kHelp = R"(lenet5: train and evaluate a variance LeNet-5 on MNIST-format data

  --data DIR            directory with train-images-idx3-ubyte, train-labels-idx1-ubyte,
                        t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each raw or .gz)
                        [/usr/share/datasets/fashion-mnist]
  --var-layers LIST     which weight layers (1-4) are stochastic, e.g. 1,2,3 [1]
  --layer-kind K        the kind of those layers: variance|gdo|vdo|svdo|dropout|deterministic
                        (gdo: Gaussian dropout, vdo: variational dropout with one alpha per
                        layer, svdo: sparse variational dropout) [variance]
  --dist D              variance layers: gaussian|bernoulli|uniform, or none for the
                        deterministic twin [gaussian]
  --param P             variance layers: sigma|log_sigma2, what they learn [sigma]
  --alpha A             gdo: the fixed alpha (binary dropout p matches alpha = p / (1 - p)) [1]
  --dropout-p P         dropout: the drop probability [0.5]
  --kl-beta B           gdo/vdo/svdo: weight of the KL term, N * CE + B * KL [1]
  --kl-warmup E         epochs over which the KL weight grows linearly from 0 to B [0]
  --alpha-lr-scale S    vdo: learning-rate multiplier of the per-layer log alphas [1]
  --threshold T         svdo: weights with log alpha > T are pruned in mean mode and counted
                        as dropped in the reports [3]
  --train-samples K     samples per step of the K-sample objective [1]
  --epochs E            training epochs [5]
  --batch B             mini-batch size [128]
  --lr LR               Adam learning rate, decayed linearly to 0 [0.001]
  --seed S              seed of initialisation, noise and data order [0]
  --samples LIST        ensemble sizes to evaluate [1,10,100]
  --train-limit N       use the first N training images only (quick runs) [all]
  --eval-batch B        evaluation batch size (also the batch of batch statistics) [1000]
  --save PATH           save the trained network as safetensors
  --overwrite           allow --save and --checkpoint to replace existing files
  --checkpoint PATH     write a checkpoint (parameters, optimizer, step, epoch) to PATH at the
                        end of training, keeping the one before as PATH.prev
  --checkpoint-every N  also every N training steps [0: only at the end]
  --resume PATH         continue the run checkpointed in PATH (PATH.prev if PATH is damaged);
                        the other flags must match the checkpointed run's
  --no-finite-check     do not stop at the first non-finite loss or gradient
  --device D            cpu|cuda: where to train and evaluate (cuda: every layer kind,
                        checkpoints and --resume included; needs a build with CUDA) [cpu]
  --no-graph            cuda: launch every kernel of a step instead of replaying a CUDA graph
  --tf32                cuda: TF32 tensor cores in the matrix products (faster, ~1e-3 relative
                        error per product; off: strict FP32)
  --help                this text

The last line of output is JSON with test_acc_mean, test_acc_K and test_nll_K for each K,
test_acc_10_batchstats, train_img_per_s, epochs, the configuration, and for the weight layers
their KL, mean log alpha and fraction of weights with log alpha above the threshold, with the
network's compression ratio.
)";

struct Config {
  std::string data, dist, param, save, layer_kind;
  double alpha, dropout_p, kl_beta, kl_warmup, threshold, alpha_lr_scale;
  std::vector<int64_t> var_layers, samples;
  int64_t train_samples, epochs, batch, seed, train_limit, eval_batch;
  double lr;
  bool overwrite, finite_check;
  std::string device;              // cpu or cuda
  bool graph = true;               // cuda: replay training steps from a CUDA graph
  bool tf32 = false;               // cuda: TF32 tensor cores
  std::string checkpoint, resume;  // checkpoint paths ("" when not asked for)
  int64_t checkpoint_every = 0;    // steps between checkpoints (0: at the end only)
};

Config parse(int argc, char** argv) {
  const varnet::cli::Args a(argc, argv,
                            {"--checkpoint",
                             "--checkpoint-every",
                             "--resume",
                             "--data",
                             "--var-layers",
                             "--dist",
                             "--param",
                             "--train-samples",
                             "--epochs",
                             "--batch",
                             "--lr",
                             "--seed",
                             "--samples",
                             "--save",
                             "--train-limit",
                             "--eval-batch",
                             "--layer-kind",
                             "--alpha",
                             "--dropout-p",
                             "--kl-beta",
                             "--kl-warmup",
                             "--threshold",
                             "--alpha-lr-scale",
                             "--device"},
                            {"--help", "--overwrite", "--no-finite-check", "--no-graph", "--tf32"});
  if (a.has("--help")) {
    std::cout << kHelp;
    std::exit(0);
  }
  Config c;
  c.data = a.get("--data", "/usr/share/datasets/fashion-mnist");
  c.var_layers = a.get_int_list("--var-layers", "1", 1, 4);
  c.dist = a.get_choice("--dist", "gaussian", {"gaussian", "bernoulli", "uniform", "none"});
  c.param = a.get_choice("--param", "sigma", {"sigma", "log_sigma2"});
  c.train_samples = a.get_int("--train-samples", 1, 1, 64);
  c.epochs = a.get_int("--epochs", 5, 1, 100000);
  c.batch = a.get_int("--batch", 128, 2, 65536);
  c.lr = a.get_double("--lr", 1e-3, 1e-12, 10);
  c.seed = a.get_int("--seed", 0, 0, INT64_MAX);
  c.samples = a.get_int_list("--samples", "1,10,100", 1, 10000);
  c.train_limit = a.get_int("--train-limit", 0, 0, INT64_MAX);
  c.eval_batch = a.get_int("--eval-batch", 1000, 2, 65536);
  c.save = a.get("--save", "");
  c.overwrite = a.has("--overwrite");
  c.finite_check = !a.has("--no-finite-check");
  c.checkpoint = a.get("--checkpoint", "");
  c.checkpoint_every = a.get_int("--checkpoint-every", 0, 0, INT64_MAX);
  c.resume = a.get("--resume", "");
  varnet::examples::check_checkpoint_path(c.checkpoint, c.resume, c.overwrite);
  varnet::check(c.checkpoint_every == 0 || !c.checkpoint.empty(), "--checkpoint-every",
                "--checkpoint PATH with it", "no --checkpoint");
  c.layer_kind = a.get_choice("--layer-kind", "variance",
                              {"variance", "gdo", "vdo", "svdo", "dropout", "deterministic"});
  c.alpha = a.get_double("--alpha", 1.0, 1e-6, 1e6);
  c.dropout_p = a.get_double("--dropout-p", 0.5, 0.0, 0.99);
  c.kl_beta = a.get_double("--kl-beta", 1.0, 0.0, 1e6);
  c.kl_warmup = a.get_double("--kl-warmup", 0.0, 0.0, 1e6);
  c.alpha_lr_scale = a.get_double("--alpha-lr-scale", 1.0, 0.0, 1e6);
  c.threshold = a.get_double("--threshold", 3.0, -20, 20);
  if (c.dist == "none" || c.layer_kind == "deterministic") c.var_layers.clear();
  varnet::check(c.dist == "gaussian" || c.dist == "none" || c.layer_kind == "variance", "--dist",
                "--dist only with --layer-kind variance", "--dist ", c.dist, " with --layer-kind ",
                c.layer_kind);
  c.device = a.get_choice("--device", "cpu", {"cpu", "cuda"});
  c.graph = !a.has("--no-graph");
  c.tf32 = a.has("--tf32");
  varnet::examples::check_device_flags(c);
  if (!c.save.empty()) varnet::cli::check_new_file("--save", c.save, c.overwrite);
  return c;
}

int run(const Config& c) {
  using T = float;
  std::cout << "reading " << c.data << "\n";
  varnet::data::MnistFormatData d = varnet::data::load_mnist_dir(c.data);
  if (c.train_limit > 0 && c.train_limit < d.train.images.shape().n) {
    const auto s = d.train.images.shape();
    d.train.images.resize(s.with_batch(c.train_limit));  // keeps the first N images
    d.train.labels.resize(size_t(c.train_limit));
  }
  const varnet::Shape in = d.train.images.shape();
  varnet::check(in.n >= c.batch, "--batch", str("at most the training set size ", in.n), c.batch);
  std::cout << "train " << in.n << " images, test " << d.test.images.shape().n << ", " << in.h
            << "x" << in.w << ", " << d.train.classes << " classes\n";

  varnet::LeNet5Config cfg;
  cfg.variance_layers.assign(c.var_layers.begin(), c.var_layers.end());
  cfg.kind = varnet::parse_layer_kind(c.layer_kind);
  cfg.dropout.alpha = c.alpha;
  cfg.dropout.threshold = c.threshold;
  cfg.dropout_p = c.dropout_p;
  if (c.dist != "none") cfg.variance.dist = varnet::parse_weight_dist(c.dist);
  cfg.variance.param =
      c.param == "sigma" ? varnet::VarianceParam::sigma : varnet::VarianceParam::log_sigma2;
  cfg.classes = std::max(d.train.classes, d.test.classes);
  varnet::Network<T> net = varnet::make_lenet5<T>(cfg, in.with_batch(1), uint64_t(c.seed));
  std::cout << "LeNet-5:\n" << net.summary();

  varnet::Adam<T> adam(net.params().size());
  varnet::examples::scale_log_alpha_lr(adam, net, c.alpha_lr_scale);
  varnet::Trainer<T, varnet::Adam<T>> trainer(net, adam, int(c.train_samples), uint64_t(c.seed),
                                              c.finite_check);
  const int64_t steps_per_epoch = in.n / c.batch;  // the last partial batch is dropped
  const varnet::LinearDecay lr{c.lr, steps_per_epoch * c.epochs};
  const varnet::KlWarmup beta{c.kl_beta, int64_t(c.kl_warmup * double(steps_per_epoch))};

  // Checkpoints. All noise is keyed by the step counter and the data order by the epoch, so the
  // step, the epoch and the step within it are the whole state of the run besides its tensors.
  const varnet::examples::RunConfig run_config = {
      {"model", "lenet5"},
      {"var_layers", json_list(c.var_layers)},
      {"dist", c.dist},
      {"param", c.param},
      {"train_samples", std::to_string(c.train_samples)},
      {"epochs", std::to_string(c.epochs)},
      {"batch", std::to_string(c.batch)},
      {"lr", varnet::detail::exact_text(c.lr)},
      {"train_images", str(in.n, " of ", in.h, "x", in.w)},
      {"classes", std::to_string(cfg.classes)},
      {"layer_kind", c.layer_kind},
      {"alpha", varnet::detail::exact_text(c.alpha)},
      {"dropout_p", varnet::detail::exact_text(c.dropout_p)},
      {"kl_beta", varnet::detail::exact_text(c.kl_beta)},
      {"kl_warmup", varnet::detail::exact_text(c.kl_warmup)},
      {"threshold", varnet::detail::exact_text(c.threshold)},
      {"alpha_lr_scale", varnet::detail::exact_text(c.alpha_lr_scale)}};
  varnet::examples::RunStart start;
  if (!c.resume.empty())
    start = varnet::examples::resume_run(c.resume, net, adam, trainer, run_config, uint64_t(c.seed),
                                         c.epochs, steps_per_epoch);
  const uint32_t first_step = trainer.steps();
  const double train_seconds =
      c.device == "cuda"
          ? varnet::examples::train_on_gpu(net, adam, trainer, d.train,
                                           varnet::examples::gpu_settings(c, lr, beta), run_config,
                                           start)
          : varnet::examples::train_resumable(
                net, adam, trainer, d.train, run_config, start, varnet::examples::loop_settings(c),
                lr, beta,
                [](varnet::Tensor<T>&, const std::vector<int64_t>&, int64_t, uint32_t) {});
  const int64_t trained_steps = int64_t(trainer.steps() - first_step);
  const double img_per_s = train_seconds > 0 ? double(trained_steps * c.batch) / train_seconds : 0;

  std::string json = "{" + varnet::examples::evaluate_on_device(c, net, d.test);
  json += str(",\"train_img_per_s\":", img_per_s, ",\"epochs\":", c.epochs, ",\"device\":\"",
              c.device, "\",\"tf32\":", c.tf32 ? "true" : "false");
  json += str(",\"var_layers\":", json_list(c.var_layers), ",\"dist\":\"", c.dist,
              "\",\"param\":\"", c.param, "\",\"train_samples\":", c.train_samples,
              ",\"batch\":", c.batch, ",\"lr\":", c.lr, ",\"seed\":", c.seed,
              ",\"train_images\":", in.n, ",\"batchnorm_eval\":\"running statistics\"");
  json += str(",\"layer_kind\":\"", c.layer_kind, "\",\"alpha\":", c.alpha,
              ",\"dropout_p\":", c.dropout_p, ",\"kl_beta\":", c.kl_beta,
              ",\"kl_warmup\":", c.kl_warmup, ",\"threshold\":", c.threshold);
  json += weight_json(varnet::weight_report(net, c.threshold), c.threshold) + "}";

  if (!c.save.empty()) {
    varnet::save_network(net, c.save,
                         {{"model", "lenet5"},
                          {"var_layers", json_list(c.var_layers)},
                          {"dist", c.dist},
                          {"param", c.param},
                          {"layer_kind", c.layer_kind},
                          {"classes", std::to_string(cfg.classes)}});
    std::cout << "saved " << c.save << "\n";
  }
  std::cout << json << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return varnet::cli::run_main("lenet5", [&] { return run(parse(argc, argv)); });
}
