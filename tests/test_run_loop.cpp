// The training examples' run bookkeeping (examples/common/resumable.hpp, run_loop.hpp) on its
// own: which --checkpoint paths may be written, where a saved run resumes (epoch, step, and the
// epoch's sums for its progress line), and which ensembles the final report evaluates. The
// programs' CLI tests (test_resume_cli, test_vgg_cli) run them end to end; these reach the cases
// one by one.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "../examples/common/resumable.hpp"
#include "../examples/common/run_loop.hpp"
#include "../examples/common/training.hpp"
#include "catch.hpp"
#include "errors.hpp"
#include "mnist_fixture.hpp"
#include "varnet/varnet.hpp"

namespace fs = std::filesystem;
using varnet::test::error_of;
using varnet::test::has;

namespace {

using Net = varnet::Network<float>;
using Opt = varnet::Adam<float>;
using Train = varnet::Trainer<float, Opt>;

Net small_net(uint64_t seed) {
  Net net;
  net.emplace<varnet::VarianceLinear<float>>("var1", 4, 6, varnet::VarianceOptions{});
  net.emplace<varnet::ReLU<float>>("relu");
  net.emplace<varnet::Linear<float>>("out", 6, 3);
  net.build(varnet::Shape(1, 4), seed);
  return net;
}

// `steps` training steps on a fixed batch.
void train(Train& t, int steps) {
  varnet::Tensor<float> x(varnet::Shape(6, 4));
  std::vector<int32_t> y = {0, 1, 2, 0, 1, 2};
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = float(i % 5) * 0.25f;
  for (int i = 0; i < steps; ++i) t.step(x.view(), y.data(), 1e-2);
}

// n items of 4 features, classes 0-2 in turn.
varnet::data::LabeledImages generated(int n) {
  varnet::data::LabeledImages d;
  d.images = varnet::Tensor<float>(varnet::Shape(n, 4));
  for (int64_t i = 0; i < d.images.numel(); ++i) d.images.data()[i] = float(i % 7) * 0.1f;
  for (int i = 0; i < n; ++i) d.labels.push_back(i % 3);
  d.classes = 3;
  d.source = "generated";
  return d;
}

void touch(const fs::path& p) {
  std::ofstream(p) << "an earlier checkpoint\n";
}

void check_start(const varnet::examples::RunStart& s, int64_t epoch, int64_t step, double loss,
                 int64_t correct) {
  CHECK(s.epoch == epoch);
  CHECK(s.step == step);
  CHECK(s.loss == loss);
  CHECK(s.correct == correct);
}

std::string checkpoint_error(const fs::path& ckpt, const std::string& resume, bool overwrite) {
  return error_of(
      [&] { varnet::examples::check_checkpoint_path(ckpt.string(), resume, overwrite); });
}

}  // namespace

TEST_CASE("check_checkpoint_path: an earlier checkpoint is replaced only when resumed or asked",
          "[cli][checkpoint]") {
  fixture::TempDir dir("varnet_run_loop_paths_");
  const fs::path ckpt = dir.path / "run.ckpt", prev = dir.path / "run.ckpt.prev";
  const std::string refused =
      "--checkpoint: expected a path without an earlier checkpoint (or --resume it, or "
      "--overwrite), found an existing file '";

  CHECK(checkpoint_error("", "", false).empty());  // no --checkpoint
  CHECK(checkpoint_error(ckpt, "", false).empty());
  CHECK(has(checkpoint_error(dir.path / "nowhere" / "run.ckpt", "", false),
            "--checkpoint: expected a path in an existing directory"));

  SECTION("PATH.prev alone is an earlier run's too") {
    touch(prev);
    CHECK(has(checkpoint_error(ckpt, "", false), refused + prev.string() + "'"));
    CHECK(checkpoint_error(ckpt, "", true).empty());
    CHECK(checkpoint_error(ckpt, prev.string(), false).empty());  // resuming it
  }
  SECTION("PATH and PATH.prev") {
    touch(ckpt);
    touch(prev);
    CHECK(has(checkpoint_error(ckpt, "", false), refused + ckpt.string() + "'"));
    CHECK(checkpoint_error(ckpt, "", true).empty());
    // Resuming either is resuming this run: the recovery after a damaged PATH goes on from
    // PATH.prev and writes PATH again.
    CHECK(checkpoint_error(ckpt, ckpt.string(), false).empty());
    CHECK(checkpoint_error(ckpt, prev.string(), false).empty());
    // Resuming another file, or one that is not there, is not.
    const fs::path copy = dir.path / "copy.ckpt";
    fs::copy_file(ckpt, copy);
    CHECK(has(checkpoint_error(ckpt, copy.string(), false), refused));
    CHECK(has(checkpoint_error(ckpt, (dir.path / "none.ckpt").string(), false), refused));
  }
}

