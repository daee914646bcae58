"""gatecore.overlap: chunked input products on a worker thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import gatecore
from gatecore import overlap
from conftest import products_path


@pytest.fixture(autouse=True)
def _default_sigint():
    """Python's own Ctrl-C handler for each test: a process started in the background by a
    non-interactive shell (`nohup ... &`, some CI runners) inherits SIGINT ignored, and the
    Ctrl-C tests below assume the default (gatecore itself leaves an ignored SIGINT alone)."""
    import signal
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.getsignal(signal.SIGINT)
    if old is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if old is signal.SIG_IGN:
            signal.signal(signal.SIGINT, old)


@pytest.mark.parametrize("T", [1, 2, 3, 7, 15, 16, 100, 1000, 1001])
@pytest.mark.parametrize("chunks", [1, 2, 8])
def test_chunk_bounds_cover_all_steps_in_order(T, chunks):
    b = overlap.chunk_bounds(T, chunks)
    assert b[0] == 0 and b[-1] == T
    assert all(b1 > b0 for b0, b1 in zip(b, b[1:]))
    assert len(b) - 1 <= max(chunks, 1) + 1


def test_every_chunk_is_produced_once_before_it_is_consumed():
    bounds = overlap.chunk_bounds(64)
    produced, consumed = [], []
    lock = threading.Lock()
    me = threading.get_ident()

    def produce(k0, k1, on_worker):
        with lock:
            produced.append((k0, k1, threading.get_ident()))
        assert on_worker == (threading.get_ident() != me)

    def consume(k0, k1):
        assert (k0, k1) in [(a, b) for a, b, _ in produced]
        consumed.append((k0, k1))

    overlap.run_chunked(bounds, produce, consume)
    assert sorted((a, b) for a, b, _ in produced) == list(zip(bounds, bounds[1:]))
    assert consumed == list(zip(bounds, bounds[1:]))


@pytest.mark.parametrize("where", ["first", "worker", "last"])
def test_an_error_in_produce_reaches_the_caller_and_nothing_hangs(where):
    bounds = overlap.chunk_bounds(40)
    bad = {"first": 0, "worker": 1, "last": len(bounds) - 2}[where]
    running = []

    def produce(k0, k1, on_worker):
        running.append(k0)
        if k0 == bounds[bad]:
            raise FloatingPointError("boom")

    with pytest.raises(FloatingPointError, match="boom"):
        overlap.run_chunked(bounds, produce, lambda k0, k1: None)
    n = len(running)
    overlap.run_chunked([0, 1, 2], lambda a, b, w: None, lambda a, b: None)  # worker still serves
    assert len(running) == n  # and the failed call's worker task has ended


def test_an_error_in_consume_stops_the_worker_before_returning():
    bounds = overlap.chunk_bounds(40)
    active = threading.Event()

    def produce(k0, k1, on_worker):
        active.set()

    def consume(k0, k1):
        raise KeyError("consume")

    with pytest.raises(KeyError):
        overlap.run_chunked(bounds, produce, consume)
    # the worker is idle: a new task runs at once
    done = overlap._worker_pool().submit(lambda: 1)
    assert done.result(timeout=10) == 1


def test_a_busy_worker_leaves_every_chunk_to_the_caller():
    release = threading.Event()
    blocker = overlap._worker_pool().submit(release.wait)  # the worker serves another call
    try:
        seen = []
        bounds = overlap.chunk_bounds(30)
        timer = threading.Timer(5.0, release.set)  # fails the test by time, not by a hang
        timer.start()
        overlap.run_chunked(bounds, lambda a, b, w: seen.append(threading.get_ident()),
                            lambda a, b: None)
        assert not release.is_set(), "the caller waited for the busy worker"
        assert set(seen) == {threading.get_ident()}
    finally:
        release.set()
        blocker.result(timeout=10)
        timer.cancel()


def test_the_callers_cpu_affinity_is_restored():
    import os

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    before = os.sched_getaffinity(0)
    overlap.run_chunked(overlap.chunk_bounds(20), lambda a, b, w: None, lambda a, b: None)
    assert os.sched_getaffinity(0) == before


def test_the_worker_runs_on_the_cpus_it_was_given():
    """_on_cpus skips the system call for a worker whose CPU set is already the one wanted;
    the set it remembers must be the worker's real one, whichever CPU the caller was on."""
    import os

    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs and CPU affinity")
    for _ in range(3):
        overlap.run_pair(lambda: None, lambda: None)
        if overlap._worker_cpus is None:
            continue  # (the caller ran both halves: a busy worker)
        got = overlap._worker_pool().submit(lambda: (threading.get_ident(),
                                                     os.sched_getaffinity(0))).result()
        assert got == overlap._worker_cpus


