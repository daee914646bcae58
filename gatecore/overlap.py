"""Run a layer's input product on a second core while its time loop runs on this one.

When a call's per-step products are the kernels' own (small steps, see
``network.own_products``), the time loop is one thread's work: each step waits for the last.
The input product ``GX = X W_ih^T`` for all steps has no such dependency, so it is cut into
chunks of steps: one worker thread computes chunk c+1, c+2, ... (the kernels' own ``_mm``, no
BLAS thread pool involved) while this thread runs the time loop over chunk c. This thread
computes the first chunk itself, and any chunk that the worker has not started when the
loop needs it (a busy second core, or the worker serving another call), so the result never
waits on a thread that cannot run, and it is the same either way: every chunk is computed by
the same loop over the same rows.

The same worker serves the packed products' teams (``run_team``) and independent halves of a
job (``run_pair``: two halves of a batch, of the weight gradients, two weights to pack).

The worker is one thread of a ``ThreadPoolExecutor`` shared by the process (created on
first use, recreated after ``fork``; once the interpreter is shutting down, or while the
worker serves another call, a call computes its chunks alone). After each task it spins
for up to ``LINGER_US`` (``packed.linger``, without the GIL), and a call meanwhile hands it
its job directly (``_post``) instead of through the pool's queue, which wakes a sleeping
thread (25-50 us here). Before a call returns (or raises, even on a second Ctrl-C) it waits
until the worker has left its chunks, so no thread touches the call's workspace after it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

try:
    import _signal  # the C functions behind signal.getsignal/signal.signal
except ImportError:  # pragma: no cover - not CPython
    _signal = signal
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait

import numpy as np

from .kernels import packed as _kp
from .kernels.packed import EXITED, fp_control, set_fp_control, wait_exited

__all__ = ["enabled", "chunk_bounds", "run_chunked", "run_team", "run_pair"]

_pool: _Pool | None = None
_pool_lock = threading.Lock()
_active = 0  # calls using the worker (_worker_for) in flight (several threads may call at once)
_active_lock = threading.Lock()
#: the worker's hand-over flags (``packed.HAND_STATE``, ``packed.HAND_QUEUED``) and the job
#: posted to it while it lingers (``_post``)
_hand = np.zeros(_kp.HAND, np.int64)
_hand_addr = _hand.ctypes.data  # (the compiled hand-over functions take addresses: no
_slot = None                     # NRT allocation per call, unlike a boxed array)


def _reset_after_fork() -> None:
    global _pool, _pool_lock, _active, _active_lock, _hand, _hand_addr, _slot, _current
    global _current_thread, _worker_cpus
    _pool = None  # the parent's worker thread does not exist in the child
    _pool_lock = threading.Lock()
    _active = 0
    _active_lock = threading.Lock()
    _hand = np.zeros(_kp.HAND, np.int64)  # (the parent's might say "lingering")
    _hand_addr = _hand.ctypes.data
    _slot = None
    _current, _current_thread = None, 0
    _worker_cpus = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


class _Pool:
    """The worker thread's pool (one thread): ``submit`` as ThreadPoolExecutor's, counting
    queued tasks in the hand-over flags so that a lingering worker (``_linger``) leaves its
    spin for them at once."""

    def __init__(self) -> None:
        self._ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatecore-overlap")
        self._hand = _hand  # (kept alive: its address is the worker's)
        self._addr = _hand_addr

    def submit(self, fn, *args, **kwargs):
        addr = self._addr
        _kp.hand_add(addr, _kp.HAND_QUEUED, 1)
        try:
            return self._ex.submit(_dequeued, addr, fn, args, kwargs)
        except BaseException:
            _kp.hand_add(addr, _kp.HAND_QUEUED, -1)
            raise


def _dequeued(addr, fn, args, kwargs):
    _kp.hand_add(addr, _kp.HAND_QUEUED, -1)
    return fn(*args, **kwargs)


def _worker_pool() -> _Pool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _load_hand_over()
            _calibrate_pause()
            _pool = _Pool()
        return _pool


def _env_linger_us() -> float:
    """GATECORE_WORKER_SPIN_US as a number of microseconds in [0, 1e6] (1000 if unset or
    not a finite number)."""
    try:
        v = float(os.environ.get("GATECORE_WORKER_SPIN_US", "1000"))
    except ValueError:
        return 1000.0
    return min(1e6, max(0.0, v)) if v == v and abs(v) != float("inf") else 1000.0


#: how long (microseconds) the worker spins after a task, ready for the next call's job,
#: before it sleeps in its pool (``GATECORE_WORKER_SPIN_US``, read at import; 0: it sleeps
#: at once).
#: Waking a sleeping thread took 30-50 us here at each end of a call (this VM's idle CPUs
#: halt), so back-to-back calls that use the worker each paid about 80 us: a call of
#: LSTM T=100, B=8, H=64 takes about 0.25 ms. OpenMP runtimes and ONNX Runtime's pool spin
#: likewise between parallel regions.
LINGER_US = _env_linger_us()
_pause_ns = 30.0  # one spin's time, measured when the worker is first needed


def _load_hand_over() -> None:
    """Call each compiled hand-over function once on scratch flags, before the worker
    exists: a first call loads it (about 80 KB of Python objects, and time), which must not
    happen in some later call and not in others, whichever paths its timing takes."""
    scratch = np.zeros(_kp.HAND + _kp.FLAGS, np.int64)
    addr = scratch.ctypes.data
    _kp.hand_post(addr)
    _kp.hand_go_now(addr)
    _kp.hand_store(addr, 0, 0)
    _kp.hand_add(addr, 0, 0)
    _kp.hand_cas(addr, 0, 1, 1)
    _kp.wait_at_least(addr, 0, 0, 1)
    _kp.linger(addr, 0, addr + 8 * _kp.HAND_QUEUED + 8)
    _kp.team_stop(scratch[_kp.HAND:], 0, 0)
    _kp.wait_exited(scratch[_kp.HAND:], 0)


def _calibrate_pause() -> None:
    """Measure a spin (x86 ``pause``: 30 ns here, 5-150 ns elsewhere) on this thread before
    the worker exists: the fastest of three runs of 1000 (on the worker, getting the GIL
    back after the timed spin inflated it 5-8x)."""
    global _pause_ns
    probe = np.zeros(1, np.int64)
    addr = probe.ctypes.data
    _kp.wait_at_least(addr, 0, 1, 10)  # (compiled, loaded)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        _kp.wait_at_least(addr, 0, 1, 1000)
        best = min(best, time.perf_counter() - t0)
    _pause_ns = min(1000.0, max(1.0, best * 1e9 / 1000))


def _linger_spins() -> int:
    us = LINGER_US
    if not us > 0:
        return 0
    return int(min(us, 1e6) * 1000.0 / _pause_ns) + 1


class _Job:
    """A task for the worker: run once by whoever first takes it from the pool's queue or
    from ``_slot``, unless cancelled first. ``_state[0]``: 0 new, 1 running, 2 done, 3
    cancelled. The caller waits for it by spinning on that flag without the GIL (the worker
    is running: a sleep and its wake-up cost more than the wait), then by polling it with
    sleeps. ``future``: the pool's future when it was submitted there (cancelled with it)."""

    __slots__ = ("_state", "addr", "cpus", "task", "fpc", "error", "linger", "future")

    def __init__(self, cpus, task, fpc, linger: bool = True) -> None:
        self._state = np.zeros(1, np.int64)
        self.addr = self._state.ctypes.data  # (for the compiled functions)
        self.cpus = cpus
        self.task = task
        self.fpc = fpc
        self.error = None
        self.linger = linger  # whether the worker lingers after it (_linger)
        self.future = None

    def run(self) -> None:
        """Worker: run the task unless cancelled; errors are kept for ``result``. The state
        stays 1 (running): ``_linger`` marks it done."""
        if not _kp.hand_cas(self.addr, 0, 0, 1):
            return
        try:
            _on_cpus(self.cpus, self.task, self.fpc)
        except BaseException as exc:  # handed to the caller by result()
            self.error = exc

    def cancel(self) -> bool:
        """Stop the job from starting; whether it had not (it will not run then; a queued
        pool task for it is dropped too, so that it does not hold back posts)."""
        if not _kp.hand_cas(self.addr, 0, 0, 3):
            return False
        fut = self.future
        if fut is not None and fut.cancel():  # (_dequeued will not run: uncount it here)
            _kp.hand_add(_hand_addr, _kp.HAND_QUEUED, -1)
        return True

    def cancelled(self) -> bool:
        return int(self._state[0]) == 3

    def spin(self, spins: int) -> bool:
        """Spin (without the GIL) until the job has finished or was cancelled, at most
        ``spins`` times; whether it has."""
        return _kp.wait_at_least(self.addr, 0, 2, spins)

    def wait(self) -> None:
        """Until the job has finished or was cancelled: spinning first, then polling with
        sleeps of 50 us growing to 1 ms (interruptible by Ctrl-C: see
        ``_wait_uninterrupted``)."""
        if self.spin(_EXIT_SPINS):
            return
        nap = 5e-5
        while self._state[0] < 2:
            time.sleep(nap)
            nap = min(1e-3, nap * 2)

    def result(self) -> None:
        self.wait()
        if self.error is not None:
            raise self.error


