// CIFAR-10 and CIFAR-100 binary readers against generated files: exact values and channel order,
// fine and coarse labels, and a clear error (file, expected, found) for truncated and mis-sized
// files, out-of-range labels and missing files; the directory loaders and the format detection
// (CIFAR-10, CIFAR-100, MNIST-format IDX padded to 32x32).
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "errors.hpp"
#include "mnist_fixture.hpp"
#include "varnet/data/cifar.hpp"
#include "varnet/data/image_dir.hpp"

namespace fs = std::filesystem;
using varnet::data::CifarFormat;
using varnet::data::CifarLabels;
using varnet::data::ImageDataset;
using varnet::data::LabeledImages;
using varnet::data::read_cifar_file;
using varnet::test::error_of;
using varnet::test::has;

namespace {

using Bytes = std::vector<uint8_t>;

// Pixel byte e of record i: varies with record, channel, row and column.
uint8_t pixel(int i, int e, int salt) {
  return uint8_t((i * 131 + e * 7 + salt * 29 + e / 1024) & 0xFF);
}

// n records; CIFAR-10 label i % 10, CIFAR-100 coarse i % 20 and fine (3 i) % 100.
Bytes cifar_bytes(CifarFormat f, int n, int salt = 0) {
  Bytes b;
  for (int i = 0; i < n; ++i) {
    if (f == CifarFormat::cifar10) {
      b.push_back(uint8_t(i % 10));
    } else {
      b.push_back(uint8_t(i % 20));
      b.push_back(uint8_t((3 * i) % 100));
    }
    for (int e = 0; e < 3072; ++e) b.push_back(pixel(i, e, salt));
  }
  return b;
}

void write_raw(const fs::path& p, const Bytes& b) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  REQUIRE(out.good());
}

// A CIFAR-10 directory: five batches of `per_batch` records (salts 1-5) and a test batch (salt 9).
void write_cifar10_dir(const fs::path& dir, int per_batch, int test) {
  fs::create_directories(dir);
  for (int b = 1; b <= 5; ++b)
    write_raw(dir / ("data_batch_" + std::to_string(b) + ".bin"),
              cifar_bytes(CifarFormat::cifar10, per_batch, b));
  write_raw(dir / "test_batch.bin", cifar_bytes(CifarFormat::cifar10, test, 9));
}

}  // namespace

TEST_CASE("CIFAR-10 files read exactly: labels, values byte / 255, R G B planes", "[cifar]") {
  fixture::TempDir dir("varnet_cifar10_");
  const fs::path p = dir.path / "data_batch_1.bin";
  write_raw(p, cifar_bytes(CifarFormat::cifar10, 12));
  const LabeledImages d = read_cifar_file(p.string(), CifarFormat::cifar10);
  REQUIRE(d.images.shape() == varnet::Shape(12, 3, 32, 32));
  CHECK(d.classes == 10);
  CHECK(d.source == p.string());
  REQUIRE(d.labels.size() == 12);
  int bad = 0;
  for (int i = 0; i < 12; ++i) {
    CHECK(d.labels[size_t(i)] == i % 10);
    for (int c = 0; c < 3; ++c)
      for (int r = 0; r < 32; ++r)
        for (int q = 0; q < 32; ++q)
          bad += d.images.view().at(i, c, r, q) != pixel(i, c * 1024 + r * 32 + q, 0) / 255.0f;
  }
  CHECK(bad == 0);
}

TEST_CASE("CIFAR-100 files give fine labels by default, coarse on request", "[cifar]") {
  fixture::TempDir dir("varnet_cifar100_");
  const fs::path p = dir.path / "train.bin";
  write_raw(p, cifar_bytes(CifarFormat::cifar100, 40, 3));
  const LabeledImages fine = read_cifar_file(p.string(), CifarFormat::cifar100);
  const LabeledImages coarse =
      read_cifar_file(p.string(), CifarFormat::cifar100, CifarLabels::coarse);
  REQUIRE(fine.labels.size() == 40);
  REQUIRE(coarse.labels.size() == 40);
  CHECK(fine.classes == 100);
  CHECK(coarse.classes == 20);
  for (int i = 0; i < 40; ++i) {
    CHECK(fine.labels[size_t(i)] == (3 * i) % 100);
    CHECK(coarse.labels[size_t(i)] == i % 20);
  }
  // Pixels start after both label bytes.
  CHECK(fine.images.view().at(5, 0, 0, 0) == pixel(5, 0, 3) / 255.0f);
  CHECK(fine.images.view().at(39, 2, 31, 31) == pixel(39, 3071, 3) / 255.0f);
}

