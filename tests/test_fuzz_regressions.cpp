// Every file of the fuzzers' seed corpora (fuzz/corpus/<target>) and every input the fuzzers
// found a problem with (fuzz/regressions/<target>) goes through its reader as in the fuzz
// target: the answer must be a clean varnet::Error or success, never a crash (the sanitizer
// build of this test turns memory errors and undefined behaviour into failures). Seeds must read
// successfully.
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "../fuzz/fuzz_network.hpp"
#include "catch.hpp"
#include "varnet/data/cifar.hpp"
#include "varnet/data/idx.hpp"
#include "varnet/nn/checkpoint.hpp"
#include "varnet/nn/safetensors.hpp"

namespace fs = std::filesystem;

#ifndef VARNET_FUZZ_DIR
#error "VARNET_FUZZ_DIR must name the fuzz/ directory (tests/CMakeLists.txt defines it)"
#endif

namespace {

std::vector<std::string> files_in(const std::string& sub) {
  std::vector<std::string> out;
  const fs::path dir = fs::path(VARNET_FUZZ_DIR) / sub;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename().string()[0] != '.')
      out.push_back(e.path().string());
  return out;
}

// Runs the target's reader on one file: "" on success, else the varnet::Error's message. Any
// other exception fails the test.
std::string read_as(const std::string& target, const std::string& path) {
  try {
    if (target == "idx") {
      varnet::data::read_idx(path);
    } else if (target == "cifar") {
      // As the fuzz target: the file read as each format, every one of them. A seed is one of
      // them, so it reads cleanly when one format accepts it; every refusal must still be a
      // varnet::Error.
      using varnet::data::CifarFormat;
      using varnet::data::CifarLabels;
      std::string refused;
      bool accepted = false;
      for (const auto& [format, labels] : {std::pair{CifarFormat::cifar10, CifarLabels::fine},
                                           std::pair{CifarFormat::cifar100, CifarLabels::fine},
                                           std::pair{CifarFormat::cifar100, CifarLabels::coarse}}) {
        try {
          varnet::data::read_cifar_file(path, format, labels);
          accepted = true;
        } catch (const varnet::Error& e) {
          refused = e.what();
        }
      }
      return accepted ? "" : refused;
    } else if (target == "safetensors") {
      const varnet::SafetensorsFile f = varnet::load_safetensors(path);
      for (const varnet::StoredTensor& t : f.tensors) {
        if (t.dtype != "F32" && t.dtype != "F64") continue;
        std::vector<double> out(t.bytes.size() / (t.dtype == "F32" ? 4 : 8));
        varnet::copy_out(t, out.data(), int64_t(out.size()), path);
      }
    } else {
      const varnet::CheckpointFile f = varnet::read_checkpoint(path);
      varnet::Network<float> net = varnet::fuzz::network();
      varnet::Adam<float> adam(net.params().size());
      varnet::apply_checkpoint(f, net, adam, varnet::fuzz::config(), varnet::fuzz::kSeed);
    }
  } catch (const varnet::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("fuzz seeds read cleanly, kept findings give a clean answer", "[fuzz]") {
  for (const std::string target : {"idx", "cifar", "safetensors", "checkpoint"}) {
    const auto seeds = files_in("corpus/" + target);
    INFO(target);
    CHECK(seeds.size() >= 1);
    for (const auto& p : seeds) {
      INFO(p);
      CHECK(read_as(target, p).empty());
    }
    for (const auto& p : files_in("regressions/" + target)) {
      INFO(p);
      const std::string m = read_as(target, p);
      // Either accepted, or refused with "<path>: expected ..., found ...".
      CHECK((m.empty() ||
             (m.find(p) != std::string::npos && m.find("expected") != std::string::npos)));
    }
  }
}
