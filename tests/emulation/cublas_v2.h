// A host stand-in for <cublas_v2.h>: the handful of cuBLAS calls the library makes (handles,
// streams, workspaces, math modes and the float/double GEMMs, single, strided-batched and
// batched), for the host emulation of the GPU backend (emulated_runtime.h).
//
// A GEMM checks its arguments as cuBLAS does (CUBLAS_STATUS_INVALID_VALUE for a negative size or
// a leading dimension shorter than a column), and, when it runs, that every operand lies inside
// one device allocation: an operand that reaches past its buffer is a device fault here, where a
// GPU might read a neighbour's memory silently. Products are Eigen's, column-major as cuBLAS's;
// with beta = 0, C is written without being read (it may hold NaN). Under
// CUBLAS_TF32_TENSOR_OP_MATH, float operands are rounded to TF32 (10-bit mantissas, to nearest)
// before the product, which is the precision loss tensor cores add; their summation order is not
// emulated.
#pragma once

#include <cuda_runtime.h>

#include <Eigen/Core>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

enum cublasStatus_t {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_NOT_INITIALIZED = 1,
  CUBLAS_STATUS_ALLOC_FAILED = 3,
  CUBLAS_STATUS_INVALID_VALUE = 7,
  CUBLAS_STATUS_ARCH_MISMATCH = 8,
  CUBLAS_STATUS_MAPPING_ERROR = 11,
  CUBLAS_STATUS_EXECUTION_FAILED = 13,
  CUBLAS_STATUS_INTERNAL_ERROR = 14,
  CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 };
enum cublasMath_t {
  CUBLAS_DEFAULT_MATH = 0,
  CUBLAS_TENSOR_OP_MATH = 1,
  CUBLAS_PEDANTIC_MATH = 2,
  CUBLAS_TF32_TENSOR_OP_MATH = 3,
};

struct cublasContext {
  cudaStream_t stream = nullptr;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
};
using cublasHandle_t = cublasContext*;

inline const char* cublasGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "unknown cublasStatus_t";
}
inline const char* cublasGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return "success";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "the GPU program failed to execute";
    default:
      return "emulated cuBLAS error";
  }
}

inline cublasStatus_t cublasCreate(cublasHandle_t* h) {
  void* probe = nullptr;  // cuBLAS allocates device memory: not allowed during a capture either
  if (cudaMalloc(&probe, 256) != cudaSuccess) return CUBLAS_STATUS_ALLOC_FAILED;
  (void)cudaFree(probe);
  *h = new cublasContext();
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasDestroy(cublasHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->stream = s;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void* workspace, size_t bytes) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes > 0 && !emu::device_range(workspace, bytes)) return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;  // the emulated GEMMs need none
}
inline cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

namespace emu::blas {

// x rounded to TF32 (8-bit exponent, 10-bit mantissa), to nearest even; infinities and NaN kept.
inline float to_tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7F800000u) != 0x7F800000u) {
    u += 0xFFFu + ((u >> 13) & 1u);
    u &= ~0x1FFFu;
  }
  std::memcpy(&x, &u, 4);
  return x;
}

// Column-major stored (rows, cols) with leading dimension ld: the elements it spans.
inline size_t span(int rows, int cols, int ld) {
  return rows == 0 || cols == 0 ? 0 : size_t(ld) * size_t(cols - 1) + size_t(rows);
}

template <class T>
void require_device(const T* p, size_t elements, const char* call, const char* operand) {
  if (elements > 0 && !device_range(p, elements * sizeof(T)))
    throw std::runtime_error(std::string(call) + ": operand " + operand + " " +
                             describe(p, elements * sizeof(T)) +
                             " is not inside one device allocation");
}

// C (m, n) = alpha op(A) op(B) + beta C, column-major, as cublas?gemm computes it.
template <class T>
void gemm_now(const cublasContext& h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
              int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta, T* c, int ldc,
              const char* call) {
  const int ar = ta == CUBLAS_OP_N ? m : k, ac = ta == CUBLAS_OP_N ? k : m;
  const int br = tb == CUBLAS_OP_N ? k : n, bc = tb == CUBLAS_OP_N ? n : k;
  require_device(a, span(ar, ac, lda), call, "A");
  require_device(b, span(br, bc, ldb), call, "B");
  require_device(c, span(m, n, ldc), call, "C");
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
  using In = Eigen::Map<const Mat, 0, Eigen::OuterStride<>>;
  Mat A = In(a, ar, ac, Eigen::OuterStride<>(lda)), B = In(b, br, bc, Eigen::OuterStride<>(ldb));
  if (ta != CUBLAS_OP_N) A.transposeInPlace();
  if (tb != CUBLAS_OP_N) B.transposeInPlace();
  if constexpr (std::is_same_v<T, float>) {
    if (h.math == CUBLAS_TF32_TENSOR_OP_MATH) {
      A = A.unaryExpr([](float x) { return to_tf32(x); });
      B = B.unaryExpr([](float x) { return to_tf32(x); });
    }
  }
  Eigen::Map<Mat, 0, Eigen::OuterStride<>> C(c, m, n, Eigen::OuterStride<>(ldc));
  if (beta == T(0))
    C.noalias() = alpha * (A * B);
  else
    C = alpha * (A * B) + beta * C;
}

