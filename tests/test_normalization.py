"""BatchNorm1d, LayerNorm, Dropout and Residual: against PyTorch in float64, gradcheck, modes and files."""

import numpy as np
import pytest

import chainrule as cr
from chainrule import functional as F
from chainrule import nn, optim
from chainrule.errors import ChainruleError, ShapeError
from conftest import rel_err, torch_copy

TOL = 1e-10


def _data(shape, seed=0, scale=3.0, shift=1.5):
    return np.random.default_rng(seed).normal(size=shape) * scale + shift


def _weights(n, seed):
    return np.random.default_rng(seed).normal(size=n)


def _set_affine(ours, theirs, torch, seed):
    w, b = _weights(ours.weight.data.shape, seed), _weights(ours.bias.data.shape, seed + 1)
    ours.weight.data, ours.bias.data = w.copy(), b.copy()
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(w))
        theirs.bias.copy_(torch.tensor(b))


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_torch_in_value_gradient_and_running_statistics(torch, training):
    x = _data((16, 5))
    bn, tb = nn.BatchNorm1d(5, dtype="float64"), torch.nn.BatchNorm1d(5).double()
    _set_affine(bn, tb, torch, 3)
    if not training:  # running statistics away from (0, 1), so evaluation mode uses them visibly
        bn.running_mean.data, bn.running_var.data = _weights(5, 7), _weights(5, 8) ** 2 + 0.5
        tb.running_mean.copy_(torch.tensor(bn.running_mean.data))
        tb.running_var.copy_(torch.tensor(bn.running_var.data))
    bn.train(training)
    tb.train(training)
    r = _weights((16, 5), 9)
    X = cr.tensor(x, requires_grad=True, dtype="float64")
    xt = torch.tensor(x, requires_grad=True)
    y, yt = bn(X), tb(xt)
    (y * y * cr.tensor(r, dtype="float64")).sum().backward()
    (yt * yt * torch.tensor(r)).sum().backward()
    assert y.data.dtype == np.float64
    assert rel_err(y.data, yt.detach().numpy()) < TOL
    assert rel_err(X.grad, xt.grad.numpy()) < TOL
    assert rel_err(bn.weight.grad, tb.weight.grad.numpy()) < TOL
    assert rel_err(bn.bias.grad, tb.bias.grad.numpy()) < TOL
    assert rel_err(bn.running_mean.data, tb.running_mean.numpy()) < TOL
    assert rel_err(bn.running_var.data, tb.running_var.numpy()) < TOL


@pytest.mark.parametrize("shape,normalized", [((16, 5), 5), ((4, 3, 6), (3, 6)), ((2, 7), (7,))])
def test_layer_norm_matches_torch(torch, shape, normalized):
    x = _data(shape, seed=1)
    ln = nn.LayerNorm(normalized, dtype="float64")
    tl = torch.nn.LayerNorm(normalized).double()
    _set_affine(ln, tl, torch, 5)
    r = _weights(shape, 4)
    X = cr.tensor(x, requires_grad=True, dtype="float64")
    xt = torch.tensor(x, requires_grad=True)
    y, yt = ln(X), tl(xt)
    (y * y * cr.tensor(r, dtype="float64")).sum().backward()
    (yt * yt * torch.tensor(r)).sum().backward()
    assert rel_err(y.data, yt.detach().numpy()) < TOL
    assert rel_err(X.grad, xt.grad.numpy()) < TOL
    assert rel_err(ln.weight.grad, tl.weight.grad.numpy()) < TOL
    assert rel_err(ln.bias.grad, tl.bias.grad.numpy()) < TOL
    # no batch statistics: evaluation mode computes the same, and one row works
    ln.eval()
    assert np.array_equal(ln(cr.tensor(x, dtype="float64")).data, y.data)


