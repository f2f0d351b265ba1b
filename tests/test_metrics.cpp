// eval/metrics.hpp against values worked out by hand on a small fixed input, and the network-level
// evaluate_uncertainty against evaluate_ensemble and compute_metrics.
#include <cmath>
#include <cstdint>
#include <vector>

#include "catch.hpp"
#include "errors.hpp"
#include "varnet/eval/ensemble.hpp"
#include "varnet/eval/metrics.hpp"
#include "varnet/layers/activations.hpp"
#include "varnet/layers/linear.hpp"
#include "varnet/layers/variance.hpp"

namespace {

using varnet::UncertaintyMetrics;

double H2(double p) {
  return -p * std::log(p) - (1 - p) * std::log(1 - p);
}

// K = 2 samples, N = 4 examples, C = 2 classes; (sample, example) -> p(class 0).
//   example  label  sample 1     sample 2     mean         prediction  confidence (bin of 15)
//   0        0      (.80, .20)   (.70, .30)   (.75, .25)   0 right     .75 (11)
//   1        1      (.60, .40)   (.16, .84)   (.38, .62)   1 right     .62 (9)   sample 1 disagrees
//   2        0      (.20, .80)   (.10, .90)   (.15, .85)   1 wrong     .85 (12)
//   3        1      (.78, .22)   (.78, .22)   (.78, .22)   0 wrong     .78 (11)  samples agree
UncertaintyMetrics fixed_example() {
  const double p0[2][4] = {{.80, .60, .20, .78}, {.70, .16, .10, .78}};
  std::vector<double> probs;
  for (int k = 0; k < 2; ++k)
    for (int i = 0; i < 4; ++i) {
      probs.push_back(p0[k][i]);
      probs.push_back(1 - p0[k][i]);
    }
  return varnet::compute_metrics(probs, 2, 4, 2, {0, 1, 0, 1});
}

}  // namespace

TEST_CASE("metrics of a fixed two-sample ensemble match the hand computation", "[metrics]") {
  const UncertaintyMetrics m = fixed_example();
  CHECK(m.samples == 2);
  CHECK(m.count == 4);
  CHECK(m.accuracy == 0.5);
  CHECK(m.nll == Approx(-(std::log(.75) + std::log(.62) + std::log(.15) + std::log(.22)) / 4));
  CHECK(m.nll == Approx(1.0442413977276095));
  // Brier: 2 (.25)^2 + 2 (.38)^2 + 2 (.85)^2 + 2 (.78)^2 = .125 + .2888 + 1.445 + 1.2168
  CHECK(m.brier == Approx(3.0756 / 4));
  // ECE: bin 11 holds .75 (right) and .78 (wrong): confidence .765, accuracy .5, weight 2/4;
  // bin 9: .62, right; bin 12: .85, wrong.
  CHECK(m.ece == Approx(0.5 * 0.265 + 0.25 * 0.38 + 0.25 * 0.85));
  CHECK(m.ece == Approx(0.44));
  REQUIRE(m.reliability.size() == 15);
  for (int b = 0; b < 15; ++b) {
    INFO("bin " << b);
    CHECK(m.reliability[size_t(b)].lo == Approx(b / 15.0));
    CHECK(m.reliability[size_t(b)].hi == Approx((b + 1) / 15.0));
    const int64_t expected = b == 11 ? 2 : (b == 9 || b == 12) ? 1 : 0;
    CHECK(m.reliability[size_t(b)].count == expected);
  }
  CHECK(m.reliability[11].confidence == Approx(0.765));
  CHECK(m.reliability[11].accuracy == 0.5);
  CHECK(m.reliability[9].confidence == Approx(0.62));
  CHECK(m.reliability[9].accuracy == 1.0);
  CHECK(m.reliability[12].confidence == Approx(0.85));
  CHECK(m.reliability[12].accuracy == 0.0);
  // Entropies of the means, and the mean of the samples' entropies.
  const double predictive = (H2(.75) + H2(.62) + H2(.85) + H2(.78)) / 4;
  const double expected =
      ((H2(.8) + H2(.7)) / 2 + (H2(.6) + H2(.84)) / 2 + (H2(.2) + H2(.1)) / 2 + H2(.78)) / 4;
  CHECK(m.predictive_entropy == Approx(predictive));
  CHECK(m.predictive_entropy == Approx(0.5440040801050718));
  CHECK(m.expected_entropy == Approx(expected));
  CHECK(m.mutual_information == Approx(0.03109788113056211));
  CHECK(m.disagreement == Approx(0.125));  // one sample of two, in one example of four
  // Prefix ensembles: sample 1 alone gets only example 0 right.
  REQUIRE(m.accuracy_by_k.size() == 2);
  CHECK(m.accuracy_by_k[0] == 0.25);
  CHECK(m.accuracy_by_k[1] == 0.5);
  CHECK(m.nll_by_k[0] == Approx(1.0657499820630603));
  CHECK(m.nll_by_k[1] == m.nll);
}

