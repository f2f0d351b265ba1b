// Catch2 v2 test runner main (Catch2 v3 brings its own as Catch2::Catch2WithMain).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
