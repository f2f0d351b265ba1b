// libFuzzer target: the checkpoint reader on arbitrary bytes, and, when a file passes, applying
// it to a small network (the one fuzz/make_corpus.cpp saves). varnet::Error is the expected
// answer to a bad file; anything else is a finding.
#include <cstdint>

#include "fuzz_input.hpp"
#include "fuzz_network.hpp"
#include "varnet/nn/checkpoint.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = varnet::fuzz::write_input(data, size, ".ckpt");
  try {
    const varnet::CheckpointFile f = varnet::read_checkpoint(path);
    static varnet::Network<float> net = varnet::fuzz::network();
    varnet::Adam<float> adam(net.params().size());
    varnet::apply_checkpoint(f, net, adam, varnet::fuzz::config(), varnet::fuzz::kSeed);
  } catch (const varnet::Error&) {
  }
  return 0;
}
