"""Activations and losses against PyTorch in float64 (value and gradient, relative error <= 1e-10)."""

import numpy as np
import pytest

import chainrule as cr
from chainrule import functional as F
from test_ops_torch import compare

RNG = np.random.default_rng(0)
X = RNG.standard_normal((6, 5)) * 2
X[0, 0] = 0.0  # a kink


@pytest.mark.parametrize(
    "ours, theirs_name, kwargs",
    [
        (F.sigmoid, "sigmoid", {}),
        (F.tanh, "tanh", {}),
        (F.relu, "relu", {}),
        (lambda x: F.leaky_relu(x, 0.1), "leaky_relu", {"negative_slope": 0.1}),
        (F.leaky_relu, "leaky_relu", {}),
        (lambda x: F.elu(x, 1.3), "elu", {"alpha": 1.3}),
        (F.elu, "elu", {}),
        (lambda x: F.softmax(x, axis=1), "softmax", {"dim": 1}),
        (lambda x: F.softmax(x, axis=0), "softmax", {"dim": 0}),
        (lambda x: F.log_softmax(x, axis=-1), "log_softmax", {"dim": -1}),
        (lambda x: x, None, {}),
    ],
)
def test_activation_matches_torch(torch, ours, theirs_name, kwargs):
    def theirs(t):
        return t if theirs_name is None else getattr(torch.nn.functional, theirs_name)(t, **kwargs)

    compare(torch, ours, theirs, X)


@pytest.mark.parametrize("slopes", [(0.25,), (0.1, 0.2, 0.3, 0.4, 0.5)])
def test_prelu_matches_torch_with_shared_and_per_unit_slopes(torch, slopes):
    w = np.array(slopes)
    compare(torch, F.prelu, torch.nn.functional.prelu, X, w)


def test_elu_does_not_overflow_on_large_inputs():
    x = cr.tensor([1e4, -1e4, 0.0], requires_grad=True)
    F.elu(x).sum().backward()
    assert np.all(np.isfinite(x.grad)) and np.allclose(x.grad, [1, 0, 1])


@pytest.mark.parametrize("cls, tcls, kw", [
    (cr.nn.Sigmoid, "Sigmoid", {}), (cr.nn.Tanh, "Tanh", {}), (cr.nn.ReLU, "ReLU", {}),
    (cr.nn.LeakyReLU, "LeakyReLU", {"negative_slope": 0.2}), (cr.nn.ELU, "ELU", {"alpha": 0.5}),
    (cr.nn.Softmax, "Softmax", {}), (cr.nn.LogSoftmax, "LogSoftmax", {}),
])
def test_activation_modules_match_torch_modules(torch, cls, tcls, kw):
    tkw = {("dim" if k == "axis" else k): v for k, v in kw.items()}
    if tcls in ("Softmax", "LogSoftmax"):
        tkw["dim"] = -1
    compare(torch, cls(**kw), getattr(torch.nn, tcls)(**tkw), X)


