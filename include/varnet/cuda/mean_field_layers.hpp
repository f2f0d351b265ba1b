// The baselines' layers on the GPU: dense and convolutional layers with factorized Gaussian
// weights w ~ N(theta, sigma2) for the posteriors of the dropout family (Gaussian dropout,
// variational dropout, sparse VD), and binary dropout. The CPU layers are MeanFieldLinear,
// MeanFieldConv2d (include/varnet/layers/mean_field.hpp) and Dropout (layers/dropout.hpp); these
// take the same parameter layouts and give the same numbers up to float rounding, drawing the
// same noise for the same NoiseKey:
//   sample:   m = x . theta^T (+ b),  v = (x*x) . sigma2^T,  y = m + eps sqrt(v + e0)
//             (cuBLAS GEMMs, convolutions through im2col, and the LRT epilogue of kernels/lrt.cuh)
//   mean:     y = x . w^T (+ b), w the posterior's mean weights (theta; sparse VD pruned)
//   backward: parameter gradients ACCUMULATE (+=), dx is OVERWRITTEN (skipped when null):
//             d theta += g^T x,  db += sums of g,  dL/dv = g eps / (2 sqrt(v + e0)) (eps
//             recomputed),  d sigma2 = dL/dv^T (x*x), mapped back to the posterior's parameters
//             (kernels/posteriors.cuh),  dx = g theta + 2 x (dL/dv . sigma2)
//             (convolutions: dx = col2im(theta^T g + 2 cols * (sigma2^T dL/dv)));
//             mean mode: dw = g^T x, d theta += dw (sparse VD: not at pruned weights), dx = g w.
//   KL:       add_kl_gradient adds the layer's KL to a device double and, with a scale (a device
//             value, the KL weight), scale * dKL/dparams to the gradients: the host layer's
//             add_kl_gradient(scale), computed on the device without waiting for it.
// Dropout: y = x * mask / (1 - p) with the CPU's mask (the same Philox words); mean mode (or
// p = 0) copies.
//
// Everything is a device pointer; the work is enqueued on ctx's stream (no synchronisation).
// Noise and device_step as in cuda/variance_layers.hpp.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "varnet/core/context.hpp"
#include "varnet/core/random.hpp"
#include "varnet/core/tensor.hpp"
#include "varnet/layers/conv2d.hpp"
#include "varnet/layers/weight_posteriors.hpp"

#include "varnet/cuda/baseline_ops.hpp"
#include "varnet/cuda/check.hpp"
#include "varnet/cuda/device_buffer.hpp"
#include "varnet/cuda/gemm.hpp"
#include "varnet/cuda/handle.hpp"
#include "varnet/cuda/ops.hpp"

namespace varnet::cuda {

// A mean-field layer's device tensors: theta (O, ...), aux (the posterior's second tensor: log
// alpha (1) for variational dropout, log sigma2 (as theta) for sparse VD, unused for Gaussian
// dropout), bias (O) when DropoutOptions::bias; the gradients (backward and the KL) accumulate.
template <class T>
struct MeanFieldTensors {
  const T* theta = nullptr;
  const T* aux = nullptr;
  const T* bias = nullptr;
  T* dtheta = nullptr;
  T* daux = nullptr;
  T* dbias = nullptr;
};

namespace detail {

// What the dense and convolutional layers share: the posterior (a host policy of
// layers/weight_posteriors.hpp, for its options and constants), its kernels' arguments, the KL.
// Every scratch starts with kPosteriorMaxBlocks doubles of partial sums (variational dropout's
// d log alpha), so the rest stays 16-byte aligned.
template <class T, class Posterior>
class MeanFieldCommon {
 public:
  // Elements of T in front of every scratch for the partial sums.
  static constexpr int64_t kPartialElems =
      int64_t(kernels::kPosteriorMaxBlocks) * int64_t(sizeof(double)) / int64_t(sizeof(T));

  const DropoutOptions& options() const { return post_.opt; }
  const kernels::PosteriorSpec& spec() const { return spec_; }
  // True when the posterior has a KL term (variational dropout, sparse VD).
  bool has_kl() const { return posterior_has_kl(spec_); }
  // True when the posterior has a second tensor (log alpha, log sigma2): all but Gaussian dropout.
  bool has_aux() const { return post_.aux_name() != nullptr; }

  // *kl_sum (a device double) += the layer's KL; with scale (a device value, the KL weight),
  // the parameter gradients += scale * dKL/dparams too. partial: kPosteriorMaxBlocks doubles of
  // workspace, free again when the launches are done (one buffer serves every layer in turn).
  void add_kl_gradient(GpuContext& ctx, const MeanFieldTensors<T>& w, const T* scale,
                       double* kl_sum, double* partial) const {
    expect(w, scale != nullptr, false);
    posterior_kl(ctx, args(w), scale, kl_sum, partial);
  }

