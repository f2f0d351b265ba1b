#!/usr/bin/env python3
"""PyTorch on the CPU, the speed peer of bench_layers' LeNet-5 training step.

The recipe of examples/lenet5: LeNet-5 (conv 20 5x5 - BN - ReLU - pool - conv 50 5x5 - BN - ReLU -
pool - fc 500 - BN - ReLU - fc 10, no weight biases), Gaussian variance layers through the local
reparameterization trick (sigma2 = sigma^2), cross-entropy, Adam, batch 128, on 28x28 inputs in
[0, 1]. Times whole training steps (forward, backward, Adam) after a warm-up and prints one line
per configuration:

    torch <config> <images/s> img/s  (<ms> ms/step, <threads> threads)

configs: "deterministic", "var1" (variance layer 1, the example's default), "var123".
Usage: torch_lenet_cpu.py [--threads N] [--seconds S] [--configs a,b]. Exits 0 with a message
when torch is not installed.
"""
import argparse
import math
import os
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seconds", type=float, default=5.0, help="timed seconds per configuration")
    ap.add_argument("--configs", default="deterministic,var1,var123")
    ap.add_argument("--batch", type=int, default=128)
    a = ap.parse_args()
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except ImportError:
        print("torch is not installed (Debian: python3-torch): skipping the PyTorch peer")
        return 0
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    class Variance(nn.Module):
        """Zero-mean weights of learned variance sigma^2; output by the LRT."""

        def __init__(self, shape, conv):
            super().__init__()
            bound = 1 / math.sqrt(math.prod(shape[1:]))
            self.sigma = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
            self.conv = conv

        def forward(self, x):
            s2 = self.sigma * self.sigma
            v = F.conv2d(x * x, s2) if self.conv else F.linear(x * x, s2)
            return torch.sqrt(v + 1e-8) * torch.randn_like(v)

    def layer(shape, conv, variance):
        if variance:
            return Variance(shape, conv)
        return nn.Conv2d(shape[1], shape[0], 5, bias=False) if conv else nn.Linear(
            shape[1], shape[0], bias=False)

    class LeNet5(nn.Module):
        def __init__(self, var_layers):
            super().__init__()
            shapes = [((20, 1, 5, 5), True), ((50, 20, 5, 5), True), ((500, 800), False),
                      ((10, 500), False)]
            self.c1, self.c2, self.f1, self.f2 = [
                layer(s, c, i + 1 in var_layers) for i, (s, c) in enumerate(shapes)]
            self.b1, self.b2, self.b3 = nn.BatchNorm2d(20), nn.BatchNorm2d(50), nn.BatchNorm1d(500)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)
            x = F.max_pool2d(F.relu(self.b2(self.c2(x))), 2).flatten(1)
            return self.f2(F.relu(self.b3(self.f1(x))))

    configs = {"deterministic": (), "var1": (1,), "var123": (1, 2, 3)}
    x = torch.rand(a.batch, 1, 28, 28)
    y = torch.arange(a.batch) % 10
    for name in a.configs.split(","):
        if name not in configs:
            print(f"unknown config '{name}': expected one of {', '.join(configs)}", file=sys.stderr)
            return 2
        net = LeNet5(configs[name])
        opt = torch.optim.Adam(net.parameters(), 1e-3)

        def step():
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        for _ in range(5):
            step()
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < a.seconds:
            step()
            steps += 1
        sec = (time.perf_counter() - start) / steps
        print(f"torch {name} {a.batch / sec:.0f} img/s  ({sec * 1e3:.2f} ms/step, "
              f"{a.threads} threads)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
