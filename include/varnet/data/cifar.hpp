// CIFAR-10 and CIFAR-100 in their binary formats ("CIFAR-10 binary version", "CIFAR-100 binary
// version" on https://www.cs.toronto.edu/~kriz/cifar.html).
//
// A file is a sequence of records, no header: CIFAR-10 has 1 label byte then 3072 pixel bytes;
// CIFAR-100 has 2 label bytes (coarse, fine) then 3072. Pixels are three 32x32 planes (red, green,
// blue), row-major, which is exactly one (C, H, W) = (3, 32, 32) sample. CIFAR-10 ships as
// data_batch_1.bin .. data_batch_5.bin and test_batch.bin, CIFAR-100 as train.bin and test.bin.
// With no header, the format's only self-checks are whole records and labels in range, so both
// are checked, and each error names the file and the record.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "varnet/core/error.hpp"
#include "varnet/core/tensor.hpp"
#include "varnet/data/idx.hpp"

namespace varnet::data {

enum class CifarFormat { cifar10, cifar100 };
enum class CifarLabels { fine, coarse };  // CIFAR-100 only: 100 fine or 20 coarse classes

namespace detail {

constexpr int64_t kCifarSide = 32, kCifarChannels = 3;
constexpr int64_t kCifarPixels = kCifarChannels * kCifarSide * kCifarSide;  // 3072
// No CIFAR file is near this (CIFAR-100's train.bin is 153.7 MB); a larger one is not CIFAR, and
// reading it whole would be a surprise.
constexpr uint64_t kCifarMaxFile = uint64_t(1) << 31;

inline int64_t cifar_label_bytes(CifarFormat f) {
  return f == CifarFormat::cifar10 ? 1 : 2;
}
inline int64_t cifar_record(CifarFormat f) {
  return cifar_label_bytes(f) + kCifarPixels;
}
inline const char* cifar_name(CifarFormat f) {
  return f == CifarFormat::cifar10 ? "CIFAR-10" : "CIFAR-100";
}
inline int cifar_classes(CifarFormat f, CifarLabels l) {
  if (f == CifarFormat::cifar10) return 10;
  return l == CifarLabels::fine ? 100 : 20;
}

// The whole file as bytes, after checking that it exists and is not absurdly large.
inline std::vector<uint8_t> read_whole_file(const std::string& path, const std::string& what) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (!fs::exists(status)) fail(path, "an existing " + what, "no such file");
  if (!fs::is_regular_file(status)) fail(path, "a regular file (" + what + ")", "something else");
  const uint64_t size = fs::file_size(path, ec);
  if (ec) fail(path, "a readable " + what, "its size cannot be read: " + ec.message());
  check(size <= kCifarMaxFile, path, str("a ", what, " of at most ", kCifarMaxFile, " bytes"), size,
        " bytes");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "a readable " + what, "it cannot be opened");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(size));
  check(uint64_t(in.gcount()) == size, path, str(size, " bytes (its size on disk)"), in.gcount(),
        " bytes read");
  return bytes;
}

}  // namespace detail

// Reads one CIFAR binary file: images (N, 3, 32, 32) with values byte / 255 in [0, 1], labels,
// classes = 10 (CIFAR-10), 100 (CIFAR-100 fine) or 20 (CIFAR-100 coarse). `labels` is ignored
// for CIFAR-10, whose records have one label.
inline LabeledImages read_cifar_file(const std::string& path, CifarFormat format,
                                     CifarLabels labels = CifarLabels::fine) {
  using namespace detail;
  const std::string what = std::string(cifar_name(format)) + " binary file";
  const std::vector<uint8_t> bytes = read_whole_file(path, what);
  const int64_t record = cifar_record(format);
  const int64_t size = static_cast<int64_t>(bytes.size());
  check(size > 0, path, str("at least one ", cifar_name(format), " record of ", record, " bytes"),
        "an empty file");
  if (size % record != 0) {
    // Name the likely cause: the other CIFAR's records, or a cut-off download.
    const int64_t other =
        cifar_record(format == CifarFormat::cifar10 ? CifarFormat::cifar100 : CifarFormat::cifar10);
    fail(path,
         str("whole ", cifar_name(format), " records of ", record, " bytes (",
             cifar_label_bytes(format), " label byte", format == CifarFormat::cifar10 ? "" : "s",
             " + 3072 pixels)"),
         str(size, " bytes = ", size / record, " records and ", size % record, " bytes",
             size % other == 0 ? str(" (whole records of ", other, " bytes: the other CIFAR?)")
                               : std::string(" (a truncated file?)")));
  }
  const int64_t n = size / record;
  const int classes = cifar_classes(format, labels);
  // CIFAR-100 records hold coarse then fine.
  const int64_t label_at = format == CifarFormat::cifar100 && labels == CifarLabels::fine ? 1 : 0;
  LabeledImages out;
  out.images = Tensor<float>(Shape(n, kCifarChannels, kCifarSide, kCifarSide));
  out.labels.resize(static_cast<size_t>(n));
  out.classes = classes;
  out.source = path;
  float* dst = out.images.data();
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* r = bytes.data() + i * record;
    for (int64_t b = 0; b < cifar_label_bytes(format); ++b) {
      // Both labels of a CIFAR-100 record are checked, so a CIFAR-10 file read as CIFAR-100 (or
      // pixel bytes read as labels) is caught whichever label is used.
      const int limit = format == CifarFormat::cifar10 ? 10 : (b == 0 ? 20 : 100);
      if (r[b] >= limit) {
        const char* which = format == CifarFormat::cifar10 ? "" : (b == 0 ? "coarse " : "fine ");
        fail(path,
             str(which, "labels in [0, ", limit, ") in every ", record, "-byte ",
                 cifar_name(format), " record"),
             str(int(r[b]), " in record ", i, " (byte offset ", i * record + b, ")"));
      }
    }
    out.labels[size_t(i)] = r[label_at];
    const uint8_t* px = r + cifar_label_bytes(format);
    float* to = dst + i * kCifarPixels;
    for (int64_t e = 0; e < kCifarPixels; ++e) to[e] = px[e] / 255.0f;
  }
  return out;
}

