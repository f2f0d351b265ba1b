// Whole-network parity: cuda::Network (a GPU mirror of a host varnet::Network), cuda::Trainer and
// the GPU ensemble against the CPU on LeNet-5 with variance layers. Both backends draw the same
// noise, so outputs, gradients and training trajectories are compared directly.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "parity.hpp"
#include "varnet/cuda/ensemble.hpp"
#include "varnet/cuda/network.hpp"
#include "varnet/cuda/trainer.hpp"

using varnet::test::gpu;
using varnet::test::random_images;
using varnet::test::random_vector;
using varnet::test::relative_update_gap;
namespace vc = varnet::cuda;

namespace {

// Float rounding differs per layer by ~1e-5 relative (the layer parity tests); through four
// weight layers and three batch norms it compounds to well under 1e-3 here, while a wrong index,
// noise draw or missing term shows up at O(1).
constexpr double kNetworkRtol = 1e-3;

// A layer of the test's own (y = -x): no GPU version exists of it.
class Negate : public varnet::Elementwise<float> {
 public:
  std::string kind() const override { return "Negate"; }
  void forward(varnet::ConstView<float> x, varnet::TensorView<float> y, float*,
               const varnet::Context&) override {
    for (int64_t i = 0; i < x.numel(); ++i) y[i] = -x[i];
  }
  void backward(varnet::ConstView<float>, varnet::ConstView<float>, varnet::ConstView<float> dy,
                varnet::TensorView<float> dx, float*, const varnet::Context&) override {
    if (!dx.data) return;
    for (int64_t i = 0; i < dy.numel(); ++i) dx[i] = -dy[i];
  }
};

varnet::Network<float> lenet(const std::vector<int>& variance_layers, int64_t side, uint64_t seed) {
  varnet::LeNet5Config cfg;
  cfg.variance_layers = variance_layers;
  cfg.classes = 10;
  return varnet::make_lenet5<float>(cfg, varnet::Shape(1, 1, side, side), seed);
}

}  // namespace

TEST_CASE("cuda::Network forward and backward match the host LeNet-5", "[cuda][network]") {
  const std::vector<std::vector<int>> configs = {{1}, {1, 2, 3, 4}, {}};
  for (const auto& var : configs) {
    for (int64_t batch : {2, 5}) {  // training batch norm needs two values per channel
      INFO("variance layers " << var.size() << ", batch " << batch);
      varnet::Network<float> host = lenet(var, 28, 7);
      vc::Network<float> dev(gpu(), host);
      const varnet::Shape in(batch, 1, 28, 28);
      const auto x = random_vector<float>(size_t(in.numel()), 11, 0.0, 1.0);
      const auto dy = random_vector<float>(size_t(batch * 10), 12);
      const varnet::Context ctx = varnet::Context::train(3, 41, 2);

      const varnet::test::CpuRun want = varnet::test::run_cpu(
          host, x, in, dy, std::vector<float>(host.params().size(), 0.f), ctx);
      const vc::DeviceBuffer<float> dx = varnet::test::upload(x);
      const vc::DeviceBuffer<float> ddy = varnet::test::upload(dy);
      const float* y = dev.forward(dx.data(), batch, ctx);
      dev.backward(ddy.data(), ctx);
      const std::vector<float> got_y = vc::to_host(y, size_t(batch * 10), gpu().stream());
      VARNET_CHECK_CLOSE(got_y, want.y, kNetworkRtol);
      VARNET_CHECK_CLOSE(dev.grad_buffer().download(gpu().stream()), want.grads, kNetworkRtol);
      VARNET_CHECK_CLOSE(dev.state_buffer().download(gpu().stream()), want.state, kNetworkRtol);
    }
  }
}

TEST_CASE("cuda::Network refuses layers it has no GPU version of", "[cuda][network]") {
  varnet::Network<float> host;
  host.emplace<varnet::Linear<float>>("fc1", 4, 8);
  host.emplace<Negate>("act");
  host.emplace<varnet::Linear<float>>("fc2", 8, 2);
  host.build(varnet::Shape(1, 4), 1);
  CHECK_THROWS_WITH(vc::Network<float>(gpu(), host), Catch::Matchers::Contains("act"));
}

