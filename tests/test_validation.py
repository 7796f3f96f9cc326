"""Bad input is refused where it enters, with chainrule's own error naming the argument, what
was expected and what was received: through the API (fit, evaluate, predict, the optimizers)
and through the command line (one line on stderr, exit status 2, no traceback)."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import chainrule as cr
from chainrule import nn, optim
from chainrule.errors import ChainruleError, DataError, ShapeError

X = np.random.default_rng(0).random((6, 3)).astype(np.float32)
Y = np.array([0, 1, 0, 1, 1, 0])


def model():
    return nn.MLP([3, 4, 2], generator=0)


def with_value(a, index, value):
    a = np.array(a, dtype=np.float64)
    a[index] = value
    return a


# Each case: (X, y, loss, error type, the words of the message: argument, expected, received).
DATA_CASES = {
    "nan in X": (with_value(X, (2, 1), np.nan), Y, "cross_entropy", DataError, r"X must be finite, got nan at index \(2, 1\)"),
    "inf in X": (with_value(X, (0, 0), -np.inf), Y, "cross_entropy", DataError, r"X must be finite, got -inf at index \(0, 0\)"),
    "nan in y": (X, with_value(Y, 3, np.nan), "cross_entropy", DataError, r"y must be finite, got nan at index \(3,\)"),
    "label too large": (X, np.array([0, 1, 2, 1, 0, 5]), "cross_entropy", DataError, r"y for cross-entropy must hold class labels in \[0, 1\], got values from 0 to 5"),
    "negative label": (X, np.array([0, -1, 1, 1, 0, 0]), "cross_entropy", DataError, r"class labels in \[0, 1\], got values from -1 to 1"),
    "non-integer label": (X, np.array([0, 0.5, 1, 1, 0, 0]), "cross_entropy", DataError, "must be integer class labels, got non-integer values such as 0.5"),
    "bce target above 1": (X, np.full((6, 2), 1.5), "bce", DataError, r"y for binary cross-entropy must lie in \[0, 1\], got values from 1.5 to 1.5"),
    "bce target below 0": (X, np.full((6, 2), -0.1), "bce", DataError, r"must lie in \[0, 1\], got values from -0.1"),
    "bce labels not a matrix": (X, np.zeros(6), "bce", ShapeError, r"must be a \(samples, labels\) matrix, got shape \(6,\)"),
    "lengths differ": (X, Y[:4], "cross_entropy", ShapeError, "X and y must have one row per sample, got 6 rows of X and 4 of y"),
    "feature count": (np.zeros((6, 5)), Y, "cross_entropy", ShapeError, "X has 5 features per sample but the model expects 3"),
    "X not a matrix": (np.zeros(6), Y, "cross_entropy", ShapeError, r"X must have shape \(samples, features\), got shape \(6,\)"),
    "empty": (np.zeros((0, 3)), np.zeros(0, int), "cross_entropy", DataError, r"X must hold at least one sample, got an empty array of shape \(0, 3\)"),
    "not numbers": ([["a", "b", "c"]], [0], "cross_entropy", DataError, "X must be an array of numbers, got an array of dtype <U1"),
    "probabilities wrong width": (X, np.full((6, 3), 1 / 3), "cross_entropy", ShapeError, "y of class probabilities must have 2 columns, got 3"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_fit_refuses_bad_data_before_any_step(case):
    Xb, yb, loss, error, message = DATA_CASES[case]
    m = model()
    before = [p.data.copy() for p in m.parameters()]
    with pytest.raises(error, match=message):
        cr.fit(m, loss, optim.SGD(m.parameters(), lr=0.1), Xb, yb, progress=False)
    assert all(np.array_equal(a, p.data) for a, p in zip(before, m.parameters()))


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_evaluate_refuses_the_same_data(case):
    Xb, yb, loss, error, message = DATA_CASES[case]
    with pytest.raises(error, match=message):
        cr.evaluate(model(), loss, Xb, yb)


@pytest.mark.parametrize("case", ["nan in X", "inf in X", "feature count", "X not a matrix", "empty", "not numbers"])
def test_predict_refuses_bad_inputs(case):
    Xb, _, _, error, message = DATA_CASES[case]
    with pytest.raises(error, match=message):
        cr.predict(model(), Xb)


def test_validation_data_is_named_as_such():
    m = model()
    opt = optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(DataError, match=r"X_val must be finite, got nan"):
        cr.fit(m, "cross_entropy", opt, X, Y, validation=(with_value(X, (0, 0), np.nan), Y), progress=False)
    with pytest.raises(DataError, match=r"y_val for cross-entropy must hold class labels in \[0, 1\], got values from 9 to 9"):
        cr.fit(m, "cross_entropy", opt, X, Y, validation=(X, np.full(6, 9)), progress=False)
    with pytest.raises(DataError, match="validation must be a pair \\(X_val, y_val\\), got a tuple of 1"):
        cr.fit(m, "cross_entropy", opt, X, Y, validation=(X,), progress=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"batch_size": -4}, "batch_size must be an integer >= 1, got -4"),
        ({"batch_size": 2.5}, "batch_size must be an integer >= 1, got 2.5"),
        ({"batch_size": True}, "batch_size must be an integer >= 1, got True"),
        ({"epochs": -1}, "epochs must be an integer >= 0, got -1"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"state": cr.TrainState(next_batch=9)}, r"next_batch must be in \[0, 2\] \(batches per epoch\), got 9"),
    ],
)
def test_fit_refuses_bad_settings(kwargs, message):
    m = model()
    with pytest.raises(ChainruleError, match=message):
        cr.fit(m, "cross_entropy", optim.SGD(m.parameters(), lr=0.1), X, Y, progress=False, **{"batch_size": 4, **kwargs})


@pytest.mark.parametrize("make", [optim.SGD, optim.Adam, optim.AdamW])
@pytest.mark.parametrize("lr", [0, -0.1, float("nan"), float("inf"), None, True, "fast"])
def test_optimizers_refuse_a_learning_rate_that_is_not_positive_and_finite(make, lr):
    with pytest.raises(DataError, match=f"lr must be a finite number > 0, got {lr!r}"):
        make(model().parameters(), lr=lr)


def test_prediction_and_evaluation_batch_size_is_checked():
    with pytest.raises(DataError, match="batch_size must be an integer >= 1, got 0"):
        cr.predict(model(), X, batch_size=0)
    with pytest.raises(DataError, match="batch_size must be an integer >= 1, got 0"):
        cr.evaluate(model(), "cross_entropy", X, Y, batch_size=0)


def test_every_error_is_a_valueerror():
    assert issubclass(ChainruleError, ValueError)
    with pytest.raises(ValueError):
        cr.fit(model(), "cross_entropy", optim.SGD(model().parameters(), lr=0.1), X, Y[:2], progress=False)


# ---- the command line, as a user runs it ----------------------------------------------------------

ENV = {**os.environ, "COLUMNS": "120"}


def cli(args, cwd):
    p = subprocess.run([sys.executable, "-m", "chainrule", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=300)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with one small finished run and the input files the cases below feed to it."""
    d = tmp_path_factory.mktemp("cli_bad")
    code, _, err = cli(["train", "-d", "xor", "--layers", "4", "--epochs", "1", "--out", d / "run", "--no-plots", "--quiet"], d)
    assert code == 0, err
    code, _, err = cli(["train", "-d", "sine", "--layers", "32,32", "--activation", "tanh", "--optimizer", "sgd", "--lr", "0.35",
                        "--epochs", "4", "--out", d / "diverged", "--no-plots", "--quiet"], d)
    assert code == 2 and "the loss reached" in err
    (d / "broken").mkdir()
    (d / "broken" / "checkpoint.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    np.save(d / "nan.npy", np.array([[0.1, np.nan]]))
    (d / "inf.csv").write_text("0.5,inf\n")
    (d / "empty.csv").write_text("\n\n")
    (d / "wide.csv").write_text("1,2,3\n")
    np.save(d / "words.npy", np.array([["a", "b"]]))
    return d


# (arguments, words that must be in the one line: the argument, what was expected, what came)
CLI_CASES = [
    (["train", "--lr", "0"], "lr must be a finite number > 0, got 0.0"),
    (["train", "--lr", "-1"], "lr must be a finite number > 0, got -1.0"),
    (["train", "--lr", "nan"], "lr must be a finite number > 0, got nan"),
    (["train", "--lr", "inf"], "lr must be a finite number > 0, got inf"),
    (["train", "--batch-size", "0"], "batch_size must be an integer >= 1, got 0"),
    (["train", "--epochs", "-3"], "epochs must be an integer >= 0, got -3"),
    (["train", "--layers", "64,0"], "layers must be positive integer widths separated by commas, such as 128,128, or WIDTHxCOUNT such as 64x50; got '64,0'"),
    (["train", "--momentum", "2"], "momentum must be a finite number in [0.0, 0.999], got 2.0"),
    (["train", "--checkpoint-every", "soon"], "checkpoint_every must be a number of steps (such as 500), of epochs (2e), of seconds (30s) or of minutes (10m), or 0 for none; got 'soon'"),
    (["train", "--monitor-every", "-1"], "monitor_every must be an integer >= 0, got -1"),
    (["train", "--resume", "nowhere"], "run folder 'nowhere' does not exist"),
    (["train", "--resume", "run", "--lr", "0.1"], "--resume continues RUN with the settings in its checkpoint, so --lr cannot be given with it"),
    (["train", "--resume", "run"], "run 'run' has finished (model.safetensors holds its result): there is no checkpoint to resume from"),
    (["train", "--resume", "broken"], "model file 'broken/checkpoint.safetensors' is truncated or corrupt"),
    (["evaluate", "diverged"], "run 'diverged' has no model: its loss diverged (metrics.json says where); train it again with a smaller lr"),
    (["predict", "run", "--input", "nan.npy"], "input file 'nan.npy' holds NaN or infinite values"),
    (["predict", "run", "--input", "inf.csv"], "input file 'inf.csv' holds NaN or infinite values"),
    (["predict", "run", "--input", "empty.csv"], "input file 'empty.csv' holds no rows"),
    (["predict", "run", "--input", "wide.csv"], "input file 'wide.csv', line 1: 3 values, the model expects 2 per row"),
    (["predict", "run", "--input", "words.npy"], "input file 'words.npy' must hold numbers, got an array of dtype <U1"),
    (["evaluate", "missing-run"], "run folder 'missing-run' does not exist"),
]


@pytest.fixture(scope="module")
def cli_results(workdir):
    """Every case's (status, stdout, stderr), run as real processes two at a time."""
    with ThreadPoolExecutor(2) as pool:
        return dict(zip(range(len(CLI_CASES)), pool.map(lambda case: cli(case[0], workdir), CLI_CASES)))


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(CLI_CASES)), ids=[" ".join(a) for a, _ in CLI_CASES])
def test_the_command_line_refuses_bad_input_on_one_line(cli_results, workdir, i):
    args, message = CLI_CASES[i]
    code, out, err = cli_results[i]
    assert code == 2, (args, out, err)
    assert err == f"error: {message}\n" or (err.startswith("error: ") and err.count("\n") == 1 and message in err), err
    assert "Traceback" not in out + err
    assert not (workdir / "runs").exists()  # refused before anything was trained or written
    assert not (workdir / "broken" / "config.json").exists()


@pytest.mark.slow
def test_a_divergence_on_the_command_line_is_one_line_with_the_step_and_a_hint(tmp_path):
    code, out, err = cli(["train", "-d", "sine", "--layers", "32,32", "--activation", "tanh", "--optimizer", "sgd", "--lr", "0.34",
                          "--epochs", "8", "--checkpoint-every", "10", "--out", "r", "--no-plots"], tmp_path)
    assert code == 2 and "Traceback" not in out + err
    assert err.count("\n") == 1
    assert err.startswith("error: the loss reached 4.13e+06, more than 1e+06 times the first step's 0.423 at step 30 (epoch 2, batch 6)")
    assert "try a smaller one" in err and "the last good checkpoint (step 20) are in r" in err
    assert "diagnosis: the loss rose to 4.13e+06 at step 30" in out  # the monitor's reading of the steps before it
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["epochs_run"] == 1
