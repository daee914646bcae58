"""The pluggy cell registry: entry points, run-time registration, plugin errors, the CLI.

Each test that changes the registry swaps in a fresh one and restores the process-wide
registry in ``finally`` (as llm's plugin tests do). Fake plugin distributions are written
to a temporary folder on ``sys.path`` with a ``*.dist-info/entry_points.txt``, so loading
goes through ``importlib.metadata`` exactly as for an installed package.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import textwrap

import numpy as np
import pytest
from numba import njit

import gatecore
from gatecore.activations import tanh
from gatecore import cli
from gatecore.errors import CellSpecError, UnknownCellError
from gatecore.registry import manager
from gatecore.registry.manager import CellRegistry
from gatecore.testing import check_cell

from spec_lstm import SPEC_LSTM

_counter = itertools.count()


@contextlib.contextmanager
def fresh_registry(**kw):
    """A fresh process-wide registry for the duration of the block."""
    old = manager._reset_registry_for_tests(None)
    try:
        reg = CellRegistry(**kw)
        manager._reset_registry_for_tests(reg)
        yield reg
    finally:
        manager._reset_registry_for_tests(old)


def fake_distribution(tmp_path, monkeypatch, body: str, dist: str = "fake-cells") -> str:
    """Write module + dist-info with an entry point of group gatecore; return the module name."""
    module = f"gatecore_fake_{next(_counter)}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(PLUGIN_HEADER) + textwrap.dedent(body))
    info = tmp_path / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[gatecore]\n{module} = {module}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return module


PLUGIN_HEADER = """
    import dataclasses
    import gatecore
    from spec_lstm import SPEC_LSTM
