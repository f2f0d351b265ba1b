// Gaussian variance layers (LRT) on the GPU, dense and convolutional: the fused path against its
// floor and against an unfused sequence, forward and forward + backward.
//
//   gemm        cuBLAS SGEMM alone on the layer's shapes (forward: 1 GEMM; fwd+bwd: 3 GEMMs),
//               the floor a fused layer is measured against. For a convolution these are the
//               GEMMs over the im2col columns: v (O, N P) = s2 (O, R) cols2 (R, N P), then
//               ds2 = dV cols2^T and s2^T dV;
//   fused       varnet::cuda::VarianceLinear / VarianceConv2d. Dense: s2 and x^2 in one kernel,
//               the GEMM for v (in partial products over chunks of I when the output is small,
//               cuda::gemm_parts), and the LRT epilogue that sums them and draws eps in-kernel
//               from Philox (backward recomputes eps); fused_unsplit_fwd is the same with v in
//               one GEMM. Convolution: s2, im2col writing the squared columns directly, the GEMM,
//               and the epilogue reading v channel-major and writing y in NCHW;
//   unfused     the same maths as separate steps, as a framework would run them: s2 and x^2
//               kernels (a convolution: im2col of x^2, the GEMM, a transpose to NCHW),
//               curandGenerateNormal into an eps buffer, then a separate sqrt/mul/add kernel
//               (backward reads the stored eps, transposes dL/dv back, runs col2im and scales
//               by 2 x in a pass of its own).
// Correctness first (the outputs' standardised noise must look N(0, 1), and the fused and
// unfused v must agree), then warm-up, then the median over many repeats timed with CUDA events.
// Prints a table; writes JSON to argv[1] if given ("results": dense, "conv_results": conv).
//
// Built by CMake with the CUDA backend (target bench_lrt); scripts/gpu-check.sh runs it as
//   build-gpu/benchmarks/bench_lrt bench_lrt.json
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <curand.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "timing.cuh"
#include "varnet/cuda/check.hpp"
#include "varnet/cuda/device_buffer.hpp"
#include "varnet/cuda/gemm.hpp"
#include "varnet/cuda/handle.hpp"
#include "varnet/cuda/ops.hpp"
#include "varnet/cuda/variance_layers.hpp"

namespace vc = varnet::cuda;
using varnet::bench::median_ms;
using varnet::bench::random_vector;

namespace {

// ---- the unfused path's own kernels ----

// y (N, O, P) = bias[o] + eps * sqrt(v + e0), eps read from a buffer (dense: P = 1).
__global__ void lrt_apply_kernel(int64_t count, int64_t o, int64_t p,
                                 const float* __restrict__ bias, const float* __restrict__ eps,
                                 const float* __restrict__ v, float e0, float* __restrict__ y) {
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < count;
       k += int64_t(blockDim.x) * gridDim.x)
    y[k] = bias[(k / p) % o] + eps[k] * sqrtf(v[k] + e0);
}

// dv = g * eps / (2 sqrt(v + e0)), eps read from a buffer.
__global__ void lrt_grad_kernel(int64_t count, const float* __restrict__ eps,
                                const float* __restrict__ v, const float* __restrict__ g, float e0,
                                float* __restrict__ dv) {
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < count;
       k += int64_t(blockDim.x) * gridDim.x)
    dv[k] = g[k] * eps[k] / (2.0f * sqrtf(v[k] + e0));
}

struct Curand {
  curandGenerator_t gen = nullptr;
  explicit Curand(cudaStream_t stream) {
    VARNET_CURAND_CHECK(curandCreateGenerator(&gen, CURAND_RNG_PSEUDO_PHILOX4_32_10));
    VARNET_CURAND_CHECK(curandSetStream(gen, stream));
    VARNET_CURAND_CHECK(curandSetPseudoRandomGeneratorSeed(gen, 1234ull));
  }
  Curand(const Curand&) = delete;
  Curand& operator=(const Curand&) = delete;
  ~Curand() {
    if (gen) (void)curandDestroyGenerator(gen);
  }
};