TEST_CASE("cuda::Network with Bernoulli and uniform variance layers matches the host",
          "[cuda][network]") {
  for (const auto dist : {varnet::WeightDist::bernoulli, varnet::WeightDist::uniform}) {
    INFO(varnet::to_string(dist));
    varnet::LeNet5Config cfg;
    cfg.variance_layers = {1, 2, 3, 4};
    cfg.variance.dist = dist;
    cfg.classes = 10;
    varnet::Network<float> host = varnet::make_lenet5<float>(cfg, varnet::Shape(1, 1, 28, 28), 3);
    vc::Network<float> dev(gpu(), host);
    const varnet::Shape in(4, 1, 28, 28);
    const auto x = random_vector<float>(size_t(in.numel()), 51, 0.0, 1.0);
    const auto dy = random_vector<float>(size_t(4 * 10), 52);
    const varnet::Context ctx = varnet::Context::train(9, 17, 1);
    const varnet::test::CpuRun want =
        varnet::test::run_cpu(host, x, in, dy, std::vector<float>(host.params().size(), 0.f), ctx);
    const vc::DeviceBuffer<float> dx = varnet::test::upload(x);
    const vc::DeviceBuffer<float> ddy = varnet::test::upload(dy);
    const float* y = dev.forward(dx.data(), 4, ctx);
    dev.backward(ddy.data(), ctx);
    VARNET_CHECK_CLOSE(vc::to_host(y, size_t(4 * 10), gpu().stream()), want.y, kNetworkRtol);
    VARNET_CHECK_CLOSE(dev.grad_buffer().download(gpu().stream()), want.grads, kNetworkRtol);
  }
}

TEST_CASE("cuda::Trainer follows the host Trainer, with and without a CUDA graph",
          "[cuda][network]") {
  const int64_t side = 16, batch = 8, steps = 6;
  const varnet::data::LabeledImages data = random_images(64, side, 5);
  const std::vector<int> var = {1, 3};
  const varnet::LinearDecay lr{1e-3, 3 * steps};

  // Host: two epochs of `steps` steps.
  varnet::Network<float> host = lenet(var, side, 9);
  const std::vector<float> start(host.params().begin(), host.params().end());
  varnet::Adam<float> adam(host.params().size());
  varnet::Trainer<float, varnet::Adam<float>> trainer(host, adam, 1, 13);
  std::vector<double> host_loss;
  varnet::Tensor<float> x;
  std::vector<int32_t> y;
  for (uint32_t e = 0; e < 2; ++e) {
    const auto order = varnet::data::shuffled_order(64, 13, e);
    double loss = 0;
    for (int64_t s = 0; s < steps; ++s) {
      varnet::data::gather_batch(data, order, s * batch, batch, x, y);
      loss += trainer.step(x.view(), y.data(), lr.at(trainer.steps())).loss;
    }
    host_loss.push_back(loss / double(steps));
  }

  // GPU, eagerly and with a graph, from the same start.
  std::vector<std::vector<float>> params;
  for (bool graph : {false, true}) {
    INFO("graph " << graph);
    varnet::Network<float> twin = lenet(var, side, 9);
    vc::Network<float> dev(gpu(), twin);
    vc::TrainerOptions o = varnet::test::trainer_options(13, batch, lr, graph);
    vc::Trainer<float> t(dev, o);
    const vc::DeviceData dd(gpu(), data);
    for (uint32_t e = 0; e < 2; ++e) {
      const vc::GpuEpochResult r = t.run_epoch(dd, varnet::data::shuffled_order(64, 13, e), steps);
      CHECK(std::fabs(r.loss - host_loss[e]) <= kNetworkRtol * std::fabs(host_loss[e]));
      CHECK(r.images == steps * batch);
    }
    CHECK(t.steps() == uint32_t(2 * steps));
    params.push_back(dev.param_buffer().download(gpu().stream()));
    // Adam normalises each step, so parameters whose gradient is rounding noise move by up to lr
    // either way: compare the whole update, not each entry.
    const std::vector<float> host_params(host.params().begin(), host.params().end());
    const double gap = relative_update_gap(params.back(), host_params, start);
    INFO("relative gap between the GPU's and the CPU's parameter updates: " << gap);
    CHECK(gap < 1e-2);
  }
  // A graph replays the very launches of an eager step: the same numbers, bit for bit.
  CHECK(params[0] == params[1]);
}