def test_threads_calling_at_once_get_the_serial_results(rng):
    p = gatecore.init_params("lstm", 4, 6, num_layers=2, dtype=np.float64, seed=1)
    xs = [rng.standard_normal((40, 3, 4)) for _ in range(4)]
    with products_path("own"):
        want = [gatecore.forward("lstm", x, p, training=False)[0].copy() for x in xs]
    got = [None] * len(xs)

    def run(i):
        ws = gatecore.Workspace()
        for _ in range(3):
            got[i] = gatecore.forward("lstm", xs[i], p, workspace=ws, training=False)[0].copy()

    with products_path("overlap"):
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(xs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-13)


def test_overlap_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("GATECORE_OVERLAP", "0")
    assert not overlap.enabled()


def _child_forward(q):
    p = gatecore.init_params("gru", 3, 4, dtype=np.float64, seed=2)
    x = np.ones((30, 2, 3))
    with products_path("overlap"):
        y = gatecore.forward("gru", x, p, training=False)[0]
    q.put(float(y.sum()))


def test_a_forked_child_gets_its_own_worker():
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork on this platform")
    overlap.run_chunked(overlap.chunk_bounds(20), lambda a, b, w: None, lambda a, b: None)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=_child_forward, args=(q,))
    proc.start()
    proc.join(timeout=120)
    assert proc.exitcode == 0
    p = gatecore.init_params("gru", 3, 4, dtype=np.float64, seed=2)
    want = gatecore.forward("gru", np.ones((30, 2, 3)), p, training=False)[0].sum()
    assert q.get(timeout=5) == pytest.approx(float(want), rel=1e-12)


def test_results_do_not_depend_on_which_thread_ran_a_chunk(rng):
    """Bitwise: each chunk is computed by the same loop whichever thread runs it."""
    p = gatecore.init_params("lstm", 5, 7, num_layers=2, bidirectional=True, seed=4)
    x = rng.standard_normal((50, 3, 5)).astype(np.float32)
    runs = []
    release = threading.Event()
    with products_path("overlap"):
        for busy in (False, True, False):
            blocker = overlap._worker_pool().submit(release.wait) if busy else None
            y, s_n, _ = gatecore.forward("lstm", x, p, lengths=[50, 20, 1], training=False)
            runs.append([y.copy(), *(v.copy() for v in s_n)])
            if blocker is not None:
                release.set()
                blocker.result(timeout=10)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


def test_the_two_threads_chunks_never_share_scratch(monkeypatch, rng):
    """A chunk that the caller claims (the worker was slow to reach it) runs while the worker
    computes a later one: the packed input product's scratch tile must be per thread (one
    shared tile gave a GRU output 0.16 off in a CI run on an overloaded machine). The worker
    is held back before each claim after its first, so the caller computes later chunks."""
    from gatecore.kernels import packed as kpacked

    first = threading.Event()
    real_claim, real_pgemm = overlap._Chunks._claim, kpacked.pgemm
    tiles = {}  # thread -> data pointers of the tiles its packed products used

    def claim(self, c, who):
        if who == 2 and c == 1:
            first.set()
        elif who == 2:
            time.sleep(0.02)
        elif c == 1:
            first.wait(5)  # let the worker take chunk 1
        return real_claim(self, c, who)

    def pgemm(*args):
        tiles.setdefault(threading.get_ident(), set()).add(args[9].ctypes.data)
        real_pgemm(*args)

    p = gatecore.init_params("gru", 5, 37, num_layers=2, bidirectional=True, seed=7)
    x = rng.standard_normal((12, 13, 5)).astype(np.float32)
    with products_path("own"):
        want = gatecore.forward("gru", x, p, training=False)[0].copy()
    monkeypatch.setattr(overlap._Chunks, "_claim", claim)
    monkeypatch.setattr(kpacked, "pgemm", pgemm)
    with products_path("overlap"):
        got = gatecore.forward("gru", x, p, training=False)[0]
    assert len(tiles) == 2, "both threads computed chunks"
    a, b = tiles.values()
    assert not a & b
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_training_calls_do_not_overlap(monkeypatch):
    """Training keeps its products on BLAS (see network.OVERLAP_MACS): no chunked calls."""
    from gatecore import network

    calls = []
    monkeypatch.setattr(overlap, "run_chunked", lambda *a: calls.append(a))
    p = gatecore.init_params("gru", 3, 4, seed=0)
    x = np.ones((20, 2, 3), np.float32)
    with products_path("overlap"):
        gatecore.forward("gru", x, p)
        assert calls == []
        gatecore.forward("gru", x, p, training=False)
    assert len(calls) == 1
    assert network.OVERLAP_MACS > 0


