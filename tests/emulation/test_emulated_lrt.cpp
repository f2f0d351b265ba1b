// Emulated GPU kernels against their CPU twins (see emulation_test_support.hpp): the local
// reparameterisation trick and the weight posteriors with their KL.
#include "emulation_test_support.hpp"

#include "kernels/lrt.cuh"
#include "kernels/posteriors.cuh"
#include "varnet/layers/weight_posteriors.hpp"
#include "varnet/ops/lrt.hpp"

using namespace emulation_test;  // NOLINT: the shared helpers, and varnet's types through them

// ---- lrt.cuh: ops/lrt.hpp ----

namespace {

// One LRT case: forward on v given as `parts` partial sums, backward out of place and in place,
// for the launcher's grid and two smaller ones. mean_kind: 0 none, 1 bias, 2 add_to_y.
template <class T>
void lrt_case(int64_t n, int64_t o, int64_t p, bool cm, int parts, int64_t R, int mean_kind,
              bool step_word) {
  INFO(type_name<T>() << " LRT n " << n << ", o " << o << ", p " << p << ", channel-major " << cm
                      << ", parts " << parts << ", rows per sample " << R << ", mean " << mean_kind
                      << ", step word " << step_word);
  const ops::LrtLayout L{n, o, p, cm};
  const int64_t total = n * o * p;
  const T e0 = T(1e-8);
  const NoiseKey key{77, 4, 5, 1};
  const BatchNoise cpu_noise{key, R};
  NoiseKey kernel_key = key;
  if (step_word) kernel_key.step = 999;  // replaced by the word when the kernel runs
  const BatchNoise kernel_noise{kernel_key, R};
  const uint32_t word = key.step;
  const uint32_t* step = step_word ? &word : nullptr;

  const Buf<T> partial = random_values<T>(total * parts, uint32_t(total) + 8, 0.01, 1.0);
  Buf<T> v(static_cast<size_t>(total));
  for (int64_t k = 0; k < total; ++k) {
    T acc = partial[size_t(k)];
    for (int q = 1; q < parts; ++q) acc = acc + partial[size_t(q * total + k)];
    v[size_t(k)] = acc;
  }
  const Buf<T> bias = random_values<T>(o, 9), y0 = random_values<T>(total, 10);
  const Buf<T> g = random_values<T>(total, 11);
  const bool add_to_y = mean_kind == 2;
  const T* b = mean_kind == 1 ? bias.data() : nullptr;
  Buf<T> r = v, y_cpu = y0;
  ops::lrt_forward(cpu_noise, L, b, add_to_y, e0, r.data(), y_cpu.data());
  ops::lrt_backward(L, g.data(), r.data());  // r = dL/dv

  const kn::LrtShape s{n, o, p, cm};
  const int64_t groups = kernel_noise.groups(total, o * p);
  for (const unsigned grid : {cuda::grid_for(groups), 1u, 3u}) {
    INFO("grid " << grid);
    Buf<T> vp = partial, y = add_to_y ? y0 : nans<T>(total);
    launch(grid, cuda::kThreads, false, [&] {
      kn::lrt_forward_kernel<T>(kernel_noise, step, s, b, add_to_y, e0, vp.data(), parts, total,
                                y.data());
    });
    // Not bit for bit: the CPU draws its normals in AVX2 where it has it (ops/normal_avx2.hpp,
    // an ulp or two of float from the scalar normal_at the kernels call, in double as well: the
    // noise is float in both), and takes sqrt(u) as u / sqrt(u) (float: an rsqrt estimate, a
    // Newton step and fused multiply-adds). So a few float ulps of y's scale, in both types.
    const double rel = 8 * kEps<float>;
    check_close<T>(y, y_cpu, rel, rel * max_abs(y_cpu), "lrt_forward y");
    CHECK(same(vp.data(), v.data(), total) == "");  // the sum, in order, in the first part
    CHECK(same(vp.data() + total, partial.data() + total, total * (parts - 1)) == "");
    Buf<T> dv = nans<T>(total);
    launch(grid, cuda::kThreads, false, [&] {
      kn::lrt_backward_kernel<T>(kernel_noise, step, s, e0, g.data(), vp.data(), dv.data());
    });
    // eps / (2 s) here, 0.5 eps (1 / s) on the CPU (the kernel's comment): a few ulps.
    check_close<T>(dv, r, rel, rel * max_abs(r), "lrt_backward dL/dv");
    Buf<T> in_place(vp.begin(), vp.begin() + total);
    launch(grid, cuda::kThreads, false, [&] {
      kn::lrt_backward_kernel<T>(kernel_noise, step, s, e0, g.data(), in_place.data(),
                                 in_place.data());
    });
    CHECK(same(in_place, dv) == "");
  }
}

}  // namespace

