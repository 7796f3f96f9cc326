"""Checkpoints: everything training needs to go on exactly where it stopped, in one file.

A checkpoint is one safetensors file (``checkpoint.safetensors`` in a run
folder), written atomically (temporary file, fsync, rename: a crash at any
moment leaves the previous checkpoint whole) and read with the same checks as
a model file (:func:`chainrule.io.read_header`: the header and the model's
shapes before anything is built, then every name, shape, SHA-256 digest and
value). Nothing in it is ever executed.

Arrays:

    model.<name>              every parameter and buffer, as in a model file (``model.0.weight`` ...)
    optimizer.<buffer>.<i>    the optimizer's buffer for parameter i: SGD's ``velocity``,
                              Adam's ``m`` and ``v`` (absent while still empty)

Metadata (JSON strings):

    format         "chainrule-checkpoint/1"
    architecture   the model, as in a model file
    checkpoint     {"config": the run's settings,
                    "position": {"epoch": e, "batch": b, "step": s},   training goes on
                        with batch b (0-based) of epoch e (0-based); s steps are done
                    "epoch_so_far": the epoch's running loss and metric sums, mid-epoch
                        (``EpochSums.to_dict()``: {"task", "loss_sum", "seen", "correct", ...}), else null,
                    "optimizer": {"type": "Adam", "lr": ..., "steps": t, "buffers": {"m": n, ...}},
                    "history": the per-epoch records so far, "seconds": training time so far,
                    "diagnostics": the Monitor's records so far (or null),
                    "rng": how the batch order is drawn, and the state of each Dropout's generator,
                    "reason": "steps", "epochs", "seconds", "minutes" or "interrupt",
                    "first_loss": the run's first loss, for the divergence check (or null)}

Random state: training draws random numbers for the batch order and for
dropout masks. ``cr.fit`` draws epoch e's order from a generator seeded with
(seed, e), so the seed and the position fix it; the dropout layers' generators
are saved as they stand and restored. The weights' initialization is replaced
by the saved weights. So a run resumed from a checkpoint ends with weights
bitwise identical to a run that was never stopped (on the same machine and
NumPy, with BLAS on one thread, as runs use).

Example:
    >>> save_checkpoint("ck.safetensors", model, opt, config={}, epoch=2, batch=5, step=91, history=hist.epochs)
    >>> ck = load_checkpoint("ck.safetensors")
    >>> ck.model, ck.epoch, ck.batch
    >>> cr.fit(ck.model, "cross_entropy", opt, X, y, epochs=4, state=ck.train_state("multiclass"))
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import ChainruleError, ModelFileError
from .metrics import EpochSums
from .train import History, TrainState
from .validation import integer

FORMAT = "chainrule-checkpoint/1"
FILENAME = "checkpoint.safetensors"
UNITS = ("steps", "epochs", "seconds", "minutes")
_SUFFIXES = {"e": "epochs", "s": "seconds", "m": "minutes"}


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on request (Ctrl-C) after a step, with a checkpoint saved to resume from.

    A KeyboardInterrupt, so ``except Exception`` does not swallow it.
    Attributes: ``path`` (the checkpoint), ``epoch`` (1-based), ``step`` (steps done).
    """

    def __init__(self, path: Path, epoch: int, step: int):
        super().__init__(f"interrupted after step {step} (epoch {epoch}); checkpoint saved in {path}")
        self.path, self.epoch, self.step = Path(path), epoch, step


