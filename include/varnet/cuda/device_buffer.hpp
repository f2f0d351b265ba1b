// DeviceBuffer<T>: an owning, move-only array in GPU memory, and host <-> device copies.
//
// Like Tensor, a buffer keeps its capacity when resized to something smaller, so a training loop
// that reuses buffers allocates nothing after its first, largest batch. Copies take a stream and
// wait for it: they are for setting up and reading back, not for the hot path.
//
// Every device allocation the library makes goes through detail::device_malloc (DeviceBuffer's
// growth and GpuContext's cuBLAS workspace), which counts it in device_allocations().
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "varnet/core/error.hpp"
#include "varnet/cuda/check.hpp"

namespace varnet::cuda {

namespace detail {

// Successful cudaMalloc calls by the library in this process, over all threads and devices.
inline std::atomic<uint64_t> device_allocation_count{0};

// cudaMalloc of `bytes`, counted; throws varnet::Error when it fails (and counts nothing then).
inline void* device_malloc(size_t bytes) {
  void* p = nullptr;
  VARNET_CUDA_CHECK(cudaMalloc(&p, bytes));
  device_allocation_count.fetch_add(1, std::memory_order_relaxed);
  return p;
}

}  // namespace detail

// How many device allocations (successful cudaMalloc calls) the library has made in this process
// so far, all threads and devices together; frees do not lower it. Tests assert with it that a
// training step after the first allocates nothing (tests/cuda/test_allocations.cu): cudaMalloc
// may synchronise the device, and a stream capture refuses it. Costs one relaxed atomic increment
// per allocation. Memory that cuBLAS, the driver or cudaGraphInstantiate allocate is not counted.
inline uint64_t device_allocations() noexcept {
  return detail::device_allocation_count.load(std::memory_order_relaxed);
}

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) { resize(count); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), size_(o.size_), capacity_(o.capacity_) {
    o.ptr_ = nullptr;
    o.size_ = o.capacity_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      ptr_ = o.ptr_;
      size_ = o.size_;
      capacity_ = o.capacity_;
      o.ptr_ = nullptr;
      o.size_ = o.capacity_ = 0;
    }
    return *this;
  }
  ~DeviceBuffer() { release(); }

  // Sets the size to `count` elements, allocating only when it exceeds the capacity. Contents
  // are unspecified afterwards when the buffer grew.
  void resize(size_t count) {
    if (count > capacity_) {
      check(count <= std::numeric_limits<size_t>::max() / sizeof(T), "DeviceBuffer::resize",
            "an element count whose byte size fits in size_t", count);
      release();
      ptr_ = static_cast<T*>(detail::device_malloc(count * sizeof(T)));
      capacity_ = count;
    }
    size_ = count;
  }

  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  size_t bytes() const { return size_ * sizeof(T); }
  bool empty() const { return size_ == 0; }

  // Resizes to `count` and copies host[0, count) in; returns when the copy is done.
  void upload(const T* host, size_t count, cudaStream_t stream = nullptr) {
    resize(count);
    if (count == 0) return;
    VARNET_CUDA_CHECK(
        cudaMemcpyAsync(ptr_, host, count * sizeof(T), cudaMemcpyHostToDevice, stream));
    VARNET_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  void upload(const std::vector<T>& host, cudaStream_t stream = nullptr) {
    upload(host.data(), host.size(), stream);
  }
  // Copies the whole buffer to host[0, size()) once `stream`'s earlier work is done.
  void download(T* host, cudaStream_t stream = nullptr) const {
    if (size_ == 0) return;
    VARNET_CUDA_CHECK(cudaMemcpyAsync(host, ptr_, bytes(), cudaMemcpyDeviceToHost, stream));
    VARNET_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  std::vector<T> download(cudaStream_t stream = nullptr) const {
    std::vector<T> host(size_);
    download(host.data(), stream);
    return host;
  }
  // Sets every byte to zero (asynchronously on `stream`).
  void zero(cudaStream_t stream = nullptr) {
    if (size_ > 0) VARNET_CUDA_CHECK(cudaMemsetAsync(ptr_, 0, bytes(), stream));
  }

 private:
  void release() noexcept {
    if (ptr_) (void)cudaFree(ptr_);  // never throws: destructors and moves call this
    ptr_ = nullptr;
    size_ = capacity_ = 0;
  }
  T* ptr_ = nullptr;
  size_t size_ = 0, capacity_ = 0;
};

// A new device buffer holding a copy of `host`.
template <class T>
DeviceBuffer<T> to_device(const std::vector<T>& host, cudaStream_t stream = nullptr) {
  DeviceBuffer<T> b;
  b.upload(host, stream);
  return b;
}

// The contents of a device buffer, or of `count` elements at a device pointer, on the host.
template <class T>
std::vector<T> to_host(const DeviceBuffer<T>& b, cudaStream_t stream = nullptr) {
  return b.download(stream);
}
template <class T>
std::vector<T> to_host(const T* device, size_t count, cudaStream_t stream = nullptr) {
  std::vector<T> host(count);
  if (count == 0) return host;
  VARNET_CUDA_CHECK(
      cudaMemcpyAsync(host.data(), device, count * sizeof(T), cudaMemcpyDeviceToHost, stream));
  VARNET_CUDA_CHECK(cudaStreamSynchronize(stream));
  return host;
}

// Zeroes `count` elements at a device pointer, asynchronously on `stream`.
template <class T>
void zero(T* device, int64_t count, cudaStream_t stream) {
  if (count > 0)
    VARNET_CUDA_CHECK(cudaMemsetAsync(device, 0, static_cast<size_t>(count) * sizeof(T), stream));
}

}  // namespace varnet::cuda
