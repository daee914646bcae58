"""Weight converters (gatecore.weights) against ONNX Runtime and a NumPy reference of Keras.

ONNX: random ONNX LSTM/GRU nodes (both GRU conventions, bidirectional, sequence_lens,
initial states) run by ONNX Runtime, and gatecore on the converted parameters. Keras (no
TensorFlow here): the layer's documented step written in Keras's own layout (kernel
[I, G*H] multiplied from the right, gate columns i f c o / z r h, one or two biases), in
float64, against gatecore on the converted parameters.
"""

from __future__ import annotations

import numpy as np
import pytest

import gatecore
from gatecore import weights
from gatecore.errors import DTypeError, ParameterError, ShapeError


def _onnx_run(op, W, R, B, x, lengths, h0, c0=None, **attrs):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    T, Bn, I = x.shape
    D, GH, H = R.shape
    inputs = ["X", "W", "R", "B", "seq_lens", "h0"] + (["c0"] if c0 is not None else [])
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"),
             numpy_helper.from_array(B, "B"),
             numpy_helper.from_array(np.asarray(lengths, np.int32), "seq_lens"),
             numpy_helper.from_array(h0, "h0")]
    outs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [T, D, Bn, H]),
            helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [D, Bn, H])]
    if c0 is not None:
        inits.append(numpy_helper.from_array(c0, "c0"))
        outs.append(helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, [D, Bn, H]))
    node = helper.make_node(op, inputs, [o.name for o in outs], hidden_size=H,
                            direction="bidirectional" if D == 2 else "forward", **attrs)
    graph = helper.make_graph([node], "rnn", [
        helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, Bn, I])], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"X": x})


@pytest.mark.parametrize("op,lbr", [("LSTM", 0), ("GRU", 0), ("GRU", 1)])
@pytest.mark.parametrize("D", [1, 2])
def test_from_onnx_matches_onnxruntime(op, lbr, D, rng):
    G = 4 if op == "LSTM" else 3
    T, Bn, I, H = 7, 4, 5, 6
    W = (rng.standard_normal((D, G * H, I)) * 0.5).astype(np.float32)
    R = (rng.standard_normal((D, G * H, H)) * 0.5).astype(np.float32)
    B = (rng.standard_normal((D, 2 * G * H)) * 0.5).astype(np.float32)
    x = rng.standard_normal((T, Bn, I)).astype(np.float32)
    lengths = [7, 3, 1, 5]
    h0 = rng.standard_normal((D, Bn, H)).astype(np.float32)
    c0 = rng.standard_normal((D, Bn, H)).astype(np.float32) if op == "LSTM" else None
    attrs = {"linear_before_reset": lbr} if op == "GRU" else {}
    ref = _onnx_run(op, W, R, B, x, lengths, h0, c0, **attrs)

    params, options = weights.from_onnx(op, W, R, B, linear_before_reset=lbr,
                                        direction="bidirectional" if D == 2 else "forward")
    assert options == ({"reset_after": bool(lbr)} if op == "GRU" else {})
    state0 = (h0, c0) if op == "LSTM" else (h0,)
    y, state_n, _ = gatecore.forward(op.lower(), x, params, state0, lengths=lengths,
                                     training=False, **options)
    y_ref = ref[0].transpose(0, 2, 1, 3).reshape(T, Bn, D * H)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=2e-6)
    for got, want in zip(state_n, ref[1:]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)

    back = weights.to_onnx(op.lower(), params, reset_after=options.get("reset_after", True))
    for k, v in (("W", W), ("R", R), ("B", B)):
        np.testing.assert_array_equal(back[k], v)
    assert back["hidden_size"] == H
    assert back["direction"] == ("bidirectional" if D == 2 else "forward")
    if op == "GRU":
        assert back["linear_before_reset"] == lbr


