"""``gatecore predict``: load a model saved by ``gatecore train --save`` and forecast.

Prints one-step-ahead forecasts of the last values of the series (with their errors) and
iterated forecasts of the next ``--steps`` values after its end; ``--output`` writes all
of them as CSV. Bad input prints one line on stderr and exits 2.
"""

from __future__ import annotations

import os
import sys

import numpy as np

DESCRIPTION = """\
Load a model saved by `gatecore train --save` and forecast: one step ahead for every window of
the series (default: the series the model was trained on), and the next --steps values after
its end (iterated one-step forecasts)."""

#: most values ``--steps`` forecasts past the end of the series (one forward call each: a few
#: seconds; iterated one-step forecasts that far ahead mean little)
MAX_STEPS = 10000


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="forecast with a model saved by `gatecore train --save`",
                       description=DESCRIPTION)
    p.add_argument("--model", required=True, metavar="MODEL.npz", help="model file from train --save")
    p.add_argument("--csv", metavar="PATH",
                   help="CSV file to forecast (default: the data the model was trained on)")
    p.add_argument("--column", metavar="NAME", help="column of --csv (default: the training column)")
    p.add_argument("--steps", type=int, default=12,
                   help="values to forecast after the end of the series, at most "
                        f"{MAX_STEPS} (default: 12)")
    p.add_argument("--last", type=int, default=12,
                   help="one-step-ahead forecasts to print, from the end (default: 12)")
    p.add_argument("--output", metavar="PATH.csv", help="write every forecast as CSV")
    p.add_argument("--plot", metavar="PATH.png", help="plot forecasts against actual (needs matplotlib)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import GatecoreError
    from ..forecast import DataError, report_error

    try:
        return _run(args)
    except (DataError, GatecoreError) as exc:
        return report_error("predict", exc)
    except OSError as exc:
        return report_error("predict", f"{exc.filename or ''}: {exc.strerror or exc}")


def _run(args) -> int:
    from .. import forecast as F
    from .train import check_output_paths

    for name in ("steps", "last"):
        if getattr(args, name) < 0:
            raise F.DataError(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.steps > MAX_STEPS:  # (iterated forecasts drift far from anything seen)
        raise F.DataError(f"--steps must be at most {MAX_STEPS}, got {args.steps}")
    check_output_paths(args.output, args.plot)
    plot = args.plot
    if plot and not F.matplotlib_available():
        print("gatecore predict: --plot needs matplotlib, which is not installed "
              "(pip install matplotlib, or from the checkout: pip install -e '.[plot]'); "
              "continuing without the plot", file=sys.stderr)
        plot = None
    model, meta, _ = F.Forecaster.load(args.model)
    column = args.column or (str(meta["column"]) if "column" in meta else None)
    if args.csv is not None:
        series = F.read_series(args.csv, args.column)
    elif meta.get("source", "bundled") == "bundled":
        series = F.read_series(None, column)
    else:
        source = str(meta["source"])
        if not os.path.exists(source):
            raise F.DataError(f"the model was trained on {source}, which no longer exists; "
                              "give the data with --csv PATH --column NAME")
        series = F.read_series(source, column)

    values, labels = series.values, series.labels
    t0 = model.window + 1
    if values.size < t0:
        raise F.DataError(f"series too short for the model: {values.size} values, but its window "
                          f"of {model.window} needs at least {t0}")
    F.check_scale(values, model.season)
    with F.blas_single_thread():
        targets = np.arange(t0, values.size, dtype=np.int64)
        one_step = model.predict(values, targets)
        ahead = model.forecast_ahead(values, args.steps)
    actual = values[targets]
    future = F.future_labels(labels, args.steps)

    layers = f"{model.num_layers} layer{'s' if model.num_layers > 1 else ''}"
    print(f"model: {args.model}: {model.cell}, {layers} x {model.hidden_size} hidden, "
          f"window {model.window}; trained on {meta.get('description', '?')}")
    print(f"data: {series.description}: {values.size} values")
    if targets.size:
        print(f"one step ahead over {targets.size} windows ({labels[t0]}..{labels[-1]}): "
              f"RMSE {F.fmt_value(F.rmse(actual, one_step))}, MAE {F.fmt_value(F.mae(actual, one_step))}"
              + (f" ({series.unit})" if series.unit else ""))
    width = max([len(x) for x in labels[-max(args.last, 1):] + future] + [5])
    if args.last and targets.size:
        shown = [(labels[targets[i]], F.fmt_value(actual[i]), F.fmt_value(one_step[i]),
                  F.fmt_value(one_step[i] - actual[i], sign=True))
                 for i in range(max(0, targets.size - args.last), targets.size)]
        ew = max([9] + [len(e) for *_, e in shown])
        print()
        print(f"{'label':<{width}}  {'actual':>12}  {'forecast':>12}  {'error':>{ew}}")
        for lab, a, f, e in shown:
            print(f"{lab:<{width}}  {a:>12}  {f:>12}  {e:>{ew}}")
    if args.steps:
        print()
        print(f"next {args.steps} value(s) after {labels[-1]} (iterated one-step forecasts):")
        for lab, v in zip(future, ahead):
            print(f"{lab:<{width}}  {'':>12}  {F.fmt_value(v):>12}")
    if args.output:
        F.write_csv(args.output, {
            "label": [labels[t] for t in targets] + future,
            "actual": list(actual) + [float("nan")] * args.steps,
            "forecast": list(one_step) + list(ahead),
        })
        print(f"\nforecasts: {args.output}")
    if plot:
        start = max(0, values.size - 10 * max(args.steps, 12))
        shown = targets >= start
        F.plot_forecast(plot, f"gatecore predict: {series.description}", labels[start:],
                        values[start:],
                        {"one step ahead": ([labels[t] for t in targets[shown]], one_step[shown]),
                         f"next {args.steps} (iterated)": (future, ahead)}, series.unit)
        print(f"plot: {plot}")
    return 0
