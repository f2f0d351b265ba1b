// Writes the seed corpora of the fuzz targets into DIR/{idx,cifar,safetensors,checkpoint}: small
// valid files of each kind. The committed fuzz/corpus/ came from
//   g++ -std=c++17 -O1 -Iinclude -I/usr/include/eigen3 fuzz/make_corpus.cpp -o make_corpus -lz
//   ./make_corpus fuzz/corpus
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "fuzz_network.hpp"
#include "varnet/nn/checkpoint.hpp"
#include "varnet/nn/optimizer.hpp"
#include "varnet/nn/safetensors.hpp"

namespace fs = std::filesystem;

namespace {

std::vector<uint8_t> idx(uint8_t rank, const std::vector<uint32_t>& dims, uint8_t fill) {
  std::vector<uint8_t> b = {0, 0, 0x08, rank};
  uint64_t n = 1;
  for (uint32_t d : dims) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(d >> s));
    n *= d;
  }
  for (uint64_t i = 0; i < n; ++i) b.push_back(uint8_t(fill + i));
  return b;
}

// n CIFAR records with `label_bytes` label bytes (1: CIFAR-10, 2: CIFAR-100 coarse then fine)
// and 3072 varied pixel bytes.
std::vector<uint8_t> cifar(int label_bytes, int n) {
  std::vector<uint8_t> b;
  for (int i = 0; i < n; ++i) {
    for (int l = 0; l < label_bytes; ++l) b.push_back(uint8_t(3 * i + 7 * l));
    for (int e = 0; e < 3072; ++e) b.push_back(uint8_t((e * 37 + i * 101) & 0xFF));
  }
  return b;
}

void write(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

void write_gz(const fs::path& p, const std::vector<uint8_t>& b) {
  gzFile f = gzopen(p.string().c_str(), "wb");
  gzwrite(f, b.data(), unsigned(b.size()));
  gzclose(f);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus DIR\n");
    return 2;
  }
  const fs::path dir = argv[1];
  for (const char* sub : {"idx", "cifar", "safetensors", "checkpoint"})
    fs::create_directories(dir / sub);

  write(dir / "idx" / "labels-rank1", idx(1, {6}, 0));
  write(dir / "idx" / "images-rank3", idx(3, {2, 3, 3}, 7));
  write(dir / "idx" / "matrix-rank2", idx(2, {2, 2}, 250));
  write(dir / "idx" / "rank4", idx(4, {1, 2, 1, 2}, 1));
  write_gz(dir / "idx" / "images-rank3.gz", idx(3, {2, 4, 4}, 3));

  // Two records of each CIFAR format (the fuzzer's -max_len of 8192 bytes holds two).
  write(dir / "cifar" / "cifar10-2.bin", cifar(1, 2));
  write(dir / "cifar" / "cifar100-2.bin", cifar(2, 2));

  varnet::SafetensorsFile st;
  const std::vector<float> w = {0.5f, -1.0f, 2.0f, 0.0f, 1e-3f, 3.0f};
  const std::vector<double> b = {1.0 / 3.0, -2.0};
  st.tensors.push_back(varnet::make_stored("w", {2, 3}, w.data()));
  st.tensors.push_back(varnet::make_stored("b", {2}, b.data()));
  st.tensors.push_back(varnet::make_stored<float>("empty", {0}, nullptr));
  varnet::StoredTensor bytes;
  bytes.name = "bytes";
  bytes.dtype = "U8";
  bytes.shape = {3};
  bytes.bytes = {1, 2, 3};
  st.tensors.push_back(bytes);
  st.metadata = {{"format", "pt"}, {"note", "caf\xc3\xa9"}};
  varnet::save_safetensors((dir / "safetensors" / "mixed.safetensors").string(), st);
  varnet::save_safetensors((dir / "safetensors" / "empty.safetensors").string(), {});

  varnet::Network<float> net = varnet::fuzz::network();
  varnet::Adam<float> adam(net.params().size());
  varnet::AlignedVector<float> grads(net.params().size(), 0.25f);
  for (int i = 0; i < 2; ++i) adam.step(net.params(), grads, 1e-2);
  varnet::CheckpointInfo info;
  info.step = 2;
  info.step_in_epoch = 2;
  info.seed = varnet::fuzz::kSeed;
  info.config = varnet::fuzz::config();
  info.extra["epoch_loss"] = "1.5";
  const std::string ckpt = (dir / "checkpoint" / "small.ckpt").string();
  varnet::save_checkpoint(ckpt, net, adam, info);
  // save_checkpoint keeps a file it replaces as .prev; a rerun over an existing corpus must not
  // leave that behind as an extra seed.
  std::filesystem::remove(varnet::previous_checkpoint_path(ckpt));
  std::printf("wrote the seed corpora under %s\n", dir.string().c_str());
  return 0;
}
