// Max pooling over 2x2 windows with stride 2 (LeNet-5, VGG), one plane at a time: the forward
// maximum, and the backward pass that writes all four entries of every window (the gradient at
// the first maximum in row-major window order, 0 elsewhere).
//
// The first maximum of (a, b, c, d) is found as a chain of "greater than" tests, which is what
// MaxPool2d::argmax does for any window, so ties and NaNs resolve the same way everywhere:
//   v = a;  b > v -> b;  c > v -> c;  d > v -> d.
// For floats, four windows at a time in SSE registers: the scalar form compiled to branches that
// mispredict on random data (2.1 ms for LeNet-5's pool1 backward at batch 128, 0.7 ms now;
// benchmarks/NOTES.md section 8).
#pragma once

#include <cstdint>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace varnet::ops {

namespace detail {

// Index (0-3) and value of the first maximum of a 2x2 window, without branches.
template <class T>
int first_max4(T a, T b, T c, T d, T& v) {
  int at = 0;
  v = a;
  at = b > v ? 1 : at, v = b > v ? b : v;
  at = c > v ? 2 : at, v = c > v ? c : v;
  at = d > v ? 3 : at, v = d > v ? d : v;
  return at;
}

#if defined(__SSE2__)
// Four windows: a, b from the top row, c, d from the bottom row. _mm_max_ps(x, v) is exactly
// (x > v ? x : v), NaNs included (it returns its second operand unless x > v).
struct Max4 {
  __m128 v, mb, mc, md;  // the maximum; where b, c, d took over the running maximum
  Max4(const float* r0, const float* r1) {
    const __m128 t0 = _mm_loadu_ps(r0), t1 = _mm_loadu_ps(r0 + 4);
    const __m128 u0 = _mm_loadu_ps(r1), u1 = _mm_loadu_ps(r1 + 4);
    const __m128 a = _mm_shuffle_ps(t0, t1, _MM_SHUFFLE(2, 0, 2, 0));
    const __m128 b = _mm_shuffle_ps(t0, t1, _MM_SHUFFLE(3, 1, 3, 1));
    const __m128 c = _mm_shuffle_ps(u0, u1, _MM_SHUFFLE(2, 0, 2, 0));
    const __m128 d = _mm_shuffle_ps(u0, u1, _MM_SHUFFLE(3, 1, 3, 1));
    mb = _mm_cmpgt_ps(b, a);
    v = _mm_max_ps(b, a);
    mc = _mm_cmpgt_ps(c, v);
    v = _mm_max_ps(c, v);
    md = _mm_cmpgt_ps(d, v);
    v = _mm_max_ps(d, v);
  }
};
#endif

}  // namespace detail

// src: one (h, w) plane; dst: its (oh, ow) pooled plane, oh = h / 2, ow = w / 2.
template <class T>
void pool2x2_forward(const T* src, int64_t w, int64_t oh, int64_t ow, T* dst) {
  for (int64_t i = 0; i < oh; ++i) {
    const T *r0 = src + 2 * i * w, *r1 = r0 + w;
    T* out = dst + i * ow;
    int64_t j = 0;
#if defined(__SSE2__)
    if constexpr (std::is_same_v<T, float>)
      for (; j + 4 <= ow; j += 4) _mm_storeu_ps(out + j, detail::Max4(r0 + 2 * j, r1 + 2 * j).v);
#endif
    for (; j < ow; ++j)
      detail::first_max4(r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1], out[j]);
  }
}

// g: the (oh, ow) output gradient; d: the (h, w) input gradient, rows 0 .. 2 oh and columns
// 0 .. 2 ow written (the caller zeroes the rest when h or w is odd).
template <class T>
void pool2x2_backward(const T* src, const T* g, int64_t w, int64_t oh, int64_t ow, T* d) {
  for (int64_t i = 0; i < oh; ++i) {
    const T *r0 = src + 2 * i * w, *r1 = r0 + w, *gi = g + i * ow;
    T *d0 = d + 2 * i * w, *d1 = d0 + w;
    int64_t j = 0;
#if defined(__SSE2__)
    if constexpr (std::is_same_v<T, float>)
      for (; j + 4 <= ow; j += 4) {
        const detail::Max4 m(r0 + 2 * j, r1 + 2 * j);
        const __m128 gv = _mm_loadu_ps(gi + j);
        const __m128 cd = _mm_or_ps(m.mc, m.md);
        const __m128 da = _mm_andnot_ps(_mm_or_ps(m.mb, cd), gv);  // no later entry took over
        const __m128 db = _mm_and_ps(_mm_andnot_ps(cd, m.mb), gv);
        const __m128 dc = _mm_and_ps(_mm_andnot_ps(m.md, m.mc), gv);
        const __m128 dd = _mm_and_ps(m.md, gv);
        _mm_storeu_ps(d0 + 2 * j, _mm_unpacklo_ps(da, db));
        _mm_storeu_ps(d0 + 2 * j + 4, _mm_unpackhi_ps(da, db));
        _mm_storeu_ps(d1 + 2 * j, _mm_unpacklo_ps(dc, dd));
        _mm_storeu_ps(d1 + 2 * j + 4, _mm_unpackhi_ps(dc, dd));
      }
#endif
    for (; j < ow; ++j) {
      T v;
      const int at = detail::first_max4(r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1], v);
      d0[2 * j] = at == 0 ? gi[j] : T(0);
      d0[2 * j + 1] = at == 1 ? gi[j] : T(0);
      d1[2 * j] = at == 2 ? gi[j] : T(0);
      d1[2 * j + 1] = at == 3 ? gi[j] : T(0);
    }
  }
}

}  // namespace varnet::ops
