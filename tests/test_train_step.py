"""The step cr.fit runs per batch (chainrule/train_step.py): compiled, it equals the eager step,
and its check of the loss stops a diverging step before backward in both."""

import numpy as np
import pytest

import chainrule as cr
from chainrule import functional as F
from chainrule import nn, optim
from chainrule.train_step import training_step


class Diverged(Exception):
    pass


def _run(compile, lr, limit):
    cr.manual_seed(0)
    model = nn.MLP([8, 16, 4], activation="relu", norm="batch", dropout=0.1)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    seen = []

    def check(loss):
        value = float(loss)
        seen.append(value)
        if value > limit:
            raise Diverged(value)

    step = training_step(model, F.cross_entropy, opt, check, compile=compile)
    rng = np.random.default_rng(0)
    outputs = []
    try:
        for i in range(12):
            rows = 6 if i % 4 else 5
            out, loss = step(cr.tensor(rng.standard_normal((rows, 8)).astype(np.float32)), cr.tensor(rng.integers(0, 4, rows)))
            outputs.append(out.numpy().copy())
    except Diverged:
        pass
    return seen, outputs, [p.data.copy() for p in model.parameters()], [b.data.copy() for _, b in model.named_buffers()], step


@pytest.mark.parametrize("lr, limit", [(0.1, 1e9), (40.0, 30.0)], ids=["trains", "diverges"])
def test_the_compiled_step_equals_the_eager_one(lr, limit):
    eager = _run(False, lr, limit)
    compiled = _run(True, lr, limit)
    assert eager[0] == compiled[0]  # the loss at every step, and where it stopped
    for a, b in zip(eager[1], compiled[1]):
        assert np.array_equal(a, b)
    for a, b in zip(eager[2] + eager[3], compiled[2] + compiled[3]):
        assert np.array_equal(a, b)  # weights, running statistics: the diverging step changed nothing
    if limit > 1e6:
        assert compiled[4].replays > 0
