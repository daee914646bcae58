"""Matrix products through the same BLAS as the kernels' per-step products.

Numba's ``np.dot`` inside ``@njit`` calls SciPy's BLAS, while NumPy's ``matmul`` calls
NumPy's own copy of OpenBLAS: two libraries, two thread pools, whose idle threads spin
against each other on a small machine. gatecore routes every product of a forward or
backward call through these helpers, so one pool serves them all. ``out`` must be
C-contiguous; ``a`` and ``b`` C- or F-contiguous (transposed views are fine).
"""

import contextlib
import os
import threading

import numpy as np
from numba import njit

__all__ = ["gemm", "gemm_acc", "transpose_into", "numpy_blas_available", "numpy_blas_one_thread"]


@njit(cache=True, nogil=True)
def gemm(a, b, out):
    """out = a @ b (2-D, or 1-D @ 2-D)."""
    np.dot(a, b, out)


@njit(cache=True, nogil=True)
def gemm_acc(a, b, out, tmp):
    """out += a @ b, with ``tmp`` (shaped like ``out``) as scratch."""
    np.dot(a, b, tmp)
    flat_o = out.reshape(-1)
    flat_t = tmp.reshape(-1)
    for i in range(flat_o.size):
        flat_o[i] += flat_t[i]


@njit(cache=True, nogil=True)
def transpose_into(a, out):
    """out[:, :] = a.T for C-contiguous 2-D ``a`` [m, n] and ``out`` [n, m].

    NumPy's copy of a transposed view walks one array across rows and misses the cache on
    every element (4096 x 1024 float32: 37 ms). Here each block of 256 rows of ``a`` is read
    row by row into four output rows at a time (the same matrix: about 5 ms; square tiles
    measured 10-17 ms, rows 4 KiB apart share cache sets).
    """
    m, n = a.shape
    n4 = n - n % 4
    for i0 in range(0, m, 256):
        i1 = min(i0 + 256, m)
        for j in range(0, n4, 4):
            o0 = out[j]
            o1 = out[j + 1]
            o2 = out[j + 2]
            o3 = out[j + 3]
            for i in range(i0, i1):
                r = a[i]
                o0[i] = r[j]
                o1[i] = r[j + 1]
                o2[i] = r[j + 2]
                o3[i] = r[j + 3]
        for j in range(n4, n):
            for i in range(i0, i1):
                out[j, i] = a[i, j]


_np_blas = None  # threadpoolctl's controller of NumPy's OpenBLAS; False: none found
_one_lock = threading.Lock()
_one_depth = 0
_one_saved = 1


def _reset_after_fork() -> None:
    global _one_lock, _one_depth
    _one_lock = threading.Lock()
    _one_depth = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _numpy_openblas():
    """threadpoolctl's controller of the OpenBLAS inside NumPy's wheel, or None (another
    BLAS, or threadpoolctl unable to find it)."""
    global _np_blas
    if _np_blas is None:
        found = False
        try:
            from threadpoolctl import ThreadpoolController
            # (real paths: a virtual environment reached through a symbolic link has
            # NumPy's module under the link and its loaded library under the target)
            np_dir = os.path.realpath(os.path.dirname(os.path.dirname(np.__file__)))
            for lib in ThreadpoolController().select(internal_api="openblas").lib_controllers:
                path = os.path.normcase(os.path.realpath(lib.filepath)) if lib.filepath else ""
                if path.startswith(os.path.normcase(os.path.join(np_dir, "numpy"))):
                    found = lib
                    break
        except Exception:  # noqa: BLE001 - no control, no split products
            found = False
        _np_blas = found
    return _np_blas or None


def numpy_blas_available() -> bool:
    """Whether ``numpy_blas_one_thread`` can set NumPy's OpenBLAS to one thread."""
    return _numpy_openblas() is not None


@contextlib.contextmanager
def numpy_blas_one_thread():
    """Within: NumPy's OpenBLAS computes every product on the calling thread, if it yields
    True.

    For products that gatecore splits over two threads itself: OpenBLAS's own threads,
    once woken, spin for 0.1-0.3 s after each product and took the cores from gatecore's
    packed products (measured: 0.53 against 0.31-0.45 ms per step). The count is process
    wide: other threads' NumPy products run on one thread meanwhile; the previous count is
    restored when the outermost use leaves. Only the main thread changes it (OpenBLAS, through
    threadpoolctl 3.8, let only the first thread that set a count change it later: a count
    set or restored from another thread was silently not applied), and only when the change
    is seen to apply; otherwise nothing changes and it yields False, as it does without
    NumPy's OpenBLAS (``numpy_blas_available``). Hold Ctrl-C back around it
    (``overlap.hold_sigint``): an interrupt between setting and restoring would leave the
    count at one.
    """
    global _one_depth, _one_saved
    lib = _numpy_openblas()
    if lib is None or threading.current_thread() is not threading.main_thread():
        yield False
        return
    with _one_lock:
        if _one_depth == 0:
            _one_saved = lib.num_threads
            lib.set_num_threads(1)
            if lib.num_threads != 1:  # not applied: leave it as it is
                lib.set_num_threads(_one_saved)
                ok = False
            else:
                ok = True
                _one_depth = 1
        else:
            ok = True
            _one_depth += 1
    if not ok:
        yield False
        return
    try:
        yield True
    finally:
        with _one_lock:
            _one_depth -= 1
            if _one_depth == 0:
                lib.set_num_threads(_one_saved)
