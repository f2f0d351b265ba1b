// cuda::Network: the GPU twin of a built varnet::Network. It mirrors the host network layer by
// layer onto the GPU layers (cuda/layers.hpp, cuda/variance_layers.hpp,
// cuda/mean_field_layers.hpp), with the same flat parameter, gradient and state layout, so that
//   - the host network stays the model of record: build it with the usual builders (make_lenet5,
//     make_vgg), upload() its values, train on the GPU, download() them back to evaluate on the
//     CPU, save or checkpoint;
//   - the GPU draws the same noise as the CPU (same layer ids, same NoiseKey), and the parity
//     tests compare the two networks' outputs and gradients directly.
// Supported layers: every layer of the library, that is Conv2d, Linear, BatchNorm, ReLU,
// LeakyReLU, Tanh, MaxPool2d, Flatten, VarianceConv2d / VarianceLinear (Gaussian, Bernoulli or
// uniform weights), the baselines' GaussianDropout*, VariationalDropout* and SparseVD* (Linear
// and Conv2d) and Dropout. Any other layer (a user's own Layer subclass) is refused at
// construction with its name. The KL term of the variational-dropout layers is computed on the
// device (add_kl_gradient), for cuda::Trainer's kl_weight. Per-layer prediction modes
// (Layer::mode_override) are copied when the mirror is made. A ReLU (only a ReLU, not a
// LeakyReLU) right after a BatchNorm is fused into it (the batch norm's kernels apply it, both
// ways).
//
// Activations live in workspace slots as on the host (slot k: sample k of the K-sample
// objective); a slot's buffers grow to the largest batch seen and are reused, so a training step
// allocates nothing after the first. Everything runs on the GpuContext's stream without waiting.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "varnet/core/context.hpp"
#include "varnet/core/tensor.hpp"
#include "varnet/layers/activations.hpp"
#include "varnet/layers/batchnorm.hpp"
#include "varnet/layers/conv2d.hpp"
#include "varnet/layers/dropout.hpp"
#include "varnet/layers/flatten.hpp"
#include "varnet/layers/linear.hpp"
#include "varnet/layers/mean_field.hpp"
#include "varnet/layers/pooling.hpp"
#include "varnet/layers/variance.hpp"
#include "varnet/layers/weight_posteriors.hpp"
#include "varnet/nn/network.hpp"

#include "varnet/cuda/device_buffer.hpp"
#include "varnet/cuda/handle.hpp"
#include "varnet/cuda/layers.hpp"
#include "varnet/cuda/mean_field_layers.hpp"
#include "varnet/cuda/variance_layers.hpp"

namespace varnet::cuda {

namespace detail {

// What one layer call sees: the stream, the host context, the base pointers of the flat buffers
// and, for graph replays, the device word holding the step.
template <class T>
struct Pass {
  GpuContext& gpu;
  const Context& ctx;
  T* params;
  T* grads;
  T* state;
  const uint32_t* device_step;
};

// Offsets of a layer's tensors in the flat buffers (-1: absent).
struct Slot {
  int64_t offset = -1;
  bool trainable = true;
  template <class T>
  T* at(const Pass<T>& p) const {
    return offset < 0 ? nullptr : (trainable ? p.params : p.state) + offset;
  }
  template <class T>
  T* grad(const Pass<T>& p) const {
    return offset < 0 || !trainable ? nullptr : p.grads + offset;
  }
};

template <class T>
class GpuLayer {
 public:
  GpuLayer(const Layer<T>& host)
      : id_(host.id()),
        mode_(host.mode_override()),
        stochastic_(host.stochastic()),
        unstackable_(host.stochastic() && !host.stacks_samples()) {}
  virtual ~GpuLayer() = default;
  virtual int64_t scratch_size(const Shape& /*in*/) const { return 0; }
  // True when the output is the input itself (Flatten): no buffer, no work.
  virtual bool passthrough() const { return false; }
  virtual void forward(const Pass<T>& p, const Shape& in, const T* x, T* y, T* scratch) = 0;
  // dx may be null (the first layer).
  virtual void backward(const Pass<T>& p, const Shape& in, const T* x, const T* y, const T* dy,
                        T* dx, T* scratch) = 0;
  // True when the layer has a KL term; then add_kl_gradient adds it to *kl_sum and, with a
  // scale (a device value), scale * dKL/dparams to the gradients (partial: kPosteriorMaxBlocks
  // doubles of workspace).
  virtual bool has_kl() const { return false; }
  virtual void add_kl_gradient(const Pass<T>& /*p*/, const T* /*scale*/, double* /*kl_sum*/,
                               double* /*partial*/) {}
  // True when the layer draws noise under c but cannot stack samples (Layer::stacks_samples).
  bool refuses_stacking(const Context& c) const {
    return unstackable_ && mode(c) == PredictMode::sample;
  }
  // True when the layer draws noise under c (Layer::stochastic in sample mode).
  bool noisy(const Context& c) const { return stochastic_ && mode(c) == PredictMode::sample; }

