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

import contextlib
import functools
import gc
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from .threads import limit_threads

# ---- workloads ----------------------------------------------------------------


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
        from .errors import ChainruleError

        raise ChainruleError(f"unknown workload {name!r}; expected one of {', '.join(WORKLOADS)}")
    return table[name]


def load_data(w: Workload, seed: int = 0) -> tuple:
    """(X float32, y int64) for workload ``w``; the same seed gives the same data."""
    if w.data == "digits":
        from .data.digits import load_digits, train_test_split

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
    from .nn import MLP

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


# ---- the NumPy floor ------------------------------------------------------------


class FusedMLP:
    """A multi-layer perceptron written by hand in NumPy (or CuPy): the floor for an engine on it.

    Forward, the hand-derived backward of softmax cross-entropy, and the SGD
    update, with every intermediate array preallocated (one set per batch size)
    and every operation in place. The output gradient ``softmax(z) - onehot(y)``
    is scaled by ``lr / n`` once, so each parameter update is a single
    subtraction: ``W -= a^T d``, ``b -= sum(d)``.

    The array module is the one of the weights: NumPy arrays give the CPU
    floor, CuPy arrays the GPU floor (the same calls: CuPy mirrors NumPy's
    ``out=`` arguments). Batches must live where the weights do.

    Args:
        weights: [(W (in, out), b (out,)), ...], NumPy or CuPy arrays; copied.
        activation: "relu" or "sigmoid" for the hidden layers.

    Example:
        >>> net = FusedMLP(initial_weights(WORKLOADS["digits"]), "relu")
        >>> net.step(X[:32], y[:32], lr=0.1)
    """

    def __init__(self, weights: Sequence, activation: str = "relu"):
        from .backend import namespace

        if activation not in ("relu", "sigmoid"):
            raise ValueError(f"FusedMLP supports activation 'relu' or 'sigmoid', got {activation!r}")
        xp = self.xp = namespace(weights[0][0])
        self.W = [xp.array(W, dtype=xp.float32) for W, _ in weights]
        self.b = [xp.array(b, dtype=xp.float32) for _, b in weights]
        self.relu = activation == "relu"
        self._buffers: dict = {}
        # row maxima and sums: NumPy's ufunc reductions skip the wrappers of np.max and np.sum
        self._rowmax, self._rowsum = (np.maximum.reduce, np.add.reduce) if xp is np else (xp.max, xp.sum)

    def _buffers_for(self, n: int) -> tuple:
        bufs = self._buffers.get(n)
        if bufs is None:
            xp, f32 = self.xp, self.xp.float32
            z = [xp.empty((n, W.shape[1]), f32) for W in self.W]  # layer outputs, activated in place
            d = [xp.empty((n, W.shape[0]), f32) for W in self.W]  # gradients of layer inputs
            tmp = [xp.empty((n, W.shape[0]), f32 if not self.relu else bool) for W in self.W]
            gW = [xp.empty_like(W) for W in self.W]
            gb = [xp.empty_like(b) for b in self.b]
            col = xp.empty((n, 1), f32)  # row maxima, then row sums, of the logits
            bufs = self._buffers[n] = (z, d, tmp, gW, gb, col, xp.arange(n))
        return bufs

    def forward(self, x: Any) -> Any:
        """The logits for the batch ``x`` (a preallocated buffer, overwritten by the next call)."""
        xp = self.xp
        z = self._buffers_for(len(x))[0]
        a = x
        last = len(self.W) - 1
        for i in range(last + 1):
            out = z[i]
            xp.matmul(a, self.W[i], out=out)
            out += self.b[i]
            if i < last:
                if self.relu:
                    xp.maximum(out, 0, out=out)
                else:  # 1 / (1 + e^-z); e^-z may overflow to inf, giving exactly 0
                    xp.negative(out, out=out)
                    xp.exp(out, out=out)
                    out += 1
                    xp.reciprocal(out, out=out)
            a = out
        return a

    def step(self, x: Any, y: Any, lr: float) -> None:
        """One SGD step on the mean softmax cross-entropy of the batch (x, y)."""
        xp = self.xp
        n = len(x)
        z, d, tmp, gW, gb, col, rows = self._buffers_for(n)
        p = self.forward(x)
        p -= self._rowmax(p, axis=1, keepdims=True, out=col)
        xp.exp(p, out=p)
        p /= self._rowsum(p, axis=1, keepdims=True, out=col)
        p[rows, y] -= 1
        p *= lr / n  # d(loss)/d(logits), times the learning rate
        g = p
        W, b = self.W, self.b
        for i in range(len(W) - 1, -1, -1):
            a = z[i - 1] if i else x
            if i:
                xp.matmul(g, W[i].T, out=d[i])  # before W[i] changes
            xp.matmul(a.T, g, out=gW[i])
            W[i] -= gW[i]
            self._rowsum(g, axis=0, out=gb[i])
            b[i] -= gb[i]
            if i:
                g, t = d[i], tmp[i]
                if self.relu:
                    xp.greater(a, 0, out=t)
                    g *= t
                else:  # sigmoid' = s (1 - s), with s the layer's output
                    xp.subtract(1, a, out=t)
                    t *= a
                    g *= t

    def weights(self) -> list:
        return list(zip(self.W, self.b))


