"""The operations added for people who write models: forward and gradient against PyTorch in
float64 (relative error <= 1e-10) over shapes drawn by hypothesis, broadcasting included;
gradcheck on each; the new loss options against PyTorch."""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from conftest import torch_copy
from test_ops_torch import compare

import chainrule as cr
from chainrule import functional as F
from chainrule import nn

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def arrays(shape, lo=-3.0, hi=3.0):
    return hnp.arrays(np.float64, shape, elements=st.floats(lo, hi, allow_nan=False, width=64))


def _torch():
    return __import__("torch")


UNARY = {
    "sign": (lambda x: x.sign(), lambda t: t.sign(), (-3, 3)),
    "sin": (lambda x: x.sin(), lambda t: t.sin(), (-6, 6)),
    "cos": (lambda x: cr.cos(x), lambda t: t.cos(), (-6, 6)),
    "log1p": (lambda x: x.log1p(), lambda t: t.log1p(), (-0.9, 3)),
    "expm1": (lambda x: cr.expm1(x), lambda t: t.expm1(), (-3, 3)),
    "softplus": (F.softplus, lambda t: _torch().nn.functional.softplus(t), (-30, 30)),
    "softplus beta": (lambda x: F.softplus(x, beta=2.0, threshold=5.0), lambda t: _torch().nn.functional.softplus(t, beta=2.0, threshold=5.0), (-6, 6)),
    "logsigmoid": (F.logsigmoid, lambda t: _torch().nn.functional.logsigmoid(t), (-40, 40)),
    "silu": (F.silu, lambda t: _torch().nn.functional.silu(t), (-40, 40)),
    "gelu": (F.gelu, lambda t: _torch().nn.functional.gelu(t), (-8, 8)),
    "gelu tanh": (lambda x: F.gelu(x, approximate="tanh"), lambda t: _torch().nn.functional.gelu(t, approximate="tanh"), (-8, 8)),
    "flip": (lambda x: x.flip(), lambda t: t.flip(tuple(range(t.ndim))), (-3, 3)),
    "flatten": (lambda x: x.flatten(), lambda t: t.flatten(), (-3, 3)),
    "squeeze": (lambda x: x.squeeze(), lambda t: t.squeeze(), (-3, 3)),
    "unsqueeze": (lambda x: x.unsqueeze(-1), lambda t: t.unsqueeze(-1), (-3, 3)),
    "var all": (lambda x: x.var(), lambda t: t.var(), (-3, 3)),
    "std all correction 0": (lambda x: x.std(correction=0), lambda t: t.std(correction=0), (-3, 3)),
    "prod all": (lambda x: x.prod(), lambda t: t.prod(), (-2, 2)),
    "cumsum flattened": (lambda x: x.cumsum(), lambda t: t.flatten().cumsum(0), (-3, 3)),
}


@pytest.mark.parametrize("name", list(UNARY))
def test_elementwise_and_shape_operations_match_torch(torch, name):
    fn, tfn, (lo, hi) = UNARY[name]
    min_size = 2 if name.startswith(("var", "std")) else 0  # n - correction > 0 (see test_var_with_too_few_entries)

    @SETTINGS
    @given(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4).filter(lambda s: int(np.prod(s)) >= min_size).flatmap(lambda s: arrays(s, lo, hi)))
    def check(a):
        if name.startswith("std"):
            assume(np.ptp(a) > 0)  # a constant: see test_std_of_a_constant_has_gradient_zero
        compare(torch, fn, tfn, a)

    check()


def _axis_case(draw_shape):
    return draw_shape.flatmap(lambda s: st.tuples(arrays(s, -2, 2), st.integers(-len(s), len(s) - 1), st.booleans()))


@pytest.mark.parametrize("name", ["var", "std", "prod", "cumsum", "flip", "squeeze", "flatten"])
def test_operations_along_an_axis_match_torch(torch, name):
    @SETTINGS
    @given(_axis_case(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)), st.integers(0, 2))
    def check(case, correction):
        a, axis, keep = case
        if name in ("var", "std") and a.shape[axis] - correction <= 0:
            correction = 0
        if name == "std":
            assume(np.all(np.ptp(a, axis=axis) > 0))  # a constant: see test_std_of_a_constant_has_gradient_zero
        ours, theirs = {
            "var": (lambda x: x.var(axis=axis, correction=correction, keepdims=keep), lambda t: t.var(dim=axis, correction=correction, keepdim=keep)),
            "std": (lambda x: x.std(axis=axis, correction=correction, keepdims=keep), lambda t: t.std(dim=axis, correction=correction, keepdim=keep)),
            "prod": (lambda x: x.prod(axis=axis, keepdims=keep), lambda t: t.prod(dim=axis, keepdim=keep)),
            "cumsum": (lambda x: x.cumsum(axis), lambda t: t.cumsum(axis)),
            "flip": (lambda x: x.flip(axis), lambda t: t.flip(axis)),
            "squeeze": (lambda x: x.squeeze(axis), lambda t: t.squeeze(axis)),
            "flatten": (lambda x: x.flatten(axis), lambda t: t.flatten(axis)),
        }[name]
        compare(torch, ours, theirs, a)

    check()