inline bool valid(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, int lda, int ldb,
                  int ldc, int batch) {
  auto at_least = [](int ld, int rows) { return ld >= (rows > 1 ? rows : 1); };
  return m >= 0 && n >= 0 && k >= 0 && batch >= 0 && ta != CUBLAS_OP_C && tb != CUBLAS_OP_C &&
         at_least(lda, ta == CUBLAS_OP_N ? m : k) && at_least(ldb, tb == CUBLAS_OP_N ? k : n) &&
         at_least(ldc, m);
}

template <class T>
cublasStatus_t strided(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                       int k, const T* alpha, const T* a, int lda, long long sa, const T* b,
                       int ldb, long long sb, const T* beta, T* c, int ldc, long long sc, int batch,
                       const char* call) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!valid(ta, tb, m, n, k, lda, ldb, ldc, batch)) return CUBLAS_STATUS_INVALID_VALUE;
  const T al = *alpha, be = *beta;  // host pointer mode: read at the call
  const cublasContext ctx = *h;
  const cudaError_t e = detail::enqueue(h->stream, [=] {
    for (int i = 0; i < batch; ++i)
      gemm_now(ctx, ta, tb, m, n, k, al, a + i * sa, lda, b + i * sb, ldb, be, c + i * sc, ldc,
               call);
  });
  return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

template <class T>
cublasStatus_t batched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                       int k, const T* alpha, const T* const* a, int lda, const T* const* b,
                       int ldb, const T* beta, T* const* c, int ldc, int batch, const char* call) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!valid(ta, tb, m, n, k, lda, ldb, ldc, batch)) return CUBLAS_STATUS_INVALID_VALUE;
  const T al = *alpha, be = *beta;
  const cublasContext ctx = *h;
  const cudaError_t e = detail::enqueue(h->stream, [=] {
    // The pointer arrays are device memory, read when the GEMMs run.
    require_device(a, size_t(batch), call, "the array of A pointers");
    require_device(b, size_t(batch), call, "the array of B pointers");
    require_device(c, size_t(batch), call, "the array of C pointers");
    for (int i = 0; i < batch; ++i)
      gemm_now(ctx, ta, tb, m, n, k, al, a[i], lda, b[i], ldb, be, c[i], ldc, call);
  });
  return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

}  // namespace emu::blas

inline cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                  int m, int n, int k, const float* alpha, const float* a, int lda,
                                  const float* b, int ldb, const float* beta, float* c, int ldc) {
  return emu::blas::strided(h, ta, tb, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1,
                            "cublasSgemm");
}
inline cublasStatus_t cublasDgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                  int m, int n, int k, const double* alpha, const double* a,
                                  int lda, const double* b, int ldb, const double* beta, double* c,
                                  int ldc) {
  return emu::blas::strided(h, ta, tb, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1,
                            "cublasDgemm");
}
inline cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta,
                                                cublasOperation_t tb, int m, int n, int k,
                                                const float* alpha, const float* a, int lda,
                                                long long sa, const float* b, int ldb, long long sb,
                                                const float* beta, float* c, int ldc, long long sc,
                                                int batch) {
  return emu::blas::strided(h, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc,
                            batch, "cublasSgemmStridedBatched");
}
inline cublasStatus_t cublasDgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta,
                                                cublasOperation_t tb, int m, int n, int k,
                                                const double* alpha, const double* a, int lda,
                                                long long sa, const double* b, int ldb,
                                                long long sb, const double* beta, double* c,
                                                int ldc, long long sc, int batch) {
  return emu::blas::strided(h, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc,
                            batch, "cublasDgemmStridedBatched");
}
inline cublasStatus_t cublasSgemmBatched(cublasHandle_t h, cublasOperation_t ta,
                                         cublasOperation_t tb, int m, int n, int k,
                                         const float* alpha, const float* const* a, int lda,
                                         const float* const* b, int ldb, const float* beta,
                                         float* const* c, int ldc, int batch) {
  return emu::blas::batched(h, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, batch,
                            "cublasSgemmBatched");
}
inline cublasStatus_t cublasDgemmBatched(cublasHandle_t h, cublasOperation_t ta,
                                         cublasOperation_t tb, int m, int n, int k,
                                         const double* alpha, const double* const* a, int lda,
                                         const double* const* b, int ldb, const double* beta,
                                         double* const* c, int ldc, int batch) {
  return emu::blas::batched(h, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, batch,
                            "cublasDgemmBatched");
}
