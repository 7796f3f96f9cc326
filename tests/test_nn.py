"""Modules: parameters, state, initializers, Linear and MLP."""

import numpy as np
import pytest

import chainrule as cr
from chainrule import functional as F
from chainrule import nn
from chainrule.errors import ShapeError
from chainrule.nn.module import watch
from conftest import rel_err, torch_copy
from test_ops_torch import compare


def test_linear_forward_backward_matches_torch(torch):
    layer = nn.Linear(4, 3, dtype="float64", generator=0)
    x = np.random.default_rng(1).standard_normal((5, 4))
    compare(torch, lambda x, w, b: cr.functional.linear(x, w, b), lambda x, w, b: x @ w + b, x, layer.weight.data, layer.bias.data)
    x3 = np.random.default_rng(2).standard_normal((2, 5, 4))
    compare(torch, lambda x, w, b: cr.functional.linear(x, w, b), lambda x, w, b: x @ w + b, x3, layer.weight.data, layer.bias.data)


def test_linear_shapes_names_and_errors():
    layer = nn.Linear(64, 128)
    assert layer.weight.shape == (64, 128) and layer.bias.shape == (128,)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    with pytest.raises(cr.ShapeError, match=r"Linear\(64 -> 128\) got input of shape \(32, 65\)"):
        layer(cr.zeros(32, 65))
    with pytest.raises(cr.ChainruleError, match="positive integer in_features"):
        nn.Linear(0, 3)
    assert nn.Linear(3, 2, bias=False).bias is None
    assert len(nn.Linear(3, 2, bias=False).parameters()) == 1


def test_linear_default_init_is_bounded_like_pytorch():
    w = nn.Linear(100, 50, generator=0).weight.data
    assert np.abs(w).max() <= 0.1 and np.abs(w).max() > 0.09


def test_mlp_structure_and_init_choice():
    m = nn.MLP([64, 32, 32, 10], activation="relu", generator=0)
    assert len(m.linears) == 3 and isinstance(m[1], nn.ReLU) and m.init == "he_normal"
    assert [n for n, _ in m.named_parameters()][:2] == ["0.weight", "0.bias"]
    assert nn.MLP([4, 3, 2], activation="sigmoid").init == "xavier_uniform"
    assert nn.MLP([4, 3, 2], activation="tanh").init == "xavier_uniform"
    assert nn.MLP([4, 3, 2], activation="gelu").init == nn.MLP([4, 3, 2], activation="silu").init == "he_normal"
    dead = nn.MLP([4, 3, 3, 2], activation="relu", bias_init=-100.0)
    assert np.all(dead.linears[0].bias.data == -100) and np.all(dead.linears[-1].bias.data == 0)
    with pytest.raises(cr.ChainruleError, match="unknown activation"):
        nn.MLP([4, 2], activation="swish")
    with pytest.raises(cr.ChainruleError, match="two positive layer sizes"):
        nn.MLP([4])
    assert "MLP(64-32-32-10" in repr(m) and "Linear(64 -> 32)" in repr(m)


def test_mlp_is_seeded():
    a, b = nn.MLP([8, 5, 3], generator=3), nn.MLP([8, 5, 3], generator=3)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
    cr.manual_seed(5)
    c = nn.Linear(3, 2)
    cr.manual_seed(5)
    d = nn.Linear(3, 2)
    np.testing.assert_array_equal(c.weight.data, d.weight.data)


@pytest.mark.parametrize("scheme, expected_std", [
    ("he_normal", np.sqrt(2 / 400)), ("he_uniform", np.sqrt(2 / 400)),
    ("xavier_uniform", np.sqrt(2 / 700)), ("xavier_normal", np.sqrt(2 / 700)), ("normal", 0.01),
])
def test_initializer_scales(scheme, expected_std):
    w = nn.Parameter(np.zeros((400, 300)))
    nn.init.initialize(w, scheme, "relu", generator=0)
    assert abs(w.data.std() / expected_std - 1) < 0.02
    assert abs(w.data.mean()) < 0.1 * expected_std


def test_state_dict_roundtrip_and_errors():
    a, b = nn.MLP([5, 4, 3], generator=0), nn.MLP([5, 4, 3], generator=1)
    b.load_state_dict(a.state_dict())
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
    bad = dict(a.state_dict())
    bad["0.weight"] = np.zeros((5, 5))
    with pytest.raises(cr.ShapeError, match="0.weight"):
        b.load_state_dict(bad)
    with pytest.raises(cr.ChainruleError, match="missing"):
        b.load_state_dict({"0.weight": a.state_dict()["0.weight"]})


