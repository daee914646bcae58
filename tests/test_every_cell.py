"""Every registered cell, built-in or plugin, passes the conformance check (gatecore.testing).

Parametrized over the registry at collection time, so a newly installed plugin cell is
checked without touching this file; a boolean cell option is checked in both settings.
"""

from __future__ import annotations

import pytest

from gatecore.registry.manager import get_registry
from gatecore.testing import check_cell


def _cases():
    cases = []
    for name, entry in sorted(get_registry().cells().items()):
        cases.append(pytest.param(name, {}, id=name))
        for option, default in entry.spec.option_defaults.items():
            if isinstance(default, bool):
                cases.append(pytest.param(name, {option: not default},
                                          id=f"{name}-{option}={not default}"))
    return cases


@pytest.mark.parametrize("name, options", _cases())
def test_cell_passes_conformance_check(name, options):
    report = check_cell(name, **options)
    assert report.passed, "\n" + str(report)
    assert [c.name for c in report.checks] == [
        "spec", "compile", "shapes and dtypes", "gradients", "lengths and padding",
        "bidirectional", "two layers", "workspace"]


def test_builtins_and_plugins_are_covered():
    names = {p.values[0] for p in _cases()}
    assert {"lstm", "gru"} <= names


@pytest.mark.parametrize("name", sorted(get_registry().cells()))
def test_overlapped_input_product_gives_the_same_results(name):
    """The overlap path (input product on the worker thread, in chunks, gatecore.overlap)
    gives what the serial path gives, for every cell: both directions, two layers, lengths."""
    import numpy as np

    import gatecore
    from conftest import products_path

    rng = np.random.default_rng(7)
    p = gatecore.init_params(name, 3, 5, num_layers=2, bidirectional=True, dtype=np.float64,
                             seed=3)
    x = rng.standard_normal((6, 3, 3))
    dy = rng.standard_normal((6, 3, 10))
    out = {}
    for path in ("own", "overlap"):
        with products_path(path):
            y_inf = gatecore.forward(name, x, p, lengths=[6, 3, 0], training=False)[0].copy()
            y, s_n, tape = gatecore.forward(name, x, p, lengths=[6, 3, 0])
            dx, ds0, dp = gatecore.backward(tape, dy)
            out[path] = [y_inf, y.copy(), dx.copy(), *(s.copy() for s in s_n),
                         *(s.copy() for s in ds0), *(dp[k].copy() for k in sorted(dp))]
    for a, b in zip(out["own"], out["overlap"]):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", sorted(get_registry().cells()))
def test_prepared_params_give_the_same_results(name):
    """gatecore.prepare: same outputs and gradients, bitwise, as the plain mapping."""
    import numpy as np

    import gatecore

    rng = np.random.default_rng(11)
    p = gatecore.init_params(name, 3, 5, num_layers=2, bidirectional=True, seed=5)
    prepared = gatecore.prepare(p)
    x = rng.standard_normal((6, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((6, 3, 10)).astype(np.float32)
    out = []
    for params in (p, prepared):
        y_inf = gatecore.forward(name, x, params, lengths=[6, 3, 0], training=False)[0].copy()
        y, s_n, tape = gatecore.forward(name, x, params, lengths=[6, 3, 0])
        dx, ds0, dp = gatecore.backward(tape, dy)
        out.append([y_inf, y.copy(), dx.copy(), *(s.copy() for s in s_n),
                    *(s.copy() for s in ds0), *(dp[k].copy() for k in sorted(dp))])
    assert sorted(dp) == sorted(p)
    for a, b in zip(*out):
        np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize("name", sorted(get_registry().cells()))
def test_team_path_gives_the_same_results(name):
    """The team path (float32: each step's units split between two threads, packed products,
    the cell's rule in place over each half's rows; gatecore.kernels.cpu_kernels.py.in)
    matches the serial path for every cell: two layers, both directions, lengths with a 0,
    one batch item and several (packed products), a hidden size whose second half
    is not whole panels (37) and one with an empty second half (5); with AVX-512, hidden
    sizes whose weight gradients run through pgemm_tn directly (32: dW_hh) or transposed
    (32: dW_ih [4H, 4]; 48: LSTM's dW_hh [192, 48]), and through NumPy's OpenBLAS instead
    (network.TN_WEIGHT_GRADS: Zen 4's default), whichever this CPU's default is. Cells the
    team path does not take (two-stage, projection) run their usual path under all."""
    import numpy as np

    import gatecore
    from conftest import products_path
    from gatecore import network
    from gatecore.kernels import packed as kp

    for H, B in ((37, 3), (37, 1), (5, 2), (32, 3), (48, 2)):
        rng = np.random.default_rng(11)
        p = gatecore.init_params(name, 4, H, num_layers=2, bidirectional=True,
                                 dtype=np.float32, seed=5)
        x = rng.standard_normal((7, B, 4)).astype(np.float32)
        dy = rng.standard_normal((7, B, 2 * H)).astype(np.float32)
        lengths = [7, 4, 0][:B] if B > 1 else [5]
        out = {}
        paths = ["own", "team"] + (["team, other dW"] if kp.WIDE and H in (32, 48) else [])
        for path in paths:
            saved = network.TN_WEIGHT_GRADS
            if path == "team, other dW":
                network.TN_WEIGHT_GRADS = not saved
            try:
                with products_path(path.split(",")[0]):
                    q = gatecore.prepare(p)
                    y_inf = gatecore.forward(name, x, q, lengths=lengths,
                                             training=False)[0].copy()
                    y, s_n, tape = gatecore.forward(name, x, p, lengths=lengths)
                    dx, ds0, dp = gatecore.backward(tape, dy)
            finally:
                network.TN_WEIGHT_GRADS = saved
            out[path] = [y_inf, y.copy(), dx.copy(), *(s.copy() for s in s_n),
                         *(s.copy() for s in ds0), *(dp[k].copy() for k in sorted(dp))]
        for path in paths[1:]:
            for a, b in zip(out["own"], out[path]):
                np.testing.assert_allclose(b, a, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name,proj", [(n, 0) for n in sorted(get_registry().cells())]
                         + [("lstm", 3), ("peephole_lstm", 3)])
def test_packed_own_products_give_the_same_results(name, proj):
    """The kernels' own per-step products over packed weights (float32, batches of
    network.PACKED_OWN_MIN_BATCH and more: forward's recurrent, stage-2 and projection
    products, backward's products by dah and dhr, and the overlapped input product on the
    worker) match _mm/_mmd on transposed copies: every cell, two layers, both directions,
    lengths with a 0, batch sizes 4 (two blocks of 4 rows: no 6-row block), 8 (4 + 4) and 13
    (6 + 6 + 1), a hidden size that is not whole panels (37), with and without projection
    (LSTM, peephole LSTM), prepared and plain parameters. Also: a tape keeps the choice
    (backward after the threshold changed), and one batch item never runs packed."""
    import numpy as np

    import gatecore
    from gatecore import network, overlap

    for B in (4, 8, 13):
        rng = np.random.default_rng(B)
        p = gatecore.init_params(name, 5, 37, num_layers=2, bidirectional=True,
                                 proj_size=proj, dtype=np.float32, seed=7)
        Hr = proj or 37
        x = rng.standard_normal((6, B, 5)).astype(np.float32)
        dy = rng.standard_normal((6, B, 2 * Hr)).astype(np.float32)
        lengths = rng.integers(0, 7, B)
        lengths[0] = 0
        out = {}
        saved = (network.PACKED_OWN_MIN_BATCH, network.OVERLAP_MACS, network.overlap_pays,
                 overlap.enabled)
        try:
            for packed in (False, True):
                network.PACKED_OWN_MIN_BATCH = 4 if packed else 1 << 30
                network.OVERLAP_MACS = 1 << 62
                q = gatecore.prepare(p)
                y_inf = gatecore.forward(name, x, q, lengths=lengths, training=False)[0].copy()
                network.OVERLAP_MACS = 0  # the input product in chunks on the worker
                network.overlap_pays = lambda *a: True
                overlap.enabled = lambda: True
                y_pipe = gatecore.forward(name, x, p, training=False)[0].copy()
                network.OVERLAP_MACS = 1 << 62
                y, s_n, tape = gatecore.forward(name, x, p, lengths=lengths)
                dx, ds0, dp = gatecore.backward(tape, dy)
                out[packed] = [y_inf, y_pipe, y.copy(), dx.copy(), *(s.copy() for s in s_n),
                               *(s.copy() for s in ds0), *(dp[k].copy() for k in sorted(dp))]
        finally:
            (network.PACKED_OWN_MIN_BATCH, network.OVERLAP_MACS, network.overlap_pays,
             overlap.enabled) = saved
        for a, b in zip(out[False], out[True]):
            np.testing.assert_allclose(b, a, rtol=2e-5, atol=2e-5)
        # forward packed, backward after the threshold changed: the tape says packed
        y, _, tape = gatecore.forward(name, x, p, lengths=lengths, workspace=gatecore.Workspace())
        try:
            network.PACKED_OWN_MIN_BATCH = 1 << 30
            dx = gatecore.backward(tape, dy)[0]
        finally:
            network.PACKED_OWN_MIN_BATCH = saved[0]
        np.testing.assert_allclose(dx, out[True][3], rtol=2e-5, atol=2e-5)
    # one item with any threshold: forward and backward agree with the default
    p1 = gatecore.init_params(name, 5, 24, proj_size=proj, dtype=np.float32, seed=1)
    x1 = np.random.default_rng(1).standard_normal((7, 1, 5)).astype(np.float32)
    dy1 = np.ones((7, 1, proj or 24), np.float32)
    res = []
    for threshold in (saved[0], 1):
        try:
            network.PACKED_OWN_MIN_BATCH = threshold
            y, _, tape = gatecore.forward(name, x1, p1, workspace=gatecore.Workspace())
            res.append((y.copy(), gatecore.backward(tape, dy1)[0].copy()))
        finally:
            network.PACKED_OWN_MIN_BATCH = saved[0]
    for a, b in zip(*res):
        assert np.all(np.isfinite(b))
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
