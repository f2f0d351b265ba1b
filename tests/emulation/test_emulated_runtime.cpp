// The emulation's own checks (emulated_runtime.h, cublas_v2.h, emulated_fibers.h): the GPU
// backend's suite passing under emulation (test_emulated_cuda_suite) means something only if
// the emulated runtime refuses what a GPU refuses and faults where a GPU faults. Each case here
// breaks one rule and expects the refusal.
#include <cublas_v2.h>

#include <cstdlib>
#include <set>

#include "emulation_test_support.hpp"
#include "varnet/cuda/launch.hpp"

using namespace emulation_test;  // NOLINT

namespace {

void* device_alloc(size_t bytes) {
  void* p = nullptr;
  REQUIRE(cudaMalloc(&p, bytes) == cudaSuccess);
  return p;
}

// out[i] = in[i] + 1, one thread per element.
void add_one_kernel(const float* in, float* out, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = in[i] + 1.0f;
}

// *out = sum of in[0, n) by a shared-memory tree over a 64-thread block.
void block_sum_kernel(const float* in, int n, float* out) {
  __shared__ float part[64];
  float s = 0;
  for (int i = int(threadIdx.x); i < n; i += int(blockDim.x)) s += in[i];
  part[threadIdx.x] = s;
  __syncthreads();
  for (unsigned w = blockDim.x / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = part[0];
}

// Thread 0 skips the barrier that the others wait at: divergent.
void divergent_kernel(int* out) {
  if (threadIdx.x != 0) __syncthreads();
  out[threadIdx.x] = 1;
}

// Thread 0 reads *in into shared memory and every thread copies it out, with the barrier between
// the write and the reads (broadcast_kernel) and without it (broadcast_racy_kernel: a race that a
// GPU may or may not show, depending on how its warps are scheduled).
void broadcast_kernel(const float* in, float* out) {
  __shared__ float value;
  if (threadIdx.x == 0) value = *in;
  __syncthreads();
  out[threadIdx.x] = value;
}
void broadcast_racy_kernel(const float* in, float* out) {
  __shared__ float value;
  if (threadIdx.x == 0) value = *in;
  out[threadIdx.x] = value;
  __syncthreads();
}

// Every thread of every block writes its global index to one word: whichever runs last wins.
void last_writer_kernel(unsigned* out) {
  *out = blockIdx.x * blockDim.x + threadIdx.x;
}

// A fault is sticky, as on a GPU; tests that cause one clear it for the cases after them.
void clear_fault() {
  emu::detail::runtime().sticky = cudaSuccess;
  (void)cudaGetLastError();
}

}  // namespace

TEST_CASE("emulated device memory: poisoned, bounded, freed once", "[emulation]") {
  auto* p = static_cast<float*>(device_alloc(10 * sizeof(float)));
  for (int i = 0; i < 10; ++i) CHECK(std::isnan(p[i]));  // fresh memory reads as NaN
  std::vector<float> host(11, 2.0f);
  CHECK(cudaMemcpyAsync(p, host.data(), 10 * sizeof(float), cudaMemcpyHostToDevice, nullptr) ==
        cudaSuccess);
  CHECK(p[9] == 2.0f);
  // One element too many, a host pointer as the device side, the wrong direction.
  CHECK(cudaMemcpyAsync(p, host.data(), 11 * sizeof(float), cudaMemcpyHostToDevice, nullptr) ==
        cudaErrorInvalidValue);
  CHECK(cudaMemcpyAsync(host.data(), p + 1, 10 * sizeof(float), cudaMemcpyDeviceToHost, nullptr) ==
        cudaErrorInvalidValue);
  CHECK(cudaMemcpyAsync(p, host.data(), 4, cudaMemcpyDeviceToHost, nullptr) ==
        cudaErrorInvalidValue);
  CHECK(cudaMemsetAsync(p + 5, 0, 6 * sizeof(float), nullptr) == cudaErrorInvalidValue);
  CHECK(cudaMemsetAsync(p + 5, 0, 5 * sizeof(float), nullptr) == cudaSuccess);
  CHECK(p[9] == 0.0f);
  void* huge = nullptr;
  CHECK(cudaMalloc(&huge, emu::kEmulatedMemory + 1) == cudaErrorMemoryAllocation);
  CHECK(cudaGetLastError() == cudaErrorMemoryAllocation);
  CHECK(cudaGetLastError() == cudaSuccess);  // read and cleared
  CHECK(cudaFree(p) == cudaSuccess);
  CHECK(cudaFree(p) == cudaErrorInvalidValue);
  (void)cudaGetLastError();
}

TEST_CASE("emulated launches: configuration limits, copied arguments", "[emulation]") {
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreate(&s) == cudaSuccess);
  const int n = 300;
  auto* in = static_cast<float*>(device_alloc(n * sizeof(float)));
  auto* out = static_cast<float*>(device_alloc(n * sizeof(float)));
  for (int i = 0; i < n; ++i) in[i] = float(i);
  cuda::launch(add_one_kernel, cuda::grid_for(n), cuda::kThreads, s, in, out, n);
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(out[0] == 1.0f);
  CHECK(out[n - 1] == float(n));
  // Over 1024 threads per block, a zero grid, a grid.y over 65,535: refused, nothing runs.
  out[0] = -1.0f;
  cuda::launch(add_one_kernel, 1, 2048, s, in, out, n);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  cuda::launch(add_one_kernel, 0, 32, s, in, out, n);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  cuda::launch(add_one_kernel, dim3(1, 65536), 32, s, in, out, n);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  CHECK(out[0] == -1.0f);
  CHECK(cudaStreamDestroy(s) == cudaSuccess);
  CHECK(cudaFree(in) == cudaSuccess);
  CHECK(cudaFree(out) == cudaSuccess);
}

