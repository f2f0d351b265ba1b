// The stochastic layer families a model builder can put in place of a deterministic weight layer,
// and the builders that add one (dense or convolutional) to a network.
//
//   variance       zero-mean weights, learned variance (layers/variance.hpp)
//   gdo            Gaussian dropout, fixed alpha (layers/mean_field.hpp)
//   vdo            variational dropout, one learned alpha per layer
//   svdo           sparse variational dropout, one alpha per weight
//   dropout        binary dropout on the layer's input, then the deterministic layer
//   deterministic  the plain layer
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "varnet/layers/conv2d.hpp"
#include "varnet/layers/dropout.hpp"
#include "varnet/layers/linear.hpp"
#include "varnet/layers/mean_field.hpp"
#include "varnet/layers/variance.hpp"
#include "varnet/nn/network.hpp"

namespace varnet {

enum class LayerKind { variance, gdo, vdo, svdo, dropout, deterministic };

inline const char* to_string(LayerKind k) {
  switch (k) {
    case LayerKind::variance:
      return "variance";
    case LayerKind::gdo:
      return "gdo";
    case LayerKind::vdo:
      return "vdo";
    case LayerKind::svdo:
      return "svdo";
    case LayerKind::dropout:
      return "dropout";
    case LayerKind::deterministic:
      return "deterministic";
  }
  return "?";
}
inline LayerKind parse_layer_kind(const std::string& s) {
  for (LayerKind k : {LayerKind::variance, LayerKind::gdo, LayerKind::vdo, LayerKind::svdo,
                      LayerKind::dropout, LayerKind::deterministic})
    if (s == to_string(k)) return k;
  fail("layer kind", "'variance', 'gdo', 'vdo', 'svdo', 'dropout' or 'deterministic'",
       "'" + s + "'");
}

// How the stochastic layers of a model are configured.
struct StochasticOptions {
  VarianceOptions variance;  // variance layers
  DropoutOptions dropout;    // gdo, vdo, svdo (alpha, initial values, pruning threshold)
  double dropout_p = 0.5;    // binary dropout's drop probability
};

// What every model's config says about its layers: the kind of its stochastic layers, their
// options, optional per-layer kinds and the number of classes. A model's config adds the list of
// its weight layers (numbered from 1) that are stochastic.
struct LayerChoice {
  LayerKind kind = LayerKind::variance;  // the kind of the listed layers; the others: deterministic
  VarianceOptions variance;              // variance layers' distribution and parameterization
  DropoutOptions dropout;                // gdo, vdo, svdo options
  double dropout_p = 0.5;                // binary dropout's drop probability
  std::vector<LayerKind> kinds;          // per-layer kinds (one per weight layer), overriding both
  int64_t classes = 10;

  StochasticOptions stochastic_options() const { return {variance, dropout, dropout_p}; }

  // The kind of weight layer `layer` when `listed` are the stochastic ones.
  LayerKind kind_in(int layer, const std::vector<int>& listed) const {
    if (!kinds.empty()) return kinds[size_t(layer - 1)];
    return std::find(listed.begin(), listed.end(), layer) != listed.end()
               ? kind
               : LayerKind::deterministic;
  }
  // `listed` within 1..count and `kinds` empty or one per weight layer; `model` names the error.
  void check_layers(const char* model, const std::vector<int>& listed, int count) const {
    for (int l : listed)
      check(l >= 1 && l <= count, model, str("stochastic layer numbers in 1-", count), l);
    check(kinds.empty() || kinds.size() == size_t(count), model,
          str("no per-layer kinds, or ", count), kinds.size());
  }
};

// Appends a dense layer of the given kind called `name` (a binary dropout layer goes in front,
// called name + "_drop"). Deterministic layers get a bias when `bias`; the stochastic ones use
// their options' bias flag.
template <class T>
void add_dense(Network<T>& net, const std::string& name, LayerKind kind, int64_t in, int64_t out,
               const StochasticOptions& o, bool bias = false) {
  DropoutOptions d = o.dropout;
  d.bias = bias;
  switch (kind) {
    case LayerKind::variance:
      net.template emplace<VarianceLinear<T>>(name, in, out, o.variance);
      return;
    case LayerKind::gdo:
      net.template emplace<GaussianDropoutLinear<T>>(name, in, out, d);
      return;
    case LayerKind::vdo:
      net.template emplace<VariationalDropoutLinear<T>>(name, in, out, d);
      return;
    case LayerKind::svdo:
      net.template emplace<SparseVDLinear<T>>(name, in, out, d);
      return;
    case LayerKind::dropout:
      net.template emplace<Dropout<T>>(name + "_drop", o.dropout_p);
      break;
    case LayerKind::deterministic:
      break;
  }
  net.template emplace<Linear<T>>(name, in, out, bias);
}

// The convolutional counterpart of add_dense.
template <class T>
void add_conv(Network<T>& net, const std::string& name, LayerKind kind, int64_t in_c, int64_t out_c,
              ConvOptions conv, const StochasticOptions& o) {
  DropoutOptions d = o.dropout;
  d.bias = conv.bias;
  switch (kind) {
    case LayerKind::variance:
      net.template emplace<VarianceConv2d<T>>(name, in_c, out_c, conv, o.variance);
      return;
    case LayerKind::gdo:
      net.template emplace<GaussianDropoutConv2d<T>>(name, in_c, out_c, conv, d);
      return;
    case LayerKind::vdo:
      net.template emplace<VariationalDropoutConv2d<T>>(name, in_c, out_c, conv, d);
      return;
    case LayerKind::svdo:
      net.template emplace<SparseVDConv2d<T>>(name, in_c, out_c, conv, d);
      return;
    case LayerKind::dropout:
      net.template emplace<Dropout<T>>(name + "_drop", o.dropout_p);
      break;
    case LayerKind::deterministic:
      break;
  }
  net.template emplace<Conv2d<T>>(name, in_c, out_c, conv);
}

}  // namespace varnet
