#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU, nvcc, CMake, g++, Eigen, Catch2 v3 and zlib (no
# network needed): builds and runs the CUDA parity tests, builds and runs the LRT benchmark, runs
# the PyTorch reference when torch is importable, and prints a summary. Every stage's output is
# kept under $OUT (default ./gpu-out). A failing stage does not stop the later ones; the script
# exits non-zero at the end if any stage failed. Meant to finish in a few minutes.
#
#   scripts/gpu-check.sh            # from anywhere; works in the repository root
#   OUT=/some/dir scripts/gpu-check.sh
#   VARNET_CUDA_ARCH=90 scripts/gpu-check.sh   # a fixed architecture instead of "native"
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
JOBS=$(nproc)
START=$(date +%s)

declare -A STATUS=()
ORDER=()
record() {  # record <stage> <exit status>
  STATUS[$1]=$2
  ORDER+=("$1")
  case "$2" in
    0) echo "== $1: ok" ;;
    not-run | skipped) echo "== $1: $2" ;;
    *) echo "== $1: FAILED (exit $2)" ;;
  esac
}

echo "== output in $OUT"
# At most 8 files come back from a device run: env.txt, build.log, cpu-tests.log, cuda-tests.log,
# bench_lrt.log/json, torch_reference.log/json.
if nvidia-smi > "$OUT/env.txt" 2>&1; then
  record nvidia-smi 0
  head -15 "$OUT/env.txt"
else
  record nvidia-smi $?
fi
{ nvcc --version; cmake --version | head -1; g++ --version | head -1; } >> "$OUT/env.txt" 2>&1 || true

# The GPU architecture: VARNET_CUDA_ARCH (e.g. 90) if set, else "native". native needs CMake
# >= 3.24; older CMake gets the GPU's compute capability from nvidia-smi (e.g. 9.0 -> 90).
ARCH=${VARNET_CUDA_ARCH:-native}
CMAKE_MINOR=$(cmake --version | head -1 | sed -E 's/[^0-9]*([0-9]+)\.([0-9]+).*/\1 \2/')
read -r CM_MAJ CM_MIN <<< "$CMAKE_MINOR"
if [ "$ARCH" = native ] && { [ "$CM_MAJ" -lt 3 ] || { [ "$CM_MAJ" -eq 3 ] && [ "$CM_MIN" -lt 24 ]; }; }; then
  CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  ARCH=${CC:-90}
fi

# ---- configure and build everything (tests with this machine's Catch2, examples, CUDA) ----
set +e
{
  cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$ARCH" \
    -DVARNET_BUILD_BENCHMARKS=OFF &&
    cmake --build build-gpu -j "$JOBS"
} > "$OUT/build.log" 2>&1
BUILD=$?
set -e
record build $BUILD
[ "$BUILD" = 0 ] || tail -40 "$OUT/build.log"

# ---- run the parity tests (VARNET_CUDA_SYNC=1: a kernel fault is reported at its launch) ----
if [ "$BUILD" = 0 ]; then
  set +e
  VARNET_CUDA_SYNC=1 timeout 150 ./build-gpu/tests/varnet_cuda_tests 2>&1 | tee "$OUT/cuda-tests.log"
  TESTS=${PIPESTATUS[0]}
  set -e
  record cuda-tests "$TESTS"
else
  record cuda-tests skipped
fi

# ---- the CPU test suite too: proves the Catch2 v3 path on this machine ----
if [ "$BUILD" = 0 ]; then
  set +e
  (cd build-gpu && OMP_NUM_THREADS=1 timeout 120 ctest -j "$JOBS" -E cuda_parity --output-on-failure) \
    > "$OUT/cpu-tests.log" 2>&1
  CPU_TESTS=$?
  set -e
  tail -4 "$OUT/cpu-tests.log"
  record cpu-tests "$CPU_TESTS"
else
  record cpu-tests skipped
fi

# ---- build and run the LRT benchmark with nvcc directly ----
EIGEN_INC=/usr/include/eigen3
if [ ! -d "$EIGEN_INC" ] && command -v pkg-config > /dev/null; then
  EIGEN_INC=$(pkg-config --cflags-only-I eigen3 2>/dev/null | sed 's/-I//' | awk '{print $1}')
fi
BENCH_ARCH=native
[ "$ARCH" = native ] || BENCH_ARCH=sm_$ARCH
mkdir -p build-gpu
set +e
nvcc -O3 -std=c++17 -arch="$BENCH_ARCH" --expt-relaxed-constexpr -diag-suppress=20012 -Iinclude -I. -I"$EIGEN_INC" \
  benchmarks/gpu/bench_lrt.cu -o build-gpu/bench_lrt -lcublas -lcurand >> "$OUT/build.log" 2>&1
BENCH_BUILD=$?
set -e
record bench-build $BENCH_BUILD
[ "$BENCH_BUILD" = 0 ] || tail -30 "$OUT/build.log"
if [ "$BENCH_BUILD" = 0 ]; then
  set +e
  timeout 120 ./build-gpu/bench_lrt "$OUT/bench_lrt.json" 2>&1 | tee "$OUT/bench_lrt.log"
  BENCH=${PIPESTATUS[0]}
  set -e
  record bench_lrt "$BENCH"
else
  record bench_lrt skipped
fi

# ---- PyTorch reference (optional) ----
if python3 -c 'import torch' > /dev/null 2>&1; then
  set +e
  timeout 90 python3 benchmarks/torch_reference.py "$OUT/torch_reference.json" > "$OUT/torch_reference.log" 2>&1
  TORCH=$?
  set -e
  tail -5 "$OUT/torch_reference.log"
  record torch_reference "$TORCH"
else
  echo "torch is not importable: PyTorch reference not run" | tee "$OUT/torch_reference.log"
  record torch_reference "not-run"
fi

# ---- summary ----
echo
echo "==================== gpu-check summary ($(( $(date +%s) - START )) s) ===================="
FAILED=0
for stage in "${ORDER[@]}"; do
  s=${STATUS[$stage]}
  case "$s" in
    0) word=ok ;;
    not-run) word="not run" ;;
    skipped) word="skipped (earlier stage failed)"; FAILED=1 ;;
    *) word="FAILED (exit $s)"; FAILED=1 ;;
  esac
  printf '  %-16s %s\n' "$stage" "$word"
done
if [ -f "$OUT/cuda-tests.log" ]; then
  printf '  %-16s %s\n' "tests" "$(grep -E 'All tests passed|test cases:|assertions:' "$OUT/cuda-tests.log" | tail -2 | tr '\n' ' ')"
fi
if [ -f "$OUT/bench_lrt.log" ]; then
  echo "  bench_lrt:"
  grep -E '^[0-9]+x[0-9]+x[0-9]+' "$OUT/bench_lrt.log" | sed 's/^/    /' || true
fi
echo "  outputs: $OUT"
exit $FAILED