// Mean and variance of (y - bias[o]) / sqrt(v + e0) over y and v (N, O, P): the standardised
// noise, which must be N(0, 1).
bool noise_looks_normal(const char* what, const std::vector<float>& y, const std::vector<float>& v,
                        const std::vector<float>& bias, int64_t o, int64_t p, float e0) {
  double s = 0, s2 = 0;
  int64_t bad = 0;
  for (size_t k = 0; k < y.size(); ++k) {
    const size_t c = (k / static_cast<size_t>(p)) % static_cast<size_t>(o);
    const double z = (double(y[k]) - bias[c]) / std::sqrt(double(v[k]) + e0);
    if (!std::isfinite(z)) ++bad;
    s += z;
    s2 += z * z;
  }
  const double n = double(y.size()), mean = s / n, var = s2 / n - mean * mean;
  const bool ok = bad == 0 && std::fabs(mean) < 0.02 && std::fabs(var - 1) < 0.03;
  std::printf("  check %-8s standardised noise: mean %+.4f, variance %.4f, non-finite %lld: %s\n",
              what, mean, var, static_cast<long long>(bad), ok ? "ok" : "FAILED");
  return ok;
}

// Both paths' noise looks N(0, 1) and their v (both (N, O, P)) agree to 1e-5 relative.
bool fused_matches_unfused(const std::vector<float>& y_fused, const std::vector<float>& v_fused,
                           const std::vector<float>& y_unfused, const std::vector<float>& v_unfused,
                           const std::vector<float>& bias, int64_t o, int64_t p, float e0) {
  const bool ok = noise_looks_normal("fused", y_fused, v_fused, bias, o, p, e0) &&
                  noise_looks_normal("unfused", y_unfused, v_unfused, bias, o, p, e0);
  double worst = 0;
  for (size_t k = 0; k < v_fused.size(); ++k)
    worst = std::max(worst, std::fabs(double(v_fused[k]) - v_unfused[k]) /
                                (std::fabs(double(v_unfused[k])) + 1e-30));
  const bool same_v = worst < 1e-5;
  std::printf("  check v: fused vs unfused max relative difference %.2e: %s\n", worst,
              same_v ? "ok" : "FAILED");
  return ok && same_v;
}

// One benchmarked shape: its label, the fields that identify it in the JSON, the multiply-adds
// of one of its GEMMs, and the median of every variant.
struct Result {
  std::string label, json_fields;
  double flop = 0;  // 2 M N K of the forward GEMM; each backward GEMM has the same count
  int repeats = 0;
  std::map<std::string, double> ms;
  int64_t parts = 0;  // dense: the fused forward's partial products of v (0: not applicable)
};

// The six timings every shape gets: {gemm, fused, unfused} x {fwd, fwd_bwd}.
struct Variants {
  std::function<void()> gemm_fwd, gemm_fwd_bwd, fused_fwd, fused_fwd_bwd, unfused_fwd,
      unfused_fwd_bwd;
};

void time_variants(vc::GpuContext& ctx, const Variants& f, int repeats, Result& result) {
  const int warmup = 5;
  result.repeats = repeats;
  result.ms["gemm_fwd"] = median_ms(ctx, warmup, repeats, f.gemm_fwd);
  result.ms["fused_fwd"] = median_ms(ctx, warmup, repeats, f.fused_fwd);
  result.ms["unfused_fwd"] = median_ms(ctx, warmup, repeats, f.unfused_fwd);
  result.ms["gemm_fwd_bwd"] = median_ms(ctx, warmup, repeats, f.gemm_fwd_bwd);
  result.ms["fused_fwd_bwd"] = median_ms(ctx, warmup, repeats, f.fused_fwd_bwd);
  result.ms["unfused_fwd_bwd"] = median_ms(ctx, warmup, repeats, f.unfused_fwd_bwd);
}

// A fused layer's tensors on the device: x (x_n values) and dy (y_n) uniform in [-1, 1], sigma
// (w_n) and bias (o) uniform in [-bound, bound] (random seeds seed .. seed + 3); y, dx and the
// layer's scratch; dsigma and dbias zeroed; w points at them.
struct LayerData {
  vc::DeviceBuffer<float> x, sigma, bias, dy, dsigma, dbias, y, dx, scratch;
  vc::VarianceTensors<float> w;
  LayerData(vc::GpuContext& ctx, int64_t x_n, int64_t w_n, int64_t o, int64_t y_n,
            int64_t scratch_n, float bound, uint32_t seed)
      : x{vc::to_device(random_vector(size_t(x_n), seed, -1.f, 1.f), ctx.stream())},
        sigma{vc::to_device(random_vector(size_t(w_n), seed + 1, -bound, bound), ctx.stream())},
        bias{vc::to_device(random_vector(size_t(o), seed + 2, -bound, bound), ctx.stream())},
        dy{vc::to_device(random_vector(size_t(y_n), seed + 3, -1.f, 1.f), ctx.stream())},
        dsigma{size_t(w_n)},
        dbias{size_t(o)},
        y{size_t(y_n)},
        dx{size_t(x_n)},
        scratch{size_t(scratch_n)} {
    dsigma.zero(ctx.stream());
    dbias.zero(ctx.stream());
    w.param = sigma.data();
    w.bias = bias.data();
    w.dparam = dsigma.data();
    w.dbias = dbias.data();
  }
};

