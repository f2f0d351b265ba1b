// The GPU kernels (kernels/*.cuh), unmodified, run on the CPU through the emulation shim
// (tests/emulation/cuda_runtime.h) and compared with the CPU operations and layers they mirror.
// The [cuda] parity tests (tests/cuda/) check the same pairs on a GPU, but they run only where a
// GPU is; this test runs in every CI build, so a kernel's index arithmetic, layout, grid-stride
// loop or reduction tree is checked even when no GPU is available. It does not replace them: see
// the shim's header for what emulation cannot see (warps, inter-block races, device libm, FMA
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
#include "kernels/adam.cuh"
#include "kernels/batchnorm.cuh"
#include "kernels/dropout.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/im2col.cuh"
#include "kernels/lrt.cuh"
#include "kernels/pool.cuh"
#include "kernels/posteriors.cuh"
#include "kernels/softmax_xent.cuh"
#include "kernels/train_step.cuh"
#include "kernels/weights.cuh"
#include "kernels/winograd.cuh"
#include "tolerance.hpp"
#include "varnet/core/aligned.hpp"
#include "varnet/cuda/launch.hpp"  // grid_for, kThreads, fits_int32: plain C++
#include "varnet/layers/activations.hpp"
#include "varnet/layers/batchnorm.hpp"
#include "varnet/layers/dropout.hpp"
#include "varnet/layers/pooling.hpp"
#include "varnet/layers/variance.hpp"
#include "varnet/layers/weight_posteriors.hpp"
#include "varnet/nn/loss.hpp"
#include "varnet/nn/optimizer.hpp"
#include "varnet/ops/conv.hpp"
#include "varnet/ops/lrt.hpp"
#include "varnet/ops/winograd_conv.hpp"

namespace {

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
constexpr double kEps = std::numeric_limits<T>::epsilon();

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
std::vector<std::pair<unsigned, unsigned>> launch_shapes(int64_t work) {
  return {{cuda::grid_for(work), unsigned(cuda::kThreads)}, {1, 256}, {3, 33}, {2, 1}};
}

}  // namespace

// ---- elementwise.cuh: ZeroMeanWeights, the activations, ops/conv.hpp ----

TEMPLATE_TEST_CASE(
    "emulated elementwise kernels match ZeroMeanWeights, the activations and the "
    "layout ops",
    "[emulation]", float, double) {
  using T = TestType;
  for (const int64_t count : {int64_t(1), int64_t(7), int64_t(1003)}) {
    Buf<T> x = random_values<T>(count, 1);
    for (int64_t i = 0; i < count; i += 5) x[size_t(i)] = T(0);  // the kinks of ReLU and LeakyReLU
    const Buf<T> dy = random_values<T>(count, 2), ds2 = random_values<T>(count, 3);
    const Buf<T> dp0 = random_values<T>(count, 4);
    const Shape shape(1, count);
    const ConstView<T> xv(x.data(), shape), dyv(dy.data(), shape);
    Context ctx;

    for (const auto& [grid, block] : launch_shapes(count)) {
      INFO(type_name<T>() << ", count " << count << ", grid " << grid << " x " << block);
      const auto run = [&, g = grid, b = block](auto&& body) { launch(g, b, false, body); };

      for (const bool log_param : {false, true}) {
        INFO((log_param ? "log sigma2" : "sigma"));
        VarianceOptions opt;
        opt.param = log_param ? VarianceParam::log_sigma2 : VarianceParam::sigma;
        const ZeroMeanWeights<T> zw{opt};
        const Buf<T> p = log_param ? random_values<T>(count, 5, -6, 1) : random_values<T>(count, 5);
        Buf<T> s2_cpu(static_cast<size_t>(count), T(0)), dp_cpu = dp0;
        zw.variance(p.data(), s2_cpu.data(), count);
        zw.grad_from_variance(p.data(), s2_cpu.data(), ds2.data(), dp_cpu.data(), count);
        Buf<T> s2 = nans<T>(count), dp = dp0;
        run([&] { kn::variance_forward_kernel<T>(count, log_param, p.data(), s2.data()); });
        run([&] {
          kn::variance_backward_kernel<T>(count, log_param, p.data(), s2_cpu.data(), ds2.data(),
                                          dp.data());
        });
        if (log_param)  // Eigen's vectorised exp against the libm exp: an ulp or two
          check_close<T>(s2, s2_cpu, 4 * kEps<T>, 0, "exp(log sigma2)");
        else
          CHECK(same(s2, s2_cpu) == "");
        CHECK(same(dp, dp_cpu) == "");

        // The fused sigma^2 and x^2 kernel: the 16-byte path (float, aligned), the unaligned one
        // (offset 1) and the element-by-element tail (counts not multiples of 4).
        for (const int64_t offset : {int64_t(0), int64_t(1)}) {
          INFO("offset " << offset);
          const int64_t count_x = count + 2;
          Buf<T> pp(static_cast<size_t>(count + offset)),
              xx = random_values<T>(count_x + offset, 6);
          std::copy(p.begin(), p.end(), pp.begin() + offset);
          Buf<T> s2f = nans<T>(count + offset), x2 = nans<T>(count_x + offset);
          const int64_t groups = (count + 3) / 4 + (count_x + 3) / 4;
          launch(grid == cuda::grid_for(count) ? cuda::grid_for(groups) : grid, block, false, [&] {
            kn::variance_square_forward_kernel<T>(count, log_param, pp.data() + offset,
                                                  s2f.data() + offset, count_x, xx.data() + offset,
                                                  x2.data() + offset);
          });
          CHECK(same(Buf<T>(s2f.begin() + offset, s2f.end()), s2) == "");  // = variance_forward
          Buf<T> x2_want(static_cast<size_t>(count_x));
          for (int64_t i = 0; i < count_x; ++i)
            x2_want[size_t(i)] = xx[size_t(offset + i)] * xx[size_t(offset + i)];
          CHECK(same(Buf<T>(x2.begin() + offset, x2.end()), x2_want) == "");
        }
      }

      // square, in place
      Buf<T> sq = x, sq_want(static_cast<size_t>(count));
      for (int64_t i = 0; i < count; ++i) sq_want[size_t(i)] = x[size_t(i)] * x[size_t(i)];
      run([&] { kn::square_forward_kernel<T>(count, sq.data(), sq.data()); });
      CHECK(same(sq, sq_want) == "");

      // ReLU
      {
        ReLU<T> layer;
        Buf<T> y_cpu(static_cast<size_t>(count)), dx_cpu(static_cast<size_t>(count)),
            y = nans<T>(count), dx = nans<T>(count);
        layer.forward(xv, TensorView<T>(y_cpu.data(), shape), nullptr, ctx);
        layer.backward(xv, ConstView<T>(y_cpu.data(), shape), dyv,
                       TensorView<T>(dx_cpu.data(), shape), nullptr, ctx);
        run([&] { kn::relu_forward_kernel<T>(count, x.data(), y.data()); });
        run([&] { kn::relu_backward_kernel<T>(count, y_cpu.data(), dy.data(), dx.data()); });
        CHECK(same(y, y_cpu) == "");
        CHECK(same(dx, dx_cpu) == "");
      }
      // LeakyReLU (backward reads x)
      {
        LeakyReLU<T> layer(0.07);
        Buf<T> y_cpu(static_cast<size_t>(count)), dx_cpu(static_cast<size_t>(count)),
            y = nans<T>(count), dx = nans<T>(count);
        layer.forward(xv, TensorView<T>(y_cpu.data(), shape), nullptr, ctx);
        layer.backward(xv, ConstView<T>(y_cpu.data(), shape), dyv,
                       TensorView<T>(dx_cpu.data(), shape), nullptr, ctx);
        run([&] { kn::leaky_relu_forward_kernel<T>(count, layer.slope(), x.data(), y.data()); });
        run([&] {
          kn::leaky_relu_backward_kernel<T>(count, layer.slope(), x.data(), dy.data(), dx.data());
        });
        CHECK(same(y, y_cpu) == "");
        CHECK(same(dx, dx_cpu) == "");
      }
      // Tanh
      {
        Tanh<T> layer;
        Buf<T> y_cpu(static_cast<size_t>(count)), dx_cpu(static_cast<size_t>(count)),
            y = nans<T>(count), dx = nans<T>(count);
        layer.forward(xv, TensorView<T>(y_cpu.data(), shape), nullptr, ctx);
        layer.backward(xv, ConstView<T>(y_cpu.data(), shape), dyv,
                       TensorView<T>(dx_cpu.data(), shape), nullptr, ctx);
        run([&] { kn::tanh_forward_kernel<T>(count, x.data(), y.data()); });
        run([&] { kn::tanh_backward_kernel<T>(count, y_cpu.data(), dy.data(), dx.data()); });
        // Eigen's tanh (a rational approximation) against libm's tanh: a few ulps (the kernel's
        // comment; 2-3 measured with AVX-512).
        check_close<T>(y, y_cpu, 8 * kEps<T>, 0, "tanh");
        CHECK(same(dx, dx_cpu) == "");  // dy (1 - y^2) from the same y
      }
    }
  }

  // Layouts (N, O, P) <-> channel-major (O, N P), the bias fill, and the bias reduction.
  struct Nop {
    int64_t n, o, p;
  };
  for (const Nop s : {Nop{1, 1, 1}, Nop{1, 7, 5}, Nop{3, 5, 9}, Nop{2, 33, 7}, Nop{3, 2, 131}}) {
    const int64_t total = s.n * s.o * s.p;
    INFO(type_name<T>() << ", n " << s.n << ", o " << s.o << ", p " << s.p);
    const Buf<T> y2 = random_values<T>(total, 7), y = random_values<T>(total, 8);
    const Buf<T> bias = random_values<T>(s.o, 9);
    for (const auto& [grid, block] : launch_shapes(total)) {
      INFO("grid " << grid << " x " << block);
      for (const T* b : {static_cast<const T*>(nullptr), bias.data()}) {
        Buf<T> want(static_cast<size_t>(total)), got = nans<T>(total), got64 = nans<T>(total);
        ops::channel_major_to_nchw(y2.data(), b, s.n, s.o, s.p, want.data());
        launch(grid, block, false, [&] {
          kn::channel_major_to_nchw_kernel<T, int32_t>(y2.data(), b, int32_t(s.n), int32_t(s.o),
                                                       int32_t(s.p), got.data());
        });
        launch(grid, block, false, [&] {
          kn::channel_major_to_nchw_kernel<T, int64_t>(y2.data(), b, s.n, s.o, s.p, got64.data());
        });
        CHECK(same(got, want) == "");
        CHECK(same(got64, want) == "");

        fill_with_bias(b, s.n, s.o, s.p, want.data());
        got = nans<T>(total);
        launch(grid, block, false,
               [&] { kn::bias_forward_kernel<T>(b, s.n, s.o, s.p, got.data()); });
        CHECK(same(got, want) == "");
      }
      Buf<T> want(static_cast<size_t>(total)), got = nans<T>(total), got64 = nans<T>(total);
      ops::nchw_to_channel_major(y.data(), s.n, s.o, s.p, want.data());
      launch(grid, block, false, [&] {
        kn::nchw_to_channel_major_kernel<T, int32_t>(y.data(), int32_t(s.n), int32_t(s.o),
                                                     int32_t(s.p), got.data());
      });
      launch(grid, block, false, [&] {
        kn::nchw_to_channel_major_kernel<T, int64_t>(y.data(), s.n, s.o, s.p, got64.data());
      });
      CHECK(same(got, want) == "");
      CHECK(same(got64, want) == "");
    }
    // db += sums of dy: one block of kReduceThreads per channel, threaded (a tree in shared
    // memory). Grids of o blocks (the launcher's), 1 and 2 (each block loops over channels);
    // n p = 393 > 256 values per channel in the last shape, so that each thread sums several.
    if (s.o <= 8) {
      const Buf<T> db0 = random_values<T>(s.o, 10);
      Buf<T> want = db0;
      ops::bias_backward(y.data(), s.n, s.o, s.p, want.data());
      for (const unsigned grid : {unsigned(s.o), 1u, 2u}) {
        INFO("bias_backward grid " << grid);
        Buf<T> got = db0;
        launch(grid, kn::kReduceThreads, true,
               [&] { kn::bias_backward_kernel<T>(y.data(), s.n, s.o, s.p, got.data()); });
        // Eigen's vectorised sums against the kernel's strided sums and tree: summation order
        // only, n p terms of magnitude <= 1.
        check_close<T>(got, want, 0, 4 * kEps<T> * double(s.n * s.p + 1), "bias_backward");
      }
    }
  }

  // Split-K's partial sums, in chunk order (no CPU twin: the order written out here).
  {
    const int64_t count = 1003;
    for (const int64_t chunks : {int64_t(1), int64_t(3)}) {
      const Buf<T> part = random_values<T>(count * chunks, 11), c0 = random_values<T>(count, 12);
      for (const T beta : {T(0), T(2)}) {
        Buf<T> want(static_cast<size_t>(count));
        for (int64_t k = 0; k < count; ++k) {
          T acc = part[size_t(k)];
          for (int64_t j = 1; j < chunks; ++j) acc = acc + part[size_t(j * count + k)];
          const T scaled = T(0.5) * acc;
          want[size_t(k)] = beta == T(0) ? scaled : scaled + beta * c0[size_t(k)];
        }
        for (const auto& [grid, block] : launch_shapes(count)) {
          INFO("sum_partials chunks " << chunks << ", beta " << beta << ", grid " << grid);
          Buf<T> c = beta == T(0) ? nans<T>(count) : c0;  // beta 0: c is not read
          launch(grid, block, false, [&] {
            kn::sum_partials_kernel<T>(count, chunks, part.data(), T(0.5), beta, c.data());
          });
          CHECK(same(c, want) == "");
        }
      }
    }
  }
}

