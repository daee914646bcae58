"""Parameter sets: PyTorch state_dict keys and shapes, parsed, checked and initialised.

Keys follow ``torch.nn.LSTM`` / ``torch.nn.GRU``'s ``state_dict()`` exactly::

    weight_ih_l{k}[_reverse]  [G*H, I]  (layer 0) or [G*H, D*Hr] (layer k > 0)
    weight_hh_l{k}[_reverse]  [G*H, Hr]         Hr = proj_size if proj_size else H
    bias_ih_l{k}[_reverse]    [G*H]             (absent everywhere for bias=False)
    bias_hh_l{k}[_reverse]    [G*H]
    weight_hr_l{k}[_reverse]  [P, H]            (LSTM with proj_size = P only)

plus ``{prefix}_l{k}[_reverse]`` of shape [n*H] for each extra parameter ``(prefix, n)``
that a cell spec declares. G is the cell's gate count (LSTM 4, GRU 3).
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
from collections.abc import Mapping

import numpy as np

from .cells.spec import CellSpec
from .errors import DTypeError, ParameterError

__all__ = ["Dims", "parse_params", "init_params_for_spec", "param_keys", "PreparedParams", "prepare"]

# ASCII digits only, whole key (no trailing newline): "weight_ih_l0\n" is not layer 0
_KEY = re.compile(r"([A-Za-z_]+?)_l([0-9]{1,9})(_reverse)?", re.ASCII)


@dataclasses.dataclass(frozen=True)
class Dims:
    """Sizes of a network, read from its parameters."""

    num_layers: int
    num_directions: int
    input_size: int
    hidden_size: int
    proj_size: int
    bias: bool

    @property
    def hr(self) -> int:
        """Size of the recurrent input and of the output per direction."""
        return self.proj_size or self.hidden_size


def _suffix(d: int) -> str:
    return "_reverse" if d else ""


def param_keys(spec: CellSpec, num_layers: int, num_directions: int, bias: bool = True,
               proj: bool = False) -> list[str]:
    """All keys of a parameter set, in PyTorch's state_dict order."""
    keys = []
    for k in range(num_layers):
        for d in range(num_directions):
            sfx = f"_l{k}{_suffix(d)}"
            keys += [f"weight_ih{sfx}", f"weight_hh{sfx}"]
            if bias:
                keys += [f"bias_ih{sfx}", f"bias_hh{sfx}"]
            if proj:
                keys.append(f"weight_hr{sfx}")
            keys += [f"{prefix}{sfx}" for prefix, _ in spec.extra_params]
    return keys


def _as_param_array(key: str, value) -> np.ndarray:
    if isinstance(value, np.ma.MaskedArray):
        raise DTypeError(f"params[{key!r}] is a masked array; gatecore does not read masks: "
                         "pass the plain data (value.filled(...) or value.data)")
    try:
        if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
            value = value.detach().cpu().numpy()
        arr = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - report any conversion failure the same way
        raise DTypeError(f"params[{key!r}] is not convertible to a NumPy array: {exc}") from None
    if arr.ndim == 0 and arr.dtype.kind in "biufc":  # (before the dtype: a Python float is
        shown = repr(arr.item())                        # float64 whatever the others are)
        raise ParameterError(
            f"params[{key!r}] is a scalar ({arr.dtype} {shown[:40]}); parameters are "
            "arrays: weights 2-D, biases 1-D [G*hidden_size]"
        )
    if arr.dtype.kind == "f" and not arr.dtype.isnative:  # big-endian data from a file
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype not in (np.float32, np.float64):
        raise DTypeError(
            f"params[{key!r}] must be float32 or float64, got dtype {arr.dtype}"
            " (convert with .astype(np.float32) first)"
        )
    return arr


