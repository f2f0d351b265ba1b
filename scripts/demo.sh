#!/usr/bin/env bash
# Set-up, build, then train and evaluate a variance LeNet-5 on Fashion-MNIST (5 epochs, a Gaussian
# variance layer first). Extra arguments go to the lenet5 example, e.g.
#   ./scripts/demo.sh --epochs 2 --var-layers 1,2,3
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
build=${BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)" --target lenet5
# lenet5 reads /usr/share/datasets/fashion-mnist (dataset-fashion-mnist) unless --data says otherwise.
exec "$build/examples/lenet5" "$@"
