"""Import and first-call (compile) time, each sample in a fresh process (``timeraw_``).

``cache="warm"``: Numba's on-disk cache was filled by an earlier process (the cold start a
user sees on every run after the first); ``cache="empty"``: a fresh ``GATECORE_CACHE_DIR``
and ``NUMBA_CACHE_DIR`` (Numba's cache of gatecore's own modules, the packed products), so
every kernel compiles (the first run after installing or upgrading).
"""

from __future__ import annotations

import tempfile

from .common import CELLS, FULL

# one line, no backslashes: asv pastes these sources into a triple-quoted string
_FILL = ("import numpy as np, gatecore; p = gatecore.init_params({cell!r}, 64, 64, seed=0); "
         "x = np.zeros((100, 8, 64), np.float32); "
         "y, s, tape = gatecore.forward({cell!r}, x, p, training={train}){bwd}")


def _setup(cache: str, cell: str, train: bool) -> str:
    if cache == "empty":
        return ("import atexit, os, shutil, tempfile\n"
                "d = tempfile.mkdtemp(prefix='gatecore-asv-cold-')\n"
                "atexit.register(shutil.rmtree, d, True)\n"
                "os.environ['GATECORE_CACHE_DIR'] = d\n"
                "os.environ['NUMBA_CACHE_DIR'] = os.path.join(d, 'numba')\n")
    warm_dir = f"{tempfile.gettempdir()}/gatecore-asv-warm"
    return ("import os, subprocess, sys\n"
            f"os.environ['GATECORE_CACHE_DIR'] = {warm_dir!r}\n"
            f"os.environ['NUMBA_CACHE_DIR'] = {warm_dir + '/numba'!r}\n"
            f"subprocess.run([sys.executable, '-c', {_code(cell, train)!r}], check=True)\n")


def _code(cell: str, train: bool) -> str:
    return _FILL.format(cell=cell, train=train,
                        bwd="; gatecore.backward(tape, np.ones_like(y))" if train else "")


def timeraw_import():
    """``import gatecore`` alone (numba, numpy, scipy, pluggy and the registry)."""
    return "import gatecore"


class FirstCall:
    """import + first forward (inference) or first forward+backward, small shape."""

    params = (CELLS if FULL else ["lstm"], ["inference", "training"], ["warm", "empty"])
    param_names = ["cell", "pass", "cache"]
    timeout = 900
    repeat = (1, 3, 120.0)

    def timeraw_first_call(self, cell, what, cache):
        train = what == "training"
        return _code(cell, train), _setup(cache, cell, train)
