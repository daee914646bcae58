"""Scalar activation functions shared by the built-in cells (plain Python, Numba-compilable).

``sigmoid`` never overflows: for x < 0 it evaluates exp(x) / (1 + exp(x)), so inputs of any
finite magnitude give a value in [0, 1]; NaN stays NaN.
"""

import math

from numba import njit


@njit(inline="always", cache=True)
def sigmoid(x):
    """Logistic function 1 / (1 + exp(-x)), overflow-free for any finite x."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(inline="always", cache=True)
def tanh(x):
    """Hyperbolic tangent (libm), saturates to +-1 without overflow."""
    return math.tanh(x)
