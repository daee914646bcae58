"""``gatecore train``: train a forecaster on the bundled CO2 record or on a CSV column.

The model, the split, the scaling and the baselines are described in
:mod:`gatecore.forecast`. Bad input (file, column, values, a series too short for the
window, options out of range) prints one line on stderr and exits 2.
"""

from __future__ import annotations

import os
import sys
import time

DESCRIPTION = """\
Train a one-step-ahead forecaster whose recurrent layers are gatecore cells (dense output,
MSE loss, Adam, in NumPy; every recurrent gradient from gatecore.backward). Without --csv it
trains on the bundled Mauna Loa monthly CO2 record (1965-2001). The windows are split
chronologically into train/validation/test; scaling is fitted on the training part only;
the test RMSE and MAE are reported next to a seasonal-naive and a persistence baseline."""


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a forecaster on the bundled CO2 record or your CSV",
                       description=DESCRIPTION)
    d = p.add_argument_group("data")
    d.add_argument("--csv", metavar="PATH", help="CSV file with a header line (default: bundled CO2)")
    d.add_argument("--column", metavar="NAME",
                   help="numeric column of --csv (may be omitted when the file has one column)")
    m = p.add_argument_group("model and training")
    m.add_argument("--cell", default="lstm",
                   help="registered cell name, see `gatecore cells` (default: lstm)")
    m.add_argument("--hidden-size", type=int, default=32, help="hidden units per layer (default: 32)")
    m.add_argument("--layers", type=int, default=1, help="recurrent layers (default: 1)")
    m.add_argument("--window", type=int, default=24, help="past steps the model sees (default: 24)")
    m.add_argument("--season", type=int, default=12,
                   help="seasonal period of the seasonal-naive baseline (default: 12)")
    m.add_argument("--epochs", type=int, default=40, help="default: 40")
    m.add_argument("--batch-size", type=int, default=32, help="default: 32")
    m.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate (default: 0.005)")
    m.add_argument("--clip", type=float, default=1.0, help="gradient norm clip, 0 for none (default: 1)")
    m.add_argument("--val-frac", type=float, default=0.15, help="validation fraction (default: 0.15)")
    m.add_argument("--test-frac", type=float, default=0.15, help="test fraction (default: 0.15)")
    m.add_argument("--seed", type=int, default=0,
                   help="initial parameters and batch order, an integer >= 0 (default: 0)")
    o = p.add_argument_group("output")
    o.add_argument("--save", metavar="MODEL.npz", help="save the trained model (np.load-able, no pickles)")
    o.add_argument("--output", metavar="PATH.csv", help="write the test forecasts and baselines as CSV")
    o.add_argument("--plot", metavar="PATH.png", help="plot test forecasts against actual (needs matplotlib)")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def check_output_paths(*paths: str | None) -> None:
    """Raise DataError when the folder of an output path does not exist (before any work)."""
    from ..forecast import DataError

    for path in paths:
        if path is None:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise DataError(f"cannot write {path}: folder {folder} does not exist")
        if os.path.isdir(path):
            raise DataError(f"cannot write {path}: it is a directory")


def run(args) -> int:
    from ..errors import GatecoreError
    from ..forecast import DataError, report_error

    try:
        return _run(args)
    except (DataError, GatecoreError) as exc:
        return report_error("train", exc)
    except OSError as exc:  # writing --save/--output/--plot
        return report_error("train", f"{exc.filename or ''}: {exc.strerror or exc}")


