"""Conformance check for gated cells: what every cell, built-in or plugin, must pass.

``check_cell(name)`` runs a cell through the whole engine on tiny shapes and checks what a
user relies on, so a plugin author learns about a wrong derivative or a padding bug before
their users do::

    >>> from gatecore.testing import check_cell
    >>> report = check_cell("gru", reset_after=False)       # doctest: +SKIP
    >>> print(report)                                      # doctest: +SKIP
    >>> report.raise_if_failed()                           # doctest: +SKIP

The same check runs from the command line as ``gatecore check NAME`` and, in gatecore's own
test suite, over every registered cell (``tests/test_every_cell.py``).

Checks, in order (each one reported with PASS/FAIL, the worst deviation and its location):

``spec``
    ``CellSpec.validate`` and a trial run of the rules in plain Python (indexes past the
    declared gates/states/tape, unwritten outputs).
``compile``
    Builds the kernels for float32 and float64 (the time is shown; cached on disk after).
``shapes and dtypes``
    2 layers, bidirectional, float32 and float64: every output and gradient has the
    documented shape and the parameters' dtype, is finite, ``dparams`` has the keys of
    ``params``; float32 agrees with float64; ``batch_first`` and unbatched inputs agree
    with the time-major batch.
``gradients``
    float64 central finite differences of ``sum(y*dy) + sum(state_n*dstate_n)`` against
    every gradient: ``dx``, every initial state, every parameter (extra parameters
    included), through 2 bidirectional layers with variable lengths (and a projected
    network when the cell supports ``proj_size``).
``lengths and padding``
    Outputs past a length are exactly 0; final states are the last valid ones; each
    sequence alone gives what it gives inside the batch, forward and backward; padded
    steps get no gradient and ``dy`` there is ignored; a length-0 sequence returns its
    initial state and passes ``dstate_n`` through.
``bidirectional``
    The reverse direction equals a forward-only network with the ``_reverse`` parameters
    run on each sequence reversed within its length, forward and backward.
``two layers``
    A 2-layer network equals layer 0 followed by layer 1 run as separate networks.
``workspace``
    Runs through a reused :class:`~gatecore.Workspace` (larger, then smaller calls) give
    the results of runs without one; inference (``training=False``) gives the training
    output; a tape whose workspace was reused raises ``StaleTapeError``.

Everything runs on tiny sizes: a few seconds per cell once its kernels are compiled.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Callable

import numpy as np

from .api import backward, forward, init_params
from .cells.spec import CellSpec
from .errors import GatecoreError, StaleTapeError
from .params import generator
from .registry.manager import get_registry
from .workspace import Workspace

__all__ = ["check_cell", "CellReport", "CheckResult", "CellCheckError"]


class CellCheckError(GatecoreError, AssertionError):
    """A cell failed the conformance check; the message is the full report."""


@dataclasses.dataclass
class CheckResult:
    """Outcome of one check: its name, whether it passed, a one-line detail, seconds taken."""

    name: str
    passed: bool
    detail: str
    seconds: float

    def __str__(self) -> str:
        tag = "PASS" if self.passed else "FAIL"
        lines = self.detail.splitlines() or [""]
        out = [f"  {tag}  {self.name:<20} {lines[0]}  ({self.seconds:.2f} s)"]
        out += [f"        {'':<20} {line}" for line in lines[1:]]
        return "\n".join(out)


@dataclasses.dataclass
class CellReport:
    """The conformance report of one cell (see :func:`check_cell`)."""

    cell: str
    options: dict
    plugin: str
    checks: list[CheckResult] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        """The checks that failed."""
        return [c for c in self.checks if not c.passed]

    def header(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return (f"gatecore check: cell {self.cell!r}" + (f" ({opts})" if opts else "")
                + f", provided by {self.plugin}")

    def summary(self) -> str:
        total = sum(c.seconds for c in self.checks)
        n, bad = len(self.checks), len(self.failures)
        word = "PASSED" if self.passed else "FAILED"
        return f"{word}: {n - bad}/{n} checks passed in {total:.1f} s"

    def __str__(self) -> str:
        return "\n".join([self.header(), *map(str, self.checks), self.summary()])

    def raise_if_failed(self) -> "CellReport":
        """Raise :class:`CellCheckError` (an AssertionError) with the report if a check failed."""
        if not self.passed:
            raise CellCheckError(str(self))
        return self


class _Fail(Exception):
    """A check's own failure (as opposed to an exception raised by the engine)."""


