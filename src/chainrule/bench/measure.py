"""The benchmark's measurements: time per step and throughput, peak memory (a fresh subprocess per
runner and workload on the CPU, the allocators on a GPU) and the machine."""

from __future__ import annotations

import gc
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Callable, Sequence

import numpy as np

from ..threads import limit_threads

from .runners import GPU, RUNNERS, Runner, torch_threads
from .workloads import Workload, batch_plan, evaluate_weights, get_workload, initial_weights, load_data


# Seconds of sleep before each timed run. After a multi-threaded call, OpenBLAS's worker
# threads keep spinning for about 0.1 s (measured here: 0.08-0.11 s of CPU used during a
# sleep after a 512x512 product); on 2 cores a pool still spinning from the previous runner
# would take a core from the next one.
SETTLE = 0.15


def _summary(values: list) -> dict:
    v = sorted(values)
    return {"median": float(np.median(v)), "min": float(v[0]), "max": float(v[-1]), "values": [float(x) for x in values]}


def ratio_of(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return a / b


def measure_training(
    w: Workload, runners: Sequence[Runner], repeats: int, seed: int = 0, progress: Callable | None = None, settle: float = SETTLE
) -> dict:
    """Time per training step of each runner on workload ``w``, repetitions alternating between runners.

    Each repetition builds a fresh model per runner from the same initial weights
    and trains it through every batch of the workload; the runners take turns,
    their order rotating from one repetition to the next. An untimed one-epoch
    warm-up comes first. Before each timed run the process sleeps ``settle``
    seconds, so that the previous library's idle threads stop spinning (see
    :data:`SETTLE`). Every epoch of every repetition gives one sample of the time
    per step (its time over its steps), so that a burst of load from elsewhere
    spoils a few samples rather than a whole repetition; scikit-learn, which
    trains all epochs in one ``fit``, gives one sample per repetition.
    """
    runners = [r for r in runners if r.workloads is None or w.name in r.workloads]
    X, y = load_data(w, seed)
    weights = initial_weights(w, seed)
    plan = batch_plan(len(X), w.batch_size, w.epochs, seed)
    steps = sum(len(e) for e in plan)
    times: dict = {r.name: [] for r in runners}
    per_run: dict = {r.name: [] for r in runners}
    trained: dict = {}
    for rep in range(-1, repeats):
        k = rep % len(runners) if rep >= 0 else 0
        for r in list(runners[k:]) + list(runners[:k]):
            run, get_weights = r.make_trainer(w, weights, X, y, plan if rep >= 0 else plan[:1])
            gc.collect()
            if rep >= 0:
                time.sleep(settle)
            t0 = time.perf_counter()
            marks = run()
            dt = time.perf_counter() - t0
            if rep >= 0:
                per_run[r.name].append(dt / steps)
                if len(marks) == len(plan):  # one sample per epoch
                    ends = [t0] + list(marks)
                    times[r.name] += [(b - a) / len(e) for a, b, e in zip(ends, ends[1:], plan)]
                else:
                    times[r.name].append(dt / steps)
                trained[r.name] = get_weights
        if progress is not None and rep >= 0:
            progress(f"{w.name}: repetition {rep + 1}/{repeats}")
    rows = {}
    Xe, ye = (X[: w.eval_rows], y[: w.eval_rows]) if w.eval_rows else (X, y)
    rows_per_step = len(X) * w.epochs / steps  # below the batch size when an epoch ends with a short batch
    for r in runners:
        loss, acc = evaluate_weights(trained[r.name](), w.activation, Xe, ye)
        summary = _summary(times[r.name])
        per_second = rows_per_step / summary["median"]
        rows[r.name] = {
            "seconds_per_step": summary,
            "seconds_per_step_per_run": per_run[r.name],
            "samples_per_second": per_second,
            "tflops": 6 * w.parameters * per_second / 1e12,
            "final_loss": loss,
            "final_accuracy": acc,
        }
    start_loss, start_acc = evaluate_weights(weights, w.activation, Xe, ye)
    return {
        "workload": w.name,
        "description": w.description,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(w).items()},
        "samples": len(X),
        "steps_per_run": steps,
        "parameters": w.parameters,
        "flop_per_sample": 6 * w.parameters,  # a forward and two backward products per weight, 2 FLOP each
        "loss_rows": len(Xe),
        "initial_loss": start_loss,
        "runners": rows,
    }


def measure_inference(w: Workload, runners: Sequence[Runner], repeats: int, seed: int = 0, settle: float = SETTLE) -> dict:
    """Samples per second of each runner's forward pass (no gradients) on workload ``w``'s network."""
    X, _ = load_data(w, seed)
    weights = initial_weights(w, seed)
    runners = [r for r in runners if r.make_predictor is not None]
    predictors = {r.name: r.make_predictor(w, weights, X) for r in runners}
    for r in runners:  # warm-up
        predictors[r.name]()
    times: dict = {r.name: [] for r in runners}
    n = len(X) * w.infer_passes
    for rep in range(repeats):
        k = rep % len(runners)
        for r in list(runners[k:]) + list(runners[:k]):
            predict = predictors[r.name]
            gc.collect()
            time.sleep(settle)
            t0 = time.perf_counter()
            for _ in range(w.infer_passes):
                predict()
            times[r.name].append(time.perf_counter() - t0)
    rows = {}
    for r in runners:
        s = _summary(times[r.name])
        rows[r.name] = {
            "seconds_per_sample": {k: (v / n if k != "values" else [x / n for x in v]) for k, v in s.items()},
            "samples_per_second": {"median": n / s["median"], "min": n / s["max"], "max": n / s["min"]},
        }
    return {
        "workload": w.name,
        "description": f"{'-'.join(map(str, w.sizes))} {w.activation}, forward only, batches of {w.infer_batch}, {len(X)} rows",
        "samples": len(X),
        "batch": w.infer_batch,
        "runners": rows,
    }


