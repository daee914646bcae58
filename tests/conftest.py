import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "gatecore", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True,
    derandomize=True,
)
settings.load_profile("ci" if os.environ.get("CI") else "gatecore")


def assert_close(actual, expected, dtype, what=""):
    """Entrywise closeness relative to the array's scale: 1e-10 (float64) or 1e-5 (float32)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    tol = 1e-10 if dtype == np.float64 else 1e-5
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=what)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
