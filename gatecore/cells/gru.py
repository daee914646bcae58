"""GRU cell (Cho et al. 2014) in both conventions for the candidate.

Gate order and parameter layout are PyTorch ``nn.GRU``'s: rows ``r, z, n`` of
``weight_ih`` [3H, I] and ``weight_hh`` [3H, H], both biases kept::

    r = sigmoid(ax_r + ah_r)     z = sigmoid(ax_z + ah_z)
    reset_after=True  (PyTorch, cuDNN, Keras reset_after=True, ONNX linear_before_reset=1):
        n = tanh(ax_n + r * (W_hn h_{t-1} + b_hn))
    reset_after=False (Cho et al. 2014, Keras reset_after=False, ONNX linear_before_reset=0):
        n = tanh(ax_n + W_hn (r * h_{t-1}) + b_hn)
    h_t = (1 - z) * n + z * h_{t-1}

The update gate is PyTorch's: z = 1 keeps the old state. Texts that write
h_t = (1 - z) h_{t-1} + z n use the complement; negate the z rows of weights and biases to
convert. ONNX and Keras order the gates z, r, h: see ``gatecore.weights``.
"""

import numpy as np

from .._numba import pointwise
from ._math import sigmoid, tanh
from .spec import CellSpec


# ---------------------------------------------------------------- reset after (PyTorch)
@pointwise
def gru_after_forward(ax, ah, sp, ex, sn, tp, j, H):
    r = sigmoid(ax[j] + ah[j])
    z = sigmoid(ax[H + j] + ah[H + j])
    hn = ah[2 * H + j]
    n = tanh(ax[2 * H + j] + r * hn)
    sn[0, j] = (1.0 - z) * n + z * sp[0, j]
    tp[j] = r
    tp[H + j] = z
    tp[2 * H + j] = n
    tp[3 * H + j] = hn


@pointwise
def gru_after_backward(ax, tp, sp, sn, ex, ds, du, dax, dah, dsp, dex, j, H):
    r = tp[j]
    z = tp[H + j]
    n = tp[2 * H + j]
    hn = tp[3 * H + j]
    dh = ds[0, j]
    dn = dh * (1.0 - z) * (1.0 - n * n)
    dz = dh * (sp[0, j] - n) * z * (1.0 - z)
    dr = dn * hn * r * (1.0 - r)
    dax[j] = dr
    dax[H + j] = dz
    dax[2 * H + j] = dn
    dah[j] = dr
    dah[H + j] = dz
    dah[2 * H + j] = dn * r
    dsp[0, j] = dh * z


# ---------------------------------------------------------------- reset before (Cho 2014)
@pointwise
def gru_before_stage1(ax, ah, sp, ex, u, tp, j, H):
    r = sigmoid(ax[j] + ah[j])
    z = sigmoid(ax[H + j] + ah[H + j])
    u[j] = r * sp[0, j]
    tp[j] = r
    tp[H + j] = z


@pointwise
def gru_before_forward(ax, ah, sp, ex, sn, tp, j, H):
    z = tp[H + j]
    n = tanh(ax[2 * H + j] + ah[2 * H + j])
    sn[0, j] = (1.0 - z) * n + z * sp[0, j]
    tp[2 * H + j] = n


@pointwise
def gru_before_backward_stage2(ax, tp, sp, sn, ex, ds, dax, dah, dex, j, H):
    z = tp[H + j]
    n = tp[2 * H + j]
    dn = ds[0, j] * (1.0 - z) * (1.0 - n * n)
    dax[2 * H + j] = dn
    dah[2 * H + j] = dn


@pointwise
def gru_before_backward(ax, tp, sp, sn, ex, ds, du, dax, dah, dsp, dex, j, H):
    r = tp[j]
    z = tp[H + j]
    n = tp[2 * H + j]
    h = sp[0, j]
    dh = ds[0, j]
    dr = du[j] * h * r * (1.0 - r)
    dz = dh * (h - n) * z * (1.0 - z)
    dax[j] = dr
    dax[H + j] = dz
    dah[j] = dr
    dah[H + j] = dz
    dsp[0, j] = dh * z + du[j] * r


def _configure(reset_after=True):
    if not isinstance(reset_after, (bool, np.bool_)):
        raise TypeError(f"gru option reset_after must be True or False, got {reset_after!r}")
    return GRU_RESET_AFTER if reset_after else GRU_RESET_BEFORE


_COMMON = dict(
    name="gru",
    gate_names=("r", "z", "n"),
    state_names=("h",),
    configure=_configure,
    option_defaults={"reset_after": True},
    description="gated recurrent unit (PyTorch nn.GRU layout); reset_after=False: Cho et al. 2014",
    reference="Cho et al. 2014",
)

GRU_RESET_AFTER = CellSpec(
    tape_size=4,
    forward=gru_after_forward,
    backward=gru_after_backward,
    variant="reset_after",
    **_COMMON,
)

GRU_RESET_BEFORE = CellSpec(
    tape_size=3,
    forward=gru_before_forward,
    backward=gru_before_backward,
    stage1_gates=2,
    forward_stage1=gru_before_stage1,
    backward_stage2=gru_before_backward_stage2,
    variant="reset_before",
    **_COMMON,
)

#: The registered entry: options map to the concrete variants above.
GRU = GRU_RESET_AFTER
