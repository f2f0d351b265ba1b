// Emulated GPU kernels against their CPU twins (see emulation_test_support.hpp): im2col and
// col2im, max pooling, and the Winograd convolution.
#include "emulation_test_support.hpp"

#include "kernels/im2col.cuh"
#include "kernels/pool.cuh"
#include "kernels/winograd.cuh"
#include "varnet/layers/pooling.hpp"
#include "varnet/ops/conv.hpp"
#include "varnet/ops/winograd_conv.hpp"

using namespace emulation_test;  // NOLINT: the shared helpers, and varnet's types through them

// ---- im2col.cuh: ops::im2col and ops::col2im ----

using varnet::cuda::detail::grid_2d;

TEMPLATE_TEST_CASE("emulated im2col and col2im match ops::im2col and ops::col2im", "[emulation]",
                   float, double) {
  using T = TestType;
  // (C, H, W, kernel, stride, pad): square and rectangular, strides 1-3, padding up to k - 1.
  struct G {
    int64_t c, h, w, k, stride, pad;
  };
  for (const G q : {G{1, 5, 5, 3, 1, 0}, G{2, 7, 6, 3, 2, 1}, G{3, 5, 4, 2, 1, 1},
                    G{2, 6, 7, 3, 3, 2}, G{1, 4, 9, 5, 1, 2}, G{2, 9, 9, 1, 2, 0}})
    for (const int64_t n : {int64_t(1), int64_t(3)}) {
      const ops::ConvGeometry g{q.c, q.h, q.w, 4, q.k, q.k, q.stride, q.pad};
      const kn::ConvShape s = kn::make_conv_shape(g);
      const int64_t P = g.plane(), R = g.rows(), cols_size = R * n * P,
                    x_size = n * q.c * q.h * q.w;
      INFO(type_name<T>() << ", n " << n << ", C " << q.c << ", " << q.h << "x" << q.w
                          << ", kernel " << q.k << ", stride " << q.stride << ", pad " << q.pad);
      const Buf<T> x = random_values<T>(x_size, 40), dcols = random_values<T>(cols_size, 41);
      Buf<T> cols_cpu(static_cast<size_t>(cols_size)), sq_cpu(static_cast<size_t>(cols_size)),
          dx_cpu(static_cast<size_t>(x_size));
      ops::im2col(x.data(), n, g, cols_cpu.data());
      for (int64_t i = 0; i < cols_size; ++i)
        sq_cpu[size_t(i)] = cols_cpu[size_t(i)] * cols_cpu[size_t(i)];
      ops::col2im(dcols.data(), n, g, dx_cpu.data());
      Buf<T> dx2_cpu(static_cast<size_t>(x_size));  // the variance path: 2 x * col2im(dcols)
      for (int64_t i = 0; i < x_size; ++i)
        dx2_cpu[size_t(i)] = dx_cpu[size_t(i)] * (T(2) * x[size_t(i)]);

      for (const dim3 grid : {grid_2d(n * P, R), dim3(1, 1), dim3(2, 3)}) {
        INFO("im2col grid " << grid.x << " x " << grid.y);
        Buf<T> cols = nans<T>(cols_size), sq = nans<T>(cols_size);
        launch(grid, cuda::kThreads, false, [&] {
          kn::im2col_forward_kernel<T, int32_t>(x.data(), int32_t(n), s, cols.data(), sq.data());
        });
        CHECK(same(cols, cols_cpu) == "");
        CHECK(same(sq, sq_cpu) == "");
        Buf<T> sq_only = nans<T>(cols_size);
        launch(grid, 33, false, [&] {
          kn::im2col_forward_kernel<T, int64_t>(x.data(), n, s, nullptr, sq_only.data());
        });
        CHECK(same(sq_only, sq_cpu) == "");
      }
      for (const dim3 grid : {grid_2d(q.h * q.w, n * q.c), dim3(1, 1), dim3(2, 2)}) {
        INFO("col2im grid " << grid.x << " x " << grid.y);
        for (const bool times_2x : {false, true}) {
          const T* x2 = times_2x ? x.data() : nullptr;
          const Buf<T>& want = times_2x ? dx2_cpu : dx_cpu;
          Buf<T> a = nans<T>(x_size), b = nans<T>(x_size);
          if (q.stride == 1)  // the launcher's unit-stride kernel
            launch(grid, cuda::kThreads, false, [&] {
              kn::im2col_backward_kernel<T, int32_t, true>(dcols.data(), int32_t(n), s, x2,
                                                           a.data());
            });
          else
            launch(grid, cuda::kThreads, false, [&] {
              kn::im2col_backward_kernel<T, int32_t, false>(dcols.data(), int32_t(n), s, x2,
                                                            a.data());
            });
          launch(grid, 33, false, [&] {
            kn::im2col_backward_kernel<T, int64_t, false>(dcols.data(), n, s, x2, b.data());
          });
          CHECK(same(a, want) == "");  // the CPU's (kh, kw) order: bit for bit
          CHECK(same(b, want) == "");
        }
      }
    }
}

// ---- pool.cuh: MaxPool2d ----

TEMPLATE_TEST_CASE("emulated max pooling matches MaxPool2d, overlapping windows and ties",
                   "[emulation]", float, double) {
  using T = TestType;
  struct P {
    Shape in;
    int64_t k, stride;
  };
  for (const P q :
       {P{Shape(1, 1, 5, 5), 2, 2}, P{Shape(2, 3, 8, 6), 2, 2}, P{Shape(2, 3, 7, 6), 3, 2},
        P{Shape(1, 2, 7, 9), 2, 3}, P{Shape(3, 1, 5, 6), 3, 1}, P{Shape(1, 2, 4, 4), 4, 4}}) {
    MaxPool2d<T> layer(q.k, q.stride);
    const Shape out = layer.output_shape(q.in);
    INFO(type_name<T>() << ", input " << q.in << ", kernel " << q.k << ", stride " << q.stride);
    // Values on a grid of 1/4 in [-1, 1]: many ties, where the first maximum must win.
    Buf<T> x = random_values<T>(q.in.numel(), 50);
    for (auto& v : x) v = std::round(v * T(4)) / T(4);
    const Buf<T> dy = random_values<T>(out.numel(), 51);
    Buf<T> y_cpu(static_cast<size_t>(out.numel())), dx_cpu(static_cast<size_t>(q.in.numel()));
    const Context ctx;
    layer.forward(ConstView<T>(x.data(), q.in), TensorView<T>(y_cpu.data(), out), nullptr, ctx);
    layer.backward(ConstView<T>(x.data(), q.in), ConstView<T>(y_cpu.data(), out),
                   ConstView<T>(dy.data(), out), TensorView<T>(dx_cpu.data(), q.in), nullptr, ctx);
    kn::PoolShape ps;  // as cuda::pool_shape
    ps.planes = q.in.n * q.in.c;
    ps.in_h = q.in.h;
    ps.in_w = q.in.w;
    ps.out_h = out.h;
    ps.out_w = out.w;
    ps.k = q.k;
    ps.stride = q.stride;
    for (const auto& [grid, block] : launch_shapes(q.in.numel())) {
      INFO("grid " << grid << " x " << block);
      Buf<T> y = nans<T>(out.numel()), y64 = nans<T>(out.numel());
      Buf<T> dx = nans<T>(q.in.numel()), dx64 = nans<T>(q.in.numel());
      launch(grid, block, false,
             [&] { kn::max_pool_forward_kernel<T, int32_t>(x.data(), ps, y.data()); });
      launch(grid, block, false,
             [&] { kn::max_pool_forward_kernel<T, int64_t>(x.data(), ps, y64.data()); });
      launch(grid, block, false,
             [&] { kn::max_pool_backward_kernel<T, int32_t>(x.data(), dy.data(), ps, dx.data()); });
      launch(grid, block, false, [&] {
        kn::max_pool_backward_kernel<T, int64_t>(x.data(), dy.data(), ps, dx64.data());
      });
      CHECK(same(y, y_cpu) == "");
      CHECK(same(y64, y_cpu) == "");
      CHECK(same(dx, dx_cpu) == "");  // gathered in the CPU's scatter order: bit for bit
      CHECK(same(dx64, dx_cpu) == "");
    }
  }
}

// ---- winograd.cuh: ops/winograd_conv.hpp ----

