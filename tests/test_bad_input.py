"""Every kind of bad input raises a clear ValueError/TypeError naming the argument."""

from __future__ import annotations

import numpy as np
import pytest

import gatecore
from gatecore.errors import DTypeError, ParameterError, ShapeError, StaleTapeError, UnknownCellError


@pytest.fixture
def p():
    return gatecore.init_params("lstm", 3, 4, num_layers=2, bidirectional=True, dtype=np.float32, seed=0)


@pytest.fixture
def x():
    return np.zeros((5, 2, 3), np.float32)


def raises(exc, match, fn, *a, **kw):
    with pytest.raises(exc, match=match):
        fn(*a, **kw)


def test_unknown_cell_lists_known(x, p):
    with pytest.raises(UnknownCellError, match=r"unknown cell 'lsmt'.*'gru'.*'lstm'"):
        gatecore.forward("lsmt", x, p)
    assert issubclass(UnknownCellError, ValueError)


def test_unknown_cell_option(x):
    pg = gatecore.init_params("gru", 3, 4)
    raises(TypeError, "unknown option.*reset_afterr.*reset_after", gatecore.forward, "gru", x, pg,
           reset_afterr=False)
    raises(TypeError, "takes no options", gatecore.forward, "lstm", x,
           gatecore.init_params("lstm", 3, 4), reset_after=False)


@pytest.mark.parametrize("shape,match", [
    ((5, 2), r"input_size 2"),
    ((5, 2, 4), r"x has input_size 4.*input_size=3"),
    ((5, 2, 3, 1), r"x must be 3-D"),
    ((3,), r"x must be 3-D"),
])
def test_x_shape(p, shape, match):
    raises(ShapeError, match, gatecore.forward, "lstm", np.zeros(shape, np.float32), p)


def test_x_dtype(p, x):
    raises(DTypeError, r"x has dtype float64 but the parameters are float32", gatecore.lstm, x.astype(np.float64), p)
    raises(DTypeError, r"x must be a real float", gatecore.lstm, x.astype(np.complex64), p)
    raises(DTypeError, r"x must be a real float", gatecore.lstm, np.array([[["a"]]]), p)


def test_state_shapes_and_dtypes(p, x):
    raises(ShapeError, r"h0 must have shape \[4, 2, 4\]", gatecore.lstm, x, p, np.zeros((2, 2, 4), np.float32))
    raises(ShapeError, r"c0 must have shape \[4, 2, 4\]", gatecore.lstm, x, p, None, np.zeros((4, 3, 4), np.float32))
    raises(DTypeError, r"h0 has dtype float64", gatecore.lstm, x, p, np.zeros((4, 2, 4)))
    raises(ValueError, r"state0 must be a tuple of 2 arrays", gatecore.forward, "lstm", x, p,
           (np.zeros((4, 2, 4), np.float32),))
    # a scalar (h0=0.0) is a shape error, not a dtype one
    raises(ShapeError, r"h0 must have shape \[4, 2, 4\].*got \[\]", gatecore.lstm, x, p, 0.0)
    raises(ShapeError, r"c0 must have shape", gatecore.lstm, x, p, None, [[0.0]])
    raises(ShapeError, r"x must be 3-D", gatecore.lstm, 0.0, p)
    y, _, tape = gatecore.forward("lstm", x, p)
    raises(ShapeError, r"dy must have the shape of y", gatecore.backward, tape, 1.0)
    raises(ShapeError, r"dstate_n\[0\] \(dh_n\) must have shape", gatecore.backward, tape,
           None, (0.0, None))
    raises(DTypeError, r"dy has dtype float64", gatecore.backward, tape, np.ones(y.shape))
    # states packed into one argument (h0=(h, c), gru(h0=(h,))): the message says so
    h = np.zeros((4, 2, 4), np.float32)
    raises(ShapeError, r"h0 must have shape .*got a tuple of 2 arrays of that shape: pass h0 "
           r"as one array", gatecore.lstm, x, p, (h, h))
    pg = gatecore.init_params("gru", 3, 4, num_layers=2, bidirectional=True, seed=0)
    raises(ShapeError, r"got a list of 1 array of that shape.*\('h',\)", gatecore.gru, x, pg, [h])
    # with proj_size h and c differ in width (NumPy cannot even stack them)
    pp = gatecore.init_params("lstm", 3, 4, proj_size=2, seed=0)
    hp, cp = np.zeros((1, 2, 2), np.float32), np.zeros((1, 2, 4), np.float32)
    raises(ShapeError, r"got a tuple of 2 arrays of that shape", gatecore.lstm, x, pp, (hp, cp))
    # a per-layer list that stacks to the right shape is fine; one a layer short is a plain
    # shape error (no hint about packed states)
    assert gatecore.gru(x, pg, [h[k] for k in range(4)])[0].shape == (5, 2, 8)
    with pytest.raises(ShapeError) as e:
        gatecore.gru(x, pg, [h[k] for k in range(3)])
    assert "of that shape" not in str(e.value)