@dataclass
class Checkpoint:
    """A checkpoint read back by :func:`load_checkpoint`.

    ``epoch`` and ``batch`` (0-based) are where training goes on; ``step`` is
    the number of steps done. ``epoch_sums`` are the running sums of the epoch so far
    (:class:`chainrule.metrics.EpochSums`), or None at an epoch's start.
    :meth:`train_state` is what ``cr.fit(..., state=...)`` continues from.
    ``optimizer`` is an ``Optimizer.state_dict()`` plus its "type".
    """

    path: Path
    model: Any
    optimizer: dict
    config: dict
    epoch: int
    batch: int
    step: int
    history: list
    seconds: float = 0.0
    epoch_sums: Any = None
    diagnostics: dict | None = None
    reason: str = "steps"
    info: dict = field(default_factory=dict)

    def train_state(self, task: str) -> TrainState:
        """The :class:`~chainrule.train.TrainState` this checkpoint holds, for ``cr.fit(..., state=...)``:
        the history (with its first loss), the position and the epoch's sums so far.

        Example:
            >>> ck = load_checkpoint("runs/digits/checkpoint.safetensors")
            >>> cr.fit(ck.model, "cross_entropy", opt, X, y, epochs=30, state=ck.train_state("multiclass"))
        """
        history = History(task)
        for record in self.history:
            history.append(record)
        history.steps = self.step
        first = self.info.get("first_loss")
        if isinstance(first, float) and math.isfinite(first):
            history.first_loss = first
        return TrainState(history=history, epoch=self.epoch, next_batch=self.batch, step=self.step, sums=self.epoch_sums)


