// Host launchers for the GPU kernels in kernels/: one function <op>_<direction> per kernel
// <op>_<direction>_kernel, taking the GpuContext whose stream it runs on. Each checks its
// arguments (varnet::Error), launches asynchronously, and checks the launch.
//
// They mirror the CPU operations' signatures and layouts (ops::LrtLayout, ops::ConvGeometry, the
// (N, O, P) and channel-major (O, N * P) conventions), so a layer written against the CPU ops
// reads the same on the GPU. All pointers are device pointers.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "varnet/layers/conv2d.hpp"
#include "varnet/nn/loss.hpp"
#include "varnet/ops/conv.hpp"
#include "varnet/ops/lrt.hpp"

#include "kernels/adam.cuh"
#include "kernels/batchnorm.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/im2col.cuh"
#include "kernels/lrt.cuh"
#include "kernels/pool.cuh"
#include "kernels/softmax_xent.cuh"
#include "kernels/weights.cuh"
#include "varnet/core/error.hpp"
#include "varnet/core/random.hpp"
#include "varnet/core/tensor.hpp"
#include "varnet/cuda/check.hpp"
#include "varnet/cuda/device_buffer.hpp"
#include "varnet/cuda/handle.hpp"
#include "varnet/cuda/launch.hpp"

namespace varnet::cuda {

inline kernels::LrtShape lrt_shape(const ops::LrtLayout& L) {
  check(L.n >= 0 && L.o > 0 && L.p > 0, "cuda LRT", "n >= 0, o > 0, p > 0", "n ", L.n, ", o ", L.o,
        ", p ", L.p);
  kernels::LrtShape s;
  s.n = L.n;
  s.o = L.o;
  s.p = L.p;
  s.channel_major = L.channel_major;
  return s;
}

// The geometry of convolution layer `layer` (in_c -> out_c channels, options o) for an input
// (N, C, H, W); throws unless C matches and the kernel fits.
inline ops::ConvGeometry layer_geometry(const char* layer, int64_t in_c, int64_t out_c,
                                        const ConvOptions& o, const Shape& in) {
  check(in.c == in_c && in.h + 2 * o.pad >= o.kernel && in.w + 2 * o.pad >= o.kernel && in.n >= 0,
        layer, str("input (N, ", in_c, ", H, W) with H, W + 2 pad >= ", o.kernel), in);
  return ops::ConvGeometry{in_c, in.h, in.w, out_c, o.kernel, o.kernel, o.stride, o.pad};
}

inline kernels::ConvShape conv_shape(const ops::ConvGeometry& g) {
  check(g.in_c > 0 && g.in_h > 0 && g.in_w > 0 && g.out_c > 0 && g.k_h > 0 && g.k_w > 0 &&
            g.stride > 0 && g.pad >= 0 && g.out_h() > 0 && g.out_w() > 0,
        "cuda convolution", "positive sizes, kernel and stride, padding >= 0, output >= 1x1", "C ",
        g.in_c, ", H ", g.in_h, ", W ", g.in_w, ", O ", g.out_c, ", kernel ", g.k_h, "x", g.k_w,
        ", stride ", g.stride, ", pad ", g.pad);
  return kernels::make_conv_shape(g);
}

// ---- LRT (kernels/lrt.cuh) ----

// y (N, O, P) = mean + eps * sqrt(v + e0); mean = y (add_to_y) or bias[o] (or 0). v is kept
// (with parts > 1, its first part becomes the sum).
// step, when not null, is a device word that replaces the key's step when the kernel runs
// (graphs). A NoiseKey converts to a BatchNoise of one sample; a stacked one draws as the CPU's
// ops::lrt_forward.
// With parts > 1, v holds that many partial results of the variance, packed (cuda::gemm_parts);
// they are summed on the way and the sum left in the first, where lrt_backward reads v.
template <class T>
void lrt_forward(GpuContext& ctx, const BatchNoise& noise, const ops::LrtLayout& L, const T* bias,
                 bool add_to_y, T e0, T* v, T* y, const uint32_t* step = nullptr,
                 int64_t parts = 1) {
  const kernels::LrtShape s = lrt_shape(L);
  if (s.numel() == 0) return;
  check_stacked_rows(noise, L.n, "cuda::lrt_forward");
  check(parts >= 1 && parts < 1024, "cuda::lrt_forward", "1 to 1023 partial variances", parts);
  launch(kernels::lrt_forward_kernel<T>, grid_for(noise.groups(s.numel(), s.o * s.p)), kThreads,
         ctx.stream(), noise, step, s, bias, add_to_y, e0, v, int(parts), s.numel(), y);
  VARNET_CUDA_CHECK_LAUNCH("lrt_forward_kernel");
}

// dv = dL/dv = dy * eps / (2 sqrt(v + e0)) with eps recomputed from the noise; dv may be v.
template <class T>
void lrt_backward(GpuContext& ctx, const BatchNoise& noise, const ops::LrtLayout& L, T e0,
                  const T* dy, const T* v, T* dv, const uint32_t* step = nullptr) {
  const kernels::LrtShape s = lrt_shape(L);
  if (s.numel() == 0) return;
  check_stacked_rows(noise, L.n, "cuda::lrt_backward");
  launch(kernels::lrt_backward_kernel<T>, grid_for(noise.groups(s.numel(), s.o * s.p)), kThreads,
         ctx.stream(), noise, step, s, e0, dy, v, dv);
  VARNET_CUDA_CHECK_LAUNCH("lrt_backward_kernel");
}

// dx = dx_mean + t * (2 x) over `count` elements; dx_mean may be null; dx may alias t.
template <class T>
void lrt_input_backward(GpuContext& ctx, int64_t count, const T* x, const T* t, const T* dx_mean,
                        T* dx) {
  if (count <= 0) return;
  launch(kernels::lrt_input_backward_kernel<T>, grid_for(count), kThreads, ctx.stream(), count, x,
         t, dx_mean, dx);
  VARNET_CUDA_CHECK_LAUNCH("lrt_input_backward_kernel");
}

// ---- im2col / col2im (kernels/im2col.cuh) ----

// cols and/or cols2 (R, N * P) from x (N, C, H, W): the columns and their squares; either may
// be null.
template <class T>
void im2col_forward(GpuContext& ctx, const T* x, int64_t n, const ops::ConvGeometry& g, T* cols,
                    T* cols2) {
  const kernels::ConvShape s = conv_shape(g);
  check(n >= 0, "cuda::im2col_forward", "a batch size >= 0", n);
  const int64_t total = s.rows() * n * s.plane(), x_size = n * s.in_c * s.in_h * s.in_w;
  if (total == 0 || (!cols && !cols2)) return;
  const dim3 grid = detail::grid_2d(n * s.plane(), s.rows());
  if (fits_int32(total) && fits_int32(x_size))
    launch(kernels::im2col_forward_kernel<T, int32_t>, grid, kThreads, ctx.stream(), x,
           static_cast<int32_t>(n), s, cols, cols2);
  else
    launch(kernels::im2col_forward_kernel<T, int64_t>, grid, kThreads, ctx.stream(), x, n, s, cols,
           cols2);
  VARNET_CUDA_CHECK_LAUNCH("im2col_forward_kernel");
}

// col2im: dx (N, C, H, W) = the adjoint of im2col applied to dcols (R, N * P); overwrites dx.
// With times_2x (a device pointer to x), dx = 2 x * col2im(dcols) instead.
template <class T>
void im2col_backward(GpuContext& ctx, const T* dcols, int64_t n, const ops::ConvGeometry& g,
                     const T* times_2x, T* dx) {
  const kernels::ConvShape s = conv_shape(g);
  check(n >= 0, "cuda::im2col_backward", "a batch size >= 0", n);
  const int64_t total = n * s.in_c * s.in_h * s.in_w, cols_size = s.rows() * n * s.plane();
  if (total == 0) return;
  const dim3 grid = detail::grid_2d(s.in_h * s.in_w, n * s.in_c);
  const bool small = fits_int32(total) && fits_int32(cols_size), unit = s.stride == 1;
  if (small && unit)
    launch(kernels::im2col_backward_kernel<T, int32_t, true>, grid, kThreads, ctx.stream(), dcols,
           static_cast<int32_t>(n), s, times_2x, dx);
  else if (small)
    launch(kernels::im2col_backward_kernel<T, int32_t, false>, grid, kThreads, ctx.stream(), dcols,
           static_cast<int32_t>(n), s, times_2x, dx);
  else
    launch(kernels::im2col_backward_kernel<T, int64_t, false>, grid, kThreads, ctx.stream(), dcols,
           n, s, times_2x, dx);
  VARNET_CUDA_CHECK_LAUNCH("im2col_backward_kernel");
}

// ---- elementwise (kernels/elementwise.cuh) ----

// s2 = p^2, or exp(p) when log_sigma2.
template <class T>
void variance_forward(GpuContext& ctx, bool log_sigma2, const T* p, T* s2, int64_t count) {
  if (count <= 0) return;
  launch(kernels::variance_forward_kernel<T>, grid_for(count), kThreads, ctx.stream(), count,
         log_sigma2, p, s2);
  VARNET_CUDA_CHECK_LAUNCH("variance_forward_kernel");
}

// dp += ds2 * d sigma2 / dp.
template <class T>
void variance_backward(GpuContext& ctx, bool log_sigma2, const T* p, const T* s2, const T* ds2,
                       T* dp, int64_t count) {
  if (count <= 0) return;
  launch(kernels::variance_backward_kernel<T>, grid_for(count), kThreads, ctx.stream(), count,
         log_sigma2, p, s2, ds2, dp);
  VARNET_CUDA_CHECK_LAUNCH("variance_backward_kernel");
}

// s2 = p^2 (or exp(p) when log_sigma2) over count_s, and x2 = x * x over count_x, in one launch.
template <class T>
void variance_square_forward(GpuContext& ctx, bool log_sigma2, const T* p, T* s2, int64_t count_s,
                             const T* x, T* x2, int64_t count_x) {
  const int64_t groups =
      (std::max<int64_t>(count_s, 0) + 3) / 4 + (std::max<int64_t>(count_x, 0) + 3) / 4;
  if (groups == 0) return;
  launch(kernels::variance_square_forward_kernel<T>, grid_for(groups), kThreads, ctx.stream(),
         std::max<int64_t>(count_s, 0), log_sigma2, p, s2, std::max<int64_t>(count_x, 0), x, x2);
  VARNET_CUDA_CHECK_LAUNCH("variance_square_forward_kernel");
}

// y = x * x (y may be x).
template <class T>
void square_forward(GpuContext& ctx, const T* x, T* y, int64_t count) {
  if (count <= 0) return;
  launch(kernels::square_forward_kernel<T>, grid_for(count), kThreads, ctx.stream(), count, x, y);
  VARNET_CUDA_CHECK_LAUNCH("square_forward_kernel");
}

// y = max(x, 0) (y may be x).
template <class T>
void relu_forward(GpuContext& ctx, const T* x, T* y, int64_t count) {
  if (count <= 0) return;
  launch(kernels::relu_forward_kernel<T>, grid_for(count), kThreads, ctx.stream(), count, x, y);
  VARNET_CUDA_CHECK_LAUNCH("relu_forward_kernel");
}

// dx = y > 0 ? dy : 0 with y the saved output (dx may be dy).
template <class T>
void relu_backward(GpuContext& ctx, const T* y, const T* dy, T* dx, int64_t count) {
  if (count <= 0) return;
  launch(kernels::relu_backward_kernel<T>, grid_for(count), kThreads, ctx.stream(), count, y, dy,
         dx);
  VARNET_CUDA_CHECK_LAUNCH("relu_backward_kernel");
}

// y = x > 0 ? x : slope * x (y may be x).
template <class T>
void leaky_relu_forward(GpuContext& ctx, T slope, const T* x, T* y, int64_t count) {
  if (count <= 0) return;
  launch(kernels::leaky_relu_forward_kernel<T>, grid_for(count), kThreads, ctx.stream(), count,
         slope, x, y);
  VARNET_CUDA_CHECK_LAUNCH("leaky_relu_forward_kernel");
}

// dx = x > 0 ? dy : slope * dy with x the layer's input (dx may be dy).
template <class T>
void leaky_relu_backward(GpuContext& ctx, T slope, const T* x, const T* dy, T* dx, int64_t count) {
  if (count <= 0) return;
  launch(kernels::leaky_relu_backward_kernel<T>, grid_for(count), kThreads, ctx.stream(), count,
         slope, x, dy, dx);
  VARNET_CUDA_CHECK_LAUNCH("leaky_relu_backward_kernel");
}

// y = tanh(x) (y may be x).
template <class T>
void tanh_forward(GpuContext& ctx, const T* x, T* y, int64_t count) {
  if (count <= 0) return;
  launch(kernels::tanh_forward_kernel<T>, grid_for(count), kThreads, ctx.stream(), count, x, y);
  VARNET_CUDA_CHECK_LAUNCH("tanh_forward_kernel");
}

// dx = dy (1 - y^2) with y the saved output (dx may be dy).
template <class T>
void tanh_backward(GpuContext& ctx, const T* y, const T* dy, T* dx, int64_t count) {
  if (count <= 0) return;
  launch(kernels::tanh_backward_kernel<T>, grid_for(count), kThreads, ctx.stream(), count, y, dy,
         dx);
  VARNET_CUDA_CHECK_LAUNCH("tanh_backward_kernel");
}

// y (N, O, P) = Y2 (O, N * P) (+ bias[o]; bias may be null).
template <class T>
void channel_major_to_nchw(GpuContext& ctx, const T* y2, const T* bias, int64_t n, int64_t o,
                           int64_t p, T* y) {
  const int64_t total = n * o * p;
  if (total <= 0) return;
  if (fits_int32(total))
    launch(kernels::channel_major_to_nchw_kernel<T, int32_t>, grid_for(total), kThreads,
           ctx.stream(), y2, bias, int32_t(n), int32_t(o), int32_t(p), y);
  else
    launch(kernels::channel_major_to_nchw_kernel<T, int64_t>, grid_for(total), kThreads,
           ctx.stream(), y2, bias, n, o, p, y);
  VARNET_CUDA_CHECK_LAUNCH("channel_major_to_nchw_kernel");
}

// Y2 (O, N * P) = y (N, O, P).
template <class T>
void nchw_to_channel_major(GpuContext& ctx, const T* y, int64_t n, int64_t o, int64_t p, T* y2) {
  const int64_t total = n * o * p;
  if (total <= 0) return;
  if (fits_int32(total))
    launch(kernels::nchw_to_channel_major_kernel<T, int32_t>, grid_for(total), kThreads,
           ctx.stream(), y, int32_t(n), int32_t(o), int32_t(p), y2);
  else
    launch(kernels::nchw_to_channel_major_kernel<T, int64_t>, grid_for(total), kThreads,
           ctx.stream(), y, n, o, p, y2);
  VARNET_CUDA_CHECK_LAUNCH("nchw_to_channel_major_kernel");
}

// y (N, O, P) = bias[o] (0 when bias is null).
template <class T>
void bias_forward(GpuContext& ctx, const T* bias, int64_t n, int64_t o, int64_t p, T* y) {
  const int64_t total = n * o * p;
  if (total <= 0) return;
  launch(kernels::bias_forward_kernel<T>, grid_for(total), kThreads, ctx.stream(), bias, n, o, p,
         y);
  VARNET_CUDA_CHECK_LAUNCH("bias_forward_kernel");
}

// db[o] += sum over n, p of dy (N, O, P).
template <class T>
void bias_backward(GpuContext& ctx, const T* dy, int64_t n, int64_t o, int64_t p, T* db) {
  if (o <= 0 || n * p <= 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(o, 65535));
  launch_with_barriers(kernels::bias_backward_kernel<T>, blocks, kernels::kReduceThreads,
                       ctx.stream(), dy, n, o, p, db);
  VARNET_CUDA_CHECK_LAUNCH("bias_backward_kernel");
}

// ---- weights drawn per step (kernels/weights.cuh) ----

// w, xi (count) = Bernoulli or uniform zero-mean weights from p (see the kernel); step as in
// lrt_forward.
template <class T>
void sample_weights(GpuContext& ctx, const NoiseKey& key, bool bernoulli, bool log_sigma2,
                    int64_t count, const T* p, T* w, T* xi, const uint32_t* step = nullptr) {
  if (count <= 0) return;
  launch(kernels::sample_weights_kernel<T>, grid_for((count + 3) / 4), kThreads, ctx.stream(), key,
         step, bernoulli, log_sigma2, count, p, w, xi);
  VARNET_CUDA_CHECK_LAUNCH("sample_weights_kernel");
}

// dp += dw * dw/dp for the sampled weights w = sd(p) xi.
template <class T>
void weight_backward(GpuContext& ctx, bool log_sigma2, const T* p, const T* xi, const T* dw, T* dp,
                     int64_t count) {
  if (count <= 0) return;
  launch(kernels::weight_backward_kernel<T>, grid_for(count), kThreads, ctx.stream(), count,
         log_sigma2, p, xi, dw, dp);
  VARNET_CUDA_CHECK_LAUNCH("weight_backward_kernel");
}

// ---- Adam (kernels/adam.cuh) ----

// One Adam step over `count` parameters with precomputed scalars (see cuda::Adam).
template <class T>
void adam_update(GpuContext& ctx, int64_t count, const kernels::AdamScalars<T>& a, T* p, const T* g,
                 T* m, T* v) {
  if (count <= 0) return;
  launch(kernels::adam_update_kernel<T>, grid_for(count), kThreads, ctx.stream(), count, a, p, g, m,
         v);
  VARNET_CUDA_CHECK_LAUNCH("adam_update_kernel");
}

// ---- softmax cross-entropy (kernels/softmax_xent.cuh) ----

// Per-row loss and correctness for K = `samples` logits (K, N, C); dlogits (K, N, C) receives
// dL/dlogits of the mean loss when not null. labels, row_loss, row_correct are (N) on the device.
template <class T>
void softmax_xent_forward(GpuContext& ctx, int samples, int64_t n, int64_t c, const T* logits,
                          const int32_t* labels, T* dlogits, T* row_loss, int32_t* row_correct) {
  check(samples >= 1 && samples <= kernels::kMaxXentSamples, "cuda::softmax_xent_forward",
        str("1 to ", kernels::kMaxXentSamples, " samples"), samples);
  check(c > 1 && n >= 0, "cuda::softmax_xent_forward", "logits (N >= 0, C > 1)", "N ", n, ", C ",
        c);
  if (n == 0) return;
  launch(kernels::softmax_xent_forward_kernel<T>, grid_for(n, 128), 128, ctx.stream(), samples, n,
         c, logits, labels, dlogits, row_loss, row_correct);
  VARNET_CUDA_CHECK_LAUNCH("softmax_xent_forward_kernel");
}

// The batch's LossResult from softmax_xent_forward's per-row outputs (waits for the stream).
// Throws varnet::Error if a label was out of range.
template <class T>
LossResult softmax_xent_result(GpuContext& ctx, int64_t n, const T* row_loss,
                               const int32_t* row_correct) {
  const std::vector<T> loss = to_host(row_loss, static_cast<size_t>(n), ctx.stream());
  const std::vector<int32_t> correct = to_host(row_correct, static_cast<size_t>(n), ctx.stream());
  LossResult r;
  for (int64_t i = 0; i < n; ++i) {
    check(correct[size_t(i)] >= 0, "cuda cross entropy", "labels in [0, C)",
          "an out-of-range label at row ", i);
    r.loss += double(loss[size_t(i)]);
    r.correct += correct[size_t(i)];
  }
  if (n > 0) r.loss /= double(n);
  return r;
}

// ---- max pooling (kernels/pool.cuh) ----

// The pooling geometry for x `in` (N, C, H, W), k x k windows, stride s, no padding; throws
// unless the window fits (MaxPool2d::output_shape).
inline kernels::PoolShape pool_shape(const Shape& in, int64_t k, int64_t s) {
  check(k > 0 && s > 0 && in.n >= 0 && in.c > 0 && in.h >= k && in.w >= k, "cuda max pooling",
        str("a positive kernel and stride, an input of at least ", k, "x", k), "input ", in,
        ", kernel ", k, ", stride ", s);
  kernels::PoolShape p;
  p.planes = in.n * in.c;
  p.in_h = in.h;
  p.in_w = in.w;
  p.out_h = (in.h - k) / s + 1;
  p.out_w = (in.w - k) / s + 1;
  p.k = k;
  p.stride = s;
  return p;
}

// y (N, C, OH, OW) = the first maximum of each k x k window (stride s) of x (N, C, H, W).
template <class T>
void max_pool_forward(GpuContext& ctx, const Shape& in, int64_t k, int64_t s, const T* x, T* y) {
  const kernels::PoolShape p = pool_shape(in, k, s);
  const int64_t total = p.planes * p.out_plane(), x_size = p.planes * p.in_plane();
  if (total == 0) return;
  if (fits_int32(x_size))  // x is the larger tensor: indices into either fit
    launch(kernels::max_pool_forward_kernel<T, int32_t>, grid_for(total), kThreads, ctx.stream(), x,
           p, y);
  else
    launch(kernels::max_pool_forward_kernel<T, int64_t>, grid_for(total), kThreads, ctx.stream(), x,
           p, y);
  VARNET_CUDA_CHECK_LAUNCH("max_pool_forward_kernel");
}

// dx (N, C, H, W) = dy routed to each window's first maximum, summed where windows overlap,
// 0 elsewhere. Overwrites dx.
template <class T>
void max_pool_backward(GpuContext& ctx, const Shape& in, int64_t k, int64_t s, const T* x,
                       const T* dy, T* dx) {
  const kernels::PoolShape p = pool_shape(in, k, s);
  const int64_t total = p.planes * p.in_plane();
  if (total == 0) return;
  if (fits_int32(total))
    launch(kernels::max_pool_backward_kernel<T, int32_t>, grid_for(total), kThreads, ctx.stream(),
           x, dy, p, dx);
  else
    launch(kernels::max_pool_backward_kernel<T, int64_t>, grid_for(total), kThreads, ctx.stream(),
           x, dy, p, dx);
  VARNET_CUDA_CHECK_LAUNCH("max_pool_backward_kernel");
}

// ---- batch norm (kernels/batchnorm.cuh) ----

// x (N, C, P) as the batch-norm kernels see it: P = H W (1 for dense inputs (N, C)).
inline kernels::BatchNormShape batch_norm_shape(const Shape& in) {
  check(in.n >= 0 && in.c > 0 && in.h > 0 && in.w > 0, "cuda batch norm",
        "an input (N >= 0, C > 0, H > 0, W > 0)", in);
  kernels::BatchNormShape s;
  s.n = in.n;
  s.c = in.c;
  s.p = in.plane();
  return s;
}

inline unsigned batch_norm_blocks(int64_t channels) {
  return static_cast<unsigned>(std::min<int64_t>(channels, 65535));
}

// Doubles of partial results the batch-norm kernels need for input `in` (BatchNorm's scratch).
inline int64_t batch_norm_partials(const Shape& in) {
  const kernels::BatchNormShape s = batch_norm_shape(in);
  return 3 * s.c * s.chunks();
}

namespace detail {
// The grid of the per-chunk kernels: (chunks, channels).
inline dim3 batch_norm_chunk_grid(const kernels::BatchNormShape& s) {
  check(s.c <= 65535 && s.chunks() < (int64_t(1) << 31), "cuda batch norm",
        "at most 65535 channels and 2^31 chunks per channel", "C ", s.c, ", chunks ", s.chunks());
  return dim3(static_cast<unsigned>(s.chunks()), static_cast<unsigned>(s.c));
}
}  // namespace detail

// y = gamma (x - mean) / sqrt(var + eps) + beta per channel, with batch statistics (a.batch;
// more than one value per channel needed) or the running ones; writes a.used_mean and
// a.inv_std (C each) for backward and, with a.update_running, the running estimates. With batch
// statistics a.partial needs batch_norm_partials(in) doubles.
template <class T>
void batch_norm_forward(GpuContext& ctx, const Shape& in, const T* x,
                        const kernels::BatchNormForwardArgs<T>& a, T* y) {
  const kernels::BatchNormShape s = batch_norm_shape(in);
  check(!a.batch || s.count() > 1, "cuda::batch_norm_forward",
        "more than one value per channel to compute batch statistics", "input of shape ", in);
  check(!a.update_running || a.batch, "cuda::batch_norm_forward",
        "running estimates updated only from batch statistics", "an update without them");
  check(a.gamma && a.beta && a.used_mean && a.inv_std && (!a.batch || a.partial) &&
            ((a.batch && !a.update_running) || (a.running_mean && a.running_var)),
        "cuda::batch_norm_forward",
        "gamma, beta, used_mean, inv_std, partial (and running statistics)", "a null pointer");
  if (s.numel() == 0) return;
  const bool small = fits_int32(s.numel());
  if (a.batch) {
    const dim3 grid = detail::batch_norm_chunk_grid(s);
    if (small)
      launch_with_barriers(kernels::batch_norm_moments_kernel<T, int32_t>, grid,
                           kernels::kBatchNormThreads, ctx.stream(), x, s, a.partial);
    else
      launch_with_barriers(kernels::batch_norm_moments_kernel<T, int64_t>, grid,
                           kernels::kBatchNormThreads, ctx.stream(), x, s, a.partial);
    VARNET_CUDA_CHECK_LAUNCH("batch_norm_moments_kernel");
  }
  launch_with_barriers(kernels::batch_norm_stats_kernel<T>, batch_norm_blocks(s.c),
                       kernels::kBatchNormThreads, ctx.stream(), s, a);
  VARNET_CUDA_CHECK_LAUNCH("batch_norm_stats_kernel");
  if (small)
    launch(kernels::batch_norm_apply_kernel<T, int32_t>, grid_for(s.numel()), kThreads,
           ctx.stream(), x, s, a.gamma, a.beta, a.used_mean, a.inv_std, a.relu, y);
  else
    launch(kernels::batch_norm_apply_kernel<T, int64_t>, grid_for(s.numel()), kThreads,
           ctx.stream(), x, s, a.gamma, a.beta, a.used_mean, a.inv_std, a.relu, y);
  VARNET_CUDA_CHECK_LAUNCH("batch_norm_apply_kernel");
}

// dgamma += sum dy xhat, dbeta += sum dy per channel; dx (N, C, P) overwritten (skipped when
// null) with the gradient through the statistics forward used (a.batch as in forward). a.partial
// needs batch_norm_partials(in) doubles, a.mean_dy and a.proj C values each.
template <class T>
void batch_norm_backward(GpuContext& ctx, const Shape& in, const T* x, const T* dy,
                         const kernels::BatchNormBackwardArgs<T>& a, T* dx) {
  const kernels::BatchNormShape s = batch_norm_shape(in);
  check(a.gamma && a.used_mean && a.inv_std && a.dgamma && a.dbeta && a.partial && a.mean_dy &&
            a.proj,
        "cuda::batch_norm_backward",
        "gamma, used_mean, inv_std, dgamma, dbeta and the partial, mean_dy, proj scratch",
        "a null pointer");
  if (s.numel() == 0) return;
  const bool small = fits_int32(s.numel());
  const dim3 grid = detail::batch_norm_chunk_grid(s);
  if (small)
    launch_with_barriers(kernels::batch_norm_grad_sums_kernel<T, int32_t>, grid,
                         kernels::kBatchNormThreads, ctx.stream(), x, dy, s, a);
  else
    launch_with_barriers(kernels::batch_norm_grad_sums_kernel<T, int64_t>, grid,
                         kernels::kBatchNormThreads, ctx.stream(), x, dy, s, a);
  VARNET_CUDA_CHECK_LAUNCH("batch_norm_grad_sums_kernel");
  launch_with_barriers(kernels::batch_norm_grad_stats_kernel<T>, batch_norm_blocks(s.c),
                       kernels::kBatchNormThreads, ctx.stream(), s, a);
  VARNET_CUDA_CHECK_LAUNCH("batch_norm_grad_stats_kernel");
  if (!dx) return;
  if (small)
    launch(kernels::batch_norm_grad_apply_kernel<T, int32_t>, grid_for(s.numel()), kThreads,
           ctx.stream(), x, dy, s, a, dx);
  else
    launch(kernels::batch_norm_grad_apply_kernel<T, int64_t>, grid_for(s.numel()), kThreads,
           ctx.stream(), x, dy, s, a, dx);
  VARNET_CUDA_CHECK_LAUNCH("batch_norm_grad_apply_kernel");
}

}  // namespace varnet::cuda
