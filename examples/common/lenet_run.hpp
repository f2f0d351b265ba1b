// What the evaluation examples (adversarial, curvature, zero_mean) share: reading MNIST-format
// data with limits, refusing to overwrite earlier outputs, training one LeNet-5 with per-epoch
// progress, and writing a CSV.
#pragma once

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "training.hpp"
#include "varnet/varnet.hpp"

namespace varnet::examples {

// Keeps the first `limit` examples of `d` (0: all).
inline void keep_first(data::LabeledImages& d, int64_t limit) {
  if (limit <= 0 || limit >= d.images.shape().n) return;
  d.images.resize(d.images.shape().with_batch(limit));
  d.labels.resize(size_t(limit));
}

inline data::MnistFormatData load_limited(const std::string& dir, int64_t train_limit,
                                          int64_t test_limit) {
  std::printf("reading %s\n", dir.c_str());
  data::MnistFormatData d = data::load_mnist_dir(dir);
  keep_first(d.train, train_limit);
  keep_first(d.test, test_limit);
  std::printf("train %lld images, test %lld\n", (long long)d.train.images.shape().n,
              (long long)d.test.images.shape().n);
  return d;
}

// Creates `dir` and fails (before any work is done) if one of `files` is there already.
inline void check_outputs(const std::string& flag, const std::string& dir,
                          const std::vector<std::string>& files, bool overwrite) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  for (const auto& f : files) {
    const fs::path p = fs::path(dir) / f;
    check(overwrite || !fs::exists(p), flag, "a directory without earlier results (or --overwrite)",
          "an existing file '" + p.string() + "'");
  }
}

struct TrainSettings {
  int64_t epochs = 2, batch = 128;
  double lr = 1e-3;
  uint64_t seed = 0;
};

// Trains `net` with Adam (learning rate decayed linearly to 0); the KL term (weight 1 / N) only
// when the network has one (variational dropout).
template <class T>
void train_lenet(Network<T>& net, const data::LabeledImages& train, const TrainSettings& s,
                 const std::string& label) {
  const int64_t n = train.images.shape().n;
  check(n >= s.batch, "--batch", str("at most the training set size ", n), s.batch);
  Adam<T> adam(net.params().size());
  Trainer<T, Adam<T>> trainer(net, adam, 1, s.seed);
  const LinearDecay lr{s.lr, (n / s.batch) * s.epochs};
  const KlWarmup beta{1.0, 0};
  const bool has_kl = net.kl() > 0;
  for (int64_t e = 0; e < s.epochs; ++e) {
    const EpochResult r =
        train_epoch(trainer, train, s.seed, uint32_t(e), s.batch, lr, has_kl ? &beta : nullptr);
    std::printf("%-13s epoch %lld/%lld  loss %.4f  train acc %.4f  %.0f img/s\n", label.c_str(),
                (long long)e + 1, (long long)s.epochs, r.loss, r.accuracy,
                double(r.images) / r.seconds);
    std::fflush(stdout);
  }
}

// Writes `text` to dir/name, checking the write.
inline std::string write_text(const std::string& dir, const std::string& name,
                              const std::string& text) {
  const std::string path = (std::filesystem::path(dir) / name).string();
  std::ofstream f(path);
  f << text;
  f.close();
  check(bool(f), "writing " + name, "a complete write", "an error on '", path, "'");
  return path;
}

}  // namespace varnet::examples
