#!/usr/bin/env python
"""gatecore against PyTorch and ONNX Runtime on the CPU, in one process (issue 5).

Runs, at the issue's shapes (T, B, I, H; float32, one layer, unidirectional) and for LSTM
and GRU:

* gatecore inference   ``gatecore.forward(cell, x, q, training=False, workspace=ws)`` with
  ``q = gatecore.prepare(p)`` made before timing (as the ONNX Runtime session and the torch
  module are); the same call with the plain mapping ``p`` is timed too ("dict" column: it
  checks and transposes the weights in every call)
* gatecore training    ``forward(..., workspace=ws)`` + ``backward(tape, dy)`` (dx, dstate0 and
  every weight gradient)
* PyTorch inference    ``torch.nn.LSTM/GRU`` under ``torch.no_grad()``, 2 threads
* PyTorch training     forward + ``(y * dy).sum().backward()`` with ``x.requires_grad``
  (dx and every weight gradient, as gatecore)
* ONNX Runtime         the same torch module exported with ``torch.onnx.export``, 2 intra-op
  threads, inference (skipped when onnxruntime/onnx are not installed)

checks that the outputs (and gradients) agree, then times every variant interleaved
(one sample of each in turn, repeated) and prints median times, ratios, the machine's
float32 matrix-product rate (NumPy's and SciPy's OpenBLAS, at the start and the end of
the run), gatecore's fraction of it at the GEMM-bound shapes (against NumPy's rate sampled in
turn with that case's engines, as the host's speed drifts within a run), and the cold
start of a fresh process.
It exits with status 1 when a target of issue 5 is missed, and says which.

Timings on a shared 2-core machine are noisy: compare ratios within one run, not absolute
times across runs.

Usage::

    python benchmarks/compare.py                      # everything
    python benchmarks/compare.py --quick              # fewer repeats
    python benchmarks/compare.py --shapes stream,small --cells lstm --json out.json

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are left as the environment sets them; the BLAS
kernels actually in use are printed (threadpoolctl).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

SHAPES = {
    "stream": (1000, 1, 128, 128),
    "small": (100, 8, 64, 64),
    "bench320": (100, 64, 125, 320),
    "deepbench512": (25, 64, 512, 512),
    "wide1024": (25, 16, 1024, 1024),
}
GATES = {"lstm": 4, "gru": 3}
FLOP_SHAPES = ("deepbench512", "wide1024")
#: size of the matrix products that measure the machine's rate (n x n x n, float32)
MATMUL_N = 2048
THREADS = 2

# targets of issue 5
INFER_MAX_RATIO = 1.0  # gatecore / fastest of torch and ORT
TRAIN_MIN_SPEEDUP = 1.2  # torch / gatecore
TRAIN_MIN_SPEEDUP_SMALL = 3.0  # at stream and small
SMALL_SHAPES = ("stream", "small")
FWD_MIN_FRACTION = 0.80  # of the measured matmul rate
TRAIN_MIN_FRACTION = 0.75
COLD_START_MAX_S = 1.0

# agreement tolerances (max |a - b| / max(|b|, 1)), float32 over up to 1000 steps
TOL_Y = 1e-4
TOL_GRAD = 1e-3


# ------------------------------------------------------------------ timing helpers
def _calibrate(fn, target_s: float) -> tuple[int, float]:
    """Warm ``fn`` up; return how many calls make one sample of about ``target_s``."""
    fn()
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    return max(1, min(200, math.ceil(target_s / max(dt, 1e-6)))), dt


def _sample(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def time_interleaved(fns: dict, repeats: int, target_s: float, settle_s: float = 0.0) -> dict:
    """Median seconds per call of each callable, sampling them in turn (rotating order).

    ``settle_s``: pause before each sample, so that the worker threads of the engine sampled
    before (OpenBLAS, OpenMP and ONNX Runtime pools spin for a while after their last task)
    are idle again and do not take the cores from the next engine; one untimed call then
    wakes the sampled engine's own threads.
    """
    inner = {k: _calibrate(f, target_s)[0] for k, f in fns.items()}
    samples = {k: [] for k in fns}
    keys = list(fns)
    for r in range(repeats):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for k in order:
            if settle_s:
                time.sleep(settle_s)
                fns[k]()  # untimed: wakes this engine's own threads after the pause
            samples[k].append(_sample(fns[k], inner[k]))
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "samples": len(v),
                "inner": inner[k]} for k, v in samples.items()}


# ------------------------------------------------------------------ machine facts
def blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"note": "threadpoolctl not installed"}]
    keep = ("user_api", "internal_api", "prefix", "version", "architecture", "num_threads",
            "threading_layer", "filepath")
    return [{k: d.get(k) for k in keep} for d in threadpool_info()]


def _matmul_operands(n: int):
    """(a, b, c): two random n x n float32 matrices and room for their product."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    return a, b, np.empty((n, n), np.float32)


