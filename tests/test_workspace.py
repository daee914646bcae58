"""The workspace path: results equal the plain path, and steady state allocates no arrays."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gatecore


@pytest.mark.parametrize("cell,opts", [("lstm", {}), ("gru", {"reset_after": False})])
def test_workspace_results_equal_plain_path(cell, opts, rng):
    p = gatecore.init_params(cell, 3, 5, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    ws = gatecore.Workspace(max_seq_len=8, max_batch=4)
    for T, B in [(8, 4), (3, 2), (8, 4), (6, 1)]:
        x = rng.standard_normal((T, B, 3))
        lengths = rng.integers(0, T + 1, size=B)
        dy = rng.standard_normal((T, B, 10))
        y, sn, tape = gatecore.forward(cell, x, p, lengths=lengths, **opts)
        dx, d0, dp = gatecore.backward(tape, dy)
        yw, snw, tapew = gatecore.forward(cell, x, p, lengths=lengths, workspace=ws, **opts)
        np.testing.assert_array_equal(y, yw)
        dxw, d0w, dpw = gatecore.backward(tapew, dy)
        np.testing.assert_array_equal(dx, dxw)
        for k in dp:
            np.testing.assert_array_equal(dp[k], dpw[k])


def test_workspace_grows_when_needed(rng):
    p = gatecore.init_params("gru", 3, 5, dtype=np.float64, seed=0)
    ws = gatecore.Workspace(max_seq_len=2, max_batch=1)
    y, _, _ = gatecore.forward("gru", rng.standard_normal((9, 3, 3)), p, workspace=ws)
    assert y.shape == (9, 3, 5)


ALLOC_SCRIPT = textwrap.dedent("""
    import sys, tracemalloc, numpy as np, gatecore
    from numba.core.runtime import rtsys
    from gatecore import network, overlap
    if sys.argv[1] == "overlap":  # every inference layer chunked (8 chunks at both T)
        network.OVERLAP_MACS = 0
        overlap.enabled = lambda: True
        network.overlap_pays = lambda *a: True
    else:
        network.OVERLAP_MACS = 1 << 62
    network.ITEM_MACS = 0 if sys.argv[1] in ("items", "iteam") else 1 << 62  # (halves of
    if sys.argv[1] == "items":  # the batch: one kernel call each, on either thread)
        overlap.enabled = lambda: True
        network.ITEM_TEAM_MIN_BATCH = 1 << 62
    if sys.argv[1] == "iteam":  # (on a team: the worker off, as for team below)
        overlap.enabled = lambda: False
    if sys.argv[1] == "team":  # packed products (float32, one-stage cells); the worker
        network.ITEM_TEAM_MIN_BATCH = 1 << 62  # (the unit-split team in inference too)
        network.TEAM_MACS = 0    # off: whether it starts before the caller has done its
        network.OWN_PRODUCT_MACS = 0  # share is timing, and so would be the count of the
        overlap.enabled = lambda: False  # arrays boxed for it (once per product or loop)
    for cell, opts in [("lstm", {}), ("gru", {}), ("gru", {"reset_after": False})]:
        p = gatecore.init_params(cell, 16, 32, num_layers=2, bidirectional=True, seed=0)
        ws = gatecore.Workspace(max_seq_len=60, max_batch=8)
        for T in (20, 60):
            x = np.random.default_rng(0).standard_normal((T, 8, 16)).astype(np.float32)
            dy = np.ones((T, 8, 64), np.float32)
            lengths = np.array([T, 3, 0, T - 1, 20, T, 1, 7])
            def step():
                y, sn, tape = gatecore.forward(cell, x, p, lengths=lengths, workspace=ws, **opts)
                gatecore.backward(tape, dy)
                gatecore.forward(cell, x, p, lengths=lengths, workspace=ws, training=False, **opts)
            step(); step()
            nrt0 = rtsys.get_allocation_stats()
            tracemalloc.start()
            for _ in range(3):
                step()
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            nrt1 = rtsys.get_allocation_stats()
            print(f"{cell}:{opts.get('reset_after', '-')}", "-", T, nrt1.alloc - nrt0.alloc, peak, ws.nbytes)
