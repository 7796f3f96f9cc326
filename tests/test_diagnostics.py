"""Gradient-flow diagnostics: known answers, the lesson's claim measured, PyTorch agreement,
the records, warnings, table, plots and TensorBoard files."""

import json
import math
import struct
import subprocess
import sys

import numpy as np
import pytest

import chainrule as cr
from chainrule import functional as F
from chainrule import nn, optim
from chainrule.autograd import leaf
from chainrule.data import load_digits, train_test_split
from chainrule.diagnostics import (
    VANISHING_RATIO,
    HealthWarning,
    Monitor,
    find_layers,
    health_summary,
    health_table,
    health_text,
    saturation_threshold,
    signal_propagation,
    write_tensorboard,
)
from chainrule.diagnostics import advice
from conftest import torch_copy


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits()
    return train_test_split(X, y, seed=0)


def _fit(model, X, y, monitor, lr=0.1, epochs=1, **kw):
    """cr.fit with plain SGD, the Monitor as its callback and no progress bar."""
    opt = optim.SGD(model.parameters(), lr=lr)
    return cr.fit(model, F.cross_entropy, opt, X, y, epochs=epochs, callbacks=[monitor], progress=False, **kw)


def _one_step(model, opt, X, y, monitor):
    """A hand-written training step, as the Monitor's docstring shows it."""
    loss = F.cross_entropy(model(leaf(X)), leaf(y))
    opt.zero_grad()
    loss.backward()
    opt.step()
    monitor.step(loss)
    return loss


# ---- known answers -------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.0, 0.9])  # plain SGD (update = lr * grad) and the weight-copy path
def test_relu_layer_with_bias_minus_100_is_dead_with_zero_gradient(digits, momentum):
    X, _, y, _ = digits
    model = nn.MLP([64, 32, 10], activation="relu", bias_init=-100.0, generator=0)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
    monitor = Monitor(probe=(X[:128], y[:128]))
    cr.fit(model, F.cross_entropy, opt, X[:256], y[:256], epochs=1, batch_size=32, callbacks=[monitor], progress=False)
    first = monitor.records[0]["layers"][0]
    assert first["activation"] == "relu"
    assert first["dead_fraction"] == 1.0
    assert first["dead_fraction_epoch"] == 1.0
    assert first["grad_norm"] == 0.0
    assert first["grad_norm_bias"] == 0.0
    assert first["update_ratio"] == 0.0
    assert monitor.initial["layers"][0]["dead_fraction"] == 1.0
    assert monitor.initial["layers"][0]["activation_var"] == 0.0
    dead = [w for w in monitor.warnings() if w.kind == "dead_units"]
    assert len(dead) == 1 and dead[0].layers == [1]
    assert "100% of the ReLU units of layer 1 are never active" in dead[0].message
    # dead before the first step: the bias killed them, and the advice is the lab's cure for that cause
    assert "already dead before the first step (100% at initialization)" in dead[0].message
    assert "start the biases at 0" in dead[0].message and "bias experiment" in dead[0].message


def test_units_killed_by_large_steps_get_the_learning_rate_advice_not_another_activation(digits):
    X, _, y, _ = digits
    model = nn.MLP([64, 64, 64, 10], activation="relu", generator=0)
    monitor = Monitor(probe=(X[:128], y[:128]))
    with np.errstate(all="ignore"):
        _fit(model, X[:640], y[:640], monitor, lr=1.0, batch_size=32)  # 20 steps at lr 1.0, as the lab's burst
    dead = [w for w in monitor.warnings() if w.kind == "dead_units"]
    assert monitor.initial["layers"][0]["dead_fraction"] < 0.5
    assert dead and "the learning rate killed them: lower it" in dead[0].message
    assert "PReLU diverged" in dead[0].message and "switch to" not in dead[0].message


def test_a_large_generalization_gap_is_warned_about_on_any_task():
    from chainrule.diagnostics.advice import GAP_WARN, generalization_gap

    w = generalization_gap({"loss": 1e-4, "subset_accuracy": 0.99, "val_loss": 0.9, "val_subset_accuracy": 0.63}, 20)
    assert w.kind == "generalization_gap" and w.value == pytest.approx(0.36) and w.threshold == GAP_WARN
    assert "0.990 on the training data against 0.630" in w.message and "weight decay" in w.message
    assert generalization_gap({"accuracy": 0.95, "val_accuracy": 0.9}, 1) is None
    regression = generalization_gap({"loss": 0.01, "val_loss": 0.2}, 3)  # no metric: the loss decides
    assert regression is not None and "validation loss 0.2" in regression.message
    assert generalization_gap({"loss": 0.01, "val_loss": 0.015}, 3) is None


