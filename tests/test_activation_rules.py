"""The activation table: each entry's derivative against finite differences and PyTorch, and the
primitives, the fused stack and the diagnostics reading the same entry (chainrule/activation_rules.py)."""

import numpy as np
import pytest

import chainrule as cr
from chainrule import nn
from chainrule.activation_rules import ACTIVATION_RULES, rule
from chainrule.diagnostics.layers import find_layers, local_derivative

PARAMS = {"leaky_relu": 0.1, "elu": 0.7, "gelu": "tanh", "prelu": np.float64(0.25)}
Z = np.array([-30.0, -3.0, -1.0, -0.3, 0.2, 0.9, 2.5, 30.0])


@pytest.mark.parametrize("name", sorted(ACTIVATION_RULES))
def test_each_derivative_is_the_slope_of_its_forward(name):
    act, p = rule(name), PARAMS.get(name)
    h = 1e-6
    numeric = (act.forward(Z + h, p)[0] - act.forward(Z - h, p)[0]) / (2 * h)
    assert np.allclose(act.derivative(Z, p), numeric, rtol=1e-6, atol=1e-8)


TORCH = {
    "relu": lambda t, x: t.relu(x),
    "sigmoid": lambda t, x: t.sigmoid(x),
    "tanh": lambda t, x: t.tanh(x),
    "leaky_relu": lambda t, x: t.nn.functional.leaky_relu(x, 0.1),
    "elu": lambda t, x: t.nn.functional.elu(x, 0.7),
    "gelu": lambda t, x: t.nn.functional.gelu(x, approximate="tanh"),
    "silu": lambda t, x: t.nn.functional.silu(x),
    "prelu": lambda t, x: t.nn.functional.prelu(x, t.tensor([0.25], dtype=t.float64)),
}


@pytest.mark.parametrize("name", sorted(TORCH))
def test_each_entry_matches_pytorch_at_the_kinks_too(torch, name):
    z = np.concatenate([Z, [0.0]])
    x = torch.tensor(z, requires_grad=True)
    y = TORCH[name](torch, x)
    y.sum().backward()
    act = rule(name)
    ours, _ = act.forward(z, PARAMS.get(name))
    assert np.allclose(ours, y.detach().numpy(), rtol=1e-12, atol=1e-15)
    assert np.allclose(np.asarray(act.derivative(z, PARAMS.get(name)), dtype=np.float64), x.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "leaky_relu", "elu", "gelu", "silu", "prelu"])
def test_primitives_fused_stack_and_diagnostics_agree_with_the_table(name):
    cr.manual_seed(0)
    model = nn.MLP([3, 5, 2], activation=name)
    x = cr.tensor(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    fused = model(x)
    fused.sum().backward()
    fused_grad = x.grad.copy()
    x.grad = None
    layered = model.forward_layers(x)
    layered.sum().backward()
    assert np.allclose(fused.numpy(), layered.numpy(), rtol=1e-6, atol=1e-7)
    assert np.allclose(fused_grad, x.grad, rtol=1e-6, atol=1e-7)
    layer = find_layers(model)[0]
    z = (x.numpy() @ model.linears[0].weight.numpy() + model.linears[0].bias.numpy()).astype(np.float32)
    act = layer.act_module
    param = act.weight.numpy() if name == "prelu" else getattr(act, {"leaky_relu": "negative_slope", "elu": "alpha", "gelu": "approximate"}.get(name, "_"), None)
    assert np.array_equal(local_derivative(layer, z), np.asarray(rule(name).derivative(z, param)).astype(np.float32))


def test_an_unknown_name_says_what_exists():
    with pytest.raises(ValueError, match="expected one of"):
        rule("swish")
