"""Networks of cells: layers, directions and variable lengths, forward and BPTT.

This module receives validated, time-major, C-contiguous arrays of one dtype and drives
the compiled kernels; it never sees bad input (``gatecore.api`` checks everything first).

Per layer k and direction d:

* forward: ``GX = X_k W_ih^T + b_ih`` for all steps as one GEMM, then the time loop kernel
  (recurrent product per step + the cell's pointwise rule; for large steps of one-stage cells
  the loop runs here, NumPy's BLAS between one-step kernel calls);
* backward: the reverse time loop kernel produces dL/d pre-activations for all steps, then
  one GEMM each gives ``dW_ih``, ``dW_hh`` (per stage), ``dW_hr`` and ``dX_k``.

Which library multiplies is chosen per call by the size of a step's recurrent product
(``own_products``, ``team_products``, ``external_products``): see docs/performance.md (the
measurements behind each threshold); float32 steps of one-stage cells from 2^19
multiply-adds use the packed products of ``gatecore.kernels.packed`` on two threads
(``gatecore.overlap.run_team``).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from . import overlap
from ._numba import blas_checked
from .cells.spec import CellSpec
from .errors import StaleTapeError
from .kernels import packed as kpacked
from .kernels import blas
from .kernels.blas import gemm, gemm_acc, transpose_into
from .kernels.factory import cpu_kernels
from .params import Dims
from .workspace import Workspace

__all__ = ["Tape", "run_forward", "run_backward", "own_products"]


class Replay:
    """The work of an inference call after staging, recorded by ``run_forward`` (``rec``)
    to be run again for the next call of the same kind on the same workspace without the
    checks, path decisions, views and argument lists that it repeats (``api._replay``:
    about 85 against 30 us at T=1 with prepared parameters).

    ``ops``: the calls ``(fn, args)`` in order, kernels, products, the time loops of the
    two-thread paths (``_item_team_forward`` and its like) and state copies, whose
    arguments are workspace views and prepared parameters only (the initial states are
    copied into ``state0`` before they run; x into ``x0``, or, where the whole way would read
    it in place, ``inplace``, it takes the places ``xslots`` of ``x0`` and its 2-D view in
    ``ops``); ``y``, ``state_n``: the call's outputs (workspace views); ``y0``: layer 0's y,
    and ``alias_path``: layer 0's path depends on whether x overlaps it (such an x goes the
    whole way); ``quiet``: run under ``np.errstate(all="ignore")`` (a NumPy product among
    ``ops``). Only calls that read every parameter in place and whose path x's overlap
    with y did not decide are recorded (``ok``). A workspace keeps at most
    ``workspace.REPLAYS`` of them (``Workspace._remember_replay``), each with a weak
    reference to its PreparedParams (``params``), and forgets them all when it reallocates
    a buffer or is cleared. ``solo``: recorded while two threads
    were not allowed (``overlap.enabled``); not replayed once they are. ``threaded``: a
    layer took a two-thread path (its choice may depend on ``overlap.enabled``); not
    replayed while two threads are not allowed.
    """

    __slots__ = ("ok", "ops", "quiet", "x0", "state0", "y", "state_n", "base", "params",
                 "dtype", "unbatched", "solo", "threaded", "xslots", "inplace", "y0",
                 "alias_path")

    def __init__(self):
        self.ok = True
        self.ops = []
        self.quiet = False
        self.x0 = self.state0 = self.y = self.state_n = self.y0 = None
        self.xslots = []  # (op, argument, x0 or its 2-D view) where the call read x in place
        self.inplace = False  # (inference with one direction: x of the right kind is read
        # in place, _stage_inputs)
        self.alias_path = False  # (layer 0's path would differ for an x overlapping its y)
        self.base = self.params = self.dtype = None
        self.unbatched = False
        self.solo = not overlap.enabled()  # (made on one thread only because two were
        # not allowed: not replayed once they are, when the whole way may take two)
        self.threaded = False  # (a layer took a two-thread path: not replayed once two
        # threads are not allowed, when the whole way may take another path, other bits)


@dataclasses.dataclass
class Tape:
    """What backward needs from a forward call (the reserve space).

    Attributes are views into the workspace that made it; ``generation`` detects reuse.
    """

    spec: CellSpec
    dims: Dims
    dtype: np.dtype
    T: int
    B: int
    batch_first: bool
    unbatched: bool
    lengths: np.ndarray
    layers: list
    workspace: Workspace
    generation: int
    xs: list  # layer inputs, time-major [T, B, *]
    buffers: dict  # (k, d) -> dict of gx, hp, st, u, tp, ex, mh, w1c, w2c, whrc (tp may be
    # gx itself, then holding the tape: _forward_views' tape_in_gx)
    team: bool = False  # forward ran packed products (no transposed copies w1c on the tape)
    packed_own: bool = False  # forward's own products ran packed (no transposed copies either)
    masks: list | None = None  # dropout: masks[k] [T, B, D*Hr], 0 or 1/(1-p), on layer k's output
    private: bool = False  # the workspace is the call's own (none passed): backward copies out

    def check_fresh(self) -> None:
        """Raise :class:`StaleTapeError` if the workspace was reused since this tape was made."""
        ws = self.workspace
        if ws.generation != self.generation:
            raise StaleTapeError(
                "tape is stale: its workspace was reused by a later forward call (or cleared) "
                f"(tape generation {self.generation}, workspace now at {ws.generation}); run "
                "backward before reusing the workspace, or give each forward its own workspace"
            )


def _sfx(k: int, d: int) -> str:
    return f"_l{k}{'_reverse' if d else ''}"


def _fill_extras(spec, dims, group, ex):
    """Copy the cell's extra parameters into ``ex`` [E, H] (a workspace view)."""
    H = dims.hidden_size
    r = 0
    for prefix, n in spec.extra_params:
        ex[r:r + n] = group[prefix].reshape(n, H)
        r += n


def _forward_views(ws, dtype, spec, dims, T, B, keep, tape_in_gx):
    """The workspace views of a forward call, memoized per call shape (``Workspace.fixed``:
    one lookup instead of about 14 ``get`` calls, ~25 us at T=1): ``zero_bias``, ``no_whr``,
    ``gh1``, ``gh2``, ``pbuf``, ``state_n`` (tuple), ``("y", k)`` per layer and
    ``("dir", k, d)`` = (gx, hp, st, u, tp, mh, ex) per layer and direction (one set, reused by
    every layer and direction, without ``keep``). Views whose object the caller receives
    (the last y, state_n) are handed out as fresh views by ``run_forward``.

    ``tape_in_gx`` (a taped call of a one-stage cell whose backward never reads ax): where
    the tape holds one value per gate (LSTM: i f g o), the forward direction's tape is its gx
    itself: step k is time k there, and each item's tape values overwrite the input
    pre-activations the step has just read (still in cache: the tape's own lines were
    fetched from memory before they were written; and a [T, B, G*H] buffer fewer). (A
    two-stage cell reads gx again for its stage-2 gates after stage 1 wrote the tape.)"""
    L, D, H, Hr = dims.num_layers, dims.num_directions, dims.hidden_size, dims.hr
    G, G1, S, K, E = (spec.num_gates, spec.g1, spec.num_states, spec.tape_size,
                      spec.num_extra)
    H2 = H if spec.two_stage else 0
    in_gx = bool(tape_in_gx and K == G)
    key = ("forward", dtype, T, B, bool(keep), L, D, H, Hr, G, G1, S, K, E, H2,
           bool(dims.proj_size), in_gx)
    return ws.fixed(key, lambda: _make_forward_views(ws, dtype, dims, T, B, keep, L, D, H, Hr,
                                                     G, G1, S, K, E, H2, in_gx))


def _make_forward_views(ws, dtype, dims, T, B, keep, L, D, H, Hr, G, G1, S, K, E, H2, in_gx):
    GH, G1H = G * H, G1 * H
    v = {
        "zero_bias": ws.get("zero_bias", dtype, lambda T_, B_: (GH,)),  # (-0.0, set per call)
        "binit": ws.get("binit", dtype, lambda T_, B_: (GH,)),  # (b_ih + b_hh: FUSE teams)
        "no_whr": ws.get("no_whr", dtype, lambda T_, B_: (0, H)),
        "state_n": tuple(
            ws.get(f"state_n{s}", dtype, lambda T_, B_, w=(Hr if s == 0 else H): (L * D, B_, w))
            for s in range(S)),
        # scratch shared by every layer and direction
        "gh1": ws.get("gh1", dtype, lambda T_, B_: (B_, G1H)),
        "gh2": ws.get("gh2", dtype, lambda T_, B_: (B_, GH - G1H)),
        "pbuf": ws.get("pbuf", dtype, lambda T_, B_: (B_, Hr)),
    }
    nslot = T + 1 if keep else 2
    mslot = T if keep else 1
    for k in range(L):
        tag_y = f"y{k}" if keep else f"y{k % 2}"
        v["y", k] = ws.get(tag_y, dtype, lambda T_, B_: (T_, B_, D * Hr))
        for d in range(D):
            tag = f"{k}_{d}" if keep else ""
            gx = ws.get(f"gx{tag}", dtype, lambda T_, B_: (T_, B_, GH))
            v["dir", k, d] = (
                gx,
                ws.get(f"hp{tag}", dtype, lambda T_, B_, n=nslot - T: (T_ + n, B_, Hr)),
                ws.get(f"st{tag}", dtype, lambda T_, B_, n=nslot - T: (S, T_ + n, B_, H)),
                ws.get(f"u{tag}", dtype, lambda T_, B_, m=mslot - T: (T_ + m, B_, H2)),
                gx if in_gx and d == 0 else  # (same shape: K == G, keep)
                ws.get(f"tp{tag}", dtype, lambda T_, B_, m=mslot - T: (T_ + m, B_, K * H)),
                ws.get(f"mh{tag}", dtype,
                       lambda T_, B_: (T_ if (keep and dims.proj_size) else 0, B_, H)),
                ws.get(f"ex{tag}", dtype, lambda T_, B_: (E, H)),
            )
    return v


