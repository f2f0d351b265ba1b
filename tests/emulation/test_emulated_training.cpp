// Emulated GPU kernels against their CPU twins (see emulation_test_support.hpp): batch norm,
// the K-sample softmax cross-entropy, and Adam.
#include "emulation_test_support.hpp"

#include "kernels/adam.cuh"
#include "kernels/batchnorm.cuh"
#include "kernels/softmax_xent.cuh"
#include "kernels/train_step.cuh"
#include "varnet/layers/batchnorm.hpp"
#include "varnet/nn/loss.hpp"
#include "varnet/nn/optimizer.hpp"

using namespace emulation_test;  // NOLINT: the shared helpers, and varnet's types through them

// ---- batchnorm.cuh: BatchNorm ----

namespace {

// A BatchNorm bound to buffers of its own: params (gamma, beta), grads, state (running mean,
// running variance), with the values the case needs.
template <class T>
struct BoundBatchNorm {
  BatchNorm<T> layer;
  Buf<T> params, grads, state;
  explicit BoundBatchNorm(int64_t c) : layer(c, 0.1, 1e-5) {
    ParamTable t;
    layer.declare(t);
    params = random_values<T>(t.trainable_size(), 60, 0.5, 1.5);  // gamma, then beta
    grads = random_values<T>(t.trainable_size(), 61);
    state = random_values<T>(t.state_size(), 62, 0.2, 1.2);  // running mean, running var > 0
    layer.bind(params.data(), grads.data(), state.data());
  }
};

template <class T>
void batch_norm_case(const Shape& in, bool training, bool batch_stats_in_eval,
                     unsigned stats_grid) {
  const int64_t C = in.c, total = in.numel();
  const bool batch = training || batch_stats_in_eval;
  INFO(type_name<T>() << " batch norm " << in << (training ? ", training" : ", evaluation")
                      << (batch ? ", batch statistics" : ", running statistics") << ", stats grid "
                      << stats_grid);
  BoundBatchNorm<T> cpu(C);
  const Buf<T> x = random_values<T>(total, 63, -1, 3), dy = random_values<T>(total, 64);
  const Context ctx = training ? Context::train(1, 2)
                               : Context::eval(1, PredictMode::sample, 0, batch_stats_in_eval);
  const Buf<T> params0 = cpu.params, grads0 = cpu.grads, state0 = cpu.state;
  Buf<T> scratch(static_cast<size_t>(cpu.layer.scratch_size(in))),
      y_cpu(static_cast<size_t>(total)), dx_cpu(static_cast<size_t>(total));
  cpu.layer.forward(ConstView<T>(x.data(), in), TensorView<T>(y_cpu.data(), in), scratch.data(),
                    ctx);
  const Buf<T> used_mean_cpu(scratch.begin(), scratch.begin() + C);
  const Buf<T> inv_std_cpu(scratch.begin() + C, scratch.begin() + 2 * C);
  cpu.layer.backward(ConstView<T>(x.data(), in), ConstView<T>(y_cpu.data(), in),
                     ConstView<T>(dy.data(), in), TensorView<T>(dx_cpu.data(), in), scratch.data(),
                     ctx);

  // Forward: moments (grid (chunks, C)), per-channel statistics, apply.
  kn::BatchNormShape s;  // as cuda::batch_norm_shape
  s.n = in.n;
  s.c = C;
  s.p = in.plane();
  Buf<T> state = state0, used_mean = nans<T>(C), inv_std = nans<T>(C), y = nans<T>(total);
  std::vector<double> partial(static_cast<size_t>(3 * C * s.chunks()), std::nan(""));
  kn::BatchNormForwardArgs<T> a;
  a.gamma = params0.data();
  a.beta = params0.data() + C;
  a.running_mean = state.data();
  a.running_var = state.data() + C;
  a.batch = batch;
  a.update_running = training;
  a.momentum = T(0.1);
  a.eps = T(1e-5);
  a.used_mean = used_mean.data();
  a.inv_std = inv_std.data();
  a.partial = partial.data();
  if (batch)
    launch(dim3(unsigned(s.chunks()), unsigned(C)), kn::kBatchNormThreads, true,
           [&] { kn::batch_norm_moments_kernel<T, int32_t>(x.data(), s, partial.data()); });
  launch(stats_grid, kn::kBatchNormThreads, true, [&] { kn::batch_norm_stats_kernel<T>(s, a); });
  // The elementwise kernels run with every launch shape; each shape's result is compared.
  const auto apply = [&](const T* mean, const T* is, bool relu) {
    Buf<T> first;
    for (const auto& [grid, block] : launch_shapes(total)) {
      Buf<T> out = nans<T>(total);
      launch(grid, block, false, [&] {
        kn::batch_norm_apply_kernel<T, int32_t>(x.data(), s, a.gamma, a.beta, mean, is, relu,
                                                out.data());
      });
      if (first.empty()) first = out;
      INFO("apply grid " << grid << " x " << block);
      CHECK(same(out, first) == "");  // the launch shape changes nothing
    }
    return first;
  };
  y = apply(used_mean.data(), inv_std.data(), false);
  if (batch) {
    // Chan's merge of double moments against the CPU's sums in T (Eigen, run by run): the
    // statistics agree to the CPU sums' rounding, of order sqrt(L) eps for L values per channel
    // (measured: about 1 eps for the statistics, 6 eps of y's scale, at L = 1,083 in float).
    const double rel = 4 * kEps<T> * std::sqrt(double(s.count()));
    check_close<T>(used_mean, used_mean_cpu, rel, rel, "used mean");
    check_close<T>(inv_std, inv_std_cpu, rel, 0, "inv std");
    check_close<T>(state, cpu.state, rel, rel, "running statistics");
    check_close<T>(y, y_cpu, rel, rel * max_abs(y_cpu), "y");
  } else {
    CHECK(same(used_mean, used_mean_cpu) == "");  // the running estimates, unchanged
    CHECK(same(inv_std, inv_std_cpu) == "");
    CHECK(same(state, state0) == "");
    CHECK(same(y, y_cpu) == "");
  }
  // The apply kernel alone, from the CPU's statistics: the CPU's operations, bit for bit; and
  // with the ReLU fused.
  Buf<T> relu_want = y_cpu;
  for (auto& v : relu_want) v = v > T(0) ? v : T(0);
  const Buf<T> y_exact = apply(used_mean_cpu.data(), inv_std_cpu.data(), false);
  const Buf<T> y_relu = apply(used_mean_cpu.data(), inv_std_cpu.data(), true);
  CHECK(same(y_exact, y_cpu) == "");
  CHECK(same(y_relu, relu_want) == "");

  // Backward from the CPU's statistics: chunk sums, per-channel sums, input gradient.
  Buf<T> grads = grads0, mean_dy = nans<T>(C), proj = nans<T>(C);
  std::vector<double> gpartial(static_cast<size_t>(2 * C * s.chunks()), std::nan(""));
  kn::BatchNormBackwardArgs<T> b;
  b.gamma = params0.data();
  b.used_mean = used_mean_cpu.data();
  b.inv_std = inv_std_cpu.data();
  b.batch = batch;
  b.dgamma = grads.data();
  b.dbeta = grads.data() + C;
  b.partial = gpartial.data();
  b.mean_dy = mean_dy.data();
  b.proj = proj.data();
  launch(dim3(unsigned(s.chunks()), unsigned(C)), kn::kBatchNormThreads, true,
         [&] { kn::batch_norm_grad_sums_kernel<T, int32_t>(x.data(), dy.data(), s, b); });
  launch(stats_grid, kn::kBatchNormThreads, true,
         [&] { kn::batch_norm_grad_stats_kernel<T>(s, b); });
  Buf<T> dx;
  for (const auto& [grid, block] : launch_shapes(total)) {
    Buf<T> out = nans<T>(total);
    launch(grid, block, false, [&] {
      kn::batch_norm_grad_apply_kernel<T, int32_t>(x.data(), dy.data(), s, b, out.data());
    });
    if (dx.empty()) dx = out;
    INFO("grad apply grid " << grid << " x " << block);
    CHECK(same(out, dx) == "");  // the launch shape changes nothing
  }
  // Sums of L terms in double against the CPU's in T, as the statistics above: of order
  // sqrt(L) eps of the largest sum.
  const double rel = 4 * kEps<T> * std::sqrt(double(s.count()));
  check_close<T>(grads, cpu.grads, rel, rel * max_abs(cpu.grads), "dgamma, dbeta");
  if (batch)  // mean_dy and proj rounded from different sums
    check_close<T>(dx, dx_cpu, rel, rel * max_abs(dx_cpu), "dx");
  else  // both 0: the CPU's operations, bit for bit
    CHECK(same(dx, dx_cpu) == "");

  // The fused ReLU's backward: dy counts only where the forward output was > 0 (running
  // statistics, so that dx is exact: CPU BatchNorm backward from the masked dy).
  if (!batch) {
    Buf<T> masked = dy, dx_relu_cpu(static_cast<size_t>(total)), scratch2 = scratch;
    for (int64_t i = 0; i < total; ++i)
      if (!(relu_want[size_t(i)] > T(0))) masked[size_t(i)] = T(0);
    BoundBatchNorm<T> cpu2(C);
    cpu2.params = params0;
    cpu2.state = state0;
    cpu2.grads = grads0;
    cpu2.layer.bind(cpu2.params.data(), cpu2.grads.data(), cpu2.state.data());
    cpu2.layer.backward(ConstView<T>(x.data(), in), ConstView<T>(relu_want.data(), in),
                        ConstView<T>(masked.data(), in), TensorView<T>(dx_relu_cpu.data(), in),
                        scratch2.data(), ctx);
    Buf<T> dx_relu = nans<T>(total);
    b.relu_y = relu_want.data();
    launch(cuda::grid_for(total), cuda::kThreads, false, [&] {
      kn::batch_norm_grad_apply_kernel<T, int32_t>(x.data(), dy.data(), s, b, dx_relu.data());
    });
    CHECK(same(dx_relu, dx_relu_cpu) == "");
  }
}

}  // namespace

