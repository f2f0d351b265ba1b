// The readers under fuzzing take file paths, so each input is written to a file first: a
// per-process file in /dev/shm when it exists (memory, no disk traffic), else in /tmp.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace varnet::fuzz {

// Writes the input to this process's scratch file and returns its path. `suffix` matters to
// readers that look at names (none today; kept for clarity in crash reports).
inline const std::string& write_input(const uint8_t* data, size_t size, const char* suffix) {
  static const std::string path = [&] {
    const char* dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    return std::string(dir) + "/varnet_fuzz_" + std::to_string(getpid()) + suffix;
  }();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  if (std::fclose(f) != 0) std::abort();
  return path;
}

}  // namespace varnet::fuzz
