"""The cell registry: a pluggy plugin manager that loads entry points once, lazily.

``get_registry()`` returns the process-wide :class:`CellRegistry`. It registers the
built-in plugin, then each entry point of group ``gatecore`` one by one, so that a plugin
that fails to import, registers a duplicate name or declares an inconsistent spec is
recorded (see :meth:`CellRegistry.errors`, ``gatecore cells``) without affecting the others.
Set ``GATECORE_DISABLE_PLUGIN_AUTOLOAD=1`` to skip third-party entry points.
"""

from __future__ import annotations

import importlib.metadata
import threading
import warnings
from dataclasses import dataclass

import pluggy

from .. import config
from ..cells.spec import CellSpec
from ..errors import CellSpecError, PluginError, UnknownCellError
from . import hookspecs

__all__ = ["CellRegistry", "get_registry", "get_plugin_manager", "RegisteredCell"]

ENTRY_POINT_GROUP = "gatecore"


@dataclass(frozen=True)
class RegisteredCell:
    """A cell in the registry and the plugin that provided it."""

    spec: CellSpec
    plugin: str


class CellRegistry:
    """Name → cell spec table, filled through the ``gatecore_register_cells`` hook.

    Parameters
    ----------
    autoload : bool, optional
        Load third-party entry points of group ``gatecore`` (default: unless
        ``GATECORE_DISABLE_PLUGIN_AUTOLOAD=1``).
    """

    def __init__(self, autoload: bool | None = None, *, defer_entry_points: bool = False) -> None:
        self.pm = pluggy.PluginManager("gatecore")
        self.pm.add_hookspecs(hookspecs)
        self._cells: dict[str, RegisteredCell] = {}
        self._errors: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        from ..cells import builtin

        self._load_plugin(builtin, "gatecore (built-in)")
        self._autoload = config.plugin_autoload() if autoload is None else autoload
        if not defer_entry_points:
            self.load_entry_points()

    def load_entry_points(self) -> None:
        """Load every entry point of group ``gatecore`` (once; errors are recorded)."""
        if self._autoload:
            self._autoload = False
            for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                             key=lambda e: e.name):
                name = _plugin_name(ep)
                try:
                    plugin = ep.load()
                except Exception as exc:  # noqa: BLE001 - a broken plugin must not break others
                    self._error(name, f"failed to load: {type(exc).__name__}: {exc}")
                    continue
                self._load_plugin(plugin, name)

    # ---------------------------------------------------------------- loading
    def _error(self, plugin: str, reason: str) -> None:
        self._errors.append((plugin, reason))
        warnings.warn(f"gatecore plugin {plugin}: {reason}", RuntimeWarning, stacklevel=3)

    def _load_plugin(self, plugin, name: str) -> None:
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # noqa: BLE001
            self._error(name, f"could not be registered: {exc}")
            return
        impl = [i for i in self.pm.hook.gatecore_register_cells.get_hookimpls()
                if i.plugin_name == name]
        before = len(self._cells)
        for hook_impl in impl:
            try:
                out = hook_impl.function(
                    register=lambda spec, _n=name: self._add(spec, _n, strict=False))
            except Exception as exc:  # noqa: BLE001
                self._error(name, f"raised in gatecore_register_cells: {type(exc).__name__}: {exc}")
                continue
            returned = out if isinstance(out, (list, tuple)) else [out]
            if any(isinstance(r, CellSpec) for r in returned):
                self._error(name, "gatecore_register_cells returned cell specs (ignored): call "
                                  "register(spec) for each cell instead")
        if len(self._cells) == before and not any(p == name for p, _ in self._errors):
            # no cells and no error said why: a misspelt hook, or a hook that never registers
            # (hooks gatecore does not know are otherwise ignored: a plugin written for a
            # later gatecore may define more)
            plugin_obj = self.pm.get_plugin(name)
            unknown = sorted(hc.name for hc in (self.pm.get_hookcallers(plugin_obj) or [])
                             if hc.spec is None)
            if not impl:
                self._error(name, "has no gatecore_register_cells(register) hook: no cells"
                                  + (f" (it defines {unknown}, which gatecore does not know)"
                                     if unknown else ""))
            else:
                self._error(name, "registered no cells (its gatecore_register_cells never "
                                  "called register(spec))")

    def _add(self, spec: CellSpec, plugin: str, strict: bool) -> None:
        with self._lock:
            try:
                if not isinstance(spec, CellSpec):
                    raise CellSpecError(f"register() expects a gatecore.CellSpec, got {type(spec).__name__}")
                spec.validate()
                # trial run of the rules in plain Python: catches a gate count, tape size or
                # state count that does not match what the rules index, and unwritten outputs
                spec.check_rules()
                if spec.configure is not None:
                    default = spec.with_options()
                    if default is not spec:
                        default.check_rules()
                if spec.name in self._cells:
                    raise CellSpecError(
                        f"duplicate cell name {spec.name!r} (already provided by "
                        f"{self._cells[spec.name].plugin})"
                    )
            except CellSpecError as exc:
                if strict:
                    raise
                self._error(plugin, str(exc))
                return
            self._cells[spec.name] = RegisteredCell(spec, plugin)

    # ---------------------------------------------------------------- public
    def register(self, spec: CellSpec, plugin: str = "run-time") -> None:
        """Register a cell at run time (notebooks, tests).

        Raises
        ------
        CellSpecError
            If the spec is inconsistent or its name is already registered.
        """
        self._add(spec, plugin, strict=True)

    def unregister(self, name: str) -> None:
        """Remove a cell registered at run time (or any cell) by name."""
        with self._lock:
            self.get(name)
            del self._cells[name]

    def get(self, name: str) -> CellSpec:
        """Return the spec registered as ``name``.

        Raises
        ------
        UnknownCellError
            If no plugin provides ``name``; the message lists the known names.
        """
        if isinstance(name, CellSpec):
            return name
        if not isinstance(name, str):
            raise UnknownCellError(f"cell must be a registered name (str), got {type(name).__name__}")
        entry = self._cells.get(name.lower())
        if entry is None:
            raise UnknownCellError(
                f"unknown cell {name!r}; registered cells: {sorted(self._cells)}"
            )
        return entry.spec

    def cells(self) -> dict[str, RegisteredCell]:
        """All registered cells, by name."""
        return dict(self._cells)

    def errors(self) -> list[tuple[str, str]]:
        """(plugin, reason) for every plugin problem seen while loading or registering."""
        return list(self._errors)