TEST_CASE("save_run and resume_run: the position and the epoch's sums come back",
          "[cli][checkpoint]") {
  fixture::TempDir dir("varnet_run_loop_resume_");
  const std::string path = (dir.path / "run.ckpt").string();
  const varnet::examples::RunConfig config = {{"model", "small"}, {"batch", "6"}};
  const int64_t steps_per_epoch = 10, epochs = 3;
  Net net = small_net(1);
  Opt adam(net.params().size());
  Train trainer(net, adam, 1, 5);

  const auto resumed = [&](int64_t run_epochs) {
    Net fresh = small_net(2);
    Opt fresh_adam(fresh.params().size());
    Train fresh_trainer(fresh, fresh_adam, 1, 5);
    const auto start = varnet::examples::resume_run(path, fresh, fresh_adam, fresh_trainer, config,
                                                    5, run_epochs, steps_per_epoch);
    CHECK(fresh_trainer.steps() == trainer.steps());
    CHECK(fresh.params() == net.params());
    return start;
  };
  // Trains `steps` steps, then saves the run as after `done` steps of epoch e with these sums.
  const auto save_after = [&](int steps, int64_t e, int64_t done, double loss, int64_t correct) {
    train(trainer, steps);
    varnet::examples::save_run(path, net, adam, trainer, config, 5, steps_per_epoch, e, done, loss,
                               correct);
  };

  SECTION("inside an epoch: its step, loss sum and correct count so far") {
    save_after(14, 1, 4, 2.75, 17);  // epoch 1, step 4
    check_start(resumed(epochs), 1, 4, 2.75, 17);
    // A shorter run does not reach that position.
    const std::string e = error_of([&] { resumed(1); });
    CHECK(
        has(e, "expected a position within 1 epoch of 10 steps, found step 14 (epoch 1, step 4)"));
  }
  SECTION("at an epoch's end: the next epoch, from its start, with fresh sums") {
    save_after(20, 1, 10, 6.5, 40);
    check_start(resumed(epochs), 2, 0, 0, 0);
    CHECK(resumed(2).epoch == 2);  // a finished run of 2 epochs: only evaluation is left
  }
  SECTION("another run's settings or seed are refused") {
    save_after(3, 0, 3, 1, 2);
    Net other = small_net(2);
    Opt other_adam(other.params().size());
    Train other_trainer(other, other_adam, 1, 5);
    auto wider = config;
    wider["batch"] = "12";
    CHECK(has(error_of([&] {
                varnet::examples::resume_run(path, other, other_adam, other_trainer, wider, 5,
                                             epochs, steps_per_epoch);
              }),
              "batch \"6\" in the checkpoint, \"12\" in this run"));
    CHECK(has(error_of([&] {
                varnet::examples::resume_run(path, other, other_adam, other_trainer, config, 6,
                                             epochs, steps_per_epoch);
              }),
              "seed 5 in the checkpoint, 6 in this run"));
  }
}

