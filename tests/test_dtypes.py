"""A float32 graph never yields a float64 value, gradient, parameter or optimizer state, and a
float64 graph stays float64: over every operation, activation, loss and optimizer, with Python
numbers, NumPy float64 scalars and float64 NumPy targets mixed in as people write them."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chainrule as cr
from chainrule import functional as F
from chainrule import nn, optim
from chainrule.autograd import Tensor

DTYPES = ["float32", "float64"]
F64 = np.float64

# name -> (function of tensors x (3, 4) and y (3, 4), number of tensor inputs used)
OPERATIONS = {
    "add": lambda x, y: x + y,
    "add number": lambda x, y: x + 2.5,
    "radd numpy float64": lambda x, y: F64(2.5) + x,
    "sub": lambda x, y: x - y,
    "rsub number": lambda x, y: 1 - x,
    "mul": lambda x, y: x * y,
    "mul numpy float64": lambda x, y: x * F64(0.3),
    "mul float64 array": lambda x, y: x * np.full((3, 4), 0.3),
    "div": lambda x, y: x / (y * y + 1),
    "rdiv number": lambda x, y: 2 / (x * x + 1),
    "pow 2": lambda x, y: x**2,
    "pow 0": lambda x, y: x**0,
    "pow 0.5": lambda x, y: (x * x + 1) ** 0.5,
    "pow numpy float64": lambda x, y: (x * x + 1) ** F64(1.5),
    "pow tensor": lambda x, y: (x * x + 1) ** y,
    "rpow": lambda x, y: 2.0**x,
    "matmul": lambda x, y: x @ y.T,
    "neg": lambda x, y: -x,
    "sum": lambda x, y: x.sum(axis=1),
    "mean": lambda x, y: x.mean(),
    "mean empty": lambda x, y: x[:0].mean(),
    "max": lambda x, y: x.max(),
    "max axis": lambda x, y: x.max(axis=0),
    "min": lambda x, y: x.min(axis=1, keepdims=True),
    "logsumexp": lambda x, y: cr.logsumexp(x, axis=1),
    "var": lambda x, y: x.var(axis=1),
    "std": lambda x, y: x.std(correction=0),
    "prod": lambda x, y: x.prod(axis=0),
    "cumsum": lambda x, y: x.cumsum(1),
    "reshape": lambda x, y: x.reshape(4, 3),
    "transpose": lambda x, y: x.T,
    "getitem": lambda x, y: x[1:, [0, 2, 2]],
    "concat": lambda x, y: cr.concat([x, y], axis=0),
    "stack": lambda x, y: cr.stack([x, y]),
    "exp": lambda x, y: x.exp(),
    "log": lambda x, y: (x * x + 1).log(),
    "sqrt": lambda x, y: (x * x + 1).sqrt(),
    "abs": lambda x, y: abs(x),
    "clip": lambda x, y: x.clip(-0.5, F64(0.5)),
    "relu": lambda x, y: x.relu(),
    "sigmoid": lambda x, y: x.sigmoid(),
    "tanh": lambda x, y: x.tanh(),
    "where": lambda x, y: cr.where(x.data > 0, x, y),
    "where number": lambda x, y: cr.where(x.data > 0, x, 0.0),
    "maximum": lambda x, y: cr.maximum(x, y),
    "maximum 0": lambda x, y: cr.maximum(x, 0),
    "minimum number": lambda x, y: cr.minimum(x, F64(0.25)),
    "hinge": lambda x, y: cr.maximum(1 - x * y, 0).mean(),
    "sign": lambda x, y: x.sign() * y,
    "sin": lambda x, y: x.sin(),
    "cos": lambda x, y: cr.cos(x),
    "log1p": lambda x, y: (x * x).log1p(),
    "expm1": lambda x, y: x.expm1(),
    "squeeze": lambda x, y: x[None].squeeze(0),
    "unsqueeze": lambda x, y: x.unsqueeze(1),
    "flatten": lambda x, y: x.flatten(),
    "broadcast_to": lambda x, y: cr.broadcast_to(x, (2, 3, 4)),
    "expand": lambda x, y: x[:1].expand(5, 4),
    "flip": lambda x, y: x.flip(1),
    "einsum one": lambda x, y: cr.einsum("ij->j", x),
    "einsum two": lambda x, y: cr.einsum("ij,kj->ik", x, y),
    # activations and their modules
    **{f"activation {name}": (lambda name: lambda x, y: nn.activation(name)(x))(name) for name in nn.ACTIVATIONS if name != "prelu"},
    "prelu": lambda x, y: F.prelu(x, y[0, :1]),
    "leaky_relu": lambda x, y: F.leaky_relu(x, 0.2),
    "elu": lambda x, y: F.elu(x, alpha=F64(1.5)),
    "softplus": lambda x, y: F.softplus(x, beta=2.0),
    "logsigmoid": lambda x, y: F.logsigmoid(x),
    "gelu tanh": lambda x, y: F.gelu(x, approximate="tanh"),
    "softmax": lambda x, y: F.softmax(x),
    "log_softmax": lambda x, y: F.log_softmax(x, axis=0),
    # losses, with float64 NumPy targets, weights and pos_weight
    "mse": lambda x, y: F.mse_loss(x, np.zeros((3, 4))),
    "mse tensor": lambda x, y: F.mse_loss(x, y),
    "cross_entropy": lambda x, y: F.cross_entropy(x, np.array([0, 3, 1])),
    "cross_entropy smoothing": lambda x, y: F.cross_entropy(x, np.array([0, 3, 1]), label_smoothing=0.1),
    "cross_entropy soft target": lambda x, y: F.cross_entropy(x, F.softmax(y)),
    "cross_entropy weight ignore": lambda x, y: F.cross_entropy(x, np.array([0, -1, 1]), weight=np.array([1.0, 2.0, 0.5, 1.0]), ignore_index=-1),
    "cross_entropy 1-D": lambda x, y: F.cross_entropy(x[0], 2, reduction="none"),
    "cross_entropy empty": lambda x, y: F.cross_entropy(x[:0], np.zeros(0, dtype=np.int64)),
    "bce with logits": lambda x, y: F.binary_cross_entropy_with_logits(x, np.full((3, 4), 0.5)),
    "bce with logits target grad": lambda x, y: F.binary_cross_entropy_with_logits(x, y.sigmoid(), pos_weight=np.array([1.0, 2.0, 3.0, 0.5])),
    "bce": lambda x, y: F.binary_cross_entropy(x.sigmoid(), np.full((3, 4), 0.25), reduction="sum"),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(OPERATIONS))
def test_every_operation_keeps_the_dtype(dtype, name):
    rng = np.random.default_rng(0)
    x = cr.tensor(rng.standard_normal((3, 4)), dtype=dtype, requires_grad=True)
    y = cr.tensor(rng.standard_normal((3, 4)), dtype=dtype, requires_grad=True)
    out = OPERATIONS[name](x, y)
    assert out.dtype == np.dtype(dtype), f"{name}: value {out.dtype}"
    out.backward(cr.ones_like(out))
    for t in (x, y):
        if t.grad is not None:
            assert t.grad.dtype == np.dtype(dtype), f"{name}: gradient {t.grad.dtype}"


@pytest.mark.parametrize("dtype", DTYPES)
@given(st.lists(st.sampled_from(sorted(OPERATIONS)), min_size=2, max_size=5), st.integers(0, 2**16))
@settings(max_examples=30, deadline=None)
def test_chains_of_operations_keep_the_dtype(dtype, names, seed):
    """Operations fed one into another (through a sum back to shape (3, 4)) never leave the dtype."""
    rng = np.random.default_rng(seed)
    x = cr.tensor(rng.standard_normal((3, 4)), dtype=dtype, requires_grad=True)
    y = cr.tensor(rng.standard_normal((3, 4)), dtype=dtype, requires_grad=True)
    h = x
    for name in names:
        out = OPERATIONS[name](h, y)
        h = (out.reshape(-1)[:1] * 0.1 + x).tanh() if out.size else x * 0.5  # back to (3, 4), bounded
        assert h.dtype == np.dtype(dtype), f"after {names}: {h.dtype}"
    h.sum().backward()
    assert x.grad.dtype == y.grad.dtype == np.dtype(dtype) if y.grad is not None else x.grad.dtype == np.dtype(dtype)


def _arrays(obj):
    """Every array in an optimizer's state: its live buffers, whatever their names."""
    for v in vars(obj).values():
        items = v if isinstance(v, (list, tuple)) else [v]
        for a in items:
            if isinstance(a, np.ndarray):
                yield a
            elif isinstance(a, Tensor):
                yield a.data


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "opt",
    [
        lambda p: optim.SGD(p, lr=0.1),
        lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
        lambda p: optim.Adam(p, lr=1e-2, weight_decay=1e-3),
        lambda p: optim.AdamW(p, lr=1e-2),
    ],
    ids=["sgd", "sgd momentum nesterov decay", "adam decay", "adamw"],
)
@pytest.mark.parametrize("activation", list(nn.ACTIVATIONS))
def test_training_keeps_parameters_gradients_and_optimizer_state_in_the_dtype(dtype, opt, activation):
    model = nn.MLP([4, 6, 3], activation=activation, generator=0, dtype=dtype)
    optimizer = opt(model.parameters())
    schedule = optim.StepLR(optimizer, step_size=1, gamma=0.5)
    X = np.random.default_rng(1).standard_normal((8, 4))  # float64 data, as NumPy makes it
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    for _ in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(cr.tensor(X, dtype=dtype)), y) + cr.maximum(1 - model(cr.tensor(X, dtype=dtype)), 0).mean()
        loss.backward()
        optimizer.step()
        schedule.step()
    assert loss.dtype == np.dtype(dtype)
    for name, p in model.named_parameters():
        assert p.data.dtype == np.dtype(dtype) and p.grad.dtype == np.dtype(dtype), name
    states = list(_arrays(optimizer))
    assert states or isinstance(optimizer, optim.SGD)
    for a in states:
        if a.dtype.kind == "f":
            assert a.dtype == np.dtype(dtype), (type(optimizer).__name__, a.dtype)
    for arrays in optimizer.state_dict()["buffers"].values():
        assert all(a is None or a.dtype == np.dtype(dtype) for a in arrays)
