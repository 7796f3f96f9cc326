"""The GPU check of issues 8 and 16, prepared to run once on a machine with an NVIDIA GPU.

    python benchmarks/gpu_check.py --out DIR              # CuPy and PyTorch CUDA: about 4-6 minutes
    python benchmarks/gpu_check.py --out DIR --quick      # tiny settings: under a minute
    python benchmarks/gpu_check.py --out DIR --xp strict --quick   # no GPU: array-api-strict stands in

From the repository root; it imports chainrule from ./src, so it runs with or
without ``pip install -e .``. In one run, within ``--budget`` seconds (420 by
default), it:

1. environment: notes the card, the driver, CUDA, CuPy, PyTorch and NumPy versions.
2. gradients: evaluates every primitive, activation, loss, a model and the
   optimizers forward and backward on NumPy and on the device, with the same
   inputs, and records the largest relative error of each output and gradient
   (max |device - numpy| / max |numpy|, per array) in float32 (target <= 1e-5)
   and float64 (target <= 1e-10).
3. training: trains the digits MLP as ``chainrule train`` does, on the GPU and on
   the CPU with the same seed, and records both test accuracies (target: within
   one point); reads the GPU's model file back on the CPU; interrupts a GPU run
   and resumes it; runs ``chainrule train --device cuda`` as a user would.
4. compiled: the digits MLP (64-128-128-10 ReLU, float32) trained on the device
   eagerly and through ``cr.compile`` from the same weights on the same batches (a short
   last batch in each epoch), with SGD and momentum, then with Adam: whether the loss at
   every step, the parameters, the ``.grad`` and the optimizer state are bit-identical
   (target), how many calls were replays, and any ``CompileWarning``. On CuPy, then, the
   median time per digits step (batch 32, SGD) of eager and compiled chainrule, eager
   PyTorch CUDA and ``jax.jit`` (when JAX with a GPU is installed), in interleaved timed
   blocks; issue 16's target for later: compiled at most 1.5x ``jax.jit``. Under a minute.
5. benchmark: ``chainrule.bench`` on device cuda, workloads big and digits,
   against PyTorch CUDA and the hand-fused CuPy MLP (targets: big at least 0.95x
   PyTorch's training throughput; digits time per step no more than PyTorch's).

It writes DIR/gpu-results.json and DIR/gpu-results.md after every stage (so a run
cut short still leaves what it had) and prints the Markdown at the end. Each
stage is wrapped: a failure is recorded with its traceback, printed, and the
next stage runs. When the budget runs out the stage in progress stops, the
rest are marked skipped, and the results are written.

``--xp strict`` puts array-api-strict arrays on its stand-in device
("device1", which refuses every conversion to NumPy) where CuPy would be, for
the gradients, a tiny training run and the compiled step's bit-identity, and skips
the timings and the benchmark: that is how the test suite runs this script on a machine
without a GPU.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this working tree's chainrule, installed or not

import numpy as np  # noqa: E402

# Targets of issue 8.
FLOAT32_LIMIT = 1e-5
FLOAT64_LIMIT = 1e-10
ACCURACY_POINTS = 0.01  # GPU and CPU test accuracy within one point (4 of the 450 test images)
COMPILED_VS_JAX = 1.5  # issue 16's GPU target for later: a compiled digits step within 1.5x a jax.jit step
COMPILED_OPTIMIZERS = ("sgd", "adam")  # the compiled stage's bit-identity runs: SGD with momentum, Adam
STAGES = ("environment", "gradients", "training", "compiled", "benchmark")
# Seconds a stage needs at the least to be started (quick settings need far less).
NEEDS = {"environment": 1, "gradients": 10, "training": 30, "compiled": 20, "benchmark": 45}


class OutOfTime(Exception):
    """The time budget ran out while a stage was running."""


def log(line: str) -> None:
    print(line, flush=True)


# ---- the second device: CuPy on a GPU, or array-api-strict's stand-in -----------------------


class Device:
    """Where the second computation runs, as the check uses it: put NumPy arrays there, move a
    model there, wait for it. The first computation always runs on NumPy."""

    def __init__(self, kind: str):
        self.kind = kind
        if kind == "cupy":
            from chainrule import backend

            self.cp = backend.cupy()  # chainrule's one-line error without CuPy or a GPU
            self.name = "cuda"
        else:
            import array_api_strict as xp

            self.xp, self.dev = xp, xp.Device("device1")
            self.name = "array-api-strict device1"

    def put(self, a: np.ndarray) -> Any:
        if self.kind == "cupy":
            return self.cp.asarray(a)
        return self.xp.asarray(a, dtype=getattr(self.xp, a.dtype.name), device=self.dev)

    def model_to(self, model: Any) -> Any:
        if self.kind == "cupy":
            return model.to("cuda")
        from chainrule.backend import to_numpy

        for p in model.parameters():  # Module.to knows "cpu" and "cuda" only
            p.data, p.grad = self.put(to_numpy(p.data)), None
        return model

    def sync(self) -> None:
        if self.kind == "cupy":
            self.cp.cuda.get_current_stream().synchronize()


class Host:
    """The reference side: NumPy."""

    name = "cpu"

    def put(self, a: np.ndarray) -> np.ndarray:
        return np.array(a)

    def model_to(self, model: Any) -> Any:
        return model

    def sync(self) -> None:
        pass


# ---- 1. environment ------------------------------------------------------------------------


def environment(rec: dict, device: Device) -> None:
    from importlib.metadata import PackageNotFoundError, version

    import chainrule

    env = rec["values"] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "chainrule": chainrule.__version__,
        "cpu_count": os.cpu_count(),
    }
    for key, dist in (("torch", "torch"), ("array_api_strict", "array-api-strict"), ("sklearn", "scikit-learn")):
        try:  # read from the package metadata: importing PyTorch costs seconds where it is not used
            env[key] = version(dist)
        except PackageNotFoundError:
            env[key] = "not installed"
    if device.kind == "cupy":
        import torch

        from chainrule.bench import GPU

        env["cupy"] = device.cp.__version__
        env["torch_cuda_available"] = bool(torch.cuda.is_available())
        env["gpu"] = GPU().describe()
        env["card"] = env["gpu"]["name"]
        try:  # clocks, temperature and power as found (read only; the card's settings are left alone)
            query = "name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,power.limit,memory.used"
            out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv"], capture_output=True, text=True, timeout=20)
            env["nvidia_smi"] = out.stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            env["nvidia_smi"] = f"unavailable ({type(e).__name__})"
    else:
        env["cupy"] = "not used"
        env["card"] = "none: array-api-strict's device1 stands in for a GPU"
    log(f"card: {env['card']}; numpy {env['numpy']}, torch {env['torch']}, cupy {env['cupy']}, chainrule {env['chainrule']}")


# ---- 2. gradients: the same expressions on NumPy and on the device ----------------------------


@dataclass(frozen=True)
class Input:
    """One input of a case: its shape and what values it holds."""

    shape: tuple
    kind: str = "normal"  # normal | positive | labels | probs | binary
    classes: int = 0
    grad: bool = True

    def make(self, rng: np.random.Generator, dtype: str) -> np.ndarray:
        if self.kind == "labels":
            return rng.integers(0, self.classes, size=self.shape).astype(np.int64)
        if self.kind == "positive":
            a = rng.uniform(0.5, 2.0, size=self.shape)
        elif self.kind == "probs":
            a = rng.uniform(0.1, 1.0, size=self.shape)
            a = a / a.sum(axis=-1, keepdims=True)
        elif self.kind == "binary":
            a = (rng.uniform(size=self.shape) > 0.5).astype(np.float64)
        else:
            a = rng.standard_normal(self.shape)
        return a.astype(dtype)

    @property
    def float_input(self) -> bool:
        return self.kind != "labels"

    @property
    def needs_grad(self) -> bool:
        return self.grad and self.kind not in ("labels", "probs", "binary")


def N(*shape: int) -> Input:
    return Input(shape)


def P(*shape: int) -> Input:
    return Input(shape, "positive")


@dataclass(frozen=True)
class Case:
    """An expression to evaluate on both sides: ``fn(t)`` with ``t`` holding the input tensors
    (and ``t.m``, a module made by ``module()`` and moved to the device, when given)."""

    name: str
    inputs: dict
    fn: Callable
    module: Callable | None = None
    kind: str = "primitive"


def _optimizer_steps(make: Callable) -> Callable:
    """Three optimizer steps on two parameters with fixed gradients; the parameters after them."""
    import chainrule as cr

    def run(t: Any) -> Any:
        opt = make([t.w, t.v])
        for k in range(3):
            opt.zero_grad()
            (((t.w * t.gw).sum() + (t.v * t.gv).sum()) * (k + 1.0)).backward()
            opt.step()
        return cr.concat([t.w.reshape(-1), t.v.reshape(-1)])

    return run


def cases() -> list:
    """Every primitive, activation, loss, a model, and the optimizers, as expressions."""
    import chainrule as cr
    from chainrule import functional as F
    from chainrule import nn, optim

    a, b = N(4, 5), N(4, 5)
    labels = Input((4,), "labels", classes=5)
    out = [
        # ---- primitives (chainrule.ops), with broadcasting undone in the engine
        Case("add", {"a": a, "b": b}, lambda t: t.a + t.b),
        Case("add_broadcast", {"a": a, "v": N(5)}, lambda t: t.a + t.v),
        Case("sub", {"a": a, "b": b}, lambda t: t.a - t.b),
        Case("rsub_scalar", {"a": a}, lambda t: 1.5 - t.a),
        Case("mul", {"a": a, "b": b}, lambda t: t.a * t.b),
        Case("mul_broadcast_column", {"a": a, "c": N(4, 1)}, lambda t: t.a * t.c),
        Case("neg", {"a": a}, lambda t: -t.a),
        Case("div", {"a": a, "p": P(4, 5)}, lambda t: t.a / t.p),
        Case("rdiv_scalar", {"p": P(4, 5)}, lambda t: 2.0 / t.p),
        Case("pow_scalar", {"p": P(4, 5)}, lambda t: t.p ** 2.5),
        Case("pow_tensor", {"p": P(4, 5), "b": b}, lambda t: t.p ** t.b),
        Case("rpow_scalar", {"a": a}, lambda t: 2.0 ** t.a),
        Case("matmul", {"a": a, "m": N(5, 3)}, lambda t: t.a @ t.m),
        Case("matmul_vector", {"a": a, "v": N(5)}, lambda t: t.a @ t.v),
        Case("matmul_batched", {"x": N(2, 4, 5), "m": N(5, 3)}, lambda t: t.x @ t.m),
        Case("sum_all", {"a": a}, lambda t: t.a.sum()),
        Case("sum_axis", {"a": a}, lambda t: t.a.sum(axis=0)),
        Case("sum_keepdims", {"a": a}, lambda t: t.a.sum(axis=1, keepdims=True)),
        Case("mean_axis", {"a": a}, lambda t: t.a.mean(axis=1)),
        Case("max_all", {"a": a}, lambda t: t.a.max()),
        Case("max_axis", {"a": a}, lambda t: t.a.max(axis=1)),
        Case("min_axis", {"a": a}, lambda t: t.a.min(axis=0, keepdims=True)),
        Case("logsumexp", {"a": a}, lambda t: cr.logsumexp(t.a, axis=1)),
        Case("reshape", {"a": a}, lambda t: t.a.reshape(5, 4)),
        Case("transpose_axes", {"x": N(2, 4, 5)}, lambda t: t.x.transpose(2, 0, 1)),
        Case("T", {"a": a}, lambda t: t.a.T),
        Case("getitem_slice", {"a": a}, lambda t: t.a[1:3, ::2]),
        Case("getitem_repeated_rows", {"a": a}, lambda t: t.a[[0, 2, 2]]),
        Case("concat", {"a": a, "b": N(4, 2)}, lambda t: cr.concat([t.a, t.b], axis=1)),
        Case("stack", {"a": a, "b": b}, lambda t: cr.stack([t.a, t.b], axis=0)),
        Case("exp", {"a": a}, lambda t: t.a.exp()),
        Case("log", {"p": P(4, 5)}, lambda t: t.p.log()),
        Case("sqrt", {"p": P(4, 5)}, lambda t: t.p.sqrt()),
        Case("abs", {"a": a}, lambda t: t.a.abs()),
        Case("clip", {"a": a}, lambda t: t.a.clip(-0.5, 0.5)),
        Case("where", {"a": a, "b": b}, lambda t: cr.where(t.a > 0, t.a, t.b)),
        Case("maximum", {"a": a, "b": b}, lambda t: cr.maximum(t.a, t.b)),
        Case("minimum", {"a": a, "b": b}, lambda t: cr.minimum(t.a, t.b)),
        # the operations of issue 17
        Case("var", {"a": a}, lambda t: t.a.var(axis=1)),
        Case("std", {"a": a}, lambda t: t.a.std(correction=0)),
        Case("prod", {"a": a}, lambda t: t.a.prod(axis=0)),
        Case("cumsum", {"a": a}, lambda t: t.a.cumsum(1)),
        Case("sign", {"a": a}, lambda t: t.a.sign() * t.a),
        Case("sin_cos", {"a": a}, lambda t: t.a.sin() + cr.cos(t.a)),
        Case("log1p_expm1", {"p": P(4, 5)}, lambda t: t.p.log1p() + t.p.expm1()),
        Case("squeeze_unsqueeze_flatten", {"a": a}, lambda t: t.a.unsqueeze(0).squeeze(0).flatten()),
        Case("broadcast_to_expand", {"c": N(4, 1)}, lambda t: cr.broadcast_to(t.c, (2, 4, 5)) + t.c.expand(4, 5)),
        Case("flip", {"a": a}, lambda t: t.a.flip(1)),
        Case("einsum_one", {"s": N(4, 4)}, lambda t: cr.einsum("ii->i", t.s)),
        Case("einsum_two", {"a": a, "b": b}, lambda t: cr.einsum("ij,kj->ik", t.a, t.b)),
    ]
    kinds = [
        # ---- activations (chainrule.functional)
        ("relu", {"a": a}, lambda t: F.relu(t.a)),
        ("sigmoid", {"a": a}, lambda t: F.sigmoid(t.a)),
        ("tanh", {"a": a}, lambda t: F.tanh(t.a)),
        ("identity", {"a": a}, lambda t: F.identity(t.a) * 1.0),
        ("leaky_relu", {"a": a}, lambda t: F.leaky_relu(t.a, 0.1)),
        ("prelu", {"a": a, "w": Input((1,))}, lambda t: F.prelu(t.a, t.w)),
        ("prelu_per_unit", {"a": a, "w": N(5)}, lambda t: F.prelu(t.a, t.w)),
        ("elu", {"a": a}, lambda t: F.elu(t.a, 1.0)),
        ("softmax", {"a": a}, lambda t: F.softmax(t.a, axis=-1)),
        ("log_softmax", {"a": a}, lambda t: F.log_softmax(t.a, axis=1)),
        ("gelu", {"a": a}, lambda t: F.gelu(t.a * 3)),
        ("gelu_tanh", {"a": a}, lambda t: F.gelu(t.a * 3, approximate="tanh")),
        ("silu", {"a": a}, lambda t: F.silu(t.a * 3)),
        ("softplus", {"a": a}, lambda t: F.softplus(t.a * 10)),
        ("logsigmoid", {"a": a}, lambda t: F.logsigmoid(t.a * 10)),
        ("linear", {"a": a, "m": N(5, 3), "bias": N(3)}, lambda t: F.linear(t.a, t.m, t.bias)),
        ("fused_layers", {"a": a, "w1": N(5, 6), "b1": N(6), "w2": N(6, 6), "b2": N(6), "w3": N(6, 3), "b3": N(3), "s": Input((1,))},
         lambda t: F.fused_layers(t.a, [
             ("linear", t.w1, t.b1), ("relu", None, None), ("linear", t.w2, t.b2), ("sigmoid", None, None),
             ("tanh", None, None), ("leaky_relu", 0.1, None), ("elu", 1.0, None), ("prelu", t.s, None),
             ("identity", None, None), ("gelu", "none", None), ("silu", None, None), ("gelu", "tanh", None),
             ("linear", t.w3, t.b3),
         ])),
    ]
    out += [Case(name, inputs, fn, kind="activation") for name, inputs, fn in kinds]
    losses = [
        # ---- losses, every reduction
        ("mse_loss", {"a": a, "b": b}, lambda t: F.mse_loss(t.a, t.b)),
        ("mse_loss_sum", {"a": a, "b": b}, lambda t: F.mse_loss(t.a, t.b, reduction="sum")),
        ("mse_loss_none", {"a": a, "b": b}, lambda t: F.mse_loss(t.a, t.b, reduction="none")),
        ("cross_entropy", {"a": a, "y": labels}, lambda t: F.cross_entropy(t.a, t.y)),
        ("cross_entropy_smoothing", {"a": a, "y": labels}, lambda t: F.cross_entropy(t.a, t.y, label_smoothing=0.1)),
        ("cross_entropy_probabilities", {"a": a, "q": Input((4, 5), "probs")}, lambda t: F.cross_entropy(t.a, t.q)),
        ("cross_entropy_sum", {"a": a, "y": labels}, lambda t: F.cross_entropy(t.a, t.y, reduction="sum")),
        ("cross_entropy_none", {"a": a, "y": labels}, lambda t: F.cross_entropy(t.a, t.y, reduction="none")),
        ("binary_cross_entropy_with_logits", {"a": a, "z": Input((4, 5), "binary")},
         lambda t: F.binary_cross_entropy_with_logits(t.a, t.z)),
        ("binary_cross_entropy_with_logits_none", {"a": a, "z": Input((4, 5), "binary")},
         lambda t: F.binary_cross_entropy_with_logits(t.a, t.z, reduction="none")),
        ("binary_cross_entropy", {"a": a, "z": Input((4, 5), "binary")}, lambda t: F.binary_cross_entropy(F.sigmoid(t.a), t.z)),
        ("cross_entropy_weight_ignore", {"a": a},
         lambda t: F.cross_entropy(t.a, [0, 4, -1, 2], weight=[1.0, 2.0, 0.5, 1.5, 1.0], ignore_index=-1, label_smoothing=0.1)),
        ("cross_entropy_soft_target_grad", {"a": a, "b": b}, lambda t: F.cross_entropy(t.a, F.softmax(t.b))),
        ("binary_cross_entropy_with_logits_pos_weight", {"a": a, "b": b},
         lambda t: F.binary_cross_entropy_with_logits(t.a, F.sigmoid(t.b), pos_weight=[0.5, 1.0, 2.0, 3.0, 1.5])),
    ]
    out += [Case(name, inputs, fn, kind="loss") for name, inputs, fn in losses]
    out += [
        # ---- a model (nn.Sequential of Linear and activations, the fused path) and the optimizers
        Case("mlp_tanh", {"a": a}, lambda t: t.m(t.a), module=lambda: nn.MLP([5, 8, 8, 3], activation="tanh", generator=0), kind="model"),
        Case("mlp_prelu", {"a": a}, lambda t: t.m(t.a), module=lambda: nn.MLP([5, 8, 3], activation="prelu", generator=0), kind="model"),
    ]
    params = {"w": N(3, 4), "v": N(4), "gw": Input((3, 4), grad=False), "gv": Input((4,), grad=False)}
    for name, make in (
        ("sgd", lambda ps: optim.SGD(ps, lr=0.1)),
        ("sgd_nesterov_weight_decay", lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
        ("adam", lambda ps: optim.Adam(ps, lr=0.1)),
        ("adamw", lambda ps: optim.AdamW(ps, lr=0.1, weight_decay=0.1)),
    ):
        out.append(Case(name, params, _optimizer_steps(make), kind="optimizer"))
    return out


def _evaluate(case: Case, side: Any, arrays: dict, upstream_seed: int, dtype: str) -> dict:
    """Forward and backward of ``case`` on one side: {"output": ..., "grad NAME": ...} as NumPy."""
    import chainrule as cr
    from chainrule.backend import to_numpy

    t = SimpleNamespace()
    for name, spec in case.inputs.items():
        a = arrays[name]
        kw = {"dtype": dtype} if spec.float_input else {}
        setattr(t, name, cr.tensor(side.put(a), requires_grad=spec.needs_grad, **kw))
    model = None
    if case.module is not None:
        model = case.module()
        if dtype == "float64":
            model.double()
        t.m = model = side.model_to(model)
    y = case.fn(t)
    g = np.random.default_rng(upstream_seed).standard_normal(y.shape).astype(dtype)  # a fixed, non-uniform upstream gradient
    (y * cr.tensor(side.put(g), dtype=dtype)).sum().backward()
    side.sync()
    found = {"output": to_numpy(y.data)}
    for name, spec in case.inputs.items():
        if spec.needs_grad:
            grad = getattr(t, name).grad
            found[f"grad {name}"] = None if grad is None else to_numpy(grad)
    if model is not None:
        for name, p in model.named_parameters():
            found[f"grad m.{name}"] = None if p.grad is None else to_numpy(p.grad)
    return found


def relative_error(got: Any, ref: Any) -> float:
    """max |got - ref| / max |ref| over one array (inf for a shape mismatch, a NaN or a missing array)."""
    if got is None or ref is None:
        return float("inf") if (got is None) != (ref is None) else 0.0
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape or not (np.isfinite(got).all() and np.isfinite(ref).all()):
        return float("inf")
    diff = float(np.abs(got - ref).max(initial=0.0))
    scale = float(np.abs(ref).max(initial=0.0))
    return diff / scale if scale > 0 else diff


def gradients(rec: dict, device: Device) -> None:
    rows = rec["rows"] = []
    limits = {"float32": FLOAT32_LIMIT, "float64": FLOAT64_LIMIT}
    host = Host()
    for case in cases():
        for dtype, limit in limits.items():
            seed = zlib.crc32(case.name.encode())
            rng = np.random.default_rng(seed)
            arrays = {name: spec.make(rng, dtype) for name, spec in case.inputs.items()}
            row: dict = {"case": case.name, "kind": case.kind, "dtype": dtype, "limit": limit}
            try:
                ref = _evaluate(case, host, arrays, seed + 1, dtype)
                got = _evaluate(case, device, arrays, seed + 1, dtype)
                errors = {k: relative_error(got.get(k), ref[k]) for k in ref}
                worst = max(errors, key=errors.get)
                row.update(max_rel_error=errors[worst], worst=worst, passed=errors[worst] <= limit)
            except OutOfTime:
                raise
            except Exception as e:
                row.update(max_rel_error=None, passed=False, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            rows.append(row)
    for dtype, limit in limits.items():
        mine = [r for r in rows if r["dtype"] == dtype]
        errors = [r["max_rel_error"] for r in mine if r["max_rel_error"] is not None]
        rec[dtype] = {
            "cases": len(mine),
            "passed": sum(r["passed"] for r in mine),
            "errors": sum("error" in r for r in mine),
            "max_rel_error": max(errors) if errors else None,
            "limit": limit,
        }
    for dtype in limits:
        s = rec[dtype]
        log(f"gradients {dtype}: {s['passed']}/{s['cases']} within {s['limit']:g}, largest error {s['max_rel_error']}, "
            f"{s['errors']} raised")


# ---- 3. training: digits as `chainrule train` trains it, on the device and on the CPU ----------------


def _summary(result: Any) -> dict:
    """What a run reached: test and train metrics, time and steps."""
    steps = result.history.steps
    return {
        "test_accuracy": result.metrics["test"].get("accuracy"),
        "test_loss": result.metrics["test"].get("loss"),
        "train_accuracy": result.metrics["train"].get("accuracy"),
        "seconds": result.seconds,
        "steps": steps,
        "seconds_per_step": result.seconds / steps if steps else None,
        "epochs": len(result.history.epochs),
    }


def _record_failure(rec: dict, what: str) -> None:
    tb = traceback.format_exc()
    print(tb, file=sys.stderr, flush=True)
    rec.setdefault("failures", []).append({"what": what, "error": tb.strip().splitlines()[-1], "traceback": tb})


def training(rec: dict, device: Device, quick: bool, tmp: Path) -> None:
    from chainrule.runs import TrainConfig

    # chainrule train's own settings: the deep digits MLP, Adam, 30 epochs, gradient flow watched every 10th step
    cfg = TrainConfig(monitor_every=10, checkpoint_every="5m")
    if quick or device.kind == "strict":
        cfg = replace(cfg, layers=(32,), epochs=2)
    rec["config"] = cfg.to_dict()
    if device.kind == "cupy":
        _train_with_runs(rec, cfg, tmp)
        _resume_on_the_gpu(rec, quick, tmp)
        _command_line(rec, tmp)
    else:
        _train_with_fit(rec, cfg, device)
    gpu, cpu = rec.get("gpu"), rec.get("cpu")
    if gpu and cpu and gpu.get("test_accuracy") is not None and cpu.get("test_accuracy") is not None:
        rec["accuracy_difference"] = gpu["test_accuracy"] - cpu["test_accuracy"]
        log(f"digits test accuracy: device {gpu['test_accuracy']:.4f}, cpu {cpu['test_accuracy']:.4f}")


def _train_with_runs(rec: dict, cfg: Any, tmp: Path) -> None:
    """chainrule.runs on device cuda and on the CPU; the GPU's model file read back on the CPU."""
    from chainrule.runs import evaluate_run, run

    try:
        rec["gpu"] = _summary(run(replace(cfg, device="cuda"), out=tmp / "gpu", plots=False))
    except OutOfTime:
        raise
    except Exception:
        _record_failure(rec, "digits on the GPU, monitored as chainrule train monitors it")
        try:  # the same run without the diagnostics, to tell a training failure from a monitoring one
            rec["gpu"] = _summary(run(replace(cfg, device="cuda", monitor_every=0), out=tmp / "gpu", plots=False))
            rec["gpu"]["note"] = "trained without the diagnostics monitor, which failed on the GPU (see failures)"
        except OutOfTime:
            raise
        except Exception:
            _record_failure(rec, "digits on the GPU without the monitor")
    rec["cpu"] = _summary(run(cfg, out=tmp / "cpu", plots=False))
    if "gpu" in rec:
        try:  # the model file was written from the GPU; read it back and evaluate it on the CPU
            rec["gpu"]["reloaded_on_cpu_test_accuracy"] = evaluate_run(tmp / "gpu")["test"]["accuracy"]
        except OutOfTime:
            raise
        except Exception:
            _record_failure(rec, "the GPU run's model file read back on the CPU")


