"""``gatecore demo``: a short forward + backward run on random data (until ``train`` lands)."""

from __future__ import annotations

import time


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run a short LSTM/GRU forward+backward on random data")
    p.add_argument("--cell", default="lstm", help="registered cell name (default: lstm)")
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="an integer >= 0 (default: 0)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import GatecoreError
    from ..forecast import report_error

    for flag in ("seq_len", "batch", "input_size", "hidden_size"):
        value = getattr(args, flag)
        if value < 1:
            return report_error("demo", f"--{flag.replace('_', '-')} must be a positive "
                                        f"integer, got {value}")
    if args.seed < 0:
        return report_error("demo", f"--seed must be an integer >= 0, got {args.seed}")
    try:
        return _run(args)
    except GatecoreError as exc:  # unknown cell, a plugin cell's options
        return report_error("demo", exc)


def _run(args) -> int:
    import numpy as np

    import gatecore

    rng = np.random.default_rng(args.seed)
    params = gatecore.init_params(args.cell, args.input_size, args.hidden_size, seed=args.seed)
    x = rng.standard_normal((args.seq_len, args.batch, args.input_size)).astype(np.float32)
    ws = gatecore.Workspace()
    for label in ("first call (includes compilation)", "second call"):
        t0 = time.perf_counter()
        y, state_n, tape = gatecore.forward(args.cell, x, params, workspace=ws)
        dx, dstate0, dparams = gatecore.backward(tape, np.ones_like(y))
        dt = time.perf_counter() - t0
        print(f"{args.cell}: forward+backward, {label}: {dt * 1e3:.1f} ms")
    print(f"y {y.shape}  |y| mean {np.abs(y).mean():.4f}  |dx| mean {np.abs(dx).mean():.4f}")
    return 0
