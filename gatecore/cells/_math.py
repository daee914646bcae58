"""Activation functions for cell rules (plain Python, compiled by Numba for CPU and GPU).

``sigmoid`` and ``tanh`` are the accurate versions (libm exp/tanh; ``sigmoid`` evaluates
exp(x) / (1 + exp(x)) for x < 0, so it never overflows, for any finite input; NaN stays
NaN). Cell rules call these two by name.

For float32 kernels the CPU kernel factory swaps them for ``sigmoid_f32`` / ``tanh_f32``,
branch-free so that LLVM vectorizes the rules' loops (libm's would be scalar calls):

* ``tanh_f32``: a clamped [13/6] rational approximation of tanh (the form Eigen uses for
  float32), exactly +-1 from |x| = 7.9053 on, so that a saturated gate's derivative is exactly
  0 (PyTorch's float32 tanh is exactly +-1 from about 9); error below 4e-7 absolute over the
  whole real line (measured against float64 tanh), under the float32 parity tolerance of 1e-5.
* ``sigmoid_f32``: 1 / (1 + exp(-x)) with ``exp_f32`` (Cephes' expf: Cody-Waite reduction,
  degree-7 polynomial, the scale 2^n built from its bits), relative error at most 1.5e-7
  for x >= -87 (PyTorch's float32 sigmoid: the same bound), exactly 1 from x = 16.6356 on (as
  PyTorch's) and exactly 0 below -87 (PyTorch's values there are below 1.7e-38).

float64 kernels keep libm.
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["sigmoid", "tanh", "sigmoid_f32", "tanh_f32", "exp_f32", "FLOAT32_VERSIONS"]


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
    # gate's derivative 1 - tanh^2 is exactly 0, as with float32 libm and PyTorch;
    # 1 - tanh(7.905) = 2.7e-7, inside the error bound
    one = np.float32(1.0)
    r = one if x >= c else r
    r = -one if x <= -c else r
    return r


@intrinsic
def _fma_f32(typingctx, a, b, c):
    """a * b + c for float32, rounded once (llvm.fma; vectorized with the loop around it)."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, sig, args):
        f = ir.FloatType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f, [f] * 3),
                                            "llvm.fma.f32")
        return builder.call(fn, args)
    return sig, codegen


@intrinsic
def _bits_f32(typingctx, i):
    """The float32 whose bits are the int32 ``i``."""
    sig = types.float32(types.int32)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())
    return sig, codegen


_EXP_HI = np.float32(88.0)  # exp_f32's argument range: 2^n stays a normal float32
_EXP_LO = np.float32(-87.0)
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(-0.693359375)  # -ln 2 in two parts (Cody and Waite)
_LN2_LO = np.float32(2.12194440e-4)
_E0, _E1, _E2, _E3, _E4, _E5 = (np.float32(v) for v in (
    1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
    5.0000001201e-1))


@njit(inline="always", cache=True, error_model="numpy")
def exp_f32(x):
    """float32 exp for x in [-87, 88] (clamped to that range outside; NaN stays NaN).

    Cephes' expf (S. L. Moshier): x = n ln 2 + r with n = round(x / ln 2) and ln 2 in two
    parts, exp(r) by its degree-7 polynomial, times 2^n built from the bits of n. Branch-free
    (selects, floor, fused multiply-adds, an integer shift), so LLVM vectorizes loops over it.
    """
    x = np.float32(x)
    xc = _EXP_HI if x > _EXP_HI else x
    xc = _EXP_LO if xc < _EXP_LO else xc
    n = np.floor(_fma_f32(xc, _LOG2E, np.float32(0.5)))
    r = _fma_f32(n, _LN2_HI, xc)
    r = _fma_f32(n, _LN2_LO, r)
    p = _fma_f32(_E0, r, _E1)
    p = _fma_f32(p, r, _E2)
    p = _fma_f32(p, r, _E3)
    p = _fma_f32(p, r, _E4)
    p = _fma_f32(p, r, _E5)
    p = _fma_f32(p, r * r, r) + np.float32(1.0)
    scale = _bits_f32((np.int32(n) + np.int32(127)) << np.int32(23))
    return p * scale


@njit(inline="always", cache=True, error_model="numpy")
def sigmoid_f32(x):
    """float32 logistic function 1 / (1 + exp(-x)) with ``exp_f32``: relative error at most
    1.5e-7 (measured against float64 on 2.2 million points in [-100, 100] and on logarithmic
    grids to +-1e-8), exactly 1 from x = 16.6356 on (1 + exp(-x) rounds to 1, as in
    PyTorch), exactly 0 below x = -87 (where exp_f32 stops; the true value is below
    1.7e-38), so that saturated gates have exactly zero derivatives s (1 - s); NaN stays NaN.
    (An earlier version, 0.5 + 0.5 tanh(x / 2), had absolute errors of 1.7e-7 that were large
    relative errors below x = -10, and was 0 from x = -15.8.)"""
    x = np.float32(x)
    s = np.float32(1.0) / (np.float32(1.0) + exp_f32(-x))
    return np.float32(0.0) if x < _EXP_LO else s


#: accurate activation -> float32 kernel version (used by the CPU kernel factory)
FLOAT32_VERSIONS = {sigmoid: sigmoid_f32, tanh: tanh_f32}
