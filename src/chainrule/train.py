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
from .metrics import EpochSums, task_metrics
from .train_step import training_step
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
    """Everything fit knows about a run in progress, in one place.

    Callbacks receive it after each step and epoch; a checkpoint keeps what resuming needs
    (the history, the position and the epoch's running sums), and ``fit(..., state=...)``
    continues from such a state, so resuming is restoring a state.

    Position: ``epoch`` (0-based), ``next_batch`` (of that epoch, the first still to run),
    ``step`` (steps done over all epochs). After a step: ``batch_index`` (the batch just
    done), ``loss``, ``xb``, ``yb``, ``output``; ``sums`` holds the epoch's running loss and
    metric sums (:class:`chainrule.metrics.EpochSums`); ``record`` is the last epoch's record.
    A callback may set ``stop = True`` to end training after the current step.

    Example:
        >>> state = TrainState(history=ck_history, epoch=2, next_batch=5, step=31)
        >>> cr.fit(model, "cross_entropy", opt, X, y, epochs=4, state=state)
    """

    def __init__(
        self, model: Any = None, optimizer: Any = None, loss_fn: Callable | None = None, history: History | None = None,
        epoch: int = 0, next_batch: int = 0, step: int = 0, sums: EpochSums | None = None,
    ):
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.history = history
        self.epoch = epoch
        self.next_batch = next_batch
        self.step = step
        self.sums = sums
        self.batch_index = 0
        self.batches_per_epoch = 0
        self.loss = math.nan
        self.xb: Any = None
        self.yb: Any = None
        self.output: Any = None
        self.record: dict = {}
        self.stop = False


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
    state: TrainState | None = None,
    compile: bool = True,
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
        state: a :class:`TrainState` to continue from (its history, position and the epoch's
            sums so far; :meth:`chainrule.checkpoint.Checkpoint.train_state` restores one), so
            that a resumed run ends as the same run never stopped. A new one by default.
        compile: run each step through :func:`chainrule.compile`: recorded once per batch
            shape, then replayed on buffers allocated once, bit-identical to eager (see
            "Speed: eager and compiled"); on a GPU (CuPy) the replay is captured as CUDA
            graphs. ``False`` runs every step eagerly.

    NumPy's overflow, invalid-value and divide-by-zero warnings are silenced while training:
    a loss on its way to NaN is reported once, as the DivergenceError.

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
        validation = prepare(model, loss_fn, Xv, yv, task, name="_val")[:2]
    n = len(X)
    check_batches(model, n, batch_size)
    nb = (n + batch_size - 1) // batch_size
    state = state if state is not None else TrainState()
    state.model, state.optimizer, state.loss_fn, state.batches_per_epoch = model, optimizer, loss_fn, nb
    state.history = history = state.history if state.history is not None else History(task)
    if not 0 <= state.next_batch <= nb:
        from .errors import ChainruleError

        raise ChainruleError(f"the state's next_batch must be in [0, {nb}] (batches per epoch), got {state.next_batch}")
    like = _model_array(model)
    feed = _DeviceBatches(like, X, y) if _on_device(like) else None  # None: NumPy, batches are X[idx]
    bar = _progress_bar(progress, epochs - state.epoch, nb)
    if hasattr(model, "train"):
        model.train()

    def check(loss: Any) -> None:  # after the forward pass, before backward: the loss on the host
        state.loss = float(loss)  # (a GPU waits for the step here)
        _check_divergence(state, state.loss, state.batch_index, callbacks)

    # replayed: on NumPy with out=, on CuPy as CUDA graphs (chainrule.capture, capture_foreign)
    step = training_step(model, loss_fn, optimizer, check, compile=compile)
    start = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        _call(callbacks, "on_train_begin", state)
        try:
            for epoch in range(state.epoch, epochs):
                state.epoch = epoch
                order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
                if feed is not None:
                    feed.epoch(order)
                if not state.next_batch or state.sums is None:  # a resumed epoch goes on with its sums so far
                    state.sums = EpochSums(task)
                for b in range(state.next_batch, nb):
                    idx = order[b * batch_size : (b + 1) * batch_size]
                    if feed is None:
                        xb, yb = leaf(X[idx]), leaf(y[idx])
                    else:
                        xb, yb = (leaf(a) for a in feed.rows(idx, b * batch_size))
                    _train_step(state, step, b, xb, yb, y[idx], callbacks)
                    if bar is not None:
                        bar.update(epoch, b + 1, state.loss)
                    if state.stop:
                        break
                _end_epoch(state, task, validation, batch_size, scheduler, callbacks)
                if state.stop:
                    break
        finally:
            history.steps = state.step
            history.seconds += time.perf_counter() - start
            if bar is not None:
                bar.close()
        _call(callbacks, "on_train_end", state)
    return history