def _resume_on_the_gpu(rec: dict, quick: bool, tmp: Path) -> None:
    """A GPU run stopped by Ctrl-C after some steps, resumed from its checkpoint: the same weights
    as the run never stopped (up to the GPU's own rounding)."""
    from chainrule.backend import to_numpy
    from chainrule.checkpoint import TrainingInterrupted
    from chainrule.runs import TrainConfig, resume, run

    cfg = TrainConfig(layers=(64, 64), epochs=2 if quick else 3, device="cuda", optimizer="adam", monitor_every=0)

    class CtrlC:
        def on_step_end(self, state: Any) -> None:
            if state.step == 50:
                os.kill(os.getpid(), signal.SIGINT)

    try:
        try:
            run(cfg, out=tmp / "resume", callbacks=[CtrlC()], interruptible=True, plots=False)
            raise RuntimeError("the run was not interrupted")
        except TrainingInterrupted:
            pass
        again = resume(tmp / "resume", plots=False)
        whole = run(cfg, plots=False)
        pairs = zip(whole.model.parameters(), again.model.parameters())
        diffs = [float(np.abs(to_numpy(p.data) - to_numpy(q.data)).max()) for p, q in pairs]
        rec["resume"] = {"resumed_from_step": again.resumed_from, "max_abs_difference": max(diffs), "bitwise_equal": max(diffs) == 0.0}
        log(f"resume on the GPU: from step {again.resumed_from}, largest difference from the whole run {max(diffs):.3g}")
    except OutOfTime:
        raise
    except Exception:
        _record_failure(rec, "a GPU run interrupted with a checkpoint and resumed")


