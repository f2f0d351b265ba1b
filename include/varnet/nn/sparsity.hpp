// Per-layer reports of a network's weights: dropout rates (log alpha), sparsity, KL, and the
// compression ratio of the whole network (all weights / weights that survive pruning).
#pragma once

#include <string>
#include <vector>

#include "varnet/nn/network.hpp"

namespace varnet {

struct LayerWeightReport {
  std::string name, kind;
  WeightStats stats;
};

struct WeightReport {
  std::vector<LayerWeightReport> layers;  // the layers that have weights, in order
  int64_t weights = 0, kept = 0;
  double kl = 0;
  // weights / kept: 1 for a network without pruning
  double compression() const { return kept > 0 ? double(weights) / double(kept) : 0.0; }
};

// `threshold`: the log alpha above which a weight counts as dropped (3 in Molchanov et al.).
template <class T>
WeightReport weight_report(const Network<T>& net, double threshold = 3.0) {
  WeightReport r;
  for (size_t i = 0; i < net.size(); ++i) {
    const Layer<T>& l = net.layer(i);
    const WeightStats s = l.weight_stats(threshold);
    if (s.weights == 0) continue;
    r.layers.push_back({l.name(), l.kind(), s});
    r.weights += s.weights;
    r.kept += s.kept;
    r.kl += s.kl;
  }
  return r;
}

}  // namespace varnet
