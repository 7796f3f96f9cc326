"""benchmarks/gpu_check.py, the one prepared GPU check of issue 8, run here without a GPU.

``--xp strict`` puts array-api-strict's stand-in device where CuPy would be (what the
gradients and the training of the check prove there: no NumPy-only call in the path);
a stand-in module for CuPy, backed by NumPy, dry-runs the CuPy path of the script
(chainrule.runs on device "cuda", resume, the command line) for mistakes in the glue.
No timing is asserted.
"""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"

# DESIGN.md's public API: each needs a case in the check (and every Tensor primitive)
PRIMITIVES = ("add", "sub", "mul", "div", "pow_scalar", "pow_tensor", "neg", "matmul", "sum", "mean", "max", "min", "reshape",
              "transpose", "T", "getitem", "exp", "log", "sqrt", "abs", "clip", "where", "maximum", "minimum", "concat",
              "stack", "logsumexp", "var", "std", "prod", "cumsum", "sign", "sin_cos", "log1p_expm1", "squeeze_unsqueeze_flatten",
              "broadcast_to_expand", "flip", "einsum_one", "einsum_two")
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "softmax", "log_softmax", "identity", "linear",
               "fused_layers", "gelu", "gelu_tanh", "silu", "softplus", "logsigmoid")
LOSSES = ("mse_loss", "cross_entropy", "binary_cross_entropy_with_logits", "binary_cross_entropy")
OPTIMIZERS = ("sgd", "adam", "adamw")


def _script(*args, env=None, timeout=300):
    p = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                       cwd=ROOT, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p


@pytest.fixture(scope="module")
def strict_run(tmp_path_factory):
    pytest.importorskip("array_api_strict")
    out = tmp_path_factory.mktemp("gpu-check")
    p = _script("--out", out, "--xp", "strict", "--quick")
    return out, json.loads((out / "gpu-results.json").read_text()), p.stdout


def test_strict_run_writes_every_stage_and_the_targets(strict_run):
    out, results, stdout = strict_run
    assert results["xp"] == "strict" and results["quick"] is True and results["budget_s"] == 420
    stages = results["stages"]
    assert list(stages) == ["environment", "gradients", "training", "compiled", "benchmark"]
    env = stages["environment"]
    assert env["status"] == "ok" and "array-api-strict" in env["values"]["card"] and env["values"]["numpy"]
    assert stages["gradients"]["status"].startswith("ok") and stages["training"]["status"].startswith("ok")
    assert stages["benchmark"]["status"] == "skipped" and "needs CuPy and a GPU" in stages["benchmark"]["skipped"]
    assert [t["target"] for t in results["targets"]] == [
        "gradients on the device vs NumPy, float32: max relative error (every case)",
        "gradients on the device vs NumPy, float64: max relative error (every case)",
        "digits: test accuracy on the device vs the CPU (same seed)",
        "compiled step vs eager on the device (SGD momentum, Adam): loss, parameters, .grad, optimizer state",
        "digits: compiled step vs jax.jit on the GPU (issue 16, for later)",
        "big: training throughput vs torch",
        "digits: time per step vs torch",
    ]
    assert [t["limit"] for t in results["targets"]] == ["<= 1e-05", "<= 1e-10", "within 1 point", "bit-identical", "<= 1.5", ">= 0.95",
                                                        "<= 1.0"]
    assert results["targets"][4]["met"] is None and results["targets"][5]["met"] is None  # no timing without a GPU
    md = (out / "gpu-results.md").read_text()
    assert md.startswith("# chainrule GPU check: ") and "## Targets" in md and "## Gradients" in md
    assert md.strip() in stdout  # printed at the end too
    assert stages["training"]["cpu"]["test_accuracy"] > 0.2  # the NumPy side trained (2 epochs, 32 units)


