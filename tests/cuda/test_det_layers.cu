// Whole-layer parity of the deterministic GPU layers (include/varnet/cuda/layers.hpp): Linear,
// Conv2d, BatchNorm, MaxPool2d and ReLU against the CPU layers run in a one-layer
// varnet::Network with the same parameters, state, Context and inputs. Compared: the forward
// output, the accumulated parameter gradients (the gradient buffer starts non-zero), the input
// gradient (the GPU's y and dx start as NaN, so an unwritten entry fails), batch norm's running
// statistics, and the parameter gradients again with dx skipped.
//
// Tolerances: selections (ReLU, max pooling, including sums over overlapping windows, which the
// GPU adds in the CPU's order) must match exactly. Sums of L float terms use sum_rtol(L)
// (parity.hpp: 4 float ulps per term, at least 1e-5) relative to |expected| + 0.1 max|expected|,
// with L the longest reduction behind that output: the GEMM's inner dimension for y and dx, the
// batch (dense) or N OH OW (convolution) for the weight and bias gradients, N H W for batch norm.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "parity.hpp"

using varnet::Context;
using varnet::Shape;
using varnet::test::download;
using varnet::test::entry;
using varnet::test::gpu;
using varnet::test::nan_buffer;
using varnet::test::random_vector;
using varnet::test::randomize;
using varnet::test::run_cpu;
using varnet::test::sum_rtol;
using varnet::test::upload;
namespace vc = varnet::cuda;