TEST_CASE("damaged CIFAR files are refused with the file, what was expected and what was found",
          "[cifar]") {
  fixture::TempDir dir("varnet_cifar_bad_");
  const fs::path p = dir.path / "f.bin";
  const auto read10 = [&] { read_cifar_file(p.string(), CifarFormat::cifar10); };
  const auto read100 = [&] { read_cifar_file(p.string(), CifarFormat::cifar100); };

  SECTION("truncated: a record cut short") {
    Bytes b = cifar_bytes(CifarFormat::cifar10, 4);
    b.resize(b.size() - 100);
    write_raw(p, b);
    const std::string e = error_of(read10);
    INFO(e);
    CHECK(has(e, p.string()));
    CHECK(has(e, "expected whole CIFAR-10 records of 3073 bytes"));
    CHECK(has(e, "found 12192 bytes = 3 records and 2973 bytes (a truncated file?)"));
  }
  SECTION("one stray byte after the last record") {
    Bytes b = cifar_bytes(CifarFormat::cifar10, 2);
    b.push_back(0);
    write_raw(p, b);
    CHECK(has(error_of(read10), "found 6147 bytes = 2 records and 1 bytes"));
  }
  SECTION("mis-sized: CIFAR-100 records read as CIFAR-10, and the other way round") {
    write_raw(p, cifar_bytes(CifarFormat::cifar100, 5));
    const std::string e = error_of(read10);
    INFO(e);
    CHECK(has(e, "whole CIFAR-10 records of 3073 bytes"));
    CHECK(has(e, "(whole records of 3074 bytes: the other CIFAR?)"));
    write_raw(p, cifar_bytes(CifarFormat::cifar10, 5));
    const std::string e2 = error_of(read100);
    INFO(e2);
    CHECK(has(e2, "whole CIFAR-100 records of 3074 bytes (2 label bytes + 3072 pixels)"));
    CHECK(has(e2, "(whole records of 3073 bytes: the other CIFAR?)"));
  }
  SECTION("empty") {
    write_raw(p, {});
    CHECK(has(error_of(read10), "at least one CIFAR-10 record of 3073 bytes, found an empty file"));
  }
  SECTION("a CIFAR-10 label of 10") {
    Bytes b = cifar_bytes(CifarFormat::cifar10, 4);
    b[2 * 3073] = 10;
    write_raw(p, b);
    const std::string e = error_of(read10);
    INFO(e);
    CHECK(has(e, "labels in [0, 10) in every 3073-byte CIFAR-10 record"));
    CHECK(has(e, "found 10 in record 2 (byte offset 6146)"));
  }
  SECTION("CIFAR-100: a fine label of 100, a coarse label of 20, checked whichever is used") {
    Bytes b = cifar_bytes(CifarFormat::cifar100, 4);
    b[3 * 3074 + 1] = 100;
    write_raw(p, b);
    CHECK(has(error_of(read100), "fine labels in [0, 100)"));
    CHECK(has(error_of(read100), "found 100 in record 3 (byte offset 9223)"));
    b[3 * 3074 + 1] = 7;
    b[1 * 3074] = 20;
    write_raw(p, b);
    const auto coarse = [&] {
      read_cifar_file(p.string(), CifarFormat::cifar100, CifarLabels::coarse);
    };
    CHECK(has(error_of(coarse), "coarse labels in [0, 20)"));
    CHECK(has(error_of(read100), "found 20 in record 1"));
  }
  SECTION("missing file, and a directory") {
    CHECK(has(error_of(read10),
              "f.bin: expected an existing CIFAR-10 binary file, found no such file"));
    fs::create_directories(p);
    CHECK(has(error_of(read10), "expected a regular file (CIFAR-10 binary file)"));
  }
}