 protected:
  MeanFieldCommon(DropoutOptions o, int64_t weights, const char* layer)
      : post_{o}, spec_{}, n_(weights), layer_(layer) {
    post_.validate();
    spec_ = posterior_spec(post_);
  }

  kernels::PosteriorArgs<T> args(const MeanFieldTensors<T>& w) const {
    kernels::PosteriorArgs<T> p;
    p.spec = spec_;
    p.theta = w.theta;
    p.aux = w.aux;
    p.dtheta = w.dtheta;
    p.daux = w.daux;
    p.n = n_;
    return p;
  }
  // theta, aux when the posterior has one, bias when the layer has one; with `grads` their
  // gradients; with `bias_grad` the bias gradient.
  void expect(const MeanFieldTensors<T>& w, bool grads, bool bias_grad) const {
    const bool aux = has_aux(), bias = post_.opt.bias;
    check(w.theta != nullptr && (!aux || w.aux != nullptr) && (!bias || w.bias != nullptr),
          str("cuda::", layer_),
          "a theta pointer, and aux and bias pointers when the layer has them", "a null pointer");
    if (grads)
      check(w.dtheta != nullptr && (!aux || w.daux != nullptr), str("cuda::", layer_),
            "gradient pointers for theta (and aux)", "a null pointer");
    if (bias_grad)
      check(!bias || w.dbias != nullptr, str("cuda::", layer_), "a bias gradient pointer",
            "a null pointer");
  }
  const T* bias(const MeanFieldTensors<T>& w) const { return post_.opt.bias ? w.bias : nullptr; }
  T e0() const { return T(post_.opt.e0); }
  static double* partial(T* scratch) { return reinterpret_cast<double*>(scratch); }

  Posterior post_;
  kernels::PosteriorSpec spec_;
  int64_t n_;
  const char* layer_;
};

}  // namespace detail

// Dense: x and dx (N, I), y and dy (N, O), theta (O, I). With S = kPartialElems,
// scratch_size(N) = S + 2 O I + N I + N O, kept from forward to backward:
//   partial sums (S) | s2 (O, I) | ds2 (O, I) | x2 = x*x (N, I) | v (N, O)
// (backward overwrites v with dL/dv); mean mode: partial sums | w (O, I) | dw (O, I).
template <class T, class Posterior>
class MeanFieldLinear : public detail::MeanFieldCommon<T, Posterior> {
  using Base = detail::MeanFieldCommon<T, Posterior>;

 public:
  MeanFieldLinear(int64_t in_features, int64_t out_features, DropoutOptions o = {})
      : Base(o, checked(in_features, out_features), "MeanFieldLinear"),
        in_(in_features),
        out_(out_features) {}

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  int64_t scratch_size(int64_t n) const {
    return Base::kPartialElems + 2 * out_ * in_ + n * in_ + n * out_;
  }

  void forward(GpuContext& ctx, const MeanFieldTensors<T>& w, int64_t n, const T* x, T* y,
               T* scratch, const BatchNoise& noise, PredictMode mode,
               const uint32_t* device_step = nullptr) const {
    check(n >= 0, "cuda::MeanFieldLinear", "a batch size >= 0", n);
    this->expect(w, false, false);
    const int64_t OI = out_ * in_;
    const auto p = this->args(w);
    const T* bias = this->bias(w);
    T* s2 = scratch + Base::kPartialElems;  // the mean weights in mean mode
    // y = bias, then the GEMM adds to it (beta = 1), as cuda::Linear
    if (bias) bias_forward(ctx, bias, n, out_, 1, y);
    if (mode == PredictMode::mean) {
      posterior_mean_weights(ctx, p, s2);
      return gemm(ctx, Op::N, Op::T, n, out_, in_, T(1), x, static_cast<const T*>(s2),
                  bias ? T(1) : T(0), y);  // y (N, O) = x w^T (+ b)
    }
    T *x2 = s2 + 2 * OI, *v = x2 + n * in_;
    posterior_variance(ctx, p, s2);
    square_forward(ctx, x, x2, n * in_);
    gemm(ctx, Op::N, Op::T, n, out_, in_, T(1), x, w.theta, bias ? T(1) : T(0), y);  // m
    gemm(ctx, Op::N, Op::T, n, out_, in_, T(1), static_cast<const T*>(x2),
         static_cast<const T*>(s2), T(0), v);  // v (N, O) = x2 s2^T
    lrt_forward(ctx, noise, ops::LrtLayout{n, out_, 1, false}, static_cast<const T*>(nullptr), true,
                this->e0(), v, y, device_step);
  }