namespace {

// The device tensors of Linear or Conv2d layer `layer` inside uploaded params and grads buffers.
vc::WeightTensors<float> weight_tensors(const varnet::Network<float>& net, const std::string& layer,
                                        bool bias, vc::DeviceBuffer<float>& params,
                                        vc::DeviceBuffer<float>& grads) {
  vc::WeightTensors<float> w;
  const int64_t wo = entry(net, layer + ".weight").offset;
  w.weight = params.data() + wo;
  w.dweight = grads.data() + wo;
  if (bias) {
    const int64_t bo = entry(net, layer + ".bias").offset;
    w.bias = params.data() + bo;
    w.dbias = grads.data() + bo;
  }
  return w;
}

// Values in [lo, hi) rounded down to multiples of `step`: exact zeros and ties.
std::vector<float> quantized_vector(size_t n, uint32_t seed, double lo, double hi, double step) {
  std::vector<float> v = random_vector<float>(n, seed, lo, hi);
  for (auto& x : v) x = static_cast<float>(std::floor(double(x) / step) * step);
  return v;
}

// ---- Linear ----

void check_linear(int64_t n, int64_t in, int64_t out, bool bias) {
  INFO("Linear n " << n << ", " << in << " -> " << out << (bias ? ", bias" : ""));
  varnet::Network<float> net;
  auto& layer = net.emplace<varnet::Linear<float>>("", in, out, bias);
  net.build(Shape(1, in), 1234);
  const Context ctx = Context::train(7, 3, 0);

  const auto x = random_vector<float>(size_t(n * in), 10);
  const auto dy = random_vector<float>(size_t(n * out), 11);
  const auto grads0 = random_vector<float>(net.grads().size(), 12);
  const varnet::test::CpuRun want = run_cpu(net, x, Shape(n, in), dy, grads0, ctx);

  const vc::Linear<float> g(in, out, bias);
  auto d_params = upload(net.params()), d_grads = upload(grads0);
  const auto w = weight_tensors(net, layer.name(), bias, d_params, d_grads);
  auto d_x = upload(x), d_dy = upload(dy), d_y = nan_buffer(n * out), d_dx = nan_buffer(n * in);
  g.forward(gpu(), w, n, d_x.data(), d_y.data());
  g.backward(gpu(), w, n, d_x.data(), d_dy.data(), d_dx.data());
  VARNET_CHECK_CLOSE(download(d_y), want.y, sum_rtol(in));
  VARNET_CHECK_CLOSE(download(d_grads), want.grads, sum_rtol(n));
  VARNET_CHECK_CLOSE(download(d_dx), want.dx, sum_rtol(out));

  // dx is optional: without it the parameter gradients are the same.
  auto d_grads2 = upload(grads0);
  const auto w2 = weight_tensors(net, layer.name(), bias, d_params, d_grads2);
  g.backward(gpu(), w2, n, d_x.data(), d_dy.data(), static_cast<float*>(nullptr));
  VARNET_CHECK_CLOSE(download(d_grads2), want.grads, sum_rtol(n));
}

// ---- Conv2d ----

// (n, C, H, W, O, kernel, stride, pad)
void check_conv(const std::array<int64_t, 8>& s, bool bias,
                varnet::ConvAlgorithm algorithm = varnet::ConvAlgorithm::Auto) {
  const int64_t n = s[0], c = s[1], h = s[2], wd = s[3], o = s[4];
  varnet::ConvOptions conv;
  conv.kernel = s[5];
  conv.stride = s[6];
  conv.pad = s[7];
  conv.bias = bias;
  conv.algorithm = algorithm;
  INFO("Conv2d n " << n << ", " << c << "x" << h << "x" << wd << " -> " << o << ", kernel "
                   << conv.kernel << ", stride " << conv.stride << ", pad " << conv.pad
                   << (bias ? ", bias" : "") << ", " << varnet::to_string(algorithm));
  varnet::Network<float> net;
  auto& layer = net.emplace<varnet::Conv2d<float>>("", c, o, conv);
  net.build(Shape(1, c, h, wd), 4321);
  const Context ctx = Context::train(9, 2, 0);

  const Shape in(n, c, h, wd);
  const vc::Conv2d<float> g(c, o, conv);
  const Shape out = g.output_shape(in);
  REQUIRE(out == net.output_shape().with_batch(n));
  REQUIRE(g.winograd(in) == layer.winograd(in));  // one rule on both backends
  const auto x = random_vector<float>(size_t(in.numel()), 20);
  const auto dy = random_vector<float>(size_t(out.numel()), 21);
  const auto grads0 = random_vector<float>(net.grads().size(), 22);
  const varnet::test::CpuRun want = run_cpu(net, x, in, dy, grads0, ctx);

  auto d_params = upload(net.params()), d_grads = upload(grads0);
  const auto w = weight_tensors(net, layer.name(), bias, d_params, d_grads);
  // NaN scratch: a value read before it is written (Winograd's zero padding columns) fails.
  auto scratch = nan_buffer(g.scratch_size(in));
  auto d_x = upload(x), d_dy = upload(dy);
  auto d_y = nan_buffer(out.numel()), d_dx = nan_buffer(in.numel());
  g.forward(gpu(), w, in, d_x.data(), d_y.data(), scratch.data());
  g.backward(gpu(), w, in, d_dy.data(), d_dx.data(), scratch.data());
  const int64_t window = conv.kernel * conv.kernel;
  // Winograd: each backend's float result is within 2e-5 max|y| of the exact convolution
  // (test_winograd.cpp bounds the CPU's, measured at 4.6e-6), so the two differ by at most
  // 4e-5 max|y|, which rtol (|expected| + 0.1 max|expected|) covers from rtol = 4e-4. An
  // indexing error is O(max|y|).
  const auto rtol = [&](int64_t length) {
    return g.winograd(in) ? std::max(4e-4, sum_rtol(length)) : sum_rtol(length);
  };
  VARNET_CHECK_CLOSE(download(d_y), want.y, rtol(c * window));
  VARNET_CHECK_CLOSE(download(d_grads), want.grads, rtol(n * out.plane()));
  VARNET_CHECK_CLOSE(download(d_dx), want.dx, rtol(o * window));

  // Without dx (backward used up the scratch: forward again first, on NaN scratch again).
  auto d_grads2 = upload(grads0);
  const auto w2 = weight_tensors(net, layer.name(), bias, d_params, d_grads2);
  scratch = nan_buffer(g.scratch_size(in));
  g.forward(gpu(), w2, in, d_x.data(), d_y.data(), scratch.data());
  g.backward(gpu(), w2, in, d_dy.data(), static_cast<float*>(nullptr), scratch.data());
  VARNET_CHECK_CLOSE(download(d_grads2), want.grads, rtol(n * out.plane()));
}

// ---- BatchNorm ----

enum class BnMode { train, eval_running, eval_batch };

const char* bn_mode_name(BnMode m) {
  return m == BnMode::train          ? "training"
         : m == BnMode::eval_running ? "eval, running statistics"
                                     : "eval, batch statistics";
}
Context bn_context(BnMode m) {
  if (m == BnMode::train) return Context::train(3, 4, 0);
  return Context::eval(3, varnet::PredictMode::sample, 0, m == BnMode::eval_batch);
}

vc::BatchNormTensors<float> bn_tensors(const varnet::Network<float>& net, const std::string& layer,
                                       vc::DeviceBuffer<float>& params,
                                       vc::DeviceBuffer<float>& grads,
                                       vc::DeviceBuffer<float>& state) {
  vc::BatchNormTensors<float> t;
  const int64_t go = entry(net, layer + ".weight").offset, bo = entry(net, layer + ".bias").offset;
  t.gamma = params.data() + go;
  t.beta = params.data() + bo;
  t.dgamma = grads.data() + go;
  t.dbeta = grads.data() + bo;
  t.running_mean = state.data() + entry(net, layer + ".running_mean").offset;
  t.running_var = state.data() + entry(net, layer + ".running_var").offset;
  return t;
}

void check_batchnorm(Shape in, BnMode mode) {
  INFO("BatchNorm input " << in << ", " << bn_mode_name(mode));
  varnet::Network<float> net;
  auto& layer = net.emplace<varnet::BatchNorm<float>>("", in.c);
  net.build(in.with_batch(1), 99);
  const std::string& name = layer.name();
  // Not the identity: gamma, beta and running statistics away from their initial 1, 0, 0, 1.
  randomize(net, name + ".weight", 60, 0.5, 1.5);
  randomize(net, name + ".bias", 61, -0.5, 0.5);
  randomize(net, name + ".running_mean", 62, -0.5, 0.5);
  randomize(net, name + ".running_var", 63, 0.5, 2.0);
  const Context ctx = bn_context(mode);

  const auto x = random_vector<float>(size_t(in.numel()), 64, -1.0, 3.0);  // mean away from 0
  const auto dy = random_vector<float>(size_t(in.numel()), 65);
  const auto grads0 = random_vector<float>(net.grads().size(), 66);
  const std::vector<float> state0(net.state().begin(), net.state().end());
  const varnet::test::CpuRun want = run_cpu(net, x, in, dy, grads0, ctx);

  const vc::BatchNorm<float> g(in.c);
  REQUIRE(g.output_shape(in) == in);
  auto d_params = upload(net.params()), d_grads = upload(grads0), d_state = upload(state0);
  const auto t = bn_tensors(net, name, d_params, d_grads, d_state);
  vc::DeviceBuffer<float> scratch(size_t(g.scratch_size(in)));
  auto d_x = upload(x), d_dy = upload(dy);
  auto d_y = nan_buffer(in.numel()), d_dx = nan_buffer(in.numel());
  g.forward(gpu(), t, in, d_x.data(), d_y.data(), scratch.data(), ctx);
  g.backward(gpu(), t, in, d_x.data(), d_dy.data(), d_dx.data(), scratch.data(), ctx);
  const double rtol = sum_rtol(in.n * in.plane());
  VARNET_CHECK_CLOSE(download(d_y), want.y, rtol);
  VARNET_CHECK_CLOSE(download(d_grads), want.grads, rtol);
  VARNET_CHECK_CLOSE(download(d_dx), want.dx, rtol);
  VARNET_CHECK_CLOSE(download(d_state), want.state, rtol);  // updated only in training
  if (mode != BnMode::train) CHECK(download(d_state) == state0);

  // Without dx, from the same starting state.
  auto d_grads2 = upload(grads0), d_state2 = upload(state0);
  const auto t2 = bn_tensors(net, name, d_params, d_grads2, d_state2);
  g.forward(gpu(), t2, in, d_x.data(), d_y.data(), scratch.data(), ctx);
  g.backward(gpu(), t2, in, d_x.data(), d_dy.data(), static_cast<float*>(nullptr), scratch.data(),
             ctx);
  VARNET_CHECK_CLOSE(download(d_grads2), want.grads, rtol);
  VARNET_CHECK_CLOSE(download(d_state2), want.state, rtol);
}

// ---- MaxPool2d ----

// (n, C, H, W, kernel, stride); inputs are multiples of `step` in [-2, 2): a coarse step gives
// few distinct values and ties in most windows.
void check_pool(const std::array<int64_t, 6>& s, double step) {
  const int64_t n = s[0], c = s[1], h = s[2], wd = s[3], k = s[4], stride = s[5];
  INFO("MaxPool2d n " << n << ", " << c << "x" << h << "x" << wd << ", kernel " << k << ", stride "
                      << stride << ", input step " << step);
  varnet::Network<float> net;
  net.emplace<varnet::MaxPool2d<float>>("", k, stride);
  net.build(Shape(1, c, h, wd), 1);
  const Context ctx = Context::train(1, 1, 0);

  const Shape in(n, c, h, wd);
  const vc::MaxPool2d<float> g(k, stride);
  const Shape out = g.output_shape(in);
  REQUIRE(out == net.output_shape().with_batch(n));
  const auto x = quantized_vector(size_t(in.numel()), 70, -2.0, 2.0, step);
  const auto dy = random_vector<float>(size_t(out.numel()), 71);
  const varnet::test::CpuRun want = run_cpu(net, x, in, dy, {}, ctx);

  auto d_x = upload(x), d_dy = upload(dy);
  auto d_y = nan_buffer(out.numel()), d_dx = nan_buffer(in.numel());
  g.forward(gpu(), in, d_x.data(), d_y.data());
  g.backward(gpu(), in, d_x.data(), d_dy.data(), d_dx.data());
  VARNET_CHECK_CLOSE(download(d_y), want.y, 0.0);
  VARNET_CHECK_CLOSE(download(d_dx), want.dx, 0.0);
}

// ---- ReLU ----

void check_relu(Shape in) {
  INFO("ReLU input " << in);
  varnet::Network<float> net;
  net.emplace<varnet::ReLU<float>>("");
  net.build(in.with_batch(1), 1);
  const Context ctx = Context::train(1, 1, 0);

  const auto x = quantized_vector(size_t(in.numel()), 80, -1.0, 1.0, 0.125);  // exact zeros
  const auto dy = random_vector<float>(size_t(in.numel()), 81);
  const varnet::test::CpuRun want = run_cpu(net, x, in, dy, {}, ctx);

  const vc::ReLU<float> g;
  auto d_x = upload(x), d_dy = upload(dy);
  auto d_y = nan_buffer(in.numel()), d_dx = nan_buffer(in.numel());
  g.forward(gpu(), in, d_x.data(), d_y.data());
  g.backward(gpu(), in, d_y.data(), d_dy.data(), d_dx.data());
  VARNET_CHECK_CLOSE(download(d_y), want.y, 0.0);
  VARNET_CHECK_CLOSE(download(d_dx), want.dx, 0.0);
}

}  // namespace

