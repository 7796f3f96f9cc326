"""cr.compile off NumPy (chainrule/capture_foreign.py): on array-api-strict's stand-in device,
which refuses every conversion to NumPy as GPU arrays do, a recorded step replays
bit-identically to eager for every activation, loss and optimizer, follows schedules, dropout
and running statistics, re-records when it must, and never replays what it cannot."""

import warnings

import numpy as np
import pytest
from conftest import from_strict, to_strict
from test_capture import LOSSES, OPTIMIZERS

import chainrule as cr
from chainrule import functional as F
from chainrule import nn, optim
from chainrule.train_step import training_step

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "prelu": nn.PReLU, "gelu": nn.GELU, "silu": nn.SiLU}

def _to_device(strict, model):
    for t in list(model.parameters()) + [m.running_mean for m in model.modules() if isinstance(m, nn.BatchNorm1d)] + [
        m.running_var for m in model.modules() if isinstance(m, nn.BatchNorm1d)
    ]:
        t.data = to_strict(strict, from_strict(t.data))
    return model


def _batches(strict, kind, n=6):
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        rows = 6 if i < n - 1 else 4  # a short last batch: a second signature
        x = rng.standard_normal((rows, 8)).astype(np.float32)
        if kind == "classes":
            y = rng.integers(0, 4, rows)
        elif kind == "probs":
            y = rng.dirichlet(np.ones(4), rows).astype(np.float32)
        else:
            y = rng.standard_normal((rows, 4)).astype(np.float32)
        out.append((cr.tensor(to_strict(strict, x)), cr.tensor(to_strict(strict, y))))
    return out


def _train(strict, compiled, activation="relu", optimizer="sgd-momentum-wd", loss="cross_entropy", schedule=False, dropout=False, norm=False, quiet=True):
    cr.manual_seed(0)
    layers = [nn.Linear(8, 16)] + ([nn.BatchNorm1d(16)] if norm else []) + [ACTIVATIONS[activation]()]
    layers += ([nn.Dropout(0.3)] if dropout else []) + [nn.Linear(16, 4)]
    model = _to_device(strict, nn.Sequential(*layers))
    opt = OPTIMIZERS[optimizer](model.parameters())
    sched = optim.lr_scheduler.StepLR(opt, 2, 0.5) if schedule else None
    loss_fn, kind = LOSSES[loss]

    def step(x, y):
        opt.zero_grad()
        out = loss_fn(model(x), y)
        out.backward()
        opt.step()
        if sched is not None:
            sched.step()
        return out

    f = cr.compile(step) if compiled else step
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("error")  # (a CompileWarning would mean it ran eagerly)
        losses = [from_strict(f(x, y).data).copy() for x, y in _batches(strict, kind)]
    state = {
        "loss": losses,
        "params": [from_strict(p.data) for p in model.parameters()],
        "grads": [from_strict(p.grad) for p in model.parameters()],
        "buffers": [from_strict(b) for v in opt.buffers().values() for b in v if b is not None],
        "running": [from_strict(m.running_mean.data) for m in model.modules() if isinstance(m, nn.BatchNorm1d)],
    }
    return state, getattr(f, "replays", None)


def _assert_same(strict, **case):
    eager, _ = _train(strict, False, **case)
    compiled, replays = _train(strict, True, **case)
    assert replays == 3  # 6 calls: 5 of one signature (discover, record, 3 replays), 1 short batch
    for key in eager:
        assert len(eager[key]) == len(compiled[key])
        for a, b in zip(eager[key], compiled[key]):
            assert a.dtype == b.dtype and np.array_equal(a, b), key


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_every_activation_replays_bit_identically(strict, activation):
    _assert_same(strict, activation=activation)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_every_optimizer_replays_bit_identically(strict, optimizer):
    _assert_same(strict, optimizer=optimizer)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_every_loss_replays_bit_identically(strict, loss):
    _assert_same(strict, loss=loss, activation="tanh")