#: per-step multiply-adds (B * G*H * Hr) below which the kernels' own product (``_mm`` in
#: cpu_kernels.py.in) replaces BLAS for the recurrent and projection products (0: always BLAS).
#: Below it OpenBLAS spends most of a step in call overhead and in re-packing W_hh (measured
#: on the 2-core EPYC, float32: 8x64 @ 64x256 in 6-7 us by _mm against 17 us by OpenBLAS;
#: forward at T=100, B=8, H=64 went from 3.3 to 1.7 ms). Above it, BLAS with its threads wins.
#: The one-shot products over all steps (input, weight gradients, dx) are BLAS (NumPy's, or
#: SciPy's through Numba's np.dot where the steps use BLAS too: _products) unless a packed
#: path takes them (teams, overlapped chunks, forward_items, _split_grads on AVX-512, small
#: float32 input products of own-path calls: OWN_PACKED_INPUT_MACS).
OWN_PRODUCT_MACS = 1 << 19


def _step_macs(spec: CellSpec, dims: Dims, batch: int) -> int:
    """Multiply-adds of one step's recurrent product (B x Hr @ Hr x G*H)."""
    return batch * spec.num_gates * dims.hidden_size * dims.hr


def own_products(spec: CellSpec, dims: Dims, batch: int) -> bool:
    """Whether a call of this batch size runs its per-step products without BLAS."""
    return _step_macs(spec, dims, batch) < OWN_PRODUCT_MACS


#: smallest batch whose own per-step products (below OWN_PRODUCT_MACS) run over packed weights
#: (``gatecore.kernels.packed``, float32 with AVX2/FMA: ``packed_own``); smaller batches use
#: ``_mm``/``_mmd``, as the micro-kernel's blocks of 4 or 6 rows would then multiply mostly
#: padding. Measured on the 2-core EPYC, one thread, per step (B, K, N): forward (8, 64, 256)
#: 3.7 us against 4.3 (_mm), (16, 64, 256) 6.0 against 8.7, (4, 128, 512) 6.7 against 8.7;
#: backward (8, 256, 64) 3.0 against 3.6 (_mmd); (2, 128, 512) 7.1 against 4.2.
PACKED_OWN_MIN_BATCH = 4


def packed_own(dtype, batch: int) -> bool:
    """Whether a call whose per-step products are the kernels' own runs them packed (never
    for one item: the kernels multiply it by _mmd over weight_hh, whatever the threshold)."""
    return batch >= max(2, PACKED_OWN_MIN_BATCH) and kpacked.usable(dtype)


#: per-step multiply-adds from which the time loops (forward and BPTT) of one-stage cells
#: without projection run in Python, one kernel call per step, with the recurrent product by NumPy's
#: BLAS (OpenBLAS 0.3.31 in NumPy's wheel multiplies 16x1024 @ 1024x4096 in 1.8 ms against
#: 3.2 ms through SciPy's 0.3.30, which Numba's np.dot calls; 64x512 @ 512x2048: 1.1 / 1.4 ms).
EXT_PRODUCT_MACS = 1 << 22


def external_products(spec: CellSpec, dims: Dims, batch: int) -> bool:
    """Whether a call of this batch size runs its time loops step by step in Python."""
    return (_step_macs(spec, dims, batch) >= EXT_PRODUCT_MACS and not spec.two_stage
            and not dims.proj_size)


#: per-step multiply-adds from which float32 calls of one-stage cells without projection
#: multiply each step's recurrent product on two threads by the packed kernels
#: (``gatecore.kernels.packed``: weight_hh packed once per call, or once for prepared
#: parameters; OpenBLAS re-packs it every step). Measured per step on the 2-core EPYC against
#: NumPy's OpenBLAS (two threads): 64x320 @ 320x1280 0.44 against 0.52 ms, 64x512 @ 512x2048
#: 1.07 against 1.17 ms, 16x1024 @ 1024x4096 1.53 against 1.76 ms.
TEAM_MACS = 1 << 19


#: per-step multiply-adds (G*H*Hr) from which an inference call of ONE item over at least
#: TEAM_ONE_MIN_STEPS steps runs its steps on a team as well (and two CPUs are usable,
#: ``overlap.enabled``): each thread multiplies h by its half of weight_hh's rows (packed:
#: one row of A, memory-bound; each half stays in its own core's cache) and applies the
#: rule to its half of the units; the threads meet once per step (a round trip of the
#: flags' cache line took 0.1 us here). Measured in-process, one-thread steps and team
#: alternated in rounds (B=1, I=H, prepared parameters; a noisy host): LSTM H=256 T=300
#: 0.51-0.83 of the time (one round 1.15), T=128 0.48, T=64 1.10, T=32 1.00, T=1 1.7-1.9
#: (the team's start, and packing W_hh each call for a plain mapping); GRU H=256 (not
#: taken) T=300 0.67-1.07, T=64 1.36; LSTM H=128 T=1000 0.87-1.02 (one round 1.25), T=100
#: 1.4-1.8: not taken either. A busy second core slows a team more than the one-thread
#: steps (each step waits for it).
TEAM_ONE_MACS = 1 << 18
TEAM_ONE_MIN_STEPS = 128


def team_one_item(spec: CellSpec, dims: Dims, batch: int, steps: int, training: bool) -> bool:
    """Whether an inference call of one item over ``steps`` steps runs them on a team
    (TEAM_ONE_MACS; the dtype and cell conditions are ``team_products``')."""
    return (batch == 1 and not training and steps >= TEAM_ONE_MIN_STEPS
            and _step_macs(spec, dims, batch) >= TEAM_ONE_MACS and overlap.enabled())


def team_products(spec: CellSpec, dims: Dims, batch: int, dtype, training: bool,
                  steps: int = 0) -> bool:
    """Whether a call's recurrent products run as packed products on two threads.

    Training too, where gatecore can run NumPy's OpenBLAS on one thread
    (``blas.numpy_blas_available``): backward's products over all steps (weight gradients,
    dx) then run as two halves on two threads, one thread of OpenBLAS each, and OpenBLAS's
    own threads never wake to spin against the packed products. One item over ``steps``
    steps in inference: from TEAM_ONE_MACS (``team_one_item``).
    """
    return (kpacked.usable(dtype)
            and (_step_macs(spec, dims, batch) >= TEAM_MACS
                 or team_one_item(spec, dims, batch, steps, training))
            and not spec.two_stage and not dims.proj_size
            and (not training or blas.numpy_blas_available()))


#: multiply-adds of each of backward's products over all steps (T * B * G*H * input size for
#: dW_ih and dx, T * B * G*H * Hr for dW_hh; their sum, T * B * G*H * (input size + Hr), is
#: compared) from which a float32 training call whose steps are not a team's (one
#: item, or small steps over many) runs them as two halves on the two threads as well
#: (``_split_grads``: the packed kernels on AVX-512, NumPy's OpenBLAS on one thread each
#: otherwise) instead of by NumPy's OpenBLAS on its own threads. Measured in-process A/B,
#: LSTM T=1000, B=1, H=I=128 (131M): backward 0.96 of the time on an idle host, 0.37 with
#: another process busy (OpenBLAS's spinning pool suffers most from a shared core).
SPLIT_MACS = 1 << 25


#: whether backward's weight gradients on the halves of ``_split_grads`` run through the
#: packed kernels' ``pgemm_tn`` (AVX-512 targets) rather than NumPy's OpenBLAS on one thread
#: each. Not on Zen 4 (``packed.HALF_512``), where OpenBLAS was faster: in-process A/B of
#: whole training steps (forward + backward, pgemm_tn against OpenBLAS for dW, dx packed in
#: both), LSTM deepbench512 135.5 against 124.3 ms, wide1024 159.5 / 143.9, bench320 158.5 /
#: 150.7, T=1000, B=1, H=128 16.2 / 15.3; GRU deepbench512 104.5 / 101.0, wide1024 109.8 /
#: 105.3, bench320 124.7 / 127.1 and T=1000, B=1, H=128 12.4 / 12.7 (one thread, alone:
#: pgemm_tn 62-65 GFLOP/s at deepbench512's and wide1024's dW against OpenBLAS's 88-91).
#: Each choice gives its own last bits of the weight gradients (about 1e-7 relative).
TN_WEIGHT_GRADS = kpacked.WIDE and not kpacked.HALF_512


def split_grads(spec: CellSpec, dims: Dims, rows: int, din: int, dtype) -> bool:
    """Whether backward's products over all steps (``rows`` = T * B of them, layer input
    size ``din``) run as two halves (``_split_grads``) on a call that is not a team's."""
    return (kpacked.usable(dtype) and not spec.two_stage and not dims.proj_size
            and rows * spec.num_gates * dims.hidden_size * (din + dims.hr) >= SPLIT_MACS
            and blas.numpy_blas_available())


#: input-product multiply-adds (T * B * G*H * input size) from which an inference call whose
#: steps use the kernels' own products computes each layer's input product on a second core,
#: chunk by chunk, while the layer's time loop runs (gatecore.overlap). Handing chunks to a
#: worker that was asleep (calls spaced out, as compare.py samples them after a 0.2-0.3 s
#: pause) costs a fixed 0.1-0.3 ms, so small calls lose. Measured with AVX-512 kernels (Zen 5
#: EPYC, LSTM unless named, overlapped/serial time): T=100, B=8, H=I=64 (13M) 1.39, GRU 1.26;
#: T=1000, B=1, H=I=64 (16M) 1.22, GRU (12M) 1.12; 26M: 0.96 (T=100, B=16, H=64), 1.08
#: (T=200, B=8), 1.16 (T=100, B=4, H=I=128); T=500, B=1, H=I=128 (33M) 0.93; T=300, B=2
#: (39M) 0.96; T=1000, B=1, H=I=128 (65M) 0.90-0.94. (It was 2^21 with the eight-wide
#: kernels.) Inference only: a training call's backward multiplies its weight
#: gradients by OpenBLAS, whose idle threads then spin on the second core for a while, and the
#: worker shared that core with them: forward+backward with overlap (in forward, or in both)
#: measured 5-30% slower, e.g. T=100, B=8, H=64 LSTM 5.9-6.3 ms against 4.4-4.9 ms.
OVERLAP_MACS = 1 << 25


