// dlib's deterministic LeNet-5, the C++ speed peer of bench_layers' LeNet-5 training step.
//
// The network of the CPU issue's anchor: conv 20 5x5 - ReLU - max pool 2 - conv 50 5x5 - ReLU -
// max pool 2 - fc 500 - ReLU - fc 10, softmax cross-entropy, Adam, batch 128, 28x28 inputs in
// [0, 1]. dlib has no variance layers, so this is the deterministic network only. Times
// train_one_step after a warm-up and prints one line:
//   dlib deterministic <images/s> img/s  (<ms> ms/step)
// Usage: bench_dlib [seconds per measurement, default 5]
#include <dlib/dnn.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

using namespace dlib;

using LeNet5 = loss_multiclass_log<fc<
    10,
    relu<fc<500, max_pool<2, 2, 2, 2,
                          relu<con<50, 5, 5, 1, 1,
                                   max_pool<2, 2, 2, 2,
                                            relu<con<20, 5, 5, 1, 1, input<matrix<float>>>>>>>>>>>>;

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 5.0;
  if (!(seconds > 0)) {
    std::fprintf(stderr, "bench_dlib: expected a positive number of seconds, found '%s'\n",
                 argv[1]);
    return 2;
  }
  constexpr int kBatch = 128;
  // The same synthetic batch as bench_layers: deterministic pixel values in [0, 1].
  std::vector<matrix<float>> images(kBatch, matrix<float>(28, 28));
  std::vector<unsigned long> labels(kBatch);
  for (int b = 0; b < kBatch; ++b) {
    labels[size_t(b)] = static_cast<unsigned long>(b % 10);
    for (long i = 0; i < 28 * 28; ++i)
      images[size_t(b)](i / 28, i % 28) = float(((b * 784 + i) * 37) % 101) / 101.0f;
  }
  LeNet5 net;
  dnn_trainer<LeNet5, adam> trainer(net, adam(0, 0.9, 0.999));
  trainer.set_learning_rate(1e-3);
  trainer.set_mini_batch_size(kBatch);
  trainer.be_quiet();

  const auto now = [] { return std::chrono::steady_clock::now(); };
  for (int i = 0; i < 5; ++i) trainer.train_one_step(images, labels);
  trainer.get_net();  // waits for the trainer's thread to finish the queued steps
  int steps = 0;
  const auto start = now();
  double elapsed = 0;
  while (elapsed < seconds) {
    for (int i = 0; i < 5; ++i) trainer.train_one_step(images, labels);
    trainer.get_net();
    steps += 5;
    elapsed = std::chrono::duration<double>(now() - start).count();
  }
  const double per_step = elapsed / steps;
  std::printf("dlib deterministic %.0f img/s  (%.2f ms/step)\n", kBatch / per_step, per_step * 1e3);
  return 0;
}