struct DenseShape {
  int64_t n, in, out;
  int repeats;
};

// Runs every variant on one dense shape; returns false when the correctness check fails.
bool run_dense(vc::GpuContext& ctx, const DenseShape& s, Result& result) {
  const int64_t N = s.n, I = s.in, O = s.out, NO = N * O, NI = N * I, OI = O * I;
  const float e0 = 1e-8f;
  varnet::VarianceOptions opt;
  opt.bias = true;
  opt.e0 = e0;
  const vc::VarianceLinear<float> layer(I, O, opt);
  LayerData d(ctx, NI, OI, O, NO, layer.scratch_size(N), 1.0f / std::sqrt(float(I)), 1);
  auto &x = d.x, &sigma = d.sigma, &bias = d.bias, &dy = d.dy, &dsigma = d.dsigma, &dbias = d.dbias,
       &y = d.y, &dx = d.dx, &scratch = d.scratch;
  const vc::VarianceTensors<float>& w = d.w;
  const varnet::NoiseKey key{42, 0, 1, 0};
  const auto sample = varnet::PredictMode::sample;

  // Unfused buffers: s2, ds2 (O, I); x2 (N, I); v, eps, dv (N, O). eps rounded up to an even
  // count (curandGenerateNormal draws pairs).
  vc::DeviceBuffer<float> s2(static_cast<size_t>(OI)), ds2(static_cast<size_t>(OI)),
      x2(static_cast<size_t>(NI)), v(static_cast<size_t>(NO)), dv(static_cast<size_t>(NO)),
      eps(size_t(NO + (NO & 1)));
  Curand rng(ctx.stream());
  const unsigned blocks = vc::grid_for(NO);

  Variants f;
  f.gemm_fwd = [&] {
    vc::gemm(ctx, vc::Op::N, vc::Op::T, N, O, I, 1.0f, x2.data(), s2.data(), 0.0f, v.data());
  };
  f.gemm_fwd_bwd = [&] {
    f.gemm_fwd();
    vc::gemm(ctx, vc::Op::T, vc::Op::N, O, I, N, 1.0f, dv.data(), x2.data(), 0.0f, ds2.data());
    vc::gemm(ctx, vc::Op::N, vc::Op::N, N, I, O, 1.0f, dv.data(), s2.data(), 0.0f, dx.data());
  };
  f.fused_fwd = [&] { layer.forward(ctx, w, N, x.data(), y.data(), scratch.data(), key, sample); };
  f.fused_fwd_bwd = [&] {
    f.fused_fwd();
    layer.backward(ctx, w, N, x.data(), dy.data(), dx.data(), scratch.data(), key, sample);
  };
  f.unfused_fwd = [&] {
    vc::variance_forward(ctx, false, static_cast<const float*>(sigma.data()), s2.data(), OI);
    vc::square_forward(ctx, static_cast<const float*>(x.data()), x2.data(), NI);
    f.gemm_fwd();
    VARNET_CURAND_CHECK(curandGenerateNormal(rng.gen, eps.data(), eps.size(), 0.0f, 1.0f));
    lrt_apply_kernel<<<blocks, vc::kThreads, 0, ctx.stream()>>>(NO, O, 1, bias.data(), eps.data(),
                                                                v.data(), e0, y.data());
    VARNET_CUDA_CHECK_LAUNCH("lrt_apply_kernel");
  };
  f.unfused_fwd_bwd = [&] {
    f.unfused_fwd();
    vc::bias_backward(ctx, static_cast<const float*>(dy.data()), N, O, 1, dbias.data());
    lrt_grad_kernel<<<blocks, vc::kThreads, 0, ctx.stream()>>>(NO, eps.data(), v.data(), dy.data(),
                                                               e0, dv.data());
    VARNET_CUDA_CHECK_LAUNCH("lrt_grad_kernel");
    vc::gemm(ctx, vc::Op::T, vc::Op::N, O, I, N, 1.0f, dv.data(), x2.data(), 0.0f, ds2.data());
    vc::variance_backward(ctx, false, static_cast<const float*>(sigma.data()),
                          static_cast<const float*>(s2.data()),
                          static_cast<const float*>(ds2.data()), dsigma.data(), OI);
    vc::gemm(ctx, vc::Op::N, vc::Op::N, N, I, O, 1.0f, dv.data(), s2.data(), 0.0f, dx.data());
    vc::lrt_input_backward(ctx, NI, static_cast<const float*>(x.data()),
                           static_cast<const float*>(dx.data()), static_cast<const float*>(nullptr),
                           dx.data());
  };

  // ---- correctness first ----
  std::printf("dense: N %lld, I %lld, O %lld\n", static_cast<long long>(N),
              static_cast<long long>(I), static_cast<long long>(O));
  f.fused_fwd();
  const std::vector<float> h_bias = bias.download(ctx.stream());
  const std::vector<float> y_fused = y.download(ctx.stream());
  const std::vector<float> v_fused = vc::to_host(
      scratch.data() + 2 * OI + NI, static_cast<size_t>(NO), ctx.stream());  // layer's v
  f.unfused_fwd();
  if (!fused_matches_unfused(y_fused, v_fused, y.download(ctx.stream()), v.download(ctx.stream()),
                             h_bias, O, 1, e0))
    return false;
  f.fused_fwd_bwd();
  f.unfused_fwd_bwd();
  ctx.synchronize();

  // ---- timings ----
  result.label = "dense " + std::to_string(N) + "x" + std::to_string(I) + "x" + std::to_string(O);
  result.json_fields = "\"n\": " + std::to_string(N) + ", \"in\": " + std::to_string(I) +
                       ", \"out\": " + std::to_string(O);
  result.flop = 2.0 * double(N) * double(I) * double(O);
  time_variants(ctx, f, s.repeats, result);
  // The fused layer's forward with v's GEMM in one piece (no partial products, cuda::gemm_parts):
  // the same three launches on the layer's scratch layout.
  result.parts = vc::gemm_parts(N, O, I);
  auto fused_unsplit_fwd = [&] {
    float *ls2 = scratch.data(), *lx2 = ls2 + 2 * OI, *lv = lx2 + NI;
    vc::variance_square_forward(ctx, false, static_cast<const float*>(sigma.data()), ls2, OI,
                                static_cast<const float*>(x.data()), lx2, NI);
    vc::gemm(ctx, vc::Op::N, vc::Op::T, N, O, I, 1.0f, static_cast<const float*>(lx2),
             static_cast<const float*>(ls2), 0.0f, lv);
    vc::lrt_forward(ctx, key, varnet::ops::LrtLayout{N, O, 1, false},
                    static_cast<const float*>(bias.data()), false, e0, lv, y.data());
  };
  result.ms["fused_unsplit_fwd"] = median_ms(ctx, 5, s.repeats, fused_unsplit_fwd);
  return true;
}

