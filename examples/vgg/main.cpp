// vgg: trains and evaluates the VGG-like variance network (PAPER.md sections 3 and 6) on CIFAR-10,
// CIFAR-100, or MNIST-format data zero-padded to 32x32.
//
//   vgg [--data DIR] [--width 0.125] [--var-layers 11,12,13,14] [--epochs 5] ...  (--help lists
//   all)
//
// Steps: parse and check the arguments; read the data directory (format detected); normalise each
// channel with the training set's statistics; build the network with the chosen weight layers
// stochastic; train with Adam (beta1 0.95 as the CIFAR reference) and a linearly decaying learning
// rate on per-image augmented batches, printing a line per epoch; evaluate mean propagation and
// ensembles; print a JSON line last.
#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "../common/cli.hpp"
#include "../common/gpu_run.hpp"
#include "../common/lenet_run.hpp"
#include "../common/report.hpp"
#include "../common/resumable.hpp"
#include "../common/run_loop.hpp"
#include "../common/training.hpp"
#include "varnet/varnet.hpp"

namespace {

using varnet::str;
using varnet::examples::json_list;

const char* kHelp = R"(vgg: train and evaluate a VGG-like variance network on 32x32 images

  --data DIR            CIFAR-10 (data_batch_1..5.bin, test_batch.bin), CIFAR-100 (train.bin,
                        test.bin), either also in the archive's cifar-10-batches-bin/ or
                        cifar-100-binary/, or MNIST-format IDX files (train-images-idx3-ubyte ...,
                        raw or .gz) zero-padded to 32x32 [/usr/share/datasets/fashion-mnist]
  --cifar100-labels L   CIFAR-100: fine (100 classes) or coarse (20) [fine]
  --width W             multiplier of every layer width, e.g. 0.125 for 1/8 [1]
  --var-layers LIST     which weight layers are stochastic: 1-13 the convolutions, 14 the hidden
                        fc layer, 15 the output layer [11,12,13,14]
  --layer-kind K        the kind of those layers: variance|gdo|vdo|svdo|dropout|deterministic
                        (gdo: Gaussian dropout, vdo: variational dropout with one alpha per
                        layer, svdo: sparse variational dropout) [variance]
  --dist D              variance layers: gaussian|bernoulli|uniform, or none for the
                        deterministic twin [gaussian]
  --param P             variance layers: sigma|log_sigma2, what they learn [sigma]
  --alpha A             gdo: the fixed alpha [1]
  --dropout-p P         dropout: the drop probability [0.5]
  --kl-beta B           gdo/vdo/svdo: weight of the KL term, N * CE + B * KL [1]
  --kl-warmup E         epochs over which the KL weight grows linearly from 0 to B [0]
  --alpha-lr-scale S    vdo: learning-rate multiplier of the per-layer log alphas [1]
  --threshold T         svdo: weights with log alpha > T are pruned in mean mode and counted
                        as dropped in the reports [3]
  --augment on|off      pad-4 random crop and horizontal flip per image, keyed by (seed, epoch,
                        image) [on]
  --train-samples K     samples per step of the K-sample objective [1]
  --epochs E            training epochs [5]
  --batch B             mini-batch size [128]
  --lr LR               Adam learning rate, decayed linearly to 0 [0.001]
  --beta1 B             Adam's beta1 [0.95, the CIFAR reference's]
  --seed S              seed of initialisation, noise, data order and augmentation [0]
  --samples LIST        ensemble sizes to evaluate [1,10,100]
  --train-limit N       use the first N training images only (quick runs) [all]
  --test-limit N        evaluate on the first N test images only (quick runs) [all]
  --eval-batch B        evaluation batch size (also the batch of batch statistics) [500]
  --device D            cpu|cuda: where to train and evaluate (cuda: every layer kind,
                        checkpoints and --resume included; needs a build with CUDA) [cpu]
  --no-graph            cuda: launch every kernel of a step instead of replaying a CUDA graph
  --conv A              how the deterministic convolutions are computed: auto|im2col|winograd
                        (auto: Winograd F(4x4, 3x3) for layers of at least 16 channels on
                        planes of at least 8x8, im2col and GEMM for the rest) [auto]
  --tf32                cuda: TF32 tensor cores in the matrix products (faster, ~1e-3 relative
                        error per product; off: strict FP32)
  --save PATH           save the trained network as safetensors
  --overwrite           allow --save and --checkpoint to replace existing files
  --checkpoint PATH     write a checkpoint (parameters, optimizer, step, epoch) to PATH at the
                        end of training, keeping the one before as PATH.prev
  --checkpoint-every N  also every N training steps [0: only at the end]
  --resume PATH         continue the run checkpointed in PATH (PATH.prev if PATH is damaged);
                        the other flags must match the checkpointed run's
  --no-finite-check     do not stop at the first non-finite loss or gradient
  --help                this text

