// A small self-contained raster plotter for the examples: line and scatter series on one pair of
// axes with round tick values, grid, title, axis labels and a legend, written as an RGB PNG.
//
//   varnet::plot::Figure f{"accuracy", "epsilon", "test accuracy", {{"variance", eps, acc}}};
//   varnet::plot::write_png(f, "docs/adversarial.png");
//
// Text uses a built-in 5x7 bitmap font (printable ASCII; other bytes draw as '?'). The PNG is
// deflated with zlib and written to a temporary file that is renamed over the target, so a reader
// never sees half a file. Errors (no points, x/y sizes that differ, non-finite values, a path that
// cannot be written) throw varnet::Error naming the series and the point.
#pragma once

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

#include "varnet/core/error.hpp"

namespace varnet::plot {

struct Series {
  std::string label;
  std::vector<double> x, y;
  bool line = true;  // false: scatter markers
};

struct Figure {
  std::string title, xlabel, ylabel;
  std::vector<Series> series;
  int width = 800, height = 500;
};

namespace detail {

struct Rgb {
  uint8_t r, g, b;
};

// Distinct colours (the "tab10" palette), cycled when there are more series.
inline Rgb series_colour(size_t i) {
  static const Rgb palette[] = {{31, 119, 180},  {255, 127, 14}, {44, 160, 44},   {214, 39, 40},
                                {148, 103, 189}, {140, 86, 75},  {227, 119, 194}, {127, 127, 127},
                                {188, 189, 34},  {23, 190, 207}};
  return palette[i % (sizeof(palette) / sizeof(palette[0]))];
}

// 5x7 glyphs for ASCII 32..126: seven rows of five pixels, '#' set, top row first.
constexpr int kGlyphW = 5, kGlyphH = 7, kAdvance = 6;
inline const char* glyph_rows(char ch) {
  static const char* const glyphs[95] = {
      "..... ..... ..... ..... ..... ..... .....",  // space
      "..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#..",  // !
      ".#.#. .#.#. ..... ..... ..... ..... .....",  // "
      ".#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.",  // #
      "..#.. .#### #.#.. .###. ..#.# ####. ..#..",  // $
      "##... ##..# ...#. ..#.. .#... #..## ...##",  // %
      ".##.. #..#. #.#.. .#... #.#.# #..#. .##.#",  // &
      "..#.. ..#.. ..... ..... ..... ..... .....",  // '
      "...#. ..#.. .#... .#... .#... ..#.. ...#.",  // (
      ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",  // )
      "..... ..#.. #.#.# .###. #.#.# ..#.. .....",  // *
      "..... ..#.. ..#.. ##### ..#.. ..#.. .....",  // +
      "..... ..... ..... ..... .##.. ..#.. .#...",  // ,
      "..... ..... ..... ##### ..... ..... .....",  // -
      "..... ..... ..... ..... ..... .##.. .##..",  // .
      "..... ....# ...#. ..#.. .#... #.... .....",  // /
      ".###. #...# #..## #.#.# ##..# #...# .###.",  // 0
      "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",  // 1
      ".###. #...# ....# ...#. ..#.. .#... #####",  // 2
      "##### ...#. ..#.. ...#. ....# #...# .###.",  // 3
      "...#. ..##. .#.#. #..#. ##### ...#. ...#.",  // 4
      "##### #.... ####. ....# ....# #...# .###.",  // 5
      "..##. .#... #.... ####. #...# #...# .###.",  // 6
      "##### ....# ...#. ..#.. .#... .#... .#...",  // 7
      ".###. #...# #...# .###. #...# #...# .###.",  // 8
      ".###. #...# #...# .#### ....# ...#. .##..",  // 9
      "..... .##.. .##.. ..... .##.. .##.. .....",  // :
      "..... .##.. .##.. ..... .##.. ..#.. .#...",  // ;
      "...#. ..#.. .#... #.... .#... ..#.. ...#.",  // <
      "..... ..... ##### ..... ##### ..... .....",  // =
      ".#... ..#.. ...#. ....# ...#. ..#.. .#...",  // >
      ".###. #...# ....# ...#. ..#.. ..... ..#..",  // ?
      ".###. #...# ....# .##.# #.#.# #.#.# .###.",  // @
      ".###. #...# #...# ##### #...# #...# #...#",  // A
      "####. #...# #...# ####. #...# #...# ####.",  // B
      ".###. #...# #.... #.... #.... #...# .###.",  // C
      "###.. #..#. #...# #...# #...# #..#. ###..",  // D
      "##### #.... #.... ####. #.... #.... #####",  // E
      "##### #.... #.... ####. #.... #.... #....",  // F
      ".###. #...# #.... #.### #...# #...# .####",  // G
      "#...# #...# #...# ##### #...# #...# #...#",  // H
      ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",  // I
      "..### ...#. ...#. ...#. ...#. #..#. .##..",  // J
      "#...# #..#. #.#.. ##... #.#.. #..#. #...#",  // K
      "#.... #.... #.... #.... #.... #.... #####",  // L
      "#...# ##.## #.#.# #.#.# #...# #...# #...#",  // M
      "#...# #...# ##..# #.#.# #..## #...# #...#",  // N
      ".###. #...# #...# #...# #...# #...# .###.",  // O
      "####. #...# #...# ####. #.... #.... #....",  // P
      ".###. #...# #...# #...# #.#.# #..#. .##.#",  // Q
      "####. #...# #...# ####. #.#.. #..#. #...#",  // R
      ".#### #.... #.... .###. ....# ....# ####.",  // S
      "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",  // T
      "#...# #...# #...# #...# #...# #...# .###.",  // U
      "#...# #...# #...# #...# #...# .#.#. ..#..",  // V
      "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",  // W
      "#...# #...# .#.#. ..#.. .#.#. #...# #...#",  // X
      "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",  // Y
      "##### ....# ...#. ..#.. .#... #.... #####",  // Z
      ".###. .#... .#... .#... .#... .#... .###.",  // [
      "..... #.... .#... ..#.. ...#. ....# .....",  // backslash
      ".###. ...#. ...#. ...#. ...#. ...#. .###.",  // ]
      "..#.. .#.#. #...# ..... ..... ..... .....",  // ^
      "..... ..... ..... ..... ..... ..... #####",  // _
      ".#... ..#.. ..... ..... ..... ..... .....",  // `
      "..... ..... .###. ....# .#### #...# .####",  // a
      "#.... #.... #.##. ##..# #...# #...# ####.",  // b
      "..... ..... .###. #.... #.... #...# .###.",  // c
      "....# ....# .##.# #..## #...# #...# .####",  // d
      "..... ..... .###. #...# ##### #.... .###.",  // e
      "..##. .#..# .#... ###.. .#... .#... .#...",  // f
      "..... ..... .#### #...# .#### ....# .###.",  // g
      "#.... #.... #.##. ##..# #...# #...# #...#",  // h
      "..#.. ..... .##.. ..#.. ..#.. ..#.. .###.",  // i
      "...#. ..... ..##. ...#. ...#. #..#. .##..",  // j
      "#.... #.... #..#. #.#.. ##... #.#.. #..#.",  // k
      ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",  // l
      "..... ..... ##.#. #.#.# #.#.# #...# #...#",  // m
      "..... ..... #.##. ##..# #...# #...# #...#",  // n
      "..... ..... .###. #...# #...# #...# .###.",  // o
      "..... ..... ####. #...# ####. #.... #....",  // p
      "..... ..... .##.# #..## .#### ....# ....#",  // q
      "..... ..... #.##. ##..# #.... #.... #....",  // r
      "..... ..... .###. #.... .###. ....# ####.",  // s
      ".#... .#... ###.. .#... .#... .#..# ..##.",  // t
      "..... ..... #...# #...# #...# #..## .##.#",  // u
      "..... ..... #...# #...# #...# .#.#. ..#..",  // v
      "..... ..... #...# #...# #.#.# #.#.# .#.#.",  // w
      "..... ..... #...# .#.#. ..#.. .#.#. #...#",  // x
      "..... ..... #...# #...# .#### ....# .###.",  // y
      "..... ..... ##### ...#. ..#.. .#... #####",  // z
      "...#. ..#.. ..#.. .#... ..#.. ..#.. ...#.",  // {
      "..#.. ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",  // |
      ".#... ..#.. ..#.. ...#. ..#.. ..#.. .#...",  // }
      "..... ..... .#... #.#.# ...#. ..... .....",  // ~
  };
  const int c = static_cast<unsigned char>(ch);
  return glyphs[(c >= 32 && c <= 126 ? c : '?') - 32];
}
inline bool glyph_pixel(char ch, int col, int row) {
  return glyph_rows(ch)[row * (kGlyphW + 1) + col] == '#';
}

// An RGB image with clipped drawing primitives.
class Canvas {
 public:
  Canvas(int w, int h) : w_(w), h_(h), px_(size_t(w) * size_t(h) * 3, 255) {}
  int width() const { return w_; }
  int height() const { return h_; }
  const std::vector<uint8_t>& pixels() const { return px_; }

