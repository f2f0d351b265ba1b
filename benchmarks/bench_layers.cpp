// CPU benchmarks (Google Benchmark), wall-clock time on all the threads OpenMP is given:
//   - every stochastic layer's forward + backward at LeNet-5 and VGG-like sizes, batch 128, beside
//     its deterministic twin (Conv2d / Linear of the same shape);
//   - the whole LeNet-5 training step (forward, backward, Adam) at batch 128, deterministic, with
//     variance layer 1 (examples/lenet5's default) and with variance layers 1-3;
//   - a square GEMM doing the step's multiply-adds, the machine's ceiling for that work;
//   - the VGG-like network's 3x3 convolutions by im2col and by Winograd F(4x4, 3x3), the
//     ConvAlgorithm baseline and its alternative side by side;
//   - the LRT noise of LeNet-5's conv1 alone (one normal per output, drawn as the layer draws
//     it): the floor under what a variance conv1 can cost beyond its twin.
// After the runs a summary prints each layer's cost relative to its twin, and each step's
// images/s and GFLOP/s against the GEMM's; scripts/bench-cpu.sh reads its "varnet" lines.
//   build-bench/benchmarks/bench_layers [Google Benchmark flags, e.g. --benchmark_filter=LeNet]
#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "varnet/varnet.hpp"

