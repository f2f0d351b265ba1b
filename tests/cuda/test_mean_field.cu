// The baselines on the GPU against the CPU: the mean-field layers (Gaussian dropout, variational
// dropout, sparse VD; dense and convolutional) and binary dropout, their KL term, cuda::Network
// mirroring LeNet-5 built with them, and cuda::Trainer with a KL weight against varnet::Trainer:
// constant, and the examples' per-step warm-up with per-parameter learning-rate scales; its state
// through a checkpoint and back (a resumed run repeats an uninterrupted one bit for bit).
//
// Layers run in a one-layer varnet::Network with the same parameters, Context and inputs; the
// posteriors' parameters are set so that every branch is taken: variational dropout's log alpha
// inside its clamp and beyond it (no gradient), sparse VD's log alpha below -10, between, above the
// pruning threshold 3 and above 10. Compared: the forward output, the accumulated parameter
// gradients (the gradient buffer starts non-zero), the input gradient (the GPU's y and dx start as
// NaN, so an unwritten entry fails), and the gradients again with dx skipped.
//
// Tolerances (parity.hpp): sum_rtol(L) relative to |expected| + 0.1 max |expected|, L the longest
// chain of float sums behind the output: the GEMM's inner dimension for y (the mean's and the
// variance's), the batch (dense) or N OH OW (convolution) plus the variance's inner dimension for
// the parameter gradients (dL/dv carries the forward variance's rounding), the output features
// (or O k k) plus that inner dimension for dx. The KL is a double sum on both backends, of terms
// computed with exp and log1p that may differ in the last double ulp: 1e-9 relative. Its gradient
// is rounded from double to float once, then added: 1e-6. Binary dropout is exact.
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "parity.hpp"
#include "varnet/cuda/mean_field_layers.hpp"
#include "varnet/cuda/network.hpp"
#include "varnet/cuda/trainer.hpp"
#include "varnet/nn/checkpoint.hpp"

using varnet::Context;
using varnet::PredictMode;
using varnet::Shape;
using varnet::test::download;
using varnet::test::entry;
using varnet::test::gpu;
using varnet::test::nan_buffer;
using varnet::test::random_images;
using varnet::test::random_vector;
using varnet::test::randomize;
using varnet::test::relative_update_gap;
using varnet::test::run_cpu;
using varnet::test::sum_rtol;
using varnet::test::upload;
namespace vc = varnet::cuda;

