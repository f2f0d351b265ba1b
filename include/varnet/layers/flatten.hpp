// Flatten: (N, C, H, W) -> (N, C * H * W, 1, 1). The data is already in that order: a copy.
#pragma once

#include <algorithm>

#include "varnet/layers/layer.hpp"

namespace varnet {

template <class T>
class Flatten : public Layer<T> {
 public:
  std::string kind() const override { return "Flatten"; }
  Shape output_shape(const Shape& in) const override { return Shape(in.n, in.per_sample()); }
  void forward(ConstView<T> x, TensorView<T> y, T*, const Context&) override {
    std::copy(x.begin(), x.end(), y.data);
  }
  void backward(ConstView<T>, ConstView<T>, ConstView<T> dy, TensorView<T> dx, T*,
                const Context&) override {
    if (dx.data) std::copy(dy.begin(), dy.end(), dx.data);
  }
};

}  // namespace varnet
