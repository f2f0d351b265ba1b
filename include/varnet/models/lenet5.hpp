// LeNet-5 (Caffe variant) as in PAPER.md section 6:
//   conv 20 5x5 -> BN -> ReLU -> maxpool 2 -> conv 50 5x5 -> BN -> ReLU -> maxpool 2 -> flatten
//   -> fc 500 -> BN -> ReLU -> fc classes; no weight biases (batch norm follows, or the logits).
// Any of the four weight layers (numbered 1-4) may be a variance layer, or any other stochastic
// layer kind of models/layer_kinds.hpp.
#pragma once

#include <algorithm>
#include <vector>

#include "varnet/layers/activations.hpp"
#include "varnet/layers/batchnorm.hpp"
#include "varnet/layers/conv2d.hpp"
#include "varnet/layers/flatten.hpp"
#include "varnet/layers/linear.hpp"
#include "varnet/layers/pooling.hpp"
#include "varnet/layers/variance.hpp"
#include "varnet/models/layer_kinds.hpp"
#include "varnet/nn/network.hpp"

namespace varnet {

struct LeNet5Config : LayerChoice {
  std::vector<int> variance_layers = {1};  // which of the weight layers 1-4 are stochastic
  LayerKind kind_of(int layer) const { return kind_in(layer, variance_layers); }
};

// Builds (and initialises) LeNet-5 for inputs of one sample's shape `input` (C, H, W).
template <class T>
Network<T> make_lenet5(const LeNet5Config& cfg, Shape input, uint64_t seed) {
  cfg.check_layers("LeNet-5", cfg.variance_layers, 4);
  const StochasticOptions so = cfg.stochastic_options();
  check(input.h >= 16 && input.w >= 16, "LeNet-5", "inputs of at least 16x16 pixels", input.h, "x",
        input.w);
  const ConvOptions conv{5, 1, 0, false};
  Network<T> net;
  const auto add_conv = [&](int index, int64_t in_c, int64_t out_c) {
    varnet::add_conv(net, "conv" + std::to_string(index), cfg.kind_of(index), in_c, out_c, conv,
                     so);
  };
  const auto add_fc = [&](int index, int64_t in, int64_t out) {
    add_dense(net, "fc" + std::to_string(index - 2), cfg.kind_of(index), in, out, so);
  };
  add_conv(1, input.c, 20);
  net.template emplace<BatchNorm<T>>("bn1", 20);
  net.template emplace<ReLU<T>>("relu1");
  net.template emplace<MaxPool2d<T>>("pool1", 2);
  add_conv(2, 20, 50);
  net.template emplace<BatchNorm<T>>("bn2", 50);
  net.template emplace<ReLU<T>>("relu2");
  net.template emplace<MaxPool2d<T>>("pool2", 2);
  net.template emplace<Flatten<T>>("flatten");
  const int64_t h = ((input.h - 4) / 2 - 4) / 2, w = ((input.w - 4) / 2 - 4) / 2;
  add_fc(3, 50 * h * w, 500);
  net.template emplace<BatchNorm<T>>("bn3", 500);
  net.template emplace<ReLU<T>>("relu3");
  add_fc(4, 500, cfg.classes);
  net.build(input, seed);
  return net;
}

}  // namespace varnet