TEST_CASE("cuda::evaluate_ensemble matches the host ensemble", "[cuda][network]") {
  const varnet::data::LabeledImages data = random_images(300, 28, 21);
  varnet::Network<float> host = lenet({1, 2}, 28, 4);
  // Batch-norm running statistics away from their initial values, as after training.
  for (size_t i = 0; i < host.state().size(); ++i) host.state()[i] = 0.5f + 0.001f * float(i % 7);
  vc::Network<float> dev(gpu(), host);
  const vc::DeviceData dd(gpu(), data);
  for (auto mode : {varnet::PredictMode::sample, varnet::PredictMode::mean}) {
    for (bool batch_stats : {false, true}) {
      varnet::EnsembleOptions o;
      o.samples = mode == varnet::PredictMode::mean ? 1 : 4;
      o.mode = mode;
      o.batch_stats = batch_stats;
      o.batch = 128;  // 300 = 2 full batches and a partial one
      o.seed = 8;
      INFO("mode " << varnet::to_string(mode) << ", batch statistics " << batch_stats);
      const varnet::EnsembleResult want = varnet::evaluate_ensemble(host, data, o);
      const varnet::EnsembleResult got = vc::evaluate_ensemble(dev, dd, o);
      CHECK(std::fabs(got.nll - want.nll) <= 1e-4 * std::fabs(want.nll));
      // A near-tie between two classes may resolve differently under float rounding.
      CHECK(std::fabs(got.accuracy - want.accuracy) <= 2.0 / 300);
    }
  }
}

TEST_CASE("cuda::Network forward and backward match a host VGG", "[cuda][network]") {
  varnet::VggConfig cfg;
  cfg.width = 1.0 / 16;  // 4 4 P 8 8 P 16 16 16 P 32 ... : every layer kind, small
  cfg.classes = 10;
  varnet::Network<float> host = varnet::make_vgg<float>(cfg, varnet::Shape(1, 3, 32, 32), 5);
  vc::Network<float> dev(gpu(), host);
  const int64_t batch = 3;
  const varnet::Shape in(batch, 3, 32, 32);
  const auto x = random_vector<float>(size_t(in.numel()), 31);
  const auto dy = random_vector<float>(size_t(batch * 10), 32);
  const varnet::Context ctx = varnet::Context::train(6, 2, 0);
  const varnet::test::CpuRun want =
      varnet::test::run_cpu(host, x, in, dy, std::vector<float>(host.params().size(), 0.f), ctx);
  const vc::DeviceBuffer<float> dx = varnet::test::upload(x);
  const vc::DeviceBuffer<float> ddy = varnet::test::upload(dy);
  const float* y = dev.forward(dx.data(), batch, ctx);
  dev.backward(ddy.data(), ctx);
  VARNET_CHECK_CLOSE(vc::to_host(y, size_t(batch * 10), gpu().stream()), want.y, kNetworkRtol);
  VARNET_CHECK_CLOSE(dev.grad_buffer().download(gpu().stream()), want.grads, kNetworkRtol);
  VARNET_CHECK_CLOSE(dev.state_buffer().download(gpu().stream()), want.state, kNetworkRtol);
}