  void backward(GpuContext& ctx, const MeanFieldTensors<T>& w, int64_t n, const T* x, const T* dy,
                T* dx, T* scratch, const BatchNoise& noise, PredictMode mode,
                const uint32_t* device_step = nullptr) const {
    check(n >= 0, "cuda::MeanFieldLinear", "a batch size >= 0", n);
    this->expect(w, true, true);
    if (n == 0) return;  // nothing to add, and dx is empty
    const int64_t OI = out_ * in_;
    const auto p = this->args(w);
    if (this->options().bias) bias_backward(ctx, dy, n, out_, 1, w.dbias);
    T *s2 = scratch + Base::kPartialElems, *ds2 = s2 + OI;  // w and dw in mean mode
    if (mode == PredictMode::mean) {
      gemm(ctx, Op::T, Op::N, out_, in_, n, T(1), dy, x, T(0), ds2);  // dw (O, I) = dy^T x
      posterior_grad_from_mean_weights(ctx, p, static_cast<const T*>(ds2));
      if (dx) gemm(ctx, Op::N, Op::N, n, in_, out_, T(1), dy, static_cast<const T*>(s2), T(0), dx);
      return;
    }
    T *x2 = s2 + 2 * OI, *v = x2 + n * in_;
    gemm(ctx, Op::T, Op::N, out_, in_, n, T(1), dy, x, T(1), w.dtheta);  // d theta += dy^T x
    lrt_backward(ctx, noise, ops::LrtLayout{n, out_, 1, false}, this->e0(), dy,
                 static_cast<const T*>(v), v, device_step);  // v = dL/dv
    gemm(ctx, Op::T, Op::N, out_, in_, n, T(1), static_cast<const T*>(v), static_cast<const T*>(x2),
         T(0), ds2);  // ds2 (O, I) = dV^T x2
    posterior_grad_from_variance(ctx, p, static_cast<const T*>(s2), static_cast<const T*>(ds2),
                                 Base::partial(scratch));
    if (dx) {  // dx = 2 x (dV s2) + dy theta, in the CPU's order
      gemm(ctx, Op::N, Op::N, n, in_, out_, T(1), static_cast<const T*>(v),
           static_cast<const T*>(s2), T(0), dx);
      lrt_input_backward(ctx, n * in_, x, static_cast<const T*>(dx), static_cast<const T*>(nullptr),
                         dx);
      gemm(ctx, Op::N, Op::N, n, in_, out_, T(1), dy, w.theta, T(1), dx);
    }
  }

 private:
  static int64_t checked(int64_t in, int64_t out) {
    check(in > 0 && out > 0, "cuda::MeanFieldLinear", "positive feature counts", in, " -> ", out);
    return in * out;
  }
  int64_t in_, out_;
};

// Convolution: x and dx (N, C, H, W), y and dy (N, O, OH, OW), theta (O, C, KH, KW) = (O, R)
// with R = C KH KW, bias (O). ConvOptions::bias is ignored (as on the CPU): DropoutOptions::bias
// decides. With P = OH OW and S = kPartialElems, scratch_size(in) = S + 2 O R + 2 N P (R + O) +
// the split-K space of the weight-gradient GEMMs (cuda/gemm.hpp):
//   partial sums (S) | s2 (O, R) | ds2 (O, R) | columns (R, N P) | squared columns (R, N P) |
//   v channel-major (O, N P) | m, then dy, channel-major (O, N P) | split-K
// (backward overwrites v with dL/dv and the squared columns with the columns' gradient). Mean
// mode: w and dw in place of s2 and ds2; the squared columns and v unused.
template <class T, class Posterior>
class MeanFieldConv2d : public detail::MeanFieldCommon<T, Posterior> {
  using Base = detail::MeanFieldCommon<T, Posterior>;

 public:
  MeanFieldConv2d(int64_t in_c, int64_t out_c, ConvOptions conv, DropoutOptions o = {})
      : Base(o, checked(in_c, out_c, conv), "MeanFieldConv2d"),
        in_c_(in_c),
        out_c_(out_c),
        conv_(conv) {}