def _plain(obj: Any) -> Any:
    """json.dumps' fallback for NumPy scalars and arrays."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON data")


def save_checkpoint(
    path: str | os.PathLike,
    model: Any,
    optimizer: Any,
    *,
    config: dict,
    epoch: int,
    batch: int,
    step: int,
    history: list,
    seconds: float = 0.0,
    epoch_sums: Any = None,
    diagnostics: dict | None = None,
    reason: str = "steps",
    first_loss: float | None = None,
) -> Path:
    """Write a checkpoint of ``model`` and ``optimizer`` at a position in training, atomically.

    Args:
        path: the file to write (replaced as a whole; the old one stays whole until the rename).
        model, optimizer: as training holds them (the weights and buffers are copied to disk as they
            are, from host copies when they live on a GPU).
        config: the run's settings (``TrainConfig.to_dict()``), plain JSON data.
        epoch, batch: where training goes on (0-based); step: steps done so far.
        history: the per-epoch records so far (``History.epochs``).
        seconds: training time so far.
        epoch_sums: the running loss and metric sums of the epoch's batches done so far
            (``TrainState.sums``), when stopping mid-epoch.
        diagnostics: the diagnostics Monitor's ``to_dict()``, if one watches.
        reason: the interval's unit, or "interrupt" (kept for the record).
        first_loss: the run's first loss (``History.first_loss``), which divergence is judged against.

    Returns:
        The path written.

    Example:
        >>> save_checkpoint("runs/x/checkpoint.safetensors", model, opt, config=cfg.to_dict(),
        ...                 epoch=3, batch=0, step=129, history=hist.epochs)
    """
    from .io import describe, write_safetensors
    from .nn.dropout import generator_states

    arrays = {f"model.{name}": a for name, a in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    counts = {}
    for name, buffers in opt_state["buffers"].items():
        counts[name] = len(buffers)
        for i, b in enumerate(buffers):
            if b is not None:
                arrays[f"optimizer.{name}.{i}"] = b
    info = {
        "config": config,
        "position": {"epoch": int(epoch), "batch": int(batch), "step": int(step)},
        "epoch_so_far": epoch_sums.to_dict() if epoch_sums is not None and batch else None,
        "optimizer": {"type": type(optimizer).__name__, "lr": float(opt_state["lr"]), "steps": int(opt_state["steps"]), "buffers": counts},
        "history": history,
        "seconds": float(seconds),
        "diagnostics": diagnostics,
        "rng": {
            "batch_order": "numpy.random.default_rng([seed, epoch]).permutation(rows), drawn afresh each epoch",
            "seed": config.get("seed"),
            "dropout": generator_states(model),
        },
        "reason": reason,
        "first_loss": first_loss,
        "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    # NaN and infinities are kept as JSON's NaN/Infinity tokens: the file is read back by Python only
    meta = {"format": FORMAT, "architecture": json.dumps(describe(model)), "checkpoint": json.dumps(info, default=_plain)}
    path = Path(path)
    write_safetensors(path, arrays, meta)
    return path


def _bad(path: Path, what: str) -> ModelFileError:
    return ModelFileError(f"checkpoint {str(path)!r} {what}")


def _int(info: dict, key: str, path: Path, where: str) -> int:
    return integer(f"{where}{key}", info.get(key), 0, error=lambda message: _bad(path, f"has a bad {message}"))


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, checking every part.

    A missing, truncated or corrupt file, a parameter or buffer whose name or
    shape does not fit the architecture, non-finite values, or metadata that
    is not what a checkpoint holds each raise ModelFileError naming the file
    and the part.

    Example:
        >>> ck = load_checkpoint("runs/digits/checkpoint.safetensors")
        >>> ck.step, ck.model
    """
    from .io import model_from, read_header
    from .nn.dropout import set_generator_states
    from .validation import parse_json

    path = Path(path)
    file = read_header(path)
    meta = file.metadata
    if meta.get("format") != FORMAT:
        raise _bad(path, f"is not a chainrule checkpoint: format {str(meta.get('format'))[:80]!r}, expected {FORMAT!r}")
    info = parse_json(meta.get("checkpoint", ""), f"checkpoint {str(path)!r}: metadata field checkpoint", ModelFileError)
    if not isinstance(info, dict):
        raise _bad(path, f"has metadata of type {type(info).__name__}, expected a JSON object")
    unknown = [k for k in file.tensors if not k.startswith(("model.", "optimizer.", "epoch."))]
    if unknown:
        raise _bad(path, f"holds arrays that are not part of a checkpoint: {unknown[:5]}")
    model = model_from(file, str(path), prefix="model.")
    params = model.parameters()
    arrays = file.read(k for k in file.tensors if not k.startswith("model."))  # bounded by the file's size
    rng = info.get("rng")
    states = rng.get("dropout") if isinstance(rng, dict) else None
    try:
        set_generator_states(model, states if isinstance(states, dict) else {})
    except ChainruleError as e:
        raise _bad(path, f"does not fit its model: {e}") from None

    config = info.get("config")
    if not isinstance(config, dict):
        raise _bad(path, f"has no config: expected a JSON object of settings, got {type(config).__name__}")
    position = info.get("position")
    if not isinstance(position, dict):
        raise _bad(path, "has no position (epoch, batch, step)")
    epoch, batch, step = (_int(position, k, path, "position ") for k in ("epoch", "batch", "step"))
    history = info.get("history")
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise _bad(path, "has no history: expected a list of per-epoch records")
    if len(history) != epoch:
        raise _bad(path, f"is inconsistent: position epoch {epoch} but {len(history)} epochs in its history")

    opt = info.get("optimizer")
    if not isinstance(opt, dict) or not isinstance(opt.get("type"), str) or not isinstance(opt.get("buffers"), dict):
        raise _bad(path, "has no optimizer state (type, lr, steps, buffers)")
    lr = opt.get("lr")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise _bad(path, f"has a bad optimizer lr: expected a finite number > 0, got {lr!r}")
    buffers = {}
    for name, count in opt["buffers"].items():
        if count != len(params):
            raise _bad(path, f"has {count!r} optimizer {name!r} buffers for a model of {len(params)} parameters")
        buffers[name] = []
        for i, p in enumerate(params):
            a = arrays.get(f"optimizer.{name}.{i}")
            if a is not None:
                if a.shape != p.data.shape:
                    raise _bad(path, f"has optimizer buffer '{name}.{i}' of shape {a.shape}; its parameter has shape {p.data.shape}")
                if a.dtype.kind != "f" or not np.isfinite(a).all():
                    raise _bad(path, f"has optimizer buffer '{name}.{i}' with non-finite or non-float values")
            buffers[name].append(a)
    extra = [k for k in arrays if k.startswith("optimizer.") and k.split(".")[1] not in buffers]
    if extra:
        raise _bad(path, f"holds optimizer buffers its metadata does not list: {extra[:5]}")
    optimizer = {"type": opt["type"], "lr": float(lr), "steps": _int(opt, "steps", path, "optimizer "), "buffers": buffers}

    so_far = info.get("epoch_so_far")
    sums = None if so_far is None else EpochSums.from_dict(so_far, error=lambda message: _bad(path, f"has bad epoch_so_far: {message}"))
    if sums is not None and sums.seen and batch == 0:
        raise _bad(path, "is inconsistent: rows seen in an epoch whose first batch is still to run")

    diagnostics = info.get("diagnostics")
    if diagnostics is not None and not (isinstance(diagnostics, dict) and isinstance(diagnostics.get("epochs"), list)):
        raise _bad(path, "has diagnostics that are not a Monitor's records")
    seconds = info.get("seconds", 0.0)
    return Checkpoint(
        path=path,
        model=model,
        optimizer=optimizer,
        config=config,
        epoch=epoch,
        batch=batch,
        step=step,
        history=history,
        seconds=float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else 0.0,
        epoch_sums=sums,
        diagnostics=diagnostics,
        reason=str(info.get("reason", "")),
        info=info,
    )


