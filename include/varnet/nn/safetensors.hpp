// Reading and writing the safetensors format (https://github.com/huggingface/safetensors).
//
// Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
//   {"__metadata__": {"key": "value"}, "name": {"dtype": "F32", "shape": [2, 3],
//    "data_offsets": [begin, end]}, ...}
// (possibly padded with trailing spaces), then the data buffer; offsets are relative to the
// buffer's start. The format is a plain table of names, shapes and bytes, so a checkpoint can be
// opened from Python (safetensors, or json + struct) without varnet.
//
// The header comes from a file that may be truncated, corrupt or hostile, so the JSON parser is
// a small strict one written here (not every target machine has a JSON library), and every
// size and offset is checked, overflow included, before memory is allocated for it. Saving goes
// through a temporary file that is fsync'ed and then renamed over the target, so a crash leaves
// either the old file or the new one, never half of one.
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(_WIN32)
#include <io.h>
#include <process.h>
#else
#include <fcntl.h>
#include <unistd.h>
#endif

#include "varnet/core/error.hpp"

namespace varnet {

// Tensor bytes are stored little-endian and copied with memcpy.
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "varnet's safetensors support assumes a little-endian host");
#endif

struct StoredTensor {
  std::string name;
  std::string dtype;  // "F32", "F64", ...; copy_out converts F32 and F64
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // little-endian, row-major
};

struct SafetensorsFile {
  std::vector<StoredTensor> tensors;  // when loaded: in the order of their data in the file
  std::map<std::string, std::string> metadata;

  // The tensor with this name, or nullptr.
  const StoredTensor* find(const std::string& name) const {
    for (const StoredTensor& t : tensors) {
      if (t.name == name) return &t;
    }
    return nullptr;
  }
};