def _run(args) -> int:
    from .. import forecast as F
    from ..api import get_cell

    t0 = time.perf_counter()
    cfg = F.TrainConfig(cell=args.cell, hidden_size=args.hidden_size, num_layers=args.layers,
                        window=args.window, season=args.season, epochs=args.epochs,
                        batch_size=args.batch_size, lr=args.lr, clip=args.clip,
                        val_frac=args.val_frac, test_frac=args.test_frac, seed=args.seed)
    cfg.validate()
    get_cell(cfg.cell)  # unknown cell: fail before reading data
    check_output_paths(args.save, args.output, args.plot)
    plot = args.plot
    if plot and not F.matplotlib_available():
        print("gatecore train: --plot needs matplotlib, which is not installed "
              "(pip install matplotlib, or from the checkout: pip install -e '.[plot]'); "
              "continuing without the plot", file=sys.stderr)
        plot = None
    series = F.read_series(args.csv, args.column)
    with F.blas_single_thread():
        result = F.fit(series, cfg, progress=not args.quiet)

    written = []
    if args.save:
        meta = {"source": "bundled" if series.source == "bundled" else os.path.abspath(series.source),
                "column": series.name, "description": series.description, "unit": series.unit,
                "best_epoch": result.best_epoch, **F.config_meta(cfg)}
        for k, v in result.metrics.items():
            meta[f"test_rmse_{k}"] = v["rmse"]
            meta[f"test_mae_{k}"] = v["mae"]
        result.model.save(args.save, meta, {"train_loss": result.train_loss,
                                            "val_loss": result.val_loss})
        written.append(("model", args.save))
    labels = series.labels
    test_labels = [labels[t] for t in result.split.test]
    if args.output:
        F.write_csv(args.output, {"label": test_labels, **{k: list(v) for k, v in result.test.items()}})
        written.append(("test forecasts", args.output))
    if plot:
        start = max(0, int(result.split.test[0]) - 3 * cfg.season)
        lines = {f"model ({cfg.cell})": (test_labels, result.test["model"]),
                 f"seasonal naive (lag {cfg.season})": (test_labels, result.test["seasonal_naive"]),
                 "persistence (lag 1)": (test_labels, result.test["persistence"])}
        F.plot_forecast(plot, f"gatecore train: {series.description}, test part",
                        labels[start:], series.values[start:], lines, series.unit)
        written.append(("plot", plot))
    print_summary(series, result, time.perf_counter() - t0, written)
    return 0


def print_summary(series, result, seconds: float, written=()) -> None:
    """The table printed at the end of ``gatecore train``."""
    from ..forecast import fmt_value

    cfg, split, m = result.config, result.split, result.metrics
    lab = series.labels
    unit = f" ({series.unit})" if series.unit else ""

    def span(idx):
        return f"{lab[idx[0]]}..{lab[idx[-1]]} ({idx.size})"

    layers = f"{cfg.num_layers} layer{'s' if cfg.num_layers > 1 else ''}"
    print(f"gatecore train: {cfg.cell}, {layers} x {cfg.hidden_size} hidden, window {cfg.window}, "
          f"{cfg.epochs} epochs, seed {cfg.seed}")
    print(f"data: {series.description}: {series.values.size} values")
    print(f"split (forecast targets): train {span(split.train)}, validation {span(split.val)}, "
          f"test {span(split.test)}")
    print(f"loss (MSE, scaled changes): train {result.train_loss[0]:.4f} (epoch 1) -> "
          f"{result.train_loss[-1]:.4f} (epoch {cfg.epochs}); validation best "
          f"{result.val_loss[result.best_epoch - 1]:.4f} at epoch {result.best_epoch} (kept)")
    print()
    rows = [(f"model ({cfg.cell})", m["model"]),
            (f"seasonal naive (lag {cfg.season})", m["seasonal_naive"]),
            ("persistence (lag 1)", m["persistence"])]
    head = "test, one step ahead" + unit
    w = max(max(len(r[0]) for r in rows), len(head) - 2)
    cells = [(name, fmt_value(v["rmse"]), fmt_value(v["mae"])) for name, v in rows]
    cw = max(9, 2 + max(max(len(a), len(b)) for _, a, b in cells))
    print(f"{head:<{w + 2}}{'RMSE':>{cw}}{'MAE':>{cw}}")
    for name, a, b in cells:
        print(f"  {name:<{w}}{a:>{cw}}{b:>{cw}}")
    best_base = min(m["seasonal_naive"]["rmse"], m["persistence"]["rmse"])
    beaten = [n for n, v in rows[1:]
              if m["model"]["rmse"] < v["rmse"] and m["model"]["mae"] < v["mae"]]
    verdict = ("the model beats both baselines" if len(beaten) == 2 else
               "the model does NOT beat " + " and ".join(n for n, _ in rows[1:] if n not in beaten))
    if best_base > 0:
        print(f"{verdict} (RMSE {m['model']['rmse'] / best_base:.2f}x the better baseline's)")
    else:  # (a baseline forecasts the test period exactly: a periodic or constant series)
        print(f"{verdict} (a baseline is exact on the test period: RMSE 0)")
    print()
    for what, path in written:
        print(f"{what}: {path}")
    print(f"time: {seconds:.1f} s (training {result.seconds:.1f} s, Numba compilation included on a first run; "
          "Python start-up not counted)")
