"""The passes over a compiled step's program (chainrule/program.py): each keeps every element's
bits, and each does what it says (fewer calls, shared buffers) only where that is safe."""

import gc
import weakref

import numpy as np
import pytest

import chainrule as cr
from chainrule import functional as F
from chainrule import nn, optim
from chainrule.program import MERGE_SIZE, bound_methods, merge_siblings, typed_constants
from chainrule.train_step import training_step


def _run(program):
    for f, args, kwargs in program:
        f(*args, **kwargs)


def _fresh(*arrays):
    return {id(a): a for a in arrays}


# ---- typed constants ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "int32"])
@pytest.mark.parametrize("op", [np.add, np.subtract, np.multiply, np.maximum, np.minimum])
@pytest.mark.parametrize("value", [0.1, 1, -3, 1e300, 2**40])
def test_a_python_number_becomes_the_array_dtype_with_the_same_bits(dtype, op, value):
    if np.dtype(dtype).kind == "i" and isinstance(value, float):
        pytest.skip("an integer array with a float gives floats: left as it is")
    a = (np.arange(12) - 5).astype(dtype)
    try:
        with np.errstate(all="ignore"):
            expected = op(a, value)
    except OverflowError:  # NumPy refuses a Python int that does not fit the dtype: so must the pass
        program = typed_constants([(op, (a, value), {"out": (np.empty_like(a),)})])
        assert program[0][1][1] == value
        return
    out = np.empty_like(a)
    program = typed_constants([(op, (a, value), {"out": (out,)})])
    with np.errstate(all="ignore"):
        _run(program)
    assert out.dtype == expected.dtype
    assert np.array_equal(out, expected, equal_nan=True)
    (constant,) = [v for v in program[0][1] if v is not a and v is not out]
    fits = abs(value) < 1e38 if a.dtype == np.float32 else abs(value) < np.iinfo(a.dtype).max if a.dtype.kind == "i" else True
    if fits:  # made a 0-d array of the dtype; a number that overflows the dtype is left alone
        assert isinstance(constant, np.ndarray) and constant.ndim == 0 and constant.dtype == a.dtype
    else:
        assert constant is value


def test_constants_of_mixed_kinds_are_left_alone():
    a = np.arange(4, dtype=np.int64)
    u = np.arange(4, dtype=np.uint8)
    program = [(np.add, (a, 0.5, np.empty(4)), {}), (np.greater, (a, 1.5, np.empty(4, bool)), {}), (np.greater, (u, -1, np.empty(4, bool)), {})]
    assert typed_constants(program) == program


@pytest.mark.parametrize("op", [np.greater, np.less_equal, np.equal, np.not_equal])
@pytest.mark.parametrize("value", [0, 0.1, -2])
def test_a_comparison_with_a_number_keeps_its_answer(op, value):
    a = np.array([-2.0, 0.0, 0.1, 0.10000001, np.nan, np.inf], np.float32)
    out = np.empty(a.shape, bool)
    program = typed_constants([(op, (a, value, out), {})])
    assert isinstance(program[0][1][1], np.ndarray)
    _run(program)
    assert np.array_equal(out, op(a, value))


# ---- merged siblings ------------------------------------------------------------------------


def test_siblings_merge_into_one_call_with_the_same_bits():
    rng = np.random.default_rng(0)
    g = [rng.standard_normal(s).astype(np.float32) for s in [(3, 4), (4,), (4, 2)]]
    p = [rng.standard_normal(x.shape).astype(np.float32) for x in g]
    t = [np.empty_like(x) for x in g]
    lr = np.array(0.1, np.float32)
    program = []
    for gi, pi, ti in zip(g, p, t):
        program += [(np.multiply, (gi, lr, ti), {}), (np.subtract, (pi, ti, pi), {})]
    expected = [x - x.dtype.type(0.1) * y for x, y in zip(p, g)]
    merged, moved = merge_siblings(program, _fresh(*g, *t))
    assert len(merged) == 4  # one multiply, three subtractions (the parameters are not moved)
    assert set(moved) == {id(a) for a in g + t}
    _run(merged)
    for pi, e in zip(p, expected):
        assert np.array_equal(pi, e)
    views = [moved[id(a)] for a in g]
    assert all(v.base is views[0].base for v in views)  # side by side in one buffer
    assert all(np.array_equal(v, a) for v, a in zip(views, g))  # values carried over


def test_a_sibling_never_moves_across_a_write_it_reads_or_a_host_function():
    a, b, c, d = (np.ones(3, np.float32) * k for k in (1, 2, 3, 4))
    two = np.array(2, np.float32)
    ta, tc = np.empty(3, np.float32), np.empty(3, np.float32)
    # the second multiply reads c, which the operation between writes: it stays where it is
    program = [(np.multiply, (a, two, ta), {}), (np.add, (b, d, c), {}), (np.multiply, (c, two, tc), {})]
    merged, moved = merge_siblings(program, _fresh(a, c, ta, tc))
    assert merged == program and not moved
    # nothing moves across a host function (it may write anything)
    program = [(np.multiply, (a, two, ta), {}), (lambda: None, (), {}), (np.multiply, (c, two, tc), {})]
    merged, moved = merge_siblings(program, _fresh(a, c, ta, tc))
    assert len(merged) == 3 and not moved


