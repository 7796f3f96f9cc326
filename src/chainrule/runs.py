"""Runs: one training job from a config to a record on disk, the engine of ``chainrule train``.

A :class:`TrainConfig` names every setting of a run; :func:`run` loads the
dataset, builds the MLP, optimizer and loss, trains with :func:`chainrule.fit`
and, given a folder, writes the run record:

    model.safetensors   the trained model (``cr.load`` reads it)
    config.json         every setting; ``TrainConfig.from_json`` repeats the run exactly
    metrics.json        per-epoch history and the final train and test metrics
    *.png               loss and metric curves, confusion matrix (classes), fit (functions)

``run`` never prints, so the command line, the lab, sweeps and the dashboard
all share it; the same config gives the same weights, batches and metrics.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import ChainruleError, ModelFileError

# Losses each task can train with; the first is the default.
LOSSES_FOR_TASK = {
    "multiclass": ("cross_entropy", "mse", "bce"),
    "multilabel": ("bce",),
    "regression": ("mse",),
}
# Learning rate when none is given, by optimizer.
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}
# Label smoothing when none is given, with cross-entropy (it adds about 1.4 points of
# digits accuracy on a validation split held out of the training set).
DEFAULT_LABEL_SMOOTHING = 0.1


def _name(field_name: str, value: Any, valid: Sequence[str]) -> str:
    key = str(value).lower().replace("-", "_")
    if key not in valid:
        raise ChainruleError(f"unknown {field_name} {value!r}; expected one of {', '.join(valid)}")
    return key


def _integer(field_name: str, value: Any, minimum: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ChainruleError(f"{field_name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _number(field_name: str, value: Any, low: float = -math.inf, high: float = math.inf, positive: bool = False) -> float:
    try:
        v = float(value)
        if isinstance(value, (bool, str)):
            raise TypeError
    except (TypeError, ValueError):
        raise ChainruleError(f"{field_name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or not low <= v <= high or (positive and v <= 0):
        bounds = "> 0" if positive else f"in [{low}, {high}]"
        raise ChainruleError(f"{field_name} must be a finite number {bounds}, got {value!r}")
    return v


def parse_layers(value: Any) -> tuple:
    """Hidden layer widths from "256,256,128", "" (none) or a sequence of ints: a tuple of ints.

    Example:
        >>> parse_layers("128, 64")
        (128, 64)
    """
    if isinstance(value, str):
        text = value.replace(" ", "")
        parts = text.split(",") if text else []
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise ChainruleError(f"layers must be comma-separated widths such as 128,128, got {value!r}")
    widths = []
    for p in parts:
        if isinstance(p, str) and p.isdigit():
            p = int(p)
        elif isinstance(p, float) and p.is_integer():
            p = int(p)
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1:
            raise ChainruleError(f"layers must be positive integer widths separated by commas, such as 128,128; got {value!r}")
        widths.append(int(p))
    return tuple(widths)


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
        layers: hidden layer widths; input and output widths come from the dataset.
        activation, init, bias_init: of the hidden layers (see :class:`chainrule.nn.MLP`).
        loss: "cross_entropy", "mse" or "bce".
        label_smoothing: of cross-entropy, in [0, 1).
        optimizer: "sgd", "adam" or "adamw"; lr, momentum (SGD only), weight_decay.
        batch_size, epochs: rows per step, passes over the training set.
        seed: the weights and the batch order; data_seed: generated data and the split.
        device: "cpu" (the GPU path is not wired into runs yet).
        monitor_every, checkpoint_every: reserved for the diagnostics and checkpoint
            features (0 = off); run() records them and does not act on them itself.

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
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        from .backend import normalize_device
        from .data import dataset_info
        from .nn.activations import ACTIVATIONS
        from .nn.init import INITIALIZERS
        from .optim import OPTIMIZERS

        info = dataset_info(self.dataset)
        s = functools.partial(object.__setattr__, self)
        s("dataset", info.name)
        s("layers", parse_layers(self.layers))
        s("activation", _name("activation", self.activation, tuple(ACTIVATIONS)))
        if self.init is not None:
            s("init", _name("init", self.init, INITIALIZERS))
        s("bias_init", _number("bias_init", self.bias_init))
        if self.loss is not None:
            s("loss", _name("loss", self.loss, LOSSES_FOR_TASK["multiclass"]))
            if self.loss not in LOSSES_FOR_TASK[info.task]:
                raise ChainruleError(
                    f"loss {self.loss!r} does not fit the {info.task} dataset {info.name!r}; "
                    f"expected one of {', '.join(LOSSES_FOR_TASK[info.task])}"
                )
        if self.label_smoothing is not None:
            s("label_smoothing", _number("label_smoothing", self.label_smoothing, 0.0, 0.999))
            loss = self.loss or info.default_loss
            if self.label_smoothing and loss != "cross_entropy":
                raise ChainruleError(f"label_smoothing applies to cross_entropy only, but the loss is {loss!r}")
        s("optimizer", _name("optimizer", self.optimizer, tuple(OPTIMIZERS)))
        if self.lr is not None:
            s("lr", _number("lr", self.lr, positive=True))
        s("momentum", _number("momentum", self.momentum, 0.0, 0.999))
        s("weight_decay", _number("weight_decay", self.weight_decay, 0.0))
        s("batch_size", _integer("batch_size", self.batch_size, 1))
        s("epochs", _integer("epochs", self.epochs, 0))
        s("seed", _integer("seed", self.seed, 0))
        s("data_seed", _integer("data_seed", self.data_seed, 0))
        s("device", normalize_device(self.device))
        s("monitor_every", _integer("monitor_every", self.monitor_every, 0))
        s("checkpoint_every", _integer("checkpoint_every", self.checkpoint_every, 0))

    @property
    def task(self) -> str:
        """The dataset's task: "multiclass", "multilabel" or "regression"."""
        from .data import dataset_info

        return dataset_info(self.dataset).task

    def resolved(self) -> "TrainConfig":
        """This config with loss, lr and label_smoothing filled in (init is filled by :func:`run`)."""
        from .data import dataset_info

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
        if not path.is_file():
            raise ChainruleError(f"config file {str(path)!r} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ChainruleError(f"config file {str(path)!r} is not valid JSON: {e}") from None
        return cls.from_dict(data)


@dataclass
class RunResult:
    """What :func:`run` returns: the config (resolved), trained model, History, and final metrics.

    ``metrics`` is ``{"train": {...}, "test": {...}}`` measured after training
    on the whole of each split; ``confusion`` is the test confusion matrix
    (counts ``[true, predicted]``) for classes, else None.
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


def targets_for(config: TrainConfig, y: np.ndarray, num_outputs: int) -> np.ndarray:
    """The targets the loss trains on: class labels become one-hot rows for mse and bce."""
    if config.task == "multiclass" and config.loss in ("mse", "bce"):
        onehot = np.zeros((len(y), num_outputs), dtype=np.float32)
        onehot[np.arange(len(y)), y] = 1.0
        return onehot
    return y


def loss_function(config: TrainConfig) -> Any:
    """The loss function of a resolved config (cross-entropy with its label smoothing)."""
    from . import functional as F
    from .train import get_loss

    if config.loss == "cross_entropy" and config.label_smoothing:
        return functools.partial(F.cross_entropy, label_smoothing=config.label_smoothing)
    return get_loss(config.loss)


def build_model(config: TrainConfig, num_features: int, num_outputs: int) -> Any:
    """The MLP of a config: [num_features, *layers, num_outputs], weights seeded by ``config.seed``."""
    from .nn import MLP

    return MLP(
        [num_features, *config.layers, num_outputs],
        activation=config.activation,
        init=config.init,
        bias_init=config.bias_init,
        generator=config.seed,
    )


def build_optimizer(config: TrainConfig, params: Any) -> Any:
    """The optimizer of a resolved config."""
    from .optim import OPTIMIZERS, SGD

    if config.optimizer == "sgd":
        return SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return OPTIMIZERS[config.optimizer](params, lr=config.lr, weight_decay=config.weight_decay)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ChainruleError(f"run folder {str(out)!r} is a file, not a folder")


def run(
    config: TrainConfig | dict | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    callbacks: Sequence = (),
    quiet: bool = True,
    plots: bool = True,
    threads: int | None = 1,
) -> RunResult:
    """Train the MLP that ``config`` describes and, given ``out``, write its run folder.

    Args:
        config: a TrainConfig, a dict of settings, or None for the defaults
            (the deep MLP on the digits).
        out: folder for the run record (created; files in it are replaced atomically).
            Nothing is written when training fails.
        progress: show fit's progress bar (on a terminal only), unless ``quiet``.
        callbacks: passed to :func:`chainrule.fit` (``on_train_begin``,
            ``on_step_end``, ``on_epoch_end``, ``on_train_end``), e.g. diagnostics.
        quiet: True hides the progress bar even when ``progress`` is set; run
            itself never prints.
        plots: draw the PNGs into ``out`` (a sweep of many runs may skip them).
        threads: BLAS threads while training and measuring. One by default: the
            products of these small networks gain little from more, the numbers
            then do not depend on the machine's core count, and threaded BLAS
            slows down many times over when other work shares the cores
            (measured: the default digits run took 60 s with two threads on a
            busy 2-core machine, 3.3 s with one). None leaves NumPy's setting.

    Returns:
        RunResult with the resolved config, model, History, final metrics and seconds.

    Example:
        >>> result = run(TrainConfig(epochs=5), out="runs/digits")
        >>> result.metrics["test"]["accuracy"]
    """
    from .bench import limit_threads
    from .data import load_dataset
    from .metrics import confusion_matrix
    from .train import evaluate, fit, predict

    if config is None:
        config = TrainConfig()
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    elif not isinstance(config, TrainConfig):
        raise ChainruleError(f"run() needs a TrainConfig or a dict of settings, got {type(config).__name__}")
    if config.device != "cpu":
        raise ChainruleError(f"device {config.device!r} is not supported by runs yet; use device 'cpu'")
    out = Path(out) if out is not None else None
    if out is not None:
        _check_out(out)

    config = config.resolved()
    ds = load_dataset(config.dataset, seed=config.data_seed)
    model = build_model(config, ds.num_features, ds.num_outputs)
    config = dataclasses.replace(config, init=model.init)
    optimizer = build_optimizer(config, model.parameters())
    loss_fn = loss_function(config)
    y_train = targets_for(config, ds.y_train, ds.num_outputs)
    y_test = targets_for(config, ds.y_test, ds.num_outputs)

    # overflow on the way to a NaN loss is reported once, by fit's DivergenceError, not as NumPy warnings
    with limit_threads(threads), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        start = time.perf_counter()
        history = fit(
            model, loss_fn, optimizer, ds.X_train, y_train,
            epochs=config.epochs, batch_size=config.batch_size, validation=(ds.X_test, y_test),
            seed=config.seed, callbacks=callbacks, progress=progress and not quiet, task=ds.task,
        )
        seconds = time.perf_counter() - start
        metrics = {
            "train": evaluate(model, loss_fn, ds.X_train, y_train, task=ds.task),
            "test": evaluate(model, loss_fn, ds.X_test, y_test, task=ds.task),
        }
        confusion = None
        if ds.task == "multiclass":
            confusion = confusion_matrix(ds.y_test, predict(model, ds.X_test).argmax(axis=1), ds.num_outputs)
    result = RunResult(config, model, history, metrics, seconds, ds, confusion)
    if out is not None:
        write_run(result, out, plots=plots)
    return result


def json_ready(obj: Any) -> Any:
    """Plain JSON data: NumPy scalars and arrays unwrapped, NaN and infinities as null."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _dump(data: Any) -> bytes:
    return (json.dumps(json_ready(data), indent=2, allow_nan=False) + "\n").encode("utf-8")


def metrics_record(result: RunResult) -> dict:
    """The contents of metrics.json: per-epoch history and final metrics, as plain data."""
    from . import __version__

    h = result.history
    record = {
        "chainrule": __version__,
        "dataset": result.config.dataset,
        "task": h.task,
        "names": list(result.dataset.names),
        "epochs_run": len(h.epochs),
        "steps": h.steps,
        "seconds": result.seconds,
        "final": result.metrics,
        "history": h.epochs,
    }
    if result.confusion is not None:
        record["confusion_matrix"] = result.confusion
    return record


def write_run(result: RunResult, out: str | Path, plots: bool = True) -> list:
    """Write the run folder of ``result`` (model, config.json, metrics.json, plots); returns the paths."""
    from .io import save, write_atomic
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
    for stale in set(RUN_PLOTS) - {p.name for p in files}:  # pictures of a run this one replaced
        (out / stale).unlink(missing_ok=True)
    result.out, result.files = out, files
    return files


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
    from .io import load
    from .nn import MLP

    path = Path(path)
    if not path.exists():
        raise ChainruleError(f"run folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise ChainruleError(f"{str(path)!r} is not a run folder (expected a folder with model.safetensors and config.json)")
    if not (path / "config.json").is_file():
        raise ChainruleError(f"{str(path)!r} is not a run folder: it has no config.json")
    config = TrainConfig.from_json(path / "config.json")
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
    from .data import load_dataset
    from .metrics import confusion_matrix
    from .train import evaluate, predict

    saved = path if isinstance(path, SavedRun) else load_run(path)
    config = saved.config.resolved()
    ds = load_dataset(config.dataset, seed=config.data_seed)
    n_in, n_out = saved.model.in_features, saved.model.out_features
    if (n_in, n_out) != (ds.num_features, ds.num_outputs):
        raise ModelFileError(
            f"the model in {str(saved.path)!r} maps {n_in} inputs to {n_out} outputs, "
            f"but dataset {ds.name!r} has {ds.num_features} features and {ds.num_outputs} outputs"
        )
    y_test = targets_for(config, ds.y_test, ds.num_outputs)
    result: dict = {
        "dataset": ds.name,
        "task": ds.task,
        "names": list(ds.names),
        "samples": len(ds.X_test),
        "test": evaluate(saved.model, loss_function(config), ds.X_test, y_test, task=ds.task),
    }
    if ds.task == "multiclass":
        result["confusion_matrix"] = confusion_matrix(ds.y_test, predict(saved.model, ds.X_test).argmax(axis=1), ds.num_outputs)
    return result


__all__ = [
    "RunResult",
    "SavedRun",
    "TrainConfig",
    "build_model",
    "build_optimizer",
    "evaluate_run",
    "json_ready",
    "load_run",
    "loss_function",
    "metrics_record",
    "parse_layers",
    "run",
    "targets_for",
    "write_run",
]