def test_schedules_dropout_and_running_statistics_replay(strict):
    _assert_same(strict, optimizer="adam", schedule=True)  # the rate read at every replay
    _assert_same(strict, dropout=True)  # a new mask at every replay, drawn as eagerly
    _assert_same(strict, norm=True)  # running statistics updated in place


def test_training_step_with_a_host_check_replays(strict):
    model = _to_device(strict, nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)))
    opt = optim.SGD(model.parameters(), lr=0.1)
    seen = []
    step = training_step(model, F.cross_entropy, opt, check=lambda loss: seen.append(float(from_strict(loss))))
    for x, y in _batches(strict, "classes", n=5):
        out, loss = step(x, y)
    assert step.replays == 2 and len(seen) == 5
    assert seen[-1] == float(from_strict(loss.data))  # the check saw this replay's loss


def test_a_step_that_reads_a_value_runs_eagerly_with_one_warning(strict):
    model = _to_device(strict, nn.Linear(8, 4))
    opt = optim.SGD(model.parameters(), lr=0.1)

    @cr.compile
    def step(x, y):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        if loss.item() > 1e9:  # Python reading the loss: a replay could not take this branch
            return loss
        opt.step()
        return loss

    batches = _batches(strict, "values", n=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for x, y in batches:
            step(x, y)
    messages = [str(w.message) for w in caught if issubclass(w.category, cr.CompileWarning)]
    assert len(messages) == 1 and "reads an array's value" in messages[0]
    assert step.replays == 0


def test_parameters_loaded_between_replays_are_read(strict):
    """A replay reads the holders' arrays at each call: a load_state_dict (new arrays) is followed."""

    def run(compiled):
        cr.manual_seed(0)
        model = _to_device(strict, nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)))
        opt = optim.SGD(model.parameters(), lr=0.1)

        def step(x, y):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss

        f = cr.compile(step) if compiled else step
        batches = _batches(strict, "classes", n=5)[:4]
        saved = None
        for k, (x, y) in enumerate(batches * 2):
            f(x, y)
            if k == 1:
                saved = {n: from_strict(v).copy() for n, v in model.state_dict().items()}
            if k == 5:
                model.load_state_dict(saved)
                _to_device(strict, model)
        return [from_strict(p.data) for p in model.parameters()], getattr(f, "replays", 0)

    (eager, _), (compiled, replays) = run(False), run(True)
    assert replays >= 4
    assert all(np.array_equal(a, b) for a, b in zip(eager, compiled))


def test_train_and_eval_record_again(strict):
    model = _to_device(strict, nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 4)))

    @cr.compile
    def forward(x):
        return model(x)

    x = _batches(strict, "values", n=1)[0][0]
    for _ in range(3):
        forward(x)
    model.eval()
    a, b = from_strict(forward(x).data).copy(), from_strict(forward(x).data).copy()
    c = from_strict(forward(x).data)
    assert np.array_equal(a, b) and np.array_equal(b, c)  # eval: no dropout, whatever was recorded in train()
    assert np.array_equal(c, from_strict(model(x).data))


