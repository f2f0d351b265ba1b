// Training on the GPU: a labelled data set kept in device memory (DeviceData) and cuda::Trainer,
// the twin of varnet::Trainer with Adam and a linearly decaying learning rate.
//
// A step is: gather the batch on the device, zero the gradients, K forward passes, the K-sample
// cross-entropy, K backward passes, the KL term's gradient (with a KL weight), Adam, and the
// step's loss sums. Every per-step value (the step counter that keys the noise and the batch,
// Adam's scalars, the learning rate, the KL weight) is read from device memory by the kernels,
// so the host enqueues the same launches every step and, with TrainerOptions::graph, captures
// them once in a CUDA graph and replays it: one launch per step. The host waits for the GPU once
// per epoch, to read the epoch's loss, accuracy and KL and the non-finite flags; a non-finite
// gradient, loss or KL is reported then, naming the epoch's steps.
//
// Same numbers as the CPU: the same noise (NoiseKey per layer, step and sample), the same data
// order (shuffled_order), Adam's scalars as varnet::Adam computes them, with its per-parameter
// learning-rate scales (set_lr_scale), so a run on either backend follows the same trajectory up
// to float rounding; with TrainerOptions::augment, each image is cropped and flipped as
// data::augment_batch does. The objective is the host's, mean CE + kl_weight * KL: a constant
// weight (TrainerOptions::kl_weight, set_kl_weight) or the examples' warm-up, beta(step) / N
// (TrainerOptions::kl, set_kl_schedule), computed by a kernel from the device step counter as the
// host computes it before each step. The KL and its gradient are computed on the device, and the
// KL is summed there and read once per epoch with the loss.
//
// The trainer's state besides the network (for checkpoints): the step counter and Adam's m, v
// and update count, read and written with export_state / import_state through a host
// varnet::Adam.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "varnet/core/context.hpp"
#include "varnet/data/augment.hpp"
#include "varnet/data/idx.hpp"
#include "varnet/nn/optimizer.hpp"
#include "varnet/nn/trainer.hpp"

#include "varnet/cuda/device_buffer.hpp"
#include "varnet/cuda/network.hpp"
#include "varnet/cuda/ops.hpp"
#include "varnet/cuda/step_ops.hpp"

namespace varnet::cuda {

// A labelled image set in device memory: images (items, C, H, W) as float, labels (items).
struct DeviceData {
  DeviceBuffer<float> images;
  DeviceBuffer<int32_t> labels;
  Shape shape;  // (items, C, H, W)
  int classes = 0;