# ---- runners ------------------------------------------------------------------------


@dataclass(frozen=True)
class Runner:
    """A way to train and run an MLP: ``make_trainer`` and ``make_predictor`` build fresh models.

    ``make_trainer(w, weights, X, y, plan)`` returns ``(run, get_weights)``: ``run()``
    trains through every batch of ``plan`` (one list of index arrays per epoch) and
    returns the ``time.perf_counter()`` reading at the end of each epoch (or an empty
    list when it cannot tell); ``get_weights()`` gives the trained [(W (in, out), b)]
    as NumPy arrays. ``make_predictor(w, weights, X)`` returns ``predict()``, which
    computes outputs for every row of X in chunks of ``w.infer_batch`` without
    recording gradients. X, y, the plan and the weights come as NumPy arrays; a GPU
    runner moves them to the GPU while it is made (before the clock starts), and
    waits for the GPU before each reading of the clock.
    """

    name: str
    description: str
    module: str | None
    make_trainer: Callable
    make_predictor: Callable | None
    workloads: tuple | None = None  # the training workloads it runs on (None: all)


class GPU:
    """The GPU as the runners use it (``device="cuda"``): CuPy for chainrule and the
    hand-fused floor, PyTorch's device "cuda" for torch.

    GPU work is queued and runs later, so every timed region ends with
    :meth:`sync` (or :meth:`torch_sync`) before the clock is read. Making one
    raises chainrule's error, in one line, when CuPy or a GPU is missing.
    """

    torch_device = "cuda"

    def __init__(self) -> None:
        from . import backend

        self.cp = backend.cupy()

    def put(self, a: np.ndarray) -> Any:
        """A NumPy array on the GPU (a CuPy array)."""
        return self.cp.asarray(a)

    def model_to(self, model: Any) -> Any:
        return model.to("cuda")

    def sync(self) -> None:
        """Wait until the GPU has done the work queued on CuPy's current stream."""
        self.cp.cuda.get_current_stream().synchronize()

    def torch_sync(self) -> None:
        import torch

        torch.cuda.synchronize()

    def torch_ready(self) -> str | None:
        """Why PyTorch cannot run on this GPU, or None when it can."""
        import torch

        return None if torch.cuda.is_available() else f"this PyTorch ({torch.__version__}) has no CUDA or sees no GPU"

    def peak_memory(self, train: Callable, torch: bool = False) -> dict:
        """Peak GPU memory in use while ``train()`` runs, over what was in use before.

        CuPy: an allocator that notes the memory pool's ``used_bytes()`` after each
        allocation (freed blocks go back to the pool, so cached but unused memory is
        not counted); PyTorch: ``torch.cuda.max_memory_allocated()``, the same measure.
        """
        gc.collect()
        if torch:
            import torch as T

            T.cuda.synchronize()
            T.cuda.reset_peak_memory_stats()
            base = T.cuda.memory_allocated()
            train()
            T.cuda.synchronize()
            peak = T.cuda.max_memory_allocated()
            method = "torch.cuda.max_memory_allocated"
        else:
            cp = self.cp
            pool = cp.get_default_memory_pool()
            self.sync()
            base = pool.used_bytes()
            high = [base]

            def malloc(size: int) -> Any:
                mem = pool.malloc(size)
                used = pool.used_bytes()
                if used > high[0]:
                    high[0] = used
                return mem

            cp.cuda.set_allocator(malloc)
            try:
                train()
                self.sync()
            finally:
                cp.cuda.set_allocator(pool.malloc)
            peak = high[0]
            method = "CuPy memory pool, peak of used_bytes()"
        return {"baseline_bytes": int(base), "peak_bytes": int(peak), "increase_bytes": int(max(peak - base, 0)), "method": method}

    def describe(self) -> dict:
        """The card and the versions of CUDA, CuPy and PyTorch, and the float32 matrix-product modes."""
        cp = self.cp
        props = cp.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        info: dict = {
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "compute_capability": f"{props.get('major')}.{props.get('minor')}",
            "memory_bytes": int(props.get("totalGlobalMem", 0)),
            "multiprocessors": int(props.get("multiProcessorCount", 0)),
            "cupy": cp.__version__,
            "cuda_runtime": _cuda_version(cp.cuda.runtime.runtimeGetVersion()),
            "cuda_driver": _cuda_version(cp.cuda.runtime.driverGetVersion()),
            # TF32 would change what is compared: both sides stay in full float32 unless these say otherwise
            "CUPY_TF32": os.environ.get("CUPY_TF32", "unset (off)"),
        }
        if "torch" in sys.modules:
            torch = sys.modules["torch"]
            info["torch_cuda"] = torch.version.cuda
            info["torch_float32_matmul_precision"] = torch.get_float32_matmul_precision()
        return info


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def _chunks(X: np.ndarray, size: int) -> list:
    return [X[i : i + size] for i in range(0, len(X), size)]