def _serve(job) -> None:
    """The worker's pool task: run ``job``, then the jobs posted while it lingers."""
    while job is not None:
        job.run()
        try:
            job = _linger(job)
        except BaseException:  # (never leave a caller waiting for a job marked running)
            _kp.hand_cas(job.addr, 0, 1, 2)
            _kp.hand_store(_hand_addr, _kp.HAND_STATE, 0)
            raise


def _linger(done):
    """Worker: mark job ``done`` finished, then spin for up to LINGER_US, ready for a posted
    job (``packed.linger``); the job, or None (then the worker returns to its pool and
    sleeps there)."""
    global _slot
    spins = _linger_spins() if done.linger else 0
    hand = _hand_addr
    if spins <= 0:
        _kp.hand_cas(done.addr, 0, 1, 2)
        return None
    if not _kp.linger(hand, spins, done.addr):
        return None
    job, _slot = _slot, None
    _kp.hand_store(hand, _kp.HAND_STATE, 0)
    return job


def hand() -> int:
    """The address of the worker's hand-over flags, for compiled work that says go
    (``packed.hand_go``) when it starts: pass it to the kernels of a call run by
    ``run_team(..., go=True)`` or ``run_pair(..., go=True)``."""
    return _hand_addr


def _post(job) -> bool:
    """Caller: hand ``job`` to a lingering worker; whether it took it (else submit it)."""
    global _slot
    _slot = job
    if _kp.hand_post(_hand_addr):
        return True
    _slot = None
    return False