@pytest.mark.parametrize("kw, exc", [
    (dict(max_seq_len=2.5), TypeError), (dict(max_batch="3"), TypeError),
    (dict(max_batch=True), TypeError), (dict(max_seq_len=-1), ValueError),
    (dict(max_batch=np.int64(-2)), ValueError),
])
def test_workspace_sizes(kw, exc):
    """A size that is no int is a TypeError (it was a ValueError), a negative one a ValueError;
    both name the argument."""
    raises(exc, f"{next(iter(kw))} must be a non-negative int or None", gatecore.Workspace, **kw)
    assert gatecore.Workspace(max_seq_len=np.int64(3), max_batch=2).max_seq_len == 3


def test_params_as_lists_are_float64_and_the_error_says_so(p, x):
    lists = {k: v.tolist() for k, v in p.items()}
    raises(DTypeError, r"x has dtype float32 but the parameters are float64 \(Python lists "
           r"and floats become float64", gatecore.lstm, x, lists)
    # and the other way round: a list x with float32 parameters (the hint was missing)
    raises(DTypeError, r"x has dtype float64 but the parameters are float32 \(Python lists "
           r"and floats become float64", gatecore.lstm, x.tolist(), p)
    y, _ = gatecore.lstm(x.astype(np.float64), lists)  # float64 throughout: fine
    np.testing.assert_allclose(y, gatecore.lstm(x, p)[0], atol=1e-6)


@pytest.mark.parametrize("lengths,exc,match", [
    ([5, 6], ValueError, r"lengths must lie in \[0, T=5\]"),
    ([-1, 2], ValueError, r"lengths must lie in \[0, T=5\]"),
    ([5], ShapeError, r"lengths must be 1-D with one entry per batch item \(2\)"),
    ([[5, 5]], ShapeError, r"lengths must be 1-D"),
    ([np.nan, 2], ValueError, r"lengths must be finite"),
    ([np.inf, 2], ValueError, r"lengths must be finite"),
    ([2.5, 2], ValueError, r"whole numbers"),
    ([True, False], DTypeError, r"lengths must hold integers"),
    (["a", "b"], DTypeError, r"lengths must hold integers"),
])
def test_lengths(p, x, lengths, exc, match):
    raises(exc, match, gatecore.lstm, x, p, lengths=lengths)