def _command_line(rec: dict, tmp: Path) -> None:
    """``chainrule train --device cuda`` in a fresh process, as a user runs it."""
    cmd = [sys.executable, "-m", "chainrule", "train", "--device", "cuda", "--layers", "32", "--epochs", "2",
           "--json", "--no-plots", "--out", str(tmp / "cli")]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=tmp)
        row: dict = {"command": "chainrule train --device cuda --layers 32 --epochs 2 --json --no-plots", "exit_status": p.returncode}
        if p.returncode == 0:
            row["test_accuracy"] = json.loads(p.stdout.strip().splitlines()[-1])["test"]["accuracy"]
        else:
            row["stderr"] = p.stderr[-2000:]
        rec["command_line"] = row
    except subprocess.TimeoutExpired:
        rec["command_line"] = {"exit_status": None, "stderr": "timed out after 180 s"}


def _train_with_fit(rec: dict, cfg: Any, device: Device) -> None:
    """cr.fit on the stand-in device and on NumPy (runs knows only "cpu" and "cuda")."""
    import chainrule as cr
    from chainrule.data import load_dataset
    from chainrule.runs import build, build_model

    cfg = cfg.resolved()
    ds = load_dataset(cfg.dataset, seed=cfg.data_seed)
    for side, key in ((device, "gpu"), (Host(), "cpu")):
        try:
            built = build(cfg, model=side.model_to(build_model(cfg, ds.num_features, ds.num_outputs)))
            model, opt, loss_fn = built.model, built.optimizer, built.loss_fn
            y_train, y_test = built.targets(ds.y_train), built.targets(ds.y_test)
            start = time.perf_counter()
            history = cr.fit(model, loss_fn, opt, ds.X_train, y_train, epochs=cfg.epochs, batch_size=cfg.batch_size,
                             validation=(ds.X_test, y_test), seed=cfg.seed, progress=False)
            seconds = time.perf_counter() - start
            test = cr.evaluate(model, loss_fn, ds.X_test, y_test)
            train = cr.evaluate(model, loss_fn, ds.X_train, y_train)
            rec[key] = {"test_accuracy": test.get("accuracy"), "test_loss": test.get("loss"), "train_accuracy": train.get("accuracy"),
                        "seconds": seconds, "steps": history.steps, "epochs": len(history.epochs),
                        "seconds_per_step": seconds / history.steps if history.steps else None}
        except OutOfTime:
            raise
        except Exception:
            _record_failure(rec, f"digits with cr.fit on {side.name}")