def test_input_that_is_a_narrower_earlier_output_of_the_same_workspace(rng):
    """x read in place may share memory with this call's y (an earlier output of the same
    workspace, a narrower row): writing y must not overwrite rows the worker has yet to read."""
    p1 = gatecore.init_params("lstm", 64, 32, seed=1)
    p2 = gatecore.init_params("lstm", 32, 96, seed=2)
    x = rng.standard_normal((100, 8, 64)).astype(np.float32)
    ws = gatecore.Workspace()
    for path in ("overlap", "own"):
        with products_path(path):
            for _ in range(5):
                y1 = gatecore.forward("lstm", x, p1, workspace=ws, training=False)[0]
                want = gatecore.forward("lstm", y1.copy(), p2, training=False)[0]
                got = gatecore.forward("lstm", y1, p2, workspace=ws, training=False)[0]
                # (the two calls may take different product paths: rounding differs; the bug
                # this guards against gave differences up to 0.1)
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_empty_batch_on_the_overlap_path():
    p = gatecore.init_params("gru", 3, 4, seed=0)
    with products_path("overlap"):
        y, (h,), _ = gatecore.forward("gru", np.zeros((5, 0, 3), np.float32), p, training=False)
    assert y.shape == (5, 0, 4) and h.shape == (1, 0, 4)


def test_no_worker_after_interpreter_shutdown_began(monkeypatch):
    """submit() refuses work once the interpreter is exiting: the caller does every chunk."""
    class Refusing:
        def submit(self, *a, **k):
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    monkeypatch.setattr(overlap, "_worker_pool", lambda: Refusing())
    seen = []
    overlap.run_chunked(overlap.chunk_bounds(20), lambda a, b, w: seen.append((a, b)),
                        lambda a, b: None)
    assert len(seen) == len(overlap.chunk_bounds(20)) - 1
    assert overlap._active == 0


def test_waiting_for_the_worker_survives_an_interrupt(monkeypatch):
    """A Ctrl-C while the caller waits for the worker: it still waits, then re-raises."""
    from concurrent.futures import Future

    fut = Future()
    calls = []

    def fake_wait(fs):
        calls.append(1)
        if len(calls) == 1:
            fut.set_result(None)
            raise KeyboardInterrupt
        return None

    monkeypatch.setattr(overlap, "futures_wait", fake_wait)
    with pytest.raises(KeyboardInterrupt):
        overlap._wait_uninterrupted(fut)
    assert len(calls) == 2 and fut.done()


def test_concurrent_callers_restore_their_cpu_sets(rng):
    import os

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    p = gatecore.init_params("lstm", 4, 6, seed=1)
    x = rng.standard_normal((40, 3, 4))
    p = {k: v.astype(np.float64) for k, v in p.items()}
    seen = []

    def run():
        before = os.sched_getaffinity(0)
        ws = gatecore.Workspace()
        for _ in range(20):
            gatecore.forward("lstm", x, p, workspace=ws, training=False)
        seen.append(os.sched_getaffinity(0) == before)

    with products_path("overlap"):
        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert seen == [True] * 3
    assert overlap._active == 0


