"""Reports and plots: pictures of runs and datasets, drawn by matplotlib's Agg backend to PNG.

Figures are built without pyplot (no global state, no window, no backend
switch in a notebook) and written without a software tag, so the same run
draws the same bytes. matplotlib is imported only when a plot is drawn.
"""

from __future__ import annotations

from .figures import new_figure, save_png
from .run_plots import plot_confusion, plot_dataset, plot_history, plot_run

__all__ = ["new_figure", "plot_confusion", "plot_dataset", "plot_history", "plot_run", "save_png"]
