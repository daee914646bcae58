"""Benchmark (not a test): the LSTM through the public spec vs the built-in LSTM, and compile time.

    python tests/bench_spec_lstm.py                 # forward and forward+backward, medians
    python tests/bench_spec_lstm.py --compile mgu   # time of the first forward+backward
                                                      (run with a fresh GATECORE_CACHE_DIR and
                                                      NUMBA_CACHE_DIR for cold, again for warm)

Sizes: T=100, B=64, I=125, H=320, float32 (the issue's target: spec cell within 1.3x).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import gatecore  # noqa: E402
from spec_lstm import SPEC_LSTM  # noqa: E402


def compare(T=100, B=64, I=125, H=320, repeat=7):
    """Medians of interleaved runs (built-in, spec, built-in, ...), so load on a shared
    machine hits both alike."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    p = gatecore.init_params("lstm", I, H, seed=0)
    dy = np.ones((T, B, H), np.float32)
    cells = {"built-in lstm": "lstm", "spec_lstm plugin": SPEC_LSTM}
    wss = {label: gatecore.Workspace(max_seq_len=T, max_batch=B) for label in cells}

    def fwd(label):
        gatecore.forward(cells[label], x, p, workspace=wss[label], training=False)

    def fwd_bwd(label):
        _, _, tape = gatecore.forward(cells[label], x, p, workspace=wss[label])
        gatecore.backward(tape, dy)

    times = {(label, kind): [] for label in cells for kind in ("f", "fb")}
    for label in cells:  # warm: compilation and workspace sizing
        fwd(label)
        fwd_bwd(label)
    for _ in range(repeat):
        for kind, fn in (("f", fwd), ("fb", fwd_bwd)):
            for label in cells:
                t0 = time.perf_counter()
                fn(label)
                times[(label, kind)].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"T={T} B={B} I={I} H={H} float32, median of {repeat} interleaved runs")
    for label in cells:
        f, fb = med[(label, "f")], med[(label, "fb")]
        print(f"  {label:<17} forward {f * 1e3:8.1f} ms ({f / med[('built-in lstm', 'f')]:.2f}x)   "
              f"forward+backward {fb * 1e3:8.1f} ms ({fb / med[('built-in lstm', 'fb')]:.2f}x)")


def first_call(cell):
    spec = SPEC_LSTM if cell == "spec_lstm" else cell
    p = gatecore.init_params(spec, 8, 16, seed=0)
    x = np.ones((5, 2, 8), np.float32)
    t0 = time.perf_counter()
    _, _, tape = gatecore.forward(spec, x, p)
    gatecore.backward(tape, np.ones((5, 2, 16), np.float32))
    print(f"{cell}: first forward+backward (float32) {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--compile", metavar="CELL")
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    if a.compile:
        first_call(a.compile)
    else:
        compare(repeat=a.repeat)