  DeviceData() = default;
  DeviceData(GpuContext& gpu, const data::LabeledImages& d) {
    shape = d.images.shape();
    check(shape.n < (int64_t(1) << 31), "cuda::DeviceData(" + d.source + ")",
          "fewer than 2^31 images", shape.n);
    check(d.labels.size() == size_t(shape.n), "cuda::DeviceData(" + d.source + ")",
          str("one label per image (", shape.n, ")"), d.labels.size(), " labels");
    images.upload(d.images.data(), size_t(shape.numel()), gpu.stream());
    labels.upload(d.labels, gpu.stream());
    classes = d.classes;
  }
};

// The KL weight at step s: beta.at(s) / items (the examples' set_kl_weight(beta.at(step) / N)).
// A constant weight w is {{w, 0}, 1}.
struct KlSchedule {
  KlWarmup beta{0, 0};
  double items = 1;  // N, the training set's size
  double at(int64_t step) const { return beta.at(step) / items; }
};

struct TrainerOptions {
  int samples = 1;    // K of the K-sample objective
  uint64_t seed = 0;  // noise (the same seed as the host Trainer's)
  int64_t batch = 128;
  LinearDecay lr;  // the learning rate at each step
  AdamOptions adam;
  bool graph = false;  // capture a step in a CUDA graph and replay it
  bool check_finite = true;
  bool augment = false;  // crop and flip each image (data::augment_batch's transform)
  data::AugmentOptions augment_options;
  // The weight of the KL term in the per-sample objective, as varnet::Trainer::set_kl_weight
  // (beta / N), constant. 0 (and no `kl` schedule): no KL launches at all, and epochs report
  // kl = 0.
  double kl_weight = 0;
  // Or a weight that changes every step, computed on the device: kl.at(step). Used when
  // kl.beta.beta is not 0; kl_weight must be 0 then.
  KlSchedule kl;
};

// What run_epoch returns, as train_epoch does on the host.
struct GpuEpochResult {
  double loss = 0;      // mean cross-entropy over the epoch's steps
  double accuracy = 0;  // training accuracy of the sampled networks
  int64_t images = 0;
  double loss_sum = 0;  // the steps' mean cross-entropies summed (loss * steps)
  int64_t correct = 0;  // correctly classified training images (accuracy * images)
  // The network's KL, averaged over the epoch's steps, each step's taken before its update (the
  // host Trainer's LossResult::kl); 0 without a KL weight or without KL layers.
  double kl = 0;
  // The last step's KL (what the examples print per epoch); 0 when that step's weight was 0.
  double last_kl = 0;
};

template <class T>
class Trainer {
 public:
  Trainer(Network<T>& net, const TrainerOptions& o, uint32_t first_step = 0)
      : net_(net), gpu_(net.gpu()), opt_(o) {
    check(o.samples >= 1 && o.samples <= kernels::kMaxXentSamples, "cuda::Trainer",
          str("a sample count K in [1, ", kernels::kMaxXentSamples, "]"), o.samples);
    check(o.batch >= 1, "cuda::Trainer", "a positive batch size", o.batch);
    check_kl_weight(o.kl_weight);
    check(o.kl_weight == 0 || o.kl.beta.beta == 0, "cuda::Trainer",
          "a constant KL weight or a KL schedule, not both", "kl_weight ", o.kl_weight,
          " and a schedule with beta ", o.kl.beta.beta);
    if (o.kl.beta.beta != 0)
      set_kl_schedule(o.kl);
    else
      set_kl_weight(o.kl_weight);
    has_kl_ = net.has_kl();
    const size_t p = size_t(net.param_count());
    m_.resize(p);
    v_.resize(p);
    m_.zero(gpu_.stream());
    v_.zero(gpu_.stream());
    const int64_t classes = net.output_shape().per_sample();
    x_.resize(size_t(o.batch * net.input_shape().per_sample()));
    y_.resize(size_t(o.batch));
    logits_.resize(size_t(o.samples * o.batch * classes));
    dlogits_.resize(logits_.size());
    row_loss_.resize(size_t(o.batch));
    row_correct_.resize(size_t(o.batch));
    // The loss and correct sums, the KL sum, the step's KL, the last step's KL.
    totals_.resize(5);
    kl_scale_.resize(1);
    kl_schedule_.resize(size_t(kernels::kKlScheduleWords));
    words_.resize(3);  // the step counter, the epoch's first step, the epoch
    flags_.resize(2);  // a non-finite gradient, a label out of range
    set_step(first_step);
  }
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;
  ~Trainer() {
    if (exec_) (void)cudaGraphExecDestroy(exec_);
  }

  // The global step count: the next step's noise and learning rate (and the resume point).
  uint32_t steps() const { return step_; }
  // How many times a step has been captured in a CUDA graph (graph mode): once, then again only
  // when what the graph reads has moved.
  int captures() const { return captures_; }
  void set_step(uint32_t s) {
    step_ = s;
    const uint32_t w[3] = {s, s, 0};
    words_.upload(w, 3, gpu_.stream());
  }

  // The KL term's weight (varnet::Trainer::set_kl_weight), the same at every step; it applies
  // from the next run_epoch.
  void set_kl_weight(double w) {
    check_kl_weight(w);
    set_kl_schedule(KlSchedule{KlWarmup{w, 0}, 1.0});
  }
  // A KL weight computed on the device before each step s as s.at(step): the host examples'
  // warm-up, set_kl_weight(beta.at(step) / N) per step. Applies from the next run_epoch.
  void set_kl_schedule(const KlSchedule& s) {
    check(s.beta.beta >= 0 && std::isfinite(s.beta.beta), "cuda::Trainer", "a finite KL beta >= 0",
          s.beta.beta);
    check(s.items > 0 && std::isfinite(s.items), "cuda::Trainer",
          "a finite positive item count N for the KL weight beta / N", s.items);
    kl_ = s;
  }
  const KlSchedule& kl_schedule() const { return kl_; }
  // The KL weight of the next step.
  double kl_weight() const { return kl_.at(int64_t(step_)); }

