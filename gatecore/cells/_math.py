"""Activation functions for cell rules (plain Python, compiled by Numba for CPU and GPU).

``sigmoid`` and ``tanh`` are the accurate versions (libm exp/tanh; ``sigmoid`` evaluates
exp(x) / (1 + exp(x)) for x < 0, so it never overflows, for any finite input; NaN stays
NaN). Cell rules call these two by name.

For float32 kernels the CPU kernel factory swaps them for ``sigmoid_f32`` / ``tanh_f32``:
a clamped [13/6] rational approximation of tanh (the form Eigen uses for float32), branch-free
so that LLVM vectorizes the rules' loops, exactly +-1 from |x| = 7.9053 on (sigmoid_f32: exactly
0 and 1 from |x| = 15.811), so that saturated gates have exactly zero derivatives (PyTorch's
float32 ones are exactly zero from about 9 and 17 on the upper side; for sigmoid arguments
below -15.8 it keeps values and derivatives under 1.4e-7 that gatecore rounds to 0). Its error is
below 4e-7 absolute over the whole real line (measured against float64 tanh), under the
float32 parity tolerance of 1e-5; float64 kernels keep libm.
"""

import math

import numpy as np
from numba import njit

__all__ = ["sigmoid", "tanh", "sigmoid_f32", "tanh_f32", "FLOAT32_VERSIONS"]


@njit(inline="always", cache=True, error_model="numpy")
def sigmoid(x):
    """Logistic function 1 / (1 + exp(-x)), overflow-free for any finite x."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(inline="always", cache=True, error_model="numpy")
def tanh(x):
    """Hyperbolic tangent (libm), saturates to +-1 without overflow."""
    return math.tanh(x)


_CLAMP = np.float32(7.90531110763549805)
# numerator (odd, / x) and denominator coefficients in x^2, lowest power first
_P0, _P1, _P2, _P3, _P4, _P5, _P6 = (np.float32(v) for v in (
    4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
    -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16))
_Q0, _Q1, _Q2, _Q3 = (np.float32(v) for v in (
    4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06))


@njit(inline="always", cache=True, error_model="numpy")
def tanh_f32(x):
    """float32 tanh: clamped [13/6] rational approximation, |error| < 4e-7; NaN stays NaN.

    The polynomials are evaluated in Estrin's scheme (pairs of terms, then powers of x^2):
    shorter dependency chains than Horner's, 20% faster in the LSTM rule (measured 3.1 against
    3.9 ns per unit, float32, H = 512). Max error over every float32 in [0, 12]: 3.6e-7
    (Horner's order of the same coefficients: 4.1e-7, at x = 5.83).
    """
    x = np.float32(x)
    c = _CLAMP
    xc = c if x > c else x
    xc = -c if xc < -c else xc
    y = xc * xc
    y2 = y * y
    y4 = y2 * y2
    p = (_P0 + _P1 * y) + y2 * (_P2 + _P3 * y) + y4 * ((_P4 + _P5 * y) + y2 * _P6)
    q = (_Q0 + _Q1 * y) + y2 * (_Q2 + _Q3 * y)
    r = (p * xc) / q
    # saturated: exactly +-1 (the rational form tops out at 0.99999964), so that a saturated
    # gate's derivative (1 - tanh^2, or s (1 - s) for sigmoid_f32) is exactly 0, as with
    # float32 libm and PyTorch; 1 - tanh(7.905) = 2.7e-7, inside the error bound
    one = np.float32(1.0)
    r = one if x >= c else r
    r = -one if x <= -c else r
    return r


@njit(inline="always", cache=True, error_model="numpy")
def sigmoid_f32(x):
    """float32 logistic function as 0.5 + 0.5 tanh(x / 2), with ``tanh_f32``."""
    h = np.float32(0.5)
    return h + h * tanh_f32(h * np.float32(x))


#: accurate activation -> float32 kernel version (used by the CPU kernel factory)
FLOAT32_VERSIONS = {sigmoid: sigmoid_f32, tanh: tanh_f32}