namespace {

using Gdo = varnet::GaussianDropoutPosterior<float>;
using Vdo = varnet::VariationalDropoutPosterior<float>;
using Svd = varnet::SparseVDPosterior<float>;

// Whole networks: float rounding compounds through the layers (test_network.cu).
constexpr double kNetworkRtol = 1e-3;
constexpr double kKlRtol = 1e-9;
constexpr double kKlGradRtol = 1e-6;

// Parameters that take every branch of the posterior (see the top of the file): variational
// dropout's log alpha is -1.3, or 25 when `clamped`; sparse VD's log sigma2 is uniform on
// [-14, 2], which with theta^2 < 1 / fan_in puts log alpha on both sides of -10, 3 and 10.
template <class Post>
void prepare(varnet::Network<float>& net, const std::string& layer, uint32_t seed, bool clamped) {
  if constexpr (std::is_same_v<Post, Vdo>) {
    net.find(layer + ".log_alpha")[0] = clamped ? 25.0f : -1.3f;
  } else if constexpr (std::is_same_v<Post, Svd>) {
    randomize(net, layer + ".log_sigma2", seed, -14.0, 2.0);
  }
}

// The device tensors of mean-field layer `h` inside uploaded params and grads buffers.
template <class Host>
vc::MeanFieldTensors<float> tensors(const varnet::Network<float>& net, const Host& h,
                                    vc::DeviceBuffer<float>& params,
                                    vc::DeviceBuffer<float>& grads) {
  vc::MeanFieldTensors<float> w;
  const int64_t t = entry(net, h.name() + ".theta").offset;
  w.theta = params.data() + t;
  w.dtheta = grads.data() + t;
  if (const char* aux = h.posterior().aux_name()) {
    const int64_t a = entry(net, h.name() + "." + aux).offset;
    w.aux = params.data() + a;
    w.daux = grads.data() + a;
  }
  if (h.options().bias) {
    const int64_t b = entry(net, h.name() + ".bias").offset;
    w.bias = params.data() + b;
    w.dbias = grads.data() + b;
  }
  return w;
}

varnet::DropoutOptions dropout_options(bool bias) {
  varnet::DropoutOptions o;
  o.bias = bias;
  o.alpha = 0.6;  // Gaussian dropout
  o.threshold = 3;
  o.prune = true;
  return o;
}

// ---- dense ----

template <class Post>
void check_linear(int64_t n, int64_t in, int64_t out, bool bias, PredictMode mode,
                  bool clamped = false) {
  INFO(Post::family() << "Linear n " << n << ", " << in << " -> " << out << (bias ? ", bias" : "")
                      << ", mode " << varnet::to_string(mode)
                      << (clamped ? ", log alpha clamped" : ""));
  const varnet::DropoutOptions opt = dropout_options(bias);
  varnet::Network<float> net;
  auto& layer = net.emplace<varnet::MeanFieldLinear<float, Post>>("fc", in, out, opt);
  net.build(Shape(1, in), 1234);
  prepare<Post>(net, "fc", 60, clamped);
  Context ctx = Context::train(77, 5, 1);
  ctx.mode = mode;

  const auto x = random_vector<float>(size_t(n * in), 30);
  const auto dy = random_vector<float>(size_t(n * out), 31);
  const auto grads0 = random_vector<float>(net.grads().size(), 32);
  const varnet::test::CpuRun want = run_cpu(net, x, Shape(n, in), dy, grads0, ctx);

  const vc::MeanFieldLinear<float, Post> g(in, out, opt);
  auto d_params = upload(net.params()), d_grads = upload(grads0);
  const auto w = tensors(net, layer, d_params, d_grads);
  vc::DeviceBuffer<float> scratch(size_t(g.scratch_size(n)));
  auto d_x = upload(x), d_dy = upload(dy), d_y = nan_buffer(n * out), d_dx = nan_buffer(n * in);
  const varnet::NoiseKey key = vc::layer_key(ctx, layer.id());
  g.forward(gpu(), w, n, d_x.data(), d_y.data(), scratch.data(), key, mode);
  g.backward(gpu(), w, n, d_x.data(), d_dy.data(), d_dx.data(), scratch.data(), key, mode);
  VARNET_CHECK_CLOSE(download(d_y), want.y, sum_rtol(in));
  VARNET_CHECK_CLOSE(download(d_grads), want.grads, sum_rtol(n + in));
  VARNET_CHECK_CLOSE(download(d_dx), want.dx, sum_rtol(out + in));

  // Without dx (backward overwrote v with dL/dv: forward again first).
  auto d_grads2 = upload(grads0);
  const auto w2 = tensors(net, layer, d_params, d_grads2);
  g.forward(gpu(), w2, n, d_x.data(), d_y.data(), scratch.data(), key, mode);
  g.backward(gpu(), w2, n, d_x.data(), d_dy.data(), static_cast<float*>(nullptr), scratch.data(),
             key, mode);
  VARNET_CHECK_CLOSE(download(d_grads2), want.grads, sum_rtol(n + in));
}

template <class Post>
void linear_cases() {
  const std::vector<std::array<int64_t, 3>> shapes = {
      {1, 33, 17}, {7, 100, 65}, {130, 20, 3}, {64, 256, 128}};
  for (const auto& s : shapes)
    for (const bool bias : {false, true})
      for (const auto mode : {PredictMode::sample, PredictMode::mean})
        check_linear<Post>(s[0], s[1], s[2], bias, mode);
}

// ---- convolution ----

// (n, C, H, W, O, kernel, stride, pad)
template <class Post>
void check_conv(const std::array<int64_t, 8>& s, bool bias, PredictMode mode,
                bool clamped = false) {
  const int64_t n = s[0], c = s[1], h = s[2], wd = s[3], o = s[4];
  varnet::ConvOptions conv;
  conv.kernel = s[5];
  conv.stride = s[6];
  conv.pad = s[7];
  INFO(Post::family() << "Conv2d n " << n << ", " << c << "x" << h << "x" << wd << " -> " << o
                      << ", kernel " << conv.kernel << ", stride " << conv.stride << ", pad "
                      << conv.pad << (bias ? ", bias" : "") << ", mode " << varnet::to_string(mode)
                      << (clamped ? ", log alpha clamped" : ""));
  const varnet::DropoutOptions opt = dropout_options(bias);
  varnet::Network<float> net;
  auto& layer = net.emplace<varnet::MeanFieldConv2d<float, Post>>("conv", c, o, conv, opt);
  net.build(Shape(1, c, h, wd), 4321);
  prepare<Post>(net, "conv", 61, clamped);
  Context ctx = Context::train(99, 12, 0);
  ctx.mode = mode;

  const Shape in(n, c, h, wd);
  const vc::MeanFieldConv2d<float, Post> g(c, o, conv, opt);
  const Shape out = g.output_shape(in);
  REQUIRE(out == net.output_shape().with_batch(n));
  const auto x = random_vector<float>(size_t(in.numel()), 40);
  const auto dy = random_vector<float>(size_t(out.numel()), 41);
  const auto grads0 = random_vector<float>(net.grads().size(), 42);
  const varnet::test::CpuRun want = run_cpu(net, x, in, dy, grads0, ctx);

  auto d_params = upload(net.params()), d_grads = upload(grads0);
  const auto w = tensors(net, layer, d_params, d_grads);
  vc::DeviceBuffer<float> scratch(size_t(g.scratch_size(in)));
  auto d_x = upload(x), d_dy = upload(dy);
  auto d_y = nan_buffer(out.numel()), d_dx = nan_buffer(in.numel());
  const varnet::NoiseKey key = vc::layer_key(ctx, layer.id());
  g.forward(gpu(), w, in, d_x.data(), d_y.data(), scratch.data(), key, mode);
  g.backward(gpu(), w, in, d_x.data(), d_dy.data(), d_dx.data(), scratch.data(), key, mode);
  const int64_t window = conv.kernel * conv.kernel;
  VARNET_CHECK_CLOSE(download(d_y), want.y, sum_rtol(c * window));
  VARNET_CHECK_CLOSE(download(d_grads), want.grads, sum_rtol(n * out.plane() + c * window));
  VARNET_CHECK_CLOSE(download(d_dx), want.dx, sum_rtol(o * window + c * window));

  auto d_grads2 = upload(grads0);
  const auto w2 = tensors(net, layer, d_params, d_grads2);
  g.forward(gpu(), w2, in, d_x.data(), d_y.data(), scratch.data(), key, mode);
  g.backward(gpu(), w2, in, d_x.data(), d_dy.data(), static_cast<float*>(nullptr), scratch.data(),
             key, mode);
  VARNET_CHECK_CLOSE(download(d_grads2), want.grads, sum_rtol(n * out.plane() + c * window));
}

template <class Post>
void conv_cases() {
  const std::vector<std::array<int64_t, 8>> shapes = {{1, 3, 7, 7, 5, 3, 1, 1},
                                                      {2, 2, 9, 11, 7, 3, 2, 0},
                                                      {3, 4, 6, 5, 3, 5, 1, 2},
                                                      {1, 1, 1, 1, 2, 1, 1, 0},
                                                      {2, 3, 12, 12, 33, 3, 1, 1}};
  for (const auto& s : shapes)
    for (const bool bias : {false, true})
      for (const auto mode : {PredictMode::sample, PredictMode::mean})
        check_conv<Post>(s, bias, mode);
}

// ---- KL ----

// The layer's KL and its gradient (scale = KL weight) on the GPU against the host layer's kl()
// and add_kl_gradient(scale); then the value alone (no scale: the gradients stay as they were);
// then the same call again from the same start, which must give the same bits.
template <class Host, class Gpu>
void check_kl(varnet::Network<float>& net, const Host& layer, const Gpu& g, float scale) {
  const auto grads0 = random_vector<float>(net.grads().size(), 70);
  net.grads().assign(grads0.begin(), grads0.end());
  const double want_value = layer.kl();
  const double want = net.add_kl_gradient(scale);  // the network holds only this layer
  const std::vector<float> want_grads(net.grads().begin(), net.grads().end());
  CHECK(std::fabs(want - want_value) <= kKlRtol * std::fabs(want_value));

  auto d_params = upload(net.params());
  const auto d_scale = upload(std::vector<float>{scale});
  vc::DeviceBuffer<double> partial(size_t(varnet::kernels::kPosteriorMaxBlocks));
  std::vector<std::vector<float>> runs;
  std::vector<double> sums;
  for (int run = 0; run < 2; ++run) {
    auto d_grads = upload(grads0);
    auto d_kl = upload(std::vector<double>{0.25});  // the KL is added to what is there
    g.add_kl_gradient(gpu(), tensors(net, layer, d_params, d_grads), d_scale.data(), d_kl.data(),
                      partial.data());
    runs.push_back(download(d_grads));
    sums.push_back(download(d_kl)[0]);
  }
  CHECK(g.has_kl() == (want_value != 0));
  INFO("KL: GPU " << sums[0] - 0.25 << ", host " << want);
  CHECK(std::fabs((sums[0] - 0.25) - want) <= kKlRtol * std::fabs(want) + 1e-12);
  VARNET_CHECK_CLOSE(runs[0], want_grads, kKlGradRtol);
  CHECK(runs[0] == runs[1]);  // fixed-order reductions: reproducible
  CHECK(sums[0] == sums[1]);

  // The value alone.
  auto d_grads = upload(grads0);
  auto d_kl = upload(std::vector<double>{0.0});
  g.add_kl_gradient(gpu(), tensors(net, layer, d_params, d_grads),
                    static_cast<const float*>(nullptr), d_kl.data(), partial.data());
  CHECK(std::fabs(download(d_kl)[0] - want_value) <= kKlRtol * std::fabs(want_value) + 1e-12);
  CHECK(download(d_grads) == grads0);
}

template <class Post>
void kl_linear(int64_t in, int64_t out, bool clamped, float scale) {
  INFO(Post::family() << "Linear " << in << " -> " << out << (clamped ? ", log alpha clamped" : "")
                      << ", scale " << scale);
  const varnet::DropoutOptions opt = dropout_options(true);
  varnet::Network<float> net;
  auto& layer = net.emplace<varnet::MeanFieldLinear<float, Post>>("fc", in, out, opt);
  net.build(Shape(1, in), 99);
  prepare<Post>(net, "fc", 71, clamped);
  check_kl(net, layer, vc::MeanFieldLinear<float, Post>(in, out, opt), scale);
}

template <class Post>
void kl_conv(int64_t c, int64_t o, int64_t k, bool clamped, float scale) {
  INFO(Post::family() << "Conv2d " << c << " -> " << o << ", kernel " << k
                      << (clamped ? ", log alpha clamped" : "") << ", scale " << scale);
  const varnet::DropoutOptions opt = dropout_options(false);
  varnet::ConvOptions conv;
  conv.kernel = k;
  varnet::Network<float> net;
  auto& layer = net.emplace<varnet::MeanFieldConv2d<float, Post>>("conv", c, o, conv, opt);
  net.build(Shape(1, c, 8, 8), 98);
  prepare<Post>(net, "conv", 72, clamped);
  check_kl(net, layer, vc::MeanFieldConv2d<float, Post>(c, o, conv, opt), scale);
}

// ---- networks ----

varnet::Network<float> lenet(varnet::LeNet5Config cfg, int64_t side, uint64_t seed) {
  cfg.classes = 10;
  varnet::Network<float> net = varnet::make_lenet5<float>(cfg, Shape(1, 1, side, side), seed);
  // Sparse VD's log sigma2 spread over [-12, 0] (log alpha from about -8 to past 10): weights
  // pruned and kept in mean mode, KL gradients clamped and not.
  uint32_t s = 80;
  for (const auto& e : net.table().entries()) {
    const std::string suffix = ".log_sigma2";
    if (e.name.size() > suffix.size() &&
        e.name.compare(e.name.size() - suffix.size(), suffix.size(), suffix) == 0)
      randomize(net, e.name, s++, -12.0, 0.0);
  }
  return net;
}

varnet::LeNet5Config config(const std::string& kind, std::vector<int> layers = {1, 2, 3, 4}) {
  varnet::LeNet5Config cfg;
  cfg.kind = varnet::parse_layer_kind(kind);
  cfg.variance_layers = std::move(layers);
  return cfg;
}

}  // namespace