  // The geometry for an input (N, C, H, W); throws unless C matches and the kernel fits.
  ops::ConvGeometry geometry(const Shape& in) const {
    return layer_geometry("cuda::MeanFieldConv2d", in_c_, out_c_, conv_, in);
  }
  Shape output_shape(const Shape& in) const {
    const ops::ConvGeometry g = geometry(in);
    return Shape(in.n, out_c_, g.out_h(), g.out_w());
  }
  int64_t scratch_size(const Shape& in) const {
    const ops::ConvGeometry g = geometry(in);
    const int64_t OR = g.out_c * g.rows(), NP = in.n * g.plane();
    return Base::kPartialElems + 2 * OR + 2 * NP * (g.rows() + g.out_c) +
           split_k_workspace(g.out_c, g.rows(), NP);
  }

  void forward(GpuContext& ctx, const MeanFieldTensors<T>& w, const Shape& in, const T* x, T* y,
               T* scratch, const BatchNoise& noise, PredictMode mode,
               const uint32_t* device_step = nullptr) const {
    const ops::ConvGeometry g = geometry(in);
    this->expect(w, false, false);
    const int64_t n = in.n, R = g.rows(), O = g.out_c, P = g.plane(), OR = O * R, NP = n * P;
    const auto p = this->args(w);
    T *s2 = scratch + Base::kPartialElems, *cols = s2 + 2 * OR, *cols2 = cols + R * NP,
      *v = cols2 + R * NP, *y2 = v + O * NP;
    if (mode == PredictMode::mean) {  // s2 holds the mean weights
      posterior_mean_weights(ctx, p, s2);
      im2col_forward(ctx, x, n, g, cols, static_cast<T*>(nullptr));
      gemm(ctx, Op::N, Op::N, O, NP, R, T(1), static_cast<const T*>(s2),
           static_cast<const T*>(cols), T(0), y2);  // (O, NP) = w cols
      return channel_major_to_nchw(ctx, static_cast<const T*>(y2), this->bias(w), n, O, P, y);
    }
    posterior_variance(ctx, p, s2);
    im2col_forward(ctx, x, n, g, cols, cols2);
    gemm(ctx, Op::N, Op::N, O, NP, R, T(1), w.theta, static_cast<const T*>(cols), T(0),
         y2);  // m (O, NP) = theta cols
    gemm(ctx, Op::N, Op::N, O, NP, R, T(1), static_cast<const T*>(s2), static_cast<const T*>(cols2),
         T(0), v);  // v (O, NP) = s2 cols2
    channel_major_to_nchw(ctx, static_cast<const T*>(y2), this->bias(w), n, O, P, y);  // m + b
    lrt_forward(ctx, noise, ops::LrtLayout{n, O, P, true}, static_cast<const T*>(nullptr), true,
                this->e0(), v, y, device_step);
  }

  // x is not read: the forward pass left its columns in scratch.
  void backward(GpuContext& ctx, const MeanFieldTensors<T>& w, const Shape& in, const T* /*x*/,
                const T* dy, T* dx, T* scratch, const BatchNoise& noise, PredictMode mode,
                const uint32_t* device_step = nullptr) const {
    const ops::ConvGeometry g = geometry(in);
    this->expect(w, true, true);
    const int64_t n = in.n, R = g.rows(), O = g.out_c, P = g.plane(), OR = O * R, NP = n * P;
    if (n == 0) return;  // nothing to add, and dx is empty
    const auto p = this->args(w);
    T *s2 = scratch + Base::kPartialElems, *ds2 = s2 + OR, *cols = s2 + 2 * OR,
      *cols2 = cols + R * NP, *v = cols2 + R * NP, *dy2 = v + O * NP, *split = dy2 + O * NP;
    if (this->options().bias) bias_backward(ctx, dy, n, O, P, w.dbias);
    nchw_to_channel_major(ctx, dy, n, O, P, dy2);  // dY2 (O, NP)
    if (mode == PredictMode::mean) {               // s2 holds w, ds2 receives dw
      gemm_split_k(ctx, Op::N, Op::T, O, R, NP, T(1), static_cast<const T*>(dy2),
                   static_cast<const T*>(cols), T(0), ds2, split);  // dw = dY2 cols^T
      posterior_grad_from_mean_weights(ctx, p, static_cast<const T*>(ds2));
      if (dx) {
        gemm(ctx, Op::T, Op::N, R, NP, O, T(1), static_cast<const T*>(s2),
             static_cast<const T*>(dy2), T(0), cols);  // (R, NP) = w^T dY2
        im2col_backward(ctx, static_cast<const T*>(cols), n, g, static_cast<const T*>(nullptr), dx);
      }
      return;
    }
    gemm_split_k(ctx, Op::N, Op::T, O, R, NP, T(1), static_cast<const T*>(dy2),
                 static_cast<const T*>(cols), T(1), w.dtheta, split);  // d theta += dY2 cols^T
    lrt_backward(ctx, noise, ops::LrtLayout{n, O, P, true}, this->e0(), dy,
                 static_cast<const T*>(v), v, device_step);  // v = dL/dv, channel-major
    gemm_split_k(ctx, Op::N, Op::T, O, R, NP, T(1), static_cast<const T*>(v),
                 static_cast<const T*>(cols2), T(0), ds2, split);  // ds2 = dV cols2^T
    posterior_grad_from_variance(ctx, p, static_cast<const T*>(s2), static_cast<const T*>(ds2),
                                 Base::partial(scratch));
    if (dx) {  // dx = col2im(theta^T dY2 + 2 cols * (s2^T dV)), in the CPU's order
      gemm(ctx, Op::T, Op::N, R, NP, O, T(1), static_cast<const T*>(s2), static_cast<const T*>(v),
           T(0), cols2);  // D (R, NP) = s2^T dV
      lrt_input_backward(ctx, R * NP, static_cast<const T*>(cols), static_cast<const T*>(cols2),
                         static_cast<const T*>(nullptr), cols2);  // D *= 2 cols
      gemm(ctx, Op::T, Op::N, R, NP, O, T(1), w.theta, static_cast<const T*>(dy2), T(1),
           cols2);  // D += theta^T dY2
      im2col_backward(ctx, static_cast<const T*>(cols2), n, g, static_cast<const T*>(nullptr), dx);
    }
  }