""")


@pytest.mark.parametrize("mode", ["serial", "overlap", "team", "items", "iteam"])
def test_steady_state_allocates_no_arrays(mode):
    """No array is allocated per call once the workspace is sized.

    Numba counts one NRT allocation per array argument boxed into a kernel call (a MemInfo
    wrapper, not data), so the check is that the count does not grow with T: nothing is
    allocated inside the time loop. tracemalloc sees every NumPy data allocation; its peak
    over three forward+backward+inference calls must stay at Python bookkeeping level (views,
    tuples), far below the smallest activation buffer. With the input products on the
    worker thread (gatecore.overlap) each layer's time loop is a few kernel calls, one per
    chunk, and their number does not grow with T either; so with packed products on two
    threads (team: one kernel call per thread and product or time loop).
    """
    env = dict(os.environ, NUMBA_NRT_STATS="1")
    out = subprocess.run([sys.executable, "-c", ALLOC_SCRIPT, mode], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.strip().splitlines()]
    assert len(rows) == 6
    for short, long in zip(rows[::2], rows[1::2]):
        assert short[3] == long[3], (short, long)  # NRT allocations independent of T
        for row in (short, long):
            peak, ws_bytes = int(row[4]), int(row[5])
            assert peak < 64 * 1024 and peak < ws_bytes / 50, row


def test_view_memo_does_not_keep_old_buffers_alive():
    """Growing T reallocates buffers; the memoized views must not pin the old ones."""
    ws = gatecore.Workspace()
    p = gatecore.init_params("lstm", 4, 8, seed=0)
    for T in range(1, 60, 3):
        x = np.zeros((T, 2, 4), np.float32)
        y, _, tape = gatecore.forward("lstm", x, p, workspace=ws)
        gatecore.backward(tape, y)
    def owner(a):  # the array that owns the memory (buffers are aligned views of one)
        while a.base is not None:
            a = a.base
        return id(a)

    pinned = {owner(v) for memo in ws._views.values() for v in memo.values()}
    current = {owner(b) for b in ws._buffers.values()}
    assert pinned <= current


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_input_that_is_an_earlier_output_of_the_same_workspace(bidirectional, num_layers, rng):
    # inference reads a C-contiguous x in place; x may be a view of this workspace's own
    # output buffer, which the call then overwrites
    H = 4 if bidirectional else 8
    kw = dict(num_layers=num_layers, bidirectional=bidirectional)
    p1 = gatecore.init_params("lstm", 8, H, seed=1, **kw)
    p2 = gatecore.init_params("lstm", 8, H, seed=2, **kw)
    x = rng.standard_normal((5, 2, 8)).astype(np.float32)
    ws = gatecore.Workspace()
    y1, _, _ = gatecore.forward("lstm", x, p1, training=False, workspace=ws)
    expected, _, _ = gatecore.forward("lstm", y1.copy(), p2, training=False)
    y2, _, _ = gatecore.forward("lstm", y1, p2, training=False, workspace=ws)
    np.testing.assert_array_equal(y2, expected)


@pytest.mark.parametrize("training", [False, True])
def test_caller_reshaping_returned_arrays_does_not_affect_later_calls(training, rng):
    """Forward memoizes its workspace views per call shape; what it returns must be the
    caller's own view objects (an in-place ``.shape`` change stays with the caller)."""
    p = gatecore.init_params("lstm", 3, 4, num_layers=2, seed=0)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    ws = gatecore.Workspace()
    want_y, (want_h, want_c), _ = gatecore.forward("lstm", x, p, training=training)
    for _ in range(3):
        y, (h, c), _ = gatecore.forward("lstm", x, p, workspace=ws, training=training)
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_array_equal(h, want_h)
        np.testing.assert_array_equal(c, want_c)
        y.shape = (-1,)
        h.shape = (-1,)
        c.shape = (2, -1)


def test_backward_returns_the_callers_own_objects(rng):
    """Backward memoizes its views per call shape too: the returned dict and arrays are the
    caller's (popping a key or reshaping in place leaves later calls alone), also across
    layers whose input sizes differ."""
    p = gatecore.init_params("gru", 7, 3, num_layers=3, bidirectional=True, seed=0)
    x = rng.standard_normal((4, 2, 7)).astype(np.float32)
    dy = rng.standard_normal((4, 2, 6)).astype(np.float32)
    _, _, tape = gatecore.forward("gru", x, p)
    want_dx, (want_dh,), want = gatecore.backward(tape, dy)
    ws = gatecore.Workspace()
    for _ in range(3):
        _, _, tape = gatecore.forward("gru", x, p, workspace=ws)
        dx, (dh,), grads = gatecore.backward(tape, dy)
        np.testing.assert_array_equal(dx, want_dx)
        np.testing.assert_array_equal(dh, want_dh)
        assert grads.keys() == want.keys()
        for key, g in grads.items():
            np.testing.assert_array_equal(g, want[key])
        grads.pop("weight_ih_l0")
        grads["weight_hh_l0"].shape = (-1,)
        dx.shape = (-1,)