_current = None  # the job of the call alone in flight (job_state)
_current_thread = 0  # and the thread that made that call


def job_state() -> int:
    """The address of the state of the job that this thread's call, alone in flight, has
    handed to the worker (``packed.job_finish`` waits on it), else 0."""
    job = _current
    return job.addr if job is not None and _current_thread == threading.get_ident() else 0


def go_hand() -> int:
    """``hand()`` for a call that has handed the worker a job (``job_state``), else 0: a
    call not alone in flight must not say go for another call's job."""
    return _hand_addr if job_state() else 0


def _load_getcpu():
    try:
        import ctypes
        fn = ctypes.CDLL(None, use_errno=True).sched_getcpu
        fn.restype = ctypes.c_int
        fn.argtypes = []
        return fn
    except (OSError, AttributeError):
        return None


_getcpu = _load_getcpu()


def _pin_caller():
    """Pin this thread to the CPU it runs on; return (its former CPU set, the other CPUs),
    or None where that is unknown or impossible.

    Linux wakes a sleeping thread on its waker's CPU. Unpinned, a caller woken by the worker
    (a chunk it waited for is done) was queued behind the busy worker on the worker's CPU
    and sat there until the worker had finished every chunk (measured after a 0.3 s pause:
    the call took 3.2 ms instead of 1.1 ms); the worker, woken by the caller, likewise
    shared the caller's CPU at first. Pinned apart, each wakes where it belongs.
    """
    if _getcpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        allowed = os.sched_getaffinity(0)
        cpu = _getcpu()
        rest = allowed - {cpu}
        if cpu < 0 or cpu not in allowed or not rest:
            return None
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return None
    return allowed, rest


