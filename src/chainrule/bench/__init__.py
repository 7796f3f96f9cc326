"""The benchmark behind ``chainrule bench``: chainrule against PyTorch, scikit-learn and NumPy
(on the CPU), and against PyTorch CUDA and CuPy (``device="cuda"``).

Four runners train the same multi-layer perceptrons with plain SGD in float32:

- ``chainrule``: idiomatic chainrule (``nn.MLP``, ``optim.SGD``, ``F.cross_entropy``
  in a plain loop); ``chainrule-fit`` is the same model trained by ``cr.fit``.
- ``torch``: idiomatic PyTorch on the CPU (``torch.nn.Sequential``, ``torch.optim.SGD``),
  with as many threads as NumPy's BLAS uses.
- ``sklearn``: scikit-learn's ``MLPClassifier`` (solver "sgd", momentum 0, no L2
  penalty, ``max_iter`` = epochs); time per step is its fit time divided by the
  steps it took.
- ``numpy``: a hand-fused NumPy MLP (:class:`FusedMLP`): forward, hand-derived
  backward and in-place update with preallocated buffers. It is the floor for an
  engine built on NumPy: whatever an engine adds on top of it is overhead.

On a GPU (``device="cuda"``, needs CuPy) the runners are ``chainrule`` (the same
loop after ``model.to("cuda")``, the data moved to the GPU once and each batch
gathered there), ``chainrule-fit`` (``cr.fit`` moves each batch), ``torch`` on
device "cuda", and ``cupy``: :class:`FusedMLP` on CuPy arrays, the floor there.
scikit-learn runs on the CPU only and is skipped. The GPU adds the workload
"big" (4096-4096-4096-4096-10, batch 4096), which is bound by its matrix
products; it reports training throughput in samples and TFLOP per second
(6 x parameters x samples / time: a forward and two backward products per
weight, 2 FLOP each). Each timed region ends by waiting for the GPU
(``synchronize``) before the clock is read.

chainrule, chainrule-fit, torch and numpy (cupy) start from the same weights and see the
same batches in the same order (:func:`batch_plan` shuffles as ``cr.fit`` does),
so their final training losses agree closely: a check that every runner computes
the same thing. scikit-learn draws its own initial weights and batch order.

Timing: one process, repetitions alternating between runners (the order rotates
each repetition) after one untimed warm-up epoch per runner; each repetition
trains a freshly built model through the whole workload, after a short sleep that
lets the previous runner's idle threads stop spinning (:data:`SETTLE`). Each
epoch gives one sample of the time per step (scikit-learn: each fit). Reported:
the median of those samples with their min and max, and the ratio of medians
against PyTorch and against the NumPy floor.

Peak memory: each (runner, workload) trains for one epoch in a fresh Python
subprocess. After the libraries are imported, warmed up on a tiny problem and
the data are made, the kernel's resident-set high-water mark is reset (writing 5
to /proc/self/clear_refs); the figure is the high-water mark during model
construction and training minus the resident set just before. It counts every
byte the process touches, whichever allocator it came from (NumPy's, PyTorch's
or BLAS buffers), and nothing that was resident before the model was built.
On a GPU, peak memory is measured in the process: the peak of bytes in use in
CuPy's memory pool (chainrule, cupy) or ``torch.cuda.max_memory_allocated``,
over building the model, moving the data and one epoch of training.

Example:
    >>> from chainrule import bench
    >>> result = bench.run_benchmark(workloads=["digits"], quick=True, memory=False)
    >>> print(bench.format_report(result))
"""

from __future__ import annotations

import gc
from typing import Callable, Sequence

from ..threads import limit_threads
from .measure import (
    environment, load_average, measure_gpu_memory, measure_inference, measure_memory, measure_training,
    memory_child, ratio_of, warm_up_library,
)
from .report import format_report, load_warning, results_markdown
from .runners import FusedMLP, GPU, RUNNERS, Runner, available_runners, gpu_runners, runner_names, torch_threads
from .workloads import (
    FLOOR, GPU_ONLY, GPU_TARGETS, QUICK, TARGETS, WORKLOADS, Workload, batch_plan, evaluate_weights,
    get_workload, initial_weights, load_data,
)


