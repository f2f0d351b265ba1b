// The deterministic layers of LeNet-5 and VGG on the GPU: Linear, Conv2d, BatchNorm, MaxPool2d
// and ReLU, and the other activations, LeakyReLU and Tanh. The CPU layers of the same names
// (include/varnet/layers/) are the reference; these take the same parameter layouts, so the values
// of a CPU Network's buffers can be uploaded and used as they are:
//   Linear     weight (O, I), bias (O)                      "<name>.weight", "<name>.bias"
//   Conv2d     weight (O, C, KH, KW) = (O, R), bias (O)     "<name>.weight", "<name>.bias"
//   BatchNorm  gamma (C), beta (C); state running_mean (C), running_var (C)
//              "<name>.weight", "<name>.bias"; "<name>.running_mean", "<name>.running_var"
// Contract (layers/layer.hpp): forward writes every element of y; backward ACCUMULATES (+=) the
// parameter gradients and OVERWRITES dx, skipping it when dx is null. A layer with scratch
// needs scratch_size(...) elements kept from forward to its backward.
//
// Everything is a device pointer; the work is enqueued on ctx's stream (no synchronisation).
#pragma once

#include <cstdint>

#include "varnet/core/context.hpp"
#include "varnet/core/tensor.hpp"
#include "varnet/layers/conv2d.hpp"
#include "varnet/ops/conv.hpp"

#include "varnet/cuda/device_buffer.hpp"
#include "varnet/cuda/gemm.hpp"
#include "varnet/cuda/handle.hpp"
#include "varnet/cuda/ops.hpp"
#include "varnet/cuda/winograd.hpp"

namespace varnet::cuda {

// A Linear or Conv2d layer's device tensors: bias is used when the layer has one; dweight and
// dbias (backward only) accumulate.
template <class T>
struct WeightTensors {
  const T* weight = nullptr;
  const T* bias = nullptr;
  T* dweight = nullptr;
  T* dbias = nullptr;
};

// A BatchNorm layer's device tensors. Forward in training updates running_mean and
// running_var; dgamma and dbeta (backward only) accumulate.
template <class T>
struct BatchNormTensors {
  const T* gamma = nullptr;
  const T* beta = nullptr;
  T* running_mean = nullptr;
  T* running_var = nullptr;
  T* dgamma = nullptr;
  T* dbeta = nullptr;
};

namespace detail {
template <class T>
void expect_weights(const WeightTensors<T>& w, bool has_bias, bool backward, const char* layer) {
  check(w.weight != nullptr && (!has_bias || w.bias != nullptr), str("cuda::", layer),
        "a weight pointer, and a bias pointer when the layer has a bias", "a null pointer");
  if (backward)
    check(w.dweight != nullptr && (!has_bias || w.dbias != nullptr), str("cuda::", layer),
          "gradient pointers for the weight (and bias)", "a null pointer");
}
}  // namespace detail

// Dense: x and dx (N, I), y and dy (N, O); y = x W^T (+ b). No scratch.
template <class T>
class Linear {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true)
      : in_(in_features), out_(out_features), has_bias_(bias) {
    check(in_ > 0 && out_ > 0, "cuda::Linear", "positive feature counts", in_, " -> ", out_);
  }

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  bool has_bias() const { return has_bias_; }
  int64_t scratch_size(int64_t /*n*/) const { return 0; }

  void forward(GpuContext& ctx, const WeightTensors<T>& w, int64_t n, const T* x, T* y) const {
    check(n >= 0, "cuda::Linear", "a batch size >= 0", n);
    detail::expect_weights(w, has_bias_, false, "Linear");
    // With a bias, y starts as the bias and the GEMM adds to it (beta = 1): no pass over y after.
    if (has_bias_) bias_forward(ctx, w.bias, n, out_, 1, y);
    gemm(ctx, Op::N, Op::T, n, out_, in_, T(1), x, w.weight, has_bias_ ? T(1) : T(0), y);
  }

