"""CUDA backend: networks of cells on an NVIDIA GPU, the twin of :mod:`gatecore.network`.

:func:`gatecore.forward` and :func:`gatecore.backward` come here when ``x`` is a CUDA array
(anything with ``__cuda_array_interface__``: Numba device arrays, CuPy arrays, PyTorch CUDA
tensors), when ``params`` is a :class:`DeviceParams` from :func:`to_device`, or when the
workspace was made with ``Workspace(device="cuda")``. Results are Numba device arrays
(views into the device workspace, valid until its next use, as on the CPU).

Per layer k and direction d, with the kernels of :mod:`gatecore.kernels.cuda_factory`:

* forward: ``GX = X_k W_ih^T + b_ih`` for all steps as one GEMM kernel, then per step the
  recurrent GEMM (``W_hh h + b_hh``; two-stage cells: a second one on ``u``) and one fused
  pointwise kernel over batch x hidden units that runs the cell's rule, lengths included;
* backward: per step (reverse order) the pointwise backward rule and the GEMM
  ``dh_{t-1} = da W_hh``; after the loop one GEMM each over all T*B rows gives ``dW_ih``,
  ``dW_hh``, ``dW_hr`` and ``dX_k``, and column sums the bias gradients. Extra-parameter
  gradients are kept per batch item and summed afterwards. No atomics anywhere: results are
  deterministic.

Everything is allocated in the workspace: repeated calls of the same or smaller size
allocate nothing on the device. Host inputs (x, states, dy, lengths) are copied to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
from numba import cuda

from .api import (_check_array, _check_lengths, _check_not_packed_states, _check_shape,
                  _dropout_plan, _layout, _shape_str, _state_layout, _to_numpy)
from .cells.spec import CellSpec
from .errors import DTypeError, GatecoreError, ParameterError, ShapeError, StaleTapeError
from .kernels import cuda_util as cu
from .kernels.cuda_factory import THREADS, TILE, cuda_kernels
from .network import draw_mask
from .params import Dims, _as_param_array, parse_params
from .registry.manager import get_registry
from .workspace import Workspace

__all__ = ["CudaUnavailableError", "DeviceParams", "CudaTape", "to_device", "require_gpu",
           "is_cuda_array", "cuda_forward", "cuda_backward"]


class CudaUnavailableError(GatecoreError, RuntimeError):
    """A GPU computation was requested but no usable CUDA device was found."""


def require_gpu() -> None:
    """Raise :class:`CudaUnavailableError` unless Numba sees a usable CUDA GPU."""
    if not cuda.is_available():
        raise CudaUnavailableError(
            "gatecore: a CUDA computation was requested (a CUDA array, device parameters or "
            "Workspace(device='cuda')) but Numba finds no usable CUDA GPU and driver "
            "(numba.cuda.is_available() is False); run on the CPU with NumPy arrays instead"
        )


def is_cuda_array(value) -> bool:
    """Whether ``value`` is on a CUDA device: a Numba device array, a torch CUDA tensor, or
    anything with ``__cuda_array_interface__`` (CuPy, ...)."""
    if getattr(value, "is_cuda", False) is True:  # torch tensors, even with requires_grad
        return True
    if getattr(value, "__cuda_ndarray__", False):  # Numba device arrays
        return True
    try:
        return hasattr(value, "__cuda_array_interface__")
    except Exception:  # noqa: BLE001 - a property that refuses counts as "not usable"
        return False


def _as_device(name: str, value):
    """Zero-copy Numba view of a CUDA array (torch tensors are detached first)."""
    if getattr(value, "__cuda_ndarray__", False):  # already a Numba device array
        return value
    if hasattr(value, "detach"):
        value = value.detach()
    try:
        return cuda.as_cuda_array(value)
    except Exception as exc:  # noqa: BLE001
        raise DTypeError(f"{name} is a CUDA array that Numba cannot view: {exc}") from None


# ---------------------------------------------------------------- device workspace hooks
def device_empty(n: int, dtype) -> cuda.devicearray.DeviceNDArray:
    """Flat device buffer of ``n`` elements (used by ``Workspace(device='cuda')``)."""
    return cuda.device_array(n, dtype=dtype)


def device_fill0(view) -> None:
    """Zero a C-contiguous device view (used by ``Workspace(device='cuda')``)."""
    n = view.size
    if n:
        cu.fill_zero[(n + THREADS - 1) // THREADS, THREADS](view.reshape(n))


# ------------------------------------------------------------------------- launch helpers
def _p(kernel, n, *args):
    """Launch a pointwise kernel over ``n`` threads (nothing for n == 0)."""
    if n > 0:
        kernel[(n + THREADS - 1) // THREADS, THREADS](*args)


def _g(kernel, M, N, *args):
    """Launch a GEMM kernel over an [M, N] output."""
    if M > 0 and N > 0:
        kernel[((N + TILE - 1) // TILE, (M + TILE - 1) // TILE), (TILE, TILE)](*args)


def _copy_slab(src, isrc, dst, idst):
    _p(cu.copy_slab, dst.shape[1] * dst.shape[2], src, isrc, dst, idst)


# ------------------------------------------------------------------------ parameter sets
_layout_cache: dict = {}


def _standin(shape, dtype) -> np.ndarray:
    return np.broadcast_to(np.zeros((), dtype), shape)


class DeviceParams(Mapping):
    """A parameter set on the GPU, made by :func:`to_device`; accepted wherever ``params`` is.

    A read-only mapping from PyTorch ``state_dict`` keys to C-contiguous Numba device arrays.
    The arrays are the caller's own memory when they were CUDA arrays already (zero-copy:
    in-place updates, for example by a torch optimizer, are seen by the next call; a
    training call copies them into its workspace, so its backward uses the parameters its
    forward used, as on the CPU).
    """

    device = "cuda"

    def __init__(self, arrays: dict):
        self._arrays = dict(arrays)
        self._sig = tuple(sorted((k, tuple(a.shape), np.dtype(a.dtype).str)
                                 for k, a in self._arrays.items()))

    def __getitem__(self, key):
        return self._arrays[key]

    def __iter__(self):
        return iter(self._arrays)

    def __len__(self):
        return len(self._arrays)

    def __repr__(self):
        return f"DeviceParams({len(self)} arrays on cuda)"

    def parse(self, spec: CellSpec):
        """(dims, dtype, layers[k][d][prefix] -> device array), checked like host params."""
        key = (spec.fingerprint(), self._sig)
        hit = _layout_cache.get(key)
        if hit is None:
            standins = {k: _standin(a.shape, a.dtype) for k, a in self._arrays.items()}
            dims, dtype, layers = parse_params(spec, standins)
            names = [[{prefix: f"{prefix}_l{k}{'_reverse' if d else ''}" for prefix in group}
                      for d, group in enumerate(per_dir)] for k, per_dir in enumerate(layers)]
            hit = _layout_cache[key] = (dims, dtype, names)
        dims, dtype, names = hit
        layers = [[{p: self._arrays[n] for p, n in group.items()} for group in per_dir]
                  for per_dir in names]
        return dims, dtype, layers


def to_device(params: Mapping) -> DeviceParams:
    """Move a parameter set to the GPU once, to pass as ``params`` to later calls.

    Parameters
    ----------
    params : mapping of str to array
        PyTorch ``state_dict`` keys and shapes: NumPy arrays or torch CPU tensors (copied to
        the device), or CUDA arrays (torch CUDA tensors, CuPy, Numba; viewed, not copied).

    Returns
    -------
    DeviceParams

    Raises
    ------
    CudaUnavailableError (RuntimeError)
        No usable GPU.
    DTypeError (TypeError), ParameterError (ValueError)
        A value that is not float32/float64, or a non-contiguous CUDA array.
    """
    if isinstance(params, DeviceParams):
        return params
    require_gpu()
    if not isinstance(params, Mapping):
        raise DTypeError(f"params must be a mapping of name to array, got {type(params).__name__}")
    out = {}
    for key, value in params.items():
        if is_cuda_array(value):
            arr = _as_device(f"params[{key!r}]", value)
            if np.dtype(arr.dtype) not in (np.float32, np.float64):
                raise DTypeError(f"params[{key!r}] must be float32 or float64, got dtype {arr.dtype}")
            if not arr.is_c_contiguous():
                raise ParameterError(
                    f"params[{key!r}] is a non-contiguous CUDA array (strides {arr.strides}); "
                    "make it contiguous first (for example tensor.contiguous())"
                )
            out[key] = arr
        else:
            out[key] = cuda.to_device(np.ascontiguousarray(_as_param_array(key, value)))
    return DeviceParams(out)


# ------------------------------------------------------------------------------ the tape
@dataclasses.dataclass
class CudaTape:
    """What backward needs from a forward call on the GPU (device views into the workspace)."""

    spec: CellSpec
    dims: Dims
    dtype: np.dtype
    T: int
    B: int
    batch_first: bool
    unbatched: bool
    lengths: object  # device int64 [B]
    layers: list  # device parameters
    workspace: Workspace
    generation: int
    xs: list
    buffers: dict
    masks: list | None = None  # dropout: device masks [T, B, D*Hr] per layer but the last
    device: str = "cuda"


# ----------------------------------------------------------------------------- loading
def _checked(name, value, dtype, want, what=None):
    """``value`` (a CUDA array, or anything NumPy converts) checked against ``dtype`` and the
    caller-facing shape ``want`` (2-D for unbatched, [B, T, W] for batch_first): the array
    to copy (a device array, or a host NumPy array). ``what``: the shape's meaning for the
    message. Nothing is copied, so a call can check everything before it touches its
    workspace."""
    if is_cuda_array(value):
        arr = _as_device(name, value)
        _check_shape(name, arr.shape, want, what)  # (shape first, as on the CPU)
        if np.dtype(arr.dtype) != dtype:
            raise DTypeError(
                f"{name} is a CUDA array of dtype {arr.dtype} but the parameters are {dtype}; "
                "convert it on the device first (gatecore converts only host arrays)"
            )
        return arr
    return _check_array(name, value, dtype, want, what)


def _load(arr, buf, swap, lens_d, masked):
    """Copy ``arr`` (from ``_checked``) into ``buf`` [T, B, W] on the device."""
    if is_cuda_array(arr):
        if arr.ndim == 2:
            _p(cu.copy_in2, buf.size, arr, buf, lens_d, masked)
        else:
            _p(cu.copy_in3, buf.size, arr, buf, swap, lens_d, masked)
        return
    if arr.ndim == 2:
        arr = arr[:, None, :]
    elif swap:
        arr = arr.transpose(1, 0, 2)
    if buf.size:
        buf.copy_to_device(np.ascontiguousarray(arr))
    if masked and buf.size:
        _p(cu.copy_in3, buf.size, buf, buf, False, lens_d, True)


def _snapshot(ws, name, arr):
    """A copy of device array ``arr`` in workspace buffer ``name`` (device to device)."""
    buf = ws.get(name, arr.dtype, lambda T_, B_, sh=tuple(arr.shape): sh)
    if buf.size:
        buf.copy_to_device(arr)
    return buf


def _state_tuple(value, S, what):
    if value is None:
        return (None,) * S
    if isinstance(value, np.ndarray) or is_cuda_array(value) or not isinstance(value, (tuple, list)):
        value = (value,)
    if len(value) != S:
        raise ValueError(f"{what} must be a tuple of {S} arrays, got {len(value)}")
    return tuple(value)


# ------------------------------------------------------------------------------ forward
def cuda_forward(cell, x, params, state0=None, *, lengths=None, batch_first=False,
                 workspace=None, training=True, dropout=None, **cell_options):
    """:func:`gatecore.forward` on the GPU; same arguments, device arrays out.

    Returns ``(y, state_n, tape)`` with ``y`` and ``state_n`` Numba device arrays (views into
    the workspace) and ``tape`` a :class:`CudaTape` (None when ``training=False``).
    ``dropout``: None, or (p, rng) for dropout between layers in a training call, as checked
    by ``gatecore.forward``: the masks are drawn on the host as on the CPU (same rng, same
    masks) and copied to the device.
    """
    require_gpu()
    spec = get_registry().get(cell).with_options(**cell_options)
    if not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first must be True or False, got {batch_first!r}")
    if workspace is None:
        workspace = Workspace(device="cuda")
    elif not isinstance(workspace, Workspace):
        raise TypeError(f"workspace must be a gatecore.Workspace or None, got {type(workspace).__name__}")
    elif workspace.device != "cuda":
        raise ValueError(
            "workspace is a CPU workspace but this call runs on the GPU (x is a CUDA array or "
            "params are DeviceParams); use gatecore.Workspace(device='cuda')"
        )
    ws = workspace
    dp = to_device(params)
    dims, dtype, layers = dp.parse(spec)
    keep = bool(training)

    # ---- shapes of x (checked before anything is copied)
    xshape = tuple(x.shape) if is_cuda_array(x) else _to_numpy("x", x).shape
    if len(xshape) not in (2, 3):
        raise ShapeError(
            f"x must be 3-D {_layout(3, batch_first)} or 2-D [T, input_size], got shape {_shape_str(xshape)}"
        )
    unbatched = len(xshape) == 2
    if unbatched:
        T, B, I = xshape[0], 1, xshape[1]
    elif batch_first:
        B, T, I = xshape
    else:
        T, B, I = xshape
    if I != dims.input_size:
        raise ShapeError(
            f"x has input_size {I} (last axis) but params expect input_size={dims.input_size}; "
            f"x shape {_shape_str(xshape)}, layout {_layout(len(xshape), batch_first)}"
        )
    if is_cuda_array(lengths):
        lengths = _as_device("lengths", lengths).copy_to_host()
    lens = _check_lengths(lengths, B, T)
    L, D, H, Hr, P = dims.num_layers, dims.num_directions, dims.hidden_size, dims.hr, dims.proj_size
    if dropout is not None:
        dropout = _dropout_plan(dropout[0], dropout[1], keep, L, stacklevel=4)
    G, G1, S, K, E = spec.num_gates, spec.g1, spec.num_states, spec.tape_size, spec.num_extra
    GH, G1H, G2H = G * H, G1 * H, (G - G1) * H
    # every input checked before the workspace is touched: a rejected call leaves earlier
    # tapes of this workspace usable (as on the CPU)
    x_in = _checked("x", x, dtype, xshape)
    state_in = []
    for s, value in enumerate(_state_tuple(state0, S, f"state0 {spec.state_names}")):
        if value is not None:
            name = f"{spec.state_names[s]}0"
            width = Hr if s == 0 else H
            want = (L * D, width) if unbatched else (L * D, B, width)
            what = _state_layout(s, unbatched, P)
            _check_not_packed_states(name, value, want, what, spec)
            value = _checked(name, value, dtype, want, what)
        state_in.append(value)
    gen = ws._begin(T, B)
    mod = cuda_kernels(spec, dtype)
    if keep:  # the tape's own copy of the parameters (as on the CPU): DeviceParams may be the
        # caller's memory, which an optimizer step before backward would change
        layers = [[{p: _snapshot(ws, f"p_{p}_l{k}_{d}", a) for p, a in group.items()}
                   for d, group in enumerate(per_dir)] for k, per_dir in enumerate(layers)]

    lens_d = ws.get("lengths", np.dtype(np.int64), lambda T_, B_: (B_,))
    if B:
        lens_d.copy_to_device(lens)
    empty_d = None  # items without a step (taped): 0, the others T, for zeroing their h0 slots
    if keep and lengths is not None and T and B and not lens.all():
        empty_d = ws.get("lengths_empty", np.dtype(np.int64), lambda T_, B_: (B_,))
        empty_d.copy_to_device(np.where(lens == 0, 0, T).astype(np.int64))
    x0 = ws.get("x0", dtype, lambda T_, B_: (T_, B_, I))
    _load(x_in, x0, bool(batch_first) and not unbatched, lens_d, lengths is not None)
    states = []
    for s, value in enumerate(state_in):
        width = Hr if s == 0 else H
        buf = ws.get(f"state0_{s}", dtype, lambda T_, B_, w=width: (L * D, B_, w))
        if value is None:
            device_fill0(buf)
        else:
            _load(value, buf, False, lens_d, False)
        states.append(buf)

    dummy = ws.get("dummy", dtype, lambda T_, B_: (1,))
    state_n = tuple(
        ws.get(f"state_n{s}", dtype, lambda T_, B_, w=(Hr if s == 0 else H): (L * D, B_, w))
        for s in range(S)
    )
    ah = ws.get("ah", dtype, lambda T_, B_: (1, B_, GH))
    pbuf = ws.get("pbuf", dtype, lambda T_, B_: (1, B_, Hr))
    nslot = (lambda T_: T_ + 1) if keep else (lambda T_: 2)
    mslot = (lambda T_: T_) if keep else (lambda T_: 1)

    xs = [x0]
    buffers = {}
    masks = []
    if keep and dropout is not None:  # host buffers for the masks (drawn there, then copied)
        ws_host = ws.host()
        ws_host._begin(T, B)
    layer_in = x0
    for k in range(L):
        tag_y = f"y{k}" if keep else f"y{k % 2}"
        y = ws.get(tag_y, dtype, lambda T_, B_: (T_, B_, D * Hr))
        Din = layer_in.shape[2]
        in3 = layer_in.reshape(1, T * B, Din)
        for d in range(D):
            group = layers[k][d]
            tag = f"{k}_{d}" if keep else ""
            gx = ws.get(f"gx{tag}", dtype, lambda T_, B_: (T_, B_, GH))
            hp = ws.get(f"hp{tag}", dtype, lambda T_, B_: (nslot(T_), B_, Hr))
            st = ws.get(f"st{tag}", dtype, lambda T_, B_: (S, nslot(T_), B_, H))
            u = ws.get(f"u{tag}", dtype, lambda T_, B_: (mslot(T_), B_, H))
            tp = ws.get(f"tp{tag}", dtype, lambda T_, B_: (mslot(T_), B_, K * H))
            ex = ws.get(f"ex{tag}", dtype, lambda T_, B_: (max(E, 1), H))
            r = 0
            flat_ex = ex.reshape(ex.size)
            for prefix, n in spec.extra_params:
                _p(cu.copy_1d, n * H, group[prefix], flat_ex, r * H)
                r += n
            has_bias = dims.bias
            bih = group["bias_ih"] if has_bias else dummy
            bhh = group["bias_hh"] if has_bias else dummy
            whh = group["weight_hh"]
            whr = group["weight_hr"] if P else dummy
            _g(mod.gemm_nt, T * B, GH, in3, 0, group["weight_ih"], 0, bih, has_bias,
               gx.reshape(1, T * B, GH), 0, 0, GH)
            idx = k * D + d
            st_views = [st[s] for s in range(S)]
            _copy_slab(states[0], idx, hp, 0)
            if P:
                device_fill0(st_views[0][0])
            else:
                _copy_slab(states[0], idx, st_views[0], 0)
            for s in range(1, S):
                _copy_slab(states[s], idx, st_views[s], 0)
            rev = bool(d)
            for step in range(T):
                kc = step if keep else step % 2
                kt = step if keep else 0
                kn = step + 1 if keep else (step + 1) % 2
                _g(mod.gemm_nt, B, G1H, hp, kc, whh, 0, bhh, has_bias, ah, 0, 0, G1H)
                if G2H:
                    _p(mod.fwd_stage1, B * H, gx, ah, ex, lens_d, rev, keep, step, st, u, tp)
                    _g(mod.gemm_nt, B, G2H, u, kt, whh, G1H, bhh, has_bias, ah, 0, G1H, G2H)
                _p(mod.fwd_cell, B * H, gx, ah, ex, lens_d, rev, keep, step, st, tp, hp, y,
                   d * Hr, bool(P))
                if P:
                    _g(mod.gemm_nt, B, P, st_views[0], kn, whr, 0, dummy, False, pbuf, 0, 0, P)
                    _p(mod.fwd_proj_out, B * Hr, pbuf, lens_d, rev, keep, step, hp, y, d * Hr)
            last = T if keep else T % 2
            _copy_slab(hp, last, state_n[0], idx)
            for s in range(1, S):
                _copy_slab(st_views[s], last, state_n[s], idx)
            if empty_d is not None:  # (as on the CPU: their h0 meets only dA = 0 in dW_hh)
                _p(cu.copy_in3, T * B * Hr, hp[:T], hp[:T], False, empty_d, True)
            if keep:
                buffers[(k, d)] = dict(gx=gx, hp=hp, st=st, u=u, tp=tp, ex=ex)
        layer_in = y
        if keep and k + 1 < L and dropout is not None:  # masks drawn on the host (as on the CPU)
            W = y.shape[2]
            host = ws_host.get(f"dmask{k}", dtype, lambda T_, B_, w=W: (T_, B_, w))
            draw_mask(dropout, host)
            m = ws.get(f"dmask{k}", dtype, lambda T_, B_, w=W: (T_, B_, w))
            if m.size:
                m.copy_to_device(host)
            out = ws.get(f"dropped{k}", dtype, lambda T_, B_, w=W: (T_, B_, w))
            _p(cu.mul_into, out.size, y.reshape(y.size), m.reshape(m.size), out.reshape(out.size))
            masks.append(m)
            layer_in = out
        if keep and k + 1 < L:
            xs.append(layer_in)
    tape = None
    if keep:
        tape = CudaTape(spec, dims, dtype, T, B, bool(batch_first), unbatched, lens_d, layers,
                        ws, gen, xs, buffers, masks if dropout is not None else None)
    return (_out3(ws, "y_bf", layer_in, batch_first, unbatched), _out_states(state_n, unbatched),
            tape)


def _out3(ws, name, a, batch_first, unbatched):
    if unbatched:
        return a[:, 0, :]
    if batch_first:
        T, B, W = a.shape
        out = ws.get(name, a.dtype, lambda T_, B_: (B_, T_, W))
        _p(cu.swap01, out.size, a, out)
        return out
    return a


def _out_states(states, unbatched):
    return tuple(s[:, 0, :] if unbatched else s for s in states)


# ----------------------------------------------------------------------------- backward
def cuda_backward(tape: CudaTape, dy=None, dstate_n=None):
    """:func:`gatecore.backward` for a tape made on the GPU; device arrays out."""
    ws = tape.workspace
    if ws.generation != tape.generation:
        raise StaleTapeError(
            "tape is stale: its workspace was reused by a later forward or backward call "
            f"(tape generation {tape.generation}, workspace now at {ws.generation}); run "
            "backward before reusing the workspace, or give each forward its own workspace"
        )
    spec, dims, dtype = tape.spec, tape.dims, tape.dtype
    T, B = tape.T, tape.B
    L, D, H, Hr, P = dims.num_layers, dims.num_directions, dims.hidden_size, dims.hr, dims.proj_size
    G, G1, S, E = spec.num_gates, spec.g1, spec.num_states, spec.num_extra
    GH, G1H, G2H = G * H, G1 * H, (G - G1) * H
    W = D * Hr
    mod = cuda_kernels(spec, dtype)
    lens_d = tape.lengths

    dy_d = None
    if dy is not None:
        if tape.unbatched:
            want = (T, W)
        elif tape.batch_first:
            want = (B, T, W)
        else:
            want = (T, B, W)
        dy_in = _checked("dy", dy, dtype, want, "the shape of y")
    ds_in = []  # (checked before anything is copied, as in cuda_forward)
    for s, value in enumerate(_state_tuple(dstate_n, S, f"dstate_n {spec.state_names}")):
        if value is not None:
            width = Hr if s == 0 else H
            name = f"dstate_n[{s}] (d{spec.state_names[s]}_n)"
            want = (L * D, width) if tape.unbatched else (L * D, B, width)
            value = _checked(name, value, dtype, want, _state_layout(s, tape.unbatched, P))
        ds_in.append(value)
    if dy is not None:
        dy_d = ws.get("b_dy", dtype, lambda T_, B_: (T_, B_, W))
        _load(dy_in, dy_d, tape.batch_first and not tape.unbatched, lens_d, False)
    dsn = []
    for s, value in enumerate(ds_in):
        if value is None:
            dsn.append(None)
            continue
        width = Hr if s == 0 else H
        buf = ws.get(f"b_dsn{s}", dtype, lambda T_, B_, w=width: (L * D, B_, w))
        _load(value, buf, False, lens_d, False)
        dsn.append(buf)

    dummy = ws.get("dummy", dtype, lambda T_, B_: (1,))
    dhr = ws.get("b_dhr", dtype, lambda T_, B_: (B_, Hr))
    dhr3 = dhr.reshape(1, B, Hr)
    ds = ws.get("b_ds", dtype, lambda T_, B_: (S, B_, H))
    dsp = ws.get("b_dsp", dtype, lambda T_, B_: (S, B_, H))
    dax = ws.get("b_dax", dtype, lambda T_, B_: (T_, B_, GH))
    dah1 = ws.get("b_dah1", dtype, lambda T_, B_: (T_, B_, G1H))
    dah2 = ws.get("b_dah2", dtype, lambda T_, B_: (T_, B_, max(G2H, 1)))
    dahrow = ws.get("b_dahrow", dtype, lambda T_, B_: (B_, GH))
    du = ws.get("b_du", dtype, lambda T_, B_: (1, B_, H), zero=True)
    dhnew = ws.get("b_dhnew", dtype, lambda T_, B_: (1, B_, Hr))
    dhist = ws.get("b_dhist", dtype, lambda T_, B_: (T_ if P else 1, B_, Hr))
    dexb = ws.get("b_dexb", dtype, lambda T_, B_: (B_, max(E, 1), H))
    dstate0 = tuple(
        ws.get(f"b_dstate0_{s}", dtype, lambda T_, B_, w=(Hr if s == 0 else H): (L * D, B_, w))
        for s in range(S)
    )
    dparams = {}
    for k in range(L):
        for d in range(D):
            for prefix, arr in tape.layers[k][d].items():
                key = f"{prefix}_l{k}{'_reverse' if d else ''}"
                dparams[key] = ws.get("g_" + key, dtype, lambda T_, B_, sh=tuple(arr.shape): sh)

    d_out = dy_d
    has_dy = dy_d is not None
    TB = T * B
    for k in range(L - 1, -1, -1):
        x_k = tape.xs[k]
        Din = x_k.shape[2]
        dx_k = ws.get(f"b_dx{k % 2}", dtype, lambda T_, B_, n=Din: (T_, B_, n))
        if TB == 0:
            device_fill0(dx_k)
        for d in range(D):
            group = tape.layers[k][d]
            buf = tape.buffers[(k, d)]
            idx = k * D + d
            sfx = f"_l{k}{'_reverse' if d else ''}"
            if dsn[0] is not None:
                _copy_slab(dsn[0], idx, dhr3, 0)
            else:
                device_fill0(dhr)
            for s in range(1, S):
                dsv = ds[s].reshape(1, B, H)
                if dsn[s] is not None:
                    _copy_slab(dsn[s], idx, dsv, 0)
                else:
                    device_fill0(dsv)
            if E:
                device_fill0(dexb)
            whh = group["weight_hh"]
            whr = group["weight_hr"] if P else dummy
            gx, st, u, tp, ex = buf["gx"], buf["st"], buf["u"], buf["tp"], buf["ex"]
            rev = bool(d)
            dy_arg = d_out if has_dy else dummy.reshape(1, 1, 1)
            for step in range(T - 1, -1, -1):
                _p(mod.bwd_begin, B * Hr, dy_arg, has_dy, d * Hr, lens_d, T, rev, step, dhr,
                   dhist, bool(P), ds)
                if P:
                    _g(mod.gemm_nn, B, H, dhr3, 0, whr, 0, ds, 0, False)
                if G2H:
                    _p(mod.bwd_stage2, B * H, gx, tp, st, ex, ds, lens_d, rev, step, dax, dahrow,
                       dah2, dexb)
                    _g(mod.gemm_nn, B, H, dah2, step, whh, G1H, du, 0, False)
                _p(mod.bwd_cell, B * H, gx, tp, st, ex, ds, du, lens_d, rev, step, dax, dah1,
                   dahrow, dsp, dexb)
                _g(mod.gemm_nn, B, Hr, dah1, step, whh, 0, dhnew, 0, False)
                _p(mod.bwd_end, B * max(Hr, H), dhnew, dsp, lens_d, T, rev, step, bool(P), dhr, ds)
            _copy_slab(dhr3, 0, dstate0[0], idx)
            for s in range(1, S):
                _copy_slab(ds[s].reshape(1, B, H), 0, dstate0[s], idx)
            r = 0
            for prefix, n in spec.extra_params:
                _p(mod.reduce_dex, n * H, dexb, r, dparams[prefix + sfx])
                r += n
            # weight gradients: one product each over all T*B rows
            dax2d = dax.reshape(TB, GH)
            x2d = x_k.reshape(TB, Din)
            _gemm_tn(mod, dax2d, x2d, dparams["weight_ih" + sfx])
            dw_hh = dparams["weight_hh" + sfx]
            hp2d = buf["hp"][:T].reshape(TB, Hr)
            _gemm_tn(mod, dah1.reshape(TB, G1H), hp2d, dw_hh[:G1H])
            if G2H:
                _gemm_tn(mod, dah2.reshape(TB, G2H), u.reshape(TB, H), dw_hh[G1H:])
            if dims.bias:
                _colsum(mod, dax2d, dparams["bias_ih" + sfx])
                db_hh = dparams["bias_hh" + sfx]
                _colsum(mod, dah1.reshape(TB, G1H), db_hh[:G1H])
                if G2H:
                    _colsum(mod, dah2.reshape(TB, G2H), db_hh[G1H:])
            if P:
                m2d = st[0, 1:].reshape(TB, H)
                _gemm_tn(mod, dhist.reshape(TB, Hr), m2d, dparams["weight_hr" + sfx])
            _g(mod.gemm_nn, TB, Din, dax.reshape(1, TB, GH), 0, group["weight_ih"], 0,
               dx_k.reshape(1, TB, Din), 0, d > 0)
        if k > 0 and tape.masks is not None:  # through layer k-1's dropout
            _p(cu.mul_into, dx_k.size, dx_k.reshape(dx_k.size),
               tape.masks[k - 1].reshape(dx_k.size), dx_k.reshape(dx_k.size))
        d_out = dx_k
        has_dy = True
    if tape.unbatched:
        dx = d_out[:, 0, :]
    else:
        dx = _out3(ws, "b_dx_bf", d_out, tape.batch_first, False)
    return dx, _out_states(dstate0, tape.unbatched), dparams


def _gemm_tn(mod, a, b, c):
    M, N = c.shape
    if a.shape[0] == 0:
        device_fill0(c)
    else:
        _g(mod.gemm_tn, M, N, a, b, c)


def _colsum(mod, a, c):
    if a.shape[0] == 0:
        device_fill0(c)
    else:
        _p(mod.colsum, c.shape[0], a, c)
