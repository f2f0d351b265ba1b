// Checkpoints: a resumed run continues bit for bit; every damaged, truncated, oversized or
// mismatching checkpoint is refused with a clear error and changes nothing; non-finite values
// are never written; a write interrupted at any point (a killed process included) leaves the
// previous checkpoint loadable.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "catch.hpp"
#include "errors.hpp"
#include "varnet/nn/checkpoint.hpp"
#include "varnet/varnet.hpp"

namespace fs = std::filesystem;
using varnet::Adam;
using varnet::CheckpointInfo;
using varnet::Network;
using varnet::Shape;
using varnet::Tensor;
using varnet::Trainer;
using varnet::test::error_of;
using varnet::test::has;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() / ("varnet_test_checkpoint_" + std::to_string(::getpid()) +
                                        "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

// A small network with every kind of tensor: variance parameters, batch-norm state, a
// deterministic layer. `hidden` sets its size.
Network<float> small_net(uint64_t init_seed, int64_t hidden = 8) {
  Network<float> net;
  net.emplace<varnet::VarianceLinear<float>>("var1", 4, hidden, varnet::VarianceOptions{});
  net.emplace<varnet::BatchNorm<float>>("bn", hidden);
  net.emplace<varnet::ReLU<float>>("relu");
  net.emplace<varnet::Linear<float>>("out", hidden, 3);
  net.build(Shape(1, 4), init_seed);
  return net;
}

// The batch of step s: a pure function of s, as a data order of (seed, epoch) is.
void batch_of(uint32_t s, Tensor<float>& x, std::vector<int32_t>& y) {
  x.resize(Shape(16, 4));
  y.resize(16);
  const varnet::NoiseKey key{99, 0, s, 0};
  for (int i = 0; i < 16; ++i) {
    y[size_t(i)] = i % 3;
    for (int j = 0; j < 4; ++j)
      x.at(i, j) = float(varnet::uniform_at(key, uint64_t(i * 4 + j))) + (j == y[size_t(i)]);
  }
}

void train(Trainer<float, Adam<float>>& t, int steps) {
  Tensor<float> x;
  std::vector<int32_t> y;
  const varnet::LinearDecay lr{1e-2, 40};
  for (int i = 0; i < steps; ++i) {
    batch_of(t.steps(), x, y);
    t.step(x.view(), y.data(), lr.at(t.steps()));
  }
}

template <class V>
bool same_bits(const V& a, const V& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0);
}

const std::map<std::string, std::string> kConfig = {{"batch", "16"}, {"lr", "0.01"}};

CheckpointInfo info_at(uint32_t step) {
  CheckpointInfo info;
  info.step = step;
  info.epoch = step / 10;
  info.step_in_epoch = step % 10;
  info.seed = 5;
  info.config = kConfig;
  info.extra["loss"] = "0.25";
  return info;
}

// A network and optimizer trained for `steps` steps and saved at `path`.
void save_trained(const std::string& path, int steps) {
  Network<float> net = small_net(1);
  Adam<float> adam(net.params().size());
  Trainer<float, Adam<float>> t(net, adam, 1, 5);
  train(t, steps);
  varnet::save_checkpoint(path, net, adam, info_at(t.steps()));
}

// The step recorded in a loadable checkpoint.
uint64_t step_in(const std::string& path) {
  return varnet::read_checkpoint(path).info.step;
}

}  // namespace

