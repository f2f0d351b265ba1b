// Augmentation: every crop is a window of the zero-padded image at an offset in [0, 2 pad], flips
// mirror exactly, the same seed gives the same batches (whatever the batch an image falls in),
// and other seeds or epochs give others; per-channel normalisation.
#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "errors.hpp"
#include "varnet/data/augment.hpp"
#include "varnet/data/batches.hpp"

using varnet::Shape;
using varnet::Tensor;
using varnet::data::AugmentOptions;
using varnet::data::CropFlip;
using varnet::data::LabeledImages;
using varnet::test::error_of;
using varnet::test::has;

namespace {

// n images (n, c, h, w) with distinct, non-zero values: element e holds e + 1.
LabeledImages numbered(int64_t n, int64_t c, int64_t h, int64_t w) {
  LabeledImages d;
  d.images = Tensor<float>(Shape(n, c, h, w));
  for (int64_t e = 0; e < d.images.shape().numel(); ++e) d.images.data()[e] = float(e + 1);
  d.labels.assign(size_t(n), 0);
  d.classes = 1;
  d.source = "numbered";
  return d;
}

// The reference: the image padded by `pad` zeros per side, explicitly, and the window read
// from it (mirrored when asked).
std::vector<float> window_of_padded(const float* img, int64_t c, int64_t h, int64_t w, int64_t pad,
                                    const CropFlip& t) {
  const int64_t ph = h + 2 * pad, pw = w + 2 * pad;
  std::vector<float> padded(size_t(c * ph * pw), 0.0f);
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t r = 0; r < h; ++r)
      for (int64_t q = 0; q < w; ++q)
        padded[size_t((ch * ph + r + pad) * pw + q + pad)] = img[(ch * h + r) * w + q];
  std::vector<float> out(size_t(c * h * w));
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t r = 0; r < h; ++r)
      for (int64_t q = 0; q < w; ++q) {
        const int64_t src_q = t.flip ? w - 1 - q : q;
        out[size_t((ch * h + r) * w + q)] =
            padded[size_t((ch * ph + t.top + r) * pw + t.left + src_q)];
      }
  return out;
}

}  // namespace

TEST_CASE("crop offsets stay in [0, 2 pad] and cover every window; flips are about half",
          "[augment]") {
  AugmentOptions o;
  o.seed = 5;
  std::set<int64_t> tops, lefts;
  std::set<std::pair<int64_t, int64_t>> windows;
  int flips = 0;
  const int n = 4000;
  for (int i = 0; i < n; ++i) {
    const CropFlip t = varnet::data::draw_crop_flip(o, 3, i);
    tops.insert(t.top);
    lefts.insert(t.left);
    windows.insert({t.top, t.left});
    flips += t.flip;
  }
  CHECK((*tops.begin() == 0 && *tops.rbegin() == 2 * o.pad && tops.size() == 9));
  CHECK((*lefts.begin() == 0 && *lefts.rbegin() == 2 * o.pad && lefts.size() == 9));
  // the two offsets are drawn independently: every one of the 81 windows turns up (about 49
  // times each in 4000 draws)
  CHECK(windows.size() == 81);
  CHECK(std::abs(flips - n / 2) < 4 * std::sqrt(n / 4.0));  // 4 sigma
  o.flip = false;
  o.pad = 0;
  for (int i = 0; i < 100; ++i) {
    const CropFlip t = varnet::data::draw_crop_flip(o, 3, i);
    CHECK((t.top == 0 && t.left == 0 && !t.flip));
  }
}

TEST_CASE("every crop is the window of the zero-padded image; flips mirror exactly", "[augment]") {
  const LabeledImages d = numbered(1, 3, 6, 7);
  const int64_t pad = 2;
  std::vector<float> out(size_t(3 * 6 * 7));
  for (int64_t top = 0; top <= 2 * pad; ++top)
    for (int64_t left = 0; left <= 2 * pad; ++left)
      for (bool flip : {false, true}) {
        const CropFlip t{top, left, flip};
        varnet::data::crop_flip_image(d.images.data(), out.data(), 3, 6, 7, pad, t);
        INFO("top " << top << " left " << left << " flip " << flip);
        CHECK(out == window_of_padded(d.images.data(), 3, 6, 7, pad, t));
      }
  // The centred window unflipped is the image; flipped, each row reversed.
  varnet::data::crop_flip_image(d.images.data(), out.data(), 3, 6, 7, pad, CropFlip{2, 2, false});
  CHECK(std::vector<float>(d.images.data(), d.images.data() + 126) == out);
  varnet::data::crop_flip_image(d.images.data(), out.data(), 3, 6, 7, pad, CropFlip{2, 2, true});
  int bad = 0;
  for (int64_t ch = 0; ch < 3; ++ch)
    for (int64_t r = 0; r < 6; ++r)
      for (int64_t q = 0; q < 7; ++q)
        bad += out[size_t((ch * 6 + r) * 7 + q)] != d.images.view().at(0, ch, r, 6 - q);
  CHECK(bad == 0);
}