def test_the_monitor_warns_about_overfitting_in_fit(digits):
    X, _, y, _ = digits
    model = nn.MLP([64, 64, 10], activation="relu", generator=0)
    monitor = Monitor(probe=(X[:64], y[:64]))
    # 40 training images, the rest for validation: learnt by heart
    cr.fit(model, F.cross_entropy, optim.Adam(model.parameters(), lr=1e-2), X[:40], y[:40], epochs=30,
           validation=(X[40:400], y[40:400]), callbacks=[monitor], progress=False)
    gap = [w for w in monitor.warnings() if w.kind == "generalization_gap"]
    assert gap and gap[0].value > 0.1


def test_healthy_relu_layer_is_not_dead(digits):
    X, _, y, _ = digits
    model = nn.MLP([64, 32, 10], activation="relu", generator=0)
    monitor = Monitor(probe=(X[:128], y[:128]))
    _fit(model, X[:256], y[:256], monitor, lr=0.05)
    first = monitor.records[0]["layers"][0]
    assert first["dead_fraction"] < 0.2  # measured 0.03
    assert first["grad_norm"] > 0.01
    assert not [w for w in monitor.warnings() if w.kind == "dead_units"]


@pytest.mark.parametrize("activation, threshold", [("gelu", -3.0217), ("silu", -6.1429)])
def test_gelu_and_silu_units_in_the_flat_left_tail_count_as_dead(digits, activation, threshold):
    """GELU and SiLU never saturate; a unit is dead when every probe sample puts it where |f'| < 1%
    of its peak for good (the left tail), and the Monitor says so, in its rules and its warning."""
    from chainrule import ops
    from chainrule.diagnostics import dead_threshold, health_rule

    z = dead_threshold(activation)
    assert z == pytest.approx(threshold, abs=2e-4)
    f = ops.gelu_derivative if activation == "gelu" else ops.silu_derivative
    peak = f(np.linspace(0, 4, 40_001)).max()
    left = np.linspace(-40, z - 1e-3, 10_000)
    assert np.all(np.abs(f(left)) < 0.01 * peak) and abs(f(np.array([z + 2e-4])))[0] >= 0.01 * peak
    X, _, y, _ = digits
    for bias, dead in ((0.0, 0.0), (-100.0, 1.0)):  # healthy, then dead (whose monitor is kept)
        model = nn.MLP([64, 32, 10], activation=activation, bias_init=bias, generator=0)
        monitor = Monitor(probe=(X[:128], y[:128]))
        _fit(model, X[:256], y[:256], monitor, lr=0.05)
        first = monitor.records[0]["layers"][0]
        assert first["activation"] == activation and first["dead_fraction"] == dead
        assert first["saturated_fraction"] is None and first["dead_fraction_epoch"] is None
        assert 0.0 <= first["mean_derivative"] <= 1.13 if bias == 0 else abs(first["mean_derivative"]) < 1e-3
        warned = [w for w in monitor.warnings() if w.kind == "dead_units"]
        assert bool(warned) == (dead == 1.0)
    name = {"gelu": "GELU", "silu": "SiLU"}[activation]
    assert f"100% of the {name} units of layer 1 stay in the flat left tail" in warned[0].message
    rule = monitor.to_dict()["health_rules"][activation]
    assert rule == health_rule(activation) and f"z < {threshold:.2f}" in rule and "never saturated" in rule


def test_every_registry_activation_has_a_health_rule():
    from chainrule.diagnostics import health_rule

    rules = {name: health_rule(name) for name in nn.ACTIVATIONS}
    assert rules["sigmoid"].startswith("saturated: |z| > 5.99") and rules["relu"].startswith("dead: z <= 0")
    assert rules["identity"] == rules["leaky_relu"] == "no saturated or dead rule for this activation"
    assert rules["elu"].startswith("dead: every probe sample puts the unit at z < -4.61")  # saturated at -1: dead


