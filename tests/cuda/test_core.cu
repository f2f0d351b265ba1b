// GPU core: status checks, device buffers, the row-major cuBLAS GEMM wrapper, and the Philox
// noise computed on the device against the host (and against cuRAND's own Philox4_32_10: under
// nvcc only, as the host emulation has no cuRAND device generator).
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "parity.hpp"

#if !defined(VARNET_CUDA_EMULATION)
#include <curand_kernel.h>
#endif

using varnet::NoiseKey;
using varnet::test::gpu;
namespace vc = varnet::cuda;

// ---- test kernels ----

// out[4 i + j] = word j of Philox block first + i.
__global__ void philox_words_kernel(NoiseKey key, uint64_t first, int64_t blocks, uint32_t* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= blocks) return;
  const varnet::Philox4x32::Counter w = key.block(first + uint64_t(i));
  for (int j = 0; j < 4; ++j) out[4 * i + j] = w.v[j];
}

#if !defined(VARNET_CUDA_EMULATION)
// The same words through cuRAND: curand_init(seed, subsequence, offset) sets the Philox key to
// the seed and the counter to (offset / 4 in words 0-1, subsequence in words 2-3), which is
// NoiseKey's counter for subsequence = step | (layer | stream << 16) << 32, offset = 4 block.
__global__ void curand_words_kernel(NoiseKey key, uint64_t first, int64_t blocks, uint32_t* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= blocks) return;
  const uint64_t hi = uint64_t((key.layer & 0xFFFFu) | (key.stream << 16));
  const uint64_t subsequence = uint64_t(key.step) | (hi << 32);
  curandStatePhilox4_32_10_t state;
  curand_init(key.seed, subsequence, 4 * (first + uint64_t(i)), &state);
  const uint4 w = curand4(&state);
  out[4 * i + 0] = w.x;
  out[4 * i + 1] = w.y;
  out[4 * i + 2] = w.z;
  out[4 * i + 3] = w.w;
}
#endif

// out[i] = normal_at, uniform_at, sign_at for element first + i.
__global__ void noise_kernel(NoiseKey key, uint64_t first, int64_t count, float* normal,
                             float* uniform, float* sign) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) return;
  normal[i] = varnet::normal_at(key, first + uint64_t(i));
  uniform[i] = varnet::uniform_at(key, first + uint64_t(i));
  sign[i] = varnet::sign_at(key, first + uint64_t(i));
}

__global__ void noop_kernel() {}

namespace {
const std::vector<NoiseKey> kKeys = {
    NoiseKey{0, 0, 0, 0},
    NoiseKey{0x0123456789ABCDEFull, 7, 123, 3},
    NoiseKey{42, 0xFFFF, 0xFFFFFFFFu, varnet::stream::kMax},
};
// (first block, count): the start, and a range crossing the 32-bit boundary of the block index.
const std::vector<std::pair<uint64_t, int64_t>> kRanges = {{0, 1000},
                                                           {(uint64_t(1) << 32) - 7, 20}};
}  // namespace

// ---- checks and buffers ----

TEST_CASE("status checks throw varnet::Error with the call and the status", "[cuda]") {
  void* p = nullptr;
  try {
    VARNET_CUDA_CHECK(cudaMalloc(&p, size_t(1) << 62));
    FAIL("an impossible cudaMalloc did not throw");
  } catch (const varnet::Error& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.find("cudaMalloc") != std::string::npos);
    CHECK(what.find("cudaErrorMemoryAllocation") != std::string::npos);
    CHECK(what.find("test_core.cu:") != std::string::npos);
  }
  // The failure was cleared: the next launch check does not report it again.
  vc::launch(noop_kernel, 1, 1, gpu().stream());
  CHECK_NOTHROW(VARNET_CUDA_CHECK_LAUNCH("noop_kernel"));

  vc::launch(noop_kernel, 1, 4096, gpu().stream());  // more threads per block than allowed
  CHECK_THROWS_AS(VARNET_CUDA_CHECK_LAUNCH("noop_kernel"), varnet::Error);
  vc::launch(noop_kernel, 1, 1, gpu().stream());
  CHECK_NOTHROW(VARNET_CUDA_CHECK_LAUNCH("noop_kernel"));

  float dummy = 0;
  CHECK_THROWS_AS(
      VARNET_CUBLAS_CHECK(cublasSgemm(gpu().blas(), CUBLAS_OP_N, CUBLAS_OP_N, -1, 1, 1, &dummy,
                                      nullptr, 1, nullptr, 1, &dummy, nullptr, 1)),
      varnet::Error);
  try {
    VARNET_CURAND_CHECK(CURAND_STATUS_LAUNCH_FAILURE);
    FAIL("VARNET_CURAND_CHECK did not throw");
  } catch (const varnet::Error& e) {
    CHECK(std::string(e.what()).find("CURAND_STATUS_LAUNCH_FAILURE") != std::string::npos);
  }
  CHECK_NOTHROW(gpu().synchronize());
}