# ---- 4. compiled: cr.compile on the device, bit for bit against eager, then its time per step ----


def compiled(rec: dict, device: Device, quick: bool, budget: "Budget") -> None:
    rec["bit_identity"] = {}
    for optimizer in COMPILED_OPTIMIZERS:
        try:
            r = rec["bit_identity"][optimizer] = _bit_identity(device, optimizer, quick)
            log(f"compiled vs eager, {r['optimizer']}: bit-identical {r['bit_identical']}, replayed: {r['replayed']}")
        except OutOfTime:
            raise
        except Exception:
            _record_failure(rec, f"cr.compile against eager on the device, {optimizer}")
    if device.kind != "cupy":
        rec["timing"] = {"skipped": "timing the compiled step needs CuPy and a GPU; skipped with --xp strict"}
        return
    need = 10 if quick else 30
    if budget.left() < need + 5:
        rec["timing"] = {"skipped": f"out of time: {budget.left():.0f} s left, the timing needs about {need} s"}
        return
    try:
        rec["timing"] = _time_steps(quick, seconds=min(need, budget.left() - 5))
        log(_timing_line(rec["timing"]))
    except OutOfTime:
        raise
    except Exception:
        _record_failure(rec, "timing the digits step: eager, compiled, PyTorch CUDA, jax.jit")