def test_norm_layers_pass_gradcheck():
    x = cr.tensor(_data((6, 4), 2), requires_grad=True, dtype="float64")
    w = cr.tensor(_weights(4, 1), requires_grad=True, dtype="float64")
    b = cr.tensor(_weights(4, 2), requires_grad=True, dtype="float64")
    rm, rv = cr.tensor(np.zeros(4), dtype="float64"), cr.tensor(np.ones(4), dtype="float64")
    assert cr.gradcheck(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), x, w, b)
    assert cr.gradcheck(lambda x, w, b: F.batch_norm(x, rm, rv, w, b, training=False), x, w, b)
    assert cr.gradcheck(lambda x, w, b: F.layer_norm(x, (4,), w, b), x, w, b)
    block = nn.Residual(nn.Sequential(nn.Linear(4, 4, dtype="float64"), nn.LayerNorm(4, dtype="float64"), nn.Tanh()))
    assert cr.gradcheck(lambda x: block(x), x)
    # the same mask at every call (a generator made afresh from one seed), so differences see one function
    assert cr.gradcheck(lambda x: F.dropout(x, 0.3, generator=np.random.default_rng(0)), x)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # inf - inf, as in PyTorch: NaN
@pytest.mark.parametrize("case", ["constant", "zeros", "nan", "inf", "empty"])
def test_normalization_at_the_edges_matches_torch(torch, case):
    x = {"constant": np.full((5, 4), 3.0), "zeros": np.zeros((5, 4)), "nan": _data((5, 4)), "inf": _data((5, 4)),
         "empty": np.zeros((0, 4))}[case]
    if case in ("nan", "inf"):
        x[2, 1] = np.nan if case == "nan" else np.inf
    ln, tl = nn.LayerNorm(4, dtype="float64"), torch.nn.LayerNorm(4).double()
    X, xt = cr.tensor(x, requires_grad=True, dtype="float64"), torch.tensor(x, requires_grad=True)
    y, yt = ln(X), tl(xt)
    assert np.array_equal(np.isnan(y.data), np.isnan(yt.detach().numpy()))
    ok = ~np.isnan(y.data)
    assert np.allclose(y.data[ok], yt.detach().numpy()[ok], rtol=0, atol=1e-12)
    if case in ("constant", "zeros"):  # zero variance: the output is the bias, and the gradient is finite
        y.sum().backward()
        yt.sum().backward()
        assert np.allclose(X.grad, xt.grad.numpy(), atol=1e-12)
    if case != "empty":
        bn, tb = nn.BatchNorm1d(4, dtype="float64"), torch.nn.BatchNorm1d(4).double()
        yb, ytb = bn(cr.tensor(x, dtype="float64")), tb(torch.tensor(x))
        assert np.array_equal(np.isnan(yb.data), np.isnan(ytb.detach().numpy()))
        okb = ~np.isnan(yb.data)
        assert np.allclose(yb.data[okb], ytb.detach().numpy()[okb], rtol=0, atol=1e-12)