TEST_CASE("DeviceBuffer round trip, reuse of capacity, moves", "[cuda]") {
  const auto host = varnet::test::random_vector<float>(1001, 1);
  vc::DeviceBuffer<float> b;
  CHECK(b.empty());
  b.upload(host, gpu().stream());
  CHECK(b.size() == host.size());
  CHECK(b.download(gpu().stream()) == host);

  const float* before = b.data();
  b.resize(10);
  CHECK(b.data() == before);  // shrinking keeps the allocation
  CHECK(b.capacity() == host.size());
  const auto head = b.download(gpu().stream());
  CHECK(std::vector<float>(host.begin(), host.begin() + 10) == head);

  vc::DeviceBuffer<float> moved = std::move(b);
  CHECK(moved.data() == before);
  CHECK(b.data() == nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty
  CHECK(b.size() == 0);
  moved.zero(gpu().stream());
  CHECK(moved.download(gpu().stream()) == std::vector<float>(10, 0.0f));

  vc::DeviceBuffer<double> big(5);
  big = vc::to_device(std::vector<double>{1, 2, 3}, gpu().stream());
  CHECK(vc::to_host(big, gpu().stream()) == std::vector<double>{1, 2, 3});
  CHECK(vc::to_host(big.data(), 2, gpu().stream()) == std::vector<double>{1, 2});
}

// ---- GEMM ----

template <class T>
void check_gemm(vc::Op opa, vc::Op opb, int64_t m, int64_t n, int64_t k, bool padded,
                bool split = false) {
  // Stored shapes (row-major): A (m, k) or (k, m); B (k, n) or (n, k); row strides padded by 3
  // when `padded`.
  const int64_t a_rows = opa == vc::Op::N ? m : k, a_cols = opa == vc::Op::N ? k : m;
  const int64_t b_rows = opb == vc::Op::N ? k : n, b_cols = opb == vc::Op::N ? n : k;
  const int64_t pad = padded ? 3 : 0;
  const int64_t lda = a_cols + pad, ldb = b_cols + pad, ldc = n + pad;
  const auto A = varnet::test::random_vector<T>(size_t(a_rows * lda), 11);
  const auto B = varnet::test::random_vector<T>(size_t(b_rows * ldb), 12);
  auto C = varnet::test::random_vector<T>(size_t(m * ldc), 13);
  const T alpha = T(1.5), beta = T(0.5);
  std::vector<double> want(C.begin(), C.end());
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t l = 0; l < k; ++l) {
        const double a = opa == vc::Op::N ? A[size_t(i * lda + l)] : A[size_t(l * lda + i)];
        const double b = opb == vc::Op::N ? B[size_t(l * ldb + j)] : B[size_t(j * ldb + l)];
        s += a * b;
      }
      want[size_t(i * ldc + j)] = double(alpha) * s + double(beta) * double(C[size_t(i * ldc + j)]);
    }
  auto dA = varnet::test::upload(A), dB = varnet::test::upload(B), dC = varnet::test::upload(C);
  vc::DeviceBuffer<T> work(size_t(vc::split_k_workspace(m, n, k)));
  if (split)
    vc::gemm_split_k(gpu(), opa, opb, m, n, k, alpha, dA.data(), dB.data(), beta, dC.data(),
                     work.data());
  else if (padded)
    vc::gemm(gpu(), opa, opb, m, n, k, alpha, dA.data(), lda, dB.data(), ldb, beta, dC.data(), ldc);
  else
    vc::gemm(gpu(), opa, opb, m, n, k, alpha, dA.data(), dB.data(), beta, dC.data());
  const auto got = varnet::test::download(dC);
  INFO("opa " << (opa == vc::Op::N ? "N" : "T") << ", opb " << (opb == vc::Op::N ? "N" : "T")
              << ", m " << m << ", n " << n << ", k " << k << (padded ? ", padded" : "")
              << (split ? ", split" : ""));
  // Float sums of thousands of terms (split): sum_rtol(k), 4 ulps per term.
  const double rtol = sizeof(T) == 4 ? (split ? varnet::test::sum_rtol(k) : 1e-5) : 1e-12;
  VARNET_CHECK_CLOSE(got, want, rtol);
}

TEST_CASE("row-major GEMM matches a reference product for every transpose", "[cuda]") {
  const std::vector<std::array<int64_t, 3>> shapes = {
      {1, 1, 1}, {5, 7, 3}, {33, 17, 65}, {64, 1, 129}, {1, 40, 9}};
  for (const auto opa : {vc::Op::N, vc::Op::T})
    for (const auto opb : {vc::Op::N, vc::Op::T})
      for (const auto& s : shapes) {
        check_gemm<float>(opa, opb, s[0], s[1], s[2], false);
        check_gemm<double>(opa, opb, s[0], s[1], s[2], false);
        check_gemm<float>(opa, opb, s[0], s[1], s[2], true);
      }
}