def _host(a: Any) -> np.ndarray | None:
    """A host copy of a device array (None stays None): what a later step changes is not seen."""
    from chainrule.backend import to_numpy

    return None if a is None else np.array(to_numpy(a))


def _same_bits(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Both missing, or the same dtype, shape and bytes (stricter than np.array_equal: a float64
    copy, a NaN or the sign of a zero counts)."""
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.shape == b.shape and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _bit_identity(device: Device, optimizer: str, quick: bool) -> dict:
    """The digits MLP trained eagerly and through cr.compile, from the same weights on the same
    batches (a short last batch in each epoch: a second signature); what differs, bit for bit."""
    import chainrule as cr
    from chainrule.bench.workloads import batch_plan, get_workload, load_data
    from chainrule.runs import TrainConfig, build, build_model

    # 64-128-128-10 ReLU with chainrule train's loss and optimizer settings (SGD: momentum 0.9)
    cfg = TrainConfig(layers=(128, 128), optimizer=optimizer).resolved()
    X, y = load_data(get_workload("digits"))
    rows = 32 * (4 if quick else 20) + 12
    plan = batch_plan(rows, cfg.batch_size, epochs=3, seed=cfg.seed)
    runs = [build(cfg, model=device.model_to(build_model(cfg, X.shape[1], 10))) for _ in range(2)]

    def step_of(b: Any) -> Callable:
        def step(xb: Any, yb: Any) -> Any:
            b.optimizer.zero_grad()
            loss = b.loss_fn(b.model(xb), yb)
            loss.backward()
            b.optimizer.step()
            return loss

        return step

    eager, compiled_step = step_of(runs[0]), cr.compile(step_of(runs[1]))
    losses: tuple = ([], [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for idx in (idx for epoch in plan for idx in epoch):
            xb, yb = device.put(X[idx]), device.put(y[idx])
            for found, fn in zip(losses, (eager, compiled_step)):
                found.append(_host(fn(cr.tensor(xb), cr.tensor(yb)).data))  # a replay's loss lives until the next call
    device.sync()
    said = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, cr.CompileWarning)))

    differ = [f"loss at step {i + 1}" for i, (a, b) in enumerate(zip(*losses)) if not _same_bits(a, b)]
    checked = {"parameters": [], "grads": [], "optimizer state": []}
    for (name, p), (_, q) in zip(runs[0].model.named_parameters(), runs[1].model.named_parameters()):
        checked["parameters"].append((name, _host(p.data), _host(q.data)))
        checked["grads"].append((f"{name}.grad", _host(p.grad), _host(q.grad)))
    states = [b.optimizer.state_dict() for b in runs]
    checked["optimizer state"].append(("steps", np.array(states[0]["steps"]), np.array(states[1]["steps"])))
    for key, arrays in states[0]["buffers"].items():
        for i, (a, b) in enumerate(zip(arrays, states[1]["buffers"][key])):
            checked["optimizer state"].append((f"{key}[{i}]", _host(a), _host(b)))
    identical = {"loss": not differ}
    for part, triples in checked.items():
        wrong = [name for name, a, b in triples if not _same_bits(a, b)]
        differ += [f"{part}: {name}" for name in wrong]
        identical[part] = not wrong

    calls = len(losses[1])
    if compiled_step.replays:
        replayed = f"yes ({compiled_step.replays} of {calls} calls)"
    else:
        replayed = f"no (ran eagerly: {said[0]})" if said else "no (and no CompileWarning said why)"
    settings = f", momentum {cfg.momentum}" if optimizer == "sgd" else ""
    return {
        "optimizer": f"{type(runs[1].optimizer).__name__} (lr {cfg.lr}{settings})",
        "loss": f"cross-entropy, label smoothing {cfg.label_smoothing}",
        "steps": calls,
        "batch_sizes": sorted({len(idx) for epoch in plan for idx in epoch}, reverse=True),
        "signatures": compiled_step.signatures,
        "replays": compiled_step.replays,
        "replayed": replayed,
        "compile_warnings": said,
        "identical": identical,
        "bit_identical": not differ,
        "differences": differ[:20],
    }


def _time_steps(quick: bool, seconds: float) -> dict:
    """Median time per digits step (64-128-128-10 ReLU, batch 32, SGD, float32) of eager and compiled
    chainrule, PyTorch CUDA and jax.jit, in timed blocks that take turns, each ended by a full wait."""
    import chainrule as cr
    from chainrule import functional as F
    from chainrule import optim
    from chainrule.bench.measure import _summary, ratio_of
    from chainrule.bench.runners import GPU, _chainrule_model
    from chainrule.bench.workloads import get_workload, initial_weights, load_data

    w = get_workload("digits")
    weights = initial_weights(w)
    X, y = load_data(w)
    batches = [(X[i : i + w.batch_size], y[i : i + w.batch_size]) for i in range(0, 16 * w.batch_size, w.batch_size)]
    gpu = GPU()
    wait_cupy = gpu.cp.cuda.Device().synchronize  # every stream: a CUDA graph may be launched on its own
    runners: dict = {}
    not_available: dict = {}
    compiled_steps: list = []
    for name in ("chainrule", "chainrule-compiled"):
        model = _chainrule_model(w, weights, gpu)
        opt = optim.SGD(model.parameters(), lr=w.lr)

        def step(xb: Any, yb: Any, model: Any = model, opt: Any = opt) -> Any:
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            return loss

        if name == "chainrule-compiled":
            step = cr.compile(step)
            compiled_steps.append(step)
        data = [(gpu.put(a), gpu.put(b)) for a, b in batches]
        runners[name] = (lambda i, step=step, data=data: step(cr.tensor(data[i][0]), cr.tensor(data[i][1])), wait_cupy)
    why = gpu.torch_ready()
    if why is None:
        runners["torch"] = _torch_step(gpu, w, weights, batches)
    else:
        not_available["torch"] = why
    made = _jax_step(weights, batches, w.lr)
    if isinstance(made, str):
        not_available["jax.jit"] = made
    else:
        runners["jax.jit"] = made

    block, rounds = (20, 3) if quick else (100, 15)
    samples: dict = {name: [] for name in runners}
    last: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for run, wait in runners.values():  # warm up: the compiled step records, jax compiles, caches fill
            for i in range(3 * len(batches)):
                run(i % len(batches))
            wait()
        end = time.monotonic() + seconds
        names = list(runners)
        for r in range(rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:  # the order rotates every round
                run, wait = runners[name]
                wait()
                start = time.perf_counter()
                for i in range(block):
                    last[name] = run(i % len(batches))
                wait()
                samples[name].append((time.perf_counter() - start) / block)
            if time.monotonic() > end:
                break
    said = list(dict.fromkeys(str(m.message) for m in caught if issubclass(m.category, cr.CompileWarning)))
    per_step = {name: _summary(v) for name, v in samples.items()}
    median = {name: s["median"] for name, s in per_step.items()}
    compiled_median = median.get("chainrule-compiled")
    return {
        "workload": "digits: 64-128-128-10 ReLU, batch 32, SGD lr 0.1, cross-entropy, float32",
        "steps_per_block": block,
        "rounds": len(samples["chainrule"]),
        "seconds_per_step": per_step,
        "not_available": not_available,
        # every runner made the same steps on the same batches: the same loss at the end, up to rounding
        "final_loss": {name: float(loss.item()) for name, loss in last.items()},
        "compiled_replays": compiled_steps[0].replays,
        "compile_warnings": said,
        "ratios": {f"compiled / {other}": ratio_of(compiled_median, median.get(other))
                   for other in ("jax.jit", "torch", "chainrule")},
    }


def _torch_step(gpu: Any, w: Any, weights: list, batches: list) -> tuple:
    """(run(i), wait) for PyTorch CUDA eager: the same MLP, weights and batches."""
    import torch

    from chainrule.bench.runners import _torch_model

    model = _torch_model(w, weights, gpu)
    opt = torch.optim.SGD(model.parameters(), lr=w.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    data = [(torch.from_numpy(a).to(gpu.torch_device), torch.from_numpy(b).to(gpu.torch_device)) for a, b in batches]

    def run(i: int) -> Any:
        opt.zero_grad()
        loss = loss_fn(model(data[i][0]), data[i][1])
        loss.backward()
        opt.step()
        return loss

    return run, gpu.torch_sync


def _jax_step(weights: list, batches: list, lr: float) -> tuple | str:
    """(run(i), wait) for plain JAX: the parameters as a pytree, jax.jit of value_and_grad and the
    SGD update; or why JAX cannot run here."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave the card's memory to CuPy and PyTorch
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as e:
        return f"not available ({type(e).__name__}: {e})"
    if jax.default_backend() != "gpu":
        return f"not available: JAX runs on {jax.default_backend()} here, not on the GPU"
    jax.config.update("jax_default_matmul_precision", "highest")  # full float32 products, as CuPy's and PyTorch's here

    def loss_of(params: list, x: Any, y: Any) -> Any:
        h = x
        for W, b in params[:-1]:
            h = jax.nn.relu(h @ W + b)
        W, b = params[-1]
        logp = jax.nn.log_softmax(h @ W + b)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    @functools.partial(jax.jit, donate_argnums=0)  # the parameters are updated in place, as the others' are
    def step(params: list, x: Any, y: Any) -> tuple:
        loss, grads = jax.value_and_grad(loss_of)(params, x, y)
        return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), loss

    state = [[(jnp.asarray(W), jnp.asarray(b)) for W, b in weights]]
    data = [(jnp.asarray(a), jnp.asarray(b)) for a, b in batches]

    def run(i: int) -> Any:
        state[0], loss = step(state[0], *data[i])
        return loss

    return run, lambda: jax.block_until_ready(state[0])


