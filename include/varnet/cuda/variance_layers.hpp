// Variance layers on the GPU: cuBLAS GEMMs plus the fused kernels in kernels/. The CPU
// layers are VarianceLinear and VarianceConv2d in include/varnet/layers/variance.hpp; these
// follow the same layer contract (layers/layer.hpp) and give the same numbers up to float
// rounding, drawing the same noise for the same NoiseKey:
//   forward:  s2 = sigma^2 or exp(log sigma2),  v = (x*x) . s2^T,  y = b + eps sqrt(v + e0);
//             mean mode: y = b (or 0).
//   backward: parameter gradients ACCUMULATE (+=), dx is OVERWRITTEN (skipped when null):
//             dL/dv = g eps / (2 sqrt(v + e0)) (eps recomputed, never stored),
//             d s2 = dL/dv^T . (x*x),  d param += chain rule of s2,  db += sums of g,
//             dx = 2 x * (dL/dv . s2)  (convolutions: 2 x * col2im(s2^T . dL/dv)).
// Bernoulli and uniform weights are drawn once per step instead (no LRT for them, as on the CPU):
//   w = sd xi (kernels/weights.cuh), y = x . w^T (+ b); backward dw = dy^T . x, d param += dw
//   xi (chain rule), dx = dy . w; convolutions through im2col.
//
// Everything is a device pointer; the work is enqueued on ctx's stream (no synchronisation).
// Noise: pass NoiseKey{seed, layer id, step, stream}, as the CPU layer's noise_key(ctx), or the
// BatchNoise of layer_noise(ctx, id) for a batch that stacks samples (Gaussian weights only). With
// a device_step (a device word), the kernels read the key's step from it when they run: a captured
// CUDA graph of a training step then draws each replayed step's own noise.
#pragma once

#include <cstdint>
#include <string>

#include "varnet/core/context.hpp"
#include "varnet/core/tensor.hpp"
#include "varnet/layers/conv2d.hpp"
#include "varnet/layers/variance.hpp"

#include "varnet/core/random.hpp"
#include "varnet/cuda/device_buffer.hpp"
#include "varnet/cuda/gemm.hpp"
#include "varnet/cuda/handle.hpp"
#include "varnet/cuda/ops.hpp"

namespace varnet::cuda {

// The noise key a CPU layer with id `layer` uses under `ctx` (Layer::noise_key).
inline NoiseKey layer_key(const Context& ctx, uint32_t layer) {
  return NoiseKey{ctx.seed, layer, ctx.step, ctx.stream};
}
// The same with ctx's stacking of samples (Layer::batch_noise).
inline BatchNoise layer_noise(const Context& ctx, uint32_t layer) {
  return BatchNoise{layer_key(ctx, layer), ctx.rows_per_sample};
}
// The key of a layer that draws one weight tensor per pass: its batch cannot stack samples.
inline NoiseKey unstacked(const BatchNoise& noise, const char* layer) {
  check(!noise.stacked(), layer, "one noise sample per batch (weights drawn per pass)",
        "samples stacked by ", noise.rows_per_sample, " rows");
  return noise.key;
}

// A variance layer's device tensors. param is sigma or log sigma2 (per VarianceOptions::param);
// bias is used when VarianceOptions::bias; dparam and dbias (backward only) accumulate.
template <class T>
struct VarianceTensors {
  const T* param = nullptr;
  const T* bias = nullptr;
  T* dparam = nullptr;
  T* dbias = nullptr;
};

namespace detail {
template <class T>
void expect_tensors(const VarianceTensors<T>& w, const VarianceOptions& o, bool backward,
                    const char* layer) {
  check(w.param != nullptr && (!o.bias || w.bias != nullptr), str("cuda::", layer),
        "a parameter pointer, and a bias pointer when the layer has a bias", "a null pointer");
  if (backward)
    check(w.dparam != nullptr && (!o.bias || w.dbias != nullptr), str("cuda::", layer),
          "gradient pointers for the parameter (and bias)", "a null pointer");
}
}  // namespace detail

// Dense: x (N, I), y and dy (N, O), param and dparam (O, I), bias and dbias (O).
// Scratch, kept from forward to backward: Gaussian, scratch_size(N) = 2 O I + N I + S N O:
//   s2 (O, I) | ds2 (O, I) | x2 = x*x (N, I) | v (N, O) (backward overwrites v with dL/dv), and
//   for S = gemm_parts(N, O, I) > 1 the other S - 1 partial products of v after it;
// Bernoulli and uniform, 3 O I: w | xi | dw (O, I).
template <class T>
class VarianceLinear {
 public:
  VarianceLinear(int64_t in_features, int64_t out_features, VarianceOptions o = {})
      : in_(in_features), out_(out_features), opt_(o) {
    check(in_ > 0 && out_ > 0, "cuda::VarianceLinear", "positive feature counts", in_, " -> ",
          out_);
  }

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  const VarianceOptions& options() const { return opt_; }
  int64_t scratch_size(int64_t n) const {
    return gaussian() ? 2 * out_ * in_ + n * in_ + gemm_parts(n, out_, in_) * n * out_
                      : 3 * out_ * in_;
  }