TEST_CASE("CIFAR-10 directory: five batches in order, then the test batch", "[cifar]") {
  fixture::TempDir dir("varnet_cifar10_dir_");
  write_cifar10_dir(dir.path, 3, 4);
  const ImageDataset d = varnet::data::load_cifar10_dir(dir.path.string());
  REQUIRE(d.train.images.shape() == varnet::Shape(15, 3, 32, 32));
  REQUIRE(d.test.images.shape() == varnet::Shape(4, 3, 32, 32));
  CHECK(d.format == "CIFAR-10");
  CHECK(d.train.classes == 10);
  // Image 3 b + i is record i of data_batch_(b + 1).
  for (int b = 0; b < 5; ++b)
    for (int i = 0; i < 3; ++i) {
      CHECK(d.train.labels[size_t(3 * b + i)] == i);
      CHECK(d.train.images.view().at(3 * b + i, 1, 2, 3) == pixel(i, 1024 + 67, b + 1) / 255.0f);
    }
  CHECK(d.test.images.view().at(3, 2, 0, 1) == pixel(3, 2048 + 1, 9) / 255.0f);

  SECTION("a missing batch is named") {
    fs::remove(dir.path / "data_batch_4.bin");
    fs::remove(dir.path / "test_batch.bin");
    const std::string e = error_of([&] { varnet::data::load_cifar10_dir(dir.path.string()); });
    CHECK(has(e, "found no data_batch_4.bin, test_batch.bin"));
  }
  SECTION("a batch with fewer records than the others") {
    write_raw(dir.path / "data_batch_3.bin", cifar_bytes(CifarFormat::cifar10, 2));
    const std::string e = error_of([&] { varnet::data::load_cifar10_dir(dir.path.string()); });
    INFO(e);
    CHECK(has(e, "data_batch_3.bin: expected 3 records, as in"));
    CHECK(has(e, "found 2 records"));
  }
  SECTION("a batch with more records than the others") {
    write_raw(dir.path / "data_batch_5.bin", cifar_bytes(CifarFormat::cifar10, 4));
    const std::string e = error_of([&] { varnet::data::load_cifar10_dir(dir.path.string()); });
    INFO(e);
    CHECK(has(e, "data_batch_5.bin: expected 3 records, as in"));
    CHECK(has(e, "found 4 records"));
  }
}

TEST_CASE("concat_images joins sets of one sample shape and class count, in order", "[cifar]") {
  const auto set = [](int64_t n, int64_t c, int classes, float first, const std::string& name) {
    LabeledImages d;
    d.images = varnet::Tensor<float>(varnet::Shape(n, c, 2, 2));
    for (int64_t e = 0; e < d.images.numel(); ++e) d.images[e] = first + float(e);
    for (int64_t i = 0; i < n; ++i) d.labels.push_back(int32_t(i % classes));
    d.classes = classes;
    d.source = name;
    return d;
  };
  const LabeledImages a = set(2, 3, 10, 0, "a"), b = set(1, 3, 10, 100, "b");
  const LabeledImages ab = varnet::data::concat_images({a, b});
  REQUIRE(ab.images.shape() == varnet::Shape(3, 3, 2, 2));
  CHECK(ab.images[23] == 23);   // a's last value
  CHECK(ab.images[24] == 100);  // then b's first
  CHECK(ab.labels == std::vector<int32_t>{0, 1, 0});
  CHECK(ab.classes == 10);
  CHECK(ab.source == "a + b");
  std::string e = error_of([&] { varnet::data::concat_images({a, set(1, 3, 100, 0, "c")}); });
  INFO(e);
  CHECK(has(e, "concat_images(c): expected samples of shape"));
  CHECK(has(e, "and 10 classes (as a), found"));
  CHECK(has(e, "and 100 classes"));
  e = error_of([&] { varnet::data::concat_images({a, set(1, 1, 10, 0, "d")}); });
  CHECK(has(e, "concat_images(d)"));
  CHECK(has(error_of([] { varnet::data::concat_images({}); }), "at least one image set"));
}