def _timing_line(timing: dict) -> str:
    parts = [f"{name} {s['median'] * 1e6:.0f} us" for name, s in timing["seconds_per_step"].items()]
    parts += [f"{name}: {why}" for name, why in timing["not_available"].items()]
    return "digits step, median: " + ", ".join(parts)


# ---- 5. benchmark: chainrule.bench on device cuda ----------------------------------------------


def benchmark(rec: dict, device: Device, quick: bool, budget: "Budget") -> None:
    if device.kind != "cupy":
        rec["skipped"] = "the benchmark against PyTorch CUDA needs CuPy and a GPU; skipped with --xp strict"
        return
    from chainrule import bench

    for name in ("big", "digits"):  # big first: its throughput is the headline target
        need = 15 if quick else 60
        if budget.left() < need:
            rec.setdefault("not_run", {})[name] = f"out of time: {budget.left():.0f} s left, it needs about {need} s"
            continue
        repeats = 1 if quick else (5 if budget.left() > 200 else 3)
        settings = dict(device="cuda", quick=quick, repeats=repeats, progress=lambda line: log(f"  {line}"))
        try:
            part = bench.run_benchmark([name], **settings)
        except OutOfTime:
            raise
        except Exception:
            _record_failure(rec, f"chainrule bench --device cuda -w {name}")
            try:  # PyTorch's and the floor's numbers on this card, at least
                part = bench.run_benchmark([name], runners=["torch", "cupy"], **settings)
            except OutOfTime:
                raise
            except Exception:
                _record_failure(rec, f"chainrule bench --device cuda -w {name} -r torch -r cupy")
                continue
        rec["result"] = _merge(rec.get("result"), part)  # kept as it comes: the budget may end the next workload
        log(bench.format_report(part))


