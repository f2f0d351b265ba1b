// Saving and loading a network's parameters and state as safetensors: one tensor per entry of the
// parameter table, under its name and shape, in the network's scalar type. The file is readable
// by the usual Python tools (safetensors, or json + numpy). Saving is atomic (temporary file,
// fsync, rename), so a crash never leaves a half-written model in place of a good one.
#pragma once

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "varnet/nn/network.hpp"
#include "varnet/nn/safetensors.hpp"

namespace varnet {

namespace detail {
inline std::vector<int64_t> dims_of(const Shape& s) {
  // (O, C, KH, KW) stays 4-D; vectors and matrices drop their trailing 1s.
  std::vector<int64_t> d{s.n, s.c, s.h, s.w};
  while (d.size() > 1 && d.back() == 1) d.pop_back();
  return d;
}
}  // namespace detail

template <class T>
void save_network(const Network<T>& net, const std::string& path,
                  std::map<std::string, std::string> metadata = {}) {
  check(net.built(), "save_network", "a built network", "build() not called");
  SafetensorsFile f;
  for (const auto& e : net.table().entries()) {
    const T* src = (e.trainable ? net.params().data() : net.state().data()) + e.offset;
    f.tensors.push_back(make_stored(e.name, detail::dims_of(e.shape), src));
  }
  metadata["format"] = "varnet";
  f.metadata = std::move(metadata);
  save_safetensors(path, f);
}

// Loads every tensor of the network's table from `path`. The file must hold exactly the
// network's tensors with the same shapes (F32 or F64; converted to T); anything else is an error
// and leaves the network unchanged. Returns the file's metadata.
template <class T>
std::map<std::string, std::string> load_network(Network<T>& net, const std::string& path) {
  check(net.built(), "load_network", "a built network", "build() not called");
  const SafetensorsFile f = load_safetensors(path);
  const auto& entries = net.table().entries();
  for (const auto& e : entries) {
    const StoredTensor* t = f.find(e.name);
    check(t != nullptr, path, str("a tensor named '", e.name, "'"), "none (the file holds ",
          f.tensors.size(), " tensors for another network?)");
    check(t->shape == detail::dims_of(e.shape), path,
          str("'", e.name, "' of shape ", safetensors_detail::shape_text(detail::dims_of(e.shape))),
          "shape ", safetensors_detail::shape_text(t->shape));
    check(t->dtype == "F32" || t->dtype == "F64", path, str("'", e.name, "' as F32 or F64"),
          t->dtype);
  }
  check(f.tensors.size() == entries.size(), path,
        str(entries.size(), " tensors, those of the network"), f.tensors.size(), " tensors");
  std::vector<T> params(net.params().begin(), net.params().end());
  std::vector<T> state(net.state().begin(), net.state().end());
  for (const auto& e : entries)
    copy_out(*f.find(e.name), (e.trainable ? params.data() : state.data()) + e.offset,
             e.shape.numel(), path);
  // Copied into the existing buffers: layers hold pointers into them.
  std::copy(params.begin(), params.end(), net.params().begin());
  std::copy(state.begin(), state.end(), net.state().begin());
  return f.metadata;
}

}  // namespace varnet
