"""``chainrule bench --curves``: time per training step as the batch, the depth and the width grow.

Four runners on the same weights and batches: eager chainrule (a plain loop), compiled
chainrule (the same step through :func:`chainrule.compile`), PyTorch on the CPU, and the
hand-fused NumPy MLP of :mod:`chainrule.bench` (the floor). Three curves, each point a
synthetic classification problem trained with SGD, float32:

- batch: 1 to 2048 rows on the digits network (64-128-128-10, ReLU);
- depth: 2 to 50 hidden layers of width 64 (batch 64, ReLU);
- width: two hidden layers of 32 to 2048 units (batch 32, ReLU).

Each point is the median over interleaved repetitions (the runners take turns) of the time per
step, as :func:`chainrule.bench.measure.measure_training` measures it. The run is short on purpose
(10 to 30 steps per point): it shows where each runner's cost per step comes from (fixed costs
dominate at small sizes, the matrix products at large ones), not a precise number.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Callable, Sequence

import numpy as np

from .measure import environment, load_average, measure_training, ratio_of, warm_up_library
from .report import _table, _time, _x
from .runners import Runner, _chainrule_model, _host_weights, available_runners
from .workloads import Workload, get_workload

#: name -> (the values, the layer sizes and batch of one point)
CURVES = {
    "batch": ((1, 4, 16, 64, 256, 1024, 2048), lambda b: ((64, 128, 128, 10), b)),
    "depth": ((2, 5, 10, 20, 50), lambda d: ((64,) + (64,) * d + (10,), 64)),
    "width": ((32, 128, 512, 2048), lambda n: ((64, n, n, 10), 32)),
}
QUICK_CURVES = {
    "batch": ((1, 64), CURVES["batch"][1]),
    "depth": ((2, 5), CURVES["depth"][1]),
    "width": ((32, 128), CURVES["width"][1]),
}
RUNNER_NAMES = ("chainrule", "chainrule-compiled", "torch", "numpy")


def _compiled_trainer(w: Any, weights: Sequence, X: np.ndarray, y: np.ndarray, plan: list, gpu: Any = None) -> tuple:
    """The chainrule runner's step, compiled with :func:`chainrule.compile`."""
    import chainrule as cr
    from chainrule import functional as F
    from chainrule import optim

    model = _chainrule_model(w, weights, gpu)
    opt = optim.SGD(model.parameters(), lr=w.lr)

    @cr.compile
    def step(xb: Any, yb: Any) -> Any:
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    # recorded before the clock starts (an eager call, then the recording, on the first batch: the
    # cost of a shape is paid once), then the weights put back in place (the recording follows them)
    first = plan[0][0]
    saved = [p.data.copy() for p in opt.params]
    for _ in range(2):
        step(cr.tensor(X[first]), cr.tensor(y[first]))
    for p, s in zip(opt.params, saved):
        p.data[...] = s
    opt.steps = 0

    def run() -> list:
        marks = []
        for epoch in plan:
            for idx in epoch:
                step(cr.tensor(X[idx]), cr.tensor(y[idx]))
            marks.append(time.perf_counter())
        return marks

    return run, lambda: _host_weights([(lin.weight.data, lin.bias.data) for lin in model.linears])


COMPILED = Runner(
    "chainrule-compiled", "the chainrule step through cr.compile (recorded once, replayed)", None, _compiled_trainer, None
)


def runners(names: Sequence[str] = RUNNER_NAMES) -> tuple:
    """(runners that can run, {name: why not} for the others)."""
    base = [n for n in names if n != COMPILED.name]
    ok, skipped = available_runners(base)
    if COMPILED.name in names:
        ok = list(ok) + [COMPILED]
    order = {n: i for i, n in enumerate(names)}
    return sorted(ok, key=lambda r: order[r.name]), skipped


