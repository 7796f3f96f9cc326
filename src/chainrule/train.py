"""The training loop (``cr.fit``), evaluation and prediction: one explicit function each.

fit's steps, top to bottom: check the data; for each epoch, shuffle with a
generator seeded by (seed, epoch); for each mini-batch, forward, loss,
zero_grad, backward, optimizer step, callbacks; at the end of the epoch,
validation and callbacks. The history is plain data (lists of numbers).

Devices: the model runs where its first parameter lives (NumPy, CuPy, any
array-API namespace). X and y are checked on the host as NumPy arrays; each
batch goes to the model's device (the whole data set once, when it is small
enough, and batches are gathered there); losses and metrics come back as
Python floats, and ``predict`` returns NumPy arrays.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from . import functional as F
from .autograd import leaf, no_grad
from .backend import asarray, namespace, to_numpy
from .errors import DivergenceError
from .metrics import task_metrics
from .validation import as_array, check_features, check_finite, check_not_empty, check_targets, check_validation, integer

LOSSES = {
    "cross_entropy": F.cross_entropy,
    "mse": F.mse_loss,
    "bce": F.binary_cross_entropy_with_logits,
}
_TASK_OF_LOSS = {F.cross_entropy: "multiclass", F.binary_cross_entropy_with_logits: "multilabel", F.mse_loss: "regression"}


def get_loss(loss: Any) -> Callable:
    """A loss function from a name ("cross_entropy", "mse", "bce") or a callable (returned as is)."""
    if callable(loss):
        return loss
    fn = LOSSES.get(str(loss).lower().replace("-", "_"))
    if fn is None:
        from .errors import ChainruleError

        raise ChainruleError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)} or a function")
    return fn


def infer_task(loss_fn: Callable, y: np.ndarray) -> str:
    """"multiclass", "multilabel" or "regression", from the loss (or, for a custom loss, from y)."""
    task = _TASK_OF_LOSS.get(loss_fn)
    if task:
        return task
    return "multiclass" if (y.ndim == 1 and y.dtype.kind in "iub") else "regression"


# Training stops with DivergenceError when a batch's loss exceeds this many times the run's
# first loss (or 1, if that was smaller): a loss a million times where it started has diverged,
# whatever the task (cross-entropy starts near log(classes), a standardized regression near 1).
DIVERGENCE_FACTOR = 1e6


def nonfinite_parameter(model: Any) -> str | None:
    """The name of the first parameter of ``model`` holding NaN or an infinity, or None."""
    for name, p in getattr(model, "named_parameters", lambda: [])():
        d = p.data
        xp = namespace(d)
        if not bool(xp.all(xp.isfinite(d))):
            return name
    return None


class History:
    """What fit measured, as plain data.

    ``history`` maps a metric name ("loss", "accuracy", "val_loss", ...) to a
    list with one number per epoch; ``epochs`` is the list of per-epoch dicts
    (with callbacks' extra records, such as the diagnostics). ``history["loss"]``
    also works on the History itself.
    """

    def __init__(self, task: str):
        self.task = task
        self.epochs: list = []
        self.history: dict = {}
        self.steps = 0
        self.seconds = 0.0
        self.first_loss: float | None = None  # the first step's loss: divergence is judged against it

    def append(self, record: dict) -> None:
        self.epochs.append(record)
        for k, v in record.items():
            if isinstance(v, (int, float)):
                self.history.setdefault(k, []).append(v)

    def __getitem__(self, name: str) -> list:
        return self.history[name]

    def last(self, name: str, default: Any = None) -> Any:
        values = self.history.get(name)
        return values[-1] if values else default

    def to_dict(self) -> dict:
        return {"task": self.task, "steps": self.steps, "seconds": self.seconds, "first_loss": self.first_loss, "epochs": self.epochs}

    def __repr__(self) -> str:
        last = ", ".join(f"{k}={v[-1]:.4g}" for k, v in self.history.items() if k != "epoch")
        return f"History({len(self.epochs)} epochs, {self.task}: {last})"


class TrainState:
    """What callbacks see: the model, optimizer, position in training and the last batch's loss.

    A callback may set ``stop = True`` to end training after the current step.
    ``epoch_loss_sum``, ``epoch_seen`` and ``epoch_outputs`` (``[(outputs, row
    indices)]`` per batch) are the current epoch's running totals, from which
    its training metrics are computed; a checkpoint keeps them so that a
    resumed epoch reports what an uninterrupted one would.
    """

    def __init__(self, model: Any, optimizer: Any, loss_fn: Callable, history: History):
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.history = history
        self.epoch = 0
        self.step = 0  # steps taken so far, over all epochs
        self.batch_index = 0  # within the epoch
        self.batches_per_epoch = 0
        self.loss = math.nan
        self.xb: Any = None
        self.yb: Any = None
        self.output: Any = None
        self.record: dict = {}
        self.stop = False
        self.epoch_loss_sum = 0.0
        self.epoch_seen = 0
        self.epoch_outputs: list = []


def _call(callbacks: Sequence, hook: str, state: TrainState) -> None:
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(state)


def _model_in_features(model: Any) -> int | None:
    n = getattr(model, "in_features", None)
    if isinstance(n, int):
        return n
    for m in getattr(model, "modules", lambda: [])():
        n = getattr(m, "in_features", None)
        if isinstance(n, int):
            return n
    return None


def _model_out_features(model: Any) -> int | None:
    n = getattr(model, "out_features", None)
    if isinstance(n, int):
        return n
    last = None
    for m in getattr(model, "modules", lambda: [])():
        n = getattr(m, "out_features", None)
        if isinstance(n, int):
            last = n
    return last


# On a device (not NumPy), fit copies X and y there once when together they take at most this
# many bytes, and gathers each batch there; larger data is gathered on the host batch by batch.
DEVICE_DATA_BYTES = 1 << 30


def _model_array(model: Any) -> Any:
    """The first parameter's array: its namespace and device are the model's (None without parameters)."""
    params = model.parameters() if hasattr(model, "parameters") else []
    return params[0].data if params else None


def _host_dtype(a: Any) -> np.dtype:
    """The NumPy dtype that matches array ``a``'s floating-point dtype, in any namespace."""
    if isinstance(a.dtype, np.dtype):
        return a.dtype
    xp = namespace(a)
    for name in ("float32", "float64", "float16"):
        if a.dtype == getattr(xp, name, None):
            return np.dtype(name)
    return np.dtype(np.float32)


def _model_dtype(model: Any) -> np.dtype:
    like = _model_array(model)
    return np.dtype(np.float32) if like is None else _host_dtype(like)


def _on_device(like: Any) -> bool:
    """Whether arrays like ``like`` live outside NumPy (so batches must be copied to them)."""
    return like is not None and type(like) is not np.ndarray


class _DeviceBatches:
    """Rows of host arrays (X, y) as arrays in the namespace and on the device of ``like``.

    When the arrays are small enough they are copied to the device once and each
    batch is gathered there (``xp.take``) with the epoch's order, itself copied once
    per epoch; otherwise each batch is gathered on the host and then copied.
    """

    def __init__(self, like: Any, *arrays: np.ndarray):
        self.like, self.host, self.xp = like, arrays, namespace(like)
        fits = sum(a.nbytes for a in arrays) <= DEVICE_DATA_BYTES
        self.device = [asarray(a, like=like) for a in arrays] if fits else None
        self.order: Any = None

    def epoch(self, order: np.ndarray) -> None:
        if self.device is not None:
            self.order = asarray(order, like=self.like)

    def rows(self, idx: np.ndarray, start: int) -> list:
        """The rows ``idx`` of each array, ``idx`` being ``order[start : start + len(idx)]``."""
        if self.device is None:
            return [asarray(a[idx], like=self.like) for a in self.host]
        i = self.order[start : start + idx.shape[0]]  # array-API slices must stay in bounds
        return [self.xp.take(a, i, axis=0) for a in self.device]


def _to_host(parts: list) -> np.ndarray:
    """Arrays of one namespace or several, joined in order as one NumPy array; device arrays
    are joined on their device first, so each run of them costs one copy to the host."""
    out, run = [], []
    for a in parts:
        if type(a) is np.ndarray:
            if run:
                out.append(to_numpy(namespace(run[0]).concat(run)))
                run = []
            out.append(a)
        else:
            run.append(a)
    if run:
        out.append(to_numpy(namespace(run[0]).concat(run)))
    return out[0] if len(out) == 1 else np.concatenate(out)


def check_batches(model: Any, rows: int, batch_size: int) -> None:
    """Refuse, before any step, batches smaller than a layer of ``model`` needs in training
    (``min_batch_rows``: batch normalization needs two rows to take a variance), including the
    last, shorter batch of an epoch.

    Example:
        >>> check_batches(nn.MLP([64, 32, 10], norm="batch"), rows=1347, batch_size=32)   # last batch: 3 rows
    """
    need = max((getattr(m, "min_batch_rows", 1) for m in getattr(model, "modules", lambda: [])()), default=1)
    smallest = min(batch_size, rows % batch_size or batch_size)
    if smallest < need:
        from .errors import ChainruleError

        layer = next(type(m).__name__ for m in model.modules() if getattr(m, "min_batch_rows", 1) == need)
        raise ChainruleError(
            f"{layer} needs at least {need} rows in every training batch, but {rows} rows in batches of {batch_size} "
            f"leave a batch of {smallest}; choose another batch size"
        )


def prepare(model: Any, loss_fn: Callable, X: Any, y: Any, task: str | None = None, name: str = "") -> tuple:
    """Checked float32 X and fitting y for ``model`` and ``loss_fn`` (raising chainrule's errors)."""
    X = as_array(f"X{name}", X)
    y = as_array(f"y{name}", y)
    check_features(f"X{name}", X, _model_in_features(model))
    check_not_empty(f"X{name}", X)
    if y.ndim == 0 or len(X) != len(y):
        from .errors import ShapeError

        rows_y = f"{len(y)} of y" if y.ndim else "a single number as y"
        raise ShapeError(f"X{name} and y{name} must have one row per sample, got {len(X)} rows of X and {rows_y}")
    check_finite(f"X{name}", X)
    dtype = _model_dtype(model)
    if X.dtype != dtype:
        with np.errstate(over="ignore"):  # values beyond the dtype's range are refused just below, by name
            X = X.astype(dtype)
        check_finite(f"X{name} (as {dtype})", X)
    task = task or infer_task(loss_fn, y)
    y = check_targets(task, y, _model_out_features(model), name=f"y{name}")
    if task == "regression" and y.ndim == 1 and _model_out_features(model) == 1:
        y = y.reshape(-1, 1)
    return X, y, task


def fit(
    model: Any,
    loss_fn: Any,
    optimizer: Any,
    X: Any,
    y: Any,
    epochs: int = 10,
    batch_size: int = 32,
    validation: tuple | None = None,
    seed: int = 0,
    callbacks: Sequence = (),
    progress: bool = True,
    task: str | None = None,
    scheduler: Any = None,
    shuffle: bool = True,
    initial_epoch: int = 0,
    initial_batch: int = 0,
    history: History | None = None,
    partial_epoch: tuple | None = None,
) -> History:
    """Train ``model`` by mini-batch gradient descent and return its History.

    Args:
        model: a Module (or any callable from a Tensor to a Tensor with ``parameters()``).
        loss_fn: ``loss_fn(output, target) -> scalar Tensor``, or a name:
            "cross_entropy", "mse", "bce".
        optimizer: from :mod:`chainrule.optim`.
        X, y: arrays; y holds class indices, probabilities, multi-hot rows or values.
        epochs, batch_size: passes over the data and rows per step.
        validation: optional (X_val, y_val), measured at the end of each epoch.
        seed: the order of the batches in epoch e comes from a generator
            seeded with (seed, e), so runs repeat exactly and a run can resume
            at any epoch.
        callbacks: objects with any of ``on_train_begin``, ``on_step_end``,
            ``on_epoch_end``, ``on_train_end``, each called with the TrainState.
        progress: show a progress bar (only when the output is a terminal).
        task: "multiclass", "multilabel" or "regression"; inferred from the loss by default.
        scheduler: a learning-rate schedule, stepped after each epoch.
        initial_epoch, initial_batch: where to start (resuming from a checkpoint):
            the 0-based epoch and its first batch still to run.
        history: the History to continue (resuming); a new one by default.
        partial_epoch: ``(loss_sum, rows_seen, [(outputs, row_indices), ...])`` of
            the batches of ``initial_epoch`` already done before a resume, so that
            epoch's training metrics equal an uninterrupted run's
            (:mod:`chainrule.checkpoint` keeps and restores them).

    Raises:
        DivergenceError: the loss became NaN or infinite, or rose above
            DIVERGENCE_FACTOR (10^6) times the first step's loss (or 1, if that
            was smaller), kept in ``history.first_loss``. Training stops at that
            step, before its backward pass; callbacks with ``on_divergence(state,
            error)`` are told first.

    Example:
        >>> model = nn.MLP([64, 128, 10])
        >>> opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> hist = cr.fit(model, F.cross_entropy, opt, X, y, epochs=10, validation=(Xv, yv))
        >>> hist["val_accuracy"][-1]
    """
    loss_fn = get_loss(loss_fn)
    X, y, task = prepare(model, loss_fn, X, y, task)
    epochs = integer("epochs", epochs, 0)
    batch_size = integer("batch_size", batch_size, 1)
    seed = integer("seed", seed, 0)
    if validation is not None:
        Xv, yv = check_validation(validation)
        Xv, yv, _ = prepare(model, loss_fn, Xv, yv, task, name="_val")
    history = history or History(task)
    state = TrainState(model, optimizer, loss_fn, history)
    n = len(X)
    check_batches(model, n, batch_size)
    nb = (n + batch_size - 1) // batch_size
    initial_epoch = integer("initial_epoch", initial_epoch, 0)
    initial_batch = integer("initial_batch", initial_batch, 0)
    if initial_batch > nb:
        from .errors import ChainruleError

        raise ChainruleError(f"initial_batch must be in [0, {nb}] (batches per epoch), got {initial_batch}")
    like = _model_array(model)
    feed = _DeviceBatches(like, X, y) if _on_device(like) else None  # None: NumPy, batches are X[idx]
    state.batches_per_epoch = nb
    state.epoch = initial_epoch
    state.step = initial_epoch * nb + initial_batch
    bar = _progress_bar(progress, epochs - initial_epoch, nb)
    if hasattr(model, "train"):
        model.train()
    _call(callbacks, "on_train_begin", state)
    start = time.perf_counter()
    try:
        for epoch in range(initial_epoch, epochs):
            state.epoch = epoch
            order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
            if feed is not None:
                feed.epoch(order)
            total_loss, outputs, seen = 0.0, [], 0
            first = initial_batch if epoch == initial_epoch else 0
            if first and partial_epoch is not None:
                total_loss, seen, outputs = float(partial_epoch[0]), int(partial_epoch[1]), list(partial_epoch[2])
            state.epoch_loss_sum, state.epoch_seen, state.epoch_outputs = total_loss, seen, outputs
            for b in range(first, nb):
                idx = order[b * batch_size : (b + 1) * batch_size]
                if feed is None:
                    xb, yb = leaf(X[idx]), leaf(y[idx])
                else:
                    xb, yb = (leaf(a) for a in feed.rows(idx, b * batch_size))
                out = model(xb)
                loss = loss_fn(out, yb)
                value = float(loss.data)  # a 0-d array of any namespace (a GPU waits for the step here)
                if history.first_loss is None and math.isfinite(value):
                    history.first_loss = value
                bound = DIVERGENCE_FACTOR * max(history.first_loss or 1.0, 1.0)
                if not math.isfinite(value) or value > bound:
                    what = f"became {value}" if not math.isfinite(value) else (
                        f"reached {value:.3g}, more than {DIVERGENCE_FACTOR:g} times the first step's {history.first_loss:.3g}"
                    )
                    error = DivergenceError(
                        f"the loss {what} at step {state.step + 1} (epoch {epoch + 1}, batch {b + 1}); "
                        f"the learning rate ({getattr(optimizer, 'lr', '?')}) is likely too large: try a smaller one"
                    )
                    state.loss, state.batch_index = value, b
                    for cb in callbacks:
                        if hasattr(cb, "on_divergence"):
                            cb.on_divergence(state, error)
                    raise error
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                state.step += 1
                state.batch_index = b
                state.loss, state.xb, state.yb, state.output = value, xb, yb, out
                total_loss += value * len(idx)
                seen += len(idx)
                outputs.append((out.data, idx))
                state.epoch_loss_sum, state.epoch_seen = total_loss, seen
                _call(callbacks, "on_step_end", state)
                if bar is not None:
                    bar.update(epoch, b + 1, value)
                if state.stop:
                    break
            record = {"epoch": epoch + 1, "loss": total_loss / max(seen, 1), "lr": float(getattr(optimizer, "lr", math.nan))}
            if seen:
                out_all = _to_host([o for o, _ in outputs])
                y_all = y[np.concatenate([i for _, i in outputs])]
                record.update(task_metrics(task, out_all, y_all))
            if validation is not None:
                for k, v in evaluate(model, loss_fn, Xv, yv, batch_size=max(batch_size, 1024), task=task, _checked=True).items():
                    record[f"val_{k}"] = v
                if hasattr(model, "train"):
                    model.train()
            state.record = record
            _call(callbacks, "on_epoch_end", state)
            history.append(record)
            if bar is not None:
                bar.epoch_done(record)
            if scheduler is not None:
                scheduler.step()
            if state.stop:
                break
    finally:
        history.steps = state.step
        history.seconds += time.perf_counter() - start
        if bar is not None:
            bar.close()
    _call(callbacks, "on_train_end", state)
    return history


def predict(model: Any, X: Any, batch_size: int = 1024) -> np.ndarray:
    """The model's outputs (logits for classifiers) on X, in batches, with no graph recorded.

    X is a NumPy array (or array-like) on the host; the outputs come back as a
    NumPy array wherever the model runs.

    Raises DataError or ShapeError (naming X, what was expected and what came)
    for non-numeric, empty, NaN or infinite input and a wrong feature count.

    Example:
        >>> logits = cr.predict(model, X_test)      # (samples, outputs)
    """
    X = as_array("X", X)
    check_features("X", X, _model_in_features(model))
    check_not_empty("X", X)
    check_finite("X", X)
    batch_size = integer("batch_size", batch_size, 1)
    if X.dtype != _model_dtype(model):
        X = X.astype(_model_dtype(model))
    return to_numpy(_outputs(model, X, batch_size))


def _outputs(model: Any, X: np.ndarray, batch_size: int) -> Any:
    """The model's outputs on checked host X, in the model's namespace and on its device."""
    like = _model_array(model)
    device = _on_device(like)
    if device and X.nbytes <= DEVICE_DATA_BYTES:
        X = asarray(X, like=like)  # one copy to the device; the batches are slices of it there
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with no_grad():
            parts = []
            n = X.shape[0]
            for i in range(0, n, batch_size):
                xb = X[i : min(i + batch_size, n), ...]  # array-API slices: in bounds, every axis named
                if type(xb) is np.ndarray and device:
                    xb = asarray(xb, like=like)
                parts.append(model(leaf(xb)).data)
    finally:
        if was_training:
            model.train()
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if type(parts[0]) is np.ndarray else namespace(parts[0]).concat(parts)


def evaluate(model: Any, loss_fn: Any, X: Any, y: Any, batch_size: int = 1024, task: str | None = None, _checked: bool = False) -> dict:
    """Loss and task metrics of ``model`` on (X, y): {"loss": ..., "accuracy": ...} and so on.

    X and y are checked as :func:`fit` checks them (chainrule's errors, before any work).
    The loss is computed where the model runs; the metrics on a host copy of the outputs.

    Example:
        >>> cr.evaluate(model, "cross_entropy", X_test, y_test)["accuracy"]
    """
    loss_fn = get_loss(loss_fn)
    if not _checked:
        X, y, task = prepare(model, loss_fn, X, y, task)
    task = task or infer_task(loss_fn, np.asarray(y))
    batch_size = integer("batch_size", batch_size, 1)
    out = _outputs(model, X, batch_size)
    with no_grad():
        loss = float(loss_fn(leaf(out), leaf(asarray(y, like=out))).data)
    return {"loss": loss, **task_metrics(task, to_numpy(out), y)}


class _ProgressBar:
    def __init__(self, epochs: int, batches: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.task = self.progress.add_task("train", total=epochs * batches, epoch=1, loss="-")
        self.batches = batches
        self.done = 0
        self.progress.start()

    def update(self, epoch: int, batch: int, loss: float) -> None:
        self.done += 1
        if self.done % 8 == 0 or batch == self.batches:
            self.progress.update(self.task, completed=self.done, epoch=epoch + 1, loss=f"{loss:.4f}")

    def epoch_done(self, record: dict) -> None:
        pass

    def close(self) -> None:
        self.progress.stop()


def _progress_bar(progress: bool, epochs: int, batches: int) -> _ProgressBar | None:
    if not progress or epochs <= 0:
        return None
    if not (sys.stderr.isatty() or sys.stdout.isatty() or _in_notebook()):
        return None
    return _ProgressBar(epochs, batches)


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules
