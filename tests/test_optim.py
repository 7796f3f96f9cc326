"""Optimizers: a 4-layer MLP trained 20 steps from identical weights on identical batches equals
PyTorch's parameters within 1e-8 (float64) for every optimizer setting."""

import math

import numpy as np
import pytest

import chainrule as cr
from chainrule import functional as F
from chainrule import nn, optim
from chainrule.train_step import training_step
from conftest import from_strict, to_strict, torch_copy

SIZES = [6, 8, 8, 8, 3]


CASES = {
    "sgd": (lambda p: optim.SGD(p, lr=0.1), lambda t, p: t.optim.SGD(p, lr=0.1)),
    "momentum": (lambda p: optim.SGD(p, lr=0.05, momentum=0.9), lambda t, p: t.optim.SGD(p, lr=0.05, momentum=0.9)),
    "nesterov": (lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True), lambda t, p: t.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    "weight_decay": (lambda p: optim.SGD(p, lr=0.05, momentum=0.5, weight_decay=0.01), lambda t, p: t.optim.SGD(p, lr=0.05, momentum=0.5, weight_decay=0.01)),
    "dampening": (lambda p: optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.3), lambda t, p: t.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.3)),
    "adam": (lambda p: optim.Adam(p, lr=0.01), lambda t, p: t.optim.Adam(p, lr=0.01)),
    "adam_l2": (lambda p: optim.Adam(p, lr=0.01, weight_decay=0.05), lambda t, p: t.optim.Adam(p, lr=0.01, weight_decay=0.05)),
    "adamw": (lambda p: optim.AdamW(p, lr=0.01, weight_decay=0.05), lambda t, p: t.optim.AdamW(p, lr=0.01, weight_decay=0.05)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_twenty_steps_equal_pytorch(torch, name):
    make, make_t = CASES[name]
    model = nn.MLP(SIZES, activation="tanh", generator=0, dtype="float64")
    tmodel = torch_copy(torch, model)
    opt, topt = make(model.parameters()), make_t(torch, tmodel.parameters())
    rng = np.random.default_rng(1)
    for step in range(20):
        x = rng.standard_normal((16, SIZES[0]))
        y = rng.integers(0, SIZES[-1], 16)
        opt.zero_grad()
        F.cross_entropy(model(cr.tensor(x, dtype="float64")), y).backward()
        opt.step()
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tmodel(torch.tensor(x)), torch.tensor(y)).backward()
        topt.step()
    tl = [m for m in tmodel if isinstance(m, torch.nn.Linear)]
    for ours, theirs in zip(model.linears, tl):
        assert np.abs(ours.weight.data - theirs.weight.detach().numpy().T).max() <= 1e-8
        assert np.abs(ours.bias.data - theirs.bias.detach().numpy()).max() <= 1e-8
    # the parameters did move
    assert np.abs(model.linears[0].weight.data - nn.MLP(SIZES, activation="tanh", generator=0, dtype="float64").linears[0].weight.data).max() > 1e-3


def test_updates_are_in_place_and_keep_float32():
    model = nn.MLP([4, 3, 2], generator=0)
    w = model.linears[0].weight
    before = w.data
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    F.cross_entropy(model(cr.ones(5, 4)), np.array([0, 1, 0, 1, 1])).backward()
    opt.step()
    assert w.data is before and w.data.dtype == np.float32


def test_schedules():
    p = nn.Parameter([1.0])
    opt = optim.SGD([p], lr=1.0)
    s = optim.StepLR(opt, step_size=2, gamma=0.5)
    assert [s.step() for _ in range(4)] == [1.0, 0.5, 0.5, 0.25]
    opt2 = optim.SGD([p], lr=1.0)
    c = optim.CosineAnnealingLR(opt2, T_max=4, eta_min=0.0)
    lrs = [c.step() for _ in range(4)]
    assert abs(lrs[1] - 0.5) < 1e-12 and abs(lrs[3]) < 1e-12 and abs(lrs[0] - (1 + math.cos(math.pi / 4)) / 2) < 1e-12


def test_bad_hyperparameters_are_refused():
    p = [nn.Parameter([1.0])]
    for lr in (0, -1, float("nan"), "x"):
        with pytest.raises(cr.DataError, match="lr"):
            optim.SGD(p, lr=lr)
    with pytest.raises(cr.ChainruleError, match="nesterov"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(cr.ChainruleError, match="empty"):
        optim.Adam([])


def test_optimizer_state_roundtrip():
    model = nn.MLP([4, 3, 2], generator=0)
    opt = optim.Adam(model.parameters(), lr=0.01)
    F.cross_entropy(model(cr.ones(5, 4)), np.array([0, 1, 0, 1, 1])).backward()
    opt.step()
    state = opt.state_dict()
    other = optim.Adam(model.parameters(), lr=0.5)
    other.load_state_dict(state)
    assert other.steps == 1 and other.lr == 0.01
    np.testing.assert_array_equal(other.m[0], opt.m[0])


# ---- the update, whole and block by block: bit-identical to the plain expressions ------------

VARIANTS = {
    "sgd": dict(cls=optim.SGD, lr=0.1),
    "sgd-wd": dict(cls=optim.SGD, lr=0.1, weight_decay=0.01),
    "momentum": dict(cls=optim.SGD, lr=0.05, momentum=0.9),
    "momentum-wd-dampening": dict(cls=optim.SGD, lr=0.05, momentum=0.9, weight_decay=0.01, dampening=0.3),
    "nesterov": dict(cls=optim.SGD, lr=0.05, momentum=0.9, nesterov=True),
    "nesterov-wd": dict(cls=optim.SGD, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": dict(cls=optim.Adam, lr=0.01),
    "adam-l2": dict(cls=optim.Adam, lr=0.01, weight_decay=0.05),
    "adamw": dict(cls=optim.AdamW, lr=0.01, weight_decay=0.05),
}
# (300, 700): 210,000 elements, past optim.optimizer.BLOCKED_BYTES in both dtypes (with its
# gradient: 1.6 MiB in float32, without state) and not a
# whole number of blocks (a short last block); (7, 5): updated whole
SHAPES = {"large": (300, 700), "small": (7, 5)}


def _make(name, params):
    settings = dict(VARIANTS[name])
    return settings.pop("cls")(params, **settings)


def _reference_steps(settings, w, grads):
    """The update as plain NumPy expressions (each step's numbers in the parameter's dtype, as the
    optimizers use them): the parameter and the state after each step."""
    cls, s = settings["cls"], {k: v for k, v in settings.items() if k != "cls"}
    typed = lambda x: np.array(x, dtype=w.dtype)  # noqa: E731
    lr, wd = s["lr"], s.get("weight_decay", 0.0 if cls is optim.SGD else (0.01 if cls is optim.AdamW else 0.0))
    out, v, m = [], None, None
    for t, g in enumerate(grads, start=1):
        if cls is optim.SGD:
            mom = s.get("momentum", 0.0)
            if wd:
                g = g + typed(wd) * w
            if mom:
                v = g.copy() if v is None else v * typed(mom) + typed(1 - s.get("dampening", 0.0)) * g
                g = g + typed(mom) * v if s.get("nesterov") else v
            w = w - typed(lr) * g
            out.append((w, () if v is None else (v,)))
        else:
            b1, b2, eps = 0.9, 0.999, 1e-8
            if m is None:
                m, v = np.zeros_like(w), np.zeros_like(w)
            if wd and cls is optim.AdamW:
                w = w * typed(1 - lr * wd)
            elif wd:
                g = g + typed(wd) * w
            m = m * typed(b1) + typed(1 - b1) * g
            v = v * typed(b2) + typed(1 - b2) * (g * g)
            w = w - typed(lr / (1 - b1**t)) * m / (np.sqrt(v) / typed(math.sqrt(1 - b2**t)) + typed(eps))
            out.append((w, (m, v)))
    return out


def _same_bits(a, b):
    return a.dtype == b.dtype and np.array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_the_update_is_bit_identical_to_the_plain_expressions(name, dtype):
    settings = VARIANTS[name]
    rng = np.random.default_rng(3)
    params, grads = {}, {}
    for key, shape in SHAPES.items():
        params[key] = nn.Parameter(rng.standard_normal(shape).astype(dtype), dtype=dtype)
        grads[key] = [rng.standard_normal(shape).astype(dtype) for _ in range(3)]
        grads[key][0].flat[:4] = [0.0, -0.0, 1e18, -1e-30]  # signed zeros and extremes keep their bits
    start = {k: p.data.copy() for k, p in params.items()}
    idle = nn.Parameter(np.ones(3, dtype), dtype=dtype)  # no gradient: left alone
    opt = _make(name, list(params.values()) + [idle])
    expected = {k: _reference_steps(settings, start[k], grads[k]) for k in params}
    for t in range(3):
        for key, p in params.items():
            p.grad = grads[key][t].copy()
        opt.step()
        for i, (key, p) in enumerate(params.items()):
            w, state = expected[key][t]
            assert _same_bits(p.data, w), (key, t)
            for name_, buffers in opt.buffers().items():
                assert _same_bits(buffers[i], state[list(opt.buffers()).index(name_)]), (key, name_, t)
    assert np.array_equal(idle.data, np.ones(3, dtype))
    assert opt._scratch is not None  # the large parameter went block by block


@pytest.mark.parametrize("name", list(VARIANTS))
def test_another_namespace_gets_the_same_bits(strict, name):
    """The update written once runs on array-api-strict through operators (no ``out=`` there),
    large parameters whole: the bits equal NumPy's."""
    rng = np.random.default_rng(4)
    data = [rng.standard_normal(s).astype(np.float32) for s in SHAPES.values()]
    grads = [[rng.standard_normal(d.shape).astype(np.float32) for d in data] for _ in range(3)]
    host = [nn.Parameter(d.copy()) for d in data]
    device = [nn.Parameter(to_strict(strict, d)) for d in data]
    opt_host, opt_device = _make(name, host), _make(name, device)
    for gs in grads:
        for p, q, g in zip(host, device, gs):
            p.grad, q.grad = g, to_strict(strict, g)
        opt_host.step()
        opt_device.step()
    for p, q in zip(host, device):
        assert _same_bits(p.data, from_strict(q.data))
    assert opt_device._scratch is None


def test_small_parameters_are_updated_whole():
    p = nn.Parameter(np.ones((64, 64), np.float32))  # 16 KiB
    opt = optim.Adam([p], lr=0.1)
    p.grad = np.ones_like(p.data)
    opt.step()
    assert opt._scratch is None and np.all(p.data < 1)


@pytest.mark.parametrize("layout", ["F", "strided"])
def test_other_layouts_are_updated_right(layout):
    """Arrays that share a Fortran layout go by blocks too (flattened in that order); a strided
    view, or a gradient of another layout, is updated whole."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((700, 300)).astype(np.float32).T  # F-contiguous
    g = rng.standard_normal((700, 300)).astype(np.float32).T
    if layout == "strided":
        data, g = rng.standard_normal((300, 1400)).astype(np.float32)[:, ::2], np.ascontiguousarray(g)
    p = nn.Parameter(data)
    assert p.data is data  # (kept as given, layout included)
    expected = data - np.float32(0.1) * g
    expected = expected - np.float32(0.1) * (g * np.float32(0.9) + np.float32(1.0) * g)
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    for _ in range(2):
        p.grad = g
        opt.step()
    assert _same_bits(p.data, expected)
    assert (opt._scratch is not None) == (layout == "F")


@pytest.mark.parametrize("name", ["sgd", "momentum-wd-dampening", "nesterov-wd", "adam-l2", "adamw"])
def test_a_compiled_blocked_update_replays_bit_identically(name):
    results = []
    for compiled in (False, True):
        model = nn.MLP([8, 40000, 4], generator=0)  # two weights of 1.25 MiB: five blocks each
        opt = _make(name, model.parameters())
        f = training_step(model, F.cross_entropy, opt, compile=compiled)  # the step cr.fit runs
        rng = np.random.default_rng(5)
        losses = [f(cr.tensor(rng.standard_normal((6, 8)).astype(np.float32)), cr.tensor(rng.integers(0, 4, 6)))[1].item() for _ in range(5)]
        results.append((losses, [p.data.copy() for p in model.parameters()], opt.state_dict()["buffers"]))
        if compiled:
            assert f.replays == 3 and opt._scratch is not None
    (la, pa, ba), (lb, pb, bb) = results
    assert la == lb
    assert all(_same_bits(p, q) for p, q in zip(pa, pb))
    assert all(_same_bits(x, y) for k in ba for x, y in zip(ba[k], bb[k]))
