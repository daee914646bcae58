"""Peephole LSTM cell for gatecore (Gers & Schmidhuber 2000), ONNX ``LSTM`` ``P`` semantics.

Registered as ``"peephole_lstm"`` through the ``gatecore`` entry point of this distribution.
Gates and parameters are PyTorch ``nn.LSTM``'s (rows ``i, f, g, o``, both biases), plus one
extra vector per layer and direction, ``weight_peephole_l{k}[_reverse]`` of shape [3*H]
holding ``[p_i, p_f, p_o]``::

    i = sigmoid(a_i + p_i * c_{t-1})
    f = sigmoid(a_f + p_f * c_{t-1})
    g = tanh(a_g)
    c_t = f * c_{t-1} + i * g
    o = sigmoid(a_o + p_o * c_t)
    h_t = o * tanh(c_t)          (a = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

ONNX orders the peepholes ``P = [p_i, p_o, p_f]``: see :func:`to_onnx`. With
``proj_size`` (LSTMP, Sak et al. 2014, who used peepholes too) ``h_t = W_hr (o * tanh(c_t))``.

Tape per unit: i, f, g, o; ``c_t`` is read back from the new state and tanh(c_t) recomputed.
"""

from __future__ import annotations

import numpy as np
from numba import njit

import gatecore
from gatecore.activations import sigmoid, tanh

__all__ = ["PEEPHOLE_LSTM", "to_onnx", "gatecore_register_cells"]


@njit(cache=True)
def peephole_forward(ax, ah, sp, ex, sn, tp, j, H):
    c_prev = sp[1, j]
    i = sigmoid(ax[j] + ah[j] + ex[0, j] * c_prev)
    f = sigmoid(ax[H + j] + ah[H + j] + ex[1, j] * c_prev)
    g = tanh(ax[2 * H + j] + ah[2 * H + j])
    c = f * c_prev + i * g
    o = sigmoid(ax[3 * H + j] + ah[3 * H + j] + ex[2, j] * c)
    tc = tanh(c)
    sn[1, j] = c
    sn[0, j] = o * tc
    tp[j] = i
    tp[H + j] = f
    tp[2 * H + j] = g
    tp[3 * H + j] = o


@njit(cache=True)
def peephole_backward(ax, tp, sp, sn, ex, ds, du, dax, dah, dsp, dex, j, H):
    i = tp[j]
    f = tp[H + j]
    g = tp[2 * H + j]
    o = tp[3 * H + j]
    c_prev = sp[1, j]
    c = sn[1, j]
    tc = tanh(c)  # recomputed: a tape of four values keeps the rule loop vectorized
    dh = ds[0, j]
    do = dh * tc * o * (1.0 - o)
    # c_t reaches the loss through h_t = o tanh(c_t), through o's peephole and through c_{t+1}
    dc = ds[1, j] + dh * o * (1.0 - tc * tc) + do * ex[2, j]
    di = dc * g * i * (1.0 - i)
    df = dc * c_prev * f * (1.0 - f)
    dg = dc * i * (1.0 - g * g)
    dax[j] = di
    dax[H + j] = df
    dax[2 * H + j] = dg
    dax[3 * H + j] = do
    dah[j] = di
    dah[H + j] = df
    dah[2 * H + j] = dg
    dah[3 * H + j] = do
    dsp[0, j] = 0.0
    dsp[1, j] = dc * f + di * ex[0, j] + df * ex[1, j]
    dex[0, j] += di * c_prev
    dex[1, j] += df * c_prev
    dex[2, j] += do * c


PEEPHOLE_LSTM = gatecore.CellSpec(
    name="peephole_lstm",
    gate_names=("i", "f", "g", "o"),
    state_names=("h", "c"),
    tape_size=4,
    forward=peephole_forward,
    backward=peephole_backward,
    extra_params=(("weight_peephole", 3),),
    supports_projection=True,
    dah_is_dax=True,
    description="LSTM with peepholes [p_i, p_f, p_o] (ONNX LSTM with input P)",
    reference="Gers & Schmidhuber 2000",
)


def to_onnx(params, layer: int = 0, reverse: bool = False) -> dict[str, np.ndarray]:
    """ONNX ``LSTM`` inputs W, R, B, P for one layer and direction of a parameter set.

    Parameters
    ----------
    params : mapping
        ``peephole_lstm`` parameters (PyTorch keys plus ``weight_peephole_l{k}``).
    layer : int
    reverse : bool
        The ``_reverse`` direction.

    Returns
    -------
    dict
        ``W`` [4H, I], ``R`` [4H, H] (gate rows reordered i, f, g, o -> ONNX i, o, f, c),
        ``B`` [8H] (Wb then Rb, same order), ``P`` [3H] = ``[p_i, p_o, p_f]``, i.e.
        ``weight_peephole[[0, 2, 1]]`` by blocks of H. Add a leading axis of size
        num_directions for the ONNX node. W, R and B are ``gatecore.weights.to_onnx("lstm",
        ...)``'s for the layer's LSTM parameters (its checks, its messages).

    Raises
    ------
    gatecore.ParameterError (ValueError)
        ``params`` lacks a key of this layer and direction (names them and the keys given).
    ValueError
        ``params`` has a projection (``weight_hr``): ONNX's LSTM has none.
    gatecore.ShapeError, gatecore.DTypeError
        An array of the layer of the wrong shape or dtype (``weight_peephole`` must be [3*H]
        of the weights' dtype), or directions unlike each other.
    """
    sfx = f"_l{layer}" + ("_reverse" if reverse else "")
    need = ["weight_ih" + sfx, "weight_hh" + sfx, "weight_peephole" + sfx]
    missing = [k for k in need if k not in params]
    if missing:
        raise gatecore.ParameterError(
            f"params has no {', '.join(missing)} (peephole_lstm layer {layer}"
            f"{', reverse' if reverse else ''}); keys given: {sorted(params)}")
    if "weight_hr" + sfx in params:
        raise ValueError(f"ONNX's LSTM has no projection (LSTM proj_size); params has "
                         f"weight_hr{sfx}")
    # the LSTM part through core's exporter (gate order, shape and dtype checks), without
    # the peepholes, which it refuses: an ONNX node without P would compute another cell
    lstm = {k: v for k, v in params.items() if not k.startswith("weight_peephole")}
    node = gatecore.weights.to_onnx("lstm", lstm, layer=layer)
    d = 1 if reverse else 0
    W, H = node["W"][d], node["hidden_size"]
    p = np.asarray(params["weight_peephole" + sfx])
    if p.shape != (3 * H,):
        raise gatecore.ShapeError(f"weight_peephole{sfx} must be [3*hidden_size] = [{3 * H}] "
                                  f"([p_i, p_f, p_o]), got {list(p.shape)}")
    if p.dtype != W.dtype:
        raise gatecore.DTypeError(f"weight_peephole{sfx} must be {W.dtype} like the layer's "
                                  f"weights, got {p.dtype}")
    p = p.reshape(3, H)
    return {"W": W, "R": node["R"][d], "B": node["B"][d],
            "P": np.concatenate([p[0], p[2], p[1]])}


@gatecore.hookimpl
def gatecore_register_cells(register):
    """Register the ``peephole_lstm`` cell."""
    register(PEEPHOLE_LSTM)
