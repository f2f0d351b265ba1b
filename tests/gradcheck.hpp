// Double-precision gradient checks: analytic gradients from backward against central differences.
//
// For one layer wrapped in a Network<double>, f(x, params) = <layer output, g> for a random
// upstream gradient g, with the noise fixed by reusing one Context (same seed, step and stream),
// so that f is a deterministic function. Besides agreeing with the differences, backward must:
//   - accumulate parameter gradients: the buffer is pre-filled with a poison value P and the
//     analytic gradient taken as (buffer - P), so an entry backward never writes, or overwrites,
//     shows up; two backward passes give (buffer - P) = 2 x the gradient;
//   - overwrite dx: dx is filled with NaN before backward;
//   - accept dx.data == nullptr and then give the same parameter gradients;
//   - agree with Network::backward (the plumbing of the network's own buffers).
// For a whole network, f is a loss of the output (cross-entropy), checked on a subset of elements.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "catch.hpp"
#include "tolerance.hpp"
#include "varnet/core/context.hpp"
#include "varnet/core/tensor.hpp"
#include "varnet/layers/layer.hpp"
#include "varnet/nn/network.hpp"

namespace gradcheck {

using varnet::ConstView;
using varnet::Context;
using varnet::Layer;
using varnet::Network;
using varnet::Shape;
using varnet::Tensor;
using varnet::TensorView;

// splitmix64: a tiny deterministic generator for test data, the same on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform on [lo, hi).
  double uniform(double lo = -1, double hi = 1) {
    return lo + (hi - lo) * double(next() >> 11) * (1.0 / 9007199254740992.0);
  }
  int64_t below(int64_t n) { return int64_t(next() % uint64_t(n)); }

 private:
  uint64_t s_;
};

// How the input is drawn. Kinks of ReLU and max pooling are avoided by construction, so that
// x +- h never crosses one.
enum class InputKind {
  uniform,         // U(-1, 1)
  away_from_zero,  // |x| in [0.05, 1), random sign: no ReLU kink within h
  distinct,        // a random permutation of evenly spaced values: no max-pool ties within h
  unit_interval,   // U(0, 1), like images
};

inline void fill_input(Tensor<double>& x, InputKind kind, Rng& rng) {
  const int64_t n = x.numel();
  switch (kind) {
    case InputKind::uniform:
      for (int64_t i = 0; i < n; ++i) x[i] = rng.uniform();
      break;
    case InputKind::unit_interval:
      for (int64_t i = 0; i < n; ++i) x[i] = rng.uniform(0, 1);
      break;
    case InputKind::away_from_zero:
      for (int64_t i = 0; i < n; ++i) x[i] = (rng.next() & 1 ? 1 : -1) * rng.uniform(0.05, 1);
      break;
    case InputKind::distinct: {
      std::vector<int64_t> perm(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) perm[size_t(i)] = i;
      for (int64_t i = n - 1; i > 0; --i)
        std::swap(perm[size_t(i)], perm[size_t(rng.below(i + 1))]);
      // neighbours differ by 2 / n >> h
      for (int64_t i = 0; i < n; ++i) x[i] = -1 + 2 * (double(perm[size_t(i)]) + 0.5) / double(n);
      break;
    }
  }
}

struct Options {
  Shape input;  // the full input shape, batch included
  Context ctx = Context::train(0x5EEDull, 3, 2);
  uint64_t build_seed = 17;  // parameter initialisation
  uint64_t data_seed = 99;   // x and g
  InputKind input_kind = InputKind::uniform;
  double h = 1e-6;
  // Central differences in double with h = 1e-6 are good to ~1e-9 relative on these small
  // functions; a wrong gradient is off by O(1).
  double abs_tol = 1e-7;
  double rel_tol = 1e-6;
  int64_t max_per_tensor = 48;  // elements differenced per tensor (spread evenly); all if fewer
  double poison = 0.8125;       // P: the value the gradient buffer holds before backward
  // Runs after build, e.g. to set batch-norm running statistics or randomise parameters.
  std::function<void(Network<double>&)> prepare;
};

// The element indices to difference: all of them, or `max` spread over the tensor (first and last
// included).
inline std::vector<int64_t> picks(int64_t n, int64_t max) {
  std::vector<int64_t> idx;
  if (n <= max) {
    for (int64_t i = 0; i < n; ++i) idx.push_back(i);
    return idx;
  }
  for (int64_t k = 0; k < max; ++k) idx.push_back(k * (n - 1) / (max - 1));
  idx.erase(std::unique(idx.begin(), idx.end()), idx.end());
  return idx;
}

