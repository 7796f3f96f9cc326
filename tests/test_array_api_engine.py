"""The engine and the primitives on another array namespace: array-api-strict arrays on a
stand-in device that refuses every NumPy conversion, as GPU arrays do. Each expression runs
once on NumPy and once there (float64); values and input gradients must agree."""

import importlib.util
import re

import numpy as np
import pytest
from conftest import from_strict, rel_err, to_strict

import chainrule as cr
from chainrule import functional as F

RNG = np.random.default_rng(0)


def normal(*shape):
    return RNG.standard_normal(shape)


def positive(*shape):
    return RNG.uniform(0.5, 2.0, shape)


def ties(*shape):
    return RNG.integers(0, 3, shape).astype(np.float64)  # repeated maxima share the gradient


IDX = np.array([2, 0, 2, 1])  # repeats: the gradient of a repeated row is added up

# name -> (function of tensors, its inputs as NumPy arrays: floats get requires_grad)
CASES = {
    "add": (lambda a, b: a + b, [normal(3, 4), normal(3, 4)]),
    "add broadcast leading": (lambda a, b: a + b, [normal(2, 3, 4), normal(4)]),
    "add broadcast ones": (lambda a, b: a + b, [normal(3, 1), normal(1, 4)]),
    "radd number": (lambda a: 2.0 + a, [normal(3)]),
    "sub": (lambda a, b: a - b, [normal(3, 4), normal(4)]),
    "rsub number": (lambda a: 1.0 - a, [normal(3)]),
    "mul broadcast": (lambda a, b: a * b, [normal(4, 1), normal(5)]),
    "truediv": (lambda a, b: a / b, [normal(3, 4), positive(3, 4)]),
    "rtruediv number": (lambda a: 2.0 / a, [positive(5)]),
    "neg": (lambda a: -a, [normal(3)]),
    "pow 2": (lambda a: a**2, [normal(3, 4)]),
    "pow 3.5": (lambda a: a**3.5, [positive(3, 4)]),
    "pow tensor": (lambda a, b: a**b, [positive(3, 4), normal(4)]),
    "rpow": (lambda a: 2.0**a, [normal(3)]),
    "matmul": (lambda a, b: a @ b, [normal(3, 4), normal(4, 5)]),
    "matmul batched": (lambda a, b: a @ b, [normal(2, 3, 4), normal(4, 5)]),
    "matmul vec-mat": (lambda a, b: a @ b, [normal(4), normal(2, 4, 5)]),
    "matmul mat-vec": (lambda a, b: a @ b, [normal(2, 3, 4), normal(4)]),
    "matmul vec-vec": (lambda a, b: a @ b, [normal(4), normal(4)]),
    "sum": (lambda a: a.sum(), [normal(3, 4)]),
    "sum axis": (lambda a: a.sum(axis=1), [normal(3, 4)]),
    "sum axes keepdims": (lambda a: a.sum(axis=(0, 2), keepdims=True), [normal(2, 3, 4)]),
    "mean": (lambda a: a.mean(), [normal(3, 4)]),
    "mean axis keepdims": (lambda a: a.mean(axis=-1, keepdims=True), [normal(3, 4)]),
    "max": (lambda a: a.max(), [ties(3, 4)]),
    "max axis ties": (lambda a: a.max(axis=0), [ties(5, 4)]),
    "min axis keepdims": (lambda a: a.min(axis=1, keepdims=True), [ties(3, 4)]),
    "logsumexp": (lambda a: cr.logsumexp(a), [normal(3, 4)]),
    "logsumexp axis keepdims": (lambda a: a.logsumexp(axis=1, keepdims=True), [normal(3, 4) * 50]),
    "reshape": (lambda a: a.reshape(4, -1), [normal(2, 3, 4)]),
    "transpose": (lambda a: a.transpose(2, 0, 1), [normal(2, 3, 4)]),
    "T": (lambda a: a.T, [normal(3, 4)]),
    "getitem slices": (lambda a: a[1:, ::2], [normal(3, 4)]),
    "getitem int": (lambda a: a[1], [normal(3, 4)]),
    "getitem None ...": (lambda a: a[None, ..., -1], [normal(2, 3, 4)]),
    "getitem int array": (lambda a: a[IDX], [normal(3, 4)]),
    "getitem index tensor": (lambda a, i: a[i], [normal(3, 4), IDX]),
    "getitem array on axis 1": (lambda a: a[:, IDX], [normal(2, 3, 4)]),
    "getitem two arrays": (lambda a, i: a[np.arange(4), i], [normal(4, 3), np.array([0, 2, 2, 1])]),
    "getitem int and array": (lambda a: a[..., 1, np.array([[0, 1], [1, 1]])], [normal(2, 3, 4)]),
    "getitem mask": (lambda a: a[a > 0], [normal(3, 4)]),
    "concat": (lambda a, b: cr.concat([a, b], axis=1), [normal(3, 2), normal(3, 4)]),
    "stack": (lambda a, b: cr.stack([a, b], axis=-1), [normal(3, 2), normal(3, 2)]),
    "exp": (lambda a: a.exp(), [normal(3, 4)]),
    "log": (lambda a: a.log(), [positive(3, 4)]),
    "sqrt": (lambda a: a.sqrt(), [positive(3, 4)]),
    "abs": (lambda a: abs(a), [normal(3, 4)]),
    "clip": (lambda a: a.clip(-0.5, 0.5), [normal(3, 4)]),
    "clip min": (lambda a: a.clip(min=0.0), [normal(3, 4)]),
    "relu": (lambda a: a.relu(), [normal(3, 4)]),
    "sigmoid": (lambda a: a.sigmoid(), [normal(3, 4) * 40]),  # saturated too: e^-a overflows
    "tanh": (lambda a: a.tanh(), [normal(3, 4)]),
    "where": (lambda a, b: cr.where(a > 0, a, b * 2), [normal(3, 4), normal(4)]),
    "where number": (lambda a: cr.where(a > 0, a, 0.0), [normal(3, 4)]),
    "maximum ties": (lambda a, b: cr.maximum(a, b), [ties(3, 4), ties(4)]),
    "maximum number": (lambda a: cr.maximum(a, 0.5), [normal(3, 4)]),
    "minimum": (lambda a, b: cr.minimum(a, b), [normal(3, 4), normal(3, 4)]),
    "composed": (lambda x, w, b: ((x @ w + b).relu() ** 2).mean(), [normal(5, 4), normal(4, 3), normal(3)]),
    # the operations added for issue 17, and the losses' new options
    "var axis": (lambda a: a.var(axis=1), [normal(3, 4)]),
    "var correction 0 keepdims": (lambda a: a.var(axis=(0, 2), correction=0, keepdims=True), [normal(2, 3, 4)]),
    "std": (lambda a: cr.std(a), [normal(3, 4)]),
    "prod with zeros": (lambda a: a.prod(axis=1), [np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0], [1.5, 2.0, -1.0]])]),
    "cumsum": (lambda a: a.cumsum(1), [normal(3, 4)]),
    "cumsum flattened": (lambda a: cr.cumsum(a), [normal(3, 4)]),
    "sign": (lambda a: a.sign() * a, [normal(3, 4)]),
    "sin cos": (lambda a: a.sin() + cr.cos(a), [normal(3, 4)]),
    "log1p expm1": (lambda a: (a * a).log1p() + a.expm1(), [normal(3, 4)]),
    "softplus": (lambda a: F.softplus(a * 10), [normal(3, 4)]),
    "logsigmoid": (lambda a: F.logsigmoid(a * 10), [normal(3, 4)]),
    "silu": (lambda a: F.silu(a * 10), [normal(3, 4)]),
    "gelu": (lambda a: F.gelu(a * 3), [normal(3, 4)]),
    "gelu tanh": (lambda a: F.gelu(a * 3, approximate="tanh"), [normal(3, 4)]),
    "squeeze unsqueeze": (lambda a: a.unsqueeze(0).squeeze(), [normal(3, 4)]),
    "flatten": (lambda a: a.flatten(1), [normal(2, 3, 4)]),
    "broadcast_to": (lambda a: cr.broadcast_to(a, (2, 3, 4)), [normal(3, 1)]),
    "expand": (lambda a: a.expand(2, -1, 4), [normal(3, 1)]),
    "flip": (lambda a: a.flip(0), [normal(3, 4)]),
    "einsum one": (lambda a: cr.einsum("ii->i", a), [normal(3, 3)]),
    "einsum two": (lambda a, b: cr.einsum("bij,bjk->bik", a, b), [normal(2, 3, 4), normal(2, 4, 2)]),
    "einsum repeated and summed": (lambda a, b: cr.einsum("iij,k->jk", a, b), [normal(3, 3, 2), normal(4)]),
    "max nan": (lambda a: a.max(axis=1), [np.array([[1.0, np.nan, 2.0], [3.0, 1.0, 2.0]])]),
    "maximum nan": (lambda a, b: cr.maximum(a, b), [np.array([np.nan, 1.0, 2.0]), np.array([1.0, np.nan, 2.0])]),
    "relu nan": (lambda a: a.relu(), [np.array([np.nan, -1.0, 2.0])]),
    "elu nan": (lambda a: F.elu(a), [np.array([np.nan, -1.0, 2.0])]),
    "pow at zero": (lambda a, b: a**b, [np.array([0.0, 0.0, 0.0, 2.0]), np.array([0.0, 2.0, -1.0, 0.0])]),
    "mean empty": (lambda a: a.mean(axis=0), [np.zeros((0, 3))]),
    "cross_entropy 1-D": (lambda a: F.cross_entropy(a, 2), [normal(4)]),
    "cross_entropy soft target": (lambda a, q: F.cross_entropy(a, q, label_smoothing=0.1), [normal(3, 4), positive(3, 4) / 4]),
    "cross_entropy weight ignore": (
        lambda a: F.cross_entropy(a, np.array([0, -1, 3]), weight=np.array([1.0, 2.0, 0.5, 1.5]), ignore_index=-1, label_smoothing=0.2),
        [normal(3, 4)],
    ),
    "bce pos_weight target": (
        lambda a, y: F.binary_cross_entropy_with_logits(a, y, pos_weight=np.array([0.5, 2.0, 3.0, 1.0])),
        [normal(3, 4) * 4, positive(3, 4) / 2],
    ),
}


