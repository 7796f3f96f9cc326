"""cr.compile: a recorded step replays bit-identically to eager, re-records when it must, and
never replays what it cannot (tests for chainrule/capture.py)."""

import warnings

import numpy as np
import pytest

import chainrule as cr
from chainrule import functional as F
from chainrule import nn, optim
from chainrule.nn.module import watch

ACTIVATIONS = ["relu", "sigmoid", "tanh", "leaky_relu", "elu", "prelu", "gelu", "silu", "identity"]
OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.1),
    "sgd-momentum-wd": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3),
    "sgd-nesterov": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda ps: optim.Adam(ps, lr=0.01, weight_decay=1e-3),
    "adamw": lambda ps: optim.AdamW(ps, lr=0.01),
}
LOSSES = {
    "cross_entropy": (lambda out, y: F.cross_entropy(out, y), "classes"),
    "cross_entropy_smoothed": (lambda out, y: F.cross_entropy(out, y, label_smoothing=0.1), "classes"),
    "cross_entropy_soft": (lambda out, y: F.cross_entropy(out, y), "probs"),
    "mse": (lambda out, y: F.mse_loss(out, y), "values"),
    "bce_logits": (lambda out, y: F.binary_cross_entropy_with_logits(out, y), "probs"),
}


def _batches(kind, n=7, rows=(6, 6, 6, 6, 6, 6, 4), seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        r = rows[i % len(rows)]
        x = rng.standard_normal((r, 8)).astype(np.float32)
        if kind == "classes":
            y = rng.integers(0, 4, r)
        elif kind == "probs":
            y = rng.dirichlet(np.ones(4), r).astype(np.float32)
        else:
            y = rng.standard_normal((r, 4)).astype(np.float32)
        out.append((cr.tensor(x), cr.tensor(y)))
    return out


def _train(compiled, layers, make_opt, loss, kind, schedule=None, n=7):
    cr.manual_seed(0)
    model = layers()
    opt = make_opt(model.parameters())
    sched = schedule(opt) if schedule else None

    def step(x, y):
        opt.zero_grad()
        out = loss(model(x), y)
        out.backward()
        opt.step()
        return out

    f = cr.compile(step) if compiled else step
    losses = []
    for i, (x, y) in enumerate(_batches(kind, n)):
        losses.append(f(x, y).item())
        if sched is not None and i % 2:
            sched.step()
    state = opt.state_dict()
    return losses, model, state, f


def _assert_identical(a, b):
    (la, ma, sa, _), (lb, mb, sb, _) = a, b
    assert la == lb
    for (name, p), (_, q) in zip(ma.named_parameters(), mb.named_parameters()):
        assert np.array_equal(p.data, q.data), name
        assert np.array_equal(p.grad, q.grad), name
    for (name, s), (_, t) in zip(ma.named_state(), mb.named_state()):
        assert np.array_equal(s.data, t.data), name
    assert sa["steps"] == sb["steps"]
    for key, arrays in sa["buffers"].items():
        for x, y in zip(arrays, sb["buffers"][key]):
            assert np.array_equal(x, y), key


def _mlp(activation):
    return lambda: nn.MLP([8, 16, 16, 4], activation=activation)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_replays_bit_identically(activation):
    loss, kind = LOSSES["cross_entropy"]
    eager = _train(False, _mlp(activation), OPTIMIZERS["sgd"], loss, kind)
    compiled = _train(True, _mlp(activation), OPTIMIZERS["sgd"], loss, kind)
    _assert_identical(eager, compiled)
    assert compiled[3].replays > 0


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_replays_bit_identically(name):
    loss, kind = LOSSES["cross_entropy"]
    eager = _train(False, _mlp("tanh"), OPTIMIZERS[name], loss, kind)
    compiled = _train(True, _mlp("tanh"), OPTIMIZERS[name], loss, kind)
    _assert_identical(eager, compiled)
    assert compiled[3].replays > 0


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_replays_bit_identically(name):
    loss, kind = LOSSES[name]
    eager = _train(False, _mlp("relu"), OPTIMIZERS["adam"], loss, kind)
    compiled = _train(True, _mlp("relu"), OPTIMIZERS["adam"], loss, kind)
    _assert_identical(eager, compiled)
    assert compiled[3].replays > 0


@pytest.mark.parametrize("schedule", [lambda o: optim.StepLR(o, step_size=1, gamma=0.5), lambda o: optim.CosineAnnealingLR(o, T_max=3)])
def test_schedules_reach_the_replayed_update(schedule):
    loss, kind = LOSSES["cross_entropy"]
    eager = _train(False, _mlp("relu"), OPTIMIZERS["sgd-momentum-wd"], loss, kind, schedule)
    compiled = _train(True, _mlp("relu"), OPTIMIZERS["sgd-momentum-wd"], loss, kind, schedule)
    _assert_identical(eager, compiled)


@pytest.mark.parametrize(
    "layers",
    [
        lambda: nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4)),
        lambda: nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Dropout(0.3), nn.Linear(16, 4)),
        lambda: nn.MLP([8, 16, 16, 4], residual=True, norm="batch", dropout=0.2),
        lambda: nn.Sequential(nn.Linear(8, 16), nn.Residual(nn.Sequential(nn.Linear(16, 16), nn.Tanh())), nn.Linear(16, 4)),
    ],
    ids=["batchnorm", "layernorm-dropout", "mlp-residual-norm-dropout", "residual"],
)
def test_layers_with_state_and_randomness_replay_bit_identically(layers):
    """BatchNorm's running statistics move in place at each replay; dropout draws a new mask."""
    loss, kind = LOSSES["cross_entropy"]
    eager = _train(False, layers, OPTIMIZERS["adamw"], loss, kind)
    compiled = _train(True, layers, OPTIMIZERS["adamw"], loss, kind)
    _assert_identical(eager, compiled)
    assert compiled[3].replays > 0


