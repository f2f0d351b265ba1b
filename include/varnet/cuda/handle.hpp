// GpuContext: the stream every varnet GPU operation runs on, and a cuBLAS handle bound to it.
//
// cuBLAS gets a workspace of its own (kBlasWorkspace bytes, set with cublasSetWorkspace), so that
// its calls allocate nothing and a training step can be captured in a CUDA graph.
//
// One context per host thread that drives the GPU. Operations taking a GpuContext& enqueue work on
// its stream and return without waiting; synchronize() (or a download) waits. The stream is an
// ordinary blocking stream, so it is also ordered with work on the legacy default stream.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cstddef>

#include "varnet/cuda/check.hpp"
#include "varnet/cuda/device_buffer.hpp"

namespace varnet::cuda {

class GpuContext {
 public:
  static constexpr size_t kBlasWorkspace = size_t(32) << 20;  // cuBLAS's advice for Hopper

  // Uses the current device, or makes `device` current first when it is >= 0.
  explicit GpuContext(int device = -1) {
    if (device >= 0) VARNET_CUDA_CHECK(cudaSetDevice(device));
    VARNET_CUDA_CHECK(cudaStreamCreate(&stream_));
    try {
      VARNET_CUBLAS_CHECK(cublasCreate(&blas_));
      VARNET_CUBLAS_CHECK(cublasSetStream(blas_, stream_));
      workspace_ = detail::device_malloc(kBlasWorkspace);  // counted in device_allocations()
      VARNET_CUBLAS_CHECK(cublasSetWorkspace(blas_, workspace_, kBlasWorkspace));
    } catch (...) {
      destroy();
      throw;
    }
  }
  GpuContext(const GpuContext&) = delete;
  GpuContext& operator=(const GpuContext&) = delete;
  GpuContext(GpuContext&& o) noexcept
      : stream_(o.stream_), blas_(o.blas_), workspace_(o.workspace_), tf32_(o.tf32_) {
    o.stream_ = nullptr;
    o.blas_ = nullptr;
    o.workspace_ = nullptr;
  }
  GpuContext& operator=(GpuContext&& o) noexcept {
    if (this != &o) {
      destroy();
      stream_ = o.stream_;
      blas_ = o.blas_;
      workspace_ = o.workspace_;
      tf32_ = o.tf32_;
      o.stream_ = nullptr;
      o.blas_ = nullptr;
      o.workspace_ = nullptr;
    }
    return *this;
  }
  ~GpuContext() { destroy(); }

  cudaStream_t stream() const { return stream_; }
  cublasHandle_t blas() const { return blas_; }
  // TF32 tensor cores for float GEMMs (10-bit mantissas in the products, float sums), off by
  // default: faster convolutions and dense layers at about 1e-3 relative error per product.
  void set_tf32(bool on) {
    VARNET_CUBLAS_CHECK(
        cublasSetMathMode(blas_, on ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    tf32_ = on;
  }
  bool tf32() const { return tf32_; }
  // Waits for everything enqueued on the stream; reports asynchronous kernel faults.
  void synchronize() const { VARNET_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

 private:
  void destroy() noexcept {
    if (blas_) (void)cublasDestroy(blas_);
    if (workspace_) (void)cudaFree(workspace_);
    if (stream_) (void)cudaStreamDestroy(stream_);
    blas_ = nullptr;
    workspace_ = nullptr;
    stream_ = nullptr;
  }
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  void* workspace_ = nullptr;
  bool tf32_ = false;
};

}  // namespace varnet::cuda
