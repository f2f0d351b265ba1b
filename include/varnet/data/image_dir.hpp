// One entry point for a data directory: CIFAR-10, CIFAR-100, or MNIST-format IDX files (MNIST,
// Fashion-MNIST) zero-padded to 32x32, so that a 32x32 network (models/vgg.hpp) trains on any of
// them. Fashion-MNIST is the real data set installed on these machines; CIFAR cannot be
// downloaded here (PAPER.md section 8).
#pragma once

#include <algorithm>
#include <filesystem>
#include <string>

#include "varnet/core/error.hpp"
#include "varnet/core/tensor.hpp"
#include "varnet/data/cifar.hpp"
#include "varnet/data/idx.hpp"

namespace varnet::data {

// Centres images (N, C, H, W) in (N, C, side, side) with zero borders: 28x28 to 32x32 puts 2 zero
// rows and columns on each side. An odd difference puts the extra row or column after the image.
inline LabeledImages pad_images(const LabeledImages& d, int64_t side) {
  const Shape s = d.images.shape();
  check(side >= s.h && side >= s.w, "pad_images(" + d.source + ")",
        str("images of at most ", side, "x", side, " pixels"), s.h, "x", s.w);
  const int64_t top = (side - s.h) / 2, left = (side - s.w) / 2;
  LabeledImages out;
  out.images = Tensor<float>(Shape(s.n, s.c, side, side));  // zero-filled
  out.labels = d.labels;
  out.classes = d.classes;
  out.source = d.source;
  const float* src = d.images.data();
  float* dst = out.images.data();
  for (int64_t p = 0; p < s.n * s.c; ++p)  // one (n, c) plane at a time
    for (int64_t r = 0; r < s.h; ++r) {
      const float* from = src + (p * s.h + r) * s.w;
      std::copy(from, from + s.w, dst + (p * side + top + r) * side + left);
    }
  return out;
}

// The four MNIST-format files of `dir` (load_mnist_dir), each image zero-padded to side x side.
inline ImageDataset load_mnist_padded(const std::string& dir, int64_t side = 32) {
  const MnistFormatData d = load_mnist_dir(dir);
  ImageDataset out;
  out.train = pad_images(d.train, side);
  out.test = pad_images(d.test, side);
  const Shape s = d.train.images.shape();
  out.format = str("MNIST-format IDX, ", s.h, "x", s.w, " zero-padded to ", side, "x", side);
  return out;
}

struct ImageDirOptions {
  CifarLabels cifar100_labels = CifarLabels::fine;
  int64_t side = 32;  // MNIST-format images are padded to side x side
};

namespace detail {
// dir itself when it holds `marker`, else dir/sub when that does (the directory a CIFAR archive
// unpacks to), else "".
inline std::string dir_with(const std::string& dir, const std::string& sub,
                            const std::string& marker) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_regular_file(fs::path(dir) / marker, ec)) return dir;
  if (fs::is_regular_file(fs::path(dir) / sub / marker, ec)) return (fs::path(dir) / sub).string();
  return "";
}
}  // namespace detail

// Detects the format of `dir` and reads it, looking in this order for
//   CIFAR-10   data_batch_1.bin (in dir or dir/cifar-10-batches-bin)
//   CIFAR-100  train.bin        (in dir or dir/cifar-100-binary)
//   MNIST      train-images-idx3-ubyte or train-images-idx3-ubyte.gz (in dir)
// The first marker found decides the format; that format's loader then reports anything else
// that is missing or damaged.
inline ImageDataset load_image_dir(const std::string& dir, const ImageDirOptions& o = {}) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    fail(dir, "a directory of CIFAR-10, CIFAR-100 or MNIST-format files",
         fs::exists(dir, ec) ? "a file that is not a directory" : "no such directory");
  }
  if (const std::string d = detail::dir_with(dir, "cifar-10-batches-bin", "data_batch_1.bin");
      !d.empty())
    return load_cifar10_dir(d);
  if (const std::string d = detail::dir_with(dir, "cifar-100-binary", "train.bin"); !d.empty())
    return load_cifar100_dir(d, o.cifar100_labels);
  if (!detail::find_raw_or_gz(dir, "train-images-idx3-ubyte").empty())
    return load_mnist_padded(dir, o.side);
  fail(dir,
       "one of: CIFAR-10 (data_batch_1.bin .. data_batch_5.bin, test_batch.bin, in the directory "
       "or in cifar-10-batches-bin/), CIFAR-100 (train.bin, test.bin, in the directory or in "
       "cifar-100-binary/), MNIST format (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
       "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each raw or .gz)",
       "none of data_batch_1.bin, train.bin, train-images-idx3-ubyte[.gz]");
}

}  // namespace varnet::data