 protected:
  PredictMode mode(const Context& c) const { return mode_.value_or(c.mode); }
  BatchNoise noise(const Context& c) const { return layer_noise(c, id_); }
  uint32_t id_;
  std::optional<PredictMode> mode_;
  bool stochastic_;
  bool unstackable_;
};

inline Slot find_slot(const ParamTable& t, const std::string& name, bool required = true) {
  const ParamEntry* e = t.find(name);
  check(e != nullptr || !required, "cuda::Network", "a tensor named '" + name + "'", "none");
  Slot s;
  if (e) {
    s.offset = e->offset;
    s.trainable = e->trainable;
  }
  return s;
}

template <class T>
class ConvAdapter : public GpuLayer<T> {
 public:
  ConvAdapter(const varnet::Conv2d<T>& h, const ParamTable& t)
      : GpuLayer<T>(h),
        layer_(h.in_channels(), h.out_channels(), h.conv_options()),
        w_(find_slot(t, h.name() + ".weight")),
        b_(find_slot(t, h.name() + ".bias", h.conv_options().bias)) {}
  int64_t scratch_size(const Shape& in) const override { return layer_.scratch_size(in); }
  void forward(const Pass<T>& p, const Shape& in, const T* x, T* y, T* scratch) override {
    layer_.forward(p.gpu, tensors(p), in, x, y, scratch);
  }
  void backward(const Pass<T>& p, const Shape& in, const T*, const T*, const T* dy, T* dx,
                T* scratch) override {
    layer_.backward(p.gpu, tensors(p), in, dy, dx, scratch);
  }

 private:
  WeightTensors<T> tensors(const Pass<T>& p) const {
    return {w_.at(p), b_.at(p), w_.grad(p), b_.grad(p)};
  }
  cuda::Conv2d<T> layer_;
  Slot w_, b_;
};

template <class T>
class LinearAdapter : public GpuLayer<T> {
 public:
  LinearAdapter(const varnet::Linear<T>& h, const ParamTable& t)
      : GpuLayer<T>(h),
        layer_(h.in_features(), h.out_features(), h.has_bias()),
        w_(find_slot(t, h.name() + ".weight")),
        b_(find_slot(t, h.name() + ".bias", h.has_bias())) {}
  void forward(const Pass<T>& p, const Shape& in, const T* x, T* y, T*) override {
    layer_.forward(p.gpu, tensors(p), in.n, x, y);
  }
  void backward(const Pass<T>& p, const Shape& in, const T* x, const T*, const T* dy, T* dx,
                T*) override {
    layer_.backward(p.gpu, tensors(p), in.n, x, dy, dx);
  }

 private:
  WeightTensors<T> tensors(const Pass<T>& p) const {
    return {w_.at(p), b_.at(p), w_.grad(p), b_.grad(p)};
  }
  cuda::Linear<T> layer_;
  Slot w_, b_;
};

template <class T>
class BatchNormAdapter : public GpuLayer<T> {
 public:
  BatchNormAdapter(const varnet::BatchNorm<T>& h, const ParamTable& t)
      : GpuLayer<T>(h),
        layer_(h.channels(), h.momentum(), h.eps()),
        gamma_(find_slot(t, h.name() + ".weight")),
        beta_(find_slot(t, h.name() + ".bias")),
        mean_(find_slot(t, h.name() + ".running_mean")),
        var_(find_slot(t, h.name() + ".running_var")) {}
  int64_t scratch_size(const Shape& in) const override { return layer_.scratch_size(in); }
  void forward(const Pass<T>& p, const Shape& in, const T* x, T* y, T* scratch) override {
    layer_.forward(p.gpu, tensors(p), in, x, y, scratch, p.ctx, relu_);
  }
  void backward(const Pass<T>& p, const Shape& in, const T* x, const T* y, const T* dy, T* dx,
                T* scratch) override {
    layer_.backward(p.gpu, tensors(p), in, x, dy, dx, scratch, p.ctx, relu_ ? y : nullptr);
  }
  // Takes over the ReLU that follows (which the network then skips): one pass fewer each way.
  void fuse_relu() { relu_ = true; }

 private:
  BatchNormTensors<T> tensors(const Pass<T>& p) const {
    BatchNormTensors<T> b;
    b.gamma = gamma_.at(p);
    b.beta = beta_.at(p);
    b.running_mean = mean_.at(p);
    b.running_var = var_.at(p);
    b.dgamma = gamma_.grad(p);
    b.dbeta = beta_.grad(p);
    return b;
  }
  cuda::BatchNorm<T> layer_;
  Slot gamma_, beta_, mean_, var_;
  bool relu_ = false;
};

// A layer without parameters or scratch (ReLU, LeakyReLU, Tanh, MaxPool2d): forward maps x to y,
// backward reads the layer's input x, or its output y when kBackwardFromOutput (ReLU and Tanh,
// as on the CPU).
template <class T, class GpuOp, bool kBackwardFromOutput>
class StatelessAdapter : public GpuLayer<T> {
 public:
  StatelessAdapter(const Layer<T>& h, GpuOp op) : GpuLayer<T>(h), layer_(std::move(op)) {}
  void forward(const Pass<T>& p, const Shape& in, const T* x, T* y, T*) override {
    layer_.forward(p.gpu, in, x, y);
  }
  void backward(const Pass<T>& p, const Shape& in, const T* x, const T* y, const T* dy, T* dx,
                T*) override {
    layer_.backward(p.gpu, in, kBackwardFromOutput ? y : x, dy, dx);
  }

