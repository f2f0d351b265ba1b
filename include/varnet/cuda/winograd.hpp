// 3x3 stride-1 convolutions on the GPU by Winograd's F(4x4, 3x3): the launchers for
// kernels/winograd.cuh and the 36 GEMMs between its transforms (ops/winograd.hpp has the
// algorithm, ops/winograd_conv.hpp the CPU twin, which computes the same transforms).
//
// Why: im2col + SGEMM for VGG's 64 -> 64 convolution at 32x32 (batch 128) ran its (131072 x 64 x
// 576) SGEMM at about 10 TFLOP/s and wrote 300 MB of columns (docs/gpu.md). Winograd does a
// quarter of the multiplications, in 36 GEMMs of (O x C) by (C x tiles), and its transformed
// tiles are 2.25 (C + O) values per output pixel against im2col's 9 C.
//
// Scratch (elements of T), kept from forward to backward:
//   U (36, O, C)        the filters' transforms; in backward, the rotated filters' (36, C, O)
//   V (36, C, ld)       the input tiles' transforms (weight gradient); then dx's products
//   M (36, O, ld)       the products; in backward dM, then dy's tiles for dx
//   parts (S, 36, O, C) the weight gradient's S chunks of the reduction over tiles
//   3 * 36 * S pointers (8-byte aligned) for the chunked batched GEMM
// where ld covers both the forward tile grid (padded to S equal chunks) and the input
// gradient's grid.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/winograd.cuh"
#include "varnet/core/error.hpp"
#include "varnet/cuda/check.hpp"
#include "varnet/cuda/gemm.hpp"
#include "varnet/cuda/handle.hpp"
#include "varnet/cuda/launch.hpp"
#include "varnet/ops/winograd_conv.hpp"

