// VARNET_HOST_DEVICE marks functions usable from both host and CUDA device code. It is empty when
// the translation unit is not compiled by nvcc, so these headers need only a C++17 compiler.
#pragma once

#if defined(__CUDACC__)
#define VARNET_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define VARNET_HOST_DEVICE inline
#endif
