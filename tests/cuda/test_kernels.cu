// Each GPU kernel against its CPU operation: LRT forward/backward, the input-gradient epilogue,
// im2col/col2im, layout transforms and bias, variance parameterisations, ReLU, Adam and the
// K-sample softmax cross-entropy. Shapes include odd sizes and batch 1.
#include <cstdint>
#include <vector>

#include "parity.hpp"

using varnet::NoiseKey;
using varnet::test::compare;
using varnet::test::download;
using varnet::test::gpu;
using varnet::test::random_vector;
using varnet::test::upload;
namespace vc = varnet::cuda;
namespace ops = varnet::ops;

namespace {
// (n, o, p, channel_major)
struct LrtCase {
  int64_t n, o, p;
  bool channel_major;
};
const std::vector<LrtCase> kLrtCases = {{1, 1, 1, false},    {1, 7, 1, false}, {3, 33, 1, false},
                                        {5, 3, 7, true},     {1, 4, 9, true},  {2, 5, 49, true},
                                        {130, 10, 1, false}, {2, 3, 5, false}};
const NoiseKey kKey{987654321ull, 3, 17, 2};
}  // namespace

TEST_CASE("lrt_forward matches ops::lrt_forward (same noise, same outputs)", "[cuda]") {
  const float e0 = 1e-8f;
  for (const auto& c : kLrtCases)
    for (const bool with_bias : {false, true})
      for (const bool add_to_y : {false, true}) {
        const ops::LrtLayout L{c.n, c.o, c.p, c.channel_major};
        const size_t total = size_t(c.n * c.o * c.p);
        const auto v = random_vector<float>(total, 1, 0.01, 2.0);
        const auto y0 = random_vector<float>(total, 2);
        const auto bias = random_vector<float>(size_t(c.o), 3);
        auto v_cpu = v, y_cpu = y0;
        ops::lrt_forward(kKey, L, with_bias ? bias.data() : nullptr, add_to_y, e0, v_cpu.data(),
                         y_cpu.data());
        auto dv = upload(v), dy = upload(y0), db = upload(bias);
        vc::lrt_forward(gpu(), kKey, L, with_bias ? db.data() : static_cast<const float*>(nullptr),
                        add_to_y, e0, dv.data(), dy.data());
        INFO("n " << c.n << ", o " << c.o << ", p " << c.p << ", channel-major " << c.channel_major
                  << ", bias " << with_bias << ", add_to_y " << add_to_y);
        VARNET_CHECK_CLOSE(download(dy), y_cpu, 1e-5);
        CHECK(download(dv) == v);  // the GPU keeps v
      }
}

TEST_CASE("lrt_forward sums partial variances in order and leaves the sum in the first", "[cuda]") {
  const float e0 = 1e-8f;
  for (const auto& c : kLrtCases) {
    const ops::LrtLayout L{c.n, c.o, c.p, c.channel_major};
    const size_t total = size_t(c.n * c.o * c.p);
    const int parts = 3;
    std::vector<float> partial = random_vector<float>(total * parts, 8, 0.01, 1.0), v(total);
    for (size_t k = 0; k < total; ++k)
      v[k] = (partial[k] + partial[total + k]) + partial[2 * total + k];
    auto v_cpu = v;
    std::vector<float> y_cpu(total);
    ops::lrt_forward(kKey, L, static_cast<const float*>(nullptr), false, e0, v_cpu.data(),
                     y_cpu.data());
    auto dp = upload(partial);
    vc::DeviceBuffer<float> dy(total);
    vc::lrt_forward(gpu(), kKey, L, static_cast<const float*>(nullptr), false, e0, dp.data(),
                    dy.data(), nullptr, parts);
    INFO("n " << c.n << ", o " << c.o << ", p " << c.p << ", channel-major " << c.channel_major);
    VARNET_CHECK_CLOSE(download(dy), y_cpu, 1e-5);
    const std::vector<float> got = download(dp);
    CHECK(std::vector<float>(got.begin(), got.begin() + std::ptrdiff_t(total)) == v);
  }
}