 private:
  GpuOp layer_;
};

// Flatten, and a ReLU fused into the batch norm before it: the output is the input, no work.
template <class T>
class PassthroughAdapter : public GpuLayer<T> {
 public:
  using GpuLayer<T>::GpuLayer;
  bool passthrough() const override { return true; }
  void forward(const Pass<T>&, const Shape&, const T*, T*, T*) override {}
  void backward(const Pass<T>&, const Shape&, const T*, const T*, const T*, T*, T*) override {}
};

template <class T>
class VarianceLinearAdapter : public GpuLayer<T> {
 public:
  VarianceLinearAdapter(const varnet::VarianceLinear<T>& h, const ParamTable& t)
      : GpuLayer<T>(h),
        layer_(h.in_features(), h.out_features(), h.options()),
        param_(find_slot(t, h.name() + "." + to_string(h.options().param))),
        b_(find_slot(t, h.name() + ".bias", h.options().bias)) {}
  int64_t scratch_size(const Shape& in) const override { return layer_.scratch_size(in.n); }
  void forward(const Pass<T>& p, const Shape& in, const T* x, T* y, T* scratch) override {
    layer_.forward(p.gpu, tensors(p), in.n, x, y, scratch, this->noise(p.ctx), this->mode(p.ctx),
                   p.device_step);
  }
  void backward(const Pass<T>& p, const Shape& in, const T* x, const T*, const T* dy, T* dx,
                T* scratch) override {
    layer_.backward(p.gpu, tensors(p), in.n, x, dy, dx, scratch, this->noise(p.ctx),
                    this->mode(p.ctx), p.device_step);
  }

 private:
  VarianceTensors<T> tensors(const Pass<T>& p) const {
    return {param_.at(p), b_.at(p), param_.grad(p), b_.grad(p)};
  }
  cuda::VarianceLinear<T> layer_;
  Slot param_, b_;
};

template <class T>
class VarianceConvAdapter : public GpuLayer<T> {
 public:
  VarianceConvAdapter(const varnet::VarianceConv2d<T>& h, const ParamTable& t)
      : GpuLayer<T>(h),
        layer_(h.in_channels(), h.out_channels(), h.conv_options(), h.options()),
        param_(find_slot(t, h.name() + "." + to_string(h.options().param))),
        b_(find_slot(t, h.name() + ".bias", h.options().bias)) {}
  int64_t scratch_size(const Shape& in) const override { return layer_.scratch_size(in); }
  void forward(const Pass<T>& p, const Shape& in, const T* x, T* y, T* scratch) override {
    layer_.forward(p.gpu, tensors(p), in, x, y, scratch, this->noise(p.ctx), this->mode(p.ctx),
                   p.device_step);
  }
  void backward(const Pass<T>& p, const Shape& in, const T* x, const T*, const T* dy, T* dx,
                T* scratch) override {
    layer_.backward(p.gpu, tensors(p), in, x, dy, dx, scratch, this->noise(p.ctx),
                    this->mode(p.ctx), p.device_step);
  }

 private:
  VarianceTensors<T> tensors(const Pass<T>& p) const {
    return {param_.at(p), b_.at(p), param_.grad(p), b_.grad(p)};
  }
  cuda::VarianceConv2d<T> layer_;
  Slot param_, b_;
};

// The tensors of a mean-field layer: "<name>.theta", "<name>.<aux>" (log_alpha, log_sigma2) when
// the posterior has one, "<name>.bias" when the layer has one.
struct MeanFieldSlots {
  Slot theta, aux, bias;
  template <class Host>
  MeanFieldSlots(const Host& h, const ParamTable& t)
      : theta(find_slot(t, h.name() + ".theta")),
        aux(find_slot(t,
                      h.name() + "." + (h.posterior().aux_name() ? h.posterior().aux_name() : ""),
                      h.posterior().aux_name() != nullptr)),
        bias(find_slot(t, h.name() + ".bias", h.options().bias)) {}
  template <class T>
  MeanFieldTensors<T> tensors(const Pass<T>& p) const {
    MeanFieldTensors<T> w;
    w.theta = theta.at(p);
    w.aux = aux.at(p);
    w.bias = bias.at(p);
    w.dtheta = theta.grad(p);
    w.daux = aux.grad(p);
    w.dbias = bias.grad(p);
    return w;
  }
};

template <class T, class Posterior>
class MeanFieldLinearAdapter : public GpuLayer<T> {
 public:
  MeanFieldLinearAdapter(const varnet::MeanFieldLinear<T, Posterior>& h, const ParamTable& t)
      : GpuLayer<T>(h), layer_(h.in_features(), h.out_features(), h.options()), slots_(h, t) {}
  int64_t scratch_size(const Shape& in) const override { return layer_.scratch_size(in.n); }
  void forward(const Pass<T>& p, const Shape& in, const T* x, T* y, T* scratch) override {
    layer_.forward(p.gpu, slots_.tensors(p), in.n, x, y, scratch, this->noise(p.ctx),
                   this->mode(p.ctx), p.device_step);
  }
  void backward(const Pass<T>& p, const Shape& in, const T* x, const T*, const T* dy, T* dx,
                T* scratch) override {
    layer_.backward(p.gpu, slots_.tensors(p), in.n, x, dy, dx, scratch, this->noise(p.ctx),
                    this->mode(p.ctx), p.device_step);
  }
  bool has_kl() const override { return layer_.has_kl(); }
  void add_kl_gradient(const Pass<T>& p, const T* scale, double* kl_sum, double* partial) override {
    layer_.add_kl_gradient(p.gpu, slots_.tensors(p), scale, kl_sum, partial);
  }

