"""chainrule.runs: TrainConfig, run() and the run folder it writes."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

import chainrule as cr
from chainrule.errors import ChainruleError
from chainrule import nn
from chainrule.runs import TrainConfig, build_model, evaluate_run, load_run, parse_layers, run

SMALL = dict(layers=(32,), epochs=2)
PNG = b"\x89PNG\r\n\x1a\n"


# ---- the config -------------------------------------------------------------------------


def test_defaults_are_the_deep_digits_mlp_and_resolve_from_the_task():
    cfg = TrainConfig()
    assert cfg.dataset == "digits" and len(cfg.layers) >= 3 and cfg.activation == "relu"
    assert cfg.loss is None and cfg.lr is None
    r = cfg.resolved()
    assert (r.loss, r.lr, r.label_smoothing) == ("cross_entropy", 1e-3, 0.1)
    assert TrainConfig(dataset="objects").resolved().loss == "bce"
    sine = TrainConfig(dataset="sine", optimizer="sgd").resolved()
    assert (sine.loss, sine.label_smoothing, sine.lr) == ("mse", 0.0, 0.05)


def test_to_dict_is_json_and_round_trips():
    cfg = TrainConfig(dataset="spirals", layers=[16, 8], activation="Leaky-ReLU", optimizer="SGD", lr=0.2, seed=3)
    assert cfg.activation == "leaky_relu" and cfg.optimizer == "sgd" and cfg.layers == (16, 8)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert set(d) == set(TrainConfig.fields())
    assert TrainConfig.from_dict(d) == cfg.resolved()


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"dataset": "mnist"}, "unknown dataset 'mnist'; expected one of digits, digits-binary"),
        ({"activation": "swish"}, "unknown activation 'swish'; expected one of sigmoid, tanh, relu"),
        ({"loss": "hinge"}, "unknown loss 'hinge'; expected one of cross_entropy, mse, bce"),
        ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'; expected one of sgd, adam"),
        ({"init": "orthogonal"}, "unknown init 'orthogonal'; expected one of xavier_uniform"),
        ({"dataset": "objects", "loss": "cross_entropy"}, "does not fit the multilabel dataset 'objects'; expected one of bce"),
        ({"dataset": "sine", "loss": "bce"}, "expected one of mse"),
        ({"loss": "mse", "label_smoothing": 0.1}, "label_smoothing applies to cross_entropy only"),
        ({"epochs": -1}, "epochs must be an integer >= 0"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"batch_size": "abc"}, "batch_size must be an integer"),
        ({"lr": 0}, "lr must be a finite number > 0"),
        ({"lr": "fast"}, "lr must be a finite number > 0, got 'fast'"),
        ({"momentum": 1.5}, "momentum must be a finite number in"),
        ({"layers": "128,x"}, "layers must be positive integer widths"),
        ({"layers": [64, 0]}, "layers must be positive integer widths"),
        ({"device": "tpu"}, "unknown device"),
    ],
)
def test_bad_settings_say_what_is_valid(settings, message):
    with pytest.raises(ChainruleError, match=message.replace("(", r"\(")):
        TrainConfig(**settings)


def test_from_dict_refuses_unknown_keys_by_name():
    with pytest.raises(ChainruleError, match="unknown setting\\(s\\) 'epoch'; expected any of dataset, layers"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ChainruleError, match="JSON object"):
        TrainConfig.from_dict([1, 2])


def test_parse_layers():
    assert parse_layers("256, 128,64") == (256, 128, 64)
    assert parse_layers("") == () and parse_layers([]) == ()
    assert parse_layers([8.0, 4]) == (8, 4)
    for bad in ("128,,64", "-3", "1.5", "a", [True], 12):
        with pytest.raises(ChainruleError, match="layers"):
            parse_layers(bad)


# ---- run() ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """One small digits run with its folder, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("small")
    return run(TrainConfig(**SMALL), out=out)


