"""The kernels give the same bits whether compiled in this process or loaded from Numba's
on-disk cache, and whichever kernel a process ran first (``factory._load_cached_callees``:
a kernel loaded from the cache alone used to bind its fast-math callees to its own, once more
optimized copy; the peephole LSTM's results then differed in the last bits from t = 1
between the first run and later ones)."""

import json
import os
import subprocess
import sys

import pytest

import gatecore

_CODE = r"""
import hashlib, json, sys
import numpy as np
import gatecore
cell, order = sys.argv[1], sys.argv[2].split(",")
p = gatecore.init_params(cell, 64, 64, seed=1)
x = np.random.default_rng(2).standard_normal((20, 8, 64)).astype(np.float32)
md5 = lambda *a: hashlib.md5(b"".join(np.ascontiguousarray(v).tobytes() for v in a)).hexdigest()
out = {}
for what in order:
    if what == "train":
        y, state_n, tape = gatecore.forward(cell, x, p, training=True)
        dx, dstate0, dparams = gatecore.backward(tape, np.ones_like(y))
        out[what] = md5(y, dx, *dparams.values())
    else:
        out[what] = md5(gatecore.forward(cell, x, gatecore.prepare(p), training=False)[0])
print(json.dumps(out))
"""


def _run(cache_dir, cell, order):
    env = dict(os.environ, GATECORE_CACHE_DIR=str(cache_dir))
    env.pop("GATECORE_NO_CACHE", None)
    res = subprocess.run([sys.executable, "-c", _CODE, cell, order], env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.skipif("peephole_lstm" not in gatecore.list_cells(),
                    reason="needs the peephole LSTM plugin (plugins/peephole-lstm)")
def test_fresh_and_cached_kernels_give_the_same_bits(tmp_path):
    fresh = _run(tmp_path, "peephole_lstm", "inf,train")  # compiles every kernel here
    assert _run(tmp_path, "peephole_lstm", "inf,train") == fresh  # all from the cache
    assert _run(tmp_path, "peephole_lstm", "train,inf") == fresh  # the other kernel first


def test_every_fast_math_callee_is_preloaded():
    """Each function of the kernel template compiled with fast-math flags and called by
    another compiled function is in factory._FASTMATH_CALLEES (backward_dir has no caller)."""
    import re
    from importlib import resources

    from gatecore.kernels import factory

    src = resources.files("gatecore.kernels").joinpath("cpu_kernels.py.in").read_text()
    fast = set(re.findall(r"@njit\([^)]*fastmath=[^\n]*\)\s*\ndef (\w+)\(", src))
    assert {"_mm", "_mmd", "_rule_fwd_at", "forward_dir"} <= fast  # (the pattern still matches)
    called = {name for name in fast if re.search(rf"[^\w.]{name}\(", src.replace(f"def {name}(", ""))}
    assert called - set(factory._FASTMATH_CALLEES) == set()
