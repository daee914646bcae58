"""LSTM cell (Hochreiter & Schmidhuber 1997; forget gate of Gers, Schmidhuber & Cummins 2000).

Gate order and parameter layout are PyTorch ``nn.LSTM``'s: rows of ``weight_ih`` [4H, I] and
``weight_hh`` [4H, H or P] are ``i, f, g, o``; both biases are kept::

    i = sigmoid(a_i)  f = sigmoid(a_f)  g = tanh(a_g)  o = sigmoid(a_o)   (a = ax + ah)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)               (then h_t = W_hr h_t with proj_size, Sak et al. 2014)

Tape per unit: i, f, g, o. tanh(c_t) is recomputed in backward from the new state c_t:
with a fifth tape stream LLVM stops vectorizing the rule's loop (measured: +50% forward time).
"""

from .._numba import pointwise
from ._math import sigmoid, tanh
from .spec import CellSpec


@pointwise
def lstm_forward(ax, ah, sp, ex, sn, tp, j, H):
    i = sigmoid(ax[j] + ah[j])
    f = sigmoid(ax[H + j] + ah[H + j])
    g = tanh(ax[2 * H + j] + ah[2 * H + j])
    o = sigmoid(ax[3 * H + j] + ah[3 * H + j])
    c = f * sp[1, j] + i * g
    tc = tanh(c)
    sn[1, j] = c
    sn[0, j] = o * tc
    tp[j] = i
    tp[H + j] = f
    tp[2 * H + j] = g
    tp[3 * H + j] = o


@pointwise
def lstm_backward(ax, tp, sp, sn, ex, ds, du, dax, dah, dsp, dex, j, H):
    i = tp[j]
    f = tp[H + j]
    g = tp[2 * H + j]
    o = tp[3 * H + j]
    tc = tanh(sn[1, j])
    dh = ds[0, j]
    dc = ds[1, j] + dh * o * (1.0 - tc * tc)
    di = dc * g * i * (1.0 - i)
    df = dc * sp[1, j] * f * (1.0 - f)
    dg = dc * i * (1.0 - g * g)
    do = dh * tc * o * (1.0 - o)
    dax[j] = di
    dax[H + j] = df
    dax[2 * H + j] = dg
    dax[3 * H + j] = do
    dah[j] = di
    dah[H + j] = df
    dah[2 * H + j] = dg
    dah[3 * H + j] = do
    dsp[0, j] = 0.0
    dsp[1, j] = dc * f


LSTM = CellSpec(
    name="lstm",
    gate_names=("i", "f", "g", "o"),
    state_names=("h", "c"),
    tape_size=4,
    forward=lstm_forward,
    backward=lstm_backward,
    supports_projection=True,
    dah_is_dax=True,
    description="long short-term memory with forget gate (PyTorch nn.LSTM layout)",
    reference="Hochreiter & Schmidhuber 1997; Gers, Schmidhuber & Cummins 2000",
)
