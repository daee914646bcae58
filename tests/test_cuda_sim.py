"""CUDA backend tests.

* Under the Numba CUDA simulator: ``cuda_sim_cases.py`` runs in a subprocess with
  ``NUMBA_ENABLE_CUDASIM=1`` (the variable must be set before ``numba.cuda`` is imported,
  so it cannot be set from inside this process without affecting the rest of the suite).
  Small GEMM tiles and blocks (``GATECORE_CUDA_TILE=2``) keep the simulator fast and still
  exercise partial and multiple tiles; one case also runs with the default tile of 16.
* Without a GPU: CUDA code imports, and a GPU call raises a clear error.
* With a real GPU (skipped otherwise): the same cases on the device.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CASES = HERE / "cuda_sim_cases.py"


def _run_cases(extra_env: dict, *args: str, timeout: int = 600) -> None:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", **extra_env}
    cmd = [sys.executable, "-m", "pytest", str(CASES), "-q", "-p", "no:cacheprovider", *args]
    proc = subprocess.run(cmd, cwd=HERE.parent, env=env, capture_output=True, text=True,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    print(out[-3000:])
    assert proc.returncode == 0, f"simulator cases failed:\n{out[-8000:]}"


def test_simulator_every_kernel_small_tiles():
    _run_cases({"GATECORE_CUDA_TILE": "2", "GATECORE_CUDA_THREADS": "8"})


def test_simulator_default_tile():
    _run_cases({}, "-k", "zero_length and lstm and not peephole")


def _gpu_available() -> bool:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False
    from numba import cuda

    return cuda.is_available()


@pytest.mark.skipif(_gpu_available(), reason="a GPU is present")
def test_no_gpu_clear_error():
    import gatecore.cuda_network  # noqa: F401 - CUDA code always imports
    import gatecore.kernels.cuda_factory  # noqa: F401

    p = gatecore.init_params("lstm", 3, 2, seed=0)
    with pytest.raises(gatecore.CudaUnavailableError, match="no usable CUDA GPU"):
        gatecore.Workspace(device="cuda")
    with pytest.raises(gatecore.CudaUnavailableError):
        gatecore.to_device(p)
    assert issubclass(gatecore.CudaUnavailableError, RuntimeError)


@pytest.mark.skipif(not _gpu_available(), reason="needs a CUDA GPU")
def test_gpu_every_kernel():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    cmd = [sys.executable, "-m", "pytest", str(CASES), "-q", "-p", "no:cacheprovider"]
    proc = subprocess.run(cmd, cwd=HERE.parent, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-8000:]
