// Whole-layer parity: the GPU Gaussian VarianceLinear and VarianceConv2d against the CPU layers
// run in a varnet::Network with the same parameters, Context and noise. Forward outputs,
// accumulated parameter gradients (the gradient buffer starts non-zero) and input gradients
// (the GPU's dx starts as NaN, so an unwritten entry fails) must agree to float rounding.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "parity.hpp"

using varnet::test::download;
using varnet::test::gpu;
using varnet::test::random_vector;
using varnet::test::upload;
namespace vc = varnet::cuda;

namespace {

// Relative tolerance of the layer comparisons: the GEMMs sum in a different order on the GPU.
constexpr double kLayerRtol = 1e-4;

const char* mode_name(varnet::PredictMode m) {
  return varnet::to_string(m);
}

using Results = varnet::test::CpuRun;

void compare_results(const Results& got, const Results& want) {
  VARNET_CHECK_CLOSE(got.y, want.y, kLayerRtol);
  VARNET_CHECK_CLOSE(got.grads, want.grads, kLayerRtol);
  VARNET_CHECK_CLOSE(got.dx, want.dx, kLayerRtol);
}

template <class CpuLayer>
vc::VarianceTensors<float> device_tensors(varnet::Network<float>& net, const CpuLayer& layer,
                                          vc::DeviceBuffer<float>& params,
                                          vc::DeviceBuffer<float>& grads) {
  vc::VarianceTensors<float> w;
  const int64_t p = layer.variance_param().offset;
  w.param = params.data() + p;
  w.dparam = grads.data() + p;
  if (layer.options().bias) {
    const varnet::ParamEntry* e = net.table().find(layer.name() + ".bias");
    REQUIRE(e != nullptr);
    w.bias = params.data() + e->offset;
    w.dbias = grads.data() + e->offset;
  }
  return w;
}

void check_linear(int64_t n, int64_t in, int64_t out, varnet::VarianceParam param, bool bias,
                  varnet::PredictMode mode,
                  varnet::WeightDist dist = varnet::WeightDist::gaussian) {
  INFO("VarianceLinear n " << n << ", " << in << " -> " << out << ", " << varnet::to_string(param)
                           << (bias ? ", bias" : "") << ", mode " << mode_name(mode) << ", "
                           << varnet::to_string(dist));
  varnet::VarianceOptions opt;
  opt.dist = dist;
  opt.param = param;
  opt.bias = bias;
  varnet::Network<float> net;
  auto& layer = net.emplace<varnet::VarianceLinear<float>>("", in, out, opt);
  net.build(varnet::Shape(1, in), 1234);
  varnet::Context ctx = varnet::Context::train(77, 5, 1);
  ctx.mode = mode;

  const auto x = random_vector<float>(static_cast<size_t>(n * in), 30);
  const auto dy = random_vector<float>(static_cast<size_t>(n * out), 31);
  const auto grads0 = random_vector<float>(net.grads().size(), 32);
  const Results want = varnet::test::run_cpu(net, x, varnet::Shape(n, in), dy, grads0, ctx);

  auto d_params = upload(net.params()), d_grads = upload(grads0);
  const vc::VarianceTensors<float> w = device_tensors(net, layer, d_params, d_grads);
  const vc::VarianceLinear<float> g(in, out, opt);
  vc::DeviceBuffer<float> scratch(static_cast<size_t>(g.scratch_size(n)));
  vc::DeviceBuffer<float> d_y(static_cast<size_t>(n * out));
  auto d_x = upload(x), d_dy = upload(dy);
  auto d_dx = upload(std::vector<float>(x.size(), std::numeric_limits<float>::quiet_NaN()));
  const varnet::NoiseKey key = vc::layer_key(ctx, layer.id());
  g.forward(gpu(), w, n, d_x.data(), d_y.data(), scratch.data(), key, mode);
  g.backward(gpu(), w, n, d_x.data(), d_dy.data(), d_dx.data(), scratch.data(), key, mode);
  compare_results(Results{download(d_y), download(d_grads), download(d_dx), {}}, want);

  // dx is optional: without it the parameter gradients are the same.
  auto d_grads2 = upload(grads0);
  const vc::VarianceTensors<float> w2 = device_tensors(net, layer, d_params, d_grads2);
  g.forward(gpu(), w2, n, d_x.data(), d_y.data(), scratch.data(), key, mode);
  g.backward(gpu(), w2, n, d_x.data(), d_dy.data(), static_cast<float*>(nullptr), scratch.data(),
             key, mode);
  VARNET_CHECK_CLOSE(download(d_grads2), want.grads, kLayerRtol);
}

// (n, C, H, W, O, kernel, stride, pad)
void check_conv(const std::array<int64_t, 8>& s, varnet::VarianceParam param, bool bias,
                varnet::PredictMode mode, varnet::WeightDist dist = varnet::WeightDist::gaussian) {
  const int64_t n = s[0], c = s[1], h = s[2], wd = s[3], o = s[4];
  varnet::ConvOptions conv;
  conv.kernel = s[5];
  conv.stride = s[6];
  conv.pad = s[7];
  INFO("VarianceConv2d n " << n << ", " << c << "x" << h << "x" << wd << " -> " << o << ", kernel "
                           << conv.kernel << ", stride " << conv.stride << ", pad " << conv.pad
                           << ", " << varnet::to_string(param) << (bias ? ", bias" : "")
                           << ", mode " << mode_name(mode) << ", " << varnet::to_string(dist));
  varnet::VarianceOptions opt;
  opt.dist = dist;
  opt.param = param;
  opt.bias = bias;
  varnet::Network<float> net;
  auto& layer = net.emplace<varnet::VarianceConv2d<float>>("", c, o, conv, opt);
  net.build(varnet::Shape(1, c, h, wd), 4321);
  varnet::Context ctx = varnet::Context::train(99, 12, 0);
  ctx.mode = mode;

  const varnet::Shape in(n, c, h, wd);
  const vc::VarianceConv2d<float> g(c, o, conv, opt);
  const varnet::Shape out = g.output_shape(in);
  REQUIRE(out == net.output_shape().with_batch(n));
  const auto x = random_vector<float>(static_cast<size_t>(in.numel()), 40);
  const auto dy = random_vector<float>(static_cast<size_t>(out.numel()), 41);
  const auto grads0 = random_vector<float>(net.grads().size(), 42);
  const Results want = varnet::test::run_cpu(net, x, in, dy, grads0, ctx);

  auto d_params = upload(net.params()), d_grads = upload(grads0);
  const vc::VarianceTensors<float> w = device_tensors(net, layer, d_params, d_grads);
  vc::DeviceBuffer<float> scratch(static_cast<size_t>(g.scratch_size(in)));
  vc::DeviceBuffer<float> d_y(static_cast<size_t>(out.numel()));
  auto d_x = upload(x), d_dy = upload(dy);
  auto d_dx = upload(std::vector<float>(x.size(), std::numeric_limits<float>::quiet_NaN()));
  const varnet::NoiseKey key = vc::layer_key(ctx, layer.id());
  g.forward(gpu(), w, in, d_x.data(), d_y.data(), scratch.data(), key, mode);
  g.backward(gpu(), w, in, d_x.data(), d_dy.data(), d_dx.data(), scratch.data(), key, mode);
  compare_results(Results{download(d_y), download(d_grads), download(d_dx), {}}, want);
}

}  // namespace

