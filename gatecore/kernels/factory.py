"""Build the compiled CPU kernels of a cell spec, once per process (and once per machine).

For each concrete :class:`~gatecore.cells.spec.CellSpec` and float dtype the factory writes a
small Python module into the cache folder (``gatecore.config.cache_dir()``): the kernel
template ``cpu_kernels.py.in`` specialised to the cell's gate and stage counts. The cell's
pointwise rules are recompiled from their plain Python source with ``inline="always"`` (so
that LLVM sees them inside the kernels' loops and vectorizes them) and injected as module
globals before the module is executed. For float32 modules the rules' calls of the accurate
activations (:mod:`gatecore.cells._math`) are swapped for their vectorizable float32
versions.

Because the kernels live in a real file whose name holds a fingerprint of the cell's rules,
the dtype and the template, Numba's on-disk cache works for plugin cells as for built-ins
(functions built from closures, or taking dispatchers as arguments, are not cacheable by
Numba; a file-backed module is). A change to a rule changes the fingerprint and so the
file, which invalidates the cache.
"""

from __future__ import annotations

import dis
import hashlib
import os
import sys
import threading
import types
import weakref
from importlib import resources

import numba
import numpy as np
from numba import njit
from numba.core.dispatcher import Dispatcher

from .. import config
from .._numba import gc_paused, prepare_cpu_target
from ..cells._math import FLOAT32_VERSIONS
from ..cells.spec import CellSpec, _global_names

__all__ = ["cpu_kernels", "inline_rule", "load_generated"]

_lock = threading.RLock()
# part of every generated file's name: a new Numba, new float32 activations or new packed
# products (called by the kernels; Numba's cache does not track callees in other files) mean
# new files
_ENV_KEY = numba.__version__ + (
    resources.files("gatecore.cells").joinpath("_math.py").read_text()) + (
    resources.files("gatecore.kernels").joinpath("packed.py").read_text())
_cache: dict[tuple[str, str], types.ModuleType] = {}
# fast path for repeated calls: (id(spec), dtype) -> (weak ref to spec, module); weak, so that
# specs built on the fly by a cell's configure() can be dropped (the ref check guards id reuse)
_by_id: dict[tuple[int, str], tuple[weakref.ref, types.ModuleType]] = {}
_inlined: dict[tuple[object, str], object] = {}
_DTYPE_NAMES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}


def _template() -> str:
    return resources.files("gatecore.kernels").joinpath("cpu_kernels.py.in").read_text()


def _specialise(src: str, two_stage: bool) -> str:
    """Keep the template's "#1 " lines (one-stage cells) or "#2 " lines (two-stage cells),
    without the prefix."""
    out = []
    for line in src.splitlines():
        if line.startswith("#1 "):
            if not two_stage:
                out.append(line[3:])
        elif line.startswith("#2 "):
            if two_stage:
                out.append(line[3:])
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def inline_rule(fn, dtype) -> object:
    """Compile ``fn`` (a plain function or an ``@njit`` dispatcher) inline for ``dtype``.

    Globals and closure cells that are Numba dispatchers are recompiled the same way
    (recursively, memoized); for float32 the accurate activations are swapped for their
    float32 versions.
    """
    if fn is None:
        return None
    dtype = np.dtype(dtype).name
    py = getattr(fn, "py_func", fn)
    key = (py, dtype)
    with _lock:
        hit = _inlined.get(key)
        if hit is not None:
            return hit
        swaps = FLOAT32_VERSIONS if dtype == "float32" else {}

        def swap(value):
            if not isinstance(value, Dispatcher):
                return value
            value = swaps.get(value, value)
            inner = getattr(value, "py_func", None)
            if inner is None or inner is py:
                return value
            return inline_rule(value, dtype)

        glb = py.__globals__
        new = {n: swap(glb[n]) for n in _global_names(py.__code__) if n in glb}
        new = {n: v for n, v in new.items() if v is not glb[n]}
        closure = py.__closure__
        if closure:
            closure = tuple(types.CellType(swap(c.cell_contents)) for c in closure)
        clone = types.FunctionType(py.__code__, {**glb, **new} if new else glb, py.__name__,
                                   py.__defaults__, closure)
        clone.__qualname__ = py.__qualname__
        clone.__module__ = py.__module__
        compiled = njit(inline="always", error_model="numpy", fastmath=config.FASTMATH)(clone)
        _inlined[key] = compiled
        return compiled


def _reads_first_argument(fn) -> bool:
    """Whether a rule's code reads its first argument (``ax`` of the backward rules).

    Conservative: any load of the name counts (also passing it on to a helper). The LSTM's
    backward never reads ax, so its forward skips writing the input pre-activations back for
    backward and backward skips copying them (one [T, B, 4H] array less each way).
    """
    if fn is None:
        return False
    code = getattr(fn, "py_func", fn).__code__
    if code.co_argcount == 0:
        return False
    name = code.co_varnames[0]
    if name in code.co_cellvars:  # captured by an inner function
        return True
    # (Python 3.13 fuses instructions: LOAD_FAST_LOAD_FAST ('ax', 'j') for ax[j],
    # STORE_FAST_LOAD_FAST ('g', 'ax') for "g = ...; ... ax[...]"; 3.14 adds LOAD_FAST_BORROW
    # and its pair: any instruction with LOAD_FAST in its name and the name among its
    # operands counts, a stored name too, which only errs on the safe side)
    return any("LOAD_FAST" in ins.opname
               and name in (ins.argval if isinstance(ins.argval, tuple) else (ins.argval,))
               for ins in dis.get_instructions(code))


