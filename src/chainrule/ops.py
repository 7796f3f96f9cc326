"""Differentiable primitives: each one's forward and backward (its VJP) side by side.

Every function here computes its result with the array namespace and passes
:func:`~chainrule.autograd.node` a closure ``backward(g)`` that returns one
gradient per input (``None`` where the input needs none). Gradients may have
the broadcast shape of the output: the engine sums them back to each input's
shape in one place (:func:`~chainrule.autograd.unbroadcast`).

Derived operations (``-``, ``/``, ``min``) are built from primitives and need
no backward of their own. The set is kept small on purpose.
"""

from __future__ import annotations

import builtins
from typing import Any, Sequence

import numpy as np

from .autograd import Tensor, as_tensor, node
from .errors import ShapeError


def _t(x: Any, like: Tensor) -> Tensor:
    return x if isinstance(x, Tensor) else as_tensor(x, like)


# ---- arithmetic ------------------------------------------------------------


def add(a: Tensor, b: Any) -> Tensor:
    """Elementwise ``a + b`` with broadcasting. d/da = d/db = 1."""
    b = _t(b, a)

    def backward(g):
        return g, g

    return node(a.data + b.data, (a, b), backward)


def mul(a: Tensor, b: Any) -> Tensor:
    """Elementwise ``a * b``. d/da = b, d/db = a."""
    b = _t(b, a)

    def backward(g):
        return (g * b.data if a.requires_grad else None, g * a.data if b.requires_grad else None)

    return node(a.data * b.data, (a, b), backward)


def neg(a: Tensor) -> Tensor:
    """``-a``."""

    def backward(g):
        return (-g,)

    return node(-a.data, (a,), backward)


def sub(a: Tensor, b: Any) -> Tensor:
    """``a - b``, composed as ``a + (-b)``."""
    return add(a, neg(_t(b, a)))


def rsub(a: Tensor, b: Any) -> Tensor:
    return add(neg(a), _t(b, a))


def pow(a: Tensor, b: Any) -> Tensor:
    """``a ** b``. d/da = b a^(b-1); for a tensor exponent d/db = a^b log(a) (0 where a = 0)."""
    if not isinstance(b, Tensor):
        p = b
        out = a.data**p

        def backward_scalar(g):
            if p == 2:
                return (g * (2 * a.data),)
            return (g * (p * a.data ** (p - 1)),)

        return node(out, (a,), backward_scalar)
    out = a.data**b.data

    def backward(g):
        ga = g * (b.data * a.data ** (b.data - 1)) if a.requires_grad else None
        gb = None
        if b.requires_grad:
            with np.errstate(divide="ignore", invalid="ignore"):
                gb = g * np.where(a.data == 0, 0, out * np.log(np.where(a.data == 0, 1, a.data)))
        return ga, gb

    return node(out, (a, b), backward)


def rpow(a: Tensor, b: Any) -> Tensor:
    return pow(as_tensor(b, a), a)


def truediv(a: Tensor, b: Any) -> Tensor:
    """``a / b``, composed as ``a * b ** -1`` (a plain number divides directly)."""
    if not isinstance(b, Tensor):
        return mul(a, 1.0 / b)
    return mul(a, pow(b, -1))


def rtruediv(a: Tensor, b: Any) -> Tensor:
    return mul(pow(a, -1), _t(b, a))


def matmul(a: Tensor, b: Any) -> Tensor:
    """Matrix product ``a @ b`` (NumPy's rules for 1-D and batched operands).

    d/da = g @ b^T, d/db = a^T @ g.
    """
    b = _t(b, a)
    ad, bd = a.data, b.data
    if ad.ndim == 0 or bd.ndim == 0:
        raise ShapeError(f"matmul needs arrays of at least one dimension, got shapes {ad.shape} and {bd.shape}")
    k_b = bd.shape[0] if bd.ndim == 1 else bd.shape[-2]
    if ad.shape[-1] != k_b:
        raise ShapeError(
            f"matmul of shapes {ad.shape} and {bd.shape}: the last dimension of the first ({ad.shape[-1]}) "
            f"must equal the {'first' if bd.ndim == 1 else 'second-to-last'} dimension of the second ({k_b})"
        )

    def backward(g):
        ga = gb = None
        if ad.ndim == 1 and bd.ndim == 1:
            return (g * bd if a.requires_grad else None, g * ad if b.requires_grad else None)
        if ad.ndim == 1:  # (k,) @ (..., k, n) -> (..., n)
            if a.requires_grad:
                ga = (bd @ g[..., None])[..., 0]
            if b.requires_grad:
                gb = ad[:, None] * g[..., None, :]
        elif bd.ndim == 1:  # (..., m, k) @ (k,) -> (..., m)
            if a.requires_grad:
                ga = g[..., None] * bd
            if b.requires_grad:
                gb = (np.swapaxes(ad, -1, -2) @ g[..., None])[..., 0]
        else:
            if a.requires_grad:
                ga = g @ np.swapaxes(bd, -1, -2)
            if b.requires_grad:
                gb = np.swapaxes(ad, -1, -2) @ g
        return ga, gb

    return node(ad @ bd, (a, b), backward)


