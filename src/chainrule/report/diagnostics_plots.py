"""Pictures of gradient flow: gradient norms per layer and epoch, dead and saturated
units per layer, and the signal propagation at initialization.

Each function takes a diagnostics Monitor, its ``to_dict()`` (as stored in
metrics.json) or its list of per-epoch records, and writes a PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..diagnostics.signal import gradient_ratio
from .figures import new_figure, save_png


def _data(source: Any) -> dict:
    from ..diagnostics.summary import as_data

    return as_data(source)


def _grid(epochs: list, field: str) -> tuple:
    """(layers x epochs array with NaN where missing, layer labels, epoch numbers)."""
    layers = epochs[0]["layers"]
    grid = np.full((len(layers), len(epochs)), np.nan)
    for j, record in enumerate(epochs):
        for i, row in enumerate(record["layers"]):
            v = row.get(field)
            if v is not None:
                grid[i, j] = v
    labels = [f"{row['layer']} ({row['activation']})" for row in layers]
    return grid, labels, [r["epoch"] for r in epochs]


def _epoch_ticks(ax: Any, numbers: list) -> None:
    step = max(1, len(numbers) // 12)
    ax.set_xticks(range(0, len(numbers), step))
    ax.set_xticklabels([str(n) for n in numbers[::step]])


def plot_gradient_heatmap(source: Any, path: str | Path) -> Path:
    """A layer-by-epoch heat map of the weight-gradient norm ||dL/dW||, on a log color scale.

    Layer 1 (next to the input) is the top row. Vanishing gradients show as a
    dark top fading into a bright bottom; one color step is a factor of 10.

    Example:
        >>> plot_gradient_heatmap(monitor, "runs/digits/gradient_norms.png")
    """
    from matplotlib.colors import LogNorm

    epochs = _data(source)["epochs"]
    if not epochs:
        raise ValueError("no epochs recorded yet: train with the Monitor as a callback first")
    grid, labels, numbers = _grid(epochs, "grad_norm")
    positive = grid[np.isfinite(grid) & (grid > 0)]
    lo, hi = (positive.min(), positive.max()) if positive.size else (1e-8, 1.0)
    if hi <= lo:
        lo, hi = lo / 10, hi * 10
    grid = np.where(grid > 0, grid, np.nan)
    fig, axes = new_figure(width=max(4.5, 1.8 + 0.28 * len(numbers)), height=max(2.6, 1.2 + 0.32 * len(labels)))
    ax = axes[0, 0]
    im = ax.imshow(grid, aspect="auto", cmap="viridis", norm=LogNorm(vmin=lo, vmax=hi), interpolation="nearest")
    fig.colorbar(im, ax=ax, label="||dL/dW|| (log scale)")
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels)
    _epoch_ticks(ax, numbers)
    ax.set_xlabel("epoch")
    ax.set_ylabel("layer (activation)")
    ax.set_title("gradient norm per layer and epoch")
    return save_png(fig, path)


def plot_unit_health(source: Any, path: str | Path) -> Path:
    """Dead units (ReLU, ELU, GELU, SiLU) and saturated units (sigmoid, tanh), per layer and epoch, as heat maps in %.

    One panel per kind the network has (a ReLU network gets no empty
    saturation panel). The colour scale runs from 0 to the largest share
    measured (at least 10%), and each cell carries its number when they fit,
    so that 5% dead is as visible as 100%. The first column ("init") is the
    probe batch before training, when the monitor measured it. Dead and
    saturated are defined once, in :mod:`chainrule.diagnostics.layers`.

    Example:
        >>> plot_unit_health(monitor, "runs/digits/unit_health.png")
    """
    data = _data(source)
    epochs = data["epochs"]
    if not epochs:
        raise ValueError("no epochs recorded yet: train with the Monitor as a callback first")
    initial = data.get("initial")
    records = ([{"epoch": "init", "layers": initial["layers"]}] if initial else []) + list(epochs)
    panels = []
    for field, title in (("dead_fraction", "dead units"), ("saturated_fraction", "saturated units")):
        grid, labels, numbers = _grid(records, field)
        if np.isfinite(grid).any():
            panels.append((grid * 100, title))
    if not panels:  # no layer whose units can die or saturate (a linear model): say so
        grid, labels, numbers = _grid(records, "dead_fraction")
        panels.append((grid, "dead or saturated units"))
    rows = [i for i in range(len(labels)) if any(np.isfinite(g[i]).any() for g, _ in panels)] or list(range(len(labels)))
    panels = [(g[rows], title) for g, title in panels]  # the output layer, with nothing to measure, is left out
    labels = [labels[i] for i in rows]
    n_layers = len(labels)
    width = min(9.0, max(4.0, 2.4 + 0.3 * len(records)))
    fig, axes = new_figure(ncols=len(panels), width=width, height=max(2.4, 1.3 + 0.34 * n_layers))
    annotate = len(records) * n_layers <= 160
    for ax, (grid, title) in zip(axes[0], panels):
        measured = grid[np.isfinite(grid)]
        if not measured.size:
            ax.text(0.5, 0.5, "no layer whose units can die or saturate", transform=ax.transAxes, ha="center", va="center")
        top = max(10.0, float(np.ceil(measured.max() / 10) * 10)) if measured.size else 100.0
        im = ax.imshow(grid, aspect="auto", cmap="magma", vmin=0, vmax=top, interpolation="nearest")
        if annotate:
            for (i, j), v in np.ndenumerate(grid):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if v < 0.6 * top else "black")
        ax.set_yticks(range(n_layers))
        ax.set_yticklabels(labels if ax is axes[0, 0] else [])
        _epoch_ticks(ax, numbers)
        ax.set_xlabel("epoch")
        ax.set_title(f"{title} (% of the layer)")
        fig.colorbar(im, ax=ax, label=f"% of units (0-{top:.0f})")
    axes[0, 0].set_ylabel("layer (activation)")
    return save_png(fig, path)


def plot_signal_propagation(source: Any, path: str | Path) -> Path:
    """Forward activation variance and backward gradient variance per layer, before training (log scale).

    A well-initialized network keeps both lines roughly level; a backward line
    that falls towards layer 1 is the vanishing gradient, before any step. The
    gradient at each layer's output, dL/da, is what a skip connection carries
    back: the title gives its first/last hidden-layer ratio
    (:func:`chainrule.diagnostics.gradient_ratio`), near 1 with skips.

    Example:
        >>> plot_signal_propagation(monitor, "runs/digits/signal_propagation.png")
    """
    data = _data(source)
    initial = data.get("initial") if isinstance(data, dict) else None
    if not initial or not initial.get("layers"):
        raise ValueError("no initial measurement: give the Monitor a probe batch, or train with it as a callback")
    rows = initial["layers"]
    x = [r["layer"] for r in rows]
    fig, axes = new_figure()
    ax = axes[0, 0]
    for field, label, marker in (
        ("activation_var", "forward: Var(activation)", "o"),
        ("grad_var", "backward: Var(dL/dz)", "s"),
        ("activation_grad_var", "backward: Var(dL/da), along the skips", "^"),
    ):
        y = np.array([np.nan if r.get(field) is None else r[field] for r in rows], dtype=float)
        y[y <= 0] = np.nan
        if np.isfinite(y).any():
            ax.plot(x, y, marker=marker, ms=4, label=label)
    ax.set_yscale("log")
    if len(x) <= 20:
        ax.set_xticks(x)
    ax.set_xlabel("layer")
    ax.set_ylabel("variance (log scale)")
    ratio = gradient_ratio(rows)
    ax.set_title("signal propagation at initialization" + ("" if ratio is None else f"\nfirst/last hidden-layer gradient: {ratio:.2g}"))
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return save_png(fig, path)


def write_diagnostic_plots(source: Any, folder: str | Path) -> list:
    """Write every diagnostics plot that the data allows into ``folder``; returns the paths.

    Files: gradient_norms.png, unit_health.png and (when the initial state was
    measured) signal_propagation.png.

    Example:
        >>> write_diagnostic_plots(monitor, "runs/digits")
        [PosixPath('runs/digits/gradient_norms.png'), ...]
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = _data(source)
    paths = []
    if data["epochs"]:
        paths.append(plot_gradient_heatmap(data, folder / "gradient_norms.png"))
        paths.append(plot_unit_health(data, folder / "unit_health.png"))
    if data.get("initial") and data["initial"].get("layers"):
        paths.append(plot_signal_propagation(data, folder / "signal_propagation.png"))
    return paths
