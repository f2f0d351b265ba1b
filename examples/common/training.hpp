// The examples' training epoch: shuffled mini-batches (the last partial batch dropped), a linearly
// decaying learning rate, and the KL weight's warm-up, over a Trainer.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "varnet/data/batches.hpp"
#include "varnet/data/idx.hpp"
#include "varnet/nn/network.hpp"
#include "varnet/nn/optimizer.hpp"
#include "varnet/nn/trainer.hpp"

namespace varnet::examples {

struct EpochResult {
  double loss = 0;      // mean cross-entropy over the epoch's steps
  double kl = 0;        // the network's KL after the last step (0 without a KL weight)
  double accuracy = 0;  // training accuracy of the sampled networks
  double seconds = 0;
  int64_t images = 0;
};

// One epoch over `data` in the order shuffled_order(n, seed, epoch). The learning rate and the KL
// weight (beta / N; none when `beta` is null) follow the trainer's global step count.
template <class T, class Opt>
EpochResult train_epoch(Trainer<T, Opt>& trainer, const data::LabeledImages& d, uint64_t seed,
                        uint32_t epoch, int64_t batch, const LinearDecay& lr,
                        const KlWarmup* beta) {
  const int64_t n = d.images.shape().n, steps = n / batch;
  check(steps > 0, "train_epoch", str("a batch size of at most ", n), batch);
  const auto order = data::shuffled_order(n, seed, epoch);
  thread_local Tensor<T> x;
  thread_local std::vector<int32_t> y;
  const auto t0 = std::chrono::steady_clock::now();
  EpochResult r;
  int64_t correct = 0;
  for (int64_t s = 0; s < steps; ++s) {
    data::gather_batch(d, order, s * batch, batch, x, y);
    if (beta) trainer.set_kl_weight(beta->at(trainer.steps()) / double(n));
    const LossResult l = trainer.step(x.view(), y.data(), lr.at(trainer.steps()));
    r.loss += l.loss;
    r.kl = l.kl;
    correct += l.correct;
  }
  r.images = steps * batch;
  r.loss /= double(steps);
  r.accuracy = double(correct) / double(r.images);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

// Scales the learning rate of every "<layer>.log_alpha" tensor (variational dropout's per-layer
// dropout rates) by `scale`: Adam moves a parameter by about lr per step, so at lr 1e-3 a log
// alpha crosses only a few units in a short run. Opt: varnet::Adam, or cuda::Trainer (its Adam).
template <class Opt, class T>
void scale_log_alpha_lr(Opt& adam, const Network<T>& net, double scale) {
  const std::string suffix = ".log_alpha";
  for (const auto& e : net.table().entries())
    if (e.trainable && e.name.size() > suffix.size() &&
        e.name.compare(e.name.size() - suffix.size(), suffix.size(), suffix) == 0)
      adam.set_lr_scale(e.offset, e.shape.numel(), scale);
}

}  // namespace varnet::examples
