"""Shapes, cases and grid switches shared by the asv benchmarks.

The default grid is small enough for ``asv run --python=same --quick`` to finish in a few
minutes on a 2-core machine; set ``GATECORE_BENCH_FULL=1`` for the full sweep (every shape
in every benchmark, float64, a two-layer bidirectional network).
"""

from __future__ import annotations

import os

import numpy as np

import gatecore

#: (T, B, I, H): float32, one layer, unidirectional (issue 5)
SHAPES = {
    "stream": (1000, 1, 128, 128),
    "small": (100, 8, 64, 64),
    "bench320": (100, 64, 125, 320),
    "deepbench512": (25, 64, 512, 512),
    "wide1024": (25, 16, 1024, 1024),
}

FULL = os.environ.get("GATECORE_BENCH_FULL", "") not in ("", "0", "no", "false")

#: the issue's cells
CELLS = ["lstm", "gru"]
#: shapes of the memory and workspace benchmarks (all of them with GATECORE_BENCH_FULL=1)
SOME_SHAPES = list(SHAPES) if FULL else ["small", "bench320"]
#: the shape at which every registered cell (plugins included) is timed
ALL_CELLS_SHAPE = "small"
#: dtypes of the precision benchmark
DTYPES = ["float32", "float64"] if FULL else ["float32"]


def registered_cells() -> list[str]:
    """Every registered cell name (built-ins and plugins) at benchmark discovery time."""
    return sorted(gatecore.list_cells())


class Case:
    """Parameters, input, output gradient and workspace of one benchmark case."""

    def __init__(self, cell: str, shape, *, dtype="float32", num_layers: int = 1,
                 bidirectional: bool = False, workspace: bool = True, seed: int = 0,
                 prepared: bool = False):
        T, B, I, H = SHAPES[shape] if isinstance(shape, str) else shape
        D = 2 if bidirectional else 1
        self.cell = cell
        rng = np.random.default_rng(seed)
        self.params = gatecore.init_params(cell, I, H, num_layers=num_layers,
                                           bidirectional=bidirectional, dtype=np.dtype(dtype),
                                           seed=seed)
        if prepared:  # checked, copied and transposed once (gatecore.prepare)
            self.params = gatecore.prepare(self.params)
        self.x = rng.standard_normal((T, B, I)).astype(dtype)
        self.dy = rng.standard_normal((T, B, D * H)).astype(dtype)
        self.ws = gatecore.Workspace(max_seq_len=T, max_batch=B) if workspace else None

    def infer(self):
        return gatecore.forward(self.cell, self.x, self.params, training=False, workspace=self.ws)

    def train(self):
        _, _, tape = gatecore.forward(self.cell, self.x, self.params, workspace=self.ws)
        return gatecore.backward(tape, self.dy)

    def warm(self):
        """Compile (or load from Numba's cache) every kernel the case runs."""
        self.infer()
        self.train()
