"""Figure helpers shared by every plot: a pyplot-free Figure, and PNG output through Agg."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.6) -> tuple:
    """A matplotlib Figure and its (nrows, ncols) array of axes, without pyplot.

    Example:
        >>> fig, axes = new_figure(2)
        >>> axes[0, 0].plot([1, 2, 3])
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def save_png(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Render ``fig`` with Agg and write it to ``path`` as PNG, atomically; returns the path."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from ..io import write_atomic

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    path = Path(path)
    write_atomic(path, buf.getvalue())
    return path