  // Multiplies the learning rate of parameters [offset, offset + count) by `scale`, as
  // varnet::Adam::set_lr_scale (configuration, not state: a resumed run sets it again). Without
  // any, Adam runs as without scales.
  void set_lr_scale(int64_t offset, int64_t count, double scale) {
    const int64_t p = net_.param_count();
    check(offset >= 0 && count >= 0 && offset + count <= p, "cuda::Trainer::set_lr_scale",
          str("a range inside the ", p, " parameters"), "[", offset, ", ", offset + count, ")");
    check(scale >= 0 && std::isfinite(scale), "cuda::Trainer::set_lr_scale", "a finite scale >= 0",
          scale);
    if (lr_scale_host_.empty()) lr_scale_host_.assign(size_t(p), T(1));
    std::fill(lr_scale_host_.begin() + offset, lr_scale_host_.begin() + offset + count, T(scale));
    lr_scale_.upload(lr_scale_host_, gpu_.stream());  // same size each time: the same address
  }

  // The trainer's state into a host Adam of the same size: m, v and the update count (waits).
  // With the network's download() and steps(), what a checkpoint holds.
  void export_state(varnet::Adam<T>& adam) const {
    auto b = adam.buffers();
    check(b.size() == 2 && b[0].second->size() == m_.size() && b[1].second->size() == v_.size(),
          "cuda::Trainer::export_state", str("a host Adam over ", m_.size(), " parameters"),
          b.empty() ? size_t(0) : b[0].second->size(), " parameters");
    m_.download(b[0].second->data(), gpu_.stream());
    v_.download(b[1].second->data(), gpu_.stream());
    adam.set_steps(adam_steps());
  }
  // Continues from a host Adam's state (m, v, update count) at trainer step `step` (the next
  // step's noise, batch, learning rate and KL weight): a checkpoint's, applied to the host
  // network and Adam, with the network's upload(). Waits.
  void import_state(const varnet::Adam<T>& adam, uint32_t step) {
    const auto b = adam.buffers();
    check(b.size() == 2 && b[0].second->size() == m_.size() && b[1].second->size() == v_.size(),
          "cuda::Trainer::import_state", str("a host Adam over ", m_.size(), " parameters"),
          b.empty() ? size_t(0) : b[0].second->size(), " parameters");
    m_.upload(b[0].second->data(), m_.size(), gpu_.stream());
    v_.upload(b[1].second->data(), v_.size(), gpu_.stream());
    set_step(step);
    adam_offset_ = adam.steps() - int64_t(step);
  }
  // Adam's update count: the trainer's steps plus the offset of an imported state.
  int64_t adam_steps() const { return int64_t(step_) + adam_offset_; }

