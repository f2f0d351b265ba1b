// Philox4x32-10 against the published Random123 known-answer vectors, the mapping of (seed,
// layer, step, stream, element) to Philox counters and keys, and the bulk CPU fills against the
// element-wise functions for unaligned starts and counts (uniform words bit for bit; normals to an
// ulp or two, as fill_normal documents, and bit for bit against themselves however split), and
// the accuracy of the Box-Muller transform.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <set>
#include <vector>

#include "catch.hpp"
#include "varnet/core/philox.hpp"
#include "varnet/core/random.hpp"
#include "varnet/ops/noise_cpu.hpp"

using varnet::NoiseKey;
using varnet::Philox4x32;

namespace {

struct Kat {
  uint32_t ctr[4], key[2], out[4];
};

// Random123 kat_vectors, philox4x32 with 10 rounds.
const Kat kKats[] = {
    {{0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u},
     {0x00000000u, 0x00000000u},
     {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
    {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
     {0xffffffffu, 0xffffffffu},
     {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
    {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
     {0xa4093822u, 0x299f31d0u},
     {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
};

// Bit-exact float comparison (NaN-safe, distinguishes -0 from +0).
bool same_bits(float a, float b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

}  // namespace

TEST_CASE("random: Philox4x32-10 known-answer vectors", "[random]") {
  for (const Kat& k : kKats) {
    const Philox4x32::Counter c{{k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3]}};
    const Philox4x32::Key key{{k.key[0], k.key[1]}};
    const Philox4x32::Counter out = Philox4x32::generate(c, key);
    for (int i = 0; i < 4; ++i) {
      INFO("counter " << std::hex << k.ctr[0] << ", word " << i << ": " << out.v[i] << " vs "
                      << k.out[i]);
      CHECK(out.v[i] == k.out[i]);
    }
  }
}

TEST_CASE("random: generate_lanes gives generate()'s words for every lane count", "[random]") {
  // 1..40 lanes: the eight-lane SIMD path (where compiled in) and the scalar tail, mixed.
  for (int count = 1; count <= 40; ++count) {
    std::vector<uint32_t> c[4];
    std::vector<Philox4x32::Counter> want;
    const Philox4x32::Key key{{0xA4093822u, 0x299F31D0u}};
    for (int i = 0; i < count; ++i) {
      const Philox4x32::Counter ctr{
          {uint32_t(i) * 0x9E3779B9u, ~uint32_t(i), 0xFFFFFFFFu - uint32_t(7 * i), uint32_t(i)}};
      for (int w = 0; w < 4; ++w) c[w].push_back(ctr.v[w]);
      want.push_back(Philox4x32::generate(ctr, key));
    }
    Philox4x32::generate_lanes(c[0].data(), c[1].data(), c[2].data(), c[3].data(), count, key);
    int wrong = 0;
    for (int i = 0; i < count; ++i)
      for (int w = 0; w < 4; ++w) wrong += c[w][size_t(i)] != want[size_t(i)].v[w];
    INFO(count << " lanes");
    CHECK(wrong == 0);
  }
}

TEST_CASE("random: NoiseKey packs seed, layer, step and stream into Philox's key and counter",
          "[random]") {
  const NoiseKey k{0x0123456789ABCDEFull, 0x0042u, 0xDEADBEEFu, 0x4001u};
  const Philox4x32::Key key = k.key();
  CHECK(key.v[0] == 0x89ABCDEFu);
  CHECK(key.v[1] == 0x01234567u);
  const Philox4x32::Counter c = k.counter(0x0000000500000007ull);
  CHECK(c.v[0] == 7u);
  CHECK(c.v[1] == 5u);
  CHECK(c.v[2] == 0xDEADBEEFu);
  CHECK(c.v[3] == 0x40010042u);
  const Philox4x32::Counter w = k.block(0x0000000500000007ull);
  const Philox4x32::Counter ref = Philox4x32::generate(c, key);
  for (int i = 0; i < 4; ++i) CHECK(w.v[i] == ref.v[i]);
}

TEST_CASE("random: distinct keys draw distinct words", "[random]") {
  // each coordinate of the key changes the stream; a collision among these would mean two uses
  // of noise share numbers
  std::set<uint32_t> first_words;
  const NoiseKey base{7, 3, 11, 2};
  const NoiseKey variants[] = {
      base,
      {8, 3, 11, 2},
      {7ull | (1ull << 32), 3, 11, 2},
      {7, 4, 11, 2},
      {7, 3, 12, 2},
      {7, 3, 11, 3},
      {7, 3, 11, varnet::stream::kInit},
      {7, 3, 11, varnet::stream::kShuffle},
      {7, 3, 11, varnet::stream::kEnsembleBase},
  };
  for (const NoiseKey& k : variants) first_words.insert(k.block(0).v[0]);
  CHECK(first_words.size() == sizeof(variants) / sizeof(variants[0]));
}

TEST_CASE("random: element-wise functions read the documented Philox lanes", "[random]") {
  const NoiseKey key{42, 1, 2, 3};
  for (uint64_t e = 0; e < 64; ++e) {
    const Philox4x32::Counter w = key.block(e >> 2);
    const uint32_t word = w.v[e & 3];
    CHECK(same_bits(varnet::uniform_at(key, e), varnet::uniform_open01(word)));
    CHECK(varnet::sign_at(key, e) == ((word & 1u) ? 1.0f : -1.0f));
    float z0, z1;
    if ((e & 3) < 2)
      varnet::box_muller(w.v[0], w.v[1], z0, z1);
    else
      varnet::box_muller(w.v[2], w.v[3], z0, z1);
    CHECK(same_bits(varnet::normal_at(key, e), (e & 1) ? z1 : z0));
  }
}

TEST_CASE("random: fill_normal and fill_from_words match normal_at and uniform_at", "[random]") {
  const NoiseKey key{0xFEEDull, 9, 123, 45};
  // starts and counts that begin and end on every lane of a Philox block, runs longer than one
  // chunk of the vectorised fill (256 normals), and starts far from 0
  const uint64_t first = GENERATE(0u, 1u, 2u, 3u, 4u, 5u, 255u, 1022u, 4097u);
  const int64_t count = GENERATE(0, 1, 2, 3, 4, 5, 7, 9, 130, 600);
  INFO("first " << first << ", count " << count);
  const float guard = -12345.0f;
  // fill_normal's SIMD log rounds differently from logf: documented to agree with the scalar
  // normal_at to an ulp or two (of max(1, |z|)), not bit for bit
  const auto near = [](double a, double b) {
    return std::abs(a - b) <=
           4 * double(std::numeric_limits<float>::epsilon()) * std::max(1.0, std::abs(b));
  };

  // the reference: one fill from element 0, which the slice must match bit for bit (an
  // element's value does not depend on how a tensor is split)
  std::vector<float> whole(size_t(first) + size_t(count) + 1);
  varnet::ops::fill_normal(key, 0, int64_t(whole.size()), whole.data());

  std::vector<float> z(size_t(count) + 1, guard);
  varnet::ops::fill_normal(key, first, count, z.data());
  int64_t far = 0, split = 0;
  for (int64_t i = 0; i < count; ++i) {
    far += !near(z[size_t(i)], varnet::normal_at(key, first + uint64_t(i)));
    split += !same_bits(z[size_t(i)], whole[size_t(first) + size_t(i)]);
  }
  CHECK(far == 0);
  CHECK(split == 0);
  CHECK(z[size_t(count)] == guard);  // nothing written past the end

  std::vector<double> zd(size_t(count) + 1, double(guard));
  varnet::ops::fill_normal(key, first, count, zd.data());
  int64_t differ = 0;
  for (int64_t i = 0; i < count; ++i) differ += zd[size_t(i)] != double(z[size_t(i)]);
  CHECK(differ == 0);  // double output: the same float values, converted
  CHECK(zd[size_t(count)] == double(guard));

  std::vector<float> u(size_t(count) + 1, guard);
  varnet::ops::fill_from_words(key, first, count, u.data(),
                               [](uint32_t w) { return varnet::uniform_open01(w); });
  int64_t wrong = 0;
  for (int64_t i = 0; i < count; ++i)
    wrong += !same_bits(u[size_t(i)], varnet::uniform_at(key, first + uint64_t(i)));
  CHECK(wrong == 0);
  CHECK(u[size_t(count)] == guard);

  std::vector<float> s(size_t(count) + 1, guard);
  varnet::ops::fill_from_words(key, first, count, s.data(),
                               [](uint32_t w) { return (w & 1u) ? 1.0f : -1.0f; });
  wrong = 0;
  for (int64_t i = 0; i < count; ++i)
    wrong += s[size_t(i)] != varnet::sign_at(key, first + uint64_t(i));
  CHECK(wrong == 0);
  CHECK(s[size_t(count)] == guard);
}

TEST_CASE("random: fill_normal agrees with normal_at over a million elements", "[random]") {
  const NoiseKey key{0xC0FFEEull, 2, 5, 1};
  const int64_t n = 1 << 20;
  std::vector<float> z(static_cast<size_t>(n));
  varnet::ops::fill_normal(key, 0, n, z.data());
  double worst = 0;
  int64_t at = -1;
  for (int64_t i = 0; i < n; ++i) {
    const double ref = varnet::normal_at(key, uint64_t(i));
    const double err = std::abs(double(z[size_t(i)]) - ref) / std::max(1.0, std::abs(ref));
    if (err > worst) worst = err, at = i;
  }
  INFO("largest |fill_normal - normal_at| / max(1, |z|): " << worst << " at element " << at);
  CHECK(worst <= 4 * double(std::numeric_limits<float>::epsilon()));
}

TEST_CASE("random: normal_at is Box-Muller to a few ulps of the exact transform", "[random]") {
  // The exact value from the same two words in double precision: sincos_turn must not lose the
  // angle's accuracy near u = 1 (where 2 pi u rounded to float would be 2.4e-7 off) nor at the
  // quadrant boundaries.
  const NoiseKey key{0xABCDull, 4, 8, 2};
  double worst = 0;
  for (uint64_t e = 0; e < (1u << 20); ++e) {
    const Philox4x32::Counter w = key.block(e >> 2);
    const uint32_t a = (e & 3) < 2 ? w.v[0] : w.v[2], b = (e & 3) < 2 ? w.v[1] : w.v[3];
    const double r = std::sqrt(-2 * std::log(double(varnet::uniform_open01(a))));
    const double angle = 2 * M_PI * double(varnet::uniform_open01(b));
    const double exact = (e & 1) ? r * std::sin(angle) : r * std::cos(angle);
    worst = std::max(worst,
                     std::abs(varnet::normal_at(key, e) - exact) / std::max(1.0, std::abs(exact)));
  }
  INFO("largest |normal_at - exact| / max(1, |z|): " << worst);
  CHECK(worst <= 4 * double(std::numeric_limits<float>::epsilon()));
}

TEST_CASE("random: sincos_turn is sin and cos of 2 pi u on the whole of [0, 1]", "[random]") {
  // Every 2^-23 step near the quadrant boundaries and the ends, and a coarse grid elsewhere.
  std::vector<float> us;
  for (int q = 0; q <= 4; ++q)
    for (int k = -2000; k <= 2000; ++k) {
      const float u = float(q) / 4 + float(k) / 8388608.0f;
      if (u >= 0 && u <= 1) us.push_back(u);
    }
  for (int k = 0; k <= 100000; ++k) us.push_back(float(k) / 100000);
  double worst = 0;
  for (float u : us) {
    float s, c;
    varnet::sincos_turn(u, s, c);
    const double angle = 2 * M_PI * double(u);
    worst = std::max({worst, std::abs(s - std::sin(angle)), std::abs(c - std::cos(angle))});
  }
  INFO("largest absolute error: " << worst);
  CHECK(worst <= 2 * double(std::numeric_limits<float>::epsilon()));
#ifdef VARNET_NORMAL_AVX2
  // The SIMD twin used by fill_normal gives the same bits.
  int64_t differ = 0;
  for (size_t i = 0; i + 8 <= us.size(); i += 8) {
    __m256 s8, c8;
    varnet::ops::avx2::sincos_turn(_mm256_loadu_ps(us.data() + i), s8, c8);
    alignas(32) float sv[8], cv[8];
    _mm256_store_ps(sv, s8);
    _mm256_store_ps(cv, c8);
    for (size_t l = 0; l < 8; ++l) {
      float s, c;
      varnet::sincos_turn(us[i + l], s, c);
      differ += !same_bits(s, sv[l]) || !same_bits(c, cv[l]);
    }
  }
  CHECK(differ == 0);
#endif
}

TEST_CASE("random: uniform_open01 is strictly inside (0, 1) for every 32-bit word", "[random]") {
  // log(u) must be finite for Box-Muller and uniform_at is documented as the open interval.
  // Checked on the words nearest the ends, and on the largest word of each top-8-bit bucket.
  std::vector<uint32_t> words;
  for (uint32_t i = 0; i < 4096; ++i) {
    words.push_back(i);
    words.push_back(0xFFFFFFFFu - i);
  }
  for (uint32_t top = 0; top < 256; ++top) words.push_back((top << 24) | 0x00FFFFFFu);
  int64_t bad = 0;
  uint32_t first_bad = 0;
  for (uint32_t w : words) {
    const float u = varnet::uniform_open01(w);
    if (!(u > 0.0f && u < 1.0f)) {
      if (bad == 0) first_bad = w;
      ++bad;
    }
  }
  INFO(bad << " words map outside (0, 1), e.g. 0x" << std::hex << first_bad << " -> "
           << varnet::uniform_open01(first_bad));
  CHECK(bad == 0);
}
