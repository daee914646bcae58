"""Dropout between layers (PyTorch's ``dropout`` of nn.LSTM/nn.GRU) in training calls.

PyTorch's masks cannot be reproduced, so the oracle is the definition: the network equals
its layers run one at a time with the next layer reading mask * output (the masks redrawn
from the same seed), and the gradients equal float64 central differences with the masks
held fixed (an int seed draws the same masks at every call).
"""

from __future__ import annotations

import numpy as np
import pytest

import gatecore


def _layer(p, k):
    """Layer k of a parameter set as a one-layer set."""
    return {key.replace(f"_l{k}", "_l0"): v for key, v in p.items() if f"_l{k}" in key}


def _masks(seed, rate, shapes, dtype):
    g = np.random.default_rng(seed)
    out = []
    for shape in shapes:
        u = g.random(int(np.prod(shape)), dtype=dtype).reshape(shape)
        out.append(np.floor(u + dtype(1.0 - rate)) * dtype(1.0 / (1.0 - rate)))
    return out


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_is_masked_layer_by_layer(cell, dtype, rng):
    L, T, B, I, H = 3, 6, 4, 5, 7
    p = gatecore.init_params(cell, I, H, num_layers=L, bidirectional=True, dtype=dtype, seed=1)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    lengths = [6, 2, 0, 5]
    y, state_n, tape = gatecore.forward(cell, x, p, lengths=lengths, dropout=0.4, rng=123)
    masks = _masks(123, 0.4, [(T, B, 2 * H)] * (L - 1), dtype)
    inp, states = x, []
    for k in range(L):
        out, sn, _ = gatecore.forward(cell, inp, _layer(p, k), lengths=lengths, training=False)
        states.append([s.copy() for s in sn])
        inp = out * masks[k] if k < L - 1 else out
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(y, inp, **tol)
    for s in range(len(state_n)):
        np.testing.assert_allclose(state_n[s], np.concatenate([st[s] for st in states]), **tol)
    # about 40% of the elements dropped, the rest scaled by 1/0.6
    m = np.concatenate([a.ravel() for a in masks])
    assert abs((m == 0).mean() - 0.4) < 0.08
    np.testing.assert_allclose(np.unique(m), [0, 1 / 0.6], rtol=1e-6)
    # a Generator advances: two calls draw different masks; training=False ignores dropout
    g = np.random.default_rng(5)
    y1 = gatecore.forward(cell, x, p, dropout=0.4, rng=g)[0].copy()
    y2 = gatecore.forward(cell, x, p, dropout=0.4, rng=g)[0].copy()
    assert not np.array_equal(y1, y2)
    y_eval, _, _ = gatecore.forward(cell, x, p, training=False, dropout=0.4)
    y_plain, _, _ = gatecore.forward(cell, x, p, training=False)
    np.testing.assert_array_equal(y_eval, y_plain)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_dropout_gradients_match_finite_differences(cell, rng):
    L, T, B, I, H = 2, 4, 3, 3, 4
    p = gatecore.init_params(cell, I, H, num_layers=L, bidirectional=True, dtype=np.float64,
                             seed=2)
    x = rng.standard_normal((T, B, I))
    lengths = [4, 1, 3]
    dy = rng.standard_normal((T, B, 2 * H))
    dhn = rng.standard_normal((L * 2, B, H))
    ws = gatecore.Workspace()

    def loss(x_, p_):
        y, sn, _ = gatecore.forward(cell, x_, p_, lengths=lengths, dropout=0.5, rng=7,
                                    workspace=ws)
        return float((y * dy).sum() + (sn[0] * dhn).sum())

    y, sn, tape = gatecore.forward(cell, x, p, lengths=lengths, dropout=0.5, rng=7)
    dn = (dhn,) + (None,) * (len(sn) - 1)
    dx, _, dp = gatecore.backward(tape, dy, dn)
    dx, dp = dx.copy(), {k: v.copy() for k, v in dp.items()}
    eps = 1e-6
    for idx in [(0, 0, 0), (2, 2, 1), (1, 1, 2), (3, 0, 1)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        fd = (loss(xp, p) - loss(xm, p)) / (2 * eps)
        assert abs(fd - dx[idx]) < 1e-6 * max(1, abs(fd)), (idx, fd, dx[idx])
    for key, idx in [("weight_ih_l0", (1, 2)), ("weight_hh_l0_reverse", (3, 1)),
                     ("bias_hh_l0", (2,)), ("weight_ih_l1", (0, 5)), ("bias_ih_l1_reverse", (1,))]:
        pp = {k: v.copy() for k, v in p.items()}
        pm = {k: v.copy() for k, v in p.items()}
        pp[key][idx] += eps
        pm[key][idx] -= eps
        fd = (loss(x, pp) - loss(x, pm)) / (2 * eps)
        assert abs(fd - dp[key][idx]) < 1e-6 * max(1, abs(fd)), (key, idx, fd, dp[key][idx])
    # backward twice on the tape: the same gradients (the masks stay as they were)
    dx2, _, _ = gatecore.backward(tape, dy, dn)
    np.testing.assert_array_equal(dx2, dx)


def test_dropout_one_blocks_everything_below_the_top_layer(rng):
    p = gatecore.init_params("lstm", 3, 4, num_layers=2, dtype=np.float64, seed=3)
    x = rng.standard_normal((5, 2, 3))
    y, _, tape = gatecore.forward("lstm", x, p, dropout=1.0)
    y0, _, _ = gatecore.forward("lstm", np.zeros((5, 2, 4)), _layer(p, 1), training=False)
    np.testing.assert_allclose(y, y0, rtol=1e-13, atol=1e-14)
    dx, _, dp = gatecore.backward(tape, np.ones_like(y))
    assert not dx.any() and not dp["weight_ih_l0"].any()


def test_dropout_arguments():
    p1 = gatecore.init_params("gru", 3, 4, seed=0)
    x = np.zeros((2, 1, 3), np.float32)
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        gatecore.forward("gru", x, p1, dropout=0.2)
    p2 = gatecore.init_params("gru", 3, 4, num_layers=2, seed=0)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="dropout must be in"):
            gatecore.forward("gru", x, p2, dropout=bad)
    for bad in ("0.5", True, None, [0.1]):
        with pytest.raises(TypeError, match="dropout must be a number"):
            gatecore.forward("gru", x, p2, dropout=bad)
    for bad in ("seed", -1, 1.5, True):
        with pytest.raises(TypeError, match="rng must be"):
            gatecore.forward("gru", x, p2, dropout=0.5, rng=bad)
    gatecore.forward("gru", x, p2, dropout=0.5, rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng must be"):  # checked even where unused
        gatecore.forward("gru", x, p2, training=False, rng="seed")


def test_dropout_accepts_real_scalars_of_any_kind():
    torch = pytest.importorskip("torch")
    from fractions import Fraction

    p2 = gatecore.init_params("lstm", 3, 4, num_layers=2, dtype=np.float64, seed=0)
    x = np.ones((3, 2, 3))
    want = gatecore.forward("lstm", x, p2, dropout=0.5, rng=3)[0].copy()
    for p in (np.float32(0.5), np.array(0.5), torch.tensor(0.5), Fraction(1, 2)):
        np.testing.assert_array_equal(gatecore.forward("lstm", x, p2, dropout=p, rng=3)[0], want)
    for bad in (np.array([0.5]), np.array(True), 0.5j):
        with pytest.raises(TypeError, match="dropout must be a number"):
            gatecore.forward("lstm", x, p2, dropout=bad)