def test_twenty_training_steps_match_torch_weights_and_running_statistics(torch):
    """A residual network with batch and layer normalization trained 20 SGD steps in both frameworks."""
    cr.manual_seed(0)
    inner = [nn.Linear(6, 6, dtype="float64"), nn.BatchNorm1d(6, momentum=0.2, dtype="float64"), nn.ReLU()]
    model = nn.Sequential(
        nn.Linear(5, 6, dtype="float64"), nn.LayerNorm(6, dtype="float64"), nn.Sigmoid(),
        nn.Residual(nn.Sequential(*inner)), nn.Linear(6, 3, dtype="float64"),
    )  # fmt: skip
    head, tail = torch_copy(torch, [model[0], model[1], model[2]]), torch_copy(torch, [model[4]])
    block = torch_copy(torch, inner)

    def theirs(x):
        h = head(x)
        return tail(h + block(h))

    params = [*head.parameters(), *block.parameters(), *tail.parameters()]
    opt, topt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9), torch.optim.SGD(params, lr=0.1, momentum=0.9)
    rng = np.random.default_rng(3)
    for _ in range(20):
        x, y = rng.normal(size=(8, 5)) * 2, rng.integers(0, 3, 8)
        opt.zero_grad()
        F.cross_entropy(model(cr.tensor(x, dtype="float64")), y).backward()
        opt.step()
        topt.zero_grad()
        torch.nn.functional.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y)).backward()
        topt.step()
    bn, tbn = inner[1], block[1]
    assert rel_err(bn.running_mean.data, tbn.running_mean.numpy()) < TOL
    assert rel_err(bn.running_var.data, tbn.running_var.numpy()) < TOL
    assert rel_err(inner[0].weight.data, block[0].weight.detach().numpy().T) < TOL
    assert rel_err(model[1].weight.data, head[1].weight.detach().numpy()) < TOL
    model.eval(), head.eval(), block.eval(), tail.eval()
    x = rng.normal(size=(4, 5))
    assert rel_err(model(cr.tensor(x, dtype="float64")).data, theirs(torch.tensor(x)).detach().numpy()) < TOL


def test_batch_norm_checks_and_errors():
    with pytest.raises(ChainruleError, match="num_features"):
        nn.BatchNorm1d(0)
    with pytest.raises(ChainruleError, match="momentum"):
        nn.BatchNorm1d(4, momentum=1.5)
    bn = nn.BatchNorm1d(4)
    with pytest.raises(ShapeError, match=r"BatchNorm1d\(4\) got input of shape \(3, 5\)"):
        bn(cr.randn(3, 5))
    with pytest.raises(ShapeError, match="more than one row"):
        bn(cr.randn(1, 4))
    bn.eval()
    assert bn(cr.randn(1, 4)).shape == (1, 4)  # evaluation needs no batch statistics
    no_affine = nn.BatchNorm1d(4, affine=False)
    assert no_affine.parameters() == [] and list(no_affine.state_dict()) == ["running_mean", "running_var"]
    with pytest.raises(ChainruleError, match="LayerNorm"):
        nn.LayerNorm(0)
    with pytest.raises(ShapeError, match="layer_norm"):
        nn.LayerNorm(4)(cr.randn(3, 5))


def test_dropout_is_inverted_seeded_and_the_identity_in_eval():
    x = cr.ones(2000, 50, requires_grad=True)
    drop = nn.Dropout(0.3, generator=0)
    y = drop(x)
    kept = y.data != 0
    assert abs(kept.mean() - 0.7) < 0.01
    assert np.allclose(y.data[kept], 1 / 0.7)
    y.sum().backward()
    assert np.array_equal(x.grad, y.data)  # the gradient is the same scaled mask
    again = nn.Dropout(0.3, generator=0)(cr.ones(2000, 50))
    assert np.array_equal(again.data, y.data)
    assert not np.array_equal(drop(cr.ones(2000, 50)).data, y.data)  # a new mask each call
    drop.eval()
    assert drop(x) is x
    cr.manual_seed(5)
    a = nn.Dropout(0.5)(cr.ones(4, 8)).data
    cr.manual_seed(5)
    assert np.array_equal(nn.Dropout(0.5)(cr.ones(4, 8)).data, a)  # chainrule's default generator
    assert nn.Dropout(0.0)(x) is x
    for bad in (1.0, -0.1, "0.2", True):
        with pytest.raises(ChainruleError, match=r"Dropout's p must be a probability in \[0, 1\)"):
            nn.Dropout(bad)


def test_dropout_matches_torch_given_the_same_mask(torch):
    """Same mask, same numbers: torch's dropout scales by 1 / (1 - p) as ours does."""
    x = _data((6, 7), 3)
    y = F.dropout(cr.tensor(x, dtype="float64"), 0.25, generator=1).data
    mask = y != 0
    torch.manual_seed(0)
    t = torch.tensor(x) * torch.tensor(mask) / (1 - 0.25)
    assert rel_err(y, t.numpy()) < TOL


