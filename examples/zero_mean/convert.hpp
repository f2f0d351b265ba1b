// The conversion of the zero_mean example (PAPER.md E3): variational dropout layers, with weights
// w ~ N(theta, alpha theta^2) and one log alpha per layer, become variance layers with the same
// weight variances and zero means: sigma = sqrt(alpha) |theta|.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>

#include "varnet/layers/weight_posteriors.hpp"
#include "varnet/nn/network.hpp"

namespace varnet::examples {

// Fills `to` from `from`, two networks of the same architecture in which some layers of `from`
// (variational dropout: "<layer>.theta", "<layer>.log_alpha") are variance layers in `to`
// ("<layer>.sigma", Gaussian, sigma parameterization). Every other tensor of `to` is copied by
// name. log alpha is clipped to the range the variational dropout layer itself uses.
template <class T>
void convert_to_zero_mean(Network<T>& from, Network<T>& to) {
  using Posterior = VariationalDropoutPosterior<T>;
  const std::string suffix = ".sigma";
  for (const auto& e : to.table().entries()) {
    T* dst = to.find(e.name);
    const int64_t n = e.shape.numel();
    if (e.name.size() > suffix.size() &&
        e.name.compare(e.name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      const std::string layer = e.name.substr(0, e.name.size() - suffix.size());
      const T* theta = from.find(layer + ".theta");
      const double log_alpha = std::clamp(double(*from.find(layer + ".log_alpha")),
                                          Posterior::kLogAlphaMin, Posterior::kLogAlphaMax);
      const double sd = std::exp(0.5 * log_alpha);
      for (int64_t i = 0; i < n; ++i) dst[i] = T(sd * std::abs(double(theta[i])));
    } else {
      const T* src = from.find(e.name);
      std::copy(src, src + n, dst);
    }
  }
}

}  // namespace varnet::examples
