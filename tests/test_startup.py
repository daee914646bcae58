"""Start-up helpers: the garbage collector is held off only during gatecore's one-time work."""

import gc
import subprocess
import sys

import pytest

from gatecore._numba import gc_paused


@pytest.mark.parametrize("enabled", [True, False])
def test_import_leaves_the_collector_as_it_was(enabled):
    code = ("import gc\n"
            f"{'gc.enable()' if enabled else 'gc.disable()'}\n"
            "import gatecore, numpy as np\n"
            "assert gc.isenabled() is " + repr(enabled) + ", 'after import'\n"
            "p = gatecore.init_params('gru', 3, 4, seed=0)\n"
            "gatecore.gru(np.zeros((2, 1, 3), np.float32), p)\n"
            "assert gc.isenabled() is " + repr(enabled) + ", 'after the first call'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_gc_paused_nests_and_restores_on_error():
    was = gc.isenabled()
    gc.enable()
    try:
        _nesting_and_errors()
    finally:
        if not was:
            gc.disable()


def _nesting_and_errors():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block found it off and left it off
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        with gc_paused():
            raise RuntimeError("inside")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a collector the caller had off stays off
    finally:
        gc.enable()
