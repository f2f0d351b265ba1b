// The README's example: a variance layer's ensemble predicts, its mean-propagated output cannot.
#include <cstdio>
#include <varnet/varnet.hpp>

int main() {
  using namespace varnet;
  // A network on 4 input features: a Gaussian variance layer (zero-mean weights whose
  // variances are learned), ReLU, and a deterministic output layer.
  Network<float> net;
  net.emplace<VarianceLinear<float>>("var1", 4, 16, VarianceOptions{});
  net.emplace<ReLU<float>>("relu");
  net.emplace<Linear<float>>("out", 16, 2);
  net.build(Shape(1, 4), /*seed=*/42);

  // Class 0 when the first feature is large in magnitude: only variances can see it.
  Tensor<float> x(Shape(64, 4));
  std::vector<int32_t> y(64);
  for (int i = 0; i < 64; ++i) {
    y[i] = i % 2;
    for (int j = 0; j < 4; ++j) x.at(i, j) = 0.1f * float((i * 7 + j * 3) % 5);
    x.at(i, 0) = y[i] == 0 ? 3.0f : 0.2f;
  }

  Adam<float> adam(net.params().size());
  Trainer<float, Adam<float>> trainer(net, adam, /*samples=*/1, /*seed=*/42);
  LossResult r;
  for (int step = 0; step < 300; ++step) r = trainer.step(x.view(), y.data(), 1e-2);

  // Mean propagation replaces every weight by its expectation, 0: the output is constant.
  const ConstView<float> mean = net.forward(x.view(), Context::eval(42, PredictMode::mean, 0));
  std::printf("final training loss %.3f; mean-mode logits of rows 0 and 1: %.3f %.3f\n", r.loss,
              mean.at(0, 0), mean.at(1, 0));
  return r.loss < 0.3 ? 0 : 1;
}