def measure_point(sizes: tuple, batch: int, runner_list: Sequence, repeats: int, steps: int, epochs: int = 2) -> dict:
    """Median seconds per step of each runner on one synthetic problem (``steps`` batches an epoch)."""
    w = Workload(
        "curve", tuple(sizes), "relu", batch_size=batch, epochs=epochs, lr=0.01, data="synthetic", n_samples=batch * steps,
        eval_rows=min(batch * steps, 1024),
    )
    row = measure_training(w, runner_list, repeats, settle=0.0)
    return {name: r["seconds_per_step"]["median"] for name, r in row["runners"].items()}


def run_curves(repeats: int = 3, quick: bool = False, threads: int | None = 1, progress: Callable | None = None) -> dict:
    """Measure every curve; plain data (what the results file holds).

    Example:
        >>> result = run_curves(quick=True)
        >>> result["curves"]["batch"][0]["seconds"]["numpy"]
    """
    from ..threads import limit_threads

    say = progress or (lambda line: None)
    ok, skipped = runners()
    result: dict = {"settings": {"repeats": repeats, "quick": quick, "threads": threads}, "skipped": skipped, "curves": {}}
    with limit_threads(threads):
        for r in ok:
            if r.name != COMPILED.name:
                warm_up_library(r)
        result["environment"] = environment()
        gc.collect()
        for curve, (values, point) in (QUICK_CURVES if quick else CURVES).items():
            rows = []
            for v in values:
                sizes, batch = point(v)
                steps = 2 if quick else max(10, min(30, int(2e8 / (6 * _weights(sizes) * batch))))
                say(f"{curve} = {v}: layers {'-'.join(map(str, sizes)) if len(sizes) < 8 else f'{sizes[0]}-{sizes[1]}x{len(sizes) - 2}-{sizes[-1]}'}, batch {batch}, {steps} steps")
                seconds = measure_point(sizes, batch, ok, repeats, steps)
                rows.append({"value": v, "sizes": list(sizes), "batch": batch, "seconds": seconds, "vs_torch": _ratios(seconds, "torch"),
                             "vs_numpy": _ratios(seconds, "numpy")})
            result["curves"][curve] = rows
        result["targets"] = measure_targets(ok, repeats, quick, say)
        if any(r.name == "torch" for r in ok):
            say("peak memory on wide")
            memory = measure_wide_memory(threads=threads or 1, quick=quick)
            mine, theirs = (memory[n].get("increase_bytes") for n in (COMPILED.name, "torch"))
            result["targets"].append({"workload": "wide", "runner": COMPILED.name, "against": "torch (peak memory)", "limit": 1.0,
                                      "ratio": ratio_of(mine, theirs), "met": bool(mine and theirs) and mine <= theirs, "memory": memory})
    worst = [r["vs_torch"].get(COMPILED.name) for rows in result["curves"].values() for r in rows]
    worst = [x for x in worst if x is not None]
    result["curves_target"] = {"what": "every point of the curves, compiled, <= 1.0x PyTorch", "worst": max(worst) if worst else None,
                               "met": bool(worst) and max(worst) <= 1.0}
    result["environment"]["loadavg_end"] = load_average()
    return result


#: issue 16's targets: (workload, runner, against, at most)
TARGETS = (
    ("digits", "chainrule-compiled", "numpy", 1.05),
    ("digits", "chainrule-compiled", "torch", 0.30),
    ("deep", "chainrule-compiled", "numpy", 1.05),
    ("deep", "chainrule-compiled", "torch", 0.40),
    ("wide", "chainrule-compiled", "numpy", 1.02),
    ("digits", "chainrule", "torch", 0.5),
    ("deep", "chainrule", "torch", 0.5),
)


def measure_targets(runner_list: Sequence, repeats: int, quick: bool = False, progress: Callable | None = None) -> list:
    """The benchmark's digits, deep and wide workloads with the four runners; each target of
    :data:`TARGETS` with its measured ratio of medians."""
    say = progress or (lambda line: None)
    medians = {}
    for name in ("digits", "deep", "wide"):
        w = get_workload(name, quick)
        say(f"target workload {name}: {w.description}")
        row = measure_training(w, runner_list, repeats, settle=0.0)
        medians[name] = {r: v["seconds_per_step"]["median"] for r, v in row["runners"].items()}
    out = []
    for workload, runner, against, limit in TARGETS:
        ratio = ratio_of(medians[workload].get(runner), medians[workload].get(against))
        out.append({"workload": workload, "runner": runner, "against": against, "limit": limit, "ratio": ratio,
                    "met": ratio is not None and ratio <= limit, "seconds": medians[workload]})
    return out


def measure_wide_memory(names: Sequence[str] = ("chainrule-compiled", "chainrule", "torch"), threads: int = 1, quick: bool = False) -> dict:
    """Peak resident-memory increase of one epoch of the wide workload per runner, each in a fresh
    process (:func:`chainrule.bench.measure.memory_child`, the compiled runner included)."""
    import json
    import subprocess
    import sys

    out = {}
    for name in names:
        code = (
            "import json; from chainrule.bench import curves as C, measure as M, runners as R; from chainrule.threads import limit_threads\n"
            f"R.RUNNERS[C.COMPILED.name] = C.COMPILED\nwith limit_threads({threads}): print(json.dumps(M.memory_child({name!r}, 'wide', {quick})))"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {"error": proc.stderr.strip()[-300:]}
    return out


def _weights(sizes: tuple) -> int:
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def _ratios(seconds: dict, base: str) -> dict:
    return {name: ratio_of(s, seconds.get(base)) for name, s in seconds.items()}


def format_curves(result: dict, markdown: bool = False) -> str:
    """One table per curve: time per step of each runner, and compiled chainrule's ratios."""
    lines = []
    for curve, rows in result["curves"].items():
        names = list(rows[0]["seconds"]) if rows else []
        header = [curve] + names + ["compiled vs torch", "compiled vs floor"]
        table = [
            [str(r["value"])] + [_time(r["seconds"][n]) for n in names]
            + [_x(r["vs_torch"].get("chainrule-compiled")), _x(r["vs_numpy"].get("chainrule-compiled"))]
            for r in rows
        ]
        lines.append(f"{curve}:" if not markdown else f"### {curve}")
        lines += _table(header, table, markdown)
        lines.append("")
    targets = result.get("targets") or []
    if targets:
        rows = [[t["workload"], t["runner"], f"vs {t['against']}", f"<= {t['limit']:g}x", _x(t["ratio"]), "met" if t["met"] else "MISSED"]
                for t in targets]
        ct = result.get("curves_target")
        if ct:
            rows.append(["every curve point", COMPILED.name, "vs torch", "<= 1x", _x(ct["worst"]) + " (worst)", "met" if ct["met"] else "MISSED"])
        lines.append("targets (issue 16):" if not markdown else "### targets (issue 16)")
        lines += _table(["workload", "runner", "against", "target", "measured", ""], rows, markdown)
    return "\n".join(lines)


def plot_curves(result: dict, path: Any) -> None:
    """The curves as one PNG: time per step against the batch, the depth and the width (log axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"batch": "batch (64-128-128-10)", "depth": "hidden layers of width 64 (batch 64)", "width": "width of 2 hidden layers (batch 32)"}
    fig, axes = plt.subplots(1, len(result["curves"]), figsize=(5 * len(result["curves"]), 4))
    for ax, (curve, rows) in zip(np.atleast_1d(axes), result["curves"].items()):
        xs = [r["value"] for r in rows]
        for name in rows[0]["seconds"]:
            ax.plot(xs, [r["seconds"][name] * 1e6 for r in rows], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(labels.get(curve, curve))
        ax.set_ylabel("time per step (us)")
        ax.grid(True, which="both", alpha=0.3)
    np.atleast_1d(axes)[0].legend()
    fig.suptitle("time per SGD step, float32, one thread")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
