"""The packed products (gatecore.kernels.packed) against float64 NumPy, alone and in teams."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import gatecore
from gatecore import network, overlap
from gatecore.kernels import packed as kp
from conftest import products_path


def _packed(w):
    """w [N, K] (weight_hh's layout) packed by rows."""
    bp = np.empty(kp.packed_size(w.shape[1], w.shape[0]), np.float32)
    kp.pack_rows(w, 0, w.shape[0], bp)
    return bp


def _check(c, a, w):
    ref = a.astype(np.float64) @ w.T.astype(np.float64)
    # float32 sums of K products: error about sqrt(K) ulps of the sum of |terms|
    scale = np.abs(a).astype(np.float64) @ np.abs(w.T).astype(np.float64)
    np.testing.assert_allclose(c, ref, rtol=0, atol=float(1e-6 * (scale.max(initial=0) + 1)))


@settings(max_examples=60)
@given(M=st.integers(0, 40), K=st.integers(0, 70), N=st.integers(1, 70),
       seed=st.integers(0, 2**31 - 1))
def test_pgemm_matches_numpy(M, K, N, seed):
    """Every row remainder (blocks of 6, 4, 1), column tail (N not a multiple of 16), K = 0."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    c = np.full((M, N), np.nan, np.float32)
    P = -(-N // kp.NR)
    kp.pgemm(a, 0, _packed(w), c, M, K, N, 0, P, np.zeros(96, np.float32))
    _check(c, a, w)


@pytest.mark.parametrize("M, K, N", [(100, 1100, 40), (200, 2049, 17), (97, 513, 33)])
def test_pgemm_blocks_long_sums(M, K, N):
    """Many rows and K past 1024: slices of k accumulate into C (also through the tile)."""
    rng = np.random.default_rng(M)
    a = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    c = np.full((M, N), np.nan, np.float32)
    kp.pgemm(a, 0, _packed(w), c, M, K, N, 0, -(-N // 16), np.zeros(96, np.float32))
    _check(c, a, w)


def test_pgemm_offset_and_panel_range():
    """A read from an offset of a larger array; only the requested panels are written."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 7, 20)).astype(np.float32)
    w = rng.standard_normal((40, 20)).astype(np.float32)
    c = np.full((7, 40), np.nan, np.float32)
    kp.pgemm(base, 2 * 7 * 20, _packed(w), c, 7, 20, 40, 1, 3, np.zeros(96, np.float32))
    assert np.isnan(c[:, :16]).all()
    _check(c[:, 16:], base[2], w[16:])


@settings(max_examples=60)
@given(M=st.integers(0, 40), K=st.integers(0, 70), N=st.integers(1, 70), bias=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
@example(M=200, K=1100, N=40, bias=False, seed=0)  # (slices of k: C accumulates after I)
@example(M=200, K=1100, N=17, bias=True, seed=1)
def test_pgemm_init_starts_from_its_source(M, K, N, bias, seed):
    """C = I + A @ W, I a matrix with its own row stride or (stride 0) one bias row, into
    columns of a wider C; K = 0 gives I."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    src = rng.standard_normal((max(M, 1), N + 5)).astype(np.float32)
    ldci = 0 if bias else N + 5
    init = np.broadcast_to(src[0, 2:2 + N], (M, N)) if bias else src[:M, 2:2 + N]
    c = np.full((M, N + 4), np.nan, np.float32)
    kp.pgemm_init(a, 0, _packed(w), c, 3, N + 4, M, K, N, 0, -(-N // kp.NR),
                  np.zeros(96, np.float32), True, src, 2, ldci, kp.KCMAX, kp.AFLOATS)
    assert np.isnan(c[:, :3]).all() and np.isnan(c[:, 3 + N:]).all()
    ref = init.astype(np.float64) + a.astype(np.float64) @ w.T.astype(np.float64)
    scale = np.abs(a).astype(np.float64) @ np.abs(w.T).astype(np.float64) + np.abs(init)
    np.testing.assert_allclose(c[:, 3:3 + N], ref, rtol=0,
                               atol=float(1e-6 * (scale.max(initial=0) + 1)))


_SHAPES = [(M, K, N, p0, p1) for M in (1, 4, 6, 8, 13, 64, 100) for K in (1, 7, 64, 300)
           for N, p0, p1 in ((16, 0, 1), (32, 0, 2), (40, 0, 3), (80, 0, 5), (80, 1, 5),
                             (80, 1, 4), (96, 3, 6), (1280, 0, 80), (29, 0, 2), (125, 0, 8),
                             (125, 1, 8))]


def _pgemm_results():
    out = []
    for i, (M, K, N, p0, p1) in enumerate(_SHAPES):
        rng = np.random.default_rng(i)
        a = rng.standard_normal((M, K)).astype(np.float32)
        w = rng.standard_normal((N, K)).astype(np.float32)
        c = np.zeros((M, N), np.float32)
        # (kcmax 64: products of more than 96 rows add slices of k into C, the acc branches)
        kp.pgemm(a, 0, _packed(w), c, M, K, N, p0, p1, np.zeros(96, np.float32), 64,
                 kp.AFLOATS)
        out.append(c)
        init = rng.standard_normal((M, N + 3)).astype(np.float32)
        c = np.zeros((M, N), np.float32)
        kp.pgemm_init(a, 0, _packed(w), c, 0, N, M, K, N, p0, p1, np.zeros(96, np.float32),
                      True, init, 1, N + 3, 64, kp.AFLOATS)
        out.append(c)
    return out


_CHILD = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
import test_packed
from gatecore.kernels import packed
assert not packed.WIDE
np.savez({out!r}, *test_packed._pgemm_results())
"""


@pytest.mark.skipif(not kp.WIDE, reason="no AVX-512 target: only the eight-wide kernels")
def test_avx2_and_avx512_kernels_give_the_same_bits(tmp_path):
    """A target without AVX-512 (NUMBA_CPU_FEATURES without it, in a child process) runs
    the eight-wide kernels only; with AVX-512 pgemm pairs full panels (_w6s, _w4, _w1xi).
    Every element is the same chain of FMAs either way: the same bits, for every row
    remainder, odd panel ranges and a last panel that is not full."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import llvmlite.binding as ll

    feats = ",".join(f if "avx512" not in f else "-" + f[1:]
                     for f in ll.get_host_cpu_features().flatten().split(","))
    out = tmp_path / "avx2.npz"
    env = dict(os.environ, NUMBA_CPU_FEATURES=feats, NUMBA_CACHE_DIR=str(tmp_path / "nb"))
    tests = str(Path(__file__).parent)
    subprocess.run([sys.executable, "-c", _CHILD.format(tests=tests, out=str(out))], env=env,
                   check=True, timeout=600)
    got = np.load(out)
    for i, c in enumerate(_pgemm_results()):
        np.testing.assert_array_equal(got[f"arr_{i}"], c, err_msg=str(_SHAPES[i // 2]))


@pytest.mark.skipif(not kp.WIDE, reason="pgemm_tn is for AVX-512 targets")
@settings(max_examples=40, deadline=None)
@given(M=st.integers(1, 200), K=st.integers(0, 300), nq=st.integers(1, 4),
       q0=st.integers(0, 2), seed=st.integers(0, 2**31 - 1))
@example(M=250, K=300, nq=3, q0=1, seed=1)  # a second block of rows (TN_MC = 192)
def test_pgemm_tn_matches_numpy(M, K, nq, q0, seed):
    """C = X^T D for every row remainder (blocks of 6, 4, 1 .. 3), K past a slice (128) and
    K = 0, a column range of pairs starting past 0, wider row strides than the shapes; columns
    outside the range are not written."""
    rng = np.random.default_rng(seed)
    N = 32 * (q0 + nq) + 7
    x = rng.standard_normal((K, M + 3)).astype(np.float32)
    d = rng.standard_normal((K, N)).astype(np.float32)
    c = np.full((M, N + 5), np.nan, np.float32)
    xp, dp = (np.empty(n, np.float32) for n in kp.tn_scratch(32 * nq))
    kp.pgemm_tn(x, 1, M + 3, d, 0, N, c, 0, N + 5, M, K, q0, q0 + nq, xp, dp)
    cols = slice(32 * q0, 32 * (q0 + nq))
    assert np.isnan(c[:, :cols.start]).all() and np.isnan(c[:, cols.stop:]).all()
    _check(c[:, cols], np.ascontiguousarray(x[:, 1:M + 1].T), np.ascontiguousarray(d[:, cols].T))


@pytest.mark.skipif(not kp.WIDE, reason="pgemm_tn is for AVX-512 targets")
@pytest.mark.parametrize("Ma,Nb", [(128, 32), (32, 100), (192, 48), (64, 64), (4, 64),
                                   (96, 45), (40, 35)])
def test_weight_gradient_halves(Ma, Nb):
    """backward's two halves of dW = a^T b (network._tn_plan/_tn_half): direct or through
    the transpose, split by pairs of panels or by rows (the wider operand packed by halves),
    or NumPy's (neither side whole pairs): together the whole product."""
    rng = np.random.default_rng(Ma * 1000 + Nb)
    K = 301
    a = rng.standard_normal((K, Ma)).astype(np.float32)
    b = rng.standard_normal((K, Nb)).astype(np.float32)
    ws = gatecore.Workspace()
    ws._begin(1, 1)
    plan = network._tn_plan(a, b, ws, "t")
    if Nb % 32 and Ma % 32:
        assert plan is None
        return
    assert plan[0] == ("direct" if Nb % 32 == 0 else "t")
    assert plan[3] == (Ma > Nb if Nb % 32 == 0 else Nb > Ma)
    out = np.full((Ma, Nb), np.nan, np.float32)
    for h in (1, 0):
        network._tn_half(plan, a, b, out, h, network._tn_scratch(ws, np.float32, h, max(Ma, Nb)))
    _check(out, np.ascontiguousarray(a.T), np.ascontiguousarray(b.T))


def test_pack_cols_is_pack_rows_of_the_transpose():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((37, 21)).astype(np.float32)
    a = np.empty(kp.packed_size(21, 37), np.float32)
    b = np.empty_like(a)
    kp.pack_rows(w, 0, 37, a)
    kp.pack_cols(np.ascontiguousarray(w.T), b)
    np.testing.assert_array_equal(a, b)
    assert (a.reshape(3, 21, 16)[2, :, 5:] == 0).all()  # zero past N


@settings(max_examples=40)
@given(R=st.integers(1, 150), K=st.integers(0, 40), row0=st.integers(0, 5),
       seed=st.integers(0, 2**31 - 1))
@example(R=64, K=3, row0=0, seed=0).via("pack_cols: one group of four panels")
@example(R=143, K=5, row0=1, seed=1).via("two groups, four whole panels, a tail")
def test_packing_layout(R, K, row0, seed):
    """pack_rows (from row row0) and pack_cols give the layout bp[p, k, j] = W[k, 16 p + j],
    zero past N, whole panels or a tail (pack_cols: groups of PACK_COLS_GROUP panels first)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((R + row0, K)).astype(np.float32)
    n = R
    P = -(-n // 16)
    ref = np.zeros((P, K, 16), np.float32)
    for p in range(P):
        for j in range(min(16, n - 16 * p)):
            ref[p, :, j] = w[row0 + 16 * p + j]
    a = np.full(kp.packed_size(K, n), np.nan, np.float32)
    kp.pack_rows(w, row0, n, a)
    np.testing.assert_array_equal(a.reshape(P, K, 16), ref)
    wt = np.ascontiguousarray(w[row0:].T)  # [K, n]: packed by columns, the same panels
    b = np.full_like(a, np.nan)
    kp.pack_cols(wt, b)
    np.testing.assert_array_equal(b.reshape(P, K, 16), ref)


@pytest.mark.parametrize("with_worker", [True, False])
@pytest.mark.parametrize("with_bias", [False, True])
def test_team_products_match_numpy(with_worker, with_bias, monkeypatch):
    """A team of many products: the same results whether the worker shares them or not,
    with or without a bias added to every row."""
    monkeypatch.setattr(overlap, "enabled", lambda: with_worker)
    rng = np.random.default_rng(2)
    M, K, N, T = 9, 33, 72, 50
    a = rng.standard_normal((T, M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    bp = _packed(w)
    c = np.zeros((T, M, N), np.float32)
    out = np.zeros((M, N), np.float32)
    flags = np.zeros(kp.FLAGS, np.int64)
    tiles = np.zeros((2, 96), np.float32)
    split = 2
    bias = rng.standard_normal(N).astype(np.float32) if with_bias else np.zeros(0, np.float32)

    def body():
        for t in range(T):
            kp.team_step(flags, t + 1, a, t * M * K, bp, out, M, K, N, split, tiles[0], bias,
                         overlap.hand())  # (says go to a posted worker)
            c[t] = out

    overlap.run_team(kp.team_worker, (flags, a, bp, out, M, K, N, split, tiles[1], bias), flags,
                     lambda interrupted: body(), go=True)
    for t in range(T):
        if with_bias:
            ref = a[t].astype(np.float64) @ w.T.astype(np.float64) + bias
            np.testing.assert_allclose(c[t], ref, rtol=2e-5, atol=2e-4)
        else:
            _check(c[t], a[t], w)
    assert flags[kp.STOP] == (1 if with_worker else 0)


def test_team_stops_its_worker_when_the_body_raises():
    """An error in the body stops the worker before run_team raises; the worker thread is
    free for the next call."""
    M, K, N = 4, 8, 32
    a = np.ones((M, K), np.float32)
    bp = _packed(np.ones((N, K), np.float32))
    out = np.zeros((M, N), np.float32)
    flags = np.zeros(kp.FLAGS, np.int64)
    tiles = np.zeros((2, 96), np.float32)

    def body(interrupted):
        kp.team_step(flags, 1, a, 0, bp, out, M, K, N, 1, tiles[0], no_bias,
                     0)  # (no hand: run_team without go=True said go at once)
        raise RuntimeError("boom")

    no_bias = np.zeros(0, np.float32)
    with pytest.raises(RuntimeError, match="boom"):
        overlap.run_team(kp.team_worker, (flags, a, bp, out, M, K, N, 1, tiles[1], no_bias),
                         flags, body)
    assert (out == K).all()
    done = threading.Event()
    overlap._worker_pool().submit(done.set)
    assert done.wait(10)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_team_inference_matches_the_taped_forward(cell):
    """Inference on the team path (packed products, two threads) against the taped forward
    (BLAS) of the same call: two layers, both directions, lengths, prepared or plain."""
    rng = np.random.default_rng(3)
    p = gatecore.init_params(cell, 24, 40, num_layers=2, bidirectional=True, seed=4)
    x = rng.standard_normal((12, 7, 24)).astype(np.float32)
    lengths = [12, 5, 0, 12, 1, 9, 11]
    ref, sref, _ = gatecore.forward(cell, x, p, lengths=lengths)
    ref = ref.copy()
    with products_path("team"):
        for params in (p, gatecore.prepare(p), gatecore.prepare(p)):
            y, s_n, tape = gatecore.forward(cell, x, params, lengths=lengths, training=False)
            assert tape is None
            np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
            for a, b in zip(s_n, sref):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_team_is_for_float32_inference_of_one_stage_cells_only():
    from gatecore.params import Dims
    from gatecore.registry.manager import get_registry

    reg = get_registry()
    lstm = reg.cells()["lstm"].spec
    dims = Dims(input_size=512, hidden_size=512, num_layers=1, num_directions=1, proj_size=0,
                bias=True)
    assert network.team_products(lstm, dims, 64, np.float32, False)
    assert not network.team_products(lstm, dims, 64, np.float64, False)
    small = Dims(input_size=64, hidden_size=64, num_layers=1, num_directions=1, proj_size=0,
                 bias=True)
    assert not network.team_products(lstm, small, 8, np.float32, False)  # small steps: own path
    proj = Dims(input_size=512, hidden_size=512, num_layers=1, num_directions=1, proj_size=256,
                bias=True)
    assert not network.team_products(lstm, proj, 64, np.float32, False)
    from gatecore.kernels import blas
    assert network.team_products(lstm, dims, 64, np.float32, True) == blas.numpy_blas_available()


def test_one_item_takes_the_team_only_for_long_inference_with_two_cpus(monkeypatch):
    """One item: a team in inference from TEAM_ONE_MACS per step over TEAM_ONE_MIN_STEPS
    steps or more, never in training, with short sequences or without a second CPU."""
    from gatecore.params import Dims
    from gatecore.registry.manager import get_registry

    if not kp.usable(np.float32):
        pytest.skip("no packed products on this CPU")
    lstm = get_registry().cells()["lstm"].spec
    big = Dims(input_size=256, hidden_size=256, num_layers=1, num_directions=1, proj_size=0,
               bias=True)
    mid = Dims(input_size=128, hidden_size=128, num_layers=1, num_directions=1, proj_size=0,
               bias=True)
    monkeypatch.setattr(overlap, "enabled", lambda: True)
    assert network.team_products(lstm, big, 1, np.float32, False, 300)
    assert not network.team_products(lstm, big, 1, np.float32, False, 64)  # short
    assert not network.team_products(lstm, big, 1, np.float32, True, 300)  # training
    assert not network.team_products(lstm, mid, 1, np.float32, False, 1000)  # small steps
    monkeypatch.setattr(overlap, "enabled", lambda: False)
    assert not network.team_products(lstm, big, 1, np.float32, False, 300)  # one CPU


def test_team_training_is_quiet_and_restores_numpy_blas_threads():
    """Backward on the team path: overflow gives inf silently (also in the half on the
    worker thread, under -W error), and NumPy's OpenBLAS thread count is what it was, after
    calls from the main thread and from another thread."""
    import warnings

    from threadpoolctl import threadpool_info

    def counts():
        return [d["num_threads"] for d in threadpool_info() if d["internal_api"] == "openblas"]

    before = counts()
    p = gatecore.init_params("lstm", 128, 256, seed=0)
    x = np.random.default_rng(0).standard_normal((20, 64, 128)).astype(np.float32)

    def run():
        y, _, tape = gatecore.forward("lstm", x, p)
        return gatecore.backward(tape, np.full(y.shape, 3e38, np.float32))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            run()
    assert counts() == before
    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    assert not t.is_alive() and counts() == before


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_team_loop_in_chunks_gives_the_same_results(cell, monkeypatch):
    """The team's time loops run in chunks of steps (Ctrl-C answered between them): one step
    per kernel call gives bitwise what one call over all steps gives, forward and backward."""
    rng = np.random.default_rng(5)
    p = gatecore.init_params(cell, 16, 48, num_layers=2, bidirectional=True, seed=6)
    x = rng.standard_normal((9, 5, 16)).astype(np.float32)
    dy = rng.standard_normal((9, 5, 96)).astype(np.float32)
    out = []
    for chunk in (1 << 62, 1):
        monkeypatch.setattr(network, "TEAM_CHUNK_MACS", chunk)
        with products_path("team"):
            y, _, tape = gatecore.forward(cell, x, p, lengths=[9, 2, 0, 9, 4])
            dx, _, dp = gatecore.backward(tape, dy)
            out.append([y.copy(), dx.copy(), *(dp[k].copy() for k in sorted(dp))])
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_packing_on_two_threads_keeps_the_bits(cell, monkeypatch):
    """Large weights are packed two at once on the two threads (forward's W_ih and W_hh by
    rows, backward's by columns; network.PAIR_PACK_BYTES): the same bits as one after the
    other, for inference and training, two layers and directions, a plain mapping."""
    rng = np.random.default_rng(4)
    p = gatecore.init_params(cell, 24, 40, num_layers=2, bidirectional=True, dtype=np.float32,
                             seed=2)
    x = rng.standard_normal((6, 5, 24)).astype(np.float32)
    dy = rng.standard_normal((6, 5, 80)).astype(np.float32)
    out = []
    for limit in (0, 1 << 62):
        monkeypatch.setattr(network, "PAIR_PACK_BYTES", limit)
        with products_path("team"):
            y_inf = gatecore.forward(cell, x, p, training=False)[0].copy()
            y, _, tape = gatecore.forward(cell, x, p)
            dx, _, dp = gatecore.backward(tape, dy)
        out.append([y_inf, y.copy(), dx.copy(), *(dp[k].copy() for k in sorted(dp))])
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru", "peephole_lstm"])
@pytest.mark.parametrize("B", [1, 3, 5])
def test_split_backward_products_off_the_team_path(cell, B, monkeypatch):
    """Training whose steps are not a team's (one item, or small steps) runs backward's
    products over all steps as two halves above network.SPLIT_MACS: the same gradients (to
    float32 rounding) as NumPy's OpenBLAS below it, for every one-stage cell, two layers,
    both directions, lengths, dy and dh_n/dc_n."""
    from gatecore.registry.manager import get_registry

    if cell not in get_registry().cells():
        pytest.skip(f"{cell} not registered")
    rng = np.random.default_rng(5)
    p = gatecore.init_params(cell, 6, 16, num_layers=2, bidirectional=True, seed=2)
    x = rng.standard_normal((40, B, 6)).astype(np.float32)
    dy = rng.standard_normal((40, B, 32)).astype(np.float32)
    lengths = [40, 17, 1, 0, 33][:B]  # (B = 5: the packed own products, network.packed_own)
    S = get_registry().get(cell).num_states
    dsn = tuple(rng.standard_normal((4, B, 16)).astype(np.float32) for _ in range(S))
    calls = []
    orig = network._split_grads
    monkeypatch.setattr(network, "_split_grads", lambda *a, **k: calls.append(1) or orig(*a, **k))
    out = {}
    for macs in (1 << 62, 0):
        monkeypatch.setattr(network, "SPLIT_MACS", macs)
        y, _, tape = gatecore.forward(cell, x, p, lengths=lengths)
        assert not tape.team
        dx, ds0, dp = gatecore.backward(tape, dy, dsn)
        out[macs] = [dx.copy(), *(s.copy() for s in ds0), *(dp[k].copy() for k in sorted(dp))]
    assert len(calls) == 4  # (two layers, two directions; none without the split)
    for a, b in zip(out[1 << 62], out[0]):
        np.testing.assert_allclose(b, a, rtol=2e-5, atol=2e-5 * max(1.0, np.abs(a).max()))


def test_borrow_views_the_same_memory_without_counting_references():
    """packed.borrow: the same array (data, shape, strides) whose views and calls count no
    references; the owner's count is unchanged after many borrowed views and calls."""
    import sys

    from numba import njit

    @njit(nogil=True)
    def touch(v, i):
        v[i] += 1.0
        return v[: i + 1].sum()

    @njit(nogil=True)
    def work(arr, n):
        b = kp.borrow(arr)
        s = 0.0
        for i in range(n):
            row = b[i % b.shape[0]]
            s += touch(row, i % row.shape[0])
        return s, b.shape[0], b.strides[1]

    a = np.zeros((5, 7), np.float32)[:, ::2]  # (not contiguous: strides carried over)
    before = sys.getrefcount(a)
    s, rows, stride = work(a, 1000)
    after = sys.getrefcount(a)
    assert after == before
    assert (rows, stride) == (5, 8)
    ref = np.zeros((5, 7), np.float32)[:, ::2]
    total = 0.0
    for i in range(1000):
        row = ref[i % 5]
        row[i % row.shape[0]] += 1.0
        total += float(row[: i % row.shape[0] + 1].sum())
    assert s == total
    np.testing.assert_array_equal(a, ref)

    @njit
    def view_of_borrowed(arr):  # (what the kernels must never do: see borrow's docstring)
        return kp.borrow(arr)[1:]

    @njit
    def view_of_owned(arr):
        return arr[1:]

    x = np.arange(6.0)
    assert view_of_owned(x).base is not None  # (boxed with its meminfo: it owns a reference)
    assert view_of_borrowed(x).base is None  # (no meminfo: it counts none)


def test_team_chunks_scale_and_cap():
    """_team_chunks: chunks of about scale * TEAM_CHUNK_MACS multiply-adds, 1 to
    TEAM_CHUNK_MAX_STEPS steps each, covering 0 .. T in order."""
    macs = network.TEAM_CHUNK_MACS
    assert network._team_chunks(100, macs // 8) == list(range(0, 100, 8)) + [100]
    assert network._team_chunks(100, macs // 8, 4) == list(range(0, 100, 32)) + [100]
    assert network._team_chunks(5, 4 * macs) == [0, 1, 2, 3, 4, 5]
    big = network._team_chunks(1000, 1, 4)
    assert big == list(range(0, 1000, network.TEAM_CHUNK_MAX_STEPS)) + [1000]
    assert network._team_chunks(0, 1) == [0]


@pytest.mark.parametrize("cell", ["lstm", "gru", "peephole_lstm"])
@pytest.mark.parametrize("B", [1, 5])
def test_own_path_small_input_product_leaves_numpy_blas_alone(cell, B, monkeypatch):
    """A float32 call on the kernels' own path computes an input product below
    network.OWN_PACKED_INPUT_MACS by the packed products on its own thread, never NumPy's
    BLAS (whose threads would spin on after it and take a core from the next call's worker):
    inference uses no NumPy product at all and equals the taped forward; above the threshold
    OpenBLAS computes it, equal to float32 rounding; both agree with float64."""
    from gatecore.registry.manager import get_registry

    if cell not in get_registry().cells():
        pytest.skip(f"{cell} not registered")
    if not kp.usable(np.float32):
        pytest.skip("no packed products on this CPU (no AVX2 and FMA)")
    rng = np.random.default_rng(9)
    p = gatecore.init_params(cell, 7, 12, num_layers=2, bidirectional=True, seed=3)
    x = rng.standard_normal((9, B, 7)).astype(np.float32)
    lengths = [9, 4, 1, 0, 6][:B]
    used = []
    orig = network._np_gemm
    monkeypatch.setattr(network, "_np_gemm", lambda *a: used.append(a[0].shape) or orig(*a))
    out = {}
    with products_path("own"):
        for macs in (0, 1 << 62):
            monkeypatch.setattr(network, "OWN_PACKED_INPUT_MACS", macs)
            del used[:]
            y_inf = gatecore.forward(cell, x, p, training=False, lengths=lengths)[0].copy()
            assert bool(used) == (macs == 0)  # (inference: no other NumPy product)
            y, _, tape = gatecore.forward(cell, x, p, lengths=lengths)
            assert not tape.team
            out[macs] = [y_inf, y.copy()]
    packed, blas = out[1 << 62], out[0]
    np.testing.assert_array_equal(packed[0], packed[1])
    np.testing.assert_array_equal(blas[0], blas[1])
    np.testing.assert_allclose(packed[0], blas[0], rtol=0, atol=1e-6)
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    y64 = gatecore.forward(cell, x.astype(np.float64), p64, training=False, lengths=lengths)[0]
    np.testing.assert_allclose(packed[0], y64, rtol=0, atol=2e-5)
