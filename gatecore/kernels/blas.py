"""Matrix products through the same BLAS as the kernels' per-step products.

Numba's ``np.dot`` inside ``@njit`` calls SciPy's BLAS, while NumPy's ``matmul`` calls
NumPy's own copy of OpenBLAS: two libraries, two thread pools, whose idle threads spin
against each other on a small machine. gatecore routes every product of a forward or
backward call through these helpers, so one pool serves them all. ``out`` must be
C-contiguous; ``a`` and ``b`` C- or F-contiguous (transposed views are fine).
"""

import numpy as np
from numba import njit

__all__ = ["gemm", "gemm_acc"]


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
