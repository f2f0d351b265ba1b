// Saving and loading whole networks: exact round trips (parameters and batch-norm state), and
// clear errors for files of another network, damaged files, or an unbuilt network.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "catch.hpp"
#include "varnet/varnet.hpp"

namespace fs = std::filesystem;
using namespace varnet;

namespace {
std::string temp_file(const std::string& name) {
  return (fs::temp_directory_path() / ("varnet_ser_" + std::to_string(::getpid()) + name)).string();
}
template <class T>
Network<T> small_net(uint64_t seed, bool variance_fc = true) {
  Network<T> net;
  net.template emplace<VarianceConv2d<T>>("conv", 1, 3, ConvOptions{3, 1, 1, false},
                                          VarianceOptions{});
  net.template emplace<BatchNorm<T>>("bn", 3);
  net.template emplace<Flatten<T>>("flat");
  if (variance_fc)
    net.template emplace<VarianceLinear<T>>("fc", 3 * 5 * 5, 4, VarianceOptions{});
  else
    net.template emplace<Linear<T>>("fc", 3 * 5 * 5, 4);
  net.build(Shape(1, 1, 5, 5), seed);
  return net;
}
}  // namespace

TEMPLATE_TEST_CASE("serialize: save then load is exact", "[serialize]", float, double) {
  auto a = small_net<TestType>(1);
  // Change the batch-norm state so that it is not the initial value.
  Tensor<TestType> x(Shape(4, 1, 5, 5));
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = TestType(uniform_at(NoiseKey{3}, uint64_t(i)));
  a.forward(x.view(), Context::train(1, 0));
  const std::string path = temp_file("exact.safetensors");
  save_network(a, path, {{"note", "round trip"}});
  auto b = small_net<TestType>(2);  // other initial values
  REQUIRE(b.params() != a.params());
  const auto meta = load_network(b, path);
  CHECK(meta.at("note") == "round trip");
  CHECK(b.params() == a.params());
  CHECK(b.state() == a.state());
  // The loaded network computes what the saved one computes.
  const Context eval = Context::eval(5, PredictMode::sample, 7);
  const auto ya = a.forward(x.view(), eval);
  const std::vector<TestType> out_a(ya.begin(), ya.end());
  const auto yb = b.forward(x.view(), eval);
  CHECK(std::vector<TestType>(yb.begin(), yb.end()) == out_a);
  std::remove(path.c_str());
}

TEST_CASE("serialize: a file of another network, or a damaged one, is a clear error",
          "[serialize]") {
  auto a = small_net<float>(1);
  const std::string path = temp_file("other.safetensors");
  save_network(a, path);
  auto other = small_net<float>(1, false);  // fc.weight instead of fc.sigma
  const auto before = other.params();
  CHECK_THROWS_WITH(load_network(other, path), Catch::Matchers::ContainsSubstring("fc.weight"));
  CHECK(other.params() == before);  // unchanged
  // A float file loads into a double network (converted).
  auto d = small_net<double>(3);
  CHECK_NOTHROW(load_network(d, path));
  CHECK(d.params()[0] == double(a.params()[0]));
  // Truncated file.
  fs::resize_file(path, fs::file_size(path) - 10);
  CHECK_THROWS_AS(load_network(a, path), Error);
  std::remove(path.c_str());
  CHECK_THROWS_WITH(load_network(a, path), Catch::Matchers::ContainsSubstring(path));
  Network<float> unbuilt;
  CHECK_THROWS_WITH(save_network(unbuilt, path), Catch::Matchers::ContainsSubstring("build"));
}

TEST_CASE("serialize: tensors are stored under their names with PyTorch's shapes", "[serialize]") {
  const auto a = small_net<float>(1);
  const std::string path = temp_file("shapes.safetensors");
  save_network(a, path);
  const SafetensorsFile f = load_safetensors(path);
  const std::vector<std::pair<std::string, std::vector<int64_t>>> expected = {
      {"conv.sigma", {3, 1, 3, 3}}, {"bn.weight", {3}},      {"bn.bias", {3}},
      {"bn.running_mean", {3}},     {"bn.running_var", {3}}, {"fc.sigma", {4, 75}}};
  CHECK(f.tensors.size() == expected.size());
  for (const auto& [name, shape] : expected) {
    INFO(name);
    const StoredTensor* t = f.find(name);
    REQUIRE(t != nullptr);
    CHECK(t->shape == shape);
    CHECK(t->dtype == "F32");
  }
  std::remove(path.c_str());
}

TEST_CASE("serialize: a file with a tensor the network lacks is refused, nothing loaded",
          "[serialize]") {
  const auto a = small_net<float>(1);
  const std::string path = temp_file("extra.safetensors");
  save_network(a, path);
  SafetensorsFile f = load_safetensors(path);
  const float one = 1;
  f.tensors.push_back(make_stored<float>("head.sigma", {1}, &one));
  save_safetensors(path, f);
  auto b = small_net<float>(2);
  const auto before = b.params();
  CHECK_THROWS_WITH(
      load_network(b, path),
      Catch::Matchers::ContainsSubstring("expected 6 tensors, those of the network") &&
          Catch::Matchers::ContainsSubstring("found 7 tensors"));
  CHECK(b.params() == before);
  std::remove(path.c_str());
}
