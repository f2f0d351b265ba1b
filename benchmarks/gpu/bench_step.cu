// GPU benchmark of whole networks: the LeNet-5 training step at batch 128 (deterministic, variance
// layer 1, variance layers 1-4) and the VGG-like step at batch 128 (deterministic, variance layers
// 11-14), each launched eagerly and replayed from a CUDA graph, and the LeNet-5 10-sample
// ensemble over 10,000 images. benchmarks/torch_reference.py times the same in PyTorch
// eager; benchmarks/gpu_ratios.py prints the ratios of the two JSON files.
//
//   bench_step [out.json]
//
// Random images in [0, 1) and random labels (never zeros). Each configuration: one warm-up epoch
// (it sizes the buffers and captures the graph), then the median over 5 epochs of 100 steps of
// the wall time per step; an epoch ends by waiting for the GPU, so every step's work is counted.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "varnet/cuda.hpp"
#include "varnet/cuda/ensemble.hpp"
#include "varnet/cuda/network.hpp"
#include "varnet/cuda/trainer.hpp"

namespace {

using Clock = std::chrono::steady_clock;
namespace vc = varnet::cuda;

varnet::data::LabeledImages random_images(int64_t n, uint32_t seed,
                                          varnet::Shape one = varnet::Shape(1, 1, 28, 28)) {
  varnet::data::LabeledImages d;
  d.images.resize(one.with_batch(n));
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> px(0.f, 1.f);
  for (int64_t i = 0; i < d.images.numel(); ++i) d.images.data()[i] = px(gen);
  std::uniform_int_distribution<int32_t> label(0, 9);
  for (int64_t i = 0; i < n; ++i) d.labels.push_back(label(gen));
  d.classes = 10;
  d.source = "random images";
  return d;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// One warm-up epoch of `steps` steps (it sizes the buffers and captures the graph), then the
// median over `repeats` epochs of the wall time per step; an epoch ends by waiting for the GPU.
double ms_per_step(vc::Trainer<float>& trainer, const vc::DeviceData& data,
                   const std::vector<int64_t>& order, int64_t steps, int repeats) {
  trainer.run_epoch(data, order, steps);
  std::vector<double> per_step;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = Clock::now();
    trainer.run_epoch(data, order, steps);
    per_step.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count() /
                       double(steps));
  }
  return median(per_step);
}

struct StepResult {
  std::string variant;
  bool graph;
  double ms;
};

}  // namespace