  // Drawing is confined to this rectangle (inclusive bounds).
  void clip(int x0, int y0, int x1, int y1) { cx0_ = x0, cy0_ = y0, cx1_ = x1, cy1_ = y1; }
  void unclip() { clip(0, 0, w_ - 1, h_ - 1); }

  // alpha in [0, 1]: 1 paints over, less blends with what is there.
  void set(int x, int y, Rgb c, double alpha = 1) {
    if (x < cx0_ || x > cx1_ || y < cy0_ || y > cy1_) return;
    uint8_t* p = &px_[(size_t(y) * size_t(w_) + size_t(x)) * 3];
    const uint8_t v[3] = {c.r, c.g, c.b};
    for (int k = 0; k < 3; ++k) p[k] = uint8_t(std::lround(alpha * v[k] + (1 - alpha) * p[k]));
  }
  void fill_rect(int x0, int y0, int x1, int y1, Rgb c) {
    for (int y = y0; y <= y1; ++y)
      for (int x = x0; x <= x1; ++x) set(x, y, c);
  }
  void hline(int x0, int x1, int y, Rgb c) {
    fill_rect(std::min(x0, x1), y, std::max(x0, x1), y, c);
  }
  void vline(int x, int y0, int y1, Rgb c) {
    fill_rect(x, std::min(y0, y1), x, std::max(y0, y1), c);
  }
  void rect(int x0, int y0, int x1, int y1, Rgb c) {
    hline(x0, x1, y0, c), hline(x0, x1, y1, c), vline(x0, y0, y1, c), vline(x1, y0, y1, c);
  }
  void disc(double cx, double cy, double radius, Rgb c, double alpha = 1) {
    const int r = int(std::ceil(radius));
    const int x0 = int(std::lround(cx)), y0 = int(std::lround(cy));
    for (int dy = -r; dy <= r; ++dy)
      for (int dx = -r; dx <= r; ++dx)
        if (dx * dx + dy * dy <= radius * radius + 0.5) set(x0 + dx, y0 + dy, c, alpha);
  }
  // A line `thickness` pixels wide: square pens stepped along the longer axis.
  void line(double xa, double ya, double xb, double yb, Rgb c, int thickness = 2) {
    const double dx = xb - xa, dy = yb - ya;
    const int steps = std::max(1, int(std::ceil(std::max(std::abs(dx), std::abs(dy)))));
    const int lo = -(thickness - 1) / 2, hi = thickness / 2;
    for (int s = 0; s <= steps; ++s) {
      const int x = int(std::lround(xa + dx * s / steps)),
                y = int(std::lround(ya + dy * s / steps));
      for (int oy = lo; oy <= hi; ++oy)
        for (int ox = lo; ox <= hi; ++ox) set(x + ox, y + oy, c);
    }
  }
  // Text with its top-left corner at (x, y), each font pixel drawn as scale x scale; `vertical`
  // runs it upwards from (x, y) = bottom-left, for a y-axis label.
  void text(int x, int y, const std::string& s, Rgb c, int scale = 1, bool vertical = false) {
    for (size_t i = 0; i < s.size(); ++i)
      for (int row = 0; row < kGlyphH; ++row)
        for (int col = 0; col < kGlyphW; ++col) {
          if (!glyph_pixel(s[i], col, row)) continue;
          const int along = (int(i) * kAdvance + col) * scale;
          for (int sy = 0; sy < scale; ++sy)
            for (int sx = 0; sx < scale; ++sx) {
              if (vertical)
                set(x + row * scale + sy, y - along - sx, c);
              else
                set(x + along + sx, y + row * scale + sy, c);
            }
        }
  }

