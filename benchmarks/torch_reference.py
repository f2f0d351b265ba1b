#!/usr/bin/env python3
"""PyTorch eager references for the GPU benchmarks, timed on the same GPU (FP32, TF32 off).

1. benchmarks/gpu/bench_lrt.cu: the dense Gaussian variance layer

    y = bias + eps * sqrt((x * x) @ (sigma * sigma).T + e0),   eps ~ N(0, 1) per output

   at the same shapes (N x I x O = 128x800x500 and 4096x4096x4096), timed the same way: warm-up,
   then the median of CUDA-event timings. Also the matmul alone (the floor) and forward +
   backward through autograd ("results" in the JSON).
   The convolutional Gaussian variance layer at bench_lrt's convolution shapes (LeNet-5's conv1
   and conv2, a 64-channel 32x32 VGG convolution and the VGG's conv 11, batch 128):
   y = bias + eps * sqrt(conv2d(x * x, sigma * sigma) + e0), with the convolution of x^2 alone
   as cuDNN's floor ("conv_results").
   benchmarks/gpu/bench_conv.cu's deterministic 3x3 convolutions (VGG conv 2, 4, 6 and 9, batch
   128, padding 1, no bias) by cuDNN, forward and forward + backward ("conv3x3").
2. The LeNet-5 (Caffe variant) training step at batch 128: conv 20 5x5 - BN - ReLU - pool 2 -
   conv 50 5x5 - BN - ReLU - pool 2 - fc 500 - BN - ReLU - fc 10, no weight biases; a variance
   layer in place of a weight layer has only sigma (uniform in +-1/sqrt(fan_in)) and outputs
   eps * sqrt(conv_or_matmul(x * x, sigma * sigma) + e0) with fresh eps ~ N(0, 1) per output.
   Variants "plain" (no variance layer), "var1" (conv1) and "var1234" (all four). One step is
   Adam(lr 1e-3).zero_grad, forward, mean cross-entropy, backward, Adam step, on random images
   (torch.rand) and labels in [0, 10); the median per-step time after a warm-up
   ("lenet5_step").
3. Ensemble inference with the var1 network in eval mode (batch-norm running statistics) under
   torch.no_grad: 10 forward passes (fresh noise each) over 10,000 random images in batches of
   1000, softmax probabilities averaged; the median time of the whole ensemble
   ("lenet5_ensemble").
4. The VGG-like training step (models/vgg.hpp) at batch 128 on 3x32x32 random images, 10
   classes: 13 x (conv 3x3 pad 1 - BN - ReLU) of widths 64 64 P 128 128 P 256 256 256 P
   512 512 512 P 512 512 512 P (P = max pool 2) - fc 512 - BN - ReLU - fc 10, no weight biases;
   weight layers 1-15 are conv1-conv13, fc1, fc2. Variants "plain" and "var" (layers 11-14
   variance layers, as in LeNet-5, padding 1); Adam(lr 1e-3, betas (0.95, 0.999)); the median
   of 50 steps after 10 warm-up steps ("vgg_step", with "width" and "batch" of each entry).

Prints the JSON and then a short table; writes the JSON to argv[1] if given. Exits 0 with a
message when torch is not installed. Without a GPU it runs on the CPU, kept short: the small
dense shape and LeNet-5's conv1 only, few LeNet-5 steps, a 1,000-image ensemble and the VGG step at 1/8 width
(widths 8 8 P 16 16 P 32 32 32 P 64 64 64 P 64 64 64 P, fc 64) and batch 32, 1 warm-up and 3
timed steps (the "device" key says "cpu"; "width" 0.125 and "batch" 32 in "vgg_step").
"""
import json
import math
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
    if cuda:  # strict FP32 matmuls and convolutions (no TF32)
        if hasattr(torch.backends, "fp32_precision"):  # PyTorch >= 2.9; allow_tf32 deprecated
            torch.backends.cuda.matmul.fp32_precision = "ieee"
            torch.backends.cudnn.conv.fp32_precision = "ieee"
        else:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        # cuDNN picks its fastest convolution algorithms for these fixed shapes during the
        # warm-up: the strongest eager baseline.
        torch.backends.cudnn.benchmark = True
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

    results = dense_benchmarks(torch, device, cuda, median_ms, e0)
    conv_results = conv_benchmarks(torch, device, cuda, median_ms, e0)
    conv3x3 = conv3x3_benchmarks(torch, device, cuda, median_ms)
    lenet_steps, ensemble = lenet5_benchmarks(torch, device, cuda, median_ms, e0)
    vgg_steps = vgg_benchmarks(torch, device, cuda, median_ms, e0)

    out = {
        "benchmark": "torch_reference",
        "torch": torch.__version__,
        "torch_version": torch.__version__,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cuda": torch.version.cuda,
        "precision": "fp32 (no TF32)",
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "method": ("median of CUDA-event timings" if cuda else "median of wall-clock timings")
        + " after warm-up",
        "results": results,
        "conv_results": conv_results,
        "conv3x3": conv3x3,
        "lenet5_step": lenet_steps,
        "lenet5_ensemble": ensemble,
        "vgg_step": vgg_steps,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text + "\n")

    print(f"\nPyTorch {torch.__version__} eager fp32 on {out['device']}:")
    for r in conv_results:
        print(f"  conv variance layer {r['name']:20s} batch {r['n']}: forward "
              f"{r['median_ms']['torch_fwd']:8.3f} ms, forward+backward "
              f"{r['median_ms']['torch_fwd_bwd']:8.3f} ms, convolution alone "
              f"{r['median_ms']['conv_fwd']:8.3f} ms")
    for r in conv3x3:
        print(f"  conv2d {r['shape']:22s} batch {r['batch']}: forward {r['fwd_ms']:8.3f} ms, "
              f"forward+backward {r['step_ms']:8.3f} ms")
    for r in lenet_steps:
        print(f"  LeNet-5 step {r['variant']:8s} batch {r['batch']}: {r['ms']:8.3f} ms "
              f"{r['img_per_s']:10.0f} img/s")
    print(f"  LeNet-5 var1 ensemble {ensemble['samples']} x {ensemble['images']} images "
          f"(batch {ensemble['batch']}): {ensemble['ms']:8.3f} ms {ensemble['img_per_s']:10.0f} "
          "img/s")
    for r in vgg_steps:
        print(f"  VGG step {r['variant']:5s} width {r['width']:g} batch {r['batch']}: "
              f"{r['ms']:8.3f} ms {r['img_per_s']:10.0f} img/s")
    ok = (all(r["check"]["ok"] for r in results + conv_results)
          and all(r["loss_finite"] for r in lenet_steps) and ensemble["check"]["ok"]
          and all(r["loss_finite"] for r in vgg_steps))
    return 0 if ok else 1


