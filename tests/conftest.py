import contextlib
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


PRODUCT_PATHS = ("own", "overlap", "blas", "numpy")


@contextlib.contextmanager
def products_path(path):
    """Force every call inside onto one product path of gatecore.network:

    own      the kernels' own per-step products (small steps; the default at test sizes)
    overlap  the same, with each layer's input product on the worker thread, in chunks
             (gatecore.overlap), whatever the size and the CPU count
    blas     BLAS per step inside the kernels (Numba's np.dot)
    numpy    NumPy's BLAS per step between one-step kernel calls (one-stage cells without
             projection; the others fall back to blas)
    team     float32 one-stage cells without projection, inference and training: packed
             products on two threads (gatecore.kernels.packed); the rest (float64, other
             cells) falls back to blas
    items    own products, float32 inference from 4 items (packed own products): each
             layer's forward as two halves of the batch on two threads (forward_items);
             the rest as own
    iteam    as items, but float32 one-stage cells without projection from 2 items take
             the halves of the batch on a team (forward_item_team, after the input product
             split by columns; training: the team, whose forward runs so too); the rest
             as items
    """
    from gatecore import network, overlap

    saved = (network.OWN_PRODUCT_MACS, network.EXT_PRODUCT_MACS, network.OVERLAP_MACS,
             network.TEAM_MACS, network.TEAM_ONE_MACS, network.ITEM_MACS,
             network.ITEM_MIN_BATCH, network.ITEM_TEAM_MIN_BATCH)
    saved_enabled, saved_pays = overlap.enabled, network.overlap_pays
    network.TEAM_MACS = network.TEAM_ONE_MACS = 1 << 62
    network.ITEM_MACS = 1 << 62
    network.ITEM_TEAM_MIN_BATCH = 1 << 62
    if path in ("items", "iteam"):
        network.ITEM_MACS = 0
        network.ITEM_MIN_BATCH = 4
        overlap.enabled = lambda: True
    if path == "iteam":
        network.ITEM_TEAM_MIN_BATCH = 2
        network.TEAM_MACS = 0  # (2 and 3 items: a team's, packed_own needs 4)
    if path == "overlap":
        network.OVERLAP_MACS = 0
        overlap.enabled = lambda: True
        network.overlap_pays = lambda *a: True
    else:
        network.OVERLAP_MACS = 1 << 62
    if path in ("blas", "numpy", "team"):
        network.OWN_PRODUCT_MACS = 0
        network.EXT_PRODUCT_MACS = 0 if path == "numpy" else 1 << 62
    if path == "team":
        network.TEAM_MACS = 0
        overlap.enabled = lambda: True
    try:
        yield
    finally:
        (network.OWN_PRODUCT_MACS, network.EXT_PRODUCT_MACS, network.OVERLAP_MACS,
         network.TEAM_MACS, network.TEAM_ONE_MACS, network.ITEM_MACS, network.ITEM_MIN_BATCH,
         network.ITEM_TEAM_MIN_BATCH) = saved
        overlap.enabled = saved_enabled
        network.overlap_pays = saved_pays