TEMPLATE_TEST_CASE("emulated LRT kernels match ops::lrt_forward and lrt_backward", "[emulation]",
                   float, double) {
  using T = TestType;
  struct C {
    int64_t n, o, p;
    bool cm;
  };
  // Dense (p = 1) and channel-major conv layouts; batches of 1; sample sizes not multiples of 4,
  // so that a sample's elements start Philox groups mid-tensor when stacked.
  for (const C c : {C{1, 1, 1, false}, C{1, 7, 1, false}, C{3, 5, 1, false}, C{2, 3, 5, true},
                    C{1, 4, 9, true}, C{3, 5, 7, true}, C{9, 33, 1, false}, C{6, 2, 3, true}})
    for (const int parts : {1, 3})
      for (const int64_t R : {int64_t(0), int64_t(1), c.n})
        for (const int mean : {0, 1, 2}) lrt_case<T>(c.n, c.o, c.p, c.cm, parts, R, mean, false);
  lrt_case<T>(6, 3, 5, true, 2, 3, 2, true);  // stacked samples of 3 rows, with the step word
  lrt_case<T>(6, 11, 1, false, 3, 2, 1, true);
  lrt_case<T>(300, 37, 1, false, 10, 0, 2, false);  // 2775 groups: the launcher's grid is 11

  // dx = dx_mean + t (2 x), with and without the mean path, and in place over t.
  const int64_t count = 1003;
  const Buf<T> x = random_values<T>(count, 20), t = random_values<T>(count, 21);
  const Buf<T> dxm = random_values<T>(count, 22);
  for (const bool mean : {false, true}) {
    Buf<T> want(static_cast<size_t>(count));
    for (int64_t k = 0; k < count; ++k) {
      const T from_var = t[size_t(k)] * (T(2) * x[size_t(k)]);
      want[size_t(k)] = mean ? dxm[size_t(k)] + from_var : from_var;
    }
    for (const auto& [grid, block] : launch_shapes(count)) {
      INFO("lrt_input_backward, mean path " << mean << ", grid " << grid << " x " << block);
      Buf<T> dx = t;  // dx aliases t
      launch(grid, block, false, [&] {
        kn::lrt_input_backward_kernel<T>(count, x.data(), dx.data(), mean ? dxm.data() : nullptr,
                                         dx.data());
      });
      CHECK(same(dx, want) == "");
    }
  }
}

// ---- posteriors.cuh: layers/weight_posteriors.hpp and layers/kl.hpp ----

