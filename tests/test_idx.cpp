// IDX reader: exact round trips of raw and gzipped files, and a clear error (path, expected,
// found) for every kind of damaged file, without allocating what a lying header declares.
#include <zlib.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <new>
#include <string>
#include <vector>

#include "catch.hpp"
#include "errors.hpp"
#include "varnet/data/idx.hpp"

namespace fs = std::filesystem;
using varnet::data::IdxArray;
using varnet::data::LabeledImages;
using varnet::data::load_idx_pair;
using varnet::data::load_mnist_dir;
using varnet::data::read_idx;

// The largest single operator new request, to show that a header declaring gigabytes does not
// make the reader allocate them. This executable replaces every unaligned global allocation
// function (all of them, so that each allocation is paired with a matching release, which
// AddressSanitizer checks); GCC mistakes the malloc/free pairing behind the replacement for a
// mismatch, hence the pragma.
static std::atomic<size_t> g_largest_allocation{0};

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

static void* counted_malloc(size_t n) noexcept {
  size_t seen = g_largest_allocation.load();
  while (n > seen && !g_largest_allocation.compare_exchange_weak(seen, n)) {
  }
  return std::malloc(n ? n : 1);
}
void* operator new(size_t n) {
  if (void* p = counted_malloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) {
  return operator new(n);
}
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  return counted_malloc(n);
}
void* operator new[](size_t n, const std::nothrow_t&) noexcept {
  return counted_malloc(n);
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, size_t) noexcept {
  std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}

namespace {

// A fresh directory under the system's temporary directory, removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("varnet_test_idx_" + std::to_string(std::rand()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

using Bytes = std::vector<uint8_t>;

// An IDX file: magic (0, 0, type, rank), big-endian dims, payload.
Bytes idx_file(const std::vector<uint32_t>& dims, const Bytes& payload, uint8_t type = 0x08) {
  Bytes b = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) b.push_back(static_cast<uint8_t>(d >> shift));
  }
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

// Bytes that do not compress, so cutting a gzip file in half cuts the payload in half.
Bytes noise_bytes(size_t n, uint32_t seed = 1) {
  Bytes b(n);
  for (auto& v : b) {
    seed = seed * 1664525u + 1013904223u;
    v = static_cast<uint8_t>(seed >> 24);
  }
  return b;
}

void write_raw(const std::string& path, const Bytes& b) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  REQUIRE(out.good());
}

