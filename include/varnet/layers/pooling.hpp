// MaxPool2d: max over k x k windows with a stride (default k), no padding.
// (N, C, H, W) -> (N, C, (H - k) / s + 1, (W - k) / s + 1). Ties go to the first maximum in
// row-major window order; backward finds that element again instead of storing indices.
#pragma once

#include "varnet/core/parallel.hpp"
#include "varnet/layers/layer.hpp"
#include "varnet/ops/pool2x2.hpp"

namespace varnet {

template <class T>
class MaxPool2d : public Layer<T> {
 public:
  explicit MaxPool2d(int64_t kernel = 2, int64_t stride = 0)
      : k_(kernel), s_(stride > 0 ? stride : kernel) {
    check(kernel > 0 && stride >= 0, "MaxPool2d", "a positive kernel and non-negative stride",
          "kernel ", kernel, ", stride ", stride);
  }
  std::string kind() const override { return "MaxPool2d"; }
  int64_t kernel() const { return k_; }
  int64_t stride() const { return s_; }
  std::string describe() const override {
    return str(kind(), "(", k_, "x", k_, ", stride ", s_, ")");
  }
  Shape output_shape(const Shape& in) const override {
    check(in.h >= k_ && in.w >= k_, this->where(), str("an input of at least ", k_, "x", k_),
          "input of shape ", in);
    return Shape(in.n, in.c, (in.h - k_) / s_ + 1, (in.w - k_) / s_ + 1);
  }
  void forward(ConstView<T> x, TensorView<T> y, T*, const Context&) override {
    const Shape& is = x.shape;
    const Shape& os = y.shape;
    parallel_for(
        is.n * is.c,
        [&](int64_t plane) {
          const T* src = x.data + plane * is.plane();
          T* dst = y.data + plane * os.plane();
          if (k_ == 2 && s_ == 2) return ops::pool2x2_forward(src, is.w, os.h, os.w, dst);
          for (int64_t i = 0; i < os.h; ++i)
            for (int64_t j = 0; j < os.w; ++j) dst[i * os.w + j] = src[argmax(src, is.w, i, j)];
        },
        is.plane());
  }
  void backward(ConstView<T> x, ConstView<T> y, ConstView<T> dy, TensorView<T> dx, T*,
                const Context&) override {
    if (!dx.data) return;
    const Shape& is = x.shape;
    const Shape& os = y.shape;
    parallel_for(
        is.n * is.c,
        [&](int64_t plane) {
          const T* src = x.data + plane * is.plane();
          const T* g = dy.data + plane * os.plane();
          T* d = dx.data + plane * is.plane();
          if (k_ != 2 || s_ != 2 || is.h != 2 * os.h || is.w != 2 * os.w)
            std::fill(d, d + is.plane(), T(0));  // windows overlap, or leave pixels out
          if (k_ == 2 && s_ == 2) return ops::pool2x2_backward(src, g, is.w, os.h, os.w, d);
          for (int64_t i = 0; i < os.h; ++i)
            for (int64_t j = 0; j < os.w; ++j) d[argmax(src, is.w, i, j)] += g[i * os.w + j];
        },
        is.plane());
  }

 private:
  // Offset of the first maximum of window (i, j) in a plane of width w.
  int64_t argmax(const T* src, int64_t w, int64_t i, int64_t j) const {
    int64_t best = i * s_ * w + j * s_;
    for (int64_t a = 0; a < k_; ++a)
      for (int64_t b = 0; b < k_; ++b) {
        const int64_t at = (i * s_ + a) * w + j * s_ + b;
        if (src[at] > src[best]) best = at;
      }
    return best;
  }
  int64_t k_, s_;
};

}  // namespace varnet
