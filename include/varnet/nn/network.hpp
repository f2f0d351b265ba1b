// Network: a sequence of layers composed at run time, owning the flat parameter, gradient and
// state buffers and the activations.
//
// Usage: add layers, build(input shape, seed) once (shapes are checked and parameters allocated
// and initialised there, before any data flows), then forward/backward. Activations live in
// workspace slots: slot k keeps what forward pass k needs for its backward, so the K-sample
// objective runs K forwards and then K backwards. A slot's buffers grow to the largest batch seen
// and are reused afterwards: a training step allocates nothing after the first.
#pragma once

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "varnet/core/aligned.hpp"
#include "varnet/core/context.hpp"
#include "varnet/core/error.hpp"
#include "varnet/core/parallel.hpp"
#include "varnet/core/params.hpp"
#include "varnet/core/tensor.hpp"
#include "varnet/layers/layer.hpp"

namespace varnet {

template <class T>
class Network {
 public:
  using Scalar = T;

  Network() = default;
  Network(Network&&) = default;
  Network& operator=(Network&&) = default;

  // Appends a layer. Without a name it is called "<kind><position>", e.g. "Conv2d0".
  Layer<T>& add(std::unique_ptr<Layer<T>> layer, std::string name = "") {
    check(!built_, "Network::add", "layers added before build()", "a built network");
    check(layer != nullptr, "Network::add", "a layer", "null");
    check(layers_.size() < 0xFFFF, "Network::add", "fewer than 65535 layers", layers_.size());
    layer->set_id(static_cast<uint32_t>(layers_.size()));
    layer->set_name(name.empty() ? layer->kind() + std::to_string(layers_.size()) : name);
    for (const auto& l : layers_)
      check(l->name() != layer->name(), "Network::add", "unique layer names",
            "'" + layer->name() + "' twice");
    layers_.push_back(std::move(layer));
    return *layers_.back();
  }
  template <class L, class... Args>
  L& emplace(std::string name, Args&&... args) {
    return static_cast<L&>(add(std::make_unique<L>(std::forward<Args>(args)...), std::move(name)));
  }

  // Checks that every layer accepts its input shape, then allocates and initialises parameters.
  // `input` is one sample's shape (its n is ignored).
  void build(Shape input, uint64_t seed) {
    check(!built_, "Network::build", "a network built once", "a second build()");
    check(!layers_.empty(), "Network::build", "at least one layer", "none");
    input_ = input.with_batch(1);
    check(input_.valid(), "Network::build", "an input shape with positive C, H, W", input);
    Shape s = input_;
    std::string from = "the network input";
    inputs_.clear();
    for (auto& l : layers_) {
      inputs_.push_back(s);
      try {
        s = l->output_shape(s);
      } catch (const Error& e) {
        throw Error(str("building the network: layer '", l->name(), "' cannot follow ", from,
                        ", which produces ", s, ": ", e.what()));
      }
      from = "layer '" + l->name() + "'";
      l->declare(table_);
    }
    output_ = s;
    params_.assign(static_cast<size_t>(table_.trainable_size()), T(0));
    grads_.assign(params_.size(), T(0));
    state_.assign(static_cast<size_t>(table_.state_size()), T(0));
    table_.initialize(seed, params_.data(), state_.data());
    for (auto& l : layers_) l->bind(params_.data(), grads_.data(), state_.data());
    built_ = true;
  }

  // Runs every layer; returns the output, valid until the next forward on this slot.
  ConstView<T> forward(ConstView<T> x, const Context& ctx, size_t slot = 0) {
    return forward_range(0, layers_.size(), x, ctx, slot);
  }