TEMPLATE_TEST_CASE("emulated batch norm kernels match BatchNorm (batch and running statistics)",
                   "[emulation]", float, double) {
  using T = TestType;
  // (3, 2, 19, 19): 1,083 values per channel, two chunks of kBatchNormChunk; (1, 3, 5, 7): a
  // batch of 1; (6, 3, 1, 1): dense, the CPU's forward_dense path. Stats grids of C blocks (the
  // launcher's) and of 1 (a block loops over the channels, reusing its shared arrays).
  for (const Shape& in : {Shape(3, 2, 19, 19), Shape(1, 3, 5, 7), Shape(6, 3, 1, 1)}) {
    batch_norm_case<T>(in, true, false, unsigned(in.c));
    batch_norm_case<T>(in, false, false, unsigned(in.c));
  }
  batch_norm_case<T>(Shape(1, 3, 5, 7), true, false, 1);
  batch_norm_case<T>(Shape(1, 3, 5, 7), false, true, 2);  // batch statistics in evaluation
}

// ---- softmax_xent.cuh: cross_entropy ----

TEMPLATE_TEST_CASE("emulated K-sample softmax cross-entropy matches cross_entropy", "[emulation]",
                   float, double) {
  using T = TestType;
  struct S {
    int64_t n, c;
  };
  for (const int samples : {1, 3})
    for (const S sh : {S{1, 2}, S{7, 10}, S{33, 37}}) {
      const int64_t n = sh.n, c = sh.c, nc = n * c;
      INFO(type_name<T>() << ", K " << samples << ", N " << n << ", C " << c);
      Buf<T> logits = random_values<T>(samples * nc, 70, -4, 4);
      std::vector<int32_t> labels(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) labels[size_t(i)] = int32_t((i * 7 + 3) % c);
      // Row 0 ties every class in every sample. The prediction must be the first of the tied
      // classes, as on the CPU: with label 0 the row counts as correct only then.
      for (int k = 0; k < samples; ++k) std::fill_n(logits.data() + k * nc, c, T(0));
      labels[0] = 0;
      std::vector<ConstView<T>> views;
      Buf<T> d_cpu(static_cast<size_t>(samples * nc));
      std::vector<TensorView<T>> dviews;
      for (int k = 0; k < samples; ++k) {
        views.emplace_back(logits.data() + k * nc, Shape(n, c));
        dviews.emplace_back(d_cpu.data() + k * nc, Shape(n, c));
      }
      const LossResult want = cross_entropy(views, labels.data(), &dviews);
      for (const auto& [grid, block] : std::vector<std::pair<unsigned, unsigned>>{
               {cuda::grid_for(n, 128), 128}, {1, 5}, {2, 3}}) {
        INFO("grid " << grid << " x " << block);
        Buf<T> d = nans<T>(samples * nc), loss = nans<T>(n);
        std::vector<int32_t> correct(static_cast<size_t>(n), 7);
        launch(grid, block, false, [&] {
          kn::softmax_xent_forward_kernel<T>(samples, n, c, logits.data(), labels.data(), d.data(),
                                             loss.data(), correct.data());
        });
        // The CPU's formulas in the CPU's order: the loss as cuda::softmax_xent_result sums it,
        // the count and the gradient bit for bit.
        double sum = 0;
        int64_t right = 0;
        for (int64_t i = 0; i < n; ++i) {
          sum += double(loss[size_t(i)]);
          right += correct[size_t(i)];
        }
        CHECK(sum / double(n) == want.loss);
        CHECK(right == want.correct);
        CHECK(same(d, d_cpu) == "");
      }
      // A label outside [0, C): NaN loss and -1 for that row, the others unchanged.
      std::vector<int32_t> bad = labels;
      bad[0] = int32_t(c);
      Buf<T> loss = nans<T>(n);
      std::vector<int32_t> correct(static_cast<size_t>(n), 7);
      launch(1, 32, false, [&] {
        kn::softmax_xent_forward_kernel<T>(samples, n, c, logits.data(), bad.data(), nullptr,
                                           loss.data(), correct.data());
      });
      CHECK(std::isnan(loss[0]));
      CHECK(correct[0] == -1);
    }
}

