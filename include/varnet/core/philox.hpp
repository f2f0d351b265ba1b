// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011).
//
// A counter-based generator: the output is a pure function of a 128-bit counter and a 64-bit
// key, so any element's noise can be computed independently, on the host or in a CUDA kernel,
// in any order. Known-answer tests against the published vectors are in tests/test_random.cpp.
#pragma once

#include <cstdint>

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
};

}  // namespace varnet
