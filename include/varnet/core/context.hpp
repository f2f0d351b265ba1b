// What a forward or backward call needs besides tensors: training or evaluation, the prediction
// mode, batch-norm statistics, and the coordinates of the noise.
#pragma once

#include <cstdint>
#include <string>

#include "varnet/core/error.hpp"

namespace varnet {

// sample: random weights (and dropout masks) are drawn. mean: every random weight is replaced by
// its expectation (the weight scaling rule); a variance layer then outputs its bias only.
enum class PredictMode { sample, mean };

inline const char* to_string(PredictMode m) {
  return m == PredictMode::sample ? "sample" : "mean";
}
inline PredictMode parse_predict_mode(const std::string& s) {
  if (s == "sample") return PredictMode::sample;
  if (s == "mean") return PredictMode::mean;
  fail("prediction mode", "'sample' or 'mean'", "'" + s + "'");
}

struct Context {
  bool training = true;                    // batch norm uses and updates batch statistics
  PredictMode mode = PredictMode::sample;  // network-wide; a layer may override it
  bool batch_stats_in_eval = false;  // batch norm: use the batch's own statistics in evaluation
  uint64_t seed = 0;
  uint32_t step = 0;    // optimisation step: new noise every step
  uint32_t stream = 0;  // sample index within a step (see namespace stream)
  // > 0: the batch stacks noise samples of this many rows each, sample k drawing from stream
  // `stream + k` (BatchNoise in core/random.hpp); evaluation only. 0: one sample per batch.
  int64_t rows_per_sample = 0;

  static Context train(uint64_t seed, uint32_t step, uint32_t sample = 0) {
    Context c;
    c.seed = seed;
    c.step = step;
    c.stream = sample;
    return c;
  }
  static Context eval(uint64_t seed, PredictMode mode, uint32_t stream_id,
                      bool batch_stats = false) {
    Context c;
    c.training = false;
    c.mode = mode;
    c.batch_stats_in_eval = batch_stats;
    c.seed = seed;
    c.stream = stream_id;
    return c;
  }
  // `samples` evaluation samples stacked in one batch of samples * rows rows: sample k is the
  // k-th block of `rows` rows and draws the noise of eval(seed, mode, first_stream + k, ...).
  static Context eval_stacked(uint64_t seed, PredictMode mode, uint32_t first_stream,
                              int64_t rows) {
    Context c = eval(seed, mode, first_stream);
    c.rows_per_sample = rows;
    return c;
  }
};

// Throws unless a batch of n rows may stack samples as ctx.rows_per_sample says (no-op when it
// is 0): evaluation without batch statistics (those would mix the samples), whole samples, and
// streams that stay below 65536.
inline void check_stacked_batch(const Context& ctx, int64_t n, const char* where) {
  if (ctx.rows_per_sample == 0) return;
  check(ctx.rows_per_sample > 0, where, "rows per stacked sample > 0 (or 0: not stacked)",
        ctx.rows_per_sample);
  check(!ctx.training && !ctx.batch_stats_in_eval, where,
        "stacked samples in evaluation with running batch-norm statistics",
        ctx.training ? "a training context" : "batch statistics in evaluation");
  check(n % ctx.rows_per_sample == 0, where,
        str("a batch of whole stacked samples of ", ctx.rows_per_sample, " rows"), n, " rows");
  check(uint64_t(ctx.stream) + uint64_t(n / ctx.rows_per_sample) <= 0x10000u, where,
        "stacked samples' streams below 65536", "stream ", ctx.stream, " + ",
        n / ctx.rows_per_sample, " samples");
}

}  // namespace varnet
