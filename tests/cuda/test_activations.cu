// Parity of the GPU activations other than ReLU (include/varnet/cuda/layers.hpp): LeakyReLU and
// Tanh against the CPU layers run in a one-layer varnet::Network with the same inputs, then both
// inside a small network mirrored by cuda::Network. The GPU's y and dx start as NaN, so an
// unwritten entry fails; shapes include batch 1 and sizes that are not multiples of 32 or of the
// 256-thread block.
//
// Tolerances:
//   - LeakyReLU is a selection and one float product (with the host layer's slope, already in
//     float): exact, both ways.
//   - Tanh forward: the CPU's Eigen tanh is a rational approximation, within 7 float ulps of
//     tanh (measured over [-10, 10]); CUDA's tanhf is within 2 ulps. So 2e-6 relative (at least
//     16 ulps), with no floor: the fast approximate tanh (2^-11 relative) fails it.
//   - Tanh backward from the CPU's own y: the same products, dy (1 - y y). A host compiler that
//     fuses 1 - y y into one multiply-add changes it by half an ulp of y y at most, so
//     |got - want| <= 4 ulps of |want| + 1 ulp of |dy|.
//   - Tanh backward from the GPU's y: y differs by up to 2e-6 (above), which moves 1 - y^2 by up
//     to 4e-6, so |got - want| <= 4 ulps of |want| + 4e-6 |dy|.
//   - The networks: kNetworkRtol as in test_network.cu (sums in different orders, compounded).
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "parity.hpp"
#include "varnet/cuda/network.hpp"

using varnet::Context;
using varnet::Shape;
using varnet::test::download;
using varnet::test::gpu;
using varnet::test::nan_buffer;
using varnet::test::random_vector;
using varnet::test::run_cpu;
using varnet::test::upload;
namespace vc = varnet::cuda;

namespace {

constexpr double kFloatUlp = 1.1920928955078125e-7;  // FLT_EPSILON
constexpr double kNetworkRtol = 1e-3;

// Shapes of the layer cases: one value, batch 1 with odd sizes, planes that are not multiples
// of 32, several blocks with a partial last one.
const std::vector<Shape>& layer_shapes() {
  static const std::vector<Shape> shapes = {
      Shape(1, 1),    Shape(1, 37),        Shape(3, 7, 5, 5),     Shape(2, 33, 17, 1),
      Shape(130, 10), Shape(1, 3, 31, 33), Shape(1, 1, 1, 100003)};
  return shapes;
}

// Values in [lo, hi) rounded down to multiples of `step`: exact zeros, and both signs.
std::vector<float> quantized_vector(size_t n, uint32_t seed, double lo, double hi, double step) {
  std::vector<float> v = random_vector<float>(n, seed, lo, hi);
  for (auto& x : v) x = static_cast<float>(std::floor(double(x) / step) * step);
  return v;
}

// Empty when every got[i] is finite and within rel |want[i]| + per_dy |dy[i]| of want[i]; else a
// report of the mismatches.
std::string compare_with_dy(const std::vector<float>& got, const std::vector<float>& want,
                            const std::vector<float>& dy, double rel, double per_dy) {
  std::ostringstream os;
  if (got.size() != want.size() || got.size() != dy.size())
    return "sizes " + std::to_string(got.size()) + ", " + std::to_string(want.size()) + ", " +
           std::to_string(dy.size());
  int64_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i];
    const double tol = rel * std::fabs(w) + per_dy * std::fabs(double(dy[i]));
    if (std::isfinite(g) && std::isfinite(w) && std::fabs(g - w) <= tol) continue;
    if (bad < 5)
      os << "  [" << i << "] got " << g << ", expected " << w << " (|diff| " << std::fabs(g - w)
         << ", tolerance " << tol << ")\n";
    ++bad;
  }
  if (bad == 0) return "";
  return std::to_string(bad) + " of " + std::to_string(got.size()) + " out of tolerance:\n" +
         os.str();
}