def restore_optimizer(optimizer: Any, checkpoint: Checkpoint) -> None:
    """Load a checkpoint's optimizer state into ``optimizer`` (built for the checkpoint's model).

    Raises ModelFileError when the optimizer's type or parameters differ from the saved one's.
    """
    state = checkpoint.optimizer
    if type(optimizer).__name__ != state["type"]:
        raise _bad(checkpoint.path, f"holds the state of a {state['type']} optimizer, not of {type(optimizer).__name__}")
    own = set(optimizer.state_dict()["buffers"])
    if set(state["buffers"]) != own:
        raise _bad(checkpoint.path, f"holds optimizer buffers {sorted(state['buffers'])}; {type(optimizer).__name__} here keeps {sorted(own)}")
    try:
        optimizer.load_state_dict(state)
    except ChainruleError as e:
        raise _bad(checkpoint.path, f"does not fit the optimizer: {e}") from None


class Checkpointer:
    """A ``cr.fit`` callback that saves checkpoints every N steps or N epochs, and when asked to stop.

    Args:
        path: the checkpoint file (each save replaces it atomically).
        config: the run's settings, stored in each checkpoint.
        every: the interval (0: only on request); unit: "steps", "epochs", "seconds"
            or "minutes" (a timed checkpoint is written after the first step at
            least that long after the previous one, or after the start).
        total_epochs: the run's epochs (no checkpoint is written after the last step).
        seconds: training time before this session (a resumed run's).
        diagnostics: a function returning the diagnostics to store (or None).

    ``request_stop()`` (from a Ctrl-C handler) makes the next ``on_step_end``
    save a checkpoint after that step and raise :class:`TrainingInterrupted`.

    Example:
        >>> ck = Checkpointer("runs/x/checkpoint.safetensors", cfg.to_dict(), every=100)
        >>> cr.fit(model, loss, opt, X, y, epochs=30, callbacks=[ck])
    """

    def __init__(
        self,
        path: str | os.PathLike,
        config: dict,
        every: int = 0,
        unit: str = "steps",
        total_epochs: int | None = None,
        seconds: float = 0.0,
        diagnostics: Callable[[], dict | None] | None = None,
    ):
        if unit not in UNITS:
            raise ChainruleError(f"checkpoint unit must be one of {', '.join(UNITS)}, got {unit!r}")
        self.path = Path(path)
        self.config = config
        self.every = int(every)
        self.unit = unit
        self.total_epochs = total_epochs
        self.seconds = seconds
        self.diagnostics = diagnostics
        self.stop_requested = False
        self.saved_step: int | None = None  # the step of the last checkpoint written by this object
        self._interval = self.every * {"seconds": 1.0, "minutes": 60.0}.get(unit, 0.0)
        self._start = self._last = time.perf_counter()

    def request_stop(self) -> None:
        """Stop after the current step, with a checkpoint (call it from a signal handler)."""
        self.stop_requested = True

    def on_train_begin(self, state: TrainState) -> None:
        self._start = self._last = time.perf_counter()

    def on_step_end(self, state: TrainState) -> None:
        b = state.next_batch
        if self.stop_requested:
            self.save(state, state.epoch, b, state.history.epochs, state.sums, "interrupt")
            raise TrainingInterrupted(self.path, state.epoch + 1, state.step)
        if not self.every or self.unit == "epochs":
            return
        if self.unit == "steps":
            due = state.step % self.every == 0
        else:
            due = time.perf_counter() - self._last >= self._interval
        if due and not (state.epoch + 1 == self.total_epochs and b == state.batches_per_epoch):  # not after the last step
            self.save(state, state.epoch, b, state.history.epochs, state.sums, self.unit)

    def on_epoch_end(self, state: TrainState) -> None:
        done = state.epoch + 1
        if self.unit == "epochs" and self.every and done % self.every == 0 and done != self.total_epochs:
            # fit appends the record to the history after the callbacks: save it with the rest
            self.save(state, done, 0, [*state.history.epochs, state.record], None, "epochs")

    def save(self, state: TrainState, epoch: int, batch: int, history: list, sums: EpochSums | None, reason: str) -> Path:
        """Write the checkpoint for a position; returns its path.

        Weights that hold NaN or an infinity are never written: DivergenceError is raised
        instead, and the last good checkpoint stays.
        """
        from .errors import DivergenceError
        from .train import nonfinite_parameter

        bad = nonfinite_parameter(state.model)
        if bad is not None:
            raise DivergenceError(
                f"parameter {bad!r} became NaN or infinite by step {state.step}, though the loss stayed finite; "
                f"the learning rate ({getattr(state.optimizer, 'lr', '?')}) is likely too large: try a smaller one"
            )
        diagnostics = self.diagnostics() if self.diagnostics is not None else None
        save_checkpoint(
            self.path,
            state.model,
            state.optimizer,
            config=self.config,
            epoch=epoch,
            batch=batch,
            step=state.step,
            history=list(history),
            seconds=self.seconds + time.perf_counter() - self._start,
            epoch_sums=sums,
            diagnostics=diagnostics,
            reason=reason,
            first_loss=state.history.first_loss,
        )
        self.saved_step = state.step
        self._last = time.perf_counter()
        return self.path


