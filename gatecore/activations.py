"""Activations for cell rules: call these from a plugin's pointwise rules.

``sigmoid(x)`` and ``tanh(x)`` are Numba-compiled, overflow-free for any finite input and
propagate NaN. In float64 kernels they are libm-accurate; in float32 CPU kernels gatecore
swaps them for branch-free float32 versions that LLVM vectorizes (tanh: |error| < 4e-7;
sigmoid: relative error <= 1.5e-7 for x >= -87, as PyTorch's, 0 below; see
``gatecore.cells._math``), which
makes the pointwise part of a step several times faster than ``math.exp``/``math.tanh``
(those still work, at scalar speed). On the GPU they compile as device functions.
"""

from .cells._math import sigmoid, tanh

__all__ = ["sigmoid", "tanh"]