def test_one_definition_of_dead_and_saturated_units():
    """unit_health: dead = flat (|f'| < 1% of the peak) on every row, for the activations that can die;
    saturated = the share of flat (row, unit) pairs, for sigmoid and tanh. ELU below zero is not dead
    (the lab once counted it so) unless it is far enough below to have saturated at -1."""
    from chainrule.diagnostics import unit_health

    z = np.array([[-1.0, 2.0, -7.0], [-0.5, -1.0, -8.0]])
    assert unit_health("relu", z) == {"dead_fraction": pytest.approx(2 / 3), "saturated_fraction": None,
                                       "mean_derivative": pytest.approx(1 / 6)}
    assert unit_health("elu", z)["dead_fraction"] == pytest.approx(1 / 3)  # only the unit at -7 and -8
    assert unit_health("elu", np.full((4, 2), -3.0))["dead_fraction"] == 0.0  # e^-3 = 0.05: alive
    tanh = unit_health("tanh", z)
    assert tanh["dead_fraction"] is None and tanh["saturated_fraction"] == pytest.approx(2 / 6)
    assert unit_health("leaky_relu", z)["dead_fraction"] is None and unit_health("identity", z)["mean_derivative"] is None
    with pytest.raises(cr.ChainruleError, match="unit_health needs a layer or an activation name"):
        unit_health("swish", z)


@pytest.mark.parametrize("activation, peak", [("sigmoid", 0.25), ("tanh", 1.0)])
def test_saturation_threshold_is_where_the_derivative_falls_to_one_percent_of_its_peak(activation, peak):
    z = saturation_threshold(activation)
    d = 0.25 * (1 - math.tanh(z / 2) ** 2) if activation == "sigmoid" else 1 - math.tanh(z) ** 2
    assert d == pytest.approx(0.01 * peak, rel=1e-9)
    assert z == pytest.approx({"sigmoid": 5.9864, "tanh": 2.9932}[activation], abs=1e-4)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_units_fed_large_inputs_report_saturation_near_one(digits, activation):
    X, _, y, _ = digits
    model = nn.MLP([64, 32, 10], activation=activation, generator=0)
    normal = Monitor(probe=(X[:128], y[:128]), loss_fn=F.cross_entropy).begin(model)
    assert normal.initial["layers"][0]["saturated_fraction"] < 0.05  # measured 0.0 for both
    model.linears[0].weight.data *= 1000.0  # pre-activations of hundreds: deep in the flat tails
    big = Monitor(probe=(X[:128], y[:128]), loss_fn=F.cross_entropy).begin(model)
    row = big.initial["layers"][0]
    assert row["saturated_fraction"] > 0.97  # measured 0.991 (sigmoid), 0.997 (tanh)
    assert row["mean_derivative"] < 0.01 * (0.25 if activation == "sigmoid" else 1.0)
    record = big.end_epoch()
    assert record["layers"][0]["saturated_fraction"] == row["saturated_fraction"]
    kinds = {w.kind: w for w in big.warnings()}
    assert "saturated_units" in kinds and kinds["saturated_units"].layers == [1]


# ---- the lesson's claim ------------------------------------------------------------------


def _deep_run(digits, activation, seed):
    X, _, y, _ = digits
    init = "he_normal" if activation == "relu" else None  # Xavier for the sigmoid
    model = nn.MLP([64] + [64] * 10 + [10], activation=activation, init=init, generator=seed)
    monitor = Monitor(probe=(X[:128], y[:128]))
    _fit(model, X, y, monitor, seed=seed)
    return monitor


@pytest.mark.parametrize("seed", [0, 1])
def test_ten_sigmoid_layers_vanish_where_relu_with_he_init_does_not(digits, seed):
    sig = _deep_run(digits, "sigmoid", seed)
    relu = _deep_run(digits, "relu", seed)
    r_sig = sig.records[0]["grad_norm_ratio"]  # layer 1's gradient norm / layer 11's
    r_relu = relu.records[0]["grad_norm_ratio"]
    assert r_sig < 1e-5  # measured 6.9e-7 to 7.7e-7 over seeds 0-3
    assert r_relu > 0.3  # measured 1.25 to 1.61
    assert r_relu / r_sig > 1e5  # measured about 2e6
    # before training, the backward signal already dies away through the sigmoids
    init_sig = sig.initial["layers"]
    init_relu = relu.initial["layers"]
    assert init_sig[0]["grad_var"] / init_sig[-1]["grad_var"] < 1e-10  # measured 6e-14 to 7e-14
    assert init_relu[0]["grad_var"] / init_relu[-1]["grad_var"] > 1e-2  # measured 0.07 to 0.27
    # and only the sigmoid network gets the vanishing-gradient warning
    vanishing = [w for w in sig.warnings() if w.kind == "vanishing_gradients"]
    assert len(vanishing) == 1
    assert "layer 1's gradient norm is" in vanishing[0].message and "of layer 11's" in vanishing[0].message
    assert "try ReLU, He initialization, skip connections (residual) or fewer layers" in vanishing[0].message
    assert vanishing[0].value < VANISHING_RATIO
    assert not [w for w in relu.warnings() if w.kind == "vanishing_gradients"]


