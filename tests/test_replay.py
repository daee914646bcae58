"""Replayed inference calls (network.Replay): a repeated inference call with prepared
parameters on the same workspace runs its recorded work again. Its results must be the
whole way's, bit for bit, whatever the layout, states, aliasing and calls in between."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gatecore
import gatecore.api as api
from gatecore.errors import DTypeError, ShapeError, StaleTapeError, WorkspaceBusyError


def _count_whole_way(monkeypatch):
    """Count the calls that go through run_forward (not replayed)."""
    calls = [0]
    orig = api.run_forward

    def counted(*a, **k):
        calls[0] += 1
        return orig(*a, **k)
    monkeypatch.setattr(api, "run_forward", counted)
    return calls


def _inputs(rng, T, B, I, dtype, batch_first, unbatched):
    shape = (T, I) if unbatched else ((B, T, I) if batch_first else (T, B, I))
    return rng.standard_normal(shape).astype(dtype)


def _states(rng, cell, dims, B, dtype, unbatched, which):
    L, D, H, Hr = dims
    widths = [Hr, H] if cell in ("lstm", "peephole_lstm") else [H]
    out = []
    for s, w in enumerate(widths):
        if which == "none" or (which == "h0" and s > 0):
            out.append(None)
        else:
            shape = (L * D, w) if unbatched else (L * D, B, w)
            out.append(rng.standard_normal(shape).astype(dtype))
    return tuple(out)


def _same(a, b):
    np.testing.assert_array_equal(a, b)
    assert a.dtype == b.dtype and a.shape == b.shape


CASES = st.fixed_dictionaries(dict(
    cell=st.sampled_from(["lstm", "gru", "gru_before", "mgu", "peephole_lstm"]),
    dtype=st.sampled_from([np.float32, np.float64]),
    T=st.sampled_from([0, 1, 2, 7, 30]),
    B=st.sampled_from([0, 1, 3, 5, 8]),
    I=st.sampled_from([1, 4, 16]),
    H=st.sampled_from([1, 3, 16, 64]),
    L=st.sampled_from([1, 2]),
    bidirectional=st.booleans(),
    proj=st.booleans(),
    batch_first=st.booleans(),
    unbatched=st.booleans(),
    states=st.sampled_from(["none", "h0", "all", "none_arg"]),
))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=CASES, seed=st.integers(0, 2 ** 16))
def test_replay_is_the_whole_way_bit_for_bit(case, seed):
    cell, dtype = case["cell"], np.dtype(case["dtype"])
    opts = {}
    if cell == "gru_before":
        cell, opts = "gru", {"reset_after": False}
    T, B, I, H, L = case["T"], case["B"], case["I"], case["H"], case["L"]
    unbatched = case["unbatched"]
    if unbatched:
        B = 1
    proj = 2 if (case["proj"] and cell == "lstm" and H > 2) else 0
    D = 2 if case["bidirectional"] else 1
    kw = dict(num_layers=L, bidirectional=case["bidirectional"], dtype=dtype, seed=seed)
    if proj:
        kw["proj_size"] = proj
    p = gatecore.init_params(cell, I, H, **kw)
    q = gatecore.prepare(p)
    rng = np.random.default_rng(seed)
    ws = gatecore.Workspace()
    dims = (L, D, H, proj or H)

    def call(x, s, w):
        state0 = None if case["states"] == "none_arg" else s
        return gatecore.forward(cell, x, q, state0, workspace=w, training=False,
                                batch_first=case["batch_first"], **opts)

    for step in range(3):  # record, then replay twice with new inputs
        x = _inputs(rng, T, B, I, dtype, case["batch_first"], unbatched)
        s = _states(rng, cell, dims, B, dtype, unbatched, case["states"])
        y, state_n, tape = call(x, s, ws)
        y, state_n = y.copy(), tuple(a.copy() for a in state_n)
        y_ref, state_ref, _ = call(x, s, gatecore.Workspace())  # the whole way
        assert tape is None
        _same(y, y_ref)
        for a, b in zip(state_n, state_ref):
            _same(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_streaming_loop_feeding_outputs_back(monkeypatch, cell, dtype):
    """The streaming pattern: one step per call, y fed back as the next x and the final
    states (views of the workspace) as the next initial states."""
    I = H = 16
    p = gatecore.init_params(cell, I, H, dtype=dtype, seed=1)
    q = gatecore.prepare(p)
    ws = gatecore.Workspace()
    x = np.random.default_rng(0).standard_normal((1, 2, I)).astype(dtype)
    calls = _count_whole_way(monkeypatch)
    state, state_ref, x_ref = None, None, x.copy()
    for _ in range(20):
        y, state, _ = gatecore.forward(cell, x, q, state, workspace=ws, training=False)
        y_ref, state_ref, _ = gatecore.forward(cell, x_ref, p, state_ref, training=False)
        _same(y, y_ref)
        for a, b in zip(state, state_ref):
            _same(a, b)
        x, x_ref = y, y_ref.copy()  # (y: a view of the workspace, read by the next call)
    assert calls[0] == 20 + 2  # 20 whole-way references; the first two calls recorded (no
    # states, then states)


def test_lstm_and_gru_wrappers_replay(monkeypatch):
    q = gatecore.prepare(gatecore.init_params("lstm", 8, 8, seed=0))
    g = gatecore.prepare(gatecore.init_params("gru", 8, 8, seed=0))
    ws = gatecore.Workspace()
    x = np.ones((1, 1, 8), np.float32)
    calls = _count_whole_way(monkeypatch)
    y, (h, c) = gatecore.lstm(x, q, workspace=ws)
    for _ in range(3):
        y, (h, c) = gatecore.lstm(x, q, h, c, workspace=ws)
    assert calls[0] == 2  # (no states, then states: two kinds of call)
    for _ in range(3):
        yg, hg = gatecore.gru(x, g, workspace=ws, reset_after=False)
    assert calls[0] == 3


def test_calls_in_between_and_growth(monkeypatch):
    """Other shapes, a larger call that reallocates buffers, a training call and clear()
    between replays: each replay still gives the whole way's results."""
    p = gatecore.init_params("lstm", 8, 16, seed=2)
    q = gatecore.prepare(p)
    ws = gatecore.Workspace()
    rng = np.random.default_rng(3)

    def check(T, B, training=False):
        x = rng.standard_normal((T, B, 8)).astype(np.float32)
        out = gatecore.forward("lstm", x, q, workspace=ws, training=training)
        ref = gatecore.forward("lstm", x, p, training=training)
        _same(out[0], ref[0])
        return out

    calls = _count_whole_way(monkeypatch)
    check(5, 2)
    check(1, 2)  # another shape (smaller: no buffer reallocated): recorded beside it
    check(1, 2)
    check(5, 2)
    check(1, 2)
    assert calls[0] == 2 + 5  # (and 5 whole-way references)
    check(40, 16)  # larger: buffers reallocated, the replays forgotten
    check(1, 2)
    _, _, tape = check(3, 2, training=True)
    check(1, 2)
    with pytest.raises(StaleTapeError):  # as after any later call on the workspace
        gatecore.backward(tape)
    ws.clear()
    check(1, 2)
    check(1, 2)


