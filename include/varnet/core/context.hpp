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
};

}  // namespace varnet