TEST_CASE("GPU mean-field Linear layers match the CPU layers", "[cuda]") {
  linear_cases<Gdo>();
  linear_cases<Vdo>();
  linear_cases<Svd>();
  for (const auto mode : {PredictMode::sample, PredictMode::mean})
    check_linear<Vdo>(7, 100, 65, true, mode, /*clamped=*/true);
}

TEST_CASE("GPU mean-field Conv2d layers match the CPU layers", "[cuda]") {
  conv_cases<Gdo>();
  conv_cases<Vdo>();
  conv_cases<Svd>();
  check_conv<Vdo>({2, 2, 9, 11, 7, 3, 2, 0}, true, PredictMode::sample, /*clamped=*/true);
}

TEST_CASE("GPU KL and its gradient match the host layers, reproducibly", "[cuda]") {
  for (const float scale : {0.01f, 1.7f}) {
    kl_linear<Vdo>(33, 17, false, scale);
    kl_linear<Vdo>(33, 17, true, scale);  // log alpha clamped: the KL at 20, no gradient
    kl_linear<Svd>(33, 17, false, scale);
    kl_linear<Svd>(300, 200, false, scale);  // 235 blocks
    kl_linear<Svd>(800, 500, false, scale);  // more weights than the blocks cover at once
    kl_conv<Vdo>(3, 5, 3, false, scale);
    kl_conv<Svd>(3, 5, 3, false, scale);
    kl_conv<Svd>(20, 50, 5, false, scale);
    kl_linear<Gdo>(33, 17, false, scale);  // no KL: nothing added
  }
}

