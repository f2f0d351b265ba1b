// safetensors: exact round trips, a strict header parser that rejects every kind of damaged file
// with path, expected and found, atomic saves, and files that Python reads back.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "catch.hpp"
#include "errors.hpp"
#include "varnet/nn/safetensors.hpp"

namespace fs = std::filesystem;
using varnet::copy_out;
using varnet::load_safetensors;
using varnet::make_stored;
using varnet::SafetensorsFile;
using varnet::save_safetensors;
using varnet::StoredTensor;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() / ("varnet_test_safetensors_" + std::to_string(std::rand()) +
                                        "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

using varnet::test::error_of;
using varnet::test::has;

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = static_cast<char>(v >> (8 * i));
  return s;
}

// A file from a hand-written header and data buffer.
std::string st_file(const std::string& header, size_t buffer_bytes) {
  return le64(header.size()) + header + std::string(buffer_bytes, '\x01');
}

bool same_bits(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  return a == b;
}

std::vector<std::string> files_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  return names;
}

}  // namespace

TEST_CASE("safetensors round trips F32 and F64 exactly, with metadata", "[safetensors]") {
  TempDir dir;
  const std::string path = dir / "model.safetensors";
  const std::vector<float> w = {1.0f / 3.0f,
                                -0.0f,
                                std::numeric_limits<float>::denorm_min(),
                                std::numeric_limits<float>::infinity(),
                                -1e30f,
                                std::nextafter(1.0f, 2.0f)};
  const std::vector<double> b = {1.0 / 3.0, -2.5, 1e300, std::numeric_limits<double>::denorm_min()};
  const double scalar = 0.125;

  SafetensorsFile f;
  f.tensors.push_back(make_stored("layer0.weight", {2, 3}, w.data()));
  f.tensors.push_back(make_stored("layer0.bias", {4}, b.data()));
  f.tensors.push_back(make_stored("scalar", {}, &scalar));
  f.tensors.push_back(make_stored<float>("empty", {0, 3}, nullptr));
  f.metadata["format"] = "varnet";
  f.metadata["note"] = "quote \" backslash \\ slash / newline \n tab \t cr \r bell \x07 del \x7f";
  f.metadata["unicode \xc3\xa9\xe6\xbc\xa2\xf0\x9f\x98\x80"] = "caf\xc3\xa9 \xf0\x9f\x98\x80";
  f.tensors.push_back(make_stored("na\"me\\with\nescapes \xe2\x9c\x93", {1}, &scalar));
  save_safetensors(path, f);

  // The data buffer starts 8-byte aligned: the header is padded with spaces.
  const std::string raw = read_all(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(raw[size_t(i)]);
  CHECK(n % 8 == 0);
  CHECK(raw[0] != 0);

  const SafetensorsFile g = load_safetensors(path);
  CHECK(g.metadata == f.metadata);
  REQUIRE(g.tensors.size() == f.tensors.size());
  for (size_t i = 0; i < f.tensors.size(); ++i) {
    CHECK(g.tensors[i].name == f.tensors[i].name);
    CHECK(g.tensors[i].dtype == f.tensors[i].dtype);
    CHECK(g.tensors[i].shape == f.tensors[i].shape);
    CHECK(same_bits(g.tensors[i].bytes, f.tensors[i].bytes));
  }
  REQUIRE(g.find("layer0.weight") != nullptr);
  CHECK(g.find("missing") == nullptr);

  std::vector<float> w2(6);
  copy_out(*g.find("layer0.weight"), w2.data(), 6, path);
  CHECK(std::memcmp(w2.data(), w.data(), sizeof(float) * 6) == 0);
  std::vector<double> w3(6);
  copy_out(*g.find("layer0.weight"), w3.data(), 6, path);
  for (size_t i = 0; i < 6; ++i) CHECK((w3[i] == double(w[i]) || std::isnan(w3[i])));
  std::vector<double> b2(4);
  copy_out(*g.find("layer0.bias"), b2.data(), 4, path);
  CHECK(b2 == b);
  std::vector<float> b3(4);
  copy_out(*g.find("layer0.bias"), b3.data(), 4, path);
  for (size_t i = 0; i < 4; ++i) CHECK(b3[i] == static_cast<float>(b[i]));
  double s2 = 0;
  copy_out(*g.find("scalar"), &s2, 1, path);
  CHECK(s2 == scalar);
  copy_out<float>(*g.find("empty"), nullptr, 0, path);

  SECTION("copy_out checks count and dtype") {
    std::vector<float> out(5);
    const std::string m =
        error_of([&] { copy_out(*g.find("layer0.weight"), out.data(), 5, "ckpt"); });
    CHECK(has(m, "ckpt: tensor \"layer0.weight\": expected 5 elements, found 6 elements"));
    StoredTensor t = *g.find("layer0.weight");
    t.dtype = "I32";
    CHECK(has(error_of([&] { copy_out(t, out.data(), 6, "ckpt"); }),
              "expected dtype F32 or F64, found I32"));
  }
  SECTION("no temporary file is left behind") {
    save_safetensors(path, f);  // over an existing file
    CHECK(files_in(dir.path) == std::vector<std::string>{"model.safetensors"});
  }
}

TEST_CASE("safetensors parses JSON escapes and padding", "[safetensors]") {
  TempDir dir;
  const std::string path = dir / "escapes.safetensors";
  const std::string header =
      "{ \"__metadata__\" : { \"k\\/\\u00e9\" : \"\\ud83d\\ude00\\b\\f\\n\\r\\t\\\"\\\\\" } ,\n"
      "  \"a\\u0041\" : { \"shape\" : [ ] , \"data_offsets\" : [ 0 , 1 ] , \"dtype\" : \"U8\" } ,"
      "  \"z\" : {\"dtype\":\"BF16\",\"shape\":[2,1],\"data_offsets\":[1,5]} }        ";
  write_all(path, st_file(header, 5));
  const SafetensorsFile f = load_safetensors(path);
  REQUIRE(f.metadata.size() == 1);
  CHECK(f.metadata.begin()->first == "k/\xc3\xa9");
  CHECK(f.metadata.begin()->second == "\xf0\x9f\x98\x80\b\f\n\r\t\"\\");
  REQUIRE(f.tensors.size() == 2);
  CHECK(f.tensors[0].name == "aA");
  CHECK(f.tensors[0].dtype == "U8");
  CHECK(f.tensors[0].shape.empty());
  CHECK(f.tensors[1].dtype == "BF16");
  CHECK(f.tensors[1].bytes.size() == 4);
  std::vector<float> out(2);
  CHECK(has(error_of([&] { copy_out(f.tensors[1], out.data(), 2, "here"); }), "BF16"));

  // Tensors come back in the order of their data, whatever the order of the header.
  write_all(path, st_file("{\"b\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[1,2]},"
                          "\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
                          2));
  const SafetensorsFile g = load_safetensors(path);
  CHECK(g.tensors[0].name == "a");
  CHECK(g.tensors[1].name == "b");
  CHECK(load_safetensors((write_all(path, st_file("{}", 0)), path)).tensors.empty());
}

TEST_CASE("load_safetensors rejects damaged files", "[safetensors]") {
  TempDir dir;
  const std::string p = dir / "bad.safetensors";
  const std::string good_entry = "\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
  // The error for a file holding `header` followed by `buffer` bytes.
  const auto error_for = [&](const std::string& header, size_t buffer) {
    write_all(p, st_file(header, buffer));
    return error_of([&] { load_safetensors(p); });
  };
  REQUIRE(error_for("{" + good_entry + "}", 8).empty());

  SECTION("file-level damage") {
    CHECK(has(error_of([&] { load_safetensors(dir / "absent"); }), "no such file"));
    write_all(p, "abc");
    CHECK(has(error_of([&] { load_safetensors(p); }),
              p + ": expected at least 8 bytes (the header length), found 3 bytes"));
    write_all(p, le64(1000) + "{}");
    std::string m = error_of([&] { load_safetensors(p); });
    CHECK(has(m, p + ": expected a header length of at most 2"));
    CHECK(has(m, "found 1000"));
    write_all(p, le64(uint64_t(1) << 40) + "{}");
    CHECK(has(error_of([&] { load_safetensors(p); }),
              "expected a header length of at most 100000000 bytes"));
    // Truncated data: the last tensor is cut short.
    const std::string whole = st_file("{" + good_entry + "}", 8);
    write_all(p, whole.substr(0, whole.size() - 3));
    m = error_of([&] { load_safetensors(p); });
    CHECK(has(m, p + ": tensor \"t\": expected data_offsets within the data buffer of 5 bytes"));
    CHECK(has(error_for("[]", 0), "expected a header starting with '{'"));
  }
  SECTION("bad JSON") {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"{\"t\":{}", "expected ',' or '}', found the end of the header"},
        {"{\"a\":1,}", "expected a string key, found '}'"},
        {"{\"a\" 1}", "expected ':', found '1'"},
        {"{\"a\":[1 2]}", "expected ',' or ']', found '2'"},
        {"{\"a\":\"abc}", "expected a closing '\"'"},
        {"{\"a\":01}", "without leading zeros"},
        {"{\"a\":-1}", "expected a non-negative integer, found a negative number"},
        {"{\"a\":1.5}", "found a fraction or exponent"},
        {"{\"a\":1e3}", "found a fraction or exponent"},
        {"{\"a\":true}", "expected an object, array, string or non-negative integer, found 't'"},
        {"{\"a\":99999999999999999999}", "expected an integer below 2^64"},
        {"{\"a\":\"\\x\"}", "found a backslash followed by 'x'"},
        {"{\"a\":\"\\u12g4\"}", "expected four hex digits after \\u"},
        {"{\"a\":\"\\udc00\"}", "found a lone low surrogate"},
        {"{\"a\":\"\\ud800x\"}", "expected a low surrogate"},
        {"{\"a\":\"\\ud800\\u0041\"}", "expected a low surrogate"},
        {"{\"a\":\"tab\there\"}", "expected control characters in strings to be escaped"},
        {"{\"a\":\"\xff\"}", "expected valid UTF-8, found byte 0xff"},
        {"{\"a\":\"\xc0\xaf\"}", "expected valid UTF-8"},          // overlong '/'
        {"{\"a\":\"\xe0\x80\xaf\"}", "expected valid UTF-8"},      // overlong '/', three bytes
        {"{\"a\":\"\xf0\x80\x80\xaf\"}", "expected valid UTF-8"},  // and four
        {"{\"a\":\"\xed\xa0\x80\"}", "expected valid UTF-8"},      // encoded surrogate
        {"{\"a\":\"\xe2\x82\"}", "expected valid UTF-8"},          // cut sequence
        {"{} x", "expected the end of the header"},
        {"{\"a\":1,\"a\":2}", "expected unique keys in each object, found a second \"a\""},
        {"{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}", "nesting of at most"},
    };
    for (const auto& [header, expected] : cases) {
      const std::string m = error_for(header, 0);
      INFO(header);
      INFO(m);
      CHECK(has(m, p + ": header JSON at byte "));
      CHECK(has(m, expected));
    }
  }
  SECTION("bad tensor entries") {
    const auto entry = [](const std::string& dtype, const std::string& shape,
                          const std::string& offsets) {
      return "{\"t\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
             ",\"data_offsets\":" + offsets + "}}";
    };
    const std::string where = p + ": tensor \"t\": expected ";
    CHECK(has(error_for(entry("F128", "[2]", "[0,8]"), 8), where + "a dtype one of F64, F32"));
    CHECK(has(error_for(entry("F128", "[2]", "[0,8]"), 8), "found \"F128\""));
    CHECK(has(error_for(entry("F32", "[3]", "[0,8]"), 8),
              where + "12 bytes of data (shape [3], F32), found 8 bytes"));
    CHECK(has(error_for(entry("F32", "[1]", "[0,8]"), 8),
              where + "4 bytes of data (shape [1], F32), found 8 bytes"));
    CHECK(has(error_for(entry("F32", "[2]", "[0,16]"), 8),
              where + "data_offsets within the data buffer of 8 bytes, found [0, 16]"));
    CHECK(has(error_for(entry("F32", "[2]", "[8,0]"), 8), "begin <= end"));
    CHECK(has(error_for(entry("F32", "[2]", "[0]"), 8), "found an array of 1 items"));
    CHECK(
        has(error_for(entry("F32", "2", "[0,8]"), 8), "expected an array shape, found an integer"));
    CHECK(has(error_for(entry("F32", "[4294967296,4294967296,4294967296]", "[0,8]"), 8),
              "fits 64 bits"));
    CHECK(has(error_for(entry("F32", "[9223372036854775808]", "[0,8]"), 8), "below 2^63"));
    CHECK(has(error_for("{\"t\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8), "found no data_offsets"));
    CHECK(has(
        error_for("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8),
        "expected only the keys dtype, shape and data_offsets, found \"x\""));
    CHECK(has(error_for("{\"t\":[]}", 0), "found an array"));
    CHECK(has(error_for("{\"__metadata__\":{\"k\":1}}", 0),
              p + ": __metadata__ \"k\": expected a string value, found an integer"));
    CHECK(has(error_for("{" + good_entry + "," + good_entry + "}", 8),
              "found a second \"t\""));  // duplicate names
  }
  SECTION("tensors must tile the buffer") {
    const std::string a = "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
    const std::string b_overlap = "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}";
    const std::string b_gap = "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}";
    std::string m = error_for("{" + a + "," + b_overlap + "}", 8);
    CHECK(has(m, p + ": tensor \"b\": expected data starting at byte 8"));
    CHECK(has(m, "found 4 (overlapping another tensor)"));
    m = error_for("{" + a + "," + b_gap + "}", 16);
    CHECK(has(m, "found 12 (leaving a gap)"));
    m = error_for("{" + a + "}", 12);
    CHECK(has(m, p + ": expected tensors covering the whole data buffer of 12 bytes"));
    CHECK(has(m, "found data for the first 8 bytes only"));
    const std::string first_gap = "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}";
    CHECK(has(error_for("{" + first_gap + "}", 8), "expected data starting at byte 0"));
  }
}

TEST_CASE("save_safetensors validates and is atomic", "[safetensors]") {
  TempDir dir;
  const std::string path = dir / "ckpt.safetensors";
  const std::vector<float> v1 = {1, 2, 3}, v2 = {4, 5, 6};
  SafetensorsFile f1;
  f1.tensors.push_back(make_stored("w", {3}, v1.data()));
  f1.metadata["step"] = "1";
  save_safetensors(path, f1);
  const std::string old_bytes = read_all(path);

  SECTION("invalid input throws before anything is written") {
    SafetensorsFile bad = f1;
    bad.tensors.push_back(make_stored("w", {3}, v2.data()));
    CHECK(has(error_of([&] { save_safetensors(path, bad); }),
              path + ": tensor \"w\": expected unique tensor names"));
    bad = f1;
    bad.tensors[0].bytes.pop_back();
    CHECK(has(error_of([&] { save_safetensors(path, bad); }),
              "expected 12 bytes (shape [3], F32), found 11 bytes"));
    bad = f1;
    bad.tensors[0].name = "__metadata__";
    CHECK(has(error_of([&] { save_safetensors(path, bad); }), "reserved __metadata__"));
    bad = f1;
    bad.tensors[0].dtype = "F33";
    CHECK(has(error_of([&] { save_safetensors(path, bad); }), "found \"F33\""));
    bad = f1;
    bad.metadata["k"] = "\xff";
    CHECK(has(error_of([&] { save_safetensors(path, bad); }), "valid UTF-8"));
    CHECK(read_all(path) == old_bytes);
    CHECK(files_in(dir.path) == std::vector<std::string>{"ckpt.safetensors"});
  }
  SECTION("a directory that does not exist: error, nothing created") {
    const std::string nowhere = dir / "no/such/dir/ckpt.safetensors";
    const std::string m = error_of([&] { save_safetensors(nowhere, f1); });
    CHECK(has(m, nowhere + ": expected a writable location for the temporary file"));
    CHECK(!fs::exists(dir.path / "no"));
  }
  SECTION("a failed rename leaves the target and no temporary file") {
    // The target is a non-empty directory: writing the temporary file succeeds, the rename over
    // the target fails, and the temporary file must be cleaned up.
    const std::string blocked = dir / "blocked";
    fs::create_directories(fs::path(blocked) / "inside");
    const std::string m = error_of([&] { save_safetensors(blocked, f1); });
    CHECK(has(m, blocked + ": expected to replace it with the completed temporary file"));
    CHECK(fs::is_directory(fs::path(blocked) / "inside"));
    auto names = files_in(dir.path);
    std::sort(names.begin(), names.end());
    CHECK(names == std::vector<std::string>{"blocked", "ckpt.safetensors"});
  }
  SECTION("a successful save replaces the old file") {
    SafetensorsFile f2;
    f2.tensors.push_back(make_stored("w", {3}, v2.data()));
    save_safetensors(path, f2);
    std::vector<float> out(3);
    copy_out(load_safetensors(path).tensors.at(0), out.data(), 3, path);
    CHECK(out == v2);
    CHECK(load_safetensors(path).metadata.empty());
    CHECK(files_in(dir.path) == std::vector<std::string>{"ckpt.safetensors"});
  }
}

TEST_CASE("python reads the files varnet writes", "[safetensors][python]") {
#if defined(_WIN32)
  const std::string quiet = " > NUL 2>&1";
#else
  const std::string quiet = " > /dev/null 2>&1";
#endif
  if (std::system(("python3 -c \"import json, struct\"" + quiet).c_str()) != 0) {
    WARN("python3 not found: skipping the Python interoperability check");
    return;
  }
  TempDir dir;
  const std::string file = dir / "interop.safetensors";
  const std::string script = dir / "check.py";
  const std::string log = dir / "log.txt";
  const std::vector<float> w = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f};
  const std::vector<double> b = {1.0 / 3.0, -2.5, 1e300};
  SafetensorsFile f;
  f.tensors.push_back(make_stored("weight", {2, 3}, w.data()));
  f.tensors.push_back(make_stored("bias", {3}, b.data()));
  f.metadata["format"] = "pt";
  f.metadata["note"] = "caf\xc3\xa9";
  save_safetensors(file, f);

  // Uses the safetensors package when importable (its own validation then runs too), else
  // decodes by hand with json + struct.
  write_all(script, R"PY(
import json, struct, sys
path = sys.argv[1]
data = open(path, "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n].decode("utf-8"))
ok = header.get("__metadata__") == {"format": "pt", "note": "caf\u00e9"}
try:
    from safetensors import deserialize
    got = {name: (info["dtype"], list(info["shape"]), bytes(info["data"]))
           for name, info in deserialize(data)}
    via = "safetensors"
except ImportError:
    buf = data[8 + n:]
    got = {}
    for name, info in header.items():
        if name != "__metadata__":
            begin, end = info["data_offsets"]
            got[name] = (info["dtype"], info["shape"], buf[begin:end])
    via = "json+struct"
names = {"float32": "F32", "float64": "F64"}
expect = {"weight": ("F32", [2, 3], [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]),
          "bias": ("F64", [3], [1.0 / 3.0, -2.5, 1e300])}
ok = ok and set(got) == set(expect)
for name, (dtype, shape, values) in expect.items():
    gdtype, gshape, raw = got[name]
    gdtype = names.get(str(gdtype).lower(), str(gdtype).upper())
    fmt = "<%d%s" % (len(values), "f" if dtype == "F32" else "d")
    ok = ok and gdtype == dtype and gshape == shape and list(struct.unpack(fmt, raw)) == values
print(via, "ok" if ok else "MISMATCH", header)
sys.exit(0 if ok else 1)
)PY");
  const int rc =
      std::system(("python3 \"" + script + "\" \"" + file + "\" > \"" + log + "\" 2>&1").c_str());
  INFO(read_all(log));
  CHECK(rc == 0);
}
