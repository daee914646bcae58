"""The workspace: every buffer that forward and backward need, allocated once and reused.

A :class:`Workspace` owns flat arrays, one per named buffer, and hands out C-contiguous
views of the shape a call needs. Buffers are sized for ``max_seq_len`` and ``max_batch``
when those are given (otherwise for the largest call so far), so repeated calls of the same
or smaller size allocate nothing. Each forward call that uses the workspace starts a new
*generation*; a tape remembers its generation and ``backward`` refuses a tape whose
buffers have since been overwritten (:class:`~gatecore.errors.StaleTapeError`).

Arrays returned by ``gatecore.forward`` / ``backward`` with a workspace are views into it
(as cuDNN's reserve space and outputs are): they stay valid until the next call that uses
the same workspace. Copy them to keep them longer.

A workspace serves one call at a time: threads that call at once need one each (a call
given a workspace that another call is using raises
:class:`~gatecore.errors.WorkspaceBusyError` rather than mixing their buffers).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable

import numpy as np

from .errors import WorkspaceBusyError

#: most recorded inference calls a workspace keeps (``Workspace._remember_replay``): each
#: holds views of the buffers and the arrays of its prepared parameters
REPLAYS = 8

__all__ = ["Workspace"]


#: host buffers start on a cache line and fill whole lines (bytes): two threads writing
#: different small buffers (a team's scratch rows) never write the same line
LINE = 64


def _host_empty(n: int, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    nbytes = -(-max(n * dtype.itemsize, 1) // LINE) * LINE
    raw = np.empty(nbytes + LINE, dtype=np.uint8)
    off = -raw.ctypes.data % LINE
    return raw[off:off + nbytes].view(dtype)[:n]


def _host_fill0(view: np.ndarray) -> None:
    view.fill(0)


class Workspace:
    """Reusable buffers for :func:`gatecore.forward` and :func:`gatecore.backward`.

    Parameters
    ----------
    max_seq_len : int, optional
        Largest sequence length T the workspace should be sized for up front.
    max_batch : int, optional
        Largest batch size B the workspace should be sized for up front.
    device : {"cpu", "cuda"}
        Where the buffers live. ``"cuda"``: Numba device arrays on the current GPU, and calls
        that use this workspace run there (see :mod:`gatecore.cuda_network`).

    Attributes
    ----------
    max_seq_len, max_batch : int
        The sizes given (0 when not given), the least T and B that each buffer is sized for
        when it is first allocated. A larger call grows the buffers it needs to its own T
        and B (once; later calls of that size or less allocate nothing) and leaves these two
        unchanged: they are not the sizes served so far.

    Raises
    ------
    TypeError
        If ``max_seq_len`` or ``max_batch`` is not an int (or None).
    ValueError
        If ``max_seq_len`` or ``max_batch`` is negative, or ``device`` is unknown.
    CudaUnavailableError (RuntimeError)
        ``device="cuda"`` without a usable GPU.

    Examples
    --------
    >>> import numpy as np, gatecore
    >>> params = gatecore.init_params("lstm", 8, 16, seed=0)
    >>> ws = gatecore.Workspace(max_seq_len=20, max_batch=4)
    >>> x = np.zeros((20, 4, 8), np.float32)
    >>> y, state_n, tape = gatecore.forward("lstm", x, params, workspace=ws)
    >>> y.shape
    (20, 4, 16)
    """

    def __init__(self, max_seq_len: int | None = None, max_batch: int | None = None,
                 device: str = "cpu") -> None:
        for name, v in (("max_seq_len", max_seq_len), ("max_batch", max_batch)):
            if v is None:
                continue
            if not isinstance(v, (int, np.integer)) or isinstance(v, (bool, np.bool_)):
                raise TypeError(f"{name} must be a non-negative int or None, got {v!r} "
                                f"({type(v).__name__})")
            if v < 0:
                raise ValueError(f"{name} must be a non-negative int or None, got {v!r}")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        self._empty, self._fill0 = _host_empty, _host_fill0
        if device == "cuda":  # the GPU twin: device buffers (imports numba.cuda lazily)
            from .cuda_network import device_empty, device_fill0, require_gpu
            require_gpu()
            self._empty, self._fill0 = device_empty, device_fill0
        self.max_seq_len = int(max_seq_len or 0)
        self.max_batch = int(max_batch or 0)
        self.device = device
        self.generation = 0
        self._buffers: dict[str, np.ndarray] = {}
        self._views: dict[str, dict] = {}
        self._fixed: dict = {}
        self._replays: dict = {}  # recorded inference calls (network.Replay), oldest first
        self._host: Workspace | None = None
        self._shape = (0, 0)
        self._busy = threading.Lock()  # held by the call using the workspace

    def _acquire(self) -> None:
        """Mark the workspace in use by this call (release with ``_release``).

        Raises
        ------
        WorkspaceBusyError
            Another call (another thread) is using it.
        """
        if not self._busy.acquire(blocking=False):
            raise WorkspaceBusyError(
                "workspace is in use by another call (another thread's, or one still running "
                "in this thread): a Workspace serves one call at a time; give each thread "
                "its own Workspace (a tape made without one, and a Forecaster, hold their "
                "own: use one per thread too)")

    def _release(self) -> None:
        self._busy.release()

    def __getstate__(self):  # (copy, deepcopy, pickle: a lock cannot be copied; the copy
        state = dict(self.__dict__)  # gets its own, free; and no buffer: they are scratch,
        del state["_busy"]  # and a copy sharing them with its original (copy.copy) had its
        state.update(_buffers={}, _views={}, _fixed={}, _replays={}, _host=None)  # results
        return state  # overwritten by calls on the original)

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_replays", {})
        self._busy = threading.Lock()

    # ----------------------------------------------------------------- internal
    def _begin(self, T: int, B: int) -> int:
        """Start a new call of size (T, B); return its generation."""
        self.generation += 1
        self._shape = (T, B)
        return self.generation

    def get(self, name: str, dtype: np.dtype, shape_of: Callable[[int, int], tuple[int, ...]],
            zero: bool = False) -> np.ndarray:
        """Return a C-contiguous view of buffer ``name`` with shape ``shape_of(T, B)``.

        The underlying flat buffer is sized for ``shape_of(max(T, max_seq_len),
        max(B, max_batch))`` and reallocated only when a call needs more room or another dtype.
        Views are memoized per name and (shape, dtype) until the buffer is reallocated; on the
        CPU every call returns a new array object (a caller changing its ``shape`` affects only
        it), on CUDA the memoized device array itself. A host buffer that cannot be allocated
        raises MemoryError naming it, its size and the workspace's sizes.
        """
        T, B = self._shape
        key = (shape_of(T, B), dtype)
        memo = self._views.get(name)
        view = memo.get(key) if memo is not None else None
        if view is None:
            shape = tuple(int(s) for s in key[0])
            n = math.prod(shape)
            buf = self._buffers.get(name)
            if buf is None or buf.dtype != dtype or buf.size < n:
                cap = math.prod(shape_of(max(T, self.max_seq_len), max(B, self.max_batch)))
                size = max(cap, n, 1)
                try:
                    buf = self._empty(size, dtype)
                except (MemoryError, ValueError, OverflowError) as exc:
                    sized = cap > n  # (for max_seq_len/max_batch rather than this call)
                    raise MemoryError(
                        f"workspace buffer {name!r} needs {size} {np.dtype(dtype)} "
                        f"elements ({size * np.dtype(dtype).itemsize / 2**30:.3g} GiB) "
                        f"for T={T}, B={B} with max_seq_len={self.max_seq_len}, "
                        f"max_batch={self.max_batch}, which cannot be allocated "
                        f"({type(exc).__name__}: {exc}); "
                        + ("give the Workspace smaller max_seq_len/max_batch" if sized
                           else "make the call smaller (T, B or the sizes)")) from None
                self._buffers[name] = buf
                self._fixed.clear()  # (may hold views of the old buffer)
                self._replays.clear()
                memo = None  # views of the old buffer must not keep it alive
            if memo is None or len(memo) > 64:  # many shapes (varying T): start afresh
                memo = self._views[name] = {}
            view = buf[:n].reshape(shape)
            memo[key] = view
        view = view.view() if self.device == "cpu" else view
        if zero:
            self._fill0(view)
        return view

    def host(self) -> Workspace:
        """A host (NumPy) workspace kept beside this one, made at first use: staging buffers
        of a CUDA workspace's calls (dropout masks, drawn on the host). Cleared with it."""
        if self._host is None:
            self._host = Workspace()
        return self._host

    def fixed(self, key, make: Callable[[], object]):
        """``make()``'s result (views made by ``get``: the kernels' per-item scratch rows, or a
        call's views for its T and B, which ``key`` must then hold), memoized by ``key`` until
        a buffer is reallocated or the workspace cleared (or 64 keys are held): one lookup per
        call instead of a ``get`` each (about 2 us)."""
        hit = self._fixed.get(key)
        if hit is None:
            if len(self._fixed) >= 64:  # many call shapes (varying T): start afresh
                self._fixed.clear()
            hit = self._fixed[key] = make()
        return hit

    def _remember_replay(self, key, rec, params) -> None:
        """Keep ``rec`` (``network.Replay``) under ``key`` (replacing one there), at most
        REPLAYS of them (the oldest goes). It refers to ``params`` weakly: once that
        PreparedParams is gone the record goes too, and with it the arrays its calls hold."""
        ref = weakref.ref(self)

        def gone(wr, key=key):  # (no reference to rec: no cycle through the callback)
            ws = ref()
            hit = ws._replays.get(key) if ws is not None else None
            if hit is not None and hit.params is wr:
                ws._replays.pop(key, None)
        rec.params = weakref.ref(params, gone)
        self._replays.pop(key, None)
        while len(self._replays) >= REPLAYS:
            self._replays.pop(next(iter(self._replays)))
        self._replays[key] = rec

    @property
    def nbytes(self) -> int:
        """Total bytes held by the workspace's buffers (host buffers: with their padding to
        whole cache lines)."""
        def held(b):  # a host buffer is an aligned view of a padded array (_host_empty)
            base = getattr(b, "base", None)
            return b.nbytes if base is None else base.nbytes
        return sum(held(b) for b in self._buffers.values())

    def clear(self) -> None:
        """Release every buffer (tapes made with this workspace become invalid)."""
        self._buffers.clear()
        self._views.clear()
        self._fixed.clear()
        self._replays.clear()
        self._host = None
        self.generation += 1

    def __repr__(self) -> str:
        return (f"Workspace(max_seq_len={self.max_seq_len}, max_batch={self.max_batch}, "
                f"device={self.device!r}, buffers={len(self._buffers)}, nbytes={self.nbytes})")