def test_zero_grad_train_eval_and_custom_modules():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = nn.Linear(3, 4)
            self.out = nn.Linear(4, 1)
            self.scale = nn.Parameter([2.0])

        def forward(self, x):
            return self.out(self.hidden(x).tanh()) * self.scale

    net = Net()
    assert {n for n, _ in net.named_parameters()} == {"scale", "hidden.weight", "hidden.bias", "out.weight", "out.bias"}
    net(cr.ones(2, 3)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.eval()
    assert not net.training and not net.hidden.training
    net.train()
    assert net.out.training
    assert net.num_parameters() == 3 * 4 + 4 + 4 + 1 + 1


def test_prelu_module_learns_its_slope():
    act = nn.PReLU(num_parameters=3, init=0.25)
    x = cr.tensor([[-1.0, -2.0, 3.0]])
    act(x).sum().backward()
    np.testing.assert_allclose(act.weight.grad, [-1.0, -2.0, 0.0])
    with pytest.raises(cr.ChainruleError, match="PReLU"):
        act(cr.zeros(2, 4))


# ---- the fused stack (F.fused_layers, used by Sequential and MLP) ----------------------


def _stack(activation, rng, **kw):
    act = lambda: nn.activation(activation, **(dict(kw, dtype="float64") if activation == "prelu" else kw))  # noqa: E731
    model = nn.Sequential(
        nn.Linear(6, 9, dtype="float64"), act(), nn.Linear(9, 9, dtype="float64"), act(), nn.Linear(9, 4, dtype="float64")
    )
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.data.shape)
    return model


def _run(model, x_data, need_x, fused):
    model.zero_grad()
    x = cr.tensor(x_data, dtype="float64", requires_grad=need_x)
    out = model(x) if fused else model.forward_layers(x)
    ((out * out).sum() + out.sum()).backward()
    return [out.data] + [p.grad for p in model.parameters()] + ([x.grad] if need_x else [])


@pytest.mark.parametrize("activation, kw", [
    ("relu", {}), ("sigmoid", {}), ("tanh", {}), ("identity", {}), ("leaky_relu", {"negative_slope": 0.2}),
    ("elu", {"alpha": 0.7}), ("prelu", {}), ("prelu", {"num_parameters": 9, "init": 0.1}),
    ("gelu", {}), ("gelu", {"approximate": "tanh"}), ("silu", {}),
])
@pytest.mark.parametrize("need_x", [False, True])
def test_fused_stack_equals_layer_by_layer(activation, kw, need_x):
    rng = np.random.default_rng(0)
    model = _stack(activation, rng, **kw)
    assert model.fused
    x = rng.standard_normal((7, 6))
    x[0, :] = 0.0  # rows that put some units exactly at the kink
    fused, layered = _run(model, x, need_x, True), _run(model, x, need_x, False)
    assert len(fused) == len(layered)
    for a, b in zip(fused, layered):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rows, width", [(1, 768), (2, 768), (33, 768), (64, 768), (65, 768), (3, 512), (4, 512), (48, 400), (49, 400)])
def test_a_wide_layer_matches_torch_in_float32(torch, rows, width):
    """A float32 layer of width 768 or more at 2 to 64 rows, or of width 384 or more at 4 to 48
    rows, computes its input gradient as a transposed product (F._input_gradient, for speed):
    values and gradients as PyTorch's, fused and layer by layer."""
    model = nn.MLP([16, width + 32, width, 3], generator=0)
    ref = torch_copy(torch, model)
    x = np.random.default_rng(4).standard_normal((rows, 16)).astype(np.float32)
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    tout = ref(tx)
    (tout * tout).sum().backward()
    expected = [tout.detach().numpy(), tx.grad.numpy()]
    for lin in ref:
        if isinstance(lin, torch.nn.Linear):
            expected += [lin.weight.grad.numpy().T, lin.bias.grad.numpy()]
    for fused in (True, False):
        model.zero_grad()
        cx = cr.tensor(x, requires_grad=True)
        out = model(cx) if fused else model.forward_layers(cx)
        (out * out).sum().backward()
        got = [out.data, cx.grad] + [g for lin in model.linears for g in (lin.weight.grad, lin.bias.grad)]
        for a, b in zip(got, expected):
            assert a.dtype == np.float32 and a.flags.c_contiguous
            assert rel_err(a, b) < 1e-5