namespace {

// C (m, n) = alpha A (m, k) B (k, n) + beta C, row-major with leading dimensions, `batch` times
// with strides: what cuda::gemm_strided asks of cuBLAS, as a plain loop with a double
// accumulator. op_b_t: B given as (n, k) and used transposed.
template <class T>
void host_gemm(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, int64_t sa, const T* b,
               int64_t ldb, int64_t sb, bool op_b_t, T* c, int64_t ldc, int64_t sc, int64_t batch) {
  for (int64_t q = 0; q < batch; ++q)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t r = 0; r < k; ++r)
          acc += double(a[q * sa + i * lda + r]) *
                 double(op_b_t ? b[q * sb + j * ldb + r] : b[q * sb + r * ldb + j]);
        c[q * sc + i * ldc + j] = T(acc);
      }
}

template <class T>
void winograd_case(int64_t n, int64_t C, int64_t O, int64_t H, int64_t W, int64_t pad) {
  using winograd::kPoints;
  const ops::ConvGeometry g{C, H, W, O, 3, 3, 1, pad};
  const int64_t OH = g.out_h(), OW = g.out_w();
  INFO(type_name<T>() << " Winograd n " << n << ", C " << C << ", O " << O << ", " << H << "x" << W
                      << ", pad " << pad);
  const Buf<T> x = random_values<T>(n * C * H * W, 100), w = random_values<T>(O * C * 9, 101);
  const Buf<T> bias = random_values<T>(O, 102), dy = random_values<T>(n * O * OH * OW, 103);

  // The tile grids, with padding columns beyond the tiles (which the kernels must zero).
  kn::WinogradTiles ft;
  ft.n = n;
  ft.rows = winograd::tiles(OH);
  ft.cols = winograd::tiles(OW);
  ft.ld = ft.tiles() + 3;
  const int64_t per = ft.per_sample(), tiles = ft.tiles(), ld = ft.ld;
  const ops::WinogradGrid grid(OH, OW);

  // Filters, plain and rotated with channels swapped.
  for (const bool flipped : {false, true}) {
    Buf<T> want(static_cast<size_t>(kPoints * O * C)), got = nans<T>(kPoints * O * C);
    ops::winograd_filters(w.data(), O, C, flipped, want.data());
    for (const auto& [gr, bl] : launch_shapes(O * C))
      launch(gr, bl, false,
             [&] { kn::winograd_filter_kernel<T>(w.data(), O, C, flipped, got.data()); });
    INFO("flipped " << flipped);
    CHECK(same(got, want) == "");
  }
  // Input tiles (36, C, ld), sample by sample on the CPU.
  Buf<T> v_cpu(static_cast<size_t>(kPoints * C * ld), T(0));
  for (int64_t b = 0; b < n; ++b)
    ops::winograd_inputs(x.data() + b * C * H * W, C, H, W, pad, grid, v_cpu.data() + b * per, ld);
  for (const auto& [gr, bl] : launch_shapes(C * ld)) {
    INFO("inputs grid " << gr << " x " << bl);
    Buf<T> v = nans<T>(kPoints * C * ld), v64 = nans<T>(kPoints * C * ld);
    launch(gr, bl, false, [&] {
      kn::winograd_input_kernel<T, int32_t>(x.data(), int32_t(C), int32_t(H), int32_t(W),
                                            int32_t(pad), ft, v.data());
    });
    launch(gr, bl, false,
           [&] { kn::winograd_input_kernel<T, int64_t>(x.data(), C, H, W, pad, ft, v64.data()); });
    CHECK(same(v, v_cpu) == "");
    CHECK(same(v64, v_cpu) == "");
  }
  // Output transform (+ bias) from products m (36, O, ld).
  const Buf<T> m = random_values<T>(kPoints * O * ld, 104);
  for (const T* b : {static_cast<const T*>(nullptr), bias.data()}) {
    Buf<T> want(static_cast<size_t>(n * O * OH * OW));
    for (int64_t s = 0; s < n; ++s)
      ops::winograd_outputs(m.data() + s * per, O, OH, OW, grid, ld, b,
                            want.data() + s * O * OH * OW);
    for (const auto& [gr, bl] : launch_shapes(O * tiles)) {
      INFO("outputs grid " << gr << " x " << bl << ", bias " << (b != nullptr));
      Buf<T> y = nans<T>(n * O * OH * OW);
      launch(gr, bl, false, [&] {
        kn::winograd_output_kernel<T, int32_t>(m.data(), int32_t(O), int32_t(OH), int32_t(OW), ft,
                                               b, y.data());
      });
      CHECK(same(y, want) == "");
    }
  }
  // Output-gradient transform dm (36, O, ld) from dy.
  Buf<T> dm_cpu(static_cast<size_t>(kPoints * O * ld), T(0));
  for (int64_t s = 0; s < n; ++s)
    ops::winograd_output_grads(dy.data() + s * O * OH * OW, O, OH, OW, grid,
                               dm_cpu.data() + s * per, ld);
  for (const auto& [gr, bl] : launch_shapes(O * ld)) {
    INFO("output grads grid " << gr << " x " << bl);
    Buf<T> dm = nans<T>(kPoints * O * ld);
    launch(gr, bl, false, [&] {
      kn::winograd_output_grad_kernel<T, int64_t>(dy.data(), O, OH, OW, ft, dm.data());
    });
    CHECK(same(dm, dm_cpu) == "");
  }
  // Filter gradient from S chunks of partial products (S, 36, O, C), summed in chunk order.
  for (const int chunks : {1, 3}) {
    const Buf<T> parts = random_values<T>(chunks * kPoints * O * C, 105);
    Buf<T> du(static_cast<size_t>(kPoints * O * C));
    for (int64_t i = 0; i < kPoints * O * C; ++i) {
      T sum = T(0);
      for (int q = 0; q < chunks; ++q) sum += parts[size_t(q * kPoints * O * C + i)];
      du[size_t(i)] = sum;
    }
    const Buf<T> dw0 = random_values<T>(O * C * 9, 106);
    Buf<T> want = dw0;
    ops::winograd_filter_grads(du.data(), O, C, want.data());
    for (const auto& [gr, bl] : launch_shapes(O * C)) {
      INFO("filter grads, chunks " << chunks << ", grid " << gr << " x " << bl);
      Buf<T> dw = dw0;
      launch(gr, bl, false,
             [&] { kn::winograd_filter_grad_kernel<T>(parts.data(), chunks, O, C, dw.data()); });
      CHECK(same(dw, want) == "");
    }
  }
  // The batched GEMM's pointers: chunk s of dM[xi], V[xi] and partial (s, xi).
  {
    const int chunks = 3;
    const int64_t L = (tiles + chunks - 1) / chunks, batch = int64_t(chunks) * kPoints;
    const T *dmp = m.data(), *vp = v_cpu.data();
    T* partsp = nullptr;
    Buf<T> parts(static_cast<size_t>(batch * O * C));
    partsp = parts.data();
    std::vector<const T*> pa(static_cast<size_t>(batch)), pb(static_cast<size_t>(batch));
    std::vector<T*> pc(static_cast<size_t>(batch));
    launch(cuda::grid_for(batch), 7, false, [&] {
      kn::winograd_grad_pointers_kernel<T>(dmp, vp, partsp, O, C, ld, L, chunks, pa.data(),
                                           pb.data(), pc.data());
    });
    bool ok = true;
    for (int64_t k = 0; k < batch; ++k) {
      const int64_t s = k / kPoints, xi = k % kPoints;
      ok = ok && pa[size_t(k)] == dmp + xi * O * ld + s * L &&
           pb[size_t(k)] == vp + xi * C * ld + s * L && pc[size_t(k)] == partsp + k * O * C;
    }
    CHECK(ok);
  }

  // A whole convolution, forward and backward, composed from the kernels as
  // cuda::winograd_conv_forward/backward compose them (one chunk for the weight gradient), with
  // host GEMMs for cuBLAS's, against ops::winograd_forward/backward. The GEMMs sum in another
  // order (Eigen's blocks here, double accumulators there): agreement to the reductions'
  // rounding, relative to the outputs' scale.
  {
    const int64_t OC = O * C;
    Buf<T> u = nans<T>(kPoints * OC), v = nans<T>(kPoints * C * ld),
           prod(static_cast<size_t>(kPoints * O * ld));
    Buf<T> y = nans<T>(n * O * OH * OW);
    const auto run = [](int64_t work, auto&& body) {
      launch(cuda::grid_for(work), cuda::kThreads, false, body);
    };
    run(OC, [&] { kn::winograd_filter_kernel<T>(w.data(), O, C, false, u.data()); });
    run(C * ld, [&] {
      kn::winograd_input_kernel<T, int32_t>(x.data(), int32_t(C), int32_t(H), int32_t(W),
                                            int32_t(pad), ft, v.data());
    });
    host_gemm<T>(O, ld, C, u.data(), C, OC, v.data(), ld, C * ld, false, prod.data(), ld, O * ld,
                 kPoints);
    run(O * tiles, [&] {
      kn::winograd_output_kernel<T, int32_t>(prod.data(), int32_t(O), int32_t(OH), int32_t(OW), ft,
                                             bias.data(), y.data());
    });
    Buf<T> y_cpu(static_cast<size_t>(n * O * OH * OW)),
        u_cpu(static_cast<size_t>(ops::winograd_forward_scratch(g)));
    ops::winograd_forward(x.data(), w.data(), bias.data(), y_cpu.data(), n, g, u_cpu.data());
    const double rel = std::is_same_v<T, float> ? 1e-5 : 2e-14;  // 1.5e-6 and 3e-15 measured
    check_close<T>(y, y_cpu, rel, rel * max_abs(y_cpu), "Winograd forward");

    // Weight gradient: dM, the products over all tiles (one chunk; the padding columns are zero
    // in both operands), G^T dU G.
    Buf<T> dm = nans<T>(kPoints * O * ld), du(static_cast<size_t>(kPoints * OC)),
           dw = random_values<T>(O * C * 9, 107);
    run(O * ld, [&] {
      kn::winograd_output_grad_kernel<T, int32_t>(dy.data(), int32_t(O), int32_t(OH), int32_t(OW),
                                                  ft, dm.data());
    });
    host_gemm<T>(O, C, ld, dm.data(), ld, O * ld, v.data(), ld, C * ld, true, du.data(), C, OC,
                 kPoints);
    Buf<T> dw_cpu = dw;
    run(OC, [&] { kn::winograd_filter_grad_kernel<T>(du.data(), 1, O, C, dw.data()); });
    // Input gradient: the forward algorithm on dy with the rotated filters, at pad 2 - pad, over
    // dx's own tile grid.
    kn::WinogradTiles it;
    it.n = n;
    it.rows = winograd::tiles(H);
    it.cols = winograd::tiles(W);
    it.ld = it.tiles();
    Buf<T> uf = nans<T>(kPoints * OC), vin = nans<T>(kPoints * O * it.ld),
           pin(static_cast<size_t>(kPoints * C * it.ld)), dx = nans<T>(n * C * H * W);
    run(OC, [&] { kn::winograd_filter_kernel<T>(w.data(), O, C, true, uf.data()); });
    run(O * it.ld, [&] {
      kn::winograd_input_kernel<T, int32_t>(dy.data(), int32_t(O), int32_t(OH), int32_t(OW),
                                            int32_t(2 - pad), it, vin.data());
    });
    host_gemm<T>(C, it.ld, O, uf.data(), O, OC, vin.data(), it.ld, O * it.ld, false, pin.data(),
                 it.ld, C * it.ld, kPoints);
    run(C * it.tiles(), [&] {
      kn::winograd_output_kernel<T, int32_t>(pin.data(), int32_t(C), int32_t(H), int32_t(W), it,
                                             static_cast<const T*>(nullptr), dx.data());
    });
    Buf<T> dx_cpu(static_cast<size_t>(n * C * H * W)), db_cpu(static_cast<size_t>(O), T(0));
    Buf<T> scratch(static_cast<size_t>(ops::winograd_backward_scratch(n, g)));
    ops::winograd_backward(x.data(), dy.data(), w.data(), dw_cpu.data(), db_cpu.data(),
                           dx_cpu.data(), n, g, scratch.data());
    check_close<T>(dw, dw_cpu, rel, rel * max_abs(dw_cpu), "Winograd weight gradient");
    check_close<T>(dx, dx_cpu, rel, rel * max_abs(dx_cpu), "Winograd input gradient");
  }
}

}  // namespace

TEMPLATE_TEST_CASE("emulated Winograd F(4x4, 3x3) kernels match ops/winograd_conv.hpp",
                   "[emulation]", float, double) {
  using T = TestType;
  winograd_case<T>(2, 3, 5, 7, 9, 1);   // partial tiles on both edges
  winograd_case<T>(1, 2, 3, 10, 6, 0);  // a batch of 1, no padding
  winograd_case<T>(3, 1, 2, 5, 5, 2);   // padding 2: the input gradient at pad 0
}
