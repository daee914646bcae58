"""Steady-state speed and memory of gatecore's forward and forward+backward passes.

Every ``setup`` builds the data once and runs the case, so Numba's compilation (or the load
from its disk cache) is never timed here: see ``bench_compile.py`` for that.
"""

from __future__ import annotations

import gatecore

from .common import (ALL_CELLS_SHAPE, CELLS, DTYPES, FULL, SHAPES, SOME_SHAPES, Case,
                     registered_cells)


class Forward:
    """Inference (``training=False``, no tape), workspace reused: float32, 1 layer, 1 direction;
    parameters as a plain mapping or prepared once (``gatecore.prepare``)."""

    params = (CELLS, list(SHAPES), ["dict", "prepared"])
    param_names = ["cell", "shape", "params"]
    timeout = 600

    def setup(self, cell, shape, params):
        self.case = Case(cell, shape, prepared=(params == "prepared"))
        self.case.infer()

    def time_forward(self, cell, shape, params):
        self.case.infer()


class StreamStep:
    """Step-by-step inference: one step per call (T = 1, B = 1, H = I = 128, float32), the
    final states fed back as the next call's initial states, prepared parameters and one
    workspace: the per-call cost, which repeated calls cut by replaying the recorded one
    (``gatecore.network.Replay``); "whole way" disables the replay."""

    params = (CELLS, ["replay", "whole way"])
    param_names = ["cell", "mode"]

    def setup(self, cell, mode):
        import gatecore.api
        self.case = Case(cell, (1, 1, 128, 128), prepared=True)
        self._replay = gatecore.api._replay
        if mode == "whole way":
            gatecore.api._replay = lambda *a, **k: None
        self.state = self.case.infer()[1]
        self.case.infer()

    def teardown(self, cell, mode):
        import gatecore.api
        gatecore.api._replay = self._replay

    def time_step(self, cell, mode):
        c = self.case
        for _ in range(100):
            self.state = gatecore.forward(c.cell, c.x, c.params, self.state, training=False,
                                          workspace=c.ws)[1]


class ForwardBackward:
    """Training step: forward with tape + BPTT (dx, dstate0 and every weight gradient)."""

    params = (CELLS, list(SHAPES))
    param_names = ["cell", "shape"]
    timeout = 600

    def setup(self, cell, shape):
        self.case = Case(cell, shape)
        self.case.train()

    def time_forward_backward(self, cell, shape):
        self.case.train()


class Memory:
    """Peak resident memory of a process that has run the case (data + workspace + JIT)."""

    params = (CELLS, SOME_SHAPES)
    param_names = ["cell", "shape"]
    timeout = 600

    def setup(self, cell, shape):
        self.case = Case(cell, shape)

    def peakmem_forward(self, cell, shape):
        self.case.infer()

    def peakmem_forward_backward(self, cell, shape):
        self.case.train()


class WorkspaceReuse:
    """The same training step with a reused ``Workspace`` and with none (fresh buffers per call)."""

    params = (CELLS if FULL else ["lstm"], SOME_SHAPES, ["reused", "none"])
    param_names = ["cell", "shape", "workspace"]
    timeout = 600

    def setup(self, cell, shape, workspace):
        self.case = Case(cell, shape, workspace=(workspace == "reused"))
        self.case.warm()

    def time_forward(self, cell, shape, workspace):
        self.case.infer()

    def time_forward_backward(self, cell, shape, workspace):
        self.case.train()

    def peakmem_forward_backward(self, cell, shape, workspace):
        self.case.train()


class EveryCell:
    """Every registered cell, plugins included, at one shape."""

    params = (registered_cells(), [ALL_CELLS_SHAPE])
    param_names = ["cell", "shape"]
    timeout = 600

    def setup(self, cell, shape):
        self.case = Case(cell, shape)
        self.case.warm()

    def time_forward(self, cell, shape):
        self.case.infer()

    def time_forward_backward(self, cell, shape):
        self.case.train()


class Precision:
    """float32 (lstm, small); float32 and float64 for both cells at bench320 with GATECORE_BENCH_FULL=1."""

    params = (CELLS if FULL else ["lstm"], ["bench320"] if FULL else ["small"], DTYPES)
    param_names = ["cell", "shape", "dtype"]
    timeout = 600

    def setup(self, cell, shape, dtype):
        self.case = Case(cell, shape, dtype=dtype)
        self.case.warm()

    def time_forward_backward(self, cell, shape, dtype):
        self.case.train()


if FULL:

    class Network:
        """Two layers, bidirectional (only defined with GATECORE_BENCH_FULL=1)."""

        params = (CELLS, ["small", "bench320"])
        param_names = ["cell", "shape"]
        timeout = 600

        def setup(self, cell, shape):
            self.case = Case(cell, shape, num_layers=2, bidirectional=True)
            self.case.warm()

        def time_forward(self, cell, shape):
            self.case.infer()

        def time_forward_backward(self, cell, shape):
            self.case.train()
