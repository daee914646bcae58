"""Dtype-generic CUDA kernels that move data: copies into and out of the device workspace.

The GPU twin of the NumPy copies in :mod:`gatecore.api` (time-major input with padded steps
zeroed, batch_first transposes, state slabs). Importing this module imports ``numba.cuda``
(which works without a GPU); the kernels compile on first launch.
"""

from numba import cuda

__all__ = ["copy_in3", "copy_in2", "copy_slab", "copy_1d", "fill_zero", "swap01", "mul_into"]



@cuda.jit
def copy_in3(src, dst, swap, lengths, masked):
    """dst[t, b, i] = src[t, b, i] (swap: src[b, t, i]); zero at t >= lengths[b] if masked."""
    idx = cuda.grid(1)
    T = dst.shape[0]
    B = dst.shape[1]
    I = dst.shape[2]
    if idx < T * B * I:
        t = idx // (B * I)
        rem = idx - t * B * I
        b = rem // I
        i = rem - b * I
        if masked and t >= lengths[b]:
            dst[t, b, i] = 0.0
        elif swap:
            dst[t, b, i] = src[b, t, i]
        else:
            dst[t, b, i] = src[t, b, i]


@cuda.jit
def copy_in2(src, dst, lengths, masked):
    """dst[t, 0, i] = src[t, i] (unbatched input)."""
    idx = cuda.grid(1)
    T = dst.shape[0]
    I = dst.shape[2]
    if idx < T * I:
        t = idx // I
        i = idx - t * I
        if masked and t >= lengths[0]:
            dst[t, 0, i] = 0.0
        else:
            dst[t, 0, i] = src[t, i]


@cuda.jit
def copy_slab(src, isrc, dst, idst):
    """dst[idst, b, j] = src[isrc, b, j] for the [B, W] slab of two 3-D arrays."""
    idx = cuda.grid(1)
    B = dst.shape[1]
    W = dst.shape[2]
    if idx < B * W:
        b = idx // W
        j = idx - b * W
        dst[idst, b, j] = src[isrc, b, j]


@cuda.jit
def mul_into(a, b, out):
    """out[:] = a * b for 1-D arrays (out may be a or b): dropout's masks."""
    idx = cuda.grid(1)
    if idx < out.shape[0]:
        out[idx] = a[idx] * b[idx]


@cuda.jit
def fill_zero(a):
    """a[:] = 0 for a 1-D array."""
    idx = cuda.grid(1)
    if idx < a.shape[0]:
        a[idx] = 0.0


@cuda.jit
def swap01(src, dst):
    """dst[b, t, w] = src[t, b, w] (batch_first outputs)."""
    idx = cuda.grid(1)
    B = dst.shape[0]
    T = dst.shape[1]
    W = dst.shape[2]
    if idx < B * T * W:
        b = idx // (T * W)
        rem = idx - b * T * W
        t = rem // W
        w = rem - t * W
        dst[b, t, w] = src[t, b, w]


@cuda.jit
def copy_1d(src, dst, off):
    """dst[off + i] = src[i] for 1-D arrays."""
    idx = cuda.grid(1)
    if idx < src.shape[0]:
        dst[off + idx] = src[idx]