"""


def _errors_of(reg, module):
    return [reason for plugin, reason in reg.errors() if module in plugin]


def test_builtins_register_through_the_hook():
    with fresh_registry(autoload=False) as reg:
        cells = reg.cells()
        assert set(cells) == {"lstm", "gru"}
        assert cells["lstm"].plugin == "gatecore (built-in)"
        impls = [i.plugin_name for i in reg.pm.hook.gatecore_register_cells.get_hookimpls()]
        assert impls == ["gatecore (built-in)"]


def test_entry_point_plugin_is_loaded(tmp_path, monkeypatch):
    module = fake_distribution(tmp_path, monkeypatch, """
    @gatecore.hookimpl
    def gatecore_register_cells(register):
        register(dataclasses.replace(SPEC_LSTM, name="fake_cell"))
    """)
    with fresh_registry() as reg:
        assert "fake_cell" in reg.cells()
        assert reg.cells()["fake_cell"].plugin == f"fake-cells ({module})"
        assert gatecore.get_cell("fake_cell").name == "fake_cell"
        assert "fake_cell" in gatecore.list_cells()
        assert not reg.errors()


def test_autoload_can_be_disabled(tmp_path, monkeypatch):
    fake_distribution(tmp_path, monkeypatch, """
    @gatecore.hookimpl
    def gatecore_register_cells(register):
        register(dataclasses.replace(SPEC_LSTM, name="fake_cell"))
    """)
    monkeypatch.setenv("GATECORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    with fresh_registry() as reg:
        assert set(reg.cells()) == {"lstm", "gru"}


@pytest.mark.parametrize("body, reason", [
    ("raise RuntimeError('boom at import')", "failed to load: RuntimeError: boom at import"),
    ("""
    @gatecore.hookimpl
    def gatecore_register_cells(register):
        raise KeyError('boom in hook')
    """, "raised in gatecore_register_cells: KeyError"),
    ("""
    @gatecore.hookimpl
    def gatecore_register_cells(register):
        register(dataclasses.replace(SPEC_LSTM, name="lstm"))
    """, "duplicate cell name 'lstm' (already provided by gatecore (built-in))"),
    ("""
    @gatecore.hookimpl
    def gatecore_register_cells(register):
        register(dataclasses.replace(SPEC_LSTM, name="three_gates", gate_names=("i", "f", "g")))
    """, "rule 'forward' indexes past the arrays the spec declares"),
    ("""
    @gatecore.hookimpl
    def gatecore_register_cells(register):
        register(dataclasses.replace(SPEC_LSTM, name="no_backward", backward=None))
    """, "missing pointwise rule 'backward'"),
    ("""
    @gatecore.hookimpl
    def gatecore_register_cells(register):
        register(dataclasses.replace(SPEC_LSTM, name="short_tape", tape_size=3))
    """, "indexes past the arrays"),
    ("""
    @gatecore.hookimpl
    def gatecore_register_cells(register):
        register({"name": "not a spec"})
    """, "register() expects a gatecore.CellSpec, got dict"),
    ("""
    @gatecore.hookimpl
    def gatecore_register_cell(register):
        register(dataclasses.replace(SPEC_LSTM, name="misspelt_hook"))
    """, "it defines ['gatecore_register_cell'], which gatecore does not know"),
    ("""
    @gatecore.hookimpl
    def gatecore_register_cells(register):
        return dataclasses.replace(SPEC_LSTM, name="returned_not_registered")
    """, "returned cell specs (ignored): call register(spec)"),
    ("""
    def gatecore_register_cells(register):
        register(dataclasses.replace(SPEC_LSTM, name="unmarked_hook"))
    """, "has no gatecore_register_cells(register) hook"),
    ("""
    @gatecore.hookimpl
    def gatecore_register_cells(register):
        register(dataclasses.replace(SPEC_LSTM, name="huge_tape", tape_size=10**9))
    """, "tape_size must be an int in [1, 1024]"),
    ("""
    from gatecore.cells.gru import GRU_RESET_AFTER
    @gatecore.hookimpl
    def gatecore_register_cells(register):
        register(dataclasses.replace(GRU_RESET_AFTER, name="gru_proj", configure=None,
                                     option_defaults={}, supports_projection=True))
    """, "supports_projection=True but rule 'forward' reads sp[0]"),
], ids=["import-error", "hook-raises", "duplicate", "gate-count", "no-backward", "tape-size",
        "not-a-spec", "misspelt-hook", "returns-spec", "no-hook", "huge-tape",
        "projection-reads-h"])
def test_broken_plugin_is_reported_and_others_work(tmp_path, monkeypatch, body, reason):
    module = fake_distribution(tmp_path, monkeypatch, body, dist="broken-cells")
    with pytest.warns(RuntimeWarning, match="gatecore plugin broken-cells"):
        with fresh_registry() as reg:
            errors = [(p, r) for p, r in reg.errors() if module in p]
            assert len(errors) == 1, reg.errors()
            plugin, text = errors[0]
            assert plugin == f"broken-cells ({module})"
            assert reason in text
            # the other cells keep working; the built-in lstm is still the built-in one
            assert reg.cells()["lstm"].plugin == "gatecore (built-in)"
            p = gatecore.init_params("lstm", 2, 3, seed=0)
            y, _, _ = gatecore.forward("lstm", np.ones((2, 1, 2), np.float32), p)
            assert y.shape == (2, 1, 3)


def test_a_good_cell_next_to_a_bad_one_in_the_same_plugin_registers(tmp_path, monkeypatch):
    module = fake_distribution(tmp_path, monkeypatch, """
    @gatecore.hookimpl
    def gatecore_register_cells(register):
        register(dataclasses.replace(SPEC_LSTM, name="no_backward", backward=None))
        register(dataclasses.replace(SPEC_LSTM, name="good_one"))
    """)
    with pytest.warns(RuntimeWarning):
        with fresh_registry() as reg:
            assert "good_one" in reg.cells()
            assert "no_backward" not in reg.cells()
            assert len(_errors_of(reg, module)) == 1


def test_inconsistent_specs_raise_at_run_time_registration():
    with fresh_registry(autoload=False) as reg:
        with pytest.raises(CellSpecError, match="missing pointwise rule 'backward'"):
            reg.register(dataclasses.replace(SPEC_LSTM, backward=None))
        with pytest.raises(CellSpecError, match=r"indexes past .*\(3 gates"):
            reg.register(dataclasses.replace(SPEC_LSTM, gate_names=("i", "f", "g")))
        with pytest.raises(CellSpecError, match=r"takes 12 arguments, expected 13"):
            reg.register(dataclasses.replace(
                SPEC_LSTM, backward=lambda ax, tp, sp, sn, ex, ds, du, dax, dah, dsp, dex, j: 0))
        with pytest.raises(CellSpecError, match="duplicate cell name 'lstm'"):
            reg.register(dataclasses.replace(SPEC_LSTM, name="lstm"))
        assert "spec_lstm" not in reg.cells()


def test_backward_that_leaves_a_gradient_unwritten_is_refused():
    @njit
    def lazy_backward(ax, tp, sp, sn, ex, ds, du, dax, dah, dsp, dex, j, H):
        for g in range(4):
            dax[g * H + j] = 0.0
            dah[g * H + j] = 0.0
        dsp[0, j] = 0.0  # forgets dsp[1, j]

    with fresh_registry(autoload=False) as reg:
        with pytest.raises(CellSpecError, match=r"'backward' leaves dsp\[s, j\] unwritten"):
            reg.register(dataclasses.replace(SPEC_LSTM, backward=lazy_backward))


def test_rule_that_writes_other_units_entries_is_refused():
    """A tape laid out unit-major (tp[4*j + q]) breaks the kernels' unit-wise parts (the team
    path copies tp[q*H + j] of its units): refused at registration, naming the rule."""
    @njit
    def unit_major_tape(ax, ah, sp, ex, sn, tp, j, H):
        for q in range(4):
            tp[4 * j + q] = ax[q * H + j] + ah[q * H + j]
        sn[0, j] = tp[4 * j]
        sn[1, j] = tp[4 * j + 1]

    with fresh_registry(autoload=False) as reg:
        with pytest.raises(CellSpecError, match=r"'forward'.*writes tp entries of other units"):
            reg.register(dataclasses.replace(SPEC_LSTM, forward=unit_major_tape))


def test_rule_that_reads_another_units_entries_is_refused():
    """A rule mixing neighbouring units (sp[0, j - 1]) would read the wrong values on the
    team path, where each thread's units are copied apart: refused at registration."""
    @njit
    def neighbour_backward(ax, tp, sp, sn, ex, ds, du, dax, dah, dsp, dex, j, H):
        for g in range(4):
            dax[g * H + j] = ds[0, j] + ds[0, j - 1]
            dah[g * H + j] = ds[1, j]
        dsp[0, j] = 0.0
        dsp[1, j] = ds[1, j]

    with fresh_registry(autoload=False) as reg:
        with pytest.raises(CellSpecError, match=r"'backward'.*reads other units' entries"):
            reg.register(dataclasses.replace(SPEC_LSTM, backward=neighbour_backward))