TEST_CASE("augment_batch: same seed, same batches; an image's transform ignores its batch",
          "[augment]") {
  const LabeledImages d = numbered(16, 3, 8, 8);
  const auto order = varnet::data::shuffled_order(16, 1, 0);
  AugmentOptions o;
  o.pad = 2;
  o.seed = 11;
  const auto batch = [&](const AugmentOptions& opt, uint32_t epoch, int64_t first, int64_t count) {
    Tensor<float> x;
    std::vector<int32_t> y;
    varnet::data::gather_batch(d, order, first, count, x, y);
    varnet::data::augment_batch(x.view(), order, first, opt, epoch);
    return std::vector<float>(x.data(), x.data() + x.shape().numel());
  };
  const std::vector<float> a = batch(o, 0, 0, 16);
  CHECK(a == batch(o, 0, 0, 16));
  // Each image matches the reference transform of its data set item.
  int bad = 0;
  for (int64_t k = 0; k < 16; ++k) {
    const int64_t item = order[size_t(k)];
    const CropFlip t = varnet::data::draw_crop_flip(o, 0, item);
    const auto want = window_of_padded(d.images.data() + item * 192, 3, 8, 8, 2, t);
    bad += std::vector<float>(a.begin() + k * 192, a.begin() + (k + 1) * 192) != want;
  }
  CHECK(bad == 0);
  // Two batches of 8 give the same images as one of 16.
  std::vector<float> halves = batch(o, 0, 0, 8);
  const std::vector<float> second = batch(o, 0, 8, 8);
  halves.insert(halves.end(), second.begin(), second.end());
  CHECK(halves == a);
  // Another seed or another epoch: other transforms.
  AugmentOptions other = o;
  other.seed = 12;
  CHECK(batch(other, 0, 0, 16) != a);
  CHECK(batch(o, 1, 0, 16) != a);
  // Without padding or flips the batch is untouched.
  other.pad = 0;
  other.flip = false;
  Tensor<float> x;
  std::vector<int32_t> y;
  varnet::data::gather_batch(d, order, 0, 16, x, y);
  const std::vector<float> plain(x.data(), x.data() + x.shape().numel());
  CHECK(batch(other, 0, 0, 16) == plain);
}

TEST_CASE("augment_batch refuses a padding as large as the image and ranges past the order",
          "[augment]") {
  const LabeledImages d = numbered(4, 1, 4, 4);
  const auto order = varnet::data::shuffled_order(4, 1, 0);
  Tensor<float> x;
  std::vector<int32_t> y;
  varnet::data::gather_batch(d, order, 0, 4, x, y);
  AugmentOptions o;  // pad 4 on 4x4 images
  CHECK(has(error_of([&] { varnet::data::augment_batch(x.view(), order, 0, o, 0); }),
            "a padding smaller than the image (4x4), found 4"));
  o.pad = 1;
  CHECK(has(error_of([&] { varnet::data::augment_batch(x.view(), order, 1, o, 0); }),
            "a batch of items within the order's 4 entries"));
}

TEST_CASE("channel statistics and normalisation: mean 0 and deviation 1 per channel", "[augment]") {
  LabeledImages d;
  d.images = Tensor<float>(Shape(3, 2, 2, 2));
  d.source = "three";
  // Channel 0 holds 1..12 spread over the images; channel 1 is constant 5.
  float v = 1;
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t e = 0; e < 4; ++e) {
      d.images.view().at(i, 0, e / 2, e % 2) = v++;
      d.images.view().at(i, 1, e / 2, e % 2) = 5;
    }
  const varnet::data::ChannelStats st = varnet::data::channel_stats(d);
  CHECK(st.mean[0] == Approx(6.5));
  CHECK(st.stddev[0] == Approx(std::sqrt((144.0 - 1) / 12)));  // uniform 1..12: (n^2 - 1) / 12
  CHECK(st.mean[1] == Approx(5));
  CHECK(st.stddev[1] == 1);  // constant: only centred
  varnet::data::normalize(d, st);
  double sum = 0, sq = 0;
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t e = 0; e < 4; ++e) {
      const double x = d.images.view().at(i, 0, e / 2, e % 2);
      sum += x;
      sq += x * x;
      CHECK(d.images.view().at(i, 1, e / 2, e % 2) == 0);
    }
  CHECK(sum / 12 == Approx(0).margin(1e-6));
  CHECK(sq / 12 == Approx(1).epsilon(1e-6));
  varnet::data::ChannelStats wrong;
  wrong.mean = {0};
  wrong.stddev = {1};
  CHECK(has(error_of([&] { varnet::data::normalize(d, wrong); }), "statistics for its 2 channels"));
}
