#!/usr/bin/env python3
"""PyTorch twin of bench/train_cnn.lua: training throughput (images/s) of the
examples/train_cnn.lua network (conv3x3-BN-ReLU-maxpool x2 at 32/64 channels,
dropout, linear 3136->128, ReLU, linear 128->10), SGD Nesterov momentum,
batch 128 of 1x28x28, on synthetic batches (the loader is not measured).
Prints: train_cnn_step_ms ... img_per_s ... peak_rss_mb ..."""
import argparse, resource, time
import torch, torch.nn as nn, torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=30)
p.add_argument("--warmup", type=int, default=5)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--batch", type=int, default=128)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
w = 32
net = nn.Sequential(
    nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Dropout(0.25), nn.Linear(2 * w * 49, 128), nn.ReLU(), nn.Linear(128, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
x = torch.randn(a.batch, 1, 28, 28)
y = torch.randint(0, 10, (a.batch,))
def step():
    loss = F.cross_entropy(net(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
for _ in range(a.warmup): step()
t0 = time.perf_counter()
for _ in range(a.steps): step()
dt = (time.perf_counter() - t0) / a.steps
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"train_cnn_step_ms {dt*1e3:.2f}  img_per_s {a.batch/dt:.0f}  peak_rss_mb {rss:.0f}")