def run_benchmark(
    workloads: Sequence[str] | None = None,
    runners: Sequence[str] | None = None,
    repeats: int = 5,
    quick: bool = False,
    memory: bool = True,
    inference: bool = True,
    device: str = "cpu",
    threads: int | None = None,
    seed: int = 0,
    progress: Callable | None = None,
) -> dict:
    """Run the benchmark and return its results as plain data (what ``--json`` prints).

    Args:
        workloads: names from :data:`WORKLOADS` (default: digits, deep and wide;
            and big on "cuda"; big is refused on "cpu", see :data:`GPU_ONLY`).
        runners: names from :func:`runner_names` (all of the device's by default);
            one whose library is missing is skipped and listed under "skipped",
            as are sklearn and numpy on "cuda".
        repeats: timed repetitions per runner and workload (after a warm-up).
        quick: tiny settings (a few steps each) to check that everything runs.
        memory: measure peak memory (CPU: one subprocess per runner and
            workload; GPU: in this process, from the allocators).
        inference: measure forward throughput too.
        device: "cpu", or "cuda" (CuPy and an NVIDIA GPU; chainrule's error
            says what is missing before anything runs).
        threads: threads for NumPy's BLAS and for PyTorch alike (default: as
            many as NumPy's BLAS uses already).
        progress: called with a line of text as the benchmark goes.

    Example:
        >>> result = run_benchmark(["digits"], runners=["chainrule", "numpy"], quick=True, memory=False)
        >>> result["training"][0]["runners"]["numpy"]["seconds_per_step"]["median"]
    """
    from ..backend import normalize_device
    from ..errors import ChainruleError

    device = normalize_device(device)
    gpu = GPU() if device == "cuda" else None  # before any work: a clear error without CuPy or a GPU
    if repeats < 1:
        raise ChainruleError(f"repeats must be at least 1, got {repeats}")
    if workloads is None:
        workloads = [name for name in WORKLOADS if gpu is not None or name not in GPU_ONLY]
    for name in workloads:
        if gpu is None and name in GPU_ONLY:
            raise ChainruleError(f"workload {name!r} runs with device 'cuda' only: {GPU_ONLY[name]}")
    specs = [get_workload(name, quick) for name in workloads]
    ok, skipped = available_runners(runners, gpu)
    if not ok:
        raise ChainruleError(f"no runner can run: {skipped}")
    say = progress or (lambda line: None)
    result: dict = {
        "environment": None,
        "settings": {"quick": quick, "repeats": repeats, "device": device, "threads": threads, "seed": seed},
        "runners": {r.name: r.description for r in ok},
        "skipped": skipped,
        "training": [],
        "inference": [],
    }
    with limit_threads(threads):
        torch_before = None
        if any(r.name == "torch" for r in ok):
            import torch

            torch_before = torch.get_num_threads()
        for r in ok:  # import each library and run it once on a tiny problem
            warm_up_library(r)
        result["environment"] = environment()
        if gpu is not None:
            result["environment"]["gpu"] = gpu.describe()
        # objects alive now (PyTorch's and scikit-learn's modules among them) are left out of
        # garbage collections while timing, as they would be in a process without those libraries
        gc.collect()
        gc.freeze()
        try:
            for w in specs:
                say(f"{w.name}: training, {w.description}")
                result["training"].append(measure_training(w, ok, repeats, seed, progress=say))
            if inference:
                for w in specs:
                    say(f"{w.name}: inference")
                    result["inference"].append(measure_inference(w, ok, repeats, seed))
        finally:
            gc.unfreeze()
            if torch_before is not None:
                import torch

                torch.set_num_threads(torch_before)
    if memory:
        by_name = {r.name: r for r in ok}
        for row in result["training"]:
            for name in row["runners"]:
                say(f"{row['workload']}: peak memory of {name}")
                if gpu is None:
                    row["runners"][name]["memory"] = measure_memory(name, row["workload"], quick, threads=threads)
                else:
                    row["runners"][name]["memory"] = measure_gpu_memory(by_name[name], row["workload"], gpu, quick, seed)
    floor = FLOOR[device]
    for row in result["training"] + result["inference"]:
        key = "seconds_per_step" if "seconds_per_step" in next(iter(row["runners"].values())) else "seconds_per_sample"
        med = {name: r[key]["median"] for name, r in row["runners"].items()}
        for name, r in row["runners"].items():
            r["vs_torch"] = ratio_of(med[name], med.get("torch"))
            r[f"vs_{floor}"] = ratio_of(med[name], med.get(floor))
    result["targets"] = check_targets(result)
    result["environment"]["loadavg_end"] = load_average()
    return result


def check_targets(result: dict) -> list:
    """The targets of the device (the CPU's, or the GPU's), each with the measured
    ratio and whether it is met (None: not measured).

    Time and memory ratios must be at most the limit; the throughput ratio (chainrule's
    samples per second over PyTorch's) at least the limit, as ``"at_least"`` says.
    """
    gpu = result.get("settings", {}).get("device", "cpu") == "cuda"
    rows = {row["workload"]: row["runners"] for row in result["training"]}
    out = []
    for workload, what, limit in GPU_TARGETS if gpu else TARGETS:
        runners = rows.get(workload, {})
        cr = runners.get("chainrule")
        value = None
        if cr is not None:
            if what == "memory":
                mine, theirs = cr.get("memory", {}), runners.get("torch", {}).get("memory", {})
                if "increase_bytes" in mine and "increase_bytes" in theirs:
                    value = ratio_of(mine["increase_bytes"], theirs["increase_bytes"])
            elif what == "throughput":
                value = ratio_of(1.0, cr.get("vs_torch"))  # samples per second over torch's: the inverse time ratio
            else:
                value = cr.get(f"vs_{what}")
        measure = {"memory": "peak memory", "throughput": "training throughput"}.get(what, "time per step")
        label = f"{workload}: {measure} vs {what if what in FLOOR.values() else 'torch'}"
        at_least = what == "throughput"
        met = None if value is None else (value >= limit if at_least else value <= limit)
        out.append({"target": label, "limit": limit, "at_least": at_least, "ratio": value, "met": met})
    return out


__all__ = [
    "available_runners",
    "batch_plan",
    "check_targets",
    "environment",
    "evaluate_weights",
    "FLOOR",
    "format_report",
    "FusedMLP",
    "get_workload",
    "GPU",
    "GPU_ONLY",
    "gpu_runners",
    "GPU_TARGETS",
    "initial_weights",
    "load_data",
    "load_warning",
    "measure_gpu_memory",
    "measure_inference",
    "measure_memory",
    "measure_training",
    "memory_child",
    "QUICK",
    "results_markdown",
    "run_benchmark",
    "Runner",
    "runner_names",
    "RUNNERS",
    "TARGETS",
    "torch_threads",
    "Workload",
    "WORKLOADS",
]
