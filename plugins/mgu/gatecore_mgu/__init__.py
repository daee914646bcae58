"""Minimal gated unit (MGU, Zhou, Wu, Zhang & Zhou 2016) for gatecore.

Registered as ``"mgu"`` through the ``gatecore`` entry point of this distribution. One gate
(forget ``f``) and one candidate ``n``; PyTorch-style parameters with rows ``f, n``:
``weight_ih`` [2H, I], ``weight_hh`` [2H, H], ``bias_ih``/``bias_hh`` [2H]::

    f   = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)
    n   = tanh(W_in x_t + b_in + W_hn (f * h_{t-1}) + b_hn)
    h_t = (1 - f) * h_{t-1} + f * n

The candidate needs a second recurrent product once ``f`` is known, so the spec is two-stage
(``stage1_gates=1``; ``u = f * h_{t-1}``), as GRU with the reset gate before the product.

Tape per unit: f, n.
"""

from __future__ import annotations

from numba import njit

import gatecore
from gatecore.activations import sigmoid, tanh

__all__ = ["MGU", "gatecore_register_cells"]


@njit(cache=True)
def mgu_stage1(ax, ah, sp, ex, u, tp, j, H):
    f = sigmoid(ax[j] + ah[j])
    u[j] = f * sp[0, j]
    tp[j] = f


@njit(cache=True)
def mgu_forward(ax, ah, sp, ex, sn, tp, j, H):
    f = tp[j]
    n = tanh(ax[H + j] + ah[H + j])
    sn[0, j] = (1.0 - f) * sp[0, j] + f * n
    tp[H + j] = n


@njit(cache=True)
def mgu_backward_stage2(ax, tp, sp, sn, ex, ds, dax, dah, dex, j, H):
    f = tp[j]
    n = tp[H + j]
    dn = ds[0, j] * f * (1.0 - n * n)
    dax[H + j] = dn
    dah[H + j] = dn


@njit(cache=True)
def mgu_backward(ax, tp, sp, sn, ex, ds, du, dax, dah, dsp, dex, j, H):
    f = tp[j]
    n = tp[H + j]
    h = sp[0, j]
    dh = ds[0, j]
    # f reaches the loss through the update and through u = f * h
    df = (dh * (n - h) + du[j] * h) * f * (1.0 - f)
    dax[j] = df
    dah[j] = df
    dsp[0, j] = dh * (1.0 - f) + du[j] * f


MGU = gatecore.CellSpec(
    name="mgu",
    gate_names=("f", "n"),
    state_names=("h",),
    tape_size=2,
    forward=mgu_forward,
    backward=mgu_backward,
    stage1_gates=1,
    forward_stage1=mgu_stage1,
    backward_stage2=mgu_backward_stage2,
    description="minimal gated unit: one forget gate, candidate sees f * h",
    reference="Zhou, Wu, Zhang & Zhou 2016",
)


@gatecore.hookimpl
def gatecore_register_cells(register):
    """Register the ``mgu`` cell."""
    register(MGU)