  void forward(GpuContext& ctx, const VarianceTensors<T>& w, int64_t n, const T* x, T* y,
               T* scratch, const BatchNoise& noise, PredictMode mode,
               const uint32_t* device_step = nullptr) const {
    check(n >= 0, "cuda::VarianceLinear", "a batch size >= 0", n);
    detail::expect_tensors(w, opt_, false, "VarianceLinear");
    const T* bias = opt_.bias ? w.bias : nullptr;
    if (mode == PredictMode::mean) return bias_forward(ctx, bias, n, out_, 1, y);
    const int64_t OI = out_ * in_;
    if (!gaussian()) {  // y = x w^T (+ b), with w drawn for this step
      T *wt = scratch, *xi = scratch + OI;
      sample_weights(ctx, unstacked(noise, "cuda::VarianceLinear"), bernoulli(), log_param(), OI,
                     w.param, wt, xi, device_step);
      if (bias) bias_forward(ctx, bias, n, out_, 1, y);
      return gemm(ctx, Op::N, Op::T, n, out_, in_, T(1), x, static_cast<const T*>(wt),
                  bias ? T(1) : T(0), y);
    }
    T *s2 = scratch, *x2 = scratch + 2 * OI, *v = x2 + n * in_;
    variance_square_forward(ctx, log_param(), w.param, s2, OI, x, x2, n * in_);
    // v (N, O) = x2 s2^T, in `parts` partial products that the epilogue sums (gemm_parts)
    const int64_t parts = gemm_parts(n, out_, in_);
    gemm_parts(ctx, Op::N, Op::T, n, out_, in_, static_cast<const T*>(x2),
               static_cast<const T*>(s2), parts, v);
    lrt_forward(ctx, noise, ops::LrtLayout{n, out_, 1, false}, bias, false, T(opt_.e0), v, y,
                device_step, parts);
  }

  void backward(GpuContext& ctx, const VarianceTensors<T>& w, int64_t n, const T* x, const T* dy,
                T* dx, T* scratch, const BatchNoise& noise, PredictMode mode,
                const uint32_t* device_step = nullptr) const {
    check(n >= 0, "cuda::VarianceLinear", "a batch size >= 0", n);
    detail::expect_tensors(w, opt_, true, "VarianceLinear");
    if (opt_.bias) bias_backward(ctx, dy, n, out_, 1, w.dbias);
    if (mode == PredictMode::mean) {
      if (dx) zero(dx, n * in_, ctx.stream());
      return;
    }
    const int64_t OI = out_ * in_;
    if (!gaussian()) {
      T *wt = scratch, *xi = scratch + OI, *dw = scratch + 2 * OI;
      gemm(ctx, Op::T, Op::N, out_, in_, n, T(1), dy, x, T(0), dw);  // dw (O, I) = dy^T x
      weight_backward(ctx, log_param(), w.param, static_cast<const T*>(xi),
                      static_cast<const T*>(dw), w.dparam, OI);
      if (dx) gemm(ctx, Op::N, Op::N, n, in_, out_, T(1), dy, static_cast<const T*>(wt), T(0), dx);
      return;
    }
    T *s2 = scratch, *ds2 = scratch + OI, *x2 = scratch + 2 * OI, *v = x2 + n * in_;
    lrt_backward(ctx, noise, ops::LrtLayout{n, out_, 1, false}, T(opt_.e0), dy, v, v,  // dL/dv
                 device_step);
    gemm(ctx, Op::T, Op::N, out_, in_, n, T(1), v, x2, T(0), ds2);  // ds2 (O, I) = dV^T x2
    variance_backward(ctx, log_param(), w.param, s2, ds2, w.dparam, OI);
    if (dx) {
      gemm(ctx, Op::N, Op::N, n, in_, out_, T(1), v, s2, T(0), dx);  // t (N, I) = dV s2
      lrt_input_backward(ctx, n * in_, x, dx, static_cast<const T*>(nullptr), dx);
    }
  }

