// Catch2 runner of the CUDA parity tests (Catch2 v3 or v2). Exits 77, which ctest reports as
// "skipped", when there is no usable CUDA device, so CPU-only machines pass the suite.
#include <cuda_runtime.h>

#include <cstdio>

#if __has_include(<catch2/catch_session.hpp>)
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#endif

int main(int argc, char** argv) {
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipping (%s)\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return 77;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
    std::printf("CUDA device 0: %s (sm_%d%d), %d device(s)\n", prop.name, prop.major, prop.minor,
                devices);
  return Catch::Session().run(argc, argv);
}