  // Runs layers [first, last) on x, which has layer `first`'s input shape (layer_input); returns
  // the last one's output (x itself for an empty range), valid until the next forward on this
  // slot. Only a pass over every layer can be backpropagated. Ensembles use it to run the layers
  // before the first noisy one once for all their samples (first_noisy_layer).
  ConstView<T> forward_range(size_t first, size_t last, ConstView<T> x, const Context& ctx,
                             size_t slot = 0) {
    const bool whole = first == 0 && last == layers_.size();
    const char* where = whole ? "Network::forward" : "Network::forward_range";
    check(built_, where, "a built network", "build() not called");
    check(first <= last && last <= layers_.size(), where, "a range of the network's layers",
          "layers ", first, "-", last, " of ", layers_.size());
    const Shape want = layer_input(first);
    if (x.shape.with_batch(1) != want || x.shape.n <= 0)
      fail(where, str("input of shape (N > 0, ", want.c, ", ", want.h, ", ", want.w, ")"),
           str("input of shape ", x.shape));
    if (ctx.rows_per_sample != 0) {
      check_stacked_batch(ctx, x.shape.n, where);
      if (const Layer<T>* l = unstackable_layer(ctx, first, last))
        fail(where, "layers that can stack noise samples in one batch",
             str("layer '", l->name(), "' (", l->describe(),
                 "), which draws one weight tensor per pass"));
    }
    Workspace& ws = workspace(slot);
    ws.input = x;
    ws.whole = whole;
    const int64_t n = x.shape.n;
    ConstView<T> in = x;
    for (size_t i = first; i < last; ++i) {
      Layer<T>& l = *layers_[i];
      // Shapes and buffer sizes follow from the batch size alone: worked out (with the layers'
      // checks, which build message strings) only when it changes, so that a step allocates
      // nothing.
      if (ws.batch[i] != n) {
        ws.acts[i].resize(l.output_shape(in.shape));
        ws.scratch[i].resize(static_cast<size_t>(l.scratch_size(in.shape)));
        ws.batch[i] = n;
      }
      l.forward(in, ws.acts[i].view(), ws.scratch[i].data(), ctx);
      in = ws.acts[i].view();
    }
    return in;
  }

  // One sample's input shape of layer i (i = size(): the network's output shape).
  Shape layer_input(size_t i) const {
    check(i <= layers_.size(), "Network::layer_input", "a layer index up to the layer count", i,
          " of ", layers_.size());
    return i < layers_.size() ? inputs_[i] : output_;
  }
  // The first layer that draws noise under ctx (size() when none does): the layers before it
  // give every noise sample the same output.
  size_t first_noisy_layer(const Context& ctx) const {
    for (size_t i = 0; i < layers_.size(); ++i)
      if (layers_[i]->stochastic() && layers_[i]->mode(ctx) == PredictMode::sample) return i;
    return layers_.size();
  }

  // Backpropagates dL/d(output) of the forward pass in `slot`: parameter gradients accumulate
  // into grads(). Returns dL/d(input) when `input_grad`, else an empty view.
  ConstView<T> backward(ConstView<T> dout, const Context& ctx, size_t slot = 0,
                        bool input_grad = false) {
    check(slot < workspaces_.size() && workspaces_[slot].input.data && workspaces_[slot].whole,
          "Network::backward", "a forward pass over every layer on this slot first",
          "no such pass on slot ", slot);
    Workspace& ws = workspaces_[slot];
    if (dout.shape != ws.acts.back().shape())
      fail("Network::backward", str("an output gradient of shape ", ws.acts.back().shape()),
           str(dout.shape));
    ConstView<T> dy = dout;
    for (size_t i = layers_.size(); i-- > 0;) {
      const ConstView<T> x = i == 0 ? ws.input : ws.acts[i - 1].view();
      TensorView<T> dx;
      if (i > 0 || input_grad) {
        // The buffers only grow: a std::vector growing back after a smaller layer zero-fills the
        // difference, megabytes per step on one core (benchmarks/NOTES.md section 8).
        AlignedVector<T>& buf = ws.grad[i % 2];
        if (buf.size() < static_cast<size_t>(x.numel())) buf.resize(static_cast<size_t>(x.numel()));
        dx = TensorView<T>(buf.data(), x.shape);
      }
      layers_[i]->backward(x, ws.acts[i].view(), dy, dx, ws.scratch[i].data(), ctx);
      dy = dx;
    }
    return input_grad ? dy : ConstView<T>();
  }

