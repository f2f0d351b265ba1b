#!/usr/bin/env python3
"""Side-by-side ratios of the GPU benchmarks of one scripts/gpu-check.sh run:

    gpu_ratios.py bench_lrt.json bench_step.json torch_reference.json [bench_conv.json]

bench_lrt.json, bench_step.json and bench_conv.json come from benchmarks/gpu/,
torch_reference.json from benchmarks/torch_reference.py on the same GPU in the same call. Prints
each ratio beside the GPU issues' target where they name one (the convolutions alone: the ratio
only); a missing file or entry is reported and skipped. Exits 0 (ratios are measured, not
asserted).
"""
import json
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"  (no {path}: {e})")
        return None


def row(label, ratio, target=None, better="higher"):
    """One ratio; with a target, whether it is met (no target: the ratio alone)."""
    if ratio is None:
        print(f"  {label:<58} n/a")
        return
    if target is None:
        print(f"  {label:<58} {ratio:7.2f}x")
        return
    met = ratio >= target if better == "higher" else ratio <= target
    sign = ">=" if better == "higher" else "<="
    print(f"  {label:<58} {ratio:7.2f}x  (target {sign} {target}x: {'met' if met else 'NOT met'})")


def main() -> int:
    if len(sys.argv) not in (4, 5):
        print(__doc__)
        return 2
    lrt, step, torch = (load(p) for p in sys.argv[1:4])
    conv = load(sys.argv[4]) if len(sys.argv) == 5 else None
    print(f"GPU ratios ({(lrt or step or torch or {}).get('device', 'device unknown')})")

    if lrt and torch:
        by_shape = {(r["n"], r["in"], r["out"]): r for r in torch.get("results", [])}
        for r in lrt.get("results", []):
            shape = (r["n"], r["in"], r["out"])
            t = by_shape.get(shape)
            name = "x".join(map(str, shape))
            ms = r["median_ms"]
            if shape == (4096, 4096, 4096):
                row(f"dense {name} forward: varnet fused / its GEMM alone",
                    ms["fused_fwd"] / ms["gemm_fwd"], 1.05, better="lower")
            if t:
                row(f"dense {name} forward: PyTorch eager / varnet",
                    t["median_ms"]["torch_fwd"] / ms["fused_fwd"], 5 if shape[0] == 128 else 1)
                row(f"dense {name} forward+backward: PyTorch eager / varnet",
                    t["median_ms"]["torch_fwd_bwd"] / ms["fused_fwd_bwd"], 1)

    if lrt:  # convolutional variance layers: no target in the issue; side by side
        theirs_conv = {(r["name"], r["n"]): r for r in (torch or {}).get("conv_results", [])}
        for r in lrt.get("conv_results", []):
            ms = r["median_ms"]
            row(f"conv {r['name']} forward: varnet fused / its GEMM alone",
                ms["fused_fwd"] / ms["gemm_fwd"])
            row(f"conv {r['name']} forward: unfused / fused", ms["unfused_fwd"] / ms["fused_fwd"])
            t = theirs_conv.get((r["name"], r["n"]))
            if t:
                row(f"conv {r['name']} forward: PyTorch eager / varnet",
                    t["median_ms"]["torch_fwd"] / ms["fused_fwd"])
                row(f"conv {r['name']} forward+backward: PyTorch eager / varnet",
                    t["median_ms"]["torch_fwd_bwd"] / ms["fused_fwd_bwd"])

    if step and torch:
        theirs = {r["variant"]: r["ms"] for r in torch.get("lenet5_step", [])}
        for r in step.get("lenet5_step", []):
            if r["variant"] in theirs:
                launch = "graph" if r["graph"] else "eager"
                target = 1 if r["variant"] == "plain" else 5
                row(f"LeNet-5 step {r['variant']} ({launch}): PyTorch / varnet",
                    theirs[r["variant"]] / r["ms"], target)
        theirs_vgg = {r["variant"]: r for r in torch.get("vgg_step", [])}
        for r in step.get("vgg_step", []):
            t = theirs_vgg.get(r["variant"])
            if t and t.get("width") == r["width"] and t.get("batch") == r["batch"]:
                launch = "graph" if r["graph"] else "eager"
                row(f"VGG step {r['variant']} ({launch}): PyTorch / varnet", t["ms"] / r["ms"],
                    1.3 if r["variant"] == "var" else 1)
        te, ve = torch.get("lenet5_ensemble"), step.get("lenet5_ensemble")
        if te and ve and te.get("images") == ve.get("images"):
            row("10-sample ensemble, 10,000 images: PyTorch / varnet", te["ms"] / ve["ms"], 1)

    if conv and torch:  # deterministic 3x3 convolutions: varnet's two algorithms against cuDNN
        theirs_3x3 = {r["shape"]: r for r in torch.get("conv3x3", [])}
        for r in conv.get("conv", []):
            t = theirs_3x3.get(r["shape"])
            if t and t.get("batch") == conv.get("batch"):
                for algo in ("winograd", "im2col"):
                    row(f"conv {r['shape']} fwd+bwd: cuDNN / varnet {algo}",
                        t["step_ms"] / r[f"{algo}_step_ms"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