# ---- agreement with PyTorch ------------------------------------------------------------


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_per_layer_gradient_norms_agree_with_pytorch(torch, digits, activation):
    X, _, y, _ = digits
    model = nn.MLP([64, 48, 32, 24, 10], activation=activation, generator=3, dtype="float64")
    ref = torch_copy(torch, model)
    xb, yb = X[:64].astype(np.float64), y[:64]
    monitor = Monitor(probe=(X[:128], y[:128]), loss_fn=F.cross_entropy).begin(model)
    loss = F.cross_entropy(model(leaf(xb)), leaf(yb))
    loss.backward()
    monitor.step(loss)  # no optimizer step: the gradients of these weights, on this batch
    record = monitor.end_epoch()
    tloss = torch.nn.functional.cross_entropy(ref(torch.tensor(xb)), torch.tensor(yb))
    tloss.backward()
    linears = [m for m in ref if isinstance(m, torch.nn.Linear)]
    assert len(record["layers"]) == len(linears) == 4
    for row, lin in zip(record["layers"], linears):
        assert row["grad_norm"] == pytest.approx(float(lin.weight.grad.norm()), rel=1e-10)
        assert row["grad_norm_bias"] == pytest.approx(float(lin.bias.grad.norm()), rel=1e-10)


def test_signal_propagation_agrees_with_pytorch(torch, digits):
    X, _, y, _ = digits
    model = nn.MLP([64, 40, 30, 10], activation="tanh", generator=1, dtype="float64")
    ref = torch_copy(torch, model)
    xb, yb = X[:100].astype(np.float64), y[:100]
    sp = signal_propagation(model, xb, F.cross_entropy, yb)
    h = torch.tensor(xb)
    zs, acts = [], []
    for m in ref:
        h = m(h)
        if isinstance(m, torch.nn.Linear):
            h.retain_grad()
            zs.append(h)
        else:
            acts.append(h)
    torch.nn.functional.cross_entropy(h, torch.tensor(yb)).backward()
    assert sp["input_var"] == pytest.approx(float(np.var(xb)), rel=1e-12)
    for i, row in enumerate(sp["layers"]):
        z = zs[i]
        a = acts[i] if i < len(acts) else z
        assert row["preact_var"] == pytest.approx(float(z.detach().var(unbiased=False)), rel=1e-10)
        assert row["activation_var"] == pytest.approx(float(a.detach().var(unbiased=False)), rel=1e-10)
        assert row["grad_var"] == pytest.approx(float(z.grad.var(unbiased=False)), rel=1e-9)
    assert all(p.grad is None for p in model.parameters())  # the model's gradients are left as they were


# ---- update ratios, monitor_every, the training it watches -----------------------------------


@pytest.mark.parametrize(
    "opt_name, measured",
    [
        ("sgd", [1, 2, 3, 4, 5, 6]),  # every step, from the gradient: lr ||grad||
        ("sgd_small_lr", [1, 2, 3, 4, 5, 6]),  # the weight norm kept from step 1 (updates of 0.1%)
        ("momentum", [1, 2, 3, 4, 5, 6]),  # every step, from the velocity: lr ||v||
        ("weight_decay", [1, 5]),  # the others: from a copy of the weights, every 4th step
        ("nesterov", [1, 5]),
        ("adam", [1, 5]),
    ],
)
def test_update_ratio_is_the_norm_of_the_step_over_the_norm_of_the_weights(digits, opt_name, measured):
    X, _, y, _ = digits
    model = nn.MLP([64, 32, 10], generator=0)
    opt = {
        "sgd": lambda p: optim.SGD(p, lr=0.1),
        "sgd_small_lr": lambda p: optim.SGD(p, lr=0.003),
        "momentum": lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
        "weight_decay": lambda p: optim.SGD(p, lr=0.1, weight_decay=0.1),
        "nesterov": lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
        "adam": lambda p: optim.Adam(p, lr=0.01),
    }[opt_name](model.parameters())
    monitor = Monitor(probe=X[:64]).begin(model, loss_fn=F.cross_entropy, optimizer=opt)
    got = []
    for i in range(6):
        before = [m.weight.data.copy() for m in model.linears]
        _one_step(model, opt, X[32 * i : 32 * i + 32], y[32 * i : 32 * i + 32], monitor)
        ratios = monitor.last_step["update_ratio"]
        if ratios[0] is not None:
            expected = [np.linalg.norm(m.weight.data - b) / np.linalg.norm(b) for m, b in zip(model.linears, before)]
            assert ratios == pytest.approx(expected, rel=0.011)  # the weight norm is exact to 1%
            assert all(0 < e < 0.2 for e in expected)
            if opt_name == "sgd_small_lr":
                assert max(expected) < 0.002
            got.append(i + 1)
    assert got == measured
    record = monitor.end_epoch()
    assert record["steps_monitored"] == 6 and all(row["update_ratio"] > 0 for row in record["layers"])