// ---- adam.cuh and train_step.cuh's scheduled Adam: varnet::Adam ----

namespace {

// One Adam step as adam.cuh's header writes it, element by element with correctly rounded
// operations (scale: the per-parameter learning-rate scale, or null).
template <class T>
void adam_reference(const kn::AdamScalars<T>& a, const T* scale, const Buf<T>& g, Buf<T>& p,
                    Buf<T>& m, Buf<T>& v) {
  for (size_t k = 0; k < p.size(); ++k) {
    m[k] = a.b1 * m[k] + a.one_minus_b1 * g[k];
    v[k] = a.b2 * v[k] + a.one_minus_b2 * (g[k] * g[k]);
    const T num = scale ? (a.step * scale[k]) * m[k] : a.step * m[k];
    p[k] = p[k] - num / (std::sqrt(v[k] / a.c2) + a.eps);
  }
}

// varnet::Adam takes a correctly rounded sqrt (not Eigen's vectorised estimate) and the same
// operations in the same order, so in this file (-ffp-contract=off on both sides) its steps are
// the kernels' bit for bit. A CPU build that lets the compiler fuse multiply-adds may differ by
// an ulp; the [cuda] trainer tests allow for that.
template <class T>
void check_adam_close(const Buf<T>& p, const Buf<T>& p_cpu) {
  CHECK(same(p, p_cpu) == "");
}

}  // namespace