 private:
  cuda::MeanFieldLinear<T, Posterior> layer_;
  MeanFieldSlots slots_;
};

template <class T, class Posterior>
class MeanFieldConvAdapter : public GpuLayer<T> {
 public:
  MeanFieldConvAdapter(const varnet::MeanFieldConv2d<T, Posterior>& h, const ParamTable& t)
      : GpuLayer<T>(h),
        layer_(h.in_channels(), h.out_channels(), h.conv_options(), h.options()),
        slots_(h, t) {}
  int64_t scratch_size(const Shape& in) const override { return layer_.scratch_size(in); }
  void forward(const Pass<T>& p, const Shape& in, const T* x, T* y, T* scratch) override {
    layer_.forward(p.gpu, slots_.tensors(p), in, x, y, scratch, this->noise(p.ctx),
                   this->mode(p.ctx), p.device_step);
  }
  void backward(const Pass<T>& p, const Shape& in, const T* x, const T*, const T* dy, T* dx,
                T* scratch) override {
    layer_.backward(p.gpu, slots_.tensors(p), in, x, dy, dx, scratch, this->noise(p.ctx),
                    this->mode(p.ctx), p.device_step);
  }
  bool has_kl() const override { return layer_.has_kl(); }
  void add_kl_gradient(const Pass<T>& p, const T* scale, double* kl_sum, double* partial) override {
    layer_.add_kl_gradient(p.gpu, slots_.tensors(p), scale, kl_sum, partial);
  }

 private:
  cuda::MeanFieldConv2d<T, Posterior> layer_;
  MeanFieldSlots slots_;
};

template <class T>
class DropoutAdapter : public GpuLayer<T> {
 public:
  explicit DropoutAdapter(const varnet::Dropout<T>& h) : GpuLayer<T>(h), layer_(h.p()) {}
  void forward(const Pass<T>& p, const Shape& in, const T* x, T* y, T*) override {
    layer_.forward(p.gpu, in, x, y, this->noise(p.ctx), this->mode(p.ctx), p.device_step);
  }
  void backward(const Pass<T>& p, const Shape& in, const T*, const T*, const T* dy, T* dx,
                T*) override {
    layer_.backward(p.gpu, in, dy, dx, this->noise(p.ctx), this->mode(p.ctx), p.device_step);
  }

