// The training examples' (lenet5, vgg) epoch loop and final evaluation, written once: resumable
// epochs with checkpoints and a progress line per epoch, then mean propagation, ensembles of each
// requested size and a 10-sample ensemble with batch statistics, reported as JSON fields.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "resumable.hpp"
#include "varnet/data/batches.hpp"
#include "varnet/eval/ensemble.hpp"
#include "varnet/nn/optimizer.hpp"
#include "varnet/nn/sparsity.hpp"
#include "varnet/nn/trainer.hpp"

namespace varnet::examples {

struct LoopSettings {
  int64_t epochs = 1, batch = 128;
  uint64_t seed = 0;
  std::string checkpoint;        // where to save the run; empty: never
  int64_t checkpoint_every = 0;  // also every this many steps (0: only at the end)
  double threshold = 3;          // log alpha above which a weight counts as pruned (progress line)
};

// The settings from an example's parsed flags (lenet5's and vgg's Config have these fields).
template <class Config>
LoopSettings loop_settings(const Config& c) {
  LoopSettings s;
  s.epochs = c.epochs;
  s.batch = c.batch;
  s.seed = uint64_t(c.seed);
  s.checkpoint = c.checkpoint;
  s.checkpoint_every = c.checkpoint_every;
  s.threshold = c.threshold;
  return s;
}

// Trains epochs [start.epoch, s.epochs) from step start.step, in the order shuffled_order(n,
// seed, epoch), the last partial batch dropped; `prepare(x, order, first, epoch)` may change a
// gathered batch (augmentation). The learning rate and the KL weight (beta / N, when the network
// has a KL) follow the trainer's global step count. Prints a line per epoch; returns the seconds
// spent training.
template <class T, class Opt, class Prepare>
double train_resumable(Network<T>& net, Opt& opt, Trainer<T, Opt>& trainer,
                       const data::LabeledImages& train, const RunConfig& config,
                       const RunStart& start, const LoopSettings& s, const LinearDecay& lr,
                       const KlWarmup& beta, Prepare&& prepare) {
  using Clock = std::chrono::steady_clock;
  const int64_t n = train.images.shape().n, steps_per_epoch = n / s.batch;
  const bool has_kl = net.kl() > 0;  // variational and sparse variational dropout
  const auto checkpoint = [&](int64_t e, int64_t done, double loss, int64_t correct) {
    save_run(s.checkpoint, net, opt, trainer, config, s.seed, steps_per_epoch, e, done, loss,
             correct);
  };
  Tensor<T> x;
  std::vector<int32_t> y;
  double train_seconds = 0;
  for (int64_t e = start.epoch; e < s.epochs; ++e) {
    const auto order = data::shuffled_order(n, s.seed, uint32_t(e));
    const auto t0 = Clock::now();
    double loss = 0, kl = 0;
    int64_t correct = 0;
    if (e == start.epoch) loss = start.loss, correct = start.correct;
    for (int64_t step = e == start.epoch ? start.step : 0; step < steps_per_epoch; ++step) {
      data::gather_batch(train, order, step * s.batch, s.batch, x, y);
      prepare(x, order, step * s.batch, uint32_t(e));
      if (has_kl) trainer.set_kl_weight(beta.at(trainer.steps()) / double(n));
      const LossResult r = trainer.step(x.view(), y.data(), lr.at(trainer.steps()));
      loss += r.loss;
      correct += r.correct;
      if (s.checkpoint_every > 0 && trainer.steps() % uint64_t(s.checkpoint_every) == 0)
        checkpoint(e, step + 1, loss, correct);
      kl = r.kl;
    }
    const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
    train_seconds += sec;
    std::printf("epoch %lld/%lld  loss %.4f  train acc %.4f  %.0f img/s  (%.1f s)",
                (long long)e + 1, (long long)s.epochs, loss / double(steps_per_epoch),
                double(correct) / double(steps_per_epoch * s.batch),
                double(steps_per_epoch * s.batch) / sec, sec);
    if (has_kl)
      std::printf("  kl %.1f (weight %.3g)  compression %.2f", kl, beta.at(trainer.steps()),
                  weight_report(net, s.threshold).compression());
    std::printf("\n");
    std::fflush(stdout);
  }
  if (!s.checkpoint.empty()) checkpoint(s.epochs, 0, 0, 0);
  return train_seconds;
}

// The final evaluation: mean propagation, an ensemble of each size in `samples`, and 10 samples
// with batch statistics, each by `ensemble(EnsembleOptions)` (the CPU's or the GPU's). Prints a
// line each; returns their JSON fields ("test_acc_mean":..., without braces).
template <class Ensemble>
std::string evaluate_report_by(Ensemble&& ensemble, const std::vector<int64_t>& samples,
                               int64_t eval_batch, uint64_t seed) {
  using Clock = std::chrono::steady_clock;
  const auto evaluate = [&](const std::string& label, int k, PredictMode mode, bool batch_stats) {
    EnsembleOptions o;
    o.samples = k;
    o.mode = mode;
    o.batch_stats = batch_stats;
    o.batch = eval_batch;
    o.seed = seed;
    const auto t0 = Clock::now();
    const EnsembleResult r = ensemble(o);
    std::printf("test %-32s acc %.4f  nll %.4f  (%.1f s)\n", label.c_str(), r.accuracy, r.nll,
                std::chrono::duration<double>(Clock::now() - t0).count());
    std::fflush(stdout);
    return r;
  };
  const auto mean = evaluate("mean propagation", 1, PredictMode::mean, false);
  std::string json = str("\"test_acc_mean\":", mean.accuracy, ",\"test_nll_mean\":", mean.nll);
  for (int64_t k : samples) {
    const auto r = evaluate(str("ensemble of ", k), int(k), PredictMode::sample, false);
    json += str(",\"test_acc_", k, "\":", r.accuracy, ",\"test_nll_", k, "\":", r.nll);
  }
  const auto bs = evaluate("ensemble of 10, batch statistics", 10, PredictMode::sample, true);
  json += str(",\"test_acc_10_batchstats\":", bs.accuracy, ",\"test_nll_10_batchstats\":", bs.nll);
  return json;
}

// evaluate_report_by with the CPU ensemble of `net` on `test`.
template <class T>
std::string evaluate_report(Network<T>& net, const data::LabeledImages& test,
                            const std::vector<int64_t>& samples, int64_t eval_batch,
                            uint64_t seed) {
  return evaluate_report_by(
      [&](const EnsembleOptions& o) { return evaluate_ensemble(net, test, o); }, samples,
      eval_batch, seed);
}

}  // namespace varnet::examples