#: multiply-adds of a layer's products over all steps, T * B * G*H * (input size + Hr), from
#: which a call whose per-step products are packed own ones (``packed_own``) runs forward in
#: two halves of the batch (items 0 .. B/2-1 and B/2 .. B-1) on two threads (``overlap.run_pair``),
#: each half with its own input products (``forward_items``): the items' recurrences are
#: independent, so the halves never wait for each other (a team splitting each step's
#: product, as from TEAM_MACS, synchronizes every step).
ITEM_MACS = 1 << 22
#: fewest items for two halves (each half's products then have at least 4 rows)
ITEM_MIN_BATCH = 8


def item_halves(spec: CellSpec, dims: Dims, T: int, B: int, din: int) -> bool:
    """Whether a call on packed own products (``packed_own``) with this layer input size
    runs each layer's forward as two halves of the batch (see ITEM_MACS)."""
    G, H, Hr = spec.num_gates, dims.hidden_size, dims.hr
    return B >= ITEM_MIN_BATCH and T * B * G * H * (din + Hr) >= ITEM_MACS


#: fewest items for ``item_team_cell``
ITEM_TEAM_MIN_BATCH = 8
#: most bytes of recurrent weights (weight_hh) for ``item_team_cell``: each half multiplies
#: all of them every step, a team's thread half of them for twice the rows. Measured
#: in-process A/B against the unit-split team, LSTM inference (noisy host): bench320 (1.6
#: MB) 0.82-1.04, deepbench512 (4 MB) 0.93-1.01, GRU 1.00; H = 1024 (16 MB): B = 16 1.06,
#: B = 32 1.04 (memory-bound: each half streams 16 MB a step)
ITEM_TEAM_MAX_BYTES = 4 << 20
#: forward_item_team's chunks of steps: this many times the multiply-adds of a team's
#: (TEAM_CHUNK_MACS, at most TEAM_CHUNK_MAX_STEPS steps; one call per chunk; the two halves
#: meet at its end). Ctrl-C is answered between chunks (a chunk lasts about 6 ms at the
#: products' full rate, 15-70 ms measured on a busy host at H=512, B=8), not during the
#: layer's input product (as a team's: 0.15 s at T=2000, B=32, H=256).
ITEM_TEAM_CHUNK = 4


#: most units (items * H) of a half of the batch whose steps forward_item_team runs
#: gate-major (_item_steps_gm in cpu_kernels.py.in: inference, FUSE cells): one rule call
#: and one copy per state and step for the half instead of per item; its scratch (the
#: rule's discarded tape among it) stays in the first two cache levels
ITEM_GM_UNITS = 2048


#: a FUSE cell's forward on the halves of a batch (forward_item_team): above this many
#: bytes of the layer's input products (gx: T*B*G*H values, which then come back from
#: memory at every step) each half computes its items' input products step by step
#: instead, just before the recurrent product that starts from them (_jit_input), unless
#: W_ih has more than ITEM_JIT_MAX_WIH bytes (each half reads all of it every step).
#: In-process A/B, LSTM (T, B, I, H): inference (100, 64, 125, 320) 0.90 of the time,
#: (25, 64, 512, 512) 0.96, training forward 0.91 and 1.0; W_ih of 8 MB (25, 64, 2048,
#: 256) 0.99, of 24 MB (25, 64, 6144, 256) 1.36
ITEM_JIT_BYTES = 4 << 20
ITEM_JIT_MAX_WIH = 8 << 20