namespace {

using namespace varnet;
constexpr int64_t kBatch = 128;

void fill_pattern(float* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = float((i * 37) % 101) / 101.0f;
}

// One layer (added by `add`) as the only layer of a network: forward + backward at batch 128.
// `input_grad`: whether dx is computed (not for a network's first layer).
void run_layer(benchmark::State& state, const std::function<void(Network<float>&)>& add, Shape in,
               bool input_grad) {
  Network<float> net;
  add(net);
  net.build(in, 1);
  Tensor<float> x(in.with_batch(kBatch));
  fill_pattern(x.data(), x.numel());
  Tensor<float> dy(net.output_shape().with_batch(kBatch), 0.01f);
  uint32_t step = 0;
  const auto once = [&] {
    const Context ctx = Context::train(1, step++);
    net.forward(x.view(), ctx);
    net.backward(dy.view(), ctx, 0, input_grad);
  };
  once();  // buffers are allocated on the first step only
  for (auto _ : state) {
    once();
    benchmark::DoNotOptimize(net.grads().data());
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}

// A layer site: its input shape and how to build each kind of layer there.
struct Site {
  const char* name;
  Shape input;
  bool input_grad;
  bool conv;
  int64_t in, out;  // channels or features
  ConvOptions conv_options;
};

const std::vector<Site>& sites() {
  static const std::vector<Site> s = {
      {"lenet_conv1", Shape(1, 1, 28, 28), false, true, 1, 20, {5, 1, 0, false}},
      {"lenet_conv2", Shape(1, 20, 12, 12), true, true, 20, 50, {5, 1, 0, false}},
      {"lenet_fc1", Shape(1, 800), true, false, 800, 500, {}},
      {"vgg_conv3x3_128_16x16", Shape(1, 128, 16, 16), true, true, 128, 128, {3, 1, 1, false}},
      {"vgg_conv3x3_512_2x2", Shape(1, 512, 2, 2), true, true, 512, 512, {3, 1, 1, false}},
      {"vgg_fc_512", Shape(1, 512), true, false, 512, 512, {}},
  };
  return s;
}

void add_layer(Network<float>& net, const Site& s, LayerKind kind) {
  if (s.conv)
    add_conv(net, "layer", kind, s.in, s.out, s.conv_options, StochasticOptions{});
  else
    add_dense(net, "layer", kind, s.in, s.out, StochasticOptions{});
}

const std::vector<LayerKind>& layer_kinds() {
  static const std::vector<LayerKind> k = {LayerKind::deterministic, LayerKind::variance,
                                           LayerKind::svdo};
  return k;
}

// A 3x3 "same" convolution of the VGG-like network: channels and plane side.
struct ConvAlgoSite {
  const char* name;
  int64_t channels, side;
};
const std::vector<ConvAlgoSite>& conv_algo_sites() {
  static const std::vector<ConvAlgoSite> s = {{"vgg_conv_64_32x32", 64, 32},
                                              {"vgg_conv_128_16x16", 128, 16},
                                              {"vgg_conv_256_8x8", 256, 8},
                                              {"vgg_conv_512_4x4", 512, 4}};
  return s;
}
const ConvAlgorithm kConvAlgorithms[] = {ConvAlgorithm::Im2col, ConvAlgorithm::Winograd};

// The LeNet-5 training step's multiply-adds per image, from its GEMM shapes (2 FLOP each):
// forward, weight gradient and (except for conv1) input gradient of every weight layer.
double lenet_flops_per_image() {
  const double conv1 = 2.0 * 24 * 24 * 20 * 25, conv2 = 2.0 * 8 * 8 * 50 * 500;
  const double fc1 = 2.0 * 800 * 500, fc2 = 2.0 * 500 * 10;
  return 2 * conv1 + 3 * (conv2 + fc1 + fc2);
}

void lenet_step(benchmark::State& state, std::vector<int> variance_layers) {
  LeNet5Config cfg;
  cfg.variance_layers = std::move(variance_layers);
  Network<float> net = make_lenet5<float>(cfg, Shape(1, 1, 28, 28), 1);
  Adam<float> adam(net.params().size());
  Trainer<float, Adam<float>> trainer(net, adam, 1, 1);
  Tensor<float> x(Shape(kBatch, 1, 28, 28));
  fill_pattern(x.data(), x.numel());
  std::vector<int32_t> y(kBatch);
  for (int i = 0; i < kBatch; ++i) y[size_t(i)] = i % 10;
  trainer.step(x.view(), y.data(), 1e-3);
  for (auto _ : state) benchmark::DoNotOptimize(trainer.step(x.view(), y.data(), 1e-3));
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.counters["GFLOP/s"] =
      benchmark::Counter(lenet_flops_per_image() * kBatch * 1e-9 * double(state.iterations()),
                         benchmark::Counter::kIsRate);
}

// Untimed LeNet-5 steps for about a second before the first benchmark: whichever benchmark ran
// first in a process came out up to 1.45x slower than in a later run of the same binary (40.7 ms
// against 28.0 ms for the deterministic step), which skewed the ratios it enters (the OpenMP
// team's start, first-touch page faults, the shared host's clock).
void warm_up() {
  LeNet5Config cfg;
  cfg.variance_layers = {1};
  Network<float> net = make_lenet5<float>(cfg, Shape(1, 1, 28, 28), 1);
  Adam<float> adam(net.params().size());
  Trainer<float, Adam<float>> trainer(net, adam, 1, 1);
  Tensor<float> x(Shape(kBatch, 1, 28, 28));
  fill_pattern(x.data(), x.numel());
  std::vector<int32_t> y(kBatch, 0);
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < std::chrono::seconds(1))
    trainer.step(x.view(), y.data(), 1e-3);
}

// n x n x n with 2 n^3 close to a LeNet-5 step's FLOPs at batch 128.
int64_t same_work_gemm_size() {
  return int64_t(std::lround(std::cbrt(lenet_flops_per_image() * kBatch / 2)));
}

void gemm_same_work(benchmark::State& state) {
  const int64_t n = same_work_gemm_size();
  ops::RowMatrix<float> a(n, n), b(n, n), c(n, n);
  fill_pattern(a.data(), n * n);
  fill_pattern(b.data(), n * n);
  c.noalias() = a * b;
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * double(n * n * n) * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
}

// The normals a variance conv1 draws in one step (batch 128 x 20 channels x 24 x 24), per sample
// in parallel as VarianceConv2d::forward does: the cost no faster GEMM or epilogue can remove.
void conv1_noise(benchmark::State& state) {
  constexpr int64_t per_sample = 20 * 24 * 24;
  std::vector<float> eps(size_t(kBatch * per_sample));
  uint32_t step = 0;
  for (auto _ : state) {
    const NoiseKey key{1, 1, step++, 0};
    parallel_for(
        kBatch,
        [&](int64_t b) {
          ops::fill_normal(key, uint64_t(b * per_sample), per_sample, eps.data() + b * per_sample);
        },
        per_sample);
    benchmark::DoNotOptimize(eps.data());
  }
  state.SetItemsProcessed(state.iterations() * kBatch * per_sample);
}

struct StepConfig {
  const char* name;
  std::vector<int> variance_layers;
};
const std::vector<StepConfig>& step_configs() {
  static const std::vector<StepConfig> c = {
      {"deterministic", {}}, {"var1", {1}}, {"var123", {1, 2, 3}}};
  return c;
}

// Keeps each benchmark's seconds per iteration (wall clock) for the summary.
class Collector : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, double> seconds;
  std::map<std::string, double> gflops;
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      // One value per benchmark: the run itself, or with --benchmark_repetitions the median
      // (aggregates are reported after the runs, so it replaces the last run's value).
      if (r.error_occurred) continue;
      if (r.run_type == Run::RT_Aggregate && r.aggregate_name != "median") continue;
      const std::string& name = r.run_name.function_name;  // as registered, no suffixes
      seconds[name] = r.GetAdjustedRealTime() * 1e-3;      // ms -> s
      const auto g = r.counters.find("GFLOP/s");
      if (g != r.counters.end()) gflops[name] = g->second.value;
    }
  }
};