def _host_weights(pairs: Sequence) -> list:
    from .backend import to_numpy

    return [(to_numpy(W), to_numpy(b)) for W, b in pairs]


def _waiter(gpu: GPU | None) -> Callable:
    """What a runner calls before reading the clock: wait for the GPU (nothing on the CPU)."""
    return gpu.sync if gpu is not None else (lambda: None)


def _quiet(gpu: GPU | None) -> Any:
    """NumPy warns when a sigmoid's e^-z overflows (to inf, giving exactly 0): silence it; CuPy never warns."""
    return np.errstate(over="ignore") if gpu is None else contextlib.nullcontext()


def _chainrule_model(w: Workload, weights: Sequence, gpu: GPU | None = None) -> Any:
    from . import nn

    model = nn.MLP(list(w.sizes), activation=w.activation, generator=0)
    for lin, (W, b) in zip(model.linears, weights):
        lin.weight.data[...] = W
        lin.bias.data[...] = b
    return gpu.model_to(model) if gpu is not None else model


def _chainrule_trainer(w: Workload, weights: Sequence, X: np.ndarray, y: np.ndarray, plan: list, gpu: GPU | None = None) -> tuple:
    import chainrule as cr
    from chainrule import functional as F
    from chainrule import optim

    model = _chainrule_model(w, weights, gpu)
    opt = optim.SGD(model.parameters(), lr=w.lr)
    if gpu is not None:  # the data set moves to the GPU once; each batch is gathered there
        X, y = gpu.put(X), gpu.put(y)
        plan = [[gpu.put(idx) for idx in epoch] for epoch in plan]
    wait = _waiter(gpu)

    def run() -> list:
        marks = []
        for epoch in plan:
            for idx in epoch:
                xb, yb = cr.tensor(X[idx]), cr.tensor(y[idx])
                loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
            wait()
            marks.append(time.perf_counter())
        return marks

    wait()
    return run, lambda: _host_weights([(lin.weight.data, lin.bias.data) for lin in model.linears])


def _chainrule_fit_trainer(w: Workload, weights: Sequence, X: np.ndarray, y: np.ndarray, plan: list, gpu: GPU | None = None) -> tuple:
    import chainrule as cr
    from chainrule import functional as F
    from chainrule import optim

    model = _chainrule_model(w, weights, gpu)  # fit moves each NumPy batch to the model's device
    opt = optim.SGD(model.parameters(), lr=w.lr)
    wait = _waiter(gpu)

    class EpochMarks:  # a fit callback noting when each epoch ends
        def __init__(self) -> None:
            self.marks: list = []

        def on_epoch_end(self, state: Any) -> None:
            wait()
            self.marks.append(time.perf_counter())

    def run() -> list:  # fit shuffles epoch e with the seed (0, e), as batch_plan does
        marks = EpochMarks()
        cr.fit(model, F.cross_entropy, opt, X, y, epochs=len(plan), batch_size=w.batch_size, seed=0, progress=False,
               callbacks=[marks])
        return marks.marks

    wait()
    return run, lambda: _host_weights([(lin.weight.data, lin.bias.data) for lin in model.linears])


