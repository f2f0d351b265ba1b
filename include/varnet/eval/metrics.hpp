// Ensemble metrics from per-sample predicted probabilities: accuracy, NLL, Brier score,
// expected calibration error with its reliability table, predictive and expected entropy, mutual
// information (the epistemic part), sample disagreement, and accuracy and NLL of the ensembles
// of the first k samples for every k.
//
// The ensemble prediction is the mean of the K samples' probabilities, p = mean_k p_k; every
// data-set quantity is a mean over the N examples. Entropies are in nats.
//   accuracy      arg max_j p_j == label (ties: the lowest class)
//   nll           -log max(p_label, 1e-12)
//   brier         sum_j (p_j - [j == label])^2, in [0, 2]
//   ece           sum_b (n_b / N) |accuracy_b - confidence_b|, confidence = max_j p_j, equal-width
//                 bins over [0, 1]: bin b holds [b/B, (b+1)/B), the last bin includes 1
//   predictive entropy   H[p]
//   expected entropy     mean_k H[p_k]          (aleatoric)
//   mutual information   H[p] - mean_k H[p_k]   (epistemic: 0 when all samples agree)
//   disagreement  the fraction of samples whose arg max differs from the ensemble's arg max
//
// MetricsAccumulator takes the samples batch by batch (constant memory in the data-set size);
// evaluate_uncertainty runs a network over a data set with it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "varnet/core/error.hpp"
#include "varnet/data/idx.hpp"
#include "varnet/eval/ensemble.hpp"
#include "varnet/nn/network.hpp"

namespace varnet {

struct ReliabilityBin {
  double lo = 0, hi = 0;  // the bin's confidence interval [lo, hi)
  int64_t count = 0;      // examples whose confidence falls in it
  double confidence = 0;  // their mean confidence (0 when empty)
  double accuracy = 0;    // the fraction of them predicted correctly (0 when empty)
};

struct UncertaintyMetrics {
  int samples = 0;    // K
  int64_t count = 0;  // N
  double accuracy = 0, nll = 0, brier = 0, ece = 0;
  std::vector<ReliabilityBin> reliability;
  double predictive_entropy = 0, expected_entropy = 0, mutual_information = 0;
  double disagreement = 0;
  // [k - 1]: the ensemble of the first k samples (k = 1..K); the last entries equal accuracy, nll
  std::vector<double> accuracy_by_k, nll_by_k;
};

namespace detail {
inline int64_t argmax(const double* p, int64_t c) {
  int64_t best = 0;
  for (int64_t j = 1; j < c; ++j)
    if (p[j] > p[best]) best = j;
  return best;
}
// -sum p log p, with 0 log 0 = 0.
inline double entropy(const double* p, int64_t c) {
  double h = 0;
  for (int64_t j = 0; j < c; ++j)
    if (p[j] > 0) h -= p[j] * std::log(p[j]);
  return h;
}
}  // namespace detail

class MetricsAccumulator {
 public:
  MetricsAccumulator(int samples, int64_t classes, int ece_bins = 15)
      : samples_(samples), classes_(classes), bins_(ece_bins) {
    check(samples >= 1, "MetricsAccumulator", "at least one sample", samples);
    check(classes >= 2, "MetricsAccumulator", "at least two classes", classes);
    check(ece_bins >= 1, "MetricsAccumulator", "at least one calibration bin", ece_bins);
    correct_by_k_.assign(size_t(samples), 0);
    nll_by_k_.assign(size_t(samples), 0.0);
    bin_count_.assign(size_t(ece_bins), 0);
    bin_conf_.assign(size_t(ece_bins), 0.0);
    bin_correct_.assign(size_t(ece_bins), 0);
  }