TEST_CASE("split-K GEMM matches the reference product, remainder chunk included", "[cuda]") {
  // Long reductions over few outputs, as a convolution's weight gradient; k not a multiple of
  // the chunk count, so the remainder GEMM runs too.
  const std::vector<std::array<int64_t, 3>> shapes = {{20, 30, 8195}, {3, 70, 5001}};
  for (const auto& s : shapes) {
    REQUIRE(vc::split_k_chunks(s[0], s[1], s[2]) > 1);
    REQUIRE(s[2] % vc::split_k_chunks(s[0], s[1], s[2]) != 0);
    for (const auto opa : {vc::Op::N, vc::Op::T})
      for (const auto opb : {vc::Op::N, vc::Op::T}) {
        check_gemm<float>(opa, opb, s[0], s[1], s[2], false, true);
        check_gemm<double>(opa, opb, s[0], s[1], s[2], false, true);
      }
  }
  CHECK(vc::split_k_chunks(512, 4608, 512) == 1);  // short reductions are not split
  CHECK(vc::split_k_workspace(512, 4608, 512) == 0);
}

// ---- noise ----

TEST_CASE("Philox words on the device equal the host's, bit for bit", "[cuda]") {
  for (const auto& key : kKeys)
    for (const auto& [first, blocks] : kRanges) {
      vc::DeviceBuffer<uint32_t> out(size_t(4 * blocks));
      vc::launch(philox_words_kernel, unsigned((blocks + 127) / 128), 128, gpu().stream(), key,
                 first, blocks, out.data());
      VARNET_CUDA_CHECK_LAUNCH("philox_words_kernel");
      const auto got = out.download(gpu().stream());
      int64_t mismatches = 0;
      for (int64_t i = 0; i < blocks; ++i) {
        const auto w = key.block(first + uint64_t(i));
        for (int j = 0; j < 4; ++j) mismatches += got[size_t(4 * i + j)] != w.v[j];
      }
      INFO("seed " << key.seed << ", layer " << key.layer << ", first block " << first);
      CHECK(mismatches == 0);
    }
}

#if !defined(VARNET_CUDA_EMULATION)
TEST_CASE("NoiseKey maps onto cuRAND's Philox4_32_10 (curand_init + curand4)", "[cuda]") {
  for (const auto& key : kKeys)
    for (const auto& [first, blocks] : kRanges) {
      vc::DeviceBuffer<uint32_t> out(size_t(4 * blocks));
      vc::launch(curand_words_kernel, unsigned((blocks + 127) / 128), 128, gpu().stream(), key,
                 first, blocks, out.data());
      VARNET_CUDA_CHECK_LAUNCH("curand_words_kernel");
      const auto got = out.download(gpu().stream());
      int64_t mismatches = 0;
      for (int64_t i = 0; i < blocks; ++i) {
        const auto w = key.block(first + uint64_t(i));
        for (int j = 0; j < 4; ++j) mismatches += got[size_t(4 * i + j)] != w.v[j];
      }
      INFO("seed " << key.seed << ", layer " << key.layer << ", first block " << first);
      CHECK(mismatches == 0);
    }
}
#endif

TEST_CASE("normal_at, uniform_at, sign_at on the device match the host", "[cuda]") {
  for (const auto& key : kKeys)
    for (const auto& [first_block, blocks] : kRanges) {
      const uint64_t first = 4 * first_block + 1;  // not aligned to a Philox block
      const int64_t count = 4 * blocks - 3;
      vc::DeviceBuffer<float> normal(static_cast<size_t>(count)),
          uniform(static_cast<size_t>(count)), sign(static_cast<size_t>(count));
      vc::launch(noise_kernel, unsigned((count + 127) / 128), 128, gpu().stream(), key, first,
                 count, normal.data(), uniform.data(), sign.data());
      VARNET_CUDA_CHECK_LAUNCH("noise_kernel");
      std::vector<float> want_normal(static_cast<size_t>(count)),
          want_uniform(static_cast<size_t>(count)), want_sign(static_cast<size_t>(count));
      for (int64_t i = 0; i < count; ++i) {
        want_normal[static_cast<size_t>(i)] = varnet::normal_at(key, first + uint64_t(i));
        want_uniform[static_cast<size_t>(i)] = varnet::uniform_at(key, first + uint64_t(i));
        want_sign[static_cast<size_t>(i)] = varnet::sign_at(key, first + uint64_t(i));
      }
      INFO("seed " << key.seed << ", first element " << first);
      // Box-Muller uses logf/sqrtf/cosf/sinf, which differ by an ulp or two between the CUDA
      // and glibc math libraries: 1e-5 relative to max(1, |z|).
      const auto got_normal = normal.download(gpu().stream());
      int64_t bad = 0;
      for (int64_t i = 0; i < count; ++i) {
        const double g = got_normal[static_cast<size_t>(i)],
                     w = want_normal[static_cast<size_t>(i)];
        if (!(std::fabs(g - w) <= 1e-5 * std::max(1.0, std::fabs(w)))) ++bad;
      }
      CHECK(bad == 0);
      CHECK(uniform.download(gpu().stream()) == want_uniform);  // exact: no libm involved
      CHECK(sign.download(gpu().stream()) == want_sign);
    }
}