TEST_CASE("GPU Dropout applies the CPU's mask", "[cuda]") {
  for (const double p : {0.3, 0.5, 0.0})
    for (const auto mode : {PredictMode::sample, PredictMode::mean})
      for (const auto& s : {Shape(1, 1), Shape(1, 7), Shape(3, 5, 3, 3), Shape(130, 33)}) {
        INFO("p " << p << ", mode " << varnet::to_string(mode) << ", shape " << s);
        varnet::Network<float> net;
        auto& layer = net.emplace<varnet::Dropout<float>>("drop", p);
        net.build(s.with_batch(1), 5);
        Context ctx = Context::train(31, 9, 2);
        ctx.mode = mode;
        const auto x = random_vector<float>(size_t(s.numel()), 50);
        const auto dy = random_vector<float>(size_t(s.numel()), 51);
        const varnet::test::CpuRun want = run_cpu(net, x, s, dy, {}, ctx);

        const vc::Dropout<float> g(p);
        auto d_x = upload(x), d_dy = upload(dy);
        auto d_y = nan_buffer(s.numel()), d_dx = nan_buffer(s.numel());
        const varnet::NoiseKey key = vc::layer_key(ctx, layer.id());
        g.forward(gpu(), s, d_x.data(), d_y.data(), key, mode);
        g.backward(gpu(), s, d_dy.data(), d_dx.data(), key, mode);
        CHECK(download(d_y) == want.y);  // the same words, the same float products
        CHECK(download(d_dx) == want.dx);
      }
  CHECK_THROWS_AS(vc::Dropout<float>(1.0), varnet::Error);
}

