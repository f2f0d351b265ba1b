// Noise as a pure function of (seed, layer, step, stream, element).
//
// Every random number in varnet (LRT noise, sampled weights, dropout masks, shuffles,
// initialisation) comes from NoiseKey + element index through Philox4x32-10. One Philox call
// gives four 32-bit words, used for elements 4b..4b+3 of a tensor. Consequences: the backward
// pass can recompute noise instead of storing it, a resumed run draws exactly the noise of an
// uninterrupted one, and the CPU and GPU backends draw the same samples.
#pragma once

#include <cmath>
#include <cstdint>

#include "varnet/core/error.hpp"
#include "varnet/core/host_device.hpp"
#include "varnet/core/philox.hpp"

namespace varnet {

// Streams separate independent uses of the same (seed, layer, step). Training sample k of a
// K-sample objective uses stream k; the rest are fixed purposes.
namespace stream {
constexpr uint32_t kEnsembleBase = 0x4000;  // evaluation sample k uses kEnsembleBase + k
constexpr uint32_t kInit = 0xFF00;          // parameter initialisation
constexpr uint32_t kShuffle = 0xFF01;       // data order
constexpr uint32_t kAugment = 0xFF04;       // augmentation (0xFF02, 03: attacks, curvature)
constexpr uint32_t kMax = 0xFFFF;
}  // namespace stream

struct NoiseKey {
  uint64_t seed = 0;
  uint32_t layer = 0;   // < 65536: position of the layer in its network
  uint32_t step = 0;    // optimisation step (or epoch for shuffles)
  uint32_t stream = 0;  // < 65536, see namespace stream

  VARNET_HOST_DEVICE Philox4x32::Counter counter(uint64_t block) const {
    return Philox4x32::Counter{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                                step, (layer & 0xFFFFu) | (stream << 16)}};
  }
  VARNET_HOST_DEVICE Philox4x32::Key key() const {
    return Philox4x32::Key{{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)}};
  }
  // The four words for elements 4*block .. 4*block+3.
  VARNET_HOST_DEVICE Philox4x32::Counter block(uint64_t block) const {
    return Philox4x32::generate(counter(block), key());
  }
};

// The noise of a batch that may stack several noise samples, for ensembles in one pass: with
// rows_per_sample = R > 0, rows [k R, (k + 1) R) of the batch are sample k, and sample k draws
// from stream key.stream + k exactly what a batch of its own R rows draws from its stream. So a
// stacked pass of K samples gives the K separate passes' numbers. R = 0: one sample (the usual
// batch). Row-wise code uses row_key / row_in_sample; flat kernels over an (N, ...) tensor walk
// its Philox groups with groups / group.
struct BatchNoise {
  NoiseKey key;
  int64_t rows_per_sample = 0;

  BatchNoise() = default;
  VARNET_HOST_DEVICE BatchNoise(const NoiseKey& k, int64_t rows = 0)  // NOLINT: implicit on purpose
      : key(k), rows_per_sample(rows) {}

  bool stacked() const { return rows_per_sample > 0; }
  // The key row r of the batch draws from, and its row index within its sample.
  VARNET_HOST_DEVICE NoiseKey row_key(int64_t r) const {
    NoiseKey k = key;
    if (rows_per_sample > 0) k.stream += static_cast<uint32_t>(r / rows_per_sample);
    return k;
  }
  VARNET_HOST_DEVICE int64_t row_in_sample(int64_t r) const {
    return rows_per_sample > 0 ? r % rows_per_sample : r;
  }
  // Elements per sample of a flat (N, ...) tensor of `numel` elements, `row_numel` per row.
  VARNET_HOST_DEVICE int64_t sample_numel(int64_t numel, int64_t row_numel) const {
    return rows_per_sample > 0 ? rows_per_sample * row_numel : numel;
  }
  // Philox groups (4 elements, one block) of such a tensor: each sample's elements start a group.
  VARNET_HOST_DEVICE int64_t groups(int64_t numel, int64_t row_numel) const {
    const int64_t per = sample_numel(numel, row_numel);
    return per > 0 ? (numel / per) * ((per + 3) / 4) : 0;
  }
  // Group g: elements [first, end) of the tensor, drawn from `block` of `key` (lane e - first).
  struct Group {
    NoiseKey key;
    uint64_t block;
    int64_t first, end;
  };
  VARNET_HOST_DEVICE Group group(int64_t g, int64_t numel, int64_t row_numel) const {
    if (rows_per_sample <= 0)  // one sample: no division on the training kernels' path
      return Group{key, static_cast<uint64_t>(g), 4 * g, 4 * g + 4 < numel ? 4 * g + 4 : numel};
    const int64_t per = sample_numel(numel, row_numel), per_groups = (per + 3) / 4;
    const int64_t k = g / per_groups, local = 4 * (g - k * per_groups);
    NoiseKey s = key;
    s.stream += static_cast<uint32_t>(k);
    const int64_t first = k * per + local;
    return Group{s, static_cast<uint64_t>(local >> 2), first,
                 first + (per - local < 4 ? per - local : 4)};
  }
};