def test_broadcasting_views_large_and_foreign_arrays_never_merge():
    b = np.ones(4, np.float32)
    x, y = np.ones((3, 4), np.float32), np.ones((3, 4), np.float32)
    ox, oy = np.empty_like(x), np.empty_like(y)
    program = [(np.add, (x, b, ox), {}), (np.add, (y, b, oy), {})]  # a shared (4,) operand broadcasts
    assert merge_siblings(program, _fresh(x, y, ox, oy))[0] == program
    program = [(np.add, (x, x, ox), {}), (np.add, (y, y, oy), {})]
    assert merge_siblings(program, _fresh(ox, oy))[0] == program  # x and y belong to someone else
    big = [np.ones(MERGE_SIZE + 1, np.float32) for _ in range(4)]
    program = [(np.negative, (big[0], big[1]), {}), (np.negative, (big[2], big[3]), {})]
    assert merge_siblings(program, _fresh(*big))[0] == program
    whole = np.ones(8, np.float32)
    program = [(np.negative, (x, ox), {}), (np.negative, (whole[:4], oy[0]), {})]  # a part of an array
    assert merge_siblings(program, _fresh(x, ox, whole, oy))[0] == program


def test_operations_in_place_merge_with_their_positions_tied():
    v = [np.full(3, k, np.float32) for k in (1.0, 2.0, 3.0)]
    m = np.array(0.5, np.float32)
    program = [(np.multiply, (vi, m, vi), {}) for vi in v]
    merged, moved = merge_siblings(program, _fresh(*v))
    assert len(merged) == 1
    _run(merged)
    assert [moved[id(a)].tolist() for a in v] == [[0.5] * 3, [1.0] * 3, [1.5] * 3]


def test_bound_methods_call_the_same_method():
    src = np.arange(10.0)
    idx = np.array([3, 1])
    out = np.empty(2)
    (f, args, kwargs), = bound_methods([(np.ndarray.take, (src, idx), {"out": out})])
    assert f.__self__ is src and args == (idx,)
    f(*args, **kwargs)
    assert out.tolist() == [3.0, 1.0]


# ---- on a compiled step ---------------------------------------------------------------------


def _digits_step(opt_factory):
    cr.manual_seed(0)
    model = nn.MLP([8, 16, 16, 4], activation="relu")
    opt = opt_factory(model.parameters())
    return model, opt, training_step(model, F.cross_entropy, opt)


def test_a_compiled_sgd_step_updates_with_one_multiplication_and_its_gradients_share_a_buffer():
    model, opt, step = _digits_step(lambda ps: optim.SGD(ps, lr=0.1))
    rng = np.random.default_rng(0)
    x, y = cr.tensor(rng.standard_normal((6, 8)).astype(np.float32)), cr.tensor(rng.integers(0, 4, 6))
    for _ in range(3):
        step(x, y)
    (entry,) = step._entries.values()
    lr = opt._typed(x.data)[0]
    uses = [f for f, args, _ in entry.program if any(a is lr for a in args)]
    assert len(uses) == 1  # lr * grad for all six parameters at once
    grads = [p.grad for p in model.parameters()]
    assert len({id(g.base) for g in grads}) == 1 and grads[0].base is not None


def test_gradients_the_step_drops_are_freed_while_it_is_recorded():
    model, opt, step = _digits_step(lambda ps: optim.SGD(ps, lr=0.1))
    rng = np.random.default_rng(0)
    x, y = cr.tensor(rng.standard_normal((6, 8)).astype(np.float32)), cr.tensor(rng.integers(0, 4, 6))
    step(x, y)  # the eager call that discovers the step, leaving gradients
    old = [weakref.ref(p.grad) for p in model.parameters()]
    seen = []
    inner = step.fn

    def watching(x, y):
        opt.zero_grad()
        gc.collect()
        seen.append(sum(r() is not None for r in old))
        return inner(x, y)

    step.fn = watching
    step(x, y)  # the recording
    assert seen == [0]


def test_a_replay_silences_floating_point_warnings_and_restores_them_even_when_it_raises():
    model, opt, step = _digits_step(lambda ps: optim.SGD(ps, lr=0.1))
    before = np.geterr()
    x = cr.tensor(np.full((6, 8), 1e30, np.float32))  # overflows inside the step
    y = cr.tensor(np.zeros(6, np.int64))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the eager call and the recording warn, as eager steps do
        step(x, y)
        step(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step(x, y)
    assert step.replays == 1 and np.geterr() == before
    with pytest.raises(cr.DataError, match="class targets must lie in"):
        step(x, cr.tensor(np.full(6, 7, np.int64)))
    assert np.geterr() == before