def parse_params(spec: CellSpec, params: Mapping) -> tuple[Dims, np.dtype, list[list[dict]]]:
    """Check a parameter mapping against a cell spec and read the network's sizes.

    Parameters
    ----------
    spec : CellSpec
        The concrete cell.
    params : mapping of str to array
        PyTorch state_dict keys and shapes (see the module docstring).

    Returns
    -------
    dims : Dims
    dtype : numpy.dtype
        float32 or float64, shared by every parameter.
    layers : list of list of dict
        ``layers[k][d][prefix]`` is the caller's array for that key, any layout (never
        written to; a training call copies it into its workspace, inference reads suitable
        arrays in place).

    Raises
    ------
    TypeError
        ``params`` is not a mapping; a value is not float32/float64; dtypes differ.
    ValueError
        A key is unknown, missing or has the wrong shape (the message names the key, the
        expected shape and the shape found).
    """
    if isinstance(params, PreparedParams):
        return params._layout(spec, packed=False)[:3]
    if not isinstance(params, Mapping):
        raise DTypeError(f"params must be a mapping of name to array, got {type(params).__name__}")
    rows = spec.param_rows()
    known = set(rows) | {"weight_hr"}
    found: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    for key, value in params.items():
        m = _KEY.fullmatch(key) if isinstance(key, str) else None
        if m is None or m.group(1) not in known:
            r = repr(key)
            shown = r if len(r) <= 80 else r[:60] + f"... ({len(r)} characters)"
            raise ParameterError(
                f"params has unknown key {shown} for cell {spec.name!r}; expected keys like "
                f"{sorted(known)} + '_l<k>' [+ '_reverse']"
            )
        prefix, layer, rev = m.group(1), int(m.group(2)), bool(m.group(3))
        found.setdefault((layer, int(rev)), {})[prefix] = _as_param_array(key, value)
    if not found:
        raise ParameterError("params is empty; expected at least weight_ih_l0 and weight_hh_l0")
    num_layers = max(k for k, _ in found) + 1
    layers_given = {k for k, _ in found}
    if len(layers_given) < num_layers:  # before listing every expected key (a stray _l100000)
        n_absent = num_layers - len(layers_given)
        absent = []
        for k in range(num_layers):  # the first few only (num_layers may be huge)
            if k not in layers_given:
                absent.append(str(k))
                if len(absent) == 5:
                    break
        top = [key for key in params if isinstance(key, str) and key.endswith(
            (f"_l{num_layers - 1}", f"_l{num_layers - 1}_reverse"))]
        shown = ", ".join(absent) + (", ..." if n_absent > len(absent) else "")
        raise ParameterError(
            f"params is missing key(s) for layer(s) {shown} ({n_absent} layer(s) without any "
            f"key) but has {top[:3]} for layer {num_layers - 1}; layers are numbered 0, 1, 2, ..."
        )
    num_directions = 2 if any(d for _, d in found) else 1
    dtypes = {a.dtype for group in found.values() for a in group.values()}
    if len(dtypes) > 1:
        keys_of = {}
        for (k, d), group in found.items():
            for prefix, a in group.items():
                keys_of.setdefault(str(a.dtype), []).append(f"{prefix}_l{k}{_suffix(d)}")
        detail = "; ".join(f"{dt}: {sorted(ks)[:3]}{' ...' if len(ks) > 3 else ''}"
                           for dt, ks in sorted(keys_of.items(), key=lambda kv: len(kv[1])))
        raise DTypeError(f"params mix dtypes ({detail}); give every parameter the same dtype, "
                         "float32 or float64")
    dtype = dtypes.pop()

    w_hh0 = found.get((0, 0), {}).get("weight_hh")
    if w_hh0 is None or w_hh0.ndim != 2:
        raise ParameterError("params['weight_hh_l0'] is missing or not 2-D [G*hidden_size, hidden_size]")
    G = spec.num_gates
    if w_hh0.shape[0] % G or w_hh0.shape[0] == 0:
        raise ParameterError(
            f"params['weight_hh_l0'] has {w_hh0.shape[0]} rows, expected a positive multiple of "
            f"{G} (= {G} gates {''.join(spec.gate_names)} x hidden_size) for cell {spec.name!r}"
        )
    H = w_hh0.shape[0] // G
    has_proj = "weight_hr" in found[(0, 0)]
    if not has_proj and w_hh0.shape[1] != H:
        ratio = w_hh0.shape[0] / w_hh0.shape[1] if w_hh0.shape[1] else 0
        hint = (f"; these look like parameters of a {ratio:g}-gate cell"
                if ratio == int(ratio) and ratio != G else "")
        raise ParameterError(
            f"params['weight_hh_l0'] is {list(w_hh0.shape)}, expected [{G}*hidden_size, hidden_size] "
            f"for cell {spec.name!r} ({G} gates {' '.join(spec.gate_names)}){hint}"
        )
    if has_proj and not spec.supports_projection:
        raise ParameterError(f"cell {spec.name!r} does not support projection (weight_hr_* keys)")
    P = found[(0, 0)]["weight_hr"].shape[0] if has_proj and found[(0, 0)]["weight_hr"].ndim == 2 else 0
    if has_proj and not 0 < P < H:
        raise ParameterError(
            f"params['weight_hr_l0'] must be [proj_size, hidden_size] with 0 < proj_size < "
            f"hidden_size={H}, got shape {found[(0, 0)]['weight_hr'].shape}"
        )
    if has_proj and w_hh0.shape[1] != P:  # (which of the two is wrong: the other layers say)
        raise ParameterError(
            f"params['weight_hr_l0'] is {list(found[(0, 0)]['weight_hr'].shape)} (proj_size="
            f"{P}) but params['weight_hh_l0'] is {list(w_hh0.shape)}, whose {w_hh0.shape[1]} "
            f"columns should be proj_size: the two disagree (PyTorch: weight_hr [proj_size, "
            f"hidden_size], weight_hh [{G}*hidden_size, proj_size])"
        )
    Hr = P or H
    has_bias = "bias_ih" in found[(0, 0)] or "bias_hh" in found[(0, 0)]
    w_ih0 = found[(0, 0)].get("weight_ih")
    if w_ih0 is None or w_ih0.ndim != 2:
        raise ParameterError("params['weight_ih_l0'] is missing or not 2-D [G*hidden_size, input_size]")
    I = w_ih0.shape[1]
    if w_ih0.shape[0] != G * H:
        hint = ("; is it transposed? PyTorch stores weight_ih as [G*hidden_size, input_size]"
                if w_ih0.shape[1] == G * H else "")
        raise ParameterError(
            f"params['weight_ih_l0'] is {list(w_ih0.shape)}, expected [{G * H}, input_size] "
            f"= [{G} gates x hidden_size={H}, input_size]{hint}"
        )

    expected = set(param_keys(spec, num_layers, num_directions, has_bias, has_proj))
    given = set(params)
    missing = sorted(expected - given)
    if missing:
        raise ParameterError(
            f"params is missing key(s) {missing} for a {num_layers}-layer "
            f"{'bidirectional ' if num_directions == 2 else ''}{spec.name} "
            f"(bias={has_bias}, projection={has_proj})"
        )
    extra = sorted(given - expected)
    if extra:
        raise ParameterError(
            f"params has inconsistent key(s) {extra} (layer 0 sets bias={has_bias}, "
            f"projection={has_proj}, {num_layers} layer(s), {num_directions} direction(s))"
        )

    layers: list[list[dict]] = []
    for k in range(num_layers):
        per_dir = []
        in_size = I if k == 0 else num_directions * Hr
        for d in range(num_directions):
            group = found[(k, d)]
            shapes = {"weight_ih": (G * H, in_size), "weight_hh": (G * H, Hr)}
            if has_bias:
                shapes["bias_ih"] = shapes["bias_hh"] = (G * H,)
            if has_proj:
                shapes["weight_hr"] = (P, H)
            for prefix, n in spec.extra_params:
                shapes[prefix] = (n * H,)
            arrays = {}
            for prefix, shape in shapes.items():
                a = group[prefix]
                if a.shape != shape:
                    raise ParameterError(
                        f"params['{prefix}_l{k}{_suffix(d)}'] must have shape {list(shape)}, "
                        f"got {list(a.shape)} (input_size={in_size}, hidden_size={H}"
                        f"{f', proj_size={P}' if P else ''}, {G} gates)"
                    )
                arrays[prefix] = a
            per_dir.append(arrays)
        layers.append(per_dir)
    dims = Dims(num_layers, num_directions, I, H, P, has_bias)
    return dims, np.dtype(dtype), layers