TEST_CASE("gather_batch with augmentation equals the host's gather and augment_batch",
          "[cuda][network]") {
  // 3-channel 6x5 images: rectangles and channels catch swapped axes; pad 2 reaches past edges.
  varnet::data::LabeledImages d;
  d.images.resize(varnet::Shape(20, 3, 6, 5));
  const auto px = random_vector<float>(size_t(d.images.numel()), 41);
  std::copy(px.begin(), px.end(), d.images.data());
  for (int i = 0; i < 20; ++i) d.labels.push_back(i % 7);
  d.classes = 7;
  const auto order = varnet::data::shuffled_order(20, 3, 1);
  varnet::data::AugmentOptions o;
  o.pad = 2;
  o.seed = 77;
  const uint32_t epoch = 5, step = 9, first_step = 7;  // batch 2 of the epoch
  const int64_t batch = 6, per = 3 * 6 * 5;
  varnet::Tensor<float> want;
  std::vector<int32_t> want_y;
  varnet::data::gather_batch(d, order, 2 * batch, batch, want, want_y);
  varnet::data::augment_batch(want.view(), order, 2 * batch, o, epoch);

  const vc::DeviceData dd(gpu(), d);
  std::vector<int32_t> order32(order.begin(), order.end());
  const auto d_order = vc::to_device(order32, gpu().stream());
  const auto words = vc::to_device(std::vector<uint32_t>{step, first_step, epoch}, gpu().stream());
  vc::DeviceBuffer<float> x(size_t(batch * per));
  vc::DeviceBuffer<int32_t> y{size_t(batch)};
  varnet::kernels::GatherAugment aug;
  aug.on = true;
  aug.pad = o.pad;
  aug.seed = o.seed;
  aug.c = 3;
  aug.h = 6;
  aug.w = 5;
  vc::gather_batch(gpu(), dd.images.data(), dd.labels.data(), d_order.data(), words.data(),
                   words.data() + 1, words.data() + 2, batch, per, aug, x.data(), y.data());
  CHECK(x.download(gpu().stream()) == std::vector<float>(want.data(), want.data() + want.numel()));
  CHECK(y.download(gpu().stream()) == want_y);
}

TEST_CASE("a stacked GPU pass matches the host's stacked pass and the GPU's separate passes",
          "[cuda][network]") {
  // Every family that can stack, on odd sizes (20x20 inputs) and batch 1 and 3.
  varnet::LeNet5Config cfg;
  cfg.kinds = {varnet::LayerKind::variance, varnet::LayerKind::svdo, varnet::LayerKind::dropout,
               varnet::LayerKind::gdo};
  varnet::Network<float> host = varnet::make_lenet5<float>(cfg, varnet::Shape(1, 1, 20, 20), 3);
  for (size_t i = 0; i < host.state().size(); ++i) host.state()[i] = 0.5f + 0.001f * float(i % 7);
  vc::Network<float> dev(gpu(), host);
  for (int64_t b : {1, 3}) {
    const int k = 3;
    INFO("batch " << b);
    const auto one = random_vector<float>(size_t(b * 400), 5, 0.0, 1.0);
    std::vector<float> x;
    for (int j = 0; j < k; ++j) x.insert(x.end(), one.begin(), one.end());
    const varnet::Context ctx = varnet::Context::eval_stacked(2, varnet::PredictMode::sample,
                                                              varnet::stream::kEnsembleBase, b);
    const varnet::ConstView<float> hz =
        host.forward(varnet::ConstView<float>(x.data(), varnet::Shape(k * b, 1, 20, 20)), ctx);
    const std::vector<float> want(hz.data, hz.data + hz.numel());
    const vc::DeviceBuffer<float> dx = varnet::test::upload(x);
    const std::vector<float> got =
        vc::to_host(dev.forward(dx.data(), k * b, ctx), size_t(k * b * 10), gpu().stream());
    VARNET_CHECK_CLOSE(got, want, kNetworkRtol);
    std::vector<float> separate;
    for (int j = 0; j < k; ++j) {
      const varnet::Context cj =
          varnet::Context::eval(2, varnet::PredictMode::sample, varnet::stream::kEnsembleBase + j);
      const std::vector<float> z =
          vc::to_host(dev.forward(dx.data(), b, cj), size_t(b * 10), gpu().stream());
      separate.insert(separate.end(), z.begin(), z.end());
    }
    VARNET_CHECK_CLOSE(got, separate, kNetworkRtol);
  }
}