TEST_CASE("gemm_parts: the parts sum to the GEMM, and the split rule", "[cuda]") {
  CHECK(vc::gemm_parts(128, 500, 800) == 10);    // LeNet's fc1 at batch 128: 4 tiles
  CHECK(vc::gemm_parts(4096, 4096, 4096) == 1);  // enough tiles
  CHECK(vc::gemm_parts(128, 500, 200) == 1);     // a short reduction
  CHECK(vc::gemm_parts(5, 37, 257) == 1);        // 257 is prime
  const int64_t m = 5, n = 37, k = 800, parts = vc::gemm_parts(m, n, k);
  REQUIRE(parts == 12 - 2);  // 64 / 1 tile capped at k / 64 = 12, then the divisor 10
  const auto a = random_vector<float>(size_t(m * k), 9),
             b = random_vector<float>(size_t(n * k), 10);
  auto da = upload(a), db = upload(b);
  vc::DeviceBuffer<float> whole(size_t(m * n)), split(size_t(parts * m * n));
  vc::gemm(gpu(), vc::Op::N, vc::Op::T, m, n, k, 1.0f, static_cast<const float*>(da.data()),
           static_cast<const float*>(db.data()), 0.0f, whole.data());
  vc::gemm_parts(gpu(), vc::Op::N, vc::Op::T, m, n, k, static_cast<const float*>(da.data()),
                 static_cast<const float*>(db.data()), parts, split.data());
  const std::vector<float> w = download(whole), s = download(split);
  std::vector<float> sum(size_t(m * n), 0.0f);
  for (int64_t p = 0; p < parts; ++p)
    for (int64_t i = 0; i < m * n; ++i) sum[size_t(i)] += s[size_t(p * m * n + i)];
  VARNET_CHECK_CLOSE(sum, w, varnet::test::sum_rtol(k));
  CHECK_THROWS_WITH(
      vc::gemm_parts(gpu(), vc::Op::N, vc::Op::T, m, n, k, static_cast<const float*>(da.data()),
                     static_cast<const float*>(db.data()), int64_t(7), split.data()),
      Catch::Matchers::Contains("a number of parts that divides k"));
}

TEST_CASE("lrt_backward recomputes the noise: dL/dv matches the CPU's r * g", "[cuda]") {
  const float e0 = 1e-8f;
  for (const auto& c : kLrtCases) {
    const ops::LrtLayout L{c.n, c.o, c.p, c.channel_major};
    const size_t total = size_t(c.n * c.o * c.p);
    const auto v = random_vector<float>(total, 4, 0.01, 2.0);
    const auto g = random_vector<float>(total, 5);
    auto v_cpu = v;
    std::vector<float> y(total);
    ops::lrt_forward(kKey, L, static_cast<const float*>(nullptr), false, e0, v_cpu.data(),
                     y.data());
    ops::lrt_backward(L, g.data(), v_cpu.data());  // v_cpu = dL/dv
    auto dv = upload(v), dg = upload(g);
    vc::DeviceBuffer<float> out(total);
    vc::lrt_backward(gpu(), kKey, L, e0, static_cast<const float*>(dg.data()),
                     static_cast<const float*>(dv.data()), out.data());
    INFO("n " << c.n << ", o " << c.o << ", p " << c.p << ", channel-major " << c.channel_major);
    VARNET_CHECK_CLOSE(download(out), v_cpu, 1e-5);
    vc::lrt_backward(gpu(), kKey, L, e0, static_cast<const float*>(dg.data()),
                     static_cast<const float*>(dv.data()), dv.data());  // in place
    VARNET_CHECK_CLOSE(download(dv), v_cpu, 1e-5);
  }
}

