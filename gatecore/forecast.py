"""Forecast a univariate time series with a recurrent network of gatecore cells.

The library behind ``gatecore train`` and ``gatecore predict``: reading a numeric series
from a CSV file (or the bundled Mauna Loa CO2 record), a chronological split, windowing and
scaling, a small sequence model trained with Adam, the naive baselines it has to beat, and
models saved as plain ``.npz`` files (no pickles).

The model
---------
For a series ``y[0..N-1]`` the target at time ``t`` is the next change
``d[t] = y[t] - y[t-1]``; the input is the window of the ``W`` changes before it,
``d[t-W..t-1]``, each scaled as ``(d - mean) / std`` with ``mean`` and ``std`` fitted on the
training part only. The network is ``L`` recurrent layers of any registered gatecore cell
(``"lstm"``, ``"gru"``, plugins), input size 1, followed by a dense layer on the top layer's
last hidden state ``h_T``::

    z = out.weight @ h_T + out.bias                   (scaled change)
    y_hat[t] = y[t-1] + mean + std * z

Modelling changes instead of levels lets a trending series (CO2) leave the range of values
it was trained on. The loss is the mean squared error of ``z`` against the scaled change;
every recurrent gradient comes from :func:`gatecore.backward`; the dense layer and Adam are
plain NumPy. The parameters kept are those of the epoch with the lowest validation loss.

Baselines (on the same test targets): persistence ``y_hat[t] = y[t-1]`` and seasonal naive
``y_hat[t] = y[t-season]``.

Examples
--------
>>> from gatecore import forecast
>>> series = forecast.read_series()                       # bundled monthly CO2
>>> cfg = forecast.TrainConfig(epochs=2, hidden_size=8)
>>> result = forecast.fit(series, cfg, progress=False)
>>> sorted(result.metrics)
['model', 'persistence', 'seasonal_naive']
"""

from __future__ import annotations

import csv
import importlib.util
import io
import math
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from . import __version__
from .api import backward, forward, init_params
from .workspace import Workspace

__all__ = [
    "DataError", "Series", "TrainConfig", "Split", "TrainResult", "Forecaster", "fmt_value", "check_scale",
    "read_series", "split_targets", "fit", "baselines", "rmse", "mae", "future_labels",
    "write_csv", "plot_forecast", "matplotlib_available", "report_error", "blas_single_thread",
    "config_meta", "first_target", "BUNDLED_FILE", "BUNDLED_COLUMN",
]

#: Bundled default series (under ``gatecore/data``) and its value column.
BUNDLED_FILE = "co2_monthly.csv"
BUNDLED_COLUMN = "co2"
BUNDLED_DESCRIPTION = "Mauna Loa monthly mean CO2, ppmv, 1965-01..2001-12 (Keeling & Whorf 2004)"

#: Text that counts as a missing value in a CSV cell (compared case-insensitively).
_MISSING = {"", "na", "nan", "n/a", "null", "none", "-nan"}
#: Smallest number of training windows we accept.
MIN_TRAIN_WINDOWS = 8
#: Format tag stored in saved models.
MODEL_FORMAT = "gatecore-forecast/1"


class DataError(ValueError):
    """Bad input from the user (file, column, values, sizes, options).

    The command line prints the message as one line on stderr and exits with status 2.
    """


def report_error(command: str, exc: BaseException | str) -> int:
    """Print ``exc`` as one line on stderr, prefixed with the command; return exit status 2."""
    message = " ".join(str(exc).split())
    print(f"gatecore {command}: error: {message}", file=sys.stderr)
    return 2


def blas_single_thread():
    """Context manager that limits BLAS to one thread, when threadpoolctl is installed.

    The model's matrices are tiny (hidden size x batch); OpenBLAS threads spinning on them
    cost more than they bring, up to 3x on a busy 2-core machine. Without threadpoolctl this
    does nothing.
    """
    import contextlib

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


