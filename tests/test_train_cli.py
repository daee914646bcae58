"""``gatecore train`` / ``gatecore predict`` end to end, and their handling of bad input."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gatecore import forecast
from gatecore.cli import main

# a small, fast configuration: 10 years of the bundled monthly CO2 record
SMALL = ["--window", "12", "--season", "12", "--hidden-size", "8", "--epochs", "8",
         "--batch-size", "16", "--lr", "0.01", "--quiet"]


def _console_script() -> str:
    path = Path(sys.executable).with_name("gatecore")
    if not path.exists():
        pytest.skip("the gatecore console script is not installed next to this Python")
    return str(path)


def _read_csv(path) -> dict[str, list[str]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: [r[k] for r in rows] for k in rows[0]}


@pytest.fixture
def co2_slice(tmp_path) -> Path:
    """The first 120 months (1965-1974) of the bundled series, as the user's own CSV."""
    series = forecast.read_series()
    path = tmp_path / "co2_slice.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["month", "co2"])
        for label, v in zip(series.labels[:120], series.values[:120]):
            w.writerow([label, f"{v:.2f}"])
    return path


def test_bundled_series_is_clean():
    s = forecast.read_series()
    assert s.values.shape == (444,)
    assert np.isfinite(s.values).all()
    assert (s.labels[0], s.labels[-1]) == ("1965-01", "2001-12")
    assert 315 < s.values.min() < s.values.max() < 375
    assert s.unit == "ppmv"