def test_to_onnx_of_a_torch_module_matches_onnxruntime(rng):
    """PyTorch weights (gatecore's layout) through to_onnx run by ONNX Runtime: the same
    outputs as gatecore on the original weights; B omitted means zero biases."""
    p = gatecore.init_params("gru", 3, 4, bidirectional=True, seed=2)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    o = weights.to_onnx("gru", p, reset_after=True)
    h0 = np.zeros((2, 2, 4), np.float32)
    Y, Y_h = _onnx_run("GRU", o["W"], o["R"], o["B"], x, [5, 5], h0,
                       linear_before_reset=o["linear_before_reset"])
    y, h_n = gatecore.gru(x, p)
    np.testing.assert_allclose(y, Y.transpose(0, 2, 1, 3).reshape(5, 2, 8), rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(h_n, Y_h, rtol=1e-5, atol=2e-6)
    no_bias, _ = weights.from_onnx("LSTM", *(np.ones((1, 8, 3)), np.ones((1, 8, 2))))
    assert not no_bias["bias_ih_l0"].any() and not no_bias["bias_hh_l0"].any()


# ---------------------------------------------------------------------------- Keras
def _sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def _keras_layer(cell, x, kernel, recurrent, bias, h0, c0=None, reset_after=True):
    """Keras's LSTM/GRU step (keras.layers.LSTMCell/GRUCell, implementation 2), float64."""
    T = x.shape[0]
    H = recurrent.shape[0]
    h, c = h0.copy(), None if c0 is None else c0.copy()
    ys = []
    for t in range(T):
        if cell == "lstm":
            z = x[t] @ kernel + h @ recurrent + bias
            i, f, cc, o = (z[:, k * H:(k + 1) * H] for k in range(4))
            c = _sig(f) * c + _sig(i) * np.tanh(cc)
            h = _sig(o) * np.tanh(c)
        else:
            if reset_after:
                mx = x[t] @ kernel + bias[0]
                mi = h @ recurrent + bias[1]
            else:
                mx = x[t] @ kernel + bias
                mi = h @ recurrent[:, :2 * H]
            z = _sig(mx[:, :H] + mi[:, :H])
            r = _sig(mx[:, H:2 * H] + mi[:, H:2 * H])
            if reset_after:
                hh = np.tanh(mx[:, 2 * H:] + r * mi[:, 2 * H:])
            else:
                hh = np.tanh(mx[:, 2 * H:] + (r * h) @ recurrent[:, 2 * H:])
            h = z * h + (1 - z) * hh
        ys.append(h)
    return np.stack(ys), h, c


@pytest.mark.parametrize("cell,reset_after", [("lstm", True), ("gru", True), ("gru", False)])
def test_from_keras_matches_the_keras_step(cell, reset_after, rng):
    G = 4 if cell == "lstm" else 3
    T, Bn, I, H = 6, 3, 4, 5
    kernel = rng.standard_normal((I, G * H)) * 0.5
    recurrent = rng.standard_normal((H, G * H)) * 0.5
    two = cell == "gru" and reset_after
    bias = rng.standard_normal((2, G * H) if two else (G * H,)) * 0.5
    x = rng.standard_normal((T, Bn, I))
    h0 = rng.standard_normal((Bn, H))
    c0 = rng.standard_normal((Bn, H)) if cell == "lstm" else None
    y_ref, h_ref, c_ref = _keras_layer(cell, x, kernel, recurrent, bias, h0, c0, reset_after)

    params, options = weights.from_keras(cell, kernel, recurrent, bias, reset_after=reset_after)
    state0 = (h0[None], c0[None]) if cell == "lstm" else (h0[None],)
    y, state_n, _ = gatecore.forward(cell, x, params, state0, training=False, **options)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(state_n[0][0], h_ref, rtol=1e-10, atol=1e-12)
    if cell == "lstm":
        np.testing.assert_allclose(state_n[1][0], c_ref, rtol=1e-10, atol=1e-12)

    # and back: the Keras arrays (LSTM and reset-before GRU fold the two biases into one)
    k = weights.to_keras(cell, params, reset_after=reset_after)
    np.testing.assert_array_equal(k["kernel"], kernel)
    np.testing.assert_array_equal(k["recurrent_kernel"], recurrent)
    np.testing.assert_allclose(k["bias"], bias, rtol=0, atol=0)


@pytest.mark.parametrize("cell,reset_after", [("lstm", True), ("gru", True), ("gru", False)])
def test_to_keras_of_pytorch_weights(cell, reset_after, rng):
    """gatecore/PyTorch weights (two different biases) to Keras: the Keras step gives
    gatecore's outputs, both directions of a bidirectional layer (the reverse one as Keras's
    go_backwards layer, reversed back)."""
    p = gatecore.init_params(cell, 4, 5, bidirectional=True, dtype=np.float64, seed=3)
    x = rng.standard_normal((6, 2, 4))
    y, _, _ = gatecore.forward(cell, x, p, training=False,
                               **({"reset_after": reset_after} if cell == "gru" else {}))
    for d, sl in ((False, slice(0, 5)), (True, slice(5, 10))):
        k = weights.to_keras(cell, p, reverse=d, reset_after=reset_after)
        xs = x[::-1] if d else x
        zero = np.zeros((2, 5))
        ys, _, _ = _keras_layer(cell, xs, k["kernel"], k["recurrent_kernel"], k["bias"], zero,
                                zero if cell == "lstm" else None, reset_after)
        np.testing.assert_allclose(ys[::-1] if d else ys, y[:, :, sl], rtol=1e-10, atol=1e-12)
        back, _ = weights.from_keras(cell, k["kernel"], k["recurrent_kernel"], k["bias"],
                                     reset_after=reset_after, reverse=d)
        assert set(back) == {f"{n}_l0{'_reverse' if d else ''}"
                             for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


def test_converters_reject_bad_input():
    W, R = np.zeros((1, 8, 3), np.float32), np.zeros((1, 8, 2), np.float32)
    with pytest.raises(ValueError, match="cell must be"):
        weights.from_onnx("RNN", W, R)
    with pytest.raises(ShapeError, match=r"R must have shape \[1, 8, 2\]"):
        weights.from_onnx("LSTM", W, np.zeros((1, 8, 3), np.float32))
    with pytest.raises(ShapeError, match="B must have shape"):
        weights.from_onnx("LSTM", W, R, np.zeros((1, 8), np.float32))
    with pytest.raises(ShapeError, match="W must"):
        weights.from_onnx("GRU", W, R)  # 8 rows are not 3 gates
    with pytest.raises(ValueError, match="reverse each sequence"):
        weights.from_onnx("LSTM", W, R, direction="reverse")
    with pytest.raises(ValueError, match="linear_before_reset"):
        weights.from_onnx("GRU", np.zeros((1, 6, 3)), np.zeros((1, 6, 2)), linear_before_reset=2)
    with pytest.raises(DTypeError, match="R has dtype float64"):
        weights.from_onnx("LSTM", W, R.astype(np.float64))
    with pytest.raises(DTypeError, match="complex"):
        weights.from_onnx("LSTM", W.astype(complex), R)
    with pytest.raises(ShapeError, match="recurrent_kernel"):
        weights.from_keras("lstm", np.zeros((3, 8)), np.zeros((3, 8)))
    with pytest.raises(ShapeError, match=r"bias must have shape \[2, 6\]"):
        weights.from_keras("gru", np.zeros((3, 6)), np.zeros((2, 6)), np.zeros(6))
    p = gatecore.init_params("lstm", 3, 4, proj_size=2, seed=0)
    with pytest.raises(ValueError, match="projection"):
        weights.to_onnx("lstm", p)
    with pytest.raises(ParameterError, match="weight_ih_l1"):
        weights.to_keras("lstm", gatecore.init_params("lstm", 3, 4, seed=0), layer=1)
    # a plugin cell's extra parameters (peepholes) have no place in ONNX's/Keras's plain
    # cell: refused, not dropped (the exported model would compute another function)
    peep = dict(gatecore.init_params("lstm", 3, 4, bidirectional=True, seed=0),
                weight_peephole_l0_reverse=np.ones(12, np.float32))
    with pytest.raises(ParameterError, match="weight_peephole_l0_reverse"):
        weights.to_onnx("lstm", peep)
    with pytest.raises(ParameterError, match="weight_peephole_l0_reverse"):
        weights.to_keras("lstm", peep, reverse=True)
    assert weights.to_keras("lstm", peep)["kernel"].shape == (3, 16)  # (the other direction)
    with pytest.raises(ValueError, match="layer"):
        weights.to_keras("lstm", gatecore.init_params("lstm", 3, 4, seed=0), layer=-1)
    # the GRU's convention must be said when exporting (one layout, two cells)
    g = gatecore.init_params("gru", 3, 4, bidirectional=True, seed=0)
    for fn in (weights.to_onnx, weights.to_keras):
        with pytest.raises(TypeError, match="reset_after is required"):
            fn("gru", g)
        with pytest.raises(TypeError, match="reset_after must be True or False"):
            fn("gru", g, reset_after="no")
    with pytest.raises(TypeError, match="reset_after must be True or False"):
        weights.from_keras("gru", np.zeros((3, 6)), np.zeros((2, 6)), reset_after=1)
    for bad in (1.0, np.array([1]), "1"):
        with pytest.raises(ValueError, match="linear_before_reset"):
            weights.from_onnx("GRU", np.zeros((1, 6, 3)), np.zeros((1, 6, 2)),
                              linear_before_reset=bad)
    # one dtype per layer; both directions alike
    mixed = dict(g, bias_ih_l0=g["bias_ih_l0"].astype(np.float64))
    with pytest.raises(DTypeError, match="bias_ih_l0 has dtype float64"):
        weights.to_onnx("gru", mixed, reset_after=True)
    with pytest.raises(DTypeError, match="bias_ih_l0 has dtype float64"):
        weights.to_keras("gru", mixed, reset_after=True)
    uneven = dict(g, weight_ih_l0_reverse=np.zeros((12, 5), np.float32))
    with pytest.raises(ShapeError, match="both alike"):
        weights.to_onnx("gru", uneven, reset_after=True)


def test_from_onnx_reads_attributes_as_onnx_gives_them():
    """onnx.helper.get_attribute_value gives strings as bytes (direction=b'bidirectional')."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    node = helper.make_node("GRU", ["X", "W", "R"], ["Y"], hidden_size=2,
                            direction="bidirectional", linear_before_reset=1)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["direction"] == b"bidirectional"
    params, options = weights.from_onnx(node.op_type, np.ones((2, 6, 3)), np.ones((2, 6, 2)),
                                        direction=attrs["direction"],
                                        linear_before_reset=attrs["linear_before_reset"])
    assert options == {"reset_after": True} and "weight_ih_l0_reverse" in params
    del onnx


def test_from_onnx_takes_a_nodes_attributes_and_refuses_what_it_cannot_honour():
    """A node's attributes pass as they are (hidden_size, layout and default activations
    checked); clip, other activations, input_forget=1 and peepholes are refused by name."""
    pytest.importorskip("onnx")
    from onnx import helper

    W, R = np.ones((2, 8, 3)), np.ones((2, 8, 2))
    node = helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=2, layout=1,
                            direction="bidirectional", input_forget=0,
                            activations=["Sigmoid", "Tanh", "Tanh"] * 2)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    params, options = weights.from_onnx(node.op_type, W, R, **attrs)
    assert options == {} and "weight_hh_l0_reverse" in params
    for bad, match in ((dict(clip=3.0), "clip"), (dict(input_forget=1), "input_forget"),
                       (dict(activations=[b"Relu", b"Tanh", b"Tanh"]), "activations"),
                       (dict(activation_alpha=[0.5]), "activation_alpha"),
                       (dict(P=np.ones((2, 6))), "peephole"), (dict(hidden_size=3), "hidden_size"),
                       (dict(layout=2), "layout")):
        with pytest.raises(ValueError, match=match):
            weights.from_onnx("LSTM", W, R, **bad)
    with pytest.raises(TypeError, match="peepholes"):
        weights.from_onnx("LSTM", W, R, peepholes=1)
    with pytest.raises(ValueError, match="per direction"):  # 3 names for 2 directions
        weights.from_onnx("LSTM", W, R, activations=["Sigmoid", "Tanh", "Tanh"])
    with pytest.raises(TypeError, match="not of its GRU"):
        weights.from_onnx("GRU", np.ones((1, 6, 3)), np.ones((1, 6, 2)), input_forget=0)


def test_peephole_to_onnx_refuses_projection_and_names_missing_keys():
    gp = pytest.importorskip("gatecore_peephole")
    p = gatecore.init_params("peephole_lstm", 3, 4, proj_size=2, seed=1)
    with pytest.raises(ValueError, match="projection"):
        gp.to_onnx(p)
    with pytest.raises(ParameterError, match="weight_peephole_l0"):
        gp.to_onnx(gatecore.init_params("lstm", 3, 4))
    with pytest.raises(ParameterError, match="weight_ih_l5"):
        gp.to_onnx(gatecore.init_params("peephole_lstm", 3, 4), layer=5)
    # the layer's arrays are checked as core's to_onnx checks them, the peepholes too
    good = gatecore.init_params("peephole_lstm", 3, 4, seed=1)
    for key, bad, err, match in [
            ("weight_peephole_l0", np.ones(11, np.float32), ShapeError, r"\[12\].*got \[11\]"),
            ("weight_peephole_l0", np.ones(12), DTypeError, "float32"),
            ("weight_hh_l0", np.ones((16, 3), np.float32), ShapeError, "weight_hh_l0")]:
        with pytest.raises(err, match=match):
            gp.to_onnx({**good, key: bad})


def test_onnx_input_forget_message_names_a_readme_section():
    """The message pointed to a README section "Your own cell" that does not exist."""
    import pathlib
    import re
    with pytest.raises(ValueError, match="input_forget") as info:
        weights.from_onnx("LSTM", np.zeros((1, 12, 2), np.float32), np.zeros((1, 12, 3), np.float32),
                          input_forget=1)
    section = re.search(r"README, '([^']+)'", str(info.value)).group(1)
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    assert re.search(rf"^#+ {re.escape(section)}$", readme, re.M), section


def test_converter_arguments_are_checked():
    """Bad converter arguments raise errors that name them (found by a break-it sweep):
    ``reverse`` must be a bool (the string "False" selected the reverse direction), ONNX
    activation attributes of the wrong kind, input_forget other than 0/1, one bias of a
    layer without the other (forward refuses such a set too), dtype messages naming the
    caller's dtypes; ``python -m gatecore`` runs the CLI."""
    import subprocess
    import sys
    z = lambda *s: np.zeros(s, np.float32)  # noqa: E731
    for bad in ("False", "no", 1, None):
        with pytest.raises(TypeError, match="reverse must be True or False"):
            weights.from_keras("lstm", z(3, 16), z(4, 16), reverse=bad)
    p = gatecore.init_params("lstm", 3, 4, bidirectional=True)
    with pytest.raises(TypeError, match="reverse must be True or False"):
        weights.to_keras("lstm", p, reverse="no")
    W, R = z(1, 16, 3), z(1, 16, 4)
    for kw in (dict(activation_alpha=1.0), dict(activation_beta=np.array(0.5)),
               dict(activation_alpha=[0.5])):
        with pytest.raises(ValueError, match="activation_"):
            weights.from_onnx("LSTM", W, R, **kw)
    weights.from_onnx("LSTM", W, R, activation_alpha=[], activation_beta=None)
    with pytest.raises(TypeError, match="activations must be a list"):
        weights.from_onnx("LSTM", W, R, activations=123)
    with pytest.raises(ValueError, match="input_forget must be 0 or 1"):
        weights.from_onnx("LSTM", W, R, input_forget=2)
    with pytest.raises(DTypeError, match="R has dtype float64 but W has int64"):
        weights.from_onnx("LSTM", W.astype(np.int64), R.astype(np.float64))
    q = gatecore.init_params("lstm", 3, 4)
    del q["bias_hh_l0"]
    for export in (lambda: weights.to_onnx("lstm", q), lambda: weights.to_keras("lstm", q)):
        with pytest.raises(ParameterError, match="bias_ih_l0 but not bias_hh_l0"):
            export()
    out = subprocess.run([sys.executable, "-m", "gatecore", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("gatecore ")
