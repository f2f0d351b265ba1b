// libFuzzer target: the IDX reader (raw or gzip) on arbitrary bytes. A varnet::Error is the
// expected answer to a bad file; anything else (a crash, a sanitizer report, another exception,
// a hang, an allocation beyond -malloc_limit_mb) is a finding.
#include <cstdint>

#include "fuzz_input.hpp"
#include "varnet/data/idx.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = varnet::fuzz::write_input(data, size, ".idx");
  try {
    const varnet::data::IdxArray a = varnet::data::read_idx(path);
    // A successful read must be self-consistent.
    uint64_t n = 1;
    for (int64_t d : a.dims) n *= uint64_t(d);
    if (n != a.values.size()) __builtin_trap();
  } catch (const varnet::Error&) {
  }
  return 0;
}