 private:
  int w_, h_;
  std::vector<uint8_t> px_;
  int cx0_ = 0, cy0_ = 0, cx1_ = 0x7FFFFFFF, cy1_ = 0x7FFFFFFF;
};

inline int text_width(const std::string& s, int scale = 1) {
  return s.empty() ? 0 : (int(s.size()) * kAdvance - 1) * scale;
}

// Axis limits widened to multiples of a 1, 2 or 5 x 10^k step with about `target` intervals.
struct Axis {
  double lo, hi, step;
};
inline Axis nice_axis(double lo, double hi, int target = 6) {
  if (hi - lo <= 1e-12 * std::max(1.0, std::max(std::abs(lo), std::abs(hi)))) {
    const double pad = lo == 0 ? 1 : 0.5 * std::abs(lo);  // one value: centre it
    lo -= pad, hi += pad;
  }
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  const double step = (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
  return {std::floor(lo / step + 1e-9) * step, std::ceil(hi / step - 1e-9) * step, step};
}

// A tick value with as many decimals as the step needs ("0.25", "1500", "-3"); %g for extremes.
inline std::string tick_label(double v, double step) {
  if (std::abs(v) < step * 1e-9) v = 0;  // no "-0"
  char buf[64];
  const double big = std::max(std::abs(v), step);
  if (big >= 1e7 || step < 1e-5)
    std::snprintf(buf, sizeof buf, "%.3g", v);
  else {
    const int decimals = std::max(0, int(std::ceil(-std::log10(step) - 1e-9)));
    // a 2.5-type step never occurs (steps are 1, 2, 5 x 10^k), so this is exact enough
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  }
  return buf;
}

// PNG: signature, IHDR, one IDAT (zlib stream of filter-0 scanlines), IEND.
inline void put_u32(std::string& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(char((v >> s) & 0xFF));
}
inline void put_chunk(std::string& out, const char type[4], const std::string& data) {
  put_u32(out, uint32_t(data.size()));
  const size_t start = out.size();
  out.append(type, 4);
  out += data;
  const uLong crc =
      crc32(0L, reinterpret_cast<const Bytef*>(out.data() + start), uInt(out.size() - start));
  put_u32(out, uint32_t(crc));
}
inline std::string encode_png(const Canvas& c) {
  const int w = c.width(), h = c.height();
  std::string raw;
  raw.reserve(size_t(h) * (size_t(w) * 3 + 1));
  for (int y = 0; y < h; ++y) {
    raw.push_back('\0');  // filter type 0: none
    raw.append(reinterpret_cast<const char*>(c.pixels().data()) + size_t(y) * size_t(w) * 3,
               size_t(w) * 3);
  }
  uLongf zlen = compressBound(uLong(raw.size()));
  std::string z(zlen, '\0');
  const int rc = compress2(reinterpret_cast<Bytef*>(&z[0]), &zlen,
                           reinterpret_cast<const Bytef*>(raw.data()), uLong(raw.size()), 6);
  check(rc == Z_OK, "plot::write_png", "zlib compression to succeed", "error code ", rc);
  z.resize(zlen);
  std::string ihdr;
  put_u32(ihdr, uint32_t(w));
  put_u32(ihdr, uint32_t(h));
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8 bits, RGB, deflate, no filter, no interlace
  std::string png("\x89PNG\r\n\x1a\n", 8);
  put_chunk(png, "IHDR", ihdr);
  put_chunk(png, "IDAT", z);
  put_chunk(png, "IEND", "");
  return png;
}

inline void validate(const Figure& f) {
  const std::string where = "plot::write_png";
  check(f.width >= 200 && f.width <= 8000 && f.height >= 150 && f.height <= 8000, where,
        "a size within 200x150 .. 8000x8000 pixels", f.width, "x", f.height);
  check(!f.series.empty(), where, "at least one series", "none");
  for (size_t s = 0; s < f.series.size(); ++s) {
    const Series& sr = f.series[s];
    const std::string name = str("series ", s, " '", sr.label, "'");
    check(!sr.x.empty(), where, name + " with at least one point", "none");
    check(sr.x.size() == sr.y.size(), where, name + " with as many y values as x values",
          sr.x.size(), " x and ", sr.y.size(), " y");
    for (size_t i = 0; i < sr.x.size(); ++i)
      check(std::isfinite(sr.x[i]) && std::isfinite(sr.y[i]), where, name + " with finite values",
            "x = ", sr.x[i], ", y = ", sr.y[i], " at point ", i);
  }
}

inline Canvas render(const Figure& f) {
  const Rgb black{0, 0, 0}, grey{90, 90, 90}, grid{225, 225, 225}, white{255, 255, 255};
  Canvas c(f.width, f.height);

  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const Series& s : f.series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, s.y[i]), y1 = std::max(y1, s.y[i]);
    }
  // A little room so that markers at the extremes are not cut by the frame.
  const double px = 0.02 * (x1 - x0), py = 0.03 * (y1 - y0);
  const Axis ax = nice_axis(x0 - px, x1 + px), ay = nice_axis(y0 - py, y1 + py, 5);