@pytest.mark.parametrize(
    "make_opt, with_update",
    [(lambda p: optim.SGD(p, lr=0.1, momentum=0.5), [1, 4, 7, 10]), (lambda p: optim.Adam(p, lr=0.01), [1, 7])],
)
def test_monitor_every_measures_every_nth_step_with_exact_update_ratios(digits, make_opt, with_update):
    X, _, y, _ = digits
    model = nn.MLP([64, 32, 10], generator=0)
    opt = make_opt(model.parameters())
    monitor = Monitor(probe=X[:64], monitor_every=3).begin(model, loss_fn=F.cross_entropy, optimizer=opt)
    monitored, updates = [], []
    for i in range(10):
        before = [m.weight.data.copy() for m in model.linears]
        _one_step(model, opt, X[32 * i : 32 * i + 32], y[32 * i : 32 * i + 32], monitor)
        if monitor.last_step["step"] == i + 1:
            monitored.append(i + 1)
            if monitor.last_step["update_ratio"][0] is not None:
                expected = [np.linalg.norm(m.weight.data - b) / np.linalg.norm(b) for m, b in zip(model.linears, before)]
                assert monitor.last_step["update_ratio"] == pytest.approx(expected, rel=0.011)
                updates.append(i + 1)
    assert monitored == [1, 4, 7, 10] and updates == with_update
    assert monitor.end_epoch()["steps_monitored"] == 4


@pytest.mark.parametrize("probe", [True, False])
def test_watching_does_not_change_training(digits, probe):
    X, Xv, y, yv = digits

    def train(callbacks):
        model = nn.MLP([64, 32, 32, 10], generator=5)
        hist = cr.fit(model, F.cross_entropy, optim.SGD(model.parameters(), lr=0.1, momentum=0.9), X[:512], y[:512],
                      epochs=2, validation=(Xv, yv), callbacks=callbacks, progress=False)
        return model, hist

    plain, h0 = train([])
    monitor = Monitor(probe=(X[:128], y[:128]) if probe else None, histograms=True)
    watched, h1 = train([monitor])
    for a, b in zip(plain.parameters(), watched.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    assert h0["val_loss"] == h1["val_loss"]
    assert all("forward" not in m.__dict__ for m in watched.modules())  # no hook left behind
    assert monitor.initial["probe_rows"] == (128 if probe else 32)  # without a probe: the first batch, before its step
    assert len(monitor.probe) == (128 if probe else 64)  # built from the first training batches when not given
    assert len(monitor.histograms) == 2 and "layer1/weight" in monitor.histograms[0]


def test_initial_state_without_probe_is_measured_with_the_weights_before_the_first_step(digits):
    X, _, y, _ = digits
    model = nn.MLP([64, 32, 10], activation="tanh", generator=2)
    expected = signal_propagation(model, X[:32], F.cross_entropy, y[:32])
    opt = optim.SGD(model.parameters(), lr=0.5)
    monitor = Monitor().begin(model, loss_fn=F.cross_entropy, optimizer=opt)
    loss = F.cross_entropy(model(leaf(X[:32])), leaf(y[:32]))
    opt.zero_grad()
    loss.backward()
    opt.step()
    monitor.step(loss, X[:32], y[:32])
    for got, want in zip(monitor.initial["layers"], expected["layers"]):
        assert got["grad_var"] == pytest.approx(want["grad_var"], rel=1e-5)
        assert got["activation_var"] == pytest.approx(want["activation_var"], rel=1e-5)


# ---- records, warnings and summaries ------------------------------------------------------


def test_records_are_plain_data_in_the_history_and_json(digits):
    X, Xv, y, yv = digits
    model = nn.MLP([64, 32, 10], activation="prelu", generator=0)
    monitor = Monitor(probe=(X[:128], y[:128]))
    hist = cr.fit(model, F.cross_entropy, optim.SGD(model.parameters(), lr=0.1), X[:320], y[:320], epochs=2,
                  validation=(Xv, yv), callbacks=[monitor], progress=False)
    text = json.dumps({"history": hist.to_dict(), "diagnostics": monitor.to_dict()}, allow_nan=False)
    back = json.loads(text)
    epochs = back["diagnostics"]["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2] and epochs[0]["steps_monitored"] == 10
    assert back["history"]["epochs"][1]["diagnostics"]["epoch"] == 2
    layer = epochs[-1]["layers"][0]
    for field in ("grad_norm", "grad_norm_bias", "update_ratio", "update_ratio_max", "preact_mean", "preact_std",
                  "saturated_fraction", "dead_fraction", "dead_fraction_epoch", "prelu_slope", "mean_derivative"):
        assert field in layer
    assert layer["layer"] == 1 and layer["name"] == "0" and layer["activation"] == "prelu"
    assert layer["saturated_fraction"] is None and layer["dead_fraction"] is None  # neither applies to PReLU
    assert 0.0 < layer["prelu_slope"] < 1.0 and layer["prelu_slope"] != 0.25  # learned, from 0.25
    assert epochs[-1]["layers"][-1]["activation"] == "none"


def test_find_layers_pairs_each_linear_with_the_activation_after_it():
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 6), nn.Linear(6, 3), nn.LeakyReLU(0.1), nn.Linear(3, 2))
    layers = find_layers(model)
    assert [(l.index, l.name, l.activation) for l in layers] == [
        (1, "0", "tanh"), (2, "2", "none"), (3, "3", "leaky_relu"), (4, "5", "none")]
    with pytest.raises(cr.ChainruleError, match="has none"):
        find_layers(nn.Sequential(nn.ReLU()))


