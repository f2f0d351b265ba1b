#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ with clang (AddressSanitizer + UndefinedBehaviorSanitizer)
# and runs each for a bounded time on its seed corpus (fuzz/corpus/<target>) and its kept
# findings (fuzz/regressions/<target>). A finding stops the script with a non-zero exit; its input
# is left as build-fuzz/crash-<target>-* (copy it to fuzz/regressions/<target>/ once fixed).
#   ./scripts/fuzz.sh                       # every target, 30 s each
#   FUZZ_SECONDS=300 ./scripts/fuzz.sh idx  # one target, longer
# Environment: FUZZ_SECONDS (default 30), FUZZ_BUILD_DIR (default build-fuzz), CLANGXX (default
# clang++, else clang++-14).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-30}
out=${FUZZ_BUILD_DIR:-build-fuzz}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(idx cifar safetensors checkpoint)
cxx=${CLANGXX:-}
if [ -z "$cxx" ]; then
  for c in clang++ clang++-14; do command -v "$c" > /dev/null && { cxx=$c; break; }; done
fi
[ -n "$cxx" ] || { echo "fuzz: no clang++ (Debian: apt-get install clang)" >&2; exit 1; }
eigen=/usr/include/eigen3
mkdir -p "$out"
flags=(-std=c++17 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
  -fno-sanitize-recover=all -Iinclude -isystem "$eigen")
for t in "${targets[@]}"; do
  [ -f "fuzz/fuzz_$t.cpp" ] || { echo "fuzz: no target fuzz/fuzz_$t.cpp" >&2; exit 1; }
  bin="$out/fuzz_$t"
  # Rebuilt when the target or any header is newer than the binary.
  if [ ! -x "$bin" ] || [ -n "$(find fuzz include -newer "$bin" -name '*.[ch]pp' -print -quit)" ]; then
    echo "fuzz: building $bin"
    "$cxx" "${flags[@]}" "fuzz/fuzz_$t.cpp" -o "$bin" -lz
  fi
  # New inputs go to the working corpus under $out; the committed seeds stay as they are.
  mkdir -p "$out/corpus/$t" "fuzz/regressions/$t"
  echo "fuzz: $t for ${seconds} s"
  # -malloc_limit_mb: any single allocation above it is a finding (no unbounded allocation);
  # -timeout: an input taking longer is a finding (no hang).
  "$bin" "$out/corpus/$t" "fuzz/corpus/$t" "fuzz/regressions/$t" -max_total_time="$seconds" \
    -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 -max_len=8192 \
    -artifact_prefix="$out/crash-$t-" -print_final_stats=1 2> "$out/fuzz_$t.log" || {
    tail -60 "$out/fuzz_$t.log"
    echo "fuzz: $t found a problem; input(s): $(ls "$out"/crash-"$t"-* 2>/dev/null | tr '\n' ' ')" >&2
    exit 1
  }
  grep -E "stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb" \
    "$out/fuzz_$t.log" | sed "s/^/fuzz: $t /"
done
