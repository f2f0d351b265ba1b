// What the training examples (lenet5, vgg) print about a run: JSON lists, and the table of the
// weight layers (kind, dropout rates, sparsity, KL) with its JSON members.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "varnet/core/error.hpp"
#include "varnet/nn/sparsity.hpp"

namespace varnet::examples {

inline std::string json_list(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(v[i]);  // (appended apart: GCC 12 warns falsely on "," + string in C++20)
  }
  return s + "]";
}

// Prints a table of the weight layers (dropout rates, sparsity, KL) and returns it as JSON members.
inline std::string weight_json(const WeightReport& r, double threshold) {
  std::printf("%-8s %-26s %9s %14s %12s %12s\n", "layer", "kind", "weights", "mean log alpha",
              str("log a > ", threshold).c_str(), "KL");
  std::string layers;
  for (const auto& l : r.layers) {
    const auto& s = l.stats;
    if (s.has_log_alpha)
      std::printf("%-8s %-26s %9lld %14.3f %12.4f %12.1f\n", l.name.c_str(), l.kind.c_str(),
                  (long long)s.weights, s.mean_log_alpha, s.fraction_above, s.kl);
    else
      std::printf("%-8s %-26s %9lld %14s %12s %12s\n", l.name.c_str(), l.kind.c_str(),
                  (long long)s.weights, "-", "-", "-");
    layers += str(layers.empty() ? "" : ",", "{\"name\":\"", l.name, "\",\"kind\":\"", l.kind,
                  "\",\"weights\":", s.weights, ",\"kept\":", s.kept);
    if (s.has_log_alpha)
      layers += str(",\"mean_log_alpha\":", s.mean_log_alpha,
                    ",\"frac_log_alpha_above_threshold\":", s.fraction_above, ",\"kl\":", s.kl);
    layers += "}";
  }
  std::printf("compression %.3f (%lld of %lld weights kept), KL %.1f\n", r.compression(),
              (long long)r.kept, (long long)r.weights, r.kl);
  return str(",\"kl\":", r.kl, ",\"compression\":", r.compression(), ",\"layers\":[", layers, "]");
}

}  // namespace varnet::examples
