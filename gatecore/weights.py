"""Weight converters: ONNX and Keras layouts to and from gatecore's (PyTorch's).

gatecore's parameters are PyTorch ``state_dict``s (``nn.LSTM``/``nn.GRU``): per layer k and
direction, ``weight_ih_l{k}`` [G*H, I], ``weight_hh_l{k}`` [G*H, H], ``bias_ih_l{k}`` and
``bias_hh_l{k}`` [G*H] (suffix ``_reverse`` for the reverse direction), gate rows in the
order **i, f, g, o** (LSTM) and **r, z, n** (GRU). The other two common layouts differ in
gate order, transposition and biases:

============  ========================  ===================================================
layout        gate order                arrays (one layer)
============  ========================  ===================================================
PyTorch       LSTM i f g o; GRU r z n   W_ih [G*H, I], W_hh [G*H, H], b_ih, b_hh [G*H]
ONNX          LSTM i o f c; GRU z r h   W [D, G*H, I], R [D, G*H, H], B [D, 2*G*H] = (Wb, Rb)
Keras         LSTM i f c o; GRU z r h   kernel [I, G*H], recurrent_kernel [H, G*H], one bias
                                        [G*H]; GRU with reset_after=True: bias [2, G*H]
============  ========================  ===================================================

(ONNX operator ``LSTM``/``GRU``, opset 7-22; Keras ``layers.LSTM``/``layers.GRU``.) The cell
equations are the same in all three (:mod:`gatecore.cells.lstm`, :mod:`gatecore.cells.gru`) with
these options: the GRU's
reset gate acts after the hidden product in PyTorch, in ONNX with ``linear_before_reset=1``
and in Keras with ``reset_after=True`` (gatecore ``reset_after=True``, the default), and
before it in ONNX with ``linear_before_reset=0`` (ONNX's default) and Keras
``reset_after=False`` (gatecore ``reset_after=False``). The GRU update is
``h_t = (1 - z) n + z h_{t-1}`` everywhere. Only the default activations are covered
(sigmoid and tanh; not Keras 1's ``hard_sigmoid``, not ONNX's ``activations``, ``clip`` or
``input_forget``); ONNX's LSTM peepholes ``P``: the ``peephole_lstm`` plugin exports them
(``gatecore_peephole.to_onnx``), importing them is not supported yet. The converters copy; they
never modify their inputs.

Examples
--------
>>> import numpy as np, gatecore
>>> from gatecore import weights
>>> rng = np.random.default_rng(0)
>>> W = rng.standard_normal((1, 9, 4)).astype(np.float32)      # ONNX GRU, H=3, I=4
>>> R = rng.standard_normal((1, 9, 3)).astype(np.float32)
>>> params, options = weights.from_onnx("GRU", W, R, linear_before_reset=0)
>>> options
{'reset_after': False}
>>> y, h_n = gatecore.gru(np.zeros((5, 2, 4), np.float32), params, **options)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .api import _to_numpy
from .cells.spec import _BASE_PARAM_ROWS
from .errors import DTypeError, ParameterError, ShapeError

__all__ = ["from_onnx", "to_onnx", "from_keras", "to_keras"]

# For each cell: the number of gates and, per foreign layout, the foreign block of each
# PyTorch gate row block (PyTorch block g = foreign block ORDER[g]).
_GATES = {"lstm": 4, "gru": 3}
_ONNX_ORDER = {"lstm": (0, 2, 3, 1),   # i f g o  <-  ONNX i o f c
               "gru": (1, 0, 2)}       # r z n    <-  ONNX z r h
_KERAS_ORDER = {"lstm": (0, 1, 2, 3),  # i f g o  <-  Keras i f c o
                "gru": (1, 0, 2)}      # r z n    <-  Keras z r h


def _cell(name) -> str:
    if not isinstance(name, str) or name.lower() not in _GATES:
        raise ValueError(f"cell must be 'lstm' or 'gru' (ONNX op_type 'LSTM' or 'GRU'), got {name!r}")
    return name.lower()


def _float(name: str, value) -> np.ndarray:
    arr = _to_numpy(name, value)  # (torch tensors, masked and CUDA arrays as in the API)
    if not arr.dtype.isnative:  # big-endian data from a file: same values, native order
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype not in (np.float32, np.float64):
        if arr.dtype.kind in "iub" or arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        else:
            raise DTypeError(f"{name} must be a float32 or float64 array, got dtype {arr.dtype}")
    return arr


def _shape(name: str, arr: np.ndarray, want: tuple, meaning: str) -> None:
    if arr.shape != tuple(want):
        raise ShapeError(f"{name} must have shape {list(want)} = {meaning}, got {list(arr.shape)}")


def _reorder(a: np.ndarray, order, H: int) -> np.ndarray:
    """Gate blocks of H rows: block g of the result is block order[g] of a (a copy)."""
    return np.ascontiguousarray(np.concatenate([a[o * H:(o + 1) * H] for o in order]))


def _unorder(a: np.ndarray, order, H: int) -> np.ndarray:
    """Inverse of ``_reorder``: block order[g] of the result is block g of a."""
    inverse = [0] * len(order)
    for g, o in enumerate(order):
        inverse[o] = g
    return _reorder(a, inverse, H)


def _flag(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _gru_option(cell: str, reset_after) -> bool:
    """A GRU's ``reset_after`` for export: required (no default), as the two conventions
    share one parameter layout and a wrong guess goes unnoticed."""
    if cell != "gru":
        return True if reset_after is None else _flag("reset_after", reset_after)
    if reset_after is None:
        raise TypeError("reset_after is required for a GRU: pass the option the parameters are "
                        "used with (gatecore's default is True; ONNX linear_before_reset=1, "
                        "Keras reset_after=True)")
    return _flag("reset_after", reset_after)


def _suffix(layer: int, reverse: bool) -> str:
    if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool) or layer < 0:
        raise ValueError(f"layer must be a non-negative int, got {layer!r}")
    return f"_l{layer}" + ("_reverse" if _flag("reverse", reverse) else "")


_ONNX_DEFAULT_ACTIVATIONS = {"lstm": ("sigmoid", "tanh", "tanh"), "gru": ("sigmoid", "tanh")}


def _onnx_attributes(cell, layout, attributes, D):
    """Check an ONNX LSTM/GRU node's attributes that gatecore's cells cannot vary (D: the
    node's number of directions)."""
    if layout not in (0, 1):
        raise ValueError(f"layout must be 0 or 1 (ONNX's LSTM/GRU attribute), got {layout!r}")
    lstm_only = ("input_forget", "P")
    for name, value in attributes.items():
        if cell != "lstm" and name in lstm_only:
            raise TypeError(f"from_onnx() got {name!r}, an attribute of ONNX's LSTM, not of its GRU")
        if name == "clip":
            if value is not None:
                raise ValueError(f"the ONNX attribute clip={value!r} (cell input clipping) is not "
                                 "supported: gatecore's cells are PyTorch's, which do not clip")
        elif name == "input_forget":
            if value not in (0, False, None):
                if value not in (1, True):
                    raise ValueError(f"the ONNX attribute input_forget must be 0 or 1, got "
                                     f"{value!r}")
                raise ValueError("the ONNX attribute input_forget=1 (coupled input and forget "
                                 "gates) is not supported by gatecore's LSTM; a CIFG cell is "
                                 "a plugin (see README, 'Writing a cell plugin')")
        elif name == "activations":
            if isinstance(value, (str, bytes)):
                value = [value]
            if value is not None and not isinstance(value, (list, tuple, np.ndarray)):
                raise TypeError(f"the ONNX attribute activations must be a list of names, got "
                                f"{value!r}")
            names = tuple((v.decode() if isinstance(v, bytes) else str(v)).lower()
                          for v in (value if value is not None else ()))
            base = _ONNX_DEFAULT_ACTIVATIONS[cell]
            if names and names != base * D:
                if names in (base, base * 2):
                    raise ValueError(f"activations has {len(names)} names for {D} direction(s); "
                                     f"ONNX wants {len(base)} per direction")
                raise ValueError(f"the ONNX attribute activations={list(names)} is not supported: "
                                 f"gatecore's {cell.upper()} uses ONNX's defaults {list(base)}")
        elif name in ("activation_alpha", "activation_beta"):
            if value is not None and (np.ndim(value) == 0 or len(value)):
                raise ValueError(f"the ONNX attribute {name}={value!r} is not supported "
                                 "(gatecore's activations take no parameters)")
        elif name == "P":
            raise ValueError("ONNX's LSTM peepholes P are not part of gatecore's LSTM: use the "
                             "peephole_lstm plugin's cell (gatecore_peephole.to_onnx documents "
                             "its P order)")
        else:
            raise TypeError(f"from_onnx() got an unexpected keyword argument {name!r}")


def from_onnx(op_type, W, R, B=None, *, linear_before_reset: int = 0,
              direction: str | None = None, layer: int = 0, hidden_size: int | None = None,
              layout: int = 0, **attributes) -> tuple[dict, dict]:
    """gatecore parameters from the inputs of an ONNX ``LSTM`` or ``GRU`` node.

    Parameters
    ----------
    op_type : {"LSTM", "GRU"}
        The node's operator (case-insensitive; gatecore's cell names work too).
    W : array [D, G*H, I]
        Input weights, gate blocks in ONNX's order (LSTM ``i o f c``, GRU ``z r h``); D = 1
        (``direction="forward"``) or 2 (``"bidirectional"``: forward, then reverse).
    R : array [D, G*H, H]
        Recurrent weights, same order.
    B : array [D, 2*G*H], optional
        ``Wb`` then ``Rb``, same order; zeros when omitted (as in ONNX).
    linear_before_reset : {0, 1}
        The GRU node's attribute (ONNX's default 0: reset before the hidden product); ignored
        for LSTM.
    direction : {"forward", "bidirectional"}, optional
        The node's attribute, checked against D (default: from D). ``"reverse"`` (one
        direction run backwards) has no PyTorch/gatecore layer: reverse the sequences (per
        length) and use ``"forward"``.
    layer : int
        Layer index k of the keys produced (``weight_ih_l{k}``...): merge the dicts of a stack
        of nodes, one per layer.
    hidden_size, layout : optional
        The node's attributes, checked (hidden_size against W; layout 0 or 1, the same
        weights either way), so that a node's attributes can be passed as they are
        (``**{a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}``).
    **attributes
        The node's other attributes: ``activations`` (with ``activation_alpha``/``beta``) at
        ONNX's defaults (LSTM Sigmoid, Tanh, Tanh; GRU Sigmoid, Tanh; per direction) and
        ``input_forget=0`` are accepted; ``clip``, other activations and ``input_forget=1``
        change the cell and are refused (gatecore's cells are PyTorch's).

    Returns
    -------
    params : dict
        ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` (and the
        ``_reverse`` ones when D = 2), PyTorch's layout, W's dtype (float16 and integer
        arrays become float32).
    options : dict
        Cell options to pass along (``gatecore.gru(x, params, **options)``):
        ``{"reset_after": bool(linear_before_reset)}`` for GRU, ``{}`` for LSTM. Dropping
        them for an ONNX GRU with the default ``linear_before_reset=0`` silently computes the
        other cell (outputs off by 0.1-1 in a test): the parameter layout is the same.

    Raises
    ------
    ValueError
        Unknown ``op_type``, ``direction``, ``linear_before_reset`` or ``layout``, a
        reverse-only node, a ``hidden_size`` that W contradicts, ``activations`` not one list
        of the defaults per direction, or an attribute gatecore cannot honour (``clip``,
        non-default ``activations``, non-empty ``activation_alpha``/``activation_beta``,
        ``input_forget=1``; ONNX's peepholes ``P`` are an input of the ``peephole_lstm``
        plugin's cell).
    TypeError
        An unknown keyword (or an LSTM-only one for a GRU).
    ShapeError (ValueError), DTypeError (TypeError)
        An array of the wrong shape or dtype (complex, object, ...).

    Notes
    -----
    ONNX operators LSTM and GRU (opset 7-22); the ONNX outputs ``Y`` [T, D, B, H] are
    gatecore's ``y`` [T, B, D*H] after ``Y.transpose(0, 2, 1, 3).reshape(T, B, D*H)``;
    ``Y_h``/``Y_c`` are ``h_n``/``c_n``; ``sequence_lens`` is ``lengths`` (one difference:
    for a sequence of length 0, ONNX Runtime returns ``Y_h``/``Y_c`` of zeros where gatecore's
    ``h_n``/``c_n`` are the initial states, its rule for every length). The weights are
    the same for the node's ``layout`` attribute 0 and 1; with ``layout=1`` (opset 14) X is
    [B, T, I] (gatecore's ``batch_first=True``), ``Y`` [B, T, D, H] is ``y.reshape(B, T, D,
    H)``, but ``initial_h``/``Y_h`` are [B, D, H] where gatecore's ``h0``/``h_n`` stay
    [D, B, H] as PyTorch's (``.transpose(1, 0, 2)`` each way).
    """
    cell = _cell(op_type)
    G = _GATES[cell]
    given = {n: getattr(a, "dtype", None) for n, a in (("W", W), ("R", R), ("B", B))}
    W = _float("W", W)
    R = _float("R", R)
    if W.ndim != 3:
        raise ShapeError(f"W must be 3-D [num_directions, {G}*hidden_size, input_size], got shape {list(W.shape)}")
    D, GH, I = W.shape
    if D not in (1, 2) or GH % G or GH == 0:
        raise ShapeError(f"W must have shape [1 or 2, {G}*hidden_size, input_size], got {list(W.shape)}")
    H = GH // G
    _onnx_attributes(cell, layout, attributes, D)
    if hidden_size is not None and not (isinstance(hidden_size, (int, np.integer))
                                        and not isinstance(hidden_size, bool)):
        raise ValueError(f"hidden_size must be an int, got {hidden_size!r}")
    if hidden_size is not None and hidden_size != H:
        raise ValueError(f"hidden_size={hidden_size!r} but W's {GH} rows are {G} gates of {H}")
    _shape("R", R, (D, GH, H), f"[num_directions, G*hidden_size, hidden_size], hidden_size {H} "
           f"from W's {GH} rows / {G} {cell.upper()} gates (is op_type {op_type!r} right?)")
    if R.dtype != W.dtype:
        raise DTypeError(f"R has dtype {given['R'] or R.dtype} but W has {given['W'] or W.dtype} "
                         f"(converted: {R.dtype} and {W.dtype}); give all arrays one float dtype")
    if B is None:
        B = np.zeros((D, 2 * GH), W.dtype)
    B = _float("B", B)
    _shape("B", B, (D, 2 * GH), "[num_directions, 2*G*hidden_size] (Wb then Rb)")
    if B.dtype != W.dtype:
        raise DTypeError(f"B has dtype {given['B'] or B.dtype} but W has {given['W'] or W.dtype} "
                         f"(converted: {B.dtype} and {W.dtype}); give all arrays one float dtype")
    want = "forward" if D == 1 else "bidirectional"
    if isinstance(direction, bytes):  # as onnx.helper.get_attribute_value returns it
        direction = direction.decode()
    if direction is not None and direction != want:
        if direction == "reverse" and D == 1:
            raise ValueError(
                "direction='reverse' (one direction run backwards) has no gatecore/PyTorch layer: "
                "reverse each sequence over its length and convert with direction='forward'")
        raise ValueError(f"direction must be {want!r} for W with {D} direction(s), got {direction!r}")
    if not (isinstance(linear_before_reset, (int, np.integer, np.bool_))
            and linear_before_reset in (0, 1)):
        raise ValueError(f"linear_before_reset must be 0 or 1, got {linear_before_reset!r}")
    order = _ONNX_ORDER[cell]
    params = {}
    for d in range(D):
        sfx = _suffix(layer, d == 1)
        params["weight_ih" + sfx] = _reorder(W[d], order, H)
        params["weight_hh" + sfx] = _reorder(R[d], order, H)
        params["bias_ih" + sfx] = _reorder(B[d, :GH], order, H)
        params["bias_hh" + sfx] = _reorder(B[d, GH:], order, H)
    options = {"reset_after": bool(linear_before_reset)} if cell == "gru" else {}
    return params, options


def _layer_arrays(params, cell: str, layer: int, reverse: bool, what: str):
    if not isinstance(params, Mapping):
        raise DTypeError(f"params must be a mapping of name to array, got {type(params).__name__}")
    sfx = _suffix(layer, reverse)
    if "weight_hr" + sfx in params:
        raise ValueError(f"{what} has no projection (LSTM proj_size); params has weight_hr{sfx}")
    # any other parameter of this layer and direction (a plugin cell's, e.g. peephole_lstm's
    # weight_peephole) would be dropped silently: the exported cell would compute another
    # function
    extra = sorted(k for k in params if isinstance(k, str) and k.endswith(sfx)
                   and k[:-len(sfx)] not in _BASE_PARAM_ROWS)
    if extra:
        raise ParameterError(
            f"{what} takes only weight_ih, weight_hh, bias_ih and bias_hh of a layer; params "
            f"has {extra} too (a plugin cell's parameters: convert with that plugin's own "
            f"exporter, e.g. gatecore_peephole.to_onnx)")
    try:
        w_ih = _float("weight_ih" + sfx, params["weight_ih" + sfx])
        w_hh = _float("weight_hh" + sfx, params["weight_hh" + sfx])
    except KeyError as exc:
        raise ParameterError(f"params has no {exc.args[0]!r} (layer {layer}"
                             f"{', reverse' if reverse else ''}); keys: {sorted(params)}") from None
    G = _GATES[cell]
    if w_ih.ndim != 2 or w_ih.shape[0] % G or w_ih.shape[0] == 0:
        raise ShapeError(f"weight_ih{sfx} must be [{G}*hidden_size, input_size], got {list(w_ih.shape)}")
    H = w_ih.shape[0] // G
    _shape("weight_hh" + sfx, w_hh, (G * H, H), f"[{G}*hidden_size, hidden_size]")
    has = [("bias_" + n + sfx) in params for n in ("ih", "hh")]
    if has[0] != has[1]:  # (forward refuses such a set too: both biases, or bias=False)
        raise ParameterError(f"params has bias_{'ih' if has[0] else 'hh'}{sfx} but not "
                             f"bias_{'hh' if has[0] else 'ih'}{sfx}: give both biases of a "
                             "layer, or neither (bias=False)")
    zeros = np.zeros(G * H, w_ih.dtype)
    b_ih = _float("bias_ih" + sfx, params.get("bias_ih" + sfx, zeros))
    b_hh = _float("bias_hh" + sfx, params.get("bias_hh" + sfx, zeros))
    _shape("bias_ih" + sfx, b_ih, (G * H,), f"[{G}*hidden_size]")
    _shape("bias_hh" + sfx, b_hh, (G * H,), f"[{G}*hidden_size]")
    for name, a in (("weight_hh", w_hh), ("bias_ih", b_ih), ("bias_hh", b_hh)):
        if a.dtype != w_ih.dtype:
            raise DTypeError(f"{name}{sfx} has dtype {a.dtype} but weight_ih{sfx} has "
                             f"{w_ih.dtype}; give all arrays of a layer one dtype")
    return w_ih, w_hh, b_ih, b_hh, H


def to_onnx(cell, params, *, layer: int = 0, reset_after: bool | None = None) -> dict:
    """The inputs and attributes of an ONNX ``LSTM``/``GRU`` node for one layer of ``params``.

    Parameters
    ----------
    cell : {"lstm", "gru"}
    params : mapping
        gatecore/PyTorch parameters (any number of layers; bias-free sets give zero B).
        LSTM with projection (``weight_hr``) has no ONNX form.
    layer : int
        Which layer k; both directions when ``weight_ih_l{k}_reverse`` is present.
    reset_after : bool
        GRU (required): the option the parameters are used with (gatecore's default is
        True). Ignored for LSTM.

    Returns
    -------
    dict
        ``W`` [D, G*H, I], ``R`` [D, G*H, H], ``B`` [D, 2*G*H] in ONNX's gate order, and the
        attributes ``hidden_size``, ``direction`` (``"forward"`` or ``"bidirectional"``) and,
        for GRU, ``linear_before_reset`` (1 when ``reset_after``).

    Raises
    ------
    ValueError, ParameterError, ShapeError, DTypeError
        Unknown cell, a projection, missing keys, other parameters of the layer (a plugin
        cell's, such as peepholes: ONNX's node would compute another cell), or arrays of the
        wrong shape or dtype (all of one layer must share one dtype; both directions one
        shape).
    TypeError
        A GRU without ``reset_after``.
    """
    cell = _cell(cell)
    reset_after = _gru_option(cell, reset_after)
    if not isinstance(params, Mapping):
        raise DTypeError(f"params must be a mapping of name to array, got {type(params).__name__}")
    D = 2 if f"weight_ih{_suffix(layer, True)}" in params else 1
    W, R, B = [], [], []
    order = _ONNX_ORDER[cell]
    for d in range(D):
        w_ih, w_hh, b_ih, b_hh, H = _layer_arrays(params, cell, layer, d == 1, f"ONNX's {cell.upper()}")
        if d and (w_ih.shape != W[0].shape or w_ih.dtype != W[0].dtype):
            raise ShapeError(
                f"weight_ih{_suffix(layer, True)} is {list(w_ih.shape)} {w_ih.dtype} but the "
                f"forward direction's is {list(W[0].shape)} {W[0].dtype}: an ONNX node needs both alike")
        W.append(_unorder(w_ih, order, H))
        R.append(_unorder(w_hh, order, H))
        B.append(np.concatenate([_unorder(b_ih, order, H), _unorder(b_hh, order, H)]))
    out = {"W": np.stack(W), "R": np.stack(R), "B": np.stack(B), "hidden_size": H,
           "direction": "bidirectional" if D == 2 else "forward"}
    if cell == "gru":
        out["linear_before_reset"] = int(reset_after)
    return out


def from_keras(cell, kernel, recurrent_kernel, bias=None, *, reset_after: bool = True,
               layer: int = 0, reverse: bool = False) -> tuple[dict, dict]:
    """gatecore parameters from the weights of a Keras ``LSTM`` or ``GRU`` layer.

    Parameters
    ----------
    cell : {"lstm", "gru"}
    kernel : array [I, G*H]
        ``layer.kernel`` (``get_weights()[0]``), gate columns in Keras's order (LSTM
        ``i f c o``, GRU ``z r h``).
    recurrent_kernel : array [H, G*H]
        ``layer.recurrent_kernel`` (``get_weights()[1]``), same order.
    bias : array, optional
        ``layer.bias`` (``get_weights()[2]``; omitted with ``use_bias=False``): [G*H], or for
        a GRU with ``reset_after=True`` (Keras 2 and 3's default) [2, G*H] = input bias, then
        recurrent bias.
    reset_after : bool
        The Keras GRU's option (also gatecore's option to use the result with); ignored for
        LSTM.
    layer : int
        Layer index k of the keys produced.
    reverse : bool
        Produce the ``_reverse`` keys: for the backward layer of ``keras.layers.Bidirectional``
        (a ``go_backwards`` layer, whose outputs Keras returns in time order like gatecore's
        reverse direction); merge with the forward layer's dict.

    Returns
    -------
    params : dict
        ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` with suffix ``_l{layer}``
        (and ``_reverse``), PyTorch's layout; Keras's one bias becomes ``bias_ih`` and
        ``bias_hh`` is zero (GRU reset_after=True: its two rows).
    options : dict
        ``{"reset_after": reset_after}`` for GRU, ``{}`` for LSTM.

    Raises
    ------
    ValueError, ShapeError (ValueError), DTypeError (TypeError)
        Unknown cell, arrays of the wrong shape or dtype.

    Notes
    -----
    Keras's recurrent activation must be ``sigmoid`` (Keras 2 and 3's default; Keras 1 used
    ``hard_sigmoid``) and the activation ``tanh``.
    """
    cell = _cell(cell)
    reset_after = _flag("reset_after", reset_after)
    G = _GATES[cell]
    kernel = _float("kernel", kernel)
    if kernel.ndim != 2 or kernel.shape[1] % G or kernel.shape[1] == 0:
        raise ShapeError(f"kernel must be [input_size, {G}*units], got shape {list(kernel.shape)}")
    I, GH = kernel.shape
    H = GH // G
    recurrent_kernel = _float("recurrent_kernel", recurrent_kernel)
    _shape("recurrent_kernel", recurrent_kernel, (H, GH), f"[units, {G}*units]")
    if recurrent_kernel.dtype != kernel.dtype:
        raise DTypeError(f"recurrent_kernel has dtype {recurrent_kernel.dtype} but kernel has "
                         f"{kernel.dtype}; give all arrays one dtype")
    two = cell == "gru" and bool(reset_after)
    zeros = np.zeros(GH, kernel.dtype)
    if bias is None:
        b_in, b_rec = zeros, zeros
    else:
        bias = _float("bias", bias)
        if bias.dtype != kernel.dtype:
            raise DTypeError(f"bias has dtype {bias.dtype} but kernel has {kernel.dtype}")
        if two:
            _shape("bias", bias, (2, GH), f"[2, {G}*units] (GRU reset_after=True: input, recurrent)")
            b_in, b_rec = bias[0], bias[1]
        else:
            _shape("bias", bias, (GH,), f"[{G}*units]")
            b_in, b_rec = bias, zeros
    order = _KERAS_ORDER[cell]
    sfx = _suffix(layer, reverse)
    params = {
        "weight_ih" + sfx: _reorder(kernel.T, order, H),
        "weight_hh" + sfx: _reorder(recurrent_kernel.T, order, H),
        "bias_ih" + sfx: _reorder(b_in, order, H),
        "bias_hh" + sfx: _reorder(b_rec, order, H),
    }
    options = {"reset_after": bool(reset_after)} if cell == "gru" else {}
    return params, options


def to_keras(cell, params, *, layer: int = 0, reverse: bool = False,
             reset_after: bool | None = None) -> dict:
    """The weights of a Keras ``LSTM``/``GRU`` layer for one layer and direction of ``params``.

    Parameters
    ----------
    cell : {"lstm", "gru"}
    params : mapping
        gatecore/PyTorch parameters. LSTM with projection has no Keras form.
    layer, reverse
        Which layer and direction (``reverse``: the ``_reverse`` keys, for the backward layer
        of ``keras.layers.Bidirectional``).
    reset_after : bool
        GRU (required): the option the parameters are used with; the Keras layer must be
        built with the same ``reset_after``. Ignored for LSTM.

    Returns
    -------
    dict
        ``kernel`` [I, G*H], ``recurrent_kernel`` [H, G*H] and ``bias`` in Keras's gate order
        (``layer.set_weights([d["kernel"], d["recurrent_kernel"], d["bias"]])``): [G*H] =
        ``bias_ih + bias_hh`` (Keras keeps one bias; for LSTM and a reset-before GRU only the
        sum matters), or [2, G*H] for a GRU with ``reset_after``.

    Raises
    ------
    ValueError, ParameterError, ShapeError, DTypeError
        Unknown cell, a projection, missing keys, other parameters of the layer (a plugin
        cell's, such as peepholes), or arrays of the wrong shape or dtype.
    TypeError
        A GRU without ``reset_after``.
    """
    cell = _cell(cell)
    reset_after = _gru_option(cell, reset_after)
    w_ih, w_hh, b_ih, b_hh, H = _layer_arrays(params, cell, layer, reverse, f"Keras's {cell.upper()}")
    order = _KERAS_ORDER[cell]
    kernel = np.ascontiguousarray(_unorder(w_ih, order, H).T)
    recurrent = np.ascontiguousarray(_unorder(w_hh, order, H).T)
    if cell == "gru" and reset_after:
        bias = np.stack([_unorder(b_ih, order, H), _unorder(b_hh, order, H)])
    else:
        bias = _unorder(b_ih + b_hh, order, H)
    return {"kernel": kernel, "recurrent_kernel": recurrent, "bias": bias}
