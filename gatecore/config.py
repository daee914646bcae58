"""Numba and cache settings, read once, in one place.

Kernels never read these globals themselves (Numba freezes globals at compile time); the
kernel factory reads them when it builds a kernel module.

Environment variables
---------------------
GATECORE_CACHE_DIR
    Folder for generated kernel modules and Numba's on-disk cache of them
    (default: ``$XDG_CACHE_HOME/gatecore`` or ``~/.cache/gatecore``; a temporary folder
    when that is not writable).
GATECORE_NO_CACHE
    Set to ``1`` to compile kernels without Numba's on-disk cache.
GATECORE_DISABLE_PLUGIN_AUTOLOAD
    Set to ``1`` to skip third-party entry points of group ``gatecore``; the built-in
    cells still register.
GATECORE_OVERLAP
    Set to ``0`` to keep every call on the calling thread (no input products on a second
    core, no packed products shared with a second thread; read at each call by
    :func:`gatecore.overlap.enabled`, which also says no when OMP_NUM_THREADS,
    OPENBLAS_NUM_THREADS, MKL_NUM_THREADS or NUMBA_NUM_THREADS is ``1``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["cache_dir", "use_disk_cache", "plugin_autoload", "FASTMATH"]

#: fastmath stays off: it lets LLVM assume no NaN/inf, which would break NaN propagation.
#: (The CPU kernels that run the rules allow fused multiply-adds alone, "contract": see
#: RULE_MATH in gatecore/kernels/cpu_kernels.py.in.)
FASTMATH = False


def cache_dir() -> Path:
    """Return the writable folder for generated kernel modules, creating it if needed."""
    env = os.environ.get("GATECORE_CACHE_DIR")
    if env:
        base = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "gatecore"
    for candidate in (base, Path(tempfile.gettempdir()) / f"gatecore-{os.getuid()}"):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            probe = candidate / ".write-probe"
            probe.write_text("")
            probe.unlink()
            return candidate
        except OSError:
            continue
    raise OSError("gatecore: no writable cache folder (set GATECORE_CACHE_DIR)")


def use_disk_cache() -> bool:
    """Whether kernels are compiled with Numba's on-disk cache."""
    return os.environ.get("GATECORE_NO_CACHE", "") not in ("1", "true", "yes")


def plugin_autoload() -> bool:
    """Whether third-party entry points of group ``gatecore`` are loaded."""
    return os.environ.get("GATECORE_DISABLE_PLUGIN_AUTOLOAD", "") not in ("1", "true", "yes")
