"""gatecore.prepare: parameters checked, copied and transposed once."""

from __future__ import annotations

import numpy as np
import pytest

import gatecore
from conftest import products_path


def test_prepared_lstm_with_projection_matches_plain(rng):
    p = gatecore.init_params("lstm", 4, 6, num_layers=2, bidirectional=True, proj_size=3,
                             dtype=np.float64, seed=2)
    q = gatecore.prepare(p)
    x = rng.standard_normal((7, 2, 4))
    dy = rng.standard_normal((7, 2, 6))
    for path in ("own", "overlap", "blas"):
        with products_path(path):
            ya, sa, ta = gatecore.forward("lstm", x, p)
            ya, sa = ya.copy(), tuple(s.copy() for s in sa)
            ga = gatecore.backward(ta, dy)[2]
            ga = {k: v.copy() for k, v in ga.items()}
            yb, sb, tb = gatecore.forward("lstm", x, q)
            gb = gatecore.backward(tb, dy)[2]
            np.testing.assert_array_equal(yb, ya)
            for k in ga:
                np.testing.assert_array_equal(gb[k], ga[k])
            yi = gatecore.forward("lstm", x, q, training=False)[0]
            np.testing.assert_array_equal(yi, ya)


def test_large_step_path_with_prepared_params(rng):
    p = gatecore.init_params("gru", 8, 16, seed=1)
    q = gatecore.prepare(p)
    x = rng.standard_normal((5, 3, 8)).astype(np.float32)
    with products_path("numpy"):
        np.testing.assert_array_equal(gatecore.gru(x, q)[0], gatecore.gru(x, p)[0])


def test_prepared_params_are_a_read_only_snapshot(rng):
    p = gatecore.init_params("gru", 3, 4, seed=0)
    q = gatecore.prepare(p)
    assert gatecore.prepare(q) is q
    assert set(q) == set(p) and len(q) == len(p)
    for k in p:
        np.testing.assert_array_equal(q[k], p[k])
        assert not q[k].flags.writeable
        with pytest.raises(ValueError):
            q[k][...] = 0
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    y0 = gatecore.gru(x, q)[0].copy()
    p["weight_hh_l0"][...] = 0  # the caller's arrays change; the prepared copy does not
    np.testing.assert_array_equal(gatecore.gru(x, q)[0], y0)
    assert "PreparedParams" in repr(q)


def test_prepare_rejects_bad_values():
    with pytest.raises(gatecore.DTypeError, match="mapping"):
        gatecore.prepare([np.zeros((4, 4))])
    with pytest.raises(gatecore.DTypeError, match="weight_ih_l0"):
        gatecore.prepare({"weight_ih_l0": np.zeros((12, 3), np.int32)})
    with pytest.raises(gatecore.ParameterError, match="string"):
        gatecore.prepare({0: np.zeros((12, 3), np.float32)})
    with pytest.raises(gatecore.ParameterError, match="empty"):
        gatecore.prepare({})
    mixed = gatecore.init_params("gru", 3, 4, seed=0)
    mixed["bias_hh_l0"] = mixed["bias_hh_l0"].astype(np.float64)
    with pytest.raises(gatecore.DTypeError, match="bias_hh_l0"):
        gatecore.prepare(mixed)


def test_prepared_params_are_checked_against_each_cell(rng):
    q = gatecore.prepare(gatecore.init_params("gru", 3, 4, seed=0))
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    with pytest.raises(gatecore.ParameterError, match="weight_hh_l0"):
        gatecore.forward("lstm", x, q)
    gatecore.forward("gru", x, q)  # the failed check left nothing behind
    gatecore.forward("gru", x, q, reset_after=False)  # a second layout for the other spec
    with pytest.raises(gatecore.ShapeError, match="input_size"):
        gatecore.forward("gru", x[..., :2], q)
    incomplete = gatecore.prepare({"weight_ih_l0": np.zeros((12, 3), np.float32)})
    with pytest.raises(gatecore.ParameterError, match="weight_hh_l0"):
        gatecore.gru(x, incomplete)


def test_prepared_views_cannot_be_made_writeable():
    q = gatecore.prepare(gatecore.init_params("lstm", 3, 4, seed=0))
    v = q["weight_hh_l0"]
    with pytest.raises(ValueError):
        v.flags.writeable = True
    with pytest.raises(ValueError):
        v[0, 0] = 1.0


def test_prepared_params_pickle_and_copy(rng):
    import copy
    import pickle

    p = gatecore.init_params("gru", 3, 4, seed=0)
    q = gatecore.prepare(p)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    want = gatecore.gru(x, q)[0].copy()
    for other in (pickle.loads(pickle.dumps(q)), copy.deepcopy(q), copy.copy(q)):
        assert isinstance(other, gatecore.PreparedParams)
        np.testing.assert_array_equal(gatecore.gru(x, other)[0], want)


def test_a_training_tape_holds_no_array_of_the_prepared_set(rng):
    q = gatecore.prepare(gatecore.init_params("lstm", 3, 4, seed=0))
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    y0 = gatecore.lstm(x, q)[0].copy()
    y, _, tape = gatecore.forward("lstm", x, q)
    for per_dir in tape.layers:
        for group in per_dir:
            for a in group.values():
                assert not any(np.may_share_memory(a, v) for v in q._arrays.values())
    tape.layers[0][0]["weight_ih"][...] = 0  # the tape's copy only
    np.testing.assert_array_equal(gatecore.lstm(x, q)[0], y0)
    np.testing.assert_array_equal(q["weight_ih_l0"], gatecore.init_params("lstm", 3, 4, seed=0)["weight_ih_l0"])


def test_bad_layer_numbers_and_a_transposed_weight_are_named():
    p = gatecore.init_params("lstm", 3, 4, seed=0)
    x = np.ones((2, 1, 3), np.float32)
    with pytest.raises(gatecore.ParameterError, match=r"unknown key .*characters"):
        gatecore.lstm(x, {**p, "weight_ih_l" + "9" * 5000: p["weight_ih_l0"]})
    for odd in ("weight_ih_l0\n", "weight_ih_l\u0660"):
        q = {k: v for k, v in p.items() if k != "weight_ih_l0"}
        q[odd] = p["weight_ih_l0"]
        with pytest.raises(gatecore.ParameterError, match="unknown key"):
            gatecore.lstm(x, q)
    with pytest.raises(gatecore.ParameterError, match="transposed"):
        gatecore.lstm(x, {**p, "weight_ih_l0": p["weight_ih_l0"].T.copy()})


def test_a_set_used_only_for_training_holds_no_transposes(rng):
    q = gatecore.prepare(gatecore.init_params("gru", 3, 4, seed=0))
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    y, _, tape = gatecore.forward("gru", x, q)
    gatecore.backward(tape, np.ones_like(y))
    assert q._layouts == {}
    gatecore.gru(x, q)
    assert len(q._layouts) == 1


def test_long_non_string_keys_are_reported():
    p = gatecore.init_params("gru", 3, 4, seed=0)
    with pytest.raises(gatecore.ParameterError):
        gatecore.gru(np.ones((2, 1, 3), np.float32), {**p, 10 ** 100: p["weight_ih_l0"]})