def test_replay_refuses_what_the_whole_way_refuses():
    q = gatecore.prepare(gatecore.init_params("lstm", 4, 5, seed=0))
    ws = gatecore.Workspace()
    x = np.zeros((2, 3, 4), np.float32)
    h = np.zeros((1, 3, 5), np.float32)
    for _ in range(2):
        gatecore.lstm(x, q, h, h, workspace=ws)
    with pytest.raises(ShapeError, match="h0 must have shape"):
        gatecore.lstm(x, q, h[:, :2], h, workspace=ws)
    with pytest.raises(DTypeError):
        gatecore.lstm(x.astype(np.float64), q, h, h, workspace=ws)
    with pytest.raises(ShapeError):
        gatecore.lstm(x, q, (h, h), workspace=ws)
    with pytest.raises(ValueError, match="lengths"):
        gatecore.lstm(x, q, h, h, workspace=ws, lengths=[1, 2, 3])
    y, _ = gatecore.lstm(x, q, h, h, workspace=ws, lengths=[1, 2, 2])  # (whole way)
    assert not y[1:, 0].any()
    # a workspace in use elsewhere is refused by a replay too; bad input on it still gets
    # its own error first, as the whole way checks before taking the workspace
    ws._acquire()
    try:
        with pytest.raises(WorkspaceBusyError):
            gatecore.lstm(x, q, h, h, workspace=ws)
        with pytest.raises(ShapeError, match="input_size"):
            gatecore.lstm(x[..., :3], q, h, h, workspace=ws)
        with pytest.raises(DTypeError):
            gatecore.lstm(x.astype(np.float64), q, h, h, workspace=ws)
    finally:
        ws._release()
    done = []
    t = threading.Thread(target=lambda: done.append(gatecore.lstm(x, q, h, h, workspace=ws)))
    t.start()
    t.join()
    assert done and done[0][0].shape == (2, 3, 5)