namespace varnet::cuda {

// The weight gradient's reduction over T tiles in S chunks, so that its 36 small (O, C) outputs
// run as 36 S GEMMs across the GPU rather than 36 on a few SMs: S = T / 512, in [1, 16].
inline int64_t winograd_chunks(int64_t tiles) {
  return std::clamp<int64_t>(tiles / 512, 1, 16);
}

// Everything the launches of one convolution need, from its geometry and batch.
struct WinogradPlan {
  kernels::WinogradTiles forward;  // output grid, ld padded to chunks * chunk
  kernels::WinogradTiles input;    // the input gradient's grid (dx's plane), ld = its tiles
  int64_t chunks = 1, chunk = 0;   // S and L of the weight gradient's reduction
  int64_t ld = 0;                  // columns of V and M: max(forward.ld, input.ld)
  int64_t u = 0, v = 0, m = 0, parts = 0, pointers = 0;  // region offsets in scratch
  int64_t total = 0;                                     // scratch elements
};

template <class T>
WinogradPlan winograd_plan(const ops::ConvGeometry& g, int64_t n) {
  check(ops::winograd_applies(g) && n >= 0, "cuda Winograd convolution",
        "a 3x3 kernel, stride 1, padding 0-2 and a batch >= 0", "kernel ", g.k_h, "x", g.k_w,
        ", stride ", g.stride, ", pad ", g.pad, ", batch ", n);
  WinogradPlan p;
  p.forward.n = p.input.n = n;
  p.forward.rows = winograd::tiles(g.out_h());
  p.forward.cols = winograd::tiles(g.out_w());
  p.input.rows = winograd::tiles(g.in_h);
  p.input.cols = winograd::tiles(g.in_w);
  const int64_t tiles = p.forward.tiles();
  p.chunks = winograd_chunks(tiles);
  p.chunk = (tiles + p.chunks - 1) / p.chunks;
  p.forward.ld = p.chunks * p.chunk;
  p.input.ld = p.input.tiles();
  p.ld = std::max(p.forward.ld, p.input.ld);
  const int64_t C = g.in_c, O = g.out_c, P = winograd::kPoints;
  p.u = 0;
  p.v = p.u + P * O * C;
  p.m = p.v + P * C * p.ld;
  p.parts = p.m + P * O * p.ld;
  const int64_t per_pointer = int64_t((sizeof(void*) + sizeof(T) - 1) / sizeof(T));
  p.pointers = (p.parts + p.chunks * P * O * C + per_pointer - 1) / per_pointer * per_pointer;
  p.total = p.pointers + 3 * P * p.chunks * per_pointer;
  return p;
}

template <class T>
int64_t winograd_scratch(const ops::ConvGeometry& g, int64_t n) {
  return winograd_plan<T>(g, n).total;
}

namespace detail {
// Calls run(I{}) with I = int32_t when a kernel over (channels, tiles) of planes
// (N, channels, h, w) indexes only int32-sized ranges (its (36, channels, tiles.ld) buffer and its
// planes), else with I = int64_t.
template <class F>
void with_index_type(int64_t channels, int64_t h, int64_t w, const kernels::WinogradTiles& tiles,
                     F&& run) {
  if (fits_int32(winograd::kPoints * channels * tiles.ld) && fits_int32(tiles.n * channels * h * w))
    run(int32_t{});
  else
    run(int64_t{});
}

// v (36, channels, tiles.ld) from planes (N, channels, h, w), windows offset by -pad.
template <class T>
void winograd_inputs(GpuContext& ctx, const T* x, int64_t channels, int64_t h, int64_t w,
                     int64_t pad, const kernels::WinogradTiles& tiles, T* v) {
  const int64_t total = channels * tiles.ld;
  if (total == 0) return;
  with_index_type(channels, h, w, tiles, [&](auto i) {
    using I = decltype(i);
    launch(kernels::winograd_input_kernel<T, I>, grid_for(total), kThreads, ctx.stream(), x,
           I(channels), I(h), I(w), I(pad), tiles, v);
  });
  VARNET_CUDA_CHECK_LAUNCH("winograd_input_kernel");
}

// y (N, channels, h, w) (+ bias) from m (36, channels, tiles.ld).
template <class T>
void winograd_outputs(GpuContext& ctx, const T* m, int64_t channels, int64_t h, int64_t w,
                      const kernels::WinogradTiles& tiles, const T* bias, T* y) {
  const int64_t total = channels * tiles.tiles();
  if (total == 0) return;
  with_index_type(channels, h, w, tiles, [&](auto i) {
    using I = decltype(i);
    launch(kernels::winograd_output_kernel<T, I>, grid_for(total), kThreads, ctx.stream(), m,
           I(channels), I(h), I(w), tiles, bias, y);
  });
  VARNET_CUDA_CHECK_LAUNCH("winograd_output_kernel");
}

// dm (36, channels, tiles.ld) = A dY A^T for the 4x4 blocks of dy (N, channels, h, w).
template <class T>
void winograd_output_grads(GpuContext& ctx, const T* dy, int64_t channels, int64_t h, int64_t w,
                           const kernels::WinogradTiles& tiles, T* dm) {
  const int64_t total = channels * tiles.ld;
  if (total == 0) return;
  with_index_type(channels, h, w, tiles, [&](auto i) {
    using I = decltype(i);
    launch(kernels::winograd_output_grad_kernel<T, I>, grid_for(total), kThreads, ctx.stream(), dy,
           I(channels), I(h), I(w), tiles, dm);
  });
  VARNET_CUDA_CHECK_LAUNCH("winograd_output_grad_kernel");
}

template <class T>
void winograd_filters(GpuContext& ctx, const T* w, int64_t O, int64_t C, bool flipped, T* u) {
  launch(kernels::winograd_filter_kernel<T>, grid_for(O * C), kThreads, ctx.stream(), w, O, C,
         flipped, u);
  VARNET_CUDA_CHECK_LAUNCH("winograd_filter_kernel");
}
}  // namespace detail

// y (N, O, OH, OW) = conv(x, w) (+ bias) for x (N, C, H, W), w (O, C, 3, 3), stride 1.
// scratch: winograd_scratch<T>(g, n) elements, kept for backward.
template <class T>
void winograd_conv_forward(GpuContext& ctx, const T* x, const T* w, const T* bias, T* y, int64_t n,
                           const ops::ConvGeometry& g, T* scratch) {
  const WinogradPlan p = winograd_plan<T>(g, n);
  if (n == 0) return;
  const int64_t C = g.in_c, O = g.out_c, tiles = p.forward.tiles();
  T *u = scratch + p.u, *v = scratch + p.v, *m = scratch + p.m;
  detail::winograd_filters(ctx, w, O, C, false, u);
  detail::winograd_inputs(ctx, x, C, g.in_h, g.in_w, g.pad, p.forward, v);
  // M[xi] (O, tiles) = U[xi] (O, C) V[xi] (C, tiles), for the 36 points.
  gemm_strided(ctx, Op::N, Op::N, O, tiles, C, T(1), static_cast<const T*>(u), C, O * C,
               static_cast<const T*>(v), p.forward.ld, C * p.forward.ld, T(0), m, p.forward.ld,
               O * p.forward.ld, winograd::kPoints);
  detail::winograd_outputs(ctx, static_cast<const T*>(m), O, g.out_h(), g.out_w(), p.forward, bias,
                           y);
}

// dw += the weight gradient (when dw); dx = the input gradient (when dx; overwritten). scratch as
// forward left it: V holds the input's transforms, so x itself is not read again. (The bias
// gradient is the caller's: a sum of dy, as for im2col.)
template <class T>
void winograd_conv_backward(GpuContext& ctx, const T* dy, const T* w, T* dw, T* dx, int64_t n,
                            const ops::ConvGeometry& g, T* scratch) {
  const WinogradPlan p = winograd_plan<T>(g, n);
  if (n == 0) return;
  const int64_t C = g.in_c, O = g.out_c, OC = O * C, P = winograd::kPoints;
  T *u = scratch + p.u, *v = scratch + p.v, *m = scratch + p.m, *parts = scratch + p.parts;
  if (dw) {
    // dM = A dY A^T; partial (s, xi) (O, C) = dM[xi] V[xi]^T over chunk s; dw += G^T (sum) G.
    detail::winograd_output_grads(ctx, dy, O, g.out_h(), g.out_w(), p.forward, m);
    void* ptrs = scratch + p.pointers;
    check(reinterpret_cast<uintptr_t>(ptrs) % alignof(void*) == 0, "cuda Winograd convolution",
          "scratch aligned for pointers", "a misaligned scratch buffer");
    const int64_t batch = P * p.chunks;
    const T** pa = static_cast<const T**>(ptrs);
    const T** pb = pa + batch;
    T** pc = static_cast<T**>(ptrs) + 2 * batch;
    launch(kernels::winograd_grad_pointers_kernel<T>, grid_for(batch), kThreads, ctx.stream(), m, v,
           parts, O, C, p.forward.ld, p.chunk, int(p.chunks), pa, pb, pc);
    VARNET_CUDA_CHECK_LAUNCH("winograd_grad_pointers_kernel");
    gemm_batched(ctx, Op::N, Op::T, O, C, p.chunk, T(1), pa, p.forward.ld, pb, p.forward.ld, T(0),
                 pc, C, batch);
    launch(kernels::winograd_filter_grad_kernel<T>, grid_for(OC), kThreads, ctx.stream(), parts,
           int(p.chunks), O, C, dw);
    VARNET_CUDA_CHECK_LAUNCH("winograd_filter_grad_kernel");
  }
  if (dx) {
    // dx = conv(dy, rotated filters with channels swapped, pad 2 - pad): the forward algorithm.
    detail::winograd_filters(ctx, w, O, C, true, u);
    detail::winograd_inputs(ctx, dy, O, g.out_h(), g.out_w(), 2 - g.pad, p.input, m);
    const int64_t tiles = p.input.tiles();
    gemm_strided(ctx, Op::N, Op::N, C, tiles, O, T(1), static_cast<const T*>(u), O, OC,
                 static_cast<const T*>(m), p.input.ld, O * p.input.ld, T(0), v, p.input.ld,
                 C * p.input.ld, P);
    detail::winograd_outputs(ctx, static_cast<const T*>(v), C, g.in_h, g.in_w, p.input,
                             static_cast<const T*>(nullptr), dx);
  }
}

}  // namespace varnet::cuda