def _unpin(pinned) -> None:
    """Give the caller back the CPU set that _pin_caller took from it."""
    if pinned is None:
        return
    try:
        os.sched_setaffinity(0, pinned[0])
    except OSError:  # the CPU set changed meanwhile (cgroup): free the thread
        try:
            os.sched_setaffinity(0, _all_cpus())
        except OSError:
            pass


def _all_cpus() -> set[int]:
    return set(range(os.cpu_count() or 1))


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


#: thread-count variables that, set to 1, ask libraries for one thread (dask's workers and
#: many job schedulers set them): gatecore then runs no second thread either
_ONE_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS")


_ENV_DATA = getattr(os.environ, "_data", None)  # CPython's raw environment (os.environ.get
# costs about 2 us a name here; enabled() runs on every call)
_ENV_KEYS = {}


def _getenv(name: str) -> str:
    """os.environ.get(name, ""), without os.environ's per-call encoding where possible."""
    data = _ENV_DATA
    if data is None or data is not getattr(os.environ, "_data", None) or os.name == "nt":
        return os.environ.get(name, "")
    key = _ENV_KEYS.get(name)
    if key is None:
        key = _ENV_KEYS[name] = os.fsencode(name)
    value = data.get(key)
    return "" if value is None else os.fsdecode(value)


def enabled() -> bool:
    """Whether products may overlap time loops: two or more usable CPUs, ``GATECORE_OVERLAP``
    not ``0`` and none of OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS and
    NUMBA_NUM_THREADS set to ``1``."""
    if _getenv("GATECORE_OVERLAP").strip().lower() in ("0", "false", "no", "off"):
        return False
    for v in _ONE_THREAD_VARS:
        if _getenv(v).strip() == "1":
            return False
    return _cpus() >= 2


