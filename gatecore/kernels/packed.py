"""Register-blocked float32 matrix products over pre-packed weights, on one or two threads.

``C[M, N] = A[M, K] @ W`` where W is stored as column panels of 16: ``bp[p, k, j] =
W[k, 16 p + j]`` (zero past N). The micro-kernel keeps a 6 x 16 block of C in twelve 8-wide
vector registers and adds one rank-1 update per k (two vector loads of the panel, six
broadcasts of A, twelve fused multiply-adds), the blocking of Goto and van de Geijn,
"Anatomy of high-performance matrix multiplication" (ACM TOMS 34(3), 2008). Numba cannot
express vector registers, so the kernels use a small vector type (``Vec8f``, LLVM's
``<8 x float>``) with load, broadcast, FMA and store intrinsics written with llvmlite; LLVM
maps them to AVX2/FMA instructions; on a target without FMA they would become libm calls
(same results, every element being the same chain of FMAs over k = 0 .. K-1, but about 50x
slower), so gatecore uses them only where Numba targets AVX2 and FMA (``usable``).

On a target with AVX-512 (``WIDE``; the Zen 5 EPYC here has full 512-bit FMA units) the
micro-kernel takes two adjacent panels at once with sixteen-wide vectors (``_w6s``: a 6 x 32
block in twelve zmm registers), which doubles the FMA work per instruction: one core
reaches 186-212 GFLOP/s at the recurrent products' shapes against 90-111 with eight-wide
vectors. The packed layout is the same either way, and every element of C is the same
chain of FMAs over k, so pgemm's results are the same bits with or without AVX-512.
(Backward's weight gradients also use ``pgemm_tn`` on AVX-512 targets only, where they
otherwise use OpenBLAS: gradients differ between such machines in the last bits.)

Why: the recurrent product of a step, ``h_{t-1} @ W_hh^T``, reuses the same weights T times.
OpenBLAS re-packs them on every call (16x1024 @ 1024x4096: 86 GFLOP/s on two cores), while
packed once the eight-wide kernels reach about 90-95 GFLOP/s on one core of an AVX2 EPYC
and 119-126 on two (64x320 @ 320x1280, 64x512 @ 512x2048; 88 at 16x1024 @ 1024x4096, which
streams 16 MB of weights per step), against 100-115 for OpenBLAS there; twice that with
AVX-512 (above).

Two threads share a product by column panels (``team_step`` on the caller, ``team_worker``
on a second thread, see ``gatecore.overlap.run_team``); the time loops of the generated
kernels (``cpu_kernels.py.in``) use the same protocol (``team_post``, ``team_claim``,
``team_wait``, ``team_next``, ``team_done``) for jobs of their own, a step split by hidden
units. They meet through an int64 ``flags``
array with atomic loads, stores and compare-and-swap, spinning (a step lasts 0.1-2 ms, a
thread wake-up 50 us): per product (sequence number s) the caller posts s, computes its
panels, then claims the worker's panels unless the worker has claimed them already, so a
worker that is not running (no worker at all, or not yet started) never stalls the caller; one
preempted in the middle of its half does make the caller wait for it. The flags must be
zero when a team starts (``run_team`` zeroes them): a stale claim would make the caller wait
for a half nobody computes.

Between tasks the worker spins in ``linger`` on the hand-over array of ``gatecore.overlap``
(``HAND_STATE``): a caller posts its next job there (``hand_post``) and says go from its
compiled work (``hand_go``), and waits at the end while the worker runs it (``job_finish``,
``team_stop``), so neither thread waits for the GIL that the other holds.
"""

from __future__ import annotations

import platform

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from .. import config

__all__ = ["pack_rows", "pack_cols", "pgemm", "pgemm_at", "pgemm_init", "pgemm_tn", "tn_scratch",
           "team_step", "team_second_half", "team_worker", "team_post", "team_claim", "team_wait", "team_next",
           "team_done", "FLAGS", "WIDE", "packed_size", "usable", "fp_control", "set_fp_control",
           "HAND", "HAND_STATE", "HAND_QUEUED", "linger", "hand_post", "hand_go", "hand_go_now",
           "job_finish", "team_stop", "hand_store", "hand_add", "hand_cas", "wait_at_least"]

CACHE = config.use_disk_cache()
NR = 16  # panel width (two vectors of 8)
MR = 6  # rows of C per micro-kernel call

#: slots of the flags array (int64): POSTED (caller: sequence number of the posted product),
#: CLAIM (the sequence number whose second half somebody took), DONE (worker: last finished),
#: STOP (caller: the worker returns), AOFF (the posted job's argument, for a product the
#: offset of its A in the worker's base array), EXITED (the worker is past its last access
#: to the team's data: set by ``team_next`` when it returns 0, or by
#: ``gatecore.overlap.run_team`` when the worker raised). Each on its own 64-byte line.
POSTED, CLAIM, DONE, STOP, AOFF, EXITED = 0, 8, 16, 24, 32, 40
FLAGS = 48
#: pgemm's blocking (see its docstring): k per slice of a product of more than 96 rows, and
#: floats of A per block of rows
KCMAX, AFLOATS = 1024, 98304

def _target_features() -> set[str]:
    """LLVM features of the CPU Numba compiles for (NUMBA_CPU_FEATURES, else the host's),
    such as "+avx2"; none for a named generic target (NUMBA_CPU_NAME without features:
    assume none) or when unknown."""
    try:
        from numba.core import config as nconfig
        feats = nconfig.CPU_FEATURES
        if feats is None:
            if nconfig.CPU_NAME not in (None, "host"):
                return set()
            import llvmlite.binding as ll
            feats = ll.get_host_cpu_features().flatten()
        return {f.strip() for f in feats.split(",")}
    except Exception:  # noqa: BLE001 - unknown: the BLAS paths
        return set()


def _target_has_fma(feats: set[str]) -> bool:
    """Whether Numba compiles for a CPU with AVX2 and FMA (``_target_features``). Without
    FMA, LLVM turns the kernels' vector FMAs into calls of libm's fmaf: the same results,
    about 50x slower (measured: 188 against 3.5 ms for 64x512 @ 512x2048)."""
    return "+fma" in feats and "+avx2" in feats


def _target_name() -> str:
    """LLVM's name of the CPU Numba compiles for (NUMBA_CPU_NAME, else the host's), such as
    "znver4" or "skylake-avx512"; "" when unknown."""
    try:
        from numba.core import config as nconfig
        name = nconfig.CPU_NAME
        if name in (None, "host"):
            import llvmlite.binding as ll
            name = ll.get_host_cpu_name()
        return str(name)
    except Exception:  # noqa: BLE001 - unknown
        return ""


_FEATURES = _target_features()
_FMA = _target_has_fma(_FEATURES)
#: the target has AVX-512 (F): pgemm_at multiplies two panels at once with 16-wide vectors
#: (``_w6s``). A compile-time constant of the kernels; Numba's cache keys its entries by the
#: target's features, so a cache filled on another CPU is never used with the wrong value.
WIDE = _FMA and "+avx512f" in _FEATURES
#: an AVX-512 target that runs each 512-bit operation as two 256-bit halves (AMD Zen 4,
#: LLVM's "znver4"; LLVM before 16, in older Numbas, calls it "znver3", a name whose own CPUs
#: have no AVX-512): there the micro-kernels reach about the rate of NumPy's OpenBLAS, whose
#: hand-written kernels beat pgemm_tn (backward's weight gradients; see
#: ``network.TN_WEIGHT_GRADS``), while on Zen 5, with whole 512-bit FMA units, pgemm_tn ran
#: 1.5-2.4x faster than OpenBLAS (its docstring)
HALF_512 = WIDE and _target_name() in ("znver4", "znver3")

_I32 = ir.IntType(32)
#: an x86 machine: the ``pause`` spin hint and the MXCSR (fp_control) exist
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def _elem_ptr(context, builder, aryty, ary, idx):
    """Pointer to element ``idx`` of ``ary`` counted from its data pointer (C order)."""
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.gep(data, [idx])


