"""The pluggy-based cell registry."""

from .hookspecs import hookimpl, hookspec
from .manager import CellRegistry, RegisteredCell, get_plugin_manager, get_registry

__all__ = ["hookimpl", "hookspec", "CellRegistry", "RegisteredCell", "get_registry",
           "get_plugin_manager"]