// ---- lrt.cuh: ops/lrt.hpp ----

namespace {

// One LRT case: forward on v given as `parts` partial sums, backward out of place and in place,
// for the launcher's grid and two smaller ones. mean_kind: 0 none, 1 bias, 2 add_to_y.
template <class T>
void lrt_case(int64_t n, int64_t o, int64_t p, bool cm, int parts, int64_t R, int mean_kind,
              bool step_word) {
  INFO(type_name<T>() << " LRT n " << n << ", o " << o << ", p " << p << ", channel-major " << cm
                      << ", parts " << parts << ", rows per sample " << R << ", mean " << mean_kind
                      << ", step word " << step_word);
  const ops::LrtLayout L{n, o, p, cm};
  const int64_t total = n * o * p;
  const T e0 = T(1e-8);
  const NoiseKey key{77, 4, 5, 1};
  const BatchNoise cpu_noise{key, R};
  NoiseKey kernel_key = key;
  if (step_word) kernel_key.step = 999;  // replaced by the word when the kernel runs
  const BatchNoise kernel_noise{kernel_key, R};
  const uint32_t word = key.step;
  const uint32_t* step = step_word ? &word : nullptr;

  const Buf<T> partial = random_values<T>(total * parts, uint32_t(total) + 8, 0.01, 1.0);
  Buf<T> v(static_cast<size_t>(total));
  for (int64_t k = 0; k < total; ++k) {
    T acc = partial[size_t(k)];
    for (int q = 1; q < parts; ++q) acc = acc + partial[size_t(q * total + k)];
    v[size_t(k)] = acc;
  }
  const Buf<T> bias = random_values<T>(o, 9), y0 = random_values<T>(total, 10);
  const Buf<T> g = random_values<T>(total, 11);
  const bool add_to_y = mean_kind == 2;
  const T* b = mean_kind == 1 ? bias.data() : nullptr;
  Buf<T> r = v, y_cpu = y0;
  ops::lrt_forward(cpu_noise, L, b, add_to_y, e0, r.data(), y_cpu.data());
  ops::lrt_backward(L, g.data(), r.data());  // r = dL/dv

  const kn::LrtShape s{n, o, p, cm};
  const int64_t groups = kernel_noise.groups(total, o * p);
  for (const unsigned grid : {cuda::grid_for(groups), 1u, 3u}) {
    INFO("grid " << grid);
    Buf<T> vp = partial, y = add_to_y ? y0 : nans<T>(total);
    launch(grid, cuda::kThreads, false, [&] {
      kn::lrt_forward_kernel<T>(kernel_noise, step, s, b, add_to_y, e0, vp.data(), parts, total,
                                y.data());
    });
    // Not bit for bit: the CPU draws its normals in AVX2 where it has it (ops/normal_avx2.hpp,
    // an ulp or two of float from the scalar normal_at the kernels call, in double as well: the
    // noise is float in both), and takes sqrt(u) as u / sqrt(u) (float: an rsqrt estimate, a
    // Newton step and fused multiply-adds). So a few float ulps of y's scale, in both types.
    const double rel = 8 * kEps<float>;
    check_close<T>(y, y_cpu, rel, rel * max_abs(y_cpu), "lrt_forward y");
    CHECK(same(vp.data(), v.data(), total) == "");  // the sum, in order, in the first part
    CHECK(same(vp.data() + total, partial.data() + total, total * (parts - 1)) == "");
    Buf<T> dv = nans<T>(total);
    launch(grid, cuda::kThreads, false, [&] {
      kn::lrt_backward_kernel<T>(kernel_noise, step, s, e0, g.data(), vp.data(), dv.data());
    });
    // eps / (2 s) here, 0.5 eps (1 / s) on the CPU (the kernel's comment): a few ulps.
    check_close<T>(dv, r, rel, rel * max_abs(r), "lrt_backward dL/dv");
    Buf<T> in_place(vp.begin(), vp.begin() + total);
    launch(grid, cuda::kThreads, false, [&] {
      kn::lrt_backward_kernel<T>(kernel_noise, step, s, e0, g.data(), in_place.data(),
                                 in_place.data());
    });
    CHECK(same(in_place, dv) == "");
  }
}

}  // namespace

