// The training examples' GPU path (lenet5, vgg with --device cuda), declared here in plain C++ and
// defined in gpu_run.cu, which is compiled only when the build has the CUDA backend
// (VARNET_EXAMPLES_CUDA). The host network stays the model of record: it is uploaded, trained on
// the GPU, and its trained values are downloaded back into it, so saving and the weight reports
// run on the host as after CPU training.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "run_loop.hpp"
#include "varnet/core/error.hpp"
#include "varnet/data/augment.hpp"
#include "varnet/data/idx.hpp"
#include "varnet/nn/network.hpp"
#include "varnet/nn/optimizer.hpp"

namespace varnet::examples {

struct GpuTrainSettings {
  int64_t epochs = 1, batch = 128;
  int samples = 1;  // K of the K-sample objective
  uint64_t seed = 0;
  LinearDecay lr;
  bool graph = true;  // replay each step from a CUDA graph
  bool check_finite = true;
  bool tf32 = false;  // TF32 tensor cores in the GEMMs
  AdamOptions adam;
  bool augment = false;  // crop and flip each image (vgg's --augment)
  data::AugmentOptions augment_options;
};

// Refuses (varnet::Error naming the flag) what the GPU path cannot do: builds without CUDA, layer
// families without GPU kernels, checkpoints. Config: lenet5's or vgg's parsed flags.
template <class Config>
void check_gpu_config(const Config& c) {
#ifndef VARNET_EXAMPLES_CUDA
  fail("--device", "cpu (this build has no CUDA backend: configure it where nvcc is installed)",
       "cuda");
#endif
  check(c.layer_kind == "variance" || c.layer_kind == "deterministic", "--device cuda",
        "--layer-kind variance or deterministic (the layer families with GPU kernels)",
        "--layer-kind ", c.layer_kind);
  check(c.checkpoint.empty() && c.resume.empty(), "--device cuda",
        "no --checkpoint or --resume (checkpoints are written by CPU runs only, so far)",
        c.checkpoint.empty() ? "--resume" : "--checkpoint");
}

// The device flags' checks for any run: --tf32 needs --device cuda; --device cuda needs
// check_gpu_config.
template <class Config>
void check_device_flags(const Config& c) {
  check(!c.tf32 || c.device == "cuda", "--tf32", "--device cuda with it", "--device ", c.device);
  if (c.device == "cuda") check_gpu_config(c);
}

// The GPU settings from an example's parsed flags and learning-rate schedule.
template <class Config>
GpuTrainSettings gpu_settings(const Config& c, const LinearDecay& lr) {
  GpuTrainSettings s;
  s.epochs = c.epochs;
  s.batch = c.batch;
  s.samples = int(c.train_samples);
  s.seed = uint64_t(c.seed);
  s.lr = lr;
  s.graph = c.graph;
  s.check_finite = c.finite_check;
  s.tf32 = c.tf32;
  return s;
}

#ifdef VARNET_EXAMPLES_CUDA
// Trains `net` on the GPU: epochs in the order data::shuffled_order(n, seed, epoch), the last
// partial batch dropped, a progress line per epoch; copies the trained parameters and state back
// into `net`. Returns the seconds spent training (the GPU waited for at each epoch's end).
double train_on_gpu(Network<float>& net, const data::LabeledImages& train,
                    const GpuTrainSettings& s);

// examples::evaluate_report (run_loop.hpp) on the GPU (with TF32 when `tf32`): mean propagation,
// ensembles of each size in `samples`, and 10 samples with batch statistics; prints a line each;
// returns the JSON fields.
std::string evaluate_report_gpu(Network<float>& net, const data::LabeledImages& test,
                                const std::vector<int64_t>& samples, int64_t eval_batch,
                                uint64_t seed, bool tf32);
#else
// Without the CUDA backend check_gpu_config has refused --device cuda before these are reached.
inline double train_on_gpu(Network<float>&, const data::LabeledImages&, const GpuTrainSettings&) {
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