def test_train_save_reload_predict(tmp_path, co2_slice, capsys):
    model, test_csv, plot = tmp_path / "model.npz", tmp_path / "test.csv", tmp_path / "p.png"
    rc = main(["train", "--csv", str(co2_slice), "--column", "co2", *SMALL, "--seed", "3",
               "--save", str(model), "--output", str(test_csv), "--plot", str(plot)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "seasonal naive (lag 12)" in out and "persistence (lag 1)" in out
    if forecast.matplotlib_available():
        assert plot.exists()
    else:
        assert "needs matplotlib" in err and not plot.exists()

    # the model file is plain arrays: no pickles needed
    with np.load(model, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert str(arrays["meta.cell"]) == "lstm"
    assert int(arrays["meta.window"]) == 12
    loss = arrays["history.train_loss"]
    assert loss.shape == (8,)
    assert loss[-1] < 0.5 * loss[0], loss            # the loss falls
    assert "rnn.weight_ih_l0" in arrays and arrays["out.weight"].shape == (1, 8)

    # predict with the reloaded model gives the values train reported for the test part
    pred_csv = tmp_path / "pred.csv"
    assert main(["predict", "--model", str(model), "--output", str(pred_csv), "--steps", "3"]) == 0
    out, _ = capsys.readouterr()
    assert "next 3 value(s) after 1974-12" in out and "1975-03" in out
    train_rows = _read_csv(test_csv)
    pred_rows = _read_csv(pred_csv)
    by_label = dict(zip(pred_rows["label"], pred_rows["forecast"]))
    got = np.array([float(by_label[lab]) for lab in train_rows["label"]])
    np.testing.assert_allclose(got, np.array(train_rows["model"], dtype=float), rtol=0, atol=1e-4)
    assert pred_rows["label"][-3:] == ["1975-01", "1975-02", "1975-03"]

    # the library agrees with the command line
    m, meta, _ = forecast.Forecaster.load(model)
    series = forecast.read_series(str(co2_slice), "co2")
    targets = np.array([series.labels.index(lab) for lab in train_rows["label"]])
    np.testing.assert_allclose(m.predict(series.values, targets), got, rtol=0, atol=1e-4)

    # and the console script, in a fresh process, prints the same forecasts
    proc = subprocess.run([_console_script(), "predict", "--model", str(model), "--steps", "3"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == out.splitlines()[:-2]        # less the --output lines


def test_same_seed_same_result(tmp_path, co2_slice, capsys):
    outs = []
    for k in range(2):
        path = tmp_path / f"t{k}.csv"
        args = ["train", "--csv", str(co2_slice), "--column", "co2", *SMALL, "--epochs", "3",
                "--seed", "7", "--output", str(path)]
        assert main(args) == 0
        capsys.readouterr()
        outs.append(path.read_text())
    assert outs[0] == outs[1]


def test_gru_cell_trains(co2_slice, capsys):
    rc = main(["train", "--csv", str(co2_slice), "--column", "co2", *SMALL, "--cell", "gru",
               "--epochs", "2"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "model (gru)" in out


def test_a_series_a_baseline_forecasts_exactly_gets_a_summary(tmp_path, capsys):
    """A perfectly periodic series (period --season): the seasonal-naive baseline's RMSE is
    0 on the test period; the summary says so instead of dividing by it."""
    path = tmp_path / "periodic.csv"
    pattern = [3, 5, 9, 4, 1, 7, 8, 2, 6, 0, 11, 10]
    path.write_text("v\n" + "".join(f"{pattern[i % 12]}\n" for i in range(144)))
    rc = main(["train", "--csv", str(path), *SMALL, "--epochs", "2"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "a baseline is exact on the test period" in out and "time:" in out


def _bad_files(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments, a phrase the error line must contain)."""
    def write(name, text):
        p = tmp_path / name
        p.write_text(text)
        return str(p)

    good = "month,co2\n" + "".join(f"{i},{300 + i % 12}\n" for i in range(60))
    return {
        "missing file": (["train", "--csv", str(tmp_path / "nope.csv")], "file not found"),
        "missing column": (["train", "--csv", write("g.csv", good), "--column", "ch4"],
                           "column 'ch4' not found"),
        "several columns, none chosen": (["train", "--csv", write("g2.csv", good)], "--column"),
        "non-numeric": (["train", "--csv", write("n.csv", good + "60,abc\n"), "--column", "co2"],
                        "'abc', which is not a number"),
        "NaN": (["train", "--csv", write("nan.csv", good + "60,NaN\n"), "--column", "co2"],
                "missing or NaN"),
        "empty value": (["train", "--csv", write("e.csv", "t,v\n1,1\n2,\n3,3\n"), "--column", "v"],
                        "missing or NaN"),
        "too short for the window": (["train", "--csv", write("s.csv", "v\n" + "1\n2\n" * 10)],
                                     "too short"),
        "empty file": (["train", "--csv", write("empty.csv", "")], "empty"),
        "unknown cell": (["train", "--cell", "nope"], "unknown cell"),
        "bad option": (["train", "--window", "0"], "--window"),
        "negative seed": (["train", "--seed", "-5"], "--seed must be an integer >= 0"),
        "values whose changes overflow when squared": (
            ["train", "--csv", write("huge.csv", "v\n" + "".join(f"{1e300 * (i % 3)}\n"
                                                              for i in range(80)))],
            "too much for float64"),
        "too many steps": (["predict", "--model", str(tmp_path / "m.npz"), "--steps", "10001"],
                           "--steps must be at most 10000"),
        "missing model": (["predict", "--model", str(tmp_path / "m.npz")], "model file not found"),
        "not a model": (["predict", "--model", write("m.csv", good)], "not an .npz model"),
    }


BAD_CASES = ["missing file", "missing column", "several columns, none chosen", "non-numeric",
             "NaN", "empty value", "too short for the window", "empty file", "unknown cell",
             "bad option", "negative seed", "values whose changes overflow when squared",
             "too many steps", "missing model", "not a model"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_one_line_exit_2(case, tmp_path, capsys):
    args, phrase = _bad_files(tmp_path)[case]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"gatecore {args[0]}: error: ")
    assert phrase in lines[0]


def test_bad_input_console_script(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("month,co2\n1965-01,319.4\n1965-02,n/a\n")
    proc = subprocess.run([_console_script(), "train", "--csv", str(bad), "--column", "co2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"gatecore train: error: {bad}: column 'co2' has 1 missing or NaN value(s) (first on line 3); "
        "fill or drop them first"]


def test_empty_line_inside_the_data_is_a_missing_value(tmp_path, capsys):
    path = tmp_path / "gap.csv"
    rows = ["value"] + [str(300 + 0.1 * i) for i in range(60)]
    rows.insert(30, "")
    path.write_text("\n".join(rows) + "\n\n")
    from gatecore.cli import main
    assert main(["train", "--csv", str(path), "--column", "value", "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0]


def test_demo_and_train_bad_options_are_one_line_errors(capsys):
    """demo refused nothing (tracebacks for an unknown cell or a zero size, NaN means for
    --seq-len 0); train named --num-layers for --layers."""
    for argv, text in ((["demo", "--cell", "nosuch"], "unknown cell 'nosuch'"),
                       (["demo", "--seq-len", "0"], "--seq-len must be a positive integer"),
                       (["demo", "--batch", "-1"], "--batch must be a positive integer"),
                       (["demo", "--hidden-size", "0"], "--hidden-size must be"),
                       (["train", "--layers", "0"], "--layers must be a positive integer"),
                       (["demo", "--seed", "-1"], "--seed must be an integer >= 0")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and text in err, (argv, err)


def test_check_negative_seed_is_a_one_line_error(capsys):
    """gatecore check --seed -1 reported the LSTM as failing its checks (NumPy refused the
    seed inside them)."""
    assert main(["check", "lstm", "--seed", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seed must be an integer >= 0" in err, err


def test_large_values_keep_the_tables_readable(tmp_path, capsys):
    """Values around 1e150 (squares still finite) train and predict; the tables print them
    in exponent form in columns as wide as their values, not as 150-digit fixed-point
    numbers; values whose squared errors can overflow are refused by predict too."""
    from gatecore.forecast import fmt_value
    assert fmt_value(1.5) == "1.500" and fmt_value(-2.25, sign=True) == "-2.250"
    assert fmt_value(12345678.0) == "12345678.000"
    assert fmt_value(1.44e150) == "1.4400e+150" and fmt_value(3e9, sign=True) == "+3.0000e+09"
    path = tmp_path / "big.csv"
    path.write_text("v\n" + "".join(f"{1e150 * (i % 3)}\n" for i in range(80)))
    model = tmp_path / "m.npz"
    assert main(["train", "--csv", str(path), *SMALL, "--epochs", "1", "--save", str(model)]) == 0
    out = capsys.readouterr().out.splitlines()
    head = next(ln for ln in out if ln.startswith("test, one step ahead"))
    rows = [ln for ln in out if ln.startswith(("  model (", "  seasonal", "  persistence"))]
    assert len(rows) == 3 and "e+150" in rows[0], out
    assert all(len(r) == len(head) for r in rows), out  # (right-aligned under RMSE, MAE)
    assert all(len(t) < 13 for r in rows for t in r.split()), out
    assert main(["predict", "--model", str(model), "--steps", "2", "--last", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    i = next(k for k, ln in enumerate(out) if ln.startswith("label"))
    assert all(len(ln) == len(out[i]) for ln in out[i + 1:i + 4]), out
    huge = tmp_path / "huge.csv"
    huge.write_text("v\n" + "".join(f"{1.2e154 * (i % 2)}\n" for i in range(80)))
    assert main(["predict", "--model", str(model), "--csv", str(huge)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "too much for float64" in err, err


def test_forecast_ahead_is_the_iterated_one_step_forecast():
    """forecast_ahead fills a preallocated array now; its values are the loop it replaced
    (append each forecast, predict the next from the longer series)."""
    from gatecore import forecast as F
    cfg = F.TrainConfig(hidden_size=4, window=6, season=3, epochs=1)
    model = F.Forecaster.initial(cfg, 0.1, 2.0)
    values = np.sin(np.arange(30) / 3.0) * 5
    ext, want = values.copy(), []
    for _ in range(7):
        want.append(model.predict(ext, np.array([ext.size]))[0])
        ext = np.append(ext, want[-1])
    assert np.array_equal(model.forecast_ahead(values, 7), np.array(want))
    assert model.forecast_ahead(values, 0).shape == (0,)
    with pytest.raises(ValueError, match="steps must be an int >= 0"):
        model.forecast_ahead(values, -1)