def test_params_errors(x, p):
    q = dict(p)
    del q["bias_hh_l1_reverse"]
    raises(ParameterError, r"missing key\(s\) \['bias_hh_l1_reverse'\]", gatecore.lstm, x, q)
    q = dict(p, weight_ih_l5=p["weight_ih_l0"])
    raises(ParameterError, r"missing key", gatecore.lstm, x, q)
    q = dict(p, foo_l0=p["bias_ih_l0"])
    raises(ParameterError, r"unknown key 'foo_l0'", gatecore.lstm, x, q)
    q = dict(p, weight_hh_l0=p["weight_hh_l0"][:, :3])
    raises(ParameterError, r"weight_hh_l0'\] is \[16, 3\], expected \[4\*hidden_size, hidden_size\]", gatecore.lstm, x, q)
    q = dict(p, weight_hh_l1=p["weight_hh_l1"][:, :3])
    raises(ParameterError, r"weight_hh_l1'\] must have shape \[16, 4\], got \[16, 3\]", gatecore.lstm, x, q)
    q = dict(p, weight_ih_l1=p["weight_ih_l1"][:, :4])
    raises(ParameterError, r"weight_ih_l1'\] must have shape \[16, 8\]", gatecore.lstm, x, q)
    q = dict(p, bias_ih_l0=p["bias_ih_l0"].astype(np.float64))
    raises(DTypeError, r"params mix dtypes", gatecore.lstm, x, q)
    q = {k: v.astype(np.float16) for k, v in p.items()}
    raises(DTypeError, r"float32 or float64", gatecore.lstm, x, q)
    raises(DTypeError, r"params must be a mapping", gatecore.lstm, x, [1, 2])
    raises(ParameterError, r"params is empty", gatecore.lstm, x, {})
    pg = gatecore.init_params("gru", 3, 4)
    raises(ParameterError, r"expected \[4\*hidden_size, hidden_size\].*3-gate cell", gatecore.lstm, x, pg)
    pg["weight_hr_l0"] = np.zeros((2, 4), np.float32)
    raises(ParameterError, r"does not support projection", gatecore.gru, x, pg)
    pp = gatecore.init_params("lstm", 3, 6, num_layers=2, proj_size=2, seed=0)
    pp["weight_hr_l0"] = np.zeros((3, 6), np.float32)  # (every other key says proj_size=2)
    raises(ParameterError, r"weight_hr_l0'\] is \[3, 6\] \(proj_size=3\) but "
           r"params\['weight_hh_l0'\] is \[24, 2\]", gatecore.lstm, x, pp)


def test_backward_errors(p, x):
    y, sn, tape = gatecore.forward("lstm", x, p)
    raises(ShapeError, r"dy must have the shape of y \[5, 2, 8\]", gatecore.backward, tape, np.zeros((5, 2, 4), np.float32))
    raises(DTypeError, r"dy has dtype float64", gatecore.backward, tape, np.zeros((5, 2, 8)))
    raises(ShapeError, r"dstate_n\[1\] \(dc_n\) must have shape", gatecore.backward, tape, None,
           (None, np.zeros((1, 2, 4), np.float32)))
    raises(TypeError, r"tape must be the Tape", gatecore.backward, "tape", None)
    _, _, none_tape = gatecore.forward("lstm", x, p, training=False)
    raises(TypeError, r"tape must be the Tape", gatecore.backward, none_tape, None)


def test_stale_tape_raises(p, x):
    ws = gatecore.Workspace()
    _, _, tape1 = gatecore.forward("lstm", x, p, workspace=ws)
    gatecore.backward(tape1, np.ones((5, 2, 8), np.float32))  # fine, and may be repeated
    gatecore.backward(tape1, np.ones((5, 2, 8), np.float32))
    _, _, tape2 = gatecore.forward("lstm", x, p, workspace=ws)
    raises(StaleTapeError, r"tape is stale", gatecore.backward, tape1, np.ones((5, 2, 8), np.float32))
    gatecore.backward(tape2, None)


def test_other_arguments(p, x):
    raises(TypeError, r"batch_first must be True or False", gatecore.lstm, x, p, batch_first="yes")
    raises(TypeError, r"workspace must be a gatecore.Workspace", gatecore.lstm, x, p, workspace={})
    raises(ValueError, r"max_seq_len must be", gatecore.Workspace, -1)
    raises(ValueError, r"hidden_size must be an int >= 1", gatecore.init_params, "lstm", 3, 0)
    raises(ValueError, r"proj_size must be smaller", gatecore.init_params, "lstm", 3, 4, proj_size=4)
    raises(ValueError, r"does not support proj_size", gatecore.init_params, "gru", 3, 4, proj_size=2)


