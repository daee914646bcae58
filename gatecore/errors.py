"""Exception classes raised by gatecore.

Every error that gatecore raises for bad input subclasses :class:`ValueError` or
:class:`TypeError`, so callers can catch the standard exceptions, and every message names
the offending argument together with what was expected and what was found.
"""

from __future__ import annotations

__all__ = [
    "GatecoreError",
    "ShapeError",
    "DTypeError",
    "ParameterError",
    "UnknownCellError",
    "CellSpecError",
    "StaleTapeError",
    "WorkspaceBusyError",
    "PluginError",
]


class GatecoreError(Exception):
    """Base class of every gatecore exception."""


class ShapeError(GatecoreError, ValueError):
    """An array argument has the wrong number of dimensions or the wrong shape."""


class DTypeError(GatecoreError, TypeError):
    """An array argument has an unsupported dtype, or dtypes that do not agree."""


class ParameterError(GatecoreError, ValueError):
    """The parameter mapping has missing, unknown or inconsistent keys or shapes."""


class UnknownCellError(GatecoreError, ValueError):
    """A cell name that no registered plugin provides."""


class CellSpecError(GatecoreError, ValueError):
    """A cell specification that is inconsistent (gate counts, missing rules, ...)."""


class StaleTapeError(GatecoreError, ValueError):
    """``backward`` was given a tape whose workspace has been reused by a later call."""


class WorkspaceBusyError(GatecoreError, RuntimeError):
    """A call was given a :class:`~gatecore.Workspace` that another call (in another
    thread) is still using: a workspace serves one call at a time."""


class PluginError(GatecoreError, RuntimeError):
    """A plugin failed to load or registered an invalid cell."""
