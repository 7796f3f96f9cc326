"""Metrics: accuracy, multi-label scores, regression error, calibration.

They are per-epoch summaries, computed with NumPy on the host: arrays of another
namespace (a GPU's) are copied there first (``backend.to_numpy``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import to_numpy
from .validation import number


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose largest logit is the label (labels as indices or one-hot/soft rows)."""
    logits, labels = to_numpy(logits), to_numpy(labels)
    labels = labels.argmax(axis=1) if labels.ndim == 2 else labels
    return float(np.mean(logits.argmax(axis=1) == labels)) if len(labels) else float("nan")


def multilabel_scores(logits: np.ndarray, targets: np.ndarray, threshold: float = 0.0) -> dict:
    """Subset accuracy, micro-F1 and Hamming loss of ``logits > threshold`` (probability 0.5)."""
    logits, targets = to_numpy(logits), to_numpy(targets)
    pred = logits > threshold
    true = targets >= 0.5
    tp = float(np.sum(pred & true))
    fp = float(np.sum(pred & ~true))
    fn = float(np.sum(~pred & true))
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0
    return {
        "subset_accuracy": float(np.mean(np.all(pred == true, axis=1))),
        "micro_f1": f1,
        "hamming_loss": float(np.mean(pred != true)),
    }


def mse(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error, ``mean((pred - target)^2)``."""
    pred, target = to_numpy(pred), to_numpy(target)
    return float(np.mean((pred - target.reshape(pred.shape)) ** 2))


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``m[true, predicted]``."""
    labels, predicted = to_numpy(labels), to_numpy(predicted)
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (labels.astype(np.int64), predicted.astype(np.int64)), 1)
    return m


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: the gap between confidence and accuracy, averaged over confidence bins weighted by size."""
    probs, labels = to_numpy(probs), to_numpy(labels)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return float(ece)


def task_metrics(task: str, outputs: np.ndarray, y: np.ndarray) -> dict:
    """The metrics fit reports for a task: "multiclass", "multilabel" or "regression"."""
    if task == "multiclass":
        return {"accuracy": accuracy(outputs, y)}
    if task == "multilabel":
        return multilabel_scores(outputs, y)
    return {"mse": mse(outputs, y)}


# The counts and sums each task's training metrics are made of, besides the loss's.
_SUMS = {
    "multiclass": ("correct",),
    "multilabel": ("exact", "tp", "fp", "fn", "wrong", "cells"),
    "regression": ("squared_error", "cells"),
}


class EpochSums:
    """An epoch's training loss and metrics, summed batch by batch as fit trains.

    Every metric fit reports is a ratio of sums and counts, so nothing of the epoch's
    outputs is kept: :meth:`result` gives what :func:`task_metrics` gives on all of them at
    once (the counts exactly; the squared error summed in float64), and a checkpoint stores
    the sums (:meth:`to_dict`) so that a resumed epoch reports what an uninterrupted one would.

    Example:
        >>> sums = EpochSums("multiclass")
        >>> sums.add(np.array([[2.0, 1.0], [0.0, 3.0]]), np.array([0, 0]), loss=0.7)
        >>> sums.result()
        {'loss': 0.7, 'accuracy': 0.5}
    """

    def __init__(self, task: str, loss_sum: float = 0.0, seen: int = 0, **sums: float):
        self.task = task
        self.loss_sum = loss_sum
        self.seen = seen
        self.sums = {k: sums.get(k, 0) for k in _SUMS[task]}

    def add(self, outputs: Any, y: np.ndarray, loss: float) -> None:
        """Add one batch: its outputs (any namespace), host targets ``y`` and mean ``loss``."""
        out, s = to_numpy(outputs), self.sums
        self.loss_sum += loss * len(y)
        self.seen += len(y)
        if self.task == "multiclass":
            labels = y.argmax(axis=1) if y.ndim == 2 else y
            s["correct"] += int(np.sum(out.argmax(axis=1) == labels))
        elif self.task == "multilabel":
            pred, true = out > 0.0, y >= 0.5
            s["exact"] += int(np.sum(np.all(pred == true, axis=1)))
            s["tp"] += int(np.sum(pred & true))
            s["fp"] += int(np.sum(pred & ~true))
            s["fn"] += int(np.sum(~pred & true))
            s["wrong"] += int(np.sum(pred != true))
            s["cells"] += pred.size
        else:
            d = out - y.reshape(out.shape)
            s["squared_error"] += float(np.sum(d * d, dtype=np.float64))
            s["cells"] += d.size

    def result(self) -> dict:
        """{"loss": mean loss per row, and the task's metrics}, as :func:`task_metrics` names them."""
        record = {"loss": self.loss_sum / max(self.seen, 1)}
        if not self.seen:
            return record
        s = self.sums
        if self.task == "multiclass":
            record["accuracy"] = s["correct"] / self.seen
        elif self.task == "multilabel":
            tp, fp, fn = float(s["tp"]), float(s["fp"]), float(s["fn"])
            record["subset_accuracy"] = s["exact"] / self.seen
            record["micro_f1"] = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0
            record["hamming_loss"] = s["wrong"] / s["cells"]
        else:
            record["mse"] = s["squared_error"] / s["cells"]
        return record

    def to_dict(self) -> dict:
        """Plain JSON data; ``EpochSums.from_dict`` reads it back."""
        return {"task": self.task, "loss_sum": float(self.loss_sum), "seen": int(self.seen), **self.sums}

    @classmethod
    def from_dict(cls, data: Any, error: Any = ValueError) -> "EpochSums":
        """The sums ``to_dict`` wrote, checked: ``error(message)`` is raised for anything else."""
        task = data.get("task") if isinstance(data, dict) else None
        if task not in _SUMS or set(data) != {"task", "loss_sum", "seen", *_SUMS[task]}:
            raise error(f"epoch sums must be {{task, loss_sum, seen}} and the task's sums, got {data!r}")
        number("epoch sums' loss_sum", data["loss_sum"], error=error)
        for k in ("seen", *_SUMS[task]):
            number(f"epoch sums' {k}", data[k], 0, error=error)
        return cls(**data)