TEST_CASE("emulated barriers: fibers reduce as threads do, divergence is a sticky fault",
          "[emulation]") {
  const int n = 1000;
  auto* in = static_cast<float*>(device_alloc(n * sizeof(float)));
  auto* out = static_cast<float*>(device_alloc(sizeof(float)));
  float want = 0;
  for (int i = 0; i < n; ++i) {
    in[i] = float(i % 7);
    want += float(i % 7);
  }
  cuda::launch_with_barriers(block_sum_kernel, 1, 64, nullptr, in, n, out);
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(*out == want);
  // The same kernel launched without barriers: its __syncthreads faults the emulated device.
  cuda::launch(block_sum_kernel, 1, 64, nullptr, in, n, out);
  CHECK(cudaStreamSynchronize(nullptr) == cudaErrorLaunchFailure);
  CHECK(cudaMemsetAsync(out, 0, 4, nullptr) == cudaErrorLaunchFailure);  // sticky
  clear_fault();
  auto* flags = static_cast<int*>(device_alloc(32 * sizeof(int)));
  cuda::launch_with_barriers(divergent_kernel, 1, 32, nullptr, flags);
  CHECK(cudaDeviceSynchronize() == cudaErrorLaunchFailure);
  clear_fault();
  CHECK(cudaFree(in) == cudaSuccess);
  CHECK(cudaFree(out) == cudaSuccess);
  CHECK(cudaFree(flags) == cudaSuccess);
}

TEST_CASE("emulated schedules: order-dependent kernels fail some launches, correct ones none",
          "[emulation]") {
  struct RestoreSchedule {
    emu::Schedule saved = emu::schedule();
    ~RestoreSchedule() { emu::set_schedule(saved); }
  } restore;
  const unsigned threads = 64;
  auto* in = static_cast<float*>(device_alloc(sizeof(float)));
  auto* out = static_cast<float*>(device_alloc(threads * sizeof(float)));
  // Launches `kernel` `launches` times, each with a new value to broadcast; returns how many
  // launches left some thread with a value other than that launch's.
  auto wrong_launches = [&](void (*kernel)(const float*, float*), int launches) {
    int wrong = 0;
    for (int i = 0; i < launches; ++i) {
      *in = float(i + 1);
      cuda::launch_with_barriers(kernel, 1, threads, nullptr, in, out);
      REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
      wrong += int(std::any_of(out, out + threads, [&](float v) { return v != *in; }));
    }
    return wrong;
  };
  // In increasing threadIdx, thread 0 writes before the others read: the race is hidden.
  emu::set_schedule(emu::Schedule::kForward);
  CHECK(wrong_launches(broadcast_racy_kernel, 30) == 0);
  emu::set_schedule(emu::Schedule::kVaried);
  CHECK(wrong_launches(broadcast_racy_kernel, 30) > 0);
  CHECK(wrong_launches(broadcast_kernel, 30) == 0);

  // Without barriers: forward order always ends with the last thread of the last block.
  auto* word = static_cast<unsigned*>(device_alloc(sizeof(unsigned)));
  auto last_writers = [&] {
    std::set<unsigned> seen;
    for (int i = 0; i < 30; ++i) {
      cuda::launch(last_writer_kernel, 4, 32, nullptr, word);
      REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
      seen.insert(*word);
    }
    return seen;
  };
  emu::set_schedule(emu::Schedule::kForward);
  CHECK(last_writers() == std::set<unsigned>{127});
  emu::set_schedule(emu::Schedule::kVaried);
  CHECK(last_writers().size() > 2);

  // The environment's setting is checked, not guessed.
  ::setenv("VARNET_EMU_SCHEDULE", "backwards", 1);
  CHECK_THROWS_WITH(emu::detail::schedule_from_environment(),
                    Catch::Contains("expected 'varied' or 'forward', found 'backwards'"));
  ::setenv("VARNET_EMU_SCHEDULE", "forward", 1);
  CHECK(emu::detail::schedule_from_environment() == emu::Schedule::kForward);
  ::unsetenv("VARNET_EMU_SCHEDULE");
  CHECK(emu::detail::schedule_from_environment() == emu::Schedule::kVaried);
  CHECK(cudaFree(in) == cudaSuccess);
  CHECK(cudaFree(out) == cudaSuccess);
  CHECK(cudaFree(word) == cudaSuccess);
}