def test_replay_with_x_an_earlier_output_and_int_x(monkeypatch):
    """x that is this workspace's y (read before anything is written), and x of another
    dtype (converted: the whole way, never replayed)."""
    p = gatecore.init_params("gru", 6, 6, seed=4)
    q = gatecore.prepare(p)
    ws = gatecore.Workspace()
    x = np.random.default_rng(5).standard_normal((4, 2, 6)).astype(np.float32)
    y, _ = gatecore.gru(x, q, workspace=ws)
    for _ in range(3):
        ref, _ = gatecore.gru(y.copy(), p)
        y, _ = gatecore.gru(y, q, workspace=ws)
        _same(y, ref)
    calls = _count_whole_way(monkeypatch)
    xi = np.ones((4, 2, 6), np.int64)
    for _ in range(2):
        yi, _ = gatecore.gru(xi, q, workspace=ws)
    assert calls[0] == 2
    _same(yi, gatecore.gru(xi.astype(np.float32), p)[0])


TWO_THREAD_CASES = [
    # (cell, options, T, B, I, H, the recorded function that runs the layer's time loop
    # where float32 packed products are usable (AVX2 and FMA))
    ("lstm", {}, 100, 8, 64, 64, "_item_team_forward"),  # halves of the batch on a team
    ("gru", {}, 100, 9, 32, 64, "_item_team_forward"),  # (an odd batch)
    ("lstm", {}, 600, 8, 256, 64, "_item_team_forward"),  # (step-by-step input products)
    ("lstm", {}, 20, 4, 32, 256, "_team_forward"),  # the unit-split team
    ("gru", {"reset_after": False}, 100, 8, 64, 64, "_items_forward"),  # halves, no team
    ("lstm", {}, 600, 1, 128, 128, "_overlapped_forward"),  # input product on the worker
]


@pytest.mark.parametrize("cell,opts,T,B,I,H,path", TWO_THREAD_CASES)
def test_two_thread_calls_are_replayed(monkeypatch, cell, opts, T, B, I, H, path):
    """Calls on two threads are recorded and replayed too: bit for bit the whole way's,
    also with another call's work on the same buffers in between. Once two threads are not
    allowed (GATECORE_OVERLAP=0), where the whole way may take a one-thread path with other
    bits, such a record is not replayed (found by a break-it sweep: the halves of a batch
    without a team, the overlapped input product and the one-item team differed in the last
    bits); the whole way's record made then is not replayed once they are allowed again."""
    p = gatecore.init_params(cell, I, H, num_layers=2, seed=6)
    q = gatecore.prepare(p)
    ws = gatecore.Workspace()
    rng = np.random.default_rng(7)
    x2 = rng.standard_normal((T // 2, B, I)).astype(np.float32)
    gatecore.forward(cell, x2, q, workspace=ws, training=False, **opts)  # (its buffers: a
    # buffer allocated later would drop the records)
    calls = _count_whole_way(monkeypatch)
    packed = gatecore.kernels.packed.usable(np.dtype(np.float32))
    for step in range(6):
        if step == 3:
            monkeypatch.setenv("GATECORE_OVERLAP", "0")
        if step == 4:
            monkeypatch.delenv("GATECORE_OVERLAP")
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        h0 = rng.standard_normal((2, B, H)).astype(np.float32)
        y, s, _ = gatecore.forward(cell, x, q, (h0,) + (None,) * (cell == "lstm"),
                                   workspace=ws, training=False, **opts)
        y, s = y.copy(), [a.copy() for a in s]
        before = calls[0]
        y_ref, s_ref, _ = gatecore.forward(cell, x, q, (h0,) + (None,) * (cell == "lstm"),
                                           workspace=gatecore.Workspace(), training=False,
                                           **opts)
        _same(y, y_ref)
        for a, b in zip(s, s_ref):
            _same(a, b)
        calls[0] = before
        if step == 1:  # another call's work on the same buffers between two replays
            gatecore.forward(cell, x2, q, workspace=ws, training=False, **opts)
            calls[0] = before
    (rec,) = [r for k, r in ws._replays.items() if k[3] == (T, B, I)]
    if rec.threaded:  # (recorded at the first call, at step 3 and at step 4)
        assert calls[0] == 3
    else:  # (one thread: no packed products on this CPU, or one CPU)
        assert calls[0] == 1 + (not gatecore.overlap.enabled())
    names = [getattr(fn, "__name__", "") for fn, _ in rec.ops]
    if packed and gatecore.overlap.enabled():
        assert rec.threaded and path in names


@pytest.mark.parametrize("bias", [3e38, np.inf])
def test_replay_is_as_quiet_as_the_whole_way(bias):
    """b_ih + b_hh overflowing (or inf - inf) warns in neither the whole way nor a replay
    (the sum is recorded on the team paths), also under np.seterr(all="raise")."""
    import warnings
    for T, B, H in ((100, 8, 64), (20, 4, 256)):
        p = gatecore.init_params("lstm", H, H, seed=1)
        p["bias_ih_l0"][:] = bias
        p["bias_hh_l0"][:] = bias if bias != np.inf else -np.inf
        q = gatecore.prepare(p)
        ws = gatecore.Workspace()
        x = np.ones((T, B, H), np.float32)
        with warnings.catch_warnings(), np.errstate(all="raise"):
            warnings.simplefilter("error")
            for _ in range(3):
                gatecore.lstm(x, q, workspace=ws)


def test_copied_workspaces_record_afresh():
    """copy/deepcopy/pickle of a workspace drop its records (and memoized views): the copy
    records its own calls; results stay the whole way's."""
    import copy
    import pickle
    p = gatecore.init_params("lstm", 8, 16, num_layers=2, seed=8)
    q = gatecore.prepare(p)
    ws = gatecore.Workspace()
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 2, 8)).astype(np.float32)
    for _ in range(2):
        gatecore.lstm(x, q, workspace=ws)
    assert ws._replays
    for w2 in (copy.copy(ws), copy.deepcopy(ws), pickle.loads(pickle.dumps(ws))):
        assert not (w2._replays or w2._fixed or w2._buffers)
        x2 = rng.standard_normal((3, 2, 8)).astype(np.float32)
        for _ in range(2):
            y, _ = gatecore.lstm(x2, q, workspace=w2)
            _same(y, gatecore.lstm(x2, p)[0])