TEST_CASE("GPU Dropout with stacked samples applies each sample's CPU mask", "[cuda]") {
  // Rows of 5 values, samples of 3 rows: 15 values a sample, so samples start mid-group.
  const Shape s(9, 5);
  varnet::Network<float> net;
  auto& layer = net.emplace<varnet::Dropout<float>>("drop", 0.4);
  net.build(s.with_batch(1), 5);
  const auto x = random_vector<float>(size_t(s.numel()), 52);
  const Context ctx =
      Context::eval_stacked(8, PredictMode::sample, varnet::stream::kEnsembleBase, 3);
  const varnet::ConstView<float> want = net.forward(varnet::ConstView<float>(x.data(), s), ctx);
  const std::vector<float> host(want.data, want.data + want.numel());
  const vc::Dropout<float> g(0.4);
  auto d_x = upload(x), d_y = nan_buffer(s.numel());
  g.forward(gpu(), s, d_x.data(), d_y.data(), vc::layer_noise(ctx, layer.id()),
            PredictMode::sample);
  CHECK(download(d_y) == host);
}

TEST_CASE("cuda::Network with the baselines' layers matches the host LeNet-5, KL included",
          "[cuda][network]") {
  for (const std::string kind : {"gdo", "vdo", "svdo", "dropout"})
    for (const auto mode : {PredictMode::sample, PredictMode::mean}) {
      INFO("layer kind " << kind << ", mode " << varnet::to_string(mode));
      varnet::Network<float> host = lenet(config(kind), 28, 7);
      vc::Network<float> dev(gpu(), host);
      const int64_t batch = 3;
      const Shape in(batch, 1, 28, 28);
      const auto x = random_vector<float>(size_t(in.numel()), 11, 0.0, 1.0);
      const auto dy = random_vector<float>(size_t(batch * 10), 12);
      Context ctx = Context::train(3, 41, 2);
      ctx.mode = mode;
      const varnet::test::CpuRun want =
          run_cpu(host, x, in, dy, std::vector<float>(host.params().size(), 0.f), ctx);
      const vc::DeviceBuffer<float> d_x = upload(x);
      const vc::DeviceBuffer<float> d_dy = upload(dy);
      dev.zero_grad();
      const float* y = dev.forward(d_x.data(), batch, ctx);
      dev.backward(d_dy.data(), ctx);
      VARNET_CHECK_CLOSE(vc::to_host(y, size_t(batch * 10), gpu().stream()), want.y, kNetworkRtol);
      VARNET_CHECK_CLOSE(dev.grad_buffer().download(gpu().stream()), want.grads, kNetworkRtol);
      VARNET_CHECK_CLOSE(dev.state_buffer().download(gpu().stream()), want.state, kNetworkRtol);

      // The KL and its gradient, network-wide.
      const bool has_kl = kind == "vdo" || kind == "svdo";
      CHECK(dev.has_kl() == has_kl);
      const double want_kl = host.kl();
      CHECK(std::fabs(dev.kl() - want_kl) <= kKlRtol * std::fabs(want_kl));
      std::fill(host.grads().begin(), host.grads().end(), 0.f);
      const double want_sum = host.add_kl_gradient(0.05f);
      dev.zero_grad();
      const auto d_scale = upload(std::vector<float>{0.05f});
      auto d_sum = upload(std::vector<double>{0.0});
      dev.add_kl_gradient(d_scale.data(), d_sum.data());
      CHECK(std::fabs(download(d_sum)[0] - want_sum) <= kKlRtol * std::fabs(want_sum));
      const std::vector<float> want_grads(host.grads().begin(), host.grads().end());
      VARNET_CHECK_CLOSE(dev.grad_buffer().download(gpu().stream()), want_grads, kKlGradRtol);
    }
}

