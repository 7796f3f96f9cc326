"""The edges where autodiff libraries disagree, against PyTorch in value, gradient and dtype:
pow at base 0, float32 staying float32, means over nothing, gradients to soft targets,
gradients at NaN, unbatched logits. float64 to rtol 1e-9, float32 to rtol 1e-5."""

import numpy as np
import pytest

import chainrule as cr
from chainrule import functional as F
from chainrule import nn

NAN = float("nan")
TOL = {"float64": 1e-9, "float32": 1e-5}


def same(ours, theirs, dtype):
    """Equal to rtol, NaN where NaN, inf where inf (of the same sign)."""
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(theirs, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype] * 1e-3, equal_nan=True)


def check(torch, fn_cr, fn_t, *values, dtype="float64", grad=None):
    """Forward and backward of fn on the same inputs in chainrule and torch: values, input
    gradients and dtypes (of the output and of every gradient)."""
    tdt = getattr(torch, dtype)
    xs = [cr.tensor(np.array(v), requires_grad=True, dtype=dtype) for v in values]
    ts = [torch.tensor(np.array(v), dtype=tdt, requires_grad=True) for v in values]
    out, tout = fn_cr(*xs), fn_t(*ts)
    assert out.dtype == np.dtype(dtype)
    same(out.data, tout.detach().numpy(), dtype)
    g = np.ones(out.shape) if grad is None else np.asarray(grad)
    out.backward(cr.tensor(g, dtype=dtype))
    tout.backward(torch.tensor(g, dtype=tdt))
    for x, t in zip(xs, ts):
        tg = np.zeros(t.shape) if t.grad is None else t.grad.numpy()
        xg = np.zeros(x.shape, dtype=dtype) if x.grad is None else x.grad
        assert xg.dtype == np.dtype(dtype), xg.dtype
        same(xg, tg, dtype)


DTYPES = ["float64", "float32"]

# ---- 1. pow at base 0 --------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0, 0.0, 1, 2, 3, 0.5, -1])
def test_pow_scalar_exponent_at_zero(torch, dtype, p):
    check(torch, lambda x: x**p, lambda t: t**p, [0.0, -0.0, 1.5, -2.0] if p in (0, 1, 2, 3) else [0.0, 1.5], dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pow_tensor_exponent_at_zero_base(torch, dtype):
    base = [0.0, 0.0, 0.0, 0.0, 2.0, -2.0, 0.5]
    expo = [0.0, 2.0, -1.0, -2.5, 0.0, 2.0, -1.5]
    check(torch, lambda a, b: a**b, lambda a, b: a**b, base, expo, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_number_to_a_tensor_power_at_zero_base(torch, dtype):
    check(torch, lambda x: 0.0**x, lambda t: 0.0**t, [-1.0, 0.0, 2.0], dtype=dtype)
    check(torch, lambda x: cr.tensor(0.0, dtype=dtype) ** x, lambda t: torch.tensor(0.0, dtype=t.dtype) ** t, [-1.0, 0.0, 2.0], dtype=dtype)


# ---- 2. float32 gradients stay float32 ------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "name",
    ["max", "max axis", "min", "min axis keepdims", "maximum", "minimum", "maximum 0", "minimum number"],
)
def test_max_min_keep_the_dtype(torch, dtype, name):
    ties = [[1.0, 3.0, 3.0], [2.0, -1.0, 2.0]]
    other = [[1.0, 2.0, 3.0], [0.0, -1.0, 5.0]]
    cases = {
        "max": (lambda x: x.max(), lambda t: t.max()),
        "max axis": (lambda x: x.max(axis=1), lambda t: torch.amax(t, dim=1)),
        "min": (lambda x: x.min(), lambda t: t.min()),
        "min axis keepdims": (lambda x: x.min(axis=0, keepdims=True), lambda t: torch.amin(t, dim=0, keepdim=True)),
        "maximum 0": (lambda x: cr.maximum(x, 0), lambda t: torch.maximum(t, torch.zeros_like(t))),
        "minimum number": (lambda x: cr.minimum(x, 2.0), lambda t: torch.minimum(t, torch.full_like(t, 2.0))),
    }
    if name in ("maximum", "minimum"):
        fn = getattr(cr, name)
        check(torch, fn, getattr(torch, name), ties, other, dtype=dtype)
    else:
        check(torch, *cases[name], ties, dtype=dtype)


def test_hinge_loss_on_a_float32_linear_layer_gives_float32_weight_gradients():
    lin = nn.Linear(3, 1)
    x = cr.randn(8, 3, generator=0)
    cr.maximum(1 - lin(x), 0).mean().backward()
    assert lin.weight.grad.dtype == np.float32 and lin.bias.grad.dtype == np.float32


# ---- 3. a mean over nothing is NaN ---------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", [((0,), None), ((0, 3), None), ((0, 3), 0), ((3, 0), 1), ((2, 0, 3), (0, 1))])
def test_mean_over_nothing_is_nan(torch, dtype, shape, axis):
    dims = axis if axis is not None else tuple(range(len(shape)))
    check(torch, lambda x: x.mean(axis=axis), lambda t: t.mean(dim=dims), np.zeros(shape), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_losses_with_mean_on_an_empty_batch_are_nan(torch, dtype):
    tdt = getattr(torch, dtype)
    z = np.zeros((0, 4))
    check(torch, lambda x: F.mse_loss(x, np.zeros((0, 4))), lambda t: torch.nn.functional.mse_loss(t, torch.zeros(0, 4, dtype=tdt)), z, dtype=dtype)
    check(
        torch,
        lambda x: F.cross_entropy(x, np.zeros(0, dtype=np.int64)),
        lambda t: torch.nn.functional.cross_entropy(t, torch.zeros(0, dtype=torch.long)),
        z,
        dtype=dtype,
    )
    check(
        torch,
        lambda x: F.cross_entropy(x, np.zeros((0, 4))),
        lambda t: torch.nn.functional.cross_entropy(t, torch.zeros(0, 4, dtype=tdt)),
        z,
        dtype=dtype,
    )
    check(
        torch,
        lambda x: F.binary_cross_entropy_with_logits(x, np.zeros((0, 4))),
        lambda t: torch.nn.functional.binary_cross_entropy_with_logits(t, torch.zeros(0, 4, dtype=tdt)),
        z,
        dtype=dtype,
    )


# ---- 4. the gradient reaches a soft target ---------------------------------------------------


def _soft(rows, c, seed):
    q = np.random.default_rng(seed).uniform(0.05, 1.0, (rows, c))
    return q / q.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_sends_a_gradient_to_probability_targets(torch, dtype, reduction, smoothing):
    z = np.random.default_rng(0).standard_normal((5, 4)) * 3
    grad = np.linspace(-1, 2, 5) if reduction == "none" else None
    check(
        torch,
        lambda x, q: F.cross_entropy(x, q, label_smoothing=smoothing, reduction=reduction),
        lambda t, q: torch.nn.functional.cross_entropy(t, q, label_smoothing=smoothing, reduction=reduction),
        z,
        _soft(5, 4, 1),
        dtype=dtype,
        grad=grad,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_with_logits_sends_a_gradient_to_the_target(torch, dtype, reduction):
    rng = np.random.default_rng(2)
    z, y = rng.standard_normal((4, 3)) * 4, rng.uniform(0, 1, (4, 3))
    grad = rng.standard_normal((4, 3)) if reduction == "none" else None
    check(
        torch,
        lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction=reduction),
        lambda x, t: torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction=reduction),
        z,
        y,
        dtype=dtype,
        grad=grad,
    )


# ---- 5. gradients at NaN --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "name, ours, theirs",
    [
        ("relu", lambda x: x.relu(), lambda t: t.relu()),
        ("F.relu", F.relu, None),
        ("elu", F.elu, None),
        ("leaky_relu", lambda x: F.leaky_relu(x, 0.1), lambda t: __import__("torch").nn.functional.leaky_relu(t, 0.1)),
        ("max", lambda x: x.max(), lambda t: t.max()),
        ("max axis", lambda x: x.max(axis=1), lambda t: t.max(dim=1).values),
        ("min", lambda x: x.min(), lambda t: t.min()),
    ],
)
def test_gradients_at_nan(torch, dtype, name, ours, theirs):
    theirs = theirs or getattr(torch.nn.functional, name.split(".")[-1])
    check(torch, ours, theirs, [[1.0, NAN, 2.0], [-1.0, 0.5, NAN]] if "max" in name or "min" in name else [NAN, -1.0, 0.0, 2.0], dtype=dtype)


