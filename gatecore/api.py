"""Public NumPy API: validate, convert, dispatch.

Every check happens here, before any kernel runs; the kernels see only C-contiguous,
time-major arrays of one float dtype.

Dtype rule
----------
The parameters decide the compute dtype: float32 or float64 (all parameters alike). Float
inputs (``x``, states, ``dy``) must have that same dtype (a float32/float64 mix raises
:class:`~gatecore.errors.DTypeError`). Integer, boolean and float16 inputs are converted to
the parameters' dtype with NumPy's ``astype`` (exact for float16 and for integers up to
2**24 in float32 / 2**53 in float64; larger integers round to nearest).
Complex and object arrays are refused.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import DTypeError, ShapeError
from .network import Replay, Tape, _usable_as_is, run_backward, run_forward
from .overlap import enabled as overlap_enabled
from .params import Dims, PreparedParams, _short_repr, init_params_for_spec, parse_params
from .registry.manager import get_registry
from .workspace import Workspace

__all__ = ["forward", "backward", "lstm", "gru", "init_params", "list_cells", "get_cell",
           "register_cell"]


# --------------------------------------------------------------------------- helpers
def _to_numpy(name: str, value) -> np.ndarray:
    if hasattr(value, "__cuda_array_interface__"):
        raise TypeError(
            f"{name} is a CUDA array but this call runs on the CPU (x is a host array): pass x "
            "on the GPU too (or workspace=Workspace(device='cuda')), or copy it to the host "
            "(for example with .copy_to_host() or .cpu().numpy())"
        )
    if isinstance(value, np.ma.MaskedArray):
        raise DTypeError(
            f"{name} is a masked array; gatecore does not read masks: pass the plain data "
            "and give the valid steps per sequence with lengths="
        )
    try:
        if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensor on the CPU
            value = value.detach().cpu().numpy()
        return np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - torch/NumPy raise many kinds here
        raise DTypeError(
            f"{name} is not convertible to a NumPy array ({type(exc).__name__}: {exc}); "
            "pass a NumPy array of float32 or float64 (torch: tensor.float().numpy())"
        ) from None


def _check_dtype(name: str, arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if not arr.dtype.isnative:  # big-endian data (from a file): same values, native order
        arr = arr.astype(arr.dtype.newbyteorder("="))
    kind = arr.dtype.kind
    if arr.dtype in (np.float32, np.float64):
        if arr.dtype != dtype:
            hint = " (Python lists and floats become float64 arrays)"
            raise DTypeError(
                f"{name} has dtype {arr.dtype} but the parameters are {dtype}{hint}; "
                f"convert one of them (for example {name}.astype(np.{dtype}))"
            )
        return arr
    if kind in "biu" or arr.dtype == np.float16:
        return arr.astype(dtype)
    raise DTypeError(f"{name} must be a real float array ({dtype}), got dtype {arr.dtype}")


def _check_array(name: str, value, dtype: np.dtype, want, what: str | None = None) -> np.ndarray:
    """``value`` as a NumPy array of shape ``want`` and ``dtype`` (``_check_dtype``), or a
    clear error naming ``name``; ``what``: the shape's meaning, for the message. The shape is
    checked first, so that a scalar (``h0=0.0``) is a shape error, not a dtype one."""
    arr = _to_numpy(name, value)
    _check_shape(name, arr.shape, want, what)
    return _check_dtype(name, arr, dtype)


def _check_not_packed_states(name: str, value, want, what: str, spec) -> None:
    """ShapeError for a state passed as a tuple or list whose first element alone has the
    state's shape ``want`` (``gru(x, p, h0=(h,))``, ``lstm(x, p, h0=(h, c))``: several states
    in one argument), which NumPy would otherwise stack into a wrong shape or fail to
    convert (h and c of different widths with proj_size)."""
    if (isinstance(value, (tuple, list)) and len(value) >= 1
            and getattr(value[0], "ndim", 0) >= 1 and tuple(np.shape(value[0])) == tuple(want)):
        n = len(value)
        raise ShapeError(
            f"{name} must have shape {_shape_str(want)} = {what}, got a {type(value).__name__} "
            f"of {n} array{'s' if n != 1 else ''} of that shape: pass {name} as one array "
            f"(each of the {spec.name!r} cell's states {spec.state_names} is its own "
            f"argument, or its own entry of state0)")


def _check_shape(name: str, shape, want, what: str | None = None) -> None:
    """ShapeError naming ``name`` unless ``shape`` is ``want`` (``what``: its meaning)."""
    if tuple(shape) != tuple(want):
        raise ShapeError(f"{name} must have shape {_shape_str(want)}"
                         f"{f' = {what}' if what else ''}, got {_shape_str(shape)}")


def _shape_str(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _check_lengths(lengths, B: int, T: int) -> np.ndarray:
    if lengths is None:
        full = np.empty(B, np.int64)  # (np.full costs twice as much)
        full.fill(T)
        return full
    arr = _to_numpy("lengths", lengths)
    if arr.ndim != 1 or arr.shape[0] != B:
        raise ShapeError(
            f"lengths must be 1-D with one entry per batch item ({B}), got shape {_shape_str(arr.shape)}"
        )
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise DTypeError(f"lengths must hold integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"lengths must be finite integers, got {arr.tolist()}")
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"lengths must be whole numbers, got {arr.tolist()}")
    if B and (arr.min() < 0 or arr.max() > T):
        raise ValueError(
            f"lengths must lie in [0, T={T}] (T = sequence length of x), got min {arr.min()}, max {arr.max()}"
        )
    return arr.astype(np.int64)


def _check_dropout(dropout) -> float:
    """``dropout`` as a float in [0, 1] (PyTorch's range), or a clear error: any real scalar
    (Python, NumPy, a 0-d array or tensor), not a bool, string, complex or sequence."""
    if type(dropout) is float and 0.0 <= dropout <= 1.0:  # (the common case, quickly)
        return dropout
    dt = getattr(dropout, "dtype", None)
    if (dropout is None or isinstance(dropout, (bool, np.bool_, str, bytes, complex))
            or getattr(dropout, "ndim", 0) != 0 or not hasattr(dropout, "__float__")
            or (isinstance(dt, np.dtype) and dt.kind in "bcOSU")):
        raise TypeError(f"dropout must be a number in [0, 1], got {dropout!r}")
    p = float(dropout)
    if not 0.0 <= p <= 1.0:  # (NaN fails too)
        raise ValueError(f"dropout must be in [0, 1], got {dropout!r}")
    return p


def _check_rng(rng) -> None:
    """None, a Generator (advances), a BitGenerator (wrapped, advances), or an int seed or
    SeedSequence (the same masks at every call)."""
    if rng is None or isinstance(rng, (np.random.Generator, np.random.SeedSequence,
                                       np.random.BitGenerator)):
        return
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_)) and rng >= 0:
        return
    raise TypeError("rng must be a numpy.random.Generator (or BitGenerator), a non-negative int "
                    f"seed (or SeedSequence) or None, got {rng!r}")


def _dropout_plan(p, rng, training, num_layers, stacklevel=3):
    """None, or (p, Generator) for run_forward/cuda_forward: dropout between the layers of a
    training call (a one-layer network warns and drops nothing, as PyTorch; ``stacklevel``
    makes the warning name the caller's line)."""
    if not (p and training):
        return None
    if num_layers == 1:
        warnings.warn(
            "dropout adds dropout after all but the last recurrent layer, so a non-zero "
            f"dropout expects num_layers greater than 1, but got dropout={p} and num_layers=1",
            UserWarning, stacklevel=stacklevel)
        return None
    # rng itself (a Generator advances), a new one from a seed, or fresh entropy
    return (p, np.random.default_rng(int(rng) if isinstance(rng, np.integer) else rng))


def _state_layout(s: int, unbatched: bool, proj: int) -> str:
    """What state variable s's shape means, for messages (h has proj_size with projection)."""
    return (f"[num_layers*num_directions, {'' if unbatched else 'batch, '}"
            f"{'proj_size' if (s == 0 and proj) else 'hidden_size'}]")


def _layout(x_ndim: int, batch_first: bool) -> str:
    if x_ndim == 2:
        return "[T, input_size] (unbatched)"
    return "[B, T, input_size]" if batch_first else "[T, B, input_size]"


def _prepare(cell, x, params, state0, lengths, batch_first, workspace, cell_options):
    registry = get_registry()
    spec = registry.get(cell).with_options(**cell_options)
    if not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first must be True or False, got {batch_first!r}")
    if workspace is not None and not isinstance(workspace, Workspace):
        raise TypeError(f"workspace must be a gatecore.Workspace or None, got {type(workspace).__name__}")
    dims, dtype, layers = parse_params(spec, params)
    xa = _to_numpy("x", x)
    if xa.ndim not in (2, 3):  # (before the dtype, as for the states below)
        got = (f"shape {_shape_str(xa.shape)}" if xa.ndim else
               f"a 0-d value ({type(x).__name__}: {_short_repr(x, 40)})")
        raise ShapeError(
            f"x must be 3-D {_layout(3, batch_first)} or 2-D [T, input_size], got {got}"
        )
    xa = _check_dtype("x", xa, dtype)
    unbatched = xa.ndim == 2
    if unbatched:
        xa = xa[:, None, :]
    elif batch_first:
        xa = xa.transpose(1, 0, 2)
    T, B, I = xa.shape
    if I != dims.input_size:
        raise ShapeError(
            f"x has input_size {I} (last axis) but params expect input_size={dims.input_size} "
            f"(weight_ih_l0 is [{layers[0][0]['weight_ih'].shape[0]}, {dims.input_size}]); "
            f"x shape {_shape_str(_to_numpy('x', x).shape)}, layout {_layout(2 if unbatched else 3, batch_first)}"
        )
    lens = _check_lengths(lengths, B, T)
    # initial states: validated here, copied into the workspace by run_forward
    S = spec.num_states
    L, D = dims.num_layers, dims.num_directions
    if state0 is None:
        state0 = (None,) * S
    elif isinstance(state0, np.ndarray) or not isinstance(state0, (tuple, list)):
        state0 = (state0,)
    if len(state0) != S:
        raise ValueError(
            f"state0 must be a tuple of {S} arrays {spec.state_names} for cell {spec.name!r}, got {len(state0)}"
        )
    states = []
    for s, value in enumerate(state0):
        if value is None:
            states.append(None)
            continue
        name = f"{spec.state_names[s]}0"
        width = dims.hr if s == 0 else dims.hidden_size
        want = (L * D, width) if unbatched else (L * D, B, width)
        what = _state_layout(s, unbatched, dims.proj_size)
        _check_not_packed_states(name, value, want, what, spec)
        arr = _check_array(name, value, dtype, want, what)
        states.append(arr.reshape(L * D, B, width))
    ws = workspace if workspace is not None else Workspace()
    return spec, dims, dtype, layers, xa, tuple(states), lens, lengths is not None, ws, unbatched


def _out_y(ws, y, dtype, batch_first, unbatched):
    if unbatched:
        return y[:, 0, :]
    if batch_first:
        T, B, W = y.shape
        out = ws.get("y_bf", dtype, lambda T_, B_: (B_, T_, W))
        np.copyto(out, y.transpose(1, 0, 2))
        return out
    return y


def _out_state(states, unbatched):
    return tuple(s[:, 0, :] if unbatched else s for s in states)


@contextlib.contextmanager
def _held(workspace):
    """Hold ``workspace`` (a Workspace; anything else: nothing to hold) for the block:
    WorkspaceBusyError if another thread's call holds it."""
    if not isinstance(workspace, Workspace):
        yield
        return
    workspace._acquire()
    try:
        yield
    finally:
        workspace._release()


def _runs_on_cuda(x, params, workspace) -> bool:
    """GPU dispatch: a CUDA ``x``, device parameters or a CUDA workspace."""
    if getattr(workspace, "device", "cpu") == "cuda" or getattr(params, "device", None) == "cuda":
        return True
    if getattr(x, "is_cuda", False) is True:  # torch CUDA tensor (even with requires_grad)
        return True
    if getattr(x, "__cuda_ndarray__", False):  # a Numba device array
        return True
    try:
        return hasattr(x, "__cuda_array_interface__")
    except Exception:  # noqa: BLE001
        return False


# --------------------------------------------------------------------------- public API
def forward(cell, x, params: Mapping, state0=None, *, lengths=None, batch_first: bool = False,
            workspace: Workspace | None = None, training: bool = True, dropout: float = 0.0,
            rng=None, **cell_options: Any):
    """Run a network of gated cells forward; keep a tape for :func:`backward`.

    Parameters
    ----------
    cell : str
        Registered cell name (``"lstm"``, ``"gru"``, or a plugin's; see :func:`list_cells`).
    x : array [T, B, input_size] (or [B, T, input_size] with ``batch_first``, or
        [T, input_size] unbatched), float32 or float64 (the parameters' dtype)
        Input sequence (in). Never written to.
    params : mapping of str to array
        PyTorch ``state_dict`` keys and shapes (``weight_ih_l0`` [G*H, I], ``weight_hh_l0``
        [G*H, H or P], ``bias_ih_l0``/``bias_hh_l0`` [G*H], ``weight_hr_l0`` [P, H], ``_reverse``
        for the second direction); layers, directions, sizes are read from them.
    state0 : tuple of arrays, optional
        One array per state variable of the cell: ``(h0, c0)`` for LSTM, ``(h0,)`` for GRU;
        ``h0`` [L*D, B, P or H], others [L*D, B, H] (PyTorch order: layer 0 forward, layer 0
        reverse, layer 1 forward, ...). ``None`` entries are zeros.
    lengths : array of int [B], optional
        Valid steps per sequence, each in [0, T], any order. Outputs past a length are 0,
        the final state is the last valid one, padded steps get and give no gradient.
    batch_first : bool
        ``x``, ``y`` (and ``dy``, ``dx``) are [B, T, *] instead of [T, B, *].
    workspace : Workspace, optional
        Reused buffers: no allocation per call in steady state. Returned arrays are then
        views into it, valid until its next use.
    training : bool
        Keep the tape (default). ``False`` runs inference that keeps only what the next step
        needs and returns ``tape=None``. A training call copies x, the states and the
        parameters first; inference reads C-contiguous, aligned, writeable parameters (and x,
        with one direction) of the parameters' dtype in place for the whole call, so they must
        not change while it runs (another thread's optimizer step, for example).
    dropout : float in [0, 1]
        PyTorch's ``dropout`` (Srivastava et al. 2014, inverted): in a training call, each
        element of every layer's output but the last is zeroed with probability ``dropout``
        and the others scaled by 1 / (1 - dropout) before the next layer reads them; the
        tape keeps the masks and :func:`backward` applies them. Ignored with
        ``training=False`` (like ``module.eval()``); with one layer it does nothing and warns,
        as PyTorch does. On the GPU too (the masks are drawn on the host, the same as on the
        CPU for the same ``rng``).
    rng : numpy.random.Generator, int or None
        Source of the dropout masks (``numpy.random.default_rng(rng)``: a Generator (or
        BitGenerator) is used as is, so it advances from call to call; an int seed (or
        SeedSequence) seeds a new one each call, so every call draws the same masks; None
        draws fresh entropy each call). Unused without dropout.
    **cell_options
        Options of the cell, for example ``reset_after=False`` for ``"gru"``.

    Returns
    -------
    y : array [T, B, D*(P or H)] (batch_first: [B, T, ...]; unbatched: [T, ...])
    state_n : tuple of arrays, shaped as ``state0``
    tape : Tape or None

    Raises
    ------
    UnknownCellError (ValueError)
        Unknown cell name; the message lists the registered cells.
    ParameterError (ValueError), ShapeError (ValueError), DTypeError (TypeError)
        Inconsistent parameters, wrong shapes, dtypes that do not agree (see the dtype rule
        in this module's docstring); each message names the argument.
    ValueError
        ``lengths`` outside [0, T], non-integer or non-finite; ``dropout`` outside [0, 1].
    TypeError
        ``dropout`` not a real number, ``rng`` not a Generator, seed or None.
    WorkspaceBusyError (RuntimeError)
        ``workspace`` is in use by another thread's call (one workspace per thread).

    Notes
    -----
    Matches ``torch.nn.LSTM`` / ``torch.nn.GRU`` (and packed sequences for ``lengths``);
    equations in the cell modules (:mod:`gatecore.cells.lstm`, :mod:`gatecore.cells.gru`).

    An inference call with :func:`prepare`'d parameters and a ``workspace`` that repeats an
    earlier one on that workspace (same ``cell`` and options, the same ``PreparedParams``
    object, ``x`` and states NumPy arrays of the same shapes and dtype, no ``lengths``,
    ``batch_first`` alike) replays that call's recorded work (``gatecore.network.Replay``,
    on one thread or two as that call did): the same bits without redoing the checks and
    set-up (T=1 streaming: about a third of the time).

    Examples
    --------
    >>> import numpy as np, gatecore
    >>> p = gatecore.init_params("gru", 3, 5, seed=0)
    >>> y, (h_n,), tape = gatecore.forward("gru", np.ones((4, 2, 3), np.float32), p)
    >>> y.shape, h_n.shape
    ((4, 2, 5), (1, 2, 5))
    """
    if (training is False and type(params) is PreparedParams and type(x) is np.ndarray
            and isinstance(workspace, Workspace) and workspace.device == "cpu"
            and lengths is None and rng is None and type(dropout) in (float, int)
            and dropout == 0):
        # the same kind of inference call as one before on this workspace: run its
        # recorded work again (network.Replay); None: not recorded, go the whole way
        out = _replay(cell, x, params, state0, batch_first, workspace, cell_options)
        if out is not None:
            return out
    p_drop = _check_dropout(dropout)
    _check_rng(rng)
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"training must be True or False, got {training!r}")

    if _runs_on_cuda(x, params, workspace):  # the GPU twin (gatecore.cuda_network)
        from .cuda_network import cuda_forward
        with _held(workspace):
            return cuda_forward(cell, x, params, state0, lengths=lengths,
                                batch_first=batch_first, workspace=workspace, training=training,
                                dropout=(p_drop, rng) if p_drop and training else None,
                                **cell_options)
    spec, dims, dtype, layers, xa, states, lens, padded, ws, unbatched = _prepare(
        cell, x, params, state0, lengths, batch_first, workspace, cell_options)
    # inference reads prepared parameters and their transposes in place; training copies
    # them into its workspace like any mapping (the tape then holds no array of theirs)
    packed = (params._layout(spec)[3] if isinstance(params, PreparedParams) and not training
              else None)
    plan = _dropout_plan(p_drop, rng, training, dims.num_layers)
    key = rec = None
    if packed is not None and workspace is not None and lengths is None:
        key = _replay_key(cell, x, params, state0, batch_first, cell_options, dtype)
        rec = Replay() if key is not None else None
    ws._acquire()  # (WorkspaceBusyError: another thread's call is using it)
    try:
        y, state_n, tape = run_forward(spec, dims, layers, xa, states, lens, padded, ws,
                                       bool(training), bool(batch_first), unbatched, dtype,
                                       packed=packed, dropout=plan, rec=rec)
        if tape is not None and workspace is None:
            tape.private = True
        out = _out_y(ws, y, dtype, batch_first, unbatched), _out_state(state_n, unbatched), tape
        if rec is not None and rec.ok:  # (after _out_y: its first use allocates y_bf,
            # which clears the workspace's memo)
            rec.base, rec.dtype, rec.unbatched = get_registry().get(cell), dtype, unbatched
            ws._remember_replay(key, rec, params)
        return out
    finally:
        ws._release()


def _replay_key(cell, x, params, state0, batch_first, cell_options, dtype):
    """The key under which a workspace keeps the ``Replay`` of an inference call with these
    arguments (``forward``), or None when such calls are not replayed: x or a state not a
    NumPy array of the parameters' dtype, states not None or a tuple/list of arrays and
    Nones, cell options that are not plain values."""
    if (type(cell) is not str or type(x) is not np.ndarray
            or type(batch_first) not in (bool, np.bool_)):
        return None
    if dtype is not None and x.dtype != dtype:
        return None
    if state0 is None:
        sig = None
    else:
        if type(state0) is np.ndarray:
            state0 = (state0,)
        elif type(state0) not in (tuple, list):
            return None
        sig = []
        for v in state0:
            if v is None:
                sig.append(None)
            elif type(v) is np.ndarray and (dtype is None or v.dtype == dtype):
                sig.append((v.shape, v.dtype))
            else:
                return None
        sig = tuple(sig)
    opts = ()
    if cell_options:  # (with each value's type: reset_after=1 is not reset_after=True)
        if any(type(v) not in (bool, int, float, str) for v in cell_options.values()):
            return None
        opts = tuple((k, type(cell_options[k]), cell_options[k]) for k in sorted(cell_options))
    return ("replay", cell, id(params), x.shape, x.dtype, bool(batch_first), sig, opts)


def _replay(cell, x, params, state0, batch_first, ws, cell_options):
    """``forward``'s result for an inference call that repeats a recorded one on ``ws``
    (``network.Replay``: same cell and options, the same prepared parameters, x and states of
    the same shapes and dtype, no lengths), or None. Everything the whole way would check
    was checked by the recorded call for arguments of these types, shapes and dtypes."""
    key = _replay_key(cell, x, params, state0, batch_first, cell_options, None)
    rec = ws._replays.get(key) if key is not None else None
    if rec is None or rec.params() is not params:
        return None  # (no lock taken: a call that is not recorded, bad input included,
        # goes the whole way, which checks it first)
    if rec.solo or rec.threaded:  # (the whole way's path may depend on two threads being
        on = overlap_enabled()    # allowed: GATECORE_OVERLAP, OMP_NUM_THREADS, the CPUs)
        if on if rec.solo else not on:
            return None
    if rec.unbatched:
        xa = x[:, None, :]
    elif batch_first:
        xa = x.transpose(1, 0, 2)
    else:
        xa = x
    inplace = rec.inplace and _usable_as_is(xa, rec.dtype)  # (as the whole way would)
    if inplace and np.may_share_memory(xa, rec.y0):  # x is this workspace's y
        if rec.alias_path:
            return None  # (the whole way would take another path: its bits)
        inplace = False  # (copied: the recorded work may write y before reading all of x)
    try:
        if get_registry().get(cell) is not rec.base:  # (the cell registered anew since)
            return None
    except Exception:  # noqa: BLE001 (the whole way raises it properly)
        return None
    ws._acquire()  # (WorkspaceBusyError: another thread's call is using it)
    try:
        if ws._replays.get(key) is not rec:  # (dropped meanwhile, by a call that ended)
            return None
        return _run_replay(rec, ws, xa, inplace, state0, batch_first)
    finally:
        ws._release()


def _run_replay(rec, ws, xa, inplace, state0, batch_first):
    """_replay's work on the acquired workspace: x (time-major view ``xa``) read in place
    where the recorded call read its x so (``inplace``), else copied into ``rec.x0``."""
    T, B = xa.shape[0], xa.shape[1]
    if state0 is None:
        state0 = (None,) * len(rec.state0)
    elif type(state0) is np.ndarray:
        state0 = (state0,)
    ws._begin(T, B)
    ops = rec.ops
    if inplace and rec.xslots:
        ops = list(ops)
        for i, at, buf in rec.xslots:
            fn, args = ops[i]
            args = list(args)
            args[at] = xa if buf.ndim == 3 else xa.reshape(buf.shape)
            ops[i] = (fn, tuple(args))
    else:
        np.copyto(rec.x0, xa)
    for buf, v in zip(rec.state0, state0):
        if v is None:
            buf.fill(0)
        else:
            np.copyto(buf, v.reshape(buf.shape))
    if rec.quiet:
        with np.errstate(all="ignore"):
            for fn, args in ops:
                fn(*args)
    else:
        for fn, args in ops:
            fn(*args)
    return (_out_y(ws, rec.y.view(), rec.dtype, batch_first, rec.unbatched),
            _out_state(tuple(s.view() for s in rec.state_n), rec.unbatched), None)


def backward(tape: Tape, dy=None, dstate_n=None):
    """Backpropagation through time for a taped :func:`forward` call.

    Parameters
    ----------
    tape : Tape
        From ``forward(..., training=True)``.
    dy : array shaped like forward's ``y``, optional
        dL/dy (in); ``None`` means zero. Entries past each sequence's length are ignored.
    dstate_n : tuple shaped like forward's ``state_n``, optional
        dL/d final states; ``None`` (or ``None`` entries) means zero.

    Returns
    -------
    dx : array shaped like ``x``
        dL/dx (zero at padded steps).
    dstate0 : tuple shaped like ``state0``
        dL/d initial states (a length-0 sequence passes dstate_n through).
    dparams : dict
        Same keys and shapes as ``params``.

    With a workspace passed to ``forward``, the results are views into it (valid until its
    next use, the next ``backward`` included); without one, each call's results are arrays
    of their own.

    Raises
    ------
    StaleTapeError (ValueError)
        The tape's workspace has been used by a later forward call.
    WorkspaceBusyError (RuntimeError)
        The tape's workspace is in use by another thread's call.
    ShapeError (ValueError), DTypeError (TypeError)
        ``dy`` or ``dstate_n`` of the wrong shape or dtype.
    """
    if getattr(tape, "device", "cpu") == "cuda":  # a tape made on the GPU
        from .cuda_network import cuda_backward
        with _held(getattr(tape, "workspace", None)):
            return cuda_backward(tape, dy, dstate_n)
    if not isinstance(tape, Tape):
        raise TypeError(
            f"tape must be the Tape returned by gatecore.forward(..., training=True), got {type(tape).__name__}"
        )
    ws = tape.workspace
    ws._acquire()  # (WorkspaceBusyError: another thread's call is using it)
    try:
        tape.check_fresh()
        return _backward(tape, ws, dy, dstate_n)
    finally:
        ws._release()


def _backward(tape: Tape, ws: Workspace, dy, dstate_n):
    """backward's work once the tape is known fresh and its workspace held."""
    spec, dims, dtype = tape.spec, tape.dims, tape.dtype
    T, B, L, D, Hr = tape.T, tape.B, dims.num_layers, dims.num_directions, dims.hr
    W = D * Hr
    dy_t = None
    if dy is not None:
        arr = _to_numpy("dy", dy)
        if tape.unbatched:
            want = (T, W)
        elif tape.batch_first:
            want = (B, T, W)
        else:
            want = (T, B, W)
        if arr.shape != want:
            raise ShapeError(f"dy must have the shape of y {_shape_str(want)}, got {_shape_str(arr.shape)}")
        arr = _check_dtype("dy", arr, dtype)
        if tape.unbatched:
            arr = arr[:, None, :]
        elif tape.batch_first:
            arr = arr.transpose(1, 0, 2)
        dy_t = ws.get("b_dy", dtype, lambda T_, B_: (T_, B_, W))
        np.copyto(dy_t, arr)
    S = spec.num_states
    if dstate_n is None:
        dstate_n = (None,) * S
    elif isinstance(dstate_n, np.ndarray) or not isinstance(dstate_n, (tuple, list)):
        dstate_n = (dstate_n,)
    if len(dstate_n) != S:
        raise ValueError(f"dstate_n must be a tuple of {S} arrays {spec.state_names}, got {len(dstate_n)}")
    ds_list = []
    for s, value in enumerate(dstate_n):
        if value is None:
            ds_list.append(None)
            continue
        name = f"dstate_n[{s}] (d{spec.state_names[s]}_n)"
        width = Hr if s == 0 else dims.hidden_size
        want = (L * D, width) if tape.unbatched else (L * D, B, width)
        arr = _check_array(name, value, dtype, want,
                           _state_layout(s, tape.unbatched, dims.proj_size))
        ds_list.append(arr.reshape(L * D, B, width))
    dx, dstate0, dparams = run_backward(tape, dy_t, tuple(ds_list))
    if tape.unbatched:
        dx = dx[:, 0, :]
    elif tape.batch_first:
        out = ws.get("b_dx_bf", dtype, lambda T_, B_, n=dx.shape[2]: (B_, T_, n))
        np.copyto(out, dx.transpose(1, 0, 2))
        dx = out
    if tape.private:  # (no workspace passed: each backward call's results are the caller's)
        dx = dx.copy()
        dstate0 = tuple(a.copy() for a in dstate0)
        dparams = {k: a.copy() for k, a in dparams.items()}
    return dx, _out_state(dstate0, tape.unbatched), dparams


def lstm(x, params: Mapping, h0=None, c0=None, *, lengths=None, batch_first: bool = False,
         workspace: Workspace | None = None):
    """LSTM inference, like ``torch.nn.LSTM`` (no tape kept).

    Parameters
    ----------
    x : array [T, B, input_size] ([B, T, input_size] with batch_first; [T, input_size] unbatched)
    params : mapping
        ``torch.nn.LSTM(...).state_dict()`` as NumPy arrays (proj_size supported).
    h0 : array [L*D, B, P or H], optional
    c0 : array [L*D, B, H], optional
    lengths, batch_first, workspace
        As in :func:`forward`.

    Returns
    -------
    y : array [T, B, D*(P or H)]
    (h_n, c_n) : arrays [L*D, B, P or H] and [L*D, B, H]

    Raises
    ------
    ValueError, TypeError
        As :func:`forward`.

    Notes
    -----
    Hochreiter & Schmidhuber 1997 with the forget gate of Gers et al. 2000; gate order i, f,
    g, o as PyTorch.
    """
    y, (h_n, c_n), _ = forward("lstm", x, params, (h0, c0), lengths=lengths,
                               batch_first=batch_first, workspace=workspace, training=False)
    return y, (h_n, c_n)


def gru(x, params: Mapping, h0=None, *, lengths=None, batch_first: bool = False,
        reset_after: bool = True, workspace: Workspace | None = None):
    """GRU inference, like ``torch.nn.GRU`` (no tape kept).

    Parameters
    ----------
    x : array [T, B, input_size] ([B, T, input_size] with batch_first; [T, input_size] unbatched)
    params : mapping
        ``torch.nn.GRU(...).state_dict()`` as NumPy arrays.
    h0 : array [L*D, B, H], optional
    reset_after : bool
        True: reset gate applied after the hidden product (PyTorch, cuDNN, Keras default,
        ONNX linear_before_reset=1). False: before it (Cho et al. 2014, Keras
        reset_after=False, ONNX linear_before_reset=0).
    lengths, batch_first, workspace
        As in :func:`forward`.

    Returns
    -------
    y : array [T, B, D*H]
    h_n : array [L*D, B, H]

    Raises
    ------
    ValueError, TypeError
        As :func:`forward`.
    """
    y, (h_n,), _ = forward("gru", x, params, (h0,), lengths=lengths, batch_first=batch_first,
                           workspace=workspace, training=False, reset_after=reset_after)
    return y, h_n


def init_params(cell, input_size: int, hidden_size: int, num_layers: int = 1,
                bidirectional: bool = False, proj_size: int = 0, dtype=np.float32,
                seed=None, **cell_options) -> dict[str, np.ndarray]:
    """Fresh parameters with PyTorch's keys, shapes and default initialisation.

    Every entry is drawn uniformly from [-1/sqrt(hidden_size), 1/sqrt(hidden_size)], as
    ``torch.nn.LSTM``/``GRU`` do.

    Parameters
    ----------
    cell : str
        Registered cell name.
    input_size, hidden_size, num_layers, proj_size : int
    bidirectional : bool
    dtype : float32 or float64
    seed : int >= 0 (or a sequence of them), numpy.random Generator, BitGenerator or SeedSequence, optional
        Seed of the draws, as ``numpy.random.default_rng`` takes it (a Generator advances);
        None: fresh entropy.

    Returns
    -------
    dict of str to array
        Keys in PyTorch's state_dict order.

    Raises
    ------
    ValueError
        Non-positive sizes, ``proj_size >= hidden_size``, projection for a cell without it,
        a ``seed`` NumPy does not take (a negative int, a float, a string).
    TypeError
        Unsupported dtype.
    """
    spec = get_registry().get(cell).with_options(**cell_options)
    return init_params_for_spec(spec, input_size, hidden_size, num_layers, bidirectional,
                                proj_size, dtype, seed)


def list_cells() -> dict[str, str]:
    """Registered cell names and the plugin that provides each."""
    return {name: entry.plugin for name, entry in sorted(get_registry().cells().items())}


def get_cell(name: str):
    """The :class:`~gatecore.CellSpec` registered as ``name`` (UnknownCellError lists the names)."""
    return get_registry().get(name)


def register_cell(spec) -> None:
    """Register a cell spec at run time (for notebooks and tests).

    Raises
    ------
    CellSpecError (ValueError)
        Inconsistent spec or duplicate name.
    """
    get_registry().register(spec)


Dims = Dims  # re-export for type hints
