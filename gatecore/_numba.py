"""The one place where gatecore's Numba decorators are configured."""

from numba import njit

from . import config


def pointwise(fn):
    """Compile a cell's pointwise rule for the CPU (inlined into the kernels by LLVM).

    The plain Python function stays reachable as ``.py_func`` for the CUDA backend and for
    fingerprinting.
    """
    return njit(cache=config.use_disk_cache(), fastmath=config.FASTMATH)(fn)