TEST_CASE("emulated stream capture: recorded not run, replayed, and its forbidden calls",
          "[emulation]") {
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreate(&s) == cudaSuccess);
  const int n = 5;
  auto* a = static_cast<float*>(device_alloc(n * sizeof(float)));
  for (int i = 0; i < n; ++i) a[i] = 0.0f;
  std::vector<float> host(n, 10.0f);

  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  CHECK(cudaMemcpyAsync(a, host.data(), n * sizeof(float), cudaMemcpyHostToDevice, s) ==
        cudaSuccess);
  cuda::launch(add_one_kernel, 1, 32, s, a, a, n);  // a += 1 after the copy
  CHECK(a[0] == 0.0f);                              // recorded, not run
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(s, &graph) == cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  CHECK(cudaGraphDestroy(graph) == cudaSuccess);
  host.assign(n, 20.0f);  // a captured copy reads its host source when the graph runs
  CHECK(cudaGraphLaunch(exec, s) == cudaSuccess);
  CHECK(a[n - 1] == 21.0f);
  CHECK(cudaGraphExecDestroy(exec) == cudaSuccess);

  // Allocating, synchronising or using the legacy stream during a capture invalidates it.
  for (int rule = 0; rule < 3; ++rule) {
    REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    void* p = nullptr;
    if (rule == 0) CHECK(cudaMalloc(&p, 16) == cudaErrorStreamCaptureUnsupported);
    if (rule == 1) CHECK(cudaStreamSynchronize(s) == cudaErrorStreamCaptureUnsupported);
    if (rule == 2) CHECK(cudaMemsetAsync(a, 0, 4, nullptr) == cudaErrorStreamCaptureImplicit);
    CHECK(cudaStreamEndCapture(s, &graph) == cudaErrorStreamCaptureInvalidated);
    CHECK(graph == nullptr);
    (void)cudaGetLastError();
  }
  CHECK(cudaStreamDestroy(s) == cudaSuccess);
  CHECK(cudaFree(a) == cudaSuccess);
}

TEST_CASE("emulated cuBLAS: column-major GEMMs, argument checks, operands inside buffers",
          "[emulation]") {
  cublasHandle_t h = nullptr;
  REQUIRE(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
  // Column-major C (m, n) = A^T B with A stored (k, m), lda = k + 1; B (k, n), ldb = k.
  const int m = 3, n = 2, k = 4, lda = k + 1;
  auto* a = static_cast<double*>(device_alloc(size_t(lda * m) * sizeof(double)));
  auto* b = static_cast<double*>(device_alloc(size_t(k * n) * sizeof(double)));
  auto* c = static_cast<double*>(device_alloc(size_t(m * n) * sizeof(double)));
  for (int i = 0; i < lda * m; ++i) a[i] = double(i % 5) - 2.0;
  for (int i = 0; i < k * n; ++i) b[i] = double(i) * 0.5;
  const double one = 1, zero = 0;
  // C starts as NaN: with beta = 0 it is written without being read.
  REQUIRE(cublasDgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, a, lda, b, k, &zero, c, m) ==
          CUBLAS_STATUS_SUCCESS);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double want = 0;
      for (int r = 0; r < k; ++r) want += a[i * lda + r] * b[j * k + r];
      CHECK(c[j * m + i] == want);
    }
  // A leading dimension shorter than a column is refused before anything runs.
  CHECK(cublasDgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, a, k - 1, b, k, &zero, c, m) ==
        CUBLAS_STATUS_INVALID_VALUE);
  // B read one column past its buffer: a device fault.
  CHECK(cublasDgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n + 1, k, &one, a, lda, b, k, &zero, c, m) ==
        CUBLAS_STATUS_EXECUTION_FAILED);
  clear_fault();

  // TF32: float operands rounded to 10-bit mantissas before the product.
  auto* x = static_cast<float*>(device_alloc(sizeof(float)));
  auto* y = static_cast<float*>(device_alloc(sizeof(float)));
  auto* z = static_cast<float*>(device_alloc(sizeof(float)));
  *x = 1.0f + 1.0f / 4096;  // needs 12 mantissa bits: TF32 rounds it to 1
  *y = 3.0f;
  const float fone = 1, fzero = 0;
  REQUIRE(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &fone, x, 1, y, 1, &fzero, z, 1) ==
          CUBLAS_STATUS_SUCCESS);
  CHECK(*z == 3.0f * (1.0f + 1.0f / 4096));
  REQUIRE(cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &fone, x, 1, y, 1, &fzero, z, 1) ==
          CUBLAS_STATUS_SUCCESS);
  CHECK(*z == 3.0f);
  CHECK(emu::blas::to_tf32(1.0f + 3.0f / 2048) == 1.0f + 2.0f / 1024);  // ties round to even

  CHECK(cublasDestroy(h) == CUBLAS_STATUS_SUCCESS);
  for (void* p : {static_cast<void*>(a), static_cast<void*>(b), static_cast<void*>(c),
                  static_cast<void*>(x), static_cast<void*>(y), static_cast<void*>(z)})
    CHECK(cudaFree(p) == cudaSuccess);
}