def test_recorded_while_one_thread_was_forced(monkeypatch):
    """A call recorded under GATECORE_OVERLAP=0 (one thread forced) is not replayed once two
    threads are allowed again: the whole way may then take them."""
    q = gatecore.prepare(gatecore.init_params("lstm", 128, 128, seed=10))
    ws = gatecore.Workspace()
    x = np.ones((1000, 1, 128), np.float32)  # (its input product overlaps on two threads)
    calls = _count_whole_way(monkeypatch)
    monkeypatch.setenv("GATECORE_OVERLAP", "0")
    y1 = gatecore.lstm(x, q, workspace=ws)[0].copy()
    gatecore.lstm(x, q, workspace=ws)
    assert calls[0] == 1  # (recorded, then replayed)
    monkeypatch.delenv("GATECORE_OVERLAP")
    y2 = gatecore.lstm(x, q, workspace=ws)[0]
    assert calls[0] == (2 if gatecore.overlap.enabled() else 1)  # (one CPU: still one thread)
    np.testing.assert_allclose(y2, y1, rtol=1e-5, atol=1e-6)


def test_replay_keys_are_strict_about_types():
    """batch_first=1 or reset_after=1 equal True but are refused by the whole way: a record
    made with True must not take them (found by a break-it sweep)."""
    q = gatecore.prepare(gatecore.init_params("gru", 4, 5, seed=0))
    ws = gatecore.Workspace()
    x = np.ones((2, 3, 4), np.float32)
    for _ in range(2):
        gatecore.forward("gru", x, q, workspace=ws, training=False, batch_first=True)
        gatecore.gru(x, q, workspace=ws, reset_after=True)
    for bad in (1, 1.0, np.array(True), np.array([1, 0])):
        with pytest.raises(TypeError, match="batch_first must be True or False"):
            gatecore.forward("gru", x, q, workspace=ws, training=False, batch_first=bad)
    for bad in (1, 1.0):
        with pytest.raises(TypeError, match="reset_after must be True or False"):
            gatecore.gru(x, q, workspace=ws, reset_after=bad)
    y = gatecore.forward("gru", x, q, workspace=ws, training=False, batch_first=np.True_)[0]
    _same(y, gatecore.forward("gru", x, q, training=False, batch_first=True)[0])