# --------------------------------------------------------------------------- data
@dataclass
class Series:
    """A numeric series read from a CSV column.

    Attributes
    ----------
    values : float64 [N]
        The figures, finite, in file order (assumed chronological).
    labels : list of str [N]
        One label per value: the first other column of the file (for example a date), or
        the 1-based row number when the file has no other column.
    name : str
        Column name.
    source : str
        ``"bundled"`` or the path of the CSV file, as given.
    description : str
        One line for summaries.
    unit : str
        Unit of the values when known (``"ppmv"`` for the bundled series), else ``""``.
    """

    values: np.ndarray
    labels: list[str]
    name: str
    source: str
    description: str
    unit: str = ""


def _bundled_text() -> str:
    return resources.files("gatecore").joinpath("data", BUNDLED_FILE).read_text(encoding="utf-8")


def read_series(path: str | None = None, column: str | None = None) -> Series:
    """Read one numeric column of a CSV file (header line first).

    The delimiter is the first of ``,``, ``;``, tab found in the header line (comma when
    there is none, for a single-column file).

    Parameters
    ----------
    path : str, optional
        CSV file; ``None`` reads the bundled Mauna Loa CO2 record (``gatecore/data``).
    column : str, optional
        Column to read. May be omitted for the bundled file (``"co2"``) and for a file with
        a single column.

    Returns
    -------
    Series

    Raises
    ------
    DataError
        Missing or unreadable file, empty file, missing column, a value that is not a
        number, missing/NaN or infinite values. Messages name the file, line and column.
    """
    if path is None:
        text, where = _bundled_text(), f"bundled {BUNDLED_FILE}"
        if column is None:
            column = BUNDLED_COLUMN
    else:
        p = Path(path)
        where = str(path)
        if not p.exists():
            raise DataError(f"file not found: {path}")
        if p.is_dir():
            raise DataError(f"{path} is a directory, not a CSV file")
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None

    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    delimiter = next((c for c in ",;\t" if c in first), ",")
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = None
    for row in reader:
        if any(cell.strip() for cell in row):
            header = [cell.strip() for cell in row]
            break
    if header is None:
        raise DataError(f"{where} is empty: expected a header line, then one row per value")
    if column is None:
        if len(header) != 1:
            raise DataError(f"{where} has {len(header)} columns ({', '.join(header)}); "
                            "choose one with --column")
        column = header[0]
    if column not in header:
        raise DataError(f"column {column!r} not found in {where}; its columns are: {', '.join(header)}")
    ci = header.index(column)
    li = next((i for i in range(len(header)) if i != ci), None)

    values: list[float] = []
    labels: list[str] = []
    missing_lines: list[int] = []
    blank_line = None  # an empty line is a missing value unless only empty lines follow it
    for row in reader:
        if not any(cell.strip() for cell in row):
            blank_line = blank_line or reader.line_num
            continue
        if blank_line is not None:
            missing_lines.append(blank_line)
            blank_line = None
        line = reader.line_num
        cell = row[ci].strip() if ci < len(row) else ""
        if cell.lower() in _MISSING:
            value = math.nan
        else:
            try:
                value = float(cell)
            except ValueError:
                raise DataError(f"{where}, line {line}: column {column!r} holds {cell!r}, "
                                "which is not a number") from None
            if math.isinf(value):
                raise DataError(f"{where}, line {line}: column {column!r} holds {cell!r}, "
                                "which is not finite")
        if math.isnan(value):
            missing_lines.append(line)
        values.append(value)
        labels.append(row[li].strip() if li is not None and li < len(row) else str(len(values)))
    if missing_lines:
        raise DataError(f"{where}: column {column!r} has {len(missing_lines)} missing or NaN "
                        f"value(s) (first on line {missing_lines[0]}); fill or drop them first")
    if not values:
        raise DataError(f"{where} has a header but no data rows")
    description = BUNDLED_DESCRIPTION if path is None else f"{where}, column {column!r}"
    return Series(np.asarray(values, dtype=np.float64), labels, column,
                  "bundled" if path is None else str(path), description,
                  "ppmv" if path is None and column == BUNDLED_COLUMN else "")


# --------------------------------------------------------------------------- split, windows
@dataclass
class TrainConfig:
    """Options of :func:`fit` (the defaults are those of ``gatecore train``).

    Attributes
    ----------
    cell : str
        Registered gatecore cell name.
    hidden_size, num_layers : int
        Recurrent layer width and depth.
    window : int
        Number of past changes the model sees.
    season : int
        Seasonal period of the seasonal-naive baseline (12 for monthly data).
    epochs, batch_size : int
    lr : float
        Adam learning rate (betas 0.9, 0.999, eps 1e-8).
    clip : float
        Gradients are rescaled to at most this global L2 norm (0: no clipping).
    val_frac, test_frac : float
        Fractions of the windows, taken from the end of the series, for validation and test.
    seed : int
        Seeds the initial parameters and the batch order.
    """

    cell: str = "lstm"
    hidden_size: int = 32
    num_layers: int = 1
    window: int = 24
    season: int = 12
    epochs: int = 40
    batch_size: int = 32
    lr: float = 5e-3
    clip: float = 1.0
    val_frac: float = 0.15
    test_frac: float = 0.15
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`DataError` for an option out of range."""
        for name in ("hidden_size", "num_layers", "window", "season", "epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                flag = "layers" if name == "num_layers" else name.replace("_", "-")
                raise DataError(f"--{flag} must be a positive integer, got {v!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise DataError(f"--lr must be a positive number, got {self.lr!r}")
        if not (self.clip >= 0 and math.isfinite(self.clip)):
            raise DataError(f"--clip must be >= 0, got {self.clip!r}")
        for name in ("val_frac", "test_frac"):
            v = getattr(self, name)
            if not 0 < v < 1:
                raise DataError(f"--{name.replace('_', '-')} must lie strictly between 0 and 1, got {v!r}")
        if (not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool)
                or self.seed < 0):
            raise DataError(f"--seed must be an integer >= 0, got {self.seed!r}")
        if self.val_frac + self.test_frac >= 0.9:
            raise DataError("--val-frac + --test-frac must stay below 0.9, got "
                            f"{self.val_frac + self.test_frac:g}")


@dataclass
class Split:
    """Target time indices of each part, in chronological order (int64 arrays)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def first_target(window: int, season: int = 1) -> int:
    """First time index with a full window of changes (and a seasonal-naive value)."""
    return max(window + 1, season)


def split_targets(n_values: int, window: int, season: int, val_frac: float,
                  test_frac: float) -> Split:
    """Chronological train/validation/test split of the forecast targets.

    Raises
    ------
    DataError
        The series is too short for the window: fewer than ``MIN_TRAIN_WINDOWS`` training
        windows would be left.
    """
    t0 = first_target(window, season)
    targets = np.arange(t0, n_values, dtype=np.int64)
    n = targets.size
    n_test = max(1, round(n * test_frac))
    n_val = max(1, round(n * val_frac))
    n_train = n - n_val - n_test
    if n_train < MIN_TRAIN_WINDOWS:
        need = max(n_values, t0) + 1
        while need - t0 - max(1, round((need - t0) * test_frac)) \
                - max(1, round((need - t0) * val_frac)) < MIN_TRAIN_WINDOWS:
            need += 1
        raise DataError(
            f"series too short for the window: {n_values} values, but --window {window} "
            f"(with --season {season}) needs at least {need} ({t0} before the first target, then "
            f"{MIN_TRAIN_WINDOWS} training windows plus validation and test); use a shorter "
            "--window or a longer series")
    return Split(targets[:n_train], targets[n_train:n_train + n_val], targets[n_train + n_val:])


def _windows(values: np.ndarray, targets: np.ndarray, window: int, mean: float, std: float):
    """Scaled inputs x [W, B, 1] float32 and scaled targets [B] float32 (NaN past the end)."""
    d = np.diff(values)                    # d[j] = change at time j + 1
    idx = targets[:, None] - window - 1 + np.arange(window)[None, :]
    x = ((d[idx] - mean) / std).T[:, :, None]
    z = np.full(targets.size, np.nan)
    inside = targets < values.size
    z[inside] = (d[targets[inside] - 1] - mean) / std
    return np.ascontiguousarray(x, dtype=np.float32), z.astype(np.float32)


# --------------------------------------------------------------------------- model
class Forecaster:
    """A trained (or freshly initialised) forecasting network; see the module docstring.

    Parameters
    ----------
    cell : str
        Registered gatecore cell name.
    params : dict of str to float32 array
        Recurrent parameters, PyTorch ``state_dict`` keys (input size 1).
    out_weight : float32 [1, H_out]
    out_bias : float32 [1]
    window, season : int
    mean, std : float
        Scaling of the changes (fitted on the training part).
    """

    def __init__(self, cell: str, params: dict, out_weight: np.ndarray, out_bias: np.ndarray,
                 window: int, season: int, mean: float, std: float) -> None:
        self.cell = cell
        self.params = params
        self.out_weight = out_weight
        self.out_bias = out_bias
        self.window = int(window)
        self.season = int(season)
        self.mean = float(mean)
        self.std = float(std)
        self._ws = Workspace()

    @property
    def hidden_size(self) -> int:
        return int(self.params["weight_hh_l0"].shape[1])

    @property
    def num_layers(self) -> int:
        return sum(1 for k in self.params if k.startswith("weight_ih_l") and "reverse" not in k)

    @classmethod
    def initial(cls, cfg: TrainConfig, mean: float, std: float) -> Forecaster:
        """Fresh parameters: gatecore's PyTorch-style init for the recurrent layers,
        ``torch.nn.Linear``'s for the dense layer, both from ``cfg.seed``."""
        params = init_params(cfg.cell, 1, cfg.hidden_size, cfg.num_layers, seed=cfg.seed)
        h_out = params[f"weight_hh_l{cfg.num_layers - 1}"].shape[1]
        rng = np.random.default_rng([cfg.seed, 1])
        bound = 1.0 / math.sqrt(h_out)
        w = rng.uniform(-bound, bound, (1, h_out)).astype(np.float32)
        b = rng.uniform(-bound, bound, (1,)).astype(np.float32)
        return cls(cfg.cell, params, w, b, cfg.window, cfg.season, mean, std)

    # ----------------------------------------------------------------- compute
    def _scaled(self, x: np.ndarray, batch: int = 4096) -> np.ndarray:
        """Scaled predicted changes [B] (float64) for inputs x [W, B, 1]; no tape kept."""
        out = np.empty(x.shape[1])
        for s in range(0, x.shape[1], batch):
            y, _, _ = forward(self.cell, x[:, s:s + batch], self.params, workspace=self._ws,
                              training=False)
            out[s:s + batch] = y[-1] @ self.out_weight[0] + self.out_bias[0]
        return out

    def predict(self, values: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """One-step-ahead forecasts ``y_hat[t]`` for each target index ``t`` (float64).

        Each ``t`` must satisfy ``window + 1 <= t <= len(values)``; ``t = len(values)``
        forecasts the value after the last one.
        """
        values = np.asarray(values, dtype=np.float64)
        targets = np.asarray(targets, dtype=np.int64)
        if targets.size == 0:
            return np.empty(0)
        x, _ = _windows(values, targets, self.window, self.mean, self.std)
        return values[targets - 1] + self.mean + self.std * self._scaled(x)

    def forecast_ahead(self, values: np.ndarray, steps: int) -> np.ndarray:
        """Iterated forecasts of the ``steps`` values after the end of ``values`` [steps]
        (ValueError unless ``steps`` is an int >= 0)."""
        if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"steps must be an int >= 0, got {steps!r}")
        values = np.asarray(values, dtype=np.float64)
        n = values.size
        ext = np.empty(n + steps)  # (filled as it goes: each forecast reads only the past)
        ext[:n] = values
        for k in range(steps):
            ext[n + k] = self.predict(ext[:n + k], np.array([n + k]))[0]
        return ext[n:].copy()

    # ----------------------------------------------------------------- files
    def save(self, path: str | Path, meta: dict | None = None, history: dict | None = None) -> None:
        """Write an ``.npz`` file readable with ``np.load(path, allow_pickle=False)``.

        Keys: ``rnn.<state_dict key>``, ``out.weight``, ``out.bias``, ``meta.<name>`` (0-d
        int, float or str arrays) and ``history.<name>`` (float arrays).
        """
        arrays = {f"rnn.{k}": np.asarray(v) for k, v in self.params.items()}
        arrays["out.weight"] = self.out_weight
        arrays["out.bias"] = self.out_bias
        info = {"format": MODEL_FORMAT, "gatecore_version": __version__, "cell": self.cell,
                "window": self.window, "season": self.season, "mean": self.mean,
                "std": self.std, "hidden_size": self.hidden_size, "num_layers": self.num_layers}
        info.update(meta or {})
        for k, v in info.items():
            arrays[f"meta.{k}"] = np.array(v)
        for k, v in (history or {}).items():
            arrays[f"history.{k}"] = np.asarray(v, dtype=np.float64)
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> tuple[Forecaster, dict, dict]:
        """Read a model written by :meth:`save`; returns ``(model, meta, history)``.

        Raises
        ------
        DataError
            Missing file, or not a gatecore forecast model.
        """
        p = Path(path)
        if not p.is_file():
            raise DataError(f"model file not found: {path}")
        with open(p, "rb") as f:
            if f.read(4) != b"PK\x03\x04":
                raise DataError(f"{path} is not an .npz model file (saved by gatecore train --save)")
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as exc:  # noqa: BLE001 - zip, pickle or format errors
            raise DataError(f"{path} is not a readable .npz model ({type(exc).__name__}: {exc})") from None
        meta = {k[5:]: v.item() for k, v in arrays.items() if k.startswith("meta.")}
        if meta.get("format") != MODEL_FORMAT:
            raise DataError(f"{path} is not a gatecore forecast model (no meta.format = {MODEL_FORMAT!r})")
        params = {k[4:]: v for k, v in arrays.items() if k.startswith("rnn.")}
        history = {k[8:]: v for k, v in arrays.items() if k.startswith("history.")}
        model = cls(str(meta["cell"]), params, arrays["out.weight"], arrays["out.bias"],
                    int(meta["window"]), int(meta["season"]), float(meta["mean"]),
                    float(meta["std"]))
        return model, meta, history


