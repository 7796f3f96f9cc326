"""Metrics: accuracy, multi-label scores, regression error, calibration.

They are per-epoch summaries, computed with NumPy on the host: arrays of another
namespace (a GPU's) are copied there first (``backend.to_numpy``).
"""

from __future__ import annotations

import numpy as np

from .backend import to_numpy


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