def _vector_model(lanes):
    """A Numba type for ``lanes`` float32 in one vector register (LLVM ``<lanes x float>``)."""
    lt = ir.VectorType(ir.FloatType(), lanes)

    class VecF(types.Type):
        def __init__(self):
            super().__init__(name=f"Vec{lanes}f")

    @register_model(VecF)
    class _Model(models.PrimitiveModel):
        def __init__(self, dmm, fe_type):
            super().__init__(dmm, fe_type, lt)

    return VecF(), lt


vec8f, _VT = _vector_model(8)  # AVX2 ymm
vec16f, _WT = _vector_model(16)  # AVX-512 zmm
# (the intrinsics below stay module-level functions, one per width: Numba's cache refers to
# them by name; their code generators are shared)


def _cg_load(lt):
    def codegen(context, builder, sig, args):
        p = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.load(builder.bitcast(p, ir.PointerType(lt)), align=4)
    return codegen


def _cg_store(lt):
    def codegen(context, builder, sig, args):
        p = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], builder.bitcast(p, ir.PointerType(lt)), align=4)
        return context.get_dummy_value()
    return codegen


def _cg_bload(lt):
    def codegen(context, builder, sig, args):
        x = builder.load(_elem_ptr(context, builder, sig.args[0], args[0], args[1]), align=4)
        v = builder.insert_element(ir.Constant(lt, ir.Undefined), x, ir.Constant(_I32, 0))
        return builder.shuffle_vector(v, ir.Constant(lt, ir.Undefined),
                                      ir.Constant(ir.VectorType(_I32, lt.count), [0] * lt.count))
    return codegen


def _cg_zero(lt):
    def codegen(context, builder, sig, args):
        return ir.Constant(lt, [0.0] * lt.count)
    return codegen


def _cg_fma(lt):
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(lt, [lt] * 3),
                                            f"llvm.fma.v{lt.count}f32")
        return builder.call(fn, args)
    return codegen


def _cg_add(lt):
    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return codegen


@intrinsic
def _vload(typingctx, arr, idx):
    """Eight floats at element ``idx`` of ``arr`` (counted from the data pointer)."""
    return vec8f(arr, types.intp), _cg_load(_VT)


@intrinsic
def _vstore(typingctx, arr, idx, v):
    return types.void(arr, types.intp, vec8f), _cg_store(_VT)


@intrinsic
def _vbload(typingctx, arr, idx):
    """Element ``idx`` of ``arr`` broadcast to all eight lanes."""
    return vec8f(arr, types.intp), _cg_bload(_VT)


@intrinsic
def _vzero(typingctx):
    return vec8f(), _cg_zero(_VT)


@intrinsic
def _vfma(typingctx, a, b, c):
    """a * b + c, rounded once (llvm.fma)."""
    return vec8f(vec8f, vec8f, vec8f), _cg_fma(_VT)


@intrinsic
def _vadd(typingctx, a, b):
    return vec8f(vec8f, vec8f), _cg_add(_VT)


@intrinsic
def _wload(typingctx, arr, idx):
    """As _vload, sixteen floats."""
    return vec16f(arr, types.intp), _cg_load(_WT)


@intrinsic
def _wstore(typingctx, arr, idx, v):
    return types.void(arr, types.intp, vec16f), _cg_store(_WT)


@intrinsic
def _wbload(typingctx, arr, idx):
    return vec16f(arr, types.intp), _cg_bload(_WT)


@intrinsic
def _wzero(typingctx):
    return vec16f(), _cg_zero(_WT)


@intrinsic
def _wfma(typingctx, a, b, c):
    return vec16f(vec16f, vec16f, vec16f), _cg_fma(_WT)


@intrinsic
def _wadd(typingctx, a, b):
    return vec16f(vec16f, vec16f), _cg_add(_WT)


@intrinsic
def _fstore(typingctx, arr, idx, x):
    """arr.flat[idx] = x, counted from the data pointer (any number of dimensions)."""
    sig = types.void(arr, types.intp, types.float32)

    def codegen(context, builder, sig, args):
        builder.store(args[2], _elem_ptr(context, builder, sig.args[0], args[0], args[1]),
                      align=4)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _fload(typingctx, arr, idx):
    """arr.flat[idx], counted from the data pointer (any number of dimensions)."""
    sig = types.float32(arr, types.intp)

    def codegen(context, builder, sig, args):
        return builder.load(_elem_ptr(context, builder, sig.args[0], args[0], args[1]),
                            align=4)
    return sig, codegen


@intrinsic
def _aload(typingctx, arr, idx):
    sig = types.int64(arr, types.intp)

    def codegen(context, builder, sig, args):
        p = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.load_atomic(p, "acquire", 8)
    return sig, codegen


@intrinsic
def _astore(typingctx, arr, idx, v):
    sig = types.void(arr, types.intp, types.int64)

    def codegen(context, builder, sig, args):
        p = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        builder.store_atomic(args[2], p, "release", 8)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _acas(typingctx, arr, idx, old, new):
    """Atomically replace ``arr[idx] == old`` by ``new``; whether it did."""
    sig = types.boolean(arr, types.intp, types.int64, types.int64)

    def codegen(context, builder, sig, args):
        p = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        res = builder.cmpxchg(p, args[2], args[3], "acq_rel", "acquire")
        return builder.extract_value(res, 1)
    return sig, codegen


def _addr_ptr(builder, addr, idx):
    """Pointer to int64 number ``idx`` at address ``addr`` (an int: no array boxed, so no
    NRT allocation per call)."""
    i64 = ir.IntType(64)
    base = builder.inttoptr(addr, ir.PointerType(i64))
    return builder.gep(base, [idx])


@intrinsic
def _pload(typingctx, addr, idx):
    """Atomic (acquire) load of int64 number ``idx`` at address ``addr``."""
    sig = types.int64(types.int64, types.intp)

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_addr_ptr(builder, args[0], args[1]), "acquire", 8)
    return sig, codegen


@intrinsic
def _pstore(typingctx, addr, idx, v):
    """Atomic (release) store of ``v`` to int64 number ``idx`` at address ``addr``."""
    sig = types.void(types.int64, types.intp, types.int64)

    def codegen(context, builder, sig, args):
        builder.store_atomic(args[2], _addr_ptr(builder, args[0], args[1]), "release", 8)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _pcas(typingctx, addr, idx, old, new):
    """Atomically replace int64 number ``idx`` at ``addr``, if ``old``, by ``new``; whether
    it did."""
    sig = types.boolean(types.int64, types.intp, types.int64, types.int64)

    def codegen(context, builder, sig, args):
        res = builder.cmpxchg(_addr_ptr(builder, args[0], args[1]), args[2], args[3], "acq_rel",
                              "acquire")
        return builder.extract_value(res, 1)
    return sig, codegen


@intrinsic
def _padd(typingctx, addr, idx, v):
    """Atomically add ``v`` to int64 number ``idx`` at ``addr``; the value before."""
    sig = types.int64(types.int64, types.intp, types.int64)

    def codegen(context, builder, sig, args):
        return builder.atomic_rmw("add", _addr_ptr(builder, args[0], args[1]), args[2], "acq_rel")
    return sig, codegen


def _prefetch_codegen(locality, rw=0):
    """Codegen of LLVM's prefetch of an array element, a read (``rw`` 0) or a write (1),
    with ``locality`` 0-3."""
    def codegen(context, builder, sig, args):
        ptr = builder.bitcast(_elem_ptr(context, builder, sig.args[0], args[0], args[1]),
                              ir.PointerType(ir.IntType(8)))
        fn = builder.module.declare_intrinsic(
            "llvm.prefetch", [ptr.type],
            ir.FunctionType(ir.VoidType(), [ptr.type, _I32, _I32, _I32]))
        builder.call(fn, [ptr, ir.Constant(_I32, rw), ir.Constant(_I32, locality),
                          ir.Constant(_I32, 1)])
        return context.get_dummy_value()
    return codegen


@intrinsic
def prefetch(typingctx, arr, idx):
    """Hint that element ``idx`` of ``arr`` (counted from its data pointer) will be read soon
    (LLVM's prefetch: into all cache levels; no effect on results, never faults)."""
    return types.void(arr, idx), _prefetch_codegen(3)