def test_residual_adds_the_input_and_names_both_widths():
    lin = nn.Linear(4, 4)
    res = nn.Residual(lin)
    x = cr.randn(3, 4)
    assert np.allclose(res(x).data, x.data + lin(x).data)
    with pytest.raises(ShapeError, match="maps 4 features to 6"):
        nn.Residual(nn.Sequential(nn.Linear(4, 6), nn.ReLU()))

    class Widen(nn.Module):
        def forward(self, x):
            return cr.concat([x, x], axis=1)

    with pytest.raises(ShapeError, match=r"\(3, 4\) to output of shape \(3, 8\)"):
        nn.Residual(Widen())(x)
    with pytest.raises(TypeError, match="module"):
        nn.Residual(lambda x: x)


def test_buffers_are_state_follow_to_and_load_state_dict():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    assert list(model.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias", "1.running_mean", "1.running_var"]
    assert len(model.parameters()) == 6  # buffers are not learned
    model(cr.randn(8, 3) * 4 + 2)
    other = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    other.load_state_dict(model.state_dict())
    assert np.array_equal(other[1].running_var.data, model[1].running_var.data)
    model.double()
    assert model[1].running_mean.data.dtype == np.float64
    with pytest.raises(ChainruleError, match="running_var"):
        other.load_state_dict({k: v for k, v in model.state_dict().items() if k != "1.running_var"})


def test_model_files_keep_buffers_and_load_in_eval_mode(tmp_path):
    model = nn.MLP([5, 6, 6, 3], norm="batch", dropout=0.2, residual=True, generator=1)
    for _ in range(3):
        model(cr.randn(16, 5) * 2 + 1)
    assert model.training
    path = cr.save(model, tmp_path / "m.safetensors")
    loaded = cr.load(path)
    assert not loaded.training and not any(m.training for m in loaded.modules())
    assert loaded.get_config() == model.get_config()
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and np.array_equal(a, b)
    x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    model.eval()
    assert np.array_equal(cr.predict(loaded, x), cr.predict(model, x))
    # a hand-built network with a Residual round-trips too
    hand = nn.Sequential(nn.Linear(3, 4), nn.Residual(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Tanh())), nn.Linear(4, 2))
    again = cr.load(cr.save(hand, tmp_path / "h.safetensors"))
    assert isinstance(again[1], nn.Residual) and np.array_equal(again[1].block[1].weight.data, hand[1].block[1].weight.data)


def test_predict_and_evaluate_run_in_eval_mode_and_fit_in_train_mode():
    model = nn.MLP([4, 8, 3], norm="batch", dropout=0.5, generator=0)
    X = np.random.default_rng(1).normal(size=(40, 4)).astype(np.float32)
    y = np.arange(40) % 3
    before = model.state_dict()["1.running_mean"].copy()
    p1 = cr.predict(model, X)
    assert np.array_equal(p1, cr.predict(model, X))  # no dropout, running statistics
    assert np.array_equal(model.state_dict()["1.running_mean"], before)
    assert model.training  # predict restores the mode it found
    modes = []

    class Watch:
        def on_step_end(self, state):
            modes.append(state.model.training)

    cr.fit(model, "cross_entropy", optim.SGD(model.parameters(), lr=0.1), X, y, epochs=1, batch_size=8,
           validation=(X, y), callbacks=[Watch()], progress=False)  # fmt: skip
    assert modes and all(modes)
    assert not np.array_equal(model.state_dict()["1.running_mean"], before)


