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
