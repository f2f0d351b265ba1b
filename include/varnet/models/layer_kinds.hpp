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

#include <string>

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