int main(int argc, char** argv) {
  try {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
      std::printf("no CUDA device: nothing to benchmark\n");
      return 77;
    }
    vc::GpuContext gpu;
    const int64_t batch = 128, steps = 100;
    const auto train = random_images(batch * steps, 1);
    const vc::DeviceData data(gpu, train);
    std::vector<int64_t> order(size_t(batch * steps));
    for (size_t i = 0; i < order.size(); ++i) order[i] = int64_t(i);

    struct Variant {
      const char* name;
      std::vector<int> layers;
    };
    const std::vector<Variant> variants = {{"plain", {}}, {"var1", {1}}, {"var1234", {1, 2, 3, 4}}};
    std::vector<StepResult> results;
    std::printf("%-10s %-7s %10s %12s\n", "variant", "launch", "ms/step", "img/s");
    for (const Variant& v : variants) {
      for (bool graph : {false, true}) {
        varnet::LeNet5Config cfg;
        cfg.variance_layers = v.layers;
        cfg.classes = 10;
        varnet::Network<float> host =
            varnet::make_lenet5<float>(cfg, varnet::Shape(1, 1, 28, 28), 0);
        vc::Network<float> net(gpu, host);
        vc::TrainerOptions o;
        o.batch = batch;
        o.lr = varnet::LinearDecay{1e-3, 100000};
        o.graph = graph;
        vc::Trainer<float> trainer(net, o);
        const double ms = ms_per_step(trainer, data, order, steps, 5);
        results.push_back({v.name, graph, ms});
        std::printf("%-10s %-7s %10.4f %12.0f\n", v.name, graph ? "graph" : "eager", ms,
                    1e3 * double(batch) / ms);
        std::fflush(stdout);
      }
    }

    // The VGG-like network (models/vgg.hpp, full width) on 3x32x32 images, batch 128: plain, and
    // with the reference's variance layers 11-14. 20 steps per timed epoch.
    const int64_t vgg_steps = 20;
    const auto cifar = random_images(batch * vgg_steps, 3, varnet::Shape(1, 3, 32, 32));
    const vc::DeviceData cifar_data(gpu, cifar);
    std::vector<int64_t> vgg_order(size_t(batch * vgg_steps));
    for (size_t i = 0; i < vgg_order.size(); ++i) vgg_order[i] = int64_t(i);
    std::vector<StepResult> vgg_results;
    double tf32_logit_error = 0;
    std::string vgg_profile;
    // "var" runs the convolutions by ConvAlgorithm::Auto (Winograd for conv 2-7), "var-im2col"
    // all by im2col and GEMM: the baseline of the Winograd change, in the same run.
    for (const std::string variant : {"plain", "var", "var-im2col", "var-nosplit", "var-tf32"}) {
      for (bool graph : {false, true}) {
        if ((variant == "var-nosplit" && graph) || (variant == "var-tf32" && !graph)) continue;
        vc::split_k_enabled() = variant != "var-nosplit";  // the weight gradients' split-K
        gpu.set_tf32(variant == "var-tf32");
        varnet::VggConfig cfg;
        cfg.classes = 10;
        if (variant == "plain") cfg.stochastic_layers.clear();
        if (variant == "var-im2col") cfg.conv_algorithm = varnet::ConvAlgorithm::Im2col;
        varnet::Network<float> host = varnet::make_vgg<float>(cfg, varnet::Shape(1, 3, 32, 32), 0);
        vc::Network<float> net(gpu, host);
        vc::TrainerOptions o;
        o.batch = batch;
        o.lr = varnet::LinearDecay{1e-3, 100000};
        o.adam.beta1 = 0.95;
        o.graph = graph;
        vc::Trainer<float> trainer(net, o);
        const double ms = ms_per_step(trainer, cifar_data, vgg_order, vgg_steps, 3);
        vgg_results.push_back({variant, graph, ms});
        if (variant == "var" && !graph) {  // where the time goes: 5 eager steps, layer by layer
          net.set_profiling(true);
          trainer.run_epoch(cifar_data, vgg_order, 5);
          vgg_profile = net.profile_report();
          net.set_profiling(false);
        }
        std::printf("vgg-%-6s %-7s %10.4f %12.0f\n", variant.c_str(), graph ? "graph" : "eager", ms,
                    1e3 * double(batch) / ms);
        std::fflush(stdout);
      }
    }
    vc::split_k_enabled() = true;
    gpu.set_tf32(false);
    for (bool graph : {false, true}) {
      double wino = 0, im2col = 0;
      for (const StepResult& r : vgg_results) {
        if (r.graph != graph) continue;
        if (r.variant == "var") wino = r.ms;
        if (r.variant == "var-im2col") im2col = r.ms;
      }
      if (wino > 0 && im2col > 0)
        std::printf("VGG var step (%s): Winograd (auto) %.3f ms, im2col %.3f ms: %.2fx faster\n",
                    graph ? "graph" : "eager", wino, im2col, im2col / wino);
    }
    std::printf("VGG var, 5 eager steps, per layer (CUDA events; synchronised per pass):\n%s",
                vgg_profile.c_str());
    {  // TF32's effect on the VGG's logits: one training-mode forward, FP32 against TF32
      varnet::VggConfig cfg;
      cfg.classes = 10;
      varnet::Network<float> host = varnet::make_vgg<float>(cfg, varnet::Shape(1, 3, 32, 32), 0);
      vc::Network<float> net(gpu, host);
      const varnet::Context ctx = varnet::Context::train(0, 1, 0);
      std::vector<float> logits[2];
      for (int tf32 = 0; tf32 < 2; ++tf32) {
        gpu.set_tf32(tf32 == 1);
        logits[tf32] = vc::to_host(net.forward(cifar_data.images.data(), batch, ctx),
                                   size_t(batch * 10), gpu.stream());
      }
      gpu.set_tf32(false);
      double diff = 0, norm = 0;
      for (size_t i = 0; i < logits[0].size(); ++i) {
        diff += std::pow(double(logits[1][i]) - double(logits[0][i]), 2);
        norm += std::pow(double(logits[0][i]), 2);
      }
      tf32_logit_error = std::sqrt(diff / norm);
      std::printf("VGG var logits, TF32 against FP32: relative L2 difference %.3g\n",
                  tf32_logit_error);
    }

    // The 10-sample ensemble of the var1 network over 10,000 images in batches of 1,000.
    const auto test = random_images(10000, 2);
    const vc::DeviceData test_data(gpu, test);
    varnet::LeNet5Config cfg;
    cfg.classes = 10;
    varnet::Network<float> host = varnet::make_lenet5<float>(cfg, varnet::Shape(1, 1, 28, 28), 0);
    vc::Network<float> net(gpu, host);
    varnet::EnsembleOptions eo;
    eo.samples = 10;
    eo.batch = 1000;
    // Median of 5 evaluations after a warm-up; samples_per_pass 0 stacks all 10 samples in one
    // pass per batch, 1 is the baseline of one pass per sample.
    const auto time_ensemble = [&](int samples_per_pass) {
      eo.samples_per_pass = samples_per_pass;
      vc::evaluate_ensemble(net, test_data, eo);
      std::vector<double> ens;
      for (int r = 0; r < 5; ++r) {
        const auto t0 = Clock::now();
        vc::evaluate_ensemble(net, test_data, eo);
        ens.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      }
      return median(ens);
    };
    const double ens_one_ms = time_ensemble(1);
    const double ens_ms = time_ensemble(0);
    net.set_profiling(true);
    vc::evaluate_ensemble(net, test_data, eo);
    std::printf("LeNet-5 var1 ensemble, one evaluation, per layer (forward only):\n%s",
                net.profile_report().c_str());
    net.set_profiling(false);
    std::printf(
        "ensemble   10 samples x 10000 images: %.2f ms (%.0f img/s) stacked, %.2f ms one "
        "pass per sample: %.2fx\n",
        ens_ms, 1e3 * 10000.0 / ens_ms, ens_one_ms, ens_one_ms / ens_ms);

    std::string json = "{\"bench\":\"bench_step\",\"lenet5_step\":[";
    for (size_t i = 0; i < results.size(); ++i)
      json += varnet::str(i ? "," : "", "{\"variant\":\"", results[i].variant,
                          "\",\"graph\":", results[i].graph ? "true" : "false",
                          ",\"batch\":", batch, ",\"ms\":", results[i].ms,
                          ",\"img_per_s\":", 1e3 * double(batch) / results[i].ms, "}");
    json += "],\"vgg_step\":[";
    for (size_t i = 0; i < vgg_results.size(); ++i)
      json += varnet::str(i ? "," : "", "{\"variant\":\"", vgg_results[i].variant,
                          "\",\"graph\":", vgg_results[i].graph ? "true" : "false",
                          ",\"width\":1,\"batch\":", batch, ",\"ms\":", vgg_results[i].ms,
                          ",\"img_per_s\":", 1e3 * double(batch) / vgg_results[i].ms, "}");
    json += varnet::str("],\"vgg_tf32_logit_rel_l2\":", tf32_logit_error);
    json += varnet::str(",\"lenet5_ensemble\":{\"variant\":\"var1\",\"samples\":10,",
                        "\"images\":10000,\"batch\":1000,\"ms\":", ens_ms,
                        ",\"ms_one_pass_per_sample\":", ens_one_ms,
                        ",\"img_per_s\":", 1e3 * 10000.0 / ens_ms, "}}");
    if (argc > 1) {
      std::ofstream f(argv[1]);
      f << json << "\n";
      varnet::check(bool(f), "bench_step", "a written JSON file", "an error writing ", argv[1]);
      std::printf("wrote %s\n", argv[1]);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_step: %s\n", e.what());
    return 1;
  }
}