TEST_CASE("GPU Linear matches the CPU layer", "[cuda]") {
  const std::vector<std::array<int64_t, 3>> shapes = {
      {1, 33, 17}, {7, 100, 65}, {130, 20, 3}, {64, 256, 128}, {3, 1, 1}};
  for (const auto& s : shapes)
    for (const bool bias : {false, true}) check_linear(s[0], s[1], s[2], bias);
}

TEST_CASE("GPU Conv2d matches the CPU layer", "[cuda]") {
  const std::vector<std::array<int64_t, 8>> shapes = {
      {1, 3, 7, 7, 5, 3, 1, 1},    {2, 2, 9, 11, 7, 3, 2, 0}, {3, 4, 6, 5, 3, 5, 1, 2},
      {1, 1, 1, 1, 2, 1, 1, 0},    {2, 3, 9, 8, 6, 3, 2, 1},  {2, 3, 12, 12, 33, 3, 1, 1},
      {4, 6, 14, 14, 16, 5, 1, 0},  // LeNet-5's second convolution
  };
  for (const auto& s : shapes)
    for (const bool bias : {false, true}) check_conv(s, bias);
}

TEST_CASE("GPU Conv2d by Winograd matches the CPU's Winograd", "[cuda]") {
  // Both backends compute the same F(4x4, 3x3) transforms; only the GEMMs' summation order
  // differs. Odd planes (partial tiles), every padding, one channel, batch 1; 7 x 256 tiles of
  // 61x63 split the weight gradient into 3 chunks of 598 with 2 padding columns; the VGG shape
  // runs by Auto's rule.
  const std::vector<std::array<int64_t, 8>> shapes = {
      {1, 1, 3, 3, 1, 3, 1, 0},    {3, 5, 9, 13, 7, 3, 1, 0}, {2, 4, 7, 6, 3, 3, 1, 2},
      {1, 16, 8, 8, 16, 3, 1, 1},  {2, 3, 5, 5, 2, 3, 1, 1},  {7, 4, 61, 63, 5, 3, 1, 1},
      {17, 8, 32, 30, 8, 3, 1, 1},
  };
  for (const auto& s : shapes)
    for (const bool bias : {false, true}) check_conv(s, bias, varnet::ConvAlgorithm::Winograd);
  CHECK(vc::Conv2d<float>(64, 64, varnet::ConvOptions{3, 1, 1, false})
            .winograd(Shape(4, 64, 32, 32)));
  check_conv({4, 64, 32, 32, 64, 3, 1, 1}, false, varnet::ConvAlgorithm::Auto);
}

