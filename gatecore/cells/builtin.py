"""The built-in plugin: registers LSTM and GRU through the same hook as third-party cells."""

from ..registry.hookspecs import hookimpl
from .gru import GRU
from .lstm import LSTM


@hookimpl
def gatecore_register_cells(register):
    """Register the built-in ``lstm`` and ``gru`` cells."""
    register(LSTM)
    register(GRU)