# --------------------------------------------------------------------------- training
class _Adam:
    """Adam (Kingma & Ba 2015) over a dict of arrays, updated in place."""

    def __init__(self, params: dict, lr: float, b1: float = 0.9, b2: float = 0.999,
                 eps: float = 1e-8) -> None:
        self.params, self.lr, self.b1, self.b2, self.eps = params, lr, b1, b2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, grads: dict) -> None:
        self.t += 1
        c1 = 1.0 - self.b1 ** self.t
        c2 = 1.0 - self.b2 ** self.t
        for k, p in self.params.items():
            g = grads[k]
            m, v = self.m[k], self.v[k]
            m *= self.b1
            m += (1.0 - self.b1) * g
            v *= self.b2
            v += (1.0 - self.b2) * (g * g)
            p -= (self.lr / c1) * m / (np.sqrt(v / c2) + self.eps)


@dataclass
class TrainResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    model : Forecaster
        Parameters of the best validation epoch.
    config : TrainConfig
    split : Split
    train_loss, val_loss : float64 [epochs]
        Mean squared error on scaled changes per epoch (train: mean over the epoch's batches).
    best_epoch : int
        1-based epoch whose parameters were kept.
    test : dict of str to float64 [n_test]
        ``actual``, ``model``, ``seasonal_naive``, ``persistence`` on the test targets.
    metrics : dict of str to dict
        ``{"model": {"rmse": .., "mae": ..}, "seasonal_naive": {...}, "persistence": {...}}``.
    seconds : float
        Wall time of :func:`fit`, first kernel compilation included.
    """

    model: Forecaster
    config: TrainConfig
    split: Split
    train_loss: np.ndarray
    val_loss: np.ndarray
    best_epoch: int
    test: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    seconds: float = 0.0


def fmt_value(v: float, sign: bool = False) -> str:
    """``v`` with three decimals, or in exponent form with five significant digits from 1e9
    on (the command-line tables stay readable for series in large units); ``sign``: always
    with its sign."""
    plus = "+" if sign else ""
    return f"{v:{plus}.3f}" if abs(v) < 1e9 or not math.isfinite(v) else f"{v:{plus}.4e}"


def check_scale(values: np.ndarray, season: int = 1) -> None:
    """Raise :class:`DataError` when a series is too large for float64 arithmetic on it:
    a non-finite value, or changes so large that the sums of squared errors of the model and
    the baselines (persistence, seasonal naive over ``season`` steps) can overflow."""
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise DataError("the series has infinite or NaN values; fill or drop them first")
    with np.errstate(over="ignore"):
        big = float(np.max(np.abs(np.diff(values)), initial=0.0))
        bound = big * max(int(season), 1)  # (a seasonal-naive error, at most)
        ok = math.isfinite(bound * bound * max(values.size, 1) * 4.0)
    if not ok:
        raise DataError(f"the series changes by up to {big:.4g} from one value to the next, "
                        "too much for float64 sums of squared errors: rescale the column "
                        "(for example to other units)")


def rmse(actual: np.ndarray, pred: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((np.asarray(actual) - np.asarray(pred)) ** 2)))


def mae(actual: np.ndarray, pred: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(np.asarray(actual) - np.asarray(pred))))


def baselines(values: np.ndarray, targets: np.ndarray, season: int) -> dict[str, np.ndarray]:
    """Seasonal-naive (``y[t-season]``) and persistence (``y[t-1]``) forecasts of ``targets``."""
    return {"seasonal_naive": values[targets - season], "persistence": values[targets - 1]}


def fit(series: Series, cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Train a :class:`Forecaster` on ``series`` and evaluate it on the test part.

    Parameters
    ----------
    series : Series
    cfg : TrainConfig
    progress : bool
        Show a tqdm progress bar on stderr, one tick per epoch, with the losses.

    Returns
    -------
    TrainResult

    Raises
    ------
    DataError
        Options out of range, or a series too short for the window.
    gatecore.UnknownCellError
        ``cfg.cell`` is not registered.
    """
    from tqdm import tqdm

    t_start = time.perf_counter()
    cfg.validate()
    values = series.values
    split = split_targets(values.size, cfg.window, cfg.season, cfg.val_frac, cfg.test_frac)
    check_scale(values, cfg.season)
    d_train = np.diff(values[:split.train[-1] + 1])       # changes up to the last training target
    mean = float(d_train.mean())
    std = float(d_train.std()) or 1.0
    model = Forecaster.initial(cfg, mean, std)
    x_tr, z_tr = _windows(values, split.train, cfg.window, mean, std)
    x_va, z_va = _windows(values, split.val, cfg.window, mean, std)

    weights = {**{f"rnn.{k}": v for k, v in model.params.items()},
               "out.weight": model.out_weight, "out.bias": model.out_bias}
    adam = _Adam(weights, cfg.lr)
    ws = Workspace(max_seq_len=cfg.window, max_batch=cfg.batch_size)
    rng = np.random.default_rng([cfg.seed, 2])
    n = split.train.size
    train_loss = np.empty(cfg.epochs)
    val_loss = np.empty(cfg.epochs)
    best = (math.inf, 0, None)
    bar = tqdm(range(cfg.epochs), desc=f"train {cfg.cell}", unit="epoch", file=sys.stderr,
               disable=not progress, dynamic_ncols=True, leave=True)
    for epoch in bar:
        order = rng.permutation(n)
        total = 0.0
        for s in range(0, n, cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            b = idx.size
            y, _, tape = forward(cfg.cell, x_tr[:, idx], model.params, workspace=ws)
            h = y[-1].copy()                                          # [b, H_out]
            err = h @ model.out_weight[0] + model.out_bias[0] - z_tr[idx]  # [b]
            total += float(err @ err)
            g = (2.0 / b) * err                                       # dL/dz
            dy = np.zeros_like(y)
            dy[-1] = g[:, None] * model.out_weight                    # dL/dh_T
            _, _, dparams = backward(tape, dy)                        # views into ws
            grads = {f"rnn.{k}": v for k, v in dparams.items()}
            grads["out.weight"] = (g @ h)[None, :]
            grads["out.bias"] = np.array([g.sum()], dtype=np.float32)
            if cfg.clip > 0:
                norm = math.sqrt(sum(float(np.vdot(v, v)) for v in grads.values()))
                if norm > cfg.clip:
                    scale = np.float32(cfg.clip / norm)
                    grads = {k: v * scale for k, v in grads.items()}
            adam.step(grads)
        train_loss[epoch] = total / n
        val_loss[epoch] = float(np.mean((model._scaled(x_va) - z_va) ** 2))
        if val_loss[epoch] < best[0]:
            best = (val_loss[epoch], epoch + 1, {k: v.copy() for k, v in weights.items()})
        bar.set_postfix(loss=f"{train_loss[epoch]:.4f}", val=f"{val_loss[epoch]:.4f}", refresh=False)
    bar.close()
    if best[2] is not None:
        for k, v in best[2].items():
            weights[k][...] = v

    actual = values[split.test]
    test = {"actual": actual, "model": model.predict(values, split.test),
            **baselines(values, split.test, cfg.season)}
    metrics = {k: {"rmse": rmse(actual, test[k]), "mae": mae(actual, test[k])}
               for k in ("model", "seasonal_naive", "persistence")}
    return TrainResult(model, cfg, split, train_loss, val_loss, best[1], test, metrics,
                       time.perf_counter() - t_start)


def config_meta(cfg: TrainConfig) -> dict:
    """The training options as ``meta`` entries for :meth:`Forecaster.save`."""
    return {f"train_{k}": v for k, v in asdict(cfg).items() if k not in ("cell", "window", "season")}


# --------------------------------------------------------------------------- output helpers
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def future_labels(labels: list[str], steps: int) -> list[str]:
    """Labels for ``steps`` values after the end: next months for ``YYYY-MM`` labels,
    next integers for integer labels, ``+1``, ``+2``, ... otherwise."""
    last = labels[-1] if labels else ""
    m = _MONTH.match(last)
    if m:
        y, mo = int(m.group(1)), int(m.group(2))
        out = []
        for _ in range(steps):
            y, mo = (y + 1, 1) if mo == 12 else (y, mo + 1)
            out.append(f"{y:04d}-{mo:02d}")
        return out
    if re.fullmatch(r"-?\d+", last):
        return [str(int(last) + k) for k in range(1, steps + 1)]
    return [f"+{k}" for k in range(1, steps + 1)]


def write_csv(path: str | Path, columns: dict[str, list]) -> None:
    """Write equal-length columns as a CSV file (floats with 6 decimals, empty for NaN)."""
    names = list(columns)
    rows = zip(*(columns[k] for k in names))
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(names)
        for row in rows:
            w.writerow(["" if isinstance(v, float) and math.isnan(v) else
                        (f"{v:.6f}" if isinstance(v, (float, np.floating)) else v) for v in row])


def matplotlib_available() -> bool:
    """Whether matplotlib can be imported (the ``plot`` extra)."""
    return importlib.util.find_spec("matplotlib") is not None


def plot_forecast(path: str | Path, title: str, labels: list[str], actual: np.ndarray,
                  lines: dict[str, tuple[list[str], np.ndarray]], ylabel: str = "") -> None:
    """Draw ``actual`` against forecasts and save a PNG (needs matplotlib).

    ``lines`` maps a legend entry to ``(labels, values)``; labels place the points on the
    x-axis by their position in ``labels`` (positions past its end continue it).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = {lab: i for i, lab in enumerate(labels)}
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    ax.plot(np.arange(len(labels)), actual, color="black", lw=1.2, label="actual")
    for name, (labs, vals) in lines.items():
        xs, extra = [], 0
        for lab in labs:
            if lab in pos:
                xs.append(pos[lab])
            else:
                xs.append(len(labels) + extra)
                extra += 1
        ax.plot(xs, vals, lw=1.2, label=name)
    step = max(1, len(labels) // 10)
    ticks = list(range(0, len(labels), step))
    ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=30, ha="right")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
