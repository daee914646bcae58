"""The LSTM re-implemented through the public plugin API only (``gatecore.CellSpec`` + numba).

Test-only cell ``spec_lstm``: it must give the built-in LSTM's results (tests/test_plugins.py)
and run within 1.3x of its time (benchmarks/bench_spec_lstm.py). Nothing here imports
gatecore's internals, exactly as a third-party plugin would be written.
"""

from numba import njit

import gatecore
from gatecore.activations import sigmoid, tanh


@njit(cache=True)
def spec_lstm_forward(ax, ah, sp, ex, sn, tp, j, H):
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


@njit(cache=True)
def spec_lstm_backward(ax, tp, sp, sn, ex, ds, du, dax, dah, dsp, dex, j, H):
    i = tp[j]
    f = tp[H + j]
    g = tp[2 * H + j]
    o = tp[3 * H + j]
    tc = tanh(sn[1, j])  # recomputed: four tape values keep the rule loop vectorized
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


SPEC_LSTM = gatecore.CellSpec(
    name="spec_lstm",
    gate_names=("i", "f", "g", "o"),
    state_names=("h", "c"),
    tape_size=4,
    forward=spec_lstm_forward,
    backward=spec_lstm_backward,
    supports_projection=True,
    description="LSTM through the public plugin spec (test and benchmark only)",
    reference="Hochreiter & Schmidhuber 1997",
)


@gatecore.hookimpl
def gatecore_register_cells(register):
    register(SPEC_LSTM)
