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
# Debian's python3-torch lives in /usr/bin/python3, which may not be the first python3 on PATH.
py=""
for candidate in ${PYTHON:-} python3 /usr/bin/python3; do
  if "$candidate" -c "import torch, numpy" 2>/dev/null; then py=$candidate; break; fi
done
[ -n "$py" ] || { echo "fidelity: no python3 with torch and numpy (install python3-torch)" >&2; exit 1; }
echo "varnet:"
"$build/examples/lenet5" "$@" | tail -n 1
echo "torch twin:"
"$py" "$twin" "$@" --threads "$(nproc)"