  void backward(GpuContext& ctx, const WeightTensors<T>& w, int64_t n, const T* x, const T* dy,
                T* dx) const {
    check(n >= 0, "cuda::Linear", "a batch size >= 0", n);
    detail::expect_weights(w, has_bias_, true, "Linear");
    if (n == 0) return;  // nothing to add, and dx is empty
    gemm(ctx, Op::T, Op::N, out_, in_, n, T(1), dy, x, T(1), w.dweight);  // dW (O, I) += dy^T x
    if (has_bias_) bias_backward(ctx, dy, n, out_, 1, w.dbias);
    if (dx) gemm(ctx, Op::N, Op::N, n, in_, out_, T(1), dy, w.weight, T(0), dx);  // dy W
  }

 private:
  int64_t in_, out_;
  bool has_bias_;
};

// Convolution: x and dx (N, C, H, W), y and dy (N, O, OH, OW), weight and dweight (O, R) with
// R = C KH KW, bias and dbias (O) when ConvOptions::bias. ConvOptions::algorithm picks, by the
// same rule as the CPU layer (ops::uses_winograd), between:
// - Winograd F(4x4, 3x3) (cuda/winograd.hpp), whose scratch is winograd_scratch(g, N);
// - batched im2col and one GEMM per product, as VarianceConv2d. With P = OH OW, scratch_size(in)
//   = N P (R + O) + split-K space:
//     columns (R, N P) | channel-major output (O, N P) | split_k_workspace(O, R, N P)
//   (backward overwrites the output part with dy channel-major, then the columns with W^T dy;
//   the weight gradient's long reduction over N P is split, cuda/gemm.hpp).
template <class T>
class Conv2d {
 public:
  Conv2d(int64_t in_c, int64_t out_c, ConvOptions o) : in_c_(in_c), out_c_(out_c), opt_(o) {
    check(in_c > 0 && out_c > 0 && o.kernel > 0 && o.stride > 0 && o.pad >= 0, "cuda::Conv2d",
          "positive channels, kernel and stride, non-negative padding", "in ", in_c, ", out ",
          out_c, ", kernel ", o.kernel, ", stride ", o.stride, ", pad ", o.pad);
    ops::check_conv_algorithm(o.algorithm, o.kernel, o.stride, o.pad);
  }

  const ConvOptions& options() const { return opt_; }
  // The geometry for an input (N, C, H, W); throws unless C matches and the kernel fits.
  ops::ConvGeometry geometry(const Shape& in) const {
    return layer_geometry("cuda::Conv2d", in_c_, out_c_, opt_, in);
  }
  // Whether an input of this shape runs by Winograd.
  bool winograd(const Shape& in) const { return ops::uses_winograd(opt_.algorithm, geometry(in)); }
  Shape output_shape(const Shape& in) const {
    const ops::ConvGeometry g = geometry(in);
    return Shape(in.n, out_c_, g.out_h(), g.out_w());
  }
  int64_t scratch_size(const Shape& in) const {
    const ops::ConvGeometry g = geometry(in);
    if (winograd(in)) return winograd_scratch<T>(g, in.n);
    const int64_t NP = in.n * g.plane();
    return NP * (g.rows() + g.out_c) + split_k_workspace(g.out_c, g.rows(), NP);
  }

  void forward(GpuContext& ctx, const WeightTensors<T>& w, const Shape& in, const T* x, T* y,
               T* scratch) const {
    const ops::ConvGeometry g = geometry(in);
    detail::expect_weights(w, opt_.bias, false, "Conv2d");
    const T* bias = opt_.bias ? w.bias : nullptr;
    if (winograd(in)) return winograd_conv_forward(ctx, x, w.weight, bias, y, in.n, g, scratch);
    const int64_t n = in.n, R = g.rows(), NP = n * g.plane();
    T *cols = scratch, *y2 = scratch + R * NP;
    im2col_forward(ctx, x, n, g, cols, static_cast<T*>(nullptr));
    gemm(ctx, Op::N, Op::N, g.out_c, NP, R, T(1), w.weight, cols, T(0), y2);  // (O, NP) = W cols
    channel_major_to_nchw(ctx, static_cast<const T*>(y2), bias, n, g.out_c, g.plane(), y);
  }

