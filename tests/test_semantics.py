"""Lengths, empty inputs, batch independence, determinism, numerical stability."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gatecore
from conftest import assert_close

CELLS = [("lstm", {}), ("gru", {}), ("gru", {"reset_after": False})]


def _state0(cell, L, D, B, H, rng, dtype=np.float64):
    n = 2 if cell == "lstm" else 1
    return tuple(rng.standard_normal((L * D, B, H)).astype(dtype) for _ in range(n))


@pytest.mark.parametrize("cell,opts", CELLS)
def test_length_zero_and_padding(cell, opts, rng):
    T, B, I, H = 5, 4, 3, 4
    p = gatecore.init_params(cell, I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    x = rng.standard_normal((T, B, I))
    x_nan = x.copy()
    lengths = np.array([0, 5, 2, 3])
    for b, n in enumerate(lengths):
        x_nan[n:, b] = np.nan  # padding content must not matter, even NaN
    s0 = _state0(cell, 2, 2, B, H, rng)
    y, sn, tape = gatecore.forward(cell, x_nan, p, s0, lengths=lengths, **opts)
    assert np.all(np.isfinite(y))
    for b, n in enumerate(lengths):
        assert np.all(y[n:, b] == 0.0)
    for s, s_init in zip(sn, s0):
        np.testing.assert_array_equal(s[:, 0], s_init[:, 0])  # length 0: h_n = h0
    dy = rng.standard_normal(y.shape)
    ds = tuple(rng.standard_normal(s.shape) for s in sn)
    dx, d0, dp = gatecore.backward(tape, dy, ds)
    for b, n in enumerate(lengths):
        assert np.all(dx[n:, b] == 0.0)
    for d, dsn in zip(d0, ds):
        np.testing.assert_array_equal(d[:, 0], dsn[:, 0])  # length 0: dh0 = dh_n
    assert all(np.all(np.isfinite(v)) for v in dp.values())


@pytest.mark.parametrize("cell,opts,proj,dtype,path", [
    ("lstm", {}, 0, np.float64, None), ("gru", {}, 0, np.float64, None),
    ("gru", {"reset_after": False}, 0, np.float64, None), ("lstm", {}, 2, np.float64, None),
    ("lstm", {}, 0, np.float32, "team"), ("gru", {}, 0, np.float32, "own")])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_length_zero_with_nonfinite_h0_leaves_the_gradients_alone(cell, opts, proj, dtype, path,
                                                                 bad, rng):
    """An item without a step contributes nothing to the weight gradients, whatever its
    initial states hold (its h0 went through every slot into dW_hh = sum dA^T h_prev: 0 * NaN made
    weight_hh's gradient all NaN; found by a break-it sweep). Two layers, both directions."""
    from conftest import products_path

    T, B, I, H = 4, 3, 3, 5
    p = gatecore.init_params(cell, I, H, num_layers=2, bidirectional=True, proj_size=proj,
                             dtype=dtype, seed=2, **opts)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    lengths = [4, 0, 2]
    s0 = [a.astype(dtype) for a in _state0(cell, 2, 2, B, H, rng)]
    if proj:
        s0[0] = s0[0][..., :proj].copy()
    dy = rng.standard_normal((T, B, 2 * (proj or H))).astype(dtype)
    out = []
    for h0_empty in (0.5, bad):
        s = [a.copy() for a in s0]
        for a in s:
            a[:, 1] = h0_empty  # the empty item's states (every layer and direction)
        with products_path(path) if path else contextlib.nullcontext():
            y, sn, tape = gatecore.forward(cell, x, p, tuple(s), lengths=lengths, **opts)
            np.testing.assert_array_equal(sn[0][:, 1], s[0][:, 1])  # h_n = h0 still
            dx, d0, dp = gatecore.backward(tape, dy)
        out.append((y.copy(), dx.copy(), {k: v.copy() for k, v in dp.items()},
                    [a.copy() for a in d0]))
    (y_a, dx_a, dp_a, d0_a), (y_b, dx_b, dp_b, d0_b) = out
    np.testing.assert_array_equal(y_b, y_a)
    np.testing.assert_array_equal(dx_b, dx_a)
    for a, b in zip(d0_a, d0_b):
        np.testing.assert_array_equal(b, a)
    for k in dp_a:
        np.testing.assert_array_equal(dp_b[k], dp_a[k], err_msg=k)


@settings(max_examples=20)
@given(cell_i=st.integers(0, 2), T=st.integers(1, 6), B=st.integers(2, 5), seed=st.integers(0, 10**6),
       bidir=st.booleans(), batch_first=st.booleans())
def test_each_sequence_equals_running_it_alone(cell_i, T, B, seed, bidir, batch_first):
    cell, opts = CELLS[cell_i]
    rng = np.random.default_rng(seed)
    I, H, L = 3, 4, 2
    D = 2 if bidir else 1
    p = gatecore.init_params(cell, I, H, num_layers=L, bidirectional=bidir, dtype=np.float64, seed=seed)
    x = rng.standard_normal((T, B, I))
    lengths = rng.integers(0, T + 1, size=B)
    s0 = _state0(cell, L, D, B, H, rng)
    dy = rng.standard_normal((T, B, D * H))
    xin = x.transpose(1, 0, 2) if batch_first else x
    dyin = dy.transpose(1, 0, 2) if batch_first else dy
    y, sn, tape = gatecore.forward(cell, xin, p, s0, lengths=lengths, batch_first=batch_first, **opts)
    dx, d0, dp_all = gatecore.backward(tape, dyin)
    y, dx = (y.transpose(1, 0, 2), dx.transpose(1, 0, 2)) if batch_first else (y, dx)
    dsum = {k: np.zeros_like(v) for k, v in p.items()}
    for b in range(B):
        n = int(lengths[b])
        yb, snb, tb = gatecore.forward(cell, x[:n, b:b + 1], p, tuple(s[:, b:b + 1] for s in s0), **opts)
        assert_close(y[:n, b:b + 1], yb, np.float64)
        for a, c in zip(sn, snb):
            assert_close(a[:, b:b + 1], c, np.float64)
        dxb, d0b, dpb = gatecore.backward(tb, dy[:n, b:b + 1])
        assert_close(dx[:n, b:b + 1], dxb, np.float64)
        for a, c in zip(d0, d0b):
            assert_close(a[:, b:b + 1], c, np.float64)
        for k in dsum:
            dsum[k] += dpb[k]
    for k in dsum:
        assert_close(dp_all[k], dsum[k], np.float64, k)


@pytest.mark.parametrize("cell,opts", CELLS)
@pytest.mark.parametrize("T,B", [(0, 3), (4, 0), (0, 0)])
def test_empty_inputs(cell, opts, T, B, rng):
    p = gatecore.init_params(cell, 3, 4, num_layers=2, bidirectional=True, dtype=np.float32, seed=0)
    x = np.zeros((T, B, 3), np.float32)
    s0 = _state0(cell, 2, 2, B, 4, rng, np.float32)
    y, sn, tape = gatecore.forward(cell, x, p, s0, **opts)
    assert y.shape == (T, B, 8)
    for a, b in zip(sn, s0):
        np.testing.assert_array_equal(a, b)
    dx, d0, dp = gatecore.backward(tape, np.ones_like(y), tuple(np.ones_like(s) for s in sn))
    assert dx.shape == x.shape
    for d in d0:
        np.testing.assert_array_equal(d, np.ones_like(d))
    for k in p:
        assert dp[k].shape == p[k].shape and np.all(dp[k] == 0)


@pytest.mark.parametrize("cell,opts", CELLS)
def test_bitwise_deterministic(cell, opts, rng):
    p = gatecore.init_params(cell, 16, 32, num_layers=2, bidirectional=True, seed=0)
    x = rng.standard_normal((20, 8, 16)).astype(np.float32)
    lengths = rng.integers(0, 21, size=8)
    outs = []
    for _ in range(3):
        y, sn, tape = gatecore.forward(cell, x, p, lengths=lengths, **opts)
        dx, d0, dp = gatecore.backward(tape, np.ones_like(y))
        outs.append([y.copy(), dx.copy()] + [v.copy() for v in dp.values()])
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("cell,opts", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturation_is_finite(cell, opts, dtype, rng):
    p = gatecore.init_params(cell, 4, 5, num_layers=2, dtype=dtype, seed=0)
    x = (rng.choice([-1e4, 1e4], size=(6, 3, 4))).astype(dtype)
    p_big = {k: (v * 1e3).astype(dtype) for k, v in p.items()}
    y, sn, tape = gatecore.forward(cell, x, p_big, **opts)
    dx, d0, dp = gatecore.backward(tape, np.ones_like(y), tuple(np.ones_like(s) for s in sn))
    for a in [y, dx, *sn, *d0, *dp.values()]:
        assert np.all(np.isfinite(a))
    assert np.all(np.abs(y) <= 1.0)


@pytest.mark.parametrize("cell,opts", CELLS)
def test_nan_stays_in_its_batch_item(cell, opts, rng):
    p = gatecore.init_params(cell, 4, 5, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    x = rng.standard_normal((6, 3, 4))
    x[2, 1, 0] = np.nan
    y, sn, tape = gatecore.forward(cell, x, p, **opts)
    assert np.isnan(y[:, 1]).any()
    assert np.all(np.isfinite(y[:, [0, 2]]))
    for s in sn:
        assert np.all(np.isfinite(s[:, [0, 2]]))
    dx, d0, dp = gatecore.backward(tape, np.ones_like(y))
    assert np.all(np.isfinite(dx[:, [0, 2]]))


def test_layouts_give_the_same_result(rng):
    p = gatecore.init_params("lstm", 3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    x = rng.standard_normal((5, 2, 3))
    y_ref, s_ref = gatecore.lstm(x, p)
    xf = np.asfortranarray(x)
    xs = np.repeat(x, 2, axis=2)[:, :, ::2]  # non-contiguous view
    p_f = {k: np.asfortranarray(v) for k, v in p.items()}
    for xx, pp in ((xf, p), (xs, p), (x, p_f)):
        y, s = gatecore.lstm(xx, pp)
        np.testing.assert_array_equal(y, y_ref)
    y_bf, _ = gatecore.lstm(np.ascontiguousarray(x.transpose(1, 0, 2)), p, batch_first=True)
    np.testing.assert_array_equal(y_bf.transpose(1, 0, 2), y_ref)


def test_integer_and_float16_inputs_are_converted(rng):
    p = gatecore.init_params("gru", 3, 4, dtype=np.float32, seed=0)
    x_int = rng.integers(-3, 4, size=(5, 2, 3))
    y_int, _ = gatecore.gru(x_int, p)
    y_ref, _ = gatecore.gru(x_int.astype(np.float32), p)
    np.testing.assert_array_equal(y_int, y_ref)
    x16 = rng.standard_normal((5, 2, 3)).astype(np.float16)
    y16, _ = gatecore.gru(x16, p)
    np.testing.assert_array_equal(y16, gatecore.gru(x16.astype(np.float32), p)[0])
    assert y16.dtype == np.float32


def test_lengths_accept_lists_and_integral_floats(rng):
    p = gatecore.init_params("lstm", 3, 4, dtype=np.float64, seed=0)
    x = rng.standard_normal((5, 3, 3))
    a, _ = gatecore.lstm(x, p, lengths=[5, 2, 0])
    b, _ = gatecore.lstm(x, p, lengths=np.array([5.0, 2.0, 0.0]))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_float32_saturated_gates_have_zero_gradients(cell):
    """Inputs far outside the activations' range (un-normalised features): every gate is
    saturated, so PyTorch's float32 weight_ih gradients are exactly 0; gatecore's float32
    activations saturate to exactly +-1 / 0 / 1 too (they once stopped at 0.99999964, and the
    gradients grew with |x|: 9e23 at x = 1e30)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    m = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(1, 2, bidirectional=True)
    p = {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
    for v in (1e4, -1e4, 1e30):
        x = np.full((3, 1, 1), v, np.float32)
        dy = np.ones((3, 1, 4), np.float32)
        y, _, tape = gatecore.forward(cell, x, p)
        _, _, grads = gatecore.backward(tape, dy)
        m.zero_grad()
        yt, _ = m(torch.from_numpy(x))
        (yt * torch.from_numpy(dy)).sum().backward()
        np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-6)
        for name in ("weight_ih_l0", "weight_ih_l0_reverse"):
            want = getattr(m, name).grad.numpy()
            assert np.array_equal(want == 0, grads[name] == 0), (v, name, grads[name], want)
            np.testing.assert_allclose(grads[name], want, atol=1e-6 * abs(v))


def test_float32_activations_saturate_exactly():
    from numba import njit

    from gatecore.cells._math import sigmoid_f32, tanh_f32

    @njit
    def both(xs):
        return [(tanh_f32(v), sigmoid_f32(v)) for v in xs]

    xs = np.array([np.inf, -np.inf, 8.0, -8.0, 1e30, -88.0, 16.7, -1e30], np.float32)
    got = both(xs)
    assert got[0] == (1.0, 1.0) and got[1] == (-1.0, 0.0)
    assert got[2][0] == 1.0 and got[3][0] == -1.0 and got[4] == (1.0, 1.0)
    assert got[5][1] == 0.0 and got[6][1] == 1.0 and got[7] == (-1.0, 0.0)
    assert all(np.isnan(v) for v in both(np.array([np.nan], np.float32))[0])


def test_float32_sigmoid_is_relatively_accurate_like_pytorchs():
    """sigmoid_f32 = 1 / (1 + exp_f32(-x)): relative error within 1.5e-7 where the value is
    tiny too (the former 0.5 + 0.5 tanh(x / 2) was 0.4% off at x = -10 and 0 from -15.8),
    within two float32 ulps of PyTorch's float32 sigmoid (98.8% equal), monotone, exactly 1
    where PyTorch's is."""
    torch = pytest.importorskip("torch")
    from numba import njit

    from gatecore.cells._math import exp_f32, sigmoid_f32

    @njit
    def apply(fn_id, xs, out):
        for j in range(xs.shape[0]):
            out[j] = sigmoid_f32(xs[j]) if fn_id == 0 else exp_f32(xs[j])

    xs = np.concatenate([np.linspace(-87, 87, 400_001, dtype=np.float32),
                         -np.logspace(-8, 1.9, 20_001).astype(np.float32),
                         np.logspace(-8, 1.9, 20_001).astype(np.float32)])
    xs.sort()
    got = np.empty_like(xs)
    apply(0, xs, got)
    ref = 1.0 / (1.0 + np.exp(-xs.astype(np.float64)))
    assert (np.abs(got - ref) / ref).max() <= 1.5e-7
    want = torch.sigmoid(torch.from_numpy(xs)).numpy()
    assert (np.abs(got - want) <= 2 * np.spacing(want)).all()
    assert np.array_equal(got == 1, want == 1)
    assert (np.diff(got) >= 0).all()
    e = np.empty_like(xs)
    apply(1, xs, e)
    ref = np.exp(xs.astype(np.float64))
    assert (np.abs(e - ref) / ref).max() <= 1.5e-7
