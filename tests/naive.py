"""Plain NumPy float64 reference implementations (slow, obvious, independent of gatecore).

Used as oracles where PyTorch has no equivalent (GRU with reset before the hidden product)
and for finite-difference gradient checks.
"""

from __future__ import annotations

import numpy as np


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def gru_reset_before_layer(x, w_ih, w_hh, b_ih, b_hh, h0, lengths=None, reverse=False):
    """One direction of a GRU layer, reset before the hidden product (Cho et al. 2014).

    x [T, B, I], h0 [B, H]; returns y [T, B, H] (zero past lengths) and h_n [B, H].
    """
    T, B, _ = x.shape
    H = h0.shape[1]
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    y = np.zeros((T, B, H))
    h_n = h0.copy()
    for b in range(B):
        h = h0[b].copy()
        steps = range(lengths[b] - 1, -1, -1) if reverse else range(lengths[b])
        for t in steps:
            gx = w_ih @ x[t, b] + b_ih
            r = sigmoid(gx[:H] + w_hh[:H] @ h + b_hh[:H])
            z = sigmoid(gx[H:2 * H] + w_hh[H:2 * H] @ h + b_hh[H:2 * H])
            n = np.tanh(gx[2 * H:] + w_hh[2 * H:] @ (r * h) + b_hh[2 * H:])
            h = (1 - z) * n + z * h
            y[t, b] = h
        h_n[b] = h
    return y, h_n


def gru_reset_before(x, params, h0, lengths=None):
    """Multi-layer, optionally bidirectional reset-before GRU from a PyTorch-style state_dict."""
    L = 1 + max(int(k.split("_l")[1].split("_")[0]) for k in params)
    D = 2 if any(k.endswith("_reverse") for k in params) else 1
    inp = x
    h_n = np.zeros_like(h0)
    for k in range(L):
        outs = []
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            y, hn = gru_reset_before_layer(inp, params["weight_ih" + sfx], params["weight_hh" + sfx],
                                           params["bias_ih" + sfx], params["bias_hh" + sfx],
                                           h0[k * D + d], lengths, reverse=bool(d))
            outs.append(y)
            h_n[k * D + d] = hn
        inp = np.concatenate(outs, axis=2)
    return inp, h_n
