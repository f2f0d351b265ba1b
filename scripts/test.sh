#!/usr/bin/env bash
# Set-up, build and every test: what CI runs (.ci/run calls this).
#   ./scripts/test.sh            build in build/ and run ctest
# Environment: BUILD_DIR (default build), JOBS (default: all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
build=${BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$jobs"
# Tests run in parallel, one OpenMP thread each, so that they do not fight over the cores.
cd "$build"
OMP_NUM_THREADS=1 ctest --output-on-failure -j "$jobs"
