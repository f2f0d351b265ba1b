// Network::build checks every pair of adjacent layers before any data flows: an incompatible
// pair is reported with both layers' names and both shapes (what one produces, what the other
// expects).
#include <string>

#include "catch.hpp"
#include "errors.hpp"
#include "varnet/varnet.hpp"

using varnet::Network;
using varnet::Shape;
using varnet::test::error_of;
using varnet::test::has;

TEST_CASE("network build: a shape mismatch names both layers and both shapes", "[network]") {
  SECTION("dense to dense") {
    Network<float> net;
    net.emplace<varnet::Linear<float>>("hidden", 4, 8);
    net.emplace<varnet::ReLU<float>>("relu");
    net.emplace<varnet::Linear<float>>("head", 6, 2);
    const std::string m = error_of([&] { net.build(Shape(1, 4), 1); });
    INFO(m);
    CHECK(has(m, "layer 'head' cannot follow layer 'relu', which produces (1, 8, 1, 1)"));
    CHECK(has(m, "Linear 'head': expected input of shape (N, 6, 1, 1)"));
    CHECK_FALSE(net.built());
  }
  SECTION("convolution to dense without Flatten, and the first layer against the input") {
    Network<float> net;
    net.emplace<varnet::Conv2d<float>>("conv", 1, 3, varnet::ConvOptions{3, 1, 0, true});
    net.emplace<varnet::Linear<float>>("fc", 3 * 6 * 6, 10);
    std::string m = error_of([&] { net.build(Shape(1, 1, 8, 8), 1); });
    INFO(m);
    CHECK(has(m, "layer 'fc' cannot follow layer 'conv', which produces (1, 3, 6, 6)"));
    CHECK(has(m,
              "Linear 'fc': expected input of shape (N, 108, 1, 1), found input of shape "
              "(1, 3, 6, 6)"));
    Network<float> rgb;
    rgb.emplace<varnet::Conv2d<float>>("conv", 3, 4, varnet::ConvOptions{3, 1, 0, true});
    m = error_of([&] { rgb.build(Shape(1, 1, 8, 8), 1); });
    CHECK(has(m, "layer 'conv' cannot follow the network input, which produces (1, 1, 8, 8)"));
    CHECK(has(m, "expected input with 3 channels"));
  }
  SECTION("compatible layers build") {
    Network<float> net;
    net.emplace<varnet::Conv2d<float>>("conv", 1, 3, varnet::ConvOptions{3, 1, 0, true});
    net.emplace<varnet::Flatten<float>>("flat");
    net.emplace<varnet::Linear<float>>("fc", 3 * 6 * 6, 10);
    CHECK(error_of([&] { net.build(Shape(1, 1, 8, 8), 1); }).empty());
    CHECK(net.output_shape() == Shape(1, 10));
  }
}
