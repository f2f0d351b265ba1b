#!/usr/bin/env bash
# Trains the same LeNet-5 recipe with varnet's lenet5 example and with the PyTorch twin
# (TWIN, default ../shared/reference/torch_twin.py beside the checkout; needs python3-torch) and prints both JSON lines.
#   ./scripts/fidelity.sh --var-layers 1,2,3 --epochs 5
# Flags shared by both: --data --var-layers --dist --train-samples --epochs --batch --lr --seed.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
twin=${TWIN:-../shared/reference/torch_twin.py}
[ -f "$twin" ] || { echo "fidelity: no PyTorch twin at $twin (set TWIN)" >&2; exit 1; }
[ -x "$build/examples/lenet5" ] || { echo "fidelity: build lenet5 first (./scripts/demo.sh --help)" >&2; exit 1; }
python3 -c "import torch" 2>/dev/null || { echo "fidelity: python3-torch is not installed" >&2; exit 1; }
echo "varnet:"
"$build/examples/lenet5" "$@" | tail -n 1
echo "torch twin:"
python3 "$twin" "$@" --threads "$(nproc)"
