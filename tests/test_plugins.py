"""The plugin cells under plugins/: independent references, ONNX Runtime, speed twin of LSTM.

The plugin specs are used as objects (``gatecore.forward(SPEC, ...)``), so these tests run
whether or not the distributions are installed; ``test_plugins_installed`` checks that the
set-up installed them and that they registered through their entry points.
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
import sys

import numpy as np
import pytest

import gatecore
from gatecore.errors import CellSpecError
from gatecore.registry import manager

import oracles
from conftest import PRODUCT_PATHS, products_path
from spec_lstm import SPEC_LSTM

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _plugin(module: str, folder: str):
    try:
        return importlib.import_module(module)
    except ImportError:  # not installed: load from the source tree (test_plugins_installed fails)
        sys.path.insert(0, str(ROOT / "plugins" / folder))
        return importlib.import_module(module)


peephole = _plugin("gatecore_peephole", "peephole-lstm")
mgu_plugin = _plugin("gatecore_mgu", "mgu")


def _random_net(spec, rng, T=6, B=4, I=3, H=5, L=2, D=2, dtype=np.float64):
    p = gatecore.init_params(spec, I, H, num_layers=L, bidirectional=D == 2, dtype=dtype, seed=7)
    p = {k: (2.0 * v).astype(dtype) for k, v in p.items()}  # peepholes etc. well away from 0
    x = rng.standard_normal((T, B, I)).astype(dtype)
    states = tuple((0.5 * rng.standard_normal((L * D, B, H))).astype(dtype)
                   for _ in spec.state_names)
    return p, x, states


def test_plugins_installed():
    """README's set-up installs both plugins; they register through entry point group gatecore."""
    cells = manager.get_registry().cells()
    missing = [n for n in ("peephole_lstm", "mgu") if n not in cells]
    assert not missing, (
        f"plugin cells {missing} are not registered; install them with "
        "pip install -e plugins/peephole-lstm -e plugins/mgu"
    )
    assert cells["peephole_lstm"].plugin.startswith("gatecore-peephole-lstm")
    assert cells["mgu"].plugin.startswith("gatecore-mgu")
    assert cells["peephole_lstm"].spec is peephole.PEEPHOLE_LSTM


@pytest.mark.parametrize("lengths", [None, [6, 2, 0, 5]])
def test_peephole_matches_numpy_reference(rng, lengths):
    spec = peephole.PEEPHOLE_LSTM
    p, x, (h0, c0) = _random_net(spec, rng)
    y, (h_n, c_n), _ = gatecore.forward(spec, x, p, (h0, c0), lengths=lengths)
    y_ref, (h_ref, c_ref) = oracles.peephole_lstm(x, p, h0, c0, lengths)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_n, h_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c_n, c_ref, rtol=1e-10, atol=1e-12)


def test_peephole_with_zero_peepholes_is_lstm(rng):
    p, x, st = _random_net(peephole.PEEPHOLE_LSTM, rng)
    p_lstm = {k: v for k, v in p.items() if not k.startswith("weight_peephole")}
    p_zero = {k: (np.zeros_like(v) if k.startswith("weight_peephole") else v) for k, v in p.items()}
    y, sn, _ = gatecore.forward(peephole.PEEPHOLE_LSTM, x, p_zero, st)
    y_ref, sn_ref, _ = gatecore.forward("lstm", x, p_lstm, st)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-14)


def _onnx_peephole(x, p, h0, c0, lengths, H):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    T, B, I = x.shape
    dirs = [peephole.to_onnx(p, 0, reverse=False), peephole.to_onnx(p, 0, reverse=True)]
    inits = [numpy_helper.from_array(np.stack([d[k] for d in dirs]).astype(np.float32), k)
             for k in ("W", "R", "B", "P")]
    inits += [numpy_helper.from_array(np.asarray(lengths, np.int32), "seq_lens"),
              numpy_helper.from_array(h0.astype(np.float32), "h0"),
              numpy_helper.from_array(c0.astype(np.float32), "c0")]
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "seq_lens", "h0", "c0", "P"],
                            ["Y", "Y_h", "Y_c"], hidden_size=H, direction="bidirectional")
    graph = helper.make_graph(
        [node], "peephole_lstm",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [T, 2, B, H]),
         helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [2, B, H]),
         helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, [2, B, H])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"X": x.astype(np.float32)})