TEST_CASE("cuda::Trainer with a KL weight follows the host Trainer, with and without a graph",
          "[cuda][network]") {
  const int64_t side = 16, batch = 8, steps = 5, items = 64;
  const varnet::data::LabeledImages data = random_images(items, side, 5);
  const varnet::LinearDecay lr{1e-3, 4 * steps};
  const double kl_weight = 1.0 / double(items);
  // Epoch 0 without the KL, epochs 1 and 2 with it: the GPU captures its step again when the KL
  // comes in.
  const std::vector<double> weights = {0.0, kl_weight, kl_weight};
  varnet::LeNet5Config mixed;
  mixed.kinds = {varnet::LayerKind::svdo, varnet::LayerKind::dropout, varnet::LayerKind::vdo,
                 varnet::LayerKind::svdo};
  for (const varnet::LeNet5Config& cfg : {config("svdo"), mixed}) {
    INFO((cfg.kinds.empty() ? "sparse VD layers 1-4" : "sparse VD, dropout, VD, sparse VD"));
    // Host.
    varnet::Network<float> host = lenet(cfg, side, 9);
    const std::vector<float> start(host.params().begin(), host.params().end());
    varnet::Adam<float> adam(host.params().size());
    varnet::Trainer<float, varnet::Adam<float>> trainer(host, adam, 1, 13);
    std::vector<double> host_loss, host_kl;
    varnet::Tensor<float> x;
    std::vector<int32_t> y;
    for (uint32_t e = 0; e < weights.size(); ++e) {
      const auto order = varnet::data::shuffled_order(items, 13, e);
      trainer.set_kl_weight(weights[e]);
      double loss = 0, kl = 0;
      for (int64_t s = 0; s < steps; ++s) {
        varnet::data::gather_batch(data, order, s * batch, batch, x, y);
        const varnet::LossResult r = trainer.step(x.view(), y.data(), lr.at(trainer.steps()));
        loss += r.loss;
        kl += r.kl;
      }
      host_loss.push_back(loss / double(steps));
      host_kl.push_back(kl / double(steps));
    }
    CHECK(host_kl[0] == 0.0);
    CHECK(host_kl[1] > 0.0);

    // GPU, eagerly and with a graph, from the same start.
    std::vector<std::vector<float>> params;
    for (bool graph : {false, true}) {
      INFO("graph " << graph);
      varnet::Network<float> twin = lenet(cfg, side, 9);
      vc::Network<float> dev(gpu(), twin);
      vc::TrainerOptions o = varnet::test::trainer_options(13, batch, lr, graph);
      vc::Trainer<float> t(dev, o);
      const vc::DeviceData dd(gpu(), data);
      for (uint32_t e = 0; e < weights.size(); ++e) {
        t.set_kl_weight(weights[e]);
        const vc::GpuEpochResult r =
            t.run_epoch(dd, varnet::data::shuffled_order(items, 13, e), steps, e);
        INFO("epoch " << e << ": loss " << r.loss << " (host " << host_loss[e] << "), KL " << r.kl
                      << " (host " << host_kl[e] << ")");
        CHECK(std::fabs(r.loss - host_loss[e]) <= kNetworkRtol * std::fabs(host_loss[e]));
        CHECK(std::fabs(r.kl - host_kl[e]) <= kNetworkRtol * std::fabs(host_kl[e]));
      }
      params.push_back(dev.param_buffer().download(gpu().stream()));
      const std::vector<float> host_params(host.params().begin(), host.params().end());
      const double gap = relative_update_gap(params.back(), host_params, start);
      INFO("relative gap between the GPU's and the CPU's parameter updates: " << gap);
      CHECK(gap < 1e-2);
    }
    CHECK(params[0] == params[1]);  // the graph replays the eager launches, KL included
  }
}

namespace {

// The examples' recipe on the host: before each step, set_kl_weight(beta.at(step) / N); Adam with
// per-parameter learning-rate scales. Per epoch: the mean loss, the mean KL, the last step's KL.
struct HostEpochs {
  std::vector<double> loss, kl, last_kl;
};

// Learning-rate scales for a network: 10 on every log alpha (variational dropout's), 0.5 on the
// first 64 parameters, 1 elsewhere.
template <class Opt>
void set_scales(Opt& opt, const varnet::Network<float>& net) {
  opt.set_lr_scale(0, 64, 0.5);
  const std::string suffix = ".log_alpha";
  for (const auto& e : net.table().entries())
    if (e.name.size() > suffix.size() &&
        e.name.compare(e.name.size() - suffix.size(), suffix.size(), suffix) == 0)
      opt.set_lr_scale(e.offset, e.shape.numel(), 10.0);
}

std::vector<int64_t> order_from(const std::vector<int64_t>& order, int64_t first) {
  return std::vector<int64_t>(order.begin() + first, order.end());
}

}  // namespace