TEST_CASE("lrt_input_backward: dx = dx_mean + 2 x t in one pass", "[cuda]") {
  for (const int64_t count : {1, 7, 1000, 4099}) {
    const auto x = random_vector<float>(static_cast<size_t>(count), 6),
               t = random_vector<float>(static_cast<size_t>(count), 7),
               m = random_vector<float>(static_cast<size_t>(count), 8);
    std::vector<float> want_plain(static_cast<size_t>(count)),
        want_mean(static_cast<size_t>(count));
    for (size_t i = 0; i < static_cast<size_t>(count); ++i) {
      want_plain[i] = t[i] * (2.0f * x[i]);
      want_mean[i] = m[i] + want_plain[i];
    }
    auto dx_ = upload(x), dt = upload(t), dm = upload(m);
    vc::DeviceBuffer<float> out(static_cast<size_t>(count));
    vc::lrt_input_backward(gpu(), count, static_cast<const float*>(dx_.data()),
                           static_cast<const float*>(dt.data()),
                           static_cast<const float*>(dm.data()), out.data());
    VARNET_CHECK_CLOSE(download(out), want_mean, 1e-6);
    vc::lrt_input_backward(gpu(), count, static_cast<const float*>(dx_.data()),
                           static_cast<const float*>(dt.data()), static_cast<const float*>(nullptr),
                           dt.data());  // in place over t
    VARNET_CHECK_CLOSE(download(dt), want_plain, 1e-6);
  }
}

namespace {
// (C, H, W, kernel, stride, pad)
const std::vector<std::array<int64_t, 6>> kConvCases = {{1, 5, 5, 3, 1, 0},   {3, 7, 9, 3, 2, 1},
                                                        {2, 6, 5, 5, 1, 2},   {4, 1, 1, 1, 1, 0},
                                                        {3, 11, 11, 3, 3, 1}, {5, 8, 8, 2, 2, 0}};
ops::ConvGeometry geometry(const std::array<int64_t, 6>& c, int64_t out_c = 4) {
  return ops::ConvGeometry{c[0], c[1], c[2], out_c, c[3], c[3], c[4], c[5]};
}
}  // namespace

TEST_CASE("im2col_forward and im2col_backward (col2im) match ops::im2col / ops::col2im", "[cuda]") {
  for (const auto& cc : kConvCases)
    for (const int64_t n : {1, 2, 3}) {
      const ops::ConvGeometry g = geometry(cc);
      const size_t xs = size_t(n * g.in_c * g.in_h * g.in_w), cs = size_t(g.rows() * n * g.plane());
      INFO("n " << n << ", C " << g.in_c << ", H " << g.in_h << ", W " << g.in_w << ", k " << g.k_h
                << ", stride " << g.stride << ", pad " << g.pad);
      const auto x = random_vector<float>(xs, 9);
      std::vector<float> cols(cs), cols2(cs);
      ops::im2col(x.data(), n, g, cols.data());
      for (size_t i = 0; i < cs; ++i) cols2[i] = cols[i] * cols[i];

      auto dx_ = upload(x);
      vc::DeviceBuffer<float> dcols(cs), dcols2(cs);
      vc::im2col_forward(gpu(), static_cast<const float*>(dx_.data()), n, g, dcols.data(),
                         dcols2.data());
      CHECK(download(dcols) == cols);
      CHECK(download(dcols2) == cols2);
      dcols2.zero(gpu().stream());
      vc::im2col_forward(gpu(), static_cast<const float*>(dx_.data()), n, g,
                         static_cast<float*>(nullptr), dcols2.data());  // squares only
      CHECK(download(dcols2) == cols2);

      const auto gcols = random_vector<float>(cs, 10);
      std::vector<float> dx(xs), dx2(xs);
      ops::col2im(gcols.data(), n, g, dx.data());
      for (size_t i = 0; i < xs; ++i) dx2[i] = dx[i] * (2.0f * x[i]);
      auto dg = upload(gcols);
      vc::DeviceBuffer<float> out(xs);
      vc::im2col_backward(gpu(), static_cast<const float*>(dg.data()), n, g,
                          static_cast<const float*>(nullptr), out.data());
      VARNET_CHECK_CLOSE(download(out), dx, 1e-6);
      vc::im2col_backward(gpu(), static_cast<const float*>(dg.data()), n, g,
                          static_cast<const float*>(dx_.data()), out.data());
      VARNET_CHECK_CLOSE(download(out), dx2, 1e-6);
    }
}

