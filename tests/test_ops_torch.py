"""Every primitive's forward and gradient against PyTorch in float64 (relative error <= 1e-10),
over shapes drawn by hypothesis, broadcasting included; gradcheck on each; a random-graph fuzz test."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import chainrule as cr
from conftest import rel_err

TOL = 1e-10
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def arrays(shape, lo=-3.0, hi=3.0):
    return hnp.arrays(np.float64, shape, elements=st.floats(lo, hi, allow_nan=False, width=64))


def compare(torch, fn_cr, fn_t, *values, seed=0):
    """Forward and backward of fn on the same float64 inputs in chainrule and torch."""
    xs = [cr.tensor(v, requires_grad=True, dtype="float64") for v in values]
    ts = [torch.tensor(np.array(v)).requires_grad_(True) for v in values]
    out, tout = fn_cr(*xs), fn_t(*ts)
    assert out.shape == tuple(tout.shape)
    assert rel_err(out.data, tout.detach().numpy()) <= TOL
    g = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(g)
    tout.backward(torch.tensor(g))
    for x, t in zip(xs, ts):
        tg = np.zeros(t.shape) if t.grad is None else t.grad.numpy()
        xg = np.zeros(x.shape) if x.grad is None else x.grad
        assert xg.shape == tuple(t.shape)
        assert rel_err(xg, tg) <= TOL, (xg, tg)


UNARY = {
    "neg": (lambda x: -x, lambda t: -t, (-3, 3)),
    "exp": (lambda x: x.exp(), lambda t: t.exp(), (-3, 3)),
    "log": (lambda x: x.log(), lambda t: t.log(), (0.1, 3)),
    "sqrt": (lambda x: x.sqrt(), lambda t: t.sqrt(), (0.1, 3)),
    "abs": (lambda x: x.abs(), lambda t: t.abs(), (-3, 3)),
    "relu": (lambda x: x.relu(), lambda t: t.relu(), (-3, 3)),
    "sigmoid": (lambda x: x.sigmoid(), lambda t: t.sigmoid(), (-40, 40)),
    "tanh": (lambda x: x.tanh(), lambda t: t.tanh(), (-5, 5)),
    "clip": (lambda x: x.clip(-0.5, 1.0), lambda t: t.clamp(-0.5, 1.0), (-3, 3)),
    "square": (lambda x: x**2, lambda t: t**2, (-3, 3)),
    "cube": (lambda x: x**3, lambda t: t**3, (-3, 3)),
    "pow_frac": (lambda x: x**1.5, lambda t: t**1.5, (0.1, 3)),
    "rdiv": (lambda x: 2.0 / x, lambda t: 2.0 / t, (0.5, 3)),
    "rsub": (lambda x: 1.0 - x, lambda t: 1.0 - t, (-3, 3)),
    "rpow": (lambda x: 2.0**x, lambda t: 2.0**t, (-3, 3)),
}


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_matches_torch(torch, name):
    fn, tfn, (lo, hi) = UNARY[name]

    @SETTINGS
    @given(hnp.array_shapes(min_dims=0, max_dims=3, max_side=4).flatmap(lambda s: arrays(s, lo, hi)))
    def check(a):
        compare(torch, fn, tfn, a)

    check()


BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: a + b, (-3, 3)),
    "sub": (lambda a, b: a - b, lambda a, b: a - b, (-3, 3)),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, (-3, 3)),
    "div": (lambda a, b: a / b, lambda a, b: a / b, (0.5, 3)),
    "pow": (lambda a, b: a**b, lambda a, b: a**b, (0.5, 2)),
    "maximum": (cr.maximum, lambda a, b: __import__("torch").maximum(a, b), (-3, 3)),
    "minimum": (cr.minimum, lambda a, b: __import__("torch").minimum(a, b), (-3, 3)),
}


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_with_broadcasting_matches_torch(torch, name):
    fn, tfn, (lo, hi) = BINARY[name]

    @SETTINGS
    @given(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=4), st.data())
    def check(shapes, data):
        a = data.draw(arrays(shapes.input_shapes[0], lo, hi))
        b = data.draw(arrays(shapes.input_shapes[1], lo, hi))
        compare(torch, fn, tfn, a, b)

    check()


@SETTINGS
@given(st.sampled_from(["1d1d", "1d2d", "2d1d", "2d2d", "batched", "broadcast_batch"]), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.data())
def test_matmul_matches_torch(torch, kind, m, k, n, data):
    shapes = {
        "1d1d": ((k,), (k,)),
        "1d2d": ((k,), (k, n)),
        "2d1d": ((m, k), (k,)),
        "2d2d": ((m, k), (k, n)),
        "batched": ((2, m, k), (2, k, n)),
        "broadcast_batch": ((3, m, k), (k, n)),
    }[kind]
    a, b = data.draw(arrays(shapes[0])), data.draw(arrays(shapes[1]))
    compare(torch, lambda x, y: x @ y, lambda x, y: x @ y, a, b)


def _axis_cases(ndim):
    return st.one_of(st.none(), st.integers(-ndim, ndim - 1) if ndim else st.none())


@pytest.mark.parametrize("name", ["sum", "mean", "max", "logsumexp"])
def test_reductions_match_torch(torch, name):
    @SETTINGS
    @given(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4).flatmap(lambda s: st.tuples(arrays(s), _axis_cases(len(s)), st.booleans())))
    def check(case):
        a, axis, keep = case
        dims = tuple(range(a.ndim)) if axis is None else (axis,)

        def ours(x):
            return getattr(x, name)(axis=axis, keepdims=keep)

        def theirs(t):
            if name == "max":
                return torch.amax(t, dim=dims, keepdim=keep)
            if name == "logsumexp":
                return torch.logsumexp(t, dim=dims, keepdim=keep)
            return getattr(t, name)(dim=dims, keepdim=keep)

        compare(torch, ours, theirs, a)

    check()


def test_max_ties_share_the_gradient_like_amax(torch):
    compare(torch, lambda x: x.max(axis=1), lambda t: torch.amax(t, dim=1), np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]))


def test_logsumexp_is_stable(torch):
    big = np.array([[1e4, -1e4, 0.0], [1000.0, 1000.0, 1000.0]])
    compare(torch, lambda x: cr.logsumexp(x, axis=1), lambda t: torch.logsumexp(t, dim=1), big)


@SETTINGS
@given(hnp.array_shapes(min_dims=2, max_dims=3, max_side=4).flatmap(arrays), st.randoms())
def test_shape_operations_match_torch(torch, a, rnd):
    perm = list(range(a.ndim))
    rnd.shuffle(perm)
    compare(torch, lambda x: x.transpose(perm), lambda t: t.permute(perm), a)
    compare(torch, lambda x: x.reshape(-1), lambda t: t.reshape(-1), a)
    compare(torch, lambda x: x.T if x.ndim == 2 else x.transpose(), lambda t: t.permute(*reversed(range(t.ndim))), a)


def test_indexing_and_slicing_match_torch(torch):
    a = np.random.default_rng(1).standard_normal((5, 4))
    idx = np.array([0, 2, 2, 4])
    cases = [
        (lambda x: x[1:4, ::2], lambda t: t[1:4, ::2]),
        (lambda x: x[2], lambda t: t[2]),
        (lambda x: x[..., -1], lambda t: t[..., -1]),
        (lambda x: x[idx], lambda t: t[torch.tensor(idx)]),  # repeated index: gradients add up
        (lambda x: x[idx, np.array([1, 0, 1, 3])], lambda t: t[torch.tensor(idx), torch.tensor([1, 0, 1, 3])]),
        (lambda x: x[a > 0], lambda t: t[torch.tensor(a > 0)]),
    ]
    for ours, theirs in cases:
        compare(torch, ours, theirs, a)


def test_where_concat_stack_match_torch(torch):
    rng = np.random.default_rng(2)
    a, b, c = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.standard_normal((3, 2))
    cond = a > 0
    compare(torch, lambda x, y: cr.where(cond, x, y), lambda x, y: torch.where(torch.tensor(cond), x, y), a, b)
    compare(torch, lambda x, y: cr.concat([x, y], axis=1), lambda x, y: torch.cat([x, y], dim=1), a, c)
    compare(torch, lambda x, y: cr.stack([x, y], axis=1), lambda x, y: torch.stack([x, y], dim=1), a, b)
    compare(torch, lambda x, y: cr.where(cond, x, 0.5), lambda x, y: torch.where(torch.tensor(cond), x, torch.tensor(0.5, dtype=torch.float64)) + 0 * y, a, b)


GRADCHECK_OPS = [
    lambda x: x.exp().sum(axis=0),
    lambda x: (x * x + 1).log(),
    lambda x: (x * x + 1).sqrt(),
    lambda x: x.abs() + x.relu() * 2,
    lambda x: x.sigmoid() * x.tanh(),
    lambda x: x.clip(-0.3, 0.4) * 3,
    lambda x: x.max(axis=1),
    lambda x: x.mean(axis=0, keepdims=True),
    lambda x: cr.logsumexp(x, axis=1),
    lambda x: (x @ x.T).reshape(-1),
    lambda x: x[1:, :2] / (x[:-1, 1:] ** 2 + 1),
    lambda x: cr.concat([x, x * 2], axis=0),
    lambda x: cr.stack([x, -x], axis=2),
    lambda x: cr.where(x.data > 0, x, x * 0.1),
    lambda x: cr.maximum(x, x * 0.5) - cr.minimum(x, 0.2),
    lambda x: 2.0**x,
    lambda x: (x * x + 0.5) ** (x * 0.3),
]


@pytest.mark.parametrize("i", range(len(GRADCHECK_OPS)))
def test_gradcheck_on_every_operation(i):
    x = cr.tensor(np.random.default_rng(i).uniform(-1.2, 1.2, (3, 3)), requires_grad=True, dtype="float64")
    assert cr.gradcheck(GRADCHECK_OPS[i], x)


# ---- a fuzz test: random graphs, compared whole with PyTorch -----------------------

UNARY_FUZZ = [
    (lambda x: x.tanh(), lambda t: t.tanh()),
    (lambda x: x.sigmoid(), lambda t: t.sigmoid()),
    (lambda x: (x * x + 1).log(), lambda t: (t * t + 1).log()),
    (lambda x: x.relu(), lambda t: t.relu()),
    (lambda x: -x, lambda t: -t),
    (lambda x: x * 0.7, lambda t: t * 0.7),
    (lambda x: x.exp().clip(None, 5.0), lambda t: t.exp().clamp(max=5.0)),
]
BINARY_FUZZ = [
    (lambda a, b: a + b, lambda a, b: a + b),
    (lambda a, b: a * b, lambda a, b: a * b),
    (lambda a, b: a - b, lambda a, b: a - b),
    (lambda a, b: a / (b * b + 1), lambda a, b: a / (b * b + 1)),
    (lambda a, b: a @ b, lambda a, b: a @ b),
]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(3, 25))
def test_random_graphs_match_torch(torch, seed, n_ops):
    rng = np.random.default_rng(seed)
    leaves = [rng.standard_normal((3, 3)) for _ in range(3)]
    ours = [cr.tensor(v, requires_grad=True, dtype="float64") for v in leaves]
    theirs = [torch.tensor(v, requires_grad=True) for v in leaves]
    pool_c, pool_t = list(ours), list(theirs)
    for _ in range(n_ops):
        if rng.random() < 0.5:
            i = rng.integers(len(pool_c))
            f, g = UNARY_FUZZ[rng.integers(len(UNARY_FUZZ))]
            pool_c.append(f(pool_c[i]))
            pool_t.append(g(pool_t[i]))
        else:
            i, j = rng.integers(len(pool_c), size=2)  # may pick the same node twice: reuse
            f, g = BINARY_FUZZ[rng.integers(len(BINARY_FUZZ))]
            pool_c.append(f(pool_c[i], pool_c[j]))
            pool_t.append(g(pool_t[i], pool_t[j]))
    # the output mixes several nodes, so gradients meet along many paths
    picks = rng.integers(len(pool_c), size=3)
    out_c = sum((pool_c[k].tanh().sum() for k in picks), cr.tensor(0.0, dtype="float64"))
    out_t = sum(pool_t[k].tanh().sum() for k in picks)
    assert rel_err(out_c.data, out_t.detach().numpy()) <= TOL
    out_c.backward()
    out_t.backward()
    for a, t in zip(ours, theirs):
        tg = np.zeros((3, 3)) if t.grad is None else t.grad.numpy()
        ag = np.zeros((3, 3)) if a.grad is None else a.grad
        assert rel_err(ag, tg) <= 1e-9