def test_the_replay_is_generated_code_without_tensors(strict):
    model = _to_device(strict, nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    @cr.compile
    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    batches = _batches(strict, "classes", n=3)[:2]
    for x, y in batches:
        step(x, y)
    (entry,) = step._entries.values()
    program = entry.program
    assert all(not isinstance(v, cr.Tensor) for v in program.template)
    assert all(s.fn is not None for s in program.statements)
    # the host work: the class check and the optimizer's numbers, nothing else
    host = [s.fn.__name__ for s in program.statements if s.host]
    assert sorted(host) == ["_advance", "_check_class_range"]
    x, y = batches[0]
    bad = cr.tensor(to_strict(strict, np.full(6, 7)))
    with pytest.raises(cr.DataError, match=r"class targets must lie in \[0, 3\]"):
        step(x, bad)  # the check runs at every replay


class EmulatedGraphs:
    """CUDA graphs as array-api-strict can stand in for them: a capture computes nothing on the
    arrays it is given (it runs on copies, to learn which arrays the graph makes), and a launch
    runs the part again writing what it makes into those arrays, as a graph writes its memory."""

    def __init__(self, xp, fail=False):
        self.xp, self.fail, self.captures, self.launches = xp, fail, 0, 0

    def copy(self, a):
        return self.xp.asarray(a, copy=True)

    def capture(self, part, E):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.captures += 1
        shadow = [self.copy(v) if hasattr(v, "__array_namespace__") else v for v in E]
        copies = list(shadow)
        part(shadow)
        made = [i for i, (v, c) in enumerate(zip(shadow, copies)) if v is not c]
        for i in made:
            E[i] = shadow[i]
        graphs = self

        class Launch:
            def launch(self):
                graphs.launches += 1
                L = list(E)
                part(L)
                for i in made:
                    E[i][...] = L[i]

        return Launch()


@pytest.mark.parametrize("optimizer", ["sgd-momentum-wd", "adam"])
def test_graph_replays_bit_identical_on_emulated_graphs(strict, monkeypatch, optimizer):
    from chainrule import capture_foreign

    graphs = EmulatedGraphs(strict[0])
    monkeypatch.setattr(capture_foreign, "graphs_for", lambda a: graphs)
    _assert_same(strict, optimizer=optimizer, schedule=True, dropout=True)
    # graphs between the host work: the first layer | dropout's mask | to the loss | the class
    # check | the loss and backward | the optimizer's numbers | the update | the schedule
    assert graphs.captures == 4 and graphs.launches == 3 * 4


def test_a_failed_capture_replays_without_graphs_after_a_warning(strict, monkeypatch):
    from chainrule import capture_foreign

    monkeypatch.setattr(capture_foreign, "graphs_for", lambda a: EmulatedGraphs(strict[0], fail=True))
    eager, _ = _train(strict, False)
    with pytest.warns(cr.CompileWarning, match="CUDA graphs failed"):
        compiled, replays = _train(strict, True, quiet=False)
    assert replays == 3
    for key in eager:
        assert all(np.array_equal(a, b) for a, b in zip(eager[key], compiled[key]))


def test_arrays_held_outside_the_step_are_read_at_each_replay(strict):
    """Only what is made from numbers alone is made once: an operation that reads an array held
    outside the step (a weight another step updates in place) runs again at every replay."""
    xp, dev = strict
    w = to_strict(strict, np.ones((3, 2), dtype=np.float32))
    weight, shift = cr.tensor(w), cr.tensor(to_strict(strict, np.float32(0.5)))

    @cr.compile
    def predict(x):
        three = xp.asarray(3.0, dtype=xp.float32, device=x.data.device)  # (a constant of the step)
        return (x @ weight) * cr.tensor(three) + shift

    x = cr.tensor(to_strict(strict, np.ones((4, 3), dtype=np.float32)))
    outs = []
    for k in range(4):
        w[...] = float(k)  # updated in place between calls
        outs.append(from_strict(predict(x).data).copy())
    assert predict.replays == 2
    assert [float(o[0, 0]) for o in outs] == [0.5, 9.5, 18.5, 27.5]  # 3 * 3k + 0.5


def test_fit_on_the_device_compiles_by_default_and_matches_eager(strict):
    from chainrule.data import load_digits

    X, y = load_digits()
    X, y = to_strict(strict, X[:200].astype(np.float32)), to_strict(strict, y[:200])

    def run(compile):
        cr.manual_seed(0)
        model = _to_device(strict, nn.MLP([64, 32, 10], generator=0))
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        with warnings.catch_warnings():
            warnings.simplefilter("error", cr.CompileWarning)
            history = cr.fit(model, F.cross_entropy, opt, X, y, epochs=2, batch_size=32, compile=compile, progress=False)
        return history, [from_strict(p.data) for p in model.parameters()]

    (h1, eager), (h2, compiled) = run(False), run(True)
    assert all(np.array_equal(a, b) for a, b in zip(eager, compiled))
    assert h1.history["loss"] == h2.history["loss"]


@pytest.mark.parametrize(
    "layers",
    [
        lambda: nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Dropout(0.3), nn.Linear(16, 4)),
        lambda: nn.Sequential(nn.Linear(8, 16), nn.Residual(nn.Sequential(nn.Linear(16, 16), nn.Tanh())), nn.Linear(16, 4)),
        lambda: nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.PReLU(), nn.Linear(16, 4), nn.Softmax()),
        lambda: nn.MLP([8, 16, 16, 4], activation="elu"),
    ],
    ids=["layernorm-gelu-dropout", "residual", "batchnorm-prelu-softmax", "mlp"],
)
def test_every_layer_replays_bit_identically(strict, layers):
    def run(compiled):
        cr.manual_seed(0)
        model = _to_device(strict, layers())
        opt = optim.Adam(model.parameters(), lr=0.01)

        def step(x, y):
            opt.zero_grad()
            out = model(x)
            loss = F.mse_loss(out, y) if out.shape == y.shape else F.cross_entropy(out, y)
            loss.backward()
            opt.step()
            return loss

        f = cr.compile(step) if compiled else step
        with warnings.catch_warnings():
            warnings.simplefilter("error", cr.CompileWarning)
            kind = "probs" if isinstance(model[-1], nn.Softmax) else "classes"
            losses = [from_strict(f(x, y).data).copy() for x, y in _batches(strict, kind)]
        return losses + [from_strict(p.data) for p in model.parameters()], getattr(f, "replays", None)

    (eager, _), (compiled, replays) = run(False), run(True)
    assert replays == 3
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(eager, compiled))