void print_summary(const Collector& c) {
  std::printf(
      "\nStochastic layers, forward + backward at batch %lld, relative to the "
      "deterministic twin:\n",
      static_cast<long long>(kBatch));
  for (const Site& s : sites()) {
    const auto twin = c.seconds.find(std::string("layer/") + s.name + "/deterministic");
    if (twin == c.seconds.end()) continue;
    std::printf("  %-24s deterministic %8.3f ms", s.name, twin->second * 1e3);
    for (LayerKind k : layer_kinds()) {
      if (k == LayerKind::deterministic) continue;
      const auto it = c.seconds.find(std::string("layer/") + s.name + "/" + to_string(k));
      if (it != c.seconds.end())
        std::printf("   %s %8.3f ms = %.2fx", to_string(k), it->second * 1e3,
                    it->second / twin->second);
    }
    std::printf("\n");
  }
  const auto noise = c.seconds.find("noise/lenet_conv1");
  const auto conv1 = c.seconds.find("layer/lenet_conv1/deterministic");
  if (noise != c.seconds.end() && conv1 != c.seconds.end())
    std::printf("  conv1's LRT noise alone (%lld normals) %8.3f ms = %.2fx of its twin\n",
                static_cast<long long>(kBatch * 20 * 24 * 24), noise->second * 1e3,
                noise->second / conv1->second);
  std::printf("\nVGG-like 3x3 convolutions, forward + backward at batch %lld:\n",
              static_cast<long long>(kBatch));
  for (const ConvAlgoSite& s : conv_algo_sites()) {
    const auto im2col = c.seconds.find(std::string("conv_algorithm/") + s.name + "/im2col");
    const auto wino = c.seconds.find(std::string("conv_algorithm/") + s.name + "/winograd");
    if (im2col == c.seconds.end() || wino == c.seconds.end()) continue;
    std::printf("  %-20s im2col %8.2f ms   winograd %8.2f ms = %.2fx faster\n", s.name,
                im2col->second * 1e3, wino->second * 1e3, im2col->second / wino->second);
  }
  const auto gemm = c.gflops.find("gemm_same_work");
  std::printf("\nLeNet-5 training step, batch %lld (%.1f MFLOP per image):\n",
              static_cast<long long>(kBatch), lenet_flops_per_image() * 1e-6);
  for (const StepConfig& s : step_configs()) {
    const std::string name = std::string("lenet5_step/") + s.name;
    const auto t = c.seconds.find(name);
    if (t == c.seconds.end()) continue;
    const double gf = c.gflops.at(name);
    std::printf("varnet %s %.0f img/s  (%.2f ms/step, %.1f GFLOP/s", s.name, kBatch / t->second,
                t->second * 1e3, gf);
    if (gemm != c.gflops.end())
      std::printf(" = %.0f%% of a %lld^3 GEMM's %.1f GFLOP/s", 100 * gf / gemm->second,
                  static_cast<long long>(same_work_gemm_size()), gemm->second);
    std::printf(")\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  for (const Site& s : sites())
    for (LayerKind k : layer_kinds())
      benchmark::RegisterBenchmark((std::string("layer/") + s.name + "/" + to_string(k)).c_str(),
                                   [s, k](benchmark::State& st) {
                                     run_layer(
                                         st, [&](Network<float>& net) { add_layer(net, s, k); },
                                         s.input, s.input_grad);
                                   })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
  for (const ConvAlgoSite& s : conv_algo_sites())
    for (ConvAlgorithm a : kConvAlgorithms)
      benchmark::RegisterBenchmark(
          (std::string("conv_algorithm/") + s.name + "/" + to_string(a)).c_str(),
          [s, a](benchmark::State& st) {
            run_layer(
                st,
                [&](Network<float>& net) {
                  net.emplace<Conv2d<float>>("conv", s.channels, s.channels,
                                             ConvOptions{3, 1, 1, false, a});
                },
                Shape(1, s.channels, s.side, s.side), true);
          })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
  for (const StepConfig& s : step_configs())
    benchmark::RegisterBenchmark((std::string("lenet5_step/") + s.name).c_str(),
                                 [s](benchmark::State& st) { lenet_step(st, s.variance_layers); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  benchmark::RegisterBenchmark("noise/lenet_conv1", conv1_noise)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("gemm_same_work", gemm_same_work)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  Collector collector;
  warm_up();
  benchmark::RunSpecifiedBenchmarks(&collector);
  print_summary(collector);
  benchmark::Shutdown();
  return 0;
}