def test_large_learning_rate_warns_of_large_updates(digits):
    X, _, y, _ = digits
    model = nn.MLP([64, 32, 32, 10], generator=0)
    monitor = Monitor(probe=X[:128])
    _fit(model, X[:640], y[:640], monitor, lr=3.0)
    large = [w for w in monitor.warnings() if w.kind == "large_updates"]
    assert len(large) == 1
    assert large[0].value > advice.LARGE_UPDATE_RATIO
    assert "the learning rate is likely too large" in large[0].message


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_divergence_is_explained_with_the_step_and_a_hint(digits):
    X, _, y, _ = digits
    model = nn.MLP([64, 32, 1], generator=0)
    monitor = Monitor(probe=X[:128])
    with pytest.raises(cr.DivergenceError) as err:
        cr.fit(model, "mse", optim.SGD(model.parameters(), lr=3.0), X, y.astype(np.float32), epochs=2,
               callbacks=[monitor], progress=False)
    w = monitor.divergence(err.value)
    assert isinstance(w, HealthWarning) and w.kind == "nonfinite_loss"
    step = monitor.steps + 1
    assert f"at step {step}" in str(err.value) and f"at step {step} (epoch 1)" in w.message
    assert "the learning rate is too large" in w.message
    assert monitor.records[-1]["partial"] is True and monitor.records[-1]["steps_monitored"] == monitor.steps
    assert sum(bool(r.get("partial")) for r in monitor.records) == 1  # fit's on_divergence and ours: one record
    assert [x.kind for x in monitor.warnings()].count("nonfinite_loss") == 1 and monitor.divergence() is w
    json.dumps(monitor.to_dict(), allow_nan=False)


def test_nonfinite_loss_in_a_hand_written_loop_is_recorded(digits):
    X, _, y, _ = digits
    model = nn.MLP([64, 8, 10], generator=0)
    monitor = Monitor(probe=X[:16]).begin(model, loss_fn=F.cross_entropy)
    monitor.step(float("nan"))
    assert [w.kind for w in monitor.warnings()] == ["nonfinite_loss"]