def test_the_input_gradient_is_the_plain_product_outside_the_measured_region():
    """F._input_gradient takes the transposed form only where it measured faster (float32; 2 to
    64 rows with both widths >= 768, 4 to 48 rows with both >= 384); elsewhere it is ``g @ w.T``,
    bit for bit."""
    rng = np.random.default_rng(5)
    outside = [(1, 800, 768, "float32"), (65, 800, 768, "float32"), (3, 767, 800, "float32"), (49, 767, 800, "float32"),
               (8, 383, 800, "float32"), (8, 800, 768, "float64")]
    for rows, n_in, n_out, dtype in outside:
        g = rng.standard_normal((rows, n_out)).astype(dtype)
        w = rng.standard_normal((n_in, n_out)).astype(dtype)
        assert np.array_equal(F._input_gradient(g, w), g @ w.T)
    g = rng.standard_normal((8, 768)).astype(np.float32)
    w = rng.standard_normal((800, 768)).astype(np.float32)
    got = F._input_gradient(g, w)
    assert got.shape == (8, 800) and got.flags.c_contiguous
    np.testing.assert_allclose(got, g.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-4, atol=1e-3)


def test_fused_stack_records_one_node_and_passes_gradcheck():
    rng = np.random.default_rng(1)
    model = _stack("tanh", rng)
    x = cr.tensor(rng.standard_normal((3, 6)), dtype="float64", requires_grad=True)
    out = model(x)
    assert out.parents[0] is x and len(out.parents) == 1 + 6  # x and three (weight, bias) pairs
    params = model.parameters()
    assert cr.gradcheck(lambda x, *ps: F.fused_layers(x, [
        ("linear", ps[0], ps[1]), ("tanh", None, None), ("linear", ps[2], ps[3]), ("tanh", None, None), ("linear", ps[4], ps[5]),
    ]), x, *params)
    with cr.no_grad():
        assert not model(x).requires_grad


def test_fused_stack_leaves_inputs_alone_and_falls_back_when_watched():
    rng = np.random.default_rng(2)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    x = cr.tensor(rng.standard_normal((3, 4)))
    before = x.data.copy()
    model(x)
    np.testing.assert_array_equal(x.data, before)
    # a layer whose forward is replaced on the instance (as the diagnostics do) is called
    seen = []
    relu = model[1]
    with watch(relu, lambda forward: lambda t: seen.append(t.shape) or forward(t)):
        model(x)
    assert seen == [(3, 5)]
    assert not relu.watched and "forward" not in relu.__dict__
    # a stack that cannot be fused still runs, layer by layer; a wrong input names the layer
    assert not nn.Sequential(nn.Linear(4, 5), nn.Softmax()).fused
    with pytest.raises(ShapeError, match=r"Linear\(4 -> 5\) got input of shape \(3, 3\)"):
        model(cr.tensor(rng.standard_normal((3, 3))))
    assert not nn.Sequential(nn.Linear(4, 5), nn.Linear(6, 2)).fused
    assert model(cr.tensor(rng.standard_normal((2, 3, 4)))).shape == (2, 3, 2)  # batched input: layer by layer


def test_fused_stack_without_biases_and_with_replaced_weights():
    rng = np.random.default_rng(3)
    model = nn.Sequential(nn.Linear(4, 6, bias=False, dtype="float64"), nn.Tanh(), nn.Linear(6, 2, dtype="float64"))
    model[2].weight = nn.Parameter(rng.standard_normal((6, 2)), dtype="float64")  # read at every call
    x = rng.standard_normal((5, 4))
    fused, layered = _run(model, x, True, True), _run(model, x, True, False)
    assert len(fused) == 1 + 3 + 1  # output, three parameters, the input's gradient
    for a, b in zip(fused, layered):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_a_copy_taken_while_a_layer_is_watched_is_not_watched():
    """The dashboard copies a model that trains in another thread, whose layers a probe may be
    watching at that moment: the copy runs its own forward, never the probe's wrapper."""
    import copy

    model = nn.MLP([4, 8, 3], generator=0)
    seen = []
    x = cr.tensor(np.ones((2, 4), np.float32))
    with watch(model.linears[0], lambda forward: lambda t: seen.append(t.shape) or forward(t)):
        twin = copy.deepcopy(model)
        assert model.linears[0].watched and not twin.linears[0].watched and "forward" not in twin.linears[0].__dict__
        twin(x)
        assert seen == []
        model(x)
        assert seen == [(2, 4)]
    np.testing.assert_array_equal(twin(x).data, model(x).data)
    assert twin.linears[0].weight is not model.linears[0].weight