TEST_CASE("load_image_dir detects CIFAR-10, CIFAR-100 and MNIST format, or lists what it wanted",
          "[cifar]") {
  fixture::TempDir dir("varnet_image_dir_");
  const std::string root = dir.path.string();

  SECTION("CIFAR-10 in the directory the archive unpacks to") {
    write_cifar10_dir(dir.path / "cifar-10-batches-bin", 2, 3);
    const ImageDataset d = varnet::data::load_image_dir(root);
    CHECK(d.format == "CIFAR-10");
    CHECK(d.train.images.shape().n == 10);
    CHECK(d.test.images.shape().n == 3);
  }
  SECTION("CIFAR-100, fine or coarse") {
    write_raw(dir.path / "train.bin", cifar_bytes(CifarFormat::cifar100, 6));
    write_raw(dir.path / "test.bin", cifar_bytes(CifarFormat::cifar100, 2));
    const ImageDataset fine = varnet::data::load_image_dir(root);
    CHECK(fine.format == "CIFAR-100 (fine labels)");
    CHECK(fine.train.classes == 100);
    CHECK(fine.train.labels[5] == 15);
    varnet::data::ImageDirOptions o;
    o.cifar100_labels = CifarLabels::coarse;
    const ImageDataset coarse = varnet::data::load_image_dir(root, o);
    CHECK(coarse.train.classes == 20);
    CHECK(coarse.train.labels[5] == 5);
    fs::remove(dir.path / "test.bin");
    CHECK(has(error_of([&] { varnet::data::load_image_dir(root); }), "found no test.bin"));
  }
  SECTION("MNIST format, each 28x28 image centred in 32x32 zeros") {
    fixture::write_set(dir.path, "train", 8, 28, 1);
    fixture::write_set(dir.path, "t10k", 4, 28, 2);
    const ImageDataset d = varnet::data::load_image_dir(root);
    const varnet::data::MnistFormatData raw = varnet::data::load_mnist_dir(root);
    CHECK(has(d.format, "28x28 zero-padded to 32x32"));
    REQUIRE(d.train.images.shape() == varnet::Shape(8, 1, 32, 32));
    REQUIRE(d.test.images.shape() == varnet::Shape(4, 1, 32, 32));
    CHECK(d.train.labels == raw.train.labels);
    int bad = 0;
    for (int i = 0; i < 8; ++i)
      for (int r = 0; r < 32; ++r)
        for (int q = 0; q < 32; ++q) {
          const bool inside = r >= 2 && r < 30 && q >= 2 && q < 30;
          const float want = inside ? raw.train.images.view().at(i, 0, r - 2, q - 2) : 0.0f;
          bad += d.train.images.view().at(i, 0, r, q) != want;
        }
    CHECK(bad == 0);
  }
  SECTION("nothing known: the error lists every format it looked for") {
    write_raw(dir.path / "data_batch_1.txt", {1, 2, 3});
    const std::string e = error_of([&] { varnet::data::load_image_dir(root); });
    INFO(e);
    CHECK(has(e, root));
    CHECK(has(e, "CIFAR-10 (data_batch_1.bin"));
    CHECK(has(e, "CIFAR-100 (train.bin, test.bin"));
    CHECK(has(e, "MNIST format (train-images-idx3-ubyte"));
    CHECK(has(e, "found none of"));
    CHECK(has(error_of([&] { varnet::data::load_image_dir(root + "/nowhere"); }),
              "no such directory"));
  }
}

TEST_CASE("pad_images centres odd and even differences and refuses larger images", "[cifar]") {
  LabeledImages d;
  d.images = varnet::Tensor<float>(varnet::Shape(1, 2, 2, 3));
  for (int e = 0; e < 12; ++e) d.images.data()[e] = float(e + 1);
  d.labels = {0};
  d.classes = 1;
  const LabeledImages p = varnet::data::pad_images(d, 5);
  REQUIRE(p.images.shape() == varnet::Shape(1, 2, 5, 5));
  // 2 rows in 5: top 1 (the extra row goes after); 3 columns in 5: left 1.
  CHECK(p.images.view().at(0, 0, 1, 1) == 1);
  CHECK(p.images.view().at(0, 1, 2, 3) == 12);
  float sum = 0;
  for (int e = 0; e < 50; ++e) sum += p.images.data()[e];
  CHECK(sum == 78);  // nothing else is non-zero
  // Unequal margins: 2 rows in 6 (top 2), 3 columns in 6 (left 1, the extra column after).
  const LabeledImages q = varnet::data::pad_images(d, 6);
  CHECK(q.images.view().at(0, 0, 2, 1) == 1);
  CHECK(q.images.view().at(0, 0, 2, 3) == 3);
  CHECK(q.images.view().at(0, 1, 3, 3) == 12);
  sum = 0;
  for (int e = 0; e < 72; ++e) sum += q.images.data()[e];
  CHECK(sum == 78);
  CHECK(has(error_of([&] { varnet::data::pad_images(d, 2); }), "images of at most 2x2 pixels"));
}