  void backward(GpuContext& ctx, const WeightTensors<T>& w, const Shape& in, const T* dy, T* dx,
                T* scratch) const {
    const ops::ConvGeometry g = geometry(in);
    detail::expect_weights(w, opt_.bias, true, "Conv2d");
    const int64_t n = in.n, R = g.rows(), NP = n * g.plane();
    if (n == 0) return;  // nothing to add, and dx is empty
    if (opt_.bias) bias_backward(ctx, dy, n, g.out_c, g.plane(), w.dbias);
    if (winograd(in))
      return winograd_conv_backward(ctx, dy, w.weight, w.dweight, dx, n, g, scratch);
    T *cols = scratch, *dy2 = scratch + R * NP, *split = dy2 + g.out_c * NP;
    nchw_to_channel_major(ctx, dy, n, g.out_c, g.plane(), dy2);  // dY2 (O, NP)
    gemm_split_k(ctx, Op::N, Op::T, g.out_c, R, NP, T(1), static_cast<const T*>(dy2),
                 static_cast<const T*>(cols), T(1), w.dweight, split);  // dW += dY2 cols^T
    if (dx) {
      gemm(ctx, Op::T, Op::N, R, NP, g.out_c, T(1), w.weight, dy2, T(0), cols);  // W^T dY2
      im2col_backward(ctx, static_cast<const T*>(cols), n, g, static_cast<const T*>(nullptr), dx);
    }
  }

 private:
  int64_t in_c_, out_c_;
  ConvOptions opt_;
};

// BatchNorm over (N, H, W) per channel for x (N, C, H, W), or over N for dense x (N, C, 1, 1).
// Context decides the statistics as on the CPU: ctx.training uses the batch's and updates the
// running estimates (momentum m: running = (1 - m) running + m batch, the variance unbiased);
// evaluation uses the running estimates, or the batch's with ctx.batch_stats_in_eval.
// Scratch (8-byte aligned, as device allocations are): the mean and 1 / sqrt(var + eps) used,
// the backward pass's mean dy and projection (C each), then batch_norm_partials(in) doubles of
// per-chunk partial sums (ops.hpp).
template <class T>
class BatchNorm {
 public:
  explicit BatchNorm(int64_t channels, double momentum = 0.1, double eps = 1e-5)
      : c_(channels), momentum_(momentum), eps_(eps) {
    check(channels > 0 && momentum > 0 && momentum <= 1 && eps > 0, "cuda::BatchNorm",
          "positive channels, momentum in (0, 1], positive eps", "channels ", channels,
          ", momentum ", momentum, ", eps ", eps);
  }

  int64_t channels() const { return c_; }
  Shape output_shape(const Shape& in) const {
    check(in.c == c_, "cuda::BatchNorm", str("input with ", c_, " channels"), "input of shape ",
          in);
    return in;
  }
  int64_t scratch_size(const Shape& in) const {
    output_shape(in);
    const int64_t doubles = batch_norm_partials(in);
    return 4 * c_ +
           (doubles * int64_t(sizeof(double)) + int64_t(sizeof(T)) - 1) / int64_t(sizeof(T));
  }

  // fuse_relu: y = max(batch norm, 0), a ReLU after the layer in the same pass; its backward
  // then takes that y as relu_y.
  void forward(GpuContext& ctx, const BatchNormTensors<T>& t, const Shape& in, const T* x, T* y,
               T* scratch, const Context& c, bool fuse_relu = false) const {
    output_shape(in);
    kernels::BatchNormForwardArgs<T> a;
    a.gamma = t.gamma;
    a.beta = t.beta;
    a.running_mean = t.running_mean;
    a.running_var = t.running_var;
    a.batch = use_batch(c);
    a.update_running = c.training;
    a.momentum = T(momentum_);
    a.eps = T(eps_);
    a.used_mean = scratch;
    a.inv_std = scratch + c_;
    a.partial = partials(scratch);
    a.relu = fuse_relu;
    batch_norm_forward(ctx, in, x, a, y);
  }

  void backward(GpuContext& ctx, const BatchNormTensors<T>& t, const Shape& in, const T* x,
                const T* dy, T* dx, T* scratch, const Context& c, const T* relu_y = nullptr) const {
    output_shape(in);
    kernels::BatchNormBackwardArgs<T> a;
    a.gamma = t.gamma;
    a.used_mean = scratch;
    a.inv_std = scratch + c_;
    a.mean_dy = scratch + 2 * c_;
    a.proj = scratch + 3 * c_;
    a.partial = partials(scratch);
    a.relu_y = relu_y;
    a.batch = use_batch(c);
    a.dgamma = t.dgamma;
    a.dbeta = t.dbeta;
    batch_norm_backward(ctx, in, x, dy, a, dx);
  }