 private:
  cuda::Dropout<T> layer_;
};

// The twin of a host MeanFieldLinear or MeanFieldConv2d with this posterior, or null.
template <class T, class Posterior>
std::unique_ptr<GpuLayer<T>> mirror_mean_field(const Layer<T>& l, const ParamTable& t) {
  if (auto* c = dynamic_cast<const varnet::MeanFieldLinear<T, Posterior>*>(&l))
    return std::make_unique<MeanFieldLinearAdapter<T, Posterior>>(*c, t);
  if (auto* c = dynamic_cast<const varnet::MeanFieldConv2d<T, Posterior>*>(&l))
    return std::make_unique<MeanFieldConvAdapter<T, Posterior>>(*c, t);
  return nullptr;
}

// The GPU twin of one host layer, or varnet::Error naming it when it has none.
template <class T>
std::unique_ptr<GpuLayer<T>> mirror(const Layer<T>& l, const ParamTable& t) {
  if (auto* c = dynamic_cast<const varnet::Conv2d<T>*>(&l))
    return std::make_unique<ConvAdapter<T>>(*c, t);
  if (auto* c = dynamic_cast<const varnet::Linear<T>*>(&l))
    return std::make_unique<LinearAdapter<T>>(*c, t);
  if (auto* c = dynamic_cast<const varnet::BatchNorm<T>*>(&l))
    return std::make_unique<BatchNormAdapter<T>>(*c, t);
  if (dynamic_cast<const varnet::ReLU<T>*>(&l))
    return std::make_unique<StatelessAdapter<T, cuda::ReLU<T>, true>>(l, cuda::ReLU<T>{});
  if (auto* c = dynamic_cast<const varnet::LeakyReLU<T>*>(&l))
    return std::make_unique<StatelessAdapter<T, cuda::LeakyReLU<T>, false>>(
        l, cuda::LeakyReLU<T>(c->slope()));
  if (dynamic_cast<const varnet::Tanh<T>*>(&l))
    return std::make_unique<StatelessAdapter<T, cuda::Tanh<T>, true>>(l, cuda::Tanh<T>{});
  if (auto* c = dynamic_cast<const varnet::MaxPool2d<T>*>(&l))
    return std::make_unique<StatelessAdapter<T, cuda::MaxPool2d<T>, false>>(
        l, cuda::MaxPool2d<T>(c->kernel(), c->stride()));
  if (dynamic_cast<const varnet::Flatten<T>*>(&l))
    return std::make_unique<PassthroughAdapter<T>>(l);
  if (auto* c = dynamic_cast<const varnet::VarianceLinear<T>*>(&l))
    return std::make_unique<VarianceLinearAdapter<T>>(*c, t);
  if (auto* c = dynamic_cast<const varnet::VarianceConv2d<T>*>(&l))
    return std::make_unique<VarianceConvAdapter<T>>(*c, t);
  if (auto m = mirror_mean_field<T, GaussianDropoutPosterior<T>>(l, t)) return m;
  if (auto m = mirror_mean_field<T, VariationalDropoutPosterior<T>>(l, t)) return m;
  if (auto m = mirror_mean_field<T, SparseVDPosterior<T>>(l, t)) return m;
  if (auto* c = dynamic_cast<const varnet::Dropout<T>*>(&l))
    return std::make_unique<DropoutAdapter<T>>(*c);
  fail("cuda::Network",
       "layers with a GPU version (Conv2d, Linear, BatchNorm, ReLU, LeakyReLU, Tanh, MaxPool2d, "
       "Flatten, VarianceConv2d, VarianceLinear, GaussianDropout*, VariationalDropout*, SparseVD* "
       "and Dropout)",
       str("layer '", l.name(), "' of kind ", l.kind()));
}

}  // namespace detail

template <class T>
class Network {
 public:
  // Mirrors `host` (built) and uploads its parameters and state.
  Network(GpuContext& gpu, const varnet::Network<T>& host) : gpu_(gpu) {
    check(host.built(), "cuda::Network", "a built host network", "build() not called");
    input_ = host.input_shape();
    output_ = host.output_shape();
    Shape s = input_;
    for (size_t i = 0; i < host.size(); ++i) {
      const Layer<T>& l = host.layer(i);
      // BatchNorm then ReLU: the batch norm's kernels apply the ReLU too (the ReLU has no mode).
      auto* bn = i > 0 ? dynamic_cast<detail::BatchNormAdapter<T>*>(layers_.back().get()) : nullptr;
      const bool fused = bn && dynamic_cast<const varnet::ReLU<T>*>(&l);
      if (fused) {
        bn->fuse_relu();
        layers_.push_back(std::make_unique<detail::PassthroughAdapter<T>>(l));
      } else {
        layers_.push_back(detail::mirror(l, host.table()));
      }
      fused_relu_.push_back(fused);
      names_.push_back(l.name());
      s = l.output_shape(s);
      out_shapes_.push_back(s);
    }
    params_.resize(host.params().size());
    grads_.resize(host.params().size());
    state_.resize(host.state().size());
    kl_partial_.resize(size_t(kernels::kPosteriorMaxBlocks));
    upload(host);
    grads_.zero(gpu_.stream());
  }
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;
  ~Network() {
    for (cudaEvent_t e : events_) (void)cudaEventDestroy(e);
  }

  // Copies the host network's parameters and state to the GPU (waits).
  void upload(const varnet::Network<T>& host) {
    expect_layout(host, "cuda::Network::upload");
    params_.upload(host.params().data(), host.params().size(), gpu_.stream());
    state_.upload(host.state().data(), host.state().size(), gpu_.stream());
  }
  // Copies the GPU's parameters and state into the host network (waits).
  void download(varnet::Network<T>& host) const {
    expect_layout(host, "cuda::Network::download");
    params_.download(host.params().data(), gpu_.stream());
    state_.download(host.state().data(), gpu_.stream());
  }

  // Changes whenever a workspace buffer moves or is freed (a larger batch on a slot, a released
  // slot): a CUDA graph captured before then would read freed memory (cuda::Trainer checks).
  uint64_t workspace_version() const { return workspace_version_; }

