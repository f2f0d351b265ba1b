// libFuzzer target: the CIFAR-10 and CIFAR-100 binary readers on arbitrary bytes, the same file
// read as each format (CIFAR-100 with fine and with coarse labels). A varnet::Error is the
// expected answer to a bad file; anything else (a crash, a sanitizer report, another exception, a
// hang, an allocation beyond -malloc_limit_mb) is a finding, and so is a successful read that
// does not hold exactly the file's records.
#include <cstdint>

#include "fuzz_input.hpp"
#include "varnet/data/cifar.hpp"

namespace {

using varnet::data::CifarFormat;
using varnet::data::CifarLabels;

void read_as(const std::string& path, const uint8_t* data, size_t size, CifarFormat format,
             CifarLabels labels) {
  try {
    const varnet::data::LabeledImages d = varnet::data::read_cifar_file(path, format, labels);
    const bool ten = format == CifarFormat::cifar10;
    const size_t label_bytes = ten ? 1 : 2, record = label_bytes + 3072;
    const size_t label_at = !ten && labels == CifarLabels::fine ? 1 : 0;
    const int classes = ten ? 10 : (labels == CifarLabels::fine ? 100 : 20);
    const size_t n = static_cast<size_t>(d.images.shape().n);
    if (n == 0 || n * record != size || d.labels.size() != n || d.classes != classes)
      __builtin_trap();
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* r = data + i * record;
      if (d.labels[i] != r[label_at] || d.labels[i] >= classes) __builtin_trap();
      for (size_t e = 0; e < 3072; ++e)
        if (d.images[int64_t(i * 3072 + e)] != r[label_bytes + e] / 255.0f) __builtin_trap();
    }
  } catch (const varnet::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = varnet::fuzz::write_input(data, size, ".bin");
  read_as(path, data, size, CifarFormat::cifar10, CifarLabels::fine);
  read_as(path, data, size, CifarFormat::cifar100, CifarLabels::fine);
  read_as(path, data, size, CifarFormat::cifar100, CifarLabels::coarse);
  return 0;
}