def _train_step(state: TrainState, step: Callable, b: int, xb: Any, yb: Any, y_host: np.ndarray, callbacks: Sequence) -> None:
    """One step on batch ``b``: ``step`` (forward, loss, the divergence check, backward, update;
    :func:`chainrule.train_step.training_step`), then the sums and the callbacks."""
    state.batch_index = b
    out, _ = step(xb, yb)  # (compiled, ``out`` holds the step's buffer until the next step)
    state.step += 1
    state.next_batch = b + 1
    state.xb, state.yb, state.output = xb, yb, out
    state.sums.add(out.data, y_host, state.loss)
    _call(callbacks, "on_step_end", state)


def _check_divergence(state: TrainState, value: float, b: int, callbacks: Sequence) -> None:
    """Raise DivergenceError (callbacks' ``on_divergence`` first) when the loss ``value`` of batch
    ``b`` is not finite or above DIVERGENCE_FACTOR times the first one (kept in the history)."""
    history = state.history
    if history.first_loss is None and math.isfinite(value):
        history.first_loss = value
    bound = DIVERGENCE_FACTOR * max(history.first_loss or 1.0, 1.0)
    if math.isfinite(value) and value <= bound:
        return
    what = f"became {value}" if not math.isfinite(value) else (
        f"reached {value:.3g}, more than {DIVERGENCE_FACTOR:g} times the first step's {history.first_loss:.3g}"
    )
    error = DivergenceError(
        f"the loss {what} at step {state.step + 1} (epoch {state.epoch + 1}, batch {b + 1}); "
        f"the learning rate ({getattr(state.optimizer, 'lr', '?')}) is likely too large: try a smaller one"
    )
    state.loss, state.batch_index = value, b
    for cb in callbacks:
        if hasattr(cb, "on_divergence"):
            cb.on_divergence(state, error)
    raise error


def _end_epoch(state: TrainState, task: str, validation: tuple | None, batch_size: int, scheduler: Any, callbacks: Sequence) -> None:
    """The epoch's record (training sums, validation), the callbacks, the history and the schedule."""
    model = state.model
    sums = state.sums.result()
    record = {"epoch": state.epoch + 1, "loss": sums.pop("loss"), "lr": float(getattr(state.optimizer, "lr", math.nan)), **sums}
    if validation is not None:
        for k, v in evaluate(model, state.loss_fn, *validation, batch_size=max(batch_size, 1024), task=task, _checked=True).items():
            record[f"val_{k}"] = v
        if hasattr(model, "train"):
            model.train()
    state.record = record
    _call(callbacks, "on_epoch_end", state)
    state.history.append(record)
    state.next_batch = 0
    if scheduler is not None:
        scheduler.step()


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
    return score(loss_fn, _outputs(model, X, batch_size), y, task)


def score(loss_fn: Callable, outputs: Any, y: np.ndarray, task: str) -> dict:
    """The loss and the task's metrics of a model's ``outputs`` (any namespace) against checked
    host targets ``y``: what :func:`evaluate` reports, for a caller that has the outputs already.

    Example:
        >>> score(F.cross_entropy, cr.predict(model, X_test), y_test, "multiclass")["accuracy"]
    """
    with no_grad():
        loss = float(loss_fn(leaf(outputs), leaf(asarray(y, like=outputs))).data)
    return {"loss": loss, **task_metrics(task, to_numpy(outputs), y)}


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
