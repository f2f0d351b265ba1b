// One flat parameter buffer, one flat gradient buffer and one flat state buffer per network,
// with named views into them.
//
// Layers declare what they need (name, shape, initialisation) during Network::build; the network
// then allocates each buffer once and hands every layer pointers into it. The optimizer is a
// single loop over the flat buffers, and serialization is the table of names, shapes and offsets.
// Trainable tensors live in params/grads; non-trainable ones (batch-norm running statistics) in
// state, which has no gradient and no optimizer update.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "varnet/core/error.hpp"
#include "varnet/core/random.hpp"
#include "varnet/core/tensor.hpp"

namespace varnet {

// How a tensor is initialised: constant, or uniform on [-bound, bound].
struct Init {
  // log_square_uniform: log(u^2 + 1e-12), u ~ U(-bound, bound): a log-variance parameter that
  // starts where a sigma parameter initialised uniform would.
  enum class Kind { constant, uniform, log_square_uniform } kind = Kind::constant;
  double value = 0.0;  // the constant, or the bound of the uniform
  static Init constant(double v) { return Init{Kind::constant, v}; }
  static Init uniform(double bound) { return Init{Kind::uniform, bound}; }
  static Init log_square_uniform(double bound) { return Init{Kind::log_square_uniform, bound}; }
  // U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as the reference code initialises theta and sigma.
  static Init fan_in(int64_t fan_in) { return uniform(1.0 / std::sqrt(double(fan_in))); }
};

struct ParamEntry {
  std::string name;  // "<layer name>.<tensor name>", unique in the network
  Shape shape;
  int64_t offset = 0;  // into params/grads when trainable, into state otherwise
  bool trainable = true;
  Init init;
  uint32_t layer = 0;  // position of the owning layer
};

// Handle a layer keeps for one of its declared tensors.
struct ParamRef {
  int64_t offset = -1;
  int64_t size = 0;
  bool trainable = true;
};

// Collects declarations; owned by the network while it builds.
class ParamTable {
 public:
  ParamRef declare(const std::string& name, Shape shape, Init init, uint32_t layer,
                   bool trainable = true) {
    for (const auto& e : entries_)
      check(e.name != name, "parameter table", "unique parameter names", "'", name, "' twice");
    int64_t& end = trainable ? trainable_size_ : state_size_;
    entries_.push_back(ParamEntry{name, shape, end, trainable, init, layer});
    ParamRef ref{end, shape.numel(), trainable};
    end += shape.numel();
    return ref;
  }

  const std::vector<ParamEntry>& entries() const { return entries_; }
  int64_t trainable_size() const { return trainable_size_; }
  int64_t state_size() const { return state_size_; }
  const ParamEntry* find(const std::string& name) const {
    for (const auto& e : entries_)
      if (e.name == name) return &e;
    return nullptr;
  }

  // Fills the buffers from each entry's Init, with noise keyed by (seed, layer, stream::kInit):
  // a network built twice with one seed starts from identical values.
  template <class T>
  void initialize(uint64_t seed, T* params, T* state) const {
    for (const auto& e : entries_) {
      T* dst = (e.trainable ? params : state) + e.offset;
      const int64_t n = e.shape.numel();
      if (e.init.kind == Init::Kind::constant) {
        std::fill(dst, dst + n, static_cast<T>(e.init.value));
        continue;
      }
      // One Philox stream per entry: the entry's index within its layer goes into `step`.
      uint32_t index_in_layer = 0;
      for (const auto& o : entries_) {
        if (&o == &e) break;
        if (o.layer == e.layer) ++index_in_layer;
      }
      const NoiseKey key{seed, e.layer, index_in_layer, stream::kInit};
      for (int64_t i = 0; i < n; ++i) {
        const double u = e.init.value * (2.0 * uniform_at(key, uint64_t(i)) - 1.0);
        dst[i] = static_cast<T>(e.init.kind == Init::Kind::uniform ? u : std::log(u * u + 1e-12));
      }
    }
  }

 private:
  std::vector<ParamEntry> entries_;
  int64_t trainable_size_ = 0;
  int64_t state_size_ = 0;
};

}  // namespace varnet