def _gm_scratch(ws, dtype, spec: CellSpec, H: int, B: int, on: bool):
    """Scratch of _item_steps_gm per thread of an item team (``on``), else two empty
    arrays: [1, 1, (2*S + E + K + G) * ceil(B/2) * H]."""
    m = (B - B // 2) * H
    n = 0
    if on and m <= ITEM_GM_UNITS:
        n = (2 * spec.num_states + spec.num_extra + spec.tape_size + spec.num_gates) * m
    return ws.fixed(("gm", dtype, n), lambda: tuple(
        ws.get(f"gm{i}", dtype, lambda T_, B_: (1, 1, n)) for i in range(2)))


def item_team_cell(spec: CellSpec, dims: Dims, dtype, B: int) -> bool:
    """Whether a float32 call on the packed products (a team's, ``team_products``, in
    inference and training, or in inference the kernels' own, ``packed_own``) of a
    one-stage cell without projection runs each layer's forward as two halves of the batch
    on a team (``forward_item_team`` in cpu_kernels.py.in): the input product over all
    steps split by column panels on both threads (FUSE cells above ITEM_JIT_BYTES: each
    half's own, step by step), then items 0 .. B/2-1 on this thread and B/2 .. B-1 on the
    worker, each with all hidden units (a team splitting every step by units meets at every
    step; the halves of the batch only at the end of a chunk of steps; small halves of FUSE
    cells in inference gate-major, ITEM_GM_UNITS). Other cells take ``forward_items``
    (ITEM_MACS) or the unit-split team; backward always runs on the unit-split team."""
    return (B >= max(2, ITEM_TEAM_MIN_BATCH) and kpacked.usable(dtype) and not spec.two_stage
            and not dims.proj_size
            and spec.g1 * dims.hidden_size * dims.hr * 4 <= ITEM_TEAM_MAX_BYTES)


def overlap_pays(B: int, GH: int, Hr: int, H: int, I: int) -> bool:
    """Whether overlapping a layer's input product with its time loop should pay off.

    A cost model per step, in ns, from single-core measurements on the 2-core EPYC (float32):
    the time loop costs ``rec`` (its own recurrent product at 33 ns per 1000 multiply-adds,
    46 with one batch item, plus about 7 ns per unit and item of pointwise work); the input
    product costs ``gnp`` on NumPy's two-thread BLAS (17 ns per 1000) or ``gown`` on the
    worker (45 ns per 1000, the kernels' own loop). Overlapped the call takes about
    max(rec, gown), serially rec + gnp; it must save 15%. Measured in separate processes
    (A/B after a pause, as compare.py samples; LSTM): T=1000, B=1, H=128, input 128: 15-23%
    faster (model: yes); T=100, B=8, H=64, input 64: about 4% faster (yes, at the margin; an
    in-process on/off alternation measured it 10% slower); input 128: 15% slower (no); T=300,
    B=4, input 512: 1.9x slower (no); T=1000, B=1, H=128, input 256: 10-20% faster (the model
    says no: conservative there). The constants are those of ``_mm``; float32 now runs both
    the worker's chunks and (from PACKED_OWN_MIN_BATCH items) the recurrent products over packed
    weights, about 1.3-2x faster per multiply-add, which lowers ``gown`` and ``rec`` alike:
    the model was not refitted (two-thread timings on this host varied by 1.5x within minutes,
    more than the refit would change).
    """
    rec = B * GH * Hr * (0.046 if B == 1 else 0.033) + B * H * 7.0
    gnp = B * GH * I * 0.017
    gown = B * GH * I * 0.045
    return max(rec, gown) < 0.85 * (rec + gnp)


def _split_grads(dax2d, dah2d, x2d, hp2d, wih, dx2d, tmp, dparams, sfx, ones, bias, ws, same,
                 wihp, linger=True):
    """Backward's products over all steps for one-stage cells without projection, as two
    halves at once (this thread and the worker): dW_ih and dW_hh by halves of their rows
    (or columns), dx by halves of its rows (added to it with ``tmp``: the second direction),
    the biases' column sums one each.

    On AVX-512 targets (``packed.WIDE``, float32) the weight gradients run through
    ``pgemm_tn`` where their shapes have whole pairs of panels (``_tn_plan``; not on Zen 4:
    ``TN_WEIGHT_GRADS``), and dx
    through ``pgemm`` over W_ih packed by columns (one thread: 1.4-1.8x NumPy's OpenBLAS
    at bench320's shapes; training 5-15% faster at bench320/deepbench512/wide1024; halves
    split by rows where X is the wider operand: LSTM deepbench512 this part 39.5 -> 30.0 ms
    with pgemm_tn's k-major packing, bench320 44.9 -> 34.4); the rest
    is NumPy's OpenBLAS, on one thread in each half. When NumPy's OpenBLAS count cannot be
    set to one (a call from another thread), the halves run one after the other, as before.
    ``linger``: whether the worker spins for the next call's job afterwards (``overlap``;
    false where NumPy's OpenBLAS comes next, whose threads it would slow down).
    ``same``: dah2d is dax2d (a dah_is_dax cell): the halves sum half of its columns each,
    for bias_ih, and bias_hh is a copy. ``wihp``: W_ih packed by columns (``_wih_cols``, which
    checks that dax2d and dx2d are C-contiguous) or None (dx by OpenBLAS)."""
    GH, G1H, M = dax2d.shape[1], dah2d.shape[1], dx2d.shape[0]
    dw_ih, dw_hh = dparams["weight_ih" + sfx], dparams["weight_hh" + sfx]
    dtype = dax2d.dtype
    I = wih.shape[1]
    # dW by our kernels, not OpenBLAS (TN_WEIGHT_GRADS)
    tn = bool(kpacked.WIDE and TN_WEIGHT_GRADS and kpacked.usable(dtype) and M)
    p_ih = _tn_plan(dax2d, x2d, ws, "ih") if tn else None
    p_hh = _tn_plan(dah2d, hp2d, ws, "hh") if tn else None
    xps = [_tn_scratch(ws, dtype, h, max(x2d.shape[1], GH, hp2d.shape[1], G1H))
           for h in (0, 1)] if (p_ih or p_hh) else None
    tiles = _team_buffers(ws, dtype)[1] if wihp is not None else None

    def half(h):
        with np.errstate(all="ignore"):  # per thread: as _fp_quiet for the caller
            _half(h)

    def _half(h):
        r_ih = slice(0, GH // 2) if h == 0 else slice(GH // 2, GH)
        r_hh = slice(0, G1H // 2) if h == 0 else slice(G1H // 2, G1H)
        rows = slice(0, M // 2) if h == 0 else slice(M // 2, M)
        if p_ih is not None:
            _tn_half(p_ih, dax2d, x2d, dw_ih, h, xps[h])
        else:
            np.matmul(dax2d[:, r_ih].T, x2d, out=dw_ih[r_ih])
        if p_hh is not None:
            _tn_half(p_hh, dah2d, hp2d, dw_hh, h, xps[h])
        else:
            np.matmul(dah2d[:, r_hh].T, hp2d, out=dw_hh[r_hh])
        if bias and same:
            cols = slice(0, GH // 2) if h == 0 else slice(GH // 2, GH)
            np.matmul(ones, dax2d[:, cols], out=dparams["bias_ih" + sfx][cols])
        elif bias:
            if h == 0:
                np.matmul(ones, dax2d, out=dparams["bias_ih" + sfx])
            else:
                np.matmul(ones, dah2d, out=dparams["bias_hh" + sfx][:G1H])
        out = dx2d if tmp is None else tmp
        if wihp is not None:
            r0, r1 = rows.start, rows.stop
            kpacked.pgemm(dax2d, r0 * GH, wihp, out[r0:r1], r1 - r0, GH, I, 0,
                          -(-I // kpacked.NR), tiles[h], kpacked.KCMAX, kpacked.AFLOATS)
        else:
            np.matmul(dax2d[rows], wih, out=out[rows])
        if tmp is not None:
            dx2d[rows] += tmp[rows]

    with overlap.hold_sigint():
        with blas.numpy_blas_one_thread() as single:
            if single:
                overlap.run_pair(lambda: half(0), lambda: half(1), sigint_held=True,
                                 linger=linger)
        if not single:  # OpenBLAS's count not settable from here: its own threads, one each
            half(0)
            half(1)
    if bias and same:
        dparams["bias_hh" + sfx][...] = dparams["bias_ih" + sfx]


def _wih_cols(wih, ws, dtype, dax, dx2d):
    """The workspace buffer for W_ih packed by columns (dx2d = dax W_ih on AVX-512 targets,
    _split_grads: it reads both C-contiguous), or None where dx goes to OpenBLAS."""
    if not (kpacked.WIDE and kpacked.usable(dtype) and dx2d.shape[0]
            and dax.flags.c_contiguous and dx2d.flags.c_contiguous):
        return None
    GH, I = wih.shape
    return ws.get("b_wihcols", dtype, lambda T_, B_: (kpacked.packed_size(GH, I),))


def _tn_plan(a2d, b2d, ws, tag):
    """How ``pgemm_tn`` computes dW = a2d^T @ b2d [Ma, Nb] (a2d [K, Ma], b2d [K, Nb], float32
    on an AVX-512 target, K > 0), or None (NumPy's OpenBLAS): ("direct", Nb/32 pairs, None,
    by_rows) when Nb is whole pairs of panels, else ("t", Ma/32 pairs, scratch [Nb, Ma],
    by_rows) computing dW^T = b2d^T @ a2d and copying it back transposed, when Ma is.

    ``by_rows``: the two halves split the product's rows (X's columns) rather than its pairs
    of columns, when X is the wider operand: each thread then packs half of X and all of D
    instead of all of X and half of D (pgemm_tn packs both per call)."""
    if not (a2d.flags.c_contiguous and b2d.flags.c_contiguous):
        return None
    Ma, Nb = a2d.shape[1], b2d.shape[1]
    if Nb and Nb % 32 == 0:
        return ("direct", Nb // 32, None, Ma > Nb)
    if Ma and Ma % 32 == 0:
        ct = ws.get(f"b_tn_{tag}", a2d.dtype, lambda T_, B_: (Nb, Ma))
        return ("t", Ma // 32, ct, Nb > Ma)
    return None


def _tn_scratch(ws, dtype, h, N):
    nx, nd = kpacked.tn_scratch(N)
    return (ws.get(f"b_tnx{h}", dtype, lambda T_, B_: (nx,)),
            ws.get(f"b_tnd{h}", dtype, lambda T_, B_: (nd,)))


def _tn_half(plan, a2d, b2d, out, h, scratch):
    """Half h of out = a2d^T @ b2d by ``plan`` (``_tn_plan``): half of its pairs of panels,
    or of its rows (whole blocks of six)."""
    kind, nq, ct, by_rows = plan
    x, d = (a2d, b2d) if kind == "direct" else (b2d, a2d)
    c = out if kind == "direct" else ct
    K, M = x.shape
    if by_rows:
        cut = (M // 2 + kpacked.MR - 1) // kpacked.MR * kpacked.MR
        i0, i1 = (0, min(cut, M)) if h == 0 else (min(cut, M), M)
        q0, q1 = 0, nq
    else:
        i0, i1 = 0, M
        q0, q1 = (0, nq // 2) if h == 0 else (nq // 2, nq)
    if i0 == i1 or q0 == q1:  # (one pair, or a few rows: all of it in the other half)
        return
    xp, dp = scratch
    ldc = c.shape[1]
    kpacked.pgemm_tn(x, i0, M, d, 0, d.shape[1], c, i0 * ldc, ldc, i1 - i0, K, q0, q1, xp, dp)
    if kind == "t":  # out^T = b2d^T @ a2d: rows i0..i1 and pairs q0..q1 of it
        out[32 * q0:32 * q1, i0:i1] = ct[i0:i1, 32 * q0:32 * q1].T


def _team_buffers(ws, dtype):
    """(flags, tiles [2, 6*16], empty packed weights) for the packed products' teams."""
    return ws.fixed(("team", dtype), lambda: _make_team_buffers(ws, dtype))


def _make_team_buffers(ws, dtype):
    flags = ws.get("team_flags", np.dtype(np.int64), lambda T_, B_: (kpacked.FLAGS,))
    tiles = ws.get("team_tiles", dtype, lambda T_, B_: (2, kpacked.MR * kpacked.NR))
    no_wp = ws.get("no_wp", dtype, lambda T_, B_: (0,))
    return flags, tiles, no_wp


def _packed_rows(pk, name, w, n, ws, dtype, blocks=1):
    """``w[:blocks*n]`` packed by ``pack_rows`` as ``blocks`` blocks of n rows (one per gate:
    a team thread's hidden units are then whole panels of every gate): made once and kept in
    the layout ``pk`` of prepared parameters (at the first call that needs it; two threads
    racing make the same array), otherwise packed into the workspace buffer ``name``."""
    hit = pk.get(name) if pk is not None else None
    if hit is not None:
        return hit
    sz = kpacked.packed_size(w.shape[1], n)
    out = (np.empty(blocks * sz, dtype) if pk is not None
           else ws.get(name, dtype, lambda T_, B_: (blocks * sz,)))
    for g in range(blocks):
        kpacked.pack_rows(w, g * n, n, out[g * sz:(g + 1) * sz])
    if pk is not None:
        pk[name] = out
    return out


#: bytes of each of two weight matrices from which a call packs them at once on the two
#: threads (``overlap.run_pair``: forward's W_ih and W_hh by rows, backward's by columns)
#: instead of one after the other. Measured as compare.py samples (0.3 s pause before each
#: call, in-process A/B, LSTM training): wide1024 (16 MB each) 0.92 of the time, deepbench512
#: (4 MB) 0.96, bench320 (0.6 and 1.6 MB) 1.01: waking the worker costs 0.1-0.3 ms.
PAIR_PACK_BYTES = 2 << 20


def _pack_jobs(jobs):
    """Run packing jobs, (fn, bytes packed) each: two at once on the two threads when both
    pack PAIR_PACK_BYTES or more, otherwise one after the other."""
    if len(jobs) == 2 and min(n for _, n in jobs) >= PAIR_PACK_BYTES:
        overlap.run_pair(jobs[0][0], jobs[1][0])
    else:
        for fn, _ in jobs:
            fn()


def _team_packs(pk, group, ws, dtype, G1, H):
    """W_ih packed by rows (the team's input product) and weight_hh[:G1*H] by rows gate by
    gate (its recurrent products): cached in ``pk`` for prepared parameters, else into the
    workspace (_pack_jobs)."""
    if pk is not None and "wihp" in pk and "w1g" in pk:  # packed at a call before
        return pk["wihp"], pk["w1g"]
    wih, whh = group["weight_ih"], group["weight_hh"]
    GH = wih.shape[0]
    out = [None, None]
    have = () if pk is None else pk  # (packed before: nothing to pack, no second thread)

    def a():
        out[0] = _packed_rows(pk, "wihp", wih, GH, ws, dtype)

    def b():
        out[1] = _packed_rows(pk, "w1g", whh, H, ws, dtype, G1)
    _pack_jobs([(a, 0 if "wihp" in have else wih.nbytes),
                (b, 0 if "w1g" in have else whh[:G1 * H].nbytes)])
    return out[0], out[1]


def _team_input_product(wihp, in2d, gx2d, flags, tiles, bias):
    """gx2d = in2d @ W_ih^T + bias [G*H] by packed products on two threads, over W_ih packed
    by rows (``wihp``, from _team_packs)."""
    M, I = in2d.shape
    GH = gx2d.shape[1]
    split = -(-GH // kpacked.NR) // 2
    overlap.run_team(
        kpacked.team_worker, (flags, in2d, wihp, gx2d, M, I, GH, split, tiles[1], bias), flags,
        lambda _: kpacked.team_step(flags, 1, in2d, 0, wihp, gx2d, M, I, GH, split, tiles[0],
                                    bias, overlap.go_hand()), go=True)


#: multiply-adds of a layer's input product (T * B * G*H * input size) below which a
#: float32 call on the kernels' own path that does not overlap it computes it on this thread
#: by the packed products (over W_ih packed by rows) instead of NumPy's OpenBLAS. OpenBLAS's
#: threads spin for 0.1-0.3 s after a product and take a core from the worker of the next
#: two-thread call (LSTM T=100, B=8, H=I=64 inference right after a T=10 call: 0.86-1.1 ms
#: with this threshold against 1.27-1.50 without), and small products cost it more than
#: they take here (float32 with AVX2/FMA, ``kpacked.usable``; forward of training calls too). Measured
#: in-process (Zen 3, LSTM, H=64; T, B, I: macs): 100, 1, 64 (1.6M) 230 against 288 us a
#: call; 30, 4, 64 (2M) 208 / 249; 100, 4, 64 (6.5M) 688 / 691; above, OpenBLAS's two
#: threads are faster: 100, 4, 128 (13M) 985 / 892; 100, 4, 256 (26M) 1167 / 922. (Shared
#: between the two threads by column panels, as a team's, these took 90-230 us longer.)
OWN_PACKED_INPUT_MACS = 1 << 23


#: multiply-adds of recurrent products per kernel call of a team's time loop: the loop runs in
#: chunks of steps so that Ctrl-C is answered within a few ms (one call of the whole loop took
#: 1.3 s to answer at H=1024, B=32, T=400); a call costs about 20 us.
TEAM_CHUNK_MACS = 1 << 27
#: most steps per chunk: at small products a step's fixed costs (the rule's pointwise work,
#: the loop's) outweigh its multiply-adds (H=16, B=8: one chunk of 65536 steps took 0.1 s);
#: a chunk of 256 steps lasts 0.3 ms or more, against a call's 20 us
TEAM_CHUNK_MAX_STEPS = 256


def _team_chunks(T, step_macs, scale=1):
    """Step bounds of a team's time loop in chunks of about ``scale`` * TEAM_CHUNK_MACS
    multiply-adds (``step_macs`` a step), 1 to TEAM_CHUNK_MAX_STEPS steps each."""
    n = min(TEAM_CHUNK_MAX_STEPS, max(1, scale * TEAM_CHUNK_MACS // max(step_macs, 1)))
    return list(range(0, T, n)) + [T]


def _team_loop(run, T, step_macs, reverse_order, scale=1):
    """body for run_team: run(k0, k1) over chunks (last chunk first if ``reverse_order``;
    ``scale``: see _team_chunks), stopping early on Ctrl-C."""
    b = _team_chunks(T, step_macs, scale)
    spans = list(zip(b[:-1], b[1:]))
    if reverse_order:
        spans.reverse()

    def body(interrupted):
        for k0, k1 in spans:
            if interrupted():
                return
            run(k0, k1)
    return body


def _packed_input_product(in2d, wihp, gx2d, tile):
    """gx2d [M, G*H] = in2d [M, I] @ W_ih^T on this thread, over W_ih packed by rows
    (``wihp``, ``_packed_rows``) with this thread's scratch ``tile``; in2d and gx2d rows
    C-contiguous (slices of rows are fine)."""
    M, I = in2d.shape
    GH = gx2d.shape[1]
    kpacked.pgemm(in2d, 0, wihp, gx2d, M, I, GH, 0, -(-GH // kpacked.NR), tile, kpacked.KCMAX,
                  kpacked.AFLOATS)


def _item_team_forward(mod, T, step_macs, jit, flags, in2d, wihp, binit, cargs, rows_1,
                       wargs):
    """A layer and direction's forward as two halves of the batch on a team
    (``forward_item_team``, see ``item_team_cell``): ``cargs`` the caller's arguments from gx
    on (``targs``), ``rows_1`` the worker's scratch, gate-major scratches and ``jit``,
    ``wargs`` the worker's arguments after its head. Every argument but ``in2d`` (x's 2-D
    view at layer 0) is a workspace view or a prepared array (run again by a ``Replay``)."""
    head = (flags, in2d, wihp, binit)
    seq = [1]  # (the first call's jobs: 1, the input product (not jit), and 2)

    def run(k0, k1):
        mod.forward_item_team(k0, k1, seq[0], *head, *cargs, *rows_1, overlap.go_hand())
        seq[0] += 2 if seq[0] == 1 and not jit else 1
    overlap.run_team(mod.item_team_worker, (*head, *wargs), flags,
                     _team_loop(run, T, step_macs, False, ITEM_TEAM_CHUNK), go=True)


def _team_forward(mod, T, step_macs, flags, cargs, wargs):
    """A layer and direction's time loop on the unit-split team (``forward_team``; the
    input product done, ``_team_input_product``): ``cargs``/``wargs`` the caller's and
    the worker's arguments from gx on (``targs``)."""
    overlap.run_team(
        mod.team_forward_worker, (flags, *wargs), flags,
        _team_loop(lambda k0, k1: mod.forward_team(k0, k1, flags, *cargs, overlap.go_hand()),
                   T, step_macs, False), go=True)


def _items_forward(mod, T, B, in2d, wihp, args, args1):
    """A layer and direction's forward as two halves of the batch on two threads, input
    products included (``forward_items``): ``args``/``args1`` forward_dir's arguments with
    the caller's and the worker's scratch rows and tiles (``fargs``)."""
    bh = B // 2
    a0 = (in2d, wihp, *args, 0, T, False, 0, bh)
    a1 = (0, 0, in2d, wihp, *args1, 0, T, False, bh, B)  # (no hand, no job: the worker's
    # half says no go and waits for nobody)
    overlap.run_pair(lambda: mod.forward_items(overlap.go_hand(), overlap.job_state(), *a0),
                     lambda: mod.forward_items(*a1), go=True)


def _overlapped_forward(mod, args, T, B, reverse, in2d, wihc, gx2d, wihp, tiles):
    """forward_dir over all steps, the input product of later chunks on the worker (over
    ``wihp``, W_ih packed, when not None; else ``wihc``, W_ih^T, by ``_mm``).

    A packed product's scratch tile is per thread: the worker's is ``tiles[1]``; a chunk
    this thread computes (the worker had not reached it) uses ``tiles[0]``, which this
    thread's own time loop also uses, never at the same time. (One shared tile let the two
    threads' products of different chunks write each other's last panel: a GRU's output
    was 0.16 off in a CI run on an overloaded machine.)"""
    def produce(k0, k1, on_worker):
        t0, t1 = (T - k1, T - k0) if reverse else (k0, k1)
        if wihp is not None:
            _packed_input_product(in2d[t0 * B:t1 * B], wihp, gx2d[t0 * B:t1 * B],
                                  tiles[1] if on_worker else tiles[0])
        else:
            mod._mm(in2d[t0 * B:t1 * B], wihc, 0, gx2d[t0 * B:t1 * B])

    def consume(k0, k1):
        mod.forward_dir(*args, k0, k1, False, 0, B)

    overlap.run_chunked(overlap.chunk_bounds(T), produce, consume)


def _np_gemm(a, b, out):
    np.matmul(a, b, out=out)


def _np_gemm_acc(a, b, out, tmp):
    np.matmul(a, b, out=tmp)
    out += tmp


def _products(own: bool, ext: bool):
    """(gemm, gemm_acc) for a call's one-shot products, from the BLAS its steps use.

    OpenBLAS's idle threads spin for a while after each product; two libraries' pools
    (NumPy's and SciPy's, which Numba's np.dot calls) busy at once on two cores ran every
    product at half speed (measured: forward+backward 2x slower). A call whose per-step
    products run in the kernels (Numba's np.dot, SciPy's BLAS) does all its products there;
    otherwise NumPy's BLAS does them all, the pool that the caller's own NumPy code also uses.
    Before a call's first compiled np.dot, Numba's BLAS check runs (``blas_checked``: set-up
    deferred it, and a kernel loaded from the cache never runs it).
    """
    if own or ext:
        return _np_gemm, _np_gemm_acc
    blas_checked()
    return gemm, gemm_acc


#: forward_dir's scratch rows, in its argument order
_FWD_ROWS = ("axr", "ahr", "spr", "snr", "ur", "tpr")
#: a team's forward step's (_team_fwd_half), in its argument order
_TEAM_FWD_ROWS = ("spr", "snr", "tpr", "exr")


def _rows(ws, dtype, spec, H, prefix="r_"):
    """Per-item scratch rows the kernels copy one batch item into (see cpu_kernels.py.in);
    the worker thread of a team or of two halves of a batch has its own set (``prefix``
    "r1_")."""
    G, S, K = spec.num_gates, spec.num_states, spec.tape_size
    E = spec.num_extra
    return ws.fixed(("rows", prefix, dtype, G, S, K, E, H),
                    lambda: _make_rows(ws, dtype, G, S, K, E, H, prefix))


def _make_rows(ws, dtype, G, S, K, E, H, prefix):
    shapes = dict(axr=(G * H,), ahr=(G * H,), daxr=(G * H,), dahr=(G * H,), tpr=(K * H,),
                  spr=(S, H), snr=(S, H), dsr=(S, H), dspr=(S, H), ur=(H,), dur=(H,),
                  exr=(E, H), dexr=(E, H))
    return {n: ws.get(prefix + n, dtype, lambda T_, B_, sh=sh: sh) for n, sh in shapes.items()}


def _usable_as_is(arr, dtype) -> bool:
    """Whether the kernels can read the caller's array directly (no new Numba specialization)."""
    f = arr.flags
    return arr.dtype == dtype and f.c_contiguous and f.aligned and f.writeable


def _x0_buffer(ws, dtype, I):
    """The workspace's copy of x [T, B, I] (``_stage_inputs``; a recorded call's, ``Replay``)."""
    return ws.get("x0", dtype, lambda T_, B_: (T_, B_, I))


def _stage_inputs(spec, dims, layers, xa, states, lengths, padded, ws, dtype, keep):
    """Stage x, the initial states and the parameters in the workspace (no allocation).

    x is stored time-major with padded steps zeroed (for the weight gradients). With ``keep``
    (training) the parameters are copied so that the tape never depends on the caller's
    arrays (changing them before ``backward`` is safe); without, the caller's C-contiguous
    arrays of the right dtype are read in place (never written) and only the others are
    copied (x too, with one direction; prepared parameters, gatecore's own C-contiguous
    copies, are always read in place this way).
    """
    T, B, I = xa.shape
    L, D, Hr, H = dims.num_layers, dims.num_directions, dims.hr, dims.hidden_size
    if not keep and dims.num_directions == 1 and _usable_as_is(xa, dtype):
        # inference reads x in place: padded steps' products are never used, and x is read
        # in full (input GEMM) before anything is written, even when x is an earlier call's
        # output in this workspace (not so with two directions: the second one reads x after
        # the first wrote y)
        x0 = xa
    else:
        x0 = _x0_buffer(ws, dtype, I)
        np.copyto(x0, xa)
    if padded and x0 is not xa:
        for b in np.nonzero(lengths < T)[0]:
            x0[lengths[b]:, b] = 0
    state0 = []
    for s, value in enumerate(states):
        buf = ws.get(f"state0_{s}", dtype, lambda T_, B_, w=(Hr if s == 0 else H): (L * D, B_, w))
        if value is None:
            buf.fill(0)
        else:
            np.copyto(buf, value)
        state0.append(buf)
    staged = []
    for k, per_dir in enumerate(layers):
        row = []
        for d, group in enumerate(per_dir):
            copies = {}
            for prefix, arr in group.items():
                if not keep and _usable_as_is(arr, dtype):
                    copies[prefix] = arr
                    continue
                buf = ws.get(f"p_{prefix}{_sfx(k, d)}", dtype, lambda T_, B_, sh=arr.shape: sh)
                np.copyto(buf, arr)
                copies[prefix] = buf
            row.append(copies)
        staged.append(row)
    return x0, tuple(state0), staged


def _fp_quiet(fn):
    """Run ``fn`` with NumPy's floating-point warnings off: non-finite inputs give NaN/inf
    outputs as in PyTorch, silently, whichever library does a call's products (the kernels'
    own loops never warn; NumPy's matmul would, and -W error would turn that into an error)."""
    @functools.wraps(fn)
    def quiet(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)
    return quiet


def _drop(ws, dtype, k, y, dropout, masks):
    """Dropout on layer k's output y [T, B, W] in training (PyTorch's ``dropout``, Srivastava
    et al. 2014, inverted): each element kept with probability 1 - p and scaled by
    1 / (1 - p), or zeroed; ``dropout`` = (p, numpy Generator). The mask (0 or 1/(1-p)) is
    appended to ``masks`` for backward; returns the next layer's input (workspace views)."""
    m = ws.get(f"dmask{k}", dtype, lambda T_, B_, w=y.shape[2]: (T_, B_, w))
    out = ws.get(f"dropped{k}", dtype, lambda T_, B_, w=y.shape[2]: (T_, B_, w))
    draw_mask(dropout, m)
    np.multiply(y, m, out=out)
    masks.append(m)
    return out


def draw_mask(dropout, m) -> None:
    """Fill ``m`` (a C-contiguous float32/float64 host array) with a dropout mask: 1/(1-p)
    where a uniform draw in [0, 1) is at least p, else 0; ``dropout`` = (p, Generator).
    (The GPU backend draws its masks here too, then copies them to the device.)"""
    p, gen = dropout
    if p >= 1.0:
        m.fill(0)
        return
    t = m.dtype.type
    flat = m.reshape(-1)
    gen.random(out=flat, dtype=m.dtype)  # uniform in [0, 1)
    flat += t(1.0 - p)                   # [1-p, 2-p): the floor is 1 iff the draw is >= p
    np.floor(flat, out=flat)
    flat *= t(1.0 / (1.0 - p))


@_fp_quiet
def run_forward(spec: CellSpec, dims: Dims, layers, xa, states, lengths, padded, ws: Workspace,
                training: bool, batch_first: bool, unbatched: bool, dtype, packed=None,
                dropout=None, rec=None):
    """Run the network on validated inputs.

    ``xa`` [T, B, I] is a time-major view of x (any strides), ``states`` a tuple with None or
    [L*D, B, *] per state variable, ``layers`` the caller's parameter arrays; all are copied
    into the workspace first (inference reads C-contiguous ones of the right dtype in place).
    ``packed`` (inference only): the transposed weights of prepared parameters
    (``PreparedParams._layout``), whose arrays are gatecore's own and are read in place.
    ``dropout`` (training only): (p, numpy Generator) for dropout between layers (``_drop``).
    ``rec`` (inference with prepared parameters): a ``Replay`` that records the call's work
    after staging (see there); it stays unusable (``ok`` false) unless every layer took the
    one-thread own path.
    Returns ``(y [T, B, D*Hr], state_n tuple, tape or None)`` as workspace views.
    """
    T, B, _ = xa.shape
    L, D, H, Hr = dims.num_layers, dims.num_directions, dims.hidden_size, dims.hr
    G, G1, S = spec.num_gates, spec.g1, spec.num_states
    GH, G1H, G2H = G * H, G1 * H, (G - G1) * H
    mod = cpu_kernels(spec, dtype)
    gen = ws._begin(T, B)
    keep = bool(training)
    if rec is not None and (keep or packed is None or padded):
        rec.ok = False
    given = layers
    x, state0, layers = _stage_inputs(spec, dims, layers, xa, states, lengths, padded, ws, dtype,
                                      keep)
    swap = {}  # id(argument) -> (argument, what the recorded call gets instead); holding the
    # argument keeps its id from being reused by another object during this call
    if rec is not None and rec.ok:
        # (a parameter copied into the workspace could be overwritten by another call
        # between replays: record only calls that read every parameter in place)
        rec.ok = all(a is given[k][d][p] for k, per in enumerate(layers)
                     for d, group in enumerate(per) for p, a in group.items())
        rec.x0, rec.state0 = x, state0
        rec.inplace = dims.num_directions == 1
        if x is xa:  # x read in place: recorded as the workspace's x0, where a replay puts
            rec.x0 = _x0_buffer(ws, dtype, xa.shape[2])  # its own x (or a copy of it)
            swap[id(x)] = (x, rec.x0)  # (layer 0's input, as its 2-D view below)

    def swapped(a, at):
        hit = swap.get(id(a))
        if hit is None or hit[0] is not a:
            return a
        rec.xslots.append((len(rec.ops), at, hit[1]))
        return hit[1]

    def do(fn, *args):  # (run, and record for replay)
        if rec is not None and rec.ok:
            rec.ops.append((fn, tuple(swapped(a, i) for i, a in enumerate(args)) if swap
                            else args))
        return fn(*args)

    views = _forward_views(ws, dtype, spec, dims, T, B, keep,
                           keep and not mod.AXB and not spec.two_stage)
    zeros_bias, no_whr, gh1, gh2, pbuf = (views[n] for n in ("zero_bias", "no_whr", "gh1",
                                                              "gh2", "pbuf"))
    do(zeros_bias.fill, -0.0)  # (an exact additive identity: x + -0.0 is x, also for x = -0.0)
    state_n = views["state_n"]
    own = own_products(spec, dims, B)
    team = team_products(spec, dims, B, dtype, keep, T)
    own = own and not team
    pown = own and packed_own(dtype, B)
    ext = external_products(spec, dims, B) and not team
    mm = _products(own, ext or team)[0]
    rows = _rows(ws, dtype, spec, H)
    rows1 = _rows(ws, dtype, spec, H, "r1_") if (team or pown) else None
    w2c = whrc = no_whr  # empty unless the cell is two-stage / has a projection
    flags, tiles, no_wp = _team_buffers(ws, dtype)

    xs = [x]
    buffers = {}
    masks = []
    layer_in = x
    empty = np.flatnonzero(lengths == 0) if (keep and padded and T) else None
    empty = empty if empty is not None and empty.size else None
    # (training: a team's forward only, whose tape is the same; the one-thread path's
    # gx holds no biases)
    item_team_ok = (team or (pown and not keep)) and item_team_cell(spec, dims, dtype, B)
    for k in range(L):
        y = views["y", k]
        in2d = layer_in.reshape(T * B, layer_in.shape[2])
        if k == 0 and id(x) in swap:
            swap[id(in2d)] = (in2d, swap[id(x)][1].reshape(T * B, layer_in.shape[2]))
        # (not when x, read in place, overlaps this layer's y: an earlier output of this
        # workspace; its later rows would be overwritten before the worker had read them)
        alias = np.may_share_memory(layer_in, y)
        halves = T > 0 and (team or item_halves(spec, dims, T, B, in2d.shape[1]))
        # (iteam: the input product is complete before either half writes y, so an x
        # aliasing y is fine, unless each half computes it step by step (jit: not then);
        # without a worker the caller runs both halves)
        iteam = item_team_ok and halves and not ext
        items_ = (not keep and pown and not ext and halves and not iteam
                  and overlap.enabled())  # (items and pipe but for the alias)
        items = items_ and not alias
        pipe_ = (not keep and own and T > 1 and B > 0 and not items and not iteam
                 and T * B * GH * in2d.shape[1] >= OVERLAP_MACS
                 and overlap_pays(B, GH, Hr, H, in2d.shape[1]) and overlap.enabled())
        pipe = pipe_ and not alias
        if rec is not None and (ext or (alias and (iteam or items_ or pipe_))):
            rec.ok = False  # (steps in Python: not replayed; nor a call whose path x's
            # aliasing this workspace's y decided (two threads or one, step-by-step input
            # products or not): the next call with the same key may not alias)
        if rec is not None and k == 0:
            rec.y0 = y
            rec.alias_path = bool(iteam or items_ or pipe_)
        if rec is not None and (team or iteam or items or pipe):
            rec.threaded = True
        for d in range(D):
            group = layers[k][d]
            tag = f"{k}_{d}" if keep else ""
            gx, hp, st, u, tp, mh, ex = views["dir", k, d]
            do(_fill_extras, spec, dims, group, ex)
            gx2d = gx.reshape(T * B, GH)
            pk = packed[k][d] if packed is not None else None
            bih = group["bias_ih"] if dims.bias else zeros_bias
            bhh = group["bias_hh"] if dims.bias else zeros_bias
            wp = no_wp  # (team: weight_hh[:G1H] packed gate by gate)
            if T * B and (team or iteam):  # packed on two threads, no BLAS (team_products)
                # (gx = x W_ih^T + b_ih, + b_hh too for the kernels' FUSE cells: see
                # _team_fwd_half in cpu_kernels.py.in)
                binit = bih
                if mod.FUSE:
                    binit = views["binit"]
                    do(np.add, bih, bhh, binit)
                    if rec is not None:
                        rec.quiet = True  # (an overflowing sum warns: not in a replay either)
                wihp, wp = _team_packs(pk, group, ws, dtype, G1, H)
                if not iteam:  # (forward_item_team's first job)
                    do(_team_input_product, wihp, in2d, gx2d, flags, tiles, binit)
            elif T * B:  # W_ih^T stored: OpenBLAS's NN product beats a transposed view
                wih = group["weight_ih"]  # (6400x125 @ 125x1280: 22 against 29 ms)
                small = own and T * B * GH * in2d.shape[1] < OWN_PACKED_INPUT_MACS
                if (pipe or items or small) and kpacked.usable(dtype):  # packed W_ih: the
                    wihc = None  # worker's chunks (pipe), each half's own items
                    # (forward_items), or a small product here (OWN_PACKED_INPUT_MACS)
                    wihp = _packed_rows(pk, "wihp", wih, GH, ws, dtype)
                    if not (pipe or items):
                        do(_packed_input_product, in2d, wihp, gx2d, tiles[0])
                else:
                    if pk is not None:
                        wihc = pk["wihc"]
                    else:
                        wihc = ws.get("wihc", dtype, lambda T_, B_, n=wih.shape[1]: (n, GH))
                        transpose_into(wih, wihc)
                    wihp = None
                    if not (pipe or items):
                        if rec is not None:
                            rec.quiet = True  # (NumPy's matmul may warn)
                        do(mm, in2d, wihc, gx2d)
            idx = k * D + d
            do(np.copyto, hp[0], state0[0][idx])
            if dims.proj_size:
                do(st[0, 0].fill, 0.0)
            else:
                do(np.copyto, st[0, 0], state0[0][idx])
            for s in range(1, S):
                do(np.copyto, st[s, 0], state0[s][idx])
            # transposed C-contiguous recurrent weights: OpenBLAS multiplies h @ W^T fastest
            # with W^T stored (measured per step: 16x1024 @ 1024x4096 2.1 ms against 2.9 ms
            # through a transposed view); the kernels' own products (_mm, and backward's
            # _mmd) read them too, so a taped call keeps them per layer and direction
            whh = group["weight_hh"]
            whr = group["weight_hr"] if dims.proj_size else no_whr
            if pk is not None and not team:  # prepared parameters: transposed once, in advance
                w1c = pk["w1c"]
                w2c = pk.get("w2c", w2c)
                whrc = pk.get("whrc", whrc)
            else:
                # (inference with one item on the own path: the kernel reads weight_hh and
                # weight_hr by _mmd; packed products read only the packed copy: no
                # transposes needed)
                need = not team and not pown and (keep or not (own and B == 1))
                # (a team call's tape keeps no unused weight-sized buffer either; packed own
                # products, forward and backward, read packed copies instead)
                w1c = ws.get(f"w1c{tag}", dtype,
                             lambda T_, B_: (0 if (team or pown) else Hr, G1H))
                if need:
                    do(transpose_into, whh[:G1H], w1c)
                if spec.two_stage:
                    w2c = ws.get(f"w2c{tag}", dtype, lambda T_, B_: (0 if pown else H, G2H))
                    if need:
                        do(transpose_into, whh[G1H:], w2c)
                if dims.proj_size:
                    whrc = ws.get(f"whrc{tag}", dtype, lambda T_, B_: (0 if pown else H, Hr))
                    if need:
                        do(transpose_into, whr, whrc)
            wp1 = wp2 = wpr = no_wp
            if pown and not iteam:  # packed once for prepared parameters, else into the
                # workspace
                wp1 = _packed_rows(pk, "w1p", whh, G1H, ws, dtype)
                if spec.two_stage:
                    wp2 = _packed_rows(pk, "w2p", whh[G1H:], G2H, ws, dtype)
                if dims.proj_size:
                    wpr = _packed_rows(pk, "wrp", whr, dims.proj_size, ws, dtype)
            def fargs(r, tile):
                return (gx, bih, whh, w1c, w2c, bhh, zeros_bias, whr, whrc, bool(dims.proj_size),
                        ex, lengths, bool(d), keep, hp, st, u, tp, mh, gh1, gh2, pbuf,
                        *(r[n] for n in _FWD_ROWS), y, d * Hr, own, wp1, wp2, wpr, tile)
            args = None if (iteam or team) else fargs(rows, tiles[0])  # (teams: targs)

            def targs(r, tile):
                """_team_fwd_half's arguments from gx on, with the scratch rows ``r`` and the
                tile of one thread (a team's, or the halves of the batch on a team)."""
                return (gx, bhh, zeros_bias, ex, lengths, bool(d), keep, hp, st, tp, gh1,
                        *(r[n] for n in _TEAM_FWD_ROWS), y, d * Hr, wp, tile)
            if ext:
                for s_ in range(T):
                    np.matmul(hp[s_ if keep else s_ % 2], w1c, out=gh1)
                    mod.forward_dir(*args, s_, s_ + 1, True, 0, B)
            elif iteam:  # two halves of the batch on a team (see item_team_cell)
                jit = bool(mod.FUSE and gx.nbytes > ITEM_JIT_BYTES and not alias
                           and GH * in2d.shape[1] * gx.itemsize <= ITEM_JIT_MAX_WIH)
                gm = _gm_scratch(ws, dtype, spec, H, B, mod.FUSE and not keep and not jit)
                do(_item_team_forward, mod, T, _step_macs(spec, dims, B), jit, flags, in2d,
                   wihp, binit, targs(rows, tiles[0]),
                   (*(rows1[n] for n in _TEAM_FWD_ROWS), tiles[1], *gm, jit),
                   (*targs(rows1, tiles[1]), gm[1], jit))
            elif team:
                do(_team_forward, mod, T, _step_macs(spec, dims, B), flags,
                   targs(rows, tiles[0]), targs(rows1, tiles[1]))
            elif items:  # two halves of the batch, input products included, on two threads
                do(_items_forward, mod, T, B, in2d, wihp, args, fargs(rows1, tiles[1]))
            elif pipe:
                do(_overlapped_forward, mod, args, T, B, bool(d), in2d, wihc, gx2d, wihp, tiles)
            else:
                do(mod.forward_dir, *args, 0, T, False, 0, B)
            last = T if keep else T % 2
            do(np.copyto, state_n[0][idx], hp[last])
            for s in range(1, S):
                do(np.copyto, state_n[s][idx], st[s, last])
            if empty is not None:  # items without a step: h0, carried through every slot,
                hp[:T, empty] = 0  # meets only dA = 0 in dW_hh (a NaN h0 made it all NaN)
            if keep:
                buffers[(k, d)] = dict(gx=gx, hp=hp, st=st, u=u, tp=tp, ex=ex, mh=mh, w1c=w1c,
                                       w2c=w2c, whrc=whrc)
        layer_in = y
        if keep and k + 1 < L and dropout is not None:
            layer_in = _drop(ws, dtype, k, y, dropout, masks)
        if keep and k + 1 < L:
            xs.append(layer_in)
    if rec is not None and rec.ok:
        rec.y, rec.state_n = layer_in, tuple(state_n)
    tape = None
    if keep:
        tape = Tape(spec, dims, dtype, T, B, batch_first, unbatched, lengths, layers, ws, gen,
                    xs, buffers, team, pown, masks if dropout is not None else None)
    # fresh view objects for the caller (the memoized ones stay gatecore's: see _forward_views)
    return layer_in.view(), tuple(s.view() for s in state_n), tape


@_fp_quiet
def run_backward(tape: Tape, dy, dstate_n):
    """BPTT through a taped forward call.

    ``dy`` is None or [T, B, D*Hr] time-major of the tape's dtype; ``dstate_n`` a tuple with
    None or [L*D, B, *] per state variable. Returns ``(dx [T, B, I], dstate0 tuple, dparams)``
    as workspace views.
    """
    tape.check_fresh()
    ws = tape.workspace
    spec, dims, dtype = tape.spec, tape.dims, tape.dtype
    T, B = tape.T, tape.B
    L, D, H, Hr, P = dims.num_layers, dims.num_directions, dims.hidden_size, dims.hr, dims.proj_size
    G, G1, S = spec.num_gates, spec.g1, spec.num_states
    GH, G1H, G2H = G * H, G1 * H, (G - G1) * H
    mod = cpu_kernels(spec, dtype)
    lengths = tape.lengths
    own = own_products(spec, dims, B)
    team = tape.team  # as forward decided (its tape has no transposed copies then)
    pown = tape.packed_own  # (same)
    own = own and not team
    ext = external_products(spec, dims, B) and not team
    mm, mm_acc = _products(own, ext or team)
    rows = _rows(ws, dtype, spec, H)
    rows1 = _rows(ws, dtype, spec, H, "r1_") if team else None
    flags, tiles, no_wp = _team_buffers(ws, dtype)
    if not spec.two_stage:
        rows["dur"].fill(0)  # du is documented as zeros for one-stage cells
        if team:
            rows1["dur"].fill(0)

    views = _backward_views(tape)
    no_whr, dhr, ds, dax, dah1_buf, dah2, du, dhnew, dhist, dm, ones, dummy_dy = (
        views[n] for n in ("no_whr", "dhr", "ds", "dax", "dah1", "dah2", "du", "dhnew",
                           "dhist", "dm", "ones", "dummy_dy"))
    du.fill(0)
    dstate0 = views["dstate0"]
    dparams = views["dparams"]
    ones.fill(1)
    d_out = dy
    has_dy = dy is not None
    for k in range(L - 1, -1, -1):
        x_k = tape.xs[k]
        Din = x_k.shape[2]
        dx_k = views["dx", k]
        dx2d = dx_k.reshape(T * B, Din)
        x2d = x_k.reshape(T * B, Din)
        for d in range(D):
            group = tape.layers[k][d]
            buf = tape.buffers[(k, d)]
            idx = k * D + d
            sfx = _sfx(k, d)
            # dah_is_dax cells (LSTM): in the forward direction step k is time k, so the
            # kernels find dah1 to be dax itself and write it once
            same = spec.dah_is_dax and not d
            dah1 = dax if same else dah1_buf
            if dstate_n[0] is not None:
                dhr[...] = dstate_n[0][idx]
            else:
                dhr.fill(0)
            ds[0] = 0
            for s in range(1, S):
                if dstate_n[s] is not None:
                    ds[s] = dstate_n[s][idx]
                else:
                    ds[s] = 0
            dex_buf = views["dex"]
            dex_buf.fill(0)
            whr = group["weight_hr"] if P else no_whr
            whh = group["weight_hh"]
            w1c = buf["w1c"]
            w1p = no_wp  # weight_hh[:G1H] packed by columns: dhnew = dah1[k] @ it
            # (and, where the products over all steps run split, W_ih by columns for
            # _split_grads' dx: both at once on the two threads when large)
            split = team or split_grads(spec, dims, T * B, Din, dtype)
            wihp = _wih_cols(group["weight_ih"], ws, dtype, dax, dx2d) if split else None
            jobs = []
            if (team and B > 1) or pown:
                w1p = ws.get("b_w1p", dtype, lambda T_, B_: (kpacked.packed_size(G1H, Hr),))
                jobs.append((lambda: kpacked.pack_cols(whh[:G1H], w1p), w1p.nbytes))
            if wihp is not None:
                jobs.append((lambda: kpacked.pack_cols(group["weight_ih"], wihp), wihp.nbytes))
            _pack_jobs(jobs)
            if team and B == 1:  # one item: _mmd over its transpose
                w1c = ws.get("b_w1c", dtype, lambda T_, B_: (Hr, G1H))
                transpose_into(whh[:G1H], w1c)
            wp = w1p if team else no_wp
            wq1, wq2, wqr = (w1p if pown else no_wp), no_wp, no_wp
            if pown:  # and the stage-2 rows and weight_hr, for du and dm
                if spec.two_stage:
                    wq2 = ws.get("b_w2p", dtype, lambda T_, B_: (kpacked.packed_size(G2H, H),))
                    kpacked.pack_cols(whh[G1H:], wq2)
                if P:
                    wqr = ws.get("b_wrp", dtype, lambda T_, B_: (kpacked.packed_size(P, H),))
                    kpacked.pack_cols(whr, wqr)
            args = (buf["gx"], whh, whr, w1c, buf["w2c"], buf["whrc"], buf["ex"],
                    lengths, bool(d), buf["hp"], buf["st"],
                    buf["u"], buf["tp"], d_out if has_dy else dummy_dy, has_dy, d * Hr,
                    dhr, ds, dax, dah1, dah2, du, dhnew, dhist, dm, dex_buf,
                    rows["axr"], rows["daxr"], rows["dahr"], rows["tpr"], rows["spr"],
                    rows["snr"], rows["dsr"], rows["dspr"], rows["dur"], own, wq1, wq2, wqr,
                    tiles[0])
            if ext:  # time loop here, recurrent products by NumPy's BLAS
                for s_ in range(T - 1, -1, -1):
                    mod.backward_dir(*args, s_, s_ + 1, True, s_ < T - 1)
                    np.matmul(dah1[s_], whh, out=dhnew)
                mod.backward_dir(*args, 0, 0, True, T > 0)
            elif team:  # (the worker has its own scratch rows and tile)
                def targs(r, tile):
                    return (buf["gx"], w1c, buf["ex"], lengths, bool(d), buf["st"], buf["tp"],
                            d_out if has_dy else dummy_dy, has_dy, d * Hr, dhr, ds, dax, dah1,
                            dhnew, dex_buf, r["dahr"], r["spr"], r["snr"], r["dsr"], r["dspr"],
                            r["dur"], r["exr"], r["dexr"], wp, tile)
                overlap.run_team(
                    mod.team_backward_worker, (flags, *targs(rows1, tiles[1])), flags,
                    _team_loop(lambda k0, k1: mod.backward_team(k0, k1, flags,
                                                                *targs(rows, tiles[0]),
                                                                overlap.go_hand()),
                               T, _step_macs(spec, dims, B), True), go=True)
            else:
                mod.backward_dir(*args, 0, T, False, False)
            dstate0[0][idx] = dhr
            for s in range(1, S):
                dstate0[s][idx] = ds[s]
            r = 0
            for prefix, n in spec.extra_params:
                dparams[prefix + sfx][...] = dex_buf[r:r + n].reshape(-1)
                r += n
            dax2d = dax.reshape(T * B, GH)
            if split:  # in two halves on two threads, one OpenBLAS thread each
                tmp = ws.get("b_dxtmp", dtype, lambda T_, B_, n=Din: (T_ * B_, n)) if d else None
                _split_grads(dax2d, dah1.reshape(T * B, G1H), x2d,
                             buf["hp"][:T].reshape(T * B, Hr), group["weight_ih"], dx2d, tmp,
                             dparams, sfx, ones, dims.bias, ws, same, wihp,
                             linger=team)  # (else OpenBLAS soon: no spinning worker)
                continue
            # weight gradients: one GEMM each over all T*B rows
            mm(dax2d.T, x2d, dparams["weight_ih" + sfx])
            hp2d = buf["hp"][:T].reshape(T * B, Hr)
            dw_hh = dparams["weight_hh" + sfx]
            mm(dah1.reshape(T * B, G1H).T, hp2d, dw_hh[:G1H])
            if spec.two_stage:
                mm(dah2.reshape(T * B, G2H).T, buf["u"].reshape(T * B, H), dw_hh[G1H:])
            if dims.bias:  # column sums as GEMV with a ones vector (no reduction buffers)
                mm(ones, dax2d, dparams["bias_ih" + sfx])
                db_hh = dparams["bias_hh" + sfx]
                if same:
                    db_hh[...] = dparams["bias_ih" + sfx]
                else:
                    mm(ones, dah1.reshape(T * B, G1H), db_hh[:G1H])
                if spec.two_stage:
                    mm(ones, dah2.reshape(T * B, G2H), db_hh[G1H:])
            if P:
                m2d = buf["mh"].reshape(T * B, H)
                mm(dhist.reshape(T * B, Hr).T, m2d, dparams["weight_hr" + sfx])
            if d == 0:
                mm(dax2d, group["weight_ih"], dx2d)
            else:
                tmp = ws.get("b_dxtmp", dtype, lambda T_, B_, n=Din: (T_ * B_, n))
                mm_acc(dax2d, group["weight_ih"], dx2d, tmp)
        if k > 0 and tape.masks is not None:  # through layer k-1's dropout
            np.multiply(dx_k, tape.masks[k - 1], out=dx_k)
        d_out = dx_k
        has_dy = True
    # fresh view objects for the caller (the memoized ones stay gatecore's: _backward_views)
    return (d_out.view(), tuple(a.view() for a in dstate0),
            {key: a.view() for key, a in dparams.items()})


def _backward_views(tape: Tape):
    """The workspace views of a backward call, memoized per call shape as _forward_views:
    ``no_whr``, ``dhr``, ``ds``, ``dax``, ``dah1``, ``dah2``, ``du``, ``dhnew``, ``dhist``,
    ``dm``, ``ones``, ``dummy_dy``, ``dex``, ``dstate0`` (tuple), ``dparams`` (dict by
    state_dict key, the gradients' buffers) and ``("dx", k)`` per layer."""
    spec, dims, dtype, T, B = tape.spec, tape.dims, tape.dtype, tape.T, tape.B
    key = ("backward", dtype, T, B, dims, spec.key, spec.num_gates, spec.g1, spec.num_states,
           spec.extra_params, spec.two_stage, spec.dah_is_dax)
    return tape.workspace.fixed(key, lambda: _make_backward_views(tape))


def _make_backward_views(tape: Tape):
    ws, spec, dims, dtype = tape.workspace, tape.spec, tape.dims, tape.dtype
    L, D, H, Hr, P = dims.num_layers, dims.num_directions, dims.hidden_size, dims.hr, dims.proj_size
    G, G1, S = spec.num_gates, spec.g1, spec.num_states
    GH, G1H, G2H = G * H, G1 * H, (G - G1) * H
    H2 = H if spec.two_stage else 0
    v = {
        "no_whr": ws.get("no_whr", dtype, lambda T_, B_: (0, H)),
        "dhr": ws.get("b_dhr", dtype, lambda T_, B_: (B_, Hr)),
        "ds": ws.get("b_ds", dtype, lambda T_, B_: (S, B_, H)),
        "dax": ws.get("b_dax", dtype, lambda T_, B_: (T_, B_, GH)),
        # (none where every direction's dah1 is dax: see run_backward)
        "dah1": ws.get("b_dah1", dtype,
                       lambda T_, B_: (0 if spec.dah_is_dax and D == 1 else T_, B_, G1H)),
        "dah2": ws.get("b_dah2", dtype, lambda T_, B_: (T_, B_, G2H)),
        "du": ws.get("b_du", dtype, lambda T_, B_: (B_, H2)),  # (du and dex: zeroed per call)
        "dhnew": ws.get("b_dhnew", dtype, lambda T_, B_: (B_, Hr)),
        "dhist": ws.get("b_dhist", dtype, lambda T_, B_: (T_ if P else 0, B_, Hr)),
        "dm": ws.get("b_dm", dtype, lambda T_, B_: (B_, H)),
        "ones": ws.get("b_ones", dtype, lambda T_, B_: (T_ * B_,)),
        "dummy_dy": ws.get("b_nody", dtype, lambda T_, B_: (1, 1, 1)),
        "dex": ws.get("b_dex", dtype, lambda T_, B_: (spec.num_extra, H)),
        "dstate0": tuple(
            ws.get(f"b_dstate0_{s}", dtype,
                   lambda T_, B_, w=(Hr if s == 0 else H): (L * D, B_, w))
            for s in range(S)),
    }
    dparams = v["dparams"] = {}
    for k in range(L):
        for d in range(D):
            for prefix, arr in tape.layers[k][d].items():
                key = prefix + _sfx(k, d)
                dparams[key] = ws.get("g_" + key, dtype, lambda T_, B_, sh=arr.shape: sh)
        Din = tape.xs[k].shape[2]
        # (layers above the first alternate two buffers of one shape; one name, one shape, so
        # that no view made here outlives a reallocation of its buffer)
        name = "b_dx_in" if k == 0 else f"b_dx{k % 2}"
        v["dx", k] = ws.get(name, dtype, lambda T_, B_, n=Din: (T_, B_, n))
    return v
