// The network, configuration and seed of the checkpoint seeds (fuzz/make_corpus.cpp) and of
// the checkpoint fuzz target: small, with parameters, batch-norm state and Adam's buffers.
#pragma once

#include <map>
#include <string>

#include "varnet/layers/batchnorm.hpp"
#include "varnet/layers/linear.hpp"
#include "varnet/layers/variance.hpp"
#include "varnet/nn/network.hpp"

namespace varnet::fuzz {

constexpr uint64_t kSeed = 7;

inline Network<float> network() {
  Network<float> net;
  net.emplace<VarianceLinear<float>>("var", 3, 4, VarianceOptions{});
  net.emplace<BatchNorm<float>>("bn", 4);
  net.emplace<Linear<float>>("out", 4, 2);
  net.build(Shape(1, 3), kSeed);
  return net;
}

inline std::map<std::string, std::string> config() {
  return {{"batch", "8"}, {"lr", "0.01"}};
}

}  // namespace varnet::fuzz
