"""Pictures of a run (loss and metric curves, confusion matrix, the learned function) and of datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .figures import new_figure, save_png

# Every file name plot_run may write, so a rewritten run folder keeps no stale picture.
RUN_PLOTS = ("loss.png", "accuracy.png", "micro_f1.png", "confusion_matrix.png", "fit.png", "decision_boundary.png")

# Per task, the history metrics drawn on the second curve plot, with their labels.
_CURVES = {
    "multiclass": (("accuracy", "accuracy"),),
    "multilabel": (("subset_accuracy", "subset accuracy"), ("micro_f1", "micro-F1")),
}


def plot_history(epochs: Sequence[dict], path: str | Path, metric: str = "loss", label: str | None = None) -> Path:
    """Train and test curves of one metric per epoch (``metric`` and ``val_<metric>``), to a PNG.

    Args:
        epochs: the per-epoch records of a History (``history.epochs``) or of metrics.json.
        path: where to write the PNG.
        metric: the record key, such as "loss" or "accuracy".

    Example:
        >>> plot_history(result.history.epochs, "runs/digits/loss.png", "loss")
    """
    fig, axes = new_figure()
    ax = axes[0, 0]
    x = [r.get("epoch", i + 1) for i, r in enumerate(epochs)]
    for key, name in ((metric, "train"), (f"val_{metric}", "test")):
        values = [r.get(key, np.nan) for r in epochs]
        if any(v is not None and np.isfinite(v) for v in values):
            ax.plot(x, [np.nan if v is None else v for v in values], marker="o" if len(x) < 30 else None, ms=3, label=name)
    if metric == "loss":
        positive = [r.get(k) for r in epochs for k in ("loss", "val_loss") if r.get(k) is not None]
        if positive and min(positive) > 0:
            ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label or metric)
    ax.set_title(f"{label or metric} per epoch")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no epochs (--epochs 0): nothing to name
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no epochs trained", ha="center", va="center", transform=ax.transAxes, color="0.4")
    return save_png(fig, path)


def plot_confusion(matrix: np.ndarray, path: str | Path, names: Sequence[str] | None = None, title: str = "test confusion matrix") -> Path:
    """A confusion matrix (rows true class, columns predicted) as a PNG heat map with counts.

    Example:
        >>> plot_confusion(result.confusion, "runs/digits/confusion_matrix.png")
    """
    m = np.asarray(matrix)
    k = len(m)
    names = list(names) if names is not None else [str(i) for i in range(k)]
    fig, axes = new_figure(width=1.0 + 0.45 * max(k, 4), height=0.8 + 0.45 * max(k, 4))
    ax = axes[0, 0]
    ax.imshow(m, cmap="Blues")
    hi = m.max() if m.size else 0
    for i in range(k):
        for j in range(k):
            if m[i, j]:
                ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=8, color="white" if m[i, j] > hi / 2 else "black")
    ax.set_xticks(range(k), names)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(m) / m.sum() if m.sum() else float("nan")
    ax.set_title(f"{title} (accuracy {accuracy:.2%})", fontsize=9)
    return save_png(fig, path)


def _plot_function_fit(model: Any, ds: Any, path: Path) -> Path:
    from ..train import predict

    grid = np.linspace(-1.0, 1.0, 400, dtype=np.float32).reshape(-1, 1)
    fig, axes = new_figure()
    ax = axes[0, 0]
    ax.scatter(ds.X_train[:, 0], ds.y_train[:, 0], s=4, alpha=0.4, color="gray", label="training points")
    ax.plot(grid[:, 0], predict(model, grid)[:, 0], color="C3", lw=2, label="network")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"{ds.name}: the learned function")
    ax.legend()
    return save_png(fig, path)


def _plot_decision_boundary(model: Any, ds: Any, path: Path) -> Path:
    from ..train import predict

    X = np.concatenate([ds.X_train, ds.X_test])
    lo, hi = X.min(axis=0) - 0.2, X.max(axis=0) + 0.2
    xs, ys = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
    logits = predict(model, grid)
    fig, axes = new_figure(height=5.0, width=5.0)
    ax = axes[0, 0]
    ax.contourf(xs, ys, logits.argmax(axis=1).reshape(xs.shape), levels=np.arange(ds.num_outputs + 1) - 0.5, cmap="coolwarm", alpha=0.35)
    ax.scatter(ds.X_test[:, 0], ds.X_test[:, 1], c=ds.y_test, cmap="coolwarm", s=8, edgecolors="k", linewidths=0.2)
    ax.set_title(f"{ds.name}: decision regions and test points")
    ax.set_aspect("equal")
    return save_png(fig, path)


def plot_run(result: Any, out: str | Path) -> list:
    """All the PNGs of a run into folder ``out``; returns their paths.

    loss.png always; accuracy.png for classes (multi-label: subset accuracy and
    micro-F1); confusion_matrix.png for classes; fit.png for a 1-D function;
    decision_boundary.png for a 2-D set.
    """
    out = Path(out)
    ds, epochs = result.dataset, result.history.epochs
    files = [plot_history(epochs, out / "loss.png", "loss")]
    for metric, label in _CURVES.get(ds.task, ()):
        name = "accuracy.png" if metric in ("accuracy", "subset_accuracy") else f"{metric}.png"
        files.append(plot_history(epochs, out / name, metric, label))
    if result.confusion is not None:
        files.append(plot_confusion(result.confusion, out / "confusion_matrix.png", ds.names))
    if ds.task == "regression" and ds.num_features == 1:
        files.append(_plot_function_fit(result.model, ds, out / "fit.png"))
    if ds.task == "multiclass" and ds.num_features == 2:
        files.append(_plot_decision_boundary(result.model, ds, out / "decision_boundary.png"))
    return files


def plot_dataset(name: str, path: str | Path, seed: int = 0, count: int = 16) -> Path:
    """A picture of a dataset for the docs: sample images with their labels, points or a curve.

    Example:
        >>> plot_dataset("objects", "docs/img/objects.png")
    """
    from ..data import load_dataset

    ds = load_dataset(name, seed=seed)
    if ds.image_shape is not None:
        cols = 8
        rows = (count + cols - 1) // cols
        fig, axes = new_figure(cols, rows, width=1.3, height=1.5)
        for i, ax in enumerate(axes.ravel()):
            ax.axis("off")
            if i >= min(count, len(ds.X_train)):
                continue
            ax.imshow(ds.X_train[i].reshape(ds.image_shape), cmap="gray_r", vmin=0, vmax=1)
            y = ds.y_train[i]
            if ds.task == "multilabel":
                label = "\n".join(n.replace("_", " ") for n, v in zip(ds.names, y) if v > 0.5) or "(none)"
            else:
                label = ds.names[int(y)]
            ax.set_title(label, fontsize=6 if ds.task == "multilabel" else 9)
        fig.suptitle(ds.description, fontsize=9)
    elif ds.num_features == 2:
        fig, axes = new_figure(width=4.5, height=4.5)
        ax = axes[0, 0]
        ax.scatter(ds.X_train[:, 0], ds.X_train[:, 1], c=ds.y_train, cmap="coolwarm", s=6)
        ax.set_aspect("equal")
        ax.set_title(ds.description, fontsize=9)
    else:
        fig, axes = new_figure()
        ax = axes[0, 0]
        order = np.argsort(ds.X_train[:, 0])
        ax.plot(ds.X_train[order, 0], ds.y_train[order, 0], ".", ms=3)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_title(ds.description, fontsize=9)
    return save_png(fig, path)