def test_activation_registry_names_every_activation():
    assert set(cr.nn.ACTIVATIONS) == {"sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "gelu", "silu", "identity"}
    assert cr.nn.BEYOND_THE_LESSON == ("gelu", "silu")
    assert isinstance(cr.nn.activation("leaky_relu", negative_slope=0.2), cr.nn.LeakyReLU)
    with pytest.raises(cr.ChainruleError, match="expected one of sigmoid"):
        cr.nn.activation("swish")


REDUCTIONS = ["mean", "sum", "none"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_matches_torch(torch, reduction):
    target = RNG.standard_normal(X.shape)
    compare(torch, lambda p: F.mse_loss(p, cr.tensor(target, dtype="float64"), reduction=reduction),
            lambda p: torch.nn.functional.mse_loss(p, torch.tensor(target), reduction=reduction), X)


LABELS = np.array([0, 4, 2, 2, 1, 3])
ONE_HOT = np.eye(5)[LABELS]
SOFT = np.random.default_rng(3).dirichlet(np.ones(5), size=6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("kind", ["indices", "one_hot", "soft"])
def test_cross_entropy_matches_torch(torch, reduction, smoothing, kind):
    target = {"indices": LABELS, "one_hot": ONE_HOT, "soft": SOFT}[kind]
    tt = torch.tensor(target)
    compare(torch,
            lambda z: F.cross_entropy(z, cr.tensor(target, dtype=None if kind == "indices" else "float64"), label_smoothing=smoothing, reduction=reduction),
            lambda z: torch.nn.functional.cross_entropy(z, tt, label_smoothing=smoothing, reduction=reduction), X)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_with_logits_matches_torch(torch, reduction):
    target = (RNG.random(X.shape) > 0.5).astype(float)
    target[0, :] = 0.3  # soft targets too
    compare(torch, lambda z: F.binary_cross_entropy_with_logits(z, target, reduction=reduction),
            lambda z: torch.nn.functional.binary_cross_entropy_with_logits(z, torch.tensor(target), reduction=reduction), X)


def test_binary_cross_entropy_of_probabilities_matches_torch(torch):
    target = (RNG.random(X.shape) > 0.5).astype(float)
    compare(torch, lambda z: F.binary_cross_entropy(z.sigmoid(), target),
            lambda z: torch.nn.functional.binary_cross_entropy(z.sigmoid(), torch.tensor(target)), X)


@pytest.mark.parametrize("loss", ["ce_idx", "ce_soft", "bce", "softmax", "log_softmax"])
def test_losses_stay_finite_for_float32_logits_of_1e4(loss):
    z = cr.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], requires_grad=True)
    if loss == "ce_idx":
        out = F.cross_entropy(z, np.array([1, 2]))
    elif loss == "ce_soft":
        out = F.cross_entropy(z, np.array([[0.2, 0.8, 0.0], [0.0, 0.5, 0.5]], dtype=np.float32), label_smoothing=0.1)
    elif loss == "bce":
        out = F.binary_cross_entropy_with_logits(z, np.array([[0, 1, 1], [1, 0, 0]], dtype=np.float32))
    elif loss == "softmax":
        out = F.softmax(z).sum() * 0 + (F.softmax(z) * np.arange(3)).sum()
    else:
        out = (F.log_softmax(z) * np.array([[0, 1, 0], [1, 0, 0]], dtype=np.float32)).sum()
    out.backward()
    assert np.isfinite(out.item()) and np.all(np.isfinite(z.grad))
    assert out.dtype == np.float32


def test_cross_entropy_refuses_bad_targets():
    z = cr.tensor(np.zeros((2, 3)))
    with pytest.raises(cr.DataError, match=r"\[0, 2\]"):
        F.cross_entropy(z, np.array([0, 3]))
    with pytest.raises(cr.ShapeError, match="class indices of shape"):
        F.cross_entropy(z, np.zeros((2, 4)))
    with pytest.raises(cr.DataError, match="integers"):
        F.cross_entropy(z, np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(z, np.array([0, 1]), reduction="avg")


def test_a_custom_loss_composed_from_operations_trains_like_a_built_in_one():
    # cross-entropy written by hand from primitives gives the same gradient as the fused one
    z0 = RNG.standard_normal((8, 4))
    y = np.array([0, 1, 2, 3, 3, 2, 1, 0])

    def my_cross_entropy(logits, target):
        onehot = np.eye(4)[target.data]
        logp = logits - cr.logsumexp(logits, axis=1, keepdims=True)
        return -(logp * onehot).sum() / len(onehot)

    a = cr.tensor(z0, requires_grad=True, dtype="float64")
    b = cr.tensor(z0, requires_grad=True, dtype="float64")
    my_cross_entropy(a, cr.tensor(y)).backward()
    F.cross_entropy(b, y).backward()
    np.testing.assert_allclose(a.grad, b.grad, rtol=1e-12, atol=1e-14)
