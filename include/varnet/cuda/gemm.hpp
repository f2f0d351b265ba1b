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

#include "varnet/core/error.hpp"
#include "varnet/cuda/check.hpp"
#include "varnet/cuda/handle.hpp"

namespace varnet::cuda {

enum class Op { N, T };

namespace detail {
inline cublasOperation_t to_cublas(Op o) {
  return o == Op::N ? CUBLAS_OP_N : CUBLAS_OP_T;
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
  // Row strides must cover a stored row (cuBLAS checks too, but this names our arguments).
  const int need_a = opa == Op::N ? ik : im, need_b = opb == Op::N ? in : ik;
  check(ilda >= need_a && ilda >= 1 && ildb >= need_b && ildb >= 1 && ildc >= in, "cuda::gemm",
        "row strides at least the stored row lengths (and >= 1)", "m ", m, ", n ", n, ", k ", k,
        ", lda ", lda, ", ldb ", ldb, ", ldc ", ldc);
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

}  // namespace varnet::cuda
