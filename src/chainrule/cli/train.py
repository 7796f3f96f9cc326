"""``chainrule train``, ``chainrule evaluate RUN`` and ``chainrule predict RUN --input FILE``.

train turns its options into a :class:`~chainrule.runs.TrainConfig`, runs it
with :func:`~chainrule.runs.run` and prints a closing table and the per-layer
gradient-flow health (with any warnings in plain words); the run folder keeps
the model, config.json, metrics.json (with the diagnostics) and the plots.
Every check of the options happens before training starts and before
anything is written. ``--device cuda`` trains on the GPU (CuPy): the model
moves there, the batches follow, and the run folder is the same as on the CPU.

Stopping and going on:

- ``--checkpoint-every`` saves a checkpoint in the run folder every N steps
  (``500``), N epochs (``2e``), N seconds (``30s``) or N minutes (``5m``, the
  default); ``0`` saves none. ``--resume RUN`` continues RUN from its checkpoint
  with RUN's own settings and ends with the weights an uninterrupted run has.
- Ctrl-C stops after the current step, saves a checkpoint, prints the command
  that resumes and exits with status 130.
- Exit status 2: bad input (one line on stderr), a network too large for the
  memory (one line with the estimate), and a loss that became NaN or infinite
  or a million times the first step's (one line naming the step, with a hint;
  metrics.json of the epochs done and the last good checkpoint stay in the run
  folder, and no model is written).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import typer

from ..runs import DEFAULT_LABEL_SMOOTHING, DEFAULT_LR, TrainConfig, format_layers, merge_settings
from . import app

_DEFAULT = TrainConfig.defaults()

_TRAIN_HELP = (
    "Train an MLP; with no options, a deep MLP on the bundled 8x8 digits (about 98.7% test accuracy). "
    "Prints each layer's gradient-flow health at the end; Ctrl-C stops with a checkpoint that --resume continues."
)
# Defaults of the command line where the API's are off. Measured on the default digits run
# (30 epochs, medians of 8 interleaved runs, one BLAS thread): the monitor every 10th step adds
# 3.7% CPU time to training (1.247 s against 1.203 s), most of it the once-per-epoch probe pass;
# every step adds 7.1%. A timed checkpoint costs nothing on short runs; one per epoch cost
# 60-75% of that 1.3 s run on a busy disk (15 ms a checkpoint, mostly fsync).
DEFAULT_MONITOR_EVERY = 10
DEFAULT_CHECKPOINT_EVERY = "5m"
# Exit status after Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED_STATUS = 130
# predict warns about rows with values beyond the training inputs' range widened by this share of it.
RANGE_MARGIN = 0.1


def _default_out(dataset: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path("runs") / f"{dataset}-{stamp}"
    n = 2
    while out.exists():
        out = Path("runs") / f"{dataset}-{stamp}-{n}"
        n += 1
    return out


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _metric_columns(task: str) -> tuple:
    return {"multiclass": ("loss", "accuracy"), "multilabel": ("loss", "subset_accuracy", "micro_f1"), "regression": ("mse",)}[task]


def _print_table(title: str, rows: dict, task: str, extra: dict | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(title, style="bold")
    table = Table()
    table.add_column("")
    columns = _metric_columns(task)
    for c in columns:
        table.add_column(c.replace("_", " "), justify="right")
    for split, metrics in rows.items():
        table.add_row(split, *[f"{metrics[c]:.2%}" if c in ("accuracy", "subset_accuracy") else _fmt(metrics.get(c)) for c in columns])
    if extra:
        table.rows[-1].end_section = True
        for k, v in extra.items():
            table.add_row(k, str(v), *[""] * (len(columns) - 1))
    console.print(table)


def _print_confusion(matrix: Any, names: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print("test confusion matrix (rows: true class, columns: predicted)", style="bold")
    table = Table()
    table.add_column("")
    for n in names:
        table.add_column(str(n), justify="right")
    for n, row in zip(names, matrix):
        table.add_row(str(n), *[str(int(v)) if v else "." for v in row])
    console.print(table)


@app.command(help=_TRAIN_HELP)
def train(
    dataset: Optional[str] = typer.Option(
        None, "--dataset", "-d", show_default=_DEFAULT["dataset"],
        help="digits, digits-binary, objects (multi-label), spirals, xor, circles, sine, abs, step or sawtooth.",
    ),
    layers: Optional[str] = typer.Option(
        None, "--layers", show_default=",".join(map(str, _DEFAULT["layers"])), help="Hidden layer widths, comma-separated (\"\" for none); 64x50 is 50 layers of width 64."
    ),
    activation: Optional[str] = typer.Option(None, "--activation", show_default=_DEFAULT["activation"], help="sigmoid, tanh, relu, leaky_relu, prelu, elu, gelu, silu or identity."),
    init: Optional[str] = typer.Option(
        None, "--init", show_default="he_normal for the ReLU family, else xavier_uniform",
        help="xavier_uniform, xavier_normal, he_uniform, he_normal, normal (N(0, 0.01^2)) or uniform.",
    ),
    bias_init: Optional[float] = typer.Option(None, "--bias-init", show_default=f"{_DEFAULT['bias_init']:g}", help="Constant for every hidden bias."),
    residual: Optional[bool] = typer.Option(
        None, "--residual/--no-residual", show_default="off", help="A skip connection around each hidden block of equal width: x + block(x)."
    ),
    norm: Optional[str] = typer.Option(None, "--norm", show_default="none", help="Normalization after each hidden Linear: none, batch or layer."),
    dropout: Optional[float] = typer.Option(None, "--dropout", show_default=f"{_DEFAULT['dropout']:g}", help="Dropout probability after each hidden activation."),
    loss: Optional[str] = typer.Option(
        None, "--loss", show_default="cross_entropy for classes, bce for multi-label, mse for functions", help="cross_entropy, mse or bce."
    ),
    label_smoothing: Optional[float] = typer.Option(None, "--label-smoothing", show_default=f"{DEFAULT_LABEL_SMOOTHING:g} with cross_entropy", help="Label smoothing of cross-entropy: the target becomes (1 - eps) one-hot + eps / classes."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", show_default=_DEFAULT["optimizer"], help="sgd, adam or adamw."),
    lr: Optional[float] = typer.Option(None, "--lr", show_default=", ".join(f"{lr:g} for {name}" for name, lr in DEFAULT_LR.items()), help="Learning rate."),
    momentum: Optional[float] = typer.Option(None, "--momentum", show_default=f"{_DEFAULT['momentum']:g}", help="Momentum of SGD."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", show_default=f"{_DEFAULT['weight_decay']:g}", help="L2 weight decay."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", show_default=str(_DEFAULT["batch_size"]), help="Rows per gradient step."),
    epochs: Optional[int] = typer.Option(None, "--epochs", show_default=str(_DEFAULT["epochs"]), help="Passes over the training set."),
    seed: Optional[int] = typer.Option(None, "--seed", show_default=str(_DEFAULT["seed"]), help="Seed of the weights and the batch order."),
    data_seed: Optional[int] = typer.Option(None, "--data-seed", show_default=str(_DEFAULT["data_seed"]), help="Seed of generated data and of the train/test split."),
    config: Optional[Path] = typer.Option(None, "--config", help="Start from a config.json (or a run folder): repeats that run; options given override it."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", show_default="runs/DATASET-DATE-TIME", help="Run folder to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run in --out if that folder is not empty."),
    monitor_every: Optional[int] = typer.Option(
        None, "--monitor-every", show_default=str(DEFAULT_MONITOR_EVERY),
        help="Measure gradient flow every N steps (0: off): health table, warnings, metrics.json records and plots.",
    ),
    checkpoint_every: Optional[str] = typer.Option(
        None, "--checkpoint-every", show_default=DEFAULT_CHECKPOINT_EVERY,
        help="Save a checkpoint every N steps (500), N epochs (2e), N seconds (30s) or N minutes (5m); 0: none.",
    ),
    resume: Optional[Path] = typer.Option(
        None, "--resume", metavar="RUN", help="Continue the run in folder RUN from its checkpoint, with RUN's own settings.",
    ),
    tensorboard: Optional[Path] = typer.Option(
        None, "--tensorboard", metavar="DIR", help="Also write the diagnostics and curves for TensorBoard into DIR (needs tensorboardX).",
    ),
    device: Optional[str] = typer.Option(
        None, "--device", show_default=_DEFAULT["device"],
        help="cpu, or cuda: train on the GPU (needs CuPy and an NVIDIA GPU); with --resume, where the run goes on.",
    ),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Draw the PNG pictures into the run folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no table: print only the run folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the final metrics and the run folder as JSON."),
) -> None:
    from ..backend import cupy, normalize_device
    from ..checkpoint import TrainingInterrupted
    from ..errors import ChainruleError, DivergenceError
    from ..runs import resume as resume_run
    from ..runs import run
    from . import fail

    if device is not None:
        try:  # before any work: one line saying what is missing
            if normalize_device(device) == "cuda":
                cupy()
        except ChainruleError as e:
            raise fail(str(e)) from None

    given = {
        "dataset": dataset, "layers": layers, "activation": activation, "init": init, "bias_init": bias_init,
        "residual": residual, "norm": norm, "dropout": dropout, "loss": loss, "label_smoothing": label_smoothing, "optimizer": optimizer, "lr": lr, "momentum": momentum,
        "weight_decay": weight_decay, "batch_size": batch_size, "epochs": epochs, "seed": seed, "data_seed": data_seed,
    }
    given = {k: v for k, v in given.items() if v is not None}
    show = not (quiet or as_json)
    if resume is not None:
        # the run goes on with the settings its checkpoint holds; only how it is watched may change
        clash = [f"--{k.replace('_', '-')}" for k in given] + [name for name, v in (("--config", config), ("--out", out)) if v is not None]
        if clash:
            raise fail(f"--resume continues RUN with the settings in its checkpoint, so {', '.join(clash)} cannot be given with it")
        out = resume

        def train_it() -> Any:
            return resume_run(
                resume, progress=show, quiet=not show, plots=plots, tensorboard=tensorboard, interruptible=True,
                monitor_every=monitor_every, checkpoint_every=checkpoint_every, device=device,
            )
    else:
        settings = merge_settings(TrainConfig.from_json(config).to_dict() if config is not None else {}, given)
        if device is not None:  # where to train is no setting that derives others, and --resume may change it
            settings["device"] = device
        # how the run is watched: the option, else the config file's, else the command line's default
        for key, value, default in (("monitor_every", monitor_every, DEFAULT_MONITOR_EVERY), ("checkpoint_every", checkpoint_every, DEFAULT_CHECKPOINT_EVERY)):
            if value is not None or key not in settings:
                settings[key] = value if value is not None else default
        cfg = TrainConfig.from_dict(settings)
        out = out or _default_out(cfg.dataset)
        if out.is_dir() and any(out.iterdir()) and not overwrite:
            raise fail(f"run folder {str(out)!r} already exists and is not empty; choose another --out or pass --overwrite")

        def train_it() -> Any:
            return run(cfg, out=out, progress=show, quiet=not show, plots=plots, tensorboard=tensorboard, interruptible=True)

    try:
        result = train_it()
    except TrainingInterrupted as e:
        typer.echo(
            f"interrupted: stopped after step {e.step} (epoch {e.epoch}) and saved a checkpoint in {e.path}\n"
            f"resume with: chainrule train --resume {out}",
            err=True,
        )
        raise typer.Exit(INTERRUPTED_STATUS) from None
    except DivergenceError as e:
        if show and getattr(e, "diagnosis", None):
            typer.echo(f"diagnosis: {e.diagnosis}")
        raise
    diagnostics = result.diagnostics or {}
    warnings = [w["message"] for w in diagnostics.get("warnings", [])]
    if as_json:
        typer.echo(json.dumps({
            "out": str(out), "config": result.config.to_dict(), "seconds": result.seconds, **result.metrics,
            "warnings": warnings, "resumed_from_step": result.resumed_from,
        }))
        return
    if quiet:
        typer.echo(str(out))
        return
    c = result.config
    if result.resumed_from is not None:
        typer.echo(f"resumed {out} from its checkpoint at step {result.resumed_from}")
    typer.echo(header(c, result.model.sizes))
    _print_table("chainrule train", result.metrics, result.dataset.task, {"epochs": len(result.history.epochs), "time": f"{result.seconds:.1f} s"})
    if diagnostics.get("epochs"):
        _print_health(diagnostics, warnings)
    pictures = [p.name for p in result.files if p.suffix == ".png"]
    typer.echo(f"run folder: {out}  ({', '.join(['model.safetensors', 'config.json', 'metrics.json', *pictures])})")
    if tensorboard is not None:
        typer.echo(f"tensorboard: tensorboard --logdir {tensorboard}")


def header(c: Any, sizes: list) -> str:
    """The run in one line, with every setting that changes the loss it prints (label smoothing, weight decay).

    With label smoothing eps over C classes the smoothed target has entropy
    H = -(1 - eps + eps/C) log(1 - eps + eps/C) - (C - 1)(eps/C) log(eps/C), and
    the loss cannot fall below it even at 100% accuracy: the line says so.
    """
    import math

    from ..runs import format_layers

    on = " on the GPU (cuda)" if c.device == "cuda" else ""
    options = "".join([", residual" * c.residual, f", {c.norm} norm" * bool(c.norm), f", dropout {c.dropout:g}" * bool(c.dropout)])
    hidden = sizes[1:-1] if len(sizes) <= 10 else [format_layers(sizes[1:-1])]  # 64-64x50-10 for deep ones
    shape = "-".join(map(str, [sizes[0], *hidden, sizes[-1]]))
    loss = c.loss
    if c.loss == "cross_entropy":
        loss += f" (label smoothing {c.label_smoothing:g})"
    line = (f"{c.dataset}: MLP {shape} ({c.activation}{options}), {loss}, "
            f"{c.optimizer} lr {c.lr:g}, weight decay {c.weight_decay:g}{on}")
    eps, classes = c.label_smoothing or 0.0, sizes[-1]
    if c.loss == "cross_entropy" and eps > 0 and classes > 1:
        top, rest = 1 - eps + eps / classes, eps / classes
        floor = -top * math.log(top) - (classes - 1) * rest * math.log(rest)
        line += f"\n  with label smoothing the loss cannot fall below {floor:.3f}, even at 100% accuracy"
    if c.weight_decay:
        line += "\n  the printed loss is the data loss; weight decay adds its pull on the weights in the optimizer's step"
    return line


def _print_health(diagnostics: dict, warnings: list) -> None:
    """The per-layer health table of the diagnostics and each warning, in plain words."""
    from rich.console import Console

    from ..diagnostics import health_table

    console = Console()
    if not console.is_terminal:  # a pipe or a log file: no terminal width to fit, so do not squeeze the numbers
        console = Console(width=120)
    console.print(health_table(diagnostics))
    for message in warnings:
        console.print(f"warning: {message}", style="yellow", markup=False, highlight=False)


@app.command()
def evaluate(
    run_folder: Path = typer.Argument(..., metavar="RUN", help="A run folder written by chainrule train."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Metrics of a saved run on its test set, with the confusion matrix for classes."""
    from ..runs import evaluate_run, json_ready

    result = evaluate_run(run_folder)
    if as_json:
        typer.echo(json.dumps(json_ready(result)))
        return
    _print_table(f"{run_folder}: {result['dataset']}, {result['samples']} test samples", {"test": result["test"]}, result["task"])
    if "confusion_matrix" in result:
        _print_confusion(result["confusion_matrix"], result["names"])


