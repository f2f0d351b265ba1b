// Shared floating-point comparisons for the tests: |a - b| <= abs + rel * max(|a|, |b|), with
// defaults per scalar type expressed in that type's machine epsilon, and an array comparison that
// names the worst element so that a failing CHECK says where and by how much.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <ostream>

namespace tol {

// Default tolerances for results computed in T by short chains of arithmetic (a GEMM of modest
// depth, a normalisation): a few hundred ulps relative, the same in absolute terms near zero.
template <class T>
struct Defaults {
  static constexpr double eps = std::numeric_limits<T>::epsilon();
  static constexpr double rel = 256 * eps;
  static constexpr double abs = 256 * eps;
};

// True when a and b agree to abs_tol + rel_tol * max(|a|, |b|). NaN never compares close; equal
// infinities do. T names the precision the values were computed in; its epsilon is a floor on the
// relative tolerance, so that a tolerance tighter than the type can represent is not asked for.
template <class T>
bool close(double a, double b, double abs_tol, double rel_tol) {
  if (std::isnan(a) || std::isnan(b)) return false;
  if (a == b) return true;
  if (std::isinf(a) || std::isinf(b)) return false;
  const double rel = std::max(rel_tol, double(std::numeric_limits<T>::epsilon()));
  return std::abs(a - b) <= abs_tol + rel * std::max(std::abs(a), std::abs(b));
}
template <class T>
bool close(double a, double b) {
  return close<T>(a, b, Defaults<T>::abs, Defaults<T>::rel);
}

// Relative error with a floor on the denominator, for reports.
inline double rel_error(double a, double b, double floor = 1e-12) {
  return std::abs(a - b) / std::max({std::abs(a), std::abs(b), floor});
}

// The outcome of comparing two arrays element by element.
struct Mismatch {
  int64_t count = 0;    // elements that are not close
  int64_t n = 0;        // elements compared
  int64_t worst = -1;   // index of the element furthest outside (or nearest to) its tolerance
  double a = 0, b = 0;  // the values at `worst`
  double ratio = 0;     // |a - b| / (abs + rel max(|a|, |b|)) at `worst`: > 1 means not close
  double max_rel = 0;   // the largest relative error over all elements
  bool ok() const { return count == 0; }
};

inline std::ostream& operator<<(std::ostream& os, const Mismatch& m) {
  os << m.count << " of " << m.n << " elements not close";
  if (m.worst >= 0)
    os << "; worst at [" << m.worst << "]: " << m.a << " vs " << m.b << " (" << m.ratio
       << " x tolerance)";
  return os << "; max relative error " << m.max_rel;
}

// Compares a[i] with b[i] for i < n. A and B may be any indexable types (pointers, vectors,
// views) whose elements convert to double.
template <class T, class A, class B>
Mismatch compare(const A& a, const B& b, int64_t n, double abs_tol, double rel_tol) {
  Mismatch m;
  m.n = n;
  const double rel = std::max(rel_tol, double(std::numeric_limits<T>::epsilon()));
  double worst = -1;
  for (int64_t i = 0; i < n; ++i) {
    const double x = double(a[i]), y = double(b[i]);
    const bool good = close<T>(x, y, abs_tol, rel_tol);
    const double bound = abs_tol + rel * std::max(std::abs(x), std::abs(y));
    double ratio = (x == y) ? 0.0 : std::abs(x - y) / bound;
    if (!good && !(ratio > 1)) ratio = std::numeric_limits<double>::infinity();  // NaN, inf
    if (!good) ++m.count;
    if (std::isfinite(x) && std::isfinite(y)) m.max_rel = std::max(m.max_rel, rel_error(x, y));
    if (ratio > worst) {
      worst = ratio;
      m.worst = i;
      m.a = x;
      m.b = y;
      m.ratio = ratio;
    }
  }
  return m;
}
template <class T, class A, class B>
Mismatch compare(const A& a, const B& b, int64_t n) {
  return compare<T>(a, b, n, Defaults<T>::abs, Defaults<T>::rel);
}

}  // namespace tol