TEST_CASE("mutual information and disagreement are 0 when all samples agree", "[metrics]") {
  const std::vector<double> row = {0.1, 0.6, 0.3, 0.5, 0.25, 0.25};  // two examples, C = 3
  std::vector<double> probs;
  for (int k = 0; k < 3; ++k) probs.insert(probs.end(), row.begin(), row.end());
  const UncertaintyMetrics m = varnet::compute_metrics(probs, 3, 2, 3, {1, 2});
  CHECK(std::abs(m.mutual_information) < 1e-15);
  CHECK(m.disagreement == 0);
  const double h0 = -(0.1 * std::log(0.1) + 0.6 * std::log(0.6) + 0.3 * std::log(0.3));
  const double h1 = -(0.5 * std::log(0.5) + 2 * 0.25 * std::log(0.25));
  CHECK(m.predictive_entropy == Approx((h0 + h1) / 2));
  CHECK(m.accuracy == 0.5);
  for (int k = 0; k < 3; ++k) CHECK(m.accuracy_by_k[size_t(k)] == 0.5);
}

TEST_CASE("a confident correct prediction has zero Brier score, NLL and ECE", "[metrics]") {
  const UncertaintyMetrics m = varnet::compute_metrics({0, 1, 0, 1, 0, 0}, 1, 2, 3, {1, 0});
  CHECK(m.accuracy == 1);
  CHECK(m.nll == 0);
  CHECK(m.brier == 0);
  CHECK(m.ece == 0);  // confidence 1 lands in the last bin, whose accuracy is 1
  CHECK(m.reliability.back().count == 2);
  CHECK(m.predictive_entropy == 0);
}

TEST_CASE("metrics reject inputs that are not probabilities", "[metrics]") {
  using varnet::test::error_of;
  using varnet::test::has;
  CHECK(has(error_of([] {
              varnet::compute_metrics({0.5, 0.5}, 1, 1, 2, {2});
            }),
            "label 2 at row 0"));
  CHECK(has(error_of([] {
              varnet::compute_metrics({2.0, -1.0}, 1, 1, 2, {0});
            }),
            "probabilities in [0, 1]"));
  CHECK(has(error_of([] {
              varnet::compute_metrics({0.5, 0.6}, 1, 1, 2, {0});
            }),
            "sum to 1 (softmax outputs, not logits), found 1.1"));
  CHECK(has(error_of([] {
              varnet::compute_metrics({0.5, 0.5, 0.5}, 1, 1, 2, {0});
            }),
            "K x N x C = 1 x 1 x 2 probabilities, found 3"));
}

TEST_CASE("evaluate_uncertainty agrees with evaluate_ensemble and compute_metrics", "[metrics]") {
  using namespace varnet;
  Network<double> net;
  net.emplace<VarianceLinear<double>>("var", 3, 8, VarianceOptions{});
  net.emplace<ReLU<double>>("relu");
  net.emplace<Linear<double>>("out", 8, 4);
  net.build(Shape(1, 3), 7);
  data::LabeledImages d;
  const int64_t n = 37;
  d.images = Tensor<float>(Shape(n, 3));
  for (int64_t i = 0; i < n; ++i) {
    d.labels.push_back(int32_t(i % 4));
    for (int j = 0; j < 3; ++j) d.images.at(i, j) = float(std::sin(double(i * 3 + j)));
  }
  d.classes = 4;
  EnsembleOptions o;
  o.samples = 5;
  o.batch = 10;  // several batches, the last one partial
  o.seed = 3;
  const EnsembleResult e = evaluate_ensemble(net, d, o);
  int64_t done = 0;
  const UncertaintyMetrics m = evaluate_uncertainty(net, d, o, 15, [&](int64_t k) { done = k; });
  CHECK(done == n);
  CHECK(m.accuracy == e.accuracy);
  CHECK(m.nll == Approx(e.nll).epsilon(1e-12));
  CHECK(m.mutual_information > 1e-3);  // the variance layer's samples differ
  CHECK(m.accuracy_by_k.size() == 5);

  // The same samples collected by hand (sample k uses stream kEnsembleBase + k) and passed whole;
  // LRT noise is drawn per row of a batch, so the network evaluation uses one batch too.
  o.batch = n;
  const UncertaintyMetrics one_batch = evaluate_uncertainty(net, d, o);
  std::vector<double> probs;
  Tensor<double> x(Shape(n, 3));
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = d.images[i];
  for (int k = 0; k < 5; ++k) {
    const ConstView<double> z =
        net.forward(x.view(), Context::eval(3, PredictMode::sample, stream::kEnsembleBase + k));
    for (int64_t i = 0; i < n; ++i) {
      double s = 0;
      for (int j = 0; j < 4; ++j) s += std::exp(z.at(i, j));
      for (int j = 0; j < 4; ++j) probs.push_back(std::exp(z.at(i, j)) / s);
    }
  }
  const UncertaintyMetrics whole = compute_metrics(probs, 5, n, 4, d.labels);
  CHECK(whole.accuracy == one_batch.accuracy);
  CHECK(whole.ece == Approx(one_batch.ece).epsilon(1e-12));
  CHECK(whole.brier == Approx(one_batch.brier).epsilon(1e-12));
  CHECK(whole.mutual_information == Approx(one_batch.mutual_information).epsilon(1e-10));
  CHECK(whole.disagreement == Approx(one_batch.disagreement).epsilon(1e-12));

  // Mean propagation: every sample is the same constant prediction.
  o.mode = PredictMode::mean;
  const UncertaintyMetrics mean = evaluate_uncertainty(net, d, o);
  CHECK(std::abs(mean.mutual_information) < 1e-12);
  CHECK(mean.disagreement == 0);
}