def gemm_rate(n: int = MATMUL_N, repeats: int = 5) -> dict:
    """float32 GEMM rate (GFLOP/s) of NumPy's BLAS and of SciPy's BLAS (which Numba's
    ``np.dot`` inside ``@njit`` calls), median of ``repeats`` n x n x n products."""
    a, b, c = _matmul_operands(n)
    flops = 2.0 * n ** 3
    out = {}
    np.matmul(a, b, out=c)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        ts.append(time.perf_counter() - t0)
    out["numpy"] = flops / statistics.median(ts) / 1e9
    try:
        from scipy.linalg import blas

        af, bf = np.asfortranarray(a), np.asfortranarray(b)
        blas.sgemm(1.0, af, bf)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            blas.sgemm(1.0, af, bf)
            ts.append(time.perf_counter() - t0)
        out["scipy"] = flops / statistics.median(ts) / 1e9
    except ImportError:
        pass
    return out


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over ``seconds`` (Linux /proc/stat; other processes' load)."""
    def snap():
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait
    try:
        t0, i0 = snap()
        time.sleep(seconds)
        t1, i1 = snap()
        return 1.0 - (i1 - i0) / max(1, t1 - t0)
    except OSError:
        return float("nan")


def load_line() -> str:
    la = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} on {os.cpu_count()} CPUs, "
            f"{100 * cpu_busy():.0f}% busy while idle here")