// A convolution: input (N, C, side, side), O filters k x k, stride 1, padding `pad`.
struct ConvShape {
  const char* name;
  int64_t n, c, side, o, k, pad;
  int repeats;
};

// Runs every variant on one convolution shape; returns false when the correctness check fails.
bool run_conv(vc::GpuContext& ctx, const ConvShape& s, Result& result) {
  const float e0 = 1e-8f;
  varnet::VarianceOptions opt;
  opt.bias = true;
  opt.e0 = e0;
  const vc::VarianceConv2d<float> layer(s.c, s.o, varnet::ConvOptions{s.k, 1, s.pad, true}, opt);
  const varnet::Shape in(s.n, s.c, s.side, s.side);
  const varnet::ops::ConvGeometry g = layer.geometry(in);
  const int64_t N = s.n, O = s.o, P = g.plane(), R = g.rows(), NP = N * P, OR = O * R,
                NI = in.numel(), NOP = N * O * P;
  LayerData d(ctx, NI, OR, O, NOP, layer.scratch_size(in), 1.0f / std::sqrt(float(R)), 11);
  auto &x = d.x, &sigma = d.sigma, &bias = d.bias, &dy = d.dy, &dsigma = d.dsigma, &dbias = d.dbias,
       &y = d.y, &dx = d.dx, &scratch = d.scratch;
  const vc::VarianceTensors<float>& w = d.w;
  const varnet::NoiseKey key{42, 0, 1, 0};
  const auto sample = varnet::PredictMode::sample;

  // Unfused buffers: s2, ds2 (O, R); x2, dx2 (N, C, H, W); cols2, dcols2 (R, N P); v_cm, dv_cm
  // channel-major (O, N P); v, dv, eps (N, O, P), eps rounded up to an even count.
  vc::DeviceBuffer<float> s2(static_cast<size_t>(OR)), ds2(static_cast<size_t>(OR)),
      x2(static_cast<size_t>(NI)), dx2(static_cast<size_t>(NI)), cols2(static_cast<size_t>(R * NP)),
      dcols2(static_cast<size_t>(R * NP)), v_cm(static_cast<size_t>(NOP)),
      dv_cm(static_cast<size_t>(NOP)), v(static_cast<size_t>(NOP)), dv(static_cast<size_t>(NOP)),
      eps(size_t(NOP + (NOP & 1)));
  Curand rng(ctx.stream());
  const unsigned blocks = vc::grid_for(NOP);
  const float* none = nullptr;  // no bias, no x, no dx_mean

  Variants f;
  f.gemm_fwd = [&] {  // v (O, N P) = s2 (O, R) cols2 (R, N P)
    vc::gemm(ctx, vc::Op::N, vc::Op::N, O, NP, R, 1.0f, s2.data(), cols2.data(), 0.0f, v_cm.data());
  };
  f.gemm_fwd_bwd = [&] {
    f.gemm_fwd();
    vc::gemm(ctx, vc::Op::N, vc::Op::T, O, R, NP, 1.0f, dv_cm.data(), cols2.data(), 0.0f,
             ds2.data());  // ds2 (O, R) = dV cols2^T
    vc::gemm(ctx, vc::Op::T, vc::Op::N, R, NP, O, 1.0f, s2.data(), dv_cm.data(), 0.0f,
             dcols2.data());  // (R, N P) = s2^T dV
  };
  f.fused_fwd = [&] { layer.forward(ctx, w, in, x.data(), y.data(), scratch.data(), key, sample); };
  f.fused_fwd_bwd = [&] {
    f.fused_fwd();
    layer.backward(ctx, w, in, x.data(), dy.data(), dx.data(), scratch.data(), key, sample);
  };
  f.unfused_fwd = [&] {
    vc::variance_forward(ctx, false, static_cast<const float*>(sigma.data()), s2.data(), OR);
    vc::square_forward(ctx, static_cast<const float*>(x.data()), x2.data(), NI);
    vc::im2col_forward(ctx, static_cast<const float*>(x2.data()), N, g, cols2.data(),
                       static_cast<float*>(nullptr));
    f.gemm_fwd();
    vc::channel_major_to_nchw(ctx, static_cast<const float*>(v_cm.data()), none, N, O, P, v.data());
    VARNET_CURAND_CHECK(curandGenerateNormal(rng.gen, eps.data(), eps.size(), 0.0f, 1.0f));
    lrt_apply_kernel<<<blocks, vc::kThreads, 0, ctx.stream()>>>(NOP, O, P, bias.data(), eps.data(),
                                                                v.data(), e0, y.data());
    VARNET_CUDA_CHECK_LAUNCH("lrt_apply_kernel");
  };
  f.unfused_fwd_bwd = [&] {
    f.unfused_fwd();
    vc::bias_backward(ctx, static_cast<const float*>(dy.data()), N, O, P, dbias.data());
    lrt_grad_kernel<<<blocks, vc::kThreads, 0, ctx.stream()>>>(NOP, eps.data(), v.data(), dy.data(),
                                                               e0, dv.data());
    VARNET_CUDA_CHECK_LAUNCH("lrt_grad_kernel");
    vc::nchw_to_channel_major(ctx, static_cast<const float*>(dv.data()), N, O, P, dv_cm.data());
    vc::gemm(ctx, vc::Op::N, vc::Op::T, O, R, NP, 1.0f, dv_cm.data(), cols2.data(), 0.0f,
             ds2.data());
    vc::variance_backward(ctx, false, static_cast<const float*>(sigma.data()),
                          static_cast<const float*>(s2.data()),
                          static_cast<const float*>(ds2.data()), dsigma.data(), OR);
    vc::gemm(ctx, vc::Op::T, vc::Op::N, R, NP, O, 1.0f, s2.data(), dv_cm.data(), 0.0f,
             dcols2.data());
    vc::im2col_backward(ctx, static_cast<const float*>(dcols2.data()), N, g, none, dx2.data());
    vc::lrt_input_backward(ctx, NI, static_cast<const float*>(x.data()),
                           static_cast<const float*>(dx2.data()), none, dx.data());
  };

  // ---- correctness first ----
  std::printf("conv %s: N %lld, C %lld, %lldx%lld, O %lld, kernel %lld, pad %lld\n", s.name,
              static_cast<long long>(N), static_cast<long long>(s.c),
              static_cast<long long>(s.side), static_cast<long long>(s.side),
              static_cast<long long>(O), static_cast<long long>(s.k),
              static_cast<long long>(s.pad));
  f.fused_fwd();
  const std::vector<float> h_bias = bias.download(ctx.stream());
  const std::vector<float> y_fused = y.download(ctx.stream());
  // The layer's v sits channel-major (O, N P) after s2, ds2 and the squared columns.
  const std::vector<float> v_fused_cm =
      vc::to_host(scratch.data() + 2 * OR + R * NP, static_cast<size_t>(NOP), ctx.stream());
  std::vector<float> v_fused(v_fused_cm.size());
  for (int64_t b = 0; b < N; ++b)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t p = 0; p < P; ++p) v_fused[(b * O + o) * P + p] = v_fused_cm[o * NP + b * P + p];
  f.unfused_fwd();
  if (!fused_matches_unfused(y_fused, v_fused, y.download(ctx.stream()), v.download(ctx.stream()),
                             h_bias, O, P, e0))
    return false;
  f.fused_fwd_bwd();
  f.unfused_fwd_bwd();
  ctx.synchronize();

  // ---- timings ----
  result.label = std::string("conv ") + s.name;
  result.json_fields = "\"name\": \"" + std::string(s.name) + "\", \"n\": " + std::to_string(N) +
                       ", \"c\": " + std::to_string(s.c) + ", \"side\": " + std::to_string(s.side) +
                       ", \"out\": " + std::to_string(O) + ", \"kernel\": " + std::to_string(s.k) +
                       ", \"pad\": " + std::to_string(s.pad);
  result.flop = 2.0 * double(O) * double(NP) * double(R);
  time_variants(ctx, f, s.repeats, result);
  return true;
}