def test_run_time_registration_and_unregistration():
    with fresh_registry(autoload=False) as reg:
        gatecore.register_cell(SPEC_LSTM)
        try:
            assert gatecore.list_cells()["spec_lstm"] == "run-time"
            p = gatecore.init_params("spec_lstm", 2, 3, seed=0, dtype=np.float64)
            x = np.ones((3, 2, 2))
            y, (h, c), tape = gatecore.forward("spec_lstm", x, p)
            y_ref, (h_ref, c_ref), _ = gatecore.forward("lstm", x, p)
            np.testing.assert_allclose(y, y_ref, rtol=1e-12)
        finally:
            reg.unregister("spec_lstm")
        assert "spec_lstm" not in gatecore.list_cells()
        with pytest.raises(UnknownCellError, match=r"unknown cell 'spec_lstm'; registered cells: \['gru', 'lstm'\]"):
            gatecore.forward("spec_lstm", x, p)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownCellError) as info:
        gatecore.get_cell("nope")
    for name in gatecore.list_cells():
        assert repr(name) in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(UnknownCellError, match="registered cells"):
        manager.get_registry().unregister("nope")


def test_cli_cells_lists_plugins_and_errors(tmp_path, monkeypatch, capsys):
    module = fake_distribution(tmp_path, monkeypatch, "raise ImportError('missing dependency xyz')",
                               dist="broken-cells")
    with pytest.warns(RuntimeWarning):
        with fresh_registry():
            assert cli.main(["cells"]) == 0
    out = capsys.readouterr().out
    assert "lstm" in out and "gatecore (built-in)" in out
    assert f"broken-cells ({module}): failed to load: ImportError: missing dependency xyz" in out


# --------------------------------------------------------------------------- the check itself
@njit
def _wrong_backward(ax, tp, sp, sn, ex, ds, du, dax, dah, dsp, dex, j, H):
    i = tp[j]
    f = tp[H + j]
    g = tp[2 * H + j]
    o = tp[3 * H + j]
    tc = tanh(sn[1, j])
    dh = ds[0, j]
    dc = ds[1, j] + dh * o * (1.0 - tc * tc)
    di = dc * g * i * (1.0 - i)
    df = dc * sp[1, j] * f  # the sigmoid's derivative is missing
    dg = dc * i * (1.0 - g * g)
    do = dh * tc * o * (1.0 - o)
    dax[j] = di
    dax[H + j] = df
    dax[2 * H + j] = dg
    dax[3 * H + j] = do
    dah[j] = di
    dah[H + j] = df
    dah[2 * H + j] = dg
    dah[3 * H + j] = do
    dsp[0, j] = 0.0
    dsp[1, j] = dc * f


