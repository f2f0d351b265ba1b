// Status checks for the CUDA runtime, cuBLAS and cuRAND, and for kernel launches.
//
// Every call into a CUDA library goes through one of these macros; a failure throws
// varnet::Error naming the call, file:line and the library's status string. Kernel launches are
// asynchronous: VARNET_CUDA_CHECK_LAUNCH catches configuration errors at once, and, when the
// environment variable VARNET_CUDA_SYNC is set to 1, also synchronises the device so that a fault
// inside the kernel is reported at its launch instead of at some later call (for debugging and
// for the parity tests; it costs throughput).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <curand.h>

#include <cstdlib>
#include <string>

#include "varnet/core/error.hpp"

namespace varnet::cuda {

namespace detail {

[[noreturn]] inline void raise(const char* library, const char* call, const char* file, int line,
                               const std::string& status) {
  throw Error(str(library, " error: ", call, " failed at ", file, ":", line, ": ", status));
}

inline void check_cuda(cudaError_t e, const char* call, const char* file, int line) {
  if (e == cudaSuccess) return;
  // A failed runtime call also becomes the "last error"; clear it (when it is not sticky) so that
  // the next launch check does not report it a second time.
  (void)cudaGetLastError();
  raise("CUDA", call, file, line, str(cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}

inline void check_cublas(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  raise("cuBLAS", call, file, line,
        str(cublasGetStatusName(s), " (", cublasGetStatusString(s), ")"));
}

inline const char* curand_status_name(curandStatus_t s) {
  switch (s) {
    case CURAND_STATUS_SUCCESS:
      return "CURAND_STATUS_SUCCESS";
    case CURAND_STATUS_VERSION_MISMATCH:
      return "CURAND_STATUS_VERSION_MISMATCH";
    case CURAND_STATUS_NOT_INITIALIZED:
      return "CURAND_STATUS_NOT_INITIALIZED";
    case CURAND_STATUS_ALLOCATION_FAILED:
      return "CURAND_STATUS_ALLOCATION_FAILED";
    case CURAND_STATUS_TYPE_ERROR:
      return "CURAND_STATUS_TYPE_ERROR";
    case CURAND_STATUS_OUT_OF_RANGE:
      return "CURAND_STATUS_OUT_OF_RANGE";
    case CURAND_STATUS_LENGTH_NOT_MULTIPLE:
      return "CURAND_STATUS_LENGTH_NOT_MULTIPLE";
    case CURAND_STATUS_DOUBLE_PRECISION_REQUIRED:
      return "CURAND_STATUS_DOUBLE_PRECISION_REQUIRED";
    case CURAND_STATUS_LAUNCH_FAILURE:
      return "CURAND_STATUS_LAUNCH_FAILURE";
    case CURAND_STATUS_PREEXISTING_FAILURE:
      return "CURAND_STATUS_PREEXISTING_FAILURE";
    case CURAND_STATUS_INITIALIZATION_FAILED:
      return "CURAND_STATUS_INITIALIZATION_FAILED";
    case CURAND_STATUS_ARCH_MISMATCH:
      return "CURAND_STATUS_ARCH_MISMATCH";
    case CURAND_STATUS_INTERNAL_ERROR:
      return "CURAND_STATUS_INTERNAL_ERROR";
    default:
      return "unknown cuRAND status";
  }
}

inline void check_curand(curandStatus_t s, const char* call, const char* file, int line) {
  if (s == CURAND_STATUS_SUCCESS) return;
  raise("cuRAND", call, file, line, str(curand_status_name(s), " (", int(s), ")"));
}

// VARNET_CUDA_SYNC=1 in the environment: synchronise after every launch. Read once.
inline bool sync_after_launch() {
  static const bool on = [] {
    const char* v = std::getenv("VARNET_CUDA_SYNC");
    return v != nullptr && v[0] == '1';
  }();
  return on;
}

// True on this thread while a stream capture is recording (cuda::Trainer::capture): launches are
// recorded then, not run, and a synchronisation would end the capture with an error.
inline bool& capturing() {
  thread_local bool on = false;
  return on;
}

inline void check_launch(const char* kernel, const char* file, int line) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    raise("CUDA", str("launch of ", kernel).c_str(), file, line,
          str(cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
  if (sync_after_launch() && !capturing()) {
    const cudaError_t s = cudaDeviceSynchronize();
    if (s != cudaSuccess) {
      (void)cudaGetLastError();
      raise("CUDA", str("kernel ", kernel, " (synchronised after launch)").c_str(), file, line,
            str(cudaGetErrorName(s), " (", cudaGetErrorString(s), ")"));
    }
  }
}

}  // namespace detail

}  // namespace varnet::cuda

// Throws varnet::Error unless the CUDA runtime call returns cudaSuccess.
#define VARNET_CUDA_CHECK(expr) \
  ::varnet::cuda::detail::check_cuda((expr), #expr, __FILE__, __LINE__)
// Throws varnet::Error unless the cuBLAS call returns CUBLAS_STATUS_SUCCESS.
#define VARNET_CUBLAS_CHECK(expr) \
  ::varnet::cuda::detail::check_cublas((expr), #expr, __FILE__, __LINE__)
// Throws varnet::Error unless the cuRAND call returns CURAND_STATUS_SUCCESS.
#define VARNET_CURAND_CHECK(expr) \
  ::varnet::cuda::detail::check_curand((expr), #expr, __FILE__, __LINE__)
// Right after a kernel launch: throws varnet::Error if the launch failed (see above for
// VARNET_CUDA_SYNC). `kernel` is a string naming the kernel.
#define VARNET_CUDA_CHECK_LAUNCH(kernel) \
  ::varnet::cuda::detail::check_launch((kernel), __FILE__, __LINE__)