# ---- peak memory, one subprocess per (runner, workload) ---------------------------------


def _proc_status() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024
    return out


def warm_up_library(runner: Runner) -> None:
    """Load the runner's library and run one tiny step, so that lazy initialisation (thread
    pools, kernel caches) happens before the baseline, not during the measured training."""
    tiny = Workload("tiny", (4, 3, 2), "relu", batch_size=2, epochs=1, lr=0.1, data="synthetic", n_samples=4)
    X, y = np.eye(4, dtype=np.float32), np.array([0, 1, 0, 1])
    run, _ = runner.make_trainer(tiny, initial_weights(tiny), X, y, batch_plan(len(X), 2, 1))
    run()


def _release_free_memory() -> None:
    """Hand freed heap memory back to the system (glibc's malloc_trim), so that it is not
    counted in the baseline and then silently reused by the model's arrays."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def memory_child(runner_name: str, workload_name: str, quick: bool = False, seed: int = 0) -> dict:
    """Peak resident-memory increase of one epoch of training, measured in this process.

    Meant to run in a fresh process (:func:`measure_memory` starts one with :func:`child`).
    Linux: the high-water mark is reset through /proc/self/clear_refs after the
    warm-up and the data; elsewhere ``ru_maxrss`` is used (an upper bound that
    may hide the increase when the warm-up peaked higher).
    """
    runner = RUNNERS[runner_name]
    w = get_workload(workload_name, quick)
    warm_up_library(runner)
    X, y = load_data(w, seed)
    weights = initial_weights(w, seed)
    plan = batch_plan(len(X), w.batch_size, 1, seed)
    gc.collect()
    _release_free_memory()
    if os.path.exists("/proc/self/clear_refs"):
        method = "VmHWM after clear_refs"
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _proc_status()["VmRSS"]
        run, _ = runner.make_trainer(w, weights, X, y, plan)
        run()
        peak = _proc_status()["VmHWM"]
    else:
        import resource

        method = "ru_maxrss"
        scale = 1 if sys.platform == "darwin" else 1024
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
        run, _ = runner.make_trainer(w, weights, X, y, plan)
        run()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return {"baseline_bytes": base, "peak_bytes": peak, "increase_bytes": max(peak - base, 0), "method": method}


def child(runner_name: str, workload_name: str, quick: str, threads: str) -> None:
    """The subprocess that :func:`measure_memory` starts: :func:`memory_child`'s result, printed as JSON."""
    with limit_threads(int(threads) if threads else None):
        print(json.dumps(memory_child(runner_name, workload_name, quick=quick == "True")))


def measure_memory(
    runner_name: str, workload_name: str, quick: bool = False, threads: int | None = None, timeout: float = 300
) -> dict:
    """Run :func:`memory_child` in a fresh Python process and return what it measured (or an error)."""
    cmd = [sys.executable, "-c", "import sys; from chainrule.bench.measure import child; child(*sys.argv[1:])", runner_name, workload_name]
    cmd += [str(quick), str(threads or "")]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit status {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_gpu_memory(runner: Runner, workload_name: str, gpu: GPU, quick: bool = False, seed: int = 0) -> dict:
    """Peak GPU memory of building ``runner``'s model, moving its data and training one epoch.

    Measured in this process (GPU allocators count what they hand out, unlike the
    resident set): the peak bytes in use over those in use before, from CuPy's
    memory pool or from PyTorch's allocator (:meth:`GPU.peak_memory`). It
    includes the data each runner keeps on the GPU (chainrule-fit keeps none).
    """
    w = get_workload(workload_name, quick)
    X, y = load_data(w, seed)
    weights = initial_weights(w, seed)
    plan = batch_plan(len(X), w.batch_size, 1, seed)

    def train() -> None:
        run, _ = runner.make_trainer(w, weights, X, y, plan)
        run()

    try:
        return gpu.peak_memory(train, torch=runner.module == "torch")
    except Exception as e:  # out of memory, say: the timings stand without it
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}


# ---- the machine ------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def environment() -> dict:
    """The machine and software the numbers come from: CPU, versions, BLAS, threads, relevant variables."""
    from .. import __version__

    env = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "chainrule": __version__,
        "loadavg_start": load_average(),
        "variables": {k: v for k, v in sorted(os.environ.items()) if k.startswith(("OPENBLAS", "OMP_", "MKL_", "GOTO"))},
    }
    from importlib.metadata import PackageNotFoundError, version

    for mod, dist in (("torch", "torch"), ("sklearn", "scikit-learn")):
        try:
            env[mod] = version(dist)
        except PackageNotFoundError:
            pass
    try:
        from threadpoolctl import threadpool_info

        env["threadpools"] = [
            {k: p.get(k) for k in ("user_api", "internal_api", "prefix", "version", "architecture", "num_threads")}
            for p in threadpool_info()
        ]
    except ImportError:
        env["threadpools"] = None
    env["threads"] = torch_threads()
    if "torch" in sys.modules:  # how PyTorch computes: its parallel backend and math libraries
        info = sys.modules["torch"].__config__.parallel_info().splitlines()
        keep = ("ATen parallel backend", "OpenMP", "Intel(R) oneAPI", "Intel(R) MKL-DNN", "at::get_num_threads")
        env["torch_parallel"] = [line.strip() for line in info if line.strip().startswith(keep)]
    return env