def test_cuda_array_is_refused_clearly(p):
    class FakeCuda:
        __cuda_array_interface__ = {"shape": (5, 2, 3), "typestr": "<f4", "data": (0, False), "version": 3}

    with pytest.raises((TypeError, RuntimeError), match="CUDA"):
        gatecore.lstm(FakeCuda(), p)


def test_failed_call_leaves_the_workspace_and_its_tape_intact(p):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    dy = rng.standard_normal((5, 2, 8)).astype(np.float32)
    _, _, ref_tape = gatecore.forward("lstm", x, p)
    ref = {k: v.copy() for k, v in gatecore.backward(ref_tape, dy)[2].items()}
    ws = gatecore.Workspace()
    _, _, tape = gatecore.forward("lstm", x, p, workspace=ws)
    for bad_x, bad_h0 in ((x * 10, np.zeros((9, 9, 9), np.float32)),
                          (np.zeros((7, 3, 3), np.float32), np.zeros((1, 1, 1), np.float32))):
        with pytest.raises(ShapeError):
            gatecore.forward("lstm", bad_x, p, (bad_h0, None), workspace=ws)
    dp = gatecore.backward(tape, dy)[2]
    for k in ref:
        np.testing.assert_array_equal(dp[k], ref[k])


def test_changing_params_after_forward_does_not_change_gradients(rng):
    p = gatecore.init_params("lstm", 3, 4, dtype=np.float64, seed=0)
    x = rng.standard_normal((5, 2, 3))
    dy = rng.standard_normal((5, 2, 4))
    _, _, tape = gatecore.forward("lstm", x, p)
    ref = gatecore.backward(tape, dy)[0].copy()
    p["weight_ih_l0"] *= 2  # an optimizer step taken too early
    np.testing.assert_array_equal(gatecore.backward(tape, dy)[0], ref)


def test_bool_arguments_are_strict(p, x):
    raises(TypeError, r"training must be True or False", gatecore.forward, "lstm", x, p, training="no")
    raises(TypeError, r"bidirectional must be True or False", gatecore.init_params, "lstm", 3, 4,
           bidirectional="no")
    raises(TypeError, r"max_seq_len must be", gatecore.Workspace, True)
    raises(DTypeError, r"dtype must be float32 or float64", gatecore.init_params, "lstm", 3, 4, dtype="bogus")
    pg = gatecore.init_params("gru", 3, 4)
    y1, _ = gatecore.gru(x, pg, reset_after=np.False_)
    y2, _ = gatecore.gru(x, pg, reset_after=False)
    np.testing.assert_array_equal(y1, y2)
    raises(TypeError, r"reset_after must be True or False", gatecore.gru, x, pg, reset_after=0)


def test_masked_and_unconvertible_inputs(p, x):
    raises(DTypeError, r"x is a masked array", gatecore.lstm, np.ma.masked_array(x), p)
    torch = pytest.importorskip("torch")
    raises(DTypeError, r"x is not convertible", gatecore.lstm, torch.zeros(5, 2, 3, dtype=torch.bfloat16), p)
    pb = {k: torch.tensor(v).to(torch.bfloat16) for k, v in p.items()}
    raises(DTypeError, r"params\['weight_ih_l0'\] is not convertible", gatecore.lstm, x, pb)


def test_params_with_a_stray_layer_number_fail_fast(x):
    p = gatecore.init_params("lstm", 3, 4, seed=0)
    bad = dict(p, bias_ih_l100000000=p["bias_ih_l0"])  # no 10^8 layers are listed
    raises(ParameterError, r"layer\(s\) 1, 2, 3, 4, 5, \.\.\. \(99999999 layer\(s\) without any key\) "
           r"but has \['bias_ih_l100000000'\]",
           gatecore.lstm, x, bad)


def test_params_dtype_mix_names_the_keys(x):
    p = gatecore.init_params("lstm", 3, 4, seed=0)
    raises(DTypeError, r"float64: \['bias_ih_l0'\]", gatecore.lstm, x,
           dict(p, bias_ih_l0=p["bias_ih_l0"].astype(np.float64)))
    raises(DTypeError, r"params\['bias_ih_l0'\] is a masked array", gatecore.lstm, x,
           dict(p, bias_ih_l0=np.ma.array(p["bias_ih_l0"], mask=True)))


