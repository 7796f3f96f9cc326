"""``chainrule lab [NAME]``: run the lesson's claims as experiments and write the HTML report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from . import app


def _default_jobs() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


@app.command()
def lab(
    name: Optional[str] = typer.Argument(None, help="One experiment to run (see --list); all of them when left out."),
    list_: bool = typer.Option(False, "--list", help="List the experiments and their claims, and run nothing."),
    quick: bool = typer.Option(False, "--quick", help="Short versions: all eleven in a fraction of the full run's time (under a minute on two cores)."),
    out: Path = typer.Option(Path("lab-report"), "--out", help="Report folder: index.html, the figures as PNG, results.json."),
    jobs: Optional[int] = typer.Option(None, "--jobs", min=1, help="Worker processes for the sweeps (default: the cores, at most 4)."),
    seed: int = typer.Option(0, "--seed", help="Base seed; the same seed gives the same numbers."),
) -> None:
    """Run the lab: each claim of the lesson as an experiment with figures, numbers and a measured verdict.

    Examples: chainrule lab --list; chainrule lab activations;
    chainrule lab --quick --out lab-report.
    """
    from rich.console import Console
    from rich.table import Table

    from .. import lab as _lab
    from ..errors import ChainruleError
    from . import fail  # defined after the command modules are imported

    console = Console()
    if list_:
        table = Table(title="chainrule lab: the experiments", show_lines=True)
        table.add_column("name", style="bold", no_wrap=True)
        table.add_column("claim")
        for e in _lab.EXPERIMENTS.values():
            table.add_row(e.name, e.claim)
        console.print(table)
        return
    if name is not None:
        try:
            names = [_lab.get(name).name]
        except ChainruleError as e:  # an unknown name
            raise fail(str(e))
    else:
        names = None
    if out.exists() and not out.is_dir():
        raise fail(f"--out must be a folder, but {out} is a file")
    jobs = jobs or _default_jobs()
    colours = {_lab.HELD: "green", _lab.PARTLY: "yellow", _lab.NOT_HELD: "red", _lab.NOT_RUN: "bright_black"}

    def started(n: str) -> None:
        console.print(f"[bold]{n}[/] ...", highlight=False)

    def finished(r) -> None:
        console.print(f"  [{colours[r.verdict]}]{r.verdict}[/] in {r.seconds:.1f} s", highlight=False)
        for c in r.checks:
            mark = "[green]held[/]" if c.held else "[red]did not hold[/]"
            console.print(f"    {mark}: {c.statement}\n      [dim]{c.detail}[/]", highlight=False)
        if r.error:
            console.print(f"  [red]error:[/] {r.error}", highlight=False)

    results = _lab.run_lab(names, quick=quick, out=out, jobs=jobs, seed=seed, on_start=started, on_result=finished)
    table = Table(title=f"chainrule lab{' (quick)' if quick else ''}")
    table.add_column("experiment")
    table.add_column("verdict")
    table.add_column("checks held", justify="right")
    table.add_column("seconds", justify="right")
    for r in results:
        table.add_row(r.name, f"[{colours[r.verdict]}]{r.verdict}[/]", f"{sum(c.held for c in r.checks)}/{len(r.checks)}",
                      f"{r.seconds:.1f}")
    console.print(table)
    console.print(f"report: {out / 'index.html'}  (figures and results.json beside it)", highlight=False)
    if any(r.error for r in results):
        raise typer.Exit(1)