Inputs are normalised per channel with the training set's mean and deviation. The last line of
output is JSON with test_acc_mean, test_acc_K and test_nll_K for each K, test_acc_10_batchstats,
train_img_per_s, epochs, the data format, the configuration, and for the weight layers their KL,
mean log alpha and fraction of weights with log alpha above the threshold.
)";

struct Config {
  std::string data, dist, param, save, layer_kind, device, cifar100_labels, conv;
  double width, alpha, dropout_p, kl_beta, kl_warmup, threshold, alpha_lr_scale, lr, beta1;
  std::vector<int64_t> var_layers, samples;
  int64_t train_samples, epochs, batch, seed, train_limit, test_limit, eval_batch;
  bool augment, overwrite, finite_check;
  std::string checkpoint, resume;  // checkpoint paths ("" when not asked for)
  int64_t checkpoint_every = 0;    // steps between checkpoints (0: at the end only)
  bool labels_given = false;       // --cifar100-labels was on the command line
  bool graph = true;               // cuda: replay training steps from a CUDA graph
  bool tf32 = false;               // cuda: TF32 tensor cores
};

Config parse(int argc, char** argv) {
  const varnet::cli::Args a(argc, argv,
                            {"--checkpoint",
                             "--checkpoint-every",
                             "--resume",
                             "--data",
                             "--cifar100-labels",
                             "--width",
                             "--var-layers",
                             "--dist",
                             "--param",
                             "--train-samples",
                             "--epochs",
                             "--batch",
                             "--lr",
                             "--beta1",
                             "--seed",
                             "--samples",
                             "--save",
                             "--train-limit",
                             "--test-limit",
                             "--eval-batch",
                             "--layer-kind",
                             "--alpha",
                             "--dropout-p",
                             "--kl-beta",
                             "--kl-warmup",
                             "--threshold",
                             "--alpha-lr-scale",
                             "--augment",
                             "--device",
                             "--conv"},
                            {"--help", "--overwrite", "--no-finite-check", "--no-graph", "--tf32"});
  if (a.has("--help")) {
    std::cout << kHelp;
    std::exit(0);
  }
  Config c;
  c.device = a.get_choice("--device", "cpu", {"cpu", "cuda"});
  c.graph = !a.has("--no-graph");
  c.tf32 = a.has("--tf32");
  c.conv = a.get_choice("--conv", "auto", {"auto", "im2col", "winograd"});
  c.data = a.get("--data", "/usr/share/datasets/fashion-mnist");
  c.cifar100_labels = a.get_choice("--cifar100-labels", "fine", {"fine", "coarse"});
  c.labels_given = a.has("--cifar100-labels");
  c.width = a.get_double("--width", 1.0, 1.0 / 64, 16);
  c.var_layers = a.get_int_list("--var-layers", "11,12,13,14", 1, varnet::kVggWeightLayers);
  c.dist = a.get_choice("--dist", "gaussian", {"gaussian", "bernoulli", "uniform", "none"});
  c.param = a.get_choice("--param", "sigma", {"sigma", "log_sigma2"});
  c.augment = a.get_choice("--augment", "on", {"on", "off"}) == "on";
  c.train_samples = a.get_int("--train-samples", 1, 1, 64);
  c.epochs = a.get_int("--epochs", 5, 1, 100000);
  c.batch = a.get_int("--batch", 128, 2, 65536);
  c.lr = a.get_double("--lr", 1e-3, 1e-12, 10);
  c.beta1 = a.get_double("--beta1", 0.95, 0, 0.9999);
  c.seed = a.get_int("--seed", 0, 0, INT64_MAX);
  c.samples = a.get_int_list("--samples", "1,10,100", 1, 10000);
  c.train_limit = a.get_int("--train-limit", 0, 0, INT64_MAX);
  c.test_limit = a.get_int("--test-limit", 0, 0, INT64_MAX);
  c.eval_batch = a.get_int("--eval-batch", 500, 2, 65536);
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
  // A run the GPU path cannot do says so before any data is read.
  varnet::examples::check_device_flags(c);
  if (!c.save.empty()) varnet::cli::check_new_file("--save", c.save, c.overwrite);
  return c;
}

