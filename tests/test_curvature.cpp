// eval/curvature.hpp against the exact Hessian diagonal of small networks (double), the exact
// Hessian being central differences of gradients, one coordinate at a time.
//
// Tolerances: Hutchinson's estimate of H_ii from P Rademacher probes has standard deviation
// sqrt(sum_{j != i} H_ij^2 / P); of the criterion S = 0.5 sum_i a_i H_ii (a_i = Var(w_i)),
// 0.5 sqrt(sum_{i < j} (M_ij + M_ji)^2 / P) with M_ij = a_i H_ij over the layer's rows i (the
// variance of the quadratic form v^T M v in Rademacher v). Both are computed here from the exact
// Hessian and the estimates must lie within 5 of them (a chance failure of ~1e-6 per entry; the
// probes are fixed by the seed, so the test is deterministic). The Fisher estimates have no
// sampling error and are compared to the precision of the differences.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "catch.hpp"
#include "errors.hpp"
#include "gradcheck.hpp"
#include "tolerance.hpp"
#include "varnet/eval/curvature.hpp"
#include "varnet/layers/activations.hpp"
#include "varnet/layers/linear.hpp"

namespace {

using namespace varnet;

data::LabeledImages toy_data(int64_t n, int64_t features, int classes, uint64_t seed) {
  gradcheck::Rng rng(seed);
  data::LabeledImages d;
  d.images = Tensor<float>(Shape(n, features));
  for (int64_t i = 0; i < d.images.numel(); ++i) d.images[i] = float(rng.uniform(-2, 2));
  for (int64_t i = 0; i < n; ++i) d.labels.push_back(int32_t(rng.below(classes)));
  d.classes = classes;
  return d;
}

// The mean cross-entropy over all of d in one batch, and its gradient over all parameters.
double loss_and_grad(Network<double>& net, const data::LabeledImages& d, std::vector<double>* g) {
  Tensor<double> x(d.images.shape());
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = d.images[i];
  const Context ctx = Context::eval(0, PredictMode::mean, 0);
  const ConstView<double> z = net.forward(x.view(), ctx);
  Tensor<double> dz(z.shape);
  std::vector<TensorView<double>> dv = {dz.view()};
  const double loss = cross_entropy<double>({z}, d.labels.data(), &dv).loss;
  if (g) {
    net.zero_grad();
    net.backward(dz.view(), ctx);
    g->assign(net.grads().begin(), net.grads().end());
    net.zero_grad();
  }
  return loss;
}

// Rows and columns of the exact Hessian for the flat parameter indices `idx`.
std::vector<std::vector<double>> exact_hessian(Network<double>& net, const data::LabeledImages& d,
                                               const std::vector<int64_t>& idx) {
  const double h = 1e-4;  // truncation ~h^2, rounding ~1e-16 / h: both far below 1e-7
  std::vector<std::vector<double>> H(idx.size(), std::vector<double>(idx.size()));
  std::vector<double> gp, gm;
  for (size_t j = 0; j < idx.size(); ++j) {
    double& w = net.params()[size_t(idx[j])];
    const double orig = w;
    w = orig + h;
    loss_and_grad(net, d, &gp);
    w = orig - h;
    loss_and_grad(net, d, &gm);
    w = orig;
    for (size_t i = 0; i < idx.size(); ++i)
      H[i][j] = (gp[size_t(idx[i])] - gm[size_t(idx[i])]) / (2 * h);
  }
  return H;
}

std::vector<int64_t> flat_indices(const Network<double>& net,
                                  const std::vector<std::string>& names) {
  std::vector<int64_t> idx;
  for (const auto& n : names) {
    const ParamEntry* e = net.table().find(n);
    for (int64_t i = 0; i < e->shape.numel(); ++i) idx.push_back(e->offset + i);
  }
  return idx;
}

std::vector<double> variances(int64_t n, double scale) {
  std::vector<double> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(scale * double(1 + i % 3));
  return v;
}

Network<double> tanh_mlp() {
  Network<double> net;
  net.emplace<Linear<double>>("fc1", 3, 4, true);
  net.emplace<Tanh<double>>("tanh");
  net.emplace<Linear<double>>("fc2", 4, 3, true);
  net.build(Shape(1, 3), 5);
  for (double& p : net.params()) p *= 2.5;  // enough curvature and coupling to test against
  return net;
}

}  // namespace

