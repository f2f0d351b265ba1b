// libFuzzer target: the safetensors reader, then copy_out of every F32/F64 tensor, on arbitrary
// bytes. varnet::Error is the expected answer to a bad file; anything else is a finding.
#include <cstdint>
#include <vector>

#include "fuzz_input.hpp"
#include "varnet/nn/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = varnet::fuzz::write_input(data, size, ".safetensors");
  try {
    const varnet::SafetensorsFile f = varnet::load_safetensors(path);
    for (const varnet::StoredTensor& t : f.tensors) {
      if (t.dtype != "F32" && t.dtype != "F64") continue;
      std::vector<double> out(t.bytes.size() / (t.dtype == "F32" ? 4 : 8));
      varnet::copy_out(t, out.data(), int64_t(out.size()), path);
    }
  } catch (const varnet::Error&) {
  }
  return 0;
}