def test_cupy_graphs_capture_on_a_side_stream_from_their_own_pool(monkeypatch):
    """CuPyGraphs' use of CuPy's API, on a stand-in for CuPy that logs the calls: the capture is
    begun and ended on the side stream (ended too when the part raises), inside the graphs' own
    allocator, and a launch goes on the stream current at that call."""
    import contextlib
    import sys
    import types

    from chainrule import capture_foreign

    log = []

    class Stream:
        def __init__(self, non_blocking=False, name="side"):
            self.name = name

        def __enter__(self):
            log.append(f"use {self.name}")

        def __exit__(self, *exc):
            log.append(f"leave {self.name}")

        def record(self):
            return f"event on {self.name}"

        def wait_event(self, event):
            log.append(f"{self.name} waits for {event}")

        def begin_capture(self):
            log.append("begin")

        def end_capture(self):
            log.append("end")
            return Graph()

    class Graph:
        def launch(self, stream=None):
            log.append(f"launch on {stream.name}")

    class Pool:
        def malloc(self, n):
            return None

    @contextlib.contextmanager
    def using_allocator(malloc):
        log.append("own pool")
        try:
            yield
        finally:
            log.append("pool back")

    main = Stream(name="main")
    cuda = types.SimpleNamespace(Stream=Stream, MemoryPool=Pool, using_allocator=using_allocator, get_current_stream=lambda: main)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda))
    graphs = capture_foreign.CuPyGraphs()
    launch = graphs.capture(lambda E: log.append(f"part on {E}"), [1])
    launch.launch()
    assert log == ["side waits for event on main", "own pool", "use side", "begin", "part on [1]", "end", "leave side", "pool back", "launch on main"]

    def failing(E):
        raise RuntimeError("operation not permitted when stream is capturing")

    log.clear()
    with pytest.raises(RuntimeError, match="not permitted"):
        graphs.capture(failing, [])
    assert log == ["side waits for event on main", "own pool", "use side", "begin", "end", "leave side", "pool back"]