  // Trains the steps of one epoch: batch s of `order` (indices into d) for s in [0, steps), the
  // last partial batch dropped as on the host; `epoch` keys the augmentation. Waits for the GPU
  // at the end.
  GpuEpochResult run_epoch(const DeviceData& d, const std::vector<int64_t>& order, int64_t steps,
                           uint32_t epoch = 0) {
    check(d.shape.with_batch(1) == net_.input_shape(), "cuda::Trainer::run_epoch",
          str("images of one sample's shape ", net_.input_shape()), d.shape);
    check(steps >= 0 && steps * opt_.batch <= int64_t(order.size()), "cuda::Trainer::run_epoch",
          str("at most ", int64_t(order.size()) / opt_.batch, " steps of batch ", opt_.batch),
          steps);
    order_host_.resize(order.size());
    for (size_t i = 0; i < order.size(); ++i) {
      if (order[i] < 0 || order[i] >= d.shape.n)
        fail("cuda::Trainer::run_epoch", str("item indices in [0, ", d.shape.n, ")"),
             str(order[i], " at position ", i));
      order_host_[i] = int32_t(order[i]);  // DeviceData holds fewer than 2^31 items
    }
    order_.upload(order_host_, gpu_.stream());
    const uint32_t w[3] = {step_, step_, epoch};
    words_.upload(w, 3, gpu_.stream());
    const double schedule[kernels::kKlScheduleWords] = {kl_.beta.beta,
                                                        double(kl_.beta.warmup_steps), kl_.items};
    kl_schedule_.upload(schedule, size_t(kernels::kKlScheduleWords), gpu_.stream());
    totals_.zero(gpu_.stream());
    flags_.zero(gpu_.stream());
    data_ = &d;
    // A captured step holds the buffers' addresses (the network's workspaces too: an ensemble
    // on this network may have grown them), whether it computes the KL and Adam's offset:
    // capture again if any changed.
    const void* where[4] = {d.images.data(), d.labels.data(), order_.data(), lr_scale_ptr()};
    if (exec_ && (!std::equal(where, where + 4, graph_buffers_) || graph_kl_ != kl_on() ||
                  graph_adam_offset_ != adam_offset_ ||
                  graph_workspace_version_ != net_.workspace_version())) {
      (void)cudaGraphExecDestroy(exec_);
      exec_ = nullptr;
    }
    for (int64_t s = 0; s < steps; ++s) {
      if (!opt_.graph || eager_steps_ < 1) {
        enqueue_step();  // the first step sizes every buffer: nothing allocates in a capture
        if (opt_.graph) ++eager_steps_;
      } else {
        if (!exec_) capture();
        VARNET_CUDA_CHECK(cudaGraphLaunch(exec_, gpu_.stream()));
      }
      ++step_;
    }
    const std::vector<double> totals = totals_.download(gpu_.stream());
    const std::vector<int32_t> flags = flags_.download(gpu_.stream());
    const uint32_t first = step_ - uint32_t(steps);
    check(flags[1] == 0, "cuda::Trainer", str("labels in [0, ", net_.output_shape().c, ")"),
          "a label out of range in steps ", first, "..", step_ - 1);
    if (opt_.check_finite && (flags[0] != 0 || !std::isfinite(totals[0])))
      throw NonFiniteError(str("training steps ", first, "..", step_ - 1,
                               " on the GPU: expected finite ", flags[0] ? "gradients" : "losses",
                               ", found a non-finite value (the GPU checks once per epoch)"));
    if (opt_.check_finite && !std::isfinite(totals[2]))
      throw NonFiniteError(str("training steps ", first, "..", step_ - 1,
                               " on the GPU: expected a finite KL, found ", totals[2],
                               " (the GPU checks once per epoch)"));
    GpuEpochResult r;
    r.images = steps * opt_.batch;
    r.loss_sum = totals[0];
    r.correct = int64_t(totals[1]);
    r.loss = steps > 0 ? totals[0] / double(steps) : 0;
    r.accuracy = steps > 0 ? totals[1] / double(r.images) : 0;
    r.kl = steps > 0 ? totals[2] / double(steps) : 0;
    r.last_kl = steps > 0 ? totals[4] : 0;
    return r;
  }

  Network<T>& network() { return net_; }

 private:
  // The launches of one step; every value that changes between steps is read from the device.
  void enqueue_step() {
    const int64_t B = opt_.batch, C = net_.output_shape().per_sample();
    const Shape in = net_.input_shape();
    uint32_t* step = words_.data();
    kernels::GatherAugment aug;
    aug.on = opt_.augment;
    aug.pad = opt_.augment_options.pad;
    aug.flip = opt_.augment_options.flip;
    aug.seed = opt_.augment_options.seed;
    aug.c = in.c;
    aug.h = in.h;
    aug.w = in.w;
    gather_batch(gpu_, data_->images.data(), data_->labels.data(), order_.data(), step, step + 1,
                 step + 2, B, in.per_sample(), aug, x_.data(), y_.data());
    net_.zero_grad();
    for (int k = 0; k < opt_.samples; ++k) {
      const T* out = net_.forward(x_.data(), B, train_context(k), size_t(k), step);
      if (opt_.samples == 1) {
        logits_ptr_ = out;
      } else {
        VARNET_CUDA_CHECK(cudaMemcpyAsync(logits_.data() + k * B * C, out,
                                          size_t(B * C) * sizeof(T), cudaMemcpyDeviceToDevice,
                                          gpu_.stream()));
        logits_ptr_ = logits_.data();
      }
    }
    softmax_xent_forward(gpu_, opt_.samples, B, C, logits_ptr_, y_.data(), dlogits_.data(),
                         row_loss_.data(), row_correct_.data());
    for (int k = 0; k < opt_.samples; ++k)
      net_.backward(dlogits_.data() + k * B * C, train_context(k), size_t(k), step);
    // The KL's gradient, scaled by the step's weight (computed on the device from the step word),
    // and its value into the sums.
    if (kl_on()) {
      kl_step_begin(gpu_, static_cast<const double*>(kl_schedule_.data()),
                    static_cast<const uint32_t*>(step), kl_scale_.data(), totals_.data() + 3);
      net_.add_kl_gradient(static_cast<const T*>(kl_scale_.data()), totals_.data() + 3);
      kl_step_end<T>(gpu_, static_cast<const double*>(kl_schedule_.data()),
                     static_cast<const uint32_t*>(step), totals_.data());
    }
    kernels::AdamSchedule sched;
    sched.lr_base = opt_.lr.base;
    sched.lr_total = opt_.lr.total;
    sched.beta1 = opt_.adam.beta1;
    sched.beta2 = opt_.adam.beta2;
    sched.eps = opt_.adam.eps;
    sched.adam_offset = adam_offset_;
    adam_scheduled(gpu_, net_.param_count(), sched, static_cast<const uint32_t*>(step),
                   net_.params(), static_cast<const T*>(net_.grads()), m_.data(), v_.data(),
                   lr_scale_ptr(), flags_.data());
    finish_step(gpu_, B, static_cast<const T*>(row_loss_.data()),
                static_cast<const int32_t*>(row_correct_.data()), totals_.data(), flags_.data() + 1,
                step);
  }