TEMPLATE_TEST_CASE("emulated LRT kernels match ops::lrt_forward and lrt_backward", "[emulation]",
                   float, double) {
  using T = TestType;
  struct C {
    int64_t n, o, p;
    bool cm;
  };
  // Dense (p = 1) and channel-major conv layouts; batches of 1; sample sizes not multiples of 4,
  // so that a sample's elements start Philox groups mid-tensor when stacked.
  for (const C c : {C{1, 1, 1, false}, C{1, 7, 1, false}, C{3, 5, 1, false}, C{2, 3, 5, true},
                    C{1, 4, 9, true}, C{3, 5, 7, true}, C{9, 33, 1, false}, C{6, 2, 3, true}})
    for (const int parts : {1, 3})
      for (const int64_t R : {int64_t(0), int64_t(1), c.n})
        for (const int mean : {0, 1, 2}) lrt_case<T>(c.n, c.o, c.p, c.cm, parts, R, mean, false);
  lrt_case<T>(6, 3, 5, true, 2, 3, 2, true);  // stacked samples of 3 rows, with the step word
  lrt_case<T>(6, 11, 1, false, 3, 2, 1, true);
  lrt_case<T>(300, 37, 1, false, 10, 0, 2, false);  // 2775 groups: the launcher's grid is 11

  // dx = dx_mean + t (2 x), with and without the mean path, and in place over t.
  const int64_t count = 1003;
  const Buf<T> x = random_values<T>(count, 20), t = random_values<T>(count, 21);
  const Buf<T> dxm = random_values<T>(count, 22);
  for (const bool mean : {false, true}) {
    Buf<T> want(static_cast<size_t>(count));
    for (int64_t k = 0; k < count; ++k) {
      const T from_var = t[size_t(k)] * (T(2) * x[size_t(k)]);
      want[size_t(k)] = mean ? dxm[size_t(k)] + from_var : from_var;
    }
    for (const auto& [grid, block] : launch_shapes(count)) {
      INFO("lrt_input_backward, mean path " << mean << ", grid " << grid << " x " << block);
      Buf<T> dx = t;  // dx aliases t
      launch(grid, block, false, [&] {
        kn::lrt_input_backward_kernel<T>(count, x.data(), dx.data(), mean ? dxm.data() : nullptr,
                                         dx.data());
      });
      CHECK(same(dx, want) == "");
    }
  }
}

// ---- dropout.cuh: layers/dropout.hpp ----

namespace {

template <class T>
void dropout_case(const Shape& s, double p, int64_t rows_per_sample, bool step_word) {
  INFO(type_name<T>() << " dropout " << s << ", p " << p << ", rows per sample " << rows_per_sample
                      << ", step word " << step_word);
  Dropout<T> layer(p);
  layer.set_id(3);
  const Context ctx = rows_per_sample
                          ? Context::eval_stacked(8, PredictMode::sample, 40, rows_per_sample)
                          : Context::train(31, 9, 2);
  const int64_t count = s.numel(), row = s.per_sample();
  const Buf<T> x = random_values<T>(count, uint32_t(count) + 50);
  Buf<T> want(static_cast<size_t>(count));
  layer.forward(ConstView<T>(x.data(), s), TensorView<T>(want.data(), s), nullptr, ctx);
  const uint32_t word = ctx.step;
  const BatchNoise noise{NoiseKey{ctx.seed, layer.id(), step_word ? 12345u : ctx.step, ctx.stream},
                         ctx.rows_per_sample};
  const float keep = static_cast<float>(1 - p);
  const T scale = T(1) / T(1 - p);
  for (const auto& [grid, block] : launch_shapes(noise.groups(count, row))) {
    INFO("grid " << grid << " x " << block);
    Buf<T> got = nans<T>(count);
    launch(grid, block, false, [&] {
      kn::dropout_forward_kernel<T>(noise, step_word ? &word : nullptr, count, row, keep, scale,
                                    x.data(), got.data());
    });
    CHECK(same(got, want) == "");  // the same words, mask and products: bit for bit
  }
}

}  // namespace

TEMPLATE_TEST_CASE("emulated dropout kernel matches Dropout, stacked samples too", "[emulation]",
                   float, double) {
  using T = TestType;
  for (const double p : {0.3, 0.0})
    for (const Shape& s :
         {Shape(1, 1), Shape(1, 7), Shape(3, 5, 3, 3), Shape(130, 33), Shape(1, 3, 7, 5)})
      dropout_case<T>(s, p, 0, false);
  dropout_case<T>(Shape(5, 13), 0.4, 0, true);
  const std::vector<std::pair<Shape, int64_t>> stacked = {
      {Shape(9, 5), 3}, {Shape(9, 5), 1}, {Shape(9, 5), 9}, {Shape(10, 3, 3, 3), 5},
      {Shape(6, 7), 2}, {Shape(7, 1), 7}, {Shape(12, 2), 3}};
  for (const auto& [s, R] : stacked)
    for (const bool word : {false, true}) dropout_case<T>(s, 0.4, R, word);
}

// ---- posteriors.cuh: layers/weight_posteriors.hpp and layers/kl.hpp ----

namespace {

// cuda::posterior_blocks: the grid of the reducing posterior kernels.
unsigned posterior_blocks(int64_t n) {
  const int64_t b = (n + kn::kPosteriorThreads - 1) / kn::kPosteriorThreads;
  return static_cast<unsigned>(std::clamp<int64_t>(b, 1, kn::kPosteriorMaxBlocks));
}

template <class T, class Post>
kn::PosteriorSpec spec_of(const Post& post) {  // as cuda/baseline_ops.hpp builds it
  kn::PosteriorSpec s;
  if constexpr (std::is_same_v<Post, GaussianDropoutPosterior<T>>) {
    s.kind = kn::PosteriorKind::gaussian_dropout;
    s.alpha = post.opt.alpha;
  } else if constexpr (std::is_same_v<Post, VariationalDropoutPosterior<T>>) {
    s.kind = kn::PosteriorKind::variational_dropout;
    s.log_alpha_min = Post::kLogAlphaMin;
    s.log_alpha_max = Post::kLogAlphaMax;
  } else {
    s.kind = kn::PosteriorKind::sparse_vd;
    s.log_alpha_min = Post::kLogAlphaMin;
    s.log_alpha_max = Post::kLogAlphaMax;
    s.tiny = Post::kTiny;
    s.threshold = post.opt.threshold;
    s.prune = post.opt.prune;
  }
  return s;
}

// aux_value: variational dropout's log alpha (inside, on and beyond its clamp); sparse VD draws
// log sigma2 per weight so that log alpha spans both clamps and the threshold. with_kl: also the
// KL and its gradient (threaded reductions: kept to a few cases).
template <class T, class Post>
void posterior_case(int64_t n, double aux_value, bool prune, bool with_kl) {
  DropoutOptions opt;
  opt.alpha = 0.6;
  opt.threshold = 3;
  opt.prune = prune;
  const Post post{opt};
  const kn::PosteriorSpec spec = spec_of<T>(post);
  const bool svd = spec.kind == kn::PosteriorKind::sparse_vd;
  const bool vd = spec.kind == kn::PosteriorKind::variational_dropout;
  INFO(type_name<T>() << " " << Post::family() << ", n " << n << ", aux " << aux_value << ", prune "
                      << prune);
  Buf<T> theta = random_values<T>(n, uint32_t(n), -0.3, 0.3);
  for (int64_t i = 0; i < n; i += 11) theta[size_t(i)] = T(0);
  const int64_t naux = svd ? n : (vd ? 1 : 0);
  const Buf<T> aux = svd ? random_values<T>(n, uint32_t(n) + 1, -14, 2)
                         : Buf<T>(static_cast<size_t>(naux), T(aux_value));
  const Buf<T> ds2 = random_values<T>(n, 2), dw = random_values<T>(n, 3);
  const Buf<T> g0 = random_values<T>(n, 4), ga0 = random_values<T>(naux, 5);
  PosteriorView<T> cv;
  cv.theta = theta.data();
  cv.aux = naux ? aux.data() : nullptr;
  cv.n = n;
  kn::PosteriorArgs<T> args;
  args.spec = spec;
  args.theta = theta.data();
  args.aux = cv.aux;
  args.n = n;

  Buf<T> s2_cpu(static_cast<size_t>(n)), w_cpu(static_cast<size_t>(n));
  post.variance(cv, s2_cpu.data());
  post.mean_weights(cv, w_cpu.data());
  Buf<T> dth_var = g0, da_var = ga0, dth_mean = g0;
  {
    PosteriorView<T> v = cv;
    v.dtheta = dth_var.data();
    v.daux = naux ? da_var.data() : nullptr;
    post.grad_from_variance(v, s2_cpu.data(), ds2.data());
    v.dtheta = dth_mean.data();
    post.grad_from_mean_weights(v, dw.data());
  }

  // The elementwise maps: bit for bit (the CPU's operations in its order; both sides call the
  // host's exp and log here).
  for (const auto& [grid, block] : launch_shapes(n)) {
    INFO("grid " << grid << " x " << block);
    Buf<T> s2 = nans<T>(n), w = nans<T>(n), dth_m = g0;
    launch(grid, block, false, [&] { kn::posterior_variance_kernel<T>(args, s2.data()); });
    launch(grid, block, false, [&] { kn::posterior_mean_weights_kernel<T>(args, w.data()); });
    kn::PosteriorArgs<T> q = args;
    q.dtheta = dth_m.data();
    launch(grid, block, false,
           [&] { kn::posterior_grad_from_mean_weights_kernel<T>(q, dw.data()); });
    CHECK(same(s2, s2_cpu) == "");
    CHECK(same(w, w_cpu) == "");
    CHECK(same(dth_m, dth_mean) == "");
    if (!vd) {  // no reduction: any launch shape
      Buf<T> dth = g0, da = ga0;
      q.dtheta = dth.data();
      q.daux = naux ? da.data() : nullptr;
      launch(grid, block, false, [&] {
        kn::posterior_grad_from_variance_kernel<T>(q, s2_cpu.data(), ds2.data(), nullptr);
      });
      CHECK(same(dth, dth_var) == "");
      CHECK(same(da, da_var) == "");
    }
  }

  // The reductions, threaded: the launcher's grid (posterior_blocks) and grids of 1 and 3 blocks.
  // The CPU sums in double one weight after another, the kernels in a tree per block, then over
  // the blocks: the sums agree to summation order (relative 1e-12 in double), and their T
  // roundings then to an ulp of T.
  const double kl_rel = 1e-12, grad_rel = std::max(2 * kEps<T>, 1e-12);
  const T scale = T(1.7);
  for (const unsigned grid : {posterior_blocks(n), 1u, 3u}) {
    if (grid == 1 && posterior_blocks(n) == 1) continue;  // the launcher's grid already
    INFO("reduction grid " << grid);
    if (vd) {
      Buf<T> dth = g0, da = ga0;
      kn::PosteriorArgs<T> q = args;
      q.dtheta = dth.data();
      q.daux = da.data();
      std::vector<double> partial(kn::kPosteriorMaxBlocks, std::nan(""));
      launch(grid, kn::kPosteriorThreads, true, [&] {
        kn::posterior_grad_from_variance_kernel<T>(q, s2_cpu.data(), ds2.data(), partial.data());
      });
      launch(1, kn::kPosteriorThreads, true,
             [&] { kn::posterior_log_alpha_grad_kernel<T>(q, partial.data(), int(grid)); });
      CHECK(same(dth, dth_var) == "");
      check_close<T>(da, da_var, grad_rel, 0, "d log alpha");
    }
    if (!with_kl) continue;
    for (const bool with_scale : {true, false}) {
      INFO("KL " << (with_scale ? "and its gradient" : "alone"));
      Buf<T> dth_cpu = g0, da_cpu = ga0, dth = g0, da = ga0;
      PosteriorView<T> v = cv;
      v.dtheta = dth_cpu.data();
      v.daux = da_cpu.data();
      const double want = with_scale ? post.add_kl_gradient(v, scale) : post.kl(cv);
      kn::PosteriorArgs<T> q = args;
      q.dtheta = dth.data();
      q.daux = da.data();
      const T* sc = with_scale ? &scale : nullptr;
      double kl_sum = 0.25;  // the kernels add to it
      if (vd) {
        launch(1, 1, false, [&] { kn::variational_dropout_kl_kernel<T>(q, sc, &kl_sum); });
      } else {
        std::vector<double> partial(kn::kPosteriorMaxBlocks, std::nan(""));
        launch(grid, kn::kPosteriorThreads, true,
               [&] { kn::sparse_vd_kl_kernel<T>(q, sc, partial.data()); });
        launch(1, kn::kPosteriorThreads, true,
               [&] { kn::posterior_sum_kernel<T>(partial.data(), int(grid), &kl_sum); });
      }
      const double got = kl_sum - 0.25;
      INFO("KL " << got << " (kernels) vs " << want << " (CPU)");
      CHECK(std::fabs(got - want) <= kl_rel * std::fabs(want) + 1e-12);
      CHECK(same(dth, dth_cpu) == "");  // elementwise: bit for bit
      CHECK(same(da, da_cpu) == "");
    }
  }
}

}  // namespace

