// Standard normals from the counter-based stream, 32 at a time in AVX2 registers.
//
// The same numbers as normal_at (core/random.hpp), to an ulp or two: Philox4x32-10 words for eight
// consecutive blocks, the same uniform mapping, Box-Muller. What makes it cheap:
// - Philox stays in registers (eight counters per instruction, bit-identical to the scalar one);
// - log is the Cephes single-precision polynomial on the mantissa;
// - the angle 2 pi u is never formed: u is split into a quarter turn q and a remainder t in
//   [-1/2, 1/2] exactly, sin and cos of (pi / 2) t come from one pair of polynomials and q
//   picks the quadrant (sincos_turn in core/random.hpp, which normal_at uses, bit for bit);
// - the four normals of each block are transposed into element order in registers.
// Every lane runs the same instructions, so an element's value does not depend on where a fill
// starts or how a tensor is split.
#pragma once

#if defined(__AVX2__) && defined(__FMA__) && !defined(__CUDA_ARCH__)
#define VARNET_NORMAL_AVX2 1

#include <immintrin.h>

#include <cstdint>

#include "varnet/core/random.hpp"

namespace varnet::ops::avx2 {

// Natural log of x in (0, 1] (normal floats): x = m 2^e with m in [sqrt(1/2), sqrt(2)), then
// log(1 + f), f = m - 1, from the Cephes logf polynomial; within about 1 ulp.
inline __m256 log_unit(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256i bits = _mm256_castps_si256(x);
  __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127));
  __m256 m = _mm256_castsi256_ps(_mm256_or_si256(
      _mm256_and_si256(bits, _mm256_set1_epi32(0x007FFFFF)), _mm256_castps_si256(one)));
  const __m256 big = _mm256_cmp_ps(m, _mm256_set1_ps(1.41421356237f), _CMP_GT_OQ);
  m = _mm256_blendv_ps(m, _mm256_mul_ps(m, _mm256_set1_ps(0.5f)), big);
  e = _mm256_sub_epi32(e, _mm256_castps_si256(big));  // big lanes are -1 as integers: e + 1
  const __m256 fe = _mm256_cvtepi32_ps(e);
  const __m256 f = _mm256_sub_ps(m, one);  // exact
  const __m256 z = _mm256_mul_ps(f, f);
  __m256 p = _mm256_set1_ps(7.0376836292e-2f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(-1.1514610310e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.1676998740e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(-1.2420140846e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.4249322787e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(-1.6668057665e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.0000714765e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(-2.4999993993e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(3.3333331174e-1f));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, f), z);
  // log 2 split in two (0.693359375 is exact in a few bits), as Cephes does
  y = _mm256_fmadd_ps(fe, _mm256_set1_ps(-2.12194440e-4f), y);
  y = _mm256_fnmadd_ps(_mm256_set1_ps(0.5f), z, y);
  return _mm256_fmadd_ps(fe, _mm256_set1_ps(0.693359375f), _mm256_add_ps(f, y));
}

// sincos_turn of core/random.hpp on eight lanes, bit for bit: 2 pi u = (pi / 2)(q + t),
// q = round(4u), t in [-1/2, 1/2], the same polynomials and quadrant selection.
inline void sincos_turn(__m256 u, __m256& sin_out, __m256& cos_out) {
  const __m256 u4 = _mm256_mul_ps(u, _mm256_set1_ps(4.0f));  // exact
  const __m256 q = _mm256_round_ps(u4, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 t = _mm256_sub_ps(u4, q);  // exact
  const __m256 t2 = _mm256_mul_ps(t, t);
  using namespace turn_poly;
  const auto madd = [&](__m256 acc, float k) {
    return _mm256_fmadd_ps(acc, t2, _mm256_set1_ps(k));
  };
  __m256 s = madd(madd(madd(madd(_mm256_set1_ps(kS9), kS7), kS5), kS3), kS1);
  const __m256 c = madd(madd(madd(madd(madd(_mm256_set1_ps(kC10), kC8), kC6), kC4), kC2), kC0);
  s = _mm256_mul_ps(s, t);
  // Quadrant q mod 4: (sin, cos) of a + q pi/2 is (s, c), (c, -s), (-s, -c), (-c, s).
  const __m256i qi = _mm256_cvtps_epi32(q);
  const __m256 swap = _mm256_castsi256_ps(
      _mm256_cmpeq_epi32(_mm256_and_si256(qi, _mm256_set1_epi32(1)), _mm256_set1_epi32(1)));
  const __m256 sin_sign =
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(qi, _mm256_set1_epi32(2)), 30));
  const __m256 cos_sign = _mm256_castsi256_ps(_mm256_slli_epi32(
      _mm256_and_si256(_mm256_add_epi32(qi, _mm256_set1_epi32(1)), _mm256_set1_epi32(2)), 30));
  sin_out = _mm256_xor_ps(_mm256_blendv_ps(s, c, swap), sin_sign);
  cos_out = _mm256_xor_ps(_mm256_blendv_ps(c, s, swap), cos_sign);
}