def test_nan_in_a_fused_network_is_treated_as_unfused():
    """nn.Sequential runs fused_layers; at NaN its gradient is that of the layer-by-layer functions."""
    for act in (nn.ReLU(), nn.ELU()):
        model = nn.Sequential(nn.Linear(2, 3), act, nn.Linear(3, 1))
        x = cr.tensor([[np.nan, 1.0], [0.5, -1.0]])
        model(x).sum().backward()
        fused = [p.grad.copy() for p in model.parameters()]
        model.zero_grad()
        h = act(model[0](x))
        model[2](h).sum().backward()
        for a, b in zip(fused, (p.grad for p in model.parameters())):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_maximum_at_nan(torch, dtype):
    check(torch, cr.maximum, torch.maximum, [NAN, 1.0, 2.0], [1.0, NAN, 2.0], dtype=dtype)


# ---- 6. unbatched logits -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_takes_one_unbatched_sample(torch, dtype, reduction):
    z = [2.0, 0.5, -1.0, 0.3]
    check(
        torch,
        lambda x: F.cross_entropy(x, 2, reduction=reduction, label_smoothing=0.1),
        lambda t: torch.nn.functional.cross_entropy(t, torch.tensor(2), reduction=reduction, label_smoothing=0.1),
        z,
        dtype=dtype,
    )
    check(
        torch,
        lambda x, q: F.cross_entropy(x, q, reduction=reduction),
        lambda t, q: torch.nn.functional.cross_entropy(t, q, reduction=reduction),
        z,
        _soft(1, 4, 3)[0],
        dtype=dtype,
    )


def test_cross_entropy_says_what_shapes_it_takes():
    with pytest.raises(cr.ShapeError, match=r"\(N, C\) or \(C,\), got \(2, 3, 4\)"):
        F.cross_entropy(cr.zeros(2, 3, 4), [0, 1])
    with pytest.raises(cr.ShapeError, match=r"scalar class index or probabilities of shape \(3,\)"):
        F.cross_entropy(cr.zeros(3), [0, 1])