def generator(seed, name: str = "seed") -> np.random.Generator:
    """``numpy.random.default_rng(seed)``: None (fresh entropy), an int >= 0 or a sequence of
    them, a SeedSequence, a BitGenerator or a Generator (returned as is: it advances).

    Raises
    ------
    ValueError
        Anything NumPy does not take as a seed (a negative int, a float, a string), named
        ``name``; NumPy's own messages name no argument.
    """
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be None, an int >= 0 (or a sequence of them), or a "
                         "numpy.random Generator, BitGenerator or SeedSequence, got "
                         f"{_short_repr(seed)} ({exc})") from None


def _short_repr(value, n: int = 60) -> str:
    r = repr(value)
    return r if len(r) <= n else r[:n - 3] + "..."


def init_params_for_spec(spec: CellSpec, input_size: int, hidden_size: int, num_layers: int,
                         bidirectional: bool, proj_size: int, dtype, seed) -> dict[str, np.ndarray]:
    """PyTorch's default initialisation: every entry uniform in [-1/sqrt(H), 1/sqrt(H)]."""
    for name, v, lo in (("input_size", input_size, 1), ("hidden_size", hidden_size, 1),
                        ("num_layers", num_layers, 1), ("proj_size", proj_size, 0)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    if proj_size and not spec.supports_projection:
        raise ValueError(f"cell {spec.name!r} does not support proj_size")
    if proj_size >= hidden_size:
        raise ValueError(f"proj_size must be smaller than hidden_size={hidden_size}, got {proj_size}")
    if not isinstance(bidirectional, (bool, np.bool_)):
        raise TypeError(f"bidirectional must be True or False, got {bidirectional!r}")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise DTypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dtype not in (np.float32, np.float64):
        raise DTypeError(f"dtype must be float32 or float64, got {dtype}")
    rng = generator(seed)
    bound = 1.0 / math.sqrt(hidden_size)
    D = 2 if bidirectional else 1
    G, H, Hr = spec.num_gates, hidden_size, proj_size or hidden_size
    out = {}
    for key in param_keys(spec, num_layers, D, True, bool(proj_size)):
        prefix, layer = _KEY.fullmatch(key).group(1), int(_KEY.fullmatch(key).group(2))
        if prefix == "weight_ih":
            shape = (G * H, input_size if layer == 0 else D * Hr)
        elif prefix == "weight_hh":
            shape = (G * H, Hr)
        elif prefix in ("bias_ih", "bias_hh"):
            shape = (G * H,)
        elif prefix == "weight_hr":
            shape = (proj_size, H)
        else:
            shape = (dict(spec.extra_params)[prefix] * H,)
        out[key] = rng.uniform(-bound, bound, size=shape).astype(dtype)
    return out


def _transposed(a: np.ndarray) -> np.ndarray:
    from .kernels.blas import transpose_into

    out = np.empty((a.shape[1], a.shape[0]), dtype=a.dtype)
    transpose_into(np.ascontiguousarray(a), out)
    return out


def _transposes(spec: CellSpec, dims: Dims, dtype, layers) -> list[list[dict]]:
    """Per layer and direction, the C-contiguous transposed weights the CPU kernels read."""
    G1H = spec.g1 * dims.hidden_size
    packed = []
    for per_dir in layers:
        row = []
        for group in per_dir:
            whh = group["weight_hh"]
            t = {"wihc": _transposed(group["weight_ih"]), "w1c": _transposed(whh[:G1H])}
            if spec.two_stage:
                t["w2c"] = _transposed(whh[G1H:])
            if dims.proj_size:
                t["whrc"] = _transposed(group["weight_hr"])
            row.append(t)
        packed.append(row)
    return packed


class PreparedParams(Mapping):
    """A parameter set checked, copied and laid out once, made by :func:`prepare`.

    A read-only mapping from PyTorch ``state_dict`` keys to (read-only views of) gatecore's
    own C-contiguous copies, accepted wherever ``params`` is. Per cell it also holds the
    transposed weights the CPU kernels multiply by (``W_ih^T``, ``W_hh^T`` per stage,
    ``W_hr^T``), made at its first use with that cell, so a call neither checks nor copies
    nor transposes parameters again (inference; a training call copies them into its
    workspace as it copies any parameters, so its tape holds none of these arrays). Later
    changes to the arrays it was made from are not seen: prepare again after changing the
    weights.
    """

    device = "cpu"

    def __init__(self, arrays: dict) -> None:
        self._arrays = arrays
        # views through a read-only buffer: their writeable flag cannot be set again (the
        # kernels read the writeable originals: no read-only Numba specializations)
        self._views = {key: np.frombuffer(memoryview(a).toreadonly(), dtype=a.dtype)
                       .reshape(a.shape) for key, a in arrays.items()}
        self._layouts: dict[tuple, tuple] = {}  # with transposes (inference)
        self._checked: dict[tuple, tuple] = {}  # (dims, dtype, layers) only
        self._lock = threading.Lock()

    def __getitem__(self, key):
        return self._views[key]

    def __iter__(self):
        return iter(self._views)

    def __len__(self):
        return len(self._views)

    def __repr__(self):
        dt = next(iter(self._arrays.values())).dtype if self._arrays else None
        return f"PreparedParams({len(self)} arrays, {dt})"

    def __reduce__(self):  # pickle / copy: the arrays; layouts are rebuilt at first use
        return prepare, ({k: a for k, a in self._arrays.items()},)

    def _layout(self, spec: CellSpec, packed: bool = True):
        """``(dims, dtype, layers, packed)`` for ``spec``, checked and built once per cell.

        ``layers[k][d][prefix]`` are the owned arrays; ``packed[k][d]`` maps ``wihc`` [in,
        G*H], ``w1c`` [Hr, G1*H], ``w2c`` [H, G2*H] (two-stage cells) and ``whrc`` [H, P]
        (projection) to C-contiguous transposes, built on the first call that asks for them
        (``packed``: inference; a set only ever used for training holds none, and gets None).
        Raises what :func:`parse_params` raises.
        """
        # what the layout depends on (not the rules: spec.fingerprint() hashes their source,
        # 3 ms per call)
        key = (spec.key, spec.num_gates, spec.g1, spec.two_stage, spec.supports_projection,
               tuple(spec.extra_params))
        hit = self._layouts.get(key)
        if hit is not None:
            return hit
        with self._lock:
            checked = self._checked.get(key)
            if checked is None:
                checked = self._checked[key] = parse_params(spec, self._arrays)
            if not packed:
                return (*checked, None)
            hit = self._layouts.get(key)
            if hit is None:
                hit = self._layouts[key] = (*checked, _transposes(spec, *checked))
        return hit


def prepare(params: Mapping) -> PreparedParams:
    """Check and copy a parameter set once, for many calls with the same weights.

    For inference in a deployment (load a ``state_dict`` once, then call
    :func:`gatecore.forward`, :func:`gatecore.lstm` or :func:`gatecore.gru` many times):
    an inference call with prepared parameters skips checking, copying and transposing them,
    which otherwise costs every call about one pass over the weights (at ``hidden_size``
    1024, LSTM: 14 ms of an 89 ms inference call). Training works too (a training call still
    copies the parameters into its workspace, for its tape); the gradients of
    :func:`gatecore.backward` have the same keys.

    Parameters
    ----------
    params : mapping of str to array
        PyTorch ``state_dict`` keys and shapes (NumPy arrays or torch CPU tensors), float32 or
        float64, all alike; or a :class:`PreparedParams` (returned as it is).

    Returns
    -------
    PreparedParams
        A read-only mapping of gatecore's own copies. It holds the weights twice (the copies
        and their transposes), plus one more set of transposes per further cell variant it
        is used with (GRU with both ``reset_after`` settings: about three times), plus, once
        an inference call of float32 with large steps used them, the packed weights of the
        packed products (``gatecore.kernels.packed``; one more copy). Keys and
        shapes are checked against a cell at its first use with it (the same errors as
        plain parameters, raised by that call). It pickles (as its arrays).

    Raises
    ------
    DTypeError (TypeError)
        ``params`` is not a mapping (or is a GPU parameter set), a value is not a
        float32/float64 array, or the values mix float32 and float64.
    ParameterError (ValueError)
        A key is not a string, or ``params`` is empty.

    Examples
    --------
    >>> import numpy as np, gatecore
    >>> p = gatecore.prepare(gatecore.init_params("lstm", 3, 5, seed=0))
    >>> y, (h_n, c_n) = gatecore.lstm(np.ones((4, 2, 3), np.float32), p)
    >>> y.shape
    (4, 2, 5)
    """
    if isinstance(params, PreparedParams):
        return params
    if getattr(params, "device", None) == "cuda":
        raise DTypeError("params are on the GPU (DeviceParams); prepare() is for host arrays")
    if not isinstance(params, Mapping):
        raise DTypeError(f"params must be a mapping of name to array, got {type(params).__name__}")
    arrays = {}
    for key, value in params.items():
        if not isinstance(key, str):
            raise ParameterError(f"params has a key that is not a string: {key!r}")
        a = _as_param_array(key, value)
        arrays[key] = np.array(a, dtype=a.dtype, order="C", copy=True)
    if not arrays:
        raise ParameterError("params is empty; expected at least weight_ih_l0 and weight_hh_l0")
    dtypes = sorted({str(a.dtype) for a in arrays.values()})
    if len(dtypes) > 1:
        by = {dt: sorted(k for k, a in arrays.items() if str(a.dtype) == dt) for dt in dtypes}
        detail = "; ".join(f"{dt}: {ks[:3]}{' ...' if len(ks) > 3 else ''}"
                           for dt, ks in by.items())
        raise DTypeError(f"params mix dtypes ({detail}); give every parameter the same dtype, "
                         "float32 or float64")
    return PreparedParams(arrays)