TEST_CASE("cuda::Trainer with a per-step KL warm-up and lr scales follows the host Trainer",
          "[cuda][network]") {
  const int64_t side = 16, batch = 8, steps = 5, items = 64, epochs = 3;
  const varnet::data::LabeledImages data = random_images(items, side, 6);
  const varnet::LinearDecay lr{1e-3, epochs * steps};
  // Weight 0 at step 0, growing until step 7 (inside epoch 1), then beta / N.
  const varnet::KlWarmup beta{0.5, 7};
  varnet::LeNet5Config mixed;
  mixed.kinds = {varnet::LayerKind::svdo, varnet::LayerKind::dropout, varnet::LayerKind::vdo,
                 varnet::LayerKind::svdo};
  for (bool scaled : {false, true}) {
    INFO((scaled ? "with" : "without") << " learning-rate scales");
    varnet::Network<float> host = lenet(mixed, side, 9);
    const std::vector<float> start(host.params().begin(), host.params().end());
    varnet::Adam<float> adam(host.params().size());
    if (scaled) set_scales(adam, host);
    varnet::Trainer<float, varnet::Adam<float>> trainer(host, adam, 1, 13);
    HostEpochs want;
    varnet::Tensor<float> x;
    std::vector<int32_t> y;
    for (uint32_t e = 0; e < epochs; ++e) {
      const auto order = varnet::data::shuffled_order(items, 13, e);
      double loss = 0, kl = 0, last = 0;
      for (int64_t s = 0; s < steps; ++s) {
        varnet::data::gather_batch(data, order, s * batch, batch, x, y);
        trainer.set_kl_weight(beta.at(trainer.steps()) / double(items));
        const varnet::LossResult r = trainer.step(x.view(), y.data(), lr.at(trainer.steps()));
        loss += r.loss;
        kl += r.kl;
        last = r.kl;
      }
      want.loss.push_back(loss / double(steps));
      want.kl.push_back(kl / double(steps));
      want.last_kl.push_back(last);
    }
    REQUIRE(want.kl[0] > 0.0);

    std::vector<std::vector<float>> params;
    for (bool graph : {false, true}) {
      INFO("graph " << graph);
      varnet::Network<float> twin = lenet(mixed, side, 9);
      vc::Network<float> dev(gpu(), twin);
      vc::TrainerOptions o = varnet::test::trainer_options(13, batch, lr, graph);
      o.kl = vc::KlSchedule{beta, double(items)};
      vc::Trainer<float> t(dev, o);
      if (scaled) set_scales(t, twin);
      const vc::DeviceData dd(gpu(), data);
      for (uint32_t e = 0; e < epochs; ++e) {
        CHECK(t.kl_weight() == beta.at(t.steps()) / double(items));
        const vc::GpuEpochResult r =
            t.run_epoch(dd, varnet::data::shuffled_order(items, 13, e), steps, e);
        INFO("epoch " << e << ": loss " << r.loss << " (host " << want.loss[e] << "), KL " << r.kl
                      << " (host " << want.kl[e] << "), last KL " << r.last_kl << " (host "
                      << want.last_kl[e] << ")");
        CHECK(std::fabs(r.loss - want.loss[e]) <= kNetworkRtol * std::fabs(want.loss[e]));
        CHECK(std::fabs(r.kl - want.kl[e]) <= kNetworkRtol * std::fabs(want.kl[e]));
        CHECK(std::fabs(r.last_kl - want.last_kl[e]) <= kNetworkRtol * std::fabs(want.last_kl[e]));
      }
      params.push_back(dev.param_buffer().download(gpu().stream()));
      const std::vector<float> host_params(host.params().begin(), host.params().end());
      const double gap = relative_update_gap(params.back(), host_params, start);
      INFO("relative gap between the GPU's and the CPU's parameter updates: " << gap);
      CHECK(gap < 1e-2);
      // The log alphas moved 10 times as far with the scales: compare their update to the host's.
      const varnet::ParamEntry& la =
          entry(host, "fc1.log_alpha");  // the vdo layer's (weight layer 3)
      const size_t k = size_t(la.offset);
      CHECK(std::fabs((params.back()[k] - start[k]) - (host.params()[k] - start[k])) <=
            1e-2 * std::fabs(host.params()[k] - start[k]));
    }
    CHECK(params[0] == params[1]);  // the graph replays the eager launches
  }
}

TEST_CASE("cuda::Trainer: scales of 1 change nothing; a constant KL weight is a schedule",
          "[cuda][network]") {
  const int64_t side = 16, batch = 8, steps = 4, items = 32;
  const varnet::data::LabeledImages data = random_images(items, side, 7);
  const double w = 0.5 / double(items);
  std::vector<std::vector<float>> params;
  // 0: no scales, constant weight; 1: scales of 1 everywhere, the weight as a schedule without
  // warm-up ({w * N, 0} / N rounds to w here: N is a power of two); 2: constant weight again,
  // set through set_kl_weight after construction.
  for (int run = 0; run < 3; ++run) {
    INFO("run " << run);
    varnet::Network<float> host = lenet(config("svdo"), side, 9);
    vc::Network<float> dev(gpu(), host);
    vc::TrainerOptions o =
        varnet::test::trainer_options(13, batch, varnet::LinearDecay{1e-3, 2 * steps}, true);
    if (run == 0) o.kl_weight = w;
    if (run == 1) o.kl = vc::KlSchedule{varnet::KlWarmup{w * double(items), 0}, double(items)};
    vc::Trainer<float> t(dev, o);
    if (run == 1) t.set_lr_scale(0, dev.param_count(), 1.0);
    if (run == 2) t.set_kl_weight(w);
    CHECK(t.kl_weight() == w);
    const vc::DeviceData dd(gpu(), data);
    for (uint32_t e = 0; e < 2; ++e)
      t.run_epoch(dd, varnet::data::shuffled_order(items, 13, e), steps, e);
    params.push_back(dev.param_buffer().download(gpu().stream()));
  }
  CHECK(params[0] == params[1]);
  CHECK(params[0] == params[2]);
  vc::TrainerOptions both;
  both.kl_weight = 0.1;
  both.kl = vc::KlSchedule{varnet::KlWarmup{1, 10}, 100};
  varnet::Network<float> host = lenet(config("svdo"), side, 9);
  vc::Network<float> dev(gpu(), host);
  CHECK_THROWS_AS(vc::Trainer<float>(dev, both), varnet::Error);
  vc::Trainer<float> t(dev, vc::TrainerOptions{});
  CHECK_THROWS_AS(t.set_lr_scale(0, dev.param_count() + 1, 1.0), varnet::Error);
  CHECK_THROWS_AS(t.set_lr_scale(0, 1, -1.0), varnet::Error);
}