// Throws unless a batch of n rows splits into whole samples of `noise` (any n when unstacked).
inline void check_stacked_rows(const BatchNoise& noise, int64_t n, const char* where) {
  if (noise.rows_per_sample == 0) return;  // every launch of a training step: no message built
  check(
      noise.rows_per_sample >= 0 && (noise.rows_per_sample == 0 || n % noise.rows_per_sample == 0),
      where, str("a batch of whole stacked samples of ", noise.rows_per_sample, " rows"), n,
      " rows");
}

// A 32-bit word to a float uniform on the open interval (0, 1): its top 23 bits, centred in
// their cell. Every value is exact in float (k + 0.5 < 2^23 needs no rounding), so the result is
// never 0 or 1 and log(u) is always finite.
VARNET_HOST_DEVICE float uniform_open01(uint32_t x) {
  return (static_cast<float>(x >> 9) + 0.5f) * (1.0f / 8388608.0f);
}

// a * b + c, fused where the hardware has it (CUDA; x86 built with FMA), so that the scalar code
// rounds as the GPU and the AVX2 code (ops/normal_avx2.hpp) do.
VARNET_HOST_DEVICE float fused_madd(float a, float b, float c) {
#if defined(__CUDA_ARCH__) || defined(__FMA__)
  return fmaf(a, b, c);
#else
  return a * b + c;
#endif
}

// Taylor coefficients of sin((pi / 2) t) / t and cos((pi / 2) t) in t^2, for |t| <= 1/2: the
// terms left out (t^11, t^12) are below 2e-9.
namespace turn_poly {  // scalars (not arrays), so that CUDA device code may read them
constexpr float kS9 = 1.6044118478735982e-4f, kS7 = -4.6817541353186881e-3f,
                kS5 = 7.9692626246167045e-2f, kS3 = -6.4596409750624625e-1f,
                kS1 = 1.5707963267948966f;
constexpr float kC10 = -2.5202042373060605e-5f, kC8 = 9.1926027483942658e-4f,
                kC6 = -2.0863480763352961e-2f, kC4 = 2.5366950790104801e-1f,
                kC2 = -1.2337005501361698f, kC0 = 1.0f;
}  // namespace turn_poly

// sin(2 pi u) and cos(2 pi u) for u in [0, 1], without rounding 2 pi u to float (which would cost
// up to 2.4e-7 of angle near u = 1): 4u = q + t exactly, q = round(4u), |t| <= 1/2, then the
// polynomials of (pi / 2) t and the quadrant q mod 4. ops/normal_avx2.hpp is the same in SIMD.
VARNET_HOST_DEVICE void sincos_turn(float u, float& sin_out, float& cos_out) {
  const float u4 = 4.0f * u;  // exact
  const float q = rintf(u4);
  const float t = u4 - q;  // exact
  const float t2 = t * t;
  using namespace turn_poly;
  float s = fused_madd(fused_madd(fused_madd(fused_madd(kS9, t2, kS7), t2, kS5), t2, kS3), t2, kS1);
  const float c = fused_madd(
      fused_madd(fused_madd(fused_madd(fused_madd(kC10, t2, kC8), t2, kC6), t2, kC4), t2, kC2), t2,
      kC0);
  s *= t;
  // (sin, cos) of a + q pi / 2 is (s, c), (c, -s), (-s, -c), (-c, s) for q mod 4 = 0, 1, 2, 3.
  const int qi = static_cast<int>(q);
  const float a = (qi & 1) ? c : s, b = (qi & 1) ? s : c;
  sin_out = (qi & 2) ? -a : a;
  cos_out = ((qi + 1) & 2) ? -b : b;
}

// Box-Muller: two words to two standard normals. Elements 4b, 4b+1 use words 0, 1 and elements
// 4b+2, 4b+3 use words 2, 3. Computed in float on both backends, so that the CPU and GPU agree
// to a few ulps (logf is the only libm call).
VARNET_HOST_DEVICE void box_muller(uint32_t a, uint32_t b, float& z0, float& z1) {
  const float r = sqrtf(-2.0f * logf(uniform_open01(a)));
  float s, c;
  sincos_turn(uniform_open01(b), s, c);
  z0 = r * c;
  z1 = r * s;
}

// Standard normal for one element.
VARNET_HOST_DEVICE float normal_at(const NoiseKey& key, uint64_t element) {
  const Philox4x32::Counter w = key.block(element >> 2);
  const unsigned lane = static_cast<unsigned>(element & 3u);
  float z0, z1;
  if (lane < 2) {
    box_muller(w.v[0], w.v[1], z0, z1);
  } else {
    box_muller(w.v[2], w.v[3], z0, z1);
  }
  return (lane & 1u) ? z1 : z0;
}

// Uniform on (0, 1) for one element.
VARNET_HOST_DEVICE float uniform_at(const NoiseKey& key, uint64_t element) {
  return uniform_open01(key.block(element >> 2).v[element & 3u]);
}

// Rademacher sign (+1 or -1, probability 1/2 each) for one element.
VARNET_HOST_DEVICE float sign_at(const NoiseKey& key, uint64_t element) {
  return (key.block(element >> 2).v[element & 3u] & 1u) ? 1.0f : -1.0f;
}

// Bernoulli(p): 1 with probability p.
VARNET_HOST_DEVICE float bernoulli_at(const NoiseKey& key, uint64_t element, float p) {
  return uniform_at(key, element) < p ? 1.0f : 0.0f;
}

}  // namespace varnet
