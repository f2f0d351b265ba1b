// AlignedVector: a std::vector whose storage starts on a 64-byte boundary.
//
// Every buffer Eigen vectorises over is one of these. Eigen peels unaligned heads off with
// scalar code and sums reductions in an order that depends on the start address, so with
// ordinary heap addresses two identical runs in one process could differ in the last bits.
// With aligned bases, a buffer's alignment depends only on its offsets: results are a function
// of the inputs alone.
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace varnet {

template <class T, std::size_t Align = 64>
struct AlignedAllocator {
  using value_type = T;
  template <class U>
  struct rebind {
    using other = AlignedAllocator<U, Align>;
  };
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U, Align>&) noexcept {}

  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(Align)));
  }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t(Align)); }
  template <class U>
  bool operator==(const AlignedAllocator<U, Align>&) const noexcept {
    return true;
  }
  template <class U>
  bool operator!=(const AlignedAllocator<U, Align>&) const noexcept {
    return false;
  }
};

template <class T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

}  // namespace varnet