def test_var_and_std_over_several_axes_match_torch(torch):
    a = np.random.default_rng(0).standard_normal((3, 4, 5))
    compare(torch, lambda x: x.var(axis=(0, 2), keepdims=True), lambda t: t.var(dim=(0, 2), keepdim=True), a)
    compare(torch, lambda x: cr.std(x, axis=(1, 2), correction=0), lambda t: t.std(dim=(1, 2), correction=0), a)


def test_std_of_a_constant_has_gradient_zero(torch):
    """A constant slice has std 0 and gradient 0, as PyTorch means it (it masks the gradient where
    std = 0). chainrule shifts each slice by one of its entries first, so the deviations of a
    constant are exactly 0; PyTorch's own std of [0.7014..] * 3 is rounding noise, and its gradient
    noise over noise (0.042): there chainrule differs from PyTorch on purpose."""
    for values in ([2.0, 2.0, 2.0], [0.70146378, 0.70146378, 0.70146378], [1e300, 1e300]):
        x = cr.tensor(values, dtype="float64", requires_grad=True)
        y = x.std()
        y.backward()
        assert y.item() == 0.0 and np.all(x.grad == 0.0)
    compare(torch, lambda x: x.std(axis=1), lambda t: t.std(dim=1), np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 4.0]]))


def test_var_with_too_few_entries_is_nan_or_inf_like_torch(torch):
    for values, correction in (([3.0], 1), ([], 1), ([1.0, 2.0], 2), ([2.0, 2.0], 2)):
        ours = cr.tensor(values, dtype="float64").var(correction=correction).item()
        theirs = torch.tensor(values, dtype=torch.float64).var(correction=correction).item()
        assert np.isnan(ours) == np.isnan(theirs) and (np.isnan(ours) or ours == theirs), (values, ours, theirs)


@pytest.mark.parametrize("zeros", [0, 1, 2])
def test_prod_gradient_with_zeros_matches_torch(torch, zeros):
    a = np.array([[2.0, -1.5, 3.0, 0.5], [1.0, 2.0, -2.0, 4.0]])
    a[0, 1 : 1 + zeros] = 0.0
    a[1, :zeros] = 0.0
    compare(torch, lambda x: x.prod(axis=1), lambda t: t.prod(dim=1), a)
    compare(torch, lambda x: x.prod(), lambda t: t.prod(), a)


@SETTINGS
@given(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3), st.data())
def test_broadcast_to_and_expand_match_torch(torch, shapes, data):
    a = data.draw(arrays(shapes.input_shapes[0]))
    target = shapes.result_shape
    compare(torch, lambda x: cr.broadcast_to(x, target), lambda t: t.broadcast_to(target), a)
    sizes = tuple(-1 if i >= len(target) - a.ndim and n == a.shape[i - len(target) + a.ndim] else n for i, n in enumerate(target))
    compare(torch, lambda x: x.expand(sizes), lambda t: t.expand(sizes), a)
    if sizes:
        compare(torch, lambda x: x.expand(*sizes), lambda t: t.expand(*sizes), a)


def test_argmin_matches_torch(torch):
    a = np.array([[3.0, 1.0, 1.0], [0.5, 2.0, -4.0]])
    assert cr.tensor(a).argmin().item() == torch.tensor(a).argmin().item()
    np.testing.assert_array_equal(cr.tensor(a).argmin(axis=1).data, torch.tensor(a).argmin(dim=1).numpy())
    np.testing.assert_array_equal(cr.tensor(a).argmin(axis=0).data, torch.tensor(a).argmin(dim=0).numpy())