@intrinsic
def prefetch_w(typingctx, arr, idx):
    """As ``prefetch``, for a write: the line comes owned (x86 ``prefetchw``), so the store
    that follows need not fetch it."""
    return types.void(arr, idx), _prefetch_codegen(3, 1)


@intrinsic
def prefetch_l2(typingctx, arr, idx):
    """As ``prefetch``, into the second-level cache (and the levels beyond it), not the
    first (LLVM's prefetch with locality 2)."""
    return types.void(arr, idx), _prefetch_codegen(2)


@intrinsic
def borrow(typingctx, arr):
    """``arr`` without its reference count: the same array (type, data, shape, strides) with
    no meminfo, so that its views and the calls that take it or them count no references.

    Numba counts a reference of an array's meminfo, with an atomic (lock-prefixed, fully
    fencing) add and subtract, for every view made and every call it is passed to (those its
    reference-count pruning leaves): in the teams' per-item loops 5% of each thread's
    samples were NRT_incref and NRT_decref (perf, LSTM inference T=100, B=8, H=64).

    Only for the duration of the compiled call that owns ``arr`` (its caller keeps it
    alive): neither the borrowed array nor any view of it may be returned or boxed to
    Python (a view would come back as an ndarray that owns nothing, ``base`` None, dangling
    once the owner goes), stored in a list, dict or closure, or passed to object mode.
    The kernels (cpu_kernels.py.in) borrow their arguments and return nothing but
    integers."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, sig, args):
        src = cgutils.create_struct_proxy(sig.args[0])(context, builder, value=args[0])
        out = cgutils.create_struct_proxy(sig.return_type)(context, builder)
        for name in ("nitems", "itemsize", "data", "shape", "strides", "parent"):
            setattr(out, name, getattr(src, name))
        out.meminfo = cgutils.get_null_value(out.meminfo.type)
        return out._getvalue()
    return arr(arr), codegen


@intrinsic
def _pause(typingctx):
    """The spin-wait hint (x86 ``pause``); nothing elsewhere."""
    sig = types.void()

    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()
    return sig, codegen


@njit(cache=CACHE, nogil=True, inline="always")
def _k6(a, ao, lda, bp, bo, c, co, ldc, K, acc):
    """C block [6, 16] at c[co] (rows ldc apart) = (C if acc, else 0) + A @ panel, where the
    A rows start at a[ao] (lda apart) and the panel slice at bp[bo] (16 per k)."""
    _k6i(a, ao, lda, bp, bo, c, co, ldc, K, acc, co, ldc)


@njit(cache=CACHE, nogil=True, inline="always")
def _k6i(a, ao, lda, bp, bo, c, co, ldc, K, acc, lo, ldl):
    """_k6 whose block starts (``acc``) from the one at element ``lo`` of c (counted from
    its data pointer, rows ``ldl`` apart): pgemm_init's init source."""
    c00 = _vzero()
    c01 = _vzero()
    c10 = _vzero()
    c11 = _vzero()
    c20 = _vzero()
    c21 = _vzero()
    c30 = _vzero()
    c31 = _vzero()
    c40 = _vzero()
    c41 = _vzero()
    c50 = _vzero()
    c51 = _vzero()
    if acc:
        c00 = _vload(c, lo)
        c01 = _vload(c, lo + 8)
        c10 = _vload(c, lo + ldl)
        c11 = _vload(c, lo + ldl + 8)
        c20 = _vload(c, lo + 2 * ldl)
        c21 = _vload(c, lo + 2 * ldl + 8)
        c30 = _vload(c, lo + 3 * ldl)
        c31 = _vload(c, lo + 3 * ldl + 8)
        c40 = _vload(c, lo + 4 * ldl)
        c41 = _vload(c, lo + 4 * ldl + 8)
        c50 = _vload(c, lo + 5 * ldl)
        c51 = _vload(c, lo + 5 * ldl + 8)
    a1 = ao + lda
    a2 = a1 + lda
    a3 = a2 + lda
    a4 = a3 + lda
    a5 = a4 + lda
    for k in range(K):
        b0 = _vload(bp, bo + NR * k)
        b1 = _vload(bp, bo + NR * k + 8)
        x = _vbload(a, ao + k)
        c00 = _vfma(x, b0, c00)
        c01 = _vfma(x, b1, c01)
        x = _vbload(a, a1 + k)
        c10 = _vfma(x, b0, c10)
        c11 = _vfma(x, b1, c11)
        x = _vbload(a, a2 + k)
        c20 = _vfma(x, b0, c20)
        c21 = _vfma(x, b1, c21)
        x = _vbload(a, a3 + k)
        c30 = _vfma(x, b0, c30)
        c31 = _vfma(x, b1, c31)
        x = _vbload(a, a4 + k)
        c40 = _vfma(x, b0, c40)
        c41 = _vfma(x, b1, c41)
        x = _vbload(a, a5 + k)
        c50 = _vfma(x, b0, c50)
        c51 = _vfma(x, b1, c51)
    _vstore(c, co, c00)
    _vstore(c, co + 8, c01)
    _vstore(c, co + ldc, c10)
    _vstore(c, co + ldc + 8, c11)
    _vstore(c, co + 2 * ldc, c20)
    _vstore(c, co + 2 * ldc + 8, c21)
    _vstore(c, co + 3 * ldc, c30)
    _vstore(c, co + 3 * ldc + 8, c31)
    _vstore(c, co + 4 * ldc, c40)
    _vstore(c, co + 4 * ldc + 8, c41)
    _vstore(c, co + 5 * ldc, c50)
    _vstore(c, co + 5 * ldc + 8, c51)


@njit(cache=CACHE, nogil=True, inline="always")
def _k4(a, ao, lda, bp, bo, c, co, ldc, K, acc, r):
    """Rows 0 .. r-1 (r <= 4) of a [4, 16] block as in _k6 (rows past r repeat row r-1 and
    are not stored)."""
    _k4i(a, ao, lda, bp, bo, c, co, ldc, K, acc, r, co, ldc)


@njit(cache=CACHE, nogil=True, inline="always")
def _k4i(a, ao, lda, bp, bo, c, co, ldc, K, acc, r, lo, ldl):
    """_k4 with an init source, as _k6i."""
    l1 = lda if r > 1 else 0
    l2 = 2 * lda if r > 2 else l1
    l3 = 3 * lda if r > 3 else l2
    c00 = _vzero()
    c01 = _vzero()
    c10 = _vzero()
    c11 = _vzero()
    c20 = _vzero()
    c21 = _vzero()
    c30 = _vzero()
    c31 = _vzero()
    if acc:
        c00 = _vload(c, lo)
        c01 = _vload(c, lo + 8)
        if r > 1:
            c10 = _vload(c, lo + ldl)
            c11 = _vload(c, lo + ldl + 8)
        if r > 2:
            c20 = _vload(c, lo + 2 * ldl)
            c21 = _vload(c, lo + 2 * ldl + 8)
        if r > 3:
            c30 = _vload(c, lo + 3 * ldl)
            c31 = _vload(c, lo + 3 * ldl + 8)
    a1 = ao + l1
    a2 = ao + l2
    a3 = ao + l3
    for k in range(K):
        b0 = _vload(bp, bo + NR * k)
        b1 = _vload(bp, bo + NR * k + 8)
        x = _vbload(a, ao + k)
        c00 = _vfma(x, b0, c00)
        c01 = _vfma(x, b1, c01)
        x = _vbload(a, a1 + k)
        c10 = _vfma(x, b0, c10)
        c11 = _vfma(x, b1, c11)
        x = _vbload(a, a2 + k)
        c20 = _vfma(x, b0, c20)
        c21 = _vfma(x, b1, c21)
        x = _vbload(a, a3 + k)
        c30 = _vfma(x, b0, c30)
        c31 = _vfma(x, b1, c31)
    _vstore(c, co, c00)
    _vstore(c, co + 8, c01)
    if r > 1:
        _vstore(c, co + ldc, c10)
        _vstore(c, co + ldc + 8, c11)
    if r > 2:
        _vstore(c, co + 2 * ldc, c20)
        _vstore(c, co + 2 * ldc + 8, c21)
    if r > 3:
        _vstore(c, co + 3 * ldc, c30)
        _vstore(c, co + 3 * ldc + 8, c31)


