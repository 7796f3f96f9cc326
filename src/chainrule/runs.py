"""Runs: one training job from a config to a record on disk, the engine of ``chainrule train``.

A :class:`TrainConfig` names every setting of a run; :func:`run` loads the
dataset, builds the MLP, optimizer and loss, trains with :func:`chainrule.fit`
and, given a folder, writes the run record:

    model.safetensors       the trained model (``cr.load`` reads it)
    config.json             every setting; ``TrainConfig.from_json`` repeats the run exactly
    metrics.json            "status", per-epoch history, the final train and test metrics, the
                            training inputs' range ("input_range": [min, max]) and,
                            with ``monitor_every``, the gradient-flow "diagnostics" (per epoch
                            and layer: grad_norm, update_ratio, saturated_fraction, dead_fraction, ...)
    checkpoint.safetensors  while training, with ``checkpoint_every`` (see :mod:`chainrule.checkpoint`);
                            removed when the run finishes
    *.png                   loss and metric curves, confusion matrix (classes), fit (functions),
                            gradient_norms.png and unit_health.png (diagnostics)

A run that diverges (its loss becomes NaN or infinite, or a million times its
first step's) or is interrupted
(Ctrl-C, with ``interruptible=True``) leaves config.json, metrics.json with
the epochs done ("status": "diverged" or "interrupted") and its last
checkpoint; :func:`resume` continues an interrupted or killed run from its
checkpoint and ends with the same weights, bit for bit, as a run never stopped.

``run`` never prints, so the command line, the lab, sweeps and the dashboard
all share it; the same config gives the same weights, batches and metrics.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np

from . import functional as F
from .backend import cupy, normalize_device, to_numpy
from .checkpoint import FILENAME as CHECKPOINT_FILE
from .checkpoint import Checkpointer, TrainingInterrupted, format_interval, load_checkpoint, parse_interval, restore_optimizer
from .data import dataset_info, load_dataset
from .diagnostics import Monitor, write_tensorboard
from .errors import ChainruleError, DivergenceError, ModelFileError
from .io import describe, load, save, write_atomic
from .memory import check_training_memory, estimate_training_memory
from .metrics import confusion_matrix
from .nn.activations import ACTIVATIONS
from .nn.dropout import check_dropout
from .nn.init import INITIALIZERS
from .nn.mlp import MLP, check_norm
from .optim import OPTIMIZERS, SGD
from .threads import limit_threads
from .train import History, TrainState, evaluate, fit, get_loss, nonfinite_parameter, predict
from .validation import boolean, check_fields, check_file, choice, integer, number, parse_json, rule

# Losses each task can train with; the first is the default. Class labels become one-hot
# rows for mse and bce (build); multi-label rows are already targets for both.
LOSSES_FOR_TASK = {
    "multiclass": ("cross_entropy", "mse", "bce"),
    "multilabel": ("bce", "mse"),
    "regression": ("mse",),
}
LOSSES = LOSSES_FOR_TASK["multiclass"]
# Learning rate when none is given, by optimizer.
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}
# Label smoothing when none is given, with cross-entropy. On for `chainrule train`: the default
# digits run measured 98.67% test accuracy with it and 97.56% without (seed 0). F.cross_entropy
# and the estimators default to 0. `chainrule train` prints it and the loss floor it sets;
# docs/how-to/command-line.md gives the decision.
DEFAULT_LABEL_SMOOTHING = 0.1
# Rows of the training set the diagnostics Monitor measures unit health on, once per epoch.
PROBE_ROWS = 128
# Pictures of the diagnostics (chainrule.report.diagnostics_plots.write_diagnostic_plots).
DIAGNOSTIC_PLOTS = ("gradient_norms.png", "unit_health.png", "signal_propagation.png")


def parse_layers(value: Any) -> tuple:
    """Hidden layer widths from "256,256,128", "64x50" (50 layers of width 64), "" (none) or a
    sequence of ints (or of such strings): a tuple of ints. The forms mix: "128,64x3" is 128,64,64,64.

    Example:
        >>> parse_layers("128, 64")
        (128, 64)
        >>> len(parse_layers("64x50"))
        50
    """
    if isinstance(value, str):
        text = value.replace(" ", "")
        parts = text.split(",") if text else []
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise ChainruleError(f"layers must be comma-separated widths such as 128,128 or 64x50, got {value!r}")
    widths = []
    for p in parts:
        count = 1
        if isinstance(p, str) and p.lower().count("x") == 1:
            p, times = p.lower().split("x")
            count = int(times) if times.isdigit() and int(times) >= 1 else 0
        if isinstance(p, str) and p.isdigit():
            p = int(p)
        elif isinstance(p, float) and p.is_integer():
            p = int(p)
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1 or count < 1:
            raise ChainruleError(
                f"layers must be positive integer widths separated by commas, such as 128,128, or WIDTHxCOUNT such as 64x50; got {value!r}"
            )
        widths += [int(p)] * count
    return tuple(widths)


def format_layers(widths: Sequence[int]) -> str:
    """Hidden layer widths as :func:`parse_layers` reads them, runs of one width as WIDTHxCOUNT.

    Example:
        >>> format_layers((128, 64, 64, 64))
        '128,64x3'
    """
    parts: list = []
    for w in widths:
        if parts and parts[-1][0] == w:
            parts[-1][1] += 1
        else:
            parts.append([w, 1])
    return ",".join(str(w) if n == 1 else f"{w}x{n}" for w, n in parts)


def _of_value(check: Any) -> Any:
    return lambda name, value, error: check(value)


# How each setting of a TrainConfig is checked, and put in its canonical form.
SETTING_RULES = {
    "dataset": _of_value(lambda name: dataset_info(name).name),
    "layers": _of_value(parse_layers),
    "activation": rule(choice, tuple(ACTIVATIONS)),
    "init": rule(choice, INITIALIZERS),
    "bias_init": rule(number),
    "residual": rule(boolean),
    "norm": _of_value(check_norm),
    "dropout": _of_value(check_dropout),
    "loss": rule(choice, LOSSES),
    "label_smoothing": rule(number, 0.0, 0.999),
    "optimizer": rule(choice, tuple(OPTIMIZERS)),
    "lr": rule(number, 0, open_low=True),
    "momentum": rule(number, 0.0, 0.999),
    "weight_decay": rule(number, 0.0),
    "batch_size": rule(integer, 1),
    "epochs": rule(integer, 0),
    "seed": rule(integer, 0),
    "data_seed": rule(integer, 0),
    "device": _of_value(normalize_device),
    "monitor_every": rule(integer, 0),
    "checkpoint_every": _of_value(lambda every: format_interval(*parse_interval(every))),
}


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run (and of ``chainrule train``), checked when made.

    Settings left as None are filled from the others by :meth:`resolved`
    (``run`` does it, and config.json holds the filled-in values):
    ``loss`` from the dataset's task (cross_entropy, bce or mse), ``lr`` from
    the optimizer (sgd 0.05, adam 0.001), ``label_smoothing`` 0.1 with
    cross-entropy, ``init`` from the activation (He for the ReLU family,
    Xavier otherwise).

    Fields:
        dataset: a name of :data:`chainrule.data.DATASETS`.
        layers: hidden layer widths ("256,256,128", or "64x50" for 50 of width 64); input
            and output widths come from the dataset.
        activation, init, bias_init: of the hidden layers (see :class:`chainrule.nn.MLP`).
        residual, norm, dropout: a skip connection around each hidden block of equal width,
            normalization after each hidden Linear (None, "batch" or "layer"), the dropout
            probability after each hidden activation (see :class:`chainrule.nn.MLP`).
        loss: "cross_entropy", "mse" or "bce".
        label_smoothing: of cross-entropy, in [0, 1).
        optimizer: "sgd", "adam" or "adamw"; lr, momentum (SGD only), weight_decay.
        batch_size, epochs: rows per step, passes over the training set.
        seed: the weights and the batch order; data_seed: generated data and the split.
        device: "cpu" or "cuda": the model is moved there (``model.to``) and
            :func:`chainrule.fit` moves each batch; the data stay NumPy, and the
            model file and checkpoints are written from host copies. "cuda" needs
            CuPy and an NVIDIA GPU, checked before any work.
        monitor_every: watch gradient flow with :class:`chainrule.diagnostics.Monitor`,
            measuring every N-th step (0: off; ``chainrule train`` turns it on).
        checkpoint_every: with a run folder, save a checkpoint every N steps (an int,
            or a string of digits), every N epochs (``"2e"``), or after the first step
            N seconds or minutes after the last one (``"30s"``, ``"5m"``); 0: off.
            Neither setting changes the trained weights.

    Example:
        >>> cfg = TrainConfig(dataset="spirals", layers=(64, 64), epochs=50)
        >>> TrainConfig.from_dict(cfg.to_dict()) == cfg.resolved()
        True
    """

    dataset: str = "digits"
    layers: tuple = (256, 256, 128)
    activation: str = "relu"
    init: str | None = None
    bias_init: float = 0.0
    residual: bool = False
    norm: str | None = None
    dropout: float = 0.0
    loss: str | None = None
    label_smoothing: float | None = None
    optimizer: str = "adam"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 30
    seed: int = 0
    data_seed: int = 0
    device: str = "cpu"
    monitor_every: int = 0
    checkpoint_every: int | str = 0

    def __post_init__(self) -> None:
        check_fields(self, SETTING_RULES, ChainruleError)
        info = dataset_info(self.dataset)
        if self.loss is not None and self.loss not in LOSSES_FOR_TASK[info.task]:
            raise ChainruleError(
                f"loss {self.loss!r} does not fit the {info.task} dataset {info.name!r}; "
                f"expected one of {', '.join(LOSSES_FOR_TASK[info.task])}"
            )
        loss = self.loss or info.default_loss
        if self.label_smoothing and loss != "cross_entropy":
            raise ChainruleError(f"label_smoothing applies to cross_entropy only, but the loss is {loss!r}")

    @property
    def task(self) -> str:
        """The dataset's task: "multiclass", "multilabel" or "regression"."""
        return dataset_info(self.dataset).task

    def resolved(self) -> "TrainConfig":
        """This config with loss, lr and label_smoothing filled in (init is filled by :func:`run`)."""
        loss = self.loss or dataset_info(self.dataset).default_loss
        smoothing = self.label_smoothing
        if smoothing is None:
            smoothing = DEFAULT_LABEL_SMOOTHING if loss == "cross_entropy" else 0.0
        lr = self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]
        return dataclasses.replace(self, loss=loss, label_smoothing=smoothing, lr=lr)

    def to_dict(self) -> dict:
        """Every setting as JSON-ready data (resolved), so ``from_dict`` rebuilds the same run."""
        d = dataclasses.asdict(self.resolved())
        d["layers"] = list(d["layers"])
        return d

    @classmethod
    def defaults(cls) -> dict:
        """Each setting's default, by name (what the command line shows as its defaults)."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @classmethod
    def fields(cls) -> tuple:
        """The names of the settings, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, data: Any) -> "TrainConfig":
        """A config from a dict such as ``to_dict()`` gives; unknown keys are refused by name.

        Keys left out take their defaults.
        """
        if not isinstance(data, dict):
            raise ChainruleError(f"a run config must be a JSON object of settings, got {type(data).__name__}")
        unknown = [k for k in data if k not in cls.fields()]
        if unknown:
            raise ChainruleError(f"unknown setting(s) {', '.join(map(repr, unknown))}; expected any of {', '.join(cls.fields())}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        """A config from a config.json file, or from a run folder holding one."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        check_file(path, "config file", ChainruleError)
        return cls.from_dict(parse_json(path.read_bytes(), f"config file {str(path)!r}", ChainruleError))


@dataclass
class RunResult:
    """What :func:`run` returns: the config (resolved), trained model, History, and final metrics.

    ``metrics`` is ``{"train": {...}, "test": {...}}`` measured after training
    on the whole of each split; ``confusion`` is the test confusion matrix
    (counts ``[true, predicted]``) for classes, else None. ``diagnostics`` is
    the gradient-flow record (``Monitor.to_dict()``: "initial", per-epoch
    "epochs" with per-layer rows, "warnings") when ``monitor_every`` is set.
    ``seconds`` is the training time, over every session of a resumed run.
    """

    config: TrainConfig
    model: Any
    history: Any
    metrics: dict
    seconds: float
    dataset: Any
    confusion: np.ndarray | None = None
    out: Path | None = None
    files: list = field(default_factory=list)
    diagnostics: dict | None = None
    resumed_from: int | None = None


# Settings a config derives from another one: overriding the source drops the derived ones it held.
DERIVED_SETTINGS = {"dataset": ("loss", "label_smoothing"), "optimizer": ("lr",), "activation": ("init",)}


def merge_settings(settings: dict, given: dict) -> dict:
    """``settings`` (a config file's) overridden by ``given`` (the command line's options).

    A setting that another one derives (the loss from the dataset, lr from the optimizer, init
    from the activation) is dropped when ``given`` changes its source, so it is derived again.

    Example:
        >>> merge_settings({"optimizer": "sgd", "lr": 0.05}, {"optimizer": "adam"})
        {'optimizer': 'adam'}
    """
    merged = dict(settings)
    for source, derived in DERIVED_SETTINGS.items():
        if source in given and merged and str(given[source]).lower().replace("_", "-") != str(merged.get(source)).replace("_", "-"):
            for key in derived:
                merged.pop(key, None)
    merged.update(given)
    return merged


def estimate_memory(config: TrainConfig, rows: int = 0) -> Any:
    """The memory a run of ``config`` needs, from its settings alone (nothing is loaded or built):
    :func:`chainrule.memory.estimate_training_memory` of its MLP, batch and optimizer, with
    ``rows`` training rows.

    Example:
        >>> estimate_memory(TrainConfig(layers=(256, 256, 128))).total < 10 * 2**20
        True
    """
    info = dataset_info(config.dataset)
    sizes = [info.num_features, *config.layers, info.num_outputs]
    return estimate_training_memory(sizes, config.batch_size, config.optimizer, rows=rows)


@dataclass
class Built:
    """What :func:`build` makes of a config: the pieces :func:`chainrule.fit` takes.

    ``targets(y)`` turns a dataset's labels into what ``loss_fn`` trains on.
    """

    model: Any
    optimizer: Any
    loss_fn: Any
    targets: Any


def build(config: TrainConfig, num_features: int | None = None, num_outputs: int | None = None, model: Any = None) -> Built:
    """The model, optimizer, loss and targets of a resolved config: the one builder of runs.

    The command line, sweeps, the dashboard and the estimators all map their settings onto a
    :class:`TrainConfig` and build here. The MLP is ``[num_features, *layers, num_outputs]``
    (widths from the dataset unless given), seeded by ``config.seed``; ``model`` (a restored
    one) is used instead when given. It is moved to ``config.device`` before the optimizer is
    made, so the optimizer's state lives beside the parameters. With mse or bce on classes,
    ``targets`` makes one-hot rows of the labels (see :data:`LOSSES_FOR_TASK`).

    Example:
        >>> built = build(TrainConfig(dataset="xor", layers=(8,)).resolved())
        >>> built.model.sizes, type(built.optimizer).__name__
        ([2, 8, 2], 'Adam')
    """
    info = dataset_info(config.dataset)
    if model is None:
        model = build_model(config, num_features or info.num_features, num_outputs or info.num_outputs)
    if config.device != "cpu":
        model.to(config.device)
    params = model.parameters()
    if config.optimizer == "sgd":
        optimizer = SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    else:
        optimizer = OPTIMIZERS[config.optimizer](params, lr=config.lr, weight_decay=config.weight_decay)
    if config.loss == "cross_entropy" and config.label_smoothing:
        loss_fn = functools.partial(F.cross_entropy, label_smoothing=config.label_smoothing)
    else:
        loss_fn = get_loss(config.loss)
    one_hot = info.task == "multiclass" and config.loss in ("mse", "bce")
    return Built(model, optimizer, loss_fn, functools.partial(_one_hot, outputs=model.sizes[-1]) if one_hot else _same)


def build_model(config: TrainConfig, num_features: int, num_outputs: int) -> Any:
    """The MLP of a config: [num_features, *layers, num_outputs], weights seeded by ``config.seed``."""
    return MLP(
        [num_features, *config.layers, num_outputs], activation=config.activation, init=config.init,
        bias_init=config.bias_init, generator=config.seed, residual=config.residual, norm=config.norm, dropout=config.dropout,
    )


def _one_hot(y: np.ndarray, outputs: int) -> np.ndarray:
    rows = np.zeros((len(y), outputs), dtype=np.float32)
    rows[np.arange(len(y)), np.asarray(y, dtype=np.int64)] = 1.0
    return rows


def _same(y: Any) -> Any:
    return y


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ChainruleError(f"run folder {str(out)!r} is a file, not a folder")


def _check_tensorboard() -> None:
    import importlib.util

    if importlib.util.find_spec("tensorboardX") is None:
        raise ChainruleError(
            "writing TensorBoard files needs the tensorboardX package: pip install tensorboardX "
            "(or pip install 'chainrule[tensorboard]')"
        )


def run(
    config: TrainConfig | dict | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    callbacks: Sequence = (),
    quiet: bool = True,
    plots: bool = True,
    threads: int | None = 1,
    tensorboard: str | Path | None = None,
    interruptible: bool = False,
) -> RunResult:
    """Train the MLP that ``config`` describes and, given ``out``, write its run folder.

    Args:
        config: a TrainConfig, a dict of settings, or None for the defaults
            (the deep MLP on the digits).
        out: folder for the run record (created; files in it are replaced atomically,
            and those of a run it held before are removed). A run that fails before
            training writes nothing; one that diverges or is interrupted leaves
            config.json, metrics.json of the epochs done and its last checkpoint.
        progress: show fit's progress bar (on a terminal only), unless ``quiet``.
        callbacks: passed to :func:`chainrule.fit` (``on_train_begin``,
            ``on_step_end``, ``on_epoch_end``, ``on_train_end``), before the
            diagnostics Monitor and the checkpoints.
        quiet: True hides the progress bar even when ``progress`` is set; run
            itself never prints.
        plots: draw the PNGs into ``out`` (a sweep of many runs may skip them).
        threads: BLAS threads while training and measuring. One by default: the
            products of these small networks gain little from more, the numbers
            then do not depend on the machine's core count (and a resumed run
            repeats an uninterrupted one bit for bit), and threaded BLAS
            slows down many times over when other work shares the cores
            (measured: the default digits run took 60 s with two threads on a
            busy 2-core machine, 3.3 s with one). None leaves NumPy's setting.
        tensorboard: a folder to write the diagnostics and the training curves
            to in TensorBoard's format (needs tensorboardX; checked before training).
        interruptible: with ``out``, Ctrl-C (SIGINT) stops training after the
            current step, saves a checkpoint and raises
            :class:`chainrule.checkpoint.TrainingInterrupted` (a second Ctrl-C
            stops at once). Only in the main thread.

    Returns:
        RunResult with the resolved config, model, History, final metrics, seconds and diagnostics.

    Raises:
        DivergenceError: the loss became NaN or infinite, or rose above a million
            times the first step's (see :func:`chainrule.fit`); the message names the
            step and, with ``out``, what the run folder keeps.

    Example:
        >>> result = run(TrainConfig(epochs=5, checkpoint_every="1e"), out="runs/digits")
        >>> result.metrics["test"]["accuracy"]
    """
    if config is None:
        config = TrainConfig()
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    elif not isinstance(config, TrainConfig):
        raise ChainruleError(f"run() needs a TrainConfig or a dict of settings, got {type(config).__name__}")
    out = Path(out) if out is not None else None
    if out is not None:
        _check_out(out)
    return _train(config.resolved(), out, None, progress, callbacks, quiet, plots, threads, tensorboard, interruptible)


def find_checkpoint(path: str | Path) -> Any:
    """The checkpoint of a run folder, read and checked; a clear error when there is none to resume.

    Example:
        >>> find_checkpoint("runs/digits").step
    """
    path = Path(path)
    if not path.exists():
        raise ChainruleError(f"run folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise ChainruleError(f"{str(path)!r} is not a run folder (expected a folder with {CHECKPOINT_FILE})")
    file = path / CHECKPOINT_FILE
    if not file.exists():
        if (path / "model.safetensors").exists():
            raise ChainruleError(f"run {str(path)!r} has finished (model.safetensors holds its result): there is no checkpoint to resume from")
        raise ChainruleError(
            f"run folder {str(path)!r} has no {CHECKPOINT_FILE} to resume from "
            "(checkpoints are saved with --checkpoint-every, and on Ctrl-C)"
        )
    return load_checkpoint(file)


def resume(
    path: str | Path,
    progress: bool = False,
    callbacks: Sequence = (),
    quiet: bool = True,
    plots: bool = True,
    threads: int | None = 1,
    tensorboard: str | Path | None = None,
    interruptible: bool = False,
    monitor_every: int | None = None,
    checkpoint_every: int | str | None = None,
    device: str | None = None,
) -> RunResult:
    """Continue the run in folder ``path`` from its checkpoint, with the run's own settings.

    The weights, optimizer state, history and position come from
    ``path/checkpoint.safetensors``; training goes on from the next batch and
    the run folder is completed as :func:`run` would have. The final weights
    are bitwise identical to those of the same run never stopped.
    ``monitor_every`` and ``checkpoint_every`` may be changed (they do not
    change the weights), and ``device`` (a GPU run can go on on the CPU, and
    the other way, up to rounding); the other arguments are :func:`run`'s.

    Raises:
        ChainruleError: no checkpoint in ``path`` (or the run had finished).
        ModelFileError: the checkpoint is truncated, corrupt or does not fit its own settings.

    Example:
        >>> result = resume("runs/digits")
    """
    path = Path(path)
    ck = find_checkpoint(path)
    try:
        config = TrainConfig.from_dict(ck.config)
    except ChainruleError as e:
        raise ModelFileError(f"checkpoint {str(ck.path)!r} holds settings that are not valid: {e}") from None
    overrides = {
        k: v for k, v in (("monitor_every", monitor_every), ("checkpoint_every", checkpoint_every), ("device", device)) if v is not None
    }
    if overrides:
        config = dataclasses.replace(config, **overrides)
    return _train(config.resolved(), path, ck, progress, callbacks, quiet, plots, threads, tensorboard, interruptible)


@contextmanager
def _stop_on_sigint(checkpointer: Any):
    """While training: the first Ctrl-C asks ``checkpointer`` to stop after the step; a second one stops at once."""
    if checkpointer is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        checkpointer.request_stop()
        signal.signal(signal.SIGINT, previous)

    previous = signal.getsignal(signal.SIGINT)
    if previous is None:  # set outside Python
        previous = signal.default_int_handler
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _merge_warnings(saved: list, now: list) -> list:
    """Warnings of an earlier session followed by this one's: one per kind, the latest message."""
    merged: dict = {}
    for w in [*saved, *now]:
        old = merged.get(w["kind"])
        if old is None:
            merged[w["kind"]] = dict(w)
            continue
        old.update({k: w[k] for k in ("message", "value", "threshold") if k in w})
        old["epochs"] = [*old.get("epochs", []), *[e for e in w.get("epochs", []) if e not in old.get("epochs", [])]]
        old["layers"] = sorted(set(old.get("layers") or []) | set(w.get("layers") or []))
    return list(merged.values())


class _Watch:
    """The diagnostics Monitor of a run, with what an earlier session of it recorded."""

    def __init__(self, config: TrainConfig, ds: Any, y_train: Any, ck: Any, histograms: bool):

        self.monitor = Monitor(
            probe=(ds.X_train[:PROBE_ROWS], y_train[:PROBE_ROWS]),
            monitor_every=config.monitor_every,
            histograms=histograms,
            attach_to_history=False,  # the records go to metrics.json's "diagnostics", not into each epoch
        )
        saved = (ck.diagnostics if ck is not None else None) or {}
        self.saved_warnings = saved.get("warnings") or []
        self.restored = len(saved.get("epochs") or [])
        if ck is not None:
            self.monitor.steps = ck.step
            self.monitor.records = list(saved.get("epochs") or [])
            self.monitor.initial = saved.get("initial")

    def data(self) -> dict:
        data = self.monitor.to_dict()
        data["warnings"] = _merge_warnings(self.saved_warnings, data["warnings"])
        return data

    def tensorboard(self, logdir: Path, history: Any) -> None:


        data = self.data()
        histograms = [{}] * self.restored + list(self.monitor.histograms or [])
        write_tensorboard(SimpleNamespace(to_dict=lambda: data, records=data["epochs"], histograms=histograms), logdir, histories=history.history)


def _train(config: TrainConfig, out: Path | None, ck: Any, progress: bool, callbacks: Sequence, quiet: bool, plots: bool,
           threads: int | None, tensorboard: Any, interruptible: bool) -> RunResult:
    """run() and resume(): train from scratch (``ck`` None) or from a checkpoint, and write the folder."""
    if config.device != "cpu":
        cupy()  # before any work: chainrule's one-line error when CuPy or a GPU is missing
    if tensorboard is not None:
        _check_tensorboard()
    ds = load_dataset(config.dataset, seed=config.data_seed)
    check_training_memory(estimate_memory(config, rows=len(ds.X_train)), "this run")
    fresh = build_model(config, ds.num_features, ds.num_outputs)
    config = dataclasses.replace(config, init=fresh.init)
    if ck is not None:
        if describe(ck.model) != describe(fresh):
            raise ModelFileError(
                f"checkpoint {str(ck.path)!r} holds a model {describe(ck.model)['config']} that its settings "
                f"do not describe ({describe(fresh)['config']})"
            )
    built = build(config, model=fresh if ck is None else ck.model)
    model, optimizer, loss_fn = built.model, built.optimizer, built.loss_fn
    if ck is not None:
        restore_optimizer(optimizer, ck)
    y_train, y_test = built.targets(ds.y_train), built.targets(ds.y_test)
    state = ck.train_state(ds.task) if ck is not None else TrainState(history=History(ds.task))
    history, before = state.history, ck.seconds if ck is not None else 0.0  # (training time of earlier sessions)
    watch = _Watch(config, ds, y_train, ck, histograms=tensorboard is not None) if config.monitor_every else None
    checkpointer = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if ck is None:
            _clear_run(out)
        write_atomic(out / "config.json", _dump(config.to_dict()))
        every, unit = parse_interval(config.checkpoint_every)
        checkpointer = Checkpointer(
            out / CHECKPOINT_FILE, config.to_dict(), every, unit, config.epochs,
            seconds=before, diagnostics=watch.data if watch else None,
        )
    all_callbacks = [*callbacks, *([watch.monitor] if watch else []), *([checkpointer] if checkpointer else [])]

    with limit_threads(threads):
        start = time.perf_counter()
        try:
            with _stop_on_sigint(checkpointer if interruptible else None):
                history = fit(
                    model, loss_fn, optimizer, ds.X_train, y_train,
                    epochs=config.epochs, batch_size=config.batch_size, validation=(ds.X_test, y_test),
                    seed=config.seed, callbacks=all_callbacks, progress=progress and not quiet, task=ds.task, state=state,
                )
                bad = nonfinite_parameter(model)
                if bad is not None:  # an update overflowed where the loss does not show it (a dead unit's bias)
                    raise DivergenceError(
                        f"parameter {bad!r} holds NaN or infinite values at the end of training (step {history.steps}), "
                        f"though the loss stayed finite; the learning rate ({config.lr}) is likely too large: try a smaller one"
                    )
        except (DivergenceError, TrainingInterrupted) as e:
            if out is None:
                raise
            seconds = before + time.perf_counter() - start
            diverged = isinstance(e, DivergenceError)
            diagnostics = watch.data() if watch else None
            # the diagnostics pictures show what led to a divergence; an interrupted run draws them when it finishes
            _write_stopped(out, config, ds, history, seconds, "diverged" if diverged else "interrupted", str(e), diagnostics, plots and diverged)
            if not diverged:
                raise
            raise _diverged(e, out, history, checkpointer, ck, diagnostics) from None
        seconds = before + time.perf_counter() - start
        metrics = {
            "train": evaluate(model, loss_fn, ds.X_train, y_train, task=ds.task),
            "test": evaluate(model, loss_fn, ds.X_test, y_test, task=ds.task),
        }
        confusion = None
        if ds.task == "multiclass":
            confusion = confusion_matrix(ds.y_test, to_numpy(predict(model, ds.X_test)).argmax(axis=1), ds.num_outputs)
    result = RunResult(config, model, history, metrics, seconds, ds, confusion,
                       diagnostics=watch.data() if watch else None, resumed_from=ck.step if ck is not None else None)
    if tensorboard is not None:
        if watch:
            watch.tensorboard(Path(tensorboard), history)
        else:
            write_tensorboard([], tensorboard, histories=history.history)
    if out is not None:
        write_run(result, out, plots=plots)
        (out / CHECKPOINT_FILE).unlink(missing_ok=True)  # the run is complete: model.safetensors is its result
    return result


def _diverged(error: Exception, out: Path, history: Any, checkpointer: Any, ck: Any, diagnostics: dict | None) -> DivergenceError:
    """The DivergenceError of a run with a folder: fit's message and what the folder keeps, on one line."""
    step = checkpointer.saved_step if checkpointer is not None and checkpointer.saved_step is not None else (ck.step if ck is not None else None)
    done = len(history.epochs)
    kept = f"metrics.json ({done} epoch{'s' * (done != 1)} done)"
    if step is not None and (out / CHECKPOINT_FILE).exists():
        kept += f" and the last good checkpoint (step {step}) are in {out}"
    else:
        kept += f" is in {out}; no checkpoint was saved before it (see --checkpoint-every)"
    e = DivergenceError(f"{error}. {kept}")
    warning = next((w for w in (diagnostics or {}).get("warnings", []) if w["kind"] == "nonfinite_loss"), None)
    e.diagnosis = warning["message"] if warning else None
    return e


def _clear_run(out: Path) -> None:
    """Remove the files of a run that ``out`` held before, so none of them is taken for the new run's."""
    from .report.run_plots import RUN_PLOTS

    for name in ("model.safetensors", "metrics.json", CHECKPOINT_FILE, *RUN_PLOTS, *DIAGNOSTIC_PLOTS):
        (out / name).unlink(missing_ok=True)


def json_ready(obj: Any, nonfinite_as_text: bool = False) -> Any:
    """Plain JSON data: NumPy scalars and arrays unwrapped; NaN and infinities as null, or as
    the strings "nan", "inf", "-inf" with ``nonfinite_as_text``."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v, nonfinite_as_text) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v, nonfinite_as_text) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist(), nonfinite_as_text)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return ("nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")) if nonfinite_as_text else None
    return obj


def _dump(data: Any) -> bytes:
    return (json.dumps(json_ready(data), indent=2, allow_nan=False) + "\n").encode("utf-8")


def metrics_record(result: RunResult, status: str = "finished", error: str | None = None) -> dict:
    """The contents of metrics.json: status, per-epoch history, final metrics and diagnostics, as plain data.

    A run that diverged or was interrupted has its ``status``, the ``error`` message and no final metrics.
    """
    from . import __version__

    h = result.history
    record = {
        "chainrule": __version__,
        "status": status,
        **({"error": error} if error is not None else {}),
        "dataset": result.config.dataset,
        "task": h.task,
        "names": list(result.dataset.names),
        "epochs_run": len(h.epochs),
        "steps": h.steps,
        "seconds": result.seconds,
        "final": result.metrics,
        "history": h.epochs,
        # the smallest and largest training input: predict warns about inputs far outside it
        "input_range": [float(result.dataset.X_train.min()), float(result.dataset.X_train.max())],
    }
    if result.resumed_from is not None:
        record["resumed_from_step"] = result.resumed_from
    if result.confusion is not None:
        record["confusion_matrix"] = result.confusion
    if result.diagnostics is not None:
        record["diagnostics"] = result.diagnostics
    return record


def _write_stopped(out: Path, config: TrainConfig, ds: Any, history: Any, seconds: float, status: str, message: str,
                   diagnostics: dict | None, plots: bool) -> None:
    """metrics.json (and the diagnostics plots) of a run that diverged or was interrupted."""
    stopped = RunResult(config, None, history, None, seconds, ds, diagnostics=diagnostics)
    write_atomic(out / "metrics.json", _dump(metrics_record(stopped, status, message)))
    if plots and diagnostics is not None and diagnostics.get("epochs"):
        from .report.diagnostics_plots import write_diagnostic_plots

        write_diagnostic_plots(diagnostics, out)


def write_run(result: RunResult, out: str | Path, plots: bool = True) -> list:
    """Write the run folder of ``result`` (model, config.json, metrics.json, plots); returns the paths."""
    from .report.run_plots import RUN_PLOTS, plot_run

    out = Path(out)
    _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [
        save(result.model, out / "model.safetensors", metadata=result.config.to_dict()),
    ]
    write_atomic(out / "config.json", _dump(result.config.to_dict()))
    files.append(out / "config.json")
    write_atomic(out / "metrics.json", _dump(metrics_record(result)))
    files.append(out / "metrics.json")
    if plots:
        files += plot_run(result, out)
        if result.diagnostics is not None and result.diagnostics.get("epochs"):
            from .report.diagnostics_plots import write_diagnostic_plots

            files += write_diagnostic_plots(result.diagnostics, out)
    for stale in set(RUN_PLOTS + DIAGNOSTIC_PLOTS) - {p.name for p in files}:  # pictures of a run this one replaced
        (out / stale).unlink(missing_ok=True)
    result.out, result.files = out, files
    return files


def _status(path: Path) -> str:
    """"finished", "diverged" or "interrupted" from a run folder's metrics.json; "running" without one."""
    try:
        return str(json.loads((path / "metrics.json").read_text(encoding="utf-8")).get("status", "finished"))
    except (OSError, ValueError, AttributeError):
        return "running"


@dataclass
class SavedRun:
    """A run folder read back: its config, model and metrics.json."""

    path: Path
    config: TrainConfig
    model: Any
    metrics: dict


def load_run(path: str | Path) -> SavedRun:
    """Read a run folder written by :func:`run`; a clear error for anything missing or broken.

    Example:
        >>> saved = load_run("runs/digits")
        >>> saved.config.dataset, saved.model
    """
    path = Path(path)
    if not path.exists():
        raise ChainruleError(f"run folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise ChainruleError(f"{str(path)!r} is not a run folder (expected a folder with model.safetensors and config.json)")
    if not (path / "config.json").is_file():
        raise ChainruleError(f"{str(path)!r} is not a run folder: it has no config.json")
    config = TrainConfig.from_json(path / "config.json")
    if not (path / "model.safetensors").exists():
        status = _status(path)
        resumable = (path / CHECKPOINT_FILE).exists()
        if status == "diverged":
            raise ChainruleError(f"run {str(path)!r} has no model: its loss diverged (metrics.json says where); train it again with a smaller lr")
        if status == "interrupted" or resumable:
            raise ChainruleError(f"run {str(path)!r} has no model yet: it stopped before finishing; continue it with chainrule train --resume {path}")
    model = load(path / "model.safetensors")
    if not isinstance(model, MLP):
        raise ModelFileError(f"the model in run folder {str(path)!r} is a {type(model).__name__}; runs hold an MLP")
    metrics: dict = {}
    if (path / "metrics.json").is_file():
        try:
            metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            metrics = {}
    return SavedRun(path, config, model, metrics)


def evaluate_run(path: str | Path | SavedRun) -> dict:
    """Metrics of a saved run on its test set: {"test": {...}, "confusion_matrix": ... (classes)}.

    The dataset is rebuilt from the run's config (name and data_seed), so the
    test set is the one the run held out.
    """
    saved = path if isinstance(path, SavedRun) else load_run(path)
    config = saved.config.resolved()
    ds = load_dataset(config.dataset, seed=config.data_seed)
    n_in, n_out = saved.model.in_features, saved.model.out_features
    if (n_in, n_out) != (ds.num_features, ds.num_outputs):
        raise ModelFileError(
            f"the model in {str(saved.path)!r} maps {n_in} inputs to {n_out} outputs, "
            f"but dataset {ds.name!r} has {ds.num_features} features and {ds.num_outputs} outputs"
        )
    built = build(dataclasses.replace(config, device="cpu"), model=saved.model)  # the loaded model is on the host
    y_test = built.targets(ds.y_test)
    result: dict = {
        "dataset": ds.name,
        "task": ds.task,
        "names": list(ds.names),
        "samples": len(ds.X_test),
        "test": evaluate(saved.model, built.loss_fn, ds.X_test, y_test, task=ds.task),
    }
    if ds.task == "multiclass":
        result["confusion_matrix"] = confusion_matrix(ds.y_test, predict(saved.model, ds.X_test).argmax(axis=1), ds.num_outputs)
    return result


__all__ = [
    "Built",
    "LOSSES_FOR_TASK",
    "RunResult",
    "SavedRun",
    "TrainConfig",
    "build",
    "build_model",
    "estimate_memory",
    "evaluate_run",
    "find_checkpoint",
    "json_ready",
    "load_run",
    "merge_settings",
    "metrics_record",
    "parse_layers",
    "resume",
    "run",
    "write_run",
]