def test_every_primitive_activation_loss_and_optimizer_has_a_case_in_both_precisions(strict_run):
    _, results, _ = strict_run
    rows = results["stages"]["gradients"]["rows"]
    names = {r["case"] for r in rows}
    for name in PRIMITIVES + ACTIVATIONS + LOSSES + OPTIMIZERS:
        assert any(n == name or n.startswith(name + "_") for n in names), name
    assert {"mlp_tanh", "mlp_prelu"} <= names
    for name in names:
        mine = {r["dtype"]: r for r in rows if r["case"] == name}
        assert set(mine) == {"float32", "float64"}, name
        assert mine["float32"]["limit"] == 1e-5 and mine["float64"]["limit"] == 1e-10
        for r in mine.values():
            assert ("error" in r) or (r["max_rel_error"] is not None and r["passed"] == (r["max_rel_error"] <= r["limit"]))
    summary = results["stages"]["gradients"]["float32"]
    assert summary["cases"] == len(names) and summary["passed"] + summary["errors"] <= summary["cases"]


def test_on_the_stand_in_device_every_gradient_matches_numpy(strict_run):
    _, results, _ = strict_run
    failed = [(r["case"], r["dtype"], r.get("error") or r["max_rel_error"]) for r in results["stages"]["gradients"]["rows"] if not r["passed"]]
    assert failed == []


def test_digits_trained_on_the_stand_in_device_reach_the_cpu_accuracy(strict_run):
    _, results, _ = strict_run
    train = results["stages"]["training"]
    assert [f["error"] for f in train.get("failures", [])] == []
    assert abs(train["accuracy_difference"]) <= 0.01
    assert results["targets"][2]["met"] is True


def test_the_compiled_step_on_the_stand_in_device_is_bit_identical_to_eager(strict_run):
    out, results, _ = strict_run
    stage = results["stages"]["compiled"]
    assert stage["status"] == "ok" and stage.get("failures") is None
    runs = stage["bit_identity"]
    assert list(runs) == ["sgd", "adam"]
    assert runs["sgd"]["optimizer"] == "SGD (lr 0.05, momentum 0.9)" and runs["adam"]["optimizer"] == "Adam (lr 0.001)"
    for r in runs.values():
        assert r["bit_identical"] is True and r["differences"] == []
        assert r["identical"] == {"loss": True, "parameters": True, "grads": True, "optimizer state": True}
        assert r["steps"] == 15 and r["batch_sizes"] == [32, 12] and r["signatures"] == 2  # the short batch: a second signature
        # recorded on the stand-in device and replayed (chainrule.capture_foreign), without warnings
        assert r["replays"] == 11 and r["replayed"] == "yes (11 of 15 calls)" and not r["compile_warnings"]
    assert stage["timing"] == {"skipped": "timing the compiled step needs CuPy and a GPU; skipped with --xp strict"}
    target = results["targets"][3]
    assert target["met"] is True and target["measured"].startswith("sgd: identical, ")
    md = (out / "gpu-results.md").read_text()
    assert "## Compiled step (cr.compile) against eager, on the device" in md
    assert "| SGD (lr 0.05, momentum 0.9) | 15 | 32, 12 | 2 | " in md
    assert "Timing: timing the compiled step needs CuPy and a GPU; skipped with --xp strict." in md


def test_the_bit_identity_check_replays_on_numpy_and_sees_a_difference(monkeypatch):
    import chainrule as cr

    check = _load()
    r = check._bit_identity(check.Host(), "adam", quick=True)  # NumPy: recorded, then replayed
    assert r["bit_identical"] is True and r["replays"] == 11 and r["replayed"] == "yes (11 of 15 calls)"

    class Nudged:  # a "compiled" step that feeds the model inputs 0.1% larger
        replays, signatures = 0, 1

        def __init__(self, fn):
            self.fn = fn

        def __call__(self, xb, yb):
            return self.fn(xb * 1.001, yb)

    monkeypatch.setattr(cr, "compile", Nudged)
    r = check._bit_identity(check.Host(), "sgd", quick=True)
    assert r["bit_identical"] is False and not any(r["identical"].values())
    assert r["differences"][0] == "loss at step 1" and len(r["differences"]) == 20
    assert r["replayed"] == "no (and no CompileWarning said why)"
    same = check._same_bits
    assert same(None, None) and not same(None, np.zeros(1)) and same(np.array([np.nan, -0.0]), np.array([np.nan, -0.0]))
    assert not same(np.zeros(2), np.zeros(2, np.float32)) and not same(np.array(-0.0), np.array(0.0)) and not same(np.zeros(2), np.zeros(3))