  // A new workspace slot, after every slot in use, for passes beside training (cuda/ensemble.hpp:
  // a stacked ensemble's large batch then moves no buffer a training graph reads), and its
  // release, which frees its buffers.
  size_t open_slot() {
    workspaces_.emplace_back();
    workspaces_.back().opened = true;
    return workspaces_.size() - 1;
  }
  void release_slot(size_t slot) noexcept {
    if (slot >= workspaces_.size()) return;
    Workspace& ws = workspaces_[slot];
    // A slot open_slot made comes after every slot in use then: no captured graph reads it.
    // Any other may be a training slot.
    bool held = ws.grad[0].capacity() > 0 || ws.grad[1].capacity() > 0;
    for (const auto& b : ws.acts) held = held || b.capacity() > 0;
    for (const auto& b : ws.scratch) held = held || b.capacity() > 0;
    if (held && !ws.opened) ++workspace_version_;
    ws = Workspace{};
    while (!workspaces_.empty() && !workspaces_.back().opened && workspaces_.back().sized.empty() &&
           !workspaces_.back().input)
      workspaces_.pop_back();
  }

  // Device bytes of one workspace slot sized for batch n (activations, scratch, gradients), so
  // that a caller can choose a batch that fits (cuda/ensemble.hpp).
  // With a range [first, last) of layers: what a forward_range over them sizes.
  int64_t workspace_bytes(int64_t n, size_t first = 0, size_t last = size_t(-1)) const {
    last = std::min(last, layers_.size());
    const bool whole = first == 0 && last == layers_.size();
    int64_t elements = 0, largest_input = 0;
    for (size_t i = first; i < last; ++i) {
      const Shape s = layer_input(i).with_batch(n);
      if (!layers_[i]->passthrough()) elements += out_shapes_[i].with_batch(n).numel();
      elements += layers_[i]->scratch_size(s);
      if (i > 0) largest_input = std::max(largest_input, s.numel());
    }
    return (elements + (whole ? 2 * largest_input : 0)) * int64_t(sizeof(T));
  }

  // As varnet::Network::can_stack_samples: whether a forward pass under ctx may stack samples.
  bool can_stack_samples(const Context& ctx) const {
    if (ctx.training || ctx.batch_stats_in_eval) return false;
    for (const auto& l : layers_)
      if (l->refuses_stacking(ctx)) return false;
    return true;
  }

  // Runs every layer on x (N, C, H, W) on the device; returns the device output (N, classes),
  // valid until the next forward on this slot. device_step: see cuda/variance_layers.hpp.
  // ctx.rows_per_sample > 0 stacks samples as on the host (Context, BatchNoise).
  const T* forward(const T* x, int64_t n, const Context& ctx, size_t slot = 0,
                   const uint32_t* device_step = nullptr) {
    return forward_range(0, layers_.size(), x, n, ctx, slot, device_step);
  }

  // As varnet::Network::forward_range: layers [first, last) on x, which has layer `first`'s
  // input shape (layer_input) for a batch of n; returns the last one's output (x for an empty
  // range). Only a pass over every layer can be backpropagated. A partial pass sizes only its
  // own layers' buffers on the slot.
  const T* forward_range(size_t first, size_t last, const T* x, int64_t n, const Context& ctx,
                         size_t slot = 0, const uint32_t* device_step = nullptr) {
    const size_t L = layers_.size();
    const bool whole = first == 0 && last == L;
    const char* where = whole ? "cuda::Network::forward" : "cuda::Network::forward_range";
    check(n > 0, where, "a batch of at least one input", n);
    check(first <= last && last <= L, where, "a range of the network's layers", "layers ", first,
          "-", last, " of ", L);
    if (ctx.rows_per_sample != 0) {
      check_stacked_batch(ctx, n, where);
      for (size_t i = first; i < last; ++i)
        if (layers_[i]->refuses_stacking(ctx))
          fail(where, "layers that can stack noise samples in one batch",
               str("layer '", names_[i], "', which draws one weight tensor per pass"));
    }
    check((first == L || !fused_relu_[first]) && (last == L || !fused_relu_[last]), where,
          "a range that keeps each batch norm with the ReLU fused into it", "layers ", first, "-",
          last);
    Workspace& ws = workspace(slot);
    ws.input = nullptr;  // until sizing succeeds: no backward from a pass that did not run
    ws.whole = false;
    if (whole) {
      if (ws.batch != n) size_workspace(ws, n);
    } else {
      for (size_t i = first; i < last; ++i)
        if (ws.sized[i] != n) size_layer(ws, i, n);
    }
    ws.input = x;
    ws.whole = whole;
    const detail::Pass<T> p = pass(ctx, device_step);
    const T* in = x;
    const bool timed = profiling();
    if (timed) mark(first);
    for (size_t i = first; i < last; ++i) {
      T* out = layers_[i]->passthrough() ? const_cast<T*>(in) : ws.acts[i].data();
      if (!layers_[i]->passthrough())
        layers_[i]->forward(p, ws.in_shape[i], in, out, ws.scratch[i].data());
      ws.out[i] = out;
      in = out;
      if (timed) mark(i + 1);
    }
    if (timed) collect(forward_ms_, first, last);
    return in;
  }

