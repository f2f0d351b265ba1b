// Emulated GPU kernels against their CPU twins (see emulation_test_support.hpp): the elementwise
// maps and layouts, dropout, and weight sampling.
#include "emulation_test_support.hpp"

#include "kernels/dropout.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/weights.cuh"
#include "varnet/layers/activations.hpp"
#include "varnet/layers/dropout.hpp"
#include "varnet/layers/variance.hpp"
#include "varnet/ops/conv.hpp"

using namespace emulation_test;  // NOLINT: the shared helpers, and varnet's types through them

// ---- elementwise.cuh: ZeroMeanWeights, the activations, ops/conv.hpp ----

TEMPLATE_TEST_CASE(
    "emulated elementwise kernels match ZeroMeanWeights, the activations and the "
    "layout ops",
    "[emulation]", float, double) {
  using T = TestType;
  for (const int64_t count : {int64_t(1), int64_t(7), int64_t(1003)}) {
    Buf<T> x = random_values<T>(count, 1);
    for (int64_t i = 0; i < count; i += 5) x[size_t(i)] = T(0);  // the kinks of ReLU and LeakyReLU
    const Buf<T> dy = random_values<T>(count, 2), ds2 = random_values<T>(count, 3);
    const Buf<T> dp0 = random_values<T>(count, 4);
    const Shape shape(1, count);
    const ConstView<T> xv(x.data(), shape), dyv(dy.data(), shape);
    Context ctx;

    for (const auto& [grid, block] : launch_shapes(count)) {
      INFO(type_name<T>() << ", count " << count << ", grid " << grid << " x " << block);
      const auto run = [&, g = grid, b = block](auto&& body) { launch(g, b, false, body); };

      for (const bool log_param : {false, true}) {
        INFO((log_param ? "log sigma2" : "sigma"));
        VarianceOptions opt;
        opt.param = log_param ? VarianceParam::log_sigma2 : VarianceParam::sigma;
        const ZeroMeanWeights<T> zw{opt};
        const Buf<T> p = log_param ? random_values<T>(count, 5, -6, 1) : random_values<T>(count, 5);
        Buf<T> s2_cpu(static_cast<size_t>(count), T(0)), dp_cpu = dp0;
        zw.variance(p.data(), s2_cpu.data(), count);
        zw.grad_from_variance(p.data(), s2_cpu.data(), ds2.data(), dp_cpu.data(), count);
        Buf<T> s2 = nans<T>(count), dp = dp0;
        run([&] { kn::variance_forward_kernel<T>(count, log_param, p.data(), s2.data()); });
        run([&] {
          kn::variance_backward_kernel<T>(count, log_param, p.data(), s2_cpu.data(), ds2.data(),
                                          dp.data());
        });
        if (log_param)  // Eigen's vectorised exp against the libm exp: an ulp or two
          check_close<T>(s2, s2_cpu, 4 * kEps<T>, 0, "exp(log sigma2)");
        else
          CHECK(same(s2, s2_cpu) == "");
        CHECK(same(dp, dp_cpu) == "");

        // The fused sigma^2 and x^2 kernel: the 16-byte path (float, aligned), the unaligned one
        // (offset 1) and the element-by-element tail (counts not multiples of 4).
        for (const int64_t offset : {int64_t(0), int64_t(1)}) {
          INFO("offset " << offset);
          const int64_t count_x = count + 2;
          Buf<T> pp(static_cast<size_t>(count + offset)),
              xx = random_values<T>(count_x + offset, 6);
          std::copy(p.begin(), p.end(), pp.begin() + offset);
          Buf<T> s2f = nans<T>(count + offset), x2 = nans<T>(count_x + offset);
          const int64_t groups = (count + 3) / 4 + (count_x + 3) / 4;
          launch(grid == cuda::grid_for(count) ? cuda::grid_for(groups) : grid, block, false, [&] {
            kn::variance_square_forward_kernel<T>(count, log_param, pp.data() + offset,
                                                  s2f.data() + offset, count_x, xx.data() + offset,
                                                  x2.data() + offset);
          });
          CHECK(same(Buf<T>(s2f.begin() + offset, s2f.end()), s2) == "");  // = variance_forward
          Buf<T> x2_want(static_cast<size_t>(count_x));
          for (int64_t i = 0; i < count_x; ++i)
            x2_want[size_t(i)] = xx[size_t(offset + i)] * xx[size_t(offset + i)];
          CHECK(same(Buf<T>(x2.begin() + offset, x2.end()), x2_want) == "");
        }
      }

      // square, in place
      Buf<T> sq = x, sq_want(static_cast<size_t>(count));
      for (int64_t i = 0; i < count; ++i) sq_want[size_t(i)] = x[size_t(i)] * x[size_t(i)];
      run([&] { kn::square_forward_kernel<T>(count, sq.data(), sq.data()); });
      CHECK(same(sq, sq_want) == "");

      // ReLU
      {
        ReLU<T> layer;
        Buf<T> y_cpu(static_cast<size_t>(count)), dx_cpu(static_cast<size_t>(count)),
            y = nans<T>(count), dx = nans<T>(count);
        layer.forward(xv, TensorView<T>(y_cpu.data(), shape), nullptr, ctx);
        layer.backward(xv, ConstView<T>(y_cpu.data(), shape), dyv,
                       TensorView<T>(dx_cpu.data(), shape), nullptr, ctx);
        run([&] { kn::relu_forward_kernel<T>(count, x.data(), y.data()); });
        run([&] { kn::relu_backward_kernel<T>(count, y_cpu.data(), dy.data(), dx.data()); });
        CHECK(same(y, y_cpu) == "");
        CHECK(same(dx, dx_cpu) == "");
      }
      // LeakyReLU (backward reads x)
      {
        LeakyReLU<T> layer(0.07);
        Buf<T> y_cpu(static_cast<size_t>(count)), dx_cpu(static_cast<size_t>(count)),
            y = nans<T>(count), dx = nans<T>(count);
        layer.forward(xv, TensorView<T>(y_cpu.data(), shape), nullptr, ctx);
        layer.backward(xv, ConstView<T>(y_cpu.data(), shape), dyv,
                       TensorView<T>(dx_cpu.data(), shape), nullptr, ctx);
        run([&] { kn::leaky_relu_forward_kernel<T>(count, layer.slope(), x.data(), y.data()); });
        run([&] {
          kn::leaky_relu_backward_kernel<T>(count, layer.slope(), x.data(), dy.data(), dx.data());
        });
        CHECK(same(y, y_cpu) == "");
        CHECK(same(dx, dx_cpu) == "");
      }
      // Tanh
      {
        Tanh<T> layer;
        Buf<T> y_cpu(static_cast<size_t>(count)), dx_cpu(static_cast<size_t>(count)),
            y = nans<T>(count), dx = nans<T>(count);
        layer.forward(xv, TensorView<T>(y_cpu.data(), shape), nullptr, ctx);
        layer.backward(xv, ConstView<T>(y_cpu.data(), shape), dyv,
                       TensorView<T>(dx_cpu.data(), shape), nullptr, ctx);
        run([&] { kn::tanh_forward_kernel<T>(count, x.data(), y.data()); });
        run([&] { kn::tanh_backward_kernel<T>(count, y_cpu.data(), dy.data(), dx.data()); });
        // Eigen's tanh (a rational approximation) against libm's tanh: a few ulps (the kernel's
        // comment; 2-3 measured with AVX-512).
        check_close<T>(y, y_cpu, 8 * kEps<T>, 0, "tanh");
        CHECK(same(dx, dx_cpu) == "");  // dy (1 - y^2) from the same y
      }
    }
  }

  // Layouts (N, O, P) <-> channel-major (O, N P), the bias fill, and the bias reduction.
  struct Nop {
    int64_t n, o, p;
  };
  for (const Nop s : {Nop{1, 1, 1}, Nop{1, 7, 5}, Nop{3, 5, 9}, Nop{2, 33, 7}, Nop{3, 2, 131}}) {
    const int64_t total = s.n * s.o * s.p;
    INFO(type_name<T>() << ", n " << s.n << ", o " << s.o << ", p " << s.p);
    const Buf<T> y2 = random_values<T>(total, 7), y = random_values<T>(total, 8);
    const Buf<T> bias = random_values<T>(s.o, 9);
    for (const auto& [grid, block] : launch_shapes(total)) {
      INFO("grid " << grid << " x " << block);
      for (const T* b : {static_cast<const T*>(nullptr), bias.data()}) {
        Buf<T> want(static_cast<size_t>(total)), got = nans<T>(total), got64 = nans<T>(total);
        ops::channel_major_to_nchw(y2.data(), b, s.n, s.o, s.p, want.data());
        launch(grid, block, false, [&] {
          kn::channel_major_to_nchw_kernel<T, int32_t>(y2.data(), b, int32_t(s.n), int32_t(s.o),
                                                       int32_t(s.p), got.data());
        });
        launch(grid, block, false, [&] {
          kn::channel_major_to_nchw_kernel<T, int64_t>(y2.data(), b, s.n, s.o, s.p, got64.data());
        });
        CHECK(same(got, want) == "");
        CHECK(same(got64, want) == "");

        fill_with_bias(b, s.n, s.o, s.p, want.data());
        got = nans<T>(total);
        launch(grid, block, false,
               [&] { kn::bias_forward_kernel<T>(b, s.n, s.o, s.p, got.data()); });
        CHECK(same(got, want) == "");
      }
      Buf<T> want(static_cast<size_t>(total)), got = nans<T>(total), got64 = nans<T>(total);
      ops::nchw_to_channel_major(y.data(), s.n, s.o, s.p, want.data());
      launch(grid, block, false, [&] {
        kn::nchw_to_channel_major_kernel<T, int32_t>(y.data(), int32_t(s.n), int32_t(s.o),
                                                     int32_t(s.p), got.data());
      });
      launch(grid, block, false, [&] {
        kn::nchw_to_channel_major_kernel<T, int64_t>(y.data(), s.n, s.o, s.p, got64.data());
      });
      CHECK(same(got, want) == "");
      CHECK(same(got64, want) == "");
    }
    // db += sums of dy: one block of kReduceThreads per channel, threaded (a tree in shared
    // memory). Grids of o blocks (the launcher's), 1 and 2 (each block loops over channels);
    // n p = 393 > 256 values per channel in the last shape, so that each thread sums several.
    if (s.o <= 8) {
      const Buf<T> db0 = random_values<T>(s.o, 10);
      Buf<T> want = db0;
      ops::bias_backward(y.data(), s.n, s.o, s.p, want.data());
      for (const unsigned grid : {unsigned(s.o), 1u, 2u}) {
        INFO("bias_backward grid " << grid);
        Buf<T> got = db0;
        launch(grid, kn::kReduceThreads, true,
               [&] { kn::bias_backward_kernel<T>(y.data(), s.n, s.o, s.p, got.data()); });
        // Eigen's vectorised sums against the kernel's strided sums and tree: summation order
        // only, n p terms of magnitude <= 1.
        check_close<T>(got, want, 0, 4 * kEps<T> * double(s.n * s.p + 1), "bias_backward");
      }
    }
  }

  // Split-K's partial sums, in chunk order (no CPU twin: the order written out here).
  {
    const int64_t count = 1003;
    for (const int64_t chunks : {int64_t(1), int64_t(3)}) {
      const Buf<T> part = random_values<T>(count * chunks, 11), c0 = random_values<T>(count, 12);
      for (const T beta : {T(0), T(2)}) {
        Buf<T> want(static_cast<size_t>(count));
        for (int64_t k = 0; k < count; ++k) {
          T acc = part[size_t(k)];
          for (int64_t j = 1; j < chunks; ++j) acc = acc + part[size_t(j * count + k)];
          const T scaled = T(0.5) * acc;
          want[size_t(k)] = beta == T(0) ? scaled : scaled + beta * c0[size_t(k)];
        }
        for (const auto& [grid, block] : launch_shapes(count)) {
          INFO("sum_partials chunks " << chunks << ", beta " << beta << ", grid " << grid);
          Buf<T> c = beta == T(0) ? nans<T>(count) : c0;  // beta 0: c is not read
          launch(grid, block, false, [&] {
            kn::sum_partials_kernel<T>(count, chunks, part.data(), T(0.5), beta, c.data());
          });
          CHECK(same(c, want) == "");
        }
      }
    }
  }
}