def test_the_timing_runs_on_a_numpy_backed_stand_in_for_cupy_with_pytorch_on_the_cpu(monkeypatch):
    import types

    from chainrule.bench import runners

    fake = types.ModuleType("cupy")
    exec(FAKE_CUPY, fake.__dict__)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(runners.GPU, "torch_device", "cpu")
    monkeypatch.setattr(runners.GPU, "torch_ready", lambda self: None)
    monkeypatch.setattr(runners.GPU, "torch_sync", lambda self: None)
    check = _load()
    timing = check._time_steps(quick=True, seconds=5)
    assert {"chainrule", "chainrule-compiled", "torch"} <= set(timing["seconds_per_step"])
    assert "jax.jit" in timing["seconds_per_step"] or timing["not_available"]["jax.jit"].startswith("not available")
    assert timing["rounds"] == 3 and all(len(s["values"]) == 3 for s in timing["seconds_per_step"].values())
    # the same steps on the same batches from the same weights: the same loss at the end
    losses = timing["final_loss"]
    assert losses["chainrule"] == losses["chainrule-compiled"]
    assert losses["torch"] == pytest.approx(losses["chainrule"], rel=1e-5)
    assert timing["compiled_replays"] > 0  # the stand-in's arrays are NumPy's: replayed
    assert set(timing["ratios"]) == {"compiled / jax.jit", "compiled / torch", "compiled / chainrule"}
    assert timing["ratios"]["compiled / torch"] == timing["seconds_per_step"]["chainrule-compiled"]["median"] / timing["seconds_per_step"]["torch"]["median"]
    md = "\n".join(check._compiled_markdown({"timing": timing}))
    assert "| chainrule-compiled | " in md and "| 1.00x | " in md and "medians of 3 interleaved blocks of 20 steps" in md


def test_the_jax_step_says_why_it_cannot_run(monkeypatch):
    check = _load()
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    monkeypatch.setitem(sys.modules, "jax", None)  # as where JAX is not installed
    assert check._jax_step([], [], 0.1).startswith("not available (ModuleNotFoundError: ")


def test_the_jax_step_trains_as_chainrule_does(monkeypatch):
    jax = pytest.importorskip("jax")
    import chainrule as cr
    from chainrule import functional as F
    from chainrule import optim
    from chainrule.bench.runners import _chainrule_model
    from chainrule.bench.workloads import get_workload, initial_weights, load_data

    check = _load()
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if jax.default_backend() != "gpu":
        assert check._jax_step([], [], 0.1) == f"not available: JAX runs on {jax.default_backend()} here, not on the GPU"
        monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # the same step on JAX's CPU
    w = get_workload("digits")
    weights = initial_weights(w)
    X, y = load_data(w)
    batches = [(X[i : i + 32], y[i : i + 32]) for i in range(0, 8 * 32, 32)]
    run, wait = check._jax_step(weights, batches, w.lr)
    model = _chainrule_model(w, weights)
    opt = optim.SGD(model.parameters(), lr=w.lr)
    for i, (xb, yb) in enumerate(batches):
        opt.zero_grad()
        loss = F.cross_entropy(model(cr.tensor(xb)), cr.tensor(yb))
        loss.backward()
        opt.step()
        assert float(run(i)) == pytest.approx(loss.item(), rel=1e-6)
    wait()


def test_relative_error_is_per_array_and_never_passes_nan():
    check = _load()
    assert check.relative_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert check.relative_error([1.0, 4.001], [1.0, 4.0]) == pytest.approx(0.001 / 4)
    assert check.relative_error([float("nan")], [1.0]) == float("inf")
    assert check.relative_error([1.0], [[1.0]]) == float("inf")
    assert check.relative_error(None, [1.0]) == float("inf") and check.relative_error(None, None) == 0.0


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