TEST_CASE("layout transforms, bias fill and bias reduction match the CPU", "[cuda]") {
  const std::vector<std::array<int64_t, 3>> shapes = {{1, 1, 1},  {3, 5, 7},   {2, 33, 1},
                                                      {4, 3, 49}, {1, 300, 1}, {129, 2, 3}};
  for (const auto& s : shapes) {
    const int64_t n = s[0], o = s[1], p = s[2];
    const size_t total = size_t(n * o * p);
    INFO("n " << n << ", o " << o << ", p " << p);
    const auto y2 = random_vector<float>(total, 11),
               bias = random_vector<float>(static_cast<size_t>(o), 12);
    auto d_y2 = upload(y2), d_bias = upload(bias);
    vc::DeviceBuffer<float> out(total);
    for (const bool with_bias : {false, true}) {
      std::vector<float> want(total);
      ops::channel_major_to_nchw(y2.data(), with_bias ? bias.data() : nullptr, n, o, p,
                                 want.data());
      vc::channel_major_to_nchw(gpu(), static_cast<const float*>(d_y2.data()),
                                with_bias ? static_cast<const float*>(d_bias.data()) : nullptr, n,
                                o, p, out.data());
      CHECK(download(out) == want);

      varnet::fill_with_bias(with_bias ? bias.data() : nullptr, n, o, p, want.data());
      vc::bias_forward(gpu(), with_bias ? static_cast<const float*>(d_bias.data()) : nullptr, n, o,
                       p, out.data());
      CHECK(download(out) == want);
    }
    std::vector<float> want(total);
    ops::nchw_to_channel_major(y2.data(), n, o, p, want.data());
    vc::nchw_to_channel_major(gpu(), static_cast<const float*>(d_y2.data()), n, o, p, out.data());
    CHECK(download(out) == want);

    auto db = random_vector<float>(static_cast<size_t>(o), 13);  // bias_backward accumulates
    auto d_db = upload(db);
    ops::bias_backward(y2.data(), n, o, p, db.data());
    vc::bias_backward(gpu(), static_cast<const float*>(d_y2.data()), n, o, p, d_db.data());
    VARNET_CHECK_CLOSE(download(d_db), db, 1e-5);
  }
}

TEST_CASE("variance parameterisations and their chain rule match ZeroMeanWeights", "[cuda]") {
  for (const auto param : {varnet::VarianceParam::sigma, varnet::VarianceParam::log_sigma2})
    for (const int64_t count : {1, 5, 1000, 4097}) {
      varnet::VarianceOptions opt;
      opt.param = param;
      const varnet::ZeroMeanWeights<float> w{opt};
      const bool log_param = param == varnet::VarianceParam::log_sigma2;
      INFO("param " << varnet::to_string(param) << ", count " << count);
      const auto p = log_param ? random_vector<float>(static_cast<size_t>(count), 14, -6.0, 1.0)
                               : random_vector<float>(static_cast<size_t>(count), 14);
      const auto ds2 = random_vector<float>(static_cast<size_t>(count), 15);
      auto dp = random_vector<float>(static_cast<size_t>(count), 16);
      std::vector<float> s2(static_cast<size_t>(count));
      auto d_p = upload(p), d_ds2 = upload(ds2), d_dp = upload(dp);
      w.variance(p.data(), s2.data(), count);
      w.grad_from_variance(p.data(), s2.data(), ds2.data(), dp.data(), count);
      vc::DeviceBuffer<float> d_s2(static_cast<size_t>(count));
      vc::variance_forward(gpu(), log_param, static_cast<const float*>(d_p.data()), d_s2.data(),
                           count);
      vc::variance_backward(gpu(), log_param, static_cast<const float*>(d_p.data()),
                            static_cast<const float*>(d_s2.data()),
                            static_cast<const float*>(d_ds2.data()), d_dp.data(), count);
      VARNET_CHECK_CLOSE(download(d_s2), s2, 1e-6);
      VARNET_CHECK_CLOSE(download(d_dp), dp, 1e-6);
    }
}

