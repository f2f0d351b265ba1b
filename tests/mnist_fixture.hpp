// Test fixtures for the example programs: a scratch directory, a small generated data set in
// MNIST format (gzipped IDX), so that the examples are exercised on data other than Fashion-MNIST,
// and running an example binary and reading its output.
#pragma once

#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "catch.hpp"
#include "varnet/core/random.hpp"

namespace fixture {

namespace fs = std::filesystem;

// A fresh directory under the system's temporary directory, removed with everything in it.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& prefix) {
    path = fs::temp_directory_path() / (prefix + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

void put_u32(std::vector<uint8_t>& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
}

// Writes images (n, side, side) and labels as gzipped IDX files: class k (of 4) is a bright
// square in quadrant k on a dim, varying background. Image i is of class i % classes.
void write_set(const fs::path& dir, const std::string& prefix, int n, int side, uint32_t salt,
               int classes = 4) {
  std::vector<uint8_t> img, lab;
  put_u32(img, 0x00000803);
  put_u32(img, uint32_t(n));
  put_u32(img, uint32_t(side));
  put_u32(img, uint32_t(side));
  put_u32(lab, 0x00000801);
  put_u32(lab, uint32_t(n));
  const varnet::NoiseKey key{salt, 0, 0, 0};
  for (int i = 0; i < n; ++i) {
    const int k = i % classes;
    lab.push_back(uint8_t(k));
    for (int r = 0; r < side; ++r)
      for (int c = 0; c < side; ++c) {
        const bool in = (r / (side / 2)) == k / 2 && (c / (side / 2)) == k % 2;
        const float u = varnet::uniform_at(key, uint64_t(i) * side * side + uint64_t(r * side + c));
        img.push_back(uint8_t(in ? 150 + 100 * u : 60 * u));
      }
  }
  const auto write_gz = [](const fs::path& p, const std::vector<uint8_t>& b) {
    gzFile f = gzopen(p.string().c_str(), "wb");
    REQUIRE(f != nullptr);
    REQUIRE(gzwrite(f, b.data(), unsigned(b.size())) == int(b.size()));
    REQUIRE(gzclose(f) == Z_OK);
  };
  write_gz(dir / (prefix + "-images-idx3-ubyte.gz"), img);
  write_gz(dir / (prefix + "-labels-idx1-ubyte.gz"), lab);
}

// The comma-separated fields of one CSV line (no quoting: the examples write none).
inline std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t comma; (comma = line.find(',', start)) != std::string::npos; start = comma + 1)
    out.push_back(line.substr(start, comma - start));
  out.push_back(line.substr(start));
  return out;
}

// The progress line of epoch `epoch` ("1/2") up to its training accuracy, "epoch 1/2  loss L  train
// acc A" (the speed that follows differs from run to run); "" when there is none.
inline std::string epoch_loss_line(const std::string& out, const std::string& epoch) {
  const size_t at = out.find("epoch " + epoch + "  loss ");
  if (at == std::string::npos) return "";
  const size_t acc = out.find("train acc ", at), end = out.find('\n', at);
  return out.substr(at, (acc < end ? std::min(out.find("  ", acc + 10), end) : end) - at);
}

inline std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// An example's exit status and its stdout and stderr together.
struct Run {
  int status = -1;
  std::string out;
};

// Runs the executable named by environment variable `exe_env` (set by CMake) with `args`,
// its output going to `log`.
inline Run run_program(const char* exe_env, const std::string& args, const fs::path& log) {
  const std::string cmd =
      std::string(std::getenv(exe_env)) + " " + args + " > " + log.string() + " 2>&1";
  const int raw = std::system(cmd.c_str());
  return Run{WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, read_file(log)};
}

// True when a run with --device cuda was refused for want of a GPU: by a build without CUDA
// (before any data is read) or, in a CUDA build, on a machine without a GPU (when training
// starts); either way with exit status 2 and a message naming --device.
inline bool refused_for_no_gpu(const Run& r) {
  return r.status == 2 && r.out.find("--device") != std::string::npos &&
         (r.out.find("expected a CUDA GPU on this machine") != std::string::npos ||
          r.out.find("this build has no CUDA backend") != std::string::npos);
}

// The number after the last "key": in out, or, with `object`, the first one inside the JSON
// object that follows the last "object":{.
inline double json_number(const std::string& out, const std::string& key,
                          const std::string& object = "") {
  size_t from = std::string::npos;
  if (!object.empty()) {
    from = out.rfind("\"" + object + "\":{");
    REQUIRE(from != std::string::npos);
  }
  const size_t at =
      object.empty() ? out.rfind("\"" + key + "\":") : out.find("\"" + key + "\":", from);
  REQUIRE(at != std::string::npos);
  return std::strtod(out.c_str() + at + key.size() + 3, nullptr);
}

}  // namespace fixture