# --------------------------------------------------------------------------- helpers
def _close(what: str, got, want, atol: float, rtol: float = 0.0, note: str = "") -> float:
    """Raise _Fail naming ``what``, the worst index and ``note`` (what was compared) if
    ``got`` and ``want`` differ."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise _Fail(f"{what}{note}: shape {list(got.shape)}, expected {list(want.shape)}")
    if got.size == 0:
        return 0.0
    err = np.abs(got - want)
    bound = atol + rtol * np.abs(want)
    bad = ~(err <= bound)  # NaN counts as bad
    if bad.any():
        idx = tuple(int(i) for i in np.unravel_index(
            int(np.argmax(np.where(bad, np.nan_to_num(err, nan=np.inf), -1))), err.shape))
        raise _Fail(f"{what}{list(idx)}{note}: got {got[idx]:.9g}, expected {want[idx]:.9g} "
                    f"(|diff| {err[idx]:.3g} > {bound[idx]:.3g}; {int(bad.sum())} of {bad.size} entries off)")
    return float(np.max(err))


class _Cell:
    """A cell under test with its options: runs forward and backward and copies the results."""

    def __init__(self, spec: CellSpec, options: dict, rng: np.random.Generator):
        self.spec = spec  # the registered (or given) spec; forward applies the options
        self.options = options
        self.concrete = spec.with_options(**options)
        self.rng = rng  # (of the random parameters and inputs)

    # sizes of a network: (I, H, L, D, P)
    def params(self, I, H, L=1, D=1, P=0, dtype=np.float64):
        p = init_params(self.spec, I, H, num_layers=L, bidirectional=D == 2, proj_size=P,
                        dtype=dtype, seed=int(self.rng.integers(1 << 30)), **self.options)
        # larger than PyTorch's init for tiny H, so gates are away from 1/2 and nonlinear
        return {k: (v * 1.5).astype(dtype) for k, v in p.items()}

    def widths(self, H, P):
        return [P or H] + [H] * (self.concrete.num_states - 1)

    def randn(self, *shape, dtype=np.float64):
        return self.rng.standard_normal(shape).astype(dtype)

    def states(self, L, D, B, H, P=0, dtype=np.float64, scale=0.5):
        return tuple(scale * self.randn(L * D, B, w, dtype=dtype) for w in self.widths(H, P))

    def run(self, x, params, state0=None, lengths=None, dy=None, dstate_n=None, **kw):
        """forward then backward (when dy or dstate_n is given); copies of everything."""
        y, sn, tape = forward(self.spec, x, params, state0, lengths=lengths, **kw, **self.options)
        out = {"y": np.array(y), "state_n": tuple(np.array(s) for s in sn)}
        if dy is not None or dstate_n is not None:
            dx, ds0, dp = backward(tape, dy, dstate_n)
            out.update(dx=np.array(dx), dstate0=tuple(np.array(s) for s in ds0),
                       dparams={k: np.array(v) for k, v in dp.items()})
        return out

    def loss(self, x, params, state0, lengths, dy, dstate_n) -> float:
        y, sn, _ = forward(self.spec, x, params, state0, lengths=lengths, training=False,
                           **self.options)
        return float(np.sum(y * dy) + sum(np.sum(s * d) for s, d in zip(sn, dstate_n)))


def _reverse_within(a: np.ndarray, lengths) -> np.ndarray:
    """[T, B, *] with each sequence b reversed within its first lengths[b] steps, rest zero."""
    out = np.zeros_like(a)
    for b, n in enumerate(lengths):
        out[:n, b] = a[:n, b][::-1]
    return out


def _select(params: dict, pick: Callable[[str], str | None]) -> dict:
    out = {}
    for k, v in params.items():
        new = pick(k)
        if new is not None:
            out[new] = v
    return out


# --------------------------------------------------------------------------- checks
def _check_spec(c: _Cell) -> str:
    spec = c.concrete
    spec.validate()
    spec.check_rules()
    kind = "two-stage" if spec.two_stage else "one-stage"
    return (f"{spec.num_gates} gates {''.join(spec.gate_names)}, states "
            f"{','.join(spec.state_names)}, tape {spec.tape_size}/unit, {kind}"
            + (f", extras {[p for p, _ in spec.extra_params]}" if spec.extra_params else ""))


def _check_compile(c: _Cell) -> str:
    parts = []
    for dt in (np.float32, np.float64):
        t0 = time.perf_counter()
        p = c.params(2, 2, dtype=dt)
        x = c.randn(2, 1, 2, dtype=dt)
        c.run(x, p, dy=np.ones((2, 1, 2), dt))
        parts.append(f"{np.dtype(dt).name} {time.perf_counter() - t0:.1f} s")
    return "kernels ready: " + ", ".join(parts) + " (on-disk cache makes later runs fast)"


def _check_shapes(c: _Cell) -> str:
    T, B, I, H, L, D = 4, 3, 3, 4, 2, 2
    S = c.concrete.num_states
    p64 = c.params(I, H, L, D)
    x64 = c.randn(T, B, I)
    s64 = c.states(L, D, B, H)
    dy64 = c.randn(T, B, D * H)
    dsn64 = tuple(c.randn(*s.shape) for s in s64)
    lengths = np.array([T, 2, 3])
    res = {}
    for dt in (np.float32, np.float64):
        cast = lambda a: a.astype(dt)  # noqa: E731
        r = c.run(cast(x64), {k: cast(v) for k, v in p64.items()}, tuple(map(cast, s64)),
                  lengths, cast(dy64), tuple(map(cast, dsn64)))
        name = np.dtype(dt).name
        want = {"y": (T, B, D * H), "dx": (T, B, I)}
        for key, shape in want.items():
            if r[key].shape != shape or r[key].dtype != dt:
                raise _Fail(f"{name}: {key} is {list(r[key].shape)} {r[key].dtype}, expected {list(shape)} {name}")
        for what in ("state_n", "dstate0"):
            if len(r[what]) != S:
                raise _Fail(f"{name}: {what} has {len(r[what])} arrays, expected {S} {c.concrete.state_names}")
            for s, (a, ref) in enumerate(zip(r[what], s64)):
                if a.shape != ref.shape or a.dtype != dt:
                    raise _Fail(f"{name}: {what}[{s}] is {list(a.shape)} {a.dtype}, expected {list(ref.shape)} {name}")
        if set(r["dparams"]) != set(p64):
            raise _Fail(f"{name}: dparams keys {sorted(r['dparams'])} differ from params keys {sorted(p64)}")
        for k, v in r["dparams"].items():
            if v.shape != p64[k].shape or v.dtype != dt:
                raise _Fail(f"{name}: dparams[{k!r}] is {list(v.shape)} {v.dtype}, expected {list(p64[k].shape)} {name}")
        for key in ("y", "dx"):
            if not np.all(np.isfinite(r[key])):
                raise _Fail(f"{name}: {key} has non-finite values")
        for k, v in r["dparams"].items():
            if not np.all(np.isfinite(v)):
                raise _Fail(f"{name}: dparams[{k!r}] has non-finite values")
        res[name] = r
    a, b = res["float32"], res["float64"]
    _close("float32 vs float64: y", a["y"], b["y"], 1e-4, 1e-3)
    _close("float32 vs float64: dx", a["dx"], b["dx"], 1e-4, 1e-3)
    for k in b["dparams"]:
        _close(f"float32 vs float64: dparams[{k!r}]", a["dparams"][k], b["dparams"][k], 2e-4, 1e-3)
    # layouts: batch_first and unbatched agree with the time-major batch
    ref = res["float64"]
    bf = c.run(x64.transpose(1, 0, 2), p64, s64, lengths, dy64.transpose(1, 0, 2), dsn64, batch_first=True)
    _close("batch_first: y", bf["y"].transpose(1, 0, 2), ref["y"], 1e-12)
    _close("batch_first: dx", bf["dx"].transpose(1, 0, 2), ref["dx"], 1e-12)
    ub = c.run(x64[:, 0], p64, tuple(s[:, 0] for s in s64), None, dy64[:, 0],
               tuple(d[:, 0] for d in dsn64))
    _close("unbatched: y", ub["y"], ref["y"][:, 0], 1e-12)
    _close("unbatched: dx", ub["dx"], ref["dx"][:, 0], 1e-12)
    return (f"float32 and float64, {L} layers x {D} directions: shapes, dtypes, finite; "
            f"float32 ~ float64; batch_first and unbatched agree")


def _gradcheck(c: _Cell, T, B, I, H, L, D, P, lengths, eps=1e-6) -> tuple[float, int]:
    p = c.params(I, H, L, D, P)
    x = c.randn(T, B, I)
    s0 = c.states(L, D, B, H, P)
    dy = c.randn(T, B, D * (P or H))
    dsn = tuple(c.randn(*s.shape) for s in s0)
    r = c.run(x, p, s0, lengths, dy, dsn)
    worst, count = 0.0, 0

    def fd(label, arr, analytic, rebuild):
        nonlocal worst, count
        flat = arr.reshape(-1)
        num = np.empty(flat.size)
        for n in range(flat.size):
            keep = flat[n]
            flat[n] = keep + eps
            lp = c.loss(*rebuild(), lengths, dy, dsn)
            flat[n] = keep - eps
            lm = c.loss(*rebuild(), lengths, dy, dsn)
            flat[n] = keep
            num[n] = (lp - lm) / (2 * eps)
        num = num.reshape(arr.shape)
        scale = max(1.0, float(np.max(np.abs(num))))
        worst = max(worst, _close(f"d{label}", analytic, num, 2e-6 * scale, 1e-5,
                                  " (analytic vs finite differences)"))
        count += arr.size

    fd("x", x, r["dx"], lambda: (x, p, s0))
    for s, a in enumerate(s0):
        fd(f"{c.concrete.state_names[s]}0", a, r["dstate0"][s], lambda: (x, p, s0))
    for k in p:
        fd(f"params[{k!r}]", p[k], r["dparams"][k], lambda: (x, p, s0))
    return worst, count


def _check_gradients(c: _Cell) -> str:
    worst, n = _gradcheck(c, T=3, B=2, I=2, H=2, L=2, D=2, P=0, lengths=np.array([3, 2]))
    text = f"{n} entries (x, states, every parameter), 2 layers x 2 directions, lengths [3, 2]"
    if c.concrete.supports_projection:
        w2, n2 = _gradcheck(c, T=3, B=2, I=2, H=3, L=1, D=1, P=2, lengths=None)
        worst, n = max(worst, w2), n + n2
        text += f"; proj_size=2: {n2} entries"
    return text + f"; max |analytic - numeric| {worst:.1e}"


def _check_lengths(c: _Cell) -> str:
    T, B, I, H, L, D = 5, 4, 3, 3, 2, 2
    lengths = np.array([2, 5, 0, 1])  # any order, a full one, a zero one
    p = c.params(I, H, L, D)
    x = c.randn(T, B, I)
    s0 = c.states(L, D, B, H)
    dy = c.randn(T, B, D * H)
    dsn = tuple(c.randn(*s.shape) for s in s0)
    r = c.run(x, p, s0, lengths, dy, dsn)
    Hr = H
    for b, n in enumerate(lengths):
        if np.any(r["y"][n:, b] != 0):
            raise _Fail(f"y[{n}:, {b}] past length {n} is not exactly 0")
        if np.any(r["dx"][n:, b] != 0):
            raise _Fail(f"dx[{n}:, {b}] past length {n} is not exactly 0 (gradient into padding)")
        if n == 0:
            for s in range(len(s0)):
                if np.any(r["state_n"][s][:, b] != s0[s][:, b]):
                    raise _Fail(f"length 0: state_n[{s}][:, {b}] is not state0")
                if np.any(r["dstate0"][s][:, b] != dsn[s][:, b]):
                    raise _Fail(f"length 0: dstate0[{s}][:, {b}] is not dstate_n")
            continue
        top = (L - 1) * D
        _close(f"final h (forward) vs y[{n - 1}, {b}] of the last layer",
               r["state_n"][0][top, b], r["y"][n - 1, b, :Hr], 0)
        _close(f"final h (reverse) vs y[0, {b}] of the last layer",
               r["state_n"][0][top + 1, b], r["y"][0, b, Hr:], 0)
        alone = c.run(x[:n, b:b + 1], p, tuple(s[:, b:b + 1] for s in s0), None,
                      dy[:n, b:b + 1], tuple(d[:, b:b + 1] for d in dsn))
        _close(f"sequence {b} alone vs in the batch: y", alone["y"][:, 0], r["y"][:n, b], 1e-12, 1e-10)
        _close(f"sequence {b} alone vs in the batch: dx", alone["dx"][:, 0], r["dx"][:n, b], 1e-12, 1e-10)
        for s in range(len(s0)):
            _close(f"sequence {b} alone vs in the batch: state_n[{s}]", alone["state_n"][s][:, 0],
                   r["state_n"][s][:, b], 1e-12, 1e-10)
            _close(f"sequence {b} alone vs in the batch: dstate0[{s}]", alone["dstate0"][s][:, 0],
                   r["dstate0"][s][:, b], 1e-12, 1e-10)
    # dy at padded steps is ignored
    dy2 = dy.copy()
    for b, n in enumerate(lengths):
        dy2[n:, b] = 1e3
    r2 = c.run(x, p, s0, lengths, dy2, dsn)
    _close("dx with dy changed at padded steps", r2["dx"], r["dx"], 1e-12, 1e-10)
    for k in p:
        _close(f"dparams[{k!r}] with dy changed at padded steps", r2["dparams"][k], r["dparams"][k], 1e-12, 1e-10)
    return (f"lengths {lengths.tolist()} of T={T}, {L} layers x {D} directions: zeros past lengths, "
            f"last valid states, alone == in batch, no gradient into padding")


def _check_bidirectional(c: _Cell) -> str:
    T, B, I, H = 5, 3, 3, 3
    lengths = np.array([5, 3, 1])
    p = c.params(I, H, 1, 2)
    x = c.randn(T, B, I)
    s0 = c.states(1, 2, B, H)
    dy = c.randn(T, B, 2 * H)
    dsn = tuple(c.randn(*s.shape) for s in s0)
    r = c.run(x, p, s0, lengths, dy, dsn)
    p_fwd = _select(p, lambda k: None if k.endswith("_reverse") else k)
    p_rev = _select(p, lambda k: k[: -len("_reverse")] if k.endswith("_reverse") else None)
    fw = c.run(x, p_fwd, tuple(s[0:1] for s in s0), lengths, dy[..., :H], tuple(d[0:1] for d in dsn))
    rv = c.run(_reverse_within(x, lengths), p_rev, tuple(s[1:2] for s in s0), lengths,
               _reverse_within(dy[..., H:], lengths), tuple(d[1:2] for d in dsn))
    _close("forward half of y vs forward-only network", r["y"][..., :H], fw["y"], 1e-12, 1e-10)
    _close("reverse half of y vs forward network on reversed sequences", r["y"][..., H:],
           _reverse_within(rv["y"], lengths), 1e-12, 1e-10)
    for s in range(len(s0)):
        _close(f"state_n[{s}] (reverse direction)", r["state_n"][s][1], rv["state_n"][s][0], 1e-12, 1e-10)
        _close(f"dstate0[{s}] (reverse direction)", r["dstate0"][s][1], rv["dstate0"][s][0], 1e-12, 1e-10)
    for k, v in rv["dparams"].items():
        _close(f"dparams[{k + '_reverse'!r}]", r["dparams"][k + "_reverse"], v, 1e-12, 1e-10)
    _close("dx minus the forward direction's part vs reversed dx of the reverse direction",
           r["dx"] - fw["dx"], _reverse_within(rv["dx"], lengths), 1e-12, 1e-10)
    return f"reverse direction == forward-only network on reversed sequences (lengths {lengths.tolist()}), forward and backward"


def _check_two_layers(c: _Cell) -> str:
    T, B, I, H, D = 4, 3, 3, 3, 2
    lengths = np.array([4, 2, 3])
    p = c.params(I, H, 2, D)
    x = c.randn(T, B, I)
    s0 = c.states(2, D, B, H)
    r = c.run(x, p, s0, lengths)
    p0 = _select(p, lambda k: k if "_l0" in k else None)
    p1 = _select(p, lambda k: k.replace("_l1", "_l0") if "_l1" in k else None)
    r0 = c.run(x, p0, tuple(s[:D] for s in s0), lengths)
    r1 = c.run(r0["y"], p1, tuple(s[D:] for s in s0), lengths)
    _close("2-layer y vs layer 1 applied to layer 0's output", r["y"], r1["y"], 1e-12, 1e-10)
    for s in range(len(s0)):
        _close(f"2-layer state_n[{s}] vs the layers run one by one",
               r["state_n"][s], np.concatenate([r0["state_n"][s], r1["state_n"][s]]), 1e-12, 1e-10)
    return "stacked network == layer 0 then layer 1 (gradients: see the gradient check)"


def _check_workspace(c: _Cell) -> str:
    I, H, D = 3, 3, 2
    p = c.params(I, H, 2, D)
    ws = Workspace(max_seq_len=6, max_batch=4)
    runs = []
    for T, B in ((6, 4), (3, 2), (6, 4)):
        x = c.randn(T, B, I)
        lengths = np.maximum(1, T - np.arange(B))
        s0 = c.states(2, D, B, H)
        dy = c.randn(T, B, D * H)
        runs.append((x, lengths, s0, dy))
    for n, (x, lengths, s0, dy) in enumerate(runs):
        ref = c.run(x, p, s0, lengths, dy)
        got = c.run(x, p, s0, lengths, dy, workspace=ws)
        tag = f"call {n + 1} (T={x.shape[0]}, B={x.shape[1]}) with a workspace"
        _close(f"{tag}: y", got["y"], ref["y"], 1e-12, 1e-10)
        _close(f"{tag}: dx", got["dx"], ref["dx"], 1e-12, 1e-10)
        for k in p:
            _close(f"{tag}: dparams[{k!r}]", got["dparams"][k], ref["dparams"][k], 1e-12, 1e-10)
        inf = c.run(x, p, s0, lengths, workspace=ws, training=False)
        _close(f"{tag}: inference y vs training y", inf["y"], ref["y"], 1e-12, 1e-10)
        for s in range(len(s0)):
            _close(f"{tag}: inference state_n[{s}]", inf["state_n"][s], ref["state_n"][s], 1e-12, 1e-10)
    x, lengths, s0, dy = runs[0]
    _, _, tape = forward(c.spec, x, p, s0, lengths=lengths, workspace=ws, **c.options)
    forward(c.spec, x, p, s0, lengths=lengths, workspace=ws, **c.options)
    try:
        backward(tape, dy)
    except StaleTapeError:
        pass
    else:
        raise _Fail("backward accepted a tape whose workspace was reused (expected StaleTapeError)")
    return ("reused workspace (6x4, 3x2, 6x4) == fresh buffers, inference == training "
            "(float64, to 1e-12), stale tape refused")


_CHECKS: list[tuple[str, Callable[[_Cell], str]]] = [
    ("compile", _check_compile),
    ("shapes and dtypes", _check_shapes),
    ("gradients", _check_gradients),
    ("lengths and padding", _check_lengths),
    ("bidirectional", _check_bidirectional),
    ("two layers", _check_two_layers),
    ("workspace", _check_workspace),
]


def check_cell(name, *, raise_on_failure: bool = False, verbose: bool = False, seed: int = 0,
               **cell_options) -> CellReport:
    """Run the conformance check on one cell.

    Parameters
    ----------
    name : str or CellSpec
        A registered cell name, or a spec not yet registered (handy while writing a plugin).
    raise_on_failure : bool
        Raise :class:`CellCheckError` (an ``AssertionError``, message = the report) when a
        check fails, for use in a plugin's own tests.
    verbose : bool
        Print each check's line as it finishes (the command line does this).
    seed : int >= 0, or anything else ``numpy.random.default_rng`` takes
        Seed of the random parameters and inputs.
    **cell_options
        Options of the cell, for example ``reset_after=False`` for ``"gru"``.

    Returns
    -------
    CellReport
        ``report.passed``, ``report.checks`` (one :class:`CheckResult` each), ``str(report)``
        is the readable report.

    Raises
    ------
    UnknownCellError (ValueError)
        ``name`` is not registered (the message lists the registered cells).
    ValueError
        ``seed`` is not a seed (a negative int, a float, a string).
    TypeError
        An option the cell does not accept.
    CellCheckError (AssertionError)
        With ``raise_on_failure=True``, when a check fails.

    Notes
    -----
    The checks are described in :mod:`gatecore.testing`. After the kernels are compiled
    (the ``compile`` line; cached on disk for later processes), a cell takes a few seconds.

    Examples
    --------
    >>> from gatecore.testing import check_cell
    >>> check_cell("lstm").passed                              # doctest: +SKIP
    True
    """
    rng = generator(seed)  # (ValueError naming seed, before any check runs)
    registry = get_registry()
    spec = registry.get(name)
    entry = registry.cells().get(spec.name)
    plugin = entry.plugin if entry is not None and entry.spec is spec else "(not registered)"
    report = CellReport(spec.name, dict(cell_options), plugin)
    cell, setup_error = None, None
    try:
        cell = _Cell(spec, dict(cell_options), rng)
    except TypeError:
        raise  # an option the cell does not accept: the caller's mistake, not the cell's
    except Exception as exc:  # noqa: BLE001 - a configure() that fails is a spec finding
        setup_error = exc
    if verbose:
        print(report.header(), flush=True)

    def record(check_name, fn, *args):
        t0 = time.perf_counter()
        try:
            detail, ok = fn(*args), True
        except _Fail as exc:
            detail, ok = str(exc), False
        except Exception as exc:  # noqa: BLE001 - any failure of the cell is a finding
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            detail = (f"{type(exc).__name__}: {exc}\n(raised at {tb.filename}:{tb.lineno}, "
                      f"in {tb.name})")
            ok = False
        result = CheckResult(check_name, ok, detail, time.perf_counter() - t0)
        report.checks.append(result)
        if verbose:
            print(result, flush=True)
        return ok

    if setup_error is not None:
        def _raise():
            raise setup_error
        record("spec", _raise)
    if cell is not None and record("spec", _check_spec, cell) and record("compile", _check_compile, cell):
        for check_name, fn in _CHECKS[1:]:
            record(check_name, fn, cell)
    if verbose:
        print(report.summary(), flush=True)
    if raise_on_failure:
        report.raise_if_failed()
    return report
