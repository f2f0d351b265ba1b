// The VGG-like network of PAPER.md section 6, for 32x32 inputs of any channel count:
//   13 x (conv 3x3, pad 1 -> BN -> ReLU) with widths
//   64 64 P 128 128 P 256 256 256 P 512 512 512 P 512 512 512 P   (P = maxpool 2)
//   -> flatten -> fc 512 -> BN -> ReLU -> fc classes
// every width times a multiplier (0.125: 8 8 P 16 16 P 32 32 32 P 64 64 64 P 64 64 64 P, fc 64).
// No weight biases: batch norm follows every hidden weight layer, and the output layer has none,
// as in LeNet-5 (models/lenet5.hpp).
//
// Weight layers are numbered 1-15: conv1-conv13 are 1-13, fc1 is 14, the output layer fc2 is 15.
// Any set of them may be stochastic, of any kind of models/layer_kinds.hpp; the reference makes
// conv 11-13 and fc 1 variance layers.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "varnet/layers/activations.hpp"
#include "varnet/layers/batchnorm.hpp"
#include "varnet/layers/flatten.hpp"
#include "varnet/layers/pooling.hpp"
#include "varnet/models/layer_kinds.hpp"
#include "varnet/nn/network.hpp"

namespace varnet {

constexpr int kVggWeightLayers = 15;

struct VggConfig : LayerChoice {
  double width = 1.0;                                     // multiplier of every width
  std::vector<int> stochastic_layers = {11, 12, 13, 14};  // weight layers 1-15 made stochastic
  ConvAlgorithm conv_algorithm = ConvAlgorithm::Auto;     // of the deterministic convolutions
  LayerKind kind_of(int layer) const { return kind_in(layer, stochastic_layers); }
};

// The 13 convolution widths and the hidden fc width at a multiplier, each at least 1.
inline std::vector<int64_t> vgg_widths(double width) {
  static const int kBase[14] = {64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512};
  std::vector<int64_t> out;
  for (int b : kBase) out.push_back(std::max<int64_t>(1, std::llround(b * width)));
  return out;
}

// Builds (and initialises) the network for inputs of one sample's shape `input` (1, C, H, W), H and
// W at least 32 (five 2x2 poolings).
template <class T>
Network<T> make_vgg(const VggConfig& cfg, Shape input, uint64_t seed) {
  check(cfg.width > 0 && cfg.width <= 16, "VGG", "a width multiplier in (0, 16]", cfg.width);
  cfg.check_layers("VGG", cfg.stochastic_layers, kVggWeightLayers);
  check(input.h >= 32 && input.w >= 32, "VGG", "inputs of at least 32x32 pixels", input.h, "x",
        input.w);
  check(cfg.classes >= 2, "VGG", "at least 2 classes", cfg.classes);
  const StochasticOptions so = cfg.stochastic_options();
  const std::vector<int64_t> widths = vgg_widths(cfg.width);
  // A pool follows these convolutions (1-based).
  const auto pooled = [](int l) { return l == 2 || l == 4 || l == 7 || l == 10 || l == 13; };
  const ConvOptions conv{3, 1, 1, false, cfg.conv_algorithm};  // "same" 3x3

  Network<T> net;
  int64_t c = input.c, h = input.h, w = input.w;
  for (int l = 1; l <= 13; ++l) {
    const std::string i = std::to_string(l);
    const int64_t out = widths[size_t(l - 1)];
    add_conv(net, "conv" + i, cfg.kind_of(l), c, out, conv, so);
    net.template emplace<BatchNorm<T>>("bn" + i, out);
    net.template emplace<ReLU<T>>("relu" + i);
    if (pooled(l)) {
      net.template emplace<MaxPool2d<T>>("pool" + i, 2);
      h /= 2, w /= 2;
    }
    c = out;
  }
  net.template emplace<Flatten<T>>("flatten");
  const int64_t hidden = widths[13];
  add_dense(net, "fc1", cfg.kind_of(14), c * h * w, hidden, so);
  net.template emplace<BatchNorm<T>>("bn14", hidden);
  net.template emplace<ReLU<T>>("relu14");
  add_dense(net, "fc2", cfg.kind_of(15), hidden, cfg.classes, so);
  net.build(input, seed);
  return net;
}

}  // namespace varnet