def parse_interval(value: Any) -> tuple:
    """A checkpoint interval from ``N`` or ``"N"`` (steps), ``"Ne"`` (epochs), ``"Ns"`` (seconds)
    or ``"Nm"`` (minutes); 0 is off. Returns (N, unit).

    Example:
        >>> parse_interval("200"), parse_interval("2e"), parse_interval("10m"), parse_interval(0)
        ((200, 'steps'), (2, 'epochs'), (10, 'minutes'), (0, 'steps'))
    """
    text = str(value).strip().lower().replace(" ", "")
    unit = "steps"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, str)):
        text = ""
    elif text[-1:] in _SUFFIXES:
        text, unit = text[:-1], _SUFFIXES[text[-1]]
    if not (text.isascii() and text.isdigit()):
        raise ChainruleError(
            "checkpoint_every must be a number of steps (such as 500), of epochs (2e), of seconds (30s) "
            f"or of minutes (10m), or 0 for none; got {value!r}"
        )
    n = int(text)
    return n, unit if n else "steps"


def format_interval(n: int, unit: str) -> int | str:
    """The canonical form of an interval: an int for steps, ``"Ne"``, ``"Ns"`` or ``"Nm"`` otherwise."""
    return n if unit == "steps" or not n else f"{n}{unit[0]}"


__all__ = [
    "FILENAME",
    "FORMAT",
    "Checkpoint",
    "Checkpointer",
    "TrainingInterrupted",
    "format_interval",
    "load_checkpoint",
    "parse_interval",
    "restore_optimizer",
    "save_checkpoint",
]