def test_host_buffers_start_and_end_on_cache_lines():
    """Two threads writing different workspace buffers (a team's two halves and their
    scratch rows) never write the same cache line: every host buffer starts on a 64-byte
    boundary and owns whole lines."""
    from gatecore import workspace as wsmod

    for n, dtype in ((1, np.float32), (3, np.float64), (17, np.float32), (0, np.int64)):
        a = wsmod._host_empty(n, dtype)
        assert a.shape == (n,) and a.dtype == dtype and a.flags.c_contiguous
        assert a.ctypes.data % 64 == 0
        owner = a.base
        assert owner.nbytes >= -(-max(n * a.itemsize, 1) // 64) * 64 + 64


def test_backward_twice_without_a_workspace_keeps_the_first_results(rng):
    """Without a workspace, a second backward on the same tape leaves the first call's dx,
    dstate0 and gradients as they were (each call's results are its own); with one, they
    are views into it (documented)."""
    p = gatecore.init_params("lstm", 5, 17, seed=0)
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    y, _, tape = gatecore.forward("lstm", x, p)
    dx1, ds1, g1 = gatecore.backward(tape, np.ones_like(y))
    kept = [dx1.copy(), *(a.copy() for a in ds1), *(g1[k].copy() for k in sorted(g1))]
    dx2, ds2, g2 = gatecore.backward(tape, 2 * np.ones_like(y))
    now = [dx1, *ds1, *(g1[k] for k in sorted(g1))]
    for a, b in zip(kept, now):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(g2["weight_ih_l0"], 2 * g1["weight_ih_l0"], rtol=1e-5, atol=1e-6)
    assert not np.shares_memory(dx1, dx2)


def test_a_workspace_in_use_by_another_call_is_refused(rng):
    """A workspace serves one call at a time: a call given one that another thread's call
    holds raises WorkspaceBusyError (not buffers mixed between the two calls); once free,
    the same calls run, and a refused call changed nothing (its tape is still fresh)."""
    import threading

    p = gatecore.init_params("gru", 3, 4, dtype=np.float64, seed=0)
    x = rng.standard_normal((5, 2, 3))
    ws = gatecore.Workspace()
    y, _, tape = gatecore.forward("gru", x, p, workspace=ws)
    y = y.copy()
    held, release = threading.Event(), threading.Event()

    def other_call():  # another thread's call, in the middle of using ws
        ws._acquire()
        held.set()
        release.wait(30)
        ws._release()

    t = threading.Thread(target=other_call)
    t.start()
    try:
        assert held.wait(30)
        with pytest.raises(gatecore.WorkspaceBusyError, match="one call at a time"):
            gatecore.forward("gru", x, p, workspace=ws)
        with pytest.raises(gatecore.WorkspaceBusyError):
            gatecore.backward(tape, np.ones_like(y))
    finally:
        release.set()
        t.join()
    dx = gatecore.backward(tape, np.ones_like(y))[0]  # (still fresh: the refused calls did nothing)
    assert dx.shape == x.shape
    np.testing.assert_array_equal(gatecore.forward("gru", x, p, workspace=ws)[0], y)



def test_a_workspace_copies_and_pickles_with_a_lock_of_its_own(rng):
    """copy.deepcopy and pickle (a Forecaster holds a workspace): the copy gets its own
    free lock and works; the original is unaffected."""
    import copy
    import pickle

    p = gatecore.init_params("lstm", 2, 3, seed=0)
    x = rng.standard_normal((4, 2, 2)).astype(np.float32)
    ws = gatecore.Workspace()
    y = gatecore.forward("lstm", x, p, workspace=ws, training=False)[0].copy()
    for other in (copy.deepcopy(ws), pickle.loads(pickle.dumps(ws))):
        assert other._busy is not ws._busy
        np.testing.assert_array_equal(
            gatecore.forward("lstm", x, p, workspace=other, training=False)[0], y)
    np.testing.assert_array_equal(gatecore.forward("lstm", x, p, workspace=ws, training=False)[0], y)