@njit(cache=CACHE, nogil=True, inline="always")
def _k1(a, ao, bp, bo, c, co, K, acc):
    """One row: c[co:co+16] = (c if acc, else 0) + A row @ panel slice. Even and odd k
    accumulate apart (four chains of FMAs: two would wait on the FMA latency)."""
    _k1i(a, ao, bp, bo, c, co, K, acc, co)


@njit(cache=CACHE, nogil=True, inline="always")
def _k1i(a, ao, bp, bo, c, co, K, acc, lo):
    """_k1 with an init source, as _k6i."""
    c0 = _vzero()
    c1 = _vzero()
    d0 = _vzero()
    d1 = _vzero()
    if acc:
        c0 = _vload(c, lo)
        c1 = _vload(c, lo + 8)
    K2 = K - K % 2
    for k in range(0, K2, 2):
        x = _vbload(a, ao + k)
        c0 = _vfma(x, _vload(bp, bo + NR * k), c0)
        c1 = _vfma(x, _vload(bp, bo + NR * k + 8), c1)
        z = _vbload(a, ao + k + 1)
        d0 = _vfma(z, _vload(bp, bo + NR * k + 16), d0)
        d1 = _vfma(z, _vload(bp, bo + NR * k + 24), d1)
    if K2 < K:
        x = _vbload(a, ao + K2)
        c0 = _vfma(x, _vload(bp, bo + NR * K2), c0)
        c1 = _vfma(x, _vload(bp, bo + NR * K2 + 8), c1)
    _vstore(c, co, _vadd(c0, d0))
    _vstore(c, co + 8, _vadd(c1, d1))


@njit(cache=CACHE, nogil=True, inline="always")
def _w6s(a, ao, lda, lk, bp, bo, bo2, c, co, ldc, K, acc):
    """As _k6 over two full panels at once (AVX-512): C block [6, 32] at c[co] = (C if acc,
    else 0) + A @ [panel at bp[bo], panel at bp[bo2]], sixteen-wide vectors (twelve
    accumulators, two panel loads and six broadcasts per k). Each element is the same chain
    of FMAs over k as in _k6: the same bits. Measured on one core of the Zen 5 EPYC: 186-212
    GFLOP/s against _k6's 90-111 (60x320 @ 320x1280, 60x512 @ 512x2048, 48x128 @ 128x512).
    A[r, k] at a[ao + r lda + k lk]: pgemm_at's rows of A (lk 1), pgemm_tn's packed X^T
    (k-major, six rows per k side by side: lda 1, lk 6)."""
    _w6x(a, ao, lda, lk, bp, bo, bo2, c, co, ldc, c, co + 16, ldc, K, acc)


@njit(cache=CACHE, nogil=True, inline="always")
def _w6x(a, ao, lda, lk, bp, bo, bo2, c, co, ldc, e, eo, lde, K, acc):
    """_w6s with the second panel's 16 columns at e[eo] (rows lde apart): a tile, for a
    last panel narrower than 16 (pgemm_at)."""
    _w6xi(a, ao, lda, lk, bp, bo, bo2, c, co, ldc, e, eo, lde, K, acc, co, ldc, eo, lde)


@njit(cache=CACHE, nogil=True, inline="always")
def _w6xi(a, ao, lda, lk, bp, bo, bo2, c, co, ldc, e, eo, lde, K, acc, lo, ldl, le, lde2):
    """_w6x whose panels start (``acc``) from c[lo] and e[le] (rows ldl and lde2 apart),
    as _k6i."""
    c00 = _wzero()
    c01 = _wzero()
    c10 = _wzero()
    c11 = _wzero()
    c20 = _wzero()
    c21 = _wzero()
    c30 = _wzero()
    c31 = _wzero()
    c40 = _wzero()
    c41 = _wzero()
    c50 = _wzero()
    c51 = _wzero()
    if acc:
        c00 = _wload(c, lo)
        c01 = _wload(e, le)
        c10 = _wload(c, lo + ldl)
        c11 = _wload(e, le + lde2)
        c20 = _wload(c, lo + 2 * ldl)
        c21 = _wload(e, le + 2 * lde2)
        c30 = _wload(c, lo + 3 * ldl)
        c31 = _wload(e, le + 3 * lde2)
        c40 = _wload(c, lo + 4 * ldl)
        c41 = _wload(e, le + 4 * lde2)
        c50 = _wload(c, lo + 5 * ldl)
        c51 = _wload(e, le + 5 * lde2)
    a1 = ao + lda
    a2 = a1 + lda
    a3 = a2 + lda
    a4 = a3 + lda
    a5 = a4 + lda
    for k in range(K):
        b0 = _wload(bp, bo + NR * k)
        b1 = _wload(bp, bo2 + NR * k)
        kl = k * lk
        x = _wbload(a, ao + kl)
        c00 = _wfma(x, b0, c00)
        c01 = _wfma(x, b1, c01)
        x = _wbload(a, a1 + kl)
        c10 = _wfma(x, b0, c10)
        c11 = _wfma(x, b1, c11)
        x = _wbload(a, a2 + kl)
        c20 = _wfma(x, b0, c20)
        c21 = _wfma(x, b1, c21)
        x = _wbload(a, a3 + kl)
        c30 = _wfma(x, b0, c30)
        c31 = _wfma(x, b1, c31)
        x = _wbload(a, a4 + kl)
        c40 = _wfma(x, b0, c40)
        c41 = _wfma(x, b1, c41)
        x = _wbload(a, a5 + kl)
        c50 = _wfma(x, b0, c50)
        c51 = _wfma(x, b1, c51)
    _wstore(c, co, c00)
    _wstore(e, eo, c01)
    _wstore(c, co + ldc, c10)
    _wstore(e, eo + lde, c11)
    _wstore(c, co + 2 * ldc, c20)
    _wstore(e, eo + 2 * lde, c21)
    _wstore(c, co + 3 * ldc, c30)
    _wstore(e, eo + 3 * lde, c31)
    _wstore(c, co + 4 * ldc, c40)
    _wstore(e, eo + 4 * lde, c41)
    _wstore(c, co + 5 * ldc, c50)
    _wstore(e, eo + 5 * lde, c51)


@njit(cache=CACHE, nogil=True, inline="always")
def _w4(a, ao, lda, bp, bo, bo2, c, co, ldc, K, acc, r):
    """Rows 0 .. r-1 (r <= 4) of a [4, 32] block as in _w6s (the same bits as _k4's)."""
    _w4x(a, ao, lda, bp, bo, bo2, c, co, ldc, c, co + 16, ldc, K, acc, r)


@njit(cache=CACHE, nogil=True, inline="always")
def _w4x(a, ao, lda, bp, bo, bo2, c, co, ldc, e, eo, lde, K, acc, r):
    """_w4 with the second panel's columns at e[eo] (rows lde apart), as _w6x."""
    _w4xi(a, ao, lda, bp, bo, bo2, c, co, ldc, e, eo, lde, K, acc, r, co, ldc, eo, lde)