def test_sequential_does_not_fuse_across_the_new_layers():
    for extra in (nn.BatchNorm1d(8), nn.LayerNorm(8), nn.Dropout(0.5)):
        seq = nn.Sequential(nn.Linear(4, 8), extra, nn.ReLU(), nn.Linear(8, 2))
        assert not seq.fused
    plain = nn.MLP([4, 8, 8, 2], generator=0)
    assert plain.fused
    res = nn.MLP([4, 8, 8, 2], residual=True, generator=0)
    assert not res.fused and res[1].block.fused  # the block inside the skip still fuses
    # the same weights give the same numbers through the fused blocks and layer by layer
    x = cr.tensor(np.random.default_rng(0).normal(size=(5, 4)), dtype="float64")
    res.double()
    h = res[0].forward_layers(x)  # 4 -> 8: no skip
    h = h + res[1].block.forward_layers(h)
    assert np.allclose(res(x).data, res[2](h).data, rtol=0, atol=1e-12)


@pytest.mark.parametrize("norm", [None, "batch", "layer"])
@pytest.mark.parametrize("residual", [False, True])
def test_mlp_options_build_blocks_in_order(norm, residual):
    model = nn.MLP([6, 8, 8, 3], activation="tanh", norm=norm, residual=residual, dropout=0.1, generator=0)
    kinds = [type(m).__name__ for m in model.modules() if not m._modules]
    block = ["Linear"] + ([{"batch": "BatchNorm1d", "layer": "LayerNorm"}[norm]] if norm else []) + ["Tanh", "Dropout"]
    assert kinds == block * 2 + ["Linear"]
    assert [type(m).__name__ for m in model][:2] == (["Sequential", "Residual"] if residual else kinds[:2])
    assert len(model.linears) == 3
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert drops[0].generator is drops[1].generator  # one mask generator, spawned from the seed
    same = nn.MLP([6, 8, 8, 3], activation="tanh", norm=norm, residual=residual, dropout=0.1, generator=0)
    x = cr.randn(5, 6)
    assert np.array_equal(model(x).data, same(x).data)  # the seed fixes weights and masks
    # the options leave the weights alone: the same seed gives the plain MLP's weights
    plain = nn.MLP([6, 8, 8, 3], activation="tanh", generator=0)
    assert all(np.array_equal(a.weight.data, b.weight.data) for a, b in zip(model.linears, plain.linears))


def test_mlp_option_errors():
    with pytest.raises(ChainruleError, match="unknown norm 'group'"):
        nn.MLP([4, 4, 2], norm="group")
    with pytest.raises(ChainruleError, match="dropout must be a probability"):
        nn.MLP([4, 4, 2], dropout=1.0)


def test_fit_refuses_a_batch_too_small_for_batch_norm_before_any_step():
    X = np.random.default_rng(0).normal(size=(33, 4)).astype(np.float32)
    y = np.arange(33) % 3
    model = nn.MLP([4, 8, 3], norm="batch", generator=0)
    before = [a.copy() for a in model.state_dict().values()]
    with pytest.raises(ChainruleError, match="BatchNorm1d needs at least 2 rows in every training batch, but 33 rows in batches of 8 leave a batch of 1"):
        cr.fit(model, "cross_entropy", optim.SGD(model.parameters(), lr=0.1), X, y, epochs=1, batch_size=8, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.state_dict().values()))  # nothing trained
    cr.fit(model, "cross_entropy", optim.SGD(model.parameters(), lr=0.1), X, y, epochs=1, batch_size=11, progress=False)
    layer = nn.MLP([4, 8, 3], norm="layer", generator=0)  # no batch statistics: any batch works
    cr.fit(layer, "cross_entropy", optim.SGD(layer.parameters(), lr=0.1), X, y, epochs=1, batch_size=8, progress=False)


def test_a_buffer_replaced_as_a_whole_stays_registered():
    bn = nn.BatchNorm1d(3)
    bn.running_var = cr.tensor(np.full(3, 2.0, dtype=np.float32))
    assert np.array_equal(bn.state_dict()["running_var"], np.full(3, 2.0, dtype=np.float32))
    with pytest.raises(ChainruleError, match="running_mean is a buffer: assign a Tensor"):
        bn.running_mean = np.zeros(3)