def rmatmul(a: Tensor, b: Any) -> Tensor:
    return matmul(as_tensor(b, a), a)


# ---- reductions ------------------------------------------------------------


def _axes(axis: Any, ndim: int) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(ax % ndim if ndim else ax for ax in axis)


def _expand(g: Any, shape: tuple, axis: Any, keepdims: bool) -> Any:
    """``g`` of a reduction's output shape copied back over the reduced axes, as a new array."""
    out = np.empty(shape, dtype=g.dtype)
    if axis is not None and not keepdims:
        g = np.expand_dims(g, _axes(axis, len(shape)))
    out[...] = g
    return out


def sum(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Sum over ``axis`` (all axes by default). The gradient copies g back over the summed axes."""
    shape = a.data.shape

    def backward(g):
        return (_expand(g, shape, axis, keepdims),)

    return node(a.data.sum(axis=axis, keepdims=keepdims), (a,), backward)


def mean(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis``: the sum divided by the number of entries n; the gradient is g / n
    copied back. A primitive rather than ``sum / n`` for speed (one node; losses end with it)."""
    shape = a.data.shape
    n = 1
    for ax in _axes(axis, a.data.ndim):
        n *= shape[ax]
    scale = 1.0 / builtins.max(n, 1)

    def backward(g):
        return (_expand(g * scale, shape, axis, keepdims),)

    return node(a.data.sum(axis=axis, keepdims=keepdims) * scale, (a,), backward)


def max(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Maximum over ``axis``. The gradient goes to the maximal entries, shared evenly among ties
    (as ``torch.amax``)."""
    kept = a.data.max(axis=axis, keepdims=True)
    out = kept if keepdims else (kept.reshape(()) if axis is None else np.squeeze(kept, _axes(axis, a.data.ndim)))

    def backward(g):
        if not keepdims:
            g = g.reshape(kept.shape)
        mask = a.data == kept
        return (g * mask / mask.sum(axis=axis, keepdims=True),)

    return node(out, (a,), backward)


def min(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Minimum over ``axis``, composed as ``-max(-a)``."""
    return neg(max(neg(a), axis, keepdims))


def logsumexp(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    """``log(sum(exp(a)))`` over ``axis``, computed stably by shifting by the maximum.

    Fused for numerical stability: exp of a large logit would overflow.
    The gradient is ``softmax(a)`` times g.
    """
    x = a.data
    m = x.max(axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    kept = np.log(np.exp(x - m).sum(axis=axis, keepdims=True)) + m
    out = kept if keepdims else (kept.reshape(()) if axis is None else np.squeeze(kept, _axes(axis, x.ndim)))

    def backward(g):
        if not keepdims:
            g = g.reshape(kept.shape)
        return (g * np.exp(x - kept),)

    return node(out, (a,), backward)


# ---- shape -----------------------------------------------------------------


def reshape(a: Tensor, *shape: Any) -> Tensor:
    """The same values in a new shape (one dimension may be -1)."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    try:
        out = a.data.reshape(shape)
    except ValueError:
        raise ShapeError(f"cannot reshape a tensor of shape {a.shape} ({a.data.size} elements) into {shape}") from None
    old = a.data.shape

    def backward(g):
        return (g.reshape(old),)

    return node(out, (a,), backward)


def transpose(a: Tensor, *axes: Any) -> Tensor:
    """Permute the axes (reverse them when none are given, as NumPy)."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    axes = axes or tuple(reversed(range(a.data.ndim)))
    inverse = tuple(np.argsort(axes))

    def backward(g):
        return (g.transpose(inverse),)

    return node(a.data.transpose(axes), (a,), backward)


def _is_basic_index(idx: Any) -> bool:
    items = idx if isinstance(idx, tuple) else (idx,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis for i in items)


def _plain_index(idx: Any) -> Any:
    if isinstance(idx, Tensor):
        return idx.data
    if isinstance(idx, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in idx)
    return idx


def getitem(a: Tensor, idx: Any) -> Tensor:
    """Indexing and slicing, NumPy's rules. The gradient lands on the selected entries
    (added up where an integer array selects an entry twice)."""
    idx = _plain_index(idx)
    try:
        out = a.data[idx]
    except IndexError as e:
        raise ShapeError(f"index {idx!r} does not fit a tensor of shape {a.shape}: {e}") from None
    basic = _is_basic_index(idx)

    def backward(g):
        z = np.zeros_like(a.data, dtype=g.dtype)
        if basic:
            z[idx] = g
        else:
            np.add.at(z, idx, g)
        return (z,)

    return node(out, (a,), backward)


def concat(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis. The gradient is split back at the seams.

    Example:
        >>> cr.concat([a, b], axis=1)
    """
    tensors = tuple(t if isinstance(t, Tensor) else as_tensor(t) for t in tensors)
    if not tensors:
        raise ShapeError("concat needs at least one tensor, got none")
    try:
        out = np.concatenate([t.data for t in tensors], axis=axis)
    except ValueError as e:
        raise ShapeError(f"concat along axis {axis} of shapes {[t.shape for t in tensors]}: {e}") from None
    bounds = np.cumsum([t.data.shape[axis] for t in tensors])[:-1]

    def backward(g):
        return tuple(np.split(g, bounds, axis=axis))

    return node(out, tensors, backward)


def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors of one shape along a new axis."""
    tensors = tuple(t if isinstance(t, Tensor) else as_tensor(t) for t in tensors)
    if not tensors:
        raise ShapeError("stack needs at least one tensor, got none")
    try:
        out = np.stack([t.data for t in tensors], axis=axis)
    except ValueError as e:
        raise ShapeError(f"stack of shapes {[t.shape for t in tensors]}: {e}") from None

    def backward(g):
        return tuple(np.moveaxis(g, axis, 0))

    return node(out, tensors, backward)


# ---- elementwise functions -------------------------------------------------


def exp(a: Tensor) -> Tensor:
    """``e^a``; d/da = e^a."""
    out = np.exp(a.data)

    def backward(g):
        return (g * out,)

    return node(out, (a,), backward)


def log(a: Tensor) -> Tensor:
    """Natural logarithm; d/da = 1/a."""

    def backward(g):
        return (g / a.data,)

    return node(np.log(a.data), (a,), backward)


def sqrt(a: Tensor) -> Tensor:
    """Square root; d/da = 1 / (2 sqrt(a))."""
    out = np.sqrt(a.data)

    def backward(g):
        return (g * 0.5 / out,)

    return node(out, (a,), backward)


def abs(a: Tensor) -> Tensor:
    """``|a|``; d/da = sign(a), taken as 0 at a = 0 (as PyTorch)."""

    def backward(g):
        return (g * np.sign(a.data),)

    return node(np.abs(a.data), (a,), backward)


def clip(a: Tensor, min: float | None = None, max: float | None = None) -> Tensor:
    """Limit values to [min, max]. The gradient passes where min <= a <= max (ends included,
    as ``torch.clamp``) and is 0 elsewhere."""
    x = a.data
    out = np.clip(x, min, max)

    def backward(g):
        mask = True
        if min is not None:
            mask = x >= min
        if max is not None:
            mask = mask & (x <= max)
        return (g * mask,)

    return node(out, (a,), backward)


def relu(a: Tensor) -> Tensor:
    """Rectified linear unit ``max(a, 0)``.

    Derivative: 1 where a > 0, and 0 where a <= 0; at the kink a = 0 we take 0,
    as PyTorch and JAX do, so that a unit sitting exactly at 0 gets no update.
    """
    out = np.maximum(a.data, 0)

    def backward(g):
        return (g * (out > 0),)

    return node(out, (a,), backward)


def sigmoid(a: Tensor) -> Tensor:
    """Logistic function ``1 / (1 + e^-a)``; derivative ``s (1 - s)``, at most 0.25 (at a = 0).

    For a << 0, e^-a overflows to inf and 1 / (1 + inf) gives the correct limit 0,
    so the overflow is silenced rather than avoided (three array passes, in place).
    """
    out = np.negative(a.data, out=np.empty_like(a.data))
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1
    np.reciprocal(out, out=out)

    def backward(g):
        d = 1 - out
        d *= out
        d *= g
        return (d,)

    return node(out, (a,), backward)


def tanh(a: Tensor) -> Tensor:
    """Hyperbolic tangent, zero-centred in (-1, 1); derivative ``1 - tanh^2``, at most 1."""
    out = np.tanh(a.data)

    def backward(g):
        d = 1 - out * out
        d *= g
        return (d,)

    return node(out, (a,), backward)


def where(condition: Any, a: Any, b: Any) -> Tensor:
    """``a`` where ``condition`` holds, else ``b`` (broadcast). The gradient goes to the branch taken.

    Example:
        >>> cr.where(x > 0, x, 0.01 * x)   # leaky ReLU
    """
    cond = condition.data if isinstance(condition, Tensor) else np.asarray(condition)
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        a = as_tensor(a)
    a = a if isinstance(a, Tensor) else as_tensor(a, b)
    b = _t(b, a)

    def backward(g):
        return (
            np.where(cond, g, 0) if a.requires_grad else None,
            np.where(cond, 0, g) if b.requires_grad else None,
        )

    return node(np.where(cond, a.data, b.data), (a, b), backward)


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise maximum. Where a = b the gradient is split in half between them (as PyTorch)."""
    a = a if isinstance(a, Tensor) else as_tensor(a, b if isinstance(b, Tensor) else None)
    b = _t(b, a)

    def backward(g):
        share = (a.data > b.data) + 0.5 * (a.data == b.data)
        return (g * share if a.requires_grad else None, g * (1 - share) if b.requires_grad else None)

    return node(np.maximum(a.data, b.data), (a, b), backward)


def minimum(a: Any, b: Any) -> Tensor:
    """Elementwise minimum, composed as ``-maximum(-a, -b)``."""
    a = a if isinstance(a, Tensor) else as_tensor(a, b if isinstance(b, Tensor) else None)
    return neg(maximum(neg(a), neg(_t(b, a))))


# ---- comparisons (no gradient) ---------------------------------------------


def _compare(fn: Any) -> Any:
    def op(a: Tensor, b: Any) -> Tensor:
        return Tensor(fn(a.data, b.data if isinstance(b, Tensor) else b))

    return op


# ---- Tensor methods ----------------------------------------------------------


def _install() -> None:
    T = Tensor
    T.__add__ = add
    T.__radd__ = add
    T.__sub__ = sub
    T.__rsub__ = rsub
    T.__mul__ = mul
    T.__rmul__ = mul
    T.__truediv__ = truediv
    T.__rtruediv__ = rtruediv
    T.__pow__ = pow
    T.__rpow__ = rpow
    T.__matmul__ = matmul
    T.__rmatmul__ = rmatmul
    T.__neg__ = neg
    T.__getitem__ = getitem
    T.__gt__ = _compare(np.greater)
    T.__ge__ = _compare(np.greater_equal)
    T.__lt__ = _compare(np.less)
    T.__le__ = _compare(np.less_equal)
    T.eq = _compare(np.equal)
    T.sum = sum
    T.mean = mean
    T.max = max
    T.min = min
    T.logsumexp = logsumexp
    T.reshape = reshape
    T.transpose = transpose
    T.T = property(lambda self: transpose(self))
    T.exp = exp
    T.log = log
    T.sqrt = sqrt
    T.abs = abs
    T.__abs__ = abs
    T.clip = clip
    T.relu = relu
    T.sigmoid = sigmoid
    T.tanh = tanh
    T.argmax = lambda self, axis=None: Tensor(self.data.argmax(axis=axis))
    T.astype = lambda self, dtype: Tensor(self.data.astype(dtype), requires_grad=False)


_install()