def test_a_call_kept_on_one_thread_by_aliasing_is_not_replayed_for_others():
    """x that is this workspace's y keeps a call off the two-thread overlapped path; a record
    of it must not serve the next call with the same key and a fresh x (found by a break-it
    sweep: last bits differed)."""
    q = gatecore.prepare(gatecore.init_params("lstm", 128, 128, seed=0))
    x = np.random.default_rng(1).standard_normal((1000, 1, 128)).astype(np.float32)
    ref = gatecore.lstm(x, q, workspace=gatecore.Workspace())[0].copy()
    ws = gatecore.Workspace()
    y = gatecore.lstm(x, q, workspace=ws)[0]
    gatecore.lstm(y, q, workspace=ws)  # x aliases y
    _same(gatecore.lstm(x, q, workspace=ws)[0], ref)


def test_records_let_their_parameters_go():
    """A workspace keeps at most REPLAYS records, and none whose PreparedParams is gone (each
    holds the arrays of its parameters: a server preparing weights per request kept up to 62
    sets alive)."""
    import gc
    import weakref
    from gatecore.workspace import REPLAYS
    p = gatecore.init_params("lstm", 16, 16, seed=0)
    ws = gatecore.Workspace()
    x = np.ones((1, 1, 16), np.float32)
    kept = []
    for i in range(REPLAYS + 4):
        q = gatecore.prepare(p)
        kept.append(q)
        for _ in range(2):
            gatecore.lstm(x, q, workspace=ws)
    assert len(ws._replays) == REPLAYS
    refs = [weakref.ref(q) for q in kept]
    del kept, q
    gc.collect()
    assert all(r() is None for r in refs)
    assert not ws._replays
    q = gatecore.prepare(p)
    for _ in range(2):
        y, _ = gatecore.lstm(x, q, workspace=ws)
    assert len(ws._replays) == 1
    _same(y, gatecore.lstm(x, p)[0])


def _whole_way(monkeypatch, fn):
    """fn() with replay turned off (every call goes the whole way)."""
    with monkeypatch.context() as m:
        m.setattr(api, "_replay", lambda *a, **k: None)
        return fn()


@pytest.mark.parametrize("T,B", [(600, 1), (3, 2)])  # (overlapped input product; one thread)
def test_replay_reads_x_in_place_as_the_whole_way(monkeypatch, T, B):
    """A replay reads x in place where the whole way would (one direction, C-contiguous,
    aligned, writeable, the right dtype) and copies it otherwise; an x that overlaps this
    workspace's y goes the whole way when that decides layer 0's path (two threads or
    one), else it is copied first. The record never keeps the caller's x."""
    q = gatecore.prepare(gatecore.init_params("lstm", 128, 128, seed=3))
    rng = np.random.default_rng(4)
    ws = gatecore.Workspace()
    calls = _count_whole_way(monkeypatch)
    x = rng.standard_normal((T, B, 128)).astype(np.float32)
    gatecore.lstm(x, q, workspace=ws)
    (rec,) = ws._replays.values()
    assert rec.inplace and rec.xslots
    ro = x.copy()
    ro.flags.writeable = False
    for xi in (rng.standard_normal((T, B, 128)).astype(np.float32), ro,
               np.asfortranarray(x)):
        y = gatecore.lstm(xi, q, workspace=ws)[0]
        assert calls[0] == 1
        _same(y, gatecore.lstm(np.array(xi), q, workspace=gatecore.Workspace())[0])
        calls[0] = 1
        assert not any(a is xi for _, args in rec.ops for a in args)
    # x is this workspace's y (I = H): the whole way reads it in place and, where that keeps
    # the call off the second thread, takes another path; the reference does the same
    ws2 = gatecore.Workspace()
    y = gatecore.lstm(x, q, workspace=ws)[0]
    assert calls[0] == 1
    out = gatecore.lstm(y, q, workspace=ws)[0].copy()
    assert calls[0] == (2 if rec.alias_path else 1)
    y2 = _whole_way(monkeypatch, lambda: gatecore.lstm(x, q, workspace=ws2)[0])
    _same(out, _whole_way(monkeypatch, lambda: gatecore.lstm(y2, q, workspace=ws2)[0]))
    assert rec.alias_path == (T == 600 and gatecore.overlap.enabled())