def test_a_scalar_parameter_is_a_shape_error_not_a_dtype_mix(x, p):
    """params['bias_ih_l0'] = 0.0 among float32 arrays: the message says it is a scalar
    (it said "params mix dtypes", whose advice does not fix it; found by a break-it sweep)."""
    for dtype in (np.float32, np.float64):
        q = {k: v.astype(dtype) for k, v in p.items()}
        q["bias_ih_l0"] = 0.0
        raises(ParameterError, r"params\['bias_ih_l0'\] is a scalar", gatecore.lstm,
               x.astype(dtype), q)
        q["bias_ih_l0"] = np.float32(1)
        raises(ParameterError, r"is a scalar", gatecore.prepare, q)
        q["bias_ih_l0"] = None  # (not a number: the dtype error, as before)
        raises(DTypeError, r"params\['bias_ih_l0'\] must be float32 or float64", gatecore.lstm,
               x.astype(dtype), q)


def test_big_endian_arrays_are_read_by_value(x):
    p = gatecore.init_params("lstm", 3, 4, seed=0)
    y, _ = gatecore.lstm(x + 1, p)
    y_be, _ = gatecore.lstm((x + 1).astype(">f4"), {k: v.astype(">f4") for k, v in p.items()})
    np.testing.assert_array_equal(y, y_be)


@pytest.mark.parametrize("B", [2, 64])  # 64: the large-step path with NumPy's products
def test_non_finite_params_propagate_without_warnings(B):
    import warnings

    p = gatecore.init_params("lstm", 8, 256, seed=0)
    p["weight_hh_l0"][0, 0] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, (h, c) = gatecore.lstm(np.ones((3, B, 8), np.float32), p)
    assert np.isnan(y).any()


@pytest.mark.parametrize("seed", ["a", -1, 1.5, np.float64(2.0), [1, -2], object()])
def test_init_params_bad_seed_names_seed(seed):
    """NumPy's own errors (SeedSequence, negative entropy) named no argument."""
    with pytest.raises(ValueError, match=r"seed must be None, an int >= 0"):
        gatecore.init_params("lstm", 3, 4, seed=seed)


def test_init_params_seed_kinds():
    """Every seed NumPy's default_rng takes still works (the check only names the argument)."""
    a = gatecore.init_params("lstm", 3, 4, seed=5)
    for seed in (np.int64(5), np.random.default_rng(5), np.random.SeedSequence(5),
                 np.random.PCG64(5)):
        b = gatecore.init_params("lstm", 3, 4, seed=seed)
        assert all(np.array_equal(a[k], b[k]) for k in a), seed
    c = gatecore.init_params("lstm", 3, 4, seed=[1, 2])
    d = gatecore.init_params("lstm", 3, 4, seed=np.random.default_rng([1, 2]))
    assert all(np.array_equal(c[k], d[k]) for k in c)


def test_x_none_names_the_value():
    p = gatecore.init_params("lstm", 3, 4, seed=0)
    with pytest.raises(ShapeError, match=r"got a 0-d value \(NoneType: None\)"):
        gatecore.lstm(None, p)


def test_workspace_too_large_names_the_buffer_and_sizes():
    """Workspace(10**15, 10**15) was accepted and the first call died with NumPy's bare
    MemoryError ("Unable to allocate 17.8 PiB")."""
    p = gatecore.init_params("lstm", 2, 5, seed=0)
    ws = gatecore.Workspace(10 ** 15, 10 ** 15)
    with pytest.raises(MemoryError, match=r"workspace buffer '\w+' needs .* max_seq_len=10{15}"):
        gatecore.lstm(np.zeros((4, 3, 2), np.float32), p, workspace=ws)
    y, _ = gatecore.lstm(np.zeros((4, 3, 2), np.float32), p, workspace=gatecore.Workspace())
    assert y.shape == (4, 3, 5)