TEMPLATE_TEST_CASE("emulated Adam kernels take varnet::Adam's steps", "[emulation]", float,
                   double) {
  using T = TestType;
  AdamOptions opt;
  opt.beta1 = 0.8;
  opt.beta2 = 0.99;
  for (const int64_t count : {int64_t(1), int64_t(7), int64_t(1001)}) {
    INFO(type_name<T>() << ", count " << count);
    // adam_update_kernel with the scalars cuda::Adam computes on the host.
    for (const auto& [grid, block] : launch_shapes(count)) {
      INFO("grid " << grid << " x " << block);
      Adam<T> cpu(static_cast<size_t>(count), opt);
      Buf<T> p_cpu = random_values<T>(count, 80), p = p_cpu, p_ref = p_cpu;
      Buf<T> m(static_cast<size_t>(count), T(0)), v = m, m_ref = m, v_ref = m;
      for (int t = 1; t <= 4; ++t) {
        const Buf<T> g = random_values<T>(count, 80 + uint32_t(t));
        const double lr = 1e-2 / t;
        cpu.step(p_cpu, g, lr);
        const auto a = kn::adam_scalars<T>(opt.beta1, opt.beta2, opt.eps, t, lr);  // cuda::Adam's
        adam_reference<T>(a, nullptr, g, p_ref, m_ref, v_ref);
        launch(grid, block, false, [&] {
          kn::adam_update_kernel<T>(count, a, p.data(), g.data(), m.data(), v.data());
        });
        INFO("step " << t);
        CHECK(same(p, p_ref) == "");
        CHECK(same(m, m_ref) == "");
        CHECK(same(v, v_ref) == "");
        check_adam_close<T>(p, p_cpu);
      }
    }
    // adam_scheduled_kernel: the scalars from the device step word (LinearDecay, bias
    // corrections, computed by thread 0 into shared memory), per-parameter scales, the
    // non-finite flag. Threaded: the launcher's shape, and 2 blocks of 64.
    for (const auto& [grid, block] : std::vector<std::pair<unsigned, unsigned>>{
             {cuda::grid_for(count), unsigned(cuda::kThreads)}, {2, 64}}) {
      INFO("scheduled, grid " << grid << " x " << block);
      for (const bool scales : {false, true}) {
        INFO("scales " << scales);
        Adam<T> cpu(static_cast<size_t>(count), opt);
        Buf<T> lr_scale(static_cast<size_t>(count), T(1));
        if (scales) {
          const int64_t first = count / 3;
          cpu.set_lr_scale(first, count - first, 10.0);
          std::fill(lr_scale.begin() + first, lr_scale.end(), T(10));
        }
        kn::AdamSchedule sched;
        sched.lr_base = 3e-3;
        sched.lr_total = 5;
        sched.beta1 = opt.beta1;
        sched.beta2 = opt.beta2;
        sched.eps = opt.eps;
        const LinearDecay decay{sched.lr_base, sched.lr_total};
        Buf<T> p_cpu = random_values<T>(count, 90), p = p_cpu, p_ref = p_cpu;
        Buf<T> m(static_cast<size_t>(count), T(0)), v = m, m_ref = m, v_ref = m;
        int32_t nonfinite = 0;
        for (uint32_t step = 0; step < 3; ++step) {
          const Buf<T> g = random_values<T>(count, 90 + step);
          const double lr = decay.at(step);
          cpu.step(p_cpu, g, lr);
          // varnet::Adam's scalars at t = step + 1
          const auto a = kn::adam_scalars<T>(opt.beta1, opt.beta2, opt.eps, step + 1, lr);
          adam_reference<T>(a, scales ? lr_scale.data() : nullptr, g, p_ref, m_ref, v_ref);
          launch(grid, block, true, [&] {
            kn::adam_scheduled_kernel<T>(count, sched, &step, p.data(), g.data(), m.data(),
                                         v.data(), scales ? lr_scale.data() : nullptr, &nonfinite);
          });
          INFO("step " << step);
          CHECK(same(p, p_ref) == "");
          CHECK(same(m, m_ref) == "");
          CHECK(same(v, v_ref) == "");
          check_adam_close<T>(p, p_cpu);
        }
        CHECK(nonfinite == 0);
        Buf<T> g(static_cast<size_t>(count), T(0.5));
        g[static_cast<size_t>(count - 1)] = std::numeric_limits<T>::infinity();
        const uint32_t step = 3;
        launch(grid, block, true, [&] {
          kn::adam_scheduled_kernel<T>(count, sched, &step, p.data(), g.data(), m.data(), v.data(),
                                       nullptr, &nonfinite);
        });
        CHECK(nonfinite == 1);
      }
    }
  }
}
