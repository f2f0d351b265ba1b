// Resuming and checkpointing a training run of `epochs` epochs of `steps_per_epoch` steps, as the
// training examples (lenet5, vgg) do it. All noise is keyed by the step counter and the data
// order by the epoch, so the step, the epoch and the step within it are the whole state of a run
// besides its tensors; the epoch's running loss and correct count keep its progress line exact.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>

#include "cli.hpp"
#include "varnet/core/error.hpp"
#include "varnet/nn/checkpoint.hpp"

namespace varnet::examples {

using RunConfig = std::map<std::string, std::string>;

// --checkpoint PATH, checked before any work: its directory must exist, and an earlier run's
// checkpoint at PATH or PATH.prev is never replaced silently. They may exist only when this run
// resumes from one of them (--resume PATH or PATH.prev) or `overwrite` (--overwrite) is given.
inline void check_checkpoint_path(const std::string& checkpoint, const std::string& resume,
                                  bool overwrite) {
  if (checkpoint.empty()) return;
  namespace fs = std::filesystem;
  const fs::path p(checkpoint), prev(previous_checkpoint_path(checkpoint));
  cli::check_in_existing_directory("--checkpoint", checkpoint);
  if (overwrite) return;
  std::error_code ec;
  const auto same = [&](const fs::path& a) {
    return !resume.empty() && fs::exists(resume, ec) && fs::exists(a, ec) &&
           fs::equivalent(a, resume, ec);
  };
  const bool resuming_it = same(p) || same(prev);
  for (const fs::path& f : {p, prev})
    check(resuming_it || !fs::exists(f, ec), "--checkpoint",
          "a path without an earlier checkpoint (or --resume it, or --overwrite)",
          "an existing file '" + f.string() + "'");
}

// Where a run starts: epoch, step within it, and that epoch's loss sum and correct count so far.
struct RunStart {
  int64_t epoch = 0, step = 0;
  double loss = 0;
  int64_t correct = 0;
};

// Loads the checkpoint at `path` into net, optimiser and trainer (refused when `config` or
// `seed` differ from the saved run's, or its position lies outside this run) and says where the
// run goes on.
template <class Net, class Optimizer, class Trainer>
RunStart resume_run(const std::string& path, Net& net, Optimizer& opt, Trainer& trainer,
                    const RunConfig& config, uint64_t seed, int64_t epochs,
                    int64_t steps_per_epoch) {
  std::string note;
  const CheckpointInfo info = load_checkpoint(path, net, opt, config, seed, &note);
  if (!note.empty())
    std::cout << "resume: passed over " << note << "; read " << previous_checkpoint_path(path)
              << "\n";
  // Epoch `epochs` exists only at its step 0: the end of training.
  const bool inside = info.epoch < epochs || (info.epoch == epochs && info.step_in_epoch == 0);
  check(inside && info.step_in_epoch < steps_per_epoch &&
            info.step == uint64_t(info.epoch * steps_per_epoch + info.step_in_epoch),
        path,
        str("a position within ", epochs, epochs == 1 ? " epoch of " : " epochs of ",
            steps_per_epoch, " steps"),
        "step ", info.step, " (epoch ", info.epoch, ", step ", info.step_in_epoch, ")");
  const auto at = [&](const char* key) {
    return info.extra.count(key) ? info.extra.at(key) : std::string("0");
  };
  RunStart s;
  s.loss = std::strtod(at("epoch_loss").c_str(), nullptr);
  s.correct = std::strtoll(at("epoch_correct").c_str(), nullptr, 10);
  trainer.set_steps(uint32_t(info.step));
  s.epoch = info.epoch;
  s.step = info.step_in_epoch;
  if (s.epoch >= epochs)
    std::cout << "training already complete (step " << info.step << " of "
              << epochs * steps_per_epoch << "): evaluating\n";
  else
    std::cout << "resumed at epoch " << s.epoch + 1 << ", step " << s.step << " of "
              << steps_per_epoch << " (training step " << info.step << ")\n";
  return s;
}

// Saves where the run stands after `done` steps of epoch e, with that epoch's sums so far.
template <class Net, class Optimizer, class Trainer>
void save_run(const std::string& path, Net& net, Optimizer& opt, const Trainer& trainer,
              const RunConfig& config, uint64_t seed, int64_t steps_per_epoch, int64_t e,
              int64_t done, double loss, int64_t correct) {
  if (done == steps_per_epoch) e += 1, done = 0, loss = 0, correct = 0;
  CheckpointInfo info;
  info.step = trainer.steps();
  info.epoch = e;
  info.step_in_epoch = done;
  info.seed = seed;
  info.config = config;
  info.extra = {{"epoch_loss", detail::exact_text(loss)},
                {"epoch_correct", std::to_string(correct)}};
  save_checkpoint(path, net, opt, info);
}

}  // namespace varnet::examples