namespace {

// cuda::posterior_blocks: the grid of the reducing posterior kernels.
unsigned posterior_blocks(int64_t n) {
  const int64_t b = (n + kn::kPosteriorThreads - 1) / kn::kPosteriorThreads;
  return static_cast<unsigned>(std::clamp<int64_t>(b, 1, kn::kPosteriorMaxBlocks));
}

template <class T, class Post>
kn::PosteriorSpec spec_of(const Post& post) {  // as cuda/baseline_ops.hpp builds it
  kn::PosteriorSpec s;
  if constexpr (std::is_same_v<Post, GaussianDropoutPosterior<T>>) {
    s.kind = kn::PosteriorKind::gaussian_dropout;
    s.alpha = post.opt.alpha;
  } else if constexpr (std::is_same_v<Post, VariationalDropoutPosterior<T>>) {
    s.kind = kn::PosteriorKind::variational_dropout;
    s.log_alpha_min = Post::kLogAlphaMin;
    s.log_alpha_max = Post::kLogAlphaMax;
  } else {
    s.kind = kn::PosteriorKind::sparse_vd;
    s.log_alpha_min = Post::kLogAlphaMin;
    s.log_alpha_max = Post::kLogAlphaMax;
    s.tiny = Post::kTiny;
    s.threshold = post.opt.threshold;
    s.prune = post.opt.prune;
  }
  return s;
}

// aux_value: variational dropout's log alpha (inside, on and beyond its clamp); sparse VD draws
// log sigma2 per weight so that log alpha spans both clamps and the threshold. with_kl: also the
// KL and its gradient (threaded reductions: kept to a few cases).
template <class T, class Post>
void posterior_case(int64_t n, double aux_value, bool prune, bool with_kl) {
  DropoutOptions opt;
  opt.alpha = 0.6;
  opt.threshold = 3;
  opt.prune = prune;
  const Post post{opt};
  const kn::PosteriorSpec spec = spec_of<T>(post);
  const bool svd = spec.kind == kn::PosteriorKind::sparse_vd;
  const bool vd = spec.kind == kn::PosteriorKind::variational_dropout;
  INFO(type_name<T>() << " " << Post::family() << ", n " << n << ", aux " << aux_value << ", prune "
                      << prune);
  Buf<T> theta = random_values<T>(n, uint32_t(n), -0.3, 0.3);
  for (int64_t i = 0; i < n; i += 11) theta[size_t(i)] = T(0);
  const int64_t naux = svd ? n : (vd ? 1 : 0);
  const Buf<T> aux = svd ? random_values<T>(n, uint32_t(n) + 1, -14, 2)
                         : Buf<T>(static_cast<size_t>(naux), T(aux_value));
  const Buf<T> ds2 = random_values<T>(n, 2), dw = random_values<T>(n, 3);
  const Buf<T> g0 = random_values<T>(n, 4), ga0 = random_values<T>(naux, 5);
  PosteriorView<T> cv;
  cv.theta = theta.data();
  cv.aux = naux ? aux.data() : nullptr;
  cv.n = n;
  kn::PosteriorArgs<T> args;
  args.spec = spec;
  args.theta = theta.data();
  args.aux = cv.aux;
  args.n = n;

  Buf<T> s2_cpu(static_cast<size_t>(n)), w_cpu(static_cast<size_t>(n));
  post.variance(cv, s2_cpu.data());
  post.mean_weights(cv, w_cpu.data());
  Buf<T> dth_var = g0, da_var = ga0, dth_mean = g0;
  {
    PosteriorView<T> v = cv;
    v.dtheta = dth_var.data();
    v.daux = naux ? da_var.data() : nullptr;
    post.grad_from_variance(v, s2_cpu.data(), ds2.data());
    v.dtheta = dth_mean.data();
    post.grad_from_mean_weights(v, dw.data());
  }

  // The elementwise maps: bit for bit (the CPU's operations in its order; both sides call the
  // host's exp and log here).
  for (const auto& [grid, block] : launch_shapes(n)) {
    INFO("grid " << grid << " x " << block);
    Buf<T> s2 = nans<T>(n), w = nans<T>(n), dth_m = g0;
    launch(grid, block, false, [&] { kn::posterior_variance_kernel<T>(args, s2.data()); });
    launch(grid, block, false, [&] { kn::posterior_mean_weights_kernel<T>(args, w.data()); });
    kn::PosteriorArgs<T> q = args;
    q.dtheta = dth_m.data();
    launch(grid, block, false,
           [&] { kn::posterior_grad_from_mean_weights_kernel<T>(q, dw.data()); });
    CHECK(same(s2, s2_cpu) == "");
    CHECK(same(w, w_cpu) == "");
    CHECK(same(dth_m, dth_mean) == "");
    if (!vd) {  // no reduction: any launch shape
      Buf<T> dth = g0, da = ga0;
      q.dtheta = dth.data();
      q.daux = naux ? da.data() : nullptr;
      launch(grid, block, false, [&] {
        kn::posterior_grad_from_variance_kernel<T>(q, s2_cpu.data(), ds2.data(), nullptr);
      });
      CHECK(same(dth, dth_var) == "");
      CHECK(same(da, da_var) == "");
    }
  }

  // The reductions, threaded: the launcher's grid (posterior_blocks) and grids of 1 and 3 blocks.
  // The CPU sums in double one weight after another, the kernels in a tree per block, then over
  // the blocks: the sums agree to summation order (relative 1e-12 in double), and their T
  // roundings then to an ulp of T.
  const double kl_rel = 1e-12, grad_rel = std::max(2 * kEps<T>, 1e-12);
  const T scale = T(1.7);
  for (const unsigned grid : {posterior_blocks(n), 1u, 3u}) {
    if (grid == 1 && posterior_blocks(n) == 1) continue;  // the launcher's grid already
    INFO("reduction grid " << grid);
    if (vd) {
      Buf<T> dth = g0, da = ga0;
      kn::PosteriorArgs<T> q = args;
      q.dtheta = dth.data();
      q.daux = da.data();
      std::vector<double> partial(kn::kPosteriorMaxBlocks, std::nan(""));
      launch(grid, kn::kPosteriorThreads, true, [&] {
        kn::posterior_grad_from_variance_kernel<T>(q, s2_cpu.data(), ds2.data(), partial.data());
      });
      launch(1, kn::kPosteriorThreads, true,
             [&] { kn::posterior_log_alpha_grad_kernel<T>(q, partial.data(), int(grid)); });
      CHECK(same(dth, dth_var) == "");
      check_close<T>(da, da_var, grad_rel, 0, "d log alpha");
    }
    if (!with_kl) continue;
    for (const bool with_scale : {true, false}) {
      INFO("KL " << (with_scale ? "and its gradient" : "alone"));
      Buf<T> dth_cpu = g0, da_cpu = ga0, dth = g0, da = ga0;
      PosteriorView<T> v = cv;
      v.dtheta = dth_cpu.data();
      v.daux = da_cpu.data();
      const double want = with_scale ? post.add_kl_gradient(v, scale) : post.kl(cv);
      kn::PosteriorArgs<T> q = args;
      q.dtheta = dth.data();
      q.daux = da.data();
      const T* sc = with_scale ? &scale : nullptr;
      double kl_sum = 0.25;  // the kernels add to it
      if (vd) {
        launch(1, 1, false, [&] { kn::variational_dropout_kl_kernel<T>(q, sc, &kl_sum); });
      } else {
        std::vector<double> partial(kn::kPosteriorMaxBlocks, std::nan(""));
        launch(grid, kn::kPosteriorThreads, true,
               [&] { kn::sparse_vd_kl_kernel<T>(q, sc, partial.data()); });
        launch(1, kn::kPosteriorThreads, true,
               [&] { kn::posterior_sum_kernel<T>(partial.data(), int(grid), &kl_sum); });
      }
      const double got = kl_sum - 0.25;
      INFO("KL " << got << " (kernels) vs " << want << " (CPU)");
      CHECK(std::fabs(got - want) <= kl_rel * std::fabs(want) + 1e-12);
      CHECK(same(dth, dth_cpu) == "");  // elementwise: bit for bit
      CHECK(same(da, da_cpu) == "");
    }
  }
}

}  // namespace

TEMPLATE_TEST_CASE("emulated posterior kernels match the dropout posteriors and their KL",
                   "[emulation]", float, double) {
  using T = TestType;
  for (const int64_t n : {int64_t(1), int64_t(7), int64_t(257), int64_t(1001)}) {
    const bool kl = n != 7;  // the reductions, threaded, on the other sizes only
    posterior_case<T, GaussianDropoutPosterior<T>>(n, 0, false, false);
    // log alpha inside the clamp, beyond it (clamped: no gradient), on it (no gradient either)
    // and just inside it.
    for (const double la : {-1.3, 25.0, -20.0, 19.999})
      posterior_case<T, VariationalDropoutPosterior<T>>(n, la, false,
                                                        kl && (la == -1.3 || la == 25.0));
    posterior_case<T, SparseVDPosterior<T>>(n, 0, true, kl);
    posterior_case<T, SparseVDPosterior<T>>(n, 0, false, false);
  }
}