namespace safetensors_detail {

// A header larger than this is corrupt, not a model (the reference implementation uses the same
// limit).
constexpr uint64_t kMaxHeader = 100000000;
constexpr int kMaxDepth = 64;

// Bytes per element, 0 for an unknown dtype.
inline uint64_t dtype_size(const std::string& dtype) {
  static const std::pair<const char*, uint64_t> kSizes[] = {
      {"F64", 8}, {"F32", 4}, {"F16", 2},  {"BF16", 2},    {"I64", 8},
      {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U64", 8},     {"U32", 4},
      {"U16", 2}, {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  for (const auto& entry : kSizes) {
    if (dtype == entry.first) return entry.second;
  }
  return 0;
}

inline const char* known_dtypes() {
  return "one of F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL, F8_E4M3, "
         "F8_E5M2";
}

inline bool host_little_endian() {
  const uint16_t probe = 1;
  uint8_t first;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

inline std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Bytes of a tensor of this shape; false on a negative dimension or overflow of 64 bits.
inline bool checked_bytes(const std::vector<int64_t>& shape, uint64_t element_size,
                          uint64_t& bytes) {
  uint64_t total = element_size;
  for (int64_t d : shape) {
    if (d < 0) return false;
    const uint64_t u = static_cast<uint64_t>(d);
    if (u != 0 && total > std::numeric_limits<uint64_t>::max() / u) return false;
    total *= u;
  }
  bytes = total;
  return true;
}

// Length of the valid UTF-8 sequence starting at p (at most avail bytes), 0 when invalid:
// overlong forms, surrogates and code points above U+10FFFF are rejected, as JSON requires.
inline size_t utf8_length(const unsigned char* p, size_t avail) {
  const unsigned char c = p[0];
  if (c < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (avail < n) return 0;
  if (p[1] < lo || p[1] > hi) return 0;
  for (size_t i = 2; i < n; ++i) {
    if (p[i] < 0x80 || p[i] > 0xBF) return 0;
  }
  return n;
}

inline std::string byte_hex(unsigned char c) {
  static const char* digits = "0123456789abcdef";
  return std::string("0x") + digits[c >> 4] + digits[c & 0xF];
}

// A JSON string literal for s; throws when s is not valid UTF-8 (the header must be).
inline std::string json_string(const std::string& s, const std::string& where) {
  static const char* digits = "0123456789abcdef";
  std::string out = "\"";
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = p[i];
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      switch (c) {
        case '\b':
          out += "\\b";
          break;
        case '\f':
          out += "\\f";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        default:
          out += "\\u00";
          out += digits[c >> 4];
          out += digits[c & 0xF];
      }
    } else if (c < 0x80) {
      out += static_cast<char>(c);
    } else {
      const size_t n = utf8_length(p + i, s.size() - i);
      if (n == 0) {
        fail(where, "names and metadata in valid UTF-8",
             str("byte ", byte_hex(c), " at position ", i, " of \"", s, "\""));
      }
      out.append(s, i, n);
      i += n;
      continue;
    }
    ++i;
  }
  return out + "\"";
}

// The subset of JSON a safetensors header uses: objects, arrays, strings, non-negative integers.
struct Json {
  enum class Kind { kObject, kArray, kString, kInteger };
  Kind kind = Kind::kObject;
  std::string text;               // kString
  uint64_t integer = 0;           // kInteger
  std::vector<std::string> keys;  // kObject: keys[i] names items[i]
  std::vector<Json> items;        // kObject, kArray
};

inline const char* kind_name(Json::Kind k) {
  switch (k) {
    case Json::Kind::kObject:
      return "an object";
    case Json::Kind::kArray:
      return "an array";
    case Json::Kind::kString:
      return "a string";
    case Json::Kind::kInteger:
      return "an integer";
  }
  return "a value";
}

class JsonParser {
 public:
  JsonParser(const std::string& text, const std::string& path) : s_(text), path_(path) {}

  Json parse_document() {
    skip_space();
    Json v = parse_value(0);
    skip_space();
    if (pos_ != s_.size()) error("the end of the header (only spaces may follow the JSON)", here());
    return v;
  }

 private:
  [[noreturn]] void error(const std::string& expected, const std::string& found) const {
    fail(path_ + ": header JSON at byte " + std::to_string(pos_), expected, found);
  }

  // What is at the current position, for messages.
  std::string here() const {
    if (pos_ >= s_.size()) return "the end of the header";
    const auto c = static_cast<unsigned char>(s_[pos_]);
    if (c >= 0x20 && c < 0x7F) return std::string("'") + static_cast<char>(c) + "'";
    return "byte " + byte_hex(c);
  }

  bool at(char c) const { return pos_ < s_.size() && s_[pos_] == c; }

  void skip_space() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }

  void expect(char c) {
    if (!at(c)) error(std::string("'") + c + "'", here());
    ++pos_;
  }

  Json parse_value(int depth) {
    if (depth >= kMaxDepth)
      error(str("nesting of at most ", kMaxDepth, " levels"), "deeper nesting");
    if (at('{')) return parse_object(depth);
    if (at('[')) return parse_array(depth);
    if (at('"')) {
      Json v;
      v.kind = Json::Kind::kString;
      v.text = parse_string();
      return v;
    }
    if (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') return parse_integer();
    if (at('-')) error("a non-negative integer", "a negative number");
    error("an object, array, string or non-negative integer", here());
  }

  Json parse_object(int depth) {
    Json v;
    v.kind = Json::Kind::kObject;
    ++pos_;  // '{'
    skip_space();
    if (at('}')) {
      ++pos_;
      return v;
    }
    std::set<std::string> seen;
    for (;;) {
      skip_space();
      if (!at('"')) error("a string key", here());
      const size_t key_pos = pos_;
      std::string key = parse_string();
      if (!seen.insert(key).second) {
        pos_ = key_pos;
        error("unique keys in each object", "a second \"" + key + "\"");
      }
      skip_space();
      expect(':');
      skip_space();
      v.keys.push_back(std::move(key));
      v.items.push_back(parse_value(depth + 1));
      skip_space();
      if (at(',')) {
        ++pos_;
        continue;
      }
      if (at('}')) {
        ++pos_;
        return v;
      }
      error("',' or '}'", here());
    }
  }

  Json parse_array(int depth) {
    Json v;
    v.kind = Json::Kind::kArray;
    ++pos_;  // '['
    skip_space();
    if (at(']')) {
      ++pos_;
      return v;
    }
    for (;;) {
      skip_space();
      v.items.push_back(parse_value(depth + 1));
      skip_space();
      if (at(',')) {
        ++pos_;
        continue;
      }
      if (at(']')) {
        ++pos_;
        return v;
      }
      error("',' or ']'", here());
    }
  }

  Json parse_integer() {
    Json v;
    v.kind = Json::Kind::kInteger;
    if (s_[pos_] == '0' && pos_ + 1 < s_.size() && s_[pos_ + 1] >= '0' && s_[pos_ + 1] <= '9') {
      error("an integer without leading zeros", here());
    }
    uint64_t value = 0;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      const uint64_t digit = static_cast<uint64_t>(s_[pos_] - '0');
      if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
        error("an integer below 2^64", "a larger number");
      }
      value = value * 10 + digit;
      ++pos_;
    }
    if (at('.') || at('e') || at('E')) error("an integer", "a fraction or exponent");
    v.integer = value;
    return v;
  }

  uint32_t parse_hex4() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      if (pos_ >= s_.size()) error("four hex digits after \\u", here());
      const char c = s_[pos_];
      uint32_t d;
      if (c >= '0' && c <= '9') {
        d = static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        d = static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        d = static_cast<uint32_t>(c - 'A' + 10);
      } else {
        error("four hex digits after \\u", here());
      }
      v = v * 16 + d;
      ++pos_;
    }
    return v;
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string parse_string() {
    ++pos_;  // '"'
    std::string out;
    for (;;) {
      if (pos_ >= s_.size()) error("a closing '\"'", here());
      const auto c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c == '\\') {
        ++pos_;
        if (pos_ >= s_.size()) error("an escape sequence", here());
        const char e = s_[pos_++];
        switch (e) {
          case '"':
            out += '"';
            break;
          case '\\':
            out += '\\';
            break;
          case '/':
            out += '/';
            break;
          case 'b':
            out += '\b';
            break;
          case 'f':
            out += '\f';
            break;
          case 'n':
            out += '\n';
            break;
          case 'r':
            out += '\r';
            break;
          case 't':
            out += '\t';
            break;
          case 'u': {
            uint32_t cp = parse_hex4();
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
              error("a high surrogate (\\uD800-\\uDBFF) before a low one", "a lone low surrogate");
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
              if (!(at('\\') && pos_ + 1 < s_.size() && s_[pos_ + 1] == 'u')) {
                error("a low surrogate \\uDC00-\\uDFFF after a high one", here());
              }
              pos_ += 2;
              const uint32_t low = parse_hex4();
              if (low < 0xDC00 || low > 0xDFFF) {
                error("a low surrogate \\uDC00-\\uDFFF after a high one",
                      str("\\u", std::hex, low));
              }
              cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            }
            append_utf8(out, cp);
            break;
          }
          default:
            --pos_;
            error("one of the escapes \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX",
                  "a backslash followed by " + here());
        }
        continue;
      }
      if (c < 0x20) error("control characters in strings to be escaped", here());
      const size_t n =
          utf8_length(reinterpret_cast<const unsigned char*>(s_.data()) + pos_, s_.size() - pos_);
      if (n == 0) error("valid UTF-8", here());
      out.append(s_, pos_, n);
      pos_ += n;
    }
  }

  const std::string& s_;
  const std::string& path_;
  size_t pos_ = 0;
};

