"""LSTM and GRU (reset after) against torch.nn.LSTM / torch.nn.GRU on random configurations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gatecore
from gatecore.cells.lstm import LSTM
from gatecore.kernels.factory import cpu_kernels
from conftest import assert_close, products_path

torch = pytest.importorskip("torch")
import torch_oracle  # noqa: E402


@st.composite
def configs(draw):
    cell = draw(st.sampled_from(["lstm", "gru"]))
    H = draw(st.integers(1, 6))
    return dict(
        cell=cell,
        dtype=draw(st.sampled_from([np.float64, np.float32])),
        L=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()),
        T=draw(st.integers(1, 7)),
        B=draw(st.integers(1, 4)),
        I=draw(st.integers(1, 5)),
        H=H,
        P=draw(st.integers(0, H - 1)) if cell == "lstm" else 0,
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        use_lengths=draw(st.booleans()),
        give_h0=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
        # per-step products: the kernels' own loop (small steps), the same with the input
        # product on a second thread (gatecore.overlap), BLAS inside the kernels, or NumPy's
        # BLAS between one-step kernel calls (large steps of one-stage cells), or packed
        # products on two threads (float32 inference of one-stage cells)
        products=draw(st.sampled_from(["own", "overlap", "blas", "numpy", "team", "items",
                                          "iteam"])),
    )


def _case(cfg):
    rng = np.random.default_rng(cfg["seed"])
    dtype = cfg["dtype"]
    torch.manual_seed(cfg["seed"] % 10000)
    m = torch_oracle.make_module(cfg["cell"], cfg["I"], cfg["H"], cfg["L"], cfg["bidirectional"],
                                 cfg["P"], cfg["bias"], dtype)
    params = {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
    T, B, D = cfg["T"], cfg["B"], 2 if cfg["bidirectional"] else 1
    Hr = cfg["P"] or cfg["H"]
    x = rng.standard_normal((B, T, cfg["I"]) if cfg["batch_first"] else (T, B, cfg["I"])).astype(dtype)
    lengths = rng.integers(1, T + 1, size=B) if cfg["use_lengths"] else None
    widths = [Hr] + ([cfg["H"]] if cfg["cell"] == "lstm" else [])
    state0 = tuple(rng.standard_normal((cfg["L"] * D, B, w)).astype(dtype) for w in widths)
    if not cfg["give_h0"]:
        state0 = tuple(np.zeros_like(s) for s in state0)
    dy = rng.standard_normal(x.shape[:2] + (D * Hr,)).astype(dtype)
    if lengths is not None:  # torch zero-fills padded outputs; match by giving them no gradient
        for b, n in enumerate(lengths):
            if cfg["batch_first"]:
                dy[b, n:] = 0
            else:
                dy[n:, b] = 0
    dstate_n = tuple(rng.standard_normal(s.shape).astype(dtype) for s in state0)
    return m, params, x, lengths, state0, dy, dstate_n


@settings(max_examples=75)
@given(cfg=configs())
def test_matches_torch(cfg):
    m, params, x, lengths, state0, dy, dstate_n = _case(cfg)
    dtype = cfg["dtype"]
    before = {k: v.copy() for k, v in params.items()}
    x_before = x.copy()
    with products_path(cfg["products"]):
        kw = dict(lengths=lengths, batch_first=cfg["batch_first"])
        h0 = state0 if cfg["give_h0"] else None
        y_inf, state_inf, _ = gatecore.forward(cfg["cell"], x, params, h0, training=False, **kw)
        y_inf, state_inf = y_inf.copy(), tuple(s.copy() for s in state_inf)
        y, state_n, tape = gatecore.forward(cfg["cell"], x, params, h0, **kw)
        dx, dstate0, dparams = gatecore.backward(tape, dy, dstate_n)
    ry, rstate_n, rdx, rdstate0, rdparams = torch_oracle.run(
        m, cfg["cell"], x, state0, lengths, cfg["batch_first"], dy, dstate_n)
    assert_close(y, ry, dtype, "y")
    assert_close(y_inf, ry, dtype, "y (inference)")
    for a, b, c in zip(state_n, rstate_n, state_inf):
        assert_close(a, b, dtype, "state_n")
        assert_close(c, b, dtype, "state_n (inference)")
    assert_close(dx, rdx, dtype, "dx")
    for a, b in zip(dstate0, rdstate0):
        assert_close(a, b, dtype, "dstate0")
    assert set(dparams) == set(params)
    for k in params:
        assert dparams[k].shape == params[k].shape
        assert_close(dparams[k], rdparams[k], dtype, k)
    # never writes into the caller's arrays
    assert np.array_equal(x, x_before)
    for k in params:
        assert np.array_equal(params[k], before[k])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_convenience_functions_match_forward(cell, rng):
    p = gatecore.init_params(cell, 3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=1)
    x = rng.standard_normal((5, 2, 3))
    y_f, st_f, tape = gatecore.forward(cell, x, p, training=False)
    assert tape is None
    if cell == "lstm":
        y, (h, c) = gatecore.lstm(x, p)
        np.testing.assert_array_equal(c, st_f[1])
    else:
        y, h = gatecore.gru(x, p)
    np.testing.assert_array_equal(y, y_f)
    np.testing.assert_array_equal(h, st_f[0])
    # inference path equals the taped path bitwise
    y_t, st_t, _ = gatecore.forward(cell, x, p)
    np.testing.assert_array_equal(y, y_t)


def test_unbatched_input_like_torch(rng):
    m = torch.nn.LSTM(3, 4, num_layers=2).double()
    p = {k: v.detach().numpy() for k, v in m.state_dict().items()}
    x = rng.standard_normal((6, 3))
    y, (h, c) = gatecore.lstm(x, p)
    ry, (rh, rc) = m(torch.tensor(x))
    assert y.shape == (6, 4) and h.shape == (2, 4)
    assert_close(y, ry.detach().numpy(), np.float64)
    assert_close(c, rc.detach().numpy(), np.float64)


def test_init_params_matches_torch_layout():
    for cell, mod in (("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)):
        kw = dict(proj_size=2) if cell == "lstm" else {}
        m = mod(5, 7, num_layers=2, bidirectional=True, **kw)
        p = gatecore.init_params(cell, 5, 7, num_layers=2, bidirectional=True, **kw)
        ref = m.state_dict()
        assert list(p) == list(ref)
        for k in ref:
            assert p[k].shape == tuple(ref[k].shape), k
            assert p[k].dtype == np.float32
        m.load_state_dict({k: torch.tensor(v) for k, v in p.items()})


@settings(max_examples=40, deadline=None)
@given(B=st.integers(0, 5), K=st.integers(0, 9), N=st.sampled_from([1, 3, 8, 17, 1024, 1031, 2050]),
       row0=st.integers(0, 3), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**31 - 1))
def test_own_product_matches_numpy(B, K, N, row0, dtype, seed):
    """The kernels' small-step product ``_mm`` (tiles of 1024 columns, K in groups of 4)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((B, K)).astype(dtype)
    bt = rng.standard_normal((row0 + K + 2, N)).astype(dtype)
    out = np.full((B, N), np.nan, dtype)
    cpu_kernels(LSTM, dtype)._mm(a, bt, row0, out)
    ref = a.astype(np.float64) @ bt[row0:row0 + K].astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * max(1, K))


@settings(max_examples=40, deadline=None)
@given(B=st.integers(0, 5), K=st.integers(0, 300), N=st.integers(0, 13), row0=st.integers(0, 3),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31 - 1))
def test_own_dot_product_matches_numpy(B, K, N, row0, dtype, seed):
    """The kernels' dot-product form ``_mmd`` (pairs of items, four rows, partial sums)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((B, K)).astype(dtype)
    w = rng.standard_normal((row0 + N + 2, K)).astype(dtype)
    out = np.full((B, N), np.nan, dtype)
    cpu_kernels(LSTM, dtype)._mmd(a, w, row0, out)
    ref = a.astype(np.float64) @ w[row0:row0 + N].astype(np.float64).T
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * max(1, K))