// uniform_open01 of eight words, exactly.
inline __m256 uniform_open01(__m256i w) {
  const __m256 k = _mm256_cvtepi32_ps(_mm256_srli_epi32(w, 9));  // < 2^23: exact
  return _mm256_mul_ps(_mm256_add_ps(k, _mm256_set1_ps(0.5f)), _mm256_set1_ps(1.0f / 8388608.0f));
}

// Box-Muller on eight pairs of words: z0 = r cos, z1 = r sin, as box_muller in core/random.hpp.
inline void box_muller(__m256i a, __m256i b, __m256& z0, __m256& z1) {
  const __m256 r =
      _mm256_sqrt_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), log_unit(uniform_open01(a))));
  __m256 s, c;
  sincos_turn(uniform_open01(b), s, c);
  z0 = _mm256_mul_ps(r, c);
  z1 = _mm256_mul_ps(r, s);
}

// The normals of elements 4 block .. 4 block + 31 (Philox blocks block .. block + 7) in element
// order: out[k] holds elements 4 block + 8k .. 4 block + 8k + 7.
inline void normals32(const NoiseKey& key, uint64_t block, __m256 out[4]) {
  const Philox4x32::Counter base = key.counter(block);
  const __m256i lo = _mm256_set1_epi32(static_cast<int>(base.v[0]));
  const __m256i c0 = _mm256_add_epi32(lo, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  // block + i carries into the high word where the low word wrapped (unsigned c0 < lo)
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i wrapped =
      _mm256_cmpgt_epi32(_mm256_xor_si256(lo, sign), _mm256_xor_si256(c0, sign));
  __m256i w[4] = {c0, _mm256_sub_epi32(_mm256_set1_epi32(static_cast<int>(base.v[1])), wrapped),
                  _mm256_set1_epi32(static_cast<int>(base.v[2])),
                  _mm256_set1_epi32(static_cast<int>(base.v[3]))};
  Philox4x32::generate8(w, key.key());
  // Lane i: elements 4(block + i) + {0, 1} from words 0, 1 and + {2, 3} from words 2, 3.
  __m256 a0, a1, b0, b1;
  box_muller(w[0], w[1], a0, a1);
  box_muller(w[2], w[3], b0, b1);
  // 4 x 8 -> 8 x 4: lane i's (a0, a1, b0, b1) become four consecutive elements.
  const __m256 t0 = _mm256_unpacklo_ps(a0, a1), t1 = _mm256_unpackhi_ps(a0, a1);
  const __m256 t2 = _mm256_unpacklo_ps(b0, b1), t3 = _mm256_unpackhi_ps(b0, b1);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  out[0] = _mm256_permute2f128_ps(s0, s1, 0x20);
  out[1] = _mm256_permute2f128_ps(s2, s3, 0x20);
  out[2] = _mm256_permute2f128_ps(s0, s1, 0x31);
  out[3] = _mm256_permute2f128_ps(s2, s3, 0x31);
}

}  // namespace varnet::ops::avx2

#endif
