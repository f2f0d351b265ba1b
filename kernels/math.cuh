// Scalar helpers shared by the kernels: float/double overloads of the math functions, and the
// round-to-nearest arithmetic intrinsics for kernels that must reproduce the CPU's operation
// order exactly (nvcc would otherwise contract a * b + c into one fused multiply-add).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace varnet::kernels {

__device__ __forceinline__ float vsqrt(float x) {
  return sqrtf(x);
}
__device__ __forceinline__ double vsqrt(double x) {
  return sqrt(x);
}
__device__ __forceinline__ float vexp(float x) {
  return expf(x);
}
__device__ __forceinline__ double vexp(double x) {
  return exp(x);
}
__device__ __forceinline__ float vlog(float x) {
  return logf(x);
}
__device__ __forceinline__ double vlog(double x) {
  return log(x);
}
__device__ __forceinline__ float vtanh(float x) {
  return tanhf(x);
}
__device__ __forceinline__ double vtanh(double x) {
  return tanh(x);
}

__device__ __forceinline__ float add_rn(float a, float b) {
  return __fadd_rn(a, b);
}
__device__ __forceinline__ double add_rn(double a, double b) {
  return __dadd_rn(a, b);
}
__device__ __forceinline__ float sub_rn(float a, float b) {
  return __fsub_rn(a, b);
}
__device__ __forceinline__ double sub_rn(double a, double b) {
  return __dsub_rn(a, b);
}
__device__ __forceinline__ float mul_rn(float a, float b) {
  return __fmul_rn(a, b);
}
__device__ __forceinline__ double mul_rn(double a, double b) {
  return __dmul_rn(a, b);
}
__device__ __forceinline__ float div_rn(float a, float b) {
  return __fdiv_rn(a, b);
}
__device__ __forceinline__ double div_rn(double a, double b) {
  return __ddiv_rn(a, b);
}
__device__ __forceinline__ float sqrt_rn(float a) {
  return __fsqrt_rn(a);
}
__device__ __forceinline__ double sqrt_rn(double a) {
  return __dsqrt_rn(a);
}

// First global thread index and grid stride for grid-stride loops.
__device__ __forceinline__ int64_t thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() {
  return static_cast<int64_t>(blockDim.x) * gridDim.x;
}

}  // namespace varnet::kernels