TEMPLATE_TEST_CASE("emulated posterior kernels match the dropout posteriors and their KL",
                   "[emulation]", float, double) {
  using T = TestType;
  for (const int64_t n : {int64_t(1), int64_t(7), int64_t(257), int64_t(1001)}) {
    const bool kl = n != 7;  // the reductions, threaded, on the other sizes only
    posterior_case<T, GaussianDropoutPosterior<T>>(n, 0, false, false);
    // log alpha inside the clamp, beyond it (clamped: no gradient), on it (no gradient either)
    // and just inside it.
    for (const double la : {-1.3, 25.0, -20.0, 19.999})
      posterior_case<T, VariationalDropoutPosterior<T>>(n, la, false,
                                                        kl && (la == -1.3 || la == 25.0));
    posterior_case<T, SparseVDPosterior<T>>(n, 0, true, kl);
    posterior_case<T, SparseVDPosterior<T>>(n, 0, false, false);
  }
}

// ---- weights.cuh: ZeroMeanWeights::sample and grad_from_weight ----

TEMPLATE_TEST_CASE("emulated weight sampling matches ZeroMeanWeights (Bernoulli, uniform)",
                   "[emulation]", float, double) {
  using T = TestType;
  for (const int64_t count : {int64_t(1), int64_t(5), int64_t(1003)})
    for (const WeightDist dist : {WeightDist::bernoulli, WeightDist::uniform})
      for (const VarianceParam param : {VarianceParam::sigma, VarianceParam::log_sigma2}) {
        VarianceOptions opt;
        opt.dist = dist;
        opt.param = param;
        const ZeroMeanWeights<T> zw{opt};
        const bool bern = dist == WeightDist::bernoulli,
                   log_param = param == VarianceParam::log_sigma2;
        INFO(type_name<T>() << ", count " << count << ", " << to_string(dist) << ", "
                            << to_string(param));
        const NoiseKey key{11, 6, 21, 3};
        const Buf<T> p =
            log_param ? random_values<T>(count, 30, -6, 1) : random_values<T>(count, 30);
        const Buf<T> dw = random_values<T>(count, 31), dp0 = random_values<T>(count, 32);
        Buf<T> w_cpu(static_cast<size_t>(count)), xi_cpu(static_cast<size_t>(count)), dp_cpu = dp0;
        zw.sample(key, p.data(), w_cpu.data(), xi_cpu.data(), count);
        zw.grad_from_weight(p.data(), xi_cpu.data(), dw.data(), dp_cpu.data(), count);
        NoiseKey stale = key;
        stale.step = 0;  // the step word replaces it
        for (const auto& [grid, block] : launch_shapes((count + 3) / 4)) {
          INFO("grid " << grid << " x " << block);
          for (const bool word : {false, true}) {
            Buf<T> w = nans<T>(count), xi = nans<T>(count);
            launch(grid, block, false, [&] {
              kn::sample_weights_kernel<T>(word ? stale : key, word ? &key.step : nullptr, bern,
                                           log_param, count, p.data(), w.data(), xi.data());
            });
            CHECK(same(xi, xi_cpu) == "");
            CHECK(same(w, w_cpu) == "");
          }
          Buf<T> dp = dp0;
          launch(grid == cuda::grid_for((count + 3) / 4) ? cuda::grid_for(count) : grid, block,
                 false, [&] {
                   kn::weight_backward_kernel<T>(count, log_param, p.data(), xi_cpu.data(),
                                                 dw.data(), dp.data());
                 });
          CHECK(same(dp, dp_cpu) == "");
        }
      }
}

// ---- im2col.cuh: ops::im2col and ops::col2im ----

namespace {

kn::ConvShape conv_shape(const ops::ConvGeometry& g) {  // as cuda::conv_shape
  kn::ConvShape s;
  s.in_c = g.in_c;
  s.in_h = g.in_h;
  s.in_w = g.in_w;
  s.out_c = g.out_c;
  s.k_h = g.k_h;
  s.k_w = g.k_w;
  s.stride = g.stride;
  s.pad = g.pad;
  s.out_h = g.out_h();
  s.out_w = g.out_w();
  return s;
}

dim3 grid_2d(int64_t inner, int64_t outer) {  // as cuda::detail::grid_2d
  return dim3(
      unsigned(std::clamp<int64_t>((inner + cuda::kThreads - 1) / cuda::kThreads, 1, 65535)),
      unsigned(std::clamp<int64_t>(outer, 1, 65535)));
}

}  // namespace

TEMPLATE_TEST_CASE("emulated im2col and col2im match ops::im2col and ops::col2im", "[emulation]",
                   float, double) {
  using T = TestType;
  // (C, H, W, kernel, stride, pad): square and rectangular, strides 1-3, padding up to k - 1.
  struct G {
    int64_t c, h, w, k, stride, pad;
  };
  for (const G q : {G{1, 5, 5, 3, 1, 0}, G{2, 7, 6, 3, 2, 1}, G{3, 5, 4, 2, 1, 1},
                    G{2, 6, 7, 3, 3, 2}, G{1, 4, 9, 5, 1, 2}, G{2, 9, 9, 1, 2, 0}})
    for (const int64_t n : {int64_t(1), int64_t(3)}) {
      const ops::ConvGeometry g{q.c, q.h, q.w, 4, q.k, q.k, q.stride, q.pad};
      const kn::ConvShape s = conv_shape(g);
      const int64_t P = g.plane(), R = g.rows(), cols_size = R * n * P,
                    x_size = n * q.c * q.h * q.w;
      INFO(type_name<T>() << ", n " << n << ", C " << q.c << ", " << q.h << "x" << q.w
                          << ", kernel " << q.k << ", stride " << q.stride << ", pad " << q.pad);
      const Buf<T> x = random_values<T>(x_size, 40), dcols = random_values<T>(cols_size, 41);
      Buf<T> cols_cpu(static_cast<size_t>(cols_size)), sq_cpu(static_cast<size_t>(cols_size)),
          dx_cpu(static_cast<size_t>(x_size));
      ops::im2col(x.data(), n, g, cols_cpu.data());
      for (int64_t i = 0; i < cols_size; ++i)
        sq_cpu[size_t(i)] = cols_cpu[size_t(i)] * cols_cpu[size_t(i)];
      ops::col2im(dcols.data(), n, g, dx_cpu.data());
      Buf<T> dx2_cpu(static_cast<size_t>(x_size));  // the variance path: 2 x * col2im(dcols)
      for (int64_t i = 0; i < x_size; ++i)
        dx2_cpu[size_t(i)] = dx_cpu[size_t(i)] * (T(2) * x[size_t(i)]);

      for (const dim3 grid : {grid_2d(n * P, R), dim3(1, 1), dim3(2, 3)}) {
        INFO("im2col grid " << grid.x << " x " << grid.y);
        Buf<T> cols = nans<T>(cols_size), sq = nans<T>(cols_size);
        launch(grid, cuda::kThreads, false, [&] {
          kn::im2col_forward_kernel<T, int32_t>(x.data(), int32_t(n), s, cols.data(), sq.data());
        });
        CHECK(same(cols, cols_cpu) == "");
        CHECK(same(sq, sq_cpu) == "");
        Buf<T> sq_only = nans<T>(cols_size);
        launch(grid, 33, false, [&] {
          kn::im2col_forward_kernel<T, int64_t>(x.data(), n, s, nullptr, sq_only.data());
        });
        CHECK(same(sq_only, sq_cpu) == "");
      }
      for (const dim3 grid : {grid_2d(q.h * q.w, n * q.c), dim3(1, 1), dim3(2, 2)}) {
        INFO("col2im grid " << grid.x << " x " << grid.y);
        for (const bool times_2x : {false, true}) {
          const T* x2 = times_2x ? x.data() : nullptr;
          const Buf<T>& want = times_2x ? dx2_cpu : dx_cpu;
          Buf<T> a = nans<T>(x_size), b = nans<T>(x_size);
          if (q.stride == 1)  // the launcher's unit-stride kernel
            launch(grid, cuda::kThreads, false, [&] {
              kn::im2col_backward_kernel<T, int32_t, true>(dcols.data(), int32_t(n), s, x2,
                                                           a.data());
            });
          else
            launch(grid, cuda::kThreads, false, [&] {
              kn::im2col_backward_kernel<T, int32_t, false>(dcols.data(), int32_t(n), s, x2,
                                                            a.data());
            });
          launch(grid, 33, false, [&] {
            kn::im2col_backward_kernel<T, int64_t, false>(dcols.data(), n, s, x2, b.data());
          });
          CHECK(same(a, want) == "");  // the CPU's (kh, kw) order: bit for bit
          CHECK(same(b, want) == "");
        }
      }
    }
}