TEST_CASE("Hutchinson's Hessian diagonal and criterion agree with the exact Hessian",
          "[curvature]") {
  Network<double> net = tanh_mlp();
  const data::LabeledImages d = toy_data(12, 3, 3, 42);
  const std::vector<RandomWeights> targets = {{"fc1", "fc1.weight", variances(12, 0.01)},
                                              {"fc2", "fc2.weight", variances(12, 0.02)}};
  const std::vector<int64_t> idx = flat_indices(net, {"fc1.weight", "fc2.weight"});
  const auto H = exact_hessian(net, d, idx);
  const std::vector<double> before(net.params().begin(), net.params().end());

  CurvatureOptions o;
  o.probes = 4000;
  o.fisher = false;
  o.batch = 5;  // three batches, the last one partial
  o.seed = 1;
  const std::vector<CurvatureEstimate> est = estimate_curvature(net, d, targets, o);
  REQUIRE(est.size() == 2);
  CHECK(std::vector<double>(net.params().begin(), net.params().end()) == before);

  const double P = o.probes;
  for (size_t t = 0; t < 2; ++t) {
    const CurvatureEstimate& e = est[t];
    INFO("tensor " << e.tensor);
    REQUIRE(e.hessian_diag.size() == 12);
    CHECK(e.fisher_diag.empty());
    double exact_delta = 0, var_s = 0;
    for (size_t a = 0; a < 12; ++a) {
      const size_t i = t * 12 + a;
      double off = 0;
      for (size_t j = 0; j < idx.size(); ++j)
        if (j != i) off += H[i][j] * H[i][j];
      const double sd = std::sqrt(off / P);
      INFO("weight " << a << ": exact H_ii " << H[i][i] << ", estimate " << e.hessian_diag[a]
                     << ", standard deviation " << sd);
      CHECK(std::abs(e.hessian_diag[a] - H[i][i]) <= 5 * sd);
      exact_delta += 0.5 * targets[t].variance[a] * H[i][i];
    }
    // M_ij = a_i H_ij for the rows of this tensor, 0 elsewhere
    for (size_t i = 0; i < idx.size(); ++i)
      for (size_t j = i + 1; j < idx.size(); ++j) {
        const auto m = [&](size_t r, size_t c) {
          return r / 12 == t ? targets[t].variance[r % 12] * H[r][c] : 0.0;
        };
        var_s += (m(i, j) + m(j, i)) * (m(i, j) + m(j, i));
      }
    const double sd_delta = 0.5 * std::sqrt(var_s / P);
    INFO("criterion: exact " << exact_delta << ", estimate " << e.delta_hutchinson
                             << ", standard deviation " << sd_delta);
    CHECK(std::abs(e.delta_hutchinson - exact_delta) <= 5 * sd_delta);
    CHECK(sd_delta < 0.1 * std::abs(exact_delta));  // the test has power: the bound is tight
    // per output unit: fc1.weight is (4, 3), fc2.weight (3, 4)
    const int64_t groups = t == 0 ? 4 : 3, per = 12 / groups;
    REQUIRE(e.groups == groups);
    double sum = 0;
    for (int64_t g = 0; g < groups; ++g) {
      double expect = 0;
      for (int64_t k = g * per; k < (g + 1) * per; ++k)
        expect += 0.5 * e.hessian_diag[size_t(k)] * targets[t].variance[size_t(k)];
      CHECK(e.group_hutchinson[size_t(g)] == Approx(expect));
      sum += e.group_hutchinson[size_t(g)];
    }
    CHECK(e.delta_hutchinson == Approx(sum));
  }
}

