// No device allocation after the first training step (docs/gpu.md, "No allocation after the first
// step"), eagerly and with a CUDA graph: LeNet-5 with variance layers and batch norm (one and two
// samples per step), and LeNet-5 built from the baselines' layers (sparse VD, binary dropout,
// variational dropout) with the examples' KL warm-up, which adds the KL's buffers and launches.
//
// What is asserted, per network and mode:
// - the first step (a run_epoch of one step) allocates: the trainer's order buffer and the
//   network's workspaces are sized then, so the counter is seen to count DeviceBuffer growth;
// - from after that step to the end, cuda::device_allocations() (every cudaMalloc the library
//   makes: DeviceBuffer growth and GpuContext's cuBLAS workspace) and the network's
//   workspace_version() do not change, over the rest of the first epoch (a shorter order, as the
//   examples pass at a checkpoint cut) and three more epochs (a new order each, uploaded into the
//   same buffer);
// - with a graph, the trainer captures once (at step 2) and replays that graph for every later
//   step. The memory cudaGraphInstantiate takes for the executable graph belongs to the CUDA
//   runtime and is not counted. A DeviceBuffer growing inside the capture would not get that far:
//   cudaMalloc is refused during a capture, so the capture throws.
// Had a step any DeviceBuffer allocation of its own (a temporary buffer, a buffer that grows
// every step, a workspace resized for another batch), the eager steps after the first would move
// the counter.
#include <cstdint>
#include <vector>

#include "parity.hpp"
#include "varnet/cuda/network.hpp"
#include "varnet/cuda/trainer.hpp"

using varnet::test::gpu;
using varnet::test::random_images;
namespace vc = varnet::cuda;

namespace {

constexpr int64_t kSide = 16, kBatch = 8, kItems = 64, kSteps = kItems / kBatch, kEpochs = 4;

varnet::Network<float> lenet(varnet::LeNet5Config cfg, uint64_t seed) {
  cfg.classes = 10;
  return varnet::make_lenet5<float>(cfg, varnet::Shape(1, 1, kSide, kSide), seed);
}

// Trains `host`'s GPU twin for kEpochs epochs and checks the assertions above.
void check_no_allocation_after_first_step(const varnet::Network<float>& host,
                                          vc::TrainerOptions o) {
  const varnet::data::LabeledImages data = random_images(kItems, kSide, 5);
  const vc::DeviceData dd(gpu(), data);
  vc::Network<float> dev(gpu(), host);
  o.batch = kBatch;
  o.lr = varnet::LinearDecay{1e-3, kEpochs * kSteps};
  vc::Trainer<float> t(dev, o);
  CHECK(dev.has_kl() == (o.kl.beta.beta != 0));  // the KL path runs where it should

  const std::vector<int64_t> order = varnet::data::shuffled_order(kItems, o.seed, 0);
  const uint64_t before_first = vc::device_allocations();
  t.run_epoch(dd, order, 1, 0);
  const uint64_t allocations = vc::device_allocations();
  const uint64_t version = dev.workspace_version();
  CHECK(allocations > before_first);  // the order buffer and the workspaces

  // The rest of epoch 0 (the examples' cut at a checkpoint), then whole epochs.
  const std::vector<int64_t> rest(order.begin() + kBatch, order.end());
  t.run_epoch(dd, rest, kSteps - 1, 0);
  CHECK(vc::device_allocations() == allocations);
  CHECK(dev.workspace_version() == version);
  for (uint32_t e = 1; e < uint32_t(kEpochs); ++e) {
    const vc::GpuEpochResult r =
        t.run_epoch(dd, varnet::data::shuffled_order(kItems, o.seed, e), kSteps, e);
    INFO("epoch " << e);
    CHECK(r.images == kSteps * kBatch);
    CHECK(vc::device_allocations() == allocations);
    CHECK(dev.workspace_version() == version);
  }
  CHECK(t.steps() == uint32_t(kEpochs * kSteps));
  CHECK(t.captures() == (o.graph ? 1 : 0));
}

}  // namespace

TEST_CASE("cuda::Trainer allocates no device memory after the first step", "[cuda][alloc]") {
  const bool graph = GENERATE(false, true);
  INFO("graph " << graph);

  SECTION("LeNet-5 with variance layers and batch norm, one and two samples") {
    varnet::LeNet5Config cfg;
    cfg.variance_layers = {1, 3};
    const varnet::Network<float> host = lenet(cfg, 9);
    for (int samples : {1, 2}) {
      INFO(samples << " samples per step");
      vc::TrainerOptions o = varnet::test::trainer_options(13, kBatch, {}, graph);
      o.samples = samples;
      check_no_allocation_after_first_step(host, o);
    }
  }

  SECTION("LeNet-5 with sparse VD, binary dropout and variational dropout, KL warm-up") {
    varnet::LeNet5Config cfg;
    cfg.kinds = {varnet::LayerKind::svdo, varnet::LayerKind::dropout, varnet::LayerKind::vdo,
                 varnet::LayerKind::svdo};
    const varnet::Network<float> host = lenet(cfg, 9);
    vc::TrainerOptions o = varnet::test::trainer_options(13, kBatch, {}, graph);
    // Weight 0 at step 0, growing until step 7, then beta / N: the KL launches every step.
    o.kl = vc::KlSchedule{varnet::KlWarmup{0.5, 7}, double(kItems)};
    check_no_allocation_after_first_step(host, o);
  }
}