EINSUM = [
    ("ij->ji", [(2, 3)]),
    ("ij->", [(3, 4)]),
    ("ij->j", [(3, 4)]),
    ("ii->i", [(4, 4)]),
    ("ii->", [(3, 3)]),
    ("iij->j", [(3, 3, 2)]),
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("ij,jk", [(2, 3), (3, 4)]),
    ("bij,bjk->bik", [(2, 2, 3), (2, 3, 4)]),
    ("i,i->", [(5,), (5,)]),
    ("i,j->ij", [(2,), (3,)]),
    ("ij,ij->i", [(3, 4), (3, 4)]),
    ("ij,j->i", [(3, 4), (4,)]),
    ("ijk,k->", [(2, 3, 4), (4,)]),
    ("ii,i->i", [(3, 3), (3,)]),
    ("ij,kl->ijkl", [(2, 3), (1, 2)]),
]


@pytest.mark.parametrize("spec, shapes", EINSUM, ids=[s for s, _ in EINSUM])
def test_einsum_matches_torch(torch, spec, shapes):
    @settings(max_examples=10, deadline=None)
    @given(st.tuples(*(arrays(s) for s in shapes)))
    def check(values):
        compare(torch, lambda *xs: cr.einsum(spec, *xs), lambda *ts: torch.einsum(spec, *ts), *values)

    check()


def test_einsum_says_what_is_wrong():
    a, b = cr.zeros(2, 3), cr.zeros(4, 5)
    with pytest.raises(cr.ShapeError, match=r"letter 'j' stands for axes of lengths 3 and 4"):
        cr.einsum("ij,jk->ik", a, b)
    with pytest.raises(cr.ShapeError, match="has shape \\(2, 3\\), and its subscripts 'ijk' name 3 axes"):
        cr.einsum("ijk->i", a)
    with pytest.raises(ValueError, match="'...' is not supported"):
        cr.einsum("...j->j", a)
    with pytest.raises(ValueError, match="one or two tensors"):
        cr.einsum("i,i,i->", cr.zeros(2), cr.zeros(2), cr.zeros(2))
    with pytest.raises(ValueError, match="'k' does not"):
        cr.einsum("ij->k", a)


def test_shape_operations_say_what_is_wrong():
    x = cr.zeros(2, 3)
    with pytest.raises(cr.ShapeError, match="cannot broadcast a tensor of shape \\(2, 3\\) to \\(4, 3, 2\\)"):
        cr.broadcast_to(x, (4, 3, 2))
    with pytest.raises(cr.ShapeError, match="axis 3 is out of range"):
        x.unsqueeze(3)
    with pytest.raises(cr.ShapeError, match="start_axis 1 comes after end_axis 0"):
        x.flatten(1, 0)
    with pytest.raises(ValueError, match="approximate must be one of"):
        F.gelu(x, approximate="erf")


GRADCHECK = [
    lambda x: x.var(axis=0),
    lambda x: x.std(axis=1, correction=0) * 2,
    lambda x: x.prod(axis=1),
    lambda x: x.cumsum(1) * x,
    lambda x: x.sin() * x.cos(),
    lambda x: (x * x).log1p() + x.expm1(),
    lambda x: F.softplus(x * 3) + F.logsigmoid(x),
    lambda x: F.silu(x) * 2,
    lambda x: F.gelu(x * 2) + F.gelu(x, approximate="tanh"),
    lambda x: x.unsqueeze(0).expand(2, 3, 3).flip(0).flatten() * 1.5,
    lambda x: cr.einsum("ij,jk->ik", x, x.T) + cr.einsum("ii->i", x).reshape(3, 1),
    lambda x: x.squeeze().sign() * x,
]


@pytest.mark.parametrize("i", range(len(GRADCHECK)))
def test_gradcheck_on_every_new_operation(i):
    x = cr.tensor(np.random.default_rng(i).uniform(-1.2, 1.2, (3, 3)), requires_grad=True, dtype="float64")
    assert cr.gradcheck(GRADCHECK[i], x)