def time_variance_layer(torch, op, floor_name, x, sigma, bias, g, e0, median_ms, warmup, repeats):
    """A Gaussian variance layer y = bias + eps * sqrt(op(x * x, sigma * sigma) + e0), eps ~ N(0, 1)
    per output (op: a matmul or a convolution; bias broadcast over the output's channel dim 1).
    Checks first that the standardised noise looks N(0, 1), then times op alone on constant
    squares (floor_name), the forward without autograd ("torch_fwd") and forward + backward of
    g through autograd ("torch_fwd_bwd"). Returns the medians and the check."""
    x2_const = (x * x).detach()
    s2_const = (sigma * sigma).detach()
    b = bias.view(1, -1, *([1] * (x.dim() - 2)))

    def floor():
        with torch.no_grad():
            return op(x2_const, s2_const)

    def forward():
        v = op(x * x, sigma * sigma)
        return b + torch.randn_like(v) * torch.sqrt(v + e0)

    def fwd_nograd():
        with torch.no_grad():
            return forward()

    def fwd_bwd():
        x.grad = sigma.grad = bias.grad = None
        forward().backward(g)

    with torch.no_grad():
        z = (forward() - b) / torch.sqrt(floor() + e0)
        mean, var = z.mean().item(), z.var().item()
    check = {"noise_mean": mean, "noise_var": var,
             "ok": abs(mean) < 0.02 and abs(var - 1) < 0.03}
    ms = {
        floor_name: median_ms(floor, warmup, repeats),
        "torch_fwd": median_ms(fwd_nograd, warmup, repeats),
        "torch_fwd_bwd": median_ms(fwd_bwd, warmup, repeats),
    }
    return ms, check