// ---- pool.cuh: MaxPool2d ----

TEMPLATE_TEST_CASE("emulated max pooling matches MaxPool2d, overlapping windows and ties",
                   "[emulation]", float, double) {
  using T = TestType;
  struct P {
    Shape in;
    int64_t k, stride;
  };
  for (const P q :
       {P{Shape(1, 1, 5, 5), 2, 2}, P{Shape(2, 3, 8, 6), 2, 2}, P{Shape(2, 3, 7, 6), 3, 2},
        P{Shape(1, 2, 7, 9), 2, 3}, P{Shape(3, 1, 5, 6), 3, 1}, P{Shape(1, 2, 4, 4), 4, 4}}) {
    MaxPool2d<T> layer(q.k, q.stride);
    const Shape out = layer.output_shape(q.in);
    INFO(type_name<T>() << ", input " << q.in << ", kernel " << q.k << ", stride " << q.stride);
    // Values on a grid of 1/4 in [-1, 1]: many ties, where the first maximum must win.
    Buf<T> x = random_values<T>(q.in.numel(), 50);
    for (auto& v : x) v = std::round(v * T(4)) / T(4);
    const Buf<T> dy = random_values<T>(out.numel(), 51);
    Buf<T> y_cpu(static_cast<size_t>(out.numel())), dx_cpu(static_cast<size_t>(q.in.numel()));
    const Context ctx;
    layer.forward(ConstView<T>(x.data(), q.in), TensorView<T>(y_cpu.data(), out), nullptr, ctx);
    layer.backward(ConstView<T>(x.data(), q.in), ConstView<T>(y_cpu.data(), out),
                   ConstView<T>(dy.data(), out), TensorView<T>(dx_cpu.data(), q.in), nullptr, ctx);
    kn::PoolShape ps;  // as cuda::pool_shape
    ps.planes = q.in.n * q.in.c;
    ps.in_h = q.in.h;
    ps.in_w = q.in.w;
    ps.out_h = out.h;
    ps.out_w = out.w;
    ps.k = q.k;
    ps.stride = q.stride;
    for (const auto& [grid, block] : launch_shapes(q.in.numel())) {
      INFO("grid " << grid << " x " << block);
      Buf<T> y = nans<T>(out.numel()), y64 = nans<T>(out.numel());
      Buf<T> dx = nans<T>(q.in.numel()), dx64 = nans<T>(q.in.numel());
      launch(grid, block, false,
             [&] { kn::max_pool_forward_kernel<T, int32_t>(x.data(), ps, y.data()); });
      launch(grid, block, false,
             [&] { kn::max_pool_forward_kernel<T, int64_t>(x.data(), ps, y64.data()); });
      launch(grid, block, false,
             [&] { kn::max_pool_backward_kernel<T, int32_t>(x.data(), dy.data(), ps, dx.data()); });
      launch(grid, block, false, [&] {
        kn::max_pool_backward_kernel<T, int64_t>(x.data(), dy.data(), ps, dx64.data());
      });
      CHECK(same(y, y_cpu) == "");
      CHECK(same(y64, y_cpu) == "");
      CHECK(same(dx, dx_cpu) == "");  // gathered in the CPU's scatter order: bit for bit
      CHECK(same(dx64, dx_cpu) == "");
    }
  }
}

// ---- batchnorm.cuh: BatchNorm ----