def test_running_out_of_time_stops_the_stage_and_still_writes_the_results(tmp_path, monkeypatch, capsys):
    pytest.importorskip("array_api_strict")
    check = _load()

    done = {"case": "add", "kind": "primitive", "dtype": "float32", "limit": 1e-5, "max_rel_error": 0.0, "passed": True}

    def slow(rec, device):
        rec["rows"] = [done]  # what a stage has done stays in the results
        time.sleep(30)  # the alarm interrupts this

    monkeypatch.setattr(check, "gradients", slow)
    start = time.monotonic()
    assert check.main(["--out", str(tmp_path), "--xp", "strict", "--quick", "--budget", "1.0"]) == 0
    assert time.monotonic() - start < 10
    results = json.loads((tmp_path / "gpu-results.json").read_text())
    stages = results["stages"]
    assert stages["environment"]["status"] == "ok"
    assert stages["gradients"]["status"] == "out of time" and stages["gradients"]["rows"] == [done]
    assert stages["training"]["status"] == stages["compiled"]["status"] == stages["benchmark"]["status"] == "skipped: out of time"
    assert "| gradients | out of time |" in (tmp_path / "gpu-results.md").read_text()
    assert "# chainrule GPU check" in capsys.readouterr().out


# A stand-in for CuPy backed by NumPy: enough of CuPy's interface for the check's glue code to run.
FAKE_CUPY = '''
import numpy as _np
from types import SimpleNamespace as _NS

__version__ = "0.0-stand-in"


def __getattr__(name):
    return getattr(_np, name)


class _Pool:
    def used_bytes(self):
        return 0

    def malloc(self, size):
        return None


_pool = _Pool()


def get_default_memory_pool():
    return _pool


cuda = _NS(
    runtime=_NS(
        getDeviceCount=lambda: 1, runtimeGetVersion=lambda: 13000, driverGetVersion=lambda: 13000,
        getDeviceProperties=lambda i: {"name": b"Stand-in GPU", "major": 9, "minor": 0, "totalGlobalMem": 2**30,
                                       "multiProcessorCount": 1},
    ),
    get_current_stream=lambda: _NS(synchronize=lambda: None),
    Device=lambda *device: _NS(synchronize=lambda: None),
    set_allocator=lambda f: None,
)
'''


@pytest.mark.slow
def test_the_cupy_path_runs_end_to_end_with_a_numpy_backed_stand_in(tmp_path):
    fake = tmp_path / "fake"
    (fake / "cupy").mkdir(parents=True)
    (fake / "cupy" / "__init__.py").write_text(FAKE_CUPY)
    env = {**os.environ, "PYTHONPATH": str(fake) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    _script("--out", tmp_path / "out", "--quick", "--stages", "training,compiled", env=env)
    results = json.loads((tmp_path / "out" / "gpu-results.json").read_text())
    assert results["stages"]["environment"]["values"]["card"] == "Stand-in GPU"
    train = results["stages"]["training"]
    assert train["status"] == "ok", train.get("failures")
    assert train["config"]["monitor_every"] == 10  # chainrule train's own settings
    # the stand-in computes with NumPy, so the "GPU" run is the CPU run, bit for bit
    assert train["gpu"]["test_accuracy"] == train["cpu"]["test_accuracy"] == train["gpu"]["reloaded_on_cpu_test_accuracy"]
    assert train["resume"]["bitwise_equal"] and train["resume"]["resumed_from_step"] == 50
    assert train["command_line"]["exit_status"] == 0 and train["command_line"]["test_accuracy"] > 0.2
    compiled = results["stages"]["compiled"]
    assert compiled["status"] == "ok" and all(r["bit_identical"] for r in compiled["bit_identity"].values())
    assert compiled["timing"]["not_available"]["torch"].endswith("has no CUDA or sees no GPU")
    assert compiled["timing"]["final_loss"]["chainrule"] == compiled["timing"]["final_loss"]["chainrule-compiled"]
    assert set(results["stages"]) == {"environment", "training", "compiled"}  # only the stages asked for