def test_peephole_matches_onnxruntime_lstm_with_P(rng):
    """ONNX LSTM with input P = [p_i, p_o, p_f], bidirectional, sequence_lens, initial states."""
    spec = peephole.PEEPHOLE_LSTM
    H = 5
    p, x, (h0, c0) = _random_net(spec, rng, H=H, L=1, D=2, dtype=np.float32)
    lengths = [6, 2, 4, 6]
    Y, Y_h, Y_c = _onnx_peephole(x, p, h0, c0, lengths, H)
    y, (h_n, c_n), _ = gatecore.forward(spec, x, p, (h0, c0), lengths=lengths)
    # ONNX Y is [T, D, B, H]; ours [T, B, D*H]; compare valid steps (ONNX pads with 0 as we do)
    T, B = x.shape[:2]
    ours = y.reshape(T, B, 2, H).transpose(0, 2, 1, 3)
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(ours[:n, :, b], Y[:n, :, b], rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(h_n, Y_h, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(c_n, Y_c, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("lengths", [None, [6, 3, 1, 0]])
def test_mgu_matches_numpy_reference(rng, lengths):
    spec = mgu_plugin.MGU
    p, x, (h0,) = _random_net(spec, rng)
    y, (h_n,), _ = gatecore.forward(spec, x, p, (h0,), lengths=lengths)
    y_ref, (h_ref,) = oracles.mgu(x, p, h0, lengths)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_n, h_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_spec_lstm_equals_builtin_lstm(rng, dtype):
    """The LSTM written through the public spec gives the built-in's results, forward and backward."""
    p, x, st = _random_net(SPEC_LSTM, rng, dtype=dtype)
    dy = rng.standard_normal((x.shape[0], x.shape[1], 10)).astype(dtype)
    out = []
    for cell in (SPEC_LSTM, "lstm"):
        y, sn, tape = gatecore.forward(cell, x, p, st, lengths=[6, 4, 1, 0])
        dx, ds0, dp = gatecore.backward(tape, dy)
        out.append((y.copy(), dx.copy(), {k: v.copy() for k, v in dp.items()}))
    (y1, dx1, dp1), (y2, dx2, dp2) = out
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y1, y2, **tol)
    np.testing.assert_allclose(dx1, dx2, **tol)
    for k in dp2:
        np.testing.assert_allclose(dp1[k], dp2[k], err_msg=k, **tol)


@pytest.mark.parametrize("path", ("own", "team", "numpy", "blas"))
def test_dah_is_dax_and_tape_in_gx_keep_the_results(rng, path, monkeypatch):
    """LSTM declares dah_is_dax (backward keeps one array for dax and dah in the forward
    direction) and its taped forward keeps the tape in gx: the same bits as with both off,
    on every product path, one and two directions and layers, lengths with a 0, a
    projection, dropout between layers, hidden and input sizes whose weight gradients and dx
    take every split of the packed products (40, 96), one workspace for all calls (the dah
    buffer is empty for one direction). (The team path sums the bias gradient by halves of
    its columns: OpenBLAS's GEMV may round those in the last bit differently.)"""
    from gatecore import network
    from gatecore.cells.lstm import LSTM
    assert LSTM.dah_is_dax and peephole.PEEPHOLE_LSTM.dah_is_dax
    off = dataclasses.replace(LSTM, dah_is_dax=False)
    views = network._forward_views
    ws = gatecore.Workspace()
    for D, L, B, H, I, P, drop in ((1, 1, 3, 6, 3, 0, 0), (2, 2, 4, 6, 3, 0, 0.3),
                                   (1, 2, 1, 6, 3, 4, 0.3), (1, 1, 5, 40, 96, 0, 0),
                                   (2, 1, 4, 40, 96, 0, 0)):
        p = gatecore.init_params(LSTM, I, H, num_layers=L, bidirectional=D == 2, proj_size=P,
                                 dtype=np.float32, seed=7)
        x = rng.standard_normal((7, B, I)).astype(np.float32)
        dy = rng.standard_normal((7, B, D * (P or H))).astype(np.float32)
        lengths = [7, 5, 0, 2, 6][:B]
        out = []
        for cell, tape_in_gx in ((LSTM, True), (off, False)):
            monkeypatch.setattr(network, "_forward_views", lambda *a, t=tape_in_gx: views(
                *a[:-1], a[-1] and t))
            with products_path(path):
                y, sn, tape = gatecore.forward(cell, x, p, lengths=lengths, workspace=ws,
                                               dropout=drop, rng=np.random.default_rng(5))
                dx, ds0, dp = gatecore.backward(tape, dy)
            out.append([y.copy(), dx.copy(), *(s.copy() for s in ds0),
                        *(dp[k].copy() for k in sorted(dp))])
        for a, b in zip(*out):
            if path == "team":
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
            else:
                np.testing.assert_array_equal(a, b)


def test_lstm_training_keeps_no_separate_tape_or_dah():
    """A taped unidirectional LSTM call keeps its tape (i f g o) in gx and backward writes
    dax once: the workspace holds neither a tape buffer nor a dah buffer of [T, B, 4H]; a
    GRU (tape of its own size, dah differs) keeps both. Backward twice gives the same."""
    T, B, I, H = 9, 3, 4, 16
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    big = T * B * 3 * H * 4  # bytes of a [T, B, 3H] float32 array
    sizes = {}
    for cell in ("lstm", "gru"):
        ws = gatecore.Workspace()
        p = gatecore.init_params(cell, I, H, dtype=np.float32, seed=1)
        y, _, tape = gatecore.forward(cell, x, p, workspace=ws)
        g1 = [a.copy() for a in gatecore.backward(tape, dy)[2].values()]
        g2 = list(gatecore.backward(tape, dy)[2].values())
        for a, b in zip(g1, g2):
            np.testing.assert_array_equal(a, b)
        sizes[cell] = sorted(n for n, b in ws._buffers.items() if b.nbytes >= big)
    assert not any(n.startswith(("tp", "b_dah1")) for n in sizes["lstm"]), sizes
    assert any(n.startswith("tp") for n in sizes["gru"]), sizes


def test_dah_is_dax_is_checked():
    """A cell that declares dah_is_dax but writes a different dah (GRU: dah of n is r dn)
    fails check_rules; a two-stage cell cannot declare it."""
    from gatecore.cells.gru import GRU_RESET_AFTER, GRU_RESET_BEFORE
    with pytest.raises(CellSpecError, match="dah_is_dax=True but rule 'backward'"):
        dataclasses.replace(GRU_RESET_AFTER, dah_is_dax=True).check_rules()
    with pytest.raises(CellSpecError, match="dah_is_dax=True is for one-stage cells"):
        dataclasses.replace(GRU_RESET_BEFORE, dah_is_dax=True).validate()
    dataclasses.replace(SPEC_LSTM, dah_is_dax=True).check_rules()
    # a concrete spec from configure() that inherits the flag is checked when first used
    bad = dataclasses.replace(GRU_RESET_AFTER, name="claims", dah_is_dax=True, configure=None,
                              option_defaults={})
    cell = dataclasses.replace(SPEC_LSTM, name="claims", dah_is_dax=True,
                               configure=lambda gru: bad if gru else SPEC_LSTM,
                               option_defaults={"gru": False})
    cell.with_options(gru=False)
    with pytest.raises(CellSpecError, match="dah_is_dax=True but rule 'backward'"):
        cell.with_options(gru=True)

    # a forward that uses ah apart from ax (here ax + 2 ah) fails even with dah equal to dax
    from gatecore.cells.lstm import LSTM, lstm_forward

    def apart(ax, ah, sp, ex, sn, tp, j, H):
        lstm_forward.py_func(ax + ah, ah, sp, ex, sn, tp, j, H)

    with pytest.raises(CellSpecError, match="rule 'forward' gives other results"):
        dataclasses.replace(LSTM, name="apart", forward=apart).check_rules()
    # a tape slot that forward leaves unwritten (backward never reads it) is no difference
    dataclasses.replace(LSTM, name="lstm_tape5", tape_size=5).check_rules()


def test_peephole_to_onnx_order():
    """to_onnx maps [p_i, p_f, p_o] to ONNX's [p_i, p_o, p_f] and gates i,f,g,o to i,o,f,c."""
    H = 2
    p = gatecore.init_params(peephole.PEEPHOLE_LSTM, 1, H, seed=0)
    p["weight_peephole_l0"] = np.array([1, 1, 2, 2, 3, 3], np.float32)
    p["weight_ih_l0"] = np.repeat(np.arange(4, dtype=np.float32), H)[:, None]
    o = peephole.to_onnx(p)
    assert o["P"].tolist() == [1, 1, 3, 3, 2, 2]
    assert o["W"][:, 0].tolist() == [0, 0, 3, 3, 1, 1, 2, 2]


def _lstm_tape_ah_g():
    """An LSTM whose tape keeps a_h of the g gate instead of g: its backward reads ax."""
    from numba import njit

    from gatecore.activations import sigmoid, tanh

    @njit(cache=False)
    def fwd(ax, ah, sp, ex, sn, tp, j, H):
        i = sigmoid(ax[j] + ah[j])
        f = sigmoid(ax[H + j] + ah[H + j])
        g = tanh(ax[2 * H + j] + ah[2 * H + j])
        o = sigmoid(ax[3 * H + j] + ah[3 * H + j])
        c = f * sp[1, j] + i * g
        sn[1, j] = c
        sn[0, j] = o * tanh(c)
        tp[j] = i
        tp[H + j] = f
        tp[2 * H + j] = ah[2 * H + j]
        tp[3 * H + j] = o

    @njit(cache=False)
    def bwd(ax, tp, sp, sn, ex, ds, du, dax, dah, dsp, dex, j, H):
        i = tp[j]
        f = tp[H + j]
        g = tanh(ax[2 * H + j] + tp[2 * H + j])  # needs a_x (with b_ih) from the forward
        o = tp[3 * H + j]
        tc = tanh(sn[1, j])
        dh = ds[0, j]
        dc = ds[1, j] + dh * o * (1.0 - tc * tc)
        for q, v in enumerate((dc * g * i * (1.0 - i), dc * sp[1, j] * f * (1.0 - f),
                               dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o))):
            dax[q * H + j] = v
            dah[q * H + j] = v
        dsp[0, j] = 0.0
        dsp[1, j] = dc * f

    return gatecore.CellSpec(name="lstm_tape_ah_g", gate_names=("i", "f", "g", "o"),
                             state_names=("h", "c"), tape_size=4, forward=fwd, backward=bwd)


@pytest.mark.parametrize("products", PRODUCT_PATHS)
def test_backward_rule_that_reads_ax_gets_the_forward_pre_activations(rng, products):
    """Kernels keep a_x (incl. b_ih) for backward only when a backward rule reads it."""
    from gatecore.kernels.factory import _reads_first_argument

    spec = _lstm_tape_ah_g()
    assert _reads_first_argument(spec.backward)
    assert not _reads_first_argument(gatecore.get_cell("lstm").backward)
    p, x, st = _random_net(spec, rng, dtype=np.float64)
    dy = rng.standard_normal((x.shape[0], x.shape[1], 10))
    with products_path(products):
        out = []
        for cell in (spec, "lstm"):
            y, sn, tape = gatecore.forward(cell, x, p, st, lengths=[6, 4, 1, 0])
            dx, ds0, dp = gatecore.backward(tape, dy)
            out.append((y.copy(), dx.copy(), {k: v.copy() for k, v in dp.items()}))
    (y1, dx1, dp1), (y2, dx2, dp2) = out
    np.testing.assert_allclose(y1, y2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx1, dx2, rtol=1e-12, atol=1e-14)
    for k in dp2:
        np.testing.assert_allclose(dp1[k], dp2[k], err_msg=k, rtol=1e-12, atol=1e-14)


def test_team_path_for_cells_off_the_fused_route(rng):
    """On the team path (float32, two threads) the cells that do not get the whole
    pre-activation (not dah_is_dax: ax and ah apart, the tape through a scratch row when it
    is gx; a backward that reads ax: gx keeps a_x with b_ih) give the LSTM's results: one
    and two directions, lengths with a 0, one item and several, H = 37 (a partial panel)."""
    from gatecore.cells.lstm import LSTM

    specs = (dataclasses.replace(LSTM, name="lstm_apart", dah_is_dax=False), _lstm_tape_ah_g())
    for D, B in ((1, 4), (2, 3), (1, 1)):
        p = gatecore.init_params(LSTM, 6, 37, bidirectional=D == 2, dtype=np.float32, seed=3)
        x = rng.standard_normal((6, B, 6)).astype(np.float32)
        dy = rng.standard_normal((6, B, D * 37)).astype(np.float32)
        lengths = [6, 3, 0, 5][:B]
        with products_path("team"):
            out = []
            for cell in (LSTM, *specs):
                y, _, tape = gatecore.forward(cell, x, p, lengths=lengths)
                assert tape.team
                dx, ds0, dp = gatecore.backward(tape, dy)
                out.append([y.copy(), dx.copy(), *(s.copy() for s in ds0),
                            *(dp[k].copy() for k in sorted(dp))])
        for other in out[1:]:
            for a, b in zip(out[0], other):
                np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