def _chainrule_predictor(w: Workload, weights: Sequence, X: np.ndarray, gpu: GPU | None = None) -> Callable:
    import chainrule as cr

    model = _chainrule_model(w, weights, gpu)
    model.eval()
    chunks = [gpu.put(c) for c in _chunks(X, w.infer_batch)] if gpu is not None else _chunks(X, w.infer_batch)
    wait = _waiter(gpu)

    def predict() -> None:
        with cr.no_grad():
            for xb in chunks:
                model(cr.tensor(xb))
        wait()

    wait()
    return predict


def torch_threads() -> int:
    """The number of threads NumPy's BLAS uses here (threadpoolctl), which PyTorch is given too."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return os.cpu_count() or 1
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    numpy_pools = [p for p in pools if "numpy" in p.get("filepath", "")]
    pool = (numpy_pools or pools or [{"num_threads": os.cpu_count() or 1}])[0]
    return int(pool["num_threads"])


def _torch_model(w: Workload, weights: Sequence, gpu: GPU | None = None) -> Any:
    import torch

    torch.set_num_threads(torch_threads())
    act = {"relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid}[w.activation]
    layers = []
    for i, (W, b) in enumerate(weights):
        lin = torch.nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i < len(weights) - 1:
            layers.append(act())
    model = torch.nn.Sequential(*layers)
    return model.to(gpu.torch_device) if gpu is not None else model


def _torch_weights(model: Any) -> list:
    lins = [m for m in model if hasattr(m, "weight")]
    return [(m.weight.detach().cpu().numpy().T, m.bias.detach().cpu().numpy()) for m in lins]


def _torch_trainer(w: Workload, weights: Sequence, X: np.ndarray, y: np.ndarray, plan: list, gpu: GPU | None = None) -> tuple:
    import torch

    model = _torch_model(w, weights, gpu)
    opt = torch.optim.SGD(model.parameters(), lr=w.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    batches = [[torch.from_numpy(idx) for idx in epoch] for epoch in plan]
    wait = (lambda: None) if gpu is None else gpu.torch_sync
    if gpu is not None:  # as for chainrule: the data moves once, batches are gathered on the GPU
        Xt, yt = Xt.to(gpu.torch_device), yt.to(gpu.torch_device)
        batches = [[idx.to(gpu.torch_device) for idx in epoch] for epoch in batches]

    def run() -> list:
        marks = []
        for epoch in batches:
            for idx in epoch:
                xb, yb = Xt[idx], yt[idx]
                loss = loss_fn(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
            wait()
            marks.append(time.perf_counter())
        return marks

    wait()
    return run, lambda: _torch_weights(model)


def _torch_predictor(w: Workload, weights: Sequence, X: np.ndarray, gpu: GPU | None = None) -> Callable:
    import torch

    model = _torch_model(w, weights, gpu)
    model.eval()
    chunks = [torch.from_numpy(c) for c in _chunks(X, w.infer_batch)]
    wait = (lambda: None) if gpu is None else gpu.torch_sync
    if gpu is not None:
        chunks = [c.to(gpu.torch_device) for c in chunks]

    def predict() -> None:
        with torch.no_grad():
            for xb in chunks:
                model(xb)
        wait()

    wait()
    return predict


def _sklearn_model(w: Workload, epochs: int, seed: int = 0) -> Any:
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(
        hidden_layer_sizes=tuple(w.sizes[1:-1]),
        activation={"relu": "relu", "sigmoid": "logistic"}[w.activation],
        solver="sgd",
        alpha=0.0,
        batch_size=w.batch_size,
        learning_rate="constant",
        learning_rate_init=w.lr,
        momentum=0.0,
        nesterovs_momentum=False,
        max_iter=epochs,
        shuffle=True,
        random_state=seed,
        tol=0.0,
        n_iter_no_change=10**9,  # never stop early: train every epoch, as the others do
        early_stopping=False,
    )


def _sklearn_fit(clf: Any, X: np.ndarray, y: np.ndarray) -> None:
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)


def _sklearn_trainer(w: Workload, weights: Sequence, X: np.ndarray, y: np.ndarray, plan: list) -> tuple:
    clf = _sklearn_model(w, len(plan))  # its own Glorot initialisation and shuffling

    def run() -> list:
        _sklearn_fit(clf, X, y)
        return []  # one fit for every epoch: only its total time is known

    return run, lambda: list(zip(clf.coefs_, clf.intercepts_))


def _sklearn_predictor(w: Workload, weights: Sequence, X: np.ndarray) -> Callable:
    clf = _sklearn_model(w, 1)
    _sklearn_fit(clf, X[: 2 * w.batch_size], np.arange(2 * w.batch_size) % w.sizes[-1])  # to get fitted state
    for i, (W, b) in enumerate(weights):
        clf.coefs_[i][...] = W
        clf.intercepts_[i][...] = b
    chunks = _chunks(X, w.infer_batch)

    def predict() -> None:
        for xb in chunks:
            clf.predict_proba(xb)

    return predict


def _numpy_trainer(w: Workload, weights: Sequence, X: np.ndarray, y: np.ndarray, plan: list, gpu: GPU | None = None) -> tuple:
    """The hand-fused floor: NumPy on the CPU, CuPy with ``gpu`` (data, batches and weights moved once)."""
    if gpu is not None:
        weights = [(gpu.put(W), gpu.put(b)) for W, b in weights]
        X, y = gpu.put(X), gpu.put(y)
        plan = [[gpu.put(idx) for idx in epoch] for epoch in plan]
    net = FusedMLP(weights, w.activation)
    lr = np.float32(w.lr)
    step = net.step
    wait = _waiter(gpu)

    def run() -> list:
        marks = []
        with _quiet(gpu):
            for epoch in plan:
                for idx in epoch:
                    step(X[idx], y[idx], lr)
                wait()
                marks.append(time.perf_counter())
        return marks

    wait()
    return run, lambda: _host_weights(net.weights())


def _numpy_predictor(w: Workload, weights: Sequence, X: np.ndarray, gpu: GPU | None = None) -> Callable:
    chunks = _chunks(X, w.infer_batch)
    if gpu is not None:
        weights = [(gpu.put(W), gpu.put(b)) for W, b in weights]
        chunks = [gpu.put(c) for c in chunks]
    net = FusedMLP(weights, w.activation)
    wait = _waiter(gpu)

    def predict() -> None:
        with _quiet(gpu):
            for xb in chunks:
                net.forward(xb)
        wait()

    wait()
    return predict


RUNNERS = {
    "chainrule": Runner(
        "chainrule", "nn.MLP + optim.SGD + F.cross_entropy, plain loop", None, _chainrule_trainer, _chainrule_predictor
    ),
    "chainrule-fit": Runner(
        "chainrule-fit", "the same model trained by cr.fit (digits and deep)", None, _chainrule_fit_trainer, None,
        workloads=("digits", "deep"),
    ),
    "torch": Runner(
        "torch", "torch.nn.Sequential + torch.optim.SGD + CrossEntropyLoss, CPU", "torch", _torch_trainer, _torch_predictor
    ),
    "sklearn": Runner(
        "sklearn", "MLPClassifier(solver='sgd', momentum=0, alpha=0); fit time / steps", "sklearn",
        _sklearn_trainer, _sklearn_predictor,
    ),
    "numpy": Runner("numpy", "hand-fused NumPy MLP (FusedMLP): the floor", None, _numpy_trainer, _numpy_predictor),
}

# runners that do not run on the GPU, and why
NOT_ON_GPU = {
    "sklearn": "scikit-learn runs on the CPU only",
    "numpy": "on the GPU the floor is the hand-fused CuPy MLP, runner 'cupy'",
}


def runner_names() -> tuple:
    """Every runner name either device knows: those of :data:`RUNNERS` and "cupy", the floor on the GPU."""
    return (*RUNNERS, "cupy")


def gpu_runners(gpu: GPU) -> dict:
    """The runners of ``device="cuda"``: chainrule on CuPy, PyTorch CUDA, the CuPy floor."""
    return {
        "chainrule": Runner(
            "chainrule", "nn.MLP + optim.SGD + F.cross_entropy, plain loop; model.to('cuda'), CuPy", None,
            functools.partial(_chainrule_trainer, gpu=gpu), functools.partial(_chainrule_predictor, gpu=gpu),
        ),
        "chainrule-fit": Runner(
            "chainrule-fit", "the same model trained by cr.fit, which moves each batch to the GPU (digits and deep)", None,
            functools.partial(_chainrule_fit_trainer, gpu=gpu), None, workloads=("digits", "deep"),
        ),
        "torch": Runner(
            "torch", "torch.nn.Sequential + torch.optim.SGD + CrossEntropyLoss, device 'cuda'", "torch",
            functools.partial(_torch_trainer, gpu=gpu), functools.partial(_torch_predictor, gpu=gpu),
        ),
        "cupy": Runner(
            "cupy", "hand-fused CuPy MLP (FusedMLP on the GPU): the floor", None,
            functools.partial(_numpy_trainer, gpu=gpu), functools.partial(_numpy_predictor, gpu=gpu),
        ),
    }


def available_runners(names: Sequence[str] | None = None, gpu: GPU | None = None) -> tuple:
    """(runners that can run, {name: why not}) on the CPU, or on ``gpu``.

    A runner whose library is not installed is skipped with a note, and so are
    scikit-learn and the NumPy floor on the GPU (and the CuPy floor on the CPU).
    """
    table = RUNNERS if gpu is None else gpu_runners(gpu)
    if names:
        names = list(names)
    else:
        names = list(table) + (list(NOT_ON_GPU) if gpu is not None else [])
    known = runner_names()
    ok, skipped = [], {}
    for name in names:
        if name not in known:
            from .errors import ChainruleError

            raise ChainruleError(f"unknown runner {name!r}; expected one of {', '.join(known)}")
        if name not in table:
            skipped[name] = NOT_ON_GPU[name] if gpu is not None else "the CuPy floor runs with device 'cuda' only"
            continue
        r = table[name]
        if r.module and importlib.util.find_spec(r.module) is None:
            skipped[name] = f"{r.module} is not installed"
        elif gpu is not None and r.module == "torch" and gpu.torch_ready() is not None:
            skipped[name] = gpu.torch_ready()
        else:
            ok.append(r)
    return ok, skipped


# ---- measuring --------------------------------------------------------------------


# Seconds of sleep before each timed run. After a multi-threaded call, OpenBLAS's worker
# threads keep spinning for about 0.1 s (measured here: 0.08-0.11 s of CPU used during a
# sleep after a 512x512 product); on 2 cores a pool still spinning from the previous runner
# would take a core from the next one.
SETTLE = 0.15


def _summary(values: list) -> dict:
    v = sorted(values)
    return {"median": float(np.median(v)), "min": float(v[0]), "max": float(v[-1]), "values": [float(x) for x in values]}


def _ratio(a: float | None, b: float | None) -> float | None:
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


def _warm_up_library(runner: Runner) -> None:
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

    Meant to run in a fresh process (``python -m chainrule.bench --memory RUNNER WORKLOAD``).
    Linux: the high-water mark is reset through /proc/self/clear_refs after the
    warm-up and the data; elsewhere ``ru_maxrss`` is used (an upper bound that
    may hide the increase when the warm-up peaked higher).
    """
    runner = RUNNERS[runner_name]
    w = get_workload(workload_name, quick)
    _warm_up_library(runner)
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