def _merge(result: dict | None, part: dict) -> dict:
    """One benchmark result from two runs of different workloads, its targets read again."""
    from chainrule import bench

    if result is None:
        return part
    result["training"] += part["training"]
    result["inference"] += part["inference"]
    result["skipped"].update(part["skipped"])
    result["runners"].update(part["runners"])
    result["targets"] = bench.check_targets(result)
    return result


# ---- the whole check -------------------------------------------------------------------------


class Budget:
    """Seconds left until the deadline; past it, SIGALRM raises OutOfTime in the stage running."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def arm(self) -> None:
        def out_of_time(signum: int, frame: Any) -> None:
            raise OutOfTime(f"the time budget of {self.seconds:.0f} s ran out")

        if hasattr(signal, "SIGALRM"):
            signal.signal(signal.SIGALRM, out_of_time)
            signal.setitimer(signal.ITIMER_REAL, max(self.left(), 0.001))

    def disarm(self) -> None:
        if hasattr(signal, "SIGALRM"):
            signal.setitimer(signal.ITIMER_REAL, 0)


def targets(results: dict) -> list:
    """The issue-8 targets with what was measured: met True/False, or None (not measured)."""
    stages = results["stages"]
    out = []
    grads = stages.get("gradients", {})
    for dtype, limit in (("float32", FLOAT32_LIMIT), ("float64", FLOAT64_LIMIT)):
        s = grads.get(dtype)
        measured = None
        if s and s["max_rel_error"] is not None:
            measured = f"{s['max_rel_error']:.3g}" + (f" ({s['errors']} of {s['cases']} cases raised)" if s["errors"] else "")
        met = None if not s or not s["cases"] else (s["passed"] == s["cases"])
        out.append({"target": f"gradients on the device vs NumPy, {dtype}: max relative error (every case)", "limit": f"<= {limit:g}",
                    "measured": measured, "met": met})
    train = stages.get("training", {})
    diff = train.get("accuracy_difference")
    out.append({
        "target": "digits: test accuracy on the device vs the CPU (same seed)",
        "limit": f"within {ACCURACY_POINTS * 100:g} point",
        "measured": None if diff is None else f"{diff * 100:+.2f} points",
        "met": None if diff is None else abs(diff) <= ACCURACY_POINTS + 1e-12,
    })
    comp = stages.get("compiled", {})
    runs = comp.get("bit_identity") or {}
    out.append({
        "target": "compiled step vs eager on the device (SGD momentum, Adam): loss, parameters, .grad, optimizer state",
        "limit": "bit-identical",
        "measured": "; ".join(f"{k}: {'identical' if r['bit_identical'] else 'different'}, {r['replays']} replays"
                              for k, r in runs.items()) or None,
        "met": None if not runs else (tuple(runs) == COMPILED_OPTIMIZERS and all(r["bit_identical"] for r in runs.values())),
    })
    ratio = (comp.get("timing") or {}).get("ratios", {}).get("compiled / jax.jit")
    out.append({"target": "digits: compiled step vs jax.jit on the GPU (issue 16, for later)", "limit": f"<= {COMPILED_VS_JAX:g}",
                "measured": None if ratio is None else f"{ratio:.3f}x", "met": None if ratio is None else ratio <= COMPILED_VS_JAX})
    for t in (stages.get("benchmark", {}).get("result") or {}).get("targets", []):
        out.append({"target": t["target"], "limit": f"{'>=' if t.get('at_least') else '<='} {t['limit']}",
                    "measured": None if t["ratio"] is None else f"{t['ratio']:.3f}x", "met": t["met"]})
    if not stages.get("benchmark", {}).get("result"):
        for label, limit in (("big: training throughput vs torch", ">= 0.95"), ("digits: time per step vs torch", "<= 1.0")):
            out.append({"target": label, "limit": limit, "measured": None, "met": None})
    return out


def markdown(results: dict) -> str:
    """The results as a Markdown report: card and versions, targets, then each stage."""
    env = results["stages"].get("environment", {}).get("values", {})
    lines = [
        f"# chainrule GPU check: {results['date']}",
        "",
        f"Command: `{results['command']}` ({results['seconds']:.0f} s of a {results['budget_s']:.0f} s budget)",
        "",
        f"- Card: {env.get('card', 'unknown')}",
    ]
    gpu = env.get("gpu")
    if gpu:
        lines.append(f"- CUDA runtime {gpu['cuda_runtime']}, driver {gpu['cuda_driver']}, compute capability "
                     f"{gpu['compute_capability']}, {gpu['memory_bytes'] / 2**30:.0f} GiB; CUPY_TF32 {gpu['CUPY_TF32']}, "
                     f"torch float32 matmul precision {gpu.get('torch_float32_matmul_precision', '-')}")
    lines.append(f"- Python {env.get('python')}, NumPy {env.get('numpy')}, CuPy {env.get('cupy')}, PyTorch {env.get('torch')}, "
                 f"array-api-strict {env.get('array_api_strict')}, chainrule {env.get('chainrule')}")
    lines += ["", "## Stages", "", "| stage | status | seconds |", "|---|---|---:|"]
    for name in STAGES:
        st = results["stages"].get(name, {})
        lines.append(f"| {name} | {st.get('status', 'not run')} | {st.get('seconds', 0):.1f} |")
    lines += ["", "## Targets", "", "| target | limit | measured | |", "|---|---|---:|---|"]
    for t in results["targets"]:
        status = "not measured" if t["met"] is None else ("met" if t["met"] else "MISSED")
        lines.append(f"| {t['target']} | {t['limit']} | {t['measured'] or '-'} | {status} |")
    grads = results["stages"].get("gradients", {})
    if grads.get("rows"):
        lines += ["", "## Gradients: device against NumPy, same inputs", "",
                  "Max relative error over the output and every gradient (max |device - numpy| / max |numpy|, per array).", "",
                  "| case | kind | float32 | float64 | |", "|---|---|---:|---:|---|"]
        by_case: dict = {}
        for r in grads["rows"]:
            by_case.setdefault(r["case"], {})[r["dtype"]] = r
        for name, pair in by_case.items():
            cells, ok, notes = [], True, []
            for dtype in ("float32", "float64"):
                r = pair.get(dtype, {})
                e = r.get("max_rel_error")
                cells.append("error" if "error" in r else ("-" if e is None else f"{e:.2e}"))
                ok = ok and bool(r.get("passed"))
                if "error" in r:
                    notes.append(r["error"][:120])
            kind = next(iter(pair.values()))["kind"]
            lines.append(f"| {name} | {kind} | {cells[0]} | {cells[1]} | {'ok' if ok else 'FAILED'}{': ' + notes[0] if notes else ''} |")
    train = results["stages"].get("training", {})
    if train.get("gpu") or train.get("cpu"):
        lines += ["", "## Training digits", "", "| device | test accuracy | train accuracy | seconds | per step | steps |",
                  "|---|---:|---:|---:|---:|---:|"]
        device = "gpu (cuda)" if results["xp"] == "cupy" else "array-api-strict device1"
        for key, label in (("gpu", device), ("cpu", "cpu")):
            r = train.get(key)
            if r:
                acc = lambda v: "-" if v is None else f"{v:.2%}"  # noqa: E731
                per = r.get("seconds_per_step")
                lines.append(f"| {label} | {acc(r.get('test_accuracy'))} | {acc(r.get('train_accuracy'))} | {r['seconds']:.2f} | "
                             f"{'-' if per is None else f'{per * 1e3:.2f} ms'} | {r['steps']} |")
        if train.get("gpu", {}).get("reloaded_on_cpu_test_accuracy") is not None:
            lines.append(f"\nThe GPU's model file read back and evaluated on the CPU: test accuracy "
                         f"{train['gpu']['reloaded_on_cpu_test_accuracy']:.2%}.")
        if train.get("resume"):
            r = train["resume"]
            lines.append(f"\nInterrupted at step 50 and resumed on the GPU: largest weight difference from the run never "
                         f"stopped {r['max_abs_difference']:.3g} (bitwise equal: {r['bitwise_equal']}).")
        if train.get("command_line"):
            r = train["command_line"]
            lines.append(f"\n`{r.get('command', 'chainrule train --device cuda')}`: exit status {r['exit_status']}"
                         + (f", test accuracy {r['test_accuracy']:.2%}" if "test_accuracy" in r else ""))
    lines += _compiled_markdown(results["stages"].get("compiled", {}))
    bench_stage = results["stages"].get("benchmark", {})
    if bench_stage.get("result"):
        from chainrule import bench

        lines += ["", "## Benchmark (chainrule bench --device cuda)", "", bench.format_report(bench_stage["result"], markdown=True).strip()]
    elif bench_stage.get("skipped"):
        lines += ["", "## Benchmark", "", bench_stage["skipped"]]
    for name, why in (bench_stage.get("not_run") or {}).items():
        lines.append(f"\nNot benchmarked: {name}, {why}.")
    failures = [(name, f) for name in STAGES for f in results["stages"].get(name, {}).get("failures", [])]
    errors = [(name, st) for name, st in results["stages"].items() if st.get("error")]
    if failures or errors:
        lines += ["", "## Failures", ""]
        for name, f in failures:
            lines.append(f"- {name}, {f['what']}: `{f['error']}`")
        for name, st in errors:
            lines.append(f"- {name}: `{st['error']}`")
    return "\n".join(lines) + "\n"


def _compiled_markdown(stage: dict) -> list:
    """The compiled stage's section of the report: bit-identity per optimizer, then the timing."""
    runs = stage.get("bit_identity")
    if not runs and not stage.get("timing"):
        return []
    lines = ["", "## Compiled step (cr.compile) against eager, on the device", ""]
    if runs:
        lines += ["Digits MLP 64-128-128-10 ReLU, float32, the same weights and batches (a short last batch in each epoch).", "",
                  "| optimizer | steps | batch sizes | signatures | replayed | bit-identical | differences |",
                  "|---|---:|---|---:|---|---|---|"]
        for r in runs.values():
            lines.append(f"| {r['optimizer']} | {r['steps']} | {', '.join(map(str, r['batch_sizes']))} | {r['signatures']} | "
                         f"{r['replayed']} | {'yes' if r['bit_identical'] else 'NO'} | {', '.join(r['differences']) or '-'} |")
    timing = stage.get("timing") or {}
    if timing.get("skipped"):
        lines += ["", f"Timing: {timing['skipped']}."]
    elif timing.get("seconds_per_step"):
        compiled_median = timing["seconds_per_step"].get("chainrule-compiled", {}).get("median")
        lines += ["", f"Time per step, {timing['workload']}: medians of {timing['rounds']} interleaved blocks of "
                      f"{timing['steps_per_block']} steps, each ended by a wait for the GPU.", "",
                  "| runner | median | min | max | compiled / runner | loss at the end |", "|---|---:|---:|---:|---:|---:|"]
        for name, s in timing["seconds_per_step"].items():
            ratio = compiled_median / s["median"] if compiled_median and s["median"] else None
            lines.append(f"| {name} | {s['median'] * 1e6:.0f} us | {s['min'] * 1e6:.0f} us | {s['max'] * 1e6:.0f} us | "
                         f"{'-' if ratio is None else f'{ratio:.2f}x'} | {timing['final_loss'][name]:.6f} |")
        for name, why in timing["not_available"].items():
            lines.append(f"| {name} | {why} | | | | |")
        lines.append(f"\nThe compiled step replayed {timing['compiled_replays']} times"
                     + (f"; CompileWarning: {timing['compile_warnings'][0]}" if timing["compile_warnings"] else "") + ".")
    return lines