  // Plot rectangle: room for the title above, tick labels and axis labels left and below.
  std::vector<std::string> ylabels;
  int ylabel_w = 0;
  const int ny = int(std::lround((ay.hi - ay.lo) / ay.step)),
            nx = int(std::lround((ax.hi - ax.lo) / ax.step));
  for (int i = 0; i <= ny; ++i) {
    ylabels.push_back(tick_label(ay.lo + i * ay.step, ay.step));
    ylabel_w = std::max(ylabel_w, text_width(ylabels.back()));
  }
  const int left = 12 + (f.ylabel.empty() ? 0 : 2 * kGlyphH + 10) + ylabel_w + 8;
  const int right = f.width - 20, top = f.title.empty() ? 20 : 2 * kGlyphH + 24;
  const int bottom = f.height - (f.xlabel.empty() ? 30 : 30 + 2 * kGlyphH + 8);
  check(right - left >= 50 && bottom - top >= 50, "plot::write_png",
        "a figure large enough for its labels", f.width, "x", f.height);
  const auto X = [&](double v) { return left + (v - ax.lo) / (ax.hi - ax.lo) * (right - left); };
  const auto Y = [&](double v) { return bottom - (v - ay.lo) / (ay.hi - ay.lo) * (bottom - top); };

  // Grid and ticks.
  for (int i = 0; i <= ny; ++i) {
    const int y = int(std::lround(Y(ay.lo + i * ay.step)));
    c.hline(left, right, y, grid);
    c.hline(left - 5, left - 1, y, black);
    c.text(left - 8 - text_width(ylabels[size_t(i)]), y - kGlyphH / 2, ylabels[size_t(i)], black);
  }
  for (int i = 0; i <= nx; ++i) {
    const double v = ax.lo + i * ax.step;
    const int x = int(std::lround(X(v)));
    c.vline(x, top, bottom, grid);
    c.vline(x, bottom + 1, bottom + 5, black);
    const std::string l = tick_label(v, ax.step);
    c.text(x - text_width(l) / 2, bottom + 9, l, black);
  }
  c.rect(left, top, right, bottom, black);