TEST_CASE("square, ReLU forward and backward match the CPU", "[cuda]") {
  for (const int64_t count : {1, 31, 1000}) {
    auto x = random_vector<float>(static_cast<size_t>(count), 17);
    x[0] = 0.0f;  // the kink: ReLU passes no gradient at 0
    const auto dy = random_vector<float>(static_cast<size_t>(count), 18);
    const varnet::Shape shape(1, count);
    varnet::ReLU<float> relu;
    varnet::Context ctx;
    std::vector<float> y(static_cast<size_t>(count)), dx(static_cast<size_t>(count)),
        sq(static_cast<size_t>(count));
    relu.forward(varnet::ConstView<float>(x.data(), shape),
                 varnet::TensorView<float>(y.data(), shape), nullptr, ctx);
    relu.backward(varnet::ConstView<float>(x.data(), shape),
                  varnet::ConstView<float>(y.data(), shape),
                  varnet::ConstView<float>(dy.data(), shape),
                  varnet::TensorView<float>(dx.data(), shape), nullptr, ctx);
    for (size_t i = 0; i < x.size(); ++i) sq[i] = x[i] * x[i];
    auto d_x = upload(x), d_dy = upload(dy);
    vc::DeviceBuffer<float> d_y(static_cast<size_t>(count)), d_dx(static_cast<size_t>(count));
    vc::relu_forward(gpu(), static_cast<const float*>(d_x.data()), d_y.data(), count);
    vc::relu_backward(gpu(), static_cast<const float*>(d_y.data()),
                      static_cast<const float*>(d_dy.data()), d_dx.data(), count);
    CHECK(download(d_y) == y);
    CHECK(download(d_dx) == dx);
    vc::square_forward(gpu(), static_cast<const float*>(d_x.data()), d_y.data(), count);
    CHECK(download(d_y) == sq);
  }
}

TEST_CASE("variance_square_forward equals variance_forward and square_forward", "[cuda]") {
  // Counts that are not multiples of 4 and offsets of one float exercise the element-by-element
  // tail and the unaligned path beside the 16-byte vectors.
  for (const bool log_param : {false, true}) {
    for (const int64_t offset : {0, 1}) {
      const int64_t count_s = 1003, count_x = 37;
      INFO("log sigma2 " << log_param << ", offset " << offset);
      const auto p = random_vector<float>(size_t(count_s + offset), 31, -3.0, 1.0);
      const auto x = random_vector<float>(size_t(count_x + offset), 32);
      auto d_p = upload(p), d_x = upload(x);
      vc::DeviceBuffer<float> s2{size_t(count_s + offset)}, x2{size_t(count_x + offset)},
          s2_ref{size_t(count_s)}, x2_ref{size_t(count_x)};
      vc::variance_square_forward(
          gpu(), log_param, static_cast<const float*>(d_p.data()) + offset, s2.data() + offset,
          count_s, static_cast<const float*>(d_x.data()) + offset, x2.data() + offset, count_x);
      vc::variance_forward(gpu(), log_param, static_cast<const float*>(d_p.data()) + offset,
                           s2_ref.data(), count_s);
      vc::square_forward(gpu(), static_cast<const float*>(d_x.data()) + offset, x2_ref.data(),
                         count_x);
      const auto got_s = download(s2), got_x = download(x2);
      CHECK(std::vector<float>(got_s.begin() + offset, got_s.end()) == download(s2_ref));
      CHECK(std::vector<float>(got_x.begin() + offset, got_x.end()) == download(x2_ref));
    }
  }
}

