// IDX files (the format of MNIST, Fashion-MNIST, KMNIST and EMNIST), raw or gzipped.
//
// An IDX file is a 4-byte magic number (two zero bytes, a type byte, a rank byte), one big-endian
// uint32 per dimension, then the values in row-major order. Only unsigned-byte data (type 0x08)
// is read: every image data set in this format uses it. Files come from the internet and may be
// truncated or mislabelled, so everything in the header is checked before it is trusted, and a
// header that declares more data than the file holds never makes the reader allocate more than
// the file actually contains (plus one chunk).
#pragma once

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "varnet/core/error.hpp"
#include "varnet/core/tensor.hpp"

namespace varnet::data {

struct IdxArray {
  std::vector<int64_t> dims;    // outermost first, as in the file
  std::vector<uint8_t> values;  // row-major, product(dims) bytes
};

namespace detail {

// Larger payloads would not fit a Tensor's 32-bit-friendly sizes on every platform, and no
// real data set in this format comes close (EMNIST ByClass is about 550 MB).
constexpr uint64_t kIdxMaxPayload = uint64_t(1) << 31;
// Payload is read in chunks of this size, so memory follows what the file really holds.
constexpr size_t kIdxChunk = size_t(1) << 20;

inline std::string hex32(uint32_t v) {
  static const char* digits = "0123456789abcdef";
  std::string s = "0x";
  for (int shift = 28; shift >= 0; shift -= 4) s += digits[(v >> shift) & 0xF];
  return s;
}

inline std::string hex8(uint32_t v) {
  static const char* digits = "0123456789abcdef";
  return std::string("0x") + digits[(v >> 4) & 0xF] + digits[v & 0xF];
}

inline const char* idx_type_name(uint8_t type) {
  switch (type) {
    case 0x08:
      return "unsigned byte";
    case 0x09:
      return "signed byte";
    case 0x0B:
      return "16-bit integer";
    case 0x0C:
      return "32-bit integer";
    case 0x0D:
      return "32-bit float";
    case 0x0E:
      return "64-bit float";
    default:
      return "not an IDX type";
  }
}

struct GzCloser {
  void operator()(gzFile_s* f) const {
    if (f) gzclose(f);
  }
};
using GzHandle = std::unique_ptr<gzFile_s, GzCloser>;

// zlib's own description of the last error on f, e.g. "invalid block type".
inline std::string gz_message(gzFile f) {
  int errnum = Z_OK;
  const char* msg = gzerror(f, &errnum);
  if (errnum == Z_ERRNO) return std::strerror(errno);
  return msg && *msg ? msg : "unknown zlib error";
}

// Reads up to n bytes; returns how many were read (short only at end of data). A corrupt gzip
// stream throws.
inline size_t gz_read_some(gzFile f, uint8_t* dst, size_t n, const std::string& path) {
  size_t got = 0;
  while (got < n) {
    const unsigned want = static_cast<unsigned>(std::min<size_t>(n - got, size_t(1) << 30));
    const int r = gzread(f, dst + got, want);
    if (r < 0)
      fail(path, "a readable raw or gzip-compressed IDX file", "a read error: " + gz_message(f));
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

// True when the last short read was caused by a gzip stream that stops mid-way (zlib reports
// this as a soft Z_BUF_ERROR, not as a failed read).
inline bool gz_ended_early(gzFile f) {
  int errnum = Z_OK;
  gzerror(f, &errnum);
  return errnum == Z_BUF_ERROR;
}

}  // namespace detail

// Reads an IDX file of unsigned bytes, raw or gzipped (zlib detects which). expected_rank = 0
// accepts any rank from 1 to 4.
inline IdxArray read_idx(const std::string& path, int expected_rank = 0) {
  using detail::hex32;
  check(expected_rank >= 0 && expected_rank <= 4, "read_idx(" + path + ")",
        "expected_rank between 0 (any) and 4", expected_rank);
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) fail(path, "an existing IDX file", "no such file");
  if (std::filesystem::is_directory(status)) fail(path, "an IDX file", "a directory");

  errno = 0;
  detail::GzHandle gz(gzopen(path.c_str(), "rb"));
  if (!gz) {
    fail(path, "a readable IDX file",
         std::string("it cannot be opened: ") + (errno ? std::strerror(errno) : "out of memory"));
  }
  gzbuffer(gz.get(), 1u << 17);

  uint8_t magic[4];
  const size_t magic_got = detail::gz_read_some(gz.get(), magic, 4, path);
  check(magic_got == 4, path, "a 4-byte IDX magic number", magic_got, " bytes in the whole file");
  const uint32_t magic_word = (uint32_t(magic[0]) << 24) | (uint32_t(magic[1]) << 16) |
                              (uint32_t(magic[2]) << 8) | uint32_t(magic[3]);
  const int rank = magic[3];
  const std::string rank_text = expected_rank > 0 ? std::to_string(expected_rank) : "1 to 4";
  const std::string wanted = expected_rank > 0
                                 ? "magic " + hex32(0x800u | uint32_t(expected_rank)) +
                                       " (unsigned bytes, rank " + rank_text + ")"
                                 : "magic 0x000008RR (unsigned bytes, rank RR from 1 to 4)";
  if (magic[0] != 0 || magic[1] != 0) {
    fail(path, wanted, hex32(magic_word) + " (the first two bytes must be zero; not an IDX file?)");
  }
  if (magic[2] != 0x08) {
    fail(path, wanted,
         hex32(magic_word) + " (type " + detail::hex8(magic[2]) + ", " +
             detail::idx_type_name(magic[2]) + "; only unsigned bytes are supported)");
  }
  if (rank < 1 || rank > 4 || (expected_rank > 0 && rank != expected_rank)) {
    fail(path, wanted, hex32(magic_word) + " (rank " + std::to_string(rank) + ")");
  }

  uint8_t dim_bytes[16];
  const size_t dims_got = detail::gz_read_some(gz.get(), dim_bytes, size_t(4) * rank, path);
  check(dims_got == size_t(4) * rank, path,
        str(4 * rank, " header bytes for ", rank, " dimensions after the magic number"), dims_got,
        " bytes");

  std::vector<uint64_t> dims(static_cast<size_t>(rank));
  std::string dims_text;
  for (int d = 0; d < rank; ++d) {
    const uint8_t* b = dim_bytes + 4 * d;
    dims[size_t(d)] =
        (uint64_t(b[0]) << 24) | (uint64_t(b[1]) << 16) | (uint64_t(b[2]) << 8) | uint64_t(b[3]);
    dims_text += (d ? " x " : "") + std::to_string(dims[size_t(d)]);
  }
  IdxArray out;
  uint64_t payload = 1;
  for (int d = 0; d < rank; ++d) {
    check(dims[size_t(d)] > 0, path, str("dimension ", d, " > 0"), dims[size_t(d)]);
    // Each factor is below 2^32 and the running product stays at most kIdxMaxPayload (2^31),
    // so the multiplication cannot overflow 64 bits.
    payload *= dims[size_t(d)];
    if (payload > detail::kIdxMaxPayload) {
      fail(path, str("a payload of at most ", detail::kIdxMaxPayload, " bytes"),
           "dimensions " + dims_text + " (a corrupt header?)");
    }
    out.dims.push_back(static_cast<int64_t>(dims[size_t(d)]));
  }

  // Grow in chunks: a header may promise far more than the file holds, and memory should follow
  // the bytes that actually arrive, never exceeding the declared size.
  const size_t declared = static_cast<size_t>(payload);
  size_t got = 0;
  while (got < declared) {
    const size_t want = std::min(detail::kIdxChunk, declared - got);
    if (out.values.capacity() < got + want) {
      out.values.reserve(std::min(declared, std::max(got + want, 2 * out.values.capacity())));
    }
    out.values.resize(got + want);
    const size_t r = detail::gz_read_some(gz.get(), out.values.data() + got, want, path);
    got += r;
    if (r < want) break;
  }
  if (got < declared) {
    fail(path, str(declared, " payload bytes (dimensions ", dims_text, ")"),
         str(got, " bytes (the file is truncated",
             detail::gz_ended_early(gz.get()) ? "; the gzip stream ends early" : "", ")"));
  }
  uint8_t extra;
  if (detail::gz_read_some(gz.get(), &extra, 1, path) != 0) {
    fail(path, str("the file to end after ", declared, " payload bytes"),
         "trailing bytes (wrong dimensions in the header?)");
  }
  return out;
}

// A labelled image set: images (N, 1, H, W) with values byte / 255 in [0, 1].
struct LabeledImages {
  Tensor<float> images;
  std::vector<int32_t> labels;
  int classes = 0;     // max label + 1
  std::string source;  // the files it was read from, for messages
};

// Reads an image file (rank 3: N, H, W) and its label file (rank 1: N).
inline LabeledImages load_idx_pair(const std::string& images_path, const std::string& labels_path) {
  const IdxArray images = read_idx(images_path, 3);
  const IdxArray labels = read_idx(labels_path, 1);
  const int64_t n = images.dims[0];
  if (labels.dims[0] != n) {
    fail(images_path + ", " + labels_path,
         str("one label per image (", n, n == 1 ? " image in " : " images in ", images_path, ")"),
         str(labels.dims[0], labels.dims[0] == 1 ? " label in " : " labels in ", labels_path));
  }
  LabeledImages out;
  out.images = Tensor<float>(Shape(n, 1, images.dims[1], images.dims[2]));
  float* dst = out.images.data();
  for (size_t i = 0; i < images.values.size(); ++i) dst[i] = images.values[i] / 255.0f;
  out.labels.assign(labels.values.begin(), labels.values.end());
  const auto max_label = std::max_element(labels.values.begin(), labels.values.end());
  out.classes = int(*max_label) + 1;  // n > 0: every dimension was checked positive
  out.source = images_path + " + " + labels_path;
  return out;
}

struct MnistFormatData {
  LabeledImages train, test;
};

namespace detail {
// dir/name if it exists, else dir/name.gz, else "" (the caller reports both spellings).
inline std::string find_raw_or_gz(const std::filesystem::path& dir, const std::string& name) {
  std::error_code ec;
  for (const std::string& candidate : {name, name + ".gz"}) {
    const std::filesystem::path p = dir / candidate;
    if (std::filesystem::is_regular_file(p, ec)) return p.string();
  }
  return "";
}
}  // namespace detail

// Reads a directory in the MNIST layout (also Fashion-MNIST, KMNIST): the four standard file
// names, each raw or gzipped; raw is preferred when both are present.
inline MnistFormatData load_mnist_dir(const std::string& dir) {
  static const char* const kNames[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    fail(dir, "a directory holding MNIST-format IDX files",
         std::filesystem::exists(dir, ec) ? "a file that is not a directory" : "no such directory");
  }
  std::string paths[4];
  std::string missing;
  for (int i = 0; i < 4; ++i) {
    paths[i] = detail::find_raw_or_gz(dir, kNames[i]);
    if (paths[i].empty()) {
      missing +=
          std::string(missing.empty() ? "" : ", ") + kNames[i] + " (or " + kNames[i] + ".gz)";
    }
  }
  if (!missing.empty()) {
    fail(dir,
         "the MNIST-format files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
         "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each raw or .gz)",
         "no " + missing);
  }
  MnistFormatData out;
  out.train = load_idx_pair(paths[0], paths[1]);
  out.test = load_idx_pair(paths[2], paths[3]);
  const Shape& a = out.train.images.shape();
  const Shape& b = out.test.images.shape();
  if (a.h != b.h || a.w != b.w) {
    fail(dir,
         str("test images of the training images' size ", a.h, " x ", a.w, " (", paths[0], ")"),
         str(b.h, " x ", b.w, " in ", paths[2]));
  }
  const int classes = std::max(out.train.classes, out.test.classes);
  out.train.classes = classes;
  out.test.classes = classes;
  return out;
}

}  // namespace varnet::data