def write(results: dict, out: Path) -> None:
    from chainrule.runs import json_ready

    results["targets"] = targets(results)
    (out / "gpu-results.json").write_text(json.dumps(json_ready(results), indent=1) + "\n")
    (out / "gpu-results.md").write_text(markdown(results))


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu-results.json and gpu-results.md")
    parser.add_argument("--xp", choices=("cupy", "strict"), default="cupy", help="the device namespace (strict: no GPU needed)")
    parser.add_argument("--quick", action="store_true", help="tiny settings everywhere")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for the whole check (default 420)")
    parser.add_argument("--stages", default=",".join(STAGES[1:]), help=f"which of {','.join(STAGES[1:])} to run")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    wanted = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; expected some of {', '.join(STAGES[1:])}")

    budget = Budget(args.budget)
    results: dict = {
        "check": "chainrule GPU check (issues 8 and 16)",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "python benchmarks/gpu_check.py " + " ".join(str(a) for a in (argv if argv is not None else sys.argv[1:])),
        "xp": args.xp,
        "quick": args.quick,
        "budget_s": args.budget,
        "seconds": 0.0,
        "stages": {},
    }
    start = time.monotonic()
    device = None
    budget.arm()
    try:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            for name in ("environment", *wanted):
                rec = results["stages"][name] = {"status": "running"}
                if budget.left() < NEEDS[name] * (0.05 if args.quick else 1):
                    rec["status"] = "skipped: out of time"
                    continue
                log(f"== {name}")
                t0 = time.monotonic()
                try:
                    if name == "environment":
                        device = Device(args.xp)
                        environment(rec, device)
                    elif device is None:
                        raise RuntimeError("no device: the environment stage failed (see its error)")
                    elif name == "gradients":
                        gradients(rec, device)
                    elif name == "training":
                        training(rec, device, args.quick, Path(tmp))
                    elif name == "compiled":
                        compiled(rec, device, args.quick, budget)
                    else:
                        benchmark(rec, device, args.quick, budget)
                    if rec.get("skipped"):
                        rec["status"] = "skipped"
                    else:
                        rec["status"] = "ok" if not rec.get("failures") else "ok, with failures"
                except OutOfTime as e:
                    rec["status"] = "out of time"
                    rec["error"] = str(e)
                    log(f"{name}: {e}")
                except Exception as e:
                    traceback.print_exc()
                    rec["status"] = "failed"
                    rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    rec["traceback"] = traceback.format_exc()
                finally:
                    rec["seconds"] = time.monotonic() - t0
                    results["seconds"] = time.monotonic() - start
                    budget.disarm()  # no alarm while writing
                    write(results, args.out)
                    if budget.left() > 0:
                        budget.arm()
    finally:
        budget.disarm()
        results["seconds"] = time.monotonic() - start
        write(results, args.out)
    log("")
    log((args.out / "gpu-results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