WRONG = dataclasses.replace(SPEC_LSTM, name="wrong_lstm", backward=_wrong_backward)


def test_check_cell_catches_a_wrong_derivative_and_cli_exits_1(capsys):
    with fresh_registry(autoload=False) as reg:
        reg.register(WRONG)
        assert cli.main(["check", "wrong_lstm"]) == 1
        out = capsys.readouterr().out
        assert "FAIL  gradients" in out and "finite differences" in out
        assert "np.int64" not in out  # indices as [3, 1]
        assert "FAILED" in out.splitlines()[-1]
        report = check_cell(WRONG)  # a spec object works too (not yet registered elsewhere)
        assert not report.passed
        assert [c.name for c in report.failures][0] == "gradients"
        with pytest.raises(AssertionError, match="FAIL  gradients"):
            check_cell("wrong_lstm", raise_on_failure=True)


def test_cli_check_exit_codes(capsys):
    assert cli.main(["check", "no_such_cell"]) == 2
    err = capsys.readouterr().err
    assert "unknown cell 'no_such_cell'" in err and "'lstm'" in err
    assert cli.main(["check", "gru", "-o", "bogus=1"]) == 2
    assert "accepts ['reset_after']" in capsys.readouterr().err
    assert cli.main(["check", "lstm"]) == 0
    out = capsys.readouterr().out
    assert "PASS  gradients" in out and out.splitlines()[-1].startswith("PASSED")