namespace {

// A BatchNorm bound to buffers of its own: params (gamma, beta), grads, state (running mean,
// running variance), with the values the case needs.
template <class T>
struct BoundBatchNorm {
  BatchNorm<T> layer;
  Buf<T> params, grads, state;
  explicit BoundBatchNorm(int64_t c) : layer(c, 0.1, 1e-5) {
    ParamTable t;
    layer.declare(t);
    params = random_values<T>(t.trainable_size(), 60, 0.5, 1.5);  // gamma, then beta
    grads = random_values<T>(t.trainable_size(), 61);
    state = random_values<T>(t.state_size(), 62, 0.2, 1.2);  // running mean, running var > 0
    layer.bind(params.data(), grads.data(), state.data());
  }
};

template <class T>
void batch_norm_case(const Shape& in, bool training, bool batch_stats_in_eval,
                     unsigned stats_grid) {
  const int64_t C = in.c, total = in.numel();
  const bool batch = training || batch_stats_in_eval;
  INFO(type_name<T>() << " batch norm " << in << (training ? ", training" : ", evaluation")
                      << (batch ? ", batch statistics" : ", running statistics") << ", stats grid "
                      << stats_grid);
  BoundBatchNorm<T> cpu(C);
  const Buf<T> x = random_values<T>(total, 63, -1, 3), dy = random_values<T>(total, 64);
  const Context ctx = training ? Context::train(1, 2)
                               : Context::eval(1, PredictMode::sample, 0, batch_stats_in_eval);
  const Buf<T> params0 = cpu.params, grads0 = cpu.grads, state0 = cpu.state;
  Buf<T> scratch(static_cast<size_t>(cpu.layer.scratch_size(in))),
      y_cpu(static_cast<size_t>(total)), dx_cpu(static_cast<size_t>(total));
  cpu.layer.forward(ConstView<T>(x.data(), in), TensorView<T>(y_cpu.data(), in), scratch.data(),
                    ctx);
  const Buf<T> used_mean_cpu(scratch.begin(), scratch.begin() + C);
  const Buf<T> inv_std_cpu(scratch.begin() + C, scratch.begin() + 2 * C);
  cpu.layer.backward(ConstView<T>(x.data(), in), ConstView<T>(y_cpu.data(), in),
                     ConstView<T>(dy.data(), in), TensorView<T>(dx_cpu.data(), in), scratch.data(),
                     ctx);

  // Forward: moments (grid (chunks, C)), per-channel statistics, apply.
  kn::BatchNormShape s;  // as cuda::batch_norm_shape
  s.n = in.n;
  s.c = C;
  s.p = in.plane();
  Buf<T> state = state0, used_mean = nans<T>(C), inv_std = nans<T>(C), y = nans<T>(total);
  std::vector<double> partial(static_cast<size_t>(3 * C * s.chunks()), std::nan(""));
  kn::BatchNormForwardArgs<T> a;
  a.gamma = params0.data();
  a.beta = params0.data() + C;
  a.running_mean = state.data();
  a.running_var = state.data() + C;
  a.batch = batch;
  a.update_running = training;
  a.momentum = T(0.1);
  a.eps = T(1e-5);
  a.used_mean = used_mean.data();
  a.inv_std = inv_std.data();
  a.partial = partial.data();
  if (batch)
    launch(dim3(unsigned(s.chunks()), unsigned(C)), kn::kBatchNormThreads, true,
           [&] { kn::batch_norm_moments_kernel<T, int32_t>(x.data(), s, partial.data()); });
  launch(stats_grid, kn::kBatchNormThreads, true, [&] { kn::batch_norm_stats_kernel<T>(s, a); });
  // The elementwise kernels run with every launch shape; each shape's result is compared.
  const auto apply = [&](const T* mean, const T* is, bool relu) {
    Buf<T> first;
    for (const auto& [grid, block] : launch_shapes(total)) {
      Buf<T> out = nans<T>(total);
      launch(grid, block, false, [&] {
        kn::batch_norm_apply_kernel<T, int32_t>(x.data(), s, a.gamma, a.beta, mean, is, relu,
                                                out.data());
      });
      if (first.empty()) first = out;
      INFO("apply grid " << grid << " x " << block);
      CHECK(same(out, first) == "");  // the launch shape changes nothing
    }
    return first;
  };
  y = apply(used_mean.data(), inv_std.data(), false);
  if (batch) {
    // Chan's merge of double moments against the CPU's sums in T (Eigen, run by run): the
    // statistics agree to the CPU sums' rounding, of order sqrt(L) eps for L values per channel
    // (measured: about 1 eps for the statistics, 6 eps of y's scale, at L = 1,083 in float).
    const double rel = 4 * kEps<T> * std::sqrt(double(s.count()));
    check_close<T>(used_mean, used_mean_cpu, rel, rel, "used mean");
    check_close<T>(inv_std, inv_std_cpu, rel, 0, "inv std");
    check_close<T>(state, cpu.state, rel, rel, "running statistics");
    check_close<T>(y, y_cpu, rel, rel * max_abs(y_cpu), "y");
  } else {
    CHECK(same(used_mean, used_mean_cpu) == "");  // the running estimates, unchanged
    CHECK(same(inv_std, inv_std_cpu) == "");
    CHECK(same(state, state0) == "");
    CHECK(same(y, y_cpu) == "");
  }
  // The apply kernel alone, from the CPU's statistics: the CPU's operations, bit for bit; and
  // with the ReLU fused.
  Buf<T> relu_want = y_cpu;
  for (auto& v : relu_want) v = v > T(0) ? v : T(0);
  const Buf<T> y_exact = apply(used_mean_cpu.data(), inv_std_cpu.data(), false);
  const Buf<T> y_relu = apply(used_mean_cpu.data(), inv_std_cpu.data(), true);
  CHECK(same(y_exact, y_cpu) == "");
  CHECK(same(y_relu, relu_want) == "");

  // Backward from the CPU's statistics: chunk sums, per-channel sums, input gradient.
  Buf<T> grads = grads0, mean_dy = nans<T>(C), proj = nans<T>(C);
  std::vector<double> gpartial(static_cast<size_t>(2 * C * s.chunks()), std::nan(""));
  kn::BatchNormBackwardArgs<T> b;
  b.gamma = params0.data();
  b.used_mean = used_mean_cpu.data();
  b.inv_std = inv_std_cpu.data();
  b.batch = batch;
  b.dgamma = grads.data();
  b.dbeta = grads.data() + C;
  b.partial = gpartial.data();
  b.mean_dy = mean_dy.data();
  b.proj = proj.data();
  launch(dim3(unsigned(s.chunks()), unsigned(C)), kn::kBatchNormThreads, true,
         [&] { kn::batch_norm_grad_sums_kernel<T, int32_t>(x.data(), dy.data(), s, b); });
  launch(stats_grid, kn::kBatchNormThreads, true,
         [&] { kn::batch_norm_grad_stats_kernel<T>(s, b); });
  Buf<T> dx;
  for (const auto& [grid, block] : launch_shapes(total)) {
    Buf<T> out = nans<T>(total);
    launch(grid, block, false, [&] {
      kn::batch_norm_grad_apply_kernel<T, int32_t>(x.data(), dy.data(), s, b, out.data());
    });
    if (dx.empty()) dx = out;
    INFO("grad apply grid " << grid << " x " << block);
    CHECK(same(out, dx) == "");  // the launch shape changes nothing
  }
  // Sums of L terms in double against the CPU's in T, as the statistics above: of order
  // sqrt(L) eps of the largest sum.
  const double rel = 4 * kEps<T> * std::sqrt(double(s.count()));
  check_close<T>(grads, cpu.grads, rel, rel * max_abs(cpu.grads), "dgamma, dbeta");
  if (batch)  // mean_dy and proj rounded from different sums
    check_close<T>(dx, dx_cpu, rel, rel * max_abs(dx_cpu), "dx");
  else  // both 0: the CPU's operations, bit for bit
    CHECK(same(dx, dx_cpu) == "");

  // The fused ReLU's backward: dy counts only where the forward output was > 0 (running
  // statistics, so that dx is exact: CPU BatchNorm backward from the masked dy).
  if (!batch) {
    Buf<T> masked = dy, dx_relu_cpu(static_cast<size_t>(total)), scratch2 = scratch;
    for (int64_t i = 0; i < total; ++i)
      if (!(relu_want[size_t(i)] > T(0))) masked[size_t(i)] = T(0);
    BoundBatchNorm<T> cpu2(C);
    cpu2.params = params0;
    cpu2.state = state0;
    cpu2.grads = grads0;
    cpu2.layer.bind(cpu2.params.data(), cpu2.grads.data(), cpu2.state.data());
    cpu2.layer.backward(ConstView<T>(x.data(), in), ConstView<T>(relu_want.data(), in),
                        ConstView<T>(masked.data(), in), TensorView<T>(dx_relu_cpu.data(), in),
                        scratch2.data(), ctx);
    Buf<T> dx_relu = nans<T>(total);
    b.relu_y = relu_want.data();
    launch(cuda::grid_for(total), cuda::kThreads, false, [&] {
      kn::batch_norm_grad_apply_kernel<T, int32_t>(x.data(), dy.data(), s, b, dx_relu.data());
    });
    CHECK(same(dx_relu, dx_relu_cpu) == "");
  }
}

}  // namespace

TEMPLATE_TEST_CASE("emulated batch norm kernels match BatchNorm (batch and running statistics)",
                   "[emulation]", float, double) {
  using T = TestType;
  // (3, 2, 19, 19): 1,083 values per channel, two chunks of kBatchNormChunk; (1, 3, 5, 7): a
  // batch of 1; (6, 3, 1, 1): dense, the CPU's forward_dense path. Stats grids of C blocks (the
  // launcher's) and of 1 (a block loops over the channels, reusing its shared arrays).
  for (const Shape& in : {Shape(3, 2, 19, 19), Shape(1, 3, 5, 7), Shape(6, 3, 1, 1)}) {
    batch_norm_case<T>(in, true, false, unsigned(in.c));
    batch_norm_case<T>(in, false, false, unsigned(in.c));
  }
  batch_norm_case<T>(Shape(1, 3, 5, 7), true, false, 1);
  batch_norm_case<T>(Shape(1, 3, 5, 7), false, true, 2);  // batch statistics in evaluation
}

// ---- softmax_xent.cuh: cross_entropy ----

TEMPLATE_TEST_CASE("emulated K-sample softmax cross-entropy matches cross_entropy", "[emulation]",
                   float, double) {
  using T = TestType;
  struct S {
    int64_t n, c;
  };
  for (const int samples : {1, 3})
    for (const S sh : {S{1, 2}, S{7, 10}, S{33, 37}}) {
      const int64_t n = sh.n, c = sh.c, nc = n * c;
      INFO(type_name<T>() << ", K " << samples << ", N " << n << ", C " << c);
      const Buf<T> logits = random_values<T>(samples * nc, 70, -4, 4);
      std::vector<int32_t> labels(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) labels[size_t(i)] = int32_t((i * 7 + 3) % c);
      std::vector<ConstView<T>> views;
      Buf<T> d_cpu(static_cast<size_t>(samples * nc));
      std::vector<TensorView<T>> dviews;
      for (int k = 0; k < samples; ++k) {
        views.emplace_back(logits.data() + k * nc, Shape(n, c));
        dviews.emplace_back(d_cpu.data() + k * nc, Shape(n, c));
      }
      const LossResult want = cross_entropy(views, labels.data(), &dviews);
      for (const auto& [grid, block] : std::vector<std::pair<unsigned, unsigned>>{
               {cuda::grid_for(n, 128), 128}, {1, 5}, {2, 3}}) {
        INFO("grid " << grid << " x " << block);
        Buf<T> d = nans<T>(samples * nc), loss = nans<T>(n);
        std::vector<int32_t> correct(static_cast<size_t>(n), 7);
        launch(grid, block, false, [&] {
          kn::softmax_xent_forward_kernel<T>(samples, n, c, logits.data(), labels.data(), d.data(),
                                             loss.data(), correct.data());
        });
        // The CPU's formulas in the CPU's order: the loss as cuda::softmax_xent_result sums it,
        // the count and the gradient bit for bit.
        double sum = 0;
        int64_t right = 0;
        for (int64_t i = 0; i < n; ++i) {
          sum += double(loss[size_t(i)]);
          right += correct[size_t(i)];
        }
        CHECK(sum / double(n) == want.loss);
        CHECK(right == want.correct);
        CHECK(same(d, d_cpu) == "");
      }
      // A label outside [0, C): NaN loss and -1 for that row, the others unchanged.
      std::vector<int32_t> bad = labels;
      bad[0] = int32_t(c);
      Buf<T> loss = nans<T>(n);
      std::vector<int32_t> correct(static_cast<size_t>(n), 7);
      launch(1, 32, false, [&] {
        kn::softmax_xent_forward_kernel<T>(samples, n, c, logits.data(), bad.data(), nullptr,
                                           loss.data(), correct.data());
      });
      CHECK(std::isnan(loss[0]));
      CHECK(correct[0] == -1);
    }
}

// ---- adam.cuh and train_step.cuh's scheduled Adam: varnet::Adam ----

