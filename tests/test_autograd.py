"""The engine: graph recording, backward order, memoization, accumulation, errors."""

import numpy as np
import pytest

import chainrule as cr
from chainrule import autograd


def test_tensor_defaults_to_float32_and_keeps_integers():
    assert cr.tensor([[1.0, 2.0]]).dtype == np.float32
    assert cr.tensor(np.zeros(3, dtype=np.float64)).dtype == np.float32
    assert cr.tensor([1.0], dtype="float64").dtype == np.float64
    assert cr.tensor([1, 2, 3]).dtype.kind == "i"


def test_attributes_and_conversions():
    x = cr.tensor([[1.0, 2.0]], requires_grad=True)
    assert x.shape == (1, 2) and x.requires_grad and x.grad is None
    assert isinstance(x.data, np.ndarray) and x.numpy() is x.data
    assert cr.tensor([3.5]).item() == 3.5
    d = (x * 2).detach()
    assert not d.requires_grad and d.is_leaf


def test_requires_grad_on_integer_tensor_is_refused():
    with pytest.raises(cr.ChainruleError, match="floating-point"):
        cr.tensor([1, 2], requires_grad=True)


def test_backward_on_non_scalar_needs_gradient():
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(cr.ShapeError, match="gradient="):
        (x * 2).backward()
    (x * 2).backward(np.array([1.0, 10.0]))
    np.testing.assert_allclose(x.grad, [2.0, 20.0])


def test_backward_without_grad_is_refused():
    x = cr.tensor([1.0, 2.0])
    with pytest.raises(cr.ChainruleError, match="does not require grad"):
        x.sum().backward()


def test_matmul_shape_error_names_both_shapes():
    a, b = cr.zeros(32, 64), cr.zeros(65, 10)
    with pytest.raises(cr.ShapeError, match=r"\(32, 64\).*\(65, 10\)"):
        a @ b


def test_leaf_gradients_accumulate_across_calls():
    w = cr.tensor([1.0, -2.0], requires_grad=True)
    (w * 3).sum().backward()
    (w * 3).sum().backward()
    np.testing.assert_allclose(w.grad, [6.0, 6.0])


def test_shared_gradient_arrays_are_not_aliased():
    # add() hands the same array to both parents; accumulating into one must not change the other
    a = cr.tensor([1.0, 2.0], requires_grad=True)
    b = cr.tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward()
    (a * 5).sum().backward()
    np.testing.assert_allclose(a.grad, [6.0, 6.0])
    np.testing.assert_allclose(b.grad, [1.0, 1.0])


def test_reused_tensor_and_diamond_gradients():
    x = cr.tensor(1.5, requires_grad=True, dtype="float64")
    y = x * x          # used twice below
    z = y * 3 + y.exp()  # diamond: two paths from z to y
    z.backward()
    expected = 6 * 1.5 + np.exp(1.5**2) * 2 * 1.5
    assert abs(x.grad - expected) < 1e-10


def test_each_node_is_visited_once_where_naive_recursion_is_exponential():
    # a ladder: each level uses the previous one twice, so there are 2^depth paths
    depth = 40
    x = cr.tensor(0.5, requires_grad=True, dtype="float64")
    h = x
    for _ in range(depth):
        h = h * 0.5 + h * 0.5
    calls = {"n": 0}
    order = autograd.walk(h)

    def counted(node, g, parent_grads):
        calls["n"] += 1

    h.backward(observe=counted)
    interior = sum(1 for n in order if n.grad is None and n is not x) or len(order) - 1
    assert calls["n"] == len(order) - 1  # every node but the leaf, once each
    assert calls["n"] == 3 * depth  # two muls and one add per level: linear, not 2^40
    assert interior > 0
    assert abs(x.grad - 1.0) < 1e-12  # d/dx of h = x at every level


def test_a_chain_of_100000_operations_backpropagates_without_recursion_error():
    x = cr.tensor(1.0, requires_grad=True, dtype="float64")
    h = x
    for _ in range(100_000):
        h = h + 1e-6
    h.backward()
    assert x.grad == 1.0


def test_intermediate_gradients_are_freed_and_graph_released():
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    z = (y * y).sum()
    z.backward()
    assert y.grad is None  # not retained
    with pytest.raises(cr.ChainruleError, match="retain_graph"):
        z.backward()


def test_retain_graph_and_retain_grad():
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    y = (x * 2).retain_grad()
    z = (y * y).sum()
    z.backward(retain_graph=True)
    np.testing.assert_allclose(y.grad, [4.0, 8.0])
    z.backward()
    np.testing.assert_allclose(x.grad, [16.0, 32.0])


def test_no_grad_records_nothing():
    w = cr.tensor([1.0], requires_grad=True)
    with cr.no_grad():
        y = w * 2
        assert not cr.is_grad_enabled()
    assert cr.is_grad_enabled()
    assert not y.requires_grad and y.parents == ()


def test_constructors_are_seeded():
    a = cr.randn(3, 4, generator=7)
    b = cr.randn((3, 4), generator=np.random.default_rng(7))
    np.testing.assert_array_equal(a.data, b.data)
    assert a.dtype == np.float32
    assert cr.zeros(2, 3).shape == (2, 3) and cr.ones(2).data.sum() == 2


def test_broadcast_gradients_are_summed_to_input_shape():
    a = cr.tensor(np.ones((4, 3)), requires_grad=True)
    b = cr.tensor(np.ones((3,)), requires_grad=True)
    c = cr.tensor(np.ones((4, 1)), requires_grad=True)
    (a * b + c).sum().backward()
    assert b.grad.shape == (3,) and np.all(b.grad == 4)
    assert c.grad.shape == (4, 1) and np.all(c.grad == 3)


def test_gradcheck_passes_and_reports_the_worst_entry():
    x = cr.tensor(np.random.default_rng(0).standard_normal((3, 2)), requires_grad=True, dtype="float64")
    assert cr.gradcheck(lambda t: (t.sigmoid() * t.tanh()).sum(axis=1), x)

    def wrong(t):
        # forward of t*t with a backward that forgets the factor 2
        return autograd.node(t.data * t.data, (t,), lambda g: (g * t.data,))

    with pytest.raises(cr.GradcheckError, match=r"input 0 .* element \(\d, \d\).*analytic .* numeric"):
        cr.gradcheck(wrong, x)