def test_plugin_that_uses_gatecore_while_imported_does_not_deadlock(tmp_path):
    """A plugin module calling gatecore.get_cell at import time must not hang the process."""
    import subprocess
    import sys
    import textwrap

    (tmp_path / "reentrant_plug.py").write_text(textwrap.dedent("""
        import dataclasses
        import gatecore
        BASE = gatecore.get_cell("lstm")          # calls back into the registry while loading
        CELL = dataclasses.replace(BASE, name="reentrant_lstm")

        @gatecore.hookimpl
        def gatecore_register_cells(register):
            register(CELL)
    """))
    dist = tmp_path / "reentrant_plug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: reentrant-plug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[gatecore]\nreentrant = reentrant_plug\n")
    env = dict(__import__("os").environ, PYTHONPATH=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", "import gatecore; print(sorted(gatecore.list_cells()))"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "reentrant_lstm" in out.stdout and "lstm" in out.stdout


def _scaled_spec(alpha):
    """A GRU whose output is scaled by a closure constant (frozen into the kernel by Numba)."""
    from gatecore.cells.gru import GRU_RESET_AFTER, gru_after_forward

    fwd = gru_after_forward

    def forward(ax, ah, sp, ex, sn, tp, j, H):
        fwd(ax, ah, sp, ex, sn, tp, j, H)
        sn[0, j] = alpha * sn[0, j]

    return dataclasses.replace(GRU_RESET_AFTER, name="scaled_gru", forward=forward,
                               configure=None, option_defaults={})


def test_kernel_cache_key_includes_closure_constants():
    a, b = _scaled_spec(1.0), _scaled_spec(0.0)
    assert a.fingerprint() != b.fingerprint()
    p = gatecore.init_params("gru", 2, 3, dtype=np.float64, seed=0)
    x = np.ones((3, 1, 2))
    ya, _, _ = gatecore.forward(a, x, p, training=False)
    yb, _, _ = gatecore.forward(b, x, p, training=False)
    assert np.any(ya != 0) and np.all(yb == 0)


def test_kernel_cache_key_follows_helpers_reached_through_a_module(tmp_path, monkeypatch):
    """A rule calling ``helpers.act(...)`` (a module among its globals): a changed helper,
    or a changed constant of that module, changes the fingerprint (the cached kernel would
    otherwise keep the old helper)."""
    import importlib
    import sys
    import textwrap

    from gatecore.cells.gru import GRU_RESET_AFTER, gru_after_forward

    def spec_with(scale, const):
        (tmp_path / "fp_helpers.py").write_text(textwrap.dedent(f"""
            from numba import njit
            SCALE = {const}

            @njit
            def act(v):
                return {scale} * v
        """))
        sys.modules.pop("fp_helpers", None)
        helpers = importlib.import_module("fp_helpers")
        fwd = gru_after_forward

        def forward(ax, ah, sp, ex, sn, tp, j, H):
            fwd(ax, ah, sp, ex, sn, tp, j, H)
            sn[0, j] = helpers.act(sn[0, j]) * helpers.SCALE

        return dataclasses.replace(GRU_RESET_AFTER, name="helper_gru", forward=forward,
                                   configure=None, option_defaults={})

    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        keys = [spec_with(1.0, 1.0).fingerprint(), spec_with(0.5, 1.0).fingerprint(),
                spec_with(0.5, 2.0).fingerprint(), spec_with(0.5, 2.0).fingerprint()]
    finally:
        sys.modules.pop("fp_helpers", None)
    assert len(set(keys[:3])) == 3 and keys[2] == keys[3]


def test_kernel_cache_key_ends_on_modules_that_make_modules_and_sees_defaults(tmp_path,
                                                                            monkeypatch):
    """A module whose ``__getattr__`` makes a new module for every name does not make the
    fingerprint's walk endless; a helper's default argument (``scale=SCALE``) is part of
    the key."""
    import importlib
    import sys
    import textwrap

    from gatecore.cells.gru import GRU_RESET_AFTER, gru_after_forward

    def spec_with(scale):
        (tmp_path / "fp_magic.py").write_text(textwrap.dedent(f"""
            import types
            from numba import njit

            @njit
            def act(v, scale={scale}):
                return scale * v

            def __getattr__(name):
                return types.ModuleType(name)
        """))
        sys.modules.pop("fp_magic", None)
        magic = importlib.import_module("fp_magic")
        fwd = gru_after_forward

        def forward(ax, ah, sp, ex, sn, tp, j, H):
            fwd(ax, ah, sp, ex, sn, tp, j, H)
            sn[0, j] = magic.act(sn[0, j]) + magic.other.thing.deeper

        return dataclasses.replace(GRU_RESET_AFTER, name="magic_gru", forward=forward,
                                   configure=None, option_defaults={})

    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert spec_with(1.0).fingerprint() != spec_with(5.0).fingerprint()
    finally:
        sys.modules.pop("fp_magic", None)


def test_cell_names_must_be_lower_case():
    with pytest.raises(gatecore.CellSpecError, match="lower-case"):
        dataclasses.replace(SPEC_LSTM, name="MyLSTM").validate()


def test_sequences_given_as_lists_become_tuples():
    """extra_params/gate_names as lists (a spec is hashed and used as a key: a list failed
    only in backward, with TypeError: unhashable type)."""
    spec = dataclasses.replace(SPEC_LSTM, name="listed", gate_names=list(SPEC_LSTM.gate_names),
                               extra_params=[["shift", 1]])
    assert spec.gate_names == SPEC_LSTM.gate_names
    assert spec.extra_params == (("shift", 1),)
    spec.validate()
    hash((spec.gate_names, spec.extra_params))  # (backward's workspace key holds them)
    with pytest.raises(CellSpecError, match="extra_params must be a tuple"):
        dataclasses.replace(SPEC_LSTM, name="odd", extra_params={"shift": 1}).validate()


def test_reads_first_argument_sees_paired_loads(monkeypatch):
    """Python 3.13 loads two locals at once (LOAD_FAST_LOAD_FAST, argval ('ax', 'j')): a
    backward rule reading ax must still be seen as one (else forward skips writing ax back
    and backward's gradients are wrong)."""
    import collections

    from gatecore.kernels import factory
    ins = collections.namedtuple("Ins", "opname argval")

    def bwd(ax, tp, j):
        return ax[j] + tp[j]
    monkeypatch.setattr(factory.dis, "get_instructions",
                        lambda code: [ins("LOAD_FAST_LOAD_FAST", ("ax", "j"))])
    assert factory._reads_first_argument(bwd)
    monkeypatch.setattr(factory.dis, "get_instructions",
                        lambda code: [ins("LOAD_FAST_LOAD_FAST", ("tp", "j"))])
    assert not factory._reads_first_argument(bwd)


def test_unknown_extra_hook_and_returned_values_do_not_drop_cells(tmp_path, monkeypatch):
    """A plugin written for a later gatecore (one more hook) keeps its cells; a hook that
    returns register()'s Nones is no error; a projection check ignores a spare tape slot."""
    fake_distribution(tmp_path, monkeypatch, """
    @gatecore.hookimpl
    def gatecore_register_cells(register):
        return [register(dataclasses.replace(SPEC_LSTM, name="later_lstm", tape_size=5,
                                             supports_projection=True))]

    @gatecore.hookimpl
    def gatecore_register_exporters(register):
        pass
    """)
    with fresh_registry() as reg:
        assert "later_lstm" in reg.cells() and not reg.errors(), reg.errors()
