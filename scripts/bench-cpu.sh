#!/usr/bin/env bash
# CPU speed, side by side on this machine's cores, in one run: varnet's layer and LeNet-5
# training-step benchmarks (bench_layers), dlib's deterministic LeNet-5 (bench_dlib; built when
# Debian's libdlib-dev is installed, skipped with a message when not) and PyTorch's CPU twin of the
# same recipe (benchmarks/torch_lenet_cpu.py; run when python3-torch is installed). Ends with the
# images/s of each and the ratios. See docs/performance.md.
#
#   scripts/bench-cpu.sh                 all cores; logs under build-bench/results/
#   THREADS=1 scripts/bench-cpu.sh       one thread for every contender
#   PEERS=1 scripts/bench-cpu.sh         first install the peers (libdlib-dev, python3-torch)
#   SECONDS_PER_RUN=10 ...               longer timings for dlib and PyTorch (default 5)
# Extra arguments go to bench_layers (e.g. --benchmark_filter=lenet5_step).
set -euo pipefail
cd "$(dirname "$0")/.."

threads="${THREADS:-$(nproc)}"
seconds="${SECONDS_PER_RUN:-5}"
build="${BUILD_DIR:-build-bench}"
results="$build/results"

./scripts/setup.sh
if [ "${PEERS:-0}" = 1 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get install -y -qq --no-install-recommends libdlib-dev python3-torch
fi

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DVARNET_BUILD_BENCHMARKS=ON \
  -DVARNET_BUILD_TESTS=OFF -DVARNET_BUILD_EXAMPLES=OFF -DVARNET_ENABLE_CUDA=OFF >/dev/null
targets=(bench_layers)
grep -q "^dlib_DIR:PATH=.*-NOTFOUND" "$build/CMakeCache.txt" || targets+=(bench_dlib)
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"
mkdir -p "$results"

echo "== varnet (bench_layers, $threads threads)"
# Medians of 3 repetitions: on a shared machine single runs of the small layers vary by 20% or more.
OMP_NUM_THREADS="$threads" "$build/benchmarks/bench_layers" --benchmark_repetitions=3 "$@" \
  | tee "$results/varnet.txt"

echo "== dlib"
if [ -x "$build/benchmarks/bench_dlib" ]; then
  OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads" \
    "$build/benchmarks/bench_dlib" "$seconds" | tee "$results/dlib.txt"
else
  echo "dlib is not installed (Debian: libdlib-dev): skipping the dlib peer" | tee "$results/dlib.txt"
fi

echo "== PyTorch"
python=python3
# Debian's python3-torch lives in the system interpreter, which a pyenv or venv may shadow.
if ! python3 -c "import torch" 2>/dev/null && [ -x /usr/bin/python3 ]; then python=/usr/bin/python3; fi
"$python" benchmarks/torch_lenet_cpu.py --threads "$threads" --seconds "$seconds" \
  | tee "$results/torch.txt"

echo
echo "== Side by side: LeNet-5 training step, batch 128, $threads threads, $(date -u +%F)"
cat "$results/varnet.txt" "$results/dlib.txt" "$results/torch.txt" | awk '
  $2 == "deterministic" || $2 == "var1" || $2 == "var123" {
    if ($1 == "varnet" || $1 == "dlib" || $1 == "torch") { rate[$1 " " $2] = $3; print }
  }
  END {
    split("deterministic var1 var123", configs, " ")
    for (i = 1; i <= 3; i++) {
      c = configs[i]; v = rate["varnet " c]
      if (v == "") continue
      if (rate["torch " c] != "") printf "varnet %s / torch %s: %.2fx\n", c, c, v / rate["torch " c]
      if (rate["dlib deterministic"] != "")
        printf "varnet %s / dlib deterministic: %.2fx\n", c, v / rate["dlib deterministic"]
    }
  }' | tee "$results/summary.txt"
