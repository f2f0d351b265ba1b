// Dense Gaussian variance layer (LRT) on the GPU: the fused path against its floor and against
// an unfused sequence, forward and forward + backward.
//
//   gemm        cuBLAS SGEMM alone on the layer's shapes (forward: 1 GEMM; fwd+bwd: 3 GEMMs),
//               the floor a fused layer is measured against;
//   fused       varnet::cuda::VarianceLinear: s2 and x^2 in one kernel, the GEMM for v (in partial
//               products over chunks of I when the output is small, cuda::gemm_parts), and the
//               LRT epilogue that sums them and draws eps in-kernel from Philox (backward
//               recomputes eps); fused_unsplit_fwd is the same with v in one GEMM;
//   unfused     the same maths as separate steps, as a framework would run them: s2 and x^2
//               kernels, the GEMM, curandGenerateNormal into an eps buffer, then a separate
//               sqrt/mul/add kernel (backward reads the stored eps).
// Correctness first (the outputs' standardised noise must look N(0, 1)), then warm-up, then the
// median over many repeats timed with CUDA events. Prints a table; writes JSON to argv[1] if given.
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

// y (N, O) = bias[o] + eps * sqrt(v + e0), eps read from a buffer.
__global__ void lrt_apply_kernel(int64_t count, int64_t o, const float* __restrict__ bias,
                                 const float* __restrict__ eps, const float* __restrict__ v,
                                 float e0, float* __restrict__ y) {
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < count;
       k += int64_t(blockDim.x) * gridDim.x)
    y[k] = bias[k % o] + eps[k] * sqrtf(v[k] + e0);
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

// Mean and variance of (y - b) / sqrt(v + e0): the standardised noise, which must be N(0, 1).
bool noise_looks_normal(const char* what, const std::vector<float>& y, const std::vector<float>& v,
                        const std::vector<float>& bias, int64_t o, float e0) {
  double s = 0, s2 = 0;
  int64_t bad = 0;
  for (size_t k = 0; k < y.size(); ++k) {
    const double z =
        (double(y[k]) - bias[k % static_cast<size_t>(o)]) / std::sqrt(double(v[k]) + e0);
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

struct Shape3 {
  int64_t n, in, out;
  int repeats;
};

struct Result {
  Shape3 shape;
  std::map<std::string, double> ms;
  int64_t parts = 1;  // the fused forward's partial products of v
};

// Runs every variant on one shape; returns false when the correctness check fails.
bool run_shape(vc::GpuContext& ctx, const Shape3& s, Result& result) {
  const int64_t N = s.n, I = s.in, O = s.out, NO = N * O, NI = N * I, OI = O * I;
  const float e0 = 1e-8f;
  varnet::VarianceOptions opt;
  opt.bias = true;
  opt.e0 = e0;
  const vc::VarianceLinear<float> layer(I, O, opt);
  const float bound = 1.0f / std::sqrt(float(I));

  auto x = vc::to_device(random_vector(static_cast<size_t>(NI), 1, -1.f, 1.f), ctx.stream());
  auto sigma =
      vc::to_device(random_vector(static_cast<size_t>(OI), 2, -bound, bound), ctx.stream());
  auto bias = vc::to_device(random_vector(static_cast<size_t>(O), 3, -bound, bound), ctx.stream());
  auto dy = vc::to_device(random_vector(static_cast<size_t>(NO), 4, -1.f, 1.f), ctx.stream());
  vc::DeviceBuffer<float> dsigma(static_cast<size_t>(OI)), dbias(static_cast<size_t>(O)),
      y(static_cast<size_t>(NO)), dx(static_cast<size_t>(NI));
  vc::DeviceBuffer<float> scratch(size_t(layer.scratch_size(N)));
  dsigma.zero(ctx.stream());
  dbias.zero(ctx.stream());
  vc::VarianceTensors<float> w;
  w.param = sigma.data();
  w.bias = bias.data();
  w.dparam = dsigma.data();
  w.dbias = dbias.data();
  const varnet::NoiseKey key{42, 0, 1, 0};
  const auto sample = varnet::PredictMode::sample;

  // Unfused buffers: s2, ds2 (O, I); x2 (N, I); v, eps, dv (N, O). eps rounded up to an even
  // count (curandGenerateNormal draws pairs).
  vc::DeviceBuffer<float> s2(static_cast<size_t>(OI)), ds2(static_cast<size_t>(OI)),
      x2(static_cast<size_t>(NI)), v(static_cast<size_t>(NO)), dv(static_cast<size_t>(NO)),
      eps(size_t(NO + (NO & 1)));
  Curand rng(ctx.stream());
  const unsigned blocks = vc::grid_for(NO);

  auto gemm_fwd = [&] {
    vc::gemm(ctx, vc::Op::N, vc::Op::T, N, O, I, 1.0f, x2.data(), s2.data(), 0.0f, v.data());
  };
  auto gemm_fwd_bwd = [&] {
    gemm_fwd();
    vc::gemm(ctx, vc::Op::T, vc::Op::N, O, I, N, 1.0f, dv.data(), x2.data(), 0.0f, ds2.data());
    vc::gemm(ctx, vc::Op::N, vc::Op::N, N, I, O, 1.0f, dv.data(), s2.data(), 0.0f, dx.data());
  };
  auto fused_fwd = [&] {
    layer.forward(ctx, w, N, x.data(), y.data(), scratch.data(), key, sample);
  };
  auto fused_fwd_bwd = [&] {
    fused_fwd();
    layer.backward(ctx, w, N, x.data(), dy.data(), dx.data(), scratch.data(), key, sample);
  };
  auto unfused_fwd = [&] {
    vc::variance_forward(ctx, false, static_cast<const float*>(sigma.data()), s2.data(), OI);
    vc::square_forward(ctx, static_cast<const float*>(x.data()), x2.data(), NI);
    gemm_fwd();
    VARNET_CURAND_CHECK(curandGenerateNormal(rng.gen, eps.data(), eps.size(), 0.0f, 1.0f));
    lrt_apply_kernel<<<blocks, vc::kThreads, 0, ctx.stream()>>>(NO, O, bias.data(), eps.data(),
                                                                v.data(), e0, y.data());
    VARNET_CUDA_CHECK_LAUNCH("lrt_apply_kernel");
  };
  auto unfused_fwd_bwd = [&] {
    unfused_fwd();
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
  std::printf("shape N %lld, I %lld, O %lld\n", static_cast<long long>(N),
              static_cast<long long>(I), static_cast<long long>(O));
  fused_fwd();
  const std::vector<float> h_bias = bias.download(ctx.stream());
  const std::vector<float> y_fused = y.download(ctx.stream());
  const std::vector<float> v_fused = vc::to_host(
      scratch.data() + 2 * OI + NI, static_cast<size_t>(NO), ctx.stream());  // layer's v
  unfused_fwd();
  const std::vector<float> y_unfused = y.download(ctx.stream());
  const std::vector<float> v_unfused = v.download(ctx.stream());
  bool ok = noise_looks_normal("fused", y_fused, v_fused, h_bias, O, e0) &&
            noise_looks_normal("unfused", y_unfused, v_unfused, h_bias, O, e0);
  double worst = 0;
  for (size_t k = 0; k < v_fused.size(); ++k)
    worst = std::max(worst, std::fabs(double(v_fused[k]) - v_unfused[k]) /
                                (std::fabs(double(v_unfused[k])) + 1e-30));
  const bool same_v = worst < 1e-5;
  std::printf("  check v: fused vs unfused max relative difference %.2e: %s\n", worst,
              same_v ? "ok" : "FAILED");
  if (!(ok && same_v)) return false;
  fused_fwd_bwd();
  unfused_fwd_bwd();
  ctx.synchronize();

  // ---- timings ----
  const int warmup = 5, reps = s.repeats;
  result.shape = s;
  result.ms["gemm_fwd"] = median_ms(ctx, warmup, reps, gemm_fwd);
  result.ms["fused_fwd"] = median_ms(ctx, warmup, reps, fused_fwd);
  result.ms["unfused_fwd"] = median_ms(ctx, warmup, reps, unfused_fwd);
  result.ms["gemm_fwd_bwd"] = median_ms(ctx, warmup, reps, gemm_fwd_bwd);
  result.ms["fused_fwd_bwd"] = median_ms(ctx, warmup, reps, fused_fwd_bwd);
  result.ms["unfused_fwd_bwd"] = median_ms(ctx, warmup, reps, unfused_fwd_bwd);
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
  result.ms["fused_unsplit_fwd"] = median_ms(ctx, warmup, reps, fused_unsplit_fwd);
  return true;
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

    const std::vector<Shape3> shapes = {{128, 800, 500, 200}, {4096, 4096, 4096, 50}};
    std::vector<Result> results;
    for (const auto& s : shapes) {
      Result r;
      if (!run_shape(ctx, s, r)) {
        std::printf("correctness check failed: no timings\n");
        return 1;
      }
      results.push_back(r);
    }

    std::printf("\n%-18s %-16s %12s %10s %12s\n", "N x I x O", "variant", "median ms", "vs gemm",
                "GEMM TFLOP/s");
    for (const auto& r : results) {
      const std::string shape = std::to_string(r.shape.n) + "x" + std::to_string(r.shape.in) + "x" +
                                std::to_string(r.shape.out);
      const double flop = 2.0 * double(r.shape.n) * double(r.shape.in) * double(r.shape.out);
      for (const char* pass : {"fwd", "fwd_bwd"}) {
        const double floor = r.ms.at(std::string("gemm_") + pass);
        const double gemms = std::string(pass) == "fwd" ? 1.0 : 3.0;
        for (const char* variant : {"gemm", "fused", "unfused"}) {
          const double t = r.ms.at(std::string(variant) + "_" + pass);
          std::printf("%-18s %-16s %12.4f %10.3f %12.2f\n", shape.c_str(),
                      (std::string(variant) + "_" + pass).c_str(), t, t / floor,
                      gemms * flop / (t * 1e-3) / 1e12);
        }
      }
      std::printf("%-18s unfused / fused: forward %.3f, forward+backward %.3f\n", shape.c_str(),
                  r.ms.at("unfused_fwd") / r.ms.at("fused_fwd"),
                  r.ms.at("unfused_fwd_bwd") / r.ms.at("fused_fwd_bwd"));
      std::printf(
          "%-18s fused forward with v in %lld partial products %.4f ms, in one GEMM "
          "%.4f ms: %.3fx\n",
          shape.c_str(), static_cast<long long>(r.parts), r.ms.at("fused_fwd"),
          r.ms.at("fused_unsplit_fwd"), r.ms.at("fused_unsplit_fwd") / r.ms.at("fused_fwd"));
    }

    if (argc > 1) {
      std::ofstream js(argv[1]);
      if (!js) throw varnet::Error(std::string("cannot write ") + argv[1]);
      js << "{\n  \"benchmark\": \"bench_lrt\",\n  \"device\": \"" << prop.name
         << "\",\n  \"compute_capability\": \"" << prop.major << "." << prop.minor
         << "\",\n  \"cuda_runtime\": " << runtime << ",\n  \"cuda_driver\": " << driver
         << ",\n  \"cublas\": " << cublas
         << ",\n  \"precision\": \"fp32 (no TF32)\",\n  \"method\": \"median of CUDA-event "
            "timings after 5 warm-up runs\",\n  \"results\": [\n";
      for (size_t i = 0; i < results.size(); ++i) {
        const auto& r = results[i];
        js << "    {\"n\": " << r.shape.n << ", \"in\": " << r.shape.in
           << ", \"out\": " << r.shape.out << ", \"repeats\": " << r.shape.repeats
           << ", \"median_ms\": {";
        bool first = true;
        for (const auto& [k, t] : r.ms) {
          js << (first ? "" : ", ") << "\"" << k << "\": " << t;
          first = false;
        }
        js << "}, \"ratios\": {\"fused_fwd/gemm\": " << r.ms.at("fused_fwd") / r.ms.at("gemm_fwd")
           << ", \"unfused_fwd/gemm\": " << r.ms.at("unfused_fwd") / r.ms.at("gemm_fwd")
           << ", \"unfused_fwd/fused_fwd\": " << r.ms.at("unfused_fwd") / r.ms.at("fused_fwd")
           << ", \"fused_fwd_bwd/gemm_x3\": " << r.ms.at("fused_fwd_bwd") / r.ms.at("gemm_fwd_bwd")
           << ", \"unfused_fwd_bwd/gemm_x3\": "
           << r.ms.at("unfused_fwd_bwd") / r.ms.at("gemm_fwd_bwd")
           << ", \"unfused_fwd_bwd/fused_fwd_bwd\": "
           << r.ms.at("unfused_fwd_bwd") / r.ms.at("fused_fwd_bwd") << "}}"
           << (i + 1 < results.size() ? "," : "") << "\n";
      }
      js << "  ]\n}\n";
      std::printf("wrote %s\n", argv[1]);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_lrt: %s\n", e.what());
    return 1;
  }
}