def cpu_kernels(spec: CellSpec, dtype) -> types.ModuleType:
    """Return the module holding ``forward_dir`` and ``backward_dir`` for ``spec`` and ``dtype``.

    Compilation itself is lazy (first call); the module is built once per process and
    memoized by the spec's fingerprint and the dtype.
    """
    dname = _DTYPE_NAMES.get(dtype) or np.dtype(dtype).name
    hit = _by_id.get((id(spec), dname))
    if hit is not None and hit[0]() is spec:
        return hit[1]
    with _lock:
        fp = spec.fingerprint()
        mod = _cache.get((fp, dname))
        if mod is None:
            prepare_cpu_target()
            with gc_paused():  # (no compilation here: the kernels compile at their first call)
                mod = _build(spec, dname, fp)
            _load_cached_callees(mod)
            _cache[(fp, dname)] = mod
        if len(_by_id) > 256:  # drop entries whose spec is gone
            for key in [k for k, (ref, _) in _by_id.items() if ref() is None]:
                del _by_id[key]
        _by_id[(id(spec), dname)] = (weakref.ref(spec), mod)
        return mod


#: the generated module's functions with fast-math flags (RULE_MATH's "contract"; _mmd's
#: "reassoc" too) that other kernels call, callees before their callers: see
#: _load_cached_callees
_FASTMATH_CALLEES = ("_mm", "_mmd", "_rule_fwd_at", "_rule_bwd_at", "forward_dir",
                     # (no fast math of their own, but callers of the rules' loops, which LLVM
                     # could inline into them: their copies in the teams' kernels too)
                     "_team_fwd_half", "_team_bwd_half", "_team_bwd_job")


def _load_cached_callees(mod: types.ModuleType) -> None:
    """Load the disk-cached compilations of the module's fast-math callees now, before any
    kernel that calls them, so that a kernel runs the same callee code whether it was
    compiled in this process or loaded from Numba's cache, and whichever kernel ran first.

    A kernel's library holds a copy of each callee (its LLVM IR, linked in and optimized
    again with the kernel) and calls it by the callee's symbol, which the JIT binds to the
    first definition loaded. A process that compiles a kernel compiles its callees first,
    each on its own, so the calls bind to those; a process that loaded a kernel alone from
    the cache bound them to that kernel's copy. Under fast math the two need not agree: the
    second optimization may swap the operands of ``a*b + c*d``, and "contract" then fuses
    the other product (the peephole LSTM's ``f*c_prev + i*g``: last-bit differences from
    t = 1 between a first run and later runs). Best effort (Numba's cache index is
    internal): on any failure the callees load lazily, as before.
    """
    for name in _FASTMATH_CALLEES:
        disp = mod.__dict__.get(name)
        try:
            cache_file = disp._cache._cache_file  # (NullCache: none)
            magic = disp.targetctx.codegen().magic_tuple()
            for key, data_name in cache_file._load_index().items():
                if (key[1] == magic and key[0] not in disp.overloads
                        and os.path.exists(os.path.join(cache_file._cache_path, data_name))):
                    disp.compile(key[0])  # (a cache hit; only a file that fails to load compiles)
        except Exception:  # noqa: BLE001 - Numba internals that may move
            pass


def _build(spec: CellSpec, dname: str, fp: str) -> types.ModuleType:
    cache = config.use_disk_cache()
    axb = _reads_first_argument(spec.backward) or _reads_first_argument(spec.backward_stage2)
    header = (
        "# Generated by gatecore.kernels.factory; do not edit.\n"
        "import numpy as np\n"
        "from numba import njit\n\n"
        f"G = {spec.num_gates}\nG1 = {spec.g1}\nS = {spec.num_states}\nK = {spec.tape_size}\n"
        f"AXB = {axb}\nFUSE = {bool(spec.dah_is_dax and not axb and not spec.two_stage)}\n"
        f"DTYPE = {dname!r}\nCACHE = {cache}\n\n"
    )
    src = header + _specialise(_template(), spec.two_stage)
    return load_generated(f"cpu_{spec.name}_{spec.variant or 'base'}_{dname}", src, fp, dict(
        _fwd1=inline_rule(spec.forward_stage1, dname),
        _fwd=inline_rule(spec.forward, dname),
        _bwd2=inline_rule(spec.backward_stage2, dname),
        _bwd=inline_rule(spec.backward, dname),
    ))


def load_generated(stem: str, src: str, fingerprint: str, injected: dict) -> types.ModuleType:
    """Write ``src`` to ``<cache dir>/<stem>_<hash>.py`` (if changed) and execute it as a module.

    ``injected`` (the compiled cell rules) becomes module globals before execution. The file
    name holds a hash of the source and of the rules' fingerprint, so Numba's on-disk cache,
    keyed by file, is invalidated when either changes.
    """
    digest = hashlib.sha256((src + fingerprint + _ENV_KEY).encode()).hexdigest()[:16]
    path = config.cache_dir() / f"{stem}_{digest}.py"
    if not path.exists() or path.read_text() != src:
        # unique per process and thread: forked workers share thread idents
        tmp = path.with_suffix(f".tmp{os.getpid()}_{threading.get_ident()}")
        tmp.write_text(src)
        tmp.replace(path)
    mod = types.ModuleType(f"gatecore_kernels_{path.stem}")
    mod.__file__ = str(path)
    # Numba's cache rebuilds a kernel's environment by module name: make it findable.
    sys.modules[mod.__name__] = mod
    mod.__dict__.update(injected)
    exec(compile(src, str(path), "exec"), mod.__dict__)
    return mod
