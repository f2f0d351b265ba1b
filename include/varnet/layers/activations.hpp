// Elementwise activations: ReLU, LeakyReLU, Tanh. Any input shape; output has the same shape.
// Backward uses the saved output y where it can (ReLU, Tanh), the input otherwise.
#pragma once

#include <cmath>

#include "varnet/core/parallel.hpp"
#include "varnet/layers/layer.hpp"
#include "varnet/ops/gemm.hpp"

namespace varnet {

template <class T>
class Elementwise : public Layer<T> {
 public:
  Shape output_shape(const Shape& in) const override { return in; }
};

template <class T>
class ReLU : public Elementwise<T> {
 public:
  std::string kind() const override { return "ReLU"; }
  // Both directions run on all cores: after a batch norm these passes are memory-bound, and on
  // one core the other sat idle for 6% of a LeNet-5 step (benchmarks/NOTES.md section 8).
  void forward(ConstView<T> x, TensorView<T> y, T*, const Context&) override {
    parallel_ranges(x.numel(), [&](int64_t b, int64_t e) {
      ops::VectorMap<T>(y.data + b, e - b).array() =
          ops::ConstVectorMap<T>(x.data + b, e - b).array().max(T(0));
    });
  }
  void backward(ConstView<T>, ConstView<T> y, ConstView<T> dy, TensorView<T> dx, T*,
                const Context&) override {
    if (!dx.data) return;
    // A select on whole vectors: written as a loop with a conditional load, it compiled to a
    // branch that mispredicts on half the elements (4 ms for conv1's 1.47 M outputs).
    parallel_ranges(y.numel(), [&](int64_t b, int64_t e) {
      const auto yb = ops::ConstVectorMap<T>(y.data + b, e - b).array();
      ops::VectorMap<T>(dx.data + b, e - b).array() =
          (yb > T(0)).select(ops::ConstVectorMap<T>(dy.data + b, e - b).array(), T(0));
    });
  }
};

template <class T>
class LeakyReLU : public Elementwise<T> {
 public:
  explicit LeakyReLU(double slope = 0.01) : slope_(static_cast<T>(slope)) {
    check(slope >= 0 && slope < 1, "LeakyReLU", "a slope in [0, 1)", slope);
  }
  std::string kind() const override { return "LeakyReLU"; }
  std::string describe() const override { return str(kind(), "(", slope_, ")"); }
  // The slope for x <= 0, in T (the GPU twin takes it from here).
  T slope() const { return slope_; }
  void forward(ConstView<T> x, TensorView<T> y, T*, const Context&) override {
    const int64_t n = x.numel();
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] > T(0) ? x[i] : slope_ * x[i];
  }
  void backward(ConstView<T> x, ConstView<T>, ConstView<T> dy, TensorView<T> dx, T*,
                const Context&) override {
    if (!dx.data) return;
    const int64_t n = x.numel();
    for (int64_t i = 0; i < n; ++i) dx[i] = x[i] > T(0) ? dy[i] : slope_ * dy[i];
  }

 private:
  T slope_;
};

template <class T>
class Tanh : public Elementwise<T> {
 public:
  std::string kind() const override { return "Tanh"; }
  void forward(ConstView<T> x, TensorView<T> y, T*, const Context&) override {
    ops::VectorMap<T>(y.data, x.numel()).array() =
        ops::ConstVectorMap<T>(x.data, x.numel()).array().tanh();
  }
  void backward(ConstView<T>, ConstView<T> y, ConstView<T> dy, TensorView<T> dx, T*,
                const Context&) override {
    if (!dx.data) return;
    const int64_t n = y.numel();
    for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * (T(1) - y[i] * y[i]);
  }
};

}  // namespace varnet
