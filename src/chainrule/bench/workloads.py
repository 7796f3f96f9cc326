"""The benchmark's workloads: the networks, their data, initial weights and batch plans, and the targets."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Workload:
    """One network and data set to train: layer sizes, activation, batch size, epochs, learning rate.

    ``data`` is "digits" (the 8x8 digits training split, 1,348 rows) or
    "synthetic" (``n_samples`` Gaussian rows labelled by a random linear teacher).
    """

    name: str
    sizes: tuple
    activation: str
    batch_size: int
    epochs: int
    lr: float
    data: str = "digits"
    n_samples: int = 0
    infer_batch: int = 1024
    infer_passes: int = 20
    eval_rows: int = 0  # rows the final loss is computed on, in float64 on the CPU (0: all)

    @property
    def parameters(self) -> int:
        """Weights and biases of the network."""
        return sum(a * b + b for a, b in zip(self.sizes[:-1], self.sizes[1:]))

    @property
    def description(self) -> str:
        hidden = self.sizes[1:-1]
        if len(hidden) > 3 and len(set(hidden)) == 1:
            arch = f"{self.sizes[0]}-{hidden[0]}x{len(hidden)}-{self.sizes[-1]}"
        else:
            arch = "-".join(map(str, self.sizes))
        return f"{arch} {self.activation}, batch {self.batch_size}, {self.epochs} epochs, lr {self.lr}, {self.data} data"


WORKLOADS = {
    "digits": Workload("digits", (64, 128, 128, 10), "relu", batch_size=32, epochs=20, lr=0.1),
    "deep": Workload("deep", (64,) + (64,) * 10 + (10,), "sigmoid", batch_size=64, epochs=20, lr=0.1),
    "wide": Workload(
        "wide", (784, 1024, 1024, 10), "relu", batch_size=256, epochs=4, lr=0.01, data="synthetic", n_samples=2560,
        infer_passes=2,
    ),
    # bound by its matrix products (about 1.24 TFLOP a step): on a GPU only, where the GPU
    # target is >= 0.95x PyTorch's throughput; a CPU takes seconds per step
    "big": Workload(
        "big", (4096, 4096, 4096, 4096, 10), "relu", batch_size=4096, epochs=3, lr=0.01, data="synthetic",
        n_samples=16384, infer_batch=4096, infer_passes=2, eval_rows=1024,
    ),
}
# workloads too slow for a CPU: refused there with this reason
GPU_ONLY = {"big": "one step is about 1.2 TFLOP (6 x 50M parameters x 4096 rows): seconds per step on a CPU"}

# tiny settings for --quick and the test suite: the same code paths, a few steps each
QUICK = {
    "digits": replace(WORKLOADS["digits"], epochs=1, n_samples=256, infer_passes=2),
    "deep": replace(WORKLOADS["deep"], epochs=1, n_samples=256, infer_passes=2),
    "wide": replace(WORKLOADS["wide"], sizes=(784, 256, 256, 10), epochs=1, n_samples=512, infer_passes=1),
    "big": replace(WORKLOADS["big"], sizes=(256, 256, 256, 256, 10), batch_size=256, epochs=1, n_samples=512,
                   infer_batch=256, infer_passes=1, eval_rows=0),
}

# the CPU targets: (workload, what, limit); "time" ratios are median time per step
TARGETS = (
    ("digits", "torch", 0.5),
    ("digits", "numpy", 1.3),
    ("deep", "torch", 0.5),
    ("wide", "torch", 1.0),
    ("wide", "memory", 1.0),
)
# the GPU targets; "throughput" is chainrule's samples per second over PyTorch's,
# at least the limit (the others are at most)
GPU_TARGETS = (
    ("big", "throughput", 0.95),
    ("digits", "torch", 1.0),
)
# the hand-fused floor each device is compared with
FLOOR = {"cpu": "numpy", "cuda": "cupy"}


def get_workload(name: str, quick: bool = False) -> Workload:
    """The workload called ``name`` ("digits", "deep", "wide" or "big"), at tiny settings with ``quick``."""
    table = QUICK if quick else WORKLOADS
    if name not in table:
        from ..errors import ChainruleError

        raise ChainruleError(f"unknown workload {name!r}; expected one of {', '.join(WORKLOADS)}")
    return table[name]


def load_data(w: Workload, seed: int = 0) -> tuple:
    """(X float32, y int64) for workload ``w``; the same seed gives the same data."""
    if w.data == "digits":
        from ..data.digits import load_digits, train_test_split

        X, y = load_digits()
        X, _, y, _ = train_test_split(X, y, test_size=0.25, seed=seed)
    else:
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((w.n_samples, w.sizes[0]), dtype=np.float32)
        teacher = rng.standard_normal((w.sizes[0], w.sizes[-1]), dtype=np.float32)
        y = np.argmax(X @ teacher, axis=1).astype(np.int64)
    if w.n_samples and len(X) > w.n_samples:
        X, y = X[: w.n_samples], y[: w.n_samples]
    return np.ascontiguousarray(X, dtype=np.float32), y.astype(np.int64)


def initial_weights(w: Workload, seed: int = 0) -> list:
    """[(W (in, out), b (out,)), ...] float32: chainrule's ``nn.MLP`` initialisation, shared by the runners."""
    from ..nn import MLP

    model = MLP(list(w.sizes), activation=w.activation, generator=seed)
    return [(lin.weight.data.copy(), lin.bias.data.copy()) for lin in model.linears]


def batch_plan(n: int, batch_size: int, epochs: int, seed: int = 0) -> list:
    """Row indices of every mini-batch: one list per epoch, each epoch a fresh seeded shuffle."""
    plan = []
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(n)
        plan.append([order[i : i + batch_size] for i in range(0, n, batch_size)])
    return plan


def evaluate_weights(weights: Sequence, activation: str, X: np.ndarray, y: np.ndarray) -> tuple:
    """(mean cross-entropy, accuracy) of an MLP with these (NumPy) weights on (X, y), in float64."""
    a = X.astype(np.float64)
    for i, (W, b) in enumerate(weights):
        a = a @ np.asarray(W, np.float64) + np.asarray(b, np.float64)
        if i < len(weights) - 1:
            a = np.maximum(a, 0) if activation == "relu" else 1 / (1 + np.exp(-a))
    if a.shape[1] == 1:  # scikit-learn's binary case: one logit for class 1
        a = np.concatenate([np.zeros_like(a), a], axis=1)
    a = a - a.max(axis=1, keepdims=True)
    logp = a - np.log(np.exp(a).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean()), float((a.argmax(axis=1) == y).mean())
