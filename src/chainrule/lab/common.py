"""What every experiment of the lab shares: its result record, figures, parallel sweeps, the digits.

An experiment's ``run(quick, jobs, seed)`` returns a :class:`Result`: the claim,
the :class:`Check` s whose verdicts were computed from measured numbers, tables,
figures (PNG bytes) and every number it measured (``numbers``, for results.json).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

HELD = "held"
PARTLY = "partly held"
NOT_HELD = "did not hold"
NOT_RUN = "not run"


@dataclass
class Check:
    """One measurable part of a claim: what was tested, whether it held, and the numbers that decided it.

    ``held`` is always the outcome of a comparison of measured numbers,
    written out in ``detail`` (e.g. "max sigmoid'(x) = 0.25000 <= 0.25").
    """

    statement: str
    held: bool
    detail: str

    def to_dict(self) -> dict:
        return {"statement": self.statement, "verdict": HELD if self.held else NOT_HELD, "detail": self.detail}


@dataclass
class Table:
    """A table of numbers: a title, column names and rows of cells."""

    title: str
    columns: list
    rows: list

    def to_dict(self) -> dict:
        return {"title": self.title, "columns": list(self.columns), "rows": [list(r) for r in self.rows]}


@dataclass
class Figure:
    """A figure as PNG bytes, with the file stem it is saved under and a caption."""

    name: str
    caption: str
    png: bytes


@dataclass
class Page:
    """A self-contained HTML page (an animation), saved as ``<experiment>-<name>.html`` and shown in the report."""

    name: str
    caption: str
    html: str


@dataclass
class Result:
    """What one experiment measured and concluded."""

    name: str
    title: str
    claim: str
    quick: bool
    seed: int
    checks: list = field(default_factory=list)
    tables: list = field(default_factory=list)
    figures: list = field(default_factory=list)
    pages: list = field(default_factory=list)
    numbers: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    @property
    def verdict(self) -> str:
        """"held" when every check held, "did not hold" when none did, "partly held" between."""
        if self.error is not None or not self.checks:
            return NOT_RUN
        held = sum(c.held for c in self.checks)
        if held == len(self.checks):
            return HELD
        return NOT_HELD if held == 0 else PARTLY

    def check(self, statement: str, held: bool, detail: str) -> bool:
        """Record a check and return its outcome."""
        self.checks.append(Check(statement, bool(held), detail))
        return bool(held)

    def add_table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
        self.tables.append(Table(title, list(columns), [list(r) for r in rows]))

    def add_figure(self, name: str, caption: str, fig: Any) -> None:
        self.figures.append(Figure(name, caption, figure_png(fig)))

    def add_page(self, name: str, caption: str, html: str) -> None:
        self.pages.append(Page(name, caption, html))

    def to_dict(self) -> dict:
        """Plain JSON-ready data: everything except the PNG bytes and pages (both by file name)."""
        return jsonable(
            {
                "name": self.name,
                "title": self.title,
                "claim": self.claim,
                "verdict": self.verdict,
                "quick": self.quick,
                "seed": self.seed,
                "seconds": self.seconds,
                "error": self.error,
                "settings": self.settings,
                "checks": [c.to_dict() for c in self.checks],
                "notes": list(self.notes),
                "figures": [{"file": f"{self.name}-{f.name}.png", "caption": f.caption} for f in self.figures],
                "pages": [{"file": f"{self.name}-{p.name}.html", "caption": p.caption} for p in self.pages],
                "tables": [t.to_dict() for t in self.tables],
                "numbers": self.numbers,
            }
        )



def new_result(name: str, quick: bool, seed: int) -> "Result":
    """An empty Result for the registered experiment ``name``, with its title and claim."""
    from . import EXPERIMENTS

    exp = EXPERIMENTS[name]
    return Result(exp.name, exp.title, exp.claim, quick, seed)

def jsonable(x: Any) -> Any:
    """``x`` with NumPy scalars and arrays made Python numbers and lists; inf and nan as strings."""
    from ..runs import json_ready

    return json_ready(x, nonfinite_as_text=True)


def fmt(x: Any, digits: int = 4) -> str:
    """A number as short text: 0.1234, 1.2e-07, inf."""
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return f"{int(x):,}"
    v = float(x)
    if not math.isfinite(v):
        return str(v)
    if v != 0 and (abs(v) < 10 ** -(digits - 1) or abs(v) >= 10**6):
        return f"{v:.{max(digits - 2, 1)}e}"
    return f"{v:.{digits}g}" if abs(v) >= 1 else f"{v:.{digits}f}".rstrip("0").rstrip(".") or "0"


# ---- figures --------------------------------------------------------------------------


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.6, sharey: bool = False) -> tuple:
    """A matplotlib Figure (no pyplot, so no global state and no display) and its axes.

    ``sharey`` gives every panel the same y axis, for panels meant to be compared.
    """
    from matplotlib.figure import Figure as _Figure

    fig = _Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey)
    return fig, axes


def legend_outside(ax: Any, fontsize: float = 8) -> None:
    """The axes' legend to the right of the panel, where it hides no data."""
    ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)


