"""Optimizers: a 4-layer MLP trained 20 steps from identical weights on identical batches equals
PyTorch's parameters within 1e-8 (float64) for every optimizer setting."""

import math

import numpy as np
import pytest

import chainrule as cr
from chainrule import functional as F
from chainrule import nn, optim
from conftest import torch_copy

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