// ---- dropout.cuh: layers/dropout.hpp ----

namespace {

template <class T>
void dropout_case(const Shape& s, double p, int64_t rows_per_sample, bool step_word) {
  INFO(type_name<T>() << " dropout " << s << ", p " << p << ", rows per sample " << rows_per_sample
                      << ", step word " << step_word);
  Dropout<T> layer(p);
  layer.set_id(3);
  const Context ctx = rows_per_sample
                          ? Context::eval_stacked(8, PredictMode::sample, 40, rows_per_sample)
                          : Context::train(31, 9, 2);
  const int64_t count = s.numel(), row = s.per_sample();
  const Buf<T> x = random_values<T>(count, uint32_t(count) + 50);
  Buf<T> want(static_cast<size_t>(count));
  layer.forward(ConstView<T>(x.data(), s), TensorView<T>(want.data(), s), nullptr, ctx);
  const uint32_t word = ctx.step;
  const BatchNoise noise{NoiseKey{ctx.seed, layer.id(), step_word ? 12345u : ctx.step, ctx.stream},
                         ctx.rows_per_sample};
  const float keep = static_cast<float>(1 - p);
  const T scale = T(1) / T(1 - p);
  for (const auto& [grid, block] : launch_shapes(noise.groups(count, row))) {
    INFO("grid " << grid << " x " << block);
    Buf<T> got = nans<T>(count);
    launch(grid, block, false, [&] {
      kn::dropout_forward_kernel<T>(noise, step_word ? &word : nullptr, count, row, keep, scale,
                                    x.data(), got.data());
    });
    CHECK(same(got, want) == "");  // the same words, mask and products: bit for bit
  }
}

}  // namespace

