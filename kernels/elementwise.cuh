// Elementwise maps, layout transforms and the bias reduction on the GPU. CPU twins:
// ZeroMeanWeights::variance / grad_from_variance (layers/variance.hpp), ReLU, LeakyReLU and Tanh
// (layers/activations.hpp), ops::channel_major_to_nchw / nchw_to_channel_major / bias_backward
// (ops/conv.hpp) and fill_with_bias (layers/variance.hpp).
//
// Layouts: y, dy (N, O, P) contiguous (P = H * W, 1 for dense); channel-major Y2 (O, N * P).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/math.cuh"

namespace varnet::kernels {

// s2 = p^2 (sigma parameter) or exp(p) (log sigma2 parameter).
template <class T>
__global__ void variance_forward_kernel(int64_t count, bool log_sigma2, const T* __restrict__ p,
                                        T* __restrict__ s2) {
  for (int64_t k = thread_index(); k < count; k += grid_stride())
    s2[k] = log_sigma2 ? vexp(p[k]) : mul_rn(p[k], p[k]);
}

// dp += ds2 * d sigma2 / dp:  2 p ds2 (sigma) or s2 ds2 (log sigma2). Accumulates.
template <class T>
__global__ void variance_backward_kernel(int64_t count, bool log_sigma2, const T* __restrict__ p,
                                         const T* __restrict__ s2, const T* __restrict__ ds2,
                                         T* __restrict__ dp) {
  for (int64_t k = thread_index(); k < count; k += grid_stride()) {
    const T d = log_sigma2 ? mul_rn(s2[k], ds2[k]) : mul_rn(mul_rn(T(2), p[k]), ds2[k]);
    dp[k] = add_rn(dp[k], d);
  }
}

// y = x * x. y may be x.
template <class T>
__global__ void square_forward_kernel(int64_t count, const T* x, T* y) {
  for (int64_t k = thread_index(); k < count; k += grid_stride()) y[k] = mul_rn(x[k], x[k]);
}

// The two elementwise inputs of a dense variance layer's GEMM in one launch: s2 = sigma^2 or
// exp(log sigma2) over count_s parameters, and x2 = x * x over count_x inputs. Each thread takes
// four consecutive elements of one of them, moved as one 16-byte vector where float pointers are
// aligned (the tail and other types element by element); the same arithmetic as
// variance_forward_kernel and square_forward_kernel.
template <class T>
__global__ void variance_square_forward_kernel(int64_t count_s, bool log_sigma2,
                                               const T* __restrict__ p, T* __restrict__ s2,
                                               int64_t count_x, const T* __restrict__ x,
                                               T* __restrict__ x2) {
  const int64_t groups_s = (count_s + 3) / 4, groups = groups_s + (count_x + 3) / 4;
  for (int64_t g = thread_index(); g < groups; g += grid_stride()) {
    const bool param = g < groups_s;
    const int64_t base = 4 * (param ? g : g - groups_s), count = param ? count_s : count_x;
    const T* in = (param ? p : x) + base;
    T* out = (param ? s2 : x2) + base;
    const bool use_exp = param && log_sigma2;
    if constexpr (sizeof(T) == sizeof(float)) {
      const bool aligned =
          ((reinterpret_cast<uintptr_t>(in) | reinterpret_cast<uintptr_t>(out)) & 15) == 0;
      if (aligned && base + 4 <= count) {
        const float4 v = *reinterpret_cast<const float4*>(in);
        float4 r;
        r.x = use_exp ? vexp(v.x) : mul_rn(v.x, v.x);
        r.y = use_exp ? vexp(v.y) : mul_rn(v.y, v.y);
        r.z = use_exp ? vexp(v.z) : mul_rn(v.z, v.z);
        r.w = use_exp ? vexp(v.w) : mul_rn(v.w, v.w);
        *reinterpret_cast<float4*>(out) = r;
        continue;
      }
    }
    for (int64_t j = 0; j < 4 && base + j < count; ++j)
      out[j] = use_exp ? vexp(in[j]) : mul_rn(in[j], in[j]);
  }
}

// y = max(x, 0). y may be x.
template <class T>
__global__ void relu_forward_kernel(int64_t count, const T* x, T* y) {
  for (int64_t k = thread_index(); k < count; k += grid_stride()) y[k] = x[k] > T(0) ? x[k] : T(0);
}

// dx = dy where the saved output y > 0, else 0. dx may be dy.
template <class T>
__global__ void relu_backward_kernel(int64_t count, const T* __restrict__ y, const T* dy, T* dx) {
  for (int64_t k = thread_index(); k < count; k += grid_stride())
    dx[k] = y[k] > T(0) ? dy[k] : T(0);
}

// y = x where x > 0, else slope * x. y may be x.
template <class T>
__global__ void leaky_relu_forward_kernel(int64_t count, T slope, const T* x, T* y) {
  for (int64_t k = thread_index(); k < count; k += grid_stride())
    y[k] = x[k] > T(0) ? x[k] : mul_rn(slope, x[k]);
}

// dx = dy where the input x > 0, else slope * dy (the CPU reads x, not y). dx may be dy.
template <class T>
__global__ void leaky_relu_backward_kernel(int64_t count, T slope, const T* __restrict__ x,
                                           const T* dy, T* dx) {
  for (int64_t k = thread_index(); k < count; k += grid_stride())
    dx[k] = x[k] > T(0) ? dy[k] : mul_rn(slope, dy[k]);
}

// y = tanh(x). y may be x. The CPU's Eigen tanh (a rational approximation in float) and tanhf
// differ by a few ulps, so unlike the other maps this one is not bit for bit.
template <class T>
__global__ void tanh_forward_kernel(int64_t count, const T* x, T* y) {
  for (int64_t k = thread_index(); k < count; k += grid_stride()) y[k] = vtanh(x[k]);
}

// dx = dy (1 - y^2) with y the saved output, rounded as the CPU's dy * (1 - y * y) without a
// fused multiply-add. dx may be dy.
template <class T>
__global__ void tanh_backward_kernel(int64_t count, const T* __restrict__ y, const T* dy, T* dx) {
  for (int64_t k = thread_index(); k < count; k += grid_stride())
    dx[k] = mul_rn(dy[k], sub_rn(T(1), mul_rn(y[k], y[k])));
}

// y (N, O, P) = Y2 (O, N * P) (+ bias[o] when bias is not null). One thread per element of y;
// index arithmetic in I (int32 when the launcher finds the tensor small enough).
template <class T, class I>
__global__ void channel_major_to_nchw_kernel(const T* __restrict__ y2, const T* __restrict__ bias,
                                             I n, I o, I p, T* __restrict__ y) {
  const I total = n * o * p;
  for (I k = I(thread_index()); k < total; k += I(grid_stride())) {
    const I row = k / p, i = k - row * p, b = row / o, c = row - b * o;
    const T val = y2[(c * n + b) * p + i];
    y[k] = bias ? add_rn(val, bias[c]) : val;
  }
}

// Y2 (O, N * P) = y (N, O, P). One thread per element of Y2, so writes are coalesced.
template <class T, class I>
__global__ void nchw_to_channel_major_kernel(const T* __restrict__ y, I n, I o, I p,
                                             T* __restrict__ y2) {
  const I total = n * o * p, np = n * p;
  for (I k = I(thread_index()); k < total; k += I(grid_stride())) {
    const I c = k / np, rest = k - c * np, b = rest / p, i = rest - b * p;
    y2[k] = y[(b * o + c) * p + i];
  }
}

// y (N, O, P) = bias[o], or 0 without a bias: a variance layer's output in mean mode.
template <class T>
__global__ void bias_forward_kernel(const T* __restrict__ bias, int64_t n, int64_t o, int64_t p,
                                    T* __restrict__ y) {
  const int64_t total = n * o * p;
  for (int64_t k = thread_index(); k < total; k += grid_stride())
    y[k] = bias ? bias[(k / p) % o] : T(0);
}

// c = alpha (sum over s of partial[s count + i]) + beta c, the chunks summed in order (split-K
// GEMMs, cuda/gemm.hpp). c is not read when beta is 0.
template <class T>
__global__ void sum_partials_kernel(int64_t count, int64_t chunks, const T* __restrict__ partial,
                                    T alpha, T beta, T* __restrict__ c) {
  for (int64_t k = thread_index(); k < count; k += grid_stride()) {
    T s = partial[k];
    for (int64_t j = 1; j < chunks; ++j) s = add_rn(s, partial[j * count + k]);
    const T scaled = mul_rn(alpha, s);
    c[k] = beta == T(0) ? scaled : add_rn(scaled, mul_rn(beta, c[k]));
  }
}

// Threads per block of bias_backward_kernel (a power of two: the tree reduction needs it).
constexpr int kReduceThreads = 256;

// db[o] += sum over n, p of dy (N, O, P). One block per channel (grid-stride over channels);
// launch with kReduceThreads threads.
template <class T>
__global__ void bias_backward_kernel(const T* __restrict__ dy, int64_t n, int64_t o, int64_t p,
                                     T* __restrict__ db) {
  __shared__ T partial[kReduceThreads];
  const int64_t count = n * p;
  for (int64_t c = blockIdx.x; c < o; c += gridDim.x) {
    T s = T(0);
    for (int64_t k = threadIdx.x; k < count; k += blockDim.x) {
      const int64_t b = k / p, i = k - b * p;
      s += dy[(b * o + c) * p + i];
    }
    partial[threadIdx.x] = s;
    __syncthreads();
    for (int width = kReduceThreads / 2; width > 0; width >>= 1) {
      if (static_cast<int>(threadIdx.x) < width)
        partial[threadIdx.x] += partial[threadIdx.x + width];
      __syncthreads();
    }
    if (threadIdx.x == 0) db[c] += partial[0];
    __syncthreads();  // partial is reused for the next channel
  }
}

}  // namespace varnet::kernels
