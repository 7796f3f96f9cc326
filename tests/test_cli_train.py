"""The command line: ``chainrule train``, ``evaluate`` and ``predict``, run as a user runs them."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import chainrule as cr
from chainrule.cli import main
from chainrule.data import load_digits

ENV = {**os.environ, "COLUMNS": "120"}  # a wide terminal for rich's tables


def chainrule(*args, cwd=None):
    """``python -m chainrule ARGS`` in a subprocess: (exit status, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "chainrule", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=300)
    return p.returncode, p.stdout, p.stderr


def in_process(monkeypatch, capsys, *args):
    """``chainrule ARGS`` through cli.main() in this process (same error handling, no start-up cost)."""
    monkeypatch.setattr(sys, "argv", ["chainrule", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A small digits run made by the command line, and what it printed as JSON."""
    out = tmp_path_factory.mktemp("cli") / "run"
    code, stdout, stderr = chainrule("train", "--layers", "32", "--epochs", "3", "--out", out, "--json", "--no-plots")
    assert code == 0, stderr
    return out, json.loads(stdout)


def test_train_prints_a_closing_table_and_writes_the_run(tmp_path):
    code, out, err = chainrule("train", "-d", "circles", "--layers", "8,8", "--epochs", "2", "--out", tmp_path / "r", cwd=tmp_path)
    assert code == 0, err
    assert "train" in out and "test" in out and "accuracy" in out and "epochs" in out and "time" in out
    assert "run folder:" in out and "Traceback" not in out + err
    files = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"model.safetensors", "config.json", "metrics.json", "loss.png", "accuracy.png", "confusion_matrix.png"} <= files
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["dataset"] == "circles" and config["layers"] == [8, 8] and config["epochs"] == 2


def test_train_json_and_files_agree(digits_run):
    out, printed = digits_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert printed["test"] == metrics["final"]["test"] and printed["out"] == str(out)
    assert len(metrics["history"]) == 3
    assert printed["config"] == json.loads((out / "config.json").read_text())


def test_repeating_from_config_json_gives_identical_metrics(digits_run, tmp_path):
    out, printed = digits_run
    code, stdout, stderr = chainrule("train", "--config", out / "config.json", "--out", tmp_path / "again", "--json", "--no-plots")
    assert code == 0, stderr
    again = json.loads(stdout)
    assert again["config"] == printed["config"]
    assert again["train"] == printed["train"] and again["test"] == printed["test"]
    first = json.loads((out / "metrics.json").read_text())["history"]
    second = json.loads((tmp_path / "again" / "metrics.json").read_text())["history"]
    assert first == second


def test_options_override_a_config_file(monkeypatch, capsys, digits_run, tmp_path):
    out, _ = digits_run
    code, stdout, stderr = in_process(monkeypatch, capsys, "train", "--config", out, "--epochs", "1", "--optimizer", "sgd", "--out", tmp_path / "r", "--quiet", "--no-plots")
    assert code == 0, stderr
    assert stdout.strip() == str(tmp_path / "r")
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["epochs"] == 1 and config["layers"] == [32]
    assert config["optimizer"] == "sgd" and config["lr"] == 0.05  # the lr of the new optimizer, not adam's


def test_evaluate_repeats_the_test_metrics(monkeypatch, capsys, digits_run):
    out, printed = digits_run
    code, stdout, stderr = chainrule("evaluate", out, "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["test"]["accuracy"] == pytest.approx(printed["test"]["accuracy"])
    m = np.array(result["confusion_matrix"])
    assert m.shape == (10, 10) and m.sum() == 450
    code, stdout, _ = in_process(monkeypatch, capsys, "evaluate", out)
    assert code == 0 and "confusion matrix" in stdout and f"{printed['test']['accuracy']:.2%}" in stdout


def test_predict_reads_npy_and_csv(monkeypatch, capsys, digits_run, tmp_path):
    out, _ = digits_run
    X, _ = load_digits()
    logits = cr.predict(cr.load(out / "model.safetensors"), X[:20])
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    np.save(tmp_path / "rows.npy", X[:20])
    np.savetxt(tmp_path / "rows.csv", X[:20], delimiter=",")
    code, stdout, stderr = chainrule("predict", out, "--input", tmp_path / "rows.npy")
    assert code == 0, stderr
    header, *lines = stdout.strip().splitlines()
    assert header.split("\t") == ["row", "class", "probability"]  # the columns are named
    assert len(lines) == 20
    assert [int(line.split("\t")[0]) for line in lines] == list(range(20))
    predicted = [int(line.split("\t")[1]) for line in lines]
    assert predicted == logits.argmax(axis=1).tolist()
    np.testing.assert_allclose([float(line.split("\t")[2]) for line in lines], probs.max(axis=1), atol=1e-4)
    code, stdout, stderr = in_process(monkeypatch, capsys, "predict", out, "-i", tmp_path / "rows.csv", "--json")
    assert code == 0, stderr
    rows = json.loads(stdout)["predictions"]
    assert [int(r["class"]) for r in rows] == predicted
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-4 for r in rows)


def test_header_names_every_setting_that_changes_the_loss():
    from chainrule.cli.train import header
    from chainrule.runs import TrainConfig

    line = header(TrainConfig(weight_decay=1e-4).resolved(), [64, 32, 10])
    assert "label smoothing 0.1" in line and "weight decay 0.0001" in line
    # the smoothed target of 10 classes has entropy 0.500: a loss of 0.50 at 100% accuracy is explained
    assert "cannot fall below 0.500" in line
    plain = header(TrainConfig(label_smoothing=0.0).resolved(), [64, 32, 10])
    assert "label smoothing 0)" in plain and "cannot fall below" not in plain and "weight decay 0" in plain


def test_python_dash_m_lists_the_commands():
    code, out, _ = chainrule("--help")
    assert code == 0
    for command in ("train", "evaluate", "predict"):
        assert command in out


def test_an_existing_run_is_not_overwritten_without_asking(digits_run):
    out, _ = digits_run
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, stdout, stderr = chainrule("train", "--epochs", "1", "--out", out)
    assert code == 2 and "already exists" in stderr and "--overwrite" in stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--dataset", "mnist"], "unknown dataset 'mnist'; expected one of digits, digits-binary, objects, spirals"),
        (["train", "--activation", "swish"], "unknown activation 'swish'; expected one of sigmoid, tanh, relu, leaky_relu"),
        (["train", "--loss", "hinge"], "unknown loss 'hinge'; expected one of cross_entropy, mse, bce"),
        (["train", "--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'; expected one of sgd, adam"),
        (["train", "--init", "zeros"], "unknown init 'zeros'"),
        (["train", "--layers", "128,,64"], "layers must be positive integer widths"),
        (["train", "--layers", "128,abc"], "layers must be positive integer widths"),
        (["train", "--layers", "64x0"], "or WIDTHxCOUNT such as 64x50; got '64x0'"),
        (["train", "--norm", "group"], "unknown norm 'group'; expected none, batch, layer"),
        (["train", "--dropout", "1"], "dropout must be a probability in [0, 1), got 1.0"),
        (["train", "--epochs", "abc"], "Invalid value for '--epochs'"),
        (["train", "--lr", "-1"], "lr must be a finite number > 0"),
        (["train", "-d", "objects", "--loss", "cross_entropy"], "does not fit the multilabel dataset"),
        (["train", "--config", "nowhere/config.json"], "config file 'nowhere/config.json' does not exist"),
        (["train", "--no-such-option"], "No such option"),
        (["evaluate", "no-such-run"], "run folder 'no-such-run' does not exist"),
        (["predict", "no-such-run", "--input", "x.npy"], "run folder 'no-such-run' does not exist"),
    ],
)
def test_bad_input_gets_one_line_and_status_2(monkeypatch, capsys, tmp_path, args, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = in_process(monkeypatch, capsys, *args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert message in err
    assert "Traceback" not in out + err
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written


def test_predict_refuses_bad_input_files(monkeypatch, capsys, digits_run, tmp_path):
    out, _ = digits_run
    X, _ = load_digits()
    np.save(tmp_path / "narrow.npy", X[:3, :63])
    (tmp_path / "words.csv").write_text(",".join(["0.5"] * 64) + "\n" + ",".join(["0.5"] * 63 + ["oops"]) + "\n")
    (tmp_path / "short.csv").write_text(",".join(["0.5"] * 10) + "\n")
    (tmp_path / "rows.txt").write_text("1 2 3\n")
    (tmp_path / "fake.npy").write_text("not an array")
    cases = [
        ("narrow.npy", "shape (3, 63); the model expects rows of 64 values"),
        ("words.csv", "line 2, column 64: 'oops' is not a number"),
        ("short.csv", "line 1: 10 values, the model expects 64 per row"),
        ("rows.txt", "must be a .npy or .csv file"),
        ("fake.npy", "is not a readable .npy array"),
        ("missing.npy", "does not exist"),
        ("gap.csv", "line 2 is blank; every line must be a row of 64 numbers"),
        ("huge.csv", "row 0, column 1: 1e+308 is beyond the float32 range"),
        (".", "is a folder, not a file"),
        ("/dev/null", "'/dev/null' is not a regular file (a device or a pipe)"),
    ]
    (tmp_path / "gap.csv").write_text(",".join(["0.5"] * 64) + "\n\n" + ",".join(["0.5"] * 64) + "\n")
    (tmp_path / "huge.csv").write_text(",".join(["1e308"] + ["0.5"] * 63) + "\n")
    for name, message in cases:
        code, stdout, err = in_process(monkeypatch, capsys, "predict", out, "--input", name if name.startswith("/") else tmp_path / name)
        assert code == 2, name
        assert len(err.strip().splitlines()) == 1 and message in err, (name, err)
        assert stdout == ""


def test_one_bad_input_in_a_real_process(tmp_path):
    code, out, err = chainrule("train", "--layers", "64,x", cwd=tmp_path)
    assert code == 2 and out == ""
    assert err.strip() == "error: layers must be positive integer widths separated by commas, such as 128,128, or WIDTHxCOUNT such as 64x50; got '64,x'"


@pytest.mark.slow
def test_default_train_reaches_the_promised_accuracy(tmp_path):
    # Measured: 98.67% test accuracy (444 of 450), in 1.3-3.3 s of training on a shared 2-core
    # machine; over seeds 0-9 the same settings give 98.22% to 99.11% (mean 98.58%).
    # The issue asks for >= 97.5%; 98.0% asserts it with a margin of three images below what we measured.
    code, out, err = chainrule("train", "--json", cwd=tmp_path)
    assert code == 0, err
    result = json.loads(out)
    assert result["config"]["layers"] == [256, 256, 128] and result["config"]["epochs"] == 30
    assert result["test"]["accuracy"] >= 0.98
    from test_readme import DEFAULT_ACCURACY, readme_number

    assert abs(readme_number(DEFAULT_ACCURACY) - 100 * result["test"]["accuracy"]) < 0.15  # the README's "about 98.7%"
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("digits-")
    assert (runs[0] / "model.safetensors").is_file()


@pytest.mark.slow
def test_fifty_residual_layer_normalized_layers_train_on_the_digits(tmp_path):
    # Measured: 95.56% test accuracy after 10 epochs (3.5 s of training on a shared 2-core machine;
    # 97.33% after 30). The same 50 layers without skip connections or normalization: see the lab's
    # going-deeper experiment. 94% asserts it with a margin of seven images.
    code, out, err = chainrule(
        "train", "--layers", "64x50", "--residual", "--norm", "layer", "--epochs", "10", "--monitor-every", "0", "--json", cwd=tmp_path
    )
    assert code == 0, err
    result = json.loads(out)
    cfg = result["config"]
    assert cfg["layers"] == [64] * 50 and cfg["residual"] is True and cfg["norm"] == "layer" and cfg["dropout"] == 0.0
    assert result["test"]["accuracy"] >= 0.94


# ---- gradient-flow diagnostics, shown by default -------------------------------------------------

DEEP = ",".join(["32"] * 10)  # ten hidden layers


@pytest.mark.slow
def test_a_deep_sigmoid_run_prints_the_health_table_and_a_vanishing_gradient_warning(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("COLUMNS", "160")
    code, out, err = in_process(monkeypatch, capsys, "train", "--layers", DEEP, "--activation", "sigmoid", "--optimizer", "sgd",
                                "--epochs", "2", "--out", tmp_path / "r")
    assert code == 0, err
    assert "Layer health after epoch 2" in out
    assert "warning: vanishing gradients: layer 1's gradient norm is" in out and "try ReLU, He initialization, skip connections (residual) or fewer layers" in out
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    diagnostics = metrics["diagnostics"]
    assert diagnostics["monitor_every"] == 10  # the command line's default
    assert [r["epoch"] for r in diagnostics["epochs"]] == [1, 2]
    for record in diagnostics["epochs"]:
        assert [row["layer"] for row in record["layers"]] == list(range(1, 12))
        for row in record["layers"]:
            assert {"grad_norm", "update_ratio", "saturated_fraction", "dead_fraction"} <= set(row)
            assert row["grad_norm"] > 0 and row["update_ratio"] > 0
            assert (row["saturated_fraction"] is None) == (row["activation"] != "sigmoid")
        # measured: 8.5e-7 after epoch 1 (7.9e-7 to 1.1e-6 over seeds 0-2); the warning is below 1e-3
        assert record["grad_norm_ratio"] < 1e-5
    assert [w["kind"] for w in diagnostics["warnings"]] == ["vanishing_gradients"]
    for picture in ("gradient_norms.png", "unit_health.png", "signal_propagation.png"):
        assert (tmp_path / "r" / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_same_depth_with_relu_gets_no_vanishing_gradient_warning(monkeypatch, capsys, tmp_path):
    code, out, err = in_process(monkeypatch, capsys, "train", "--layers", DEEP, "--activation", "relu", "--optimizer", "sgd",
                                "--epochs", "1", "--out", tmp_path / "r", "--no-plots", "--json")
    assert code == 0, err
    printed = json.loads(out)
    assert not any("vanishing" in w for w in printed["warnings"])
    record = json.loads((tmp_path / "r" / "metrics.json").read_text())["diagnostics"]["epochs"][0]
    assert record["grad_norm_ratio"] > 0.1  # measured: 1.14 (1.1 to 2.1 over seeds 0-2)
    assert all(row["dead_fraction"] is not None for row in record["layers"][:-1])
    assert not list((tmp_path / "r").glob("*.png"))  # --no-plots


def test_monitoring_can_be_turned_off(monkeypatch, capsys, tmp_path):
    code, out, err = in_process(monkeypatch, capsys, "train", "-d", "xor", "--layers", "8", "--epochs", "2", "--monitor-every", "0",
                                "--out", tmp_path / "r", "--no-plots")
    assert code == 0, err
    assert "Layer health" not in out and "run folder:" in out
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert "diagnostics" not in metrics and metrics["status"] == "finished"
    assert json.loads((tmp_path / "r" / "config.json").read_text())["monitor_every"] == 0


@pytest.mark.slow  # about 3 s, most of it importing tensorboardX and protobuf
def test_tensorboard_gets_the_diagnostics(monkeypatch, capsys, tmp_path):
    pytest.importorskip("tensorboardX")
    code, out, err = in_process(monkeypatch, capsys, "train", "-d", "xor", "--layers", "8,8", "--epochs", "2", "--monitor-every", "1",
                                "--out", tmp_path / "r", "--no-plots", "--tensorboard", tmp_path / "tb")
    assert code == 0, err
    assert f"tensorboard --logdir {tmp_path / 'tb'}" in out
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1
    raw = events[0].read_bytes()
    for tag in (b"diagnostics/grad_norm/layer1", b"diagnostics/dead_fraction/layer2", b"histograms/layer1/weight", b"training/loss"):
        assert tag in raw, tag


def test_train_on_cuda_without_cupy_says_so_in_one_line_before_any_work(monkeypatch, capsys, tmp_path):
    from chainrule import backend
    from chainrule.errors import ChainruleError

    def missing():
        raise ChainruleError("device 'cuda' needs CuPy and an NVIDIA GPU; CuPy is not installed (pip install cupy-cuda12x)")

    monkeypatch.setattr(backend, "cupy", missing)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "gpu.json"
    config.write_text(json.dumps({"device": "cuda", "layers": [8], "epochs": 1}))
    for args in (["train", "--device", "cuda"], ["train", "--config", config], ["train", "--device", "gpu", "--out", tmp_path / "r"]):
        code, out, err = in_process(monkeypatch, capsys, *args)
        assert code == 2 and out == "", args
        assert err.strip() == "error: device 'cuda' needs CuPy and an NVIDIA GPU; CuPy is not installed (pip install cupy-cuda12x)", args
    assert not (tmp_path / "runs").exists() and not (tmp_path / "r").exists()  # nothing trained, nothing written
    code, out, err = in_process(monkeypatch, capsys, "train", "--device", "tpu")
    assert code == 2 and "unknown device 'tpu'; expected 'cpu' or 'cuda'" in err


def test_train_device_cpu_is_written_to_the_config(monkeypatch, capsys, tmp_path):
    code, out, err = in_process(monkeypatch, capsys, "train", "-d", "xor", "--layers", "4", "--epochs", "1", "--device", "cpu",
                                "--out", tmp_path / "r", "--json", "--no-plots")
    assert code == 0, err
    assert json.loads(out)["config"]["device"] == "cpu"
    assert json.loads((tmp_path / "r" / "config.json").read_text())["device"] == "cpu"


@pytest.mark.parametrize("activation", ["gelu", "silu"])
def test_train_takes_the_activations_beyond_the_lesson(monkeypatch, capsys, tmp_path, activation):
    code, out, err = in_process(monkeypatch, capsys, "train", "-d", "circles", "--layers", "8,8", "--activation", activation,
                                "--epochs", "2", "--out", tmp_path / "r", "--no-plots")
    assert code == 0, err
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["activation"] == activation and config["init"] == "he_normal"
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert activation in metrics["diagnostics"]["health_rules"]
    assert all(row["dead_fraction"] is not None for row in metrics["diagnostics"]["epochs"][-1]["layers"][:-1])


def test_blank_lines_may_end_a_csv_file(monkeypatch, capsys, digits_run, tmp_path):
    out, _ = digits_run
    (tmp_path / "end.csv").write_text(",".join(["0.5"] * 64) + "\n\n  \n")
    code, stdout, err = in_process(monkeypatch, capsys, "predict", out, "--input", tmp_path / "end.csv")
    assert code == 0 and len(stdout.splitlines()) == 2, err  # the header line and one row


def test_predict_warns_on_one_line_about_rows_outside_the_training_range(monkeypatch, capsys, digits_run, tmp_path):
    out, _ = digits_run
    X, _ = load_digits()  # pixels in [0, 1], as the run trained on
    assert json.loads((out / "metrics.json").read_text())["input_range"] == [0.0, 1.0]
    raw = X[:4].copy()
    raw[1] *= 16  # the 0-16 pixels of scikit-learn's raw digits
    raw[3, 5] = -1e30
    np.save(tmp_path / "raw.npy", raw)
    code, stdout, err = in_process(monkeypatch, capsys, "predict", out, "--input", tmp_path / "raw.npy")
    assert code == 0 and len(stdout.splitlines()) == 5  # a header line, then the rows
    assert err == "warning: rows 1, 3 (of 4) hold values outside [0, 1], the range of the inputs the model was trained on: its predictions there are guesses\n"
    np.save(tmp_path / "fine.npy", X[:4])
    code, stdout, err = in_process(monkeypatch, capsys, "predict", out, "--input", tmp_path / "fine.npy")
    assert code == 0 and err == ""


def test_no_python_warning_reaches_the_terminal(tmp_path):
    code, out, err = chainrule("train", "-d", "xor", "--layers", "4", "--epochs", "0", "--out", tmp_path / "r", cwd=tmp_path)
    assert code == 0 and err == "", err  # no matplotlib legend warning for a run of no epochs
    (tmp_path / "big.csv").write_text("1e308,0.5\n")
    code, out, err = chainrule("predict", tmp_path / "r", "--input", tmp_path / "big.csv")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Warning" not in err, err


def test_an_adam_run_at_lr_1e6_diverges_and_keeps_no_model(tmp_path):
    code, out, err = chainrule("train", "--lr", "1e6", "--layers", "32", "--epochs", "3", "--out", tmp_path / "r", "--quiet")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: the loss reached") and "more than 1e+06 times the first step's" in err and "learning rate" in err
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["status"] == "diverged"
    assert not (tmp_path / "r" / "model.safetensors").exists()


@pytest.mark.parametrize("layers", ["100000000,100000000", "2000000,2000000"])
def test_a_network_too_large_for_memory_is_refused_on_one_line(monkeypatch, capsys, tmp_path, layers):
    monkeypatch.chdir(tmp_path)
    code, out, err = in_process(monkeypatch, capsys, "train", "--layers", layers)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: this run needs about "), err
    assert "parameters" in err and "of memory is available" in err
    assert not (tmp_path / "runs").exists()
    (tmp_path / "huge.json").write_text('{"layers": [1e9]}')
    code, out, err = in_process(monkeypatch, capsys, "train", "--config", tmp_path / "huge.json")
    assert code == 2 and err.startswith("error: this run needs about ") and err.count("\n") == 1, err


def test_a_hostile_model_file_in_a_run_folder_is_one_line_and_status_2(monkeypatch, capsys, digits_run, tmp_path):
    import shutil

    from chainrule.io import read_safetensors, write_safetensors

    out, _ = digits_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    arrays, meta = read_safetensors(run / "model.safetensors")
    write_safetensors(run / "model.safetensors", arrays, {**meta, "architecture": "[" * 30_000 + "]" * 30_000})
    np.save(tmp_path / "rows.npy", load_digits()[0][:2])
    for args in (["evaluate", run], ["predict", run, "--input", tmp_path / "rows.npy"]):
        code, stdout, err = in_process(monkeypatch, capsys, *args)
        assert code == 2 and err.count("\n") == 1 and "architecture is not valid JSON: nested too deeply" in err, err
