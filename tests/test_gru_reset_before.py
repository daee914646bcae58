"""GRU with the reset gate before the hidden product (Cho et al. 2014; ONNX linear_before_reset=0).

PyTorch has no such cell: the oracles are a float64 NumPy reference and finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gatecore
import naive
from conftest import assert_close


@settings(max_examples=25)
@given(L=st.integers(1, 2), bidir=st.booleans(), T=st.integers(1, 6), B=st.integers(1, 4),
       I=st.integers(1, 4), H=st.integers(1, 5), use_lengths=st.booleans(), seed=st.integers(0, 10**6))
def test_forward_matches_numpy_reference(L, bidir, T, B, I, H, use_lengths, seed):
    rng = np.random.default_rng(seed)
    p = gatecore.init_params("gru", I, H, num_layers=L, bidirectional=bidir, dtype=np.float64, seed=seed)
    D = 2 if bidir else 1
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((L * D, B, H))
    lengths = rng.integers(0, T + 1, size=B) if use_lengths else None
    y, h_n = gatecore.gru(x, p, h0, lengths=lengths, reset_after=False)
    ry, rh = naive.gru_reset_before(x, p, h0, lengths)
    assert_close(y, ry, np.float64, "y")
    assert_close(h_n, rh, np.float64, "h_n")


def _loss_and_grads(cell, x, p, state0, lengths, dy, dstate_n, **opts):
    y, state_n, tape = gatecore.forward(cell, x, p, state0, lengths=lengths, **opts)
    loss = float(np.sum(y * dy) + sum(np.sum(s * d) for s, d in zip(state_n, dstate_n)))
    dx, dstate0, dparams = gatecore.backward(tape, dy, dstate_n)
    return loss, dx.copy(), tuple(s.copy() for s in dstate0), {k: v.copy() for k, v in dparams.items()}


def finite_difference_check(cell, x, p, state0, lengths, dy, dstate_n, eps=1e-6, **opts):
    """Central differences in float64 for every entry of x, state0 and every parameter."""
    _, dx, dstate0, dparams = _loss_and_grads(cell, x, p, state0, lengths, dy, dstate_n, **opts)

    def f():
        return _loss_and_grads(cell, x, p, state0, lengths, dy, dstate_n, **opts)[0]

    targets = [("x", x, dx)] + [(f"state0[{i}]", s, g) for i, (s, g) in enumerate(zip(state0, dstate0))]
    targets += [(k, p[k], dparams[k]) for k in p]
    for name, arr, grad in targets:
        num = np.zeros_like(arr)
        flat, nflat = arr.reshape(-1), num.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            fp = f()
            flat[i] = old - eps
            fm = f()
            flat[i] = old
            nflat[i] = (fp - fm) / (2 * eps)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("bidir,use_lengths", [(False, False), (True, True)])
def test_gradients_finite_differences(bidir, use_lengths):
    rng = np.random.default_rng(7)
    T, B, I, H, L = 4, 3, 2, 3, 2
    D = 2 if bidir else 1
    p = gatecore.init_params("gru", I, H, num_layers=L, bidirectional=bidir, dtype=np.float64, seed=3)
    x = rng.standard_normal((T, B, I))
    state0 = (rng.standard_normal((L * D, B, H)),)
    lengths = np.array([4, 0, 2]) if use_lengths else None
    dy = rng.standard_normal((T, B, D * H))
    dstate_n = (rng.standard_normal((L * D, B, H)),)
    finite_difference_check("gru", x, p, state0, lengths, dy, dstate_n, reset_after=False)


def test_lstm_projection_finite_differences():
    rng = np.random.default_rng(8)
    T, B, I, H, P = 3, 2, 2, 4, 2
    p = gatecore.init_params("lstm", I, H, num_layers=2, bidirectional=True, proj_size=P,
                             dtype=np.float64, seed=4)
    x = rng.standard_normal((T, B, I))
    state0 = (rng.standard_normal((4, B, P)), rng.standard_normal((4, B, H)))
    dy = rng.standard_normal((T, B, 2 * P))
    dstate_n = (rng.standard_normal((4, B, P)), rng.standard_normal((4, B, H)))
    finite_difference_check("lstm", x, p, state0, np.array([3, 1]), dy, dstate_n)


def test_reset_conventions_differ():
    rng = np.random.default_rng(0)
    p = gatecore.init_params("gru", 3, 4, dtype=np.float64, seed=0)
    x = rng.standard_normal((5, 2, 3))
    h0 = rng.standard_normal((1, 2, 4))
    y_after, _ = gatecore.gru(x, p, h0, reset_after=True)
    y_before, _ = gatecore.gru(x, p, h0, reset_after=False)
    assert not np.allclose(y_after, y_before)