TEST_CASE("checkpoint: a resumed run is bit-identical to an uninterrupted one", "[checkpoint]") {
  TempDir dir;
  const std::string path = dir / "run.ckpt";

  Network<float> straight = small_net(1);
  Adam<float> adam_a(straight.params().size());
  Trainer<float, Adam<float>> ta(straight, adam_a, 2, 5);
  train(ta, 20);

  {  // the interrupted run: 9 steps, a checkpoint, then everything is dropped
    Network<float> net = small_net(1);
    Adam<float> adam(net.params().size());
    Trainer<float, Adam<float>> t(net, adam, 2, 5);
    train(t, 9);
    varnet::save_checkpoint(path, net, adam, info_at(t.steps()));
  }
  // A fresh process would build from the same seed; another one shows nothing leaks from init.
  Network<float> resumed = small_net(77);
  Adam<float> adam_b(resumed.params().size());
  const CheckpointInfo info = varnet::load_checkpoint(path, resumed, adam_b, kConfig, 5);
  CHECK(info.step == 9);
  CHECK(info.epoch == 0);
  CHECK(info.step_in_epoch == 9);
  CHECK(info.optimizer == "adam");
  CHECK(info.optimizer_steps == 9);
  CHECK(adam_b.steps() == 9);
  CHECK(info.extra.at("loss") == "0.25");
  CHECK(info.config.at("optimizer.beta2") == "0.999");
  Trainer<float, Adam<float>> tb(resumed, adam_b, 2, 5);
  tb.set_steps(uint32_t(info.step));
  train(tb, 11);

  CHECK(same_bits(straight.params(), resumed.params()));
  CHECK(same_bits(straight.state(), resumed.state()));  // batch-norm running statistics
  CHECK(same_bits(*adam_a.buffers()[0].second, *adam_b.buffers()[0].second));
  CHECK(same_bits(*adam_a.buffers()[1].second, *adam_b.buffers()[1].second));
  // And not trivially: training changed the parameters.
  Network<float> untrained = small_net(1);
  CHECK_FALSE(same_bits(straight.params(), untrained.params()));
}

TEST_CASE("checkpoint: a mismatching resume is refused, naming what differs", "[checkpoint]") {
  TempDir dir;
  const std::string path = dir / "run.ckpt";
  save_trained(path, 3);
  Network<float> net = small_net(2);
  Adam<float> adam(net.params().size());
  const std::vector<float> before(net.params().begin(), net.params().end());
  const auto unchanged = [&] {
    return std::equal(before.begin(), before.end(), net.params().begin()) && adam.steps() == 0;
  };

  SECTION("configuration") {
    auto config = kConfig;
    config["lr"] = "0.02";
    config["epochs"] = "3";
    const std::string m = error_of([&] { varnet::load_checkpoint(path, net, adam, config, 6); });
    INFO(m);
    CHECK(has(m, path + ": expected a checkpoint of a run configured as this one"));
    CHECK(has(m, "seed 5 in the checkpoint, 6 in this run"));
    CHECK(has(m, "lr \"0.01\" in the checkpoint, \"0.02\" in this run"));
    CHECK(has(m, "epochs unset in the checkpoint, \"3\" in this run"));
    CHECK(unchanged());
    CHECK(has(error_of([&] { varnet::load_checkpoint(path, net, adam, kConfig, 4); }),
              "seed 5 in the checkpoint, 4 in this run"));
    config = kConfig;
    config.erase("batch");
    CHECK(has(error_of([&] { varnet::load_checkpoint(path, net, adam, config, 5); }),
              "batch \"16\" in the checkpoint, unset in this run"));
    Adam<float> other(net.params().size(), varnet::AdamOptions{0.8, 0.999, 1e-8});
    CHECK(
        has(error_of([&] { varnet::load_checkpoint(path, net, other, kConfig, 5); }),
            "optimizer.beta1 \"0.90000000000000002\" in the checkpoint, \"0.80000000000000004\""));
  }
  SECTION("architecture, optimizer, scalar type") {
    Network<float> wider = small_net(2, 9);
    Adam<float> adam9(wider.params().size());
    std::string m = error_of([&] { varnet::load_checkpoint(path, wider, adam9, kConfig, 5); });
    CHECK(has(m, path + ": expected 'var1.sigma' of shape [9, 4], found shape [8, 4]"));
    Network<float> other;
    other.emplace<varnet::Linear<float>>("fc", 4, 3);
    other.build(Shape(1, 4), 1);
    Adam<float> adam_o(other.params().size());
    CHECK(has(error_of([&] { varnet::load_checkpoint(path, other, adam_o, kConfig, 5); }),
              "expected a tensor named 'fc.weight', found none"));
    varnet::Sgd<float> sgd(net.params().size());
    CHECK(has(error_of([&] { varnet::load_checkpoint(path, net, sgd, kConfig, 5); }),
              "expected a checkpoint of the optimizer of this run, sgd, found adam"));
    Network<double> wide;
    wide.emplace<varnet::VarianceLinear<double>>("var1", 4, 8, varnet::VarianceOptions{});
    wide.emplace<varnet::BatchNorm<double>>("bn", 8);
    wide.emplace<varnet::ReLU<double>>("relu");
    wide.emplace<varnet::Linear<double>>("out", 8, 3);
    wide.build(Shape(1, 4), 1);
    Adam<double> adam_d(wide.params().size());
    CHECK(has(error_of([&] { varnet::load_checkpoint(path, wide, adam_d, kConfig, 5); }),
              "as F64 (this run's scalar type), found F32"));
    CHECK(unchanged());
  }
  SECTION("a saved model is not a checkpoint") {
    const std::string model = dir / "model.safetensors";
    varnet::save_network(net, model);
    CHECK(has(error_of([&] { varnet::read_checkpoint(model); }),
              model + ": expected format \"varnet-checkpoint\", found \"varnet\" (a saved model"));
  }
}

