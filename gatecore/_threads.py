"""BLAS threads for the per-step products: one thread for small steps, the default otherwise.

The kernels' matrix products go through SciPy's BLAS (Numba's ``np.dot``). For a small
per-step product (a few hundred thousand multiply-adds, as at batch 1-8 with H <= 128)
waking a second BLAS thread costs more than it saves: measured on the 2-core machine,
forward at T=1000, B=1, H=128 took 11 ms with one thread against 17 ms with two, while at
B=64, H=320 two threads were 10-40% faster. gatecore therefore sets SciPy's OpenBLAS to one
thread for the duration of a call whose per-step product is below ``SMALL_STEP_MACS`` and
restores the previous count afterwards. Only SciPy's OpenBLAS (``scipy.libs``) is touched,
through threadpoolctl; with another BLAS, or ``GATECORE_BLAS_THREADS=keep``, nothing changes.
"""

from __future__ import annotations

import contextlib
import os
import threading

__all__ = ["blas_threads_for_step", "SMALL_STEP_MACS"]

#: per-step multiply-adds (B * G*H * Hr) below which one BLAS thread is used
SMALL_STEP_MACS = 1 << 19

_lock = threading.Lock()
_controllers = None


def _scipy_blas():
    global _controllers
    if _controllers is None:
        with _lock:
            if _controllers is None:
                try:
                    import scipy.linalg.cython_blas  # noqa: F401  (the BLAS Numba calls)
                    from threadpoolctl import ThreadpoolController

                    libs = ThreadpoolController().lib_controllers
                    _controllers = [lib for lib in libs if lib.internal_api == "openblas"
                                    and "scipy.libs" in str(lib.filepath)]
                except Exception:  # noqa: BLE001 - no threadpoolctl or an unknown BLAS
                    _controllers = []
    return _controllers


_depth = 0
_saved: list = []


@contextlib.contextmanager
def blas_threads_for_step(macs_per_step: int):
    """Use one SciPy-BLAS thread while a call with small per-step products runs.

    Nested or concurrent calls share one save/restore: the first to enter saves the thread
    counts and sets 1, the last to leave restores them.
    """
    global _depth, _saved
    if macs_per_step >= SMALL_STEP_MACS or os.environ.get("GATECORE_BLAS_THREADS") == "keep":
        yield
        return
    libs = _scipy_blas()
    if not libs:
        yield
        return
    with _lock:
        if _depth == 0:
            _saved = [(lib, lib.num_threads) for lib in libs]
            for lib in libs:
                lib.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for lib, n in _saved:
                    lib.set_num_threads(n)
