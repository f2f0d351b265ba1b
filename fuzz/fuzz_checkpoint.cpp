// libFuzzer target: the checkpoint reader on arbitrary bytes, and, when a file passes, applying
// it to a small network (the one fuzz/make_corpus.cpp saves). Almost every mutation breaks the
// CRC-32, so an input that is valid safetensors is also re-saved with its checksum recomputed
// and read again: that reaches the metadata checks and apply_checkpoint. varnet::Error is the
// expected answer to a bad file; anything else is a finding.
#include <cstdint>
#include <string>

#include "fuzz_input.hpp"
#include "fuzz_network.hpp"
#include "varnet/nn/checkpoint.hpp"

namespace {

void read_and_apply(const std::string& path) {
  try {
    const varnet::CheckpointFile f = varnet::read_checkpoint(path);
    static varnet::Network<float> net = varnet::fuzz::network();
    varnet::Adam<float> adam(net.params().size());
    varnet::apply_checkpoint(f, net, adam, varnet::fuzz::config(), varnet::fuzz::kSeed);
  } catch (const varnet::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = varnet::fuzz::write_input(data, size, ".ckpt");
  read_and_apply(path);
  try {
    varnet::SafetensorsFile f = varnet::load_safetensors(path);
    f.metadata["checksum"] = varnet::checkpoint_detail::checksum(f);
    const std::string resaved = path + ".resaved";
    varnet::save_safetensors(resaved, f);
    read_and_apply(resaved);
  } catch (const varnet::Error&) {
  }
  return 0;
}
