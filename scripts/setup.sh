#!/usr/bin/env bash
# Installs what varnet needs from Debian: a compiler and CMake, Eigen, zlib, Catch2, Google
# Benchmark, clang with its sanitizer and libFuzzer runtimes (scripts/fuzz.sh), and the
# Fashion-MNIST data set. Idempotent: does nothing when everything is there.
set -euo pipefail

packages=(cmake g++ make libeigen3-dev zlib1g-dev catch2 libbenchmark-dev clang libclang-rt-dev
  dataset-fashion-mnist)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "setup: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
