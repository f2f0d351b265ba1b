#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU, nvcc, CMake, g++, Eigen, Catch2 v3 and zlib (no
# network needed). In one go:
#   1. configures for the local GPU and builds everything with all cores (tests, examples, the GPU
#      benchmarks);
#   2. runs the [cuda] parity tests, then the CPU test suite;
#   3. runs the GPU benchmarks (benchmarks/gpu/bench_lrt, bench_step, bench_conv) and, when torch
#      imports, the PyTorch reference on the same GPU, then prints the side-by-side ratios;
#   4. trains the LeNet-5 example for a few epochs on the GPU and on the CPU with the same seed, when
#      MNIST-format data is found ($VARNET_DATA, else /usr/share/datasets/fashion-mnist, else
#      .data/fashion-mnist in the repository), and prints both results;
#   5. with VARNET_VGG_EPOCHS=N, trains the VGG example on the GPU for N epochs on the same data
#      (and, with VARNET_VGG_TF32=1, again with TF32 tensor cores).
# Every stage's output is kept under $OUT (default ./gpu-out). A failing stage does not stop the
# later ones; the script exits non-zero at the end if any stage failed.
#
#   scripts/gpu-check.sh                     # from anywhere; works in the repository root
#   OUT=/some/dir scripts/gpu-check.sh
#   VARNET_CUDA_ARCH=90 scripts/gpu-check.sh # a fixed architecture instead of "native"
#   VARNET_PREBUILT=build-sm90 scripts/gpu-check.sh
#       # skip step 1 and the CPU tests but the examples' CLI tests: use binaries built elsewhere
#       # for this GPU (e.g. on a machine without a GPU, with -DCMAKE_CUDA_ARCHITECTURES=90
#       # -DVARNET_NATIVE=OFF)
#   VARNET_EPOCHS=3 scripts/gpu-check.sh     # LeNet-5 epochs in step 4 [2]
#   VARNET_VGG_EPOCHS=20 scripts/gpu-check.sh # also train the VGG example on the GPU (step 5)
#   VARNET_VGG_EPOCHS=20 VARNET_VGG_TF32=1 scripts/gpu-check.sh # and again with --tf32
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
JOBS=$(nproc)
START=$(date +%s)
EPOCHS=${VARNET_EPOCHS:-2}

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
# run_stage <stage> <log> <command...>: runs the command with its output in the log (and on
# stdout), records its exit status.
run_stage() {
  local stage=$1 log=$2
  shift 2
  set +e
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  set -e
  record "$stage" "$rc"
}

echo "== output in $OUT"
if nvidia-smi > "$OUT/env.txt" 2>&1; then
  record nvidia-smi 0
  head -15 "$OUT/env.txt"
else
  record nvidia-smi $?
fi
{ nvcc --version; cmake --version | head -1; g++ --version | head -1; } >> "$OUT/env.txt" 2>&1 || true

# ---- 1. configure and build (or take the prebuilt binaries) ----
if [ -n "${VARNET_PREBUILT:-}" ]; then
  BUILD_DIR=$VARNET_PREBUILT
  echo "prebuilt binaries from $BUILD_DIR" | tee "$OUT/build.log"
  record build 0
else
  BUILD_DIR=build-gpu
  # The GPU architecture: VARNET_CUDA_ARCH (e.g. 90) if set, else "native". native needs CMake
  # >= 3.24; older CMake gets the GPU's compute capability from nvidia-smi (e.g. 9.0 -> 90).
  ARCH=${VARNET_CUDA_ARCH:-native}
  read -r CM_MAJ CM_MIN <<< "$(cmake --version | head -1 | sed -E 's/[^0-9]*([0-9]+)\.([0-9]+).*/\1 \2/')"
  if [ "$ARCH" = native ] && { [ "$CM_MAJ" -lt 3 ] || { [ "$CM_MAJ" -eq 3 ] && [ "$CM_MIN" -lt 24 ]; }; }; then
    CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
    ARCH=${CC:-90}
  fi
  set +e
  {
    # The emulated [cuda] suite is for machines without a GPU: not built here.
    cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$ARCH" \
      -DVARNET_EMULATED_CUDA_SUITE=OFF &&
      cmake --build "$BUILD_DIR" -j "$JOBS"
  } > "$OUT/build.log" 2>&1
  BUILD=$?
  set -e
  record build $BUILD
  [ "$BUILD" = 0 ] || tail -40 "$OUT/build.log"
fi
built() { [ "${STATUS[build]}" = 0 ] && [ -x "$BUILD_DIR/$1" ]; }

# ---- 2. tests (VARNET_CUDA_SYNC=1: a kernel fault is reported at its launch) ----
if built tests/varnet_cuda_tests; then
  VARNET_CUDA_SYNC=1 run_stage cuda-tests "$OUT/cuda-tests.log" \
    timeout 300 "./$BUILD_DIR/tests/varnet_cuda_tests"
else
  record cuda-tests skipped