  // Records enqueue_step into a graph and instantiates it. The data set and order buffers must
  // stay where they are: run_epoch uploads each epoch's order into the same buffer.
  void capture() {
    cudaGraph_t graph = nullptr;
    VARNET_CUDA_CHECK(cudaStreamBeginCapture(gpu_.stream(), cudaStreamCaptureModeThreadLocal));
    detail::capturing() = true;
    try {
      enqueue_step();
    } catch (...) {
      detail::capturing() = false;
      (void)cudaStreamEndCapture(gpu_.stream(), &graph);
      if (graph) (void)cudaGraphDestroy(graph);
      throw;
    }
    detail::capturing() = false;
    VARNET_CUDA_CHECK(cudaStreamEndCapture(gpu_.stream(), &graph));
    const cudaError_t e = cudaGraphInstantiate(&exec_, graph, 0);
    (void)cudaGraphDestroy(graph);
    VARNET_CUDA_CHECK(e);
    graph_buffers_[0] = data_->images.data();
    graph_buffers_[1] = data_->labels.data();
    graph_buffers_[2] = order_.data();
    graph_buffers_[3] = lr_scale_ptr();
    graph_kl_ = kl_on();
    graph_adam_offset_ = adam_offset_;
    graph_workspace_version_ = net_.workspace_version();
    ++captures_;
  }

  // Whether a step computes the KL: a KL weight (nonzero at some step), and layers with a KL.
  bool kl_on() const { return kl_.beta.beta != 0 && has_kl_; }
  // The learning-rate scales on the device, or null when none were set.
  const T* lr_scale_ptr() const { return lr_scale_host_.empty() ? nullptr : lr_scale_.data(); }
  static void check_kl_weight(double w) {
    check(w >= 0 && std::isfinite(w), "cuda::Trainer", "a finite KL weight >= 0", w);
  }

  Context train_context(int k) const {
    // The step in the key comes from the device word; BatchNorm reads `training`.
    return Context::train(opt_.seed, 0, uint32_t(k));
  }

  Network<T>& net_;
  GpuContext& gpu_;
  TrainerOptions opt_;
  DeviceBuffer<T> m_, v_, x_, logits_, dlogits_, row_loss_;
  DeviceBuffer<T> kl_scale_;  // the step's KL weight as T, read by the KL kernels
  DeviceBuffer<T> lr_scale_;  // Adam's per-parameter learning-rate scales (when set)
  std::vector<T> lr_scale_host_;
  DeviceBuffer<int32_t> y_, row_correct_, order_, flags_;
  DeviceBuffer<double> totals_;
  DeviceBuffer<double> kl_schedule_;  // beta, warm-up steps, N (kernels::kl_weight_at)
  KlSchedule kl_;
  DeviceBuffer<uint32_t> words_;
  std::vector<int32_t> order_host_;
  const T* logits_ptr_ = nullptr;
  const DeviceData* data_ = nullptr;
  const void* graph_buffers_[4] = {nullptr, nullptr, nullptr, nullptr};  // what the graph reads
  cudaGraphExec_t exec_ = nullptr;
  bool graph_kl_ = false;          // the captured step computes the KL
  int64_t adam_offset_ = 0;        // Adam's update count minus the step counter (import_state)
  int64_t graph_adam_offset_ = 0;  // the captured step's
  uint64_t graph_workspace_version_ = 0;  // the network's workspace_version() at the capture
  int captures_ = 0;
  bool has_kl_ = false;  // the network has layers with a KL
  int eager_steps_ = 0;
  uint32_t step_ = 0;
};

}  // namespace varnet::cuda
