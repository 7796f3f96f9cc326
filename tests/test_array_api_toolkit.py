"""The toolkit on a device that is not NumPy: modules, optimizers, fit, diagnostics and model files
on array-api-strict arrays (a stand-in GPU that refuses every NumPy call), each against the NumPy run."""

import numpy as np
import pytest
from conftest import from_strict, rel_err, to_strict

import chainrule as cr
from chainrule import nn, optim, train
from chainrule.checkpoint import load_checkpoint, restore_optimizer, save_checkpoint
from chainrule.metrics import EpochSums, task_metrics
from chainrule.diagnostics import Monitor

TOL = {"float32": 1e-6, "float64": 1e-12}

OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.1),
    "sgd_weight_decay": lambda ps: optim.SGD(ps, lr=0.1, weight_decay=0.01),
    "momentum": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
    "nesterov": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "dampening": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.5),
    "adam": lambda ps: optim.Adam(ps, lr=0.01),
    "adam_l2": lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.01),
    "adamw": lambda ps: optim.AdamW(ps, lr=0.01),
}


def _is_strict(a, strict):
    xp, dev = strict
    return type(a).__module__.startswith("array_api_strict") and a.device == dev


def _pair(strict, sizes=(6, 8, 3), activation="tanh", dtype="float32"):
    """The same MLP twice: on NumPy, and moved to the stand-in device."""
    xp, dev = strict
    host = nn.MLP(list(sizes), activation=activation, generator=0, dtype=dtype)
    device = nn.MLP(list(sizes), activation=activation, generator=0, dtype=dtype).to(dev, xp=xp)
    return host, device


def _weights(model):
    return [from_strict(p.data) for p in model.parameters()]


def _assert_same_weights(a, b, tol):
    for wa, wb in zip(_weights(a), _weights(b)):
        assert rel_err(wa, wb) <= tol


def _data(n=48, features=6, classes=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype(np.float32), rng.integers(0, classes, n)


# ---- modules -------------------------------------------------------------------------


def test_module_to_moves_every_parameter_and_back(strict):
    xp, dev = strict
    model = nn.Sequential(nn.Linear(4, 5, generator=0), nn.PReLU(5), nn.Linear(5, 2, generator=1))
    before = [p.data.copy() for p in model.parameters()]
    model.to(dev, xp=xp)
    assert all(_is_strict(p.data, strict) and p.grad is None for p in model.parameters())
    model.to(dtype="float64")
    assert all(p.data.dtype == xp.float64 and _is_strict(p.data, strict) for p in model.parameters())
    model.to("cpu").float()
    for p, b in zip(model.parameters(), before):
        assert type(p.data) is np.ndarray and p.data.dtype == np.float32
        np.testing.assert_array_equal(p.data, b)


def test_load_state_dict_copies_into_the_parameters_device(strict):
    host, device = _pair(strict)
    for p in device.parameters():
        p.data *= 0.0
    device.load_state_dict(host.state_dict())
    assert all(_is_strict(p.data, strict) for p in device.parameters())
    _assert_same_weights(device, host, 0.0)
    next(iter(device.parameters())).data += 1.0  # a copy: the NumPy model is untouched
    assert rel_err(_weights(device)[0], host.parameters()[0].data + 1.0) == 0.0
    host.load_state_dict(device.state_dict())  # and back, from the device to NumPy
    assert type(host.parameters()[0].data) is np.ndarray
    _assert_same_weights(host, device, 0.0)


@pytest.mark.parametrize("init", ["normal_", "uniform_", "xavier_uniform_", "xavier_normal_", "he_uniform_", "he_normal_"])
def test_initializers_draw_the_same_weights_on_every_device(strict, init):
    xp, dev = strict
    host, device = nn.Linear(7, 5, generator=0), nn.Linear(7, 5, generator=0).to(dev, xp=xp)
    getattr(nn.init, init)(host.weight, generator=3)
    getattr(nn.init, init)(device.weight, generator=3)
    nn.init.constant_(device.bias, 0.5)
    assert _is_strict(device.weight.data, strict) and _is_strict(device.bias.data, strict)
    np.testing.assert_array_equal(from_strict(device.weight.data), host.weight.data)
    np.testing.assert_array_equal(from_strict(device.bias.data), np.full(5, 0.5, np.float32))


# ---- optimizers (gradients set by hand: no primitive runs) ---------------------------------


def _grads(model, steps, seed=2):
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=p.data.shape).astype(from_strict(p.data).dtype) for p in model.parameters()] for _ in range(steps)]