def _sigint_after_chunk(c_fire):
    """A produce that sends SIGINT to this process after chunk c_fire, and a log."""
    import os
    import signal

    log = []

    def produce(k0, k1, on_worker):
        log.append(("p", k0))
        if k0 == c_fire:
            os.kill(os.getpid(), signal.SIGINT)

    return log, produce


@pytest.fixture
def main_thread_only():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals need the main thread")


def test_ctrl_c_stops_the_call_at_the_next_chunk_and_is_raised_after_cleanup(main_thread_only):
    import os
    import signal

    bounds = overlap.chunk_bounds(80)
    log, produce = _sigint_after_chunk(bounds[2])
    consumed = []
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    with pytest.raises(KeyboardInterrupt):
        overlap.run_chunked(bounds, produce, lambda k0, k1: consumed.append(k0))
    assert len(consumed) < len(bounds) - 1  # stopped early
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert overlap._active == 0
    if before is not None:
        assert os.sched_getaffinity(0) == before
    assert overlap._worker_pool().submit(lambda: 1).result(timeout=10) == 1  # no lock held


def test_ctrl_c_with_a_custom_handler_lets_the_call_finish(main_thread_only, rng):
    import signal

    calls = []
    old = signal.signal(signal.SIGINT, lambda s, f: calls.append(s))
    try:
        p = gatecore.init_params("lstm", 8, 16, dtype=np.float64, seed=0)
        x = rng.standard_normal((60, 4, 8))
        want = gatecore.forward("lstm", x, p, training=False)[0].copy()
        with products_path("overlap"):
            real = overlap._Chunks._run

            def run_then_signal(self, c, who):
                real(self, c, who)
                if c == 2 and not calls:
                    import os
                    os.kill(os.getpid(), signal.SIGINT)

            overlap._Chunks._run = run_then_signal
            try:
                got = gatecore.forward("lstm", x, p, training=False)[0]
            finally:
                overlap._Chunks._run = real
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)  # complete, not cut
        assert calls == [signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is not None
    finally:
        signal.signal(signal.SIGINT, old)


def test_ctrl_c_pending_when_the_call_fails_is_not_lost(main_thread_only):
    import os
    import signal

    bounds = overlap.chunk_bounds(80)

    def produce(k0, k1, on_worker):
        if k0 == bounds[1]:
            os.kill(os.getpid(), signal.SIGINT)
            raise ValueError("chunk failed")

    with pytest.raises(KeyboardInterrupt) as info:
        overlap.run_chunked(bounds, produce, lambda k0, k1: None)
    assert isinstance(info.value.__context__, ValueError)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_hold_handler_left_installed_is_put_back(main_thread_only):
    import signal

    stale = overlap._DeferSigint()
    stale.__enter__()  # as if a raising handler of another signal had cut __exit__ off
    assert signal.getsignal(signal.SIGINT) == stale._hold
    overlap.run_chunked(overlap.chunk_bounds(10), lambda a, b, w: None, lambda a, b: None)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler



@pytest.mark.parametrize("B, G, H, I, pays", [
    (8, 4, 64, 64, True),     # small: the time loop outlasts the worker's input product
    (1, 4, 128, 128, True),   # stream
    (1, 4, 128, 256, False),  # measured 10-20% faster overlapped: the model is conservative
    (8, 4, 64, 128, False),   # measured 15% slower overlapped
    (4, 4, 64, 512, False),   # measured 1.9x slower overlapped
    (8, 3, 64, 192, False),
])
def test_cost_model_of_the_overlap(B, G, H, I, pays):
    from gatecore.network import overlap_pays

    assert overlap_pays(B, G * H, H, H, I) is pays


def test_the_worker_computes_with_the_callers_flush_to_zero_mode(monkeypatch):
    """A caller that flushes denormals (x86 MXCSR FTZ/DAZ, as torch.set_flush_denormal(True)
    sets it) gets the same bits whichever thread computed a half: the worker takes the
    caller's floating-point control word for the call (it kept its own: denormals on the
    worker's units, zeros on the caller's) and gets its own back afterwards."""
    import platform

    from gatecore import network
    from gatecore.kernels import packed as kpacked

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("MXCSR is x86's")
    real_loop = network._team_loop

    def team_loop(*a):  # the worker has started (and takes its halves) before step 0
        body = real_loop(*a)

        def later(interrupted):
            time.sleep(0.05)
            body(interrupted)
        return later

    monkeypatch.setattr(network, "_team_loop", team_loop)
    p = gatecore.init_params("gru", 64, 64, seed=0)
    p["bias_ih_l0"][64:128] = 30.0  # z = 1: h_t = h_{t-1}, the denormal h0 carried along
    x = np.random.default_rng(0).standard_normal((20, 16, 64)).astype(np.float32)
    h0 = np.full((1, 16, 64), 1e-39, np.float32)
    own = overlap._worker_pool().submit(kpacked.fp_control).result()
    caller = kpacked.fp_control()
    runs = []
    try:
        with products_path("team"):
            gatecore.forward("gru", x, p, (h0,), training=False)
            kpacked.set_fp_control(caller | 0x8040)  # FTZ | DAZ
            for busy in (False, True):
                release = threading.Event()
                blocker = overlap._worker_pool().submit(release.wait) if busy else None
                runs.append(gatecore.forward("gru", x, p, (h0,), training=False)[0].copy())
                if blocker is not None:
                    release.set()
                    blocker.result(timeout=10)
    finally:
        kpacked.set_fp_control(caller)
    np.testing.assert_array_equal(runs[0], runs[1])
    assert (runs[0] == 0).all()  # flushed on both threads' units
    assert overlap._worker_pool().submit(kpacked.fp_control).result() == own


# ---- two halves of the batch (network.item_halves) and the lingering worker


@pytest.mark.parametrize("cell,opts,kw", [
    ("lstm", {}, {}),
    ("gru", {}, {}),
    ("gru", {}, {"reset_after": False}),  # two-stage: the stage-2 products by halves too
    ("lstm", {"proj_size": 3}, {}),  # projection: pbuf and mh by halves
    ("lstm", {"num_layers": 2, "bidirectional": True}, {}),
])
@pytest.mark.parametrize("B", [4, 9])
@pytest.mark.parametrize("use_lengths", [False, True])
@pytest.mark.parametrize("path", ["items", "iteam"])
def test_batch_halves_match_the_one_thread_forward(cell, opts, kw, B, use_lengths, path, rng,
                                                   monkeypatch):
    """Two halves of the batch on two threads give what one thread gives (the input
    products are the packed kernels' there, NumPy's here: the last bits may differ), and
    the halves path is the one taken: forward_items (run_pair), or for one-stage cells
    without projection on the iteam path forward_item_team (run_team; hidden size 7 and
    16, whose gate blocks of panels are adjacent: one product over all gates)."""
    from gatecore import network
    T, I = 13, 5
    H = 16 if use_lengths else 7
    p = gatecore.init_params(cell, I, H, dtype=np.float32, seed=3, **opts)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    lengths = rng.integers(1, T + 1, size=B) if use_lengths else None
    with products_path("own"):
        want = gatecore.forward(cell, x, p, training=False, lengths=lengths, **kw)
        want = (want[0].copy(), tuple(s.copy() for s in want[1]))
    taken = []
    orig_pair, orig_team = overlap.run_pair, overlap.run_team
    monkeypatch.setattr(overlap, "run_pair",
                        lambda *a, **k: taken.append(("pair", k.get("go"))) or orig_pair(*a, **k))
    monkeypatch.setattr(overlap, "run_team",
                        lambda *a, **k: taken.append(("team", k.get("go"))) or orig_team(*a, **k))
    with products_path(path):
        for _ in range(3):  # (the worker posted to while it lingers after the first call)
            y, state_n, _ = gatecore.forward(cell, x, p, training=False, lengths=lengths, **kw)
            np.testing.assert_allclose(y, want[0], rtol=1e-5, atol=1e-6)
            for a, b in zip(state_n, want[1]):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    D = 2 if opts.get("bidirectional") else 1
    one_stage = not kw and "proj_size" not in opts
    kind = "team" if path == "iteam" and one_stage else "pair"
    assert taken == [(kind, True)] * (3 * opts.get("num_layers", 1) * D)
    assert network.ITEM_MACS > 0  # (restored)


@pytest.mark.parametrize("path", ["items", "iteam"])
def test_batch_halves_are_deterministic_and_leave_other_items_alone(path, rng):
    """The same bits on every call, whether the worker or the caller ran a half, and a
    padded item's outputs are zeros as on one thread."""
    T, B, I, H = 20, 8, 6, 9
    p = gatecore.init_params("lstm", I, H, dtype=np.float32, seed=4)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    lengths = np.array([20, 1, 5, 20, 3, 20, 7, 2])
    with products_path(path):
        ys = [gatecore.forward("lstm", x, p, training=False, lengths=lengths)[0].copy()
              for _ in range(4)]
        with another_call_in_flight():
            ys.append(gatecore.forward("lstm", x, p, training=False, lengths=lengths)[0].copy())
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])
    for b, n in enumerate(lengths):
        assert not ys[0][n:, b].any()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_batch_halves_on_a_team_in_chunks_of_steps(cell, rng, monkeypatch):
    """forward_item_team over one chunk of steps per call (a job each, the two halves
    meeting after every chunk) gives the bits of one call over all steps, both directions."""
    from gatecore import network
    T, B, I, H = 11, 6, 4, 16
    p = gatecore.init_params(cell, I, H, dtype=np.float32, seed=5, bidirectional=True)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    lengths = np.array([11, 4, 0, 11, 1, 9])
    with products_path("iteam"):
        want = gatecore.forward(cell, x, p, training=False, lengths=lengths)[0].copy()
        monkeypatch.setattr(network, "TEAM_CHUNK_MACS", 1)  # (one step per chunk)
        assert len(network._team_chunks(T, 1 << 20)) == T + 1
        for _ in range(2):
            y = gatecore.forward(cell, x, p, training=False, lengths=lengths)[0]
            np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("cell", ["lstm", "peephole_lstm"])