TEST_CASE("GPU BatchNorm matches the CPU layer", "[cuda]") {
  const std::vector<Shape> shapes = {Shape(4, 3, 5, 7),   Shape(1, 6, 3, 3), Shape(2, 33, 6, 6),
                                     Shape(8, 4, 13, 13), Shape(130, 10),    Shape(5, 5),
                                     Shape(3, 300, 2, 2)};
  for (const Shape& s : shapes)
    for (const BnMode m : {BnMode::train, BnMode::eval_running, BnMode::eval_batch})
      check_batchnorm(s, m);
  // One value per channel: only the running statistics can be used.
  check_batchnorm(Shape(1, 7), BnMode::eval_running);
}

TEST_CASE("GPU MaxPool2d matches the CPU layer, ties and overlapping windows included", "[cuda]") {
  const std::vector<std::array<int64_t, 6>> shapes = {
      {2, 3, 8, 8, 2, 2},    // tiled exactly
      {1, 5, 7, 9, 2, 2},    // batch 1, the last row and column left out
      {3, 2, 9, 10, 3, 2},   // overlapping windows
      {1, 1, 5, 5, 3, 1},    // every pixel in up to 9 windows
      {2, 3, 10, 11, 2, 3},  // gaps between windows
      {1, 2, 4, 6, 4, 4},    // one window per plane
      {2, 33, 28, 28, 2, 2}, {1, 1, 1, 1, 1, 1}};
  for (const auto& s : shapes)
    for (const double step : {1.0, 0.5, 1.0 / 1024})  // 4, 8 or 4096 distinct values
      check_pool(s, step);
}

