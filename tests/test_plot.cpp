// examples/common/plot.hpp: the PNG it writes is decoded here independently (chunks, CRCs,
// inflate, scanlines) and its pixels inspected; errors name the series and the point.
#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "../examples/common/plot.hpp"
#include "catch.hpp"
#include "errors.hpp"

namespace {

namespace fs = std::filesystem;
using varnet::plot::Figure;
using varnet::plot::Series;
using varnet::test::error_of;
using varnet::test::has;

struct Decoded {
  uint32_t width = 0, height = 0;
  std::vector<std::string> chunk_types;
  std::vector<uint8_t> rgb;  // height x width x 3
  const uint8_t* at(uint32_t x, uint32_t y) const { return &rgb[(size_t(y) * width + x) * 3]; }
};

uint32_t be32(const std::string& s, size_t at) {
  uint32_t v = 0;
  for (int k = 0; k < 4; ++k) v = (v << 8) | uint8_t(s[at + size_t(k)]);
  return v;
}

// A strict decoder for what write_png promises: 8-bit RGB, no interlace, filter type 0 rows.
// Any deviation, including a wrong CRC, fails the REQUIREs.
Decoded decode_png(const std::string& file) {
  Decoded d;
  REQUIRE(file.size() > 8);
  REQUIRE(file.compare(0, 8, std::string("\x89PNG\r\n\x1a\n", 8)) == 0);
  std::string idat;
  size_t pos = 8;
  while (pos < file.size()) {
    REQUIRE(pos + 12 <= file.size());
    const uint32_t len = be32(file, pos);
    REQUIRE(pos + 12 + len <= file.size());
    const std::string type = file.substr(pos + 4, 4);
    const uLong crc = crc32(0L, reinterpret_cast<const Bytef*>(file.data() + pos + 4), len + 4);
    INFO("chunk " << type);
    REQUIRE(be32(file, pos + 8 + len) == uint32_t(crc));
    d.chunk_types.push_back(type);
    if (type == "IHDR") {
      REQUIRE(len == 13);
      d.width = be32(file, pos + 8);
      d.height = be32(file, pos + 12);
      REQUIRE(file.substr(pos + 16, 5) == std::string("\x08\x02\x00\x00\x00", 5));
    } else if (type == "IDAT") {
      idat += file.substr(pos + 8, len);
    }
    pos += 12 + len;
  }
  REQUIRE(d.chunk_types.front() == "IHDR");
  REQUIRE(d.chunk_types.back() == "IEND");
  const size_t stride = size_t(d.width) * 3 + 1;
  std::vector<uint8_t> raw(stride * d.height + 1);  // one spare byte: too much data shows
  uLongf raw_len = uLongf(raw.size());
  REQUIRE(uncompress(raw.data(), &raw_len, reinterpret_cast<const Bytef*>(idat.data()),
                     uLong(idat.size())) == Z_OK);
  REQUIRE(raw_len == stride * d.height);
  d.rgb.resize(size_t(d.width) * d.height * 3);
  for (uint32_t y = 0; y < d.height; ++y) {
    REQUIRE(raw[y * stride] == 0);
    std::copy_n(&raw[y * stride + 1], stride - 1, &d.rgb[y * (stride - 1)]);
  }
  return d;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string scratch(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / "varnet_test_plot";
  fs::create_directories(dir);
  return (dir / name).string();
}

bool is(const uint8_t* p, varnet::plot::detail::Rgb c) {
  return p[0] == c.r && p[1] == c.g && p[2] == c.b;
}

}  // namespace

TEST_CASE("write_png writes a PNG that decodes, with correct CRCs, size and colours", "[plot]") {
  // Series 0 lives in the bottom-left of the data range, series 1 in the top-right; no labels,
  // so no legend: every pixel of a series' colour must lie in its quarter of the image.
  Figure f;
  f.title = "Accuracy against epsilon";
  f.xlabel = "epsilon";
  f.ylabel = "accuracy";
  f.width = 640;
  f.height = 400;
  f.series.push_back({"", {0, 0.5, 1}, {0, 0.8, 0.2}, true});
  f.series.push_back({"", {9, 9.5, 10}, {10, 9.2, 9.7}, false});
  const std::string path = scratch("two_series.png");
  varnet::plot::write_png(f, path);
  REQUIRE_FALSE(fs::exists(path + ".partial"));
  const Decoded d = decode_png(read_file(path));
  REQUIRE(d.width == 640);
  REQUIRE(d.height == 400);

  const auto c0 = varnet::plot::detail::series_colour(0),
             c1 = varnet::plot::detail::series_colour(1);
  int64_t n0 = 0, n1 = 0, black = 0, misplaced = 0;
  for (uint32_t y = 0; y < d.height; ++y)
    for (uint32_t x = 0; x < d.width; ++x) {
      const uint8_t* p = d.at(x, y);
      if (is(p, c0)) {
        ++n0;
        misplaced += !(x < d.width / 2 && y > d.height / 2);
      }
      if (is(p, c1)) {
        ++n1;
        misplaced += !(x > d.width / 2 && y < d.height / 2);
      }
      black += is(p, {0, 0, 0});
    }
  CHECK(n0 > 100);  // two segments 2 px wide and three markers
  CHECK(n1 > 30);   // three markers
  CHECK(misplaced == 0);
  CHECK(black > 2000);  // frame, ticks and text
  CHECK(is(d.at(0, 0), {255, 255, 255}));
  CHECK(is(d.at(d.width - 1, d.height - 1), {255, 255, 255}));
}

TEST_CASE("write_png draws a legend with each series' colour next to its label", "[plot]") {
  Figure f;
  f.series.push_back({"variance", {0, 1, 2}, {1, 2, 3}, true});
  f.series.push_back({"dropout", {0, 1, 2}, {3, 2, 1}, true});
  f.series.push_back({"points", {0.5, 1.5}, {2, 2}, false});
  const std::string path = scratch("legend.png");
  varnet::plot::write_png(f, path);
  const Decoded d = decode_png(read_file(path));
  REQUIRE((d.width == 800 && d.height == 500));
  // The legend box sits in the top-right corner of the plot area: each colour appears there.
  for (size_t s = 0; s < 3; ++s) {
    bool found = false;
    for (uint32_t y = 20; y < 120 && !found; ++y)
      for (uint32_t x = d.width - 200; x < d.width - 20 && !found; ++x)
        found = is(d.at(x, y), varnet::plot::detail::series_colour(s));
    INFO("series " << s);
    CHECK(found);
  }
}

TEST_CASE("write_png replaces an existing file and leaves no temporary behind", "[plot]") {
  const std::string path = scratch("replace.png");
  { std::ofstream(path) << "not a png"; }
  Figure f;
  f.series.push_back({"a", {1}, {1}, true});  // one point: a marker, axes around it
  varnet::plot::write_png(f, path);
  const Decoded d = decode_png(read_file(path));
  CHECK(d.width == 800);
  CHECK_FALSE(fs::exists(path + ".partial"));
}

TEST_CASE("nice axes use 1, 2, 5 steps and round tick labels", "[plot]") {
  using varnet::plot::detail::nice_axis;
  using varnet::plot::detail::tick_label;
  const auto a = nice_axis(0.03, 0.97);
  CHECK(a.step == Approx(0.2));
  CHECK(a.lo == 0.0);
  CHECK(a.hi == Approx(1.0));
  const auto b = nice_axis(-3, 1234);
  CHECK(b.step == Approx(200));
  CHECK(b.lo == Approx(-200));
  CHECK(b.hi == Approx(1400));
  const auto c = nice_axis(5, 5);  // one value: an interval around it
  CHECK(c.lo < 5);
  CHECK(c.hi > 5);
  CHECK(tick_label(0.1 + 0.2, 0.1) == "0.3");
  CHECK(tick_label(-1e-17, 0.1) == "0.0");
  CHECK(tick_label(1400, 200) == "1400");
  CHECK(tick_label(0.05, 0.05) == "0.05");
}

TEST_CASE("write_png errors name the series and the point", "[plot]") {
  const std::string path = scratch("bad.png");
  fs::remove(path);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Figure f;
  CHECK(has(error_of([&] { varnet::plot::write_png(f, path); }), "at least one series"));

  f.series = {{"ok", {0, 1}, {0, 1}, true}, {"empty", {}, {}, true}};
  std::string e = error_of([&] { varnet::plot::write_png(f, path); });
  CHECK(has(e, "series 1 'empty' with at least one point"));

  f.series = {{"short", {0, 1, 2}, {0, 1}, true}};
  e = error_of([&] { varnet::plot::write_png(f, path); });
  CHECK(has(e, "series 0 'short'"));
  CHECK(has(e, "3 x and 2 y"));

  f.series = {{"ok", {0, 1}, {0, 1}, true}, {"nan", {0, 1, 2}, {0, nan, 2}, false}};
  e = error_of([&] { varnet::plot::write_png(f, path); });
  CHECK(has(e, "series 1 'nan' with finite values"));
  CHECK(has(e, "at point 1"));
  f.series[1].y[1] = 1;
  f.series[1].x[2] = std::numeric_limits<double>::infinity();
  CHECK(has(error_of([&] { varnet::plot::write_png(f, path); }), "at point 2"));

  f.series = {{"ok", {0, 1}, {0, 1}, true}};
  f.width = 10;
  CHECK(has(error_of([&] { varnet::plot::write_png(f, path); }), "found 10x500"));
  f.width = 800;

  const std::string unwritable = scratch("no_such_dir") + "/x.png";
  e = error_of([&] { varnet::plot::write_png(f, unwritable); });
  CHECK(has(e, "a writable path"));
  CHECK(has(e, unwritable));
  CHECK_FALSE(fs::exists(path));  // nothing was written by the failing calls
}