def measure_memory(
    runner_name: str, workload_name: str, quick: bool = False, threads: int | None = None, timeout: float = 300
) -> dict:
    """Run :func:`memory_child` in a fresh Python process and return what it measured (or an error)."""
    cmd = [sys.executable, "-m", "chainrule.bench", "--memory", runner_name, workload_name]
    cmd += (["--quick"] if quick else []) + ([f"--threads={threads}"] if threads else [])
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


def _loadavg() -> list | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def environment() -> dict:
    """The machine and software the numbers come from: CPU, versions, BLAS, threads, relevant variables."""
    from . import __version__

    env = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "chainrule": __version__,
        "loadavg_start": _loadavg(),
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


# ---- the whole benchmark ------------------------------------------------------------------


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
    from .backend import normalize_device
    from .errors import ChainruleError

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
            _warm_up_library(r)
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
            r["vs_torch"] = _ratio(med[name], med.get("torch"))
            r[f"vs_{floor}"] = _ratio(med[name], med.get(floor))
    result["targets"] = check_targets(result)
    result["environment"]["loadavg_end"] = _loadavg()
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
                    value = _ratio(mine["increase_bytes"], theirs["increase_bytes"])
            elif what == "throughput":
                value = _ratio(1.0, cr.get("vs_torch"))  # samples per second over torch's: the inverse time ratio
            else:
                value = cr.get(f"vs_{what}")
        measure = {"memory": "peak memory", "throughput": "training throughput"}.get(what, "time per step")
        label = f"{workload}: {measure} vs {what if what in FLOOR.values() else 'torch'}"
        at_least = what == "throughput"
        met = None if value is None else (value >= limit if at_least else value <= limit)
        out.append({"target": label, "limit": limit, "at_least": at_least, "ratio": value, "met": met})
    return out


