"""gatecore: LSTM, GRU and plugin gated cells, forward and BPTT, with Numba kernels.

Public API (NumPy in, NumPy out)::

    y, (h_n, c_n) = gatecore.lstm(x, params, h0=None, c0=None, *, lengths=None, batch_first=False)
    y, h_n        = gatecore.gru(x, params, h0=None, *, lengths=None, batch_first=False, reset_after=True)
    y, state_n, tape = gatecore.forward(cell, x, params, state0=None, *, lengths=None,
                                        batch_first=False, workspace=None, **cell_options)
    dx, dstate0, dparams = gatecore.backward(tape, dy, dstate_n=None)
    params = gatecore.init_params(cell, input_size, hidden_size, num_layers=1, ...)
    params = gatecore.prepare(params)   # checked, copied, transposed once for many calls
"""

from ._numba import gc_paused as _gc_paused

# Importing gatecore imports Numba (several hundred thousand objects), over which Python's
# cyclic collector ran full passes several times meanwhile: held off until the imports are
# done (gatecore._numba itself does not import Numba).
with _gc_paused():
    from .api import backward, forward, get_cell, gru, init_params, list_cells, lstm, register_cell
    from .cells.spec import CellSpec
    from .errors import (CellSpecError, DTypeError, GatecoreError, ParameterError, PluginError,
                         ShapeError, StaleTapeError, UnknownCellError, WorkspaceBusyError)
    from .network import Tape
    from .params import PreparedParams, prepare
    from .registry.hookspecs import hookimpl
    from .workspace import Workspace
    from . import weights  # (format converters: ONNX, Keras)

__version__ = "0.1.0"

#: The CUDA backend's public names, imported on first use so that ``import gatecore``
#: never imports numba.cuda (gatecore.cuda_network itself imports without a GPU too).
_CUDA_NAMES = ("to_device", "DeviceParams", "CudaTape", "CudaUnavailableError")


def __getattr__(name):
    if name in _CUDA_NAMES:
        from . import cuda_network
        return getattr(cuda_network, name)
    raise AttributeError(f"module 'gatecore' has no attribute {name!r}")

__all__ = [
    "lstm", "gru", "forward", "backward", "init_params", "list_cells", "get_cell",
    "register_cell", "prepare", "PreparedParams", "CellSpec", "Tape", "Workspace", "hookimpl",
    "GatecoreError", "ShapeError", "DTypeError", "ParameterError", "UnknownCellError",
    "CellSpecError", "StaleTapeError", "WorkspaceBusyError", "PluginError", "weights",
    "__version__",
    *_CUDA_NAMES,
]