  // Title and axis labels at twice the font size.
  if (!f.title.empty()) c.text((f.width - text_width(f.title, 2)) / 2, 10, f.title, black, 2);
  if (!f.xlabel.empty())
    c.text((left + right - text_width(f.xlabel, 2)) / 2, f.height - 2 * kGlyphH - 10, f.xlabel,
           black, 2);
  if (!f.ylabel.empty())
    c.text(12, (top + bottom + text_width(f.ylabel, 2)) / 2, f.ylabel, black, 2, true);

  // Series: lines (with small markers when there are few points) or semi-transparent markers.
  c.clip(left + 1, top + 1, right - 1, bottom - 1);
  for (size_t s = 0; s < f.series.size(); ++s) {
    const Series& sr = f.series[s];
    const Rgb col = series_colour(s);
    if (sr.line) {
      for (size_t i = 1; i < sr.x.size(); ++i)
        c.line(X(sr.x[i - 1]), Y(sr.y[i - 1]), X(sr.x[i]), Y(sr.y[i]), col);
      if (sr.x.size() <= 40)
        for (size_t i = 0; i < sr.x.size(); ++i) c.disc(X(sr.x[i]), Y(sr.y[i]), 3, col);
    } else {
      const double alpha = sr.x.size() > 200 ? 0.6 : 1.0;  // dense clouds show their density
      for (size_t i = 0; i < sr.x.size(); ++i) c.disc(X(sr.x[i]), Y(sr.y[i]), 2.5, col, alpha);
    }
  }
  c.unclip();

