#!/usr/bin/env python3
"""PyTorch twin of `bench/darts_step.lua --workload darts_frozen`.

The network, data and optimizers of ../shared/bench/torch_darts_step.py
(imported from there); the step differentiates, as recipes/darts.lua does,
the architecture parameters only in the alpha step and the weights only in
the weight step (requires_grad_(False) on the other set), so PyTorch skips
the same gradients nasrt skips. The updates equal those of the shared step.
Prints: darts_frozen_step_ms, steps/s and peak RSS.
"""
import argparse, os, sys, time, resource
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'bench'))
import torch, torch.nn as nn, torch.nn.functional as F
from torch_darts_step import Network


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--batch', type=int, default=64); ap.add_argument('--steps', type=int, default=5)
    ap.add_argument('--warmup', type=int, default=1); ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--layers', type=int, default=8); ap.add_argument('--C', type=int, default=16)
    a = ap.parse_args()
    torch.set_num_threads(a.threads); torch.manual_seed(0)
    net = Network(C=a.C, layers=a.layers)
    W, A = net.weights(), [net.a_n, net.a_r]
    wopt = torch.optim.SGD(W, lr=0.025, momentum=0.9, weight_decay=3e-4)
    aopt = torch.optim.Adam(A, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    xt = torch.randn(a.batch, 1, 28, 28); yt = torch.randint(0, 10, (a.batch,))
    xv = torch.randn(a.batch, 1, 28, 28); yv = torch.randint(0, 10, (a.batch,))

    def frozen(params, fn):
        for p in params: p.requires_grad_(False)
        try: fn()
        finally:
            for p in params: p.requires_grad_(True)

    def step():
        aopt.zero_grad(); frozen(W, lambda: F.cross_entropy(net(xv), yv).backward()); aopt.step()
        wopt.zero_grad(); frozen(A, lambda: F.cross_entropy(net(xt), yt).backward())
        nn.utils.clip_grad_norm_(W, 5.); wopt.step()
    for _ in range(a.warmup): step()
    t = time.perf_counter()
    for _ in range(a.steps): step()
    dt = (time.perf_counter() - t) / a.steps
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch {torch.__version__} threads={a.threads} batch={a.batch} layers={a.layers} C={a.C}")
    print(f"darts_frozen_step_ms {dt*1e3:.1f}  steps_per_s {1/dt:.3f}  peak_rss_mb {rss:.0f}")


if __name__ == '__main__':
    main()
