"""CUDA backend against the CPU engine, on tiny shapes; run by test_cuda_sim.py.

This module is not collected by a plain ``pytest`` run (no ``test_`` prefix): it must run
in a process where ``NUMBA_ENABLE_CUDASIM=1`` was set before ``numba.cuda`` was imported
(or on a real GPU). test_cuda_sim.py starts such a process. Every cell in the registry,
plugins included, and every boolean cell option are covered, forward and backward, with
variable lengths, two layers and both directions.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

import gatecore
from gatecore.cuda_network import CudaTape, DeviceParams

TOL = {np.float64: 1e-10, np.float32: 2e-5}


def _variants():
    out = []
    for name in sorted(gatecore.list_cells()):
        spec = gatecore.get_cell(name)
        out.append(pytest.param(name, {}, id=name))
        for opt, default in spec.option_defaults.items():
            if isinstance(default, bool):
                out.append(pytest.param(name, {opt: not default}, id=f"{name}-{opt}={not default}"))
    return out


def host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def close(actual, expected, dtype, what):
    actual, expected = host(actual).astype(np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    tol = TOL[dtype]
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=what)


def run_both(cell, opts, *, T, B, I, H, L, D, lengths, dtype=np.float64, proj=0,
             batch_first=False, unbatched=False, seed=0, device_params=False, dropout=0.0):
    """Forward + backward on the CPU engine and on the device; compare everything."""
    rng = np.random.default_rng(seed)
    spec = gatecore.get_cell(cell).with_options(**opts)
    p = gatecore.init_params(cell, I, H, num_layers=L, bidirectional=D == 2, proj_size=proj,
                             dtype=dtype, seed=seed, **opts)
    Hr = proj or H
    if unbatched:
        xshape, yshape = (T, I), (T, D * Hr)
    elif batch_first:
        xshape, yshape = (B, T, I), (B, T, D * Hr)
    else:
        xshape, yshape = (T, B, I), (T, B, D * Hr)
    x = rng.standard_normal(xshape).astype(dtype)
    lead = (L * D,) if unbatched else (L * D, B)
    state0 = tuple(rng.standard_normal(lead + ((Hr if s == 0 else H),)).astype(dtype) * 0.5
                   for s in range(spec.num_states))
    dy = rng.standard_normal(yshape).astype(dtype)
    dsn = tuple(rng.standard_normal(s.shape).astype(dtype) for s in state0)
    kw = dict(lengths=lengths, batch_first=batch_first, **opts)

    y, sn, tape = gatecore.forward(cell, x, p, state0, dropout=dropout, rng=11, **kw)
    y, sn = y.copy(), [s.copy() for s in sn]
    dx, ds0, dp = gatecore.backward(tape, dy, dsn)
    dx, ds0, dp = dx.copy(), [s.copy() for s in ds0], {k: v.copy() for k, v in dp.items()}

    pd = gatecore.to_device(p) if device_params else p
    xd = cuda.to_device(x)
    state0_d = tuple(cuda.to_device(s) for s in state0)
    yd, snd, taped = gatecore.forward(cell, xd, pd, state0_d, dropout=dropout, rng=11, **kw)
    assert isinstance(taped, CudaTape)
    close(yd, y, dtype, "y")
    for s, (a, b) in enumerate(zip(snd, sn)):
        close(a, b, dtype, f"state_n[{s}]")
    dxd, ds0d, dpd = gatecore.backward(taped, cuda.to_device(dy), tuple(cuda.to_device(s) for s in dsn))
    close(dxd, dx, dtype, "dx")
    for s, (a, b) in enumerate(zip(ds0d, ds0)):
        close(a, b, dtype, f"dstate0[{s}]")
    assert set(dpd) == set(dp)
    for key in dp:
        close(dpd[key], dp[key], dtype, f"dparams[{key}]")
    return yd


@pytest.mark.parametrize("cell, opts", _variants())
def test_every_cell_matches_cpu(cell, opts):
    """Two layers, both directions, variable lengths (one padded), float64."""
    run_both(cell, opts, T=2, B=2, I=3, H=2, L=2, D=2, lengths=np.array([1, 2]))


@pytest.mark.parametrize("cell, opts", _variants())
def test_every_cell_float32_zero_length(cell, opts):
    """float32, a length-0 sequence (h_n = h0, dh0 = dh_n), parameters on the device."""
    run_both(cell, opts, T=2, B=2, I=2, H=3, L=1, D=1, lengths=np.array([2, 0]),
             dtype=np.float32, device_params=True)


@pytest.mark.parametrize("cell, opts, proj", [("gru", {"reset_after": False}, 0),
                                              ("lstm", {}, 2)])
def test_length_zero_with_nan_states(cell, opts, proj):
    """An item without a step: NaN initial states reach no weight gradient (as on the CPU);
    two layers, both directions."""
    T, B, I, H = 3, 3, 2, 3
    rng = np.random.default_rng(5)
    p = gatecore.init_params(cell, I, H, num_layers=2, bidirectional=True, proj_size=proj,
                             dtype=np.float64, seed=5, **opts)
    Hr = proj or H
    x = rng.standard_normal((T, B, I))
    s0 = [rng.standard_normal((4, B, Hr))] + ([rng.standard_normal((4, B, H))]
                                               if cell == "lstm" else [])
    for a in s0:
        a[:, 1] = np.nan
    dy = rng.standard_normal((T, B, 2 * Hr))
    lengths = np.array([3, 0, 2])
    _, _, tape = gatecore.forward(cell, x, p, tuple(s0), lengths=lengths, **opts)
    dx, _, dp = gatecore.backward(tape, dy)
    dx, dp = dx.copy(), {k: v.copy() for k, v in dp.items()}
    assert all(np.all(np.isfinite(v)) for v in dp.values())
    _, _, taped = gatecore.forward(cell, cuda.to_device(x), p,
                                   tuple(cuda.to_device(a) for a in s0), lengths=lengths, **opts)
    dxd, _, dpd = gatecore.backward(taped, cuda.to_device(dy))
    close(dxd, dx, np.float64, "dx")
    for k in dp:
        close(dpd[k], dp[k], np.float64, f"dparams[{k}]")


def test_lstm_projection_layers():
    run_both("lstm", {}, T=3, B=2, I=2, H=3, L=2, D=1, proj=2, lengths=np.array([3, 2]))


@pytest.mark.parametrize("layout", ["batch_first", "unbatched"])
def test_layouts(layout):
    run_both("gru", {}, T=3, B=2, I=2, H=2, L=1, D=2, lengths=None,
             batch_first=layout == "batch_first", unbatched=layout == "unbatched")


def test_inference_and_host_inputs():
    """training=False keeps no tape; host x with a CUDA workspace runs on the device."""
    p = gatecore.init_params("lstm", 3, 2, num_layers=2, dtype=np.float64, seed=3)
    x = np.random.default_rng(3).standard_normal((4, 2, 3))
    lens = np.array([4, 2])
    y, (h, c) = gatecore.lstm(x, p, lengths=lens)
    ws = gatecore.Workspace(max_seq_len=4, max_batch=2, device="cuda")
    yd, (hd, cd) = gatecore.lstm(x, p, lengths=lens, workspace=ws)
    assert cuda.devicearray.is_cuda_ndarray(yd)
    close(yd, y, np.float64, "y")
    close(hd, h, np.float64, "h_n")
    close(cd, c, np.float64, "c_n")
    _, _, tape = gatecore.forward("lstm", cuda.to_device(x), p, training=False)
    assert tape is None


def test_workspace_steady_state_and_stale_tape():
    """A second call of the same size allocates nothing; a reused tape is refused."""
    pd = gatecore.to_device(gatecore.init_params("gru", 2, 2, dtype=np.float64, seed=1))
    assert isinstance(pd, DeviceParams) and gatecore.to_device(pd) is pd
    ws = gatecore.Workspace(device="cuda")
    x = cuda.to_device(np.ones((2, 2, 2)))
    _, _, tape = gatecore.forward("gru", x, pd, workspace=ws)
    gatecore.backward(tape, np.ones((2, 2, 2)))
    buffers = dict(ws._buffers)
    _, _, tape2 = gatecore.forward("gru", x, pd, workspace=ws)
    with pytest.raises(gatecore.StaleTapeError):
        gatecore.backward(tape, np.ones((2, 2, 2)))
    gatecore.backward(tape2, np.ones((2, 2, 2)))
    assert set(ws._buffers) == set(buffers)
    assert all(ws._buffers[k] is buffers[k] for k in buffers)


def test_bad_device_input():
    p = gatecore.init_params("lstm", 3, 2, dtype=np.float64, seed=0)
    with pytest.raises(gatecore.DTypeError, match="x is a CUDA array of dtype float32"):
        gatecore.forward("lstm", cuda.to_device(np.ones((2, 1, 3), np.float32)), p)
    with pytest.raises(gatecore.ShapeError, match="input_size"):
        gatecore.forward("lstm", cuda.to_device(np.ones((2, 1, 4))), p)
    with pytest.raises(ValueError, match="CPU workspace"):
        gatecore.forward("lstm", cuda.to_device(np.ones((2, 1, 3))), p,
                         workspace=gatecore.Workspace())


def test_rejected_call_leaves_earlier_tape_usable():
    """Inputs are checked before the workspace is touched (as on the CPU): a call refused for
    a wrong h0 or dy leaves the earlier tape of the workspace usable."""
    p = gatecore.init_params("lstm", 2, 3, dtype=np.float64, seed=1)
    x = np.random.default_rng(0).standard_normal((3, 2, 2))
    ws = gatecore.Workspace(device="cuda")
    _, _, tape = gatecore.forward("lstm", x, p, workspace=ws)
    with pytest.raises(gatecore.ShapeError, match=r"num_layers\*num_directions, batch, hidden_size"):
        gatecore.forward("lstm", x, p, (np.zeros((1, 2, 4)), None), workspace=ws)
    with pytest.raises(gatecore.DTypeError):
        gatecore.forward("lstm", x.astype(np.float32), p, workspace=ws)
    with pytest.raises(gatecore.ShapeError, match="h0 must have shape"):  # shape before dtype
        gatecore.forward("lstm", x, p, (np.float32(0.0), None), workspace=ws)
    with pytest.raises(gatecore.ShapeError, match="dy"):
        gatecore.backward(tape, np.ones((3, 2, 4)))
    dx, _, _ = gatecore.backward(tape, np.ones((3, 2, 3)))
    assert host(dx).shape == (3, 2, 2)


def test_tape_keeps_its_own_copy_of_device_parameters():
    """The caller's device arrays (DeviceParams of CUDA arrays: zero-copy) changed in place
    between forward and backward (an optimizer step taken early) do not change that
    backward's gradients (as on the CPU: a training call copies the parameters)."""
    p = gatecore.init_params("lstm", 2, 3, dtype=np.float64, seed=1)
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((3, 2, 2)), rng.standard_normal((3, 2, 3))
    _, _, tape = gatecore.forward("lstm", x, p)
    ref = gatecore.backward(tape, dy)
    mine = {k: cuda.to_device(v) for k, v in p.items()}
    _, _, tape = gatecore.forward("lstm", x, gatecore.to_device(mine))
    for a in mine.values():  # in place, in the caller's memory
        a.copy_to_device(host(a) * 1.5 + 0.25)
    dx, ds0, dp = gatecore.backward(tape, dy)
    close(dx, ref[0], np.float64, "dx")
    for k in ref[2]:
        close(dp[k], ref[2][k], np.float64, k)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_dropout_between_layers_matches_cpu(cell):
    """Dropout between layers: the same rng gives the same masks on the host for both
    backends (three layers, both directions, lengths, batch_first)."""
    run_both(cell, {}, T=4, B=3, I=3, H=4, L=3, D=2, lengths=[4, 0, 2], batch_first=True,
             dropout=0.35, seed=4)


def test_dropout_one_layer_warning_names_the_caller():
    p = gatecore.init_params("gru", 2, 3, dtype=np.float64, seed=0)
    with pytest.warns(UserWarning, match="num_layers greater than 1") as rec:
        gatecore.forward("gru", cuda.to_device(np.ones((2, 1, 2))), p, dropout=0.3)
    assert rec[0].filename == __file__