TEMPLATE_TEST_CASE("emulated dropout kernel matches Dropout, stacked samples too", "[emulation]",
                   float, double) {
  using T = TestType;
  for (const double p : {0.3, 0.0})
    for (const Shape& s :
         {Shape(1, 1), Shape(1, 7), Shape(3, 5, 3, 3), Shape(130, 33), Shape(1, 3, 7, 5)})
      dropout_case<T>(s, p, 0, false);
  dropout_case<T>(Shape(5, 13), 0.4, 0, true);
  const std::vector<std::pair<Shape, int64_t>> stacked = {
      {Shape(9, 5), 3}, {Shape(9, 5), 1}, {Shape(9, 5), 9}, {Shape(10, 3, 3, 3), 5},
      {Shape(6, 7), 2}, {Shape(7, 1), 7}, {Shape(12, 2), 3}};
  for (const auto& [s, R] : stacked)
    for (const bool word : {false, true}) dropout_case<T>(s, 0.4, R, word);
}

// ---- weights.cuh: ZeroMeanWeights::sample and grad_from_weight ----

TEMPLATE_TEST_CASE("emulated weight sampling matches ZeroMeanWeights (Bernoulli, uniform)",
                   "[emulation]", float, double) {
  using T = TestType;
  for (const int64_t count : {int64_t(1), int64_t(5), int64_t(1003)})
    for (const WeightDist dist : {WeightDist::bernoulli, WeightDist::uniform})
      for (const VarianceParam param : {VarianceParam::sigma, VarianceParam::log_sigma2}) {
        VarianceOptions opt;
        opt.dist = dist;
        opt.param = param;
        const ZeroMeanWeights<T> zw{opt};
        const bool bern = dist == WeightDist::bernoulli,
                   log_param = param == VarianceParam::log_sigma2;
        INFO(type_name<T>() << ", count " << count << ", " << to_string(dist) << ", "
                            << to_string(param));
        const NoiseKey key{11, 6, 21, 3};
        const Buf<T> p =
            log_param ? random_values<T>(count, 30, -6, 1) : random_values<T>(count, 30);
        const Buf<T> dw = random_values<T>(count, 31), dp0 = random_values<T>(count, 32);
        Buf<T> w_cpu(static_cast<size_t>(count)), xi_cpu(static_cast<size_t>(count)), dp_cpu = dp0;
        zw.sample(key, p.data(), w_cpu.data(), xi_cpu.data(), count);
        zw.grad_from_weight(p.data(), xi_cpu.data(), dw.data(), dp_cpu.data(), count);
        NoiseKey stale = key;
        stale.step = 0;  // the step word replaces it
        for (const auto& [grid, block] : launch_shapes((count + 3) / 4)) {
          INFO("grid " << grid << " x " << block);
          for (const bool word : {false, true}) {
            Buf<T> w = nans<T>(count), xi = nans<T>(count);
            launch(grid, block, false, [&] {
              kn::sample_weights_kernel<T>(word ? stale : key, word ? &key.step : nullptr, bern,
                                           log_param, count, p.data(), w.data(), xi.data());
            });
            CHECK(same(xi, xi_cpu) == "");
            CHECK(same(w, w_cpu) == "");
          }
          Buf<T> dp = dp0;
          launch(grid == cuda::grid_for((count + 3) / 4) ? cuda::grid_for(count) : grid, block,
                 false, [&] {
                   kn::weight_backward_kernel<T>(count, log_param, p.data(), xi_cpu.data(),
                                                 dw.data(), dp.data());
                 });
          CHECK(same(dp, dp_cpu) == "");
        }
      }
}