void print_table(const std::vector<Result>& results) {
  std::printf("\n%-26s %-16s %12s %10s %12s\n", "layer", "variant", "median ms", "vs gemm",
              "GEMM TFLOP/s");
  for (const auto& r : results) {
    for (const char* pass : {"fwd", "fwd_bwd"}) {
      const double floor = r.ms.at(std::string("gemm_") + pass);
      const double gemms = std::string(pass) == "fwd" ? 1.0 : 3.0;
      for (const char* variant : {"gemm", "fused", "unfused"}) {
        const double t = r.ms.at(std::string(variant) + "_" + pass);
        std::printf("%-26s %-16s %12.4f %10.3f %12.2f\n", r.label.c_str(),
                    (std::string(variant) + "_" + pass).c_str(), t, t / floor,
                    gemms * r.flop / (t * 1e-3) / 1e12);
      }
    }
    std::printf("%-26s unfused / fused: forward %.3f, forward+backward %.3f\n", r.label.c_str(),
                r.ms.at("unfused_fwd") / r.ms.at("fused_fwd"),
                r.ms.at("unfused_fwd_bwd") / r.ms.at("fused_fwd_bwd"));
    if (r.parts > 0)
      std::printf(
          "%-26s fused forward with v in %lld partial products %.4f ms, in one GEMM "
          "%.4f ms: %.3fx\n",
          r.label.c_str(), static_cast<long long>(r.parts), r.ms.at("fused_fwd"),
          r.ms.at("fused_unsplit_fwd"), r.ms.at("fused_unsplit_fwd") / r.ms.at("fused_fwd"));
  }
}

