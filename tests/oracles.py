"""Plain NumPy float64 reference implementations of plugin cells (slow, obvious, independent).

Each ``*_layer`` runs one direction of one layer per sequence with explicit loops; the
network runner stacks layers and directions from a PyTorch-style parameter dict, as
gatecore does. Used by tests/test_plugins.py.
"""

from __future__ import annotations

import numpy as np


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def peephole_lstm_step(x, h, c, p, sfx):
    """One step of the peephole LSTM (Gers & Schmidhuber 2000, ONNX P semantics).

    ``p[...]`` holds PyTorch-layout weights (rows i, f, g, o) and ``weight_peephole``
    [p_i, p_f, p_o]; returns (h_t, c_t).
    """
    H = h.shape[0]
    a = p["weight_ih" + sfx] @ x + p["bias_ih" + sfx] + p["weight_hh" + sfx] @ h + p["bias_hh" + sfx]
    pi, pf, po = p["weight_peephole" + sfx].reshape(3, H)
    i = sigmoid(a[:H] + pi * c)
    f = sigmoid(a[H:2 * H] + pf * c)
    g = np.tanh(a[2 * H:3 * H])
    c_new = f * c + i * g
    o = sigmoid(a[3 * H:] + po * c_new)
    return o * np.tanh(c_new), c_new


def mgu_step(x, h, p, sfx):
    """One step of the minimal gated unit (Zhou et al. 2016), rows f, n; returns (h_t,)."""
    H = h.shape[0]
    w_ih, w_hh, b_ih, b_hh = (p[k + sfx] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    f = sigmoid(w_ih[:H] @ x + b_ih[:H] + w_hh[:H] @ h + b_hh[:H])
    n = np.tanh(w_ih[H:] @ x + b_ih[H:] + w_hh[H:] @ (f * h) + b_hh[H:])
    return ((1 - f) * h + f * n,)


def run_network(step, x, params, state0, lengths=None):
    """Stack ``step(x_t, *state, params, sfx) -> new state`` over layers and directions.

    x [T, B, I]; state0 tuple of [L*D, B, H] (h first); lengths [B] or None. Returns
    y [T, B, D*H] (zero past lengths) and the tuple of final states [L*D, B, H].
    """
    T, B, _ = x.shape
    L = 1 + max(int(k.split("_l")[1].split("_")[0]) for k in params)
    D = 2 if any(k.endswith("_reverse") for k in params) else 1
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    state_n = tuple(np.array(s, dtype=np.float64) for s in state0)
    inp = np.asarray(x, np.float64)
    for k in range(L):
        y = np.zeros((T, B, D * state0[0].shape[2]))
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            idx = k * D + d
            H = state0[0].shape[2]
            for b in range(B):
                st = tuple(np.array(s[idx, b], np.float64) for s in state0)
                steps = range(lengths[b] - 1, -1, -1) if d else range(lengths[b])
                for t in steps:
                    st = step(inp[t, b], *st, params, sfx)
                    y[t, b, d * H:(d + 1) * H] = st[0]
                for s in range(len(st)):
                    state_n[s][idx, b] = st[s]
        inp = y
    return inp, state_n


def peephole_lstm(x, params, h0, c0, lengths=None):
    """Multi-layer, optionally bidirectional peephole LSTM; returns y, (h_n, c_n)."""
    return run_network(lambda xt, h, c, p, sfx: peephole_lstm_step(xt, h, c, p, sfx),
                       x, params, (h0, c0), lengths)


def mgu(x, params, h0, lengths=None):
    """Multi-layer, optionally bidirectional minimal gated unit; returns y, (h_n,)."""
    return run_network(lambda xt, h, p, sfx: mgu_step(xt, h, p, sfx), x, params, (h0,), lengths)
