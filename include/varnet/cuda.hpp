// varnet with its GPU backend: everything in varnet/varnet.hpp plus device memory, the cuBLAS
// context, the kernels' host launchers and the GPU layers (the baselines' included). Include from
// .cu files compiled by nvcc with --expt-relaxed-constexpr (the varnet::cuda CMake target adds it,
// and silences nvcc warning 20012 about Eigen), with the repository root (for kernels/) on the
// include path.
#pragma once

#include "varnet/varnet.hpp"

#include "varnet/cuda/baseline_ops.hpp"
#include "varnet/cuda/check.hpp"
#include "varnet/cuda/device_buffer.hpp"
#include "varnet/cuda/gemm.hpp"
#include "varnet/cuda/handle.hpp"
#include "varnet/cuda/launch.hpp"
#include "varnet/cuda/layers.hpp"
#include "varnet/cuda/mean_field_layers.hpp"
#include "varnet/cuda/ops.hpp"
#include "varnet/cuda/optimizer.hpp"
#include "varnet/cuda/variance_layers.hpp"
