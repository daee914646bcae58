"""Build the CUDA kernels of a cell spec: the GPU twin of :mod:`gatecore.kernels.factory`.

For each concrete :class:`~gatecore.cells.spec.CellSpec` and float dtype the factory
specialises ``cuda_kernels.py.in`` (gate and stage counts, dtype, tile size), writes it into
the cache folder and executes it as a module. The cell's pointwise rules, written once as
plain Python, are compiled for the GPU with ``cuda.jit(device=True)`` from their ``py_func``
and injected as module globals. Helper functions that a rule calls through a global or a
closure (the activations of :mod:`gatecore.cells._math`, or a plugin's own ``@njit``
helpers) are recompiled the same way, recursively, so one source serves both targets.

Importing this module never touches a GPU: ``numba.cuda`` is imported on the first build,
and kernels compile on their first launch.

Settings (read once, here; kernels see them as module constants)
----------------------------------------------------------------
GATECORE_CUDA_TILE
    Edge of the square GEMM tiles and thread blocks (default 16: 256 threads per block).
GATECORE_CUDA_THREADS
    Threads per block of the pointwise kernels (default 128).
GATECORE_CUDA_CACHE
    ``1`` compiles the kernels with Numba's on-disk cache (default off: untested on every
    driver; compilation then happens once per process).
"""

from __future__ import annotations

import os
import threading
import types
from importlib import resources

import numpy as np

from ..cells.spec import CellSpec, _global_names
from .factory import _specialise, load_generated

__all__ = ["cuda_kernels", "TILE", "THREADS", "device_function"]


def _env_int(name: str, default: int, lo: int, hi: int) -> int:
    raw = os.environ.get(name, "")
    try:
        v = int(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= v <= hi:
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got {v}")
    return v


#: GEMM tile edge (threads per GEMM block = TILE * TILE).
TILE = _env_int("GATECORE_CUDA_TILE", 16, 1, 32)
#: Threads per block of the pointwise kernels.
THREADS = _env_int("GATECORE_CUDA_THREADS", 128, 1, 1024)
#: Whether CUDA kernels use Numba's on-disk cache.
CACHE = os.environ.get("GATECORE_CUDA_CACHE", "") in ("1", "true", "yes")

_lock = threading.RLock()
_cache: dict[tuple[str, str], types.ModuleType] = {}
_device_fns: dict[object, object] = {}
_building: set = set()


def _template() -> str:
    return resources.files("gatecore.kernels").joinpath("cuda_kernels.py.in").read_text()


def device_function(fn):
    """Compile the plain Python function behind ``fn`` with ``cuda.jit(device=True)``.

    ``fn`` may be an ``@njit`` dispatcher (its ``py_func`` is used) or a plain function.
    Globals and closure cells of the function that are Numba CPU dispatchers are replaced
    by their own device versions (memoized), so rules can call the shared activations.
    """
    py = getattr(fn, "py_func", fn)
    with _lock:
        dev = _device_fns.get(py)
        if dev is None:
            _building.add(py)
            try:
                dev = _device_fns[py] = _build_device(py)
            finally:
                _building.discard(py)
        return dev


def _swap(value, py):
    """The device version of ``value`` if it is a CPU dispatcher of another function."""
    from numba.core.dispatcher import Dispatcher

    inner = getattr(value, "py_func", None)
    # co_names also holds attribute names (``math.tanh`` inside a function named tanh):
    # skip the function itself and anything being built further up (cycles)
    if isinstance(value, Dispatcher) and inner is not None and inner is not py \
            and inner not in _building:
        return device_function(value)
    return value


def _build_device(py):
    from numba import cuda

    glb = py.__globals__
    swapped = {}
    for name in _global_names(py.__code__):
        if name in glb:
            v = _swap(glb[name], py)
            if v is not glb[name]:
                swapped[name] = v
    new_globals = {**glb, **swapped} if swapped else glb
    closure = py.__closure__
    if closure:
        closure = tuple(types.CellType(_swap(c.cell_contents, py)) for c in closure)
    clone = types.FunctionType(py.__code__, new_globals, py.__name__, py.__defaults__, closure)
    clone.__qualname__ = py.__qualname__
    clone.__module__ = py.__module__
    clone.__doc__ = py.__doc__
    return cuda.jit(device=True)(clone)


def cuda_kernels(spec: CellSpec, dtype) -> types.ModuleType:
    """Return the CUDA kernel module of ``spec`` for ``dtype`` (float32 or float64).

    Built once per process and memoized by the spec's fingerprint and the dtype; each kernel
    compiles on its first launch.
    """
    dtype = np.dtype(dtype)
    fp = spec.fingerprint()
    key = (fp, dtype.name)
    mod = _cache.get(key)
    if mod is not None:
        return mod
    with _lock:
        mod = _cache.get(key)
        if mod is not None:
            return mod
        header = (
            "# Generated by gatecore.kernels.cuda_factory; do not edit.\n"
            "from numba import cuda\n"
            f"from numba import {dtype.name} as DT\n\n"
            f"G = {spec.num_gates}\nG1 = {spec.g1}\nS = {spec.num_states}\n"
            f"TILE = {TILE}\nTILE1 = {TILE + 1}\nCACHE = {CACHE}\n\n"
        )
        src = header + _specialise(_template(), spec.two_stage)
        mod = load_generated(f"cuda_{spec.name}_{spec.variant or 'base'}_{dtype.name}", src, fp, dict(
            _fwd1=device_function(spec.forward_stage1) if spec.two_stage else None,
            _fwd=device_function(spec.forward),
            _bwd2=device_function(spec.backward_stage2) if spec.two_stage else None,
            _bwd=device_function(spec.backward),
        ))
        _cache[key] = mod
        return mod
