// The curvature criterion (PAPER.md E4): how much the randomness of weights moves the loss away
// from its value at their expectations, to second order
//
//   dL = E[L(w)] - L(E[w]) ~= 0.5 * sum_i H_ii Var(w_i),   H: the Hessian of the mean training
//   loss at the mean weights.
//
// PAPER.md calls it the loss change from replacing random weights by their expectations; by the
// expansion above that change is -dL, so rank by |dL| (docs/evaluation.md compares both with the
// loss change measured by the curvature example).
//
// per tensor of random weights and per weight group (the tensor's leading dimension: an output
// unit of a dense layer, an output channel of a convolution). Two estimates of diag(H):
//   Hutchinson  diag(H) = E[v * (H v)] for Rademacher v (entries +-1), with H v by central
//               differences of gradients, (g(w + h v) - g(w - h v)) / 2h: 2 passes over the data
//               per probe; unbiased, with variance sum_{j != i} H_ij^2 / probes per entry.
//   Fisher      the diagonal Fisher, mean over examples of (dl_n / dw_i)^2, one backward pass
//               per example: `empirical` uses the true labels, `model` the expectation over the
//               network's own predictive distribution (C backward passes per example; for a
//               softmax output this is the Gauss-Newton diagonal, exact for a model linear in w).
//
// The network is evaluated deterministically (PredictMode::mean). Weights whose expectation is
// not a parameter of the network (a variance layer's zero means) are assessed on a twin in
// which that layer is deterministic with those expectations; RandomWeights names the tensor of
// expectations in the network given and carries the variances.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "varnet/core/context.hpp"
#include "varnet/core/error.hpp"
#include "varnet/core/random.hpp"
#include "varnet/data/batches.hpp"
#include "varnet/data/idx.hpp"
#include "varnet/nn/loss.hpp"
#include "varnet/nn/network.hpp"