  // One sample's input shape of layer i (i = number of layers: the output shape).
  Shape layer_input(size_t i) const {
    check(i <= layers_.size(), "cuda::Network::layer_input", "a layer index up to the layer count",
          i, " of ", layers_.size());
    return i == 0 ? input_ : out_shapes_[i - 1];
  }
  // As varnet::Network::first_noisy_layer: the first layer that draws noise under ctx (the
  // number of layers when none does).
  size_t first_noisy_layer(const Context& ctx) const {
    for (size_t i = 0; i < layers_.size(); ++i)
      if (layers_[i]->noisy(ctx)) return i;
    return layers_.size();
  }

  // Backpropagates dL/d(output) (N, classes) of the forward pass in `slot`: parameter gradients
  // accumulate into grads(). The context must be the one forward ran with.
  void backward(const T* dout, const Context& ctx, size_t slot = 0,
                const uint32_t* device_step = nullptr) {
    check(slot < workspaces_.size() && workspaces_[slot].input && workspaces_[slot].whole,
          "cuda::Network::backward", "a forward pass over every layer on this slot first",
          "no such pass on slot ", slot);
    Workspace& ws = workspaces_[slot];
    const detail::Pass<T> p = pass(ctx, device_step);
    const T* dy = dout;
    int held = -1;  // which ping-pong buffer holds dy (-1: the caller's)
    const bool timed = profiling();
    if (timed) mark(layers_.size());
    for (size_t i = layers_.size(); i-- > 0;) {
      if (timed && i + 1 < layers_.size()) mark(i + 1);
      if (layers_[i]->passthrough()) continue;  // dx is dy
      const T* x = i == 0 ? ws.input : ws.out[i - 1];
      T* dx = nullptr;
      int target = held == 0 ? 1 : 0;
      if (i > 0) dx = ws.grad[target].data();
      layers_[i]->backward(p, ws.in_shape[i], x, ws.out[i], dy, dx, ws.scratch[i].data());
      dy = dx;
      held = target;
    }
    if (timed) {
      mark(0);
      collect(backward_ms_, 0, layers_.size(), true);
    }
  }

  // Per-layer timing (CUDA events around every layer; it synchronises after each pass, so leave
  // it off when speed matters). Off by default; not recorded inside a graph capture.
  void set_profiling(bool on) {
    profiling_ = on;
    forward_ms_.assign(layers_.size(), 0.0);
    backward_ms_.assign(layers_.size(), 0.0);
  }
  // One line per layer with its summed forward and backward milliseconds, the largest first.
  std::string profile_report() const {
    std::vector<size_t> idx(layers_.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    const auto total = [&](size_t i) { return at(forward_ms_, i) + at(backward_ms_, i); };
    std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return total(a) > total(b); });
    std::string r = str("  layer              forward ms  backward ms\n");
    for (size_t i : idx) {
      char line[128];
      std::snprintf(line, sizeof(line), "  %-16s %11.3f %12.3f\n", names_[i].c_str(),
                    at(forward_ms_, i), at(backward_ms_, i));
      r += line;
    }
    return r;
  }

  void zero_grad() { grads_.zero(gpu_.stream()); }

  // True when a layer has a KL term (variational dropout, sparse VD).
  bool has_kl() const {
    return std::any_of(layers_.begin(), layers_.end(), [](const auto& l) { return l->has_kl(); });
  }
  // *kl_sum (a device double) += the network's KL, layer by layer in order; when scale (a device
  // value: the KL weight) is not null, the gradients += scale * dKL/dparams, as the host's
  // Network::add_kl_gradient(scale). Enqueued on the stream without waiting, so that a captured
  // training step can include it.
  void add_kl_gradient(const T* scale, double* kl_sum) {
    const Context ctx{};  // the KL depends on the parameters alone
    const detail::Pass<T> p = pass(ctx, nullptr);
    for (auto& l : layers_)
      if (l->has_kl()) l->add_kl_gradient(p, scale, kl_sum, kl_partial_.data());
  }
  // The network's KL (host Network::kl()); waits for the GPU.
  double kl() {
    DeviceBuffer<double> sum(1);
    sum.zero(gpu_.stream());
    add_kl_gradient(nullptr, sum.data());
    return sum.download(gpu_.stream())[0];
  }

  Shape input_shape() const { return input_; }
  Shape output_shape() const { return output_; }
  size_t layer_count() const { return layers_.size(); }
  int64_t param_count() const { return int64_t(params_.size()); }
  T* params() { return params_.data(); }
  T* grads() { return grads_.data(); }
  T* state() { return state_.data(); }
  const DeviceBuffer<T>& param_buffer() const { return params_; }
  const DeviceBuffer<T>& grad_buffer() const { return grads_; }
  const DeviceBuffer<T>& state_buffer() const { return state_; }
  GpuContext& gpu() { return gpu_; }