#define CHECK_WITH_DY(got, want, dy, rel, per_dy)                            \
  do {                                                                       \
    const std::string report_ = compare_with_dy(got, want, dy, rel, per_dy); \
    INFO(#got " vs " #want ":\n" << report_);                                \
    CHECK(report_.empty());                                                  \
  } while (0)

// ---- LeakyReLU ----

void check_leaky_relu(Shape in, double slope) {
  INFO("LeakyReLU(" << slope << ") input " << in);
  varnet::Network<float> net;
  auto& layer = net.emplace<varnet::LeakyReLU<float>>("", slope);
  net.build(in.with_batch(1), 1);
  const Context ctx = Context::train(1, 1, 0);

  const auto x = quantized_vector(size_t(in.numel()), 90, -2.0, 2.0, 1.0 / 64);  // exact zeros
  const auto dy = random_vector<float>(size_t(in.numel()), 91);
  const varnet::test::CpuRun want = run_cpu(net, x, in, dy, {}, ctx);

  const vc::LeakyReLU<float> g(layer.slope());
  CHECK(g.slope() == static_cast<float>(slope));
  auto d_x = upload(x), d_dy = upload(dy);
  auto d_y = nan_buffer(in.numel()), d_dx = nan_buffer(in.numel());
  g.forward(gpu(), in, d_x.data(), d_y.data());
  g.backward(gpu(), in, d_x.data(), d_dy.data(), d_dx.data());
  VARNET_CHECK_CLOSE(download(d_y), want.y, 0.0);
  VARNET_CHECK_CLOSE(download(d_dx), want.dx, 0.0);

  // In place both ways: y over x, dx over dy (the network never does either, the launchers
  // allow it). Backward reads x, so it runs on a fresh copy.
  auto d_xy = upload(x), d_x2 = upload(x), d_dydx = upload(dy);
  g.forward(gpu(), in, d_xy.data(), d_xy.data());
  g.backward(gpu(), in, d_x2.data(), d_dydx.data(), d_dydx.data());
  VARNET_CHECK_CLOSE(download(d_xy), want.y, 0.0);
  VARNET_CHECK_CLOSE(download(d_dydx), want.dx, 0.0);

  // Without dx: no launch.
  g.backward(gpu(), in, d_x.data(), d_dy.data(), static_cast<float*>(nullptr));
  gpu().synchronize();
}

// ---- Tanh ----

void check_tanh(Shape in) {
  INFO("Tanh input " << in);
  varnet::Network<float> net;
  net.emplace<varnet::Tanh<float>>("");
  net.build(in.with_batch(1), 1);
  const Context ctx = Context::train(1, 1, 0);

  // Past Eigen's clamp (|x| ~ 7.9) and through the linear range near 0, exact zeros included.
  auto x = random_vector<float>(size_t(in.numel()), 100, -9.0, 9.0);
  for (size_t i = 0; i < x.size(); i += 7) x[i] *= 1e-3f;
  for (size_t i = 3; i < x.size(); i += 29) x[i] = 0.f;
  const auto dy = random_vector<float>(size_t(in.numel()), 101);
  const varnet::test::CpuRun want = run_cpu(net, x, in, dy, {}, ctx);

  const vc::Tanh<float> g;
  auto d_x = upload(x), d_dy = upload(dy);
  auto d_y = nan_buffer(in.numel()), d_dx = nan_buffer(in.numel());
  g.forward(gpu(), in, d_x.data(), d_y.data());
  g.backward(gpu(), in, d_y.data(), d_dy.data(), d_dx.data());
  {
    const std::string report = varnet::test::compare(download(d_y), want.y, 2e-6, 0.0);
    INFO("y vs want.y:\n" << report);
    CHECK(report.empty());
  }
  CHECK_WITH_DY(download(d_dx), want.dx, dy, 4 * kFloatUlp, 4e-6);

  // Backward from the CPU's own y: the same arithmetic.
  auto d_cpu_y = upload(want.y), d_dx2 = nan_buffer(in.numel());
  g.backward(gpu(), in, d_cpu_y.data(), d_dy.data(), d_dx2.data());
  CHECK_WITH_DY(download(d_dx2), want.dx, dy, 4 * kFloatUlp, kFloatUlp);

  // In place: y over x, dx over dy; the same values as out of place, bit for bit.
  auto d_xy = upload(x), d_dydx = upload(dy);
  g.forward(gpu(), in, d_xy.data(), d_xy.data());
  g.backward(gpu(), in, d_xy.data(), d_dydx.data(), d_dydx.data());
  VARNET_CHECK_CLOSE(download(d_xy), download(d_y), 0.0);
  VARNET_CHECK_CLOSE(download(d_dydx), download(d_dx), 0.0);

  g.backward(gpu(), in, d_y.data(), d_dy.data(), static_cast<float*>(nullptr));
  gpu().synchronize();
}

// ---- Networks ----

// Compares cuda::Network with the host network on one forward and backward of a batch.
void check_network(varnet::Network<float>& host, int64_t batch, uint32_t seed) {
  INFO("batch " << batch);
  vc::Network<float> dev(gpu(), host);
  const Shape in = host.input_shape().with_batch(batch);
  const int64_t outputs = host.output_shape().with_batch(batch).numel();
  const auto x = random_vector<float>(size_t(in.numel()), seed, -2.0, 2.0);
  const auto dy = random_vector<float>(size_t(outputs), seed + 1);
  const Context ctx = Context::train(3, 41, 2);
  const varnet::test::CpuRun want =
      run_cpu(host, x, in, dy, std::vector<float>(host.params().size(), 0.f), ctx);
  const vc::DeviceBuffer<float> d_x = upload(x), d_dy = upload(dy);
  const float* y = dev.forward(d_x.data(), batch, ctx);
  dev.backward(d_dy.data(), ctx);
  VARNET_CHECK_CLOSE(vc::to_host(y, size_t(outputs), gpu().stream()), want.y, kNetworkRtol);
  VARNET_CHECK_CLOSE(dev.grad_buffer().download(gpu().stream()), want.grads, kNetworkRtol);
  VARNET_CHECK_CLOSE(dev.state_buffer().download(gpu().stream()), want.state, kNetworkRtol);
}

}  // namespace