// A unique name next to the target, so the final rename stays within one file system.
inline std::string temp_path_for(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  const auto ticks =
      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
#if defined(_WIN32)
  const long pid = static_cast<long>(_getpid());
#else
  const long pid = static_cast<long>(getpid());
#endif
  return str(path, ".tmp.", pid, ".", counter++, ".", ticks % 1000000007u);
}

// Removes the temporary file unless the save completed.
struct TempFileGuard {
  std::string path;
  std::FILE* file = nullptr;
  bool keep = false;
  ~TempFileGuard() {
    if (file) std::fclose(file);
    if (!keep) std::remove(path.c_str());
  }
};

// Makes the rename itself durable; best effort, as some file systems refuse to sync directories.
inline void sync_directory_of(const std::string& path) {
#if !defined(_WIN32)
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
#else
  (void)path;
#endif
}

}  // namespace safetensors_detail

// Writes f to path atomically: a temporary file in the same directory is written, flushed,
// synced to disk and renamed over path. Tensors are stored in the order given.
inline void save_safetensors(const std::string& path, const SafetensorsFile& f) {
  namespace sd = safetensors_detail;
  check(sd::host_little_endian(), path, "a little-endian host", "a big-endian one");

  std::string header = "{";
  if (!f.metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : f.metadata) {
      if (!first) header += ",";
      first = false;
      header += sd::json_string(key, path) + ":" + sd::json_string(value, path);
    }
    header += "},";
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const StoredTensor& t : f.tensors) {
    const std::string where = path + ": tensor \"" + t.name + "\"";
    check(t.name != "__metadata__", where, "a tensor name other than the reserved __metadata__",
          "__metadata__");
    check(names.insert(t.name).second, where, "unique tensor names", "a second tensor so named");
    const uint64_t size = sd::dtype_size(t.dtype);
    check(size != 0, where, str("a dtype ", sd::known_dtypes()), "\"", t.dtype, "\"");
    uint64_t bytes = 0;
    check(sd::checked_bytes(t.shape, size, bytes), where,
          "a shape of non-negative dimensions whose size fits 64 bits", sd::shape_text(t.shape));
    check(bytes == t.bytes.size(), where,
          str(bytes, " bytes (shape ", sd::shape_text(t.shape), ", ", t.dtype, ")"), t.bytes.size(),
          " bytes");
    header += sd::json_string(t.name, path) + ":{\"dtype\":" + sd::json_string(t.dtype, path) +
              ",\"shape\":" + sd::shape_text(t.shape) + ",\"data_offsets\":[" +
              std::to_string(offset) + "," + std::to_string(offset + bytes) + "]},";
    offset += bytes;
  }
  if (header.back() == ',') header.pop_back();
  header += "}";
  // Padding keeps the data buffer 8-byte aligned in the file, as the reference writer does.
  header.append((8 - header.size() % 8) % 8, ' ');

  uint8_t length[8];
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(n >> (8 * i));

  sd::TempFileGuard tmp;
  tmp.path = sd::temp_path_for(path);
  errno = 0;
  // "x": never open (and later clobber) a file that happens to exist under the temporary name.
  tmp.file = std::fopen(tmp.path.c_str(), "wbx");
  if (!tmp.file) {
    fail(path, "a writable location for the temporary file " + tmp.path,
         std::string("it cannot be created: ") + std::strerror(errno));
  }
  const auto write_failed = [&](const char* what) {
    fail(path, str("to write ", what, " to ", tmp.path),
         std::string("a write error: ") + std::strerror(errno));
  };
  if (std::fwrite(length, 1, 8, tmp.file) != 8) write_failed("the header length");
  if (std::fwrite(header.data(), 1, header.size(), tmp.file) != header.size()) {
    write_failed("the header");
  }
  for (const StoredTensor& t : f.tensors) {
    if (!t.bytes.empty() &&
        std::fwrite(t.bytes.data(), 1, t.bytes.size(), tmp.file) != t.bytes.size()) {
      write_failed("tensor data");
    }
  }
  if (std::fflush(tmp.file) != 0) write_failed("buffered data");