  // The first layer that draws noise under ctx but cannot stack samples in one batch (see
  // Layer::stacks_samples), or null.
  const Layer<T>* unstackable_layer(const Context& ctx, size_t first = 0,
                                    size_t last = size_t(-1)) const {
    for (size_t i = first; i < std::min(last, layers_.size()); ++i) {
      const Layer<T>& l = *layers_[i];
      if (l.stochastic() && l.mode(ctx) == PredictMode::sample && !l.stacks_samples()) return &l;
    }
    return nullptr;
  }
  // True when a forward pass under ctx (without rows_per_sample) may stack several noise samples
  // instead: evaluation with running statistics and every noisy layer able to.
  bool can_stack_samples(const Context& ctx) const {
    return !ctx.training && !ctx.batch_stats_in_eval && unstackable_layer(ctx) == nullptr;
  }

  void zero_grad() {
    parallel_ranges(int64_t(grads_.size()), [&](int64_t b, int64_t e) {
      std::fill(grads_.data() + b, grads_.data() + e, T(0));
    });
  }
  double kl() const {
    double s = 0;
    for (const auto& l : layers_) s += l->kl();
    return s;
  }
  // grads() += scale * dKL/dparams; returns the KL.
  double add_kl_gradient(T scale) {
    double s = 0;
    for (auto& l : layers_) s += l->add_kl_gradient(scale);
    return s;
  }

  // Sets the prediction mode of one layer (by name), or clears it with std::nullopt.
  void set_mode_override(const std::string& layer_name, std::optional<PredictMode> m) {
    layer(layer_name).set_mode_override(m);
  }

  size_t size() const { return layers_.size(); }
  Layer<T>& layer(size_t i) { return *layers_.at(i); }
  const Layer<T>& layer(size_t i) const { return *layers_.at(i); }
  Layer<T>& layer(const std::string& name) {
    for (auto& l : layers_)
      if (l->name() == name) return *l;
    fail("Network::layer", "the name of a layer in the network", "'" + name + "'");
  }
  bool built() const { return built_; }
  Shape input_shape() const { return input_; }
  Shape output_shape() const { return output_; }
  const ParamTable& table() const { return table_; }
  AlignedVector<T>& params() { return params_; }
  const AlignedVector<T>& params() const { return params_; }
  AlignedVector<T>& grads() { return grads_; }
  const AlignedVector<T>& grads() const { return grads_; }
  AlignedVector<T>& state() { return state_; }
  const AlignedVector<T>& state() const { return state_; }

  // Pointer to a named tensor (parameter or state).
  T* find(const std::string& name) {
    const ParamEntry* e = table_.find(name);
    check(e != nullptr, "Network::find", "the name of a parameter or state tensor",
          "'" + name + "'");
    return (e->trainable ? params_.data() : state_.data()) + e->offset;
  }

  // One line per layer with its output shape and parameter count.
  std::string summary() const {
    std::string s;
    Shape shape = input_;
    for (const auto& l : layers_) {
      shape = l->output_shape(shape);
      int64_t count = 0;
      for (const auto& e : table_.entries())
        if (e.layer == l->id() && e.trainable) count += e.shape.numel();
      s += str("  ", l->name(), ": ", l->describe(), " -> ", shape.per_sample(), " values (",
               shape.c, "x", shape.h, "x", shape.w, "), ", count, " parameters\n");
    }
    return s + str("  total: ", table_.trainable_size(), " parameters\n");
  }

 private:
  struct Workspace {
    ConstView<T> input;
    std::vector<Tensor<T>> acts;            // output of layer i
    std::vector<AlignedVector<T>> scratch;  // layer i's scratch
    AlignedVector<T> grad[2];               // ping-pong input gradients
    std::vector<int64_t> batch;             // the batch size layer i's buffers are sized for
    bool whole = false;                     // the last pass ran every layer (backward needs it)
  };
  Workspace& workspace(size_t slot) {
    if (workspaces_.size() <= slot) workspaces_.resize(slot + 1);
    Workspace& ws = workspaces_[slot];
    ws.acts.resize(layers_.size());
    ws.scratch.resize(layers_.size());
    ws.batch.resize(layers_.size(), -1);
    return ws;
  }

  std::vector<std::unique_ptr<Layer<T>>> layers_;
  ParamTable table_;
  AlignedVector<T> params_, grads_, state_;
  std::vector<Workspace> workspaces_;
  std::vector<Shape> inputs_;  // one sample's input shape of each layer
  Shape input_, output_;
  bool built_ = false;
};

}  // namespace varnet