def dense_benchmarks(torch, device, cuda, median_ms, e0):
    """The dense Gaussian variance layer at bench_lrt's shapes: the matmul alone, the layer's
    forward (no autograd) and forward + backward ("results" in the JSON)."""
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
        warmup = 5 if cuda else 2
        ms, check = time_variance_layer(torch, lambda a, s2: a @ s2.T, "gemm_fwd", x, sigma, bias,
                                        g, e0, median_ms, warmup, repeats)
        results.append({
            "n": n, "in": i, "out": o, "repeats": repeats, "median_ms": ms, "check": check,
            "ratios": {"torch_fwd/gemm": ms["torch_fwd"] / ms["gemm_fwd"]},
        })
    return results


def conv_benchmarks(torch, device, cuda, median_ms, e0):
    """The convolutional Gaussian variance layer at bench_lrt's convolution shapes (same names):
    y = bias + eps * sqrt(conv2d(x * x, sigma * sigma) + e0). The convolution of x^2 alone is
    cuDNN's floor ("conv_fwd"); forward without autograd and forward + backward through autograd
    ("conv_results" in the JSON). On the CPU only LeNet-5's conv1, with few repeats."""
    import torch.nn.functional as F

    # name, batch, channels, side, filters, kernel, padding, repeats (as in bench_lrt.cu)
    shapes = [("lenet conv1", 128, 1, 28, 20, 5, 0, 200),
              ("lenet conv2", 128, 20, 12, 50, 5, 0, 200),
              ("vgg 64->64 32x32", 128, 64, 32, 64, 3, 1, 50),
              ("vgg conv11 512 2x2", 128, 512, 2, 512, 3, 1, 200)]
    if not cuda:
        shapes = [("lenet conv1", 128, 1, 28, 20, 5, 0, 5)]
    results = []
    for name, n, c, side, o, k, pad, repeats in shapes:
        bound = 1.0 / math.sqrt(c * k * k)
        x = (torch.rand(n, c, side, side, device=device) * 2 - 1).requires_grad_(True)
        sigma = ((torch.rand(o, c, k, k, device=device) * 2 - 1) * bound).requires_grad_(True)
        bias = ((torch.rand(o, device=device) * 2 - 1) * bound).requires_grad_(True)
        out_side = side + 2 * pad - k + 1
        g = torch.rand(n, o, out_side, out_side, device=device) * 2 - 1
        warmup = 5 if cuda else 1
        ms, check = time_variance_layer(
            torch, lambda a, s2: F.conv2d(a, s2, padding=pad), "conv_fwd", x, sigma, bias, g, e0,
            median_ms, warmup, repeats)
        results.append({
            "name": name, "n": n, "c": c, "side": side, "out": o, "kernel": k, "pad": pad,
            "repeats": repeats, "median_ms": ms, "check": check,
            "ratios": {"torch_fwd/conv_fwd": ms["torch_fwd"] / ms["conv_fwd"]},
        })
    return results


def conv3x3_benchmarks(torch, device, cuda, median_ms):
    """The deterministic 3x3 convolutions of benchmarks/gpu/bench_conv.cu (same shape names,
    batch 128, padding 1, no bias) by cuDNN: forward without autograd, and forward + backward
    (input and weight gradients) through autograd ("conv3x3" in the JSON). On the CPU only the
    first shape at batch 8, with few repeats."""
    import torch.nn.functional as F

    shapes = [("conv2 64->64 32x32", 64, 64, 32), ("conv4 128->128 16x16", 128, 128, 16),
              ("conv6 256->256 8x8", 256, 256, 8), ("conv9 512->512 4x4", 512, 512, 4)]
    batch, repeats, warmup = (128, 30, 3) if cuda else (8, 3, 1)
    if not cuda:
        shapes = shapes[:1]
    results = []
    for name, c, o, side in shapes:
        x = (torch.rand(batch, c, side, side, device=device) * 2 - 1).requires_grad_(True)
        w = ((torch.rand(o, c, 3, 3, device=device) * 2 - 1) * 0.05).requires_grad_(True)
        g = torch.rand(batch, o, side, side, device=device) * 2 - 1

        def fwd():
            with torch.no_grad():
                return F.conv2d(x, w, padding=1)

        def step():
            x.grad = w.grad = None
            F.conv2d(x, w, padding=1).backward(g)

        results.append({"shape": name, "batch": batch, "repeats": repeats,
                        "fwd_ms": median_ms(fwd, warmup, repeats),
                        "step_ms": median_ms(step, warmup, repeats)})
    return results