@pytest.mark.parametrize(
    "layers",
    [lambda: nn.MLP([8, 768, 800, 4]), lambda: nn.Sequential(nn.Linear(8, 768), nn.LayerNorm(768), nn.ReLU(), nn.Linear(768, 800), nn.Linear(800, 4))],
    ids=["fused", "layer-by-layer"],
)
def test_a_wide_layer_replays_bit_identically(layers):
    """A wide layer at a few rows computes its input gradient as a transposed product copied back
    (functional._input_gradient): a product, a view and a copy, all replayed."""
    loss, kind = LOSSES["cross_entropy"]
    eager = _train(False, layers, OPTIMIZERS["sgd-momentum-wd"], loss, kind, n=4)
    compiled = _train(True, layers, OPTIMIZERS["sgd-momentum-wd"], loss, kind, n=4)
    _assert_identical(eager, compiled)
    assert compiled[3].replays > 0


def _simple_step():
    cr.manual_seed(0)
    model = nn.MLP([8, 16, 4], activation="relu")
    opt = optim.SGD(model.parameters(), lr=0.1)

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return model, opt, step


def test_a_new_shape_records_again_and_the_cache_is_bounded():
    _, _, step = _simple_step()
    f = cr.compile(step, cache_size=2)
    for rows in (6, 6, 6, 4, 4, 4, 3, 3):
        f(*_batches("classes", 1, rows=(rows,))[0])
    assert f.signatures == 2  # (4 and 3 rows; 6 was dropped, least recently used)
    assert f.replays == 2  # each shape: an eager call, a recording, then replays


def test_the_returned_loss_holds_the_step_buffer_until_the_next_call():
    _, _, step = _simple_step()
    f = cr.compile(step)
    batches = _batches("classes", 4, rows=(6,))
    for x, y in batches[:3]:
        f(x, y)
    first = f(*batches[3])
    kept = first.item()
    f(*batches[0])
    assert first.item() != kept  # overwritten by the next call, as documented


def test_reading_a_value_inside_the_step_runs_eagerly_with_one_warning():
    model, opt, step = _simple_step()

    def reading(x, y):
        loss = step(x, y)
        if loss.item() > 100:  # Python control flow on a tensor's value
            opt.lr = 0.0
        return loss

    f = cr.compile(reading)
    batches = _batches("classes", 5, rows=(6,))
    with pytest.warns(cr.CompileWarning, match="reads an array's value"):
        for x, y in batches:
            f(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f(*batches[0])  # warned once
    assert f.replays == 0


def test_a_watched_layer_is_never_replayed():
    model, _, step = _simple_step()
    seen = []
    with watch(model.linears[0], lambda forward: lambda x: seen.append(x.shape) or forward(x)):
        _assert_runs_eagerly(step, "watched layer")
    assert len(seen) == 4  # the watcher saw every step


def test_rebinding_an_array_the_step_reads_is_never_replayed():
    model, opt, _ = _simple_step()
    w = model.linears[0].weight

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        w.data = w.data - 0.1 * w.grad  # a new array each step: the replay could not follow it
        return loss

    _assert_runs_eagerly(step, "rebinds")


def _assert_runs_eagerly(step, reason):
    f = cr.compile(step)
    with pytest.warns(cr.CompileWarning, match=reason):
        for x, y in _batches("classes", 4, rows=(6,)):
            f(x, y)
    assert f.replays == 0


def test_a_changed_parameter_set_or_mode_records_again():
    model, opt, step = _simple_step()
    f = cr.compile(step)
    batches = _batches("classes", 8, rows=(6,))
    for x, y in batches[:3]:
        f(x, y)
    assert f.replays == 1
    model.load_state_dict({k: v.copy() for k, v in model.state_dict().items()})  # rebinds every parameter
    eager_model, eager_opt, eager_step = _simple_step()
    eager_model.load_state_dict(model.state_dict())
    eager_opt.load_state_dict(opt.state_dict())
    for x, y in batches[3:]:
        assert f(x, y).item() == eager_step(x, y).item()
    assert f.replays == 4  # 1, then after the rebinding: an eager call, a recording and 3 replays
    for p, q in zip(model.parameters(), eager_model.parameters()):
        assert np.array_equal(p.data, q.data)


def test_train_and_eval_modes_record_separately():
    cr.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 4))

    @cr.compile
    def forward(x):
        return model(x)

    x = _batches("classes", 1, rows=(6,))[0][0]
    for _ in range(3):
        forward(x)
    model.eval()
    with cr.no_grad():
        expected = model(x).numpy().copy()
    for _ in range(3):
        assert np.array_equal(forward(x).numpy(), expected)