#if defined(_WIN32)
  if (_commit(_fileno(tmp.file)) != 0) write_failed("data to disk (commit)");
#else
  if (::fsync(fileno(tmp.file)) != 0) write_failed("data to disk (fsync)");
#endif
  std::FILE* file = tmp.file;
  tmp.file = nullptr;
  if (std::fclose(file) != 0) write_failed("the file (close)");

  // std::filesystem::rename replaces an existing target on every platform (std::rename does not
  // on Windows).
  std::error_code ec;
  std::filesystem::rename(tmp.path, path, ec);
  if (ec) {
    fail(path, "to replace it with the completed temporary file " + tmp.path,
         "a rename error: " + ec.message());
  }
  tmp.keep = true;
  sd::sync_directory_of(path);
}

// Reads and validates a safetensors file; tensors come back in the order of their data.
inline SafetensorsFile load_safetensors(const std::string& path) {
  namespace sd = safetensors_detail;
  using sd::Json;
  check(sd::host_little_endian(), path, "a little-endian host", "a big-endian one");

  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) fail(path, "an existing safetensors file", "no such file");
  if (std::filesystem::is_directory(status)) fail(path, "a safetensors file", "a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "a readable safetensors file", "it cannot be opened");
  in.seekg(0, std::ios::end);
  const std::streamoff end_pos = in.tellg();
  check(end_pos >= 0, path, "a file whose size can be determined", "tellg failed");
  const auto file_size = static_cast<uint64_t>(end_pos);
  in.seekg(0, std::ios::beg);
  check(file_size >= 8, path, "at least 8 bytes (the header length)", file_size, " bytes");

  uint8_t length[8];
  in.read(reinterpret_cast<char*>(length), 8);
  check(in.gcount() == 8, path, "8 bytes of header length", in.gcount(), " bytes");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | length[i];
  check(n <= sd::kMaxHeader, path, str("a header length of at most ", sd::kMaxHeader, " bytes"), n,
        " (not a safetensors file?)");
  check(n <= file_size - 8, path,
        str("a header length of at most ", file_size - 8, " (the bytes after the length field)"), n,
        " (truncated file?)");
  check(n >= 2, path, "a header of at least 2 bytes ({})", n, " bytes");

  std::string header(static_cast<size_t>(n), '\0');
  in.read(header.data(), static_cast<std::streamsize>(n));
  check(static_cast<uint64_t>(in.gcount()) == n, path, str(n, " header bytes"), in.gcount(),
        " (the file changed while being read?)");
  if (header[0] != '{') {
    fail(path, "a header starting with '{'",
         "byte " + sd::byte_hex(static_cast<unsigned char>(header[0])) +
             " (not a safetensors file?)");
  }
  const Json root = sd::JsonParser(header, path).parse_document();
  const uint64_t buffer_size = file_size - 8 - n;

  struct Entry {
    StoredTensor tensor;
    uint64_t begin = 0, end = 0;
  };
  std::vector<Entry> entries;
  SafetensorsFile out;
  for (size_t i = 0; i < root.keys.size(); ++i) {
    const std::string& name = root.keys[i];
    const Json& value = root.items[i];
    if (name == "__metadata__") {
      check(value.kind == Json::Kind::kObject, path + ": __metadata__",
            "an object of string values", sd::kind_name(value.kind));
      for (size_t k = 0; k < value.keys.size(); ++k) {
        check(value.items[k].kind == Json::Kind::kString,
              path + ": __metadata__ \"" + value.keys[k] + "\"", "a string value",
              sd::kind_name(value.items[k].kind));
        out.metadata[value.keys[k]] = value.items[k].text;
      }
      continue;
    }
    const std::string where = path + ": tensor \"" + name + "\"";
    check(value.kind == Json::Kind::kObject, where, "an object with dtype, shape and data_offsets",
          sd::kind_name(value.kind));
    const Json* dtype = nullptr;
    const Json* shape = nullptr;
    const Json* offsets = nullptr;
    for (size_t k = 0; k < value.keys.size(); ++k) {
      const std::string& key = value.keys[k];
      if (key == "dtype") {
        dtype = &value.items[k];
      } else if (key == "shape") {
        shape = &value.items[k];
      } else if (key == "data_offsets") {
        offsets = &value.items[k];
      } else {
        fail(where, "only the keys dtype, shape and data_offsets", "\"" + key + "\"");
      }
    }
    if (!dtype || !shape || !offsets) {
      fail(where, "the keys dtype, shape and data_offsets",
           std::string("no ") + (!dtype   ? "dtype"
                                 : !shape ? "shape"
                                          : "data_offsets"));
    }

    Entry e;
    e.tensor.name = name;
    check(dtype->kind == Json::Kind::kString, where, "a string dtype", sd::kind_name(dtype->kind));
    e.tensor.dtype = dtype->text;
    const uint64_t size = sd::dtype_size(e.tensor.dtype);
    check(size != 0, where, str("a dtype ", sd::known_dtypes()), "\"", e.tensor.dtype, "\"");

    check(shape->kind == Json::Kind::kArray, where, "an array shape", sd::kind_name(shape->kind));
    for (const Json& d : shape->items) {
      check(d.kind == Json::Kind::kInteger, where, "a shape of integers", sd::kind_name(d.kind));
      check(d.integer <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), where,
            "shape dimensions below 2^63", d.integer);
      e.tensor.shape.push_back(static_cast<int64_t>(d.integer));
    }
    uint64_t bytes = 0;
    check(sd::checked_bytes(e.tensor.shape, size, bytes), where,
          "a shape whose size in bytes fits 64 bits", sd::shape_text(e.tensor.shape));

    check(offsets->kind == Json::Kind::kArray && offsets->items.size() == 2 &&
              offsets->items[0].kind == Json::Kind::kInteger &&
              offsets->items[1].kind == Json::Kind::kInteger,
          where, "data_offsets of two integers [begin, end]",
          offsets->kind == Json::Kind::kArray ? str("an array of ", offsets->items.size(), " items")
                                              : std::string(sd::kind_name(offsets->kind)));
    e.begin = offsets->items[0].integer;
    e.end = offsets->items[1].integer;
    check(e.begin <= e.end, where, "data_offsets with begin <= end", "[", e.begin, ", ", e.end,
          "]");
    check(e.end <= buffer_size, where,
          str("data_offsets within the data buffer of ", buffer_size, " bytes"), "[", e.begin, ", ",
          e.end, "]");
    check(e.end - e.begin == bytes, where,
          str(bytes, " bytes of data (shape ", sd::shape_text(e.tensor.shape), ", ", e.tensor.dtype,
              ")"),
          e.end - e.begin, " bytes (data_offsets [", e.begin, ", ", e.end, "])");
    entries.push_back(std::move(e));
  }

  // The tensors must tile the buffer: no byte shared, none left over.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t next = 0;
  for (const Entry& e : entries) {
    if (e.begin != next) {
      fail(path + ": tensor \"" + e.tensor.name + "\"",
           str("data starting at byte ", next, ", where the previous tensor's data ends"),
           str(e.begin, e.begin < next ? " (overlapping another tensor)" : " (leaving a gap)"));
    }
    next = e.end;
  }
  check(next == buffer_size, path,
        str("tensors covering the whole data buffer of ", buffer_size, " bytes"),
        "data for the first ", next, " bytes only");

  // Sizes are now bounded by the file's size, so allocating them is safe.
  out.tensors.reserve(entries.size());
  for (Entry& e : entries) {
    const uint64_t bytes = e.end - e.begin;
    e.tensor.bytes.resize(static_cast<size_t>(bytes));
    if (bytes > 0) {
      in.read(reinterpret_cast<char*>(e.tensor.bytes.data()), static_cast<std::streamsize>(bytes));
      check(static_cast<uint64_t>(in.gcount()) == bytes,
            path + ": tensor \"" + e.tensor.name + "\"", str(bytes, " bytes of data"), in.gcount(),
            " (the file changed while being read?)");
    }
    out.tensors.push_back(std::move(e.tensor));
  }
  return out;
}