 private:
  static bool use_batch(const Context& c) { return c.training || c.batch_stats_in_eval; }
  // 4 C values of T (a multiple of 8 bytes for float and double) in, the partial sums start.
  double* partials(T* scratch) const { return reinterpret_cast<double*>(scratch + 4 * c_); }
  int64_t c_;
  double momentum_, eps_;
};

// Max pooling over k x k windows with a stride (default k), no padding: x (N, C, H, W) ->
// (N, C, (H - k) / s + 1, (W - k) / s + 1); ties go to the first maximum in row-major window
// order. No parameters, no scratch: backward finds the maxima again from x.
template <class T>
class MaxPool2d {
 public:
  explicit MaxPool2d(int64_t kernel = 2, int64_t stride = 0)
      : k_(kernel), s_(stride > 0 ? stride : kernel) {
    check(kernel > 0 && stride >= 0, "cuda::MaxPool2d", "a positive kernel and non-negative stride",
          "kernel ", kernel, ", stride ", stride);
  }

  int64_t kernel() const { return k_; }
  int64_t stride() const { return s_; }
  Shape output_shape(const Shape& in) const {
    const kernels::PoolShape p = pool_shape(in, k_, s_);
    return Shape(in.n, in.c, p.out_h, p.out_w);
  }
  int64_t scratch_size(const Shape& /*in*/) const { return 0; }

  void forward(GpuContext& ctx, const Shape& in, const T* x, T* y) const {
    max_pool_forward(ctx, in, k_, s_, x, y);
  }
  // dx (N, C, H, W): dy at each window's first maximum (summed where windows overlap), else 0.
  void backward(GpuContext& ctx, const Shape& in, const T* x, const T* dy, T* dx) const {
    if (dx) max_pool_backward(ctx, in, k_, s_, x, dy, dx);
  }

 private:
  int64_t k_, s_;
};

// ReLU on any shape: y = max(x, 0); backward reads the saved output y (dx = dy where y > 0).
template <class T>
class ReLU {
 public:
  Shape output_shape(const Shape& in) const { return in; }
  int64_t scratch_size(const Shape& /*in*/) const { return 0; }

  void forward(GpuContext& ctx, const Shape& in, const T* x, T* y) const {
    relu_forward(ctx, x, y, in.numel());
  }
  void backward(GpuContext& ctx, const Shape& in, const T* y, const T* dy, T* dx) const {
    if (dx) relu_backward(ctx, y, dy, dx, in.numel());
  }
};

// LeakyReLU on any shape: y = x where x > 0, else slope * x; backward reads the input x, as the
// CPU layer does. The slope is the host layer's (varnet::LeakyReLU::slope), already in T.
template <class T>
class LeakyReLU {
 public:
  explicit LeakyReLU(T slope) : slope_(slope) {}
  Shape output_shape(const Shape& in) const { return in; }
  int64_t scratch_size(const Shape& /*in*/) const { return 0; }
  T slope() const { return slope_; }

  void forward(GpuContext& ctx, const Shape& in, const T* x, T* y) const {
    leaky_relu_forward(ctx, slope_, x, y, in.numel());
  }
  void backward(GpuContext& ctx, const Shape& in, const T* x, const T* dy, T* dx) const {
    if (dx) leaky_relu_backward(ctx, slope_, x, dy, dx, in.numel());
  }

 private:
  T slope_;
};

// Tanh on any shape: y = tanh(x); backward reads the saved output y (dx = dy (1 - y^2)).
template <class T>
class Tanh {
 public:
  Shape output_shape(const Shape& in) const { return in; }
  int64_t scratch_size(const Shape& /*in*/) const { return 0; }

  void forward(GpuContext& ctx, const Shape& in, const T* x, T* y) const {
    tanh_forward(ctx, x, y, in.numel());
  }
  void backward(GpuContext& ctx, const Shape& in, const T* y, const T* dy, T* dx) const {
    if (dx) tanh_backward(ctx, y, dy, dx, in.numel());
  }
};

}  // namespace varnet::cuda