def test_run_is_deterministic_and_seeded(small):
    again = run(TrainConfig(**SMALL))
    other = run(TrainConfig(seed=1, **SMALL))
    assert again.history.epochs == small.history.epochs and again.metrics == small.metrics
    for (name, p), (_, q) in zip(small.model.named_parameters(), again.model.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    assert other.metrics != small.metrics
    assert small.config.init == "he_normal"  # filled in from the model
    assert again.out is None and again.files == []


def test_run_reports_final_metrics_per_split(small):
    assert set(small.metrics) == {"train", "test"}
    assert set(small.metrics["test"]) == {"loss", "accuracy"}
    assert 0.5 < small.metrics["test"]["accuracy"] <= 1.0
    assert len(small.history.epochs) == 2 and "val_accuracy" in small.history.epochs[-1]
    assert small.confusion.shape == (10, 10) and small.confusion.sum() == 450
    assert np.trace(small.confusion) / 450 == pytest.approx(small.metrics["test"]["accuracy"])
    assert small.seconds > 0


def test_run_writes_a_complete_folder(small):
    out = small.out
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "metrics.json", "loss.png", "accuracy.png", "confusion_matrix.png"} <= names
    assert not any(n.endswith(".tmp") for n in names)
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == PNG
    assert TrainConfig.from_json(out / "config.json") == small.config
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["final"] == small.metrics
    assert metrics["history"] == small.history.epochs and metrics["epochs_run"] == 2
    assert len(metrics["confusion_matrix"]) == 10
    model = cr.load(out / "model.safetensors")
    ds = small.dataset
    np.testing.assert_array_equal(cr.predict(model, ds.X_test), cr.predict(small.model, ds.X_test))


def test_repeating_a_run_from_its_config_gives_identical_metrics(tmp_path):
    first = run(TrainConfig(dataset="spirals", layers=(16, 16), epochs=3, optimizer="sgd"), out=tmp_path / "a", plots=False)
    again = run(TrainConfig.from_json(tmp_path / "a"), out=tmp_path / "b", plots=False)
    assert again.config == first.config
    assert again.metrics == first.metrics and again.history.epochs == first.history.epochs
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert a["history"] == b["history"] and a["final"] == b["final"]


@pytest.mark.parametrize(
    "dataset, loss, metric, plots",
    [
        ("digits", "mse", "accuracy", {"confusion_matrix.png"}),
        ("digits-binary", "bce", "accuracy", {"confusion_matrix.png"}),
        ("objects", None, "micro_f1", {"accuracy.png", "micro_f1.png"}),
        ("sine", None, "mse", {"fit.png"}),
        ("xor", None, "accuracy", {"decision_boundary.png"}),
    ],
)
def test_every_task_trains_and_draws_its_pictures(tmp_path, dataset, loss, metric, plots):
    result = run(TrainConfig(dataset=dataset, loss=loss, layers=(16,), epochs=1), out=tmp_path)
    assert metric in result.metrics["test"]
    assert plots <= {p.name for p in result.files}


def test_rewriting_a_folder_leaves_no_stale_picture(tmp_path):
    run(TrainConfig(dataset="circles", layers=(8,), epochs=1), out=tmp_path)
    assert (tmp_path / "confusion_matrix.png").exists()
    run(TrainConfig(dataset="abs", layers=(8,), epochs=1), out=tmp_path)
    assert not (tmp_path / "confusion_matrix.png").exists() and (tmp_path / "fit.png").exists()
    run(TrainConfig(dataset="abs", layers=(8,), epochs=1), out=tmp_path, plots=False)
    assert not list(tmp_path.glob("*.png"))
    assert TrainConfig.from_json(tmp_path).dataset == "abs"


def test_callbacks_see_every_epoch_and_run_prints_nothing(capsys):
    seen = []

    class Recorder:
        def on_epoch_end(self, state):
            seen.append((state.epoch, state.record["loss"]))

    run(TrainConfig(dataset="xor", layers=(4,), epochs=2), callbacks=[Recorder()], progress=True)
    assert [e for e, _ in seen] == [0, 1]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_run_accepts_a_dict_and_refuses_a_file_as_folder(tmp_path):
    assert run({"dataset": "step", "layers": [4], "epochs": 1}).config.dataset == "step"
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    with pytest.raises(ChainruleError, match="is a file, not a folder"):
        run(TrainConfig(dataset="xor", epochs=1), out=blocker)
    assert blocker.read_text() == "keep me"


# ---- reading runs back ------------------------------------------------------------------


def test_load_and_evaluate_a_saved_run(small):
    saved = load_run(small.out)
    assert saved.config == small.config and saved.metrics["final"] == small.metrics
    ev = evaluate_run(small.out)
    assert ev["test"]["accuracy"] == pytest.approx(small.metrics["test"]["accuracy"])
    np.testing.assert_array_equal(ev["confusion_matrix"], small.confusion)


def test_load_run_errors_name_the_problem(tmp_path):
    with pytest.raises(ChainruleError, match="does not exist"):
        load_run(tmp_path / "missing")
    with pytest.raises(ChainruleError, match="has no config.json"):
        load_run(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ChainruleError, match="not valid JSON"):
        load_run(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(TrainConfig().to_dict()))
    with pytest.raises(cr.ModelFileError, match="does not exist"):
        load_run(tmp_path)