@pytest.mark.parametrize("B", [8, 9])
def test_halves_gate_major_match_the_halves_item_by_item(cell, B, rng, monkeypatch):
    """Inference of a FUSE cell on the halves of a batch, gate-major (_item_steps_gm: one
    rule call per half and step, the states in scratch rows, read and written back at each
    chunk's ends) gives the bits of the per-item steps (ITEM_GM_UNITS = 0), with lengths 0
    .. T, both directions, two layers, halves of unequal size, one step per chunk, and a
    cell with extra parameters (the peephole LSTM's, repeated per item)."""
    from gatecore import network
    if cell not in gatecore.list_cells():
        pytest.skip(f"plugin cell {cell} not installed")
    T, I, H = 12, 5, 16
    p = gatecore.init_params(cell, I, H, dtype=np.float32, seed=9, num_layers=2,
                             bidirectional=True)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = rng.standard_normal((4, B, H)).astype(np.float32)
    lengths = np.array([12, 4, 0, 12, 1, 9, 12, 7, 3][:B])
    sizes = []
    orig = network._gm_scratch
    monkeypatch.setattr(network, "_gm_scratch",
                        lambda *a: (lambda r: sizes.append(r[0].size) or r)(orig(*a)))
    runs = []
    with products_path("iteam"):
        for units, chunk in ((0, None), (network.ITEM_GM_UNITS, None), (network.ITEM_GM_UNITS, 1)):
            monkeypatch.setattr(network, "ITEM_GM_UNITS", units)
            if chunk:
                monkeypatch.setattr(network, "TEAM_CHUNK_MACS", chunk)
            sizes.clear()
            y, sn, _ = gatecore.forward(cell, x, p, training=False, lengths=lengths,
                                        state0=(h0, None))
            assert sizes and all(bool(n) == bool(units) for n in sizes)
            runs.append([y.copy(), *(v.copy() for v in sn)])
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            np.testing.assert_array_equal(a, b)
    for b, n in enumerate(lengths):
        assert not runs[1][0][n:, b].any()


