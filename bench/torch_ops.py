#!/usr/bin/env python3
"""bench/torch_ops.py -- conv2d micro-benchmark: PyTorch side.

The PyTorch twin of bench/ops.lua (same shapes, names, flags and output):
times torch.nn.functional.conv2d forward, and forward+backward (gradients
with respect to the input and the weight, no bias), at batch 64 on the CPU.
Run with Debian's interpreter: /usr/bin/python3 bench/torch_ops.py [flags]

  --threads N   torch.set_num_threads(N) (default 2)
  --reps R      max timed repetitions per measurement (default 20); fewer
                (but at least 3) are run when R reps would exceed --budget
  --warmup W    untimed forward+backward passes first (default 2), and
  --warmup_s S  at least S seconds of them (default 0.2), as in ops.lua
  --budget S    seconds per measurement that cap the reps (default 1.0)
  --filter F    only shapes whose name contains one of the comma-separated
                substrings of F
  --json        print one JSON document instead of the text lines
  --list        print the shape names and exit
  --default_malloc  leave glibc malloc's thresholds alone; by default they are
                raised (mallopt) so freed buffers stay in the process as they
                do in nasrt's allocator, and the figures measure the conv, not
                page faults on fresh output/grad buffers (see steady_malloc)

Output (one line per shape, `name value` pairs as in DESIGN.md section 6):
  op conv3x3_c32_28 fwd_ms 1.23 fwdbwd_ms 3.40 gflops 55.1 fwd_gflops 60.2 gflop 0.116 reps 10 threads 2
fwd_ms / fwdbwd_ms are medians (time.perf_counter); gflop is the forward
count 2*N*Co*Ho*Wo*(Ci/groups)*kh*kw / 1e9; gflops the forward+backward rate
(3 * gflop per fwdbwd time); fwd_gflops the forward-only rate.  Forward is
timed with autograd recording (as in training).
"""
import argparse, ctypes, json, sys, time
import torch
import torch.nn.functional as F

N = 64