void write_gz(const std::string& path, const Bytes& b) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  if (!b.empty()) REQUIRE(gzwrite(f, b.data(), static_cast<unsigned>(b.size())) == int(b.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

Bytes read_raw(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

using varnet::test::error_of;
using varnet::test::has;

}  // namespace

TEST_CASE("read_idx reads raw and gzipped files exactly", "[idx]") {
  TempDir dir;
  const Bytes payload = noise_bytes(2 * 3 * 5);
  const Bytes file = idx_file({2, 3, 5}, payload);
  write_raw(dir / "a-idx3-ubyte", file);
  write_gz(dir / "a-idx3-ubyte.gz", file);
  for (const std::string name : {"a-idx3-ubyte", "a-idx3-ubyte.gz"}) {
    for (int rank : {0, 3}) {
      const IdxArray a = read_idx(dir / name, rank);
      CHECK(a.dims == std::vector<int64_t>{2, 3, 5});
      CHECK(a.values == payload);
    }
  }

  write_gz(dir / "r1.gz", idx_file({7}, noise_bytes(7, 3)));
  CHECK(read_idx(dir / "r1.gz").values == noise_bytes(7, 3));
  write_raw(dir / "r4", idx_file({1, 2, 1, 3}, noise_bytes(6, 4)));
  const IdxArray r4 = read_idx(dir / "r4", 4);
  CHECK(r4.dims == std::vector<int64_t>{1, 2, 1, 3});
  CHECK(r4.values == noise_bytes(6, 4));
}

TEST_CASE("read_idx rejects damaged headers with path, expected and found", "[idx]") {
  TempDir dir;
  const std::string p = dir / "bad";

  SECTION("missing file") {
    const std::string m = error_of([&] { read_idx(dir / "nope-idx1-ubyte"); });
    CHECK(has(m, dir / "nope-idx1-ubyte"));
    CHECK(has(m, "no such file"));
    REQUIRE_THROWS_AS(read_idx(dir / "nope"), varnet::Error);
  }
  SECTION("a directory") {
    CHECK(has(error_of([&] { read_idx(dir.path.string()); }), "directory"));
  }
  SECTION("shorter than the magic number") {
    write_raw(p, {0, 0});
    const std::string m = error_of([&] { read_idx(p); });
    CHECK(has(m, p + ": expected a 4-byte IDX magic number, found 2 bytes"));
  }
  SECTION("magic without its two zero bytes") {
    write_raw(p, {0x1f, 0x00, 0x08, 0x01, 0, 0, 0, 1, 7});
    const std::string m = error_of([&] { read_idx(p); });
    CHECK(has(m, p));
    CHECK(has(m, "expected magic"));
    CHECK(has(m, "found 0x1f000801"));
    write_raw(p, {0x00, 0x1f, 0x08, 0x01, 0, 0, 0, 1, 7});
    CHECK(has(error_of([&] { read_idx(p); }), "found 0x001f0801"));
  }
  SECTION("wrong type byte") {
    write_raw(p, idx_file({1}, {0, 0, 0, 0}, 0x0D));
    const std::string m = error_of([&] { read_idx(p); });
    CHECK(has(m, "found 0x00000d01"));
    CHECK(has(m, "32-bit float"));
    // Signed bytes (0x09) are bytes too, but -1 must not be read as 255.
    write_raw(p, idx_file({1}, {0xFF}, 0x09));
    const std::string s = error_of([&] { read_idx(p); });
    CHECK(has(s, "found 0x00000901"));
    CHECK(has(s, "signed byte"));
  }
  SECTION("wrong rank") {
    write_raw(p, idx_file({3}, {1, 2, 3}));
    CHECK(has(error_of([&] { read_idx(p, 3); }),
              p + ": expected magic 0x00000803 (unsigned bytes, rank 3), found 0x00000801"));
    write_raw(p, {0, 0, 8, 5, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0});
    CHECK(has(error_of([&] { read_idx(p); }), "(rank 5)"));
    write_raw(p, {0, 0, 8, 0});
    CHECK(has(error_of([&] { read_idx(p); }), "(rank 0)"));
  }
  SECTION("header cut inside the dimensions") {
    write_raw(p, {0, 0, 8, 3, 0, 0, 0, 2, 0, 0});
    const std::string m = error_of([&] { read_idx(p); });
    CHECK(has(m, "expected 12 header bytes"));
    CHECK(has(m, "found 6"));
  }
  SECTION("zero dimension") {
    write_raw(p, idx_file({2, 0, 3}, {}));
    CHECK(has(error_of([&] { read_idx(p); }), p + ": expected dimension 1 > 0, found 0"));
  }
}

TEST_CASE("read_idx rejects payloads of the wrong size", "[idx]") {
  TempDir dir;
  const std::string p = dir / "x";
  const Bytes payload = noise_bytes(50000);
  const Bytes file = idx_file({50, 1000}, payload);

  SECTION("truncated raw") {
    write_raw(p, Bytes(file.begin(), file.end() - 10));
    const std::string m = error_of([&] { read_idx(p); });
    CHECK(has(m, p + ": expected 50000 payload bytes (dimensions 50 x 1000), found 49990"));
    CHECK(has(m, "truncated"));
  }
  SECTION("truncated gzip stream") {
    write_gz(p, file);
    const Bytes gz = read_raw(p);
    write_raw(p, Bytes(gz.begin(), gz.begin() + gz.size() / 2));
    const std::string m = error_of([&] { read_idx(p); });
    INFO(m);
    CHECK(has(m, p + ": expected 50000 payload bytes"));
    CHECK(has(m, "truncated"));
  }
  SECTION("trailing bytes, raw and gzipped") {
    Bytes longer = file;
    longer.push_back(0);
    write_raw(p, longer);
    CHECK(has(error_of([&] { read_idx(p); }),
              p + ": expected the file to end after 50000 payload bytes, found trailing bytes"));
    write_gz(p, longer);
    CHECK(has(error_of([&] { read_idx(p); }), "trailing bytes"));
  }
  SECTION("corrupt gzip stream") {
    write_gz(p, file);
    Bytes gz = read_raw(p);
    REQUIRE(gz.size() > 20);
    // gzopen writes a 10-byte gzip header; a first deflate byte of 0xFF declares the reserved
    // block type 3.
    Bytes bad_block = gz;
    bad_block[10] = 0xFF;
    write_raw(p, bad_block);
    std::string m = error_of([&] { read_idx(p); });
    CHECK(has(m, p));
    CHECK(has(m, "invalid block type"));
    // A wrong CRC in the trailer: the data decode but fail their check.
    Bytes bad_crc = gz;
    bad_crc[gz.size() - 8] ^= 0x55;
    write_raw(p, bad_crc);
    m = error_of([&] { read_idx(p); });
    CHECK(has(m, p));
    CHECK(has(m, "incorrect data check"));
  }
}

TEST_CASE("read_idx does not trust huge declared dimensions", "[idx]") {
  TempDir dir;
  const std::string p = dir / "huge";

  // 1 x 46000 x 46000 is about 2.1 GB, just under the cap, in a 16-byte file.
  write_raw(p, idx_file({1, 46000, 46000}, {1, 2, 3}));
  g_largest_allocation = 0;
  std::string m = error_of([&] { read_idx(p); });
  CHECK(has(m, "expected 2116000000 payload bytes"));
  CHECK(has(m, "found 3"));
  CHECK(g_largest_allocation.load() <= (size_t(4) << 20));

  // The same header in a gzip file.
  write_gz(p, idx_file({1, 46000, 46000}, {1, 2, 3}));
  g_largest_allocation = 0;
  CHECK(has(error_of([&] { read_idx(p); }), "found 3"));
  CHECK(g_largest_allocation.load() <= (size_t(4) << 20));

  // Over the cap, and dimensions whose product overflows 64 bits.
  write_raw(p, idx_file({60000, 60000, 60000}, {}));
  m = error_of([&] { read_idx(p); });
  CHECK(has(m, p + ": expected a payload of at most 2147483648 bytes"));
  CHECK(has(m, "60000 x 60000 x 60000"));
  write_raw(p, idx_file({0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu}, {}));
  CHECK(has(error_of([&] { read_idx(p); }), "at most 2147483648 bytes"));
  // At the cap's edge: 2^31 bytes pass the size check (and the file is short); one more does not.
  write_raw(p, idx_file({2, 1u << 30}, {1, 2, 3}));
  g_largest_allocation = 0;
  CHECK(has(error_of([&] { read_idx(p); }), "expected 2147483648 payload bytes"));
  CHECK(g_largest_allocation.load() <= (size_t(4) << 20));
  write_raw(p, idx_file({3, 715827883u}, {1, 2, 3}));  // 2147483649 bytes
  m = error_of([&] { read_idx(p); });
  CHECK(has(m, "expected a payload of at most 2147483648 bytes"));
  CHECK(has(m, "3 x 715827883"));
}

TEST_CASE("load_idx_pair builds images in [0, 1] and labels", "[idx]") {
  TempDir dir;
  const Bytes pixels = {0, 255, 128, 1, 2, 3, 4, 5, 6, 7, 8, 9};  // 2 images of 2 x 3
  write_raw(dir / "img", idx_file({2, 2, 3}, pixels));
  write_gz(dir / "lab.gz", idx_file({2}, {4, 1}));
  const LabeledImages d = load_idx_pair(dir / "img", dir / "lab.gz");
  CHECK(d.images.shape() == varnet::Shape(2, 1, 2, 3));
  for (size_t i = 0; i < pixels.size(); ++i) CHECK(d.images[int64_t(i)] == pixels[i] / 255.0f);
  CHECK(d.images[0] == 0.0f);
  CHECK(d.images[1] == 1.0f);
  CHECK(d.labels == std::vector<int32_t>{4, 1});
  CHECK(d.classes == 5);
  CHECK(has(d.source, dir / "img"));

  SECTION("count mismatch names both files and counts") {
    write_raw(dir / "lab3", idx_file({3}, {0, 1, 2}));
    const std::string m = error_of([&] { load_idx_pair(dir / "img", dir / "lab3"); });
    CHECK(has(m, dir / "img"));
    CHECK(has(m, dir / "lab3"));
    CHECK(has(m, "2 images"));
    CHECK(has(m, "found 3 labels"));
    write_raw(dir / "lab1", idx_file({1}, {0}));
    CHECK(has(error_of([&] { load_idx_pair(dir / "img", dir / "lab1"); }), "found 1 label in "));
  }
  SECTION("swapped files") {
    const std::string m = error_of([&] { load_idx_pair(dir / "lab.gz", dir / "img"); });
    CHECK(has(m, dir / "lab.gz" + ": expected magic 0x00000803"));
    CHECK(has(m, "found 0x00000801"));
  }
}

TEST_CASE("load_mnist_dir finds raw and gzipped files", "[idx]") {
  TempDir dir;
  const Bytes train_px = noise_bytes(3 * 4 * 4, 7);
  const Bytes test_px = noise_bytes(2 * 4 * 4, 8);
  write_raw(dir / "train-images-idx3-ubyte", idx_file({3, 4, 4}, train_px));
  write_gz(dir / "train-labels-idx1-ubyte.gz", idx_file({3}, {0, 3, 1}));
  write_gz(dir / "t10k-images-idx3-ubyte.gz", idx_file({2, 4, 4}, test_px));

  SECTION("missing files are named, with both spellings and the directory") {
    const std::string m = error_of([&] { load_mnist_dir(dir.path.string()); });
    CHECK(has(m, dir.path.string()));
    CHECK(has(m, "found no t10k-labels-idx1-ubyte (or t10k-labels-idx1-ubyte.gz)"));
    CHECK(!has(m, "found no train"));
    CHECK(has(error_of([&] { load_mnist_dir(dir / "absent"); }), "no such directory"));
  }
  SECTION("mixed raw and .gz; raw preferred when both exist") {
    write_raw(dir / "t10k-labels-idx1-ubyte", idx_file({2}, {6, 2}));
    write_gz(dir / "t10k-labels-idx1-ubyte.gz", idx_file({2}, {9, 9}));
    const auto data = load_mnist_dir(dir.path.string());
    CHECK(data.train.images.shape() == varnet::Shape(3, 1, 4, 4));
    CHECK(data.test.images.shape() == varnet::Shape(2, 1, 4, 4));
    CHECK(data.train.labels == std::vector<int32_t>{0, 3, 1});
    CHECK(data.test.labels == std::vector<int32_t>{6, 2});
    CHECK(data.train.classes == 7);  // max over both sets + 1
    CHECK(data.test.classes == 7);
    CHECK(data.test.images[5] == test_px[5] / 255.0f);
  }
  SECTION("train and test image sizes must agree") {
    write_gz(dir / "t10k-images-idx3-ubyte.gz", idx_file({2, 4, 5}, noise_bytes(40)));
    write_raw(dir / "t10k-labels-idx1-ubyte", idx_file({2}, {0, 0}));
    const std::string m = error_of([&] { load_mnist_dir(dir.path.string()); });
    CHECK(has(m, "4 x 4"));
    CHECK(has(m, "found 4 x 5"));
  }
}