TEST_CASE("train_resumable checkpoints every N training steps and at the end",
          "[cli][checkpoint]") {
  fixture::TempDir dir("varnet_run_loop_train_");
  const varnet::data::LabeledImages train = generated(12);  // 3 steps of 4 per epoch
  Net net = small_net(1);
  Opt adam(net.params().size());
  Train trainer(net, adam, 1, 5);
  varnet::examples::LoopSettings s;
  s.epochs = 2;
  s.batch = 4;
  s.seed = 5;
  s.checkpoint = (dir.path / "run.ckpt").string();
  s.checkpoint_every = 4;
  int64_t prepared = 0;
  varnet::examples::train_resumable(
      net, adam, trainer, train, {{"model", "small"}}, varnet::examples::RunStart{}, s,
      varnet::LinearDecay{1e-2, 6}, varnet::KlWarmup{},
      [&](varnet::Tensor<float>&, const std::vector<int64_t>&, int64_t, uint32_t) { ++prepared; });
  CHECK(prepared == 6);
  CHECK(trainer.steps() == 6u);
  // Training step 4 is epoch 1's first; the end is epoch 2 (of 2) at step 0: done.
  const varnet::CheckpointInfo end = varnet::read_checkpoint(s.checkpoint).info;
  CHECK(end.step == 6u);
  CHECK(end.epoch == 2);
  CHECK(end.step_in_epoch == 0);
  const varnet::CheckpointInfo before =
      varnet::read_checkpoint(varnet::previous_checkpoint_path(s.checkpoint)).info;
  CHECK(before.step == 4u);
  CHECK(before.epoch == 1);
  CHECK(before.step_in_epoch == 1);
}

TEST_CASE("evaluate_report_by: mean propagation, each ensemble size, and batch statistics",
          "[cli]") {
  std::vector<varnet::EnsembleOptions> calls;
  const auto fake = [&](const varnet::EnsembleOptions& o) {
    calls.push_back(o);
    varnet::EnsembleResult r;
    r.accuracy = 0.5 + 0.001 * o.samples + (o.mode == varnet::PredictMode::mean ? 0.3 : 0) +
                 (o.batch_stats ? 0.2 : 0);
    r.nll = 1.0 / o.samples;
    r.samples = o.samples;
    return r;
  };
  const std::string json = varnet::examples::evaluate_report_by(fake, {1, 4}, 250, 77);
  REQUIRE(calls.size() == 4);
  CHECK(calls[0].mode == varnet::PredictMode::mean);
  CHECK(calls[0].samples == 1);
  CHECK_FALSE(calls[0].batch_stats);
  for (size_t i : {size_t(1), size_t(2)}) {
    CHECK(calls[i].mode == varnet::PredictMode::sample);
    CHECK_FALSE(calls[i].batch_stats);
  }
  CHECK(calls[1].samples == 1);
  CHECK(calls[2].samples == 4);
  CHECK(calls[3].mode == varnet::PredictMode::sample);
  CHECK(calls[3].samples == 10);
  CHECK(calls[3].batch_stats);
  for (const auto& o : calls) {
    CHECK(o.batch == 250);
    CHECK(o.seed == 77);
  }
  CHECK(has(json, "\"test_acc_mean\":0.801,"));
  CHECK(has(json, "\"test_acc_1\":0.501,\"test_nll_1\":1,"));
  CHECK(has(json, "\"test_acc_4\":0.504,\"test_nll_4\":0.25,"));
  CHECK(has(json, "\"test_acc_10_batchstats\":0.71,\"test_nll_10_batchstats\":0.1"));
}

TEST_CASE("train_epoch: whole batches only, and the KL weight beta(step) / N", "[cli]") {
  const varnet::data::LabeledImages train = generated(14);  // 3 whole batches of 4
  Net net = small_net(1);
  Opt adam(net.params().size());
  Train trainer(net, adam, 1, 5);
  const varnet::KlWarmup beta{0.5, 4};
  const varnet::examples::EpochResult r =
      varnet::examples::train_epoch(trainer, train, 5, 0, 4, varnet::LinearDecay{1e-2, 6}, &beta);
  CHECK(trainer.steps() == 3u);
  CHECK(r.images == 12);
  CHECK(r.accuracy * 12 == Approx(std::round(r.accuracy * 12)));
  // The weight of the last step (step 2 of a 4-step warm-up to 0.5), over N = 14.
  CHECK(trainer.kl_weight() == Approx(0.5 * 2.0 / 4.0 / 14.0));
  // A second epoch goes on from the trainer's step count: the warm-up ends at step 4.
  varnet::examples::train_epoch(trainer, train, 5, 1, 4, varnet::LinearDecay{1e-2, 6}, &beta);
  CHECK(trainer.kl_weight() == Approx(0.5 / 14.0));
  const std::string big = error_of([&] {
    varnet::examples::train_epoch(trainer, train, 5, 2, 15, varnet::LinearDecay{1e-2, 6}, &beta);
  });
  CHECK(has(big, "train_epoch: expected a batch size of at most 14, found 15"));
}