@pytest.mark.parametrize(
    "ratio, kind",
    [(1e-4, "vanishing_gradients"), (5e3, "exploding_gradients"), (1e-2, None), (1e2, None)],
)
def test_gradient_ratio_thresholds(ratio, kind):
    rows = [{"layer": i, "activation": a, "grad_norm": g} for i, a, g in ((1, "tanh", ratio), (2, "tanh", 1.0), (3, "none", 1.0))]
    record = {"epoch": 1, "grad_norm_ratio": ratio, "layers": rows}
    found = advice.check_record(record)
    assert [w.kind for w in found] == ([kind] if kind else [])


def test_gradient_growth_over_epochs_warns_of_explosion():
    first = {"epoch": 1, "grad_norm_ratio": 1.0, "layers": [{"layer": 1, "activation": "relu", "grad_norm": 0.1}]}
    later = {"epoch": 5, "grad_norm_ratio": 1.0, "layers": [{"layer": 1, "activation": "relu", "grad_norm": 500.0}]}
    found = advice.check_record(later, first)
    assert [w.kind for w in found] == ["exploding_gradients"]
    assert "grew up to 5e+03x since epoch 1" in found[0].message


def test_health_table_text_and_summary(digits):
    sig = _deep_run(digits, "sigmoid", 0)
    summary = health_summary(sig)
    assert summary["healthy"] is False and summary["epoch"] == 1
    assert len(summary["layers"]) == 11
    assert summary["layers"][0]["status"] == ["vanishing gradients"] and summary["layers"][1]["status"] == ["ok"]
    text = health_text(sig)
    assert "vanishing gradients" in text and text.count("\n") >= 13
    assert health_summary(json.loads(json.dumps(sig.to_dict())))["layers"] == summary["layers"]  # from metrics.json too
    table = health_table(sig)
    assert table.row_count == 11 and len(table.columns) == 9


def test_plots_are_written_as_png(digits, tmp_path):
    from chainrule.report.diagnostics_plots import write_diagnostic_plots

    X, _, y, _ = digits
    model = nn.MLP([64, 16, 16, 10], activation="sigmoid", generator=0)
    monitor = Monitor(probe=(X[:64], y[:64]))
    _fit(model, X[:128], y[:128], monitor, epochs=2)
    paths = write_diagnostic_plots(monitor.to_dict(), tmp_path)
    assert sorted(p.name for p in paths) == ["gradient_norms.png", "signal_propagation.png", "unit_health.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def _read_events(path):
    """(tag, step, value) of every scalar in a TensorBoard event file (TFRecord framing)."""
    from tensorboardX.proto import event_pb2

    out = []
    data = open(path, "rb").read()
    i = 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i : i + 8])
        event = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
        i += 12 + n + 4
        for v in event.summary.value:
            if v.HasField("simple_value"):
                out.append((v.tag, event.step, v.simple_value))
            elif v.HasField("histo"):
                out.append((v.tag, event.step, v.histo.num))
    return out


def test_tensorboard_files_hold_the_same_scalars(digits, tmp_path):
    pytest.importorskip("tensorboardX")
    X, _, y, _ = digits
    model = nn.MLP([64, 16, 10], generator=0)
    monitor = Monitor(probe=(X[:64], y[:64]), histograms=True)
    hist = _fit(model, X[:128], y[:128], monitor, epochs=2)
    path = write_tensorboard(monitor, tmp_path / "tb", histories=hist.history)
    events = {(tag, step): value for tag, step, value in _read_events(path)}
    for record in monitor.records:
        for row in record["layers"]:
            got = events[(f"diagnostics/grad_norm/layer{row['layer']}", record["epoch"])]
            assert got == pytest.approx(row["grad_norm"], rel=1e-6)
    assert events[("training/loss", 2)] == pytest.approx(hist["loss"][1], rel=1e-6)
    assert events[("histograms/layer1/weight", 1)] == 64 * 16