def test_inputs_that_require_grad_run_eagerly():
    w = cr.tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    f = cr.compile(lambda x: (x * w).sum())
    x = cr.tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    with pytest.warns(cr.CompileWarning, match="requires grad"):
        f(x)
    assert f(x).item() == 3.0


def test_an_update_compiled_apart_from_backward_follows_the_gradients():
    """As fit does (it checks the loss between the two): backward in one compiled function, the
    update in another, which reads the gradients the first one leaves."""
    for compiled in (False, True):
        cr.manual_seed(0)
        model = nn.MLP([8, 16, 4], activation="tanh")
        opt = optim.Adam(model.parameters(), lr=0.01)

        def backward(x, y):
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            return out, loss

        update = opt.step
        if compiled:
            backward, update = cr.compile(backward), cr.compile(update)
        losses = []
        for x, y in _batches("classes", 9, rows=(6, 6, 6, 4)):
            out, loss = backward(x, y)
            losses.append(loss.item())
            update()
        if compiled:
            assert update.replays > 0 and backward.replays > 0
            assert losses == expected_losses
            for p, q in zip(model.parameters(), expected):
                assert np.array_equal(p.data, q)
        expected_losses, expected = losses, [p.data.copy() for p in model.parameters()]


def test_another_namespace_is_replayed_too(strict):
    """On array-api-strict (the stand-in for a GPU) the step is recorded and replayed as well, with
    eager's values (tests/test_capture_foreign.py tests that path in full)."""
    from conftest import to_strict

    xp, _ = strict
    w = cr.tensor(to_strict(strict, np.ones((3, 2), dtype=np.float32)), requires_grad=True)
    opt = optim.SGD([w], lr=0.1)

    def step(x):
        opt.zero_grad()
        loss = (x @ w).sum()
        loss.backward()
        opt.step()
        return loss

    f = cr.compile(step)
    x = cr.tensor(to_strict(strict, np.arange(6, dtype=np.float32).reshape(2, 3)))
    values = [float(xp.asarray(f(x).data)) for _ in range(3)]
    assert values == [30.0, 13.399999618530273, -3.1999998092651367]  # as eager: w moves by -0.1 * column sums of x
    assert f.replays == 1


def test_a_gradient_through_a_sum_inside_the_graph_is_replayed():
    """Backward through sum and mean in the middle of the graph (not only the loss's own mean)."""
    def make():
        cr.manual_seed(0)
        w = cr.tensor(np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32), requires_grad=True)
        opt = optim.SGD([w], lr=0.1)

        def step(x, y):
            opt.zero_grad()
            h = (x @ w).tanh()
            loss = ((h.sum(axis=1) - y) ** 2).mean() + h.mean(axis=0).sum()
            loss.backward()
            opt.step()
            return loss

        return w, step

    w1, eager = make()
    w2, step = make()
    compiled = cr.compile(step)
    rng = np.random.default_rng(1)
    for _ in range(6):
        x, y = cr.tensor(rng.standard_normal((5, 8)).astype(np.float32)), cr.tensor(rng.standard_normal(5).astype(np.float32))
        assert eager(x, y).item() == compiled(x, y).item()
    assert np.array_equal(w1.data, w2.data) and np.array_equal(w1.grad, w2.grad)
    assert compiled.replays == 4
