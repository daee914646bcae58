"""The one place where gatecore's Numba decorators are configured, and its start-up helpers."""

import contextlib
import gc

from . import config


@contextlib.contextmanager
def gc_paused():
    """Hold Python's cyclic garbage collector off for the block (re-enabled after it, if it
    was enabled before).

    For gatecore's one-time start-up work only (its import, Numba's target set-up and the
    kernel modules' construction): importing Numba and its lowering registries creates some
    hundreds of thousands of objects, and the collector ran full passes over all of them
    several times meanwhile. Measured on the 2-core EPYC, a fresh process's import plus first
    LSTM forward with Numba's cache filled, median of 8 each: 1.33 s with the collector, 1.09
    without. Never around the compilation of a kernel (whose garbage can be large) or a
    user's call; Numba's set-up compiles only its few runtime helpers. The switch is the
    process's: other threads run without the collector for those 0.2-0.5 s too, and one that
    turns it off meanwhile finds it on again afterwards.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


_target_ready = False


def prepare_cpu_target() -> None:
    """Set up Numba's CPU target (its typing and lowering registries, imported lazily by
    Numba at the first compilation or cache load of the process: about 0.2-0.5 s) now, with
    the collector held off (``gc_paused``). Idempotent; any failure is left to Numba's own
    set-up at the first compilation."""
    global _target_ready
    if _target_ready:
        return
    _target_ready = True
    try:
        from numba.core.compiler_lock import global_compiler_lock
        from numba.core.registry import cpu_target
        with global_compiler_lock, gc_paused(), _blas_check_deferred():  # (Numba refreshes
            cpu_target.target_context.refresh()  # under its lock too)
    except Exception:  # pragma: no cover - an internal API of Numba's that may move
        pass


@contextlib.contextmanager
def _blas_check_deferred():
    """While Numba's registries load: its ``numba.np.arraymath`` checks at import that SciPy's
    BLAS can be imported (``numba.np.linalg.ensure_blas``, which also refuses a SciPy whose
    BLAS has another integer width than Numba was built for), and importing ``scipy.linalg``
    took 0.25-0.37 s of a fresh process's first call with the kernels already cached, most of
    whose paths never call BLAS. With SciPy installed (a dependency of gatecore) that check
    is skipped here, and ``blas_checked`` runs it before the first call whose kernels do
    call BLAS (a kernel loaded from Numba's cache would never run it; one compiled in the
    process runs it at its compilation too). Without SciPy, or once arraymath is imported,
    nothing changes."""
    import importlib.util
    import sys

    if "numba.np.arraymath" in sys.modules or importlib.util.find_spec("scipy") is None:
        yield
        return
    from numba.np import linalg

    real = linalg.ensure_blas
    linalg.ensure_blas = _no_check
    try:
        yield
    finally:
        linalg.ensure_blas = real
        math_mod = sys.modules.get("numba.np.arraymath")
        if math_mod is not None and getattr(math_mod, "ensure_blas", None) is _no_check:
            math_mod.ensure_blas = real  # (its only use was the check at its import)


def _no_check():
    return None


_blas_ok = False


def blas_checked() -> None:
    """Numba's BLAS check (``numba.np.linalg.ensure_blas``: SciPy's BLAS can be imported and
    has the integer width this Numba was built for; it imports ``scipy.linalg``), once per
    process: call it before a call whose kernels run BLAS (``np.dot`` inside them: the
    per-step products of ``gatecore.network``'s BLAS path), since ``_blas_check_deferred``
    skipped it at set-up. Raises what ``ensure_blas`` raises (ImportError, RuntimeError)."""
    global _blas_ok
    if _blas_ok:
        return
    from numba.np.linalg import ensure_blas
    ensure_blas()
    _blas_ok = True


def pointwise(fn):
    """Compile a cell's pointwise rule for the CPU (inlined into the kernels by LLVM).

    The plain Python function stays reachable as ``.py_func`` for the CUDA backend and for
    fingerprinting.
    """
    from numba import njit  # (here: importing this module must not import Numba, see
    # gatecore/__init__.py, which holds the collector off with gc_paused while it does)

    return njit(cache=config.use_disk_cache(), fastmath=config.FASTMATH)(fn)