# ---- reports --------------------------------------------------------------------------


def load_warning(env: dict) -> str | None:
    """A warning when other processes kept the CPUs busy (load average above half the CPUs)."""
    loads = [x for key in ("loadavg_start", "loadavg_end") for x in (env.get(key) or [])[:1]]
    cpus = env.get("cpu_count") or 1
    if not loads or max(loads) <= 0.5 * cpus:
        return None
    advice = " (consider --threads 1)" if (env.get("threads") or 1) > 1 else ""
    return (
        f"the load average was {max(loads):.1f} on {cpus} CPUs: other processes were running, so the "
        f"timings are slower and noisier than on a quiet machine{advice}; "
        "multi-threaded BLAS and PyTorch suffer most"
    )


def _time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _mib(mem: dict | None) -> str:
    if not mem:
        return "-"
    if "error" in mem:
        return "error"
    return f"{mem['increase_bytes'] / 2**20:.1f}"


def _table(header: list, rows: list, markdown: bool) -> list:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
        return lines + ["| " + " | ".join(r) + " |" for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = lambda r: "  ".join(c.ljust(wd) if i == 0 else c.rjust(wd) for i, (c, wd) in enumerate(zip(r, widths)))  # noqa: E731
    return [fmt(header)] + [fmt(r) for r in rows]


def format_report(result: dict, markdown: bool = False) -> str:
    """The results as text tables (or Markdown tables): medians with min-max, ratios, memory, targets."""
    lines = []
    env = result["environment"]
    gpu = env.get("gpu") if result["settings"].get("device", "cpu") == "cuda" else None
    floor = FLOOR["cuda" if gpu else "cpu"]
    if not markdown:
        where = (f"{gpu['name']} (CuPy {gpu['cupy']}, CUDA {gpu['cuda_runtime']}) and {env['cpu']}" if gpu
                 else f"{env['cpu']} ({env['cpu_count']} CPUs, {env['threads']} threads)")
        lines.append(
            f"chainrule bench on {where}, "
            f"{result['settings']['repeats']} repetitions{' (quick)' if result['settings']['quick'] else ''}"
        )
    warning = None if gpu else load_warning(env)
    if warning:
        lines += ["", f"**{warning}**" if markdown else f"warning: {warning}"]
    for row in result["training"]:
        head = f"{row['workload']}: {row['description']}, {row['steps_per_run']} steps per run"
        lines += ["", f"### {head}", ""] if markdown else ["", head]
        table = []
        for name, r in row["runners"].items():
            s = r["seconds_per_step"]
            cells = [name, _time(s["median"]), f"{_time(s['min'])} - {_time(s['max'])}", _x(r["vs_torch"]), _x(r.get(f"vs_{floor}"))]
            if gpu:  # what the card does: rows and estimated TFLOP per second (6 x parameters per row)
                cells += [f"{r['samples_per_second']:,.0f}", f"{r['tflops']:.2f}"]
            table.append(cells + [f"{r['final_loss']:.4f}", _mib(r.get("memory"))])
        header = ["runner", "per step", "min - max", "vs torch", f"vs {floor}"]
        header += ["samples/s", "TFLOP/s"] if gpu else []
        lines += _table(header + ["final loss", "peak MiB"], table, markdown)
    for row in result["inference"]:
        head = f"inference, {row['workload']}: {row['description']}"
        lines += ["", f"### {head}", ""] if markdown else ["", head]
        table = []
        for name, r in row["runners"].items():
            s = r["samples_per_second"]
            table.append([
                name, f"{s['median']:,.0f}", f"{s['min']:,.0f} - {s['max']:,.0f}", _time(r["seconds_per_sample"]["median"]),
                _x(r["vs_torch"]), _x(r.get(f"vs_{floor}")),
            ])
        lines += _table(["runner", "samples/s", "min - max", "per sample", "time vs torch", f"time vs {floor}"], table, markdown)
    if result.get("targets"):
        lines += ["", "### Targets (chainrule, median ratios)" if markdown else "targets (chainrule, median ratios)"]
        if markdown:
            lines.append("")
        table = []
        for t in result["targets"]:
            status = "not measured" if t["met"] is None else ("met" if t["met"] else "MISSED")
            limit = f"{'>=' if t.get('at_least') else '<='} {t['limit']}"
            table.append([t["target"], limit, "-" if t["ratio"] is None else f"{t['ratio']:.3f}x", status])
        lines += _table(["target", "limit", "measured", ""], table, markdown)
    for name, why in result.get("skipped", {}).items():
        lines.append(f"{'- ' if markdown else ''}skipped {name}: {why}")
    if not markdown and gpu:
        lines.append("")
        lines.append("per step: median over epochs of all repetitions, the GPU synchronized before each clock reading; ratios")
        lines.append("are of medians (lower is better); TFLOP/s = 6 x parameters x samples/s; peak MiB: peak GPU memory in")
        lines.append("use while building the model, moving the data and training one epoch (CuPy's pool, or")
        lines.append("torch.cuda.max_memory_allocated), over what was in use before.")
    elif not markdown:
        lines.append("")
        lines.append("per step: median over epochs of all repetitions (sklearn: over fits); ratios are of medians (lower is")
        lines.append("better); peak MiB: peak resident-memory increase over the process before the model was built, one")
        lines.append("epoch in a fresh subprocess.")
    return "\n".join(lines)


def results_markdown(result: dict, title: str = "chainrule bench") -> str:
    """A results file in Markdown: the machine, the versions, the thread settings and the tables."""
    env = result["environment"]
    blas = [p for p in (env.get("threadpools") or []) if p.get("user_api") == "blas"]
    gpu = env.get("gpu") if result["settings"].get("device", "cpu") == "cuda" else None
    lines = [
        f"# {title}: {env['date']}",
        "",
        "Command: `chainrule bench" + (" --device cuda" if gpu else "") + (" --quick" if result["settings"]["quick"] else "")
        + (f" --repeats {result['settings']['repeats']}" if result["settings"]["repeats"] != 5 else "")
        + (f" --threads {result['settings']['threads']}" if result["settings"].get("threads") else "") + "`",
        "",
        "## Machine and versions",
        "",
        *([f"- GPU: {gpu['name']} (compute capability {gpu['compute_capability']}, {gpu['memory_bytes'] / 2**30:.0f} GiB, "
           f"{gpu['multiprocessors']} multiprocessors); CUDA runtime {gpu['cuda_runtime']}, driver {gpu['cuda_driver']}; "
           f"CuPy {gpu['cupy']}; PyTorch CUDA {gpu.get('torch_cuda', '-')}; float32 products: CUPY_TF32 {gpu['CUPY_TF32']}, "
           f"torch float32 matmul precision {gpu.get('torch_float32_matmul_precision', '-')}"] if gpu else []),
        f"- CPU: {env['cpu']}, {env['cpu_count']} logical CPUs; {env['platform']}",
        f"- Python {env['python']}, NumPy {env['numpy']}, chainrule {env['chainrule']}, "
        f"PyTorch {env.get('torch', 'not installed')}, scikit-learn {env.get('sklearn', 'not installed')}",
        "- BLAS: " + ("; ".join(
            f"{p['internal_api']} {p['version']} ({p['prefix']}, kernel {p.get('architecture')}, {p['num_threads']} threads)"
            for p in blas) or "unknown"),
        f"- Threads: {env['threads']} for NumPy's BLAS and for PyTorch (torch.set_num_threads)",
        "- PyTorch: " + ("; ".join(env.get("torch_parallel") or []) or "not loaded"),
        "- Environment variables: " + (", ".join(f"{k}={v}" for k, v in env["variables"].items()) or
                                        "no OPENBLAS_*, OMP_*, MKL_* or GOTO* variable set"),
        f"- Load average (1, 5, 15 min) at start: {env.get('loadavg_start')}, at end: {env.get('loadavg_end')}",
        "",
        "## Results",
        "",
        "Per step: median over the epochs of all repetitions (scikit-learn: over its fits), with min - max;",
        "ratios are ratios of medians (lower is better).",
        *(["TFLOP/s: 6 x parameters x samples per second (a forward and two backward products per weight).",
           "Peak MiB: peak GPU memory in use while building the model, moving the data and training one epoch",
           "(CuPy's memory pool, or torch.cuda.max_memory_allocated), over what was in use before."] if gpu else
          ["Peak MiB: peak resident-memory increase over the process just before the model was built,",
           "one epoch of training in a fresh subprocess (see benchmarks/README.md)."]),
        "",
        format_report(result, markdown=True).strip(),
        "",
    ]
    return "\n".join(lines)


def _main(argv: list) -> int:
    if len(argv) >= 3 and argv[0] == "--memory":
        threads = [int(a.split("=", 1)[1]) for a in argv[3:] if a.startswith("--threads=")]
        with limit_threads(threads[0] if threads else None):
            print(json.dumps(memory_child(argv[1], argv[2], quick="--quick" in argv[3:])))
        return 0
    print("usage: python -m chainrule.bench --memory RUNNER WORKLOAD [--quick]   (or use `chainrule bench`)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