// A tensor of floats (F32) or doubles (F64) from count = product(shape) values at data.
template <class T>
StoredTensor make_stored(const std::string& name, const std::vector<int64_t>& shape,
                         const T* data) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "make_stored stores float (F32) or double (F64)");
  StoredTensor t;
  t.name = name;
  t.dtype = std::is_same_v<T, float> ? "F32" : "F64";
  t.shape = shape;
  uint64_t bytes = 0;
  check(safetensors_detail::checked_bytes(shape, sizeof(T), bytes) &&
            bytes <= static_cast<uint64_t>(std::numeric_limits<std::ptrdiff_t>::max()),
        "make_stored(\"" + name + "\")", "a shape of non-negative dimensions of addressable size",
        safetensors_detail::shape_text(shape));
  check(bytes == 0 || data != nullptr, "make_stored(\"" + name + "\")",
        "data for a non-empty shape", "a null pointer");
  t.bytes.resize(static_cast<size_t>(bytes));
  if (bytes > 0) std::memcpy(t.bytes.data(), data, static_cast<size_t>(bytes));
  return t;
}

// Copies the count elements of an F32 or F64 tensor into dst, converting to T. where names the
// caller (e.g. the checkpoint's path and the parameter) for messages.
template <class T>
void copy_out(const StoredTensor& t, T* dst, int64_t count, const std::string& where) {
  static_assert(std::is_floating_point_v<T>, "copy_out converts to a floating-point type");
  const std::string what = where + ": tensor \"" + t.name + "\"";
  check(t.dtype == "F32" || t.dtype == "F64", what, "dtype F32 or F64", t.dtype);
  const uint64_t size = t.dtype == "F32" ? 4 : 8;
  uint64_t bytes = 0;
  check(safetensors_detail::checked_bytes(t.shape, size, bytes), what,
        "a shape of non-negative dimensions", safetensors_detail::shape_text(t.shape));
  const uint64_t numel = bytes / size;
  check(count >= 0 && numel == static_cast<uint64_t>(count), what, str(count, " elements"), numel,
        " elements (shape ", safetensors_detail::shape_text(t.shape), ")");
  check(t.bytes.size() == bytes, what, str(bytes, " bytes of data"), t.bytes.size(), " bytes");
  check(count == 0 || dst != nullptr, what, "a destination for the data", "a null pointer");
  const uint8_t* src = t.bytes.data();
  for (int64_t i = 0; i < count; ++i) {
    if (size == 4) {
      float v;
      std::memcpy(&v, src + 4 * i, 4);
      dst[i] = static_cast<T>(v);
    } else {
      double v;
      std::memcpy(&v, src + 8 * i, 8);
      dst[i] = static_cast<T>(v);
    }
  }
}

}  // namespace varnet