TEST_CASE("cuda::evaluate_ensemble: any samples per pass, and refusals", "[cuda][network]") {
  const varnet::data::LabeledImages data = random_images(150, 28, 22);
  varnet::Network<float> host = lenet({1, 2, 3, 4}, 28, 6);
  for (size_t i = 0; i < host.state().size(); ++i) host.state()[i] = 0.5f + 0.001f * float(i % 7);
  vc::Network<float> dev(gpu(), host);
  const vc::DeviceData dd(gpu(), data);
  varnet::EnsembleOptions o;
  o.samples = 5;
  o.batch = 64;
  o.seed = 9;
  const varnet::EnsembleResult want = varnet::evaluate_ensemble(host, data, o);
  for (int per : {1, 2, 5, 0}) {
    INFO("samples per pass " << per);
    o.samples_per_pass = per;
    const varnet::EnsembleResult got = vc::evaluate_ensemble(dev, dd, o);
    CHECK(std::fabs(got.nll - want.nll) <= 1e-4 * std::fabs(want.nll));
    CHECK(std::fabs(got.accuracy - want.accuracy) <= 2.0 / 150);
  }
  // Bernoulli variance layers draw one weight tensor per pass: the ensemble runs one sample per
  // pass, and a stacked forward is refused.
  varnet::LeNet5Config cfg;
  cfg.variance_layers = {1, 2};
  cfg.variance.dist = varnet::WeightDist::bernoulli;
  varnet::Network<float> bern = varnet::make_lenet5<float>(cfg, varnet::Shape(1, 1, 28, 28), 2);
  vc::Network<float> dbern(gpu(), bern);
  o.samples_per_pass = 5;
  const varnet::EnsembleResult bw = varnet::evaluate_ensemble(bern, data, o);
  const varnet::EnsembleResult bg = vc::evaluate_ensemble(dbern, dd, o);
  CHECK(std::fabs(bg.nll - bw.nll) <= 1e-4 * std::fabs(bw.nll));
  const vc::DeviceBuffer<float> dx =
      varnet::test::upload(random_vector<float>(size_t(4 * 784), 3, 0.0, 1.0));
  const varnet::Context stacked = varnet::Context::eval_stacked(1, varnet::PredictMode::sample,
                                                                varnet::stream::kEnsembleBase, 2);
  CHECK_FALSE(dbern.can_stack_samples(stacked));
  std::string message;
  try {
    dbern.forward(dx.data(), 4, stacked);
  } catch (const varnet::Error& e) {
    message = e.what();
  }
  CHECK(message.find("layer 'conv1', which draws one weight tensor per pass") != std::string::npos);
}

TEST_CASE("an ensemble beside a graph trainer: its own slot, and a recapture when slots move",
          "[cuda][network]") {
  const int64_t side = 16, batch = 8, steps = 4;
  const varnet::data::LabeledImages data = random_images(64, side, 6);
  const vc::DeviceData dd(gpu(), data);
  std::vector<std::vector<float>> params;
  for (bool between : {false, true}) {
    INFO("evaluation between the epochs " << between);
    varnet::Network<float> twin = lenet({1, 3}, side, 4);
    vc::Network<float> dev(gpu(), twin);
    vc::TrainerOptions o;
    o.seed = 2;
    o.batch = batch;
    o.graph = true;
    vc::Trainer<float> t(dev, o);
    t.run_epoch(dd, varnet::data::shuffled_order(64, 2, 0), steps);
    CHECK(t.captures() == 1);
    if (between) {
      // A stacked ensemble (640 rows) runs in a slot of its own: no training buffer moves.
      const uint64_t before = dev.workspace_version();
      varnet::EnsembleOptions eo;
      eo.samples = 10;
      eo.batch = 64;
      vc::evaluate_ensemble(dev, dd, eo);
      CHECK(dev.workspace_version() == before);
      t.run_epoch(dd, varnet::data::shuffled_order(64, 2, 1), steps);
      CHECK(t.captures() == 1);
      // A larger batch on slot 0, the training slot, moves its buffers: the trainer captures
      // again instead of replaying into freed memory.
      const vc::DeviceBuffer<float> x =
          varnet::test::upload(random_vector<float>(size_t(640 * side * side), 7, 0.0, 1.0));
      dev.forward(x.data(), 640, varnet::Context::eval(1, varnet::PredictMode::sample, 0));
      CHECK(dev.workspace_version() != before);
      t.run_epoch(dd, varnet::data::shuffled_order(64, 2, 2), steps);
      CHECK(t.captures() == 2);
    } else {
      t.run_epoch(dd, varnet::data::shuffled_order(64, 2, 1), steps);
      t.run_epoch(dd, varnet::data::shuffled_order(64, 2, 2), steps);
    }
    params.push_back(dev.param_buffer().download(gpu().stream()));
  }
  // Evaluation changes no parameter or statistic: the same training, bit for bit.
  CHECK(params[0] == params[1]);
}

