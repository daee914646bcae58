"""Hook specifications of gatecore's plugin system (pluggy project name ``"gatecore"``).

A plugin is a module or object with functions marked ``@gatecore.hookimpl``, made known
through an entry point of group ``gatecore`` in its distribution's metadata::

    [project.entry-points.gatecore]
    peephole = "gatecore_peephole"

The built-in cells register through the same hook (``gatecore.cells.builtin``).
"""

import pluggy

hookspec = pluggy.HookspecMarker("gatecore")
hookimpl = pluggy.HookimplMarker("gatecore")


@hookspec
def gatecore_register_cells(register):
    """Register gated cells.

    Parameters
    ----------
    register : callable
        ``register(spec)`` with a :class:`gatecore.CellSpec`; call it once per cell. The
        spec is validated on registration; a duplicate name or an inconsistent spec is
        reported with this plugin's name and does not affect other cells.
    """