@njit(cache=CACHE, nogil=True, inline="always")
def _w4xi(a, ao, lda, bp, bo, bo2, c, co, ldc, e, eo, lde, K, acc, r, lo, ldl, le, lde2):
    """_w4x with init sources, as _w6xi."""
    l1 = lda if r > 1 else 0
    l2 = 2 * lda if r > 2 else l1
    l3 = 3 * lda if r > 3 else l2
    c00 = _wzero()
    c01 = _wzero()
    c10 = _wzero()
    c11 = _wzero()
    c20 = _wzero()
    c21 = _wzero()
    c30 = _wzero()
    c31 = _wzero()
    if acc:
        c00 = _wload(c, lo)
        c01 = _wload(e, le)
        if r > 1:
            c10 = _wload(c, lo + ldl)
            c11 = _wload(e, le + lde2)
        if r > 2:
            c20 = _wload(c, lo + 2 * ldl)
            c21 = _wload(e, le + 2 * lde2)
        if r > 3:
            c30 = _wload(c, lo + 3 * ldl)
            c31 = _wload(e, le + 3 * lde2)
    a1 = ao + l1
    a2 = ao + l2
    a3 = ao + l3
    for k in range(K):
        b0 = _wload(bp, bo + NR * k)
        b1 = _wload(bp, bo2 + NR * k)
        x = _wbload(a, ao + k)
        c00 = _wfma(x, b0, c00)
        c01 = _wfma(x, b1, c01)
        x = _wbload(a, a1 + k)
        c10 = _wfma(x, b0, c10)
        c11 = _wfma(x, b1, c11)
        x = _wbload(a, a2 + k)
        c20 = _wfma(x, b0, c20)
        c21 = _wfma(x, b1, c21)
        x = _wbload(a, a3 + k)
        c30 = _wfma(x, b0, c30)
        c31 = _wfma(x, b1, c31)
    _wstore(c, co, c00)
    _wstore(e, eo, c01)
    if r > 1:
        _wstore(c, co + ldc, c10)
        _wstore(e, eo + lde, c11)
    if r > 2:
        _wstore(c, co + 2 * ldc, c20)
        _wstore(e, eo + 2 * lde, c21)
    if r > 3:
        _wstore(c, co + 3 * ldc, c30)
        _wstore(e, eo + 3 * lde, c31)


@njit(cache=CACHE, nogil=True, inline="always")
def _w1xi(a, ao, bp, bo, bo2, c, co, e, eo, K, acc, lo, le):
    """One row of two panels, as _k1 (even and odd k apart: the same bits as _k1's), the
    second panel's columns at e[eo] (as _w6x); with ``acc`` starting from c[lo] and e[le]
    (as _w6xi)."""
    c0 = _wzero()
    c1 = _wzero()
    d0 = _wzero()
    d1 = _wzero()
    if acc:
        c0 = _wload(c, lo)
        c1 = _wload(e, le)
    K2 = K - K % 2
    for k in range(0, K2, 2):
        x = _wbload(a, ao + k)
        c0 = _wfma(x, _wload(bp, bo + NR * k), c0)
        c1 = _wfma(x, _wload(bp, bo2 + NR * k), c1)
        z = _wbload(a, ao + k + 1)
        d0 = _wfma(z, _wload(bp, bo + NR * k + 16), d0)
        d1 = _wfma(z, _wload(bp, bo2 + NR * k + 16), d1)
    if K2 < K:
        x = _wbload(a, ao + K2)
        c0 = _wfma(x, _wload(bp, bo + NR * K2), c0)
        c1 = _wfma(x, _wload(bp, bo2 + NR * K2), c1)
    _wstore(c, co, _wadd(c0, d0))
    _wstore(e, eo, _wadd(c1, d1))


@njit(cache=CACHE, nogil=True)
def _block(a, ao, K, bp, bo, c, co, ldc, i, r, j0, nj, kk, acc, tile, lo, ldl):
    """Rows i .. i+r-1 (r = 6, 1 .. 4) of C (at c[co], rows ldc apart), columns j0 .. j0+nj-1
    of the last panel of a width that is not a multiple of 16 (nj < 16), over kk k's: through
    the tile (pgemm_at runs full panels' blocks inline). With ``acc`` the block starts from
    the one at c[lo] (rows ldl apart; C's own: lo = co, ldl = ldc), as _k6i."""
    if acc:
        for q in range(r):
            for j in range(nj):
                tile[q * NR + j] = _fload(c, lo + (i + q) * ldl + j0 + j)
    if r == MR:
        _k6(a, ao, K, bp, bo, tile, 0, NR, kk, acc)
    elif r == 1:
        _k1(a, ao, bp, bo, tile, 0, kk, acc)
    else:
        _k4(a, ao, K, bp, bo, tile, 0, NR, kk, acc, r)
    for q in range(r):
        for j in range(nj):
            _fstore(c, co + (i + q) * ldc + j0 + j, tile[q * NR + j])


@njit(cache=CACHE, nogil=True)
def _pair_tail(a, ao, K, bp, bo, bo2, c, co, ldc, i0, i1, j0, nj, kk, acc, tile, lo, ldl):
    """Rows i0 .. i1-1 of a full panel at column j0 and the last, partial one after it (nj <
    16 columns) at once, sixteen-wide as _w6s/_w4: the partial panel's columns go through
    ``tile`` (the same bits as _k6/_block's; at N = 125, dx of bench320's backward, the last
    two panels ran eight-wide before). ``acc``, ``lo``, ``ldl`` as _block's."""
    i = i0
    while i < i1:
        r = MR if i + MR <= i1 and i1 - i != 8 else min(4, i1 - i)
        if acc:
            for q in range(r):
                for j in range(nj):
                    tile[q * NR + j] = _fload(c, lo + (i + q) * ldl + j0 + NR + j)
        ic = co + i * ldc + j0
        il = lo + i * ldl + j0
        if r == MR:
            _w6xi(a, ao + i * K, K, 1, bp, bo, bo2, c, ic, ldc, tile, 0, NR, kk, acc, il, ldl,
                  0, NR)
        elif r == 1:
            _w1xi(a, ao + i * K, bp, bo, bo2, c, ic, tile, 0, kk, acc, il, 0)
        else:
            _w4xi(a, ao + i * K, K, bp, bo, bo2, c, ic, ldc, tile, 0, NR, kk, acc, r, il, ldl,
                  0, NR)
        for q in range(r):
            for j in range(nj):
                _fstore(c, co + (i + q) * ldc + j0 + NR + j, tile[q * NR + j])
        i += r


@njit(cache=CACHE, nogil=True)
def pgemm_at(a, ao, bp, c, co, ldc, M, K, N, p0, p1, tile, kcmax=KCMAX, afloats=AFLOATS):
    """As ``pgemm``, C [M, N] starting at element ``co`` of ``c`` with rows ``ldc`` elements
    apart (a block of columns of a wider array)."""
    pgemm_init(a, ao, bp, c, co, ldc, M, K, N, p0, p1, tile, False, c, co, ldc, kcmax, afloats)