TEST_CASE("cuda::evaluate_ensemble runs a deterministic prefix once and matches the host",
          "[cuda][network]") {
  const varnet::data::LabeledImages data = random_images(100, 28, 23);
  varnet::Network<float> host = lenet({3, 4}, 28, 12);  // conv1 .. flatten: a prefix of 9 layers
  for (size_t i = 0; i < host.state().size(); ++i) host.state()[i] = 0.5f + 0.001f * float(i % 7);
  vc::Network<float> dev(gpu(), host);
  const varnet::Context base = varnet::Context::eval(1, varnet::PredictMode::sample, 0);
  CHECK(dev.first_noisy_layer(base) == host.first_noisy_layer(base));
  const vc::DeviceData dd(gpu(), data);
  for (bool batch_stats : {false, true})
    for (int per : {1, 3, 0}) {
      INFO("batch statistics " << batch_stats << ", samples per pass " << per);
      varnet::EnsembleOptions o;
      o.samples = 5;
      o.batch = 40;  // 100 = 2 full batches and a partial one
      o.seed = 3;
      o.batch_stats = batch_stats;
      o.samples_per_pass = per;
      const varnet::EnsembleResult want = varnet::evaluate_ensemble(host, data, o);
      const varnet::EnsembleResult got = vc::evaluate_ensemble(dev, dd, o);
      CHECK(std::fabs(got.nll - want.nll) <= 1e-4 * std::fabs(want.nll));
      CHECK(std::fabs(got.accuracy - want.accuracy) <= 2.0 / 100);
    }
  // forward_range: the prefix, then the rest, is the whole pass; a partial pass has no backward.
  const auto x = random_vector<float>(size_t(3 * 784), 4, 0.0, 1.0);
  const vc::DeviceBuffer<float> dx = varnet::test::upload(x);
  const varnet::Context ctx =
      varnet::Context::eval(2, varnet::PredictMode::sample, varnet::stream::kEnsembleBase);
  const std::vector<float> whole = vc::to_host(dev.forward(dx.data(), 3, ctx), 30, gpu().stream());
  const float* h = dev.forward_range(0, 9, dx.data(), 3, ctx, 1);
  const std::vector<float> split =
      vc::to_host(dev.forward_range(9, dev.layer_count(), h, 3, ctx, 2), 30, gpu().stream());
  CHECK(split == whole);
  const vc::DeviceBuffer<float> dy = varnet::test::upload(random_vector<float>(30, 5));
  CHECK_THROWS_WITH(dev.backward(dy.data(), ctx, 2),
                    Catch::Matchers::Contains("a forward pass over every layer on this slot"));
  // bn1 applies relu1 on the GPU: a range may not end or start between them.
  CHECK_THROWS_WITH(dev.forward_range(0, 2, dx.data(), 3, ctx, 1),
                    Catch::Matchers::Contains("keeps each batch norm with the ReLU fused into it"));
}