TEST_CASE("the empirical Fisher diagonal is the mean squared per-example gradient", "[curvature]") {
  Network<double> net = tanh_mlp();
  const data::LabeledImages d = toy_data(9, 3, 3, 7);
  const std::vector<RandomWeights> targets = {{"fc1", "fc1.weight", variances(12, 0.01)},
                                              {"", "fc2.bias", variances(3, 0.1)}};
  CurvatureOptions o;
  o.probes = 0;
  o.fisher_kind = FisherKind::empirical;
  const std::vector<CurvatureEstimate> est = estimate_curvature(net, d, targets, o);
  CHECK(est[1].name == "fc2.bias");  // named after the tensor when unnamed
  CHECK(est[0].hessian_diag.empty());
  // Per-example gradients by central differences of each example's own loss.
  const std::vector<int64_t> idx = flat_indices(net, {"fc1.weight", "fc2.bias"});
  std::vector<double> expected(idx.size(), 0.0);
  for (int64_t n = 0; n < 9; ++n) {
    data::LabeledImages one;
    one.images = Tensor<float>(Shape(1, 3));
    for (int j = 0; j < 3; ++j) one.images[j] = d.images[n * 3 + j];
    one.labels = {d.labels[size_t(n)]};
    for (size_t i = 0; i < idx.size(); ++i) {
      double& w = net.params()[size_t(idx[i])];
      const double orig = w, h = 1e-6;
      w = orig + h;
      const double fp = loss_and_grad(net, one, nullptr);
      w = orig - h;
      const double fm = loss_and_grad(net, one, nullptr);
      w = orig;
      const double g = (fp - fm) / (2 * h);
      expected[i] += g * g / 9;
    }
  }
  std::vector<double> got = est[0].fisher_diag;
  got.insert(got.end(), est[1].fisher_diag.begin(), est[1].fisher_diag.end());
  const tol::Mismatch m = tol::compare<double>(got, expected, int64_t(got.size()), 1e-8, 1e-6);
  INFO("Fisher diagonal vs squared differenced gradients: " << m);
  CHECK(m.ok());
  double delta = 0;
  for (size_t i = 0; i < 12; ++i) delta += 0.5 * est[0].fisher_diag[i] * targets[0].variance[i];
  CHECK(est[0].delta_fisher == Approx(delta));

  // fisher_examples = 4: the Fisher of the first 4 examples alone (their mean, not a ninth of
  // their sum).
  data::LabeledImages first4;
  first4.images = Tensor<float>(Shape(4, 3));
  for (int64_t i = 0; i < 12; ++i) first4.images[i] = d.images[i];
  first4.labels.assign(d.labels.begin(), d.labels.begin() + 4);
  first4.classes = d.classes;
  o.fisher_examples = 4;
  const std::vector<CurvatureEstimate> part = estimate_curvature(net, d, targets, o);
  o.fisher_examples = 0;
  const std::vector<CurvatureEstimate> alone = estimate_curvature(net, first4, targets, o);
  const tol::Mismatch m4 =
      tol::compare<double>(part[0].fisher_diag, alone[0].fisher_diag, 12, 1e-12, 1e-12);
  INFO("Fisher of the first 4 examples: " << m4);
  CHECK(m4.ok());
}

TEST_CASE("the model Fisher equals the exact Hessian diagonal of a softmax regression",
          "[curvature]") {
  // For logits linear in w the cross-entropy Hessian is the Gauss-Newton matrix, whose diagonal
  // is the model Fisher's: sum_n sum_c p_c (dl_c / dw_i)^2 / N.
  Network<double> net;
  net.emplace<Linear<double>>("fc", 4, 3, true);
  net.build(Shape(1, 4), 9);
  const data::LabeledImages d = toy_data(10, 4, 3, 3);
  const std::vector<RandomWeights> targets = {{"fc", "fc.weight", variances(12, 0.05)},
                                              {"bias", "fc.bias", variances(3, 0.05)}};
  CurvatureOptions o;
  o.probes = 0;
  o.fisher_kind = FisherKind::model;
  const std::vector<CurvatureEstimate> est = estimate_curvature(net, d, targets, o);
  const auto H = exact_hessian(net, d, flat_indices(net, {"fc.weight", "fc.bias"}));
  std::vector<double> diag, got = est[0].fisher_diag;
  got.insert(got.end(), est[1].fisher_diag.begin(), est[1].fisher_diag.end());
  for (size_t i = 0; i < H.size(); ++i) diag.push_back(H[i][i]);
  const tol::Mismatch m = tol::compare<double>(got, diag, int64_t(diag.size()), 1e-7, 1e-6);
  INFO("model Fisher vs exact Hessian diagonal: " << m);
  CHECK(m.ok());
  // The empirical Fisher is a different matrix away from a perfect fit.
  o.fisher_kind = FisherKind::empirical;
  const std::vector<CurvatureEstimate> emp = estimate_curvature(net, d, targets, o);
  CHECK_FALSE(tol::compare<double>(emp[0].fisher_diag, est[0].fisher_diag, 12, 1e-3, 1e-2).ok());
}

TEST_CASE("curvature targets are checked", "[curvature]") {
  using varnet::test::error_of;
  using varnet::test::has;
  Network<double> net = tanh_mlp();
  const data::LabeledImages d = toy_data(4, 3, 3, 1);
  CurvatureOptions o;
  CHECK(has(error_of([&] {
              estimate_curvature(net, d, {{"x", "fc9.weight", {}}}, o);
            }),
            "trainable parameter tensor, found 'fc9.weight'"));
  CHECK(has(error_of([&] {
              estimate_curvature(net, d, {{"x", "fc1.weight", {1, 2}}}, o);
            }),
            "one variance per element of 'fc1.weight' (12), found 2"));
  std::vector<double> v(12, 1.0);
  v[5] = -1;
  CHECK(has(error_of([&] {
              estimate_curvature(net, d, {{"x", "fc1.weight", v}}, o);
            }),
            "found -1 at element 5"));
  v[5] = -1e-3;
  CHECK(has(error_of([&] {
              estimate_curvature(net, d, {{"x", "fc1.weight", v}}, o);
            }),
            "found -0.001 at element 5"));
}
