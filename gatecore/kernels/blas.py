"""Matrix products through the same BLAS as the kernels' per-step products.

Numba's ``np.dot`` inside ``@njit`` calls SciPy's BLAS, while NumPy's ``matmul`` calls
NumPy's own copy of OpenBLAS: two libraries, two thread pools, whose idle threads spin
against each other on a small machine. gatecore routes every product of a forward or
backward call through these helpers, so one pool serves them all. ``out`` must be
C-contiguous; ``a`` and ``b`` C- or F-contiguous (transposed views are fine).
"""

import numpy as np
from numba import njit

__all__ = ["gemm", "gemm_acc", "transpose_into"]


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