namespace varnet {

namespace stream {
constexpr uint32_t kCurvatureProbe = 0xFF03;  // Hutchinson's Rademacher probes
}  // namespace stream

// One tensor of random weights: `tensor` is the trainable parameter of the network holding the
// weights' expectations (e.g. "fc1.weight"), `variance` one Var(w_i) per element of it.
struct RandomWeights {
  std::string name;  // for reports, e.g. the stochastic layer's name
  std::string tensor;
  std::vector<double> variance;
};

enum class FisherKind { empirical, model };

struct CurvatureOptions {
  int probes = 64;        // Hutchinson probes; 0 skips Hutchinson
  double fd_step = 1e-3;  // h of the Hessian-vector differences
  bool fisher = true;     // false skips the Fisher estimate
  FisherKind fisher_kind = FisherKind::empirical;
  int64_t fisher_examples = 0;  // the first examples used for the Fisher (0: all)
  int64_t batch = 256;          // examples per pass for the Hutchinson gradients
  bool batch_stats = false;     // batch norm with batch statistics (Hutchinson only)
  uint64_t seed = 0;            // probes
};

struct CurvatureEstimate {
  std::string name, tensor;
  int64_t groups = 0;                                  // the tensor's leading dimension
  std::vector<double> hessian_diag, fisher_diag;       // per weight (empty when skipped)
  double delta_hutchinson = 0, delta_fisher = 0;       // 0.5 sum_i H_ii Var(w_i)
  std::vector<double> group_hutchinson, group_fisher;  // the same sum per group
  double variance_sum = 0;                             // sum_i Var(w_i)
};

namespace detail {

struct TargetSpan {
  int64_t offset, size, first;  // in the parameter buffer; `first`: position in the flat probe
};

template <class T>
std::vector<TargetSpan> resolve_targets(const Network<T>& net,
                                        const std::vector<RandomWeights>& targets) {
  std::vector<TargetSpan> spans;
  int64_t first = 0;
  for (const RandomWeights& t : targets) {
    const ParamEntry* e = net.table().find(t.tensor);
    check(e != nullptr && e->trainable, "estimate_curvature",
          "the name of a trainable parameter tensor", "'" + t.tensor + "'");
    check(int64_t(t.variance.size()) == e->shape.numel(), "estimate_curvature",
          str("one variance per element of '", t.tensor, "' (", e->shape.numel(), ")"),
          t.variance.size());
    for (size_t i = 0; i < t.variance.size(); ++i)
      check(t.variance[i] >= 0 && std::isfinite(t.variance[i]), "estimate_curvature",
            "finite non-negative variances", t.variance[i], " at element ", i, " of '", t.tensor,
            "'");
    spans.push_back({e->offset, e->shape.numel(), first});
    first += e->shape.numel();
  }
  return spans;
}

// The gradient of the mean cross-entropy over all of `d` with respect to the targets, into g
// (flat, in target order): batches weighted by their share of the data.
template <class T>
void full_gradient(Network<T>& net, const data::LabeledImages& d, const Context& ctx, int64_t batch,
                   const std::vector<TargetSpan>& spans, std::vector<double>& g) {
  const int64_t n = d.images.shape().n;
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
  Tensor<T> x, dz;
  std::vector<int32_t> y;
  net.zero_grad();
  for (int64_t first = 0; first < n; first += batch) {
    const int64_t b = std::min(batch, n - first);
    data::gather_batch(d, order, first, b, x, y);
    const ConstView<T> z = net.forward(x.view(), ctx);
    dz.resize(z.shape);
    std::vector<TensorView<T>> dv = {dz.view()};
    cross_entropy<T>({z}, y.data(), &dv);
    for (int64_t i = 0; i < dz.numel(); ++i) dz[i] *= T(double(b) / double(n));
    net.backward(dz.view(), ctx);
  }
  for (const TargetSpan& s : spans)
    for (int64_t i = 0; i < s.size; ++i)
      g[size_t(s.first + i)] = double(net.grads()[size_t(s.offset + i)]);
  net.zero_grad();
}

}  // namespace detail

// Estimates the criterion for each tensor of random weights on the data `d` (use a subset of the
// training set: Hutchinson costs 2 * probes passes over it, the Fisher one backward pass per
// example). The network's parameters are restored exactly; its gradients are left zeroed.
template <class T>
std::vector<CurvatureEstimate> estimate_curvature(Network<T>& net, const data::LabeledImages& d,
                                                  const std::vector<RandomWeights>& targets,
                                                  const CurvatureOptions& o) {
  check(!targets.empty(), "estimate_curvature", "at least one tensor of random weights", "none");
  check(o.probes >= 0, "estimate_curvature", "a probe count >= 0", o.probes);
  check(o.fd_step > 0, "estimate_curvature", "a positive difference step", o.fd_step);
  check(o.batch >= 1, "estimate_curvature", "a positive batch size", o.batch);
  check(!(o.fisher && o.batch_stats), "estimate_curvature",
        "running batch-norm statistics for the Fisher (it runs one example at a time)",
        "batch_stats = true");
  const int64_t n = d.images.shape().n;
  check(n >= 1, "estimate_curvature", "at least one example", n);
  const std::vector<detail::TargetSpan> spans = detail::resolve_targets(net, targets);
  const int64_t total = spans.back().first + spans.back().size;
  const Context ctx = Context::eval(o.seed, PredictMode::mean, 0, o.batch_stats);

  std::vector<double> hdiag, fdiag;
  if (o.probes > 0) {
    // Hutchinson: diag(H) ~= mean over probes of v * (H v), H v by central differences.
    hdiag.assign(size_t(total), 0.0);
    std::vector<double> v(static_cast<size_t>(total)), gp(static_cast<size_t>(total)),
        gm(static_cast<size_t>(total));
    std::vector<T> saved(static_cast<size_t>(total));
    for (const auto& s : spans)
      for (int64_t i = 0; i < s.size; ++i)
        saved[size_t(s.first + i)] = net.params()[size_t(s.offset + i)];
    const auto shift = [&](double h) {
      for (const auto& s : spans)
        for (int64_t i = 0; i < s.size; ++i)
          net.params()[size_t(s.offset + i)] =
              T(double(saved[size_t(s.first + i)]) + h * v[size_t(s.first + i)]);
    };
    for (int p = 0; p < o.probes; ++p) {
      const NoiseKey key{o.seed, 0, uint32_t(p), stream::kCurvatureProbe};
      for (int64_t i = 0; i < total; ++i)
        v[size_t(i)] = (key.block(uint64_t(i) >> 2).v[i & 3] & 1u) ? 1.0 : -1.0;
      shift(o.fd_step);
      detail::full_gradient(net, d, ctx, o.batch, spans, gp);
      shift(-o.fd_step);
      detail::full_gradient(net, d, ctx, o.batch, spans, gm);
      for (int64_t i = 0; i < total; ++i)
        hdiag[size_t(i)] += v[size_t(i)] * (gp[size_t(i)] - gm[size_t(i)]) / (2 * o.fd_step);
    }
    shift(0);  // the saved values, bit for bit
    for (double& h : hdiag) h /= o.probes;
  }

  if (o.fisher) {
    // Diagonal Fisher: per-example gradients (batches of one), squared and averaged.
    const int64_t m = o.fisher_examples > 0 ? std::min(o.fisher_examples, n) : n;
    const int64_t c = net.output_shape().c;
    fdiag.assign(size_t(total), 0.0);
    std::vector<int64_t> order(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
    Tensor<T> x, dz;
    std::vector<int32_t> y;
    std::vector<double> prob(static_cast<size_t>(c));
    for (int64_t e = 0; e < m; ++e) {
      data::gather_batch(d, order, e, 1, x, y);
      int32_t label = y[0];
      // model: E over label ~ p of g_label^2 = sum_c p_c g_c^2 (C passes); empirical: the label.
      const int64_t passes = o.fisher_kind == FisherKind::model ? c : 1;
      for (int64_t k = 0; k < passes; ++k) {
        const ConstView<T> z = net.forward(x.view(), ctx);
        if (o.fisher_kind == FisherKind::model) {
          label = int32_t(k);
          if (k == 0) {  // the predictive distribution, from the first pass
            std::vector<T> lp(static_cast<size_t>(c));
            detail::log_softmax_row(z.data, c, lp.data());
            for (int64_t j = 0; j < c; ++j) prob[size_t(j)] = std::exp(double(lp[size_t(j)]));
          }
        }
        dz.resize(z.shape);
        std::vector<TensorView<T>> dv = {dz.view()};
        cross_entropy<T>({z}, &label, &dv);
        net.zero_grad();
        net.backward(dz.view(), ctx);
        const double weight = o.fisher_kind == FisherKind::model ? prob[size_t(k)] : 1.0;
        for (const auto& s : spans)
          for (int64_t i = 0; i < s.size; ++i) {
            const double g = double(net.grads()[size_t(s.offset + i)]);
            fdiag[size_t(s.first + i)] += weight * g * g / double(m);
          }
      }
    }
    net.zero_grad();
  }

  std::vector<CurvatureEstimate> out;
  for (size_t t = 0; t < targets.size(); ++t) {
    const detail::TargetSpan& s = spans[t];
    const ParamEntry* e = net.table().find(targets[t].tensor);
    CurvatureEstimate r;
    r.name = targets[t].name.empty() ? targets[t].tensor : targets[t].name;
    r.tensor = targets[t].tensor;
    r.groups = e->shape.n;
    const int64_t per = s.size / r.groups;
    const auto fill = [&](const std::vector<double>& diag, std::vector<double>& mine,
                          std::vector<double>& groups, double& delta) {
      if (diag.empty()) return;
      mine.assign(diag.begin() + s.first, diag.begin() + s.first + s.size);
      groups.assign(size_t(r.groups), 0.0);
      for (int64_t i = 0; i < s.size; ++i)
        groups[size_t(i / per)] += 0.5 * mine[size_t(i)] * targets[t].variance[size_t(i)];
      for (double g : groups) delta += g;
    };
    fill(hdiag, r.hessian_diag, r.group_hutchinson, r.delta_hutchinson);
    fill(fdiag, r.fisher_diag, r.group_fisher, r.delta_fisher);
    for (double v : targets[t].variance) r.variance_sum += v;
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace varnet