int run(const Config& c) {
  using T = float;
  std::cout << "reading " << c.data << "\n";
  varnet::data::ImageDirOptions dir_options;
  dir_options.cifar100_labels = c.cifar100_labels == "fine" ? varnet::data::CifarLabels::fine
                                                            : varnet::data::CifarLabels::coarse;
  varnet::data::ImageDataset d = varnet::data::load_image_dir(c.data, dir_options);
  varnet::check(!c.labels_given || d.format.rfind("CIFAR-100", 0) == 0, "--cifar100-labels",
                "a CIFAR-100 directory with it", d.format, " in ", c.data);
  varnet::examples::keep_first(d.train, c.train_limit);
  varnet::examples::keep_first(d.test, c.test_limit);
  const varnet::Shape in = d.train.images.shape();
  varnet::check(in.n >= c.batch, "--batch", str("at most the training set size ", in.n), c.batch);
  const int classes = std::max(d.train.classes, d.test.classes);
  std::cout << d.format << ": train " << in.n << " images, test " << d.test.images.shape().n << ", "
            << in.c << "x" << in.h << "x" << in.w << ", " << classes << " classes\n";
  // Per-channel normalisation with the training images' statistics, test images included.
  const varnet::data::ChannelStats stats = varnet::data::channel_stats(d.train);
  varnet::data::normalize(d.train, stats);
  varnet::data::normalize(d.test, stats);
  std::string stats_text;
  for (size_t ch = 0; ch < stats.mean.size(); ++ch)
    stats_text +=
        str(ch ? ", " : "", "channel ", ch, " mean ", stats.mean[ch], " std ", stats.stddev[ch]);
  std::cout << "normalised: " << stats_text << "\n";

  varnet::VggConfig cfg;
  cfg.width = c.width;
  cfg.stochastic_layers.assign(c.var_layers.begin(), c.var_layers.end());
  cfg.kind = varnet::parse_layer_kind(c.layer_kind);
  cfg.dropout.alpha = c.alpha;
  cfg.dropout.threshold = c.threshold;
  cfg.dropout_p = c.dropout_p;
  if (c.dist != "none") cfg.variance.dist = varnet::parse_weight_dist(c.dist);
  cfg.variance.param =
      c.param == "sigma" ? varnet::VarianceParam::sigma : varnet::VarianceParam::log_sigma2;
  cfg.classes = classes;
  cfg.conv_algorithm = varnet::parse_conv_algorithm(c.conv);
  varnet::Network<T> net = varnet::make_vgg<T>(cfg, in.with_batch(1), uint64_t(c.seed));
  std::cout << "VGG-like, width " << c.width << ":\n" << net.summary();

  varnet::AdamOptions adam_options;
  adam_options.beta1 = c.beta1;
  varnet::Adam<T> adam(net.params().size(), adam_options);
  varnet::examples::scale_log_alpha_lr(adam, net, c.alpha_lr_scale);
  varnet::Trainer<T, varnet::Adam<T>> trainer(net, adam, int(c.train_samples), uint64_t(c.seed),
                                              c.finite_check);
  const int64_t steps_per_epoch = in.n / c.batch;  // the last partial batch is dropped
  const varnet::LinearDecay lr{c.lr, steps_per_epoch * c.epochs};
  const varnet::KlWarmup beta{c.kl_beta, int64_t(c.kl_warmup * double(steps_per_epoch))};
  varnet::data::AugmentOptions aug;
  aug.seed = uint64_t(c.seed);

  // Checkpoints. Noise is keyed by the step counter, the data order and the augmentation by the
  // epoch, so the step, the epoch and the step within it are the run's whole state besides its
  // tensors.
  const varnet::examples::RunConfig run_config = {
      {"model", "vgg"},
      {"width", varnet::detail::exact_text(c.width)},
      {"var_layers", json_list(c.var_layers)},
      {"dist", c.dist},
      {"param", c.param},
      {"augment", c.augment ? "on" : "off"},
      {"train_samples", std::to_string(c.train_samples)},
      {"epochs", std::to_string(c.epochs)},
      {"batch", std::to_string(c.batch)},
      {"lr", varnet::detail::exact_text(c.lr)},
      {"data", d.format},
      {"train_images", str(in.n, " of ", in.c, "x", in.h, "x", in.w)},
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
  double train_seconds = 0;
  int64_t trained_steps = 0;
  if (c.device == "cuda") {
    varnet::examples::GpuTrainSettings s = varnet::examples::gpu_settings(c, lr, beta);
    s.adam = adam_options;
    s.augment = c.augment;
    s.augment_options = aug;
    train_seconds =
        varnet::examples::train_on_gpu(net, adam, trainer, d.train, s, run_config, start);
    trained_steps = int64_t(trainer.steps() - first_step);
  } else {
    train_seconds = varnet::examples::train_resumable(
        net, adam, trainer, d.train, run_config, start, varnet::examples::loop_settings(c), lr,
        beta,
        [&](varnet::Tensor<T>& x, const std::vector<int64_t>& order, int64_t first,
            uint32_t epoch) {
          if (c.augment) varnet::data::augment_batch(x.view(), order, first, aug, epoch);
        });
    trained_steps = int64_t(trainer.steps() - first_step);
  }
  const double img_per_s = train_seconds > 0 ? double(trained_steps * c.batch) / train_seconds : 0;

  std::string json = "{" + varnet::examples::evaluate_on_device(c, net, d.test);
  json += str(",\"train_img_per_s\":", img_per_s, ",\"epochs\":", c.epochs);
  json += str(",\"model\":\"vgg\",\"width\":", c.width, ",\"data\":\"", d.format,
              "\",\"classes\":", classes, ",\"augment\":", c.augment ? "true" : "false",
              ",\"device\":\"", c.device, "\",\"tf32\":", c.tf32 ? "true" : "false", ",\"conv\":\"",
              c.conv, "\"");
  json += str(
      ",\"var_layers\":", json_list(c.var_layers), ",\"dist\":\"", c.dist, "\",\"param\":\"",
      c.param, "\",\"train_samples\":", c.train_samples, ",\"batch\":", c.batch, ",\"lr\":", c.lr,
      ",\"beta1\":", c.beta1, ",\"seed\":", c.seed, ",\"train_images\":", in.n,
      ",\"test_images\":", d.test.images.shape().n, ",\"batchnorm_eval\":\"running statistics\"");
  json += str(",\"layer_kind\":\"", c.layer_kind, "\",\"alpha\":", c.alpha,
              ",\"dropout_p\":", c.dropout_p, ",\"kl_beta\":", c.kl_beta,
              ",\"kl_warmup\":", c.kl_warmup, ",\"threshold\":", c.threshold);
  json += varnet::examples::weight_json(varnet::weight_report(net, c.threshold), c.threshold) + "}";

  if (!c.save.empty()) {
    varnet::save_network(net, c.save,
                         {{"model", "vgg"},
                          {"width", varnet::detail::exact_text(c.width)},
                          {"var_layers", json_list(c.var_layers)},
                          {"dist", c.dist},
                          {"param", c.param},
                          {"layer_kind", c.layer_kind},
                          {"input", str(in.c, "x", in.h, "x", in.w)},
                          // What a user of the saved network must apply to its inputs first.
                          {"normalize", stats_text},
                          {"classes", std::to_string(cfg.classes)}});
    std::cout << "saved " << c.save << "\n";
  }
  std::cout << json << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return varnet::cli::run_main("vgg", [&] { return run(parse(argc, argv)); });
}
