"""Cell specifications: the spec type and the built-in LSTM and GRU cells."""

from .gru import GRU, GRU_RESET_AFTER, GRU_RESET_BEFORE
from .lstm import LSTM
from .spec import CellSpec

__all__ = ["CellSpec", "LSTM", "GRU", "GRU_RESET_AFTER", "GRU_RESET_BEFORE"]