def run(fn, arrays, strict=None):
    """Values and input gradients of ``fn`` on NumPy (strict=None) or on the strict device."""
    put = (lambda a: a) if strict is None else (lambda a: to_strict(strict, a))
    ts = [cr.tensor(put(a), requires_grad=a.dtype.kind == "f", dtype=a.dtype) for a in arrays]
    out = fn(*ts)
    if out.data.ndim == 0:
        out.backward()
    else:
        out.backward(cr.tensor(put(np.linspace(-1.0, 2.0, out.data.size).reshape(out.shape)), dtype="float64"))
    return out, [t for t in ts if t.requires_grad]


@pytest.mark.parametrize("name", list(CASES))
def test_values_and_gradients_equal_numpy(strict, name):
    fn, arrays = CASES[name]
    out, leaves = run(fn, arrays)
    out_s, leaves_s = run(fn, arrays, strict)
    assert type(out_s.data).__module__.startswith("array_api_strict") and out_s.data.device == strict[1]
    assert out_s.dtype == strict[0].float64
    same(from_strict(out_s.data), out.data)
    for t, t_s in zip(leaves, leaves_s):
        assert t_s.grad.device == strict[1]
        same(from_strict(t_s.grad), t.grad)


def same(a, b):
    """Equal to 1e-12 of the largest entry (at least 1), with NaN and inf where the other has them."""
    finite = np.isfinite(b)
    np.testing.assert_array_equal(np.isfinite(a), finite)
    np.testing.assert_array_equal(a[~finite], b[~finite])  # (NaN equals NaN here)
    assert rel_err(a[finite], b[finite]) <= 1e-12


