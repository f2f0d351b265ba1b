// Shared helpers of the CPU/GPU parity tests: one GPU context, reproducible random inputs, and a
// tolerance comparison that never lets NaN or infinity pass.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "varnet/cuda.hpp"
#include "varnet/cuda/trainer.hpp"
#include "varnet/data/idx.hpp"
#include "varnet/nn/network.hpp"

namespace varnet::test {

// One context for the whole test run. Deliberately leaked: destroying cuBLAS handles from
// static destructors, after the CUDA runtime may have shut down, is not safe.
inline cuda::GpuContext& gpu() {
  static cuda::GpuContext* ctx = new cuda::GpuContext();
  return *ctx;
}

// n values uniform on [lo, hi), the same on every run.
template <class T>
std::vector<T> random_vector(size_t n, uint32_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(dist(gen));
  return v;
}

template <class T>
std::vector<T> download(const cuda::DeviceBuffer<T>& b) {
  return b.download(gpu().stream());
}
template <class Vec>
cuda::DeviceBuffer<typename Vec::value_type> upload(const Vec& v) {
  const std::vector<typename Vec::value_type> host(v.begin(), v.end());
  return cuda::to_device(host, gpu().stream());
}

// A device buffer of `count` NaNs: entries a kernel fails to write stay NaN and fail compare().
inline cuda::DeviceBuffer<float> nan_buffer(int64_t count) {
  return upload(std::vector<float>(size_t(count), std::numeric_limits<float>::quiet_NaN()));
}

// The trainer options the parity tests share: seed, batch, learning rate, graph or eager.
inline cuda::TrainerOptions trainer_options(uint64_t seed, int64_t batch, LinearDecay lr,
                                            bool graph) {
  cuda::TrainerOptions o;
  o.seed = seed;
  o.batch = batch;
  o.lr = lr;
  o.graph = graph;
  return o;
}

inline const ParamEntry& entry(const Network<float>& net, const std::string& name) {
  const ParamEntry* e = net.table().find(name);
  REQUIRE(e != nullptr);
  return *e;
}

// Overwrites a named tensor of the CPU network with values uniform on [lo, hi).
inline void randomize(Network<float>& net, const std::string& name, uint32_t seed, double lo,
                      double hi) {
  const int64_t count = entry(net, name).shape.numel();
  const auto v = random_vector<float>(size_t(count), seed, lo, hi);
  std::copy(v.begin(), v.end(), net.find(name));
}

// `n` random images (1, side, side) in [0, 1) with random labels in [0, 10).
inline data::LabeledImages random_images(int64_t n, int64_t side, uint32_t seed) {
  data::LabeledImages d;
  d.images.resize(Shape(n, 1, side, side));
  const auto px = random_vector<float>(size_t(d.images.numel()), seed, 0.0, 1.0);
  std::copy(px.begin(), px.end(), d.images.data());
  const auto lab = random_vector<double>(size_t(n), seed + 1, 0.0, 10.0);
  for (double v : lab) d.labels.push_back(int32_t(v));
  d.classes = 10;
  d.source = "random images";
  return d;
}

// |a - b| / |b - base| in the L2 norm: how far apart two updates of the same start are.
inline double relative_update_gap(const std::vector<float>& a, const std::vector<float>& b,
                                  const std::vector<float>& base) {
  double gap = 0, step = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    gap += std::pow(double(a[i]) - double(b[i]), 2);
    step += std::pow(double(b[i]) - double(base[i]), 2);
  }
  return std::sqrt(gap) / std::sqrt(step);
}

// Empty when every got[i] is within rtol * (|want[i]| + floor * max_j |want[j]|) of want[i] and
// both are finite; else a report of the mismatches. The floor term lets entries that are small
// through cancellation (sums of terms of both signs, as in GEMMs) carry the absolute rounding
// error of their terms; floor = 0 asks for a purely relative match.
template <class A, class B>
std::string compare(const std::vector<A>& got, const std::vector<B>& want, double rtol,
                    double floor = 0.1) {
  std::ostringstream os;
  if (got.size() != want.size()) {
    os << "size " << got.size() << " != expected " << want.size();
    return os.str();
  }
  double scale = 0;
  for (const auto& w : want) scale = std::max(scale, std::fabs(double(w)));
  int64_t bad = 0;
  double worst = 0;
  int64_t worst_i = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = double(got[i]), w = double(want[i]);
    const double tol = rtol * (std::fabs(w) + floor * scale);
    const double err = std::fabs(g - w);
    const bool ok = std::isfinite(g) && std::isfinite(w) && err <= tol;
    if (!ok) {
      if (bad < 5)
        os << "  [" << i << "] got " << g << ", expected " << w << " (|diff| " << err
           << ", tolerance " << tol << ")\n";
      ++bad;
    }
    const double rel = err / (tol > 0 ? tol : 1.0);
    if (!(rel <= worst)) {  // also catches NaN
      worst = rel;
      worst_i = int64_t(i);
    }
  }
  if (bad == 0) return "";
  std::ostringstream head;
  head << bad << " of " << got.size() << " values out of tolerance (rtol " << rtol << ", floor "
       << floor << ", max |expected| " << scale << "; worst at " << worst_i << "):\n";
  return head.str() + os.str();
}

// Relative tolerance for float results that are sums of `length` terms, summed in a different
// order on each backend (cuBLAS tiles, tree reductions and double accumulators on the GPU;
// Eigen's vector lanes and sample groups on the CPU): 4 float ulps (FLT_EPSILON) per term, and
// at least 1e-5 (84 ulps) so that the last roundings (adding a bias, accumulating into a
// gradient, fused or separate multiply-adds) are covered when the sum is short. Use it with
// compare()'s floor, which judges entries that cancel towards zero against the tensor's
// magnitude.
inline double sum_rtol(int64_t length) {
  return std::max(1e-5, 4.0 * double(std::max<int64_t>(length, 1)) * 1.1920928955078125e-7);
}

// A CPU network's results on one forward and backward: output, parameter gradients, input
// gradient, state (batch norm's running statistics) after the step.
struct CpuRun {
  std::vector<float> y, grads, dx, state;
};

// Runs the CPU network's forward and backward on x (shape `in`); the gradient buffer starts at
// `grads0` (its size, or empty when the network has no parameters).
inline CpuRun run_cpu(varnet::Network<float>& net, const std::vector<float>& x, varnet::Shape in,
                      const std::vector<float>& dy, const std::vector<float>& grads0,
                      const varnet::Context& ctx) {
  CpuRun r;
  net.grads().assign(grads0.begin(), grads0.end());  // same size: the buffer stays put
  const varnet::ConstView<float> y = net.forward(varnet::ConstView<float>(x.data(), in), ctx);
  r.y.assign(y.begin(), y.end());
  const varnet::ConstView<float> dx =
      net.backward(varnet::ConstView<float>(dy.data(), y.shape), ctx, 0, true);
  r.dx.assign(dx.begin(), dx.end());
  r.grads.assign(net.grads().begin(), net.grads().end());
  r.state.assign(net.state().begin(), net.state().end());
  return r;
}

}  // namespace varnet::test

// CHECKs that `got` matches `want` (std::vectors) within `rtol` (see varnet::test::compare).
#define VARNET_CHECK_CLOSE(got, want, rtol)                                      \
  do {                                                                           \
    const std::string varnet_report_ = ::varnet::test::compare(got, want, rtol); \
    INFO(#got " vs " #want ":\n" << varnet_report_);                             \
    CHECK(varnet_report_.empty());                                               \
  } while (0)
