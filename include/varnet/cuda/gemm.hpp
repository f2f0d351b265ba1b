// Row-major GEMM on cuBLAS: C = alpha op(A) op(B) + beta C, in float or double.
//
// varnet stores matrices row-major (as the CPU backend's Eigen maps); cuBLAS is column-major.
// A row-major (r, c) matrix with row stride ld is, read column-major, its transpose (c, r) with
// leading dimension ld. So C^T = op(B)^T op(A)^T is computed by one column-major call with the
// operands swapped, the same transpose flags, and m and n swapped; nothing is copied.
//
// Shapes (row-major): op(A) (m, k), op(B) (k, n), C (m, n). A is stored (m, k) when
// opa == Op::N and (k, m) when Op::T; likewise B is (k, n) or (n, k).
#pragma once

#include <cublas_v2.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "kernels/elementwise.cuh"
#include "varnet/core/error.hpp"
#include "varnet/cuda/check.hpp"
#include "varnet/cuda/handle.hpp"
#include "varnet/cuda/launch.hpp"

namespace varnet::cuda {

enum class Op { N, T };

namespace detail {
inline cublasOperation_t to_cublas(Op o) {
  return o == Op::N ? CUBLAS_OP_N : CUBLAS_OP_T;
}
// Row strides must cover a stored row (cuBLAS checks too, but this names our arguments).
inline void check_strides(Op opa, Op opb, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
                          int64_t ldc) {
  const int64_t need_a = opa == Op::N ? k : m, need_b = opb == Op::N ? n : k;
  check(lda >= need_a && lda >= 1 && ldb >= need_b && ldb >= 1 && ldc >= n, "cuda::gemm",
        "row strides at least the stored row lengths (and >= 1)", "m ", m, ", n ", n, ", k ", k,
        ", lda ", lda, ", ldb ", ldb, ", ldc ", ldc);
}
inline int to_int(int64_t v, const char* what) {
  check(v >= 0 && v <= INT_MAX, "cuda::gemm", str(what, " in [0, 2^31)"), what, " = ", v);
  return static_cast<int>(v);
}
inline cublasStatus_t gemm_call(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                                int n, int k, const float* alpha, const float* a, int lda,
                                const float* b, int ldb, const float* beta, float* c, int ldc) {
  return cublasSgemm(h, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
inline cublasStatus_t gemm_call(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                                int n, int k, const double* alpha, const double* a, int lda,
                                const double* b, int ldb, const double* beta, double* c, int ldc) {
  return cublasDgemm(h, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
}  // namespace detail

// Row-major C (m, n) = alpha op(A) op(B) + beta C with explicit row strides (lda, ldb, ldc:
// elements between consecutive rows of A, B, C as stored). Enqueued on ctx's stream.
template <class T>
void gemm(GpuContext& ctx, Op opa, Op opb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  const int im = detail::to_int(m, "m"), in = detail::to_int(n, "n"), ik = detail::to_int(k, "k");
  const int ilda = detail::to_int(lda, "lda"), ildb = detail::to_int(ldb, "ldb"),
            ildc = detail::to_int(ldc, "ldc");
  detail::check_strides(opa, opb, m, n, k, lda, ldb, ldc);
  // Column-major: C^T (n, m) = op(B)^T (n, k) op(A)^T (k, m).
  VARNET_CUBLAS_CHECK(detail::gemm_call(ctx.blas(), detail::to_cublas(opb), detail::to_cublas(opa),
                                        in, im, ik, &alpha, b, ildb, a, ilda, &beta, c, ildc));
}

// Packed operands (row strides equal to the stored row lengths).
template <class T>
void gemm(GpuContext& ctx, Op opa, Op opb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          const T* b, T beta, T* c) {
  const int64_t lda = std::max<int64_t>(1, opa == Op::N ? k : m);
  const int64_t ldb = std::max<int64_t>(1, opb == Op::N ? n : k);
  gemm(ctx, opa, opb, m, n, k, alpha, a, lda, b, ldb, beta, c, std::max<int64_t>(1, n));
}

// ---- split-K: GEMMs whose reduction is far longer than their output is large ----
//
// A convolution's weight gradient dW (O, R) = dY (O, N P) cols^T sums over N P (131,072 for a
// 32x32 layer at batch 128) but has few outputs (O R, e.g. 64 x 576): cuBLAS then runs a handful
// of output tiles, each over the whole reduction, on a few of the GPU's SMs. Splitting the
// reduction into S chunks (one strided-batched GEMM into S partial results, then a fixed-order
// sum) fills the GPU and stays deterministic.

// The number of chunks for C (m, n) over a reduction of k: 1 (no split) unless k is long
// (>= 4096 and >= 16 max(m, n)) and the output has too few 128 x 128 tiles to fill the GPU;
// then enough chunks for about 256 tiles in all, each chunk at least 256 deep, at most 64.
// split_k_enabled() = false turns this split off (benchmarks compare both; set it before any
// network sizes its scratch, as the workspace size follows it). gemm_parts below ignores it.
inline bool& split_k_enabled() {
  static bool on = true;
  return on;
}
inline int64_t split_k_chunks(int64_t m, int64_t n, int64_t k) {
  if (!split_k_enabled() || k < 4096 || k < 16 * std::max(m, n)) return 1;
  const int64_t tiles = ((m + 127) / 128) * ((n + 127) / 128);
  if (tiles >= 128) return 1;
  return std::clamp<int64_t>((256 + tiles - 1) / tiles, 1, std::min<int64_t>(64, k / 256));
}
// Elements of T the split needs beside C: one (m, n) partial result per chunk.
inline int64_t split_k_workspace(int64_t m, int64_t n, int64_t k) {
  const int64_t s = split_k_chunks(m, n, k);
  return s > 1 ? s * m * n : 0;
}

namespace detail {
inline cublasStatus_t gemm_strided_call(cublasHandle_t h, cublasOperation_t ta,
                                        cublasOperation_t tb, int m, int n, int k,
                                        const float* alpha, const float* a, int lda, long long sa,
                                        const float* b, int ldb, long long sb, const float* beta,
                                        float* c, int ldc, long long sc, int batch) {
  return cublasSgemmStridedBatched(h, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc,
                                   sc, batch);
}
inline cublasStatus_t gemm_strided_call(cublasHandle_t h, cublasOperation_t ta,
                                        cublasOperation_t tb, int m, int n, int k,
                                        const double* alpha, const double* a, int lda, long long sa,
                                        const double* b, int ldb, long long sb, const double* beta,
                                        double* c, int ldc, long long sc, int batch) {
  return cublasDgemmStridedBatched(h, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc,
                                   sc, batch);
}
inline cublasStatus_t gemm_batched_call(cublasHandle_t h, cublasOperation_t ta,
                                        cublasOperation_t tb, int m, int n, int k,
                                        const float* alpha, const float* const* a, int lda,
                                        const float* const* b, int ldb, const float* beta,
                                        float* const* c, int ldc, int batch) {
  return cublasSgemmBatched(h, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, batch);
}
inline cublasStatus_t gemm_batched_call(cublasHandle_t h, cublasOperation_t ta,
                                        cublasOperation_t tb, int m, int n, int k,
                                        const double* alpha, const double* const* a, int lda,
                                        const double* const* b, int ldb, const double* beta,
                                        double* const* c, int ldc, int batch) {
  return cublasDgemmBatched(h, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, batch);
}
}  // namespace detail

// `batch` row-major GEMMs C_i (m, n) = alpha op(A_i) op(B_i) + beta C_i, with A_i = a + i sa
// (likewise B_i, C_i) and the row strides lda, ldb, ldc of gemm().
template <class T>
void gemm_strided(GpuContext& ctx, Op opa, Op opb, int64_t m, int64_t n, int64_t k, T alpha,
                  const T* a, int64_t lda, int64_t sa, const T* b, int64_t ldb, int64_t sb, T beta,
                  T* c, int64_t ldc, int64_t sc, int64_t batch) {
  if (m == 0 || n == 0 || batch == 0) return;
  detail::check_strides(opa, opb, m, n, k, lda, ldb, ldc);
  VARNET_CUBLAS_CHECK(detail::gemm_strided_call(
      ctx.blas(), detail::to_cublas(opb), detail::to_cublas(opa), detail::to_int(n, "n"),
      detail::to_int(m, "m"), detail::to_int(k, "k"), &alpha, b, detail::to_int(ldb, "ldb"), sb, a,
      detail::to_int(lda, "lda"), sa, &beta, c, detail::to_int(ldc, "ldc"), sc,
      detail::to_int(batch, "batch")));
}

// As gemm_strided, with the operands' addresses in device arrays of `batch` pointers each (for
// batches no single stride describes).
template <class T>
void gemm_batched(GpuContext& ctx, Op opa, Op opb, int64_t m, int64_t n, int64_t k, T alpha,
                  const T* const* a, int64_t lda, const T* const* b, int64_t ldb, T beta,
                  T* const* c, int64_t ldc, int64_t batch) {
  if (m == 0 || n == 0 || batch == 0) return;
  detail::check_strides(opa, opb, m, n, k, lda, ldb, ldc);
  VARNET_CUBLAS_CHECK(detail::gemm_batched_call(
      ctx.blas(), detail::to_cublas(opb), detail::to_cublas(opa), detail::to_int(n, "n"),
      detail::to_int(m, "m"), detail::to_int(k, "k"), &alpha, b, detail::to_int(ldb, "ldb"), a,
      detail::to_int(lda, "lda"), &beta, c, detail::to_int(ldc, "ldc"),
      detail::to_int(batch, "batch")));
}

// c (count) = alpha (the sum of `chunks` partial arrays of `count`, in order) + beta c.
template <class T>
void sum_partials(GpuContext& ctx, int64_t count, int64_t chunks, const T* partial, T alpha, T beta,
                  T* c) {
  if (count <= 0) return;
  launch(kernels::sum_partials_kernel<T>, grid_for(count), kThreads, ctx.stream(), count, chunks,
         partial, alpha, beta, c);
  VARNET_CUDA_CHECK_LAUNCH("sum_partials_kernel");
}

namespace detail {
// partial_s (m, n) = op(A_s) op(B_s) for s < chunks, A_s and B_s the s-th run of kc terms of a
// reduction of k (packed operands): one strided-batched GEMM, the partials packed m * n apart.
template <class T>
void gemm_chunks(GpuContext& ctx, Op opa, Op opb, int64_t m, int64_t n, int64_t k, int64_t kc,
                 int64_t chunks, const T* a, const T* b, T* partial) {
  const int64_t lda = opa == Op::N ? k : m, ldb = opb == Op::N ? n : k;
  // Moving kc along the reduction: along a row of A (m, k), or down kc rows of A stored (k, m).
  const int64_t step_a = opa == Op::N ? kc : kc * lda, step_b = opb == Op::N ? kc * ldb : kc;
  const T one = T(1), zero = T(0);
  // Column-major, as gemm(): partial_s^T (n, m) = op(B_s)^T op(A_s)^T.
  VARNET_CUBLAS_CHECK(
      gemm_strided_call(ctx.blas(), to_cublas(opb), to_cublas(opa), to_int(n, "n"), to_int(m, "m"),
                        to_int(kc, "k"), &one, b, to_int(ldb, "ldb"), step_b, a, to_int(lda, "lda"),
                        step_a, &zero, partial, to_int(n, "n"), m * n, to_int(chunks, "chunks")));
}
}  // namespace detail

// gemm() on packed operands, split along k per split_k_chunks: workspace holds
// split_k_workspace(m, n, k) elements (none needed, and null allowed, when it is 0). The result
// equals gemm()'s up to the order of the float additions.
template <class T>
void gemm_split_k(GpuContext& ctx, Op opa, Op opb, int64_t m, int64_t n, int64_t k, T alpha,
                  const T* a, const T* b, T beta, T* c, T* workspace) {
  const int64_t chunks = split_k_chunks(m, n, k);
  if (chunks <= 1 || m == 0 || n == 0) return gemm(ctx, opa, opb, m, n, k, alpha, a, b, beta, c);
  check(workspace != nullptr, "cuda::gemm_split_k",
        str("a workspace of ", split_k_workspace(m, n, k), " elements"), "a null pointer");
  const int64_t lda = opa == Op::N ? k : m, ldb = opb == Op::N ? n : k;
  const int64_t kc = k / chunks, rest = k - chunks * kc;
  detail::gemm_chunks(ctx, opa, opb, m, n, k, kc, chunks, a, b, workspace);
  sum_partials(ctx, m * n, chunks, static_cast<const T*>(workspace), alpha, beta, c);
  if (rest > 0) {  // the last k - chunks kc terms, added to C
    const int64_t skip_a = opa == Op::N ? chunks * kc : chunks * kc * lda,
                  skip_b = opb == Op::N ? chunks * kc * ldb : chunks * kc;
    gemm(ctx, opa, opb, m, n, rest, alpha, a + skip_a, lda, b + skip_b, ldb, T(1), c, n);
  }
}

// ---- split-K into partial results that the consumer sums ----
//
// A dense layer's output variance v (N, O) = x2 (N, I) s2^T at LeNet's fc1 shape (128 x 800 x
// 500) is a handful of 128 x 128 output tiles, each over the whole reduction: cuBLAS alone took
// 0.027 ms for its 0.1 GFLOP (benchmarks/NOTES.md section 9). Split into chunks of the reduction,
// the partial products run on many more SMs, and the LRT epilogue that reads v sums them (in a
// fixed order) on its way, so the split costs no launch of its own.

// The number of partial results for C (m, n) over a reduction of k: 1 (no split) when C is
// empty, has at least 32 tiles of 128 x 128, or k < 256; else the largest divisor of k that is
// at most ceil(64 / tiles) and leaves chunks at least 64 deep (1 when there is none). A pure
// function of the shape: a layer sizes its scratch with it and later splits by it.
inline int64_t gemm_parts(int64_t m, int64_t n, int64_t k) {
  const int64_t tiles = ((m + 127) / 128) * ((n + 127) / 128);
  if (tiles == 0 || tiles >= 32 || k < 256) return 1;
  const int64_t target = std::min<int64_t>((64 + tiles - 1) / tiles, k / 64);
  for (int64_t d = target; d > 1; --d)
    if (k % d == 0) return d;
  return 1;
}

// out_s (m, n) = op(A_s) op(B_s) for the `parts` equal chunks s of the reduction, packed m * n
// apart in `out` (parts = 1: out = op(A) op(B)). parts must divide k.
template <class T>
void gemm_parts(GpuContext& ctx, Op opa, Op opb, int64_t m, int64_t n, int64_t k, const T* a,
                const T* b, int64_t parts, T* out) {
  check(parts >= 1 && k % parts == 0, "cuda::gemm_parts", "a number of parts that divides k", parts,
        " parts of k = ", k);
  if (parts == 1 || m == 0 || n == 0) return gemm(ctx, opa, opb, m, n, k, T(1), a, b, T(0), out);
  detail::gemm_chunks(ctx, opa, opb, m, n, k, k / parts, parts, a, b, out);
}

}  // namespace varnet::cuda
