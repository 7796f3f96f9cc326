"""Random shapes and values into the public functions: the answer is right, or the error is
chainrule's own (a ChainruleError, a ValueError), never a crash or a silent NaN."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import chainrule as cr
from chainrule import functional as F
from chainrule import nn, optim

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
finite32 = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@SETTINGS
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6), elements=finite32))
def test_softmax_cross_entropy_and_bce_stay_finite(z):
    logits = cr.tensor(z, requires_grad=True)
    p = F.softmax(logits)
    assert np.all(np.isfinite(p.data)) and np.allclose(p.data.sum(axis=1), 1, atol=1e-5)
    assert np.all(np.isfinite(F.log_softmax(logits).data))
    labels = np.arange(len(z)) % z.shape[1]
    loss = F.cross_entropy(logits, labels, label_smoothing=0.1) + F.binary_cross_entropy_with_logits(logits, (z > 0).astype(np.float32))
    loss.backward()
    assert np.isfinite(loss.item()) and np.all(np.isfinite(logits.grad))


@SETTINGS
@given(
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5),
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5),
    st.sampled_from(["add", "mul", "matmul", "where", "maximum", "concat", "sub"]),
)
def test_binary_operations_on_random_shapes(shape_a, shape_b, op):
    a = cr.tensor(np.ones(shape_a), requires_grad=True)
    b = cr.tensor(np.ones(shape_b) * 2, requires_grad=True)
    try:
        if op == "add":
            out = a + b
        elif op == "sub":
            out = a - b
        elif op == "mul":
            out = a * b
        elif op == "matmul":
            out = a @ b
        elif op == "where":
            out = cr.where(a.data > 0, a, b)
        elif op == "maximum":
            out = cr.maximum(a, b)
        else:
            out = cr.concat([a, b], axis=0)
    except ValueError as e:  # chainrule's ShapeError is a ValueError, and so is NumPy's broadcast error
        assert str(e)
        return
    out.sum().backward()
    assert a.grad.shape == a.shape and b.grad.shape == b.shape
    assert np.all(np.isfinite(a.grad)) and np.all(np.isfinite(b.grad))


@SETTINGS
@given(
    st.integers(1, 6), st.integers(1, 6), st.integers(0, 8), st.integers(1, 4),
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-10, 10)),
    st.sampled_from(["cross_entropy", "mse", "bce"]),
)
def test_fit_on_random_data_trains_or_refuses_clearly(n_in, n_out, n, batch, value, loss):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, n_in))  # float64, so any float fits; fit casts to float32
    if n:
        X[0, 0] = value
    if loss == "cross_entropy":
        y = rng.integers(0, n_out + 1, n)  # may hold a label out of range
    elif loss == "bce":
        y = rng.random((n, n_out)) * 1.2  # may leave [0, 1]
    else:
        y = rng.standard_normal((n, n_out))
    model = nn.MLP([n_in, 4, n_out], generator=0)
    try:
        hist = cr.fit(model, loss, optim.SGD(model.parameters(), lr=0.01), X, y, epochs=1, batch_size=batch, progress=False)
    except cr.ChainruleError as e:
        assert str(e)
        return
    assert np.isfinite(hist["loss"][-1])