 private:
  struct Workspace {
    const T* input = nullptr;
    std::vector<Shape> in_shape;           // layer i's input shape
    std::vector<DeviceBuffer<T>> acts;     // layer i's output (empty for passthroughs)
    std::vector<DeviceBuffer<T>> scratch;  // layer i's scratch
    std::vector<const T*> out;             // where layer i's output is
    DeviceBuffer<T> grad[2];               // ping-pong input gradients
    std::vector<int64_t> sized;            // the batch layer i's buffers are sized for
    int64_t batch = -1;                    // every layer and the gradients sized for this batch
    bool whole = false;                    // the last pass ran every layer (backward needs it)
    bool opened = false;                   // made by open_slot and not released
  };

  Workspace& workspace(size_t slot) {
    if (workspaces_.size() <= slot) workspaces_.resize(slot + 1);
    Workspace& ws = workspaces_[slot];
    const size_t L = layers_.size();
    if (ws.sized.size() != L) {
      ws.in_shape.resize(L);
      ws.acts.resize(L);
      ws.scratch.resize(L);
      ws.out.assign(L, nullptr);
      ws.sized.assign(L, -1);
    }
    return ws;
  }
  // A buffer that grows past its capacity moves: a captured graph reading it is stale then
  // (counted before the move, which frees the old buffer first and may throw).
  void size_buffer(DeviceBuffer<T>& b, int64_t count) {
    if (size_t(count) > b.capacity() && b.capacity() > 0) ++workspace_version_;
    b.resize(size_t(count));
  }
  // Layer i's shape and buffers on `ws` for batch n.
  void size_layer(Workspace& ws, size_t i, int64_t n) {
    ws.batch = -1;  // not every layer is sized for one batch now (and a throw leaves it so)
    ws.sized[i] = -1;
    const Shape s = layer_input(i).with_batch(n);
    ws.in_shape[i] = s;
    if (!layers_[i]->passthrough()) size_buffer(ws.acts[i], out_shapes_[i].with_batch(n).numel());
    size_buffer(ws.scratch[i], layers_[i]->scratch_size(s));
    ws.sized[i] = n;
  }
  // Shapes and buffers of every layer for batch n, worked out only when the batch changes.
  void size_workspace(Workspace& ws, int64_t n) {
    int64_t largest_input = 0;
    for (size_t i = 0; i < layers_.size(); ++i) {
      if (ws.sized[i] != n) size_layer(ws, i, n);
      if (i > 0) largest_input = std::max(largest_input, ws.in_shape[i].numel());
    }
    size_buffer(ws.grad[0], largest_input);
    size_buffer(ws.grad[1], largest_input);
    ws.batch = n;
  }
  bool profiling() const { return profiling_ && !detail::capturing(); }
  static double at(const std::vector<double>& v, size_t i) { return i < v.size() ? v[i] : 0.0; }
  // Records event k (k = 0 .. layers) on the stream.
  void mark(size_t k) {
    while (events_.size() <= layers_.size()) {
      cudaEvent_t e = nullptr;
      VARNET_CUDA_CHECK(cudaEventCreate(&e));
      events_.push_back(e);
    }
    VARNET_CUDA_CHECK(cudaEventRecord(events_[k], gpu_.stream()));
  }
  // Adds the time between events i and i + 1 (reverse: i + 1 and i) to ms[i] for the layers
  // [first, last), after waiting.
  void collect(std::vector<double>& ms, size_t first, size_t last, bool reverse = false) {
    gpu_.synchronize();
    ms.resize(layers_.size(), 0.0);
    for (size_t i = first; i < last; ++i) {
      float t = 0;
      VARNET_CUDA_CHECK(
          cudaEventElapsedTime(&t, events_[reverse ? i + 1 : i], events_[reverse ? i : i + 1]));
      ms[i] += double(t);
    }
  }

  detail::Pass<T> pass(const Context& ctx, const uint32_t* device_step) {
    return detail::Pass<T>{gpu_, ctx, params_.data(), grads_.data(), state_.data(), device_step};
  }
  void expect_layout(const varnet::Network<T>& host, const char* where) const {
    check(host.params().size() == params_.size() && host.state().size() == state_.size(), where,
          str("a host network with ", params_.size(), " parameters and ", state_.size(),
              " state values"),
          host.params().size(), " and ", host.state().size());
  }

  GpuContext& gpu_;
  std::vector<std::unique_ptr<detail::GpuLayer<T>>> layers_;
  std::vector<Shape> out_shapes_;  // layer i's output for one sample, from the host network
  std::vector<std::string> names_;
  std::vector<bool> fused_relu_;  // layer i is a ReLU that the batch norm before it applies
  bool profiling_ = false;
  std::vector<cudaEvent_t> events_;  // profiling: event k between layers k - 1 and k
  std::vector<double> forward_ms_, backward_ms_;
  DeviceBuffer<T> params_, grads_, state_;
  DeviceBuffer<double> kl_partial_;  // the KL's partial sums, reused by each layer in turn
  std::vector<Workspace> workspaces_;
  uint64_t workspace_version_ = 0;  // counts workspace buffers moved by growing
  Shape input_, output_;
};

}  // namespace varnet::cuda
