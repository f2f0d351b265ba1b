// The training examples' GPU path (lenet5, vgg with --device cuda), declared here in plain C++ and
// defined in gpu_run.cu, which is compiled only when the build has the CUDA backend
// (VARNET_EXAMPLES_CUDA). The host network stays the model of record: it is uploaded, trained on
// the GPU, and its trained values are downloaded back into it, so saving, checkpoints and the
// weight reports run on the host as after CPU training.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "resumable.hpp"
#include "run_loop.hpp"
#include "varnet/core/error.hpp"
#include "varnet/data/augment.hpp"
#include "varnet/data/idx.hpp"
#include "varnet/nn/network.hpp"
#include "varnet/nn/optimizer.hpp"
#include "varnet/nn/trainer.hpp"

namespace varnet::examples {

struct GpuTrainSettings {
  int64_t epochs = 1, batch = 128;
  int samples = 1;  // K of the K-sample objective
  uint64_t seed = 0;
  LinearDecay lr;
  KlWarmup beta{0, 0};           // the KL weight beta(step) / N, when the network has a KL
  double alpha_lr_scale = 1;     // the log alphas' learning-rate multiplier (scale_log_alpha_lr)
  double threshold = 3;          // log alpha above which a weight counts as pruned (progress line)
  std::string checkpoint;        // where to save the run; empty: never
  int64_t checkpoint_every = 0;  // also every this many steps (0: only at the end)
  bool graph = true;             // replay each step from a CUDA graph
  bool check_finite = true;
  bool tf32 = false;  // TF32 tensor cores in the GEMMs
  AdamOptions adam;
  bool augment = false;  // crop and flip each image (vgg's --augment)
  data::AugmentOptions augment_options;
};

// Refuses (varnet::Error naming the flag) what the GPU path cannot do: --device cuda in builds
// without CUDA. Config: lenet5's or vgg's parsed flags. (A machine without a GPU is refused when
// training starts, by train_on_gpu.)
template <class Config>
void check_gpu_config(const Config&) {
#ifndef VARNET_EXAMPLES_CUDA
  fail("--device", "cpu (this build has no CUDA backend: configure it where nvcc is installed)",
       "cuda");
#endif
}

// The device flags' checks for any run: --tf32 and --no-graph need --device cuda; --device cuda
// needs check_gpu_config.
template <class Config>
void check_device_flags(const Config& c) {
  check(!c.tf32 || c.device == "cuda", "--tf32", "--device cuda with it", "--device ", c.device);
  check(c.graph || c.device == "cuda", "--no-graph", "--device cuda with it", "--device ",
        c.device);
  if (c.device == "cuda") check_gpu_config(c);
}

// The GPU settings from an example's parsed flags, learning-rate schedule and KL warm-up.
template <class Config>
GpuTrainSettings gpu_settings(const Config& c, const LinearDecay& lr, const KlWarmup& beta) {
  GpuTrainSettings s;
  s.epochs = c.epochs;
  s.batch = c.batch;
  s.samples = int(c.train_samples);
  s.seed = uint64_t(c.seed);
  s.lr = lr;
  s.beta = beta;
  s.alpha_lr_scale = c.alpha_lr_scale;
  s.threshold = c.threshold;
  s.checkpoint = c.checkpoint;
  s.checkpoint_every = c.checkpoint_every;
  s.graph = c.graph;
  s.check_finite = c.finite_check;
  s.tf32 = c.tf32;
  return s;
}

#ifdef VARNET_EXAMPLES_CUDA
// Trains `net` on the GPU as train_resumable (run_loop.hpp) trains it on the CPU: epochs
// [start.epoch, s.epochs) from the host trainer's step (a resumed run's, loaded into net, adam and
// trainer by resume_run), in the order data::shuffled_order(n, seed, epoch), the last partial
// batch dropped; the same learning rate, KL warm-up and log alpha learning-rate scale; the same
// progress line per epoch (with ", GPU" and the KL where the CPU prints it); checkpoints at the
// same steps, written through the host network, `adam` and `trainer`. Leaves the trained
// parameters and state in `net`, the optimizer's state in `adam` and the step count in
// `trainer`. Returns the seconds spent training (the GPU waited for at each epoch's end).
double train_on_gpu(Network<float>& net, Adam<float>& adam, Trainer<float, Adam<float>>& trainer,
                    const data::LabeledImages& train, const GpuTrainSettings& s,
                    const RunConfig& config, const RunStart& start);

// examples::evaluate_report (run_loop.hpp) on the GPU (with TF32 when `tf32`): mean propagation,
// ensembles of each size in `samples`, and 10 samples with batch statistics; prints a line each;
// returns the JSON fields.
std::string evaluate_report_gpu(Network<float>& net, const data::LabeledImages& test,
                                const std::vector<int64_t>& samples, int64_t eval_batch,
                                uint64_t seed, bool tf32);
#else
// Without the CUDA backend check_gpu_config has refused --device cuda before these are reached.
inline double train_on_gpu(Network<float>&, Adam<float>&, Trainer<float, Adam<float>>&,
                           const data::LabeledImages&, const GpuTrainSettings&, const RunConfig&,
                           const RunStart&) {
  fail("--device", "cpu", "cuda in a build without CUDA");
}
inline std::string evaluate_report_gpu(Network<float>&, const data::LabeledImages&,
                                       const std::vector<int64_t>&, int64_t, uint64_t, bool) {
  fail("--device", "cpu", "cuda in a build without CUDA");
}
#endif

// The final evaluation (run_loop.hpp's evaluate_report) on the run's device (Config: lenet5's or
// vgg's parsed flags).
template <class Config>
std::string evaluate_on_device(const Config& c, Network<float>& net,
                               const data::LabeledImages& test) {
  return c.device == "cuda"
             ? evaluate_report_gpu(net, test, c.samples, c.eval_batch, uint64_t(c.seed), c.tf32)
             : evaluate_report(net, test, c.samples, c.eval_batch, uint64_t(c.seed));
}

}  // namespace varnet::examples