TEST_CASE("GPU LeakyReLU matches the CPU layer", "[cuda]") {
  for (const Shape& s : layer_shapes())
    for (const double slope : {0.01, 0.3, 0.0}) check_leaky_relu(s, slope);
}

TEST_CASE("GPU Tanh matches the CPU layer", "[cuda]") {
  for (const Shape& s : layer_shapes()) check_tanh(s);
}

TEST_CASE("GPU activations: an empty tensor launches nothing", "[cuda]") {
  float* none = nullptr;
  CHECK_NOTHROW(vc::leaky_relu_forward(gpu(), 0.1f, none, none, 0));
  CHECK_NOTHROW(vc::leaky_relu_backward(gpu(), 0.1f, none, none, none, 0));
  CHECK_NOTHROW(vc::tanh_forward(gpu(), none, none, 0));
  CHECK_NOTHROW(vc::tanh_backward(gpu(), none, none, none, 0));
  gpu().synchronize();
}

TEST_CASE("cuda::Network with LeakyReLU and Tanh matches the host", "[cuda][network]") {
  SECTION("convolution, batch norm, LeakyReLU (not fused into the batch norm), Tanh") {
    // A batch norm followed by a LeakyReLU: only a ReLU is fused into the batch norm, so a
    // LeakyReLU applied as a ReLU (negatives zeroed) would fail by 0.1 |x|.
    varnet::Network<float> host;
    host.emplace<varnet::Conv2d<float>>("conv", 2, 4, varnet::ConvOptions{3, 1, 1, true});
    host.emplace<varnet::BatchNorm<float>>("bn", 4);
    host.emplace<varnet::LeakyReLU<float>>("leaky", 0.1);
    host.emplace<varnet::Flatten<float>>("flat");
    host.emplace<varnet::Linear<float>>("fc1", 4 * 7 * 9, 19);
    host.emplace<varnet::Tanh<float>>("tanh");
    host.emplace<varnet::Linear<float>>("fc2", 19, 10);
    host.build(Shape(1, 2, 7, 9), 17);
    for (const int64_t batch : {1, 5}) check_network(host, batch, 60);
  }
  SECTION("Tanh first (no input gradient), LeakyReLU between dense layers") {
    varnet::Network<float> host;
    host.emplace<varnet::Tanh<float>>("tanh");
    host.emplace<varnet::Linear<float>>("fc1", 37, 33);
    host.emplace<varnet::LeakyReLU<float>>("leaky", 0.25);
    host.emplace<varnet::Linear<float>>("fc2", 33, 3);
    host.emplace<varnet::Tanh<float>>("tanh2");
    host.build(Shape(1, 37), 23);
    for (const int64_t batch : {1, 7}) check_network(host, batch, 70);
  }
}