TEST_CASE("GPU VarianceLinear (gaussian) matches the CPU layer", "[cuda]") {
  // {64, 256, 128} and {5, 800, 37} compute v in 4 and 10 partial products (cuda::gemm_parts).
  const std::vector<std::array<int64_t, 3>> shapes = {
      {1, 33, 17}, {7, 100, 65}, {130, 20, 3}, {64, 256, 128}, {5, 800, 37}};
  for (const auto& s : shapes)
    for (const auto param : {varnet::VarianceParam::sigma, varnet::VarianceParam::log_sigma2})
      for (const bool bias : {false, true})
        check_linear(s[0], s[1], s[2], param, bias, varnet::PredictMode::sample);
  check_linear(5, 9, 4, varnet::VarianceParam::sigma, true, varnet::PredictMode::mean);
  check_linear(1, 9, 4, varnet::VarianceParam::log_sigma2, false, varnet::PredictMode::mean);
}

TEST_CASE("GPU VarianceConv2d (gaussian) matches the CPU layer", "[cuda]") {
  const std::vector<std::array<int64_t, 8>> shapes = {{1, 3, 7, 7, 5, 3, 1, 1},
                                                      {2, 2, 9, 11, 7, 3, 2, 0},
                                                      {3, 4, 6, 5, 3, 5, 1, 2},
                                                      {1, 1, 1, 1, 2, 1, 1, 0},
                                                      {2, 3, 12, 12, 33, 3, 1, 1}};
  for (const auto& s : shapes)
    for (const auto param : {varnet::VarianceParam::sigma, varnet::VarianceParam::log_sigma2})
      for (const bool bias : {false, true}) check_conv(s, param, bias, varnet::PredictMode::sample);
  check_conv({2, 3, 5, 5, 4, 3, 1, 1}, varnet::VarianceParam::sigma, true,
             varnet::PredictMode::mean);
}

TEST_CASE("GPU VarianceLinear and VarianceConv2d with Bernoulli and uniform weights match the CPU",
          "[cuda]") {
  // The weights are drawn once per step from the same words on both backends.
  for (const auto dist : {varnet::WeightDist::bernoulli, varnet::WeightDist::uniform})
    for (const auto param : {varnet::VarianceParam::sigma, varnet::VarianceParam::log_sigma2}) {
      check_linear(7, 100, 65, param, true, varnet::PredictMode::sample, dist);
      check_linear(1, 33, 17, param, false, varnet::PredictMode::sample, dist);
      check_conv({2, 2, 9, 11, 7, 3, 2, 0}, param, true, varnet::PredictMode::sample, dist);
      check_conv({3, 4, 6, 5, 3, 5, 1, 2}, param, false, varnet::PredictMode::sample, dist);
    }
  check_linear(5, 9, 4, varnet::VarianceParam::sigma, true, varnet::PredictMode::mean,
               varnet::WeightDist::bernoulli);
  check_conv({2, 3, 5, 5, 4, 3, 1, 1}, varnet::VarianceParam::log_sigma2, true,
             varnet::PredictMode::mean, varnet::WeightDist::uniform);
}

TEST_CASE("GPU variance layers reject what they do not support", "[cuda]") {
  const vc::VarianceConv2d<float> conv(3, 4, varnet::ConvOptions{});
  CHECK_THROWS_AS(conv.output_shape(varnet::Shape(1, 2, 8, 8)), varnet::Error);  // channels
  CHECK_THROWS_AS(conv.output_shape(varnet::Shape(1, 3, 2, 8)), varnet::Error);  // too small
}