  // probs: (K, b, C) sample-major, probs[(k * b + i) * C + j]; labels: b class indices.
  void add(const double* probs, int64_t b, const int32_t* labels) {
    const int64_t K = samples_, C = classes_;
    sum_.resize(size_t(C));
    for (int64_t i = 0; i < b; ++i) {
      const int32_t y = labels[i];
      check(y >= 0 && y < C, "MetricsAccumulator::add", str("labels in [0, ", C, ")"), "label ", y,
            " at row ", count_ + i);
      std::fill(sum_.begin(), sum_.end(), 0.0);
      double expected_entropy = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double* p = probs + (k * b + i) * C;
        double total = 0;
        for (int64_t j = 0; j < C; ++j) {
          check(p[j] >= 0 && p[j] <= 1, "MetricsAccumulator::add", "probabilities in [0, 1]", p[j],
                " for sample ", k, ", row ", count_ + i, ", class ", j);
          total += p[j];
          sum_[size_t(j)] += p[j];
        }
        check(std::abs(total - 1) <= 1e-6, "MetricsAccumulator::add",
              "probabilities that sum to 1 (softmax outputs, not logits)", total, " for sample ", k,
              ", row ", count_ + i);
        expected_entropy += detail::entropy(p, C);
        // the ensemble of the first k + 1 samples: its mean is sum / (k + 1)
        correct_by_k_[size_t(k)] += detail::argmax(sum_.data(), C) == y;
        nll_by_k_[size_t(k)] -= std::log(std::max(sum_[size_t(y)] / double(k + 1), 1e-12));
      }
      for (double& v : sum_) v /= double(K);  // now the ensemble's probabilities
      const double* p = sum_.data();
      const int64_t pred = detail::argmax(p, C);
      int64_t disagree = 0;
      for (int64_t k = 0; k < K; ++k)
        disagree += detail::argmax(probs + (k * b + i) * C, C) != pred;
      double brier = 0;
      for (int64_t j = 0; j < C; ++j) brier += (p[j] - (j == y)) * (p[j] - (j == y));
      const double conf = p[pred];
      const int64_t bin = std::min<int64_t>(bins_ - 1, int64_t(conf * bins_));
      ++bin_count_[size_t(bin)];
      bin_conf_[size_t(bin)] += conf;
      bin_correct_[size_t(bin)] += pred == y;
      brier_ += brier;
      predictive_entropy_ += detail::entropy(p, C);
      expected_entropy_ += expected_entropy / double(K);
      disagreement_ += double(disagree) / double(K);
    }
    count_ += b;
  }

  UncertaintyMetrics result() const {
    check(count_ > 0, "MetricsAccumulator::result", "at least one example", "none");
    const double n = double(count_);
    UncertaintyMetrics m;
    m.samples = samples_;
    m.count = count_;
    for (int k = 0; k < samples_; ++k) {
      m.accuracy_by_k.push_back(double(correct_by_k_[size_t(k)]) / n);
      m.nll_by_k.push_back(nll_by_k_[size_t(k)] / n);
    }
    m.accuracy = m.accuracy_by_k.back();
    m.nll = m.nll_by_k.back();
    m.brier = brier_ / n;
    m.predictive_entropy = predictive_entropy_ / n;
    m.expected_entropy = expected_entropy_ / n;
    m.mutual_information = m.predictive_entropy - m.expected_entropy;
    m.disagreement = disagreement_ / n;
    for (int b = 0; b < bins_; ++b) {
      ReliabilityBin r;
      r.lo = double(b) / bins_;
      r.hi = double(b + 1) / bins_;
      r.count = bin_count_[size_t(b)];
      if (r.count > 0) {
        r.confidence = bin_conf_[size_t(b)] / double(r.count);
        r.accuracy = double(bin_correct_[size_t(b)]) / double(r.count);
        m.ece += double(r.count) / n * std::abs(r.accuracy - r.confidence);
      }
      m.reliability.push_back(r);
    }
    return m;
  }

 private:
  int samples_;
  int64_t classes_;
  int bins_;
  int64_t count_ = 0;
  std::vector<int64_t> correct_by_k_, bin_count_, bin_correct_;
  std::vector<double> nll_by_k_, bin_conf_, sum_;
  double brier_ = 0, predictive_entropy_ = 0, expected_entropy_ = 0, disagreement_ = 0;
};

// The metrics of K samples' probabilities over N examples, (K, N, C) sample-major.
inline UncertaintyMetrics compute_metrics(const std::vector<double>& probs, int samples, int64_t n,
                                          int64_t classes, const std::vector<int32_t>& labels,
                                          int ece_bins = 15) {
  check(n >= 1, "compute_metrics", "at least one example", n);
  check(samples >= 1, "compute_metrics", "at least one sample", samples);
  check(probs.size() == size_t(samples) * size_t(n) * size_t(classes), "compute_metrics",
        str("K x N x C = ", samples, " x ", n, " x ", classes, " probabilities"), probs.size());
  check(labels.size() == size_t(n), "compute_metrics", str(n, " labels"), labels.size());
  MetricsAccumulator acc(samples, classes, ece_bins);
  acc.add(probs.data(), n, labels.data());
  return acc.result();
}

// Runs `net` over `d` with opt.samples noise samples (eval/ensemble.hpp's streams, batches and
// batch-norm choice) and returns the metrics of the ensemble. Mean propagation: opt.mode =
// PredictMode::mean with samples = 1.
template <class T>
UncertaintyMetrics evaluate_uncertainty(Network<T>& net, const data::LabeledImages& d,
                                        const EnsembleOptions& opt, int ece_bins = 15,
                                        const std::function<void(int64_t)>& on_batch = {}) {
  MetricsAccumulator acc(opt.samples, net.output_shape().c, ece_bins);
  for_each_ensemble_batch(
      net, d, opt, [&](const double* p, int64_t b, const int32_t* y) { acc.add(p, b, y); },
      on_batch);
  return acc.result();
}

}  // namespace varnet
