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


def test_first_call_defers_scipy_and_blas_kernels_still_work():
    """With the kernels cached, a fresh process's first call does not import scipy.linalg
    (Numba's BLAS check at the import of its registries is deferred: _blas_check_deferred);
    a kernel that calls BLAS (np.dot inside forward_dir: float64, mid-size steps) then still
    compiles or loads, runs, and matches NumPy; Numba's own ensure_blas is back in place."""
    code = (
        "import sys, numpy as np, gatecore\n"
        "p = gatecore.init_params('lstm', 5, 6, seed=0)\n"
        "gatecore.lstm(np.zeros((3, 2, 5), np.float32), p)\n"
        "first = 'scipy.linalg' in sys.modules\n"
        "q = gatecore.init_params('lstm', 32, 128, seed=0, dtype=np.float64)\n"
        "x = np.random.default_rng(0).standard_normal((3, 16, 32))\n"
        "y = gatecore.lstm(x, q)[0]\n"
        "h = np.zeros((16, 128)); c = np.zeros((16, 128))\n"
        "s = lambda v: 1 / (1 + np.exp(-v))\n"
        "for t in range(3):\n"
        "    a = x[t] @ q['weight_ih_l0'].T + q['bias_ih_l0'] + h @ q['weight_hh_l0'].T"
        " + q['bias_hh_l0']\n"
        "    i, f, g, o = np.split(a, 4, axis=1)\n"
        "    c = s(f) * c + s(i) * np.tanh(g); h = s(o) * np.tanh(c)\n"
        "    assert np.allclose(y[t], h, rtol=1e-10, atol=1e-12), t\n"
        "import numba.np.linalg as nl, numba.np.arraymath as am\n"
        "assert am.ensure_blas is nl.ensure_blas and nl.ensure_blas.__module__ == 'numba.np.linalg'\n"
        "print(first)\n")
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            for _ in range(2)]  # (the second with every kernel cached)
    for out in outs:
        assert out.returncode == 0, out.stderr
    assert outs[1].stdout.split()[-1] == "False"


def test_numbas_blas_check_runs_before_a_cached_blas_kernel():
    """Numba's check of SciPy's BLAS (integer width included) is deferred at set-up, not
    dropped: a call whose kernels run np.dot runs it first (gatecore._numba.blas_checked),
    even when those kernels come from the cache and are never compiled in the process; a
    call on the kernels' own products does not need it."""
    code = (
        "import sys, numpy as np, gatecore\n"
        "if sys.argv[1] == 'patch':\n"
        "    import numba.np.linalg as nl\n"
        "    def refuse():\n"
        "        raise RuntimeError('BLAS integer width differs')\n"
        "    nl._check_lapack_int_width = refuse\n"
        "p = gatecore.init_params('lstm', 5, 6, seed=0)\n"
        "gatecore.lstm(np.zeros((3, 2, 5), np.float32), p)\n"
        "print('own products ran')\n"
        "q = gatecore.init_params('lstm', 32, 128, seed=0, dtype=np.float64)\n"
        "gatecore.lstm(np.zeros((3, 16, 32)), q)\n"
        "print('blas ran')\n")
    fill = subprocess.run([sys.executable, "-c", code, "fill"], capture_output=True, text=True)
    assert fill.returncode == 0, fill.stderr
    out = subprocess.run([sys.executable, "-c", code, "patch"], capture_output=True, text=True)
    assert out.returncode != 0 and "BLAS integer width differs" in out.stderr, out.stderr
    assert "own products ran" in out.stdout and "blas ran" not in out.stdout
