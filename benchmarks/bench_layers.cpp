// CPU layer benchmarks (Google Benchmark): each variance layer's forward + backward beside its
// deterministic twin at LeNet-5 sizes, and the whole LeNet-5 training step. Run:
//   build/benchmarks/bench_layers            (items/s counters are images per second)
#include <benchmark/benchmark.h>

#include <memory>

#include "varnet/varnet.hpp"

namespace {

using namespace varnet;

// One layer in a network, forward + backward on batch 128 of the given input shape.
void run_layer(benchmark::State& state, std::unique_ptr<Layer<float>> layer, Shape in) {
  Network<float> net;
  net.add(std::move(layer), "layer");
  net.build(in, 1);
  Tensor<float> x(in.with_batch(128));
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = float((i * 37) % 101) / 101.0f;
  Tensor<float> dy(net.output_shape().with_batch(128), 0.01f);
  uint32_t step = 0;
  for (auto _ : state) {
    const Context ctx = Context::train(1, step++);
    net.forward(x.view(), ctx);
    net.backward(dy.view(), ctx, 0, true);
    benchmark::DoNotOptimize(net.grads().data());
  }
  state.SetItemsProcessed(state.iterations() * 128);
}

const ConvOptions kConv5{5, 1, 0, false};

void BM_Conv1_Deterministic(benchmark::State& s) {
  run_layer(s, std::make_unique<Conv2d<float>>(1, 20, kConv5), Shape(1, 1, 28, 28));
}
void BM_Conv1_Variance(benchmark::State& s) {
  run_layer(s, std::make_unique<VarianceConv2d<float>>(1, 20, kConv5), Shape(1, 1, 28, 28));
}
void BM_Conv2_Deterministic(benchmark::State& s) {
  run_layer(s, std::make_unique<Conv2d<float>>(20, 50, kConv5), Shape(1, 20, 12, 12));
}
void BM_Conv2_Variance(benchmark::State& s) {
  run_layer(s, std::make_unique<VarianceConv2d<float>>(20, 50, kConv5), Shape(1, 20, 12, 12));
}
void BM_Fc1_Deterministic(benchmark::State& s) {
  run_layer(s, std::make_unique<Linear<float>>(800, 500, false), Shape(1, 800));
}
void BM_Fc1_Variance(benchmark::State& s) {
  run_layer(s, std::make_unique<VarianceLinear<float>>(800, 500), Shape(1, 800));
}

// The whole LeNet-5 training step (Adam), batch 128, variance layers as in range(0).
void BM_LeNet5_TrainStep(benchmark::State& state) {
  LeNet5Config cfg;
  cfg.variance_layers.clear();
  for (int l = 1; l <= state.range(0); ++l) cfg.variance_layers.push_back(l);
  Network<float> net = make_lenet5<float>(cfg, Shape(1, 1, 28, 28), 1);
  Adam<float> adam(net.params().size());
  Trainer<float, Adam<float>> trainer(net, adam, 1, 1);
  Tensor<float> x(Shape(128, 1, 28, 28));
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = float((i * 37) % 101) / 101.0f;
  std::vector<int32_t> y(128);
  for (int i = 0; i < 128; ++i) y[size_t(i)] = i % 10;
  for (auto _ : state) benchmark::DoNotOptimize(trainer.step(x.view(), y.data(), 1e-3));
  state.SetItemsProcessed(state.iterations() * 128);
}

}  // namespace

BENCHMARK(BM_Conv1_Deterministic)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Conv1_Variance)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Conv2_Deterministic)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Conv2_Variance)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Fc1_Deterministic)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Fc1_Variance)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LeNet5_TrainStep)->Arg(0)->Arg(1)->Arg(3)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
