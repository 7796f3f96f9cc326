"""``chainrule bench``: time chainrule against PyTorch, scikit-learn and a hand-fused NumPy MLP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from . import app


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="Tiny settings (a few steps per runner): checks that everything runs."),
    repeats: Optional[int] = typer.Option(None, "--repeats", min=1, help="Timed repetitions per runner (default 5; 2 with --quick)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON instead of tables."),
    device: str = typer.Option("cpu", "--device", help="Where to run; only 'cpu' for now."),
    workload: Optional[List[str]] = typer.Option(None, "--workload", "-w", help="digits, deep or wide (repeat the option; default all)."),
    runner: Optional[List[str]] = typer.Option(
        None, "--runner", "-r", help="chainrule, chainrule-fit, torch, sklearn or numpy (repeat the option; default all)."
    ),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Measure peak memory (a fresh subprocess per runner and workload)."),
    inference: bool = typer.Option(True, "--inference/--no-inference", help="Measure forward throughput too."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Threads for NumPy's BLAS and PyTorch alike (default: as many as NumPy's BLAS uses)."),
    save: Optional[Path] = typer.Option(None, "--save", help="Also write the results as Markdown to this file, and as JSON beside it."),
) -> None:
    """Benchmark training and inference: chainrule, PyTorch (CPU), scikit-learn and the NumPy floor.

    Prints, per workload, the median time per training step with its min-max over
    repetitions, the ratios against PyTorch and against the hand-fused NumPy MLP,
    the final training loss and the peak memory; then the issue-7 targets.
    """
    from .. import bench as _bench
    from ..bench import RUNNERS, WORKLOADS
    from . import fail  # defined after the command modules are imported

    if device.lower() != "cpu":
        raise fail(f"--device {device!r} is not supported yet: chainrule bench runs on 'cpu' only")
    for name in workload or ():
        if name not in WORKLOADS:
            raise fail(f"unknown workload {name!r}; expected one of {', '.join(WORKLOADS)}")
    for name in runner or ():
        if name not in RUNNERS:
            raise fail(f"unknown runner {name!r}; expected one of {', '.join(RUNNERS)}")

    def progress(line: str) -> None:
        typer.echo(f"  {line}", err=True)

    result = _bench.run_benchmark(
        workloads=tuple(workload) if workload else tuple(WORKLOADS),
        runners=tuple(runner) if runner else None,
        repeats=repeats or (2 if quick else 5),
        quick=quick,
        memory=memory,
        inference=inference,
        threads=threads,
        progress=progress,
    )
    if as_json:
        typer.echo(json.dumps(result, indent=1))
    else:
        typer.echo(_bench.format_report(result))
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        save.write_text(_bench.results_markdown(result))
        save.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        typer.echo(f"results written to {save} and {save.with_suffix('.json')}", err=True)