TEST_CASE("GPU ReLU matches the CPU layer", "[cuda]") {
  for (const Shape& s : {Shape(1, 1), Shape(3, 7, 5, 5), Shape(2, 33, 17, 1), Shape(130, 10)})
    check_relu(s);
}

TEST_CASE("GPU deterministic layers reject what the CPU layers reject", "[cuda]") {
  const vc::Conv2d<float> conv(3, 4, varnet::ConvOptions{});
  CHECK_THROWS_AS(conv.output_shape(Shape(1, 2, 8, 8)), varnet::Error);  // channels
  CHECK_THROWS_AS(conv.output_shape(Shape(1, 3, 2, 8)), varnet::Error);  // too small
  const vc::MaxPool2d<float> pool(3, 2);
  CHECK_THROWS_AS(pool.output_shape(Shape(1, 3, 2, 8)), varnet::Error);
  CHECK_THROWS_AS(vc::MaxPool2d<float>(0), varnet::Error);
  CHECK_THROWS_AS(vc::Linear<float>(0, 3), varnet::Error);
  CHECK_THROWS_AS(vc::BatchNorm<float>(4, 0.0), varnet::Error);

  // Batch statistics of one value per channel (the CPU layer throws too).
  const vc::BatchNorm<float> bn(3);
  vc::DeviceBuffer<float> buf(16);
  vc::BatchNormTensors<float> t;
  t.gamma = t.beta = buf.data();
  t.running_mean = t.running_var = t.dgamma = t.dbeta = buf.data();
  CHECK_THROWS_AS(bn.forward(gpu(), t, Shape(1, 3), buf.data(), buf.data() + 3, buf.data() + 6,
                             Context::train(1, 1, 0)),
                  varnet::Error);
  CHECK_THROWS_AS(bn.output_shape(Shape(2, 4)), varnet::Error);
}