@pytest.mark.parametrize("cell", ["lstm", "peephole_lstm", "gru"])
@pytest.mark.parametrize("training", [False, True])
def test_halves_with_input_products_step_by_step_match_one_product(cell, training, rng,
                                                                   monkeypatch):
    """The halves of a batch computing their items' input products step by step
    (_jit_input, FUSE cells above ITEM_JIT_BYTES; inference and a training forward) give the
    bits of the layer's input product over all steps (halves of four rows: blocks of four
    in both products), outputs, states and every gradient, lengths and both directions;
    a cell that is not FUSE (GRU) never takes it."""
    from gatecore import network
    from gatecore.kernels.factory import cpu_kernels
    if cell not in gatecore.list_cells():
        pytest.skip(f"plugin cell {cell} not installed")
    T, B, I, H = 10, 8, 7, 16
    p = gatecore.init_params(cell, I, H, dtype=np.float32, seed=10, num_layers=2,
                             bidirectional=True)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dy = rng.standard_normal((T, B, 2 * H)).astype(np.float32)
    lengths = np.array([10, 4, 0, 10, 1, 9, 10, 7])
    jits = []
    spied = set()

    def kernels(spec, dtype):  # (the forward_item_team calls' jit argument, recorded)
        mod = cpu_kernels(spec, dtype)
        if mod not in spied:
            spied.add(mod)
            orig = mod.forward_item_team
            monkeypatch.setattr(mod, "forward_item_team",
                                lambda *a: jits.append(a[-2]) or orig(*a))
        return mod
    monkeypatch.setattr(network, "cpu_kernels", kernels)
    runs = []
    with products_path("team" if training else "iteam"):
        network.ITEM_TEAM_MIN_BATCH = 2  # (products_path restores it; monkeypatch
        # would put back products_path's value after that)
        for limit in (1 << 62, 0):
            monkeypatch.setattr(network, "ITEM_JIT_BYTES", limit)
            jits.clear()
            y, sn, tape = gatecore.forward(cell, x, p, training=training, lengths=lengths)
            run = [y.copy(), *(v.copy() for v in sn)]
            if training:
                dx, ds0, dp = gatecore.backward(tape, dy)
                run += [dx.copy(), *(v.copy() for v in ds0), *(v.copy() for v in dp.values())]
            assert jits and all(j == (limit == 0 and cell != "gru") for j in jits)
            runs.append(run)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_training_forward_as_halves_of_the_batch_keeps_the_team_tape(cell, rng, monkeypatch):
    """A team's training forward run as the halves of the batch (forward_item_team) leaves
    the tape the unit-split team leaves: outputs and every gradient the same bits (8 items:
    blocks of 4 rows in both; a block of one row sums k in another order, _k1i)."""
    from gatecore import network
    T, B, I, H = 9, 8, 5, 16
    p = gatecore.init_params(cell, I, H, dtype=np.float32, seed=6, num_layers=2,
                             bidirectional=True)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dy = rng.standard_normal((T, B, 2 * H)).astype(np.float32)
    lengths = np.array([9, 2, 0, 9, 5, 1, 8, 3])
    runs = []
    orig = network.item_team_cell
    for halves in (False, True):
        with products_path("team"):
            if halves:
                network.ITEM_TEAM_MIN_BATCH = 2  # (products_path restores it; monkeypatch
                # would put back products_path's value after that)
            taken = []
            monkeypatch.setattr(network, "item_team_cell",
                                lambda *a: taken.append(orig(*a)) or taken[-1])
            y, sn, tape = gatecore.forward(cell, x, p, lengths=lengths)
            dx, ds0, dp = gatecore.backward(tape, dy)
            assert taken == [halves]
            runs.append([y.copy(), dx.copy(), *(s.copy() for s in ds0),
                         *(v.copy() for v in dp.values())])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("H2", [16, 32])
