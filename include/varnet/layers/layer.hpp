// The layer contract. Every layer in varnet implements this interface; read it before writing one.
//
// - output_shape(in): the output shape for an input shape, or varnet::Error naming the layer, the
//   expected input and the one found. Networks call it at build time, before any data flows.
// - declare(table): registers parameters ("<name>.<tensor>") with their shapes and
//   initialisation. After the network allocates its flat buffers it calls bind() with the bases;
//   a layer reaches its tensors through the ParamRefs declare() returned.
// - scratch_size(in): elements of T the layer needs per forward call, kept by the network until
//   the matching backward (im2col columns, variances, ...). Layers hold no per-call state, so one
//   layer can serve several forward passes in flight (the K-sample objective).
// - forward(x, y, scratch, ctx): writes every element of y.
// - backward(x, y, dy, dx, scratch, ctx): parameter gradients ACCUMULATE (+=) into the gradient
//   buffer; dx is OVERWRITTEN. dx.data may be null when no input gradient is needed (the first
//   layer), and then the layer skips that work. x, y and scratch are exactly as forward left them.
// - kl(): the layer's regularizer (0 unless the layer has a prior); add_kl_gradient(scale) adds
//   scale * dKL/dparams to the gradient buffer and returns the KL (one pass for both: the
//   trainer calls it once per step).
// - weight_stats(threshold): weight counts, and log alpha statistics for layers that have one
//   (nn/sparsity.hpp turns them into per-layer reports and a compression ratio).
// - Noise: a layer draws from NoiseKey{ctx.seed, id(), ctx.step, ctx.stream} and element indices
//   into its output (or weight) tensor, never from a hidden generator. When the context stacks
//   samples (ctx.rows_per_sample > 0, evaluation only), row r draws as row r % R of sample r / R
//   with stream ctx.stream + r / R (batch_noise); stacks_samples() says whether a layer can.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "varnet/core/context.hpp"
#include "varnet/core/params.hpp"
#include "varnet/core/random.hpp"
#include "varnet/core/tensor.hpp"

namespace varnet {

// What a weight layer reports about its weights (biases excluded).
struct WeightStats {
  int64_t weights = 0;         // number of weights
  int64_t kept = 0;            // weights that survive pruning at the threshold
  bool has_log_alpha = false;  // false: the layer has no dropout rate (deterministic, variance)
  double mean_log_alpha = 0;   // mean over the weights of log alpha = log(sigma2 / theta^2)
  double fraction_above = 0;   // fraction of weights with log alpha above the threshold
  double kl = 0;               // the layer's KL term
};

// Stats of a layer whose n weights are all kept and have no dropout rate.
inline WeightStats unpruned_weights(int64_t n) {
  WeightStats s;
  s.weights = s.kept = n;
  return s;
}

template <class T>
class Layer {
 public:
  virtual ~Layer() = default;

  // The layer family, e.g. "VarianceConv2d".
  virtual std::string kind() const = 0;
  virtual Shape output_shape(const Shape& in) const = 0;
  virtual void declare(ParamTable& /*table*/) {}
  virtual int64_t scratch_size(const Shape& /*in*/) const { return 0; }
  virtual void forward(ConstView<T> x, TensorView<T> y, T* scratch, const Context& ctx) = 0;
  virtual void backward(ConstView<T> x, ConstView<T> y, ConstView<T> dy, TensorView<T> dx,
                        T* scratch, const Context& ctx) = 0;
  virtual double kl() const { return 0.0; }
  virtual double add_kl_gradient(T /*scale*/) { return 0.0; }
  virtual WeightStats weight_stats(double /*threshold*/) const { return {}; }
  // True when the layer draws noise in sample mode (its output depends on ctx.stream).
  virtual bool stochastic() const { return false; }
  // True when one batch may stack several noise samples (Context::rows_per_sample): layers
  // without noise, and those that draw their noise per output element (the LRT, dropout masks).
  // Layers that sample one weight tensor per pass cannot: it would be shared by every sample.
  virtual bool stacks_samples() const { return !stochastic(); }
  // A one-line description of the configuration, for summaries.
  virtual std::string describe() const { return kind(); }

  const std::string& name() const { return name_; }
  void set_name(std::string n) { name_ = std::move(n); }
  uint32_t id() const { return id_; }
  void set_id(uint32_t id) { id_ = id; }

  // Per-layer prediction mode; without one the network-wide ctx.mode applies.
  void set_mode_override(std::optional<PredictMode> m) { mode_override_ = m; }
  std::optional<PredictMode> mode_override() const { return mode_override_; }
  PredictMode mode(const Context& ctx) const { return mode_override_.value_or(ctx.mode); }

  void bind(T* params, T* grads, T* state) {
    params_ = params;
    grads_ = grads;
    state_ = state;
  }

 protected:
  T* param(const ParamRef& r) const { return (r.trainable ? params_ : state_) + r.offset; }
  T* grad(const ParamRef& r) const { return grads_ + r.offset; }
  NoiseKey noise_key(const Context& ctx) const {
    return NoiseKey{ctx.seed, id_, ctx.step, ctx.stream};
  }
  // The key with the batch's stacking of samples (row-wise noise).
  BatchNoise batch_noise(const Context& ctx) const {
    return BatchNoise{noise_key(ctx), ctx.rows_per_sample};
  }
  // "<kind> '<name>'" for error messages.
  std::string where() const { return kind() + " '" + name_ + "'"; }
  // Throws unless the input has the expected per-sample shape.
  void expect_input(const Shape& in, int64_t c, int64_t h, int64_t w) const {
    check(in.c == c && in.h == h && in.w == w, where(),
          str("input of shape (N, ", c, ", ", h, ", ", w, ")"), "input of shape ", in);
  }

 private:
  std::string name_;
  uint32_t id_ = 0;
  std::optional<PredictMode> mode_override_;
  T* params_ = nullptr;
  T* grads_ = nullptr;
  T* state_ = nullptr;
};

}  // namespace varnet
