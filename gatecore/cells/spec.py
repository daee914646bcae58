"""The cell specification: what a plugin author fills in to add a gated cell.

A cell is described once, as plain Python functions over one hidden unit ``j`` of one batch
item, and gatecore compiles those functions into its kernels (``numba.njit`` for the CPU).
The engine owns everything else: the input product for all steps as one GEMM, the
recurrent products, layers, directions, variable lengths, the tape and BPTT.

Shapes seen by the pointwise rules (``H`` hidden size, ``G`` gates, ``S`` state variables,
``K`` tape values per unit, ``E`` extra parameter vectors)::

    ax  [G*H]   input part of the gate pre-activations, W_ih x_t + b_ih   (read)
    ah  [G*H]   recurrent part, W_hh h_{t-1} + b_hh (stage 2 gates: W_hh2 u_t + b_hh2)
    sp  [S, H]  state before the step (sp[0] = h, sp[1] = c for LSTM)      (read)
    sn  [S, H]  state after the step                                       (write)
    tp  [K*H]   the cell's own tape: whatever backward needs               (write in fwd)
    ex  [E, H]  extra per-cell parameters (for example peephole weights)   (read)
    u   [H]     stage-1 output fed to the second recurrent product         (write)

Forward is ``h`` products in up to two stages:

* one stage (LSTM, GRU with reset after the product): ``ah = W_hh h_{t-1} + b_hh`` for all
  gates, then ``forward(ax, ah, sp, ex, sn, tp, j, H)``;
* two stages (GRU with reset before the product, minimal gated unit): the first
  ``stage1_gates`` gates get ``W_hh[:G1*H] h_{t-1}``; ``forward_stage1(ax, ah, sp, ex, u,
  tp, j, H)`` computes them and writes ``u`` (for example ``r * h``); the remaining gates get
  ``W_hh[G1*H:] u + b_hh[G1*H:]``; then ``forward`` finishes the step.

Backward mirrors it with gradients (``ds`` = dL/d state after the step, ``dsp`` = the
direct part of dL/d state before the step, not counting the recurrent products, which the
engine adds; ``dax``/``dah`` = dL/d pre-activation, input and recurrent part)::

    backward_stage2(ax, tp, sp, sn, ex, ds, dax, dah, dex, j, H)   # two stages only:
        write dax, dah of the stage-2 gates
    backward(ax, tp, sp, sn, ex, ds, du, dax, dah, dsp, dex, j, H)
        du = dL/du (two stages: dah[stage 2] @ W_hh2, else zeros); write dax, dah of the
        stage-1 gates (all gates for one stage), every dsp[s, j], and accumulate dex (+=).

Contract: ``forward`` writes every ``sn[s, j]``; ``backward`` writes every ``dsp[s, j]`` and
the dax/dah entries of its gates. The functions must be compilable by Numba in nopython
mode, read and write only unit ``j``'s entries (``g*H + j`` for gate ``g``, ``q*H + j`` for
tape value ``q``, ``[s, j]`` and ``[e, j]``) and have no side effects beyond those outputs
(the kernels may run a step's units in parts, each over its own copy of its units' entries:
``check_rules`` runs a rule for one unit alone to check this). ``sn[0]`` is the cell output h_t (before the projection when the
network has ``proj_size``; only cells with ``supports_projection`` and that never read
``sp[0]`` may be projected).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import types
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import CellSpecError

__all__ = ["CellSpec"]

# specs already returned (validated) by a configure() call: id -> spec, weakly held, so
# that a cell whose configure() returns prebuilt specs is not re-validated on every call
_VALIDATED: "weakref.WeakValueDictionary[int, CellSpec]" = weakref.WeakValueDictionary()

_BASE_PARAM_ROWS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
#: largest tape_size accepted (values kept per hidden unit and step; the built-ins keep 3-4)
MAX_TAPE_SIZE = 1024

#: Positional parameters of each pointwise rule, as in the module docstring.
_RULE_ARGS = {
    "forward": ("ax", "ah", "sp", "ex", "sn", "tp", "j", "H"),
    "backward": ("ax", "tp", "sp", "sn", "ex", "ds", "du", "dax", "dah", "dsp", "dex", "j", "H"),
    "forward_stage1": ("ax", "ah", "sp", "ex", "u", "tp", "j", "H"),
    "backward_stage2": ("ax", "tp", "sp", "sn", "ex", "ds", "dax", "dah", "dex", "j", "H"),
}


def _py(fn):
    """The plain Python function behind a rule (a Numba dispatcher keeps it as ``py_func``)."""
    return getattr(fn, "py_func", fn)


def _global_names(code) -> set:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _value_key(value) -> bytes:
    """Bytes that change when a constant a rule reads changes (functions: by name only,
    their source is hashed separately)."""
    if isinstance(value, types.ModuleType):
        return f"module {value.__name__}".encode()
    if callable(value):
        py = _py(value)
        return f"fn {getattr(py, '__module__', '')}.{getattr(py, '__qualname__', repr(py))}".encode()
    if isinstance(value, np.ndarray):
        return f"array {value.dtype} {value.shape}".encode() + value.tobytes()
    return repr(value).encode()


def _closure_values(py) -> list:
    """The values of ``py``'s closure cells (empty cells left out)."""
    out = []
    for cell in getattr(py, "__closure__", None) or ():
        try:
            out.append(cell.cell_contents)
        except ValueError:  # (a cell not filled yet)
            pass
    return out


#: most modules ``_module_attrs`` looks into for one function (a module whose
#: ``__getattr__`` makes a new module for every name would otherwise never end)
_MAX_MODULES = 64
#: top-level packages whose modules a rule reaches but the fingerprint does not look into
#: (they change only with the installed version)
_FIXED_MODULES = frozenset({"numpy", "numba", "math", "cmath", "llvmlite", "scipy", "builtins"})


def _module_attrs(py) -> list:
    """``(name, object)`` for what ``py`` can read as an attribute of a module among its
    globals or closure, through modules too (``helpers.act``, ``gatecore.activations.tanh``,
    ``helpers.SCALE``): Numba compiles those in like globals. Names are matched against
    every name the code uses (attribute names are not told apart from others there).
    Libraries' modules (NumPy, Numba, math, ...: ``_FIXED_MODULES``) are not looked into."""
    code = getattr(py, "__code__", None)
    if code is None:
        return []
    names = sorted(_global_names(code))
    glb = getattr(py, "__globals__", {})
    todo = [glb[n] for n in names if isinstance(glb.get(n), types.ModuleType)]
    todo += [v for v in _closure_values(py) if isinstance(v, types.ModuleType)]
    todo = [m for m in todo if m.__name__.partition(".")[0] not in _FIXED_MODULES]
    done: set = set()
    out = []
    while todo and len(done) < _MAX_MODULES:
        mod = todo.pop()
        if id(mod) in done:
            continue
        done.add(id(mod))
        for n in names:
            try:
                obj = getattr(mod, n)
            except Exception:  # noqa: BLE001 - absent (or a module __getattr__ that fails)
                continue
            if isinstance(obj, types.ModuleType):
                if obj.__name__.partition(".")[0] not in _FIXED_MODULES:
                    todo.append(obj)
            else:
                out.append((f"{mod.__name__}.{n}", obj))
    return out


def _helpers(fn, seen: set) -> list:
    """Plain Python functions that ``fn`` calls through its globals, its closure or modules
    among them (``helpers.act``: ``_module_attrs``), transitively."""
    out = []
    py = _py(fn)
    code = getattr(py, "__code__", None)
    if code is None:
        return out
    glb = getattr(py, "__globals__", {})
    reached = [glb.get(name) for name in sorted(_global_names(code))] + _closure_values(py)
    for obj in reached + [obj for _, obj in _module_attrs(py)]:
        inner = _py(obj)
        if isinstance(inner, types.FunctionType) and inner not in seen:
            seen.add(inner)
            out.append(inner)
            out += _helpers(inner, seen)
    return out


def _as_python(fn):
    """A copy of rule ``fn`` whose global helpers are their plain Python versions.

    Lets :meth:`CellSpec.check_rules` run a rule with NumPy's bounds checks and without
    compiling anything (one level of helpers is unwrapped, which covers activations).
    """
    py = _py(fn)
    glb = dict(py.__globals__)
    for name in py.__code__.co_names:
        obj = glb.get(name)
        if obj is not None and hasattr(obj, "py_func"):
            glb[name] = obj.py_func
    return types.FunctionType(py.__code__, glb, py.__name__, py.__defaults__, py.__closure__)


@dataclasses.dataclass(frozen=True)
class CellSpec:
    """Specification of a gated recurrent cell.

    Parameters
    ----------
    name : str
        Registry name (lower case, for example ``"lstm"``).
    gate_names : tuple of str
        One name per gate, in the row order of ``weight_ih`` / ``weight_hh`` (PyTorch
        order for the built-ins: LSTM ``i f g o``, GRU ``r z n``).
    state_names : tuple of str
        State variables, ``("h",)`` or ``("h", "c")``; ``h`` always first.
    tape_size : int
        Values per hidden unit that ``forward`` stores in ``tp`` for ``backward`` (at most
        ``MAX_TAPE_SIZE``, 1024).
    forward, backward : callable
        Pointwise rules, see the module docstring.
    stage1_gates : int, optional
        Gates formed with the first recurrent product; the rest use a second product of
        ``u``. Defaults to all gates (one product).
    forward_stage1, backward_stage2 : callable, optional
        Required exactly when ``stage1_gates < len(gate_names)``.
    extra_params : tuple of (str, int)
        (Lists are taken as tuples; so are ``gate_names`` and ``state_names``.)
        Extra per-layer parameter vectors: ``(prefix, n)`` declares the key
        ``{prefix}_l{k}[_reverse]`` of shape ``[n * H]`` (seen by the rules as ``ex``).
    supports_projection : bool
        Whether networks of this cell may use ``proj_size`` (LSTMP, Sak et al. 2014); the
        rules must then never read ``sp[0]`` and backward must leave ``dsp[0]`` zero
        (``check_rules`` checks both).
    variant : str
        Distinguishes concrete specs that share a name (GRU ``reset_after`` / ``reset_before``).
    configure : callable, optional
        ``configure(**options) -> CellSpec`` maps cell options (keyword arguments of
        ``gatecore.forward``) to a concrete spec; without it, the cell takes no options.
    option_defaults : mapping
        The options ``configure`` accepts and their defaults (shown by ``gatecore cells``).
    description, reference : str
        One line each, for listings: what the cell is, and the paper it follows.
    dah_is_dax : bool
        Declares that ``backward`` writes ``dah`` equal to ``dax`` for every gate, as LSTM's
        does (each gate's pre-activation is the sum ax + ah, so both parts get the same
        gradient). The CPU backend's BPTT then keeps one array for both in the forward
        direction: one write of [T, B, G*H] per call and one bias gradient's sum fewer, and
        no dah buffer for unidirectional networks. Its forward (if ``backward`` never reads
        ax) hands such a cell's ``forward`` the whole pre-activation ax + ah as one of
        ``ax``, ``ah`` and zeros as the other (the sum as ``ax`` where the recurrent
        products run on two threads, as ``ah`` on one thread), so the forward rule must
        depend on the sum only (as dah equal to dax implies). Only for one-stage cells
        (``validate``); ``check_rules`` compares dah with dax, and the forward's results
        with both inputs against those with the sum either way, on its trial inputs, for
        the spec a cell registers and for each concrete spec its ``configure`` returns: a
        check on one trial run, not a proof (a backward whose dah differs from dax only
        past some threshold would pass it and train with wrong weight_hh and bias_hh
        gradients).
    """

    name: str
    gate_names: tuple[str, ...]
    state_names: tuple[str, ...]
    tape_size: int
    forward: Callable[..., Any]
    backward: Callable[..., Any]
    stage1_gates: int | None = None
    forward_stage1: Callable[..., Any] | None = None
    backward_stage2: Callable[..., Any] | None = None
    extra_params: tuple[tuple[str, int], ...] = ()
    supports_projection: bool = False
    variant: str = ""
    configure: Callable[..., "CellSpec"] | None = None
    option_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""
    reference: str = ""
    dah_is_dax: bool = False  # (last: positional arguments keep their meaning)

    def __post_init__(self):
        # lists are accepted where tuples are declared (the spec is hashed and used as a key:
        # a list would fail only later, in backward's workspace)
        for attr in ("gate_names", "state_names"):
            value = getattr(self, attr)
            if isinstance(value, list):
                object.__setattr__(self, attr, tuple(value))
        if isinstance(self.extra_params, (list, tuple)):
            object.__setattr__(self, "extra_params", tuple(
                tuple(item) if isinstance(item, list) else item for item in self.extra_params))

    # ------------------------------------------------------------------ derived
    # (cached: read many times a call; the fields they derive from never change)
    @functools.cached_property
    def num_gates(self) -> int:
        """Number of gates G (rows of weight_ih are G * hidden_size)."""
        return len(self.gate_names)

    @functools.cached_property
    def num_states(self) -> int:
        """Number of state variables S."""
        return len(self.state_names)

    @functools.cached_property
    def g1(self) -> int:
        """Gates formed with the first recurrent product."""
        return self.num_gates if self.stage1_gates is None else self.stage1_gates

    @functools.cached_property
    def two_stage(self) -> bool:
        """Whether the cell has a second recurrent product after stage-1 gates are known."""
        return self.g1 < self.num_gates

    @functools.cached_property
    def num_extra(self) -> int:
        """Total extra parameter rows E (each of size hidden_size)."""
        return sum(n for _, n in self.extra_params)

    @property
    def key(self) -> str:
        """Unique key of this concrete spec (name and variant)."""
        return f"{self.name}:{self.variant}" if self.variant else self.name

    def with_options(self, **options: Any) -> "CellSpec":
        """Return the concrete spec for the given cell options.

        Raises
        ------
        TypeError
            If an option is not one this cell accepts (the message lists the accepted ones).
        """
        if self.configure is None:
            if options:
                raise TypeError(
                    f"cell {self.name!r} takes no options, got {sorted(options)}"
                )
            return self
        unknown = sorted(set(options) - set(self.option_defaults))
        if unknown:
            raise TypeError(
                f"cell {self.name!r} got unknown option(s) {unknown}; "
                f"it accepts {sorted(self.option_defaults)}"
            )
        spec = self.configure(**{**dict(self.option_defaults), **options})
        if not isinstance(spec, CellSpec):
            raise CellSpecError(f"cell {self.name!r}: configure() did not return a CellSpec")
        if _VALIDATED.get(id(spec)) is not spec:
            spec.validate()
            if spec.dah_is_dax:  # (a flag inherited by dataclasses.replace, say)
                spec.check_rules()
            _VALIDATED[id(spec)] = spec
        return spec

    def param_rows(self) -> dict[str, int]:
        """Rows (in units of hidden_size) of each per-layer parameter prefix."""
        rows = {p: self.num_gates for p in _BASE_PARAM_ROWS}
        for prefix, n in self.extra_params:
            rows[prefix] = n
        return rows

    def fingerprint(self) -> str:
        """Hash of the pointwise rules' source and the spec's shape, for kernel caching."""
        h = hashlib.sha256()
        h.update(repr((self.key, self.gate_names, self.state_names, self.tape_size,
                       self.g1, self.extra_params, self.supports_projection)).encode())
        seen: set = set()
        for fn in (self.forward, self.backward, self.forward_stage1, self.backward_stage2):
            if fn is None:
                h.update(b"-")
                continue
            # the rule and the helpers it calls (a changed activation must change the hash)
            for py in [_py(fn)] + _helpers(fn, seen):
                try:
                    h.update(inspect.getsource(py).encode())
                except (OSError, TypeError):
                    code = py.__code__
                    h.update(code.co_code + repr(code.co_consts).encode())
                h.update(f"{py.__module__}.{py.__qualname__}".encode())
                # values Numba freezes into the compiled rule: closure cells, global constants
                for value in _closure_values(py) + [
                        py.__globals__[n] for n in sorted(_global_names(py.__code__))
                        if n in py.__globals__]:
                    h.update(_value_key(value))
                for name, value in _module_attrs(py):  # (helpers.SCALE as well)
                    h.update(name.encode() + _value_key(value))
                for value in (py.__defaults__ or ()) + tuple((py.__kwdefaults__ or {}).items()):
                    h.update(b"default " + _value_key(value))  # (def act(v, scale=SCALE))
        return h.hexdigest()[:16]

    def validate(self) -> None:
        """Check the spec for consistency.

        Raises
        ------
        CellSpecError
            With the cell name and the reason: empty or duplicate gate names, a state list
            that does not start with ``h``, a non-positive tape size, a missing rule, a
            stage split without its two extra rules, or bad extra parameter declarations.
        """
        who = f"cell {self.name!r}"
        if not isinstance(self.name, str) or not self.name.isidentifier() or self.name != self.name.lower():
            raise CellSpecError(f"{who}: name must be a lower-case identifier (as 'peephole_lstm')")
        if not self.gate_names or len(set(self.gate_names)) != len(self.gate_names):
            raise CellSpecError(f"{who}: gate_names must be non-empty and unique, got {self.gate_names}")
        if not self.state_names or self.state_names[0] != "h":
            raise CellSpecError(f"{who}: state_names must start with 'h', got {self.state_names}")
        if (not isinstance(self.tape_size, int) or isinstance(self.tape_size, bool)
                or not 1 <= self.tape_size <= MAX_TAPE_SIZE):
            raise CellSpecError(f"{who}: tape_size must be an int in [1, {MAX_TAPE_SIZE}] (values "
                                f"per hidden unit), got {self.tape_size!r}")
        for attr in ("forward", "backward"):
            if not callable(getattr(self, attr)):
                raise CellSpecError(f"{who}: missing pointwise rule {attr!r}")
        for attr, args in _RULE_ARGS.items():
            fn = getattr(self, attr)
            if fn is None:
                continue
            if not callable(fn):
                raise CellSpecError(f"{who}: rule {attr!r} is not callable, got {type(fn).__name__}")
            try:
                n = len(inspect.signature(_py(fn)).parameters)
            except (TypeError, ValueError):
                continue
            if n != len(args):
                raise CellSpecError(
                    f"{who}: rule {attr!r} takes {n} arguments, expected {len(args)}: "
                    f"({', '.join(args)})"
                )
        if not 1 <= self.g1 <= self.num_gates:
            raise CellSpecError(
                f"{who}: stage1_gates must be in [1, {self.num_gates}], got {self.stage1_gates}"
            )
        if self.two_stage:
            for attr in ("forward_stage1", "backward_stage2"):
                if not callable(getattr(self, attr)):
                    raise CellSpecError(
                        f"{who}: stage1_gates={self.g1} < {self.num_gates} gates needs {attr!r}"
                    )
            if self.supports_projection:  # the stage-2 product reads u [H], not h [proj_size]
                raise CellSpecError(
                    f"{who}: a two-stage cell (stage1_gates < gates) cannot support projection"
                )
            if self.dah_is_dax:  # the stage-2 gates' dah is not their dax (GRU: r * dn)
                raise CellSpecError(
                    f"{who}: dah_is_dax=True is for one-stage cells (stage1_gates = all gates)"
                )
        elif self.forward_stage1 is not None or self.backward_stage2 is not None:
            raise CellSpecError(
                f"{who}: forward_stage1/backward_stage2 given but stage1_gates is all gates"
            )
        if not isinstance(self.extra_params, tuple):
            raise CellSpecError(f"{who}: extra_params must be a tuple of (prefix, n) pairs, got "
                                f"{type(self.extra_params).__name__}")
        seen = set(_BASE_PARAM_ROWS) | {"weight_hr"}
        for item in self.extra_params:
            if (not isinstance(item, tuple) or len(item) != 2 or not isinstance(item[0], str)
                    or not isinstance(item[1], int) or item[1] < 1 or item[0] in seen):
                raise CellSpecError(
                    f"{who}: extra_params entries must be unique (prefix, n>=1) pairs, got {item!r}"
                )
            seen.add(item[0])

    # ------------------------------------------------------------------ trial run
    def check_rules(self, hidden_size: int = 3, seed: int = 0) -> None:
        """Run the pointwise rules once in plain Python on arrays of the declared sizes.

        Catches, without compiling anything, what Numba would not: a rule that reads or
        writes past the gates, states, tape or extra parameters the spec declares (NumPy's
        bounds checks raise where a compiled kernel would read garbage), a forward that
        leaves a state, the tape or ``u`` unwritten, and a backward that leaves a gradient
        unwritten or reads a tape value that forward never wrote (all caught by filling
        the outputs with NaN first); with ``dah_is_dax``, a backward whose dah differs from
        its dax, or a forward whose results change when it gets ax + ah as ax or as ah and
        zeros as the other.

        Raises
        ------
        CellSpecError
            With the cell name, the rule and the reason.
        """
        who = f"cell {self.name!r}"
        H, G, G1, S, K, E = (hidden_size, self.num_gates, self.g1, self.num_states,
                             self.tape_size, self.num_extra)
        rng = np.random.default_rng(seed)
        nan = np.nan

        def arr(*shape, fill=None):
            a = rng.uniform(-0.5, 0.5, size=shape) if fill is None else np.full(shape, fill)
            return a

        ax, ah, sp, ex = arr(G * H), arr(G * H), arr(S, H), arr(E, H)
        sn, tp, u = arr(S, H, fill=nan), arr(K * H, fill=nan), arr(H, fill=nan)
        shapes = (f"ax/ah [{G}*H] ({G} gates {list(self.gate_names)}), sp/sn [{S}, H] "
                  f"(states {list(self.state_names)}), tp [{K}*H] (tape_size), ex [{E}, H] "
                  f"(extra_params), H={H}")

        def call(attr, *args):
            fn = _as_python(getattr(self, attr))
            for j in range(H):
                try:
                    fn(*args, j, H)
                except IndexError as exc:
                    raise CellSpecError(
                        f"{who}: rule {attr!r} indexes past the arrays the spec declares "
                        f"({exc}); check gate_names, state_names, tape_size and extra_params "
                        f"against the rule: {shapes}"
                    ) from None
                except Exception as exc:  # noqa: BLE001 - report any failure of the rule
                    raise CellSpecError(
                        f"{who}: rule {attr!r} raised {type(exc).__name__}: {exc} "
                        f"in a trial run in plain Python ({shapes})"
                    ) from None

        def unwritten(attr, what, a, idx=None, hint=""):
            bad = np.isnan(a if idx is None else a[idx])
            if bad.any():
                raise CellSpecError(
                    f"{who}: rule {attr!r} leaves {what} unwritten or NaN "
                    f"({int(bad.sum())} of {bad.size} values){hint}; {shapes}"
                )

        if self.two_stage:
            call("forward_stage1", ax, ah, sp, ex, u, tp)
            unwritten("forward_stage1", "u[j]", u)
        call("forward", ax, ah, sp, ex, sn, tp)
        unwritten("forward", "a state sn[s, j]", sn)
        ds, dex = arr(S, H), np.zeros((E, H))
        du = arr(H) if self.two_stage else np.zeros(H)
        dax, dah, dsp = arr(G * H, fill=nan), arr(G * H, fill=nan), arr(S, H, fill=nan)
        if self.two_stage:
            call("backward_stage2", ax, tp, sp, sn, ex, ds, dax, dah, dex)
            unwritten("backward_stage2", "dax/dah of a stage-2 gate", dax, slice(G1 * H, None))
            unwritten("backward_stage2", "dah of a stage-2 gate", dah, slice(G1 * H, None))
        call("backward", ax, tp, sp, sn, ex, ds, du, dax, dah, dsp, dex)
        hint = " (or it reads a tape value that forward does not write)"
        unwritten("backward", "dax of a stage-1 gate", dax, slice(0, G1 * H), hint)
        unwritten("backward", "dah of a stage-1 gate", dah, slice(0, G1 * H), hint)
        unwritten("backward", "dsp[s, j]", dsp, None, hint)
        unwritten("backward", "dex (extra-parameter gradients)", dex, None, hint)
        if self.two_stage:
            unwritten("backward_stage2", "a stage-2 gradient", dax, slice(G1 * H, None), hint)
        if self.dah_is_dax and not np.array_equal(dax, dah):
            bad = int(np.sum(dax != dah))
            raise CellSpecError(
                f"{who}: dah_is_dax=True but rule 'backward' writes dah different from dax "
                f"({bad} of {dax.size} values in a trial run); set dah_is_dax=False; {shapes}")
        if self.dah_is_dax:  # the CPU kernels pass the sum ax + ah as one and zeros as the other
            for args in ((ax + ah, np.zeros(G * H)), (np.zeros(G * H), ax + ah)):
                sn2, tp2 = arr(S, H, fill=nan), arr(K * H, fill=nan)
                call("forward", *args, sp, ex, sn2, tp2)
                if not (np.allclose(sn2, sn, rtol=1e-9, atol=1e-12, equal_nan=True)
                        and np.allclose(tp2, tp, rtol=1e-9, atol=1e-12, equal_nan=True)):
                    raise CellSpecError(
                        f"{who}: dah_is_dax=True but rule 'forward' gives other results when "
                        f"it gets ax + ah as ax or ah and zeros as the other (its gates must "
                        f"depend on the sum only); set dah_is_dax=False; {shapes}")
        if self.supports_projection and not self.two_stage:  # (validate refuses the pair)
            self._check_projection(who, shapes, call, ax, ah, sp, ex, ds, du, (sn, tp),
                                   (dax, dah, dsp, dex))
        self._check_unit_locality(who, shapes, H)

    def _check_projection(self, who, shapes, call, ax, ah, sp, ex, ds, du, fwd, bwd):
        """With ``supports_projection`` the rules may not read the previous h (``sp[0]``):
        with a projection the kernels hand them the unprojected h, which is not the
        recurrent state; and backward must leave ``dsp[0]`` zero (it is not carried through
        the projection). A probe: run the one-stage rules again with sp[0] NaN; no output may
        turn NaN that was not NaN in ``check_rules``' own run (``fwd``: sn, tp; ``bwd``: dax,
        dah, dsp, dex), a read that hides NaN, such as min(), escapes it."""
        sp0 = sp.copy()
        sp0[0] = np.nan
        fix = ("; a cell whose rules use the previous h must set supports_projection=False "
               f"(LSTM reads only c); {shapes}")

        def turned_nan(before, after):
            return any((np.isnan(a) & ~np.isnan(b)).any() for b, a in zip(before, after))

        sn, tp = fwd
        probe = np.full_like(sn, np.nan), np.full_like(tp, np.nan)
        call("forward", ax, ah, sp0, ex, *probe)
        if turned_nan(fwd, probe):
            raise CellSpecError(f"{who}: supports_projection=True but rule 'forward' reads "
                                f"sp[0] (the previous h){fix}")
        dax, dah, dsp, dex = bwd
        probe = (np.full_like(dax, np.nan), np.full_like(dah, np.nan), np.full_like(dsp, np.nan),
                 np.zeros_like(dex))
        call("backward", ax, tp, sp0, sn, ex, ds, du, *probe)
        if turned_nan((dax, dah, dsp[1:], dex), probe[:2] + (probe[2][1:], probe[3])):
            raise CellSpecError(f"{who}: supports_projection=True but rule 'backward' reads "
                                f"sp[0] (the previous h){fix}")
        if np.any(dsp[0] != 0):
            raise CellSpecError(f"{who}: supports_projection=True but rule 'backward' writes "
                                f"a nonzero dsp[0] (a gradient for the previous h, which the "
                                f"projection does not carry){fix}")

    def _check_unit_locality(self, who, shapes, H):
        """Each rule, run for one unit j alone, writes only unit j's entries (``g*H + j``,
        ``q*H + j`` of the tape, ``[s, j]``) and reads no other unit's (run again with them
        NaN): the kernels may run the units of a step in parts, each part over its own copy
        of its units' entries (the team path)."""
        G, S, K, E = self.num_gates, self.num_states, self.tape_size, self.num_extra
        j = H // 2
        rng = np.random.default_rng(1)
        ax, ah, sp, ex = (rng.uniform(-0.5, 0.5, size=sh) for sh in ((G * H,), (G * H,), (S, H),
                                                                     (E, H)))
        flat = {"tp": (K, H), "sn": (S, H), "u": (1, H), "dax": (G, H), "dah": (G, H),
                "dsp": (S, H), "dex": (E, H)}

        def masked(a):
            """A copy of input ``a`` with every other unit's entries NaN."""
            m = np.full_like(a, np.nan)
            a2, m2 = a.reshape(-1, H), m.reshape(-1, H)
            m2[:, j] = a2[:, j]
            return m

        def check(attr, outs, *args):
            fn = _as_python(getattr(self, attr))
            fn(*args, j, H)
            for name, arr in outs.items():
                view = arr.reshape(flat[name])
                touched = ~np.isnan(view) if name != "dex" else view != 0
                touched[:, j] = False
                if touched.any():
                    raise CellSpecError(
                        f"{who}: rule {attr!r}, run for unit j={j} alone, writes {name} entries "
                        f"of other units; a rule may write only unit j's entries (g*H + j of "
                        f"the gates, q*H + j of the tape, [s, j] of the states); {shapes}")
            # reads: every other unit's inputs NaN; unit j's outputs must stay finite
            ids = {id(a) for a in outs.values()}
            fresh = {id(a): np.zeros_like(a) for a in outs.values()}
            fn(*(fresh[id(a)] if id(a) in ids else masked(a) for a in args), j, H)
            for name, arr in outs.items():
                col = fresh[id(arr)].reshape(flat[name])[:, j]
                if not np.isfinite(col).all():
                    raise CellSpecError(
                        f"{who}: rule {attr!r}, run for unit j={j} with every other unit's "
                        f"inputs NaN, gives NaN in {name}: it reads other units' entries; a "
                        f"rule may read only unit j's entries (g*H + j of the gates, q*H + j of "
                        f"the tape, [s, j] of the states and extra parameters); {shapes}")

        def nan(*shape):
            return np.full(shape, np.nan)

        tp = nan(K * H)
        if self.two_stage:
            u = nan(H)
            check("forward_stage1", {"tp": tp, "u": u}, ax, ah, sp, ex, u, tp)
        full_tp = rng.uniform(0.1, 0.9, size=K * H)
        sn = nan(S, H)
        tp2 = full_tp.copy() if self.two_stage else nan(K * H)
        check("forward", {"sn": sn} if self.two_stage else {"sn": sn, "tp": tp2},
              ax, ah, sp, ex, sn, tp2)
        snv = rng.uniform(-0.5, 0.5, size=(S, H))
        ds = rng.uniform(-0.5, 0.5, size=(S, H))
        du = np.zeros(H)
        if self.two_stage:
            dax, dah, dex = nan(G * H), nan(G * H), np.zeros((E, H))
            check("backward_stage2", {"dax": dax, "dah": dah, "dex": dex},
                  ax, full_tp, sp, snv, ex, ds, dax, dah, dex)
        dax, dah, dsp, dex = nan(G * H), nan(G * H), nan(S, H), np.zeros((E, H))
        check("backward", {"dax": dax, "dah": dah, "dsp": dsp, "dex": dex},
              ax, full_tp, sp, snv, ex, ds, du, dax, dah, dsp, dex)
