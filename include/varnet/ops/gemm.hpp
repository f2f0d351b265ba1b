// Row-major Eigen maps over raw buffers: every matrix product in the CPU backend goes through
// these, so that Eigen's blocked (and, with OpenMP, multithreaded) GEMM does the work.
#pragma once

#include <Eigen/Core>
#include <cstdint>

namespace varnet::ops {

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using MatrixMap = Eigen::Map<RowMatrix<T>>;
template <class T>
using ConstMatrixMap = Eigen::Map<const RowMatrix<T>>;
template <class T>
using VectorMap = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstVectorMap = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>;

template <class T>
MatrixMap<T> matrix(T* p, int64_t rows, int64_t cols) {
  return MatrixMap<T>(p, rows, cols);
}
template <class T>
ConstMatrixMap<T> matrix(const T* p, int64_t rows, int64_t cols) {
  return ConstMatrixMap<T>(p, rows, cols);
}

}  // namespace varnet::ops