inline bool verbose() {
  return std::getenv("GRADCHECK_VERBOSE") != nullptr;
}

// Differences f over buf[offset + i] for the picked i and compares with analytic[i].
template <class F>
tol::Mismatch difference(double* buf, const double* analytic, int64_t n, F&& f, const Options& o) {
  const std::vector<int64_t> idx = picks(n, o.max_per_tensor);
  std::vector<double> num(idx.size()), ana(idx.size());
  for (size_t k = 0; k < idx.size(); ++k) {
    double& v = buf[idx[k]];
    const double orig = v;
    v = orig + o.h;
    const double fp = f();
    v = orig - o.h;
    const double fm = f();
    v = orig;
    num[k] = (fp - fm) / (2 * o.h);
    ana[k] = analytic[idx[k]];
  }
  return tol::compare<double>(ana, num, int64_t(idx.size()), o.abs_tol, o.rel_tol);
}

inline double dot(ConstView<double> a, ConstView<double> b) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += a[i] * b[i];
  return s;
}

inline bool all_finite(const double* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i])) return false;
  return true;
}

inline void report(const std::string& what, const tol::Mismatch& m) {
  if (verbose())
    std::printf("  %-32s %3lld checked, worst error %.3g of the tolerance, max rel err %.3g\n",
                what.c_str(), static_cast<long long>(m.n), m.ratio, m.max_rel);
}

// Checks one layer's backward against central differences of f = <forward(x), g>.
inline void check_layer(std::unique_ptr<Layer<double>> layer_ptr, const Options& o) {
  Network<double> net;
  Layer<double>& layer = net.add(std::move(layer_ptr), "layer");
  net.build(o.input, o.build_seed);
  if (o.prepare) o.prepare(net);
  const std::string desc = layer.describe();
  INFO("layer " << desc << ", input " << o.input << ", mode "
                << varnet::to_string(layer.mode(o.ctx)) << (o.ctx.training ? ", training" : "")
                << (o.ctx.batch_stats_in_eval ? ", batch stats in eval" : ""));
  if (verbose())
    std::printf("%s on %lld x %lld x %lld x %lld\n", desc.c_str(), (long long)o.input.n,
                (long long)o.input.c, (long long)o.input.h, (long long)o.input.w);

  const Shape in = o.input, out = layer.output_shape(in);
  Rng rng(o.data_seed);
  Tensor<double> x(in), g(out), y(out);
  fill_input(x, o.input_kind, rng);
  for (int64_t i = 0; i < g.numel(); ++i) g[i] = rng.uniform();
  std::vector<double> scratch(static_cast<size_t>(layer.scratch_size(in)));
  const double nan = std::numeric_limits<double>::quiet_NaN();

  const auto f = [&]() {
    layer.forward(x.view(), y.view(), scratch.data(), o.ctx);
    return dot(y.view(), g.view());
  };
  auto& grads = net.grads();
  const int64_t np = int64_t(grads.size());
  const double P = o.poison;

  // forward writes every output element
  y.fill(nan);
  const double f0 = f();
  REQUIRE(all_finite(y.data(), y.numel()));
  REQUIRE(std::isfinite(f0));

  // analytic gradients: parameters as (buffer - P), dx overwritten from NaN
  std::fill(grads.begin(), grads.end(), P);
  f();
  Tensor<double> dx(in, nan);
  layer.backward(x.view(), y.view(), g.view(), dx.view(), scratch.data(), o.ctx);
  CHECK(all_finite(dx.data(), dx.numel()));
  std::vector<double> dparams(static_cast<size_t>(np));
  for (int64_t i = 0; i < np; ++i) dparams[size_t(i)] = grads[size_t(i)] - P;

  // dx.data == nullptr: no crash, same parameter gradients
  {
    std::fill(grads.begin(), grads.end(), P);
    f();
    layer.backward(x.view(), y.view(), g.view(), TensorView<double>(), scratch.data(), o.ctx);
    std::vector<double> d(static_cast<size_t>(np));
    for (int64_t i = 0; i < np; ++i) d[size_t(i)] = grads[size_t(i)] - P;
    const tol::Mismatch m = tol::compare<double>(d, dparams, np);
    INFO("parameter gradients with dx = nullptr vs with dx: " << m);
    CHECK(m.ok());
  }

  // two backward passes (each after its forward, which backward may consume) add up
  {
    std::fill(grads.begin(), grads.end(), P);
    Tensor<double> dx2(in, nan);
    for (int rep = 0; rep < 2; ++rep) {
      f();
      layer.backward(x.view(), y.view(), g.view(), dx2.view(), scratch.data(), o.ctx);
    }
    std::vector<double> twice(static_cast<size_t>(np)), expect(static_cast<size_t>(np));
    double scale = 1;
    for (int64_t i = 0; i < np; ++i) {
      twice[size_t(i)] = grads[size_t(i)] - P;
      expect[size_t(i)] = 2 * dparams[size_t(i)];
      scale = std::max(scale, std::abs(expect[size_t(i)]));
    }
    const tol::Mismatch m = tol::compare<double>(twice, expect, np, 1e-13 * scale, 1e-13);
    INFO("two backward passes vs twice one pass: " << m);
    CHECK(m.ok());
    const tol::Mismatch mdx = tol::compare<double>(dx2.data(), dx.data(), dx.numel());
    INFO("dx of a repeated backward vs the first: " << mdx);
    CHECK(mdx.ok());
  }

  // the network's own forward/backward agree with the direct calls
  {
    std::fill(grads.begin(), grads.end(), P);
    net.forward(x.view(), o.ctx);
    const ConstView<double> dxn = net.backward(g.view(), o.ctx, 0, true);
    REQUIRE(dxn.shape == in);
    const tol::Mismatch m = tol::compare<double>(dxn.data, dx.data(), dx.numel());
    INFO("Network::backward dx vs Layer::backward dx: " << m);
    CHECK(m.ok());
    std::vector<double> d(static_cast<size_t>(np));
    for (int64_t i = 0; i < np; ++i) d[size_t(i)] = grads[size_t(i)] - P;
    const tol::Mismatch mp = tol::compare<double>(d, dparams, np);
    INFO("Network::backward parameter gradients vs Layer::backward: " << mp);
    CHECK(mp.ok());
  }

  // central differences
  {
    const tol::Mismatch m = difference(x.data(), dx.data(), x.numel(), f, o);
    report("dx", m);
    INFO("dL/dx vs central differences: " << m);
    CHECK(m.ok());
  }
  for (const auto& e : net.table().entries()) {
    if (!e.trainable) continue;
    const tol::Mismatch m = difference(net.params().data() + e.offset, dparams.data() + e.offset,
                                       e.shape.numel(), f, o);
    report(e.name, m);
    INFO("dL/d " << e.name << " vs central differences: " << m);
    CHECK(m.ok());
  }
}