# ---- the new loss options ----------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.15])
@pytest.mark.parametrize("options", ["weight", "ignore", "weight+ignore", "all ignored"])
def test_cross_entropy_weight_and_ignore_index_match_torch(torch, reduction, smoothing, options):
    rng = np.random.default_rng(3)
    z = rng.standard_normal((6, 4)) * 2
    y = np.array([0, 3, 1, 1, 2, 3])
    w = rng.uniform(0.2, 2.0, 4) if "weight" in options else None
    ignore = None
    if "ignore" in options:
        ignore = -100 if options != "all ignored" else 7
        y = np.where(np.arange(6) % 3 == 1, ignore, y) if options != "all ignored" else np.full(6, 7)
    kw = {"weight": torch.tensor(w)} if w is not None else {}
    if ignore is not None:
        kw["ignore_index"] = ignore
    compare(
        torch,
        lambda x: F.cross_entropy(x, y, label_smoothing=smoothing, reduction=reduction, weight=w, ignore_index=ignore),
        lambda t: torch.nn.functional.cross_entropy(t, torch.tensor(y), label_smoothing=smoothing, reduction=reduction, **kw),
        z,
    ) if options != "all ignored" or reduction != "mean" else _all_ignored(torch, z, y, ignore, smoothing)


def _all_ignored(torch, z, y, ignore, smoothing):
    ours = F.cross_entropy(cr.tensor(z, dtype="float64"), y, label_smoothing=smoothing, ignore_index=ignore)
    theirs = torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor(y), label_smoothing=smoothing, ignore_index=ignore)
    assert np.isnan(ours.item()) and np.isnan(theirs.item())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_weight_with_probability_targets_matches_torch(torch, reduction):
    rng = np.random.default_rng(4)
    z, w = rng.standard_normal((5, 3)), rng.uniform(0.5, 2.0, 3)
    q = rng.uniform(0.1, 1, (5, 3))
    q /= q.sum(axis=1, keepdims=True)
    compare(
        torch,
        lambda x, t: F.cross_entropy(x, t, reduction=reduction, weight=w, label_smoothing=0.1),
        lambda x, t: torch.nn.functional.cross_entropy(x, t, reduction=reduction, weight=torch.tensor(w), label_smoothing=0.1),
        z,
        q,
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("pw_shape", [(3,), (4, 3), (1,)])
def test_bce_with_logits_pos_weight_matches_torch(torch, reduction, pw_shape):
    rng = np.random.default_rng(5)
    z, y, pw = rng.standard_normal((4, 3)) * 5, rng.uniform(0, 1, (4, 3)), rng.uniform(0.3, 4, pw_shape)
    compare(
        torch,
        lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction=reduction, pos_weight=pw),
        lambda x, t: torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction=reduction, pos_weight=torch.tensor(pw)),
        z,
        y,
    )


def test_loss_options_say_what_is_wrong():
    z = cr.zeros(2, 3)
    with pytest.raises(cr.ShapeError, match=r"weight needs one entry per class, shape \(3,\), got \(2,\)"):
        F.cross_entropy(z, [0, 1], weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="gets no gradient"):
        F.cross_entropy(z, [0, 1], weight=cr.ones(3, requires_grad=True))
    with pytest.raises(ValueError, match="ignore_index=0 applies to class-index targets"):
        F.cross_entropy(z, np.full((2, 3), 1 / 3), ignore_index=0)
    with pytest.raises(cr.DataError, match=r"\[0, 2\] \(or equal ignore_index=-1\)"):
        F.cross_entropy(z, [0, 5], ignore_index=-1)
    with pytest.raises(cr.ShapeError, match=r"pos_weight of shape \(2,\) does not broadcast against logits of shape \(2, 3\)"):
        F.binary_cross_entropy_with_logits(z, np.zeros((2, 3)), pos_weight=[1.0, 2.0])


# ---- GELU and SiLU as modules and registry names ---------------------------------------------


@pytest.mark.parametrize("name, torch_cls", [("gelu", "GELU"), ("silu", "SiLU")])
def test_gelu_and_silu_modules_match_torch(torch, name, torch_cls):
    a = np.random.default_rng(6).standard_normal((4, 5)) * 3
    module = nn.activation(name)
    compare(torch, module, getattr(torch.nn, torch_cls)(), a)
    assert type(module).__name__ == torch_cls and name in nn.ACTIVATIONS and name in nn.BEYOND_THE_LESSON
    tanh = nn.GELU(approximate="tanh")
    compare(torch, tanh, torch.nn.GELU(approximate="tanh"), a)
    assert nn.GELU(**tanh.get_config()).approximate == "tanh"


@pytest.mark.parametrize("name", ["gelu", "silu"])
def test_an_mlp_of_gelu_or_silu_matches_torch_and_starts_he_initialized(torch, name):
    model = nn.MLP([5, 8, 8, 3], activation=name, generator=0, dtype="float64")
    assert model.init == "he_normal"
    compare(torch, model, torch_copy(torch, model), np.random.default_rng(7).standard_normal((6, 5)))