TEST_CASE("checkpoint: damaged files give a clear error", "[checkpoint]") {
  TempDir dir;
  const std::string good = dir / "good.ckpt", bad = dir / "bad.ckpt";
  save_trained(good, 2);
  const std::string bytes = read_all(good);
  REQUIRE(bytes.size() > 1000);
  Network<float> net = small_net(2);
  Adam<float> adam(net.params().size());

  SECTION("every truncation") {
    for (size_t n = 0; n < bytes.size(); ++n) {
      write_all(bad, bytes.substr(0, n));
      const std::string m = error_of([&] { varnet::read_checkpoint(bad); });
      INFO(n);
      REQUIRE(has(m, bad + ": "));
      REQUIRE(has(m, "expected"));
    }
  }
  SECTION("every single flipped bit") {
    // The checksum covers every field; the structure, the length field and the padding. Every
    // bit of the length and the header, one bit per byte of the data (the CRC sees them alike).
    size_t header_end = 8;
    for (int i = 0; i < 8; ++i) header_end += size_t(uint8_t(bytes[size_t(i)])) << (8 * i);
    REQUIRE(header_end < bytes.size());
    write_all(bad, bytes);
    const int fd = ::open(bad.c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    const auto put = [&](size_t at, char c) { REQUIRE(::pwrite(fd, &c, 1, off_t(at)) == 1); };
    for (size_t i = 0; i < bytes.size(); ++i)
      for (int b = i < header_end ? 0 : int(i % 8); b < (i < header_end ? 8 : int(i % 8) + 1);
           ++b) {
        put(i, char(bytes[i] ^ (1 << b)));
        const std::string m = error_of([&] { varnet::read_checkpoint(bad); });
        put(i, bytes[i]);
        if (m.empty() || !has(m, "expected")) FAIL("byte " << i << " bit " << b << ": " << m);
      }
    ::close(fd);
    CHECK(varnet::read_checkpoint(bad).info.step == 2);  // restored: the loop did test flips
  }
  SECTION("oversized") {
    // Trailing bytes after the data.
    write_all(bad, bytes + std::string(1 << 20, '\0'));
    CHECK(has(error_of([&] { varnet::read_checkpoint(bad); }),
              "expected tensors covering the whole data buffer"));
    // A header length of 2^62, and tensors declaring terabytes: refused before allocating.
    std::string huge = bytes;
    huge[7] = 0x40;
    write_all(bad, huge);
    CHECK(has(error_of([&] { varnet::read_checkpoint(bad); }),
              "expected a header length of at most 100000000 bytes"));
    const std::string header =
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[1099511627776],\"data_offsets\":[0,"
        "4398046511104]}}";
    std::string file(8, '\0');
    for (int i = 0; i < 8; ++i) file[size_t(i)] = char(header.size() >> (8 * i));
    write_all(bad, file + header + "abcd");
    CHECK(has(error_of([&] { varnet::read_checkpoint(bad); }),
              "expected data_offsets within the data buffer of 4 bytes"));
  }
  SECTION("metadata that passes the checksum but not validation") {
    // Rewritten with a correct checksum: the reader must still check each field.
    const auto rewrite = [&](const std::string& key, const std::string* value) {
      varnet::SafetensorsFile f = varnet::load_safetensors(good);
      if (value)
        f.metadata[key] = *value;
      else
        f.metadata.erase(key);
      if (key != "checksum") f.metadata["checksum"] = varnet::checkpoint_detail::checksum(f);
      varnet::save_safetensors(bad, f);
      return error_of([&] { varnet::load_checkpoint(bad, net, adam, kConfig, 5); });
    };
    const std::string big = "4294967296", sign = "-1", text = "12a", empty;
    const std::string lead = "+3", other = "2", odd = "x";
    CHECK(has(rewrite("step", &big), "expected \"step\" as a decimal integer in [0, 4294967295]"));
    CHECK(has(rewrite("epoch", &sign), "found \"-1\""));
    CHECK(has(rewrite("seed", &text), "found \"12a\""));
    CHECK(has(rewrite("seed", &empty), "found \"\""));
    CHECK(has(rewrite("optimizer.steps", &lead), "found \"+3\""));
    CHECK(has(rewrite("step", nullptr), "expected a metadata entry \"step\", found none"));
    CHECK(has(rewrite("version", &other), "expected checkpoint version 1, found \"2\""));
    CHECK(has(rewrite("surprise", &odd), "expected only the metadata of a checkpoint"));
    CHECK(has(rewrite("optimizer", &empty), "expected an optimizer name"));
    CHECK(has(rewrite("checksum", &odd), "expected checksum x (as stored), found crc32:"));
  }
  SECTION("non-finite values with a valid checksum are refused on load") {
    varnet::SafetensorsFile f = varnet::load_safetensors(good);
    for (auto& t : f.tensors)
      if (t.name == "optimizer.v") {
        const float inf = std::numeric_limits<float>::infinity();
        std::memcpy(t.bytes.data() + 8, &inf, 4);
      }
    f.metadata["checksum"] = varnet::checkpoint_detail::checksum(f);
    varnet::save_safetensors(bad, f);
    const std::vector<float> before(net.params().begin(), net.params().end());
    CHECK(has(error_of([&] { varnet::load_checkpoint(bad, net, adam, kConfig, 5); }),
              bad + ": tensor \"optimizer.v\": expected finite values, found inf at element 2"));
    CHECK(std::equal(before.begin(), before.end(), net.params().begin()));
    // A NaN in the last element of a parameter tensor (out.weight is 3 x 8).
    f = varnet::load_safetensors(good);
    for (auto& t : f.tensors)
      if (t.name == "out.weight") {
        const float nan = std::nanf("");
        std::memcpy(t.bytes.data() + t.bytes.size() - 4, &nan, 4);
      }
    f.metadata["checksum"] = varnet::checkpoint_detail::checksum(f);
    varnet::save_safetensors(bad, f);
    CHECK(has(error_of([&] { varnet::load_checkpoint(bad, net, adam, kConfig, 5); }),
              bad + ": tensor \"out.weight\": expected finite values, found nan at element 23"));
    CHECK(std::equal(before.begin(), before.end(), net.params().begin()));
  }
  SECTION("a tensor the network and the optimizer lack, with a valid checksum") {
    varnet::SafetensorsFile f = varnet::load_safetensors(good);
    const float one = 1;
    f.tensors.push_back(varnet::make_stored<float>("head.weight", {1}, &one));
    f.metadata["checksum"] = varnet::checkpoint_detail::checksum(f);
    varnet::save_safetensors(bad, f);
    const std::vector<float> before(net.params().begin(), net.params().end());
    const std::string m = error_of([&] { varnet::load_checkpoint(bad, net, adam, kConfig, 5); });
    INFO(m);
    CHECK(has(m, "expected 9 tensors (the network's 7 and the optimizer's 2)"));
    CHECK(has(m, "found 10"));
    CHECK(std::equal(before.begin(), before.end(), net.params().begin()));
    CHECK(adam.steps() == 0);
  }
}

TEST_CASE("checkpoint: non-finite values are never written", "[checkpoint][nonfinite]") {
  TempDir dir;
  const std::string path = dir / "run.ckpt";
  Network<float> net = small_net(1);
  Adam<float> adam(net.params().size());
  varnet::save_checkpoint(path, net, adam, info_at(0));
  const std::string before = read_all(path);

  net.find("out.weight")[5] = std::nanf("");
  std::string m;
  try {
    varnet::save_checkpoint(path, net, adam, info_at(1));
  } catch (const varnet::NonFiniteError& e) {
    m = e.what();
  }
  INFO(m);
  CHECK(has(m, "found nan in 'out.weight' (layer 'out') at element 5"));
  CHECK(has(m, "nothing written"));
  CHECK(read_all(path) == before);
  CHECK_FALSE(fs::exists(path + ".prev"));
  auto names = std::vector<std::string>();
  for (const auto& e : fs::directory_iterator(dir.path)) names.push_back(e.path().filename());
  CHECK(names == std::vector<std::string>{"run.ckpt"});
}

TEST_CASE("checkpoint: the trainer names the layer of a non-finite gradient", "[nonfinite]") {
  // The loss stays finite (about 1e30) while fc1's weight gradient, x * dL/dh with x = 1e10 and
  // dL/dh = 1e30 / 4 per row, overflows float: the gradient check, not the loss check, fires.
  Network<float> net;
  net.emplace<varnet::Linear<float>>("fc1", 2, 2, false);
  net.emplace<varnet::Linear<float>>("fc2", 2, 2, false);
  net.build(Shape(1, 2), 1);
  std::fill(net.params().begin(), net.params().end(), 0.0f);
  net.find("fc1.weight")[0] = 1e-10f;
  net.find("fc2.weight")[0] = 1e30f;
  Adam<float> adam(net.params().size());
  Trainer<float, Adam<float>> trainer(net, adam, 1, 1);
  Tensor<float> x(Shape(4, 2), 0.0f);
  for (int i = 0; i < 4; ++i) x.at(i, 0) = 1e10f;
  const std::vector<int32_t> y = {1, 1, 1, 1};
  std::string m;
  try {
    trainer.step(x.view(), y.data(), 1e-3);
  } catch (const varnet::NonFiniteError& e) {
    m = e.what();
  }
  INFO(m);
  CHECK(has(m,
            "training step 0: expected finite gradients, found inf in 'fc1.weight' (layer "
            "'fc1') at element 0"));
}

TEST_CASE("checkpoint: an interrupted write leaves the previous checkpoint", "[checkpoint]") {
  TempDir dir;
  const std::string path = dir / "run.ckpt", prev = path + ".prev";
  save_trained(path, 4);
  CHECK_FALSE(fs::exists(prev));  // nothing to keep yet
  save_trained(path, 6);
  REQUIRE(step_in(path) == 6);
  REQUIRE(step_in(prev) == 4);
  const std::string newest = read_all(path);

  SECTION("a partial temporary file beside it (killed while writing)") {
    write_all(path + ".tmp.4242.0.17", newest.substr(0, newest.size() / 2));
    write_all(path + ".tmp.notes", "not a temporary file of save_safetensors");
    CHECK(varnet::read_checkpoint_or_previous(path).info.step == 6);
    save_trained(path, 8);  // and the next save is not disturbed by it
    CHECK(step_in(path) == 8);
    CHECK(step_in(prev) == 6);
    // The save removes the stale temporary file, and only it.
    CHECK_FALSE(fs::exists(path + ".tmp.4242.0.17"));
    CHECK(read_all(path + ".tmp.notes") == "not a temporary file of save_safetensors");
  }
  SECTION("a staging link left over (killed while keeping the previous one)") {
    fs::create_hard_link(path, prev + ".tmp");
    CHECK(varnet::read_checkpoint_or_previous(path).info.step == 6);
    save_trained(path, 8);
    CHECK(step_in(path) == 8);
    CHECK(step_in(prev) == 6);
    CHECK_FALSE(fs::exists(prev + ".tmp"));
  }
  SECTION("a truncated or damaged newest file: the previous one is what is loaded") {
    Network<float> expected = small_net(1);
    {
      Adam<float> adam(expected.params().size());
      Trainer<float, Adam<float>> t(expected, adam, 1, 5);
      train(t, 4);
    }
    for (size_t n = 0; n < newest.size(); n += 61) {
      write_all(path, newest.substr(0, n));
      std::string note;
      Network<float> net = small_net(3);
      Adam<float> adam(net.params().size());
      const CheckpointInfo info = varnet::load_checkpoint(path, net, adam, kConfig, 5, &note);
      INFO(n);
      CHECK(info.step == 4);
      CHECK(has(note, path + ": "));
      CHECK(has(note, "expected"));
      CHECK(same_bits(net.params(), expected.params()));
    }
    // A damaged newest file is not promoted to .prev by the next save.
    save_trained(path, 8);
    CHECK(step_in(path) == 8);
    CHECK(step_in(prev) == 4);
  }
  SECTION("both damaged: an error with both reasons") {
    write_all(path, newest.substr(0, 100));
    write_all(prev, "junk");
    const std::string m = error_of([&] { varnet::read_checkpoint_or_previous(path); });
    CHECK(has(m, path + ": expected"));
    CHECK(has(m, "; and the previous checkpoint: " + prev + ": expected at least 8 bytes"));
  }
}

TEST_CASE("checkpoint: a process killed while saving leaves a loadable checkpoint",
          "[checkpoint][kill]") {
  TempDir dir;
  const std::string path = dir / "run.ckpt";
  // Large enough (about 3 MB) that kills land inside writes.
  Network<float> net = small_net(1, 16384);
  Adam<float> adam(net.params().size());
  varnet::save_checkpoint(path, net, adam, info_at(0));
  int landed_mid_write = 0;
  for (int round = 0; round < 12; ++round) {
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {  // saves forever, each checkpoint with the next step
      for (uint32_t s = 1;; ++s) varnet::save_checkpoint(path, net, adam, info_at(s));
    }
    ::usleep(useconds_t(3000 + 2500 * round));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    REQUIRE(WIFSIGNALED(status));
    bool temp_left = false;
    for (const auto& e : fs::directory_iterator(dir.path))
      temp_left |= e.path().filename().string().find(".tmp.") != std::string::npos;
    landed_mid_write += temp_left;
    const std::string m = error_of([&] {
      varnet::CheckpointFile f = varnet::read_checkpoint_or_previous(path);
      Network<float> other = small_net(2, 16384);
      Adam<float> adam2(other.params().size());
      varnet::apply_checkpoint(f, other, adam2, kConfig, 5);
      REQUIRE(same_bits(other.params(), net.params()));
    });
    INFO("round " << round);
    REQUIRE(m.empty());
  }
  // Not a proof that every instant was hit, but the kills do land inside writes.
  WARN(landed_mid_write << " of 12 kills left a temporary file behind");
  // The next save removes what killed saves left behind.
  varnet::save_checkpoint(path, net, adam, info_at(99));
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir.path)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"run.ckpt", "run.ckpt.prev"});
}