 private:
  bool log_param() const { return opt_.param == VarianceParam::log_sigma2; }
  bool gaussian() const { return opt_.dist == WeightDist::gaussian; }
  bool bernoulli() const { return opt_.dist == WeightDist::bernoulli; }
  int64_t in_, out_;
  VarianceOptions opt_;
};

// Convolution: x and dx (N, C, H, W), y and dy (N, O, OH, OW), param and dparam (O, C, KH, KW)
// = (O, R) with R = C KH KW, bias and dbias (O). ConvOptions::bias is ignored (as on the CPU):
// VarianceOptions::bias decides. With P = OH OW, scratch_size(in) = 2 O R + N P (R + O) + the
// split-K space of the ds2 GEMM (cuda/gemm.hpp):
//   s2 (O, R) | ds2 (O, R) | squared columns (R, N P) | v channel-major (O, N P) | split-K
// (backward overwrites v with dL/dv and the squared columns with s2^T dL/dv). Bernoulli and
// uniform: w | xi | dw (O, R) | columns (R, N P) | channel-major y or dy (O, N P) | split-K.
template <class T>
class VarianceConv2d {
 public:
  VarianceConv2d(int64_t in_c, int64_t out_c, ConvOptions conv, VarianceOptions o = {})
      : in_c_(in_c), out_c_(out_c), conv_(conv), opt_(o) {
    check(in_c > 0 && out_c > 0 && conv.kernel > 0 && conv.stride > 0 && conv.pad >= 0,
          "cuda::VarianceConv2d", "positive channels, kernel and stride, non-negative padding",
          "in ", in_c, ", out ", out_c, ", kernel ", conv.kernel, ", stride ", conv.stride,
          ", pad ", conv.pad);
  }

  const VarianceOptions& options() const { return opt_; }
  // The geometry for an input (N, C, H, W); throws unless C matches and the kernel fits.
  ops::ConvGeometry geometry(const Shape& in) const {
    return layer_geometry("cuda::VarianceConv2d", in_c_, out_c_, conv_, in);
  }
  Shape output_shape(const Shape& in) const {
    const ops::ConvGeometry g = geometry(in);
    return Shape(in.n, out_c_, g.out_h(), g.out_w());
  }
  int64_t scratch_size(const Shape& in) const {
    const ops::ConvGeometry g = geometry(in);
    const int64_t OR = g.out_c * g.rows(), NP = in.n * g.plane();
    return (gaussian() ? 2 : 3) * OR + NP * (g.rows() + g.out_c) +
           split_k_workspace(g.out_c, g.rows(), NP);
  }