def _run(opt, model, grads, strict=None):
    for step in grads:
        for p, g in zip(model.parameters(), step):
            p.grad = g if strict is None else to_strict(strict, g)
        opt.step()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_steps_on_the_device_equal_numpy(strict, name, dtype):
    host, device = _pair(strict, dtype=dtype)
    grads = _grads(host, 5)
    _run(OPTIMIZERS[name](host.parameters()), host, grads)
    _run(OPTIMIZERS[name](device.parameters()), device, grads, strict)
    assert all(_is_strict(p.data, strict) for p in device.parameters())
    _assert_same_weights(device, host, TOL[dtype])


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_optimizer_state_dict_round_trip_on_the_device(strict, name):
    host, device = _pair(strict)
    grads = _grads(host, 5)
    opt = OPTIMIZERS[name](device.parameters())
    _run(opt, device, grads[:3], strict)
    state = opt.state_dict()
    buffers = [b for arrays in state["buffers"].values() for b in arrays]
    assert buffers and all(type(b) is np.ndarray for b in buffers)  # host copies, ready for a file
    _, again = _pair(strict)
    again.load_state_dict(device.state_dict())
    opt2 = OPTIMIZERS[name](again.parameters())
    opt2.load_state_dict(state)
    assert all(_is_strict(b, strict) for arrays in opt2._buffers().values() for b in arrays)
    _run(opt, device, grads[3:], strict)
    _run(opt2, again, grads[3:], strict)
    _assert_same_weights(again, device, 0.0)


# ---- model files and checkpoints -----------------------------------------------------------


def test_save_of_a_device_model_loads_on_the_cpu(strict, tmp_path):
    host, device = _pair(strict, activation="prelu")
    _run(optim.SGD(device.parameters(), lr=0.1), device, _grads(host, 1), strict)
    cr.save(device, tmp_path / "m.safetensors")
    for loaded in (cr.load(tmp_path / "m.safetensors"), cr.load(tmp_path / "m.safetensors", device="cpu")):
        assert all(type(p.data) is np.ndarray for p in loaded.parameters())
        _assert_same_weights(loaded, device, 0.0)


def test_checkpoint_of_a_device_run_restores_onto_the_device(strict, tmp_path):
    xp, dev = strict
    host, device = _pair(strict)
    opt = optim.Adam(device.parameters(), lr=0.01)
    _run(opt, device, _grads(host, 2), strict)
    sums = EpochSums("regression")
    sums.add(to_strict(strict, np.ones((4, 3), np.float32)), np.zeros((4, 3), np.float32), loss=1.5)  # device outputs, host targets
    path = save_checkpoint(
        tmp_path / "ck.safetensors", device, opt, config={"seed": 0}, epoch=0, batch=1, step=2, history=[], epoch_sums=sums
    )
    ck = load_checkpoint(path)
    _assert_same_weights(ck.model, device, 0.0)
    assert ck.epoch_sums.result() == {"loss": 1.5, "mse": 1.0}
    model = ck.model.to(dev, xp=xp)
    opt2 = optim.Adam(model.parameters(), lr=0.01)
    restore_optimizer(opt2, ck)
    assert opt2.steps == 2 and all(_is_strict(m, strict) for m in opt2.m)
    for a, b in zip(opt2.m + opt2.v, opt.m + opt.v):
        np.testing.assert_array_equal(from_strict(a), from_strict(b))


# ---- the fit loop, evaluation, prediction and the diagnostics (through the primitives) ------


@pytest.mark.parametrize("whole_data_on_device", [True, False])
def test_fit_on_the_device_equals_numpy(strict, monkeypatch, whole_data_on_device):
    if not whole_data_on_device:  # each batch gathered on the host, then copied
        monkeypatch.setattr(train, "DEVICE_DATA_BYTES", 0)
    X, y = _data()
    Xv, yv = _data(20, seed=5)
    host, device = _pair(strict)
    runs = []
    for model in (host, device):
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        runs.append(cr.fit(model, "cross_entropy", opt, X, y, epochs=2, batch_size=16, validation=(Xv, yv), progress=False))
    assert all(_is_strict(p.data, strict) for p in device.parameters())
    for key, values in runs[0].history.items():
        assert rel_err(runs[1].history[key], values) <= 1e-6, key
    _assert_same_weights(device, host, 1e-6)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_divergence_is_caught_on_the_device_at_the_numpy_run_s_step(strict):
    xp, dev = strict
    X = np.random.default_rng(0).standard_normal((32, 3)).astype(np.float32) * 100
    messages = []
    for model in (nn.MLP([3, 1], generator=0), nn.MLP([3, 1], generator=0).to(dev, xp=xp)):
        with pytest.raises(cr.DivergenceError) as info:
            cr.fit(model, "mse", optim.SGD(model.parameters(), lr=10.0), X, X[:, 0], epochs=50, batch_size=8, progress=False)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


@pytest.mark.parametrize("task", ["multiclass", "multilabel", "regression"])
def test_epoch_sums_of_device_batches_equal_the_metrics_of_all_outputs(strict, task):
    rng = np.random.default_rng(0)
    out = rng.standard_normal((10, 3)).astype(np.float32)
    y = {"multiclass": rng.integers(0, 3, 10), "multilabel": (rng.random((10, 3)) > 0.5).astype(np.float32),
         "regression": rng.standard_normal((10, 3)).astype(np.float32)}[task]
    sums = EpochSums(task)
    for rows in (slice(0, 4), slice(4, 8), slice(8, 10)):  # a device's batches, summed on the host
        sums.add(to_strict(strict, out[rows]), y[rows], loss=1.0)
    whole = task_metrics(task, out, y)
    assert sums.result() == pytest.approx({"loss": 1.0, **whole}, rel=1e-6)


def test_evaluate_and_predict_on_the_device(strict):
    X, y = _data(30)
    host, device = _pair(strict, dtype="float64")
    out = cr.predict(device, X, batch_size=8)
    assert type(out) is np.ndarray and out.dtype == np.float64
    assert rel_err(out, cr.predict(host, X, batch_size=8)) <= 1e-12
    a, b = cr.evaluate(device, "cross_entropy", X, y, batch_size=8), cr.evaluate(host, "cross_entropy", X, y, batch_size=8)
    assert a.keys() == b.keys() and all(rel_err(a[k], b[k]) <= 1e-12 for k in a)


@pytest.mark.parametrize("activation, make_opt, probe", [("relu", "momentum", True), ("sigmoid", "adam", False)])
def test_monitor_on_the_device_measures_what_it_does_on_numpy(strict, activation, make_opt, probe):
    X, y = _data(32)
    host, device = _pair(strict, sizes=(6, 8, 8, 3), activation=activation)
    records = []
    for model in (host, device):
        monitor = Monitor(probe=(X[:16], y[:16])) if probe else Monitor(probe_size=12)  # else: from the batches
        cr.fit(model, "cross_entropy", OPTIMIZERS[make_opt](model.parameters()), X, y, epochs=2, batch_size=8, callbacks=[monitor], progress=False)
        records.append([monitor.initial, *monitor.records])  # the signal propagation, then each epoch
    for rec_host, rec_device in zip(*records):
        for row_h, row_d in zip(rec_host["layers"], rec_device["layers"]):
            for key, value in row_h.items():
                if isinstance(value, float):
                    assert rel_err(row_d[key], value) <= 1e-5, (key, row_d[key], value)
                else:
                    assert row_d[key] == value, key


def test_cross_entropy_refuses_out_of_range_classes_on_the_device(strict):
    from chainrule import functional as F
    from chainrule.errors import DataError

    logits = cr.tensor(to_strict(strict, np.zeros((3, 4), np.float32)))
    for bad, shown in (([0, 4, 1], "from 0 to 4"), ([0, -1, 3], "from -1 to 3")):
        with pytest.raises(DataError, match=rf"class targets must lie in \[0, 3\], got values {shown}"):
            F.cross_entropy(logits, cr.tensor(to_strict(strict, np.array(bad))))
    ok = F.cross_entropy(logits, cr.tensor(to_strict(strict, np.array([0, 3, 1]))))
    assert abs(float(from_strict(ok.data)) - np.log(4)) < 1e-6


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_residual_normalized_dropout_network_on_the_device_equals_numpy(strict, norm, tmp_path):
    """The new layers compute in the device's namespace: buffers move with the model, the dropout
    masks (drawn on the host) are the same, and fit, predict and model files agree with NumPy."""
    xp, dev = strict
    X, y = _data()
    models = [nn.MLP([6, 8, 8, 3], residual=True, norm=norm, dropout=0.2, generator=0) for _ in range(2)]
    host, device = models[0], models[1].to(dev, xp=xp)
    assert all(_is_strict(b.data, strict) for _, b in device.named_buffers())
    for model in (host, device):
        cr.fit(model, "cross_entropy", optim.Adam(model.parameters(), lr=0.01), X, y, epochs=2, batch_size=16, progress=False)
    _assert_same_weights(device, host, 1e-5)
    for (name, a), (_, b) in zip(host.named_buffers(), device.named_buffers()):
        assert rel_err(from_strict(b.data), a.data) <= 1e-5, name
    assert rel_err(cr.predict(device, X), cr.predict(host, X)) <= 1e-5
    again = cr.load(cr.save(device, tmp_path / "m.safetensors"))
    assert rel_err(cr.predict(again, X), cr.predict(host, X)) <= 1e-5