TEST_CASE("cuda::Trainer resumed from a checkpoint repeats the uninterrupted run bit for bit",
          "[cuda][network]") {
  const int64_t side = 16, batch = 8, steps = 5, items = 40;
  const varnet::data::LabeledImages data = random_images(items, side, 8);
  varnet::LeNet5Config mixed;
  mixed.kinds = {varnet::LayerKind::svdo, varnet::LayerKind::dropout, varnet::LayerKind::vdo,
                 varnet::LayerKind::svdo};
  vc::TrainerOptions o =
      varnet::test::trainer_options(13, batch, varnet::LinearDecay{1e-3, 2 * steps}, true);
  o.kl = vc::KlSchedule{varnet::KlWarmup{1.0, 7}, double(items)};
  const auto order0 = varnet::data::shuffled_order(items, 13, 0);
  const auto order1 = varnet::data::shuffled_order(items, 13, 1);
  const size_t p = lenet(mixed, side, 9).params().size();

  // Uninterrupted: two epochs.
  varnet::Network<float> a_host = lenet(mixed, side, 9);
  vc::Network<float> a_dev(gpu(), a_host);
  vc::Trainer<float> a(a_dev, o);
  set_scales(a, a_host);
  const vc::DeviceData dd(gpu(), data);
  a.run_epoch(dd, order0, steps, 0);
  a.run_epoch(dd, order1, steps, 1);
  a_dev.download(a_host);
  varnet::Adam<float> a_adam(p);
  a.export_state(a_adam);
  CHECK(a_adam.steps() == 2 * steps);

  // Interrupted: steps 0-1 of epoch 0, a checkpoint written and read back through the host, then
  // a new network and trainer for steps 2-4 of epoch 0 and epoch 1.
  const std::string path =
      (std::filesystem::temp_directory_path() / "varnet_cuda_resume_test.ckpt").string();
  std::filesystem::remove(path);
  std::filesystem::remove(varnet::previous_checkpoint_path(path));
  {
    varnet::Network<float> b_host = lenet(mixed, side, 9);
    vc::Network<float> b_dev(gpu(), b_host);
    vc::Trainer<float> b(b_dev, o);
    set_scales(b, b_host);
    b.run_epoch(dd, order0, 2, 0);
    b_dev.download(b_host);
    varnet::Adam<float> b_adam(p);
    b.export_state(b_adam);
    CHECK(b_adam.steps() == 2);
    varnet::CheckpointInfo info;
    info.step = b.steps();
    info.epoch = 0;
    info.step_in_epoch = 2;
    info.seed = 13;
    varnet::save_checkpoint(path, b_host, b_adam, info);
  }
  varnet::Network<float> c_host = lenet(mixed, side, 99);  // every value comes from the file
  varnet::Adam<float> c_adam(p);
  const varnet::CheckpointInfo got = varnet::load_checkpoint(path, c_host, c_adam, {}, 13);
  REQUIRE(got.step == 2u);
  vc::Network<float> c_dev(gpu(), c_host);
  vc::Trainer<float> c(c_dev, o);
  c.import_state(c_adam, uint32_t(got.step));
  set_scales(c, c_host);
  CHECK(c.steps() == 2u);
  CHECK(c.adam_steps() == 2);
  c.run_epoch(dd, order_from(order0, 2 * batch), steps - 2, 0);
  c.run_epoch(dd, order1, steps, 1);
  c_dev.download(c_host);
  varnet::Adam<float> c_adam_end(p);
  c.export_state(c_adam_end);
  std::filesystem::remove(path);

  CHECK(c.steps() == a.steps());
  CHECK(std::equal(c_host.params().begin(), c_host.params().end(), a_host.params().begin()));
  CHECK(std::equal(c_host.state().begin(), c_host.state().end(), a_host.state().begin()));
  CHECK(c_adam_end.steps() == a_adam.steps());
  for (size_t b = 0; b < 2; ++b) {
    const auto& want = *a_adam.buffers()[b].second;
    const auto& have = *c_adam_end.buffers()[b].second;
    CHECK(std::equal(have.begin(), have.end(), want.begin()));
  }
}