def test_importing_diagnostics_loads_no_tool_library():
    code = (
        "import sys, chainrule.diagnostics; "
        "print([m for m in ('matplotlib', 'rich', 'tensorboardX', 'torch', 'sklearn') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bad_arguments_are_refused_with_what_was_received():
    with pytest.raises(cr.ChainruleError, match="monitor_every"):
        Monitor(monitor_every=0)
    with pytest.raises(cr.ChainruleError, match="probe has 4 rows but probe_targets has 3"):
        Monitor(probe=np.zeros((4, 2)), probe_targets=np.zeros(3))
    with pytest.raises(cr.ChainruleError, match="before begin"):
        Monitor().step(1.0)


# ---- residual blocks and normalization ----------------------------------------------------


def test_find_layers_knows_blocks_and_normalization():
    model = nn.MLP([6, 8, 8, 3], activation="relu", residual=True, norm="batch", dropout=0.1, generator=0)
    layers = find_layers(model)
    assert [(l.name, l.activation, l.norm, l.block) for l in layers] == [
        ("0.0", "relu", "batch", None), ("1.block.0", "relu", "batch", "1"), ("2", "none", None, None)]
    assert layers[1].preact_module is model[1].block[1] and layers[1].unit_bias is model[1].block[1].bias
    assert layers[2].preact_module is layers[2].linear and layers[2].unit_bias is layers[2].linear.bias
    assert layers[1].describe() == {"layer": 2, "name": "1.block.0", "activation": "relu", "norm": "batch", "block": "1"}


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_a_normalized_layer_is_not_called_saturated_for_its_raw_preactivations(digits, activation):
    X, _, y, _ = digits
    model = nn.MLP([64, 32, 10], activation=activation, norm="layer", generator=0)
    model.linears[0].weight.data *= 1000.0  # raw Linear outputs of hundreds, as in the test above
    monitor = Monitor(probe=(X[:128], y[:128]), loss_fn=F.cross_entropy).begin(model)
    row = monitor.initial["layers"][0]
    # what the activation receives is normalized: mean 0, standard deviation 1 per sample
    assert abs(row["preact_mean"]) < 1e-3 and abs(row["preact_std"] - 1) < 1e-2
    assert row["saturated_fraction"] < 0.05  # measured 0.0: |z| > 2.99 or 5.99 is rare in N(0, 1)
    monitor.end_epoch()
    assert "saturated_units" not in {w.kind for w in monitor.warnings()}


def test_batch_norm_statistics_are_in_the_records_and_the_health_table(digits):
    X, _, y, _ = digits
    model = nn.MLP([64, 32, 32, 10], activation="relu", norm="batch", generator=0)
    monitor = Monitor(probe=(X[:128], y[:128]))
    _fit(model, X[:512], y[:512], monitor, lr=0.05)
    rows = monitor.records[-1]["layers"]
    bn = model[1]
    assert rows[0]["bn_running_var"] == pytest.approx(float(bn.running_var.data.mean()))
    assert rows[0]["bn_running_var_range"] == pytest.approx([float(bn.running_var.data.min()), float(bn.running_var.data.max())])
    assert rows[0]["bn_running_mean"] == pytest.approx(float(bn.running_mean.data.mean()))
    assert rows[-1]["bn_running_var"] is None  # the output layer has no normalization
    text = health_text(monitor)
    assert "BN var" in text and "BN + relu" in text
    health_table(monitor)  # renders with the extra column
    plain = Monitor(probe=(X[:128], y[:128]))
    _fit(nn.MLP([64, 32, 10], generator=0), X[:256], y[:256], plain)
    assert "BN var" not in health_text(plain)  # the column appears only where there is batch norm


def test_skip_connections_keep_the_gradient_ratio_near_one(digits):
    from chainrule.diagnostics import gradient_ratio

    X, _, y, _ = digits
    ratios = {}
    for residual in (False, True):
        model = nn.MLP([64] + [64] * 20 + [10], activation="sigmoid", residual=residual, generator=0)
        ratios[residual] = gradient_ratio(signal_propagation(model, X[:256], F.cross_entropy, y[:256])["layers"])
    # measured: 9e-13 plain, 1.2 with skips
    assert ratios[False] < 1e-9 and 0.5 < ratios[True] < 2
    assert gradient_ratio([{"activation_grad_var": None}]) is None


def test_the_dashboards_unit_health_runs_the_whole_model_in_eval_mode(digits):
    from chainrule.dashboard.views import layer_health
    from chainrule.diagnostics.layers import layer_outputs

    X, _, _, _ = digits
    model = nn.MLP([64, 16, 16, 10], activation="relu", residual=True, norm="batch", dropout=0.5, generator=0)
    model(cr.tensor(X[:64]))  # training mode: running statistics move once
    layers = find_layers(model)
    before = [a.copy() for a in model.state_dict().values()]
    health = layer_health(model, layers, X[:128])
    assert model.training and all(np.array_equal(a, b) for a, b in zip(before, model.state_dict().values()))
    model.eval()
    z = np.asarray(layer_outputs(model, layers, X[:128])[1][0], dtype=np.float64)
    assert health["dead_fraction"][1] == pytest.approx(float(np.mean(np.all(z <= 0, axis=0))), abs=1e-4)