def weight_layer_factory(torch, e0):
    """Returns weight_layer(shape, conv, variance, padding=0): a bias-free weight layer of
    weight shape `shape` ((out, in, k, k) for a stride-1 convolution with `padding`, else
    (out, in) for a dense layer), a Gaussian variance layer when `variance`."""
    import torch.nn as nn
    import torch.nn.functional as F

    class Variance(nn.Module):
        """A Gaussian variance layer: zero-mean weights of learned std sigma, output by the
        local reparameterization trick, eps * sqrt(op(x * x, sigma * sigma) + e0)."""

        def __init__(self, shape, conv, padding=0):
            super().__init__()
            bound = 1.0 / math.sqrt(math.prod(shape[1:]))  # fan_in = all but the output dim
            self.sigma = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
            self.conv = conv
            self.padding = padding

        def forward(self, x):
            s2 = self.sigma * self.sigma
            v = (F.conv2d(x * x, s2, padding=self.padding) if self.conv
                 else F.linear(x * x, s2))
            return torch.randn_like(v) * torch.sqrt(v + e0)

    def weight_layer(shape, conv, variance, padding=0):
        if variance:
            return Variance(shape, conv, padding)
        if conv:  # stride 1; default (Kaiming-uniform) init
            return nn.Conv2d(shape[1], shape[0], shape[2], padding=padding, bias=False)
        return nn.Linear(shape[1], shape[0], bias=False)

    return weight_layer


def time_training_step(torch, net, opt, x, y, median_ms, warmup, repeats):
    """Median ms of one Adam step (zero_grad, forward, cross-entropy, backward, step) of `net` on
    the batch (x, y), and whether the last loss was finite (checked after timing, so that no step
    waits for the host)."""
    F = torch.nn.functional
    last = []

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        last[:] = [loss.detach()]

    ms = median_ms(step, warmup, repeats)
    return ms, bool(torch.isfinite(last[0]).item())