def make_shapes():
    """Keep in step with the shape list in bench/ops.lua (same names, order)."""
    out = []
    def add(name, ci, co, hw, k, s, p, d, g):
        out.append(dict(name=name, ci=ci, co=co, hw=hw, k=k, stride=s, padding=p, dilation=d, groups=g))
    for k in (1, 3):
        for c in (16, 32, 64):
            for hw in (28, 14):
                add(f"conv{k}x{k}_c{c}_{hw}", c, c, hw, k, 1, (k - 1) // 2, 1, 1)
    for k in (3, 5):
        for c in (16, 32, 64):
            for hw in (28, 14):
                add(f"dw{k}x{k}_c{c}_{hw}", c, c, hw, k, 1, (k - 1) // 2, 1, c)
    for k in (3, 5):
        for c in (16, 32, 64):
            for hw in (28, 14):
                add(f"dil{k}x{k}_c{c}_{hw}", c, c, hw, k, 1, k - 1, 2, c)
    add("conv1x1_s2_c16_28", 16, 16, 28, 1, 2, 0, 1, 1)
    add("conv3x3_s2_c32_28", 32, 32, 28, 3, 2, 1, 1, 1)
    add("dw3x3_s2_c16_28", 16, 16, 28, 3, 2, 1, 1, 16)
    add("dw5x5_s2_c32_28", 32, 32, 28, 5, 2, 2, 1, 32)
    add("dw3x3_s2_c64_14", 64, 64, 14, 3, 2, 1, 1, 64)
    add("dil3x3_s2_c16_28", 16, 16, 28, 3, 2, 2, 2, 16)
    add("dil5x5_s2_c32_28", 32, 32, 28, 5, 2, 4, 2, 32)
    return out


def steady_malloc():
    """Keep freed tensor buffers in the process, as nasrt's allocator does.

    PyTorch's CPU tensors come straight from glibc malloc, which by default
    hands big freed blocks back to the kernel (mmap threshold / heap trim), so
    each rep would page-fault its output and grad buffers afresh: several ms
    at batch 64 (conv1x1_c64_28 forward 15 ms instead of 3).  That measures the
    allocator, not the conv; --default_malloc keeps glibc's behaviour."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        ok = libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
        return bool(ok)
    except OSError:
        return False


def bench_shape(s, opt):
    ho = (s["hw"] + 2 * s["padding"] - s["dilation"] * (s["k"] - 1) - 1) // s["stride"] + 1
    flops = 2.0 * N * s["co"] * ho * ho * (s["ci"] // s["groups"]) * s["k"] * s["k"]
    x = torch.randn(N, s["ci"], s["hw"], s["hw"], requires_grad=True)
    w = torch.randn(s["co"], s["ci"] // s["groups"], s["k"], s["k"], requires_grad=True)
    gout = torch.randn(N, s["co"], ho, ho)
    kw = dict(stride=s["stride"], padding=s["padding"], dilation=s["dilation"], groups=s["groups"])

    def fwd():
        out = F.conv2d(x, w, None, **kw)
        del out

    def fwdbwd():
        out = F.conv2d(x, w, None, **kw)
        out.backward(gout)
        del out

    def reset():
        x.grad = None
        w.grad = None

    est, n, tw = 0.0, 0, time.perf_counter()
    while n < max(opt.warmup, 1) or time.perf_counter() - tw < opt.warmup_s:
        reset()
        t0 = time.perf_counter(); fwdbwd(); est = time.perf_counter() - t0
        n += 1

    def nreps(t):
        return max(3, min(opt.reps, int(opt.budget / max(t, 1e-6))))

    def measure(fn, n):
        ts = []
        for _ in range(n):
            reset()
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        ts.sort()
        m = len(ts)
        return ts[m // 2] if m % 2 else 0.5 * (ts[m // 2 - 1] + ts[m // 2])

    nfb = nreps(est)
    t_fb = measure(fwdbwd, nfb)
    nf = nreps(t_fb / 3)
    t_f = measure(fwd, nf)
    return dict(name=s["name"], fwd_ms=t_f * 1e3, fwdbwd_ms=t_fb * 1e3,
                gflops=3 * flops / t_fb / 1e9, fwd_gflops=flops / t_f / 1e9,
                gflop=flops / 1e9, reps=min(nf, nfb), threads=opt.threads)


def main():
    ap = argparse.ArgumentParser(description="conv2d micro-benchmark (PyTorch twin of bench/ops.lua)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--warmup_s", type=float, default=0.2)
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--filter", default=None)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--default_malloc", action="store_true",
                    help="leave glibc's malloc thresholds alone (freed buffers go back to the OS)")
    opt = ap.parse_args()
    if opt.threads < 1 or opt.reps < 1:
        ap.error("--threads and --reps want positive integers")

    pats = [p for p in (opt.filter or "").split(",") if p]
    shapes = [s for s in make_shapes() if not pats or any(p in s["name"] for p in pats)]
    if opt.list:
        for s in shapes:
            print(s["name"])
        return

    malloc = "default" if opt.default_malloc else ("steady" if steady_malloc() else "default(mallopt failed)")
    torch.set_num_threads(opt.threads)
    torch.manual_seed(0)
    print(f"# torch ops bench: torch {torch.__version__}, batch {N}, threads {torch.get_num_threads()}, "
          f"mkldnn {torch.backends.mkldnn.is_available()}, malloc {malloc}", file=sys.stderr)
    results = []
    for s in shapes:
        try:
            r = bench_shape(s, opt)
        except Exception as e:  # report and go on, like ops.lua
            r = dict(name=s["name"], error=" ".join(str(e).split()))
        results.append(r)
        if not opt.json:
            if "error" in r:
                print(f"op {r['name']} error {r['error']}")
            else:
                print(f"op {r['name']} fwd_ms {r['fwd_ms']:.3f} fwdbwd_ms {r['fwdbwd_ms']:.3f} "
                      f"gflops {r['gflops']:.1f} fwd_gflops {r['fwd_gflops']:.1f} gflop {r['gflop']:.4f} "
                      f"reps {r['reps']} threads {r['threads']}")
            sys.stdout.flush()
    if opt.json:
        for r in results:
            r.pop("threads", None)
        print(json.dumps(dict(impl="torch", batch=N, threads=opt.threads, malloc=malloc, results=results), indent=1))


if __name__ == "__main__":
    main()
