"""cr.fit, cr.evaluate, cr.predict: learning, history, callbacks, validation of input, divergence."""

import numpy as np
import pytest

import chainrule as cr
from chainrule import functional as F
from chainrule import nn, optim
from chainrule.data import load_digits, train_test_split


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits()
    return train_test_split(X, y, test_size=0.25, seed=0)


def test_mlp_learns_the_digits(digits):
    Xtr, Xte, ytr, yte = digits
    model = nn.MLP([64, 128, 128, 10], generator=0)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    hist = cr.fit(model, F.cross_entropy, opt, Xtr, ytr, epochs=20, batch_size=32, validation=(Xte, yte), progress=False)
    acc = cr.evaluate(model, "cross_entropy", Xte, yte)["accuracy"]
    # measured: 0.980 on this split and seed; the issue asks for >= 0.97
    assert acc >= 0.97
    assert hist["val_accuracy"][-1] == acc
    assert hist["loss"][0] > hist["loss"][-1] and len(hist["loss"]) == 20
    assert hist.steps == 20 * int(np.ceil(len(Xtr) / 32))


def test_fit_is_repeatable(digits):
    Xtr, _, ytr, _ = digits

    def run():
        model = nn.MLP([64, 16, 10], generator=1)
        return cr.fit(model, "cross_entropy", optim.SGD(model.parameters(), lr=0.05), Xtr[:300], ytr[:300], epochs=2, progress=False).history

    assert run() == run()


def test_callbacks_see_every_step_and_epoch_and_can_stop():
    X = np.random.default_rng(0).standard_normal((50, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)

    class Recorder:
        def __init__(self):
            self.steps, self.epochs, self.began, self.ended = 0, 0, False, False

        def on_train_begin(self, s):
            self.began = True

        def on_step_end(self, s):
            self.steps += 1
            assert np.isfinite(s.loss)

        def on_epoch_end(self, s):
            self.epochs += 1
            s.record["custom"] = 1.0
            if self.epochs == 3:
                s.stop = True

        def on_train_end(self, s):
            self.ended = True

    model = nn.MLP([3, 4, 2], generator=0)
    rec = Recorder()
    hist = cr.fit(model, "cross_entropy", optim.SGD(model.parameters(), lr=0.1), X, y, epochs=10, batch_size=10, callbacks=[rec], progress=False)
    assert rec.began and rec.ended and rec.epochs == 3 and rec.steps == 15
    assert hist["custom"] == [1.0, 1.0, 1.0]


def test_multilabel_and_regression_metrics():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4)).astype(np.float32)
    Y = (X[:, :3] > 0).astype(np.float32)
    m = nn.MLP([4, 16, 3], generator=0)
    h = cr.fit(m, F.binary_cross_entropy_with_logits, optim.Adam(m.parameters(), 0.01), X, Y, epochs=30, progress=False)
    assert {"subset_accuracy", "micro_f1", "hamming_loss"} <= set(h.history)
    assert h["micro_f1"][-1] > 0.9
    r = nn.MLP([4, 8, 1], generator=0)
    h = cr.fit(r, "mse", optim.SGD(r.parameters(), 0.05), X, X[:, 0], epochs=20, progress=False)
    assert "mse" in h.history and h["mse"][-1] < h["mse"][0]


@pytest.mark.parametrize("X, y, match", [
    (np.full((4, 3), np.nan), np.zeros(4, int), "X must be finite"),
    (np.zeros((4, 3)), np.array([0, 1, 2, 7]), r"labels in \[0, 1\]"),
    (np.zeros((4, 3)), np.array([0.5, 1, 0, 1]), "integer class labels"),
    (np.zeros((4, 3)), np.zeros(5, int), "one row per sample"),
    (np.zeros((4, 5)), np.zeros(4, int), "5 features per sample but the model expects 3"),
    (np.zeros((0, 3)), np.zeros(0, int), "empty"),
    ([["a", "b", "c"]], [0], "numbers"),
])
def test_bad_data_is_refused_before_training(X, y, match):
    m = nn.MLP([3, 2], generator=0)
    before = m.linears[0].weight.data.copy()
    with pytest.raises(cr.ChainruleError, match=match):
        cr.fit(m, "cross_entropy", optim.SGD(m.parameters(), 0.1), X, y, progress=False)
    np.testing.assert_array_equal(before, m.linears[0].weight.data)


def test_bad_batch_size_and_bce_targets_are_refused():
    m = nn.MLP([3, 2], generator=0)
    with pytest.raises(cr.DataError, match="batch_size"):
        cr.fit(m, "cross_entropy", optim.SGD(m.parameters(), 0.1), np.zeros((4, 3)), np.zeros(4, int), batch_size=0)
    with pytest.raises(cr.DataError, match=r"\[0, 1\]"):
        cr.fit(m, "bce", optim.SGD(m.parameters(), 0.1), np.zeros((4, 3)), np.full((4, 2), 2.0))


def test_divergence_stops_training_with_a_hint():
    X = np.random.default_rng(0).standard_normal((32, 3)).astype(np.float32) * 100
    m = nn.MLP([3, 64, 1], activation="relu", generator=0)
    with pytest.raises(cr.DivergenceError, match=r"step \d+ .*smaller"):
        cr.fit(m, "mse", optim.SGD(m.parameters(), lr=10.0), X, X[:, 0] * 1e3, epochs=50, batch_size=8, progress=False)


def test_predict_does_not_record_a_graph_and_restores_mode():
    m = nn.MLP([3, 2], generator=0)
    out = cr.predict(m, np.ones((5, 3)))
    assert isinstance(out, np.ndarray) and out.shape == (5, 2) and m.training


# ---- divergence ---------------------------------------------------------------------------------


def test_a_loss_a_million_times_its_start_stops_fit_with_divergence_error():
    from chainrule.errors import DivergenceError

    X, y = load_digits()
    model = nn.MLP([64, 32, 10], generator=0)
    with pytest.raises(DivergenceError, match=r"the loss reached .* more than 1e\+06 times the first step's .* at step \d+ .*learning rate \(1000000.0\)"):
        cr.fit(model, "cross_entropy", optim.Adam(model.parameters(), lr=1e6), X, y, epochs=3, progress=False)


def test_a_checkpointer_never_writes_weights_that_are_not_finite(tmp_path):
    from types import SimpleNamespace

    from chainrule.checkpoint import Checkpointer, load_checkpoint
    from chainrule.errors import DivergenceError

    model = nn.MLP([4, 3, 2], generator=0)
    opt = optim.SGD(model.parameters(), lr=0.1)
    history = cr.History("multiclass")
    history.first_loss = 0.75
    state = SimpleNamespace(model=model, optimizer=opt, step=5, history=history)
    ck = Checkpointer(tmp_path / "ck.safetensors", {"seed": 0})
    ck.save(state, 0, 5, [], None, "steps")
    assert load_checkpoint(tmp_path / "ck.safetensors").info["first_loss"] == 0.75
    model[0].weight.data[0, 0] = np.nan
    state.step = 6
    with pytest.raises(DivergenceError, match=r"parameter '0.weight' became NaN or infinite by step 6, though the loss stayed finite"):
        ck.save(state, 0, 6, [], None, "steps")
    assert load_checkpoint(tmp_path / "ck.safetensors").step == 5 and ck.saved_step == 5