  void forward(GpuContext& ctx, const VarianceTensors<T>& w, const Shape& in, const T* x, T* y,
               T* scratch, const BatchNoise& noise, PredictMode mode,
               const uint32_t* device_step = nullptr) const {
    const ops::ConvGeometry g = geometry(in);
    detail::expect_tensors(w, opt_, false, "VarianceConv2d");
    const int64_t n = in.n, R = g.rows(), OR = g.out_c * R, NP = n * g.plane();
    const T* bias = opt_.bias ? w.bias : nullptr;
    if (mode == PredictMode::mean) return bias_forward(ctx, bias, n, g.out_c, g.plane(), y);
    if (!gaussian()) {  // a convolution with w drawn for this step
      T *wt = scratch, *xi = scratch + OR, *cols = scratch + 3 * OR, *y2 = cols + R * NP;
      sample_weights(ctx, unstacked(noise, "cuda::VarianceConv2d"), bernoulli(), log_param(), OR,
                     w.param, wt, xi, device_step);
      im2col_forward(ctx, x, n, g, cols, static_cast<T*>(nullptr));
      gemm(ctx, Op::N, Op::N, g.out_c, NP, R, T(1), static_cast<const T*>(wt),
           static_cast<const T*>(cols), T(0), y2);  // (O, NP) = w cols
      return channel_major_to_nchw(ctx, static_cast<const T*>(y2), bias, n, g.out_c, g.plane(), y);
    }
    T *s2 = scratch, *cols2 = scratch + 2 * OR, *v = cols2 + R * NP;
    variance_forward(ctx, log_param(), w.param, s2, OR);
    im2col_forward(ctx, x, n, g, static_cast<T*>(nullptr), cols2);
    gemm(ctx, Op::N, Op::N, g.out_c, NP, R, T(1), s2, cols2, T(0), v);  // v (O, NP) = s2 cols2
    lrt_forward(ctx, noise, ops::LrtLayout{n, g.out_c, g.plane(), true}, bias, false, T(opt_.e0), v,
                y, device_step);
  }

  void backward(GpuContext& ctx, const VarianceTensors<T>& w, const Shape& in, const T* x,
                const T* dy, T* dx, T* scratch, const BatchNoise& noise, PredictMode mode,
                const uint32_t* device_step = nullptr) const {
    const ops::ConvGeometry g = geometry(in);
    detail::expect_tensors(w, opt_, true, "VarianceConv2d");
    const int64_t n = in.n, R = g.rows(), OR = g.out_c * R, NP = n * g.plane();
    if (opt_.bias) bias_backward(ctx, dy, n, g.out_c, g.plane(), w.dbias);
    if (mode == PredictMode::mean) {
      if (dx) zero(dx, in.numel(), ctx.stream());
      return;
    }
    if (!gaussian()) {
      T *wt = scratch, *xi = scratch + OR, *dw = scratch + 2 * OR, *cols = scratch + 3 * OR,
        *dy2 = cols + R * NP;
      nchw_to_channel_major(ctx, dy, n, g.out_c, g.plane(), dy2);  // dY2 (O, NP)
      gemm_split_k(ctx, Op::N, Op::T, g.out_c, R, NP, T(1), static_cast<const T*>(dy2),
                   static_cast<const T*>(cols), T(0), dw, dy2 + g.out_c * NP);  // dY2 cols^T
      weight_backward(ctx, log_param(), w.param, static_cast<const T*>(xi),
                      static_cast<const T*>(dw), w.dparam, OR);
      if (dx) {
        gemm(ctx, Op::T, Op::N, R, NP, g.out_c, T(1), static_cast<const T*>(wt),
             static_cast<const T*>(dy2), T(0), cols);  // (R, NP) = w^T dY2
        im2col_backward(ctx, static_cast<const T*>(cols), n, g, static_cast<const T*>(nullptr), dx);
      }
      return;
    }
    T *s2 = scratch, *ds2 = scratch + OR, *cols2 = scratch + 2 * OR, *v = cols2 + R * NP;
    lrt_backward(ctx, noise, ops::LrtLayout{n, g.out_c, g.plane(), true}, T(opt_.e0), dy, v, v,
                 device_step);
    gemm_split_k(ctx, Op::N, Op::T, g.out_c, R, NP, T(1), static_cast<const T*>(v),
                 static_cast<const T*>(cols2), T(0), ds2, v + g.out_c * NP);  // ds2 = dV cols2^T
    variance_backward(ctx, log_param(), w.param, s2, ds2, w.dparam, OR);
    if (dx) {
      gemm(ctx, Op::T, Op::N, R, NP, g.out_c, T(1), s2, v, T(0), cols2);  // (R, NP) = s2^T dV
      im2col_backward(ctx, static_cast<const T*>(cols2), n, g, x, dx);    // dx = 2 x * col2im
    }
  }

 private:
  bool log_param() const { return opt_.param == VarianceParam::log_sigma2; }
  bool gaussian() const { return opt_.dist == WeightDist::gaussian; }
  bool bernoulli() const { return opt_.dist == WeightDist::bernoulli; }
  int64_t in_c_, out_c_;
  ConvOptions conv_;
  VarianceOptions opt_;
};

}  // namespace varnet::cuda
