// The direct convolution, written from its definition as six nested loops in double: the
// reference that the library's im2col + GEMM, per-sample and Winograd paths are checked against in
// the tests. Slow on purpose; only for the small shapes of tests.
#pragma once

#include <cstdint>
#include <vector>

#include "varnet/core/tensor.hpp"

namespace varnet::test {

// y[n,o,i,j] = b[o] + sum_{c,a,d} w[o,c,a,d] x[n, c, i*stride - pad + a, j*stride - pad + d],
// taps outside the image count as zero. x (N, C, H, W), w (out_c, C, k, k), b (out_c) or null;
// y (N, out_c, H', W') with H' = (H + 2 pad - k) / stride + 1.
template <class T, class U>
Tensor<double> direct_conv(const Tensor<T>& x, const U* w, const U* b, int64_t out_c, int64_t k,
                           int64_t stride, int64_t pad) {
  const Shape s = x.shape();
  const int64_t oh = (s.h + 2 * pad - k) / stride + 1, ow = (s.w + 2 * pad - k) / stride + 1;
  Tensor<double> y(Shape(s.n, out_c, oh, ow));
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t o = 0; o < out_c; ++o)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          double acc = b ? double(b[o]) : 0.0;
          for (int64_t c = 0; c < s.c; ++c)
            for (int64_t a = 0; a < k; ++a)
              for (int64_t d = 0; d < k; ++d) {
                const int64_t ih = i * stride - pad + a, iw = j * stride - pad + d;
                if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
                acc += double(w[((o * s.c + c) * k + a) * k + d]) * double(x.at(n, c, ih, iw));
              }
          y.at(n, o, i, j) = acc;
        }
  return y;
}

// The LRT variance of a variance conv layer: v = e0 + conv(x*x, sigma*sigma), sigma
// (out_c, C, k, k); v (N, out_c, H', W').
template <class T>
Tensor<double> direct_conv_variance(const Tensor<T>& x, const T* sigma, int64_t out_c, int64_t k,
                                    int64_t stride, int64_t pad, double e0) {
  Tensor<double> x2(x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) x2[i] = double(x[i]) * double(x[i]);
  std::vector<double> sigma2(static_cast<size_t>(out_c * x.shape().c * k * k));
  for (size_t i = 0; i < sigma2.size(); ++i) sigma2[i] = double(sigma[i]) * double(sigma[i]);
  Tensor<double> v =
      direct_conv(x2, sigma2.data(), static_cast<const double*>(nullptr), out_c, k, stride, pad);
  for (int64_t i = 0; i < v.numel(); ++i) v[i] += e0;
  return v;
}

}  // namespace varnet::test