def chunk_bounds(T: int, chunks: int = 8) -> list[int]:
    """Step bounds ``[0, s1, ..., T]`` of about ``chunks`` chunks; the first (computed
    serially, before the time loop can start) is half the size of the others."""
    size = max(1, -(-2 * T // (2 * chunks - 1)))
    bounds = [0, min(T, max(1, size // 2))]
    while bounds[-1] < T:
        bounds.append(min(T, bounds[-1] + size))
    return bounds


class _Chunks:
    """Claim table of one layer's chunks: each is computed exactly once, by whoever claims it."""

    def __init__(self, n: int, produce) -> None:
        self.produce = produce
        self.owner = [0] * n  # 0 free, 1 caller, 2 worker
        self.done = [False] * n
        self.cond = threading.Condition(threading.Lock())  # guards owner and done
        self.error: BaseException | None = None
        self.stop = False

    def _claim(self, c: int, who: int) -> bool:
        with self.cond:
            if self.owner[c] or (who == 2 and self.stop):
                return False
            self.owner[c] = who
            return True

    def _run(self, c: int, who: int) -> None:
        try:
            self.produce(c, who == 2)
        except BaseException as exc:  # handed to the caller by get()
            self.error = exc
            self.stop = True
        finally:
            with self.cond:
                self.done[c] = True
                self.cond.notify_all()

    def work(self) -> None:
        """The worker's task: claim and compute chunks 1, 2, ... until none is left."""
        for c in range(1, len(self.owner)):
            if self._claim(c, 2):
                self._run(c, 2)

    def get(self, c: int) -> None:
        """Make sure chunk c is computed (computing it here if nobody has started it)."""
        if self._claim(c, 1):
            self._run(c, 1)
        else:
            with self.cond:
                while not self.done[c]:
                    self.cond.wait()
        if self.error is not None:
            raise self.error


def _wait_uninterrupted(future) -> None:
    """Wait until ``future`` (a Future or a ``_Job``) is done, even through
    KeyboardInterrupt (raised afterwards)."""
    interrupted = None
    while True:
        try:
            if isinstance(future, _Job):
                future.wait()
            else:
                futures_wait([future])
            break
        except BaseException as exc:  # Ctrl-C while waiting: the worker still holds buffers
            interrupted = exc
    if interrupted is not None:
        raise interrupted


class _DeferSigint:
    """In the main thread, hold SIGINT (Ctrl-C) back during a call's hand-over and cleanup.

    A KeyboardInterrupt raised between two bytecodes of the hand-over (inside a lock's
    ``with``, between ``submit`` queueing the task and returning, between pinning this
    thread and recording it) left a lock held (a hang no further Ctrl-C could end), a worker
    writing into the workspace after the call had raised, or the thread pinned to one CPU
    (found by a breaker sending SIGINT every 4 ms). With the default handler the call stops
    at the next chunk boundary (``interrupted``), cleans up and raises KeyboardInterrupt
    (replacing any error in flight, which stays its ``__context__``); a custom handler runs
    once the call is complete. Handlers are read and set through ``_signal`` (C functions:
    the ``signal`` module's Python wrappers cost 22 us a call and are frames in which other
    signals' handlers could run mid-swap). Other signals are not held back; a handler left
    swapped by one of them raising mid-swap is put back by the next call. Other threads
    never receive KeyboardInterrupt.
    """

    def __enter__(self):
        self.old = None
        self.pending = None
        if threading.current_thread() is not threading.main_thread():
            return self
        try:
            cur = _signal.getsignal(signal.SIGINT)
            stale = getattr(cur, "__self__", None)
            if isinstance(stale, _DeferSigint) and stale.old is not None:
                cur = stale.old  # left installed by an interrupted earlier call
                _signal.signal(signal.SIGINT, cur)
            if callable(cur):
                self.old = cur
                _signal.signal(signal.SIGINT, self._hold)
        except (ValueError, OSError, AttributeError):  # no signals here (embedded)
            self.old = None
        return self

    def _hold(self, signum, frame):
        self.pending = (signum, frame)

    def interrupted(self) -> bool:
        """A Ctrl-C arrived and will raise: stop at the next chunk boundary."""
        return self.pending is not None and self.old is signal.default_int_handler

    def __exit__(self, *exc):
        if self.old is not None:
            _signal.signal(signal.SIGINT, self.old)
            if self.pending is not None:
                self.old(*self.pending)
        return False


def run_chunked(bounds: list[int], produce, consume) -> None:
    """For each chunk c of ``bounds``: ``produce(k0, k1, on_worker)`` (on either thread), then
    ``consume(k0, k1)`` on this thread, chunks in order; ``produce`` of later chunks runs on
    the worker meanwhile. Two ``produce`` calls (different chunks) can run at once, one on
    each thread (this thread claimed a chunk that the worker was slow to reach, and the worker
    goes on to the next one meanwhile): ``on_worker`` (true on the worker thread) lets ``produce``
    pick per-thread scratch. Exceptions of either are raised here, after the worker has stopped;
    Ctrl-C in the main thread stops the call at the next chunk and is raised after the
    cleanup (``_DeferSigint``).

    Only a call that is alone in flight pins itself (``_pin_caller``): concurrent callers
    pinned themselves to whichever CPU they were on, often the same one, while the single
    worker could serve only one of them anyway.
    """
    with _DeferSigint() as sigint:
        _run_chunked(bounds, produce, consume, sigint.interrupted)


#: spins (x86 ``pause``, about 10-40 ns each) that ``run_team`` waits for its worker to
#: leave the team's data (flags[EXITED], set by ``packed.team_next`` without the GIL) before
#: it waits for the worker's job to end instead (``_Job.wait``: as many spins more, then
#: polling with sleeps; sleeping on a pool future took 100 us until this thread ran again,
#: measured per call: 130 us of overhead against 20 us).
_EXIT_SPINS = 20000


@contextlib.contextmanager
def _worker_for(task, stop, wanted: bool = True, exited=None, go: bool = False,
                linger: bool = True):
    """Hand ``task()`` to the worker thread for the duration of the ``with`` block.

    Yields the task's ``_Job`` (posted to the worker if it lingers after its last task,
    ``_post``, else submitted to its pool), or None: no worker (``wanted`` false,
    overlapping disabled, another call in flight, interpreter shutdown). Only a call alone
    in flight uses the
    worker and pins itself (``_pin_caller``; the worker runs the task on the other CPUs): concurrent
    callers pinned themselves to whichever CPU they were on, often the same one, while the
    single worker could serve only one of them anyway. On leaving (also on errors) ``stop()``
    tells the task to finish, and the worker is waited for (through Ctrl-C too) before this
    thread's CPU set is restored: ``exited()``, if given, first (true once the task is past
    its last access to the caller's data), then its job unless that said so.

    A posted job starts when the caller says go: at once, or with ``go`` true when the
    caller's first compiled work starts (``packed.hand_go`` on ``hand()``), so that the
    worker, taking the GIL, finds it free (a thread that waits for the GIL sleeps, and
    waking it took 25-50 us here). The caller waits for the job's end by spinning first:
    the worker marks it done once it lingers, without the GIL. With ``linger`` false the
    worker marks it done from Python and goes back to sleep instead (the caller's next work
    runs on OpenBLAS's threads, which a spinning worker would slow down).
    """
    global _active, _current, _current_thread
    pinned = None
    job = None
    counted = False
    try:
        if wanted and enabled():
            with _active_lock:
                _active += 1
                counted = True
                alone = _active == 1
            if alone:
                pinned = _pin_caller()
                job = _Job(pinned[1] if pinned else None, task, fp_control(), linger)
                if _post(job):
                    if not go:
                        _kp.hand_go_now(_hand_addr)
                else:
                    try:
                        job.future = _worker_pool().submit(_serve, job)
                    except RuntimeError:  # interpreter shutting down: no new threads
                        job = None
                if job is not None and job.linger:
                    _current, _current_thread = job, threading.get_ident()
        yield job
    finally:
        try:
            if job is not None:
                stop()
                if not (job.cancel() or (exited is not None and exited())):
                    _wait_uninterrupted(job)  # (spins first: _Job.wait)
                _current, _current_thread = None, 0
        finally:
            try:
                _unpin(pinned)
            finally:
                if counted:
                    with _active_lock:
                        _active -= 1


def _run_chunked(bounds: list[int], produce, consume, interrupted) -> None:
    n = len(bounds) - 1
    table = _Chunks(n, lambda c, w: produce(bounds[c], bounds[c + 1], w))

    def stop():
        table.stop = True

    with _worker_for(table.work, stop, wanted=n > 1):
        for c in range(n):
            if interrupted():
                break  # KeyboardInterrupt follows, after the cleanup
            table.get(c)
            consume(bounds[c], bounds[c + 1])
    if table.error is not None:
        raise table.error


def run_team(worker, args, flags, body, go: bool = False) -> None:
    """Run ``body()`` here while ``worker(*args)`` serves it on the worker thread.

    For products shared by two threads (``gatecore.kernels.packed``): the worker spins on
    ``flags`` (an int64 array of ``packed.FLAGS`` elements, zeroed here) and computes its
    half of each product that ``body`` posts, until flags[STOP] is set, which this function
    does once ``body`` has returned or raised, and before it returns it waits until the
    worker is past its last access to the team's data (flags[EXITED], or else the worker's
    return). ``body`` never depends on the worker: a half the worker has not claimed is
    computed by this thread. So a call that is not alone in flight, with overlapping
    disabled (``enabled``), or at interpreter shutdown simply runs ``body`` alone. Pinning
    as in ``_worker_for``; Ctrl-C in the main thread is held back until the worker has
    stopped (``_DeferSigint``); ``body(interrupted)`` should stop early once
    ``interrupted()`` is true (KeyboardInterrupt follows). ``worker`` must return once
    ``packed.team_next`` has returned 0 (which sets flags[EXITED]). ``go``: the first
    compiled work of ``body`` says go (``_worker_for``).
    """
    def task():
        try:
            return worker(*args)
        except BaseException:  # (on a normal return team_next has set EXITED, or the caller
            flags[EXITED] = 1  # waits for the job: a later call may have zeroed the flags
            raise              # since, so never set it here then)

    def stop():  # (compiled: the worker, stopped, finds the GIL free; see packed.team_stop)
        _kp.team_stop(flags, job_state(), _EXIT_SPINS)

    flags[:] = 0
    with _DeferSigint() as sigint, _worker_for(
            task, stop, exited=lambda: wait_exited(flags, _EXIT_SPINS), go=go):
        body(sigint.interrupted)


def hold_sigint():
    """Context manager: Ctrl-C in the main thread is held back until it leaves (see
    ``_DeferSigint``; not to be nested)."""
    return _DeferSigint()


def run_pair(mine, theirs, sigint_held: bool = False, go: bool = False,
             linger: bool = True) -> None:
    """Run ``mine()`` here and ``theirs()`` on the worker thread at once (two independent
    halves of a job), or ``theirs()`` here after ``mine()`` when the worker has not started
    it by then (a busy second core, another call in flight, overlapping disabled,
    interpreter shutdown). Errors of either are raised here once both have stopped; if
    ``mine()`` raises, ``theirs()`` does not start any more. Pinning and Ctrl-C as in
    ``run_team`` (``sigint_held``: the caller holds Ctrl-C back already, ``hold_sigint``;
    ``go``: ``mine()``'s first compiled work says go; ``linger``: see ``_worker_for``).
    """
    lock = threading.Lock()
    owner = [0]  # who runs theirs(): 0 nobody yet, 1 this thread, 2 the worker

    def claim(who):
        with lock:
            if not owner[0]:
                owner[0] = who
            return owner[0] == who

    def task():
        if claim(2):
            theirs()

    with contextlib.nullcontext() if sigint_held else _DeferSigint():
        with _worker_for(task, lambda: claim(1), go=go, linger=linger) as future:
            mine()
            if claim(1):
                theirs()
        if future is not None and not future.cancelled():
            future.result()  # the worker's error, if any


#: (thread id, CPU set) that ``_on_cpus`` last gave a worker thread: the next task with the
#: same set skips the system call (3-5 us on the worker's way to its compiled loop, while the
#: caller's half has started). gatecore never changes the set otherwise; one changed from
#: outside (``taskset -a -p``, a cgroup's cpuset) stays until a task wants another set:
#: speed only, the results do not depend on where the worker runs.
_worker_cpus = None


def _on_cpus(cpus, task, fpc=None):
    """Restrict the calling (worker) thread to ``cpus`` (None: leave it), give it the
    caller's floating-point control word ``fpc`` (``packed.fp_control``, x86's MXCSR:
    flush-to-zero, denormals-are-zero and rounding as the caller has them, so a half
    computed on the worker has the same bits as on the caller; one left with the worker's
    own, set when the pool started, kept denormals that the caller's half flushed after
    ``torch.set_flush_denormal(True)``), run ``task()`` and put the worker's own word back.
    Elsewhere (aarch64's FPCR) the word is not carried over: a caller that flushes
    denormals there can get other bits on the worker's half for denormal values."""
    global _worker_cpus
    if cpus is not None and _worker_cpus != (threading.get_ident(), cpus):
        try:
            os.sched_setaffinity(0, cpus)
            _worker_cpus = (threading.get_ident(), cpus)
        except OSError:
            _worker_cpus = None
    if fpc is None:
        return task()
    own = fp_control()
    if own == fpc:  # (the usual case: nothing to change or put back)
        return task()
    set_fp_control(fpc)
    try:
        return task()
    finally:
        set_fp_control(own)