fi
if [ -z "${VARNET_PREBUILT:-}" ] && [ "${STATUS[build]}" = 0 ]; then
  set +e
  (cd "$BUILD_DIR" && OMP_NUM_THREADS=2 timeout 600 ctest -j "$((JOBS / 2))" -E cuda_parity \
    --output-on-failure) > "$OUT/cpu-tests.log" 2>&1
  CPU_TESTS=$?
  set -e
  tail -4 "$OUT/cpu-tests.log"
  record cpu-tests "$CPU_TESTS"
else
  record cpu-tests not-run
  # Prebuilt binaries: still run the examples' CLI tests, whose --device cuda cases (every layer
  # kind, checkpoints) need the GPU.
  for t in lenet5:VARNET_LENET5 vgg:VARNET_VGG; do
    name=${t%%:*} var=${t##*:}
    if built "tests/test_${name}_cli" && built "examples/$name"; then
      export "$var=$PWD/$BUILD_DIR/examples/$name"
      run_stage "${name}-cli" "$OUT/${name}-cli.log" timeout 600 "./$BUILD_DIR/tests/test_${name}_cli"
    else
      record "${name}-cli" not-run
    fi
  done
fi

# ---- 3. benchmarks, beside PyTorch on the same GPU ----
for bench in bench_lrt bench_step bench_conv; do
  if built "benchmarks/$bench"; then
    run_stage "$bench" "$OUT/$bench.log" timeout 240 "./$BUILD_DIR/benchmarks/$bench" "$OUT/$bench.json"
  else
    record "$bench" skipped
  fi
done
if python3 -c 'import torch' > /dev/null 2>&1; then
  run_stage torch_reference "$OUT/torch_reference.log" \
    timeout 240 python3 benchmarks/torch_reference.py "$OUT/torch_reference.json"
  python3 benchmarks/gpu_ratios.py "$OUT/bench_lrt.json" "$OUT/bench_step.json" \
    "$OUT/torch_reference.json" "$OUT/bench_conv.json" | tee "$OUT/ratios.txt" || true
else
  echo "torch is not importable: PyTorch reference not run" | tee "$OUT/torch_reference.log"
  record torch_reference not-run
fi

# ---- 4. the LeNet-5 example on the GPU and on the CPU, same seed ----
DATA=${VARNET_DATA:-}
if [ -z "$DATA" ]; then
  for d in /usr/share/datasets/fashion-mnist .data/fashion-mnist; do
    # the IDX files gzipped (Debian's package) or not
    if [ -f "$d/t10k-labels-idx1-ubyte.gz" ] || [ -f "$d/t10k-labels-idx1-ubyte" ]; then
      DATA=$d
      break
    fi
  done
fi
if [ -n "$DATA" ] && built examples/lenet5; then
  for device in cuda cpu; do
    run_stage "lenet5-$device" "$OUT/lenet5-$device.log" timeout 600 \
      "./$BUILD_DIR/examples/lenet5" --data "$DATA" --device "$device" --epochs "$EPOCHS" \
      --samples 1,10 --seed 1
  done
else
  echo "no MNIST-format data (set VARNET_DATA) or no lenet5 binary: LeNet-5 runs skipped"
  record lenet5-cuda not-run
fi

# ---- 5. optional: the VGG example on the GPU (VARNET_VGG_EPOCHS > 0), the GPU issue's recipe ----
VGG_EPOCHS=${VARNET_VGG_EPOCHS:-0}
if [ "$VGG_EPOCHS" -gt 0 ] && [ -n "$DATA" ] && built examples/vgg; then
  run_stage vgg-cuda "$OUT/vgg-cuda.log" timeout 1200 \
    "./$BUILD_DIR/examples/vgg" --data "$DATA" --device cuda --epochs "$VGG_EPOCHS" \
    --samples 1,10,100 --seed 1
  # VARNET_VGG_TF32=1: the same run with TF32 tensor cores in the GEMMs, for TF32's accuracy effect
  if [ "${VARNET_VGG_TF32:-0}" = 1 ]; then
    run_stage vgg-cuda-tf32 "$OUT/vgg-cuda-tf32.log" timeout 1200 \
      "./$BUILD_DIR/examples/vgg" --data "$DATA" --device cuda --epochs "$VGG_EPOCHS" \
      --samples 1,10,100 --seed 1 --tf32
  fi
fi

# ---- summary ----
echo
echo "==================== gpu-check summary ($(($(date +%s) - START)) s) ===================="
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
[ -f "$OUT/ratios.txt" ] && cat "$OUT/ratios.txt"
for device in cuda cpu; do
  [ -f "$OUT/lenet5-$device.log" ] && echo "  lenet5 --device $device: $(tail -1 "$OUT/lenet5-$device.log" | cut -c1-400)"
done
[ -f "$OUT/vgg-cuda.log" ] && echo "  vgg --device cuda: $(tail -1 "$OUT/vgg-cuda.log" | cut -c1-400)"
[ -f "$OUT/vgg-cuda-tf32.log" ] && echo "  vgg --device cuda --tf32: $(tail -1 "$OUT/vgg-cuda-tf32.log" | cut -c1-400)"
true
echo "  outputs: $OUT"
exit $FAILED
