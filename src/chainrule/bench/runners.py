"""The benchmark's runners: one way each to train (and run) the same MLP: chainrule, chainrule-fit,
PyTorch, scikit-learn, the hand-fused NumPy floor (:class:`FusedMLP`) and, on a GPU, CuPy."""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib.util
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..functional import transposes_input_gradient
from .workloads import Workload


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
        from ..backend import namespace

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
            dT = [None] * len(self.W)  # ... as the transposed product gives them (made where used)
            tmp = [xp.empty((n, W.shape[0]), f32 if not self.relu else bool) for W in self.W]
            gW = [xp.empty_like(W) for W in self.W]
            gb = [xp.empty_like(b) for b in self.b]
            col = xp.empty((n, 1), f32)  # row maxima, then row sums, of the logits
            bufs = self._buffers[n] = (z, d, dT, tmp, gW, gb, col, xp.arange(n))
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
        z, d, dT, tmp, gW, gb, col, rows = self._buffers_for(n)
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
            if i:  # before W[i] changes; in the layout chainrule's linear layers use (see _input_gradient)
                if xp is np and transposes_input_gradient(g, W[i]):
                    if dT[i] is None:
                        dT[i] = xp.empty((W[i].shape[0], n), xp.float32)
                    xp.matmul(W[i], g.T, out=dT[i])
                    xp.copyto(d[i], dT[i].T)
                else:
                    xp.matmul(g, W[i].T, out=d[i])
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
        from .. import backend

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
    from ..backend import to_numpy

    return [(to_numpy(W), to_numpy(b)) for W, b in pairs]


def _waiter(gpu: GPU | None) -> Callable:
    """What a runner calls before reading the clock: wait for the GPU (nothing on the CPU)."""
    return gpu.sync if gpu is not None else (lambda: None)


def _quiet(gpu: GPU | None) -> Any:
    """NumPy warns when a sigmoid's e^-z overflows (to inf, giving exactly 0): silence it; CuPy never warns."""
    return np.errstate(over="ignore") if gpu is None else contextlib.nullcontext()


def _chainrule_model(w: Workload, weights: Sequence, gpu: GPU | None = None) -> Any:
    from .. import nn

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
            from ..errors import ChainruleError

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