@pytest.mark.parametrize("jit", [False, True])
def test_halves_on_a_team_read_an_output_of_their_own_workspace(cell, H2, jit, rng,
                                                                 monkeypatch):
    """x that is this workspace's previous y (overwritten by this call's y) gives the bits
    of a copy: the input product is complete before either half writes y, also where it
    would be computed step by step (ITEM_JIT_BYTES: not with such an x; with a wider y than
    x, a step's y rows overlap later steps' x rows)."""
    from gatecore import network
    T, B, H = 30, 8, 16
    p1 = gatecore.init_params(cell, 5, H, dtype=np.float32, seed=7)
    p2 = gatecore.init_params(cell, H, H2, dtype=np.float32, seed=8)
    x = rng.standard_normal((T, B, 5)).astype(np.float32)
    if jit:
        monkeypatch.setattr(network, "ITEM_JIT_BYTES", 0)
    with products_path("iteam"):
        ws = gatecore.Workspace()
        gatecore.forward(cell, np.zeros((T, B, H), np.float32), p2, workspace=ws,
                         training=False)  # (y's buffer sized for H2 first)
        y1 = gatecore.forward(cell, x, p1, workspace=ws, training=False)[0]
        assert np.may_share_memory(y1, ws._buffers["y0"])
        want = gatecore.forward(cell, y1.copy(), p2, training=False)[0].copy()
        got = gatecore.forward(cell, y1, p2, workspace=ws, training=False)[0]
        np.testing.assert_array_equal(got, want)


