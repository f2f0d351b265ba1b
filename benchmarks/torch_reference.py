#!/usr/bin/env python3
"""PyTorch eager reference for benchmarks/gpu/bench_lrt.cu: the dense Gaussian variance layer

    y = bias + eps * sqrt((x * x) @ (sigma * sigma).T + e0),   eps ~ N(0, 1) per output

at the same shapes (N x I x O = 128x800x500 and 4096x4096x4096), timed the same way: warm-up,
then the median of CUDA-event timings (FP32 matmuls, TF32 off). Also the matmul alone (the
floor) and forward + backward through autograd. Prints JSON; writes it to argv[1] if given.
Exits 0 with a message when torch is not installed. Without a GPU it times the small shape on
the CPU only (the large one would take minutes).
"""
import json
import statistics
import sys
import time


def main() -> int:
    try:
        import torch
    except ImportError:
        print("torch is not installed: skipping the PyTorch reference")
        return 0

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    e0 = 1e-8

    def median_ms(fn, warmup, repeats):
        for _ in range(warmup):
            fn()
        times = []
        if cuda:
            torch.cuda.synchronize()
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            for _ in range(repeats):
                start.record()
                fn()
                stop.record()
                stop.synchronize()
                times.append(start.elapsed_time(stop))
        else:
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    shapes = [(128, 800, 500, 200), (4096, 4096, 4096, 50)]
    if not cuda:
        shapes = [(128, 800, 500, 20)]
    results = []
    for n, i, o, repeats in shapes:
        bound = 1.0 / i**0.5
        x = (torch.rand(n, i, device=device) * 2 - 1).requires_grad_(True)
        sigma = ((torch.rand(o, i, device=device) * 2 - 1) * bound).requires_grad_(True)
        bias = ((torch.rand(o, device=device) * 2 - 1) * bound).requires_grad_(True)
        g = torch.rand(n, o, device=device) * 2 - 1
        x2_const = (x * x).detach()
        s2_const = (sigma * sigma).detach()

        def gemm_fwd():
            with torch.no_grad():
                return x2_const @ s2_const.T

        def forward():
            v = (x * x) @ (sigma * sigma).T
            return bias + torch.randn_like(v) * torch.sqrt(v + e0)

        def fwd_nograd():
            with torch.no_grad():
                return forward()

        def fwd_bwd():
            x.grad = sigma.grad = bias.grad = None
            forward().backward(g)

        with torch.no_grad():  # correctness first: the standardised noise looks N(0, 1)
            v = x2_const @ s2_const.T
            z = (forward() - bias) / torch.sqrt(v + e0)
            mean, var = z.mean().item(), z.var().item()
        ok = abs(mean) < 0.02 and abs(var - 1) < 0.03
        warmup = 5 if cuda else 2
        ms = {
            "gemm_fwd": median_ms(gemm_fwd, warmup, repeats),
            "torch_fwd": median_ms(fwd_nograd, warmup, repeats),
            "torch_fwd_bwd": median_ms(fwd_bwd, warmup, repeats),
        }
        results.append({
            "n": n, "in": i, "out": o, "repeats": repeats, "median_ms": ms,
            "check": {"noise_mean": mean, "noise_var": var, "ok": ok},
            "ratios": {"torch_fwd/gemm": ms["torch_fwd"] / ms["gemm_fwd"]},
        })

    out = {
        "benchmark": "torch_reference",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cuda": torch.version.cuda,
        "precision": "fp32 (no TF32)",
        "method": ("median of CUDA-event timings" if cuda else "median of wall-clock timings")
        + " after warm-up",
        "results": results,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text + "\n")
    return 0 if all(r["check"]["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