def test_no_comparison_conversion_or_reduction_leaks_numpy(strict):
    xp, dev = strict
    a = normal(3, 4)
    t = cr.tensor(to_strict(strict, a), dtype="float64")
    for got, want in [
        (t > 0, a > 0),
        (t <= 0.5, a <= 0.5),
        (t.eq(t), a == a),
        (t.argmax(axis=1), a.argmax(axis=1)),
        (t.argmax(), a.argmax()),
        (t.astype("float32"), a.astype(np.float32)),
        (t.astype("int64"), a.astype(np.int64)),
    ]:
        assert got.data.device == dev
        np.testing.assert_array_equal(from_strict(got.data), want)
    assert t.astype("float32").dtype == xp.float32


def test_tensor_keeps_the_namespace_and_device_of_its_data(strict):
    xp, dev = strict
    a = normal(2, 3)
    t = cr.tensor(to_strict(strict, a))
    assert t.dtype == xp.float32 and t.data.device == dev  # float64 becomes float32, as from NumPy
    assert cr.tensor(to_strict(strict, a), dtype="float64").dtype == xp.float64
    assert cr.tensor(to_strict(strict, np.arange(3))).dtype == xp.int64
    assert t.device == str(dev) and t.shape == (2, 3) and len(t) == 2
    with pytest.raises(cr.ChainruleError, match="floating-point"):
        cr.tensor(to_strict(strict, np.arange(3)), requires_grad=True)
    np.testing.assert_array_equal(t.numpy(), a.astype(np.float32))
    assert isinstance(t.numpy(), np.ndarray) and np.asarray(t).shape == (2, 3)
    assert t.tolist() == a.astype(np.float32).tolist()
    assert t[0, 1].item() == float(np.float32(a[0, 1])) and float(t.sum()) == pytest.approx(a.sum(), rel=1e-6)
    assert "device1" in repr(t)
    for like in (cr.zeros_like(t), cr.ones_like(t)):
        assert like.data.device == dev and like.dtype == xp.float32
    assert cr.zeros_like(t, device="cpu").numpy().shape == (2, 3)
    assert isinstance(t.to("cpu").data, np.ndarray)


