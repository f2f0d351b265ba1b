// varnet with its GPU backend: everything in varnet/varnet.hpp plus device memory, the cuBLAS
// context, the kernels' host launchers and the GPU layers. Include from .cu files compiled by
// nvcc with --expt-relaxed-constexpr (the varnet::cuda CMake target adds it), with the
// repository root (for kernels/) on the include path.
#pragma once

#if defined(__NVCC__)
#pragma nv_diagnostic push
#pragma nv_diag_suppress 20012  // Eigen's defaulted __host__ __device__ members
#endif
#include "varnet/varnet.hpp"
#if defined(__NVCC__)
#pragma nv_diagnostic pop
#endif

#include "varnet/cuda/check.hpp"
#include "varnet/cuda/device_buffer.hpp"
#include "varnet/cuda/gemm.hpp"
#include "varnet/cuda/handle.hpp"
#include "varnet/cuda/launch.hpp"
#include "varnet/cuda/ops.hpp"
#include "varnet/cuda/optimizer.hpp"
#include "varnet/cuda/variance_layers.hpp"