# ------------------------------------------------------------------ one case
def _rel_err(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def _onnx_session(module, x_t, cell):
    """Export ``module`` to ONNX in memory; return an ORT session or (None, reason)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None, "onnxruntime not installed"
    import io

    import torch

    errors = []
    for dynamo in (False, True):  # the TorchScript exporter works offline and is fast
        buf = io.BytesIO()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, (x_t,), buf, dynamo=dynamo, input_names=["x"],
                                  output_names=["y", "h_n"] + (["c_n"] if cell == "lstm" else []))
            so = ort.SessionOptions()
            so.intra_op_num_threads = THREADS
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
            return sess, f"torch.onnx.export(dynamo={dynamo})"
        except Exception as exc:  # noqa: BLE001 - report and fall back
            errors.append(f"dynamo={dynamo}: {type(exc).__name__}: {str(exc)[:200]}")
    return None, "; ".join(errors)


def run_case(cell: str, shape_name: str, repeats: int, target_s: float, use_onnx: bool,
             settle_s: float = 0.0) -> dict:
    import torch

    import gatecore

    T, B, I, H = SHAPES[shape_name]
    rng = np.random.default_rng(1234)
    params = gatecore.init_params(cell, I, H, seed=0)
    x = rng.standard_normal((T, B, I), dtype=np.float32)
    dy = rng.standard_normal((T, B, H), dtype=np.float32)

    mod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](I, H)
    mod.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()})
    mod.train()
    x_t = torch.from_numpy(x)
    dy_t = torch.from_numpy(dy)

    ws = gatecore.Workspace(max_seq_len=T, max_batch=B)
    res = {"cell": cell, "shape": shape_name, "T": T, "B": B, "I": I, "H": H}

    # ---- agreement (also the warm-up of every JIT path)
    y_g = gatecore.forward(cell, x, params, training=False, workspace=ws)[0].copy()
    with torch.no_grad():
        y_ref = mod(x_t)[0].numpy()
    res["err_y"] = _rel_err(y_g, y_ref)
    y2, _, tape = gatecore.forward(cell, x, params, workspace=ws)
    dx_g, _, dp_g = gatecore.backward(tape, dy)
    xr = x_t.clone().requires_grad_(True)
    yr = mod(xr)[0]
    (yr * dy_t).sum().backward()
    errs = [_rel_err(y2, yr.detach().numpy()), _rel_err(dx_g, xr.grad.numpy())]
    for name, p in mod.named_parameters():
        errs.append(_rel_err(dp_g[name], p.grad.numpy()))
    res["err_grad"] = max(errs)
    mod.zero_grad(set_to_none=True)

    sess, how = (None, "disabled") if not use_onnx else _onnx_session(mod, x_t, cell)
    res["onnx"] = how
    if sess is not None:
        feed = {sess.get_inputs()[0].name: x}
        res["err_onnx"] = _rel_err(sess.run(None, feed)[0], y_ref)

    # ---- callables
    prepared = gatecore.prepare(params)
    y_p = gatecore.forward(cell, x, prepared, training=False, workspace=ws)[0]
    res["err_y"] = max(res["err_y"], _rel_err(y_p, y_ref))

    def gc_infer():
        gatecore.forward(cell, x, prepared, training=False, workspace=ws)

    def gc_infer_dict():
        gatecore.forward(cell, x, params, training=False, workspace=ws)

    def gc_train():
        _, _, tp = gatecore.forward(cell, x, params, workspace=ws)
        gatecore.backward(tp, dy)

    def torch_infer():
        with torch.no_grad():
            mod(x_t)

    def torch_train():
        xr = x_t.detach().requires_grad_(True)
        y = mod(xr)[0]
        (y * dy_t).sum().backward()
        for p in mod.parameters():
            p.grad = None

    fns = {"gc_infer": gc_infer, "gc_infer_dict": gc_infer_dict, "torch_infer": torch_infer,
           "gc_train": gc_train, "torch_train": torch_train}
    if sess is not None:
        fns["ort_infer"] = lambda: sess.run(None, feed)
    if shape_name in FLOP_SHAPES:  # the machine's rate sampled in turn with the engines
        fns["matmul"] = _matmul_sample()
    t = time_interleaved(fns, repeats, target_s, settle_s)
    res["times"] = t
    med = {k: v["median_s"] for k, v in t.items()}
    best_ref = min(med["torch_infer"], med.get("ort_infer", math.inf))
    res["infer_ratio"] = med["gc_infer"] / best_ref  # <= 1 is the target
    res["infer_ratio_dict"] = med["gc_infer_dict"] / best_ref  # the plain mapping, for the record
    res["train_speedup"] = med["torch_train"] / med["gc_train"]  # >= 1.2 (3 small)
    flops_f = 2.0 * T * B * GATES.get(cell, 0) * H * (I + H)
    res["gflops_fwd"] = flops_f / med["gc_infer"] / 1e9
    res["gflops_train"] = 3 * flops_f / med["gc_train"] / 1e9
    if "matmul" in med:
        res["gemm_gflops_case"] = 2.0 * MATMUL_N ** 3 / med["matmul"] / 1e9
    return res


def _matmul_sample():
    """A callable multiplying two MATMUL_N x MATMUL_N float32 matrices by NumPy's BLAS."""
    a, b, c = _matmul_operands(MATMUL_N)
    return lambda: np.matmul(a, b, out=c)


# ------------------------------------------------------------------ cold start
_COLD_CODE = r"""
import time
t0 = time.perf_counter()
import numpy as np
import gatecore
t1 = time.perf_counter()
p = gatecore.init_params("lstm", 64, 64, seed=0)
x = np.zeros((100, 8, 64), np.float32)
gatecore.lstm(x, p)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def _cold_once(cache_dir: str) -> dict:
    # every cache in cache_dir: the generated kernels' sources (GATECORE_CACHE_DIR) and all
    # of Numba's compiled code (NUMBA_CACHE_DIR: the generated kernels' and that of gatecore's
    # own modules, the packed products, in gatecore/kernels/__pycache__ otherwise), so that
    # "empty" is a fresh machine's first call
    env = dict(os.environ, GATECORE_CACHE_DIR=cache_dir,
               NUMBA_CACHE_DIR=os.path.join(cache_dir, "numba"))
    env.pop("GATECORE_NO_CACHE", None)
    # "caches filled by an earlier process" includes Python's bytecode cache, as on a user's
    # machine (some sandboxes set PYTHONDONTWRITEBYTECODE, which adds ~0.1 s of compiling)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _COLD_CODE], env=env, capture_output=True,
                         text=True, check=True)
    wall = time.perf_counter() - t0
    imp, first = (float(v) for v in out.stdout.split()[-2:])
    return {"import_s": imp, "first_call_s": first, "total_s": imp + first, "process_wall_s": wall}


def cold_start(repeats: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="gatecore-bench-") as tmp:
        warm_dir = os.path.join(tmp, "warm")
        _cold_once(warm_dir)  # fill the cache
        warm = [_cold_once(warm_dir) for _ in range(repeats)]
        cold = [_cold_once(os.path.join(tmp, f"cold{i}")) for i in range(max(1, repeats // 2))]

    def med(rows):
        return {k: statistics.median(r[k] for r in rows) for k in rows[0]}

    return {"warm_cache": med(warm), "empty_cache": med(cold), "warm_runs": len(warm),
            "cold_runs": len(cold)}


# ------------------------------------------------------------------ report
def _ms(s):
    return f"{1e3 * s:9.2f}" if s is not None and math.isfinite(s) else "        -"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, shorter samples")
    ap.add_argument("--shapes", default=",".join(SHAPES), help="comma list of " + ",".join(SHAPES))
    ap.add_argument("--cells", default="lstm,gru", help="comma list (lstm, gru)")
    ap.add_argument("--repeats", type=int, default=None, help="samples per variant (default 7, quick 3)")
    ap.add_argument("--torch-threads", type=int, default=THREADS,
                    help=f"PyTorch intra-op threads (default {THREADS}, as the issue)")
    ap.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-start subprocesses")
    ap.add_argument("--json", metavar="OUT", help="write all results as JSON")
    ap.add_argument("--settle", type=float, default=0.3, metavar="S",
                    help="seconds of pause before each sample, for the previous engine's "
                         "spinning worker threads to go idle (default 0.3; 0: none)")
    args = ap.parse_args(argv)

    shapes = [s for s in args.shapes.split(",") if s]
    cells = [c for c in args.cells.split(",") if c]
    for s in shapes:
        if s not in SHAPES:
            ap.error(f"unknown shape {s!r}; known: {', '.join(SHAPES)}")
    for c in cells:
        if c not in GATES:
            ap.error(f"unknown cell {c!r}; known: {', '.join(GATES)}")
    repeats = args.repeats or (3 if args.quick else 7)
    target_s = 0.03 if args.quick else 0.1

    import scipy.linalg.blas  # noqa: F401 - load SciPy's OpenBLAS so threadpoolctl sees it
    import torch

    import gatecore

    torch.set_num_threads(args.torch_threads)
    report = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "numpy": np.__version__, "torch": torch.__version__,
                    "gatecore": getattr(gatecore, "__version__", "?"),
                    "torch_threads": torch.get_num_threads(),
                    "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
                    "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE")},
    }
    try:
        import onnxruntime

        report["machine"]["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        report["machine"]["onnxruntime"] = None
    m = report["machine"]
    print(f"# gatecore vs PyTorch vs ONNX Runtime  ({m['platform']}, {m['cpus']} CPUs, python {m['python']})")
    print(f"# numpy {m['numpy']}  torch {m['torch']} ({m['torch_threads']} threads)  "
          f"onnxruntime {m['onnxruntime']}  gatecore {m['gatecore']}")
    print(f"# OPENBLAS_CORETYPE={m['OPENBLAS_CORETYPE']}  OPENBLAS_L2_SIZE={m['OPENBLAS_L2_SIZE']}")
    report["load_start"] = load_line()
    print(f"# before: {report['load_start']}")
    if cpu_busy(0.5) > 0.25:
        print("# WARNING: other processes are using the CPUs; timings are noisy, compare ratios only")

    rate0 = gemm_rate(repeats=3 if args.quick else 5)
    report["blas"] = blas_info()
    for lib in report["blas"]:
        if "prefix" in lib:
            print(f"# BLAS {lib['internal_api']} {lib['version']} kernel={lib['architecture']} "
                  f"threads={lib['num_threads']} {os.path.basename(lib['filepath'] or '')}")
    print("# matmul rate (2048^3 float32): "
          + "  ".join(f"{k} {v:.1f} GFLOP/s" for k, v in rate0.items()), flush=True)

    results = []
    for cell in cells:
        for s in shapes:
            r = run_case(cell, s, repeats, target_s, not args.no_onnx, args.settle)
            results.append(r)
            print(f"  done {cell:4s} {s:13s} (onnx: {r['onnx']})", flush=True)

    rate1 = gemm_rate(repeats=3 if args.quick else 5)
    rates = {k: max(rate0.get(k, 0), rate1.get(k, 0)) for k in set(rate0) | set(rate1)}
    peak = max(rates.values())
    report["gemm_gflops"] = {"start": rate0, "end": rate1, "peak": peak}
    report["results"] = results

    print()
    print(f"{'cell':4s} {'shape':13s} {'gc fwd':>9s} {'dict':>9s} {'torch fwd':>9s} {'ort fwd':>9s} "
          f"{'fwd/best':>8s} | {'gc f+b':>9s} {'torch f+b':>9s} {'speedup':>7s} | "
          f"{'gc GF/s f':>9s} {'f+b':>6s} | {'err y':>7s} {'err grad':>8s} {'err ort':>7s}")
    print(f"{'':4s} {'':13s} {'(ms)':>9s} {'(ms)':>9s} {'(ms)':>9s} {'(ms)':>9s} {'(<=1)':>8s} | {'(ms)':>9s} "
          f"{'(ms)':>9s} {'(>=1.2*)':>7s} |")
    for r in results:
        t = r["times"]
        g = lambda k: t[k]["median_s"] if k in t else None  # noqa: E731
        print(f"{r['cell']:4s} {r['shape']:13s} {_ms(g('gc_infer'))} {_ms(g('gc_infer_dict'))} "
              f"{_ms(g('torch_infer'))} "
              f"{_ms(g('ort_infer'))} {r['infer_ratio']:8.2f} | {_ms(g('gc_train'))} "
              f"{_ms(g('torch_train'))} {r['train_speedup']:7.2f} | {r['gflops_fwd']:9.1f} "
              f"{r['gflops_train']:6.1f} | {r['err_y']:7.1e} {r['err_grad']:8.1e} "
              f"{r.get('err_onnx', float('nan')):7.1e}")
    print("gc fwd: prepared parameters (gatecore.prepare, before timing); dict: the plain mapping")
    print("dict/best (the plain mapping against the fastest reference): " + ", ".join(
        f"{r['cell']} {r['shape']} {r['infer_ratio_dict']:.2f}" for r in results))
    print("* training target: 1.2x PyTorch, 3x at stream and small")
    report["load_end"] = load_line()
    print(f"\n# after: {report['load_end']}")
    print(f"matmul rate: start {', '.join(f'{k} {v:.1f}' for k, v in rate0.items())}; end "
          f"{', '.join(f'{k} {v:.1f}' for k, v in rate1.items())}; peak used {peak:.1f} GFLOP/s")

    misses = []
    for r in results:
        tag = f"{r['cell']} {r['shape']}"
        if r["err_y"] > TOL_Y or r["err_grad"] > TOL_GRAD or r.get("err_onnx", 0) > TOL_Y:
            misses.append(f"{tag}: outputs disagree (y {r['err_y']:.1e}, grad {r['err_grad']:.1e}, "
                          f"onnx {r.get('err_onnx', 0):.1e})")
        if r["infer_ratio"] > INFER_MAX_RATIO:
            misses.append(f"{tag}: inference {r['infer_ratio']:.2f}x the fastest reference (target <= 1)")
        need = TRAIN_MIN_SPEEDUP_SMALL if r["shape"] in SMALL_SHAPES else TRAIN_MIN_SPEEDUP
        if r["train_speedup"] < need:
            misses.append(f"{tag}: training {r['train_speedup']:.2f}x faster than PyTorch (target >= {need})")
        if r["shape"] in FLOP_SHAPES:
            # against the rate measured in turn with this case's samples (the host's speed
            # drifts within a run: 204 GFLOP/s at the start of one, 114 at its end)
            rate = r.get("gemm_gflops_case", peak)
            ff, ft = r["gflops_fwd"] / rate, r["gflops_train"] / rate
            r["fraction_fwd"], r["fraction_train"] = ff, ft
            print(f"{tag}: forward {r['gflops_fwd']:.1f} GFLOP/s = {100 * ff:.0f}% of the matmul "
                  f"rate sampled with it, {rate:.1f} (target {100 * FWD_MIN_FRACTION:.0f}%), "
                  f"forward+backward {r['gflops_train']:.1f} GFLOP/s = {100 * ft:.0f}% (target "
                  f"{100 * TRAIN_MIN_FRACTION:.0f}%); of the run's peak {peak:.1f}: "
                  f"{100 * r['gflops_fwd'] / peak:.0f}% and {100 * r['gflops_train'] / peak:.0f}%")
            if rate < 0.8 * peak:
                print(f"  WARNING: the matmul rate sampled with {tag} is {100 * rate / peak:.0f}% "
                      "of the run's peak: the host was busy, these fractions are unreliable")
            if ff < FWD_MIN_FRACTION:
                misses.append(f"{tag}: forward at {100 * ff:.0f}% of the matmul rate (target >= 80%)")
            if ft < TRAIN_MIN_FRACTION:
                misses.append(f"{tag}: forward+backward at {100 * ft:.0f}% of the matmul rate (target >= 75%)")

    if not args.no_cold:
        cs = cold_start(3 if args.quick else 5)
        report["cold_start"] = cs
        w, c = cs["warm_cache"], cs["empty_cache"]
        print(f"cold start, filled cache: import {w['import_s']:.2f} s + first lstm forward "
              f"{w['first_call_s']:.2f} s = {w['total_s']:.2f} s (process wall {w['process_wall_s']:.2f} s; "
              f"median of {cs['warm_runs']}; target < {COLD_START_MAX_S} s)")
        print(f"cold start, empty caches: import {c['import_s']:.2f} s + first lstm forward "
              f"{c['first_call_s']:.2f} s = {c['total_s']:.2f} s (process wall {c['process_wall_s']:.2f} s; "
              f"median of {cs['cold_runs']})")
        if w["total_s"] >= COLD_START_MAX_S:
            misses.append(f"cold start with filled cache {w['total_s']:.2f} s (target < {COLD_START_MAX_S} s)")

    report["misses"] = misses
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1, default=float)
    print()
    if misses:
        print(f"TARGETS MISSED ({len(misses)}):")
        for line in misses:
            print("  - " + line)
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
