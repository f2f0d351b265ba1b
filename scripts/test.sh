#!/usr/bin/env bash
# Set-up, build and every test: what CI runs (.ci/run calls this).
#   ./scripts/test.sh   1. build in build/ (Release) and run every test with ctest;
#                       2. build the CPU test suite again in build-asan/ under AddressSanitizer and
#                          UndefinedBehaviorSanitizer (any report fails the test) and run it,
#                          with the [cuda] suite on the emulated GPU (test_emulated_cuda_suite)
#                          and lenet5 --device cuda on it (test_lenet5_emulated_cli),
#                          whose device buffers ASan then bounds;
#                       3. run each libFuzzer target for FUZZ_SECONDS (scripts/fuzz.sh).
# Environment: BUILD_DIR (default build), JOBS (default: all cores), SANITIZE (default 1; 0 skips
# steps 2 and 3), ASAN_BUILD_DIR (default build-asan), FUZZ_SECONDS (default 20; 0 skips step 3),
# REQUIRE_CUDA (default ON when CI is set, else OFF: ON fails step 1 when nvcc is missing, since
# CI must compile every CUDA file even though it has no GPU to run them).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
build=${BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}
require_cuda=${REQUIRE_CUDA:-$([ -n "${CI:-}" ] && echo ON || echo OFF)}
# The emulated [cuda] suite (tests/emulation) is built once: in step 2 when it runs, else here.
sanitize_step=$([ "${SANITIZE:-1}" != 0 ] && echo ON || echo OFF)
emulated_here=$([ "$sanitize_step" = ON ] && echo OFF || echo ON)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DVARNET_REQUIRE_CUDA="$require_cuda" \
  -DVARNET_EMULATED_CUDA_SUITE="$emulated_here"
cmake --build "$build" -j "$jobs"
# Tests run in parallel, one OpenMP thread each, so that they do not fight over the cores.
(cd "$build" && OMP_NUM_THREADS=1 ctest --output-on-failure -j "$jobs")

[ "$sanitize_step" = ON ] || exit 0
start=$(date +%s)
asan=${ASAN_BUILD_DIR:-build-asan}
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
cmake -S . -B "$asan" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" \
  -DCMAKE_CXX_FLAGS="$sanitize" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DVARNET_BUILD_BENCHMARKS=OFF -DVARNET_ENABLE_CUDA=OFF -DVARNET_EMULATED_CUDA_SUITE=ON
cmake --build "$asan" -j "$jobs"
# install_consumer builds a separate project against an installed copy: packaging, which step 1
# checked; it is not re-run here.
(cd "$asan" && OMP_NUM_THREADS=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j "$jobs" -E '^install_consumer$')
echo "test: sanitizer build and tests took $(($(date +%s) - start)) s"

fuzz_seconds=${FUZZ_SECONDS:-20}
if [ "$fuzz_seconds" != 0 ]; then
  start=$(date +%s)
  FUZZ_SECONDS=$fuzz_seconds ./scripts/fuzz.sh
  echo "test: fuzzing took $(($(date +%s) - start)) s"
fi