 private:
  static int64_t checked(int64_t in_c, int64_t out_c, const ConvOptions& c) {
    check(in_c > 0 && out_c > 0 && c.kernel > 0 && c.stride > 0 && c.pad >= 0,
          "cuda::MeanFieldConv2d", "positive channels, kernel and stride, non-negative padding",
          "in ", in_c, ", out ", out_c, ", kernel ", c.kernel, ", stride ", c.stride, ", pad ",
          c.pad);
    return out_c * in_c * c.kernel * c.kernel;
  }
  int64_t in_c_, out_c_;
  ConvOptions conv_;
};

template <class T>
using GaussianDropoutLinear = MeanFieldLinear<T, GaussianDropoutPosterior<T>>;
template <class T>
using GaussianDropoutConv2d = MeanFieldConv2d<T, GaussianDropoutPosterior<T>>;
template <class T>
using VariationalDropoutLinear = MeanFieldLinear<T, VariationalDropoutPosterior<T>>;
template <class T>
using VariationalDropoutConv2d = MeanFieldConv2d<T, VariationalDropoutPosterior<T>>;
template <class T>
using SparseVDLinear = MeanFieldLinear<T, SparseVDPosterior<T>>;
template <class T>
using SparseVDConv2d = MeanFieldConv2d<T, SparseVDPosterior<T>>;

// Binary dropout with drop probability p on any shape: y = x * mask / (1 - p) in sample mode, the
// mask a pure function of the key (backward applies it again); mean mode copies. No scratch.
template <class T>
class Dropout {
 public:
  explicit Dropout(double p = 0.5) : p_(p) {
    check(p >= 0 && p < 1, "cuda::Dropout", "a drop probability in [0, 1)", p);
  }

  double p() const { return p_; }
  Shape output_shape(const Shape& in) const { return in; }
  int64_t scratch_size(const Shape& /*in*/) const { return 0; }

  void forward(GpuContext& ctx, const Shape& in, const T* x, T* y, const BatchNoise& noise,
               PredictMode mode, const uint32_t* device_step = nullptr) const {
    apply(ctx, in, x, y, noise, mode, device_step);
  }
  void backward(GpuContext& ctx, const Shape& in, const T* dy, T* dx, const BatchNoise& noise,
                PredictMode mode, const uint32_t* device_step = nullptr) const {
    if (dx) apply(ctx, in, dy, dx, noise, mode, device_step);
  }

 private:
  void apply(GpuContext& ctx, const Shape& in_shape, const T* in, T* out, const BatchNoise& noise,
             PredictMode mode, const uint32_t* device_step) const {
    const int64_t count = in_shape.numel();
    if (count <= 0) return;
    if (mode == PredictMode::mean || p_ == 0) {
      if (in != out)
        VARNET_CUDA_CHECK(cudaMemcpyAsync(out, in, size_t(count) * sizeof(T),
                                          cudaMemcpyDeviceToDevice, ctx.stream()));
      return;
    }
    dropout_forward(ctx, noise, count, p_, in, out, device_step, in_shape.per_sample());
  }
  double p_;
};

}  // namespace varnet::cuda