// Loss of a network output: returns the loss and, when dout is given, writes dL/d(output).
using LossFn = std::function<double(ConstView<double> out, TensorView<double>* dout)>;

// Checks a whole network: f = loss(net.forward(x)) against net.backward's gradients, on a
// subset of input elements and of every trainable tensor.
inline void check_network(Network<double>& net, Tensor<double>& x, const LossFn& loss,
                          const Options& o) {
  const auto f = [&]() { return loss(net.forward(x.view(), o.ctx), nullptr); };
  auto& grads = net.grads();
  const int64_t np = int64_t(grads.size());
  const double P = o.poison;

  std::fill(grads.begin(), grads.end(), P);
  const ConstView<double> out = net.forward(x.view(), o.ctx);
  Tensor<double> dout(out.shape, std::numeric_limits<double>::quiet_NaN());
  TensorView<double> dv = dout.view();
  const double f0 = loss(out, &dv);
  REQUIRE(std::isfinite(f0));
  REQUIRE(all_finite(dout.data(), dout.numel()));
  const ConstView<double> dxn = net.backward(dout.view(), o.ctx, 0, true);
  std::vector<double> dx(dxn.begin(), dxn.end());
  REQUIRE(all_finite(dx.data(), int64_t(dx.size())));
  std::vector<double> dparams(static_cast<size_t>(np));
  for (int64_t i = 0; i < np; ++i) dparams[size_t(i)] = grads[size_t(i)] - P;

  {
    const tol::Mismatch m = difference(x.data(), dx.data(), x.numel(), f, o);
    report("dx", m);
    INFO("dL/dx vs central differences: " << m);
    CHECK(m.ok());
  }
  for (const auto& e : net.table().entries()) {
    if (!e.trainable) continue;
    const tol::Mismatch m = difference(net.params().data() + e.offset, dparams.data() + e.offset,
                                       e.shape.numel(), f, o);
    report(e.name, m);
    INFO("dL/d " << e.name << " vs central differences: " << m);
    CHECK(m.ok());
  }
}

}  // namespace gradcheck