// Concatenates labelled image sets of one sample shape and class count, in order.
inline LabeledImages concat_images(const std::vector<LabeledImages>& parts) {
  check(!parts.empty(), "concat_images", "at least one image set", "none");
  const Shape s0 = parts[0].images.shape();
  int64_t n = 0;
  std::string source;
  for (const LabeledImages& p : parts) {
    const Shape s = p.images.shape();
    check(s.c == s0.c && s.h == s0.h && s.w == s0.w && p.classes == parts[0].classes,
          "concat_images(" + p.source + ")",
          str("samples of shape ", s0.with_batch(1), " and ", parts[0].classes, " classes (as ",
              parts[0].source, ")"),
          s.with_batch(1), " and ", p.classes, " classes");
    n += s.n;
    source += (source.empty() ? "" : " + ") + p.source;
  }
  LabeledImages out;
  out.images = Tensor<float>(s0.with_batch(n));
  out.classes = parts[0].classes;
  out.source = source;
  float* dst = out.images.data();
  for (const LabeledImages& p : parts) {
    dst = std::copy(p.images.data(), p.images.data() + p.images.shape().numel(), dst);
    out.labels.insert(out.labels.end(), p.labels.begin(), p.labels.end());
  }
  return out;
}

// A training and a test set read from one directory, and what they were read as.
struct ImageDataset {
  LabeledImages train, test;
  std::string format;  // "CIFAR-10", "CIFAR-100 (fine labels)", "MNIST-format IDX", ...
};

// CIFAR-10: data_batch_1.bin .. data_batch_5.bin (training, in that order) and test_batch.bin.
// Subsets are accepted (tests, quick runs), but the five training batches must hold the same
// number of records, as the real ones (10000 each) do: a batch cut at a record boundary would
// otherwise pass unnoticed.
inline ImageDataset load_cifar10_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    fail(dir, "a directory holding the CIFAR-10 binary files",
         fs::exists(dir, ec) ? "a file that is not a directory" : "no such directory");
  }
  std::vector<std::string> names;
  for (int b = 1; b <= 5; ++b) names.push_back("data_batch_" + std::to_string(b) + ".bin");
  names.push_back("test_batch.bin");
  std::string missing;
  for (const std::string& name : names)
    if (!fs::is_regular_file(fs::path(dir) / name, ec))
      missing += (missing.empty() ? "" : ", ") + name;
  if (!missing.empty()) {
    fail(dir, "the CIFAR-10 files data_batch_1.bin .. data_batch_5.bin and test_batch.bin",
         "no " + missing);
  }
  std::vector<LabeledImages> batches;
  for (int b = 0; b < 5; ++b) {
    batches.push_back(
        read_cifar_file((fs::path(dir) / names[size_t(b)]).string(), CifarFormat::cifar10));
    const int64_t n0 = batches[0].images.shape().n, nb = batches.back().images.shape().n;
    check(nb == n0, batches.back().source,
          str(n0, " records, as in ", batches[0].source, " (the five training batches are equal)"),
          nb, " records");
  }
  ImageDataset out;
  out.train = concat_images(batches);
  out.test = read_cifar_file((fs::path(dir) / names[5]).string(), CifarFormat::cifar10);
  out.format = "CIFAR-10";
  return out;
}

// CIFAR-100: train.bin and test.bin, with the fine (100) or coarse (20) labels.
inline ImageDataset load_cifar100_dir(const std::string& dir,
                                      CifarLabels labels = CifarLabels::fine) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    fail(dir, "a directory holding the CIFAR-100 binary files",
         fs::exists(dir, ec) ? "a file that is not a directory" : "no such directory");
  }
  std::string missing;
  for (const char* name : {"train.bin", "test.bin"})
    if (!fs::is_regular_file(fs::path(dir) / name, ec))
      missing += std::string(missing.empty() ? "" : ", ") + name;
  if (!missing.empty()) fail(dir, "the CIFAR-100 files train.bin and test.bin", "no " + missing);
  ImageDataset out;
  out.train =
      read_cifar_file((fs::path(dir) / "train.bin").string(), CifarFormat::cifar100, labels);
  out.test = read_cifar_file((fs::path(dir) / "test.bin").string(), CifarFormat::cifar100, labels);
  out.format =
      labels == CifarLabels::fine ? "CIFAR-100 (fine labels)" : "CIFAR-100 (coarse labels)";
  return out;
}

}  // namespace varnet::data
