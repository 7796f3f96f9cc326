"""Micro benchmark of the engine (issue 2): forward and backward of one small expression.

    loss = ((x @ w + b).relu() ** 2).mean()      x (32, 64), w (64, 128), b (128,)

with gradients for x, w and b, computed three ways:

- chainrule: the expression above on ``cr.tensor(..., requires_grad=True)``, then ``backward()``;
- numpy: the same forward written by hand in NumPy and its hand-derived gradients
  (g = 2 relu(z) / N, then g @ w^T, x^T @ g and the column sums of g);
- torch: PyTorch on the CPU with as many threads as NumPy's BLAS, ``.backward()``.

Repetitions alternate between the three; each is a block of ``--number`` calls.
Prints the median time per call (min - max over repetitions) and the ratios
chainrule/numpy (issue 2 asks for at most 2x) and chainrule/torch (below 1x).

    python benchmarks/bench_engine.py [--repeats 15] [--number 2000] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time

import numpy as np

import chainrule as cr
from chainrule.bench import torch_threads
from chainrule.threads import limit_threads


def make_inputs(seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((32, 64), dtype=np.float32)
    w = rng.standard_normal((64, 128), dtype=np.float32) * np.float32(0.125)
    b = rng.standard_normal(128, dtype=np.float32) * np.float32(0.1)
    return x, w, b


def chainrule_case(x: np.ndarray, w: np.ndarray, b: np.ndarray):
    xt, wt, bt = (cr.tensor(a, requires_grad=True) for a in (x, w, b))

    def call():
        xt.grad = wt.grad = bt.grad = None
        loss = ((xt @ wt + bt).relu() ** 2).mean()
        loss.backward()
        return loss.data, xt.grad, wt.grad, bt.grad

    return call


def numpy_case(x: np.ndarray, w: np.ndarray, b: np.ndarray):
    scale = np.float32(2.0 / (x.shape[0] * w.shape[1]))

    def call():
        z = x @ w
        z += b
        r = np.maximum(z, 0, out=z)
        loss = np.mean(r * r)
        g = r * scale  # d loss / d z: 2 relu(z) / N, which is 0 where z <= 0
        return loss, g @ w.T, x.T @ g, g.sum(axis=0)

    return call


def torch_case(x: np.ndarray, w: np.ndarray, b: np.ndarray):
    import torch

    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))

    def call():
        xt.grad = wt.grad = bt.grad = None
        loss = ((xt @ wt + bt).relu() ** 2).mean()
        loss.backward()
        return loss.detach(), xt.grad, wt.grad, bt.grad

    return call


def check_agreement(cases: dict) -> float:
    """Largest absolute difference between any case's loss and gradients and chainrule's."""
    ref = [np.asarray(a, dtype=np.float64) for a in cases["chainrule"]()]
    worst = 0.0
    for name, call in cases.items():
        for a, r in zip(call(), ref):
            worst = max(worst, float(np.max(np.abs(np.asarray(a, dtype=np.float64) - r))))
    return worst


def measure(cases: dict, repeats: int, number: int) -> dict:
    """Seconds per call for each case: repetitions alternate, each a block of ``number`` calls."""
    for call in cases.values():  # warm-up
        for _ in range(max(number // 10, 10)):
            call()
    times = {name: [] for name in cases}
    names = list(cases)
    for rep in range(repeats):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            call = cases[name]
            gc.collect()
            t0 = time.perf_counter()
            for _ in range(number):
                call()
            times[name].append((time.perf_counter() - t0) / number)
    return {n: {"median": float(np.median(v)), "min": min(v), "max": max(v), "values": v} for n, v in times.items()}


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--number", type=int, default=2000, help="calls per repetition")
    parser.add_argument("--threads", type=int, default=None, help="BLAS and PyTorch threads (default: NumPy's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    with limit_threads(args.threads):
        x, w, b = make_inputs()
        cases = {"chainrule": chainrule_case(x, w, b), "numpy": numpy_case(x, w, b)}
        threads = torch_threads()
        try:
            import torch

            torch.set_num_threads(threads)
            cases["torch"] = torch_case(x, w, b)
        except ImportError:
            print("torch is not installed: skipping the PyTorch case", file=sys.stderr)
        diff = check_agreement(cases)
        times = measure(cases, args.repeats, args.number)

    med = {n: t["median"] for n, t in times.items()}
    ratios = {"chainrule/numpy": med["chainrule"] / med["numpy"]}
    if "torch" in med:
        ratios["chainrule/torch"] = med["chainrule"] / med["torch"]
        ratios["numpy/torch"] = med["numpy"] / med["torch"]
    if args.json:
        print(json.dumps({"threads": threads, "max_abs_difference": diff, "seconds_per_call": times, "ratios": ratios}, indent=1))
        return 0
    print(f"((x @ w + b).relu() ** 2).mean(), forward + backward, x (32, 64), w (64, 128); {threads} threads")
    print(f"{args.repeats} alternating repetitions of {args.number} calls; results agree to {diff:.1e}")
    for name, t in times.items():
        print(f"  {name:10s} {t['median'] * 1e6:8.1f} us   ({t['min'] * 1e6:.1f} - {t['max'] * 1e6:.1f})")
    for name, r in ratios.items():
        print(f"  {name:16s} {r:5.2f}x")
    print("issue 2 targets: chainrule/numpy <= 2x, chainrule/torch < 1x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