class another_call_in_flight:
    """The worker counted as serving another call (``overlap._active``): a call takes the
    halves path and its caller runs both halves."""

    def __enter__(self):
        with overlap._active_lock:
            overlap._active += 1

    def __exit__(self, *exc):
        with overlap._active_lock:
            overlap._active -= 1


def test_a_lingering_worker_takes_the_next_job_without_the_pool(monkeypatch):
    """After a task the worker spins (LINGER_US) and takes a posted job; without linger
    it returns to its pool (state 0) after its task."""
    from gatecore.kernels import packed as kp
    monkeypatch.setattr(overlap, "LINGER_US", 200000.0)  # (0.2 s: a loaded machine too)
    ran = []

    def hand_over(job):  # posted if the worker lingers, else through its pool
        if overlap._post(job):
            kp.hand_go_now(overlap.hand())
            return True
        job.future = overlap._worker_pool().submit(overlap._serve, job)
        return False

    hand_over(overlap._Job(None, lambda: ran.append(1), None))
    deadline = time.perf_counter() + 10
    while overlap._hand[kp.HAND_STATE] != 1 and time.perf_counter() < deadline:
        time.sleep(1e-4)
    assert overlap._hand[kp.HAND_STATE] == 1  # lingering after its task
    job = overlap._Job(None, lambda: ran.append(threading.get_ident()), None)
    assert hand_over(job)
    job.result()
    assert ran[-1] != threading.get_ident()
    job = overlap._Job(None, lambda: ran.append(2), None, linger=False)
    hand_over(job)
    job.result()
    deadline = time.perf_counter() + 10
    while overlap._hand[kp.HAND_STATE] != 0 and time.perf_counter() < deadline:
        time.sleep(1e-4)
    assert overlap._hand[kp.HAND_STATE] == 0 and ran[-1] == 2  # (no linger after it)


def test_an_error_after_a_task_does_not_leave_its_caller_waiting(monkeypatch):
    """_linger failing on the worker (here: a bad spin count) marks the job done anyway."""
    def boom(done):
        raise OverflowError("spins")
    monkeypatch.setattr(overlap, "_linger", boom)
    job = overlap._Job(None, lambda: None, None)
    fut = overlap._worker_pool().submit(overlap._serve, job)
    job.result()
    with pytest.raises(OverflowError):
        fut.result(timeout=10)


def test_worker_spin_setting_is_bounded(monkeypatch):
    for value, want in (("inf", 1000.0), ("nan", 1000.0), ("-5", 0.0), ("1e30", 1e6),
                        ("x", 1000.0), ("250", 250.0)):
        monkeypatch.setenv("GATECORE_WORKER_SPIN_US", value)
        assert overlap._env_linger_us() == want


def test_a_cancelled_posted_job_never_runs():
    from gatecore.kernels import packed as kp
    job = overlap._Job(None, lambda: pytest.fail("ran"), None)
    assert job.cancel() and job.cancelled()
    job.run()  # (the worker finding it cancelled)
    job.wait()
    assert job._state[0] == 3
    probe = np.zeros(1, np.int64)
    assert not kp.wait_at_least(probe.ctypes.data, 0, 1, 3)