namespace {

// One Adam step as adam.cuh's header writes it, element by element with correctly rounded
// operations (scale: the per-parameter learning-rate scale, or null).
template <class T>
void adam_reference(const kn::AdamScalars<T>& a, const T* scale, const Buf<T>& g, Buf<T>& p,
                    Buf<T>& m, Buf<T>& v) {
  for (size_t k = 0; k < p.size(); ++k) {
    m[k] = a.b1 * m[k] + a.one_minus_b1 * g[k];
    v[k] = a.b2 * v[k] + a.one_minus_b2 * (g[k] * g[k]);
    const T num = scale ? (a.step * scale[k]) * m[k] : a.step * m[k];
    p[k] = p[k] - num / (std::sqrt(v[k] / a.c2) + a.eps);
  }
}

// varnet::Adam takes a correctly rounded sqrt (not Eigen's vectorised estimate) and the same
// operations in the same order, so in this file (-ffp-contract=off on both sides) its steps are
// the kernels' bit for bit. A CPU build that lets the compiler fuse multiply-adds may differ by
// an ulp; the [cuda] trainer tests allow for that.
template <class T>
void check_adam_close(const Buf<T>& p, const Buf<T>& p_cpu) {
  CHECK(same(p, p_cpu) == "");
}

}  // namespace

TEMPLATE_TEST_CASE("emulated Adam kernels take varnet::Adam's steps", "[emulation]", float,
                   double) {
  using T = TestType;
  AdamOptions opt;
  opt.beta1 = 0.8;
  opt.beta2 = 0.99;
  for (const int64_t count : {int64_t(1), int64_t(7), int64_t(1001)}) {
    INFO(type_name<T>() << ", count " << count);
    // adam_update_kernel with the scalars cuda::Adam computes on the host.
    for (const auto& [grid, block] : launch_shapes(count)) {
      INFO("grid " << grid << " x " << block);
      Adam<T> cpu(static_cast<size_t>(count), opt);
      Buf<T> p_cpu = random_values<T>(count, 80), p = p_cpu, p_ref = p_cpu;
      Buf<T> m(static_cast<size_t>(count), T(0)), v = m, m_ref = m, v_ref = m;
      for (int t = 1; t <= 4; ++t) {
        const Buf<T> g = random_values<T>(count, 80 + uint32_t(t));
        const double lr = 1e-2 / t;
        cpu.step(p_cpu, g, lr);
        kn::AdamScalars<T> a;  // as cuda::Adam::step
        a.b1 = T(opt.beta1);
        a.b2 = T(opt.beta2);
        a.one_minus_b1 = 1 - a.b1;
        a.one_minus_b2 = 1 - a.b2;
        const T c1 = T(1 - std::pow(opt.beta1, double(t)));
        a.c2 = T(1 - std::pow(opt.beta2, double(t)));
        a.step = T(lr) / c1;
        a.eps = T(opt.eps);
        adam_reference<T>(a, nullptr, g, p_ref, m_ref, v_ref);
        launch(grid, block, false, [&] {
          kn::adam_update_kernel<T>(count, a, p.data(), g.data(), m.data(), v.data());
        });
        INFO("step " << t);
        CHECK(same(p, p_ref) == "");
        CHECK(same(m, m_ref) == "");
        CHECK(same(v, v_ref) == "");
        check_adam_close<T>(p, p_cpu);
      }
    }
    // adam_scheduled_kernel: the scalars from the device step word (LinearDecay, bias
    // corrections, computed by thread 0 into shared memory), per-parameter scales, the
    // non-finite flag. Threaded: the launcher's shape, and 2 blocks of 64.
    for (const auto& [grid, block] : std::vector<std::pair<unsigned, unsigned>>{
             {cuda::grid_for(count), unsigned(cuda::kThreads)}, {2, 64}}) {
      INFO("scheduled, grid " << grid << " x " << block);
      for (const bool scales : {false, true}) {
        INFO("scales " << scales);
        Adam<T> cpu(static_cast<size_t>(count), opt);
        Buf<T> lr_scale(static_cast<size_t>(count), T(1));
        if (scales) {
          const int64_t first = count / 3;
          cpu.set_lr_scale(first, count - first, 10.0);
          std::fill(lr_scale.begin() + first, lr_scale.end(), T(10));
        }
        kn::AdamSchedule sched;
        sched.lr_base = 3e-3;
        sched.lr_total = 5;
        sched.beta1 = opt.beta1;
        sched.beta2 = opt.beta2;
        sched.eps = opt.eps;
        const LinearDecay decay{sched.lr_base, sched.lr_total};
        Buf<T> p_cpu = random_values<T>(count, 90), p = p_cpu, p_ref = p_cpu;
        Buf<T> m(static_cast<size_t>(count), T(0)), v = m, m_ref = m, v_ref = m;
        int32_t nonfinite = 0;
        for (uint32_t step = 0; step < 3; ++step) {
          const Buf<T> g = random_values<T>(count, 90 + step);
          const double lr = decay.at(step);
          cpu.step(p_cpu, g, lr);
          kn::AdamScalars<T> a;  // varnet::Adam's scalars at t = step + 1
          a.b1 = T(opt.beta1);
          a.b2 = T(opt.beta2);
          a.one_minus_b1 = 1 - a.b1;
          a.one_minus_b2 = 1 - a.b2;
          a.c2 = T(1 - std::pow(opt.beta2, double(step + 1)));
          a.step = T(lr) / T(1 - std::pow(opt.beta1, double(step + 1)));
          a.eps = T(opt.eps);
          adam_reference<T>(a, scales ? lr_scale.data() : nullptr, g, p_ref, m_ref, v_ref);
          launch(grid, block, true, [&] {
            kn::adam_scheduled_kernel<T>(count, sched, &step, p.data(), g.data(), m.data(),
                                         v.data(), scales ? lr_scale.data() : nullptr, &nonfinite);
          });
          INFO("step " << step);
          CHECK(same(p, p_ref) == "");
          CHECK(same(m, m_ref) == "");
          CHECK(same(v, v_ref) == "");
          check_adam_close<T>(p, p_cpu);
        }
        CHECK(nonfinite == 0);
        Buf<T> g(static_cast<size_t>(count), T(0.5));
        g[static_cast<size_t>(count - 1)] = std::numeric_limits<T>::infinity();
        const uint32_t step = 3;
        launch(grid, block, true, [&] {
          kn::adam_scheduled_kernel<T>(count, sched, &step, p.data(), g.data(), m.data(), v.data(),
                                       nullptr, &nonfinite);
        });
        CHECK(nonfinite == 1);
      }
    }
  }
}

// ---- winograd.cuh: ops/winograd_conv.hpp ----

namespace {

// C (m, n) = alpha A (m, k) B (k, n) + beta C, row-major with leading dimensions, `batch` times
// with strides: what cuda::gemm_strided asks of cuBLAS, as a plain loop with a double
// accumulator. op_b_t: B given as (n, k) and used transposed.
template <class T>
void host_gemm(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, int64_t sa, const T* b,
               int64_t ldb, int64_t sb, bool op_b_t, T* c, int64_t ldc, int64_t sc, int64_t batch) {
  for (int64_t q = 0; q < batch; ++q)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t r = 0; r < k; ++r)
          acc += double(a[q * sa + i * lda + r]) *
                 double(op_b_t ? b[q * sb + j * ldb + r] : b[q * sb + r * ldb + j]);
        c[q * sc + i * ldc + j] = T(acc);
      }
}

template <class T>
void winograd_case(int64_t n, int64_t C, int64_t O, int64_t H, int64_t W, int64_t pad) {
  using winograd::kPoints;
  const ops::ConvGeometry g{C, H, W, O, 3, 3, 1, pad};
  const int64_t OH = g.out_h(), OW = g.out_w();
  INFO(type_name<T>() << " Winograd n " << n << ", C " << C << ", O " << O << ", " << H << "x" << W
                      << ", pad " << pad);
  const Buf<T> x = random_values<T>(n * C * H * W, 100), w = random_values<T>(O * C * 9, 101);
  const Buf<T> bias = random_values<T>(O, 102), dy = random_values<T>(n * O * OH * OW, 103);

  // The tile grids, with padding columns beyond the tiles (which the kernels must zero).
  kn::WinogradTiles ft;
  ft.n = n;
  ft.rows = winograd::tiles(OH);
  ft.cols = winograd::tiles(OW);
  ft.ld = ft.tiles() + 3;
  const int64_t per = ft.per_sample(), tiles = ft.tiles(), ld = ft.ld;
  const ops::WinogradGrid grid(OH, OW);

  // Filters, plain and rotated with channels swapped.
  for (const bool flipped : {false, true}) {
    Buf<T> want(static_cast<size_t>(kPoints * O * C)), got = nans<T>(kPoints * O * C);
    ops::winograd_filters(w.data(), O, C, flipped, want.data());
    for (const auto& [gr, bl] : launch_shapes(O * C))
      launch(gr, bl, false,
             [&] { kn::winograd_filter_kernel<T>(w.data(), O, C, flipped, got.data()); });
    INFO("flipped " << flipped);
    CHECK(same(got, want) == "");
  }
  // Input tiles (36, C, ld), sample by sample on the CPU.
  Buf<T> v_cpu(static_cast<size_t>(kPoints * C * ld), T(0));
  for (int64_t b = 0; b < n; ++b)
    ops::winograd_inputs(x.data() + b * C * H * W, C, H, W, pad, grid, v_cpu.data() + b * per, ld);
  for (const auto& [gr, bl] : launch_shapes(C * ld)) {
    INFO("inputs grid " << gr << " x " << bl);
    Buf<T> v = nans<T>(kPoints * C * ld), v64 = nans<T>(kPoints * C * ld);
    launch(gr, bl, false, [&] {
      kn::winograd_input_kernel<T, int32_t>(x.data(), int32_t(C), int32_t(H), int32_t(W),
                                            int32_t(pad), ft, v.data());
    });
    launch(gr, bl, false,
           [&] { kn::winograd_input_kernel<T, int64_t>(x.data(), C, H, W, pad, ft, v64.data()); });
    CHECK(same(v, v_cpu) == "");
    CHECK(same(v64, v_cpu) == "");
  }
  // Output transform (+ bias) from products m (36, O, ld).
  const Buf<T> m = random_values<T>(kPoints * O * ld, 104);
  for (const T* b : {static_cast<const T*>(nullptr), bias.data()}) {
    Buf<T> want(static_cast<size_t>(n * O * OH * OW));
    for (int64_t s = 0; s < n; ++s)
      ops::winograd_outputs(m.data() + s * per, O, OH, OW, grid, ld, b,
                            want.data() + s * O * OH * OW);
    for (const auto& [gr, bl] : launch_shapes(O * tiles)) {
      INFO("outputs grid " << gr << " x " << bl << ", bias " << (b != nullptr));
      Buf<T> y = nans<T>(n * O * OH * OW);
      launch(gr, bl, false, [&] {
        kn::winograd_output_kernel<T, int32_t>(m.data(), int32_t(O), int32_t(OH), int32_t(OW), ft,
                                               b, y.data());
      });
      CHECK(same(y, want) == "");
    }
  }
  // Output-gradient transform dm (36, O, ld) from dy.
  Buf<T> dm_cpu(static_cast<size_t>(kPoints * O * ld), T(0));
  for (int64_t s = 0; s < n; ++s)
    ops::winograd_output_grads(dy.data() + s * O * OH * OW, O, OH, OW, grid,
                               dm_cpu.data() + s * per, ld);
  for (const auto& [gr, bl] : launch_shapes(O * ld)) {
    INFO("output grads grid " << gr << " x " << bl);
    Buf<T> dm = nans<T>(kPoints * O * ld);
    launch(gr, bl, false, [&] {
      kn::winograd_output_grad_kernel<T, int64_t>(dy.data(), O, OH, OW, ft, dm.data());
    });
    CHECK(same(dm, dm_cpu) == "");
  }
  // Filter gradient from S chunks of partial products (S, 36, O, C), summed in chunk order.
  for (const int chunks : {1, 3}) {
    const Buf<T> parts = random_values<T>(chunks * kPoints * O * C, 105);
    Buf<T> du(static_cast<size_t>(kPoints * O * C));
    for (int64_t i = 0; i < kPoints * O * C; ++i) {
      T sum = T(0);
      for (int q = 0; q < chunks; ++q) sum += parts[size_t(q * kPoints * O * C + i)];
      du[size_t(i)] = sum;
    }
    const Buf<T> dw0 = random_values<T>(O * C * 9, 106);
    Buf<T> want = dw0;
    ops::winograd_filter_grads(du.data(), O, C, want.data());
    for (const auto& [gr, bl] : launch_shapes(O * C)) {
      INFO("filter grads, chunks " << chunks << ", grid " << gr << " x " << bl);
      Buf<T> dw = dw0;
      launch(gr, bl, false,
             [&] { kn::winograd_filter_grad_kernel<T>(parts.data(), chunks, O, C, dw.data()); });
      CHECK(same(dw, want) == "");
    }
  }
  // The batched GEMM's pointers: chunk s of dM[xi], V[xi] and partial (s, xi).
  {
    const int chunks = 3;
    const int64_t L = (tiles + chunks - 1) / chunks, batch = int64_t(chunks) * kPoints;
    const T *dmp = m.data(), *vp = v_cpu.data();
    T* partsp = nullptr;
    Buf<T> parts(static_cast<size_t>(batch * O * C));
    partsp = parts.data();
    std::vector<const T*> pa(static_cast<size_t>(batch)), pb(static_cast<size_t>(batch));
    std::vector<T*> pc(static_cast<size_t>(batch));
    launch(cuda::grid_for(batch), 7, false, [&] {
      kn::winograd_grad_pointers_kernel<T>(dmp, vp, partsp, O, C, ld, L, chunks, pa.data(),
                                           pb.data(), pc.data());
    });
    bool ok = true;
    for (int64_t k = 0; k < batch; ++k) {
      const int64_t s = k / kPoints, xi = k % kPoints;
      ok = ok && pa[size_t(k)] == dmp + xi * O * ld + s * L &&
           pb[size_t(k)] == vp + xi * C * ld + s * L && pc[size_t(k)] == partsp + k * O * C;
    }
    CHECK(ok);
  }

  // A whole convolution, forward and backward, composed from the kernels as
  // cuda::winograd_conv_forward/backward compose them (one chunk for the weight gradient), with
  // host GEMMs for cuBLAS's, against ops::winograd_forward/backward. The GEMMs sum in another
  // order (Eigen's blocks here, double accumulators there): agreement to the reductions'
  // rounding, relative to the outputs' scale.
  {
    const int64_t OC = O * C;
    Buf<T> u = nans<T>(kPoints * OC), v = nans<T>(kPoints * C * ld),
           prod(static_cast<size_t>(kPoints * O * ld));
    Buf<T> y = nans<T>(n * O * OH * OW);
    const auto run = [](int64_t work, auto&& body) {
      launch(cuda::grid_for(work), cuda::kThreads, false, body);
    };
    run(OC, [&] { kn::winograd_filter_kernel<T>(w.data(), O, C, false, u.data()); });
    run(C * ld, [&] {
      kn::winograd_input_kernel<T, int32_t>(x.data(), int32_t(C), int32_t(H), int32_t(W),
                                            int32_t(pad), ft, v.data());
    });
    host_gemm<T>(O, ld, C, u.data(), C, OC, v.data(), ld, C * ld, false, prod.data(), ld, O * ld,
                 kPoints);
    run(O * tiles, [&] {
      kn::winograd_output_kernel<T, int32_t>(prod.data(), int32_t(O), int32_t(OH), int32_t(OW), ft,
                                             bias.data(), y.data());
    });
    Buf<T> y_cpu(static_cast<size_t>(n * O * OH * OW)),
        u_cpu(static_cast<size_t>(ops::winograd_forward_scratch(g)));
    ops::winograd_forward(x.data(), w.data(), bias.data(), y_cpu.data(), n, g, u_cpu.data());
    const double rel = std::is_same_v<T, float> ? 1e-5 : 2e-14;  // 1.5e-6 and 3e-15 measured
    check_close<T>(y, y_cpu, rel, rel * max_abs(y_cpu), "Winograd forward");

    // Weight gradient: dM, the products over all tiles (one chunk; the padding columns are zero
    // in both operands), G^T dU G.
    Buf<T> dm = nans<T>(kPoints * O * ld), du(static_cast<size_t>(kPoints * OC)),
           dw = random_values<T>(O * C * 9, 107);
    run(O * ld, [&] {
      kn::winograd_output_grad_kernel<T, int32_t>(dy.data(), int32_t(O), int32_t(OH), int32_t(OW),
                                                  ft, dm.data());
    });
    host_gemm<T>(O, C, ld, dm.data(), ld, O * ld, v.data(), ld, C * ld, true, du.data(), C, OC,
                 kPoints);
    Buf<T> dw_cpu = dw;
    run(OC, [&] { kn::winograd_filter_grad_kernel<T>(du.data(), 1, O, C, dw.data()); });
    // Input gradient: the forward algorithm on dy with the rotated filters, at pad 2 - pad, over
    // dx's own tile grid.
    kn::WinogradTiles it;
    it.n = n;
    it.rows = winograd::tiles(H);
    it.cols = winograd::tiles(W);
    it.ld = it.tiles();
    Buf<T> uf = nans<T>(kPoints * OC), vin = nans<T>(kPoints * O * it.ld),
           pin(static_cast<size_t>(kPoints * C * it.ld)), dx = nans<T>(n * C * H * W);
    run(OC, [&] { kn::winograd_filter_kernel<T>(w.data(), O, C, true, uf.data()); });
    run(O * it.ld, [&] {
      kn::winograd_input_kernel<T, int32_t>(dy.data(), int32_t(O), int32_t(OH), int32_t(OW),
                                            int32_t(2 - pad), it, vin.data());
    });
    host_gemm<T>(C, it.ld, O, uf.data(), O, OC, vin.data(), it.ld, O * it.ld, false, pin.data(),
                 it.ld, C * it.ld, kPoints);
    run(C * it.tiles(), [&] {
      kn::winograd_output_kernel<T, int32_t>(pin.data(), int32_t(C), int32_t(H), int32_t(W), it,
                                             static_cast<const T*>(nullptr), dx.data());
    });
    Buf<T> dx_cpu(static_cast<size_t>(n * C * H * W)), db_cpu(static_cast<size_t>(O), T(0));
    Buf<T> scratch(static_cast<size_t>(ops::winograd_backward_scratch(n, g)));
    ops::winograd_backward(x.data(), dy.data(), w.data(), dw_cpu.data(), db_cpu.data(),
                           dx_cpu.data(), n, g, scratch.data());
    check_close<T>(dw, dw_cpu, rel, rel * max_abs(dw_cpu), "Winograd weight gradient");
    check_close<T>(dx, dx_cpu, rel, rel * max_abs(dx_cpu), "Winograd input gradient");
  }
}

}  // namespace

TEMPLATE_TEST_CASE("emulated Winograd F(4x4, 3x3) kernels match ops/winograd_conv.hpp",
                   "[emulation]", float, double) {
  using T = TestType;
  winograd_case<T>(2, 3, 5, 7, 9, 1);   // partial tiles on both edges
  winograd_case<T>(1, 2, 3, 10, 6, 0);  // a batch of 1, no padding
  winograd_case<T>(3, 1, 2, 5, 5, 2);   // padding 2: the input gradient at pad 0
}
