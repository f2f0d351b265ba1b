// Dense (fully connected) products on the CPU: y = x W^T + b and its backward.
// Shapes: x (N, I), W (O, I), b (O), y (N, O); all row-major.
#pragma once

#include <cstdint>

#include "varnet/ops/gemm.hpp"

namespace varnet::ops {

template <class T>
void dense_forward(const T* x, const T* w, const T* bias, T* y, int64_t n, int64_t in,
                   int64_t out) {
  auto Y = matrix(y, n, out);
  Y.noalias() = matrix(x, n, in) * matrix(w, out, in).transpose();
  if (bias) Y.rowwise() += ConstVectorMap<T>(bias, out).transpose();
}

// dW += dy^T x (when dw), db += column sums of dy (when db), dx = dy W (when dx).
template <class T>
void dense_backward(const T* x, const T* dy, const T* w, T* dw, T* db, T* dx, int64_t n, int64_t in,
                    int64_t out) {
  const auto dY = matrix(dy, n, out);
  if (dw) matrix(dw, out, in).noalias() += dY.transpose() * matrix(x, n, in);
  if (db) VectorMap<T>(db, out) += dY.colwise().sum().transpose();
  if (dx) matrix(dx, n, in).noalias() = dY * matrix(w, out, in);
}

}  // namespace varnet::ops
