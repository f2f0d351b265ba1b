// Shapes, owning tensors and non-owning views, all in (N, C, H, W) order.
//
// A dense activation is (N, C, 1, 1). Storage is contiguous and row-major: element (n, c, h, w)
// sits at ((n * C + c) * H + h) * W + w. Tensors own a std::vector whose capacity is kept when
// a smaller batch is set, so reusing a tensor for the last, partial batch allocates nothing.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>
#include <type_traits>
#include <vector>

#include "varnet/core/aligned.hpp"
#include "varnet/core/error.hpp"

namespace varnet {

struct Shape {
  int64_t n = 0, c = 0, h = 1, w = 1;

  Shape() = default;
  Shape(int64_t n_, int64_t c_, int64_t h_ = 1, int64_t w_ = 1) : n(n_), c(c_), h(h_), w(w_) {}

  int64_t numel() const { return n * c * h * w; }
  int64_t per_sample() const { return c * h * w; }  // elements of one batch item
  int64_t plane() const { return h * w; }
  Shape with_batch(int64_t batch) const { return Shape(batch, c, h, w); }
  bool operator==(const Shape& o) const { return n == o.n && c == o.c && h == o.h && w == o.w; }
  bool operator!=(const Shape& o) const { return !(*this == o); }
  bool valid() const { return n >= 0 && c > 0 && h > 0 && w > 0; }
};

inline std::ostream& operator<<(std::ostream& os, const Shape& s) {
  return os << "(" << s.n << ", " << s.c << ", " << s.h << ", " << s.w << ")";
}

// A non-owning view of contiguous (N, C, H, W) data. T may be const.
template <class T>
struct TensorView {
  T* data = nullptr;
  Shape shape;

  TensorView() = default;
  TensorView(T* d, Shape s) : data(d), shape(s) {}
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T>>>
  TensorView(const TensorView<U>& o) : data(o.data), shape(o.shape) {}  // mutable -> const

  int64_t numel() const { return shape.numel(); }
  bool empty() const { return data == nullptr; }
  T* begin() const { return data; }
  T* end() const { return data + numel(); }
  T& operator[](int64_t i) const { return data[i]; }
  T& at(int64_t n, int64_t c, int64_t h = 0, int64_t w = 0) const {
    return data[((n * shape.c + c) * shape.h + h) * shape.w + w];
  }
  // Batch items [first, first + count) as a view.
  TensorView sample_range(int64_t first, int64_t count) const {
    return TensorView(data + first * shape.per_sample(), shape.with_batch(count));
  }
};

template <class T>
using ConstView = TensorView<const T>;

template <class T>
class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(Shape s, T fill = T(0)) : shape_(s), data_(static_cast<size_t>(s.numel()), fill) {
    check(s.valid(), "Tensor", "a shape with positive C, H, W and N >= 0", s);
  }

  // Sets the shape, growing storage if needed; existing capacity is reused (no allocation when
  // the new shape is not larger than any earlier one). Contents are unspecified afterwards.
  void resize(Shape s) {
    check(s.valid(), "Tensor::resize", "a shape with positive C, H, W and N >= 0", s);
    shape_ = s;
    data_.resize(static_cast<size_t>(s.numel()));
  }

  const Shape& shape() const { return shape_; }
  int64_t numel() const { return shape_.numel(); }
  T* data() { return data_.data(); }
  const T* data() const { return data_.data(); }
  T& operator[](int64_t i) { return data_[static_cast<size_t>(i)]; }
  const T& operator[](int64_t i) const { return data_[static_cast<size_t>(i)]; }
  T& at(int64_t n, int64_t c, int64_t h = 0, int64_t w = 0) { return view().at(n, c, h, w); }
  const T& at(int64_t n, int64_t c, int64_t h = 0, int64_t w = 0) const {
    return view().at(n, c, h, w);
  }
  void fill(T v) { std::fill(data_.begin(), data_.end(), v); }

  TensorView<T> view() { return TensorView<T>(data_.data(), shape_); }
  ConstView<T> view() const { return ConstView<T>(data_.data(), shape_); }
  operator TensorView<T>() { return view(); }
  operator ConstView<T>() const { return view(); }

 private:
  Shape shape_;
  AlignedVector<T> data_;
};

}  // namespace varnet