def test_no_grad_retain_grad_and_accumulation(strict):
    xp, dev = strict
    a = cr.tensor(to_strict(strict, np.array([1.0, 2.0])), requires_grad=True, dtype="float64")
    b = cr.tensor(to_strict(strict, np.array([3.0, 4.0])), requires_grad=True, dtype="float64")
    with cr.no_grad():
        y = a * 2
    assert not y.requires_grad and y.data.device == dev
    y = (a * 2).retain_grad()
    (y * y).sum().backward()
    np.testing.assert_array_equal(from_strict(y.grad), [4.0, 8.0])
    np.testing.assert_array_equal(from_strict(a.grad), [8.0, 16.0])
    a.grad = None
    (a + b).sum().backward()  # one gradient array for two leaves: accumulating into one must not touch the other
    (a * 5).sum().backward()
    np.testing.assert_array_equal(from_strict(a.grad), [6.0, 6.0])
    np.testing.assert_array_equal(from_strict(b.grad), [1.0, 1.0])
    a.grad = None
    (a * 3).backward([1.0, 10.0])  # Python data is placed on the tensor's device
    np.testing.assert_array_equal(from_strict(a.grad), [3.0, 30.0])
    with pytest.raises(cr.ChainruleError, match="device1"):
        (a * 3).backward(np.ones(2))


def test_gradcheck_runs_in_the_namespace_of_its_inputs(strict):
    x = cr.tensor(to_strict(strict, normal(3, 2)), requires_grad=True, dtype="float64")
    assert cr.gradcheck(lambda t: (t.sigmoid() * t.tanh()).sum(axis=1), x)
    wrong = lambda t: cr.autograd.node(t.data * t.data, (t,), lambda g: (g * t.data,))  # noqa: E731
    with pytest.raises(cr.GradcheckError, match=r"input 0 .* element \(\d, \d\)"):
        cr.gradcheck(wrong, x)


def _numpy_and_strict(strict, order):
    n = cr.tensor(normal(3, 3), dtype="float64")
    s = cr.tensor(to_strict(strict, normal(3, 3)), dtype="float64")
    return (n, s) if order == "numpy first" else (s, n)


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "truediv": lambda a, b: a / b,
    "pow": lambda a, b: a**b,
    "matmul": lambda a, b: a @ b,
    "where": lambda a, b: cr.where(a > 0, a, b),
    "maximum": lambda a, b: cr.maximum(a, b),
    "concat": lambda a, b: cr.concat([a, b]),
    "stack": lambda a, b: cr.stack([a, b]),
    "greater": lambda a, b: a > b,
}


@pytest.mark.parametrize("order", ["numpy first", "strict first"])
@pytest.mark.parametrize("op", list(BINARY))
def test_mixing_devices_is_refused_naming_both(strict, op, order):
    a, b = _numpy_and_strict(strict, order)
    with pytest.raises(cr.ChainruleError, match=r"(?=.*\bcpu\b)(?=.*" + re.escape("device1") + ")"):
        BINARY[op](a, b)


def test_where_refuses_a_condition_from_another_device(strict):
    s = cr.tensor(to_strict(strict, normal(3)), dtype="float64")
    with pytest.raises(cr.ChainruleError, match="device1"):
        cr.where(np.array([True, False, True]), s, s)


def test_index_forms_without_a_scatter_add_are_refused_clearly(strict):
    t = cr.tensor(to_strict(strict, normal(3, 4)), requires_grad=True)
    with pytest.raises(cr.ShapeError, match="slice the tensor first"):
        t[1:, np.array([0, 1])]
    with pytest.raises(cr.ShapeError, match="out of bounds"):
        t[np.array([0, 3])]


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
@pytest.mark.parametrize(
    "make",
    [
        lambda: cr.tensor([1.0, 2.0], device="cuda"),
        lambda: cr.zeros(2, device="cuda"),
        lambda: cr.randn(2, generator=0, device="cuda"),
        lambda: cr.tensor([1.0]).to("cuda"),
    ],
)
def test_cuda_without_cupy_is_a_clear_error(make):
    with pytest.raises(cr.ChainruleError, match="CuPy"):
        make()


def test_constructors_on_the_cpu_keep_their_defaults():
    assert isinstance(cr.zeros(2, 3, device="cpu").data, np.ndarray)
    assert cr.full((2,), 3.0).tolist() == [3.0, 3.0]
    np.testing.assert_array_equal(cr.randn(3, generator=1, device="cpu").data, cr.randn(3, generator=1).data)
    assert cr.tensor([1.0], device="cpu").dtype == np.float32