@njit(cache=CACHE, nogil=True)
def pgemm_init(a, ao, bp, c, co, ldc, M, K, N, p0, p1, tile, init, ci, cio, ldci, kcmax=KCMAX,
               afloats=AFLOATS):
    """As ``pgemm_at``; with ``init``, C = I + A @ W for I [M, N] at element ``cio`` of ``ci``
    (rows ``ldci`` apart; 0: one row for all, a bias): each element of C is then the chain
    of FMAs over k that starts from I's element instead of zero. A step's recurrent product
    starts from the step's input product, the input product from the bias (the kernels'
    teams). The kernels load I's blocks at their offset from C's data pointer (one code
    path: a second source array made the micro-kernels' loops 10% slower)."""
    kc = K
    if M > 96 and K > kcmax:
        kc = -(-K // -(-K // kcmax))
    mc = max(MR, (afloats // max(kc, 1)) // MR * MR)
    # (ci: float32 as c, C-contiguous rows; its elements are counted from c's data pointer)
    ioff = (np.int64(ci.ctypes.data) - np.int64(c.ctypes.data)) // 4 + cio
    k0 = 0
    while True:  # at least once: K = 0 gives zeros (or I)
        kk = min(kc, K - k0)
        acc = k0 > 0 or init
        lb, ll = (ioff, ldci) if init and k0 == 0 else (co, ldc)
        for i0 in range(0, M, mc):
            i1 = min(M, i0 + mc)
            p = p0
            while p < p1:
                bo = p * K * NR + k0 * NR
                j0 = p * NR
                nj = min(NR, N - j0)
                i = i0
                if WIDE and p + 1 < p1 and j0 + 2 * NR <= N:  # two full panels at once
                    bo2 = bo + K * NR
                    while i + MR <= i1 and i1 - i != 8:
                        ic = co + i * ldc + j0
                        il = lb + i * ll + j0
                        _w6xi(a, ao + i * K + k0, K, 1, bp, bo, bo2, c, ic, ldc, c, ic + NR, ldc,
                              kk, acc, il, ll, il + NR, ll)
                        i += MR
                    while i < i1:
                        r = min(4, i1 - i)
                        ic = co + i * ldc + j0
                        il = lb + i * ll + j0
                        if r == 1:
                            _w1xi(a, ao + i * K + k0, bp, bo, bo2, c, ic, c, ic + NR, kk, acc, il,
                                  il + NR)
                        else:
                            _w4xi(a, ao + i * K + k0, K, bp, bo, bo2, c, ic, ldc, c, ic + NR,
                                  ldc, kk, acc, r, il, ll, il + NR, ll)
                        i += r
                    p += 2
                    continue
                if WIDE and p + 1 < p1 and j0 + NR < N:  # two panels, the second partial
                    _pair_tail(a, ao + k0, K, bp, bo, bo + K * NR, c, co, ldc, i0, i1, j0,
                               N - j0 - NR, kk, acc, tile, lb, ll)
                    p += 2
                    continue
                p += 1
                # (a full panel's blocks without a call each: through _block, the blocks of
                # four rows took 1.5x as long at 4 x 64 @ 64 x 256; eight rows left run as two
                # blocks of four: 6 + 2 would multiply 6 + 4)
                if nj == NR:
                    while i + MR <= i1 and i1 - i != 8:
                        _k6i(a, ao + i * K + k0, K, bp, bo, c, co + i * ldc + j0, ldc, kk, acc,
                             lb + i * ll + j0, ll)
                        i += MR
                    while i < i1:
                        r = min(4, i1 - i)
                        ic = co + i * ldc + j0
                        il = lb + i * ll + j0
                        if r == 1:
                            _k1i(a, ao + i * K + k0, bp, bo, c, ic, kk, acc, il)
                        else:
                            _k4i(a, ao + i * K + k0, K, bp, bo, c, ic, ldc, kk, acc, r, il, ll)
                        i += r
                    continue
                while i + MR <= i1 and i1 - i != 8:
                    _block(a, ao + i * K + k0, K, bp, bo, c, co, ldc, i, MR, j0, nj, kk, acc,
                           tile, lb, ll)
                    i += MR
                while i < i1:  # 1 .. 5 rows left: blocks of at most 4
                    r = min(4, i1 - i)
                    _block(a, ao + i * K + k0, K, bp, bo, c, co, ldc, i, r, j0, nj, kk, acc,
                           tile, lb, ll)
                    i += r
        k0 += kc
        if k0 >= K:
            break


#: pgemm_tn's blocking: k per slice, rows of C per block (measured at backward's weight
#: gradient shapes, one thread: 1280x320x6400, 125x1280x6400, 2048x512x1600)
TN_KC, TN_MC = 128, 192


def tn_scratch(N: int) -> tuple[int, int]:
    """Elements of pgemm_tn's two scratch arrays (``xp``, ``dp``) for N columns."""
    return TN_MC * TN_KC, TN_KC * (-(-N // 32) * 32)


@njit(cache=CACHE, nogil=True, inline="always")
def _prefetch_lines(arr, base, ld, lpr, pc, n, total):
    """Fetch into L2 the next ``n`` of ``total`` lines of a block at element ``base`` of
    ``arr`` (rows ``ld`` apart, ``lpr`` lines of 16 floats per row), from line ``pc`` on;
    returns the line after the last fetched."""
    for _ in range(n):
        if pc < total:
            r = pc // lpr
            prefetch_l2(arr, base + r * ld + (pc - r * lpr) * NR)
            pc += 1
    return pc


@njit(cache=CACHE, nogil=True)
def pgemm_tn(x, xo, ldx, d, do, ldd, c, co, ldc, M, K, q0, q1, xp, dp):
    """C[M, 32 q0 : 32 q1] = X^T @ D, for AVX-512 targets (``WIDE``): backward's weight
    gradients, dW = dA^T @ input, whose operands are both stored step by step.

    X [K, M] starts at element ``xo`` of ``x`` (rows ``ldx`` apart), D [K, >= 32 q1] at
    ``do`` of ``d`` (rows ``ldd`` apart), C at ``co`` of ``c`` (rows ``ldc`` apart); all
    float32 and C-contiguous (elements counted from the data pointer). Columns go in pairs of
    16-column panels (32), so D must have whole pairs in the range. ``xp`` and ``dp`` are
    scratch of ``tn_scratch(32 (q1 - q0))`` elements. Goto-style blocking: per slice of
    TN_KC steps, D's columns are packed as pairs of panels (_w6s's layout) and X^T by blocks of
    TN_MC rows (k-major in groups of six rows, each k's six values copied from one row of X;
    row by row, a transposing copy, ran 1.1-1.35x slower), then _w6s/_w4 run over them. C is
    written, not added to (K = 0: zeros). Measured on one core of the Zen 5 EPYC, half of
    each product's columns: 148 GFLOP/s at 2048x512x1600 (deepbench512's dW), 129 at
    1280x320x6400, 136 at 125x1280x6400, 144 at 4096x1024x400 (NumPy's OpenBLAS on one
    thread: 62-98); the micro-kernel alone reaches 213 with its operands in L1.
    """
    kc = TN_KC
    mc = TN_MC
    nq = q1 - q0
    if K == 0:
        for i in range(M):
            for j in range(32 * q0, 32 * q1):
                _fstore(c, co + i * ldc + j, np.float32(0.0))
        return
    k0 = 0
    while k0 < K:
        kk = min(kc, K - k0)
        acc = k0 > 0
        for qq in range(nq):
            j0 = 32 * (q0 + qq)
            base = qq * 2 * kc * NR
            for k in range(kk):
                src = do + (k0 + k) * ldd + j0
                o = base + k * NR
                for j in range(NR):
                    dp[o + j] = _fload(d, src + j)
                    dp[o + kc * NR + j] = _fload(d, src + NR + j)
        for i0 in range(0, M, mc):
            i1 = min(M, i0 + mc)
            nf = (i1 - i0) // MR  # whole blocks of six rows: k-major, six rows per k
            tb = nf * MR * kc  # (the rest after them, row by row)
            for k in range(kk):
                src = xo + (k0 + k) * ldx + i0
                for m in range(nf):
                    o = m * MR * kc + k * MR
                    for r in range(MR):
                        xp[o + r] = _fload(x, src + m * MR + r)
                for i in range(nf * MR, i1 - i0):
                    xp[tb + (i - nf * MR) * kc + k] = _fload(x, src + i)
            # Packing reads X and D from L3 or memory with little else to do meanwhile: the
            # next block of X (rows i1.. of this slice, else the next slice's first rows) and
            # this block's share of the next slice of D are fetched into L2 while this block
            # is multiplied, a few lines before each micro-kernel call (measured in-process
            # A/B: X at 2048x512x1600 and 1280x320x6400 split by rows 7-9% less time on a
            # busy host, no difference on a quiet one; D at 125x1280x6400 split by pairs of
            # panels, bench320's dW_ih^T, 18-20% less; C's next block made no difference)
            nk0, ni0 = (k0, i1) if i1 < M else (k0 + kc, 0)
            nkk = min(kc, K - nk0) if nk0 < K else 0
            lpr = (min(M, ni0 + mc) - ni0 + NR - 1) // NR + 1  # lines per row of it, at most
            calls = max(1, nq * nf)
            ptot = nkk * lpr
            per = -(-ptot // calls)
            pc = 0
            dk0 = k0 + kc
            dkk = min(kc, K - dk0) if dk0 < K else 0
            dshare = -(-dkk // -(-M // mc))  # rows of it per block of rows of X
            dr0 = min(dkk, (i0 // mc) * dshare)
            dlr = nq * 2 + 1  # lines per row of D's columns here, at most
            dtot = (min(dkk, dr0 + dshare) - dr0) * dlr
            dper = -(-dtot // calls)
            dc = 0
            for qq in range(nq):
                j0 = 32 * (q0 + qq)
                base = qq * 2 * kc * NR
                for m in range(nf):
                    pc = _prefetch_lines(x, xo + nk0 * ldx + ni0, ldx, lpr, pc, per, ptot)
                    dc = _prefetch_lines(d, do + (dk0 + dr0) * ldd + 32 * q0, ldd, dlr, dc, dper,
                                         dtot)
                    _w6s(xp, m * MR * kc, 1, MR, dp, base, base + kc * NR, c,
                         co + (i0 + m * MR) * ldc + j0, ldc, kk, acc)
                i = i0 + nf * MR
                while i < i1:
                    r = min(4, i1 - i)
                    _w4(xp, tb + (i - i0 - nf * MR) * kc, kc, dp, base, base + kc * NR, c,
                        co + i * ldc + j0, ldc, kk, acc, r)
                    i += r
        k0 += kc


@njit(cache=CACHE, nogil=True)
def pgemm(a, ao, bp, c, M, K, N, p0, p1, tile, kcmax=KCMAX, afloats=AFLOATS):
    """c[:M, 16 p0 : min(N, 16 p1)] = A @ W for packed W (``pack_rows``/``pack_cols``).

    A [M, K] starts at element ``ao`` of ``a``; ``a`` and ``c`` [M, N] float32, C-contiguous
    (any number of dimensions: elements are counted from the data pointer); ``bp`` the
    packed panels; ``tile`` a float32 scratch of at least 6 * 16 elements (for the last
    panel when N is not a multiple of 16).
    Blocking: a product of more than 96 rows runs over slices of at most ``kcmax`` k (each
    panel slice, 16 x kcmax floats, stays in L2 across a block of rows, C accumulates over
    the slices)
    and blocks of rows holding about 384 KiB of A (in L2 across all panels); a per-step
    product (at most 96 rows) is one block over all k.
    Called from Python, pass ``kcmax`` and ``afloats`` (``KCMAX``, ``AFLOATS``): with omitted
    defaults Numba's dispatcher leaves its fast path (measured 100-240 us per call against 6).
    """
    pgemm_at(a, ao, bp, c, 0, N, M, K, N, p0, p1, tile, kcmax, afloats)


def packed_size(K: int, N: int) -> int:
    """Elements of the packed form of a K x N matrix (N rounded up to 16)."""
    return -(-N // NR) * NR * K


@njit(cache=CACHE, nogil=True)
def pack_rows(w, row0, n, bp):
    """bp = packed (w[row0:row0+n, :].T): panels of 16 rows of ``w`` [*, K] (weight_hh's
    layout, C-contiguous), zero past n. ``bp`` flat, ``packed_size(K, n)`` elements.

    Each k's 16 values are gathered from the panel's 16 rows and stored as one line (row by
    row with strided stores ran 1.3-1.6x slower: the panel, 16 K floats, left L1 between
    rows; 2048 x 512 in 0.27 against 0.34 ms, 4096 x 1024 in 2.3-3.1 against 3.8-4.9)."""
    K = w.shape[1]
    for p in range(-(-n // NR)):
        base = p * K * NR
        r0 = row0 + p * NR
        nj = min(NR, n - p * NR)
        if nj == NR:  # (a constant trip count: LLVM unrolls the gather)
            for k in range(K):
                o = base + k * NR
                for j in range(NR):
                    bp[o + j] = w[r0 + j, k]
        else:
            for k in range(K):
                o = base + k * NR
                for j in range(nj):
                    bp[o + j] = w[r0 + j, k]
                for j in range(nj, NR):
                    bp[o + j] = 0.0


#: panels that ``pack_cols`` fills in one pass over the rows of ``w``
PACK_COLS_GROUP = 4


@njit(cache=CACHE, nogil=True)
def pack_cols(w, bp):
    """bp = packed (w): panels of 16 columns of ``w`` [K, N] (C-contiguous), zero past N.

    Four panels per pass over the rows (each row's 64 columns, one 256-byte run, go to four
    panels as four vector copies, constant trip counts), then panel by panel. One panel per
    pass read one line per row, a row (4 KB and more) apart: at large K x N each line was a
    miss the prefetchers did not see coming. Measured (one thread, float32, several runs):
    3072 x 1024 in 1.1-1.5 against 1.5-4.6 ms, 1024 x 3072 1.1-1.3 against 2.0-2.3,
    4096 x 1024 1.6-2.8 against 2.5-5.2; 2048 x 512 and smaller the same.
    (A variable trip count, and rows 16 at a time across all panels, ran 2-4x slower:
    4096 x 1024 in 5.8-7.6 ms, 2048 x 512 in 0.5-1.1 ms.)"""
    K, N = w.shape
    P = -(-N // NR)
    p = 0
    while p + PACK_COLS_GROUP <= P and (p + PACK_COLS_GROUP) * NR <= N:
        j0 = p * NR
        for k in range(K):
            for q in range(PACK_COLS_GROUP):
                o = (p + q) * K * NR + k * NR
                jq = j0 + q * NR
                for j in range(NR):
                    bp[o + j] = w[k, jq + j]
        p += PACK_COLS_GROUP
    for p in range(p, P):
        base = p * K * NR
        j0 = p * NR
        nj = min(NR, N - j0)
        if nj == NR:
            for k in range(K):
                o = base + k * NR
                for j in range(NR):
                    bp[o + j] = w[k, j0 + j]
        else:
            for k in range(K):
                o = base + k * NR
                for j in range(nj):
                    bp[o + j] = w[k, j0 + j]
                for j in range(nj, NR):
                    bp[o + j] = 0.0


@njit(cache=CACHE, nogil=True)
def team_post(flags, seq, arg):
    """Caller: post job number ``seq`` (1, 2, ... in order) with the int ``arg`` (for
    example where A starts); then do the first half, ``team_claim``, the second half if
    claimed, else ``team_wait``."""
    flags[AOFF] = arg
    _astore(flags, POSTED, seq)


@njit(cache=CACHE, nogil=True)
def team_claim(flags, seq):
    """Either thread: take the second half of job ``seq``; whether this thread got it."""
    return _acas(flags, CLAIM, seq - 1, seq)


@njit(cache=CACHE, nogil=True)
def team_wait(flags, seq):
    """Caller: wait until the worker has finished its half of job ``seq``."""
    while _aload(flags, DONE) != seq:
        _pause()


@njit(cache=CACHE, nogil=True)
def team_next(flags, last):
    """Worker: wait for a job newer than ``last``; its number, or 0 once STOP is set. On 0
    it sets EXITED: the worker must return then, touching none of the team's data. (Set
    here, without the GIL, not by the worker's Python wrapper, which waited for the caller's
    GIL first.)"""
    while True:
        s = _aload(flags, POSTED)
        if s > last:
            return s
        if _aload(flags, STOP) != 0:
            _astore(flags, EXITED, 1)
            return 0
        _pause()


@njit(cache=CACHE, nogil=True)
def team_done(flags, seq):
    """Worker: its half of job ``seq`` is finished (after ``team_claim`` gave it)."""
    _astore(flags, DONE, seq)


def _mxcsr_call(builder, name, slot):
    """Call llvm.x86.sse.{name} (stmxcsr: store the MXCSR to ``slot``; ldmxcsr: load it from
    there) on x86; nothing elsewhere."""
    if _X86:
        i8p = ir.PointerType(ir.IntType(8))
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p]),
                                            f"llvm.x86.sse.{name}")
        builder.call(fn, [builder.bitcast(slot, i8p)])


@intrinsic
def _stmxcsr(typingctx):
    """The x86 SSE control and status register (MXCSR: flush-to-zero, denormals-are-zero,
    rounding mode, exception masks); 0 elsewhere."""
    sig = types.uint32()

    def codegen(context, builder, sig, args):
        slot = cgutils.alloca_once_value(builder, ir.Constant(_I32, 0))
        _mxcsr_call(builder, "stmxcsr", slot)
        return builder.load(slot)
    return sig, codegen


@intrinsic
def _ldmxcsr(typingctx, v):
    """Set the MXCSR (x86; nothing elsewhere)."""
    sig = types.void(types.uint32)

    def codegen(context, builder, sig, args):
        _mxcsr_call(builder, "ldmxcsr", cgutils.alloca_once_value(builder, args[0]))
        return context.get_dummy_value()
    return sig, codegen


@njit(cache=CACHE, nogil=True)
def fp_control():
    """This thread's floating-point control word (x86 MXCSR; 0 elsewhere)."""
    return _stmxcsr()


@njit(cache=CACHE, nogil=True)
def set_fp_control(v):
    """Set this thread's floating-point control word (``fp_control``'s value; x86 only)."""
    _ldmxcsr(np.uint32(v))


@njit(cache=CACHE, nogil=True)
def wait_exited(flags, spins):
    """Spin (without the GIL) until flags[EXITED] is set, at most ``spins`` times; whether
    it was."""
    for _ in range(spins):
        if _aload(flags, EXITED) != 0:
            return True
        _pause()
    return _aload(flags, EXITED) != 0


#: slots of the worker's hand-over array (``gatecore.overlap``; int64, each on its own line):
#: HAND_STATE 0 (the worker is away: running a task, or asleep in its pool), 1 (it spins
#: between tasks, ``linger``: a job can be posted), 2 (a job is posted) or 3 (go: the caller
#: is in compiled code, without the GIL, so the worker can take the GIL at once:
#: ``hand_go``); HAND_QUEUED the tasks submitted to the worker's pool that have not started.
HAND_STATE, HAND_QUEUED = 0, 8
HAND = 16
#: pauses the worker waits for go after a job is posted before it takes the GIL anyway
GO_SPINS = 4000
#: pauses a caller's compiled work waits at most for the worker's job (``job_finish``)
FINISH_SPINS = 20000


@njit(cache=CACHE, nogil=True)
def linger(hand, spins, job):
    """Worker, after a task (int64 ``job`` state at address ``job``: 1 while it ran, set to
    2, done, here, without the GIL, so that a caller spinning on it finds the GIL free when
    it returns): set the state at address ``hand`` (HAND_STATE) to 1 and spin until a job
    is posted and the caller said go (``hand_go``; or GO_SPINS pauses after the post):
    returns True; or until about ``spins`` pauses have passed or a task is queued in the
    pool: then the state goes back to 0, unless a job was posted meanwhile (returns whether
    one was). Addresses, not arrays: no NRT allocation per call."""
    _pstore(hand, HAND_STATE, 1)  # (first: a caller that sees its job done can post)
    _pcas(job, 0, 1, 2)
    posted = -1
    for i in range(spins):
        s = _pload(hand, HAND_STATE)
        if s == 3:
            return True
        if s == 2:
            if posted < 0:
                posted = i
            elif i - posted >= GO_SPINS:
                return True
        elif _pload(hand, HAND_QUEUED) != 0:
            break
        _pause()
    if _pcas(hand, HAND_STATE, 1, 0):
        return False
    for _ in range(GO_SPINS):  # posted meanwhile: wait for go
        if _pload(hand, HAND_STATE) != 2:
            break
        _pause()
    return True


@njit(cache=CACHE, nogil=True)
def hand_post(hand):
    """Caller: mark a job posted if the worker lingers (state 1 -> 2 at address ``hand``) and
    no pool task is queued before it; whether it did (the worker then takes the job, at
    go)."""
    if _pload(hand, HAND_QUEUED) != 0:
        return False
    return _pcas(hand, HAND_STATE, 1, 2)


@njit(cache=CACHE, nogil=True, inline="always")
def hand_go(hand):
    """Caller, at the start of compiled work (without the GIL): a posted job may start (the
    worker takes the GIL now). Nothing for ``hand`` 0."""
    if hand != 0:
        _pcas(hand, HAND_STATE, 2, 3)


@njit(cache=CACHE, nogil=True, inline="always")
def job_finish(job, spins):
    """Caller, at the end of its compiled work (without the GIL): while the worker runs the
    call's job (state 1 at address ``job``: ``gatecore.overlap._Job``), spin, at most
    ``spins`` pauses. ``linger`` marks it done from compiled code, so the caller then takes
    the GIL without waiting for the worker. Nothing for ``job`` 0 (or a job not started)."""
    if job != 0:
        for _ in range(spins):
            if _pload(job, 0) != 1:
                return
            _pause()


@njit(cache=CACHE, nogil=True)
def team_stop(flags, job, spins):
    """Caller, at the end of a team: set flags[STOP], then ``job_finish`` (the stopped
    worker goes on to linger, in compiled code: the caller finds the GIL free)."""
    _astore(flags, STOP, 1)
    job_finish(job, spins)


@njit(cache=CACHE, nogil=True)
def hand_go_now(hand):
    """``hand_go`` from Python (for tasks whose caller runs no compiled work first)."""
    hand_go(hand)


@njit(cache=CACHE, nogil=True)
def hand_store(addr, i, v):
    """int64 number i at ``addr`` = v (atomic, release)."""
    _pstore(addr, i, v)


@njit(cache=CACHE, nogil=True)
def hand_add(addr, i, v):
    """int64 number i at ``addr`` += v (atomic); the value before."""
    return _padd(addr, i, v)


@njit(cache=CACHE, nogil=True)
def hand_cas(addr, i, old, new):
    """Atomically replace int64 number i at ``addr``, if ``old``, by ``new``; whether it
    did."""
    return _pcas(addr, i, old, new)


@njit(cache=CACHE, nogil=True)
def wait_at_least(addr, i, v, spins):
    """Spin (without the GIL) until int64 number i at ``addr`` is >= v, at most ``spins``
    times; whether it is."""
    for _ in range(spins):
        if _pload(addr, i) >= v:
            return True
        _pause()
    return _pload(addr, i) >= v


@njit(cache=CACHE, nogil=True)
def team_step(flags, seq, abase, aoff, bp, c, M, K, N, split, tile, bias, hand):
    """Product number ``seq`` (1, 2, ...) of a team: c = A @ W (+ ``bias`` [N] on every
    row, unless it is empty), the caller's side; says go first (``hand_go`` on ``hand``).

    A [M, K] starts at element ``aoff`` of ``abase`` (the worker's base array too). This
    thread computes panels [0, split); panels [split, P) are the worker's unless it has not
    claimed them when this thread is done, then this thread computes them too.
    """
    hand_go(hand)
    team_post(flags, seq, aoff)
    pgemm_init(abase, aoff, bp, c, 0, N, M, K, N, 0, split, tile, bias.shape[0] > 0, bias, 0, 0,
               KCMAX, AFLOATS)
    if team_claim(flags, seq):
        team_second_half(abase, aoff, bp, c, M, K, N, split, tile, bias)
    else:
        team_wait(flags, seq)


@njit(cache=CACHE, nogil=True)
def team_second_half(abase, aoff, bp, c, M, K, N, split, tile, bias):
    """Panels [split, P) of ``team_step``'s product, on whichever thread claimed them (its
    own ``tile``)."""
    pgemm_init(abase, aoff, bp, c, 0, N, M, K, N, split, -(-N // NR), tile, bias.shape[0] > 0,
               bias, 0, 0, KCMAX, AFLOATS)


@njit(cache=CACHE, nogil=True)
def team_worker(flags, abase, bp, c, M, K, N, split, tile, bias):
    """The worker's side of a team: until STOP, compute panels [split, P) of each posted
    product it claims (A at ``abase`` + the posted offset; ``bias`` as team_step's). Returns
    the number computed."""
    last = 0
    done = 0
    while True:
        s = team_next(flags, last)
        if s == 0:
            return done
        last = s
        if team_claim(flags, s):
            team_second_half(abase, flags[AOFF], bp, c, M, K, N, split, tile, bias)
            team_done(flags, s)
            done += 1


def usable(dtype) -> bool:
    """Whether products of this dtype can use the packed kernels: float32, on a target CPU
    with AVX2 and FMA (``_target_has_fma``)."""
    return _FMA and np.dtype(dtype) == np.float32