def lenet5_benchmarks(torch, device, cuda, median_ms, e0):
    """Times the LeNet-5 training step per variant and the var1 ensemble inference.

    Returns the "lenet5_step" list and the "lenet5_ensemble" dictionary of the JSON.
    """
    import torch.nn as nn
    import torch.nn.functional as F

    weight_layer = weight_layer_factory(torch, e0)

    class LeNet5(nn.Module):
        """LeNet-5 (Caffe variant) on 1x28x28 inputs; `var_layers` numbers the weight layers
        1-4 (conv1, conv2, fc1, fc2) that are variance layers."""

        def __init__(self, var_layers):
            super().__init__()
            shapes = [((20, 1, 5, 5), True), ((50, 20, 5, 5), True), ((500, 800), False),
                      ((10, 500), False)]
            self.c1, self.c2, self.f1, self.f2 = [
                weight_layer(shape, conv, i + 1 in var_layers)
                for i, (shape, conv) in enumerate(shapes)]
            self.b1, self.b2, self.b3 = nn.BatchNorm2d(20), nn.BatchNorm2d(50), nn.BatchNorm1d(500)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)
            x = F.max_pool2d(F.relu(self.b2(self.c2(x))), 2).flatten(1)
            return self.f2(F.relu(self.b3(self.f1(x))))

    # Training steps: random images in [0, 1) and labels in [0, 10), resident on the device.
    batch = 128
    warmup, repeats = (20, 100) if cuda else (3, 10)
    x = torch.rand(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    variants = {"plain": (), "var1": (1,), "var1234": (1, 2, 3, 4)}
    steps, nets = [], {}
    for name, var_layers in variants.items():
        net = LeNet5(var_layers).to(device).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        ms, finite = time_training_step(torch, net, opt, x, y, median_ms, warmup, repeats)
        steps.append({
            "variant": name, "var_layers": list(var_layers), "batch": batch,
            "warmup": warmup, "repeats": repeats, "ms": ms, "img_per_s": batch / ms * 1e3,
            "loss_finite": finite,
        })
        nets[name] = net

    # Ensemble inference: the (briefly trained) var1 network, batch norm on running statistics,
    # one pass over all images per sample, each with fresh noise; probabilities averaged.
    samples, eval_batch = 10, 1000
    images = 10000 if cuda else 1000
    warmup, repeats = (1, 5) if cuda else (1, 3)
    net = nets["var1"].eval()
    images_x = torch.rand(images, 1, 28, 28, device=device)
    probs = torch.empty(images, 10, device=device)

    def ensemble():
        with torch.no_grad():
            probs.zero_()
            for _ in range(samples):
                for lo in range(0, images, eval_batch):
                    probs[lo:lo + eval_batch] += F.softmax(net(images_x[lo:lo + eval_batch]), dim=1)
            probs.div_(samples)

    ms = median_ms(ensemble, warmup, repeats)
    row_sum_err = (probs.sum(dim=1) - 1).abs().max().item()
    ok = bool(torch.isfinite(probs).all().item()) and row_sum_err < 1e-4
    return steps, {
        "variant": "var1", "samples": samples, "images": images, "batch": eval_batch,
        "warmup": warmup, "repeats": repeats, "ms": ms,
        "img_per_s": images / ms * 1e3,  # images classified (each by all samples) per second
        "check": {"prob_row_sum_max_err": row_sum_err, "ok": ok},
    }


def vgg_benchmarks(torch, device, cuda, median_ms, e0):
    """Times the VGG-like training step (models/vgg.hpp) per variant; returns the "vgg_step"
    list of the JSON. On the CPU the network is 1/8 as wide and the batch 32 (both recorded)."""
    import torch.nn as nn
    import torch.nn.functional as F

    weight_layer = weight_layer_factory(torch, e0)
    base = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512]  # conv1-13, fc1
    pooled = (2, 4, 7, 10, 13)  # a 2x2 max pool follows these convolutions

    class Vgg(nn.Module):
        """The VGG-like network on 3x32x32 inputs, widths times `width`; `var_layers` numbers
        the weight layers 1-15 (conv1-conv13, fc1, fc2) that are variance layers."""

        def __init__(self, width, var_layers):
            super().__init__()
            widths = [max(1, round(b * width)) for b in base]
            self.convs, self.bns = nn.ModuleList(), nn.ModuleList()
            c = 3
            for l in range(1, 14):
                out = widths[l - 1]
                self.convs.append(weight_layer((out, c, 3, 3), True, l in var_layers, padding=1))
                self.bns.append(nn.BatchNorm2d(out))
                c = out
            hidden = widths[13]
            self.f1 = weight_layer((hidden, c), False, 14 in var_layers)  # 1x1 after 5 pools
            self.b14 = nn.BatchNorm1d(hidden)
            self.f2 = weight_layer((10, hidden), False, 15 in var_layers)

        def forward(self, x):
            for l, (conv, bn) in enumerate(zip(self.convs, self.bns), start=1):
                x = F.relu(bn(conv(x)))
                if l in pooled:
                    x = F.max_pool2d(x, 2)
            return self.f2(F.relu(self.b14(self.f1(x.flatten(1)))))

    # Full size on the GPU; on the CPU 1/8 width at batch 32, a few steps (about 30 s on 2 cores).
    width, batch = (1.0, 128) if cuda else (0.125, 32)
    warmup, repeats = (10, 50) if cuda else (1, 3)
    x = torch.rand(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    variants = {"plain": (), "var": (11, 12, 13, 14)}
    steps = []
    for name, var_layers in variants.items():
        net = Vgg(width, var_layers).to(device).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.95, 0.999))
        ms, finite = time_training_step(torch, net, opt, x, y, median_ms, warmup, repeats)
        steps.append({
            "variant": name, "stochastic_layers": list(var_layers), "width": width,
            "batch": batch, "warmup": warmup, "repeats": repeats, "ms": ms,
            "img_per_s": batch / ms * 1e3, "loss_finite": finite,
        })
        del net, opt  # free the device memory before the next variant
    return steps


if __name__ == "__main__":
    sys.exit(main())