def read_rows(path: Path, width: int) -> Any:
    """Rows of ``width`` numbers from a .npy or .csv file, as float32 (n, width); one-line errors."""
    import numpy as np

    from ..errors import DataError
    from ..validation import check_file

    check_file(path, "input file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            X = np.load(path, allow_pickle=False)
        except Exception as e:  # not a .npy file, pickled objects, truncated
            raise DataError(f"input file {str(path)!r} is not a readable .npy array: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        if X.dtype.kind not in "biuf":
            raise DataError(f"input file {str(path)!r} must hold numbers, got an array of dtype {X.dtype}")
        X = X.reshape(1, -1) if X.ndim == 1 else X
    elif suffix == ".csv":
        import csv

        rows, blank = [], None
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            for line_no, cells in enumerate(csv.reader(f), start=1):
                if not cells or all(not c.strip() for c in cells):
                    blank = blank or line_no  # blank lines may end the file, not split its rows
                    continue
                if blank is not None:
                    raise DataError(
                        f"input file {str(path)!r}, line {blank} is blank; every line must be a row of {width} numbers "
                        "(a skipped line would shift the row numbers of the predictions)"
                    )
                row = []
                for col, cell in enumerate(cells, start=1):
                    try:
                        row.append(float(cell))
                    except ValueError:
                        raise DataError(f"input file {str(path)!r}, line {line_no}, column {col}: {cell.strip()[:40]!r} is not a number") from None
                if len(row) != width:
                    raise DataError(f"input file {str(path)!r}, line {line_no}: {len(row)} values, the model expects {width} per row")
                rows.append(row)
        X = np.asarray(rows, dtype=np.float64).reshape(-1, width)
    else:
        raise DataError(f"input file {str(path)!r} must be a .npy or .csv file of rows of {width} numbers")
    if X.ndim != 2 or X.shape[1] != width:
        raise DataError(f"input file {str(path)!r} holds an array of shape {X.shape}; the model expects rows of {width} values")
    if len(X) == 0:
        raise DataError(f"input file {str(path)!r} holds no rows")
    if not np.isfinite(X).all():
        raise DataError(f"input file {str(path)!r} holds NaN or infinite values")
    big = np.abs(X) > np.finfo(np.float32).max
    if big.any():
        r, c = (int(i) for i in np.argwhere(big)[0])
        raise DataError(f"input file {str(path)!r}, row {r}, column {c + 1}: {X[r, c]:g} is beyond the float32 range the model computes in")
    return X.astype(np.float32)


def range_warning(X: Any, training: Any) -> str | None:
    """A one-line warning naming the rows of X with values outside the training inputs' range
    ``[lo, hi]`` widened by RANGE_MARGIN of its span on each side; None when every row is inside."""
    import numpy as np

    lo, hi = (float(v) for v in training)
    margin = RANGE_MARGIN * (hi - lo)
    outside = np.flatnonzero(((X < lo - margin) | (X > hi + margin)).any(axis=1))
    if not len(outside):
        return None
    shown = ", ".join(str(int(i)) for i in outside[:5]) + (f" and {len(outside) - 5} more" if len(outside) > 5 else "")
    return (
        f"warning: row{'s' * (len(outside) > 1)} {shown} (of {len(X)}) {'hold' if len(outside) > 1 else 'holds'} "
        f"values outside [{lo:g}, {hi:g}], "
        "the range of the inputs the model was trained on: its predictions there are guesses"
    )


@app.command()
def predict(
    run_folder: Path = typer.Argument(..., metavar="RUN", help="A run folder written by chainrule train."),
    input_file: Path = typer.Option(..., "--input", "-i", help="A .npy or .csv file of rows (64 pixels in [0, 1] per row for the digits)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per run: a list of predictions."),
) -> None:
    """Predict each row of a file: the class and its probability (labels for multi-label, values for functions)."""
    import numpy as np

    from ..runs import load_run
    from ..train import predict as _predict

    saved = load_run(run_folder)
    X = read_rows(input_file, saved.model.in_features)
    training = saved.metrics.get("input_range") if isinstance(saved.metrics, dict) else None
    if isinstance(training, list) and len(training) == 2 and all(isinstance(v, (int, float)) for v in training):
        warning = range_warning(X, training)
        if warning:
            typer.echo(warning, err=True)
    logits = _predict(saved.model, X)
    from ..data import dataset_info

    info = dataset_info(saved.config.dataset)
    names = list(info.names)
    rows: list = []
    if info.task == "multiclass":
        z = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        for p in probs:
            k = int(p.argmax())
            rows.append({"class": names[k], "probability": float(p[k]), "probabilities": [float(v) for v in p]})
    elif info.task == "multilabel":
        probs = 1.0 / (1.0 + np.exp(-logits))
        for p in probs:
            rows.append({"labels": [n for n, v in zip(names, p) if v > 0.5], "probabilities": {n: float(v) for n, v in zip(names, p)}})
    else:
        rows = [{"value": float(v[0]) if len(v) == 1 else [float(x) for x in v]} for v in logits]
    if as_json:
        typer.echo(json.dumps({"run": str(run_folder), "task": info.task, "predictions": rows}))
        return
    columns = {"multiclass": "row\tclass\tprobability", "multilabel": "row\tlabels\tprobability of each label"}
    typer.echo(columns.get(info.task, "row\tvalue"))  # a header line: tab-separated, as a spreadsheet reads it
    for i, r in enumerate(rows):
        if info.task == "multiclass":
            typer.echo(f"{i}\t{r['class']}\t{r['probability']:.4f}")
        elif info.task == "multilabel":
            typer.echo(f"{i}\t{', '.join(r['labels']) or '(none)'}\t" + " ".join(f"{n}={v:.3f}" for n, v in r["probabilities"].items()))
        else:
            typer.echo(f"{i}\t{r['value']:.6g}")