def test_importing_runs_and_data_loads_no_tool_library():
    code = (
        "import sys, chainrule.runs, chainrule.data; "
        "print([m for m in ('matplotlib', 'typer', 'rich', 'sklearn', 'torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_config_is_frozen_but_replaceable():
    cfg = TrainConfig(**SMALL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3
    assert dataclasses.replace(cfg, dataset="sine").resolved().loss == "mse"


# ---- diagnostics and checkpoints in the run folder ----------------------------------------------


def test_a_monitored_run_writes_its_diagnostics_and_pictures(tmp_path):
    result = run(TrainConfig(dataset="circles", layers=(8, 8), activation="tanh", epochs=2, monitor_every=3), out=tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "finished"
    diagnostics = metrics["diagnostics"]
    assert diagnostics == json.loads(json.dumps(result.diagnostics))
    assert diagnostics["monitor_every"] == 3 and diagnostics["initial"]["layers"]
    assert [r["epoch"] for r in diagnostics["epochs"]] == [1, 2]
    rows = diagnostics["epochs"][-1]["layers"]
    assert [r["activation"] for r in rows] == ["tanh", "tanh", "none"]
    assert all(r["grad_norm"] > 0 and r["update_ratio"] > 0 and 0 <= r["saturated_fraction"] <= 1 for r in rows[:2])
    nb = result.history.steps // 2  # steps per epoch
    monitored = [sum(1 for t in range(e * nb + 1, (e + 1) * nb + 1) if (t - 1) % 3 == 0) for e in (0, 1)]  # steps 1, 4, 7, ...
    assert [r["steps_monitored"] for r in diagnostics["epochs"]] == monitored
    for picture in ("gradient_norms.png", "unit_health.png", "signal_propagation.png"):
        assert (tmp_path / picture).read_bytes()[:8] == PNG
    # the same run without the monitor: same weights, and no stale diagnostics pictures
    plain = run(TrainConfig(dataset="circles", layers=(8, 8), activation="tanh", epochs=2), out=tmp_path)
    for (name, p), (_, q) in zip(plain.model.named_parameters(), result.model.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    assert not (tmp_path / "gradient_norms.png").exists() and plain.diagnostics is None
    assert "diagnostics" not in json.loads((tmp_path / "metrics.json").read_text())


def test_a_new_run_in_a_folder_drops_the_old_runs_checkpoint(tmp_path):
    from chainrule.checkpoint import FILENAME

    class Crash(Exception):
        pass

    class CrashAt:
        def on_step_end(self, state):
            if state.step == 12:
                raise Crash()

    with pytest.raises(Crash):
        run(TrainConfig(dataset="xor", layers=(4,), epochs=3, checkpoint_every=5), out=tmp_path, callbacks=[CrashAt()])
    assert (tmp_path / FILENAME).exists() and not (tmp_path / "model.safetensors").exists()
    with pytest.raises(Crash):
        run(TrainConfig(dataset="xor", layers=(6,), epochs=3), out=tmp_path, callbacks=[CrashAt()])
    assert not (tmp_path / FILENAME).exists()  # not the first run's, taken for the second's
    assert TrainConfig.from_json(tmp_path).layers == (6,)  # config.json is written as training starts


def test_resume_may_change_how_the_run_is_watched_only(tmp_path):
    from chainrule.runs import resume

    class Stop(Exception):
        pass

    class StopAt:
        def on_step_end(self, state):
            if state.step == 20:
                raise Stop()

    cfg = TrainConfig(dataset="xor", layers=(4,), epochs=3, checkpoint_every=8, monitor_every=0)
    with pytest.raises(Stop):
        run(cfg, out=tmp_path / "a", callbacks=[StopAt()], plots=False)
    result = resume(tmp_path / "a", monitor_every=2, plots=False)
    assert result.config.monitor_every == 2 and result.config.layers == (4,)
    ck_epoch = 16 // (result.history.steps // 3)  # the checkpoint at step 16 is in this (0-based) epoch
    assert [r["epoch"] for r in result.diagnostics["epochs"]] == list(range(ck_epoch + 1, 4))  # watched from where it resumed
    whole = run(cfg, plots=False)
    for (name, p), (_, q) in zip(whole.model.named_parameters(), result.model.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


# ---- the device -------------------------------------------------------------------------


def _no_cupy(monkeypatch):
    """backend.cupy() failing as on a machine without CuPy, whatever this machine has."""
    from chainrule import backend

    def missing():
        raise ChainruleError("device 'cuda' needs CuPy and an NVIDIA GPU; CuPy is not installed (pip install cupy-cuda12x)")

    monkeypatch.setattr(backend, "cupy", missing)


def test_device_is_a_setting_named_as_pytorch_names_it():
    assert TrainConfig().device == "cpu"
    assert TrainConfig(device="GPU").device == "cuda" and TrainConfig(device="cuda:0").to_dict()["device"] == "cuda"


def test_cuda_without_cupy_fails_before_any_work(monkeypatch, tmp_path):
    _no_cupy(monkeypatch)
    with pytest.raises(ChainruleError, match="^device 'cuda' needs CuPy and an NVIDIA GPU"):
        run(TrainConfig(device="cuda", **SMALL), out=tmp_path / "r")
    assert not (tmp_path / "r").exists()  # nothing written, not even the folder


def test_a_checkpoint_resumes_on_another_device_or_says_what_is_missing(monkeypatch, tmp_path):
    from chainrule.runs import resume

    class Stop(Exception):
        pass

    class StopAt:
        def on_step_end(self, state):
            if state.step == 10:
                raise Stop()

    cfg = TrainConfig(dataset="xor", layers=(4,), epochs=2, optimizer="sgd", checkpoint_every=8, monitor_every=0)
    with pytest.raises(Stop):
        run(cfg, out=tmp_path / "a", callbacks=[StopAt()], plots=False)
    with monkeypatch.context() as m:
        _no_cupy(m)
        with pytest.raises(ChainruleError, match="needs CuPy"):
            resume(tmp_path / "a", device="cuda", plots=False)
    assert (tmp_path / "a" / "checkpoint.safetensors").exists()  # still there to resume from
    result = resume(tmp_path / "a", device="cpu", plots=False)
    assert result.config.device == "cpu" and result.resumed_from == 8


# ---- depth: the WIDTHxCOUNT shorthand and the residual, norm and dropout settings ----


@pytest.mark.parametrize(
    "text, widths",
    [("64x50", (64,) * 50), ("128,64x3", (128, 64, 64, 64)), ("32X2, 8", (32, 32, 8)), (["64x2", 16], (64, 64, 16)), ("", ())],
)
def test_layers_shorthand(text, widths):
    from chainrule.runs import format_layers, parse_layers

    assert parse_layers(text) == widths
    assert parse_layers(format_layers(widths)) == widths
    assert TrainConfig(layers=text).layers == widths


def test_format_layers_writes_runs_of_one_width_short():
    from chainrule.runs import format_layers

    assert format_layers((64,) * 50) == "64x50"
    assert format_layers((256, 256, 128)) == "256x2,128"
    assert format_layers(()) == ""


@pytest.mark.parametrize("bad", ["64x", "x50", "64x0", "64x2x2", "0x5", "64y50"])
def test_bad_layer_shorthands_are_refused(bad):
    with pytest.raises(ChainruleError, match="WIDTHxCOUNT"):
        TrainConfig(layers=bad)


def test_residual_norm_and_dropout_settings_build_the_model():
    cfg = TrainConfig(layers="16x3", residual=True, norm="Batch", dropout=0.25)
    assert (cfg.residual, cfg.norm, cfg.dropout) == (True, "batch", 0.25)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg.resolved()
    model = build_model(cfg, 64, 10)
    assert (model.residual, model.norm, model.dropout) == (True, "batch", 0.25)
    assert sum(isinstance(m, nn.Residual) for m in model) == 2  # 64 -> 16 changes the width: no skip there
    assert TrainConfig(norm="none").norm is None
    for kwargs, message in [
        ({"norm": "group"}, "unknown norm 'group'"),
        ({"dropout": -0.1}, r"dropout must be a probability in \[0, 1\)"),
        ({"residual": "yes"}, "residual must be true or false"),
    ]:
        with pytest.raises(ChainruleError, match=message):
            TrainConfig(**kwargs)


def test_config_files_take_the_depth_settings(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"layers": "64x50", "residual": True, "norm": "layer", "dropout": 0.1}))
    cfg = TrainConfig.from_json(path)
    assert cfg.layers == (64,) * 50 and (cfg.residual, cfg.norm, cfg.dropout) == (True, "layer", 0.1)
    assert cfg.to_dict()["layers"] == [64] * 50  # written out in full, read back the same
