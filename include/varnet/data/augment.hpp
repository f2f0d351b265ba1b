// Per-image augmentation (random crop of the zero-padded image, horizontal flip) and per-channel
// normalisation, as in the CIFAR recipe (PAPER.md section 3).
//
// An image's transform is a pure function of (seed, epoch, item): one Philox block keyed
// NoiseKey{seed, 0, epoch, stream::kAugment} at the item's index in the data set. So a batch's
// augmentation does not depend on the batch size, its position in the epoch, threading, or a
// resumed run, and the same seed gives the same batches on every platform.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "varnet/core/error.hpp"
#include "varnet/core/parallel.hpp"
#include "varnet/core/random.hpp"
#include "varnet/core/tensor.hpp"
#include "varnet/data/idx.hpp"

namespace varnet::data {

struct AugmentOptions {
  int64_t pad = 4;    // crop offsets in [0, 2 * pad] of the image padded by `pad` zeros per side
  bool flip = true;   // mirror left-right with probability 1/2
  uint64_t seed = 0;  // with the epoch and the item index, decides each image's transform
};

// Where one image's crop window sits in its padded image, and whether it is mirrored.
struct CropFlip {
  int64_t top = 0, left = 0;  // in [0, 2 * pad]; (pad, pad) is the unmoved image
  bool flip = false;
};

// The transform of item `item` in epoch `epoch`. The offsets map a 32-bit word w to
// (w * (2 pad + 1)) >> 32, whose bias (at most 2 pad + 1 in 2^32) is far below anything training
// could notice, and which keeps one Philox block per image.
inline CropFlip draw_crop_flip(const AugmentOptions& o, uint32_t epoch, int64_t item) {
  check(o.pad >= 0 && o.pad < 1024, "augmentation", "a padding in [0, 1024)", o.pad);
  const NoiseKey key{o.seed, 0, epoch, stream::kAugment};
  const Philox4x32::Counter w = key.block(static_cast<uint64_t>(item));
  const uint64_t span = static_cast<uint64_t>(2 * o.pad + 1);
  CropFlip t;
  t.top = static_cast<int64_t>((uint64_t(w.v[0]) * span) >> 32);
  t.left = static_cast<int64_t>((uint64_t(w.v[1]) * span) >> 32);
  t.flip = o.flip && (w.v[2] & 1u);
  return t;
}

// dst (C, H, W) = the H x W window at (t.top, t.left) of src (C, H, W) padded by `pad` zeros on
// every side, mirrored left-right when t.flip. src and dst must not overlap.
template <class T>
void crop_flip_image(const T* src, T* dst, int64_t c, int64_t h, int64_t w, int64_t pad,
                     const CropFlip& t) {
  const int64_t dy = t.top - pad, dx = t.left - pad;  // dst(r, q) = src(r + dy, q + dx)
  for (int64_t ch = 0; ch < c; ++ch) {
    const T* in = src + ch * h * w;
    T* out = dst + ch * h * w;
    for (int64_t r = 0; r < h; ++r) {
      const int64_t sr = r + dy;
      T* row = out + r * w;
      for (int64_t q = 0; q < w; ++q) {
        const int64_t sq = q + dx;
        const bool inside = sr >= 0 && sr < h && sq >= 0 && sq < w;
        row[t.flip ? w - 1 - q : q] = inside ? in[sr * w + sq] : T(0);
      }
    }
  }
}

// Augments a gathered batch x (count, C, H, W) in place: its image k is data set item
// order[first + k] (the arguments gather_batch was given). Pad with zeros: on normalised images
// (normalize below) that is the channel mean, as padding before normalisation would not be.
template <class T>
void augment_batch(TensorView<T> x, const std::vector<int64_t>& order, int64_t first,
                   const AugmentOptions& o, uint32_t epoch) {
  const Shape s = x.shape;
  const int64_t size = static_cast<int64_t>(order.size());
  check(first >= 0 && s.n <= size - first, "augment_batch",
        str("a batch of items within the order's ", size, " entries"), "first ", first, ", count ",
        s.n);
  check(o.pad < s.h && o.pad < s.w, "augment_batch",
        str("a padding smaller than the image (", s.h, "x", s.w, ")"), o.pad);
  const int64_t per = s.per_sample();
  parallel_for(
      s.n,
      [&](int64_t k) {
        thread_local std::vector<T> copy;
        copy.assign(x.data + k * per, x.data + (k + 1) * per);
        const CropFlip t = draw_crop_flip(o, epoch, order[size_t(first + k)]);
        crop_flip_image(copy.data(), x.data + k * per, s.c, s.h, s.w, o.pad, t);
      },
      per);
}

// Per-channel mean and standard deviation of a data set's images (N, C, H, W).
struct ChannelStats {
  std::vector<double> mean, stddev;
};

// Computed in double over every pixel of every image (the training set's, so that the test set is
// normalised with statistics it did not contribute to). A constant channel (stddev 0, e.g. the
// one channel of an all-black image set) gets stddev 1, so normalising only centres it.
inline ChannelStats channel_stats(const LabeledImages& d) {
  const Shape s = d.images.shape();
  check(s.n > 0, "channel_stats(" + d.source + ")", "at least one image", "none");
  ChannelStats st;
  st.mean.assign(size_t(s.c), 0.0);
  st.stddev.assign(size_t(s.c), 0.0);
  const float* p = d.images.data();
  const double count = double(s.n) * double(s.plane());
  for (int64_t c = 0; c < s.c; ++c) {
    double sum = 0;
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t e = 0; e < s.plane(); ++e) sum += p[(i * s.c + c) * s.plane() + e];
    const double mean = sum / count;
    double sq = 0;  // two passes: no cancellation when the mean is large against the spread
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t e = 0; e < s.plane(); ++e) {
        const double v = p[(i * s.c + c) * s.plane() + e] - mean;
        sq += v * v;
      }
    const double sd = std::sqrt(sq / count);
    st.mean[size_t(c)] = mean;
    st.stddev[size_t(c)] = sd > 1e-12 ? sd : 1.0;
  }
  return st;
}

// x <- (x - mean_c) / stddev_c on every pixel of channel c, in place.
inline void normalize(LabeledImages& d, const ChannelStats& st) {
  const Shape s = d.images.shape();
  check(st.mean.size() == size_t(s.c) && st.stddev.size() == size_t(s.c),
        "normalize(" + d.source + ")", str("statistics for its ", s.c, " channels"), st.mean.size(),
        " means and ", st.stddev.size(), " deviations");
  float* p = d.images.data();
  for (int64_t i = 0; i < s.n; ++i)
    for (int64_t c = 0; c < s.c; ++c) {
      const float m = float(st.mean[size_t(c)]), inv = float(1.0 / st.stddev[size_t(c)]);
      float* plane = p + (i * s.c + c) * s.plane();
      for (int64_t e = 0; e < s.plane(); ++e) plane[e] = (plane[e] - m) * inv;
    }
}

}  // namespace varnet::data
