"""``chainrule sweep CONFIG``: a grid of training runs, on local processes or a Dask cluster."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from . import app

if TYPE_CHECKING:
    from ..sweep import SweepResult


@app.command()
def sweep(
    config: Path = typer.Argument(..., help="The sweep file: TOML, or YAML when PyYAML is installed."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Local worker processes (joblib); -1 uses every core."),
    dask: Optional[str] = typer.Option(None, "--dask", metavar="tcp://HOST:PORT", help="Run the points on this Dask scheduler's cluster instead."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for results.csv, results.json and summary.png [default: sweeps/NAME]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the points and stop."),
) -> None:
    """Run every combination of a grid of train settings, for each seed, and tabulate the results.

    The sweep file has three sections: \\[sweep] (name, seeds), \\[base] (settings
    every point shares) and \\[grid] (each setting with the list of values to
    try). A point that fails is recorded with its error and the others go on;
    the exit status is then 1.

    Example: chainrule sweep sweep.toml --jobs 2; chainrule sweep sweep.toml --dask tcp://10.0.0.5:8786
    """
    from ..sweep import expand, load_sweep, run_sweep
    from . import fail

    if isinstance(jobs, int) and (jobs == 0 or jobs < -1):
        raise fail(f"--jobs must be a positive integer or -1 (every core), got {jobs}")
    spec = load_sweep(config)
    points = expand(spec)
    keys = list(spec["grid"])
    name = spec["sweep"]["name"]

    def describe(settings: dict) -> str:
        return ", ".join(f"{k}={settings[k]}" for k in [*keys, "seed"])

    if dry_run:
        for i, p in enumerate(points, 1):
            typer.echo(f"{i:>4}  {describe(p)}")
        typer.echo(f"{len(points)} points", err=True)
        return
    where = f"the Dask cluster at {dask}" if dask else f"{jobs if jobs > 0 else 'all'} local process{'es' if jobs != 1 else ''}"
    typer.echo(f"sweep {name}: {len(points)} points on {where}", err=True)

    def progress(i: int, row: dict) -> None:
        head = f"[{i + 1}/{len(points)}] {describe(row['settings'])}:"
        if row["status"] == "ok":
            shown = [f"{k} {row[k]:.4g}" for k in ("train_loss", "test_loss", "test_accuracy") if isinstance(row.get(k), (int, float))]
            typer.echo(f"{head} ok, {', '.join(shown)} ({row.get('seconds', 0.0):.1f} s)", err=True)
        else:
            typer.echo(f"{head} FAILED: {row.get('error', '')}", err=True)

    folder = out if out is not None else Path("sweeps") / name
    result = run_sweep(spec, jobs=jobs, dask=dask, out=folder, on_result=progress)
    _print_table(result)
    typer.echo(f"results in {folder}/results.csv, results.json and summary.png ({result.seconds:.1f} s)", err=True)
    if result.failed:
        for row in result.failed:
            typer.echo(f"point {row['point']} failed: {row.get('error', '')}", err=True)
        typer.echo(f"{len(result.failed)} of {len(result.rows)} points failed", err=True)
        raise typer.Exit(1)


def _print_table(result: "SweepResult") -> None:
    from rich.console import Console
    from rich.table import Table

    columns, rows = result.table()
    shown = [c for c in columns if c not in ("seconds", "error")]  # errors are listed after the table
    table = Table(title=f"sweep {result.name}")
    for c in shown:
        table.add_column(c, justify="left" if c == "status" else "right")
    for r in rows:
        table.add_row(*[_fmt(r.get(c)) for c in shown])
    Console(width=max(120, Console().width)).print(table)


def _fmt(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