def _plugin_name(ep) -> str:
    """How listings and error reports name an entry point's plugin: distribution and module."""
    dist = getattr(getattr(ep, "dist", None), "name", None)
    return f"{dist} ({ep.value})" if dist else f"{ep.name} ({ep.value})"


_registry: CellRegistry | None = None
_registry_lock = threading.RLock()
_loading_thread: int | None = None


def get_registry() -> CellRegistry:
    """The process-wide registry (built on first use; entry points load once).

    The registry is published (built-ins only) before plugins are imported, so a plugin that
    calls gatecore while it is being imported finds it; other threads wait until every
    plugin is loaded.
    """
    global _registry, _loading_thread
    registry = _registry
    if registry is not None and _loading_thread in (None, threading.get_ident()):
        return registry
    with _registry_lock:
        if _registry is None:
            registry = CellRegistry(defer_entry_points=True)
            _registry = registry
            _loading_thread = threading.get_ident()
            try:
                registry.load_entry_points()
            finally:
                _loading_thread = None
    return _registry


def get_plugin_manager() -> pluggy.PluginManager:
    """The pluggy plugin manager behind the process-wide registry."""
    return get_registry().pm


def _reset_registry_for_tests(registry: CellRegistry | None = None) -> CellRegistry | None:
    """Swap the process-wide registry (tests use a fresh one); returns the previous one."""
    global _registry
    old, _registry = _registry, registry
    return old


PluginError = PluginError  # re-exported for convenience
