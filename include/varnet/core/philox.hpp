// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011).
//
// A counter-based generator: the output is a pure function of a 128-bit counter and a 64-bit
// key, so any element's noise can be computed independently, on the host or in a CUDA kernel,
// in any order. Known-answer tests against the published vectors are in tests/test_random.cpp.
#pragma once

#include <cstdint>

#if defined(__AVX2__) && !defined(__CUDA_ARCH__)
#include <immintrin.h>
#endif

#include "varnet/core/host_device.hpp"

namespace varnet {

struct Philox4x32 {
  struct Counter {
    uint32_t v[4];
  };
  struct Key {
    uint32_t v[2];
  };

  static constexpr uint32_t kMul0 = 0xD2511F53u;
  static constexpr uint32_t kMul1 = 0xCD9E8D57u;
  static constexpr uint32_t kWeyl0 = 0x9E3779B9u;  // golden ratio
  static constexpr uint32_t kWeyl1 = 0xBB67AE85u;  // sqrt(3) - 1

  VARNET_HOST_DEVICE static void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
    const uint64_t p = static_cast<uint64_t>(a) * b;
    hi = static_cast<uint32_t>(p >> 32);
    lo = static_cast<uint32_t>(p);
  }

  VARNET_HOST_DEVICE static Counter round(Counter c, Key k) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kMul0, c.v[0], hi0, lo0);
    mulhilo(kMul1, c.v[2], hi1, lo1);
    return Counter{{hi1 ^ c.v[1] ^ k.v[0], lo1, hi0 ^ c.v[3] ^ k.v[1], lo0}};
  }

  // Ten rounds, the key bumped by the Weyl constants between rounds.
  VARNET_HOST_DEVICE static Counter generate(Counter c, Key k) {
    for (int r = 0; r < 10; ++r) {
      if (r > 0) {
        k.v[0] += kWeyl0;
        k.v[1] += kWeyl1;
      }
      c = round(c, k);
    }
    return c;
  }

  // generate() for `count` counters at once, structure of arrays: lane i of c0..c3 holds word
  // 0..3 of counter i on entry and of its output on return. The loop over lanes has no
  // dependences, so the compiler turns it into SIMD multiplies (8 to 16 counters per instruction
  // with AVX2 or AVX-512); the words are those of generate() exactly.
  static void generate_lanes(uint32_t* c0, uint32_t* c1, uint32_t* c2, uint32_t* c3, int count,
                             Key k) {
#if defined(__AVX2__) && !defined(__CUDA_ARCH__)
    // Eight counters per step with the 32 x 32 -> 64-bit multiplies written out: what the
    // compiler makes of the loop below shuffles each product through 64-bit lanes and back.
    const int whole = count / 8 * 8;
    for (int i = 0; i < whole; i += 8) generate8(c0 + i, c1 + i, c2 + i, c3 + i, k);
    c0 += whole, c1 += whole, c2 += whole, c3 += whole, count -= whole;
#endif
    for (int r = 0; r < 10; ++r) {
      if (r > 0) {
        k.v[0] += kWeyl0;
        k.v[1] += kWeyl1;
      }
      for (int i = 0; i < count; ++i) {
        const uint64_t p0 = static_cast<uint64_t>(kMul0) * c0[i];
        const uint64_t p1 = static_cast<uint64_t>(kMul1) * c2[i];
        const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1[i] ^ k.v[0];
        const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3[i] ^ k.v[1];
        c0[i] = n0;
        c1[i] = static_cast<uint32_t>(p1);
        c2[i] = n2;
        c3[i] = static_cast<uint32_t>(p0);
      }
    }
  }

#if defined(__AVX2__) && !defined(__CUDA_ARCH__)
  // generate() for eight counters in registers: c[w] holds word w of the eight counters, one
  // per 32-bit lane. _mm256_mul_epu32 multiplies the even lanes only, giving 64-bit products
  // whose halves are a round's hi and lo words; so the rounds run on the even lanes and, shifted
  // down, the odd lanes as two separate states whose upper halves are never read, and the lanes
  // are put back together once at the end. (Sixteen counters at once give the processor more
  // independent chains, but with Box-Muller after them spill AVX2's 16 registers.)
  static void generate8(__m256i (&c)[4], Key k) {
    const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kMul0));
    const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kMul1));
    __m256i s[2][4];  // s[0] the even lanes, s[1] the odd lanes
    for (int w = 0; w < 4; ++w) {
      s[0][w] = c[w];
      s[1][w] = _mm256_srli_epi64(c[w], 32);
    }
    for (int r = 0; r < 10; ++r) {
      if (r > 0) {
        k.v[0] += kWeyl0;
        k.v[1] += kWeyl1;
      }
      const __m256i k0 = _mm256_set1_epi32(static_cast<int>(k.v[0]));
      const __m256i k1 = _mm256_set1_epi32(static_cast<int>(k.v[1]));
      for (auto& h : s) {
        const __m256i p0 = _mm256_mul_epu32(h[0], m0);  // lo word, hi word
        const __m256i p1 = _mm256_mul_epu32(h[2], m1);
        h[0] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p1, 32), h[1]), k0);
        h[1] = p1;
        h[2] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p0, 32), h[3]), k1);
        h[3] = p0;
      }
    }
    for (int w = 0; w < 4; ++w)
      c[w] = _mm256_blend_epi32(s[0][w], _mm256_slli_epi64(s[1][w], 32), 0xAA);
  }
  static void generate8(uint32_t* p0, uint32_t* p1, uint32_t* p2, uint32_t* p3, Key k) {
    uint32_t* p[4] = {p0, p1, p2, p3};
    __m256i c[4];
    for (int w = 0; w < 4; ++w) c[w] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p[w]));
    generate8(c, k);
    for (int w = 0; w < 4; ++w) _mm256_storeu_si256(reinterpret_cast<__m256i*>(p[w]), c[w]);
  }
#endif
};

}  // namespace varnet
