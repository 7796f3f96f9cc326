"""Run the lab's experiments and write the report folder.

The folder holds ``index.html`` (self-contained: every figure embedded, no
network address, opens from disk), each figure as ``<experiment>-<figure>.png``
and ``results.json`` with every number measured.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

from .. import __version__
from ..io import write_atomic
from . import EXPERIMENTS, get, run_safely
from .common import Result, jsonable


def run_lab(
    names: Sequence[str] | None = None,
    quick: bool = False,
    out: str | Path | None = "lab-report",
    jobs: int = 1,
    seed: int = 0,
    on_start: Callable[[str], None] | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> list:
    """Run experiments (all by default) and write the report to ``out``; returns the Results.

    Args:
        names: experiment names (see ``chainrule.lab.EXPERIMENTS``); None for all, in order.
        quick: the short versions (all eleven in under a minute on two cores).
        out: report folder (created); None writes nothing.
        jobs: worker processes for the sweeps inside each experiment (joblib).
        seed: the base seed; the same seed gives the same numbers.
        on_start, on_result: called with each experiment's name before it runs and its Result after.

    An experiment that raises is recorded with its error (verdict "not run")
    and the others still run.

    Example:
        >>> results = run_lab(["activations", "backprop"], quick=True, out="lab-report")
        >>> [(r.name, r.verdict) for r in results]
    """
    chosen = [get(n).name for n in names] if names else list(EXPERIMENTS)
    results, start = [], time.perf_counter()
    for name in chosen:
        if on_start is not None:
            on_start(name)
        result = run_safely(name, quick=quick, jobs=jobs, seed=seed)
        results.append(result)
        if on_result is not None:
            on_result(result)
    meta = {"chainrule_version": __version__, "quick": quick, "seed": seed, "jobs": jobs,
            "total_seconds": time.perf_counter() - start}
    if out is not None:
        write_report(results, out, meta)
    return results


def write_report(results: Sequence[Result], out: str | Path, meta: dict | None = None) -> Path:
    """Write index.html, the PNGs, the pages and results.json for ``results`` into the folder ``out``; returns its path."""
    from ..report.html import render_html

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    for r in results:
        for f in r.figures:
            write_atomic(out / f"{r.name}-{f.name}.png", f.png)
        for page in r.pages:
            write_atomic(out / f"{r.name}-{page.name}.html", page.html.encode("utf-8"))
    data = {**jsonable(meta), "experiments": [r.to_dict() for r in results]}
    write_atomic(out / "results.json", json.dumps(data, indent=1).encode())
    write_atomic(out / "index.html", render_html(results, meta).encode("utf-8"))
    return out