  // Legend: top-right inside the frame, one row per labelled series.
  int rows = 0, label_w = 0;
  for (const Series& s : f.series)
    if (!s.label.empty()) ++rows, label_w = std::max(label_w, text_width(s.label));
  if (rows > 0) {
    const int row_h = 14, bw = 36 + label_w + 8, bh = rows * row_h + 8;
    const int bx = right - 8 - bw, by = top + 8;
    c.fill_rect(bx, by, bx + bw, by + bh, white);
    c.rect(bx, by, bx + bw, by + bh, grey);
    int r = 0;
    for (size_t s = 0; s < f.series.size(); ++s) {
      if (f.series[s].label.empty()) continue;
      const Rgb col = series_colour(s);
      const int y = by + 4 + r * row_h + row_h / 2;
      if (f.series[s].line) c.line(bx + 6, y, bx + 28, y, col);
      c.disc(bx + 17, y, 3, col);
      c.text(bx + 36, y - kGlyphH / 2, f.series[s].label, black);
      ++r;
    }
  }
  return c;
}

}  // namespace detail

// Renders the figure and writes it to `path` as a PNG (atomically: temp file, then rename).
inline void write_png(const Figure& f, const std::string& path) {
  detail::validate(f);
  const std::string png = detail::encode_png(detail::render(f));
  const std::string tmp = path + ".partial";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    check(out.good(), "plot::write_png", "a writable path", "'", path, "' (cannot create ", tmp,
          ")");
    out.write(png.data(), std::streamsize(png.size()));
    out.close();
    if (!out) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      fail("plot::write_png", "a writable path", "a write error on '" + tmp + "'");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    const std::string why = ec.message();
    std::filesystem::remove(tmp, ec);
    fail("plot::write_png", "a writable path", str("'", path, "' (", why, ")"));
  }
}

}  // namespace varnet::plot
