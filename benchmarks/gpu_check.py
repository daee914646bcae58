"""GPU check: gatecore's CUDA backend against the CPU engine and torch (cuDNN), then timings.

Run on a machine with an NVIDIA GPU (numba.cuda working, torch with CUDA)::

    python benchmarks/gpu_check.py            # correctness, then T=100, B in {1, 8, 64},
                                              # I=H in {256, 1024}, float32; table printed last
    python benchmarks/gpu_check.py --tiny     # smoke test on tiny shapes under the Numba CUDA
                                              # simulator (no GPU needed; torch on the CPU)

Correctness: LSTM and GRU (both conventions), two layers, bidirectional, variable lengths:
forward and backward on the device against the CPU engine (float64) and against
``torch.nn.LSTM`` / ``torch.nn.GRU`` (float32, PyTorch's GRU is reset-after), with x and the
parameters passed as torch CUDA tensors (zero-copy through ``__cuda_array_interface__``).

Timing: steady state (kernels compiled and workspace sized in a warm-up that is timed on
its own), ``cuda.synchronize()`` / ``torch.cuda.synchronize()`` inside each timed call.
"forward" is inference (gatecore ``training=False``, torch under ``no_grad``);
"fwd+bwd" is a training forward plus the full backward (all weight gradients).
The whole run is kept under about 5 minutes (a time budget stops the sweep early and says so).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

TINY = "--tiny" in sys.argv
if TINY:  # must happen before numba.cuda is imported
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    os.environ.setdefault("GATECORE_CUDA_TILE", "2")
    os.environ.setdefault("GATECORE_CUDA_THREADS", "8")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from numba import cuda  # noqa: E402

import gatecore  # noqa: E402

BUDGET_S = 270.0
T0 = time.perf_counter()


def host(a):
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host()
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def maxrel(a, b):
    a, b = host(a).astype(np.float64), host(b).astype(np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max(initial=0.0) / max(1.0, np.abs(b).max(initial=0.0)))


# ---------------------------------------------------------------------------- correctness
def check_vs_cpu(cell, opts, T, B, I, H, report):
    rng = np.random.default_rng(0)
    p = gatecore.init_params(cell, I, H, num_layers=2, bidirectional=True, dtype=np.float64,
                             seed=1, **opts)
    x = rng.standard_normal((T, B, I))
    lens = rng.integers(0, T + 1, size=B)
    lens[0] = T
    y, sn, tape = gatecore.forward(cell, x, p, lengths=lens, **opts)
    y, sn = y.copy(), [s.copy() for s in sn]
    dy = rng.standard_normal(y.shape)
    dx, d0, dp = gatecore.backward(tape, dy)
    dx, d0, dp = dx.copy(), [s.copy() for s in d0], {k: v.copy() for k, v in dp.items()}
    pd = gatecore.to_device(p)
    yd, snd, taped = gatecore.forward(cell, cuda.to_device(x), pd, lengths=lens, **opts)
    dxd, d0d, dpd = gatecore.backward(taped, cuda.to_device(dy))
    err = max([maxrel(yd, y), maxrel(dxd, dx)] + [maxrel(a, b) for a, b in zip(snd, sn)]
              + [maxrel(a, b) for a, b in zip(d0d, d0)] + [maxrel(dpd[k], dp[k]) for k in dp])
    ok = err < 1e-9
    report.append((f"{cell}{opts or ''} vs CPU engine (float64)", err, ok))


def check_vs_torch(cell, T, B, I, H, dev, report):
    torch.manual_seed(0)
    cls = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    m = cls(I, H, num_layers=2, bidirectional=True).to(dev)
    x = torch.randn(T, B, I, device=dev, requires_grad=True)
    y_t, _ = m(x)
    dy = torch.randn_like(y_t)
    y_t.backward(dy)
    params = {k: v.detach() for k, v in m.state_dict().items()}
    if dev.type == "cuda":  # zero-copy: torch CUDA tensors straight in
        xin, pin, dyin = x.detach(), params, dy
    else:
        xin = cuda.to_device(x.detach().numpy())
        pin = gatecore.to_device({k: v.numpy() for k, v in params.items()})
        dyin = cuda.to_device(dy.numpy())
    y, _, tape = gatecore.forward(cell, xin, pin)
    dx, _, dp = gatecore.backward(tape, dyin)
    grads = {k: v.grad for k, v in m.named_parameters()}
    err = max([maxrel(y, y_t), maxrel(dx, x.grad)] + [maxrel(dp[k], grads[k]) for k in grads])
    ok = err < 1e-4
    report.append((f"{cell} vs torch.nn.{cls.__name__} on {dev.type} (float32)", err, ok))


# ---------------------------------------------------------------------------------- timing
def timeit(fn, sync, min_reps=3, max_reps=20, target_s=0.4):
    if min_reps > 1:  # one more warm-up call (compilation was timed separately)
        fn()
        sync()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (len(times) < max_reps and time.perf_counter() - start < target_s):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def bench(cell, T, B, H, dev, reps):
    I = H
    torch.manual_seed(0)
    cls = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    m = cls(I, H).to(dev)
    x_t = torch.randn(T, B, I, device=dev)
    dy_t = torch.randn(T, B, H, device=dev)
    params = {k: v.detach().contiguous() for k, v in m.state_dict().items()}
    if dev.type == "cuda":
        xg, dyg, pg = x_t, dy_t, gatecore.to_device(params)
        tsync = torch.cuda.synchronize
    else:
        xg, dyg = cuda.to_device(x_t.numpy()), cuda.to_device(dy_t.numpy())
        pg = gatecore.to_device({k: v.numpy() for k, v in params.items()})
        tsync = lambda: None  # noqa: E731
    ws = gatecore.Workspace(max_seq_len=T, max_batch=B, device="cuda")

    def g_fwd():
        gatecore.forward(cell, xg, pg, workspace=ws, training=False)

    def g_fb():
        _, _, tape = gatecore.forward(cell, xg, pg, workspace=ws)
        gatecore.backward(tape, dyg)

    def t_fwd():
        with torch.no_grad():
            m(x_t)

    def t_fb():
        xx = x_t.requires_grad_(True)
        y, _ = m(xx)
        y.backward(dy_t)

    kw = dict(min_reps=reps, max_reps=max(reps, 20)) if reps > 1 else dict(min_reps=1, max_reps=1)
    c0 = time.perf_counter()
    g_fb()
    cuda.synchronize()
    compile_s = time.perf_counter() - c0
    return dict(
        compile=compile_s,
        g_fwd=timeit(g_fwd, cuda.synchronize, **kw), t_fwd=timeit(t_fwd, tsync, **kw),
        g_fb=timeit(g_fb, cuda.synchronize, **kw), t_fb=timeit(t_fb, tsync, **kw),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="simulator smoke test on tiny shapes")
    ap.parse_args()  # (--help, and refuses unknown options; --tiny is read at import: TINY)
    if not cuda.is_available():
        sys.exit("gpu_check: numba.cuda finds no GPU (use --tiny for a simulator smoke test)")
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"numba.cuda: {'simulator' if TINY else cuda.get_current_device().name}; "
          f"torch device: {dev}" + ("" if dev.type == "cuda" else " (no torch CUDA: reference only)"))

    report = []
    T, B, I, H = (3, 2, 3, 2) if TINY else (7, 5, 6, 9)
    check_vs_cpu("lstm", {}, T, B, I, H, report)
    check_vs_cpu("gru", {}, T, B, I, H, report)
    check_vs_cpu("gru", {"reset_after": False}, T, B, I, H, report)
    check_vs_torch("lstm", T, B, I, H, dev, report)
    check_vs_torch("gru", T, B, I, H, dev, report)
    print("\ncorrectness (max error relative to the reference's scale):")
    for what, err, ok in report:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}: {err:.2e}")

    if TINY:
        Ts, Bs, Hs, reps = 3, (2,), (3,), 1
    else:
        Ts, Bs, Hs, reps = 100, (1, 8, 64), (256, 1024), 3
    rows = []
    skipped = []
    for H in Hs:
        for B in Bs:
            for cell in ("lstm", "gru"):
                if time.perf_counter() - T0 > BUDGET_S:
                    skipped.append((cell, B, H))
                    continue
                r = bench(cell, Ts, B, H, dev, reps)
                rows.append((cell, B, H, r))
                print(f"  timed {cell} B={B} H={H} (compile/warm-up {r['compile']:.2f} s)", flush=True)

    print(f"\ntimes in ms, T={Ts}, I=H, float32, one layer, one direction; ratio = gatecore / torch"
          f" ({'cuDNN' if dev.type == 'cuda' else 'torch CPU'}); median of timed calls")
    head = f"{'cell':5} {'B':>3} {'H':>5} | {'fwd gc':>8} {'fwd torch':>9} {'ratio':>6} | " \
           f"{'f+b gc':>8} {'f+b torch':>9} {'ratio':>6}"
    print(head)
    print("-" * len(head))
    for cell, B, H, r in rows:
        print(f"{cell:5} {B:>3} {H:>5} | {1e3 * r['g_fwd']:8.2f} {1e3 * r['t_fwd']:9.2f} "
              f"{r['g_fwd'] / r['t_fwd']:6.2f} | {1e3 * r['g_fb']:8.2f} {1e3 * r['t_fb']:9.2f} "
              f"{r['g_fb'] / r['t_fb']:6.2f}")
    for cell, B, H in skipped:
        print(f"{cell:5} {B:>3} {H:>5} | skipped: time budget of {BUDGET_S:.0f} s reached")
    if not all(ok for _, _, ok in report):
        sys.exit(1)


if __name__ == "__main__":
    main()