TEST_CASE("cuda::Adam takes the same steps as varnet::Adam", "[cuda]") {
  for (const int64_t count : {1, 1001}) {
    varnet::AdamOptions opt;
    opt.beta1 = 0.8;
    opt.beta2 = 0.99;
    varnet::Adam<float> cpu(static_cast<size_t>(count), opt);
    vc::Adam<float> dev(gpu(), count, opt);
    auto params = random_vector<float>(static_cast<size_t>(count), 19);
    auto d_params = upload(params);
    for (int step = 0; step < 4; ++step) {
      const auto grads = random_vector<float>(static_cast<size_t>(count), 20 + uint32_t(step));
      auto d_grads = upload(grads);
      const double lr = 1e-2 / (step + 1);
      cpu.step(params, grads, lr);
      dev.step(gpu(), d_params.data(), d_grads.data(), lr);
      INFO("count " << count << ", step " << step + 1);
      VARNET_CHECK_CLOSE(download(d_params), params, 1e-6);
    }
    CHECK(dev.steps() == cpu.steps());
  }
}

TEST_CASE("softmax cross-entropy over K samples matches varnet::cross_entropy", "[cuda]") {
  const std::vector<std::array<int64_t, 2>> shapes = {{1, 2}, {7, 10}, {130, 37}};
  for (const int samples : {1, 3})
    for (const auto& s : shapes) {
      const int64_t n = s[0], c = s[1];
      const size_t per = size_t(n * c);
      INFO("K " << samples << ", N " << n << ", C " << c);
      const auto logits = random_vector<float>(per * static_cast<size_t>(samples), 21, -4.0, 4.0);
      std::vector<int32_t> labels(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) labels[static_cast<size_t>(i)] = int32_t((i * 7 + 3) % c);
      std::vector<float> dlogits(per * static_cast<size_t>(samples), 0.0f);
      std::vector<varnet::ConstView<float>> views;
      std::vector<varnet::TensorView<float>> dviews;
      for (int k = 0; k < samples; ++k) {
        views.emplace_back(logits.data() + static_cast<size_t>(k) * per, varnet::Shape(n, c));
        dviews.emplace_back(dlogits.data() + static_cast<size_t>(k) * per, varnet::Shape(n, c));
      }
      const varnet::LossResult want = varnet::cross_entropy(views, labels.data(), &dviews);

      auto d_logits = upload(logits);
      auto d_labels = upload(labels);
      vc::DeviceBuffer<float> d_dlogits(logits.size()), d_loss(static_cast<size_t>(n));
      vc::DeviceBuffer<int32_t> d_correct(static_cast<size_t>(n));
      vc::softmax_xent_forward(gpu(), samples, n, c, static_cast<const float*>(d_logits.data()),
                               static_cast<const int32_t*>(d_labels.data()), d_dlogits.data(),
                               d_loss.data(), d_correct.data());
      const varnet::LossResult got =
          vc::softmax_xent_result(gpu(), n, static_cast<const float*>(d_loss.data()),
                                  static_cast<const int32_t*>(d_correct.data()));
      CHECK(std::isfinite(got.loss));
      CHECK(std::fabs(got.loss - want.loss) <= 1e-5 * std::max(1.0, std::fabs(want.loss)));
      CHECK(got.correct == want.correct);
      VARNET_CHECK_CLOSE(download(d_dlogits), dlogits, 1e-5);
    }

  // An out-of-range label is reported, not silently scored.
  const std::vector<float> logits = {0.f, 1.f, 2.f, 3.f};
  auto d_logits = upload(logits);
  auto d_labels = upload(std::vector<int32_t>{0, 2});
  vc::DeviceBuffer<float> d_loss(2);
  vc::DeviceBuffer<int32_t> d_correct(2);
  vc::softmax_xent_forward(gpu(), 1, 2, 2, static_cast<const float*>(d_logits.data()),
                           static_cast<const int32_t*>(d_labels.data()),
                           static_cast<float*>(nullptr), d_loss.data(), d_correct.data());
  CHECK_THROWS_AS(vc::softmax_xent_result(gpu(), 2, static_cast<const float*>(d_loss.data()),
                                          static_cast<const int32_t*>(d_correct.data())),
                  varnet::Error);
}