def figure_png(fig: Any, dpi: int = 90) -> bytes:
    """The figure rendered by the Agg backend as PNG bytes (no software tag, so files repeat exactly)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


# ---- sweeps ---------------------------------------------------------------------------


def parallel_map(fn: Callable, tasks: Sequence[dict], jobs: int = 1) -> list:
    """``[fn(**t) for t in tasks]``, run by joblib on ``jobs`` processes when jobs > 1.

    Each task seeds its own generators, so the results do not depend on ``jobs``.
    ``fn`` must be a module-level function (the worker processes import it).
    """
    tasks = list(tasks)
    if jobs is None or jobs == 1 or len(tasks) <= 1:
        return [fn(**t) for t in tasks]
    from joblib import Parallel, delayed

    return Parallel(n_jobs=min(int(jobs), len(tasks)) if jobs > 0 else jobs)(delayed(fn)(**t) for t in tasks)


# ---- data and training ---------------------------------------------------------------

_DIGITS: dict = {}


def digits(seed: int = 0) -> tuple:
    """The 8x8 digits split 75/25, stratified: (X_train, X_test, y_train, y_test), cached per seed."""
    if seed not in _DIGITS:
        from ..data import load_digits, train_test_split

        X, y = load_digits()
        _DIGITS[seed] = train_test_split(X, y, test_size=0.25, seed=seed)
    return _DIGITS[seed]


def layer_grad_norms(model: Any, X: np.ndarray, y: np.ndarray, loss_fn: Any) -> list:
    """||dL/dW|| of each Linear layer, input to output, after one backward pass on (X, y).

    The model's gradients are left as this pass made them.
    """
    from ..autograd import leaf
    from ..nn import Linear

    from ..nn.module import unchanged_state

    model.zero_grad()
    with unchanged_state(model):
        loss_fn(model(leaf(X)), leaf(y)).backward()
    return [float(np.linalg.norm(m.weight.grad)) for m in model.modules() if isinstance(m, Linear)]


def preactivations(model: Any, X: np.ndarray) -> list:
    """The pre-activations ``z = a @ W + b`` of each hidden Linear layer of a Sequential on X."""
    from ..autograd import leaf, no_grad
    from ..nn import Linear

    out = []
    layers = list(model)
    with no_grad():
        h = leaf(X)
        for i, layer in enumerate(layers):
            h = layer(h)
            if isinstance(layer, Linear) and i < len(layers) - 1:
                out.append(np.array(h.data))
    return out


def inactive_fractions(model: Any, X: np.ndarray) -> list:
    """Per hidden layer, the share of units whose pre-activation is <= 0 on every row of X.

    For a ReLU such a unit is dead (see :func:`dead_fractions`). Leaky ReLU,
    PReLU and ELU units there still pass back a gradient, so they can come back.
    """
    return [float(np.mean(np.all(z <= 0, axis=0))) for z in preactivations(model, X)]


def dead_fractions(model: Any, X: np.ndarray) -> list:
    """Per hidden layer, the share of dead units on X, from :func:`chainrule.diagnostics.probe`
    (the probe the Monitor and the dashboard use, by :func:`chainrule.diagnostics.unit_health`): units flat on every row, passing back no
    gradient to speak of. None for a layer whose activation cannot die (sigmoid, tanh, Leaky ReLU, PReLU).
    """
    from ..diagnostics import find_layers, probe

    layers = find_layers(model)
    return [row["dead_fraction"] for layer, row in zip(layers, probe(model, X, layers)) if layer.activation != "none"]