// The VGG-like network's 3x3 convolutions on the GPU, batch 128: Winograd F(4x4, 3x3)
// (cuda/winograd.hpp) against im2col + SGEMM (the baseline, cuda::Conv2d with
// ConvAlgorithm::Im2col), forward and forward + backward (weight and input gradients), in the
// same run. Correctness first: the two algorithms' outputs and gradients must agree to 1e-4 of
// their scale, or the benchmark fails. Then medians over repeats, timed with CUDA events; the
// ratio im2col / Winograd is printed per shape, with the effective rate of each (the direct
// convolution's 2 N O C 9 OH OW multiply-adds per pass over the time). JSON to argv[1] if given.
//
// Built by CMake with the CUDA backend (target bench_conv); scripts/gpu-check.sh runs it as
//   build-gpu/benchmarks/bench_conv bench_conv.json
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "timing.cuh"
#include "varnet/cuda/device_buffer.hpp"
#include "varnet/cuda/handle.hpp"
#include "varnet/cuda/layers.hpp"

namespace vc = varnet::cuda;
using varnet::bench::median_ms;
using varnet::bench::random_vector;

namespace {

struct ConvShape {
  const char* name;
  int64_t c, o, side;
};

// max |a - b| / max |b|.
double scaled_error(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::fabs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  return err / scale;
}

struct Timing {
  double forward = 0, step = 0;  // ms: forward; forward + backward with dx
};

}  // namespace

int main(int argc, char** argv) {
  try {
    vc::GpuContext gpu;
    const int64_t batch = 128;
    const ConvShape shapes[] = {{"conv2 64->64 32x32", 64, 64, 32},
                                {"conv4 128->128 16x16", 128, 128, 16},
                                {"conv6 256->256 8x8", 256, 256, 8},
                                {"conv9 512->512 4x4", 512, 512, 4}};
    std::string json = "{\"batch\":" + std::to_string(batch) + ",\"conv\":[";
    bool ok = true, first = true;
    std::printf("%-22s %-9s %10s %10s %9s %9s\n", "shape", "algorithm", "fwd ms", "fwd+bwd ms",
                "fwd TF/s", "step TF/s");
    for (const ConvShape& s : shapes) {
      const varnet::Shape in(batch, s.c, s.side, s.side);
      const int64_t x_n = in.numel(), y_n = batch * s.o * s.side * s.side, w_n = s.o * s.c * 9;
      auto x = vc::to_device(random_vector(size_t(x_n), 1, -1, 1), gpu.stream());
      auto w = vc::to_device(random_vector(size_t(w_n), 2, -0.05f, 0.05f), gpu.stream());
      auto dy = vc::to_device(random_vector(size_t(y_n), 3, -1, 1), gpu.stream());
      Timing t[2];
      std::vector<float> y_host[2], dx_host[2], dw_host[2];
      for (int a = 0; a < 2; ++a) {
        varnet::ConvOptions o{3, 1, 1, false};
        o.algorithm = a == 0 ? varnet::ConvAlgorithm::Im2col : varnet::ConvAlgorithm::Winograd;
        const vc::Conv2d<float> conv(s.c, s.o, o);
        vc::DeviceBuffer<float> scratch{size_t(conv.scratch_size(in))}, y{size_t(y_n)},
            dx{size_t(x_n)};
        auto dw = vc::to_device(std::vector<float>(size_t(w_n), 0.0f), gpu.stream());
        vc::WeightTensors<float> wt;
        wt.weight = w.data();
        wt.dweight = dw.data();
        conv.forward(gpu, wt, in, x.data(), y.data(), scratch.data());
        conv.backward(gpu, wt, in, dy.data(), dx.data(), scratch.data());
        y_host[a] = y.download(gpu.stream());
        dx_host[a] = dx.download(gpu.stream());
        dw_host[a] = dw.download(gpu.stream());
        t[a].forward = median_ms(
            gpu, 3, 30, [&] { conv.forward(gpu, wt, in, x.data(), y.data(), scratch.data()); });
        t[a].step = median_ms(gpu, 3, 30, [&] {
          conv.forward(gpu, wt, in, x.data(), y.data(), scratch.data());
          conv.backward(gpu, wt, in, dy.data(), dx.data(), scratch.data());
        });
      }
      const double ey = scaled_error(y_host[1], y_host[0]),
                   edx = scaled_error(dx_host[1], dx_host[0]),
                   edw = scaled_error(dw_host[1], dw_host[0]);
      const bool agree = ey < 1e-4 && edx < 1e-4 && edw < 1e-4;
      ok = ok && agree;
      const double flop = 2.0 * double(batch) * s.o * s.c * 9 * s.side * s.side;  // one pass
      for (int a = 0; a < 2; ++a)
        std::printf("%-22s %-9s %10.4f %10.4f %9.1f %9.1f\n", s.name, a ? "winograd" : "im2col",
                    t[a].forward, t[a].step, flop / (t[a].forward * 1e9),
                    3 * flop / (t[a].step * 1e9));
      std::printf(
          "  %s: Winograd %.2fx faster forward, %.2fx forward + backward; agreement "
          "y %.2g dx %.2g dw %.2g: %s\n",
          s.name, t[0].forward / t[1].forward, t[0].step / t[1].step, ey, edx, edw,
          agree ? "ok" : "FAILED");
      std::fflush(stdout);
      json += varnet::str(
          first ? "" : ",", "{\"shape\":\"", s.name, "\",\"im2col_fwd_ms\":", t[0].forward,
          ",\"im2col_step_ms\":", t[0].step, ",\"winograd_fwd_ms\":", t[1].forward,
          ",\"winograd_step_ms\":", t[1].step, ",\"agree\":", agree ? "true" : "false", "}");
      first = false;
    }
    json += "]}";
    if (argc > 1) std::ofstream(argv[1]) << json << "\n";
    if (!ok) {
      std::fprintf(stderr, "bench_conv: Winograd and im2col disagree (see above)\n");
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_conv: %s\n", e.what());
    return 1;
  }
}
