// The GPU kernels (kernels/*.cuh), unmodified, run on the CPU through the emulation shim
// (tests/emulation/cuda_runtime.h) and compared with the CPU operations and layers they mirror.
// The [cuda] parity tests (tests/cuda/) check the same pairs on a GPU, but they run only where a
// GPU is; this test runs in every CI build, so a kernel's index arithmetic, layout, grid-stride
// loop or reduction tree is checked even when no GPU is available. It does not replace them: see
// the shim's header for what emulation cannot see (warps, true concurrency, device libm, FMA
// contraction).
//
// One test case per kernel family, in float and double, each with odd sizes (not multiples of 4
// or 32), batches of 1, and grids smaller than the data, so that grid-stride loops wrap:
//   elementwise    variance/square maps (float4 path aligned and not), ReLU, LeakyReLU, Tanh,
//                  channel-major <-> NCHW, bias fill, bias reduction, split-K partial sums
//   lrt            forward (partial variances, stacked BatchNoise, channel-major, bias, add_to_y,
//                  the step word) and backward, the input gradient
//   dropout        forward, stacked samples too
//   posteriors     the three posteriors' maps, variational dropout's d log alpha and both KLs
//                  (fixed-order reductions over blocks)
//   weights        Bernoulli and uniform sampling, and its chain rule
//   im2col         im2col and col2im with strides, padding, both index types
//   pool           max pooling forward and backward, overlapping windows and ties
//   batchnorm      forward with batch and running statistics, fused ReLU, backward
//   softmax_xent   K-sample log-mean-exp loss, predictions, gradient
//   adam           adam_update_kernel and the scheduled (device step word) Adam with scales
//   winograd       filter, input, output, output-gradient and filter-gradient transforms, the
//                  batched GEMM's pointers, and a whole convolution composed with host GEMMs
// Not covered: the cuBLAS calls themselves (cuda/gemm.hpp; Winograd's 36 GEMMs are replaced by a
// plain host GEMM here), and train_step.cuh's batch gather, KL-weight, finish-step and ensemble
// kernels, whose CPU twins are spread over the trainer.
//
// Comparisons are exact (equal values, NaN matching NaN) where the kernel documents the CPU's
// operations in the CPU's order; otherwise the tolerance is given with the reason next to it.
// Outputs start as NaN, so an element a kernel fails to write fails the comparison. The CPU twins
// are compiled here with -ffp-contract=off as the kernels are (elsewhere g++ may contract their
// plain a * b + c into fused multiply-adds), so exact means: the same operations in the same order.
//
// Kernels without __syncthreads run sequentially (fast, so many launch shapes); the reductions
// run one std::thread per emulated thread (emu::launch's threaded mode), which costs about half a
// millisecond per barrier phase of 256 threads: their launches are kept to a few blocks.
//
// The families are split over four files of this one executable, each including this header
// (the shared helpers: buffers, comparisons, random inputs, launch shapes):
//   test_emulated_elementwise.cpp  elementwise, dropout, weights
//   test_emulated_lrt.cpp          lrt, posteriors
//   test_emulated_conv.cpp         im2col, pool, winograd
//   test_emulated_training.cpp     batchnorm, softmax_xent, adam
//   test_emulated_runtime.cpp      the emulated runtime and cuBLAS themselves: the refusals and
//                                  faults that test_emulated_cuda_suite relies on
#pragma once

#include <cuda_runtime.h>  // the shim: tests/emulation is first on this target's include path

#ifndef VARNET_CUDA_EMULATION
#error "expected tests/emulation/cuda_runtime.h, found another cuda_runtime.h"
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "kernels/math.cuh"  // namespace varnet::kernels, for the alias kn
#include "tolerance.hpp"
#include "varnet/core/aligned.hpp"
#include "varnet/cuda/launch.hpp"  // grid_for, grid_2d, kThreads, fits_int32: host code

// The test files bring these names in with `using namespace emulation_test;`.
namespace emulation_test {

using namespace varnet;  // NOLINT: the test names many of its types
namespace kn = varnet::kernels;
using emu::launch;

// Buffers start on 64-byte boundaries, as the library's own (core/aligned.hpp): Eigen's
// reductions in the CPU twins then sum in an order that depends on the data alone.
template <class T>
using Buf = AlignedVector<T>;

template <class T>
Buf<T> random_values(int64_t n, uint32_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  Buf<T> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<T>(dist(gen));
  return v;
}
template <class T>
Buf<T> nans(int64_t n) {
  return Buf<T>(static_cast<size_t>(n), std::numeric_limits<T>::quiet_NaN());
}
template <class T>
const char* type_name() {
  return std::is_same_v<T, float> ? "float" : "double";
}
template <class T>
inline constexpr double kEps = std::numeric_limits<T>::epsilon();

// "" when got[i] and want[i] are equal (or both NaN) for every i < n; otherwise how many differ
// and the first. CHECK(same(...) == "") prints the message on failure.
template <class A, class B>
std::string same(const A& got, const B& want, int64_t n) {
  int64_t count = 0, first = -1;
  for (int64_t i = 0; i < n; ++i) {
    const double g = double(got[size_t(i)]), w = double(want[size_t(i)]);
    if (g == w || (std::isnan(g) && std::isnan(w))) continue;
    if (first < 0) first = i;
    ++count;
  }
  if (count == 0) return "";
  std::ostringstream os;
  os.precision(17);
  os << count << " of " << n << " differ; first at [" << first
     << "]: " << double(got[size_t(first)]) << " (kernel) vs " << double(want[size_t(first)])
     << " (CPU)";
  return os.str();
}
template <class A, class B>
std::string same(const A& got, const B& want) {
  REQUIRE(got.size() == want.size());
  return same(got, want, int64_t(want.size()));
}

// Close when |got - want| <= abs + rel max(|got|, |want|) element by element (tests/tolerance.hpp).
template <class T, class A, class B>
void check_close(const A& got, const B& want, double rel, double abs, const char* what) {
  REQUIRE(got.size() == want.size());
  const tol::Mismatch m = tol::compare<T>(got, want, int64_t(want.size()), abs, rel);
  INFO(what << ": " << m);
  CHECK(m.ok());
}

// max |v_i|: the scale of absolute tolerances for values that may cancel to near zero.
template <class V>
double max_abs(const V& v) {
  double m = 0;
  for (const auto& x : v) m = std::max(m, std::fabs(double(x)));
  return m;
}

// The (grid, block) shapes a sequential kernel over `work` items runs with: the launcher's
// (cuda::grid_for, 256 threads), one block, and grids too small for the data with odd block
// sizes, so that every grid-stride loop wraps.
inline std::vector<std::pair<unsigned, unsigned>> launch_shapes(int64_t work) {
  return {{cuda::grid_for(work), unsigned(cuda::kThreads)}, {1, 256}, {3, 33}, {2, 1}};
}

}  // namespace emulation_test
