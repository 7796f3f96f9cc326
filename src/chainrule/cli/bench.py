"""``chainrule bench``: time chainrule against PyTorch, scikit-learn and a hand-fused NumPy MLP
(``--device cuda``: against PyTorch CUDA and a hand-fused CuPy MLP)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, List, Optional

import typer

from . import app


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="Tiny settings (a few steps per runner): checks that everything runs."),
    repeats: Optional[int] = typer.Option(None, "--repeats", min=1, help="Timed repetitions per runner (default 5; 2 with --quick)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON instead of tables."),
    device: str = typer.Option(
        "cpu", "--device", help="cpu, or cuda: chainrule on CuPy against PyTorch CUDA and the CuPy floor (needs CuPy and an NVIDIA GPU).",
    ),
    workload: Optional[List[str]] = typer.Option(
        None, "--workload", "-w", help="digits, deep, wide, or big (cuda only) (repeat the option; default all the device runs).",
    ),
    runner: Optional[List[str]] = typer.Option(
        None, "--runner", "-r",
        help="chainrule, chainrule-fit, torch, sklearn or numpy; cupy with --device cuda (repeat the option; default all).",
    ),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Measure peak memory (CPU: a fresh subprocess per runner and workload; GPU: the allocators)."),
    inference: bool = typer.Option(True, "--inference/--no-inference", help="Measure forward throughput too."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Threads for NumPy's BLAS and PyTorch alike (default: as many as NumPy's BLAS uses)."),
    save: Optional[Path] = typer.Option(None, "--save", help="Also write the results as Markdown to this file, and as JSON beside it."),
    curves: bool = typer.Option(
        False, "--curves", help="Time per step as the batch, depth and width grow: eager, compiled, PyTorch, floor (a table and a PNG).",
    ),
) -> None:
    """Benchmark training and inference: chainrule, PyTorch (CPU), scikit-learn and the NumPy floor;
    with --device cuda, chainrule on CuPy, PyTorch CUDA and the CuPy floor.

    Prints, per workload, the median time per training step with its min-max over
    repetitions, the ratios against PyTorch and against the hand-fused floor, the
    final training loss and the peak memory (on a GPU also samples and TFLOP per
    second); then whether each target that chainrule sets itself is met (the CPU's, or the GPU's with --device cuda).
    """
    from .. import backend
    from .. import bench as _bench
    from ..bench import GPU_ONLY, WORKLOADS
    from ..errors import ChainruleError
    from . import fail  # defined after the command modules are imported

    try:
        device = backend.normalize_device(device)
        if device == "cuda":
            backend.cupy()  # before any work: one line saying what is missing
    except ChainruleError as e:
        raise fail(str(e)) from None
    for name in workload or ():
        if name not in WORKLOADS:
            raise fail(f"unknown workload {name!r}; expected one of {', '.join(WORKLOADS)}")
        if device == "cpu" and name in GPU_ONLY:
            raise fail(f"workload {name!r} runs with --device cuda only: {GPU_ONLY[name]}")
    names = _bench.runner_names()
    for name in runner or ():
        if name not in names:
            raise fail(f"unknown runner {name!r}; expected one of {', '.join(names)}")

    def progress(line: str) -> None:
        typer.echo(f"  {line}", err=True)

    if curves:
        _run_curves(repeats or (1 if quick else 3), quick, threads or 1, save, as_json, progress)
        return

    result = _bench.run_benchmark(
        workloads=tuple(workload) if workload else None,
        runners=tuple(runner) if runner else None,
        repeats=repeats or (2 if quick else 5),
        quick=quick,
        memory=memory,
        inference=inference,
        device=device,
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


def _run_curves(repeats: int, quick: bool, threads: int, save: Optional[Path], as_json: bool, progress: Callable) -> None:
    """``--curves``: the tables on the terminal, the PNG (and with --save the JSON and Markdown) on disk."""
    from ..bench import curves as bench_curves

    result = bench_curves.run_curves(repeats=repeats, quick=quick, threads=threads, progress=progress)
    typer.echo(json.dumps(result, indent=1) if as_json else bench_curves.format_curves(result))
    png = save.with_suffix(".png") if save is not None else Path("chainrule-curves.png")
    png.parent.mkdir(parents=True, exist_ok=True)
    bench_curves.plot_curves(result, png)
    if save is not None:
        save.write_text("# chainrule bench --curves\n\n" + bench_curves.format_curves(result, markdown=True))
        save.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    typer.echo(f"curves drawn in {png}", err=True)