void write_results(std::ofstream& js, const char* key, const std::vector<Result>& results) {
  js << "  \"" << key << "\": [\n";
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    js << "    {" << r.json_fields << ", \"repeats\": " << r.repeats << ", \"median_ms\": {";
    bool first = true;
    for (const auto& [k, t] : r.ms) {
      js << (first ? "" : ", ") << "\"" << k << "\": " << t;
      first = false;
    }
    js << "}, \"ratios\": {\"fused_fwd/gemm\": " << r.ms.at("fused_fwd") / r.ms.at("gemm_fwd")
       << ", \"unfused_fwd/gemm\": " << r.ms.at("unfused_fwd") / r.ms.at("gemm_fwd")
       << ", \"unfused_fwd/fused_fwd\": " << r.ms.at("unfused_fwd") / r.ms.at("fused_fwd")
       << ", \"fused_fwd_bwd/gemm_x3\": " << r.ms.at("fused_fwd_bwd") / r.ms.at("gemm_fwd_bwd")
       << ", \"unfused_fwd_bwd/gemm_x3\": " << r.ms.at("unfused_fwd_bwd") / r.ms.at("gemm_fwd_bwd")
       << ", \"unfused_fwd_bwd/fused_fwd_bwd\": "
       << r.ms.at("unfused_fwd_bwd") / r.ms.at("fused_fwd_bwd") << "}}"
       << (i + 1 < results.size() ? "," : "") << "\n";
  }
  js << "  ]";
}

}  // namespace

int main(int argc, char** argv) {
  try {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
      std::printf("no CUDA device: nothing to benchmark\n");
      return 77;
    }
    cudaDeviceProp prop{};
    VARNET_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    vc::GpuContext ctx(0);
    int runtime = 0, driver = 0, cublas = 0;
    VARNET_CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
    VARNET_CUDA_CHECK(cudaDriverGetVersion(&driver));
    VARNET_CUBLAS_CHECK(cublasGetVersion(ctx.blas(), &cublas));
    std::printf(
        "device %s (sm_%d%d), CUDA runtime %d, driver %d, cuBLAS %d; FP32 GEMMs (no TF32)\n",
        prop.name, prop.major, prop.minor, runtime, driver, cublas);

    const std::vector<DenseShape> dense_shapes = {{128, 800, 500, 200}, {4096, 4096, 4096, 50}};
    // LeNet-5's two convolutions (variance layers 1 and 2 of examples/lenet5), the VGG-like
    // network's first 32x32 convolution and its conv 11 (a default variance layer), batch 128.
    const std::vector<ConvShape> conv_shapes = {
        {"lenet conv1", 128, 1, 28, 20, 5, 0, 200},
        {"lenet conv2", 128, 20, 12, 50, 5, 0, 200},
        {"vgg 64->64 32x32", 128, 64, 32, 64, 3, 1, 50},
        {"vgg conv11 512 2x2", 128, 512, 2, 512, 3, 1, 200}};
    std::vector<Result> dense, conv;
    for (const auto& s : dense_shapes) {
      Result r;
      if (!run_dense(ctx, s, r)) {
        std::printf("correctness check failed: no timings\n");
        return 1;
      }
      dense.push_back(r);
    }
    for (const auto& s : conv_shapes) {
      Result r;
      if (!run_conv(ctx, s, r)) {
        std::printf("correctness check failed: no timings\n");
        return 1;
      }
      conv.push_back(r);
    }
    print_table(dense);
    print_table(conv);

    if (argc > 1) {
      std::ofstream js(argv[1]);
      if (!js) throw varnet::Error(std::string("cannot write ") + argv[1]);
      js << "{\n  \"benchmark\": \"bench_lrt\",\n  \"device\": \"" << prop.name
         << "\",\n  \"compute_capability\": \"" << prop.major << "." << prop.minor
         << "\",\n  \"cuda_runtime\": " << runtime << ",\n  \"cuda_driver\": " << driver
         << ",\n  \"cublas\": " << cublas
         << ",\n  \"precision\": \"fp32 (no TF32)\",\n  \"method\": \"median of CUDA-event "
            "timings after 5 warm-up runs\",\n";
      write_results(js, "results", dense);
      js << ",\n";
      write_results(js, "conv_results", conv);
      js << "\n}\n";
      std::printf("wrote %s\n", argv[1]);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_lrt: %s\n", e.what());
    return 1;
  }
}
