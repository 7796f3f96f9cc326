"""Differentiable primitives: each one's forward and backward (its VJP) side by side.

Every function here computes its result with the array namespace and passes
:func:`~chainrule.autograd.node` a closure ``backward(g)`` that returns one
gradient per input (``None`` where the input needs none). Gradients may have
the broadcast shape of the output: the engine sums them back to each input's
shape in one place (:func:`~chainrule.autograd.unbroadcast`).

Derived operations (``-``, ``/``, ``min``) are built from primitives and need
no backward of their own. The set is kept small on purpose.

Each primitive runs in the namespace of its input's data (``xp``: NumPy, CuPy,
an array-API namespace) with array-API calls only; the hot ones (add, mul,
matmul, relu, sigmoid) keep NumPy-only speed-ups (methods, ``out=``, in-place
ufuncs) behind ``xp is np``. Inputs of one operation must share a device: a
type test (one comparison on the NumPy path) catches a mix and
:func:`~chainrule.backend.check_same_device` names both devices.
"""

from __future__ import annotations

import builtins
import operator
from typing import Any, Sequence

import numpy as np

from .activation_rules import ACTIVATION_RULES, GELU_APPROXIMATIONS
from .autograd import Tensor, leaf, as_tensor, node
from .backend import NUMPY_TYPES, asarray, check_same_device, dtype_in, is_array, is_foreign, namespace, quiet
from .errors import ShapeError


_RELU, _SIGMOID, _TANH, _SILU, _GELU = (ACTIVATION_RULES[n] for n in ("relu", "sigmoid", "tanh", "silu", "gelu"))


def _t(x: Any, like: Tensor) -> Tensor:
    return x if isinstance(x, Tensor) else as_tensor(x, like)


def _same_place(op: str, tensors: Sequence[Tensor]) -> None:
    first = type(tensors[0].data)
    for t in tensors[1:]:
        if type(t.data) is not first:
            check_same_device(op, *(t.data for t in tensors))


# ---- arithmetic ------------------------------------------------------------


def add(a: Tensor, b: Any) -> Tensor:
    """Elementwise ``a + b`` with broadcasting. d/da = d/db = 1."""
    b = _t(b, a)
    if type(a.data) is not type(b.data):
        check_same_device("add", a.data, b.data)

    def backward(g):
        return g, g

    return node(a.data + b.data, (a, b), backward)


def mul(a: Tensor, b: Any) -> Tensor:
    """Elementwise ``a * b``. d/da = b, d/db = a."""
    b = _t(b, a)
    if type(a.data) is not type(b.data):
        check_same_device("mul", a.data, b.data)

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
    """``a ** b``. d/da = b a^(b-1), taken as 0 where b = 0 (so 0 ** 0 has slope 0, not 0 * inf);
    for a tensor exponent d/db = a^b log(a), taken as 0 where a = 0 and b >= 0 (PyTorch's rules:
    at a = 0 and b < 0 it is -inf)."""
    if not isinstance(b, Tensor) and not isinstance(b, (int, float, np.generic)):
        b = as_tensor(b, a)  # an array exponent: the tensor rule, with no gradient for it
    if not isinstance(b, Tensor):
        p = _number(b)
        if p < 0:
            with quiet(namespace(a.data)):  # 0 ** -1 is inf, as in PyTorch: no warning
                out = a.data**p
        else:
            out = a.data**p

        def backward_scalar(g):
            if p == 2:
                return (g * (2 * a.data),)
            if p == 0:
                return (namespace(g).zeros_like(g),)
            if p < 1:
                with quiet(namespace(g)):
                    return (g * (p * a.data ** (p - 1)),)
            return (g * (p * a.data ** (p - 1)),)

        return node(out, (a,), backward_scalar)
    if type(a.data) is not type(b.data):
        check_same_device("pow", a.data, b.data)
    xp = namespace(a.data)
    with quiet(xp):  # 0 ** -1 is inf, as in PyTorch: no warning
        out = a.data**b.data

    def backward(g):
        ad, bd = a.data, b.data
        ga = gb = None
        with quiet(xp):  # log of a negative base is NaN, and 0 ** -1 inf, as in PyTorch: no warning
            if a.requires_grad:
                ga = xp.where(bd == 0, 0.0, g * (bd * ad ** (bd - 1)))
            if b.requires_grad:
                zero = ad == 0
                gb = xp.where(zero & (bd >= 0), 0.0, g * (out * xp.log(ad)))
        return ga, gb

    return node(out, (a, b), backward)


def _number(v: Any) -> Any:
    """A NumPy scalar as the Python number it holds: NumPy 2 would let a float64 scalar turn a
    float32 array into float64, and array-API arrays take Python numbers only."""
    return v.item() if isinstance(v, np.generic) else v


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
    if type(ad) is not type(bd):
        check_same_device("matmul", ad, bd)
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
                gb = (_mT(ad) @ g[..., None])[..., 0]
        else:
            if a.requires_grad:
                ga = g @ _mT(bd)
            if b.requires_grad:
                gb = _mT(ad) @ g
        return ga, gb

    return node(ad @ bd, (a, b), backward)


def rmatmul(a: Tensor, b: Any) -> Tensor:
    return matmul(as_tensor(b, a), a)


def _mT(x: Any) -> Any:
    """The last two axes of ``x`` swapped (``.T`` for a NumPy matrix: the cheapest view)."""
    if type(x) in NUMPY_TYPES:
        return x.T if x.ndim == 2 else np.swapaxes(x, -1, -2)
    return x.mT


# ---- reductions ------------------------------------------------------------


def _axes(axis: Any, ndim: int) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(ax % ndim if ndim else ax for ax in axis)


def _axis_arg(axis: Any) -> Any:
    """``axis`` as the array API takes it: None, an int or a tuple (not a list)."""
    return tuple(axis) if isinstance(axis, list) else axis


def _kept_shape(shape: tuple, axis: Any) -> tuple:
    """The shape of a reduction over ``axis`` with ``keepdims=True``."""
    axes = _axes(axis, len(shape))
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _squeeze(kept: Any, axis: Any) -> Any:
    """A reduction's result kept with ``keepdims=True``, without the reduced axes."""
    axes = _axes(axis, kept.ndim)
    shape = tuple(n for i, n in enumerate(kept.shape) if i not in axes)
    return kept.reshape(shape) if type(kept) in NUMPY_TYPES else namespace(kept).reshape(kept, shape)


def _expand(g: Any, shape: tuple, axis: Any, keepdims: bool) -> Any:
    """``g`` of a reduction's output shape copied back over the reduced axes."""
    if type(g) not in NUMPY_TYPES and not isinstance(g, np.generic):  # (NumPy makes scalars of 0-d results)
        xp = namespace(g)
        # a read-only broadcast view: no backward writes into g, and a leaf gets a copy
        return xp.broadcast_to(xp.reshape(g, _kept_shape(shape, axis)), shape)
    out = np.empty_like(g, shape=shape, order="C")  # (made from g: a recording of cr.compile sees it)
    if axis is not None and not keepdims:
        g = np.expand_dims(g, _axes(axis, len(shape)))
    out[...] = g
    return out


def sum(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Sum over ``axis`` (all axes by default). The gradient copies g back over the summed axes."""
    x = a.data
    shape = x.shape

    def backward(g):
        return (_expand(g, shape, axis, keepdims),)

    if type(x) in NUMPY_TYPES:
        out = x.sum(axis=axis, keepdims=keepdims)
    else:
        out = namespace(x).sum(x, axis=_axis_arg(axis), keepdims=keepdims)
    return node(out, (a,), backward)


def inverse_count(n: int) -> float:
    """1 / n, the factor of a mean over n entries: NaN for n = 0, as PyTorch (a mean over nothing
    is undefined; 0 would hide an empty batch)."""
    return 1.0 / n if n else float("nan")


def mean(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis``: the sum divided by the number of entries n; the gradient is g / n
    copied back. NaN over no entries (n = 0), as PyTorch. A primitive rather than ``sum / n``
    for speed (one node; losses end with it)."""
    x = a.data
    shape = x.shape
    n = 1
    for ax in _axes(axis, x.ndim):
        n *= shape[ax]
    scale = inverse_count(n)

    def backward(g):
        return (_expand(g * scale, shape, axis, keepdims),)

    if type(x) in NUMPY_TYPES:
        out = x.sum(axis=axis, keepdims=keepdims)
    else:
        out = namespace(x).sum(x, axis=_axis_arg(axis), keepdims=keepdims)
    return node(out * scale, (a,), backward)


def max(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Maximum over ``axis``. The gradient goes to the maximal entries, shared evenly among ties
    (as ``torch.amax``). Where NaN is the maximum, the gradient goes to the NaN entries (as
    ``torch.max()``; ``torch.amax`` would give NaN to every entry)."""
    x = a.data
    if type(x) in NUMPY_TYPES:
        kept = x.max(axis=axis, keepdims=True)

        def backward(g):
            if not keepdims:
                g = g.reshape(kept.shape)
            mask = x == kept
            if kept.dtype.kind == "f":
                mask |= x != x  # NaN entries: where one is, the maximum is NaN and no entry equals it
            return (g * mask / mask.sum(axis=axis, keepdims=True, dtype=g.dtype),)

    else:
        xp = namespace(x)
        kept = xp.max(x, axis=_axis_arg(axis), keepdims=True)

        def backward(g):
            if not keepdims:
                g = xp.reshape(g, kept.shape)
            mask = xp.astype((x == kept) | xp.isnan(x), g.dtype)
            return (g * mask / xp.sum(mask, axis=_axis_arg(axis), keepdims=True),)

    return node(kept if keepdims else _squeeze(kept, axis), (a,), backward)


def min(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Minimum over ``axis``, composed as ``-max(-a)``."""
    return neg(max(neg(a), axis, keepdims))


def logsumexp(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    """``log(sum(exp(a)))`` over ``axis``, computed stably by shifting by the maximum.

    Fused for numerical stability: exp of a large logit would overflow.
    The gradient is ``softmax(a)`` times g.
    """
    x = a.data
    xp = namespace(x)
    ax = _axis_arg(axis)
    m = xp.max(x, axis=ax, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0.0)  # all -inf (or inf): shift by 0, not by NaN-making inf
    kept = xp.log(xp.sum(xp.exp(x - m), axis=ax, keepdims=True)) + m
    out = kept if keepdims else _squeeze(kept, axis)

    def backward(g):
        if not keepdims:
            g = xp.reshape(g, kept.shape)
        return (g * xp.exp(x - kept),)

    return node(out, (a,), backward)


def _count(shape: tuple, axis: Any) -> int:
    """The number of entries a reduction over ``axis`` takes together."""
    n = 1
    for ax in _axes(axis, len(shape)):
        n *= shape[ax]
    return n


def _spread(x: Any, axis: Any, correction: int) -> tuple:
    """(deviations from the mean, the variance kept with ``keepdims=True``, 1 / (n - correction))
    of array ``x`` over ``axis``: var's and std's shared forward."""
    xp = namespace(x)
    ax = _axis_arg(axis)
    axes = _axes(axis, x.ndim)
    n = _count(x.shape, axis)
    dof = n - correction
    scale = 1.0 / dof if dof > 0 else float("inf")  # a divisor of 0 (as PyTorch): NaN or inf
    # shifted by one entry of each slice first, so that a constant slice has deviations of
    # exactly 0 (and std's gradient there is 0, not rounding noise divided by rounding noise)
    first = x[tuple(slice(0, 1) if i in axes else slice(None) for i in range(x.ndim))]
    with quiet(xp):
        shifted = x - first
        d = shifted - xp.sum(shifted, axis=ax, keepdims=True) * inverse_count(n)
        return d, xp.sum(d * d, axis=ax, keepdims=True) * scale, scale


def var(a: Tensor, axis: Any = None, correction: int = 1, keepdims: bool = False) -> Tensor:
    """Variance over ``axis``: ``sum((a - mean)^2) / (n - correction)``; ``correction=1`` (the
    default, as PyTorch) is the unbiased estimate, 0 the mean square deviation.

    d/da = 2 (a - mean) / (n - correction). With n - correction <= 0 the divisor is 0 (as
    PyTorch): NaN where every deviation is 0, inf elsewhere.

    Example:
        >>> cr.tensor([1.0, 2.0, 3.0, 4.0]).var()               # 1.6667
        >>> cr.tensor([1.0, 2.0, 3.0, 4.0]).var(correction=0)   # 1.25
    """
    x = a.data
    xp = namespace(x)
    d, kept, scale = _spread(x, axis, correction)

    def backward(g):
        if not keepdims:
            g = xp.reshape(g, kept.shape)
        with quiet(xp):
            return (g * d * (2 * scale),)

    return node(kept if keepdims else _squeeze(kept, axis), (a,), backward)


def std(a: Tensor, axis: Any = None, correction: int = 1, keepdims: bool = False) -> Tensor:
    """Standard deviation over ``axis``, ``sqrt(var(a, axis, correction))``.

    d/da = (a - mean) / ((n - correction) std), taken as 0 where std = 0 (as PyTorch: a
    constant slice has no direction to grow in).
    """
    x = a.data
    xp = namespace(x)
    d, v, scale = _spread(x, axis, correction)
    kept = xp.sqrt(v)

    def backward(g):
        if not keepdims:
            g = xp.reshape(g, kept.shape)
        with quiet(xp):
            return (xp.where(kept == 0, 0.0, g / kept) * d * scale,)

    return node(kept if keepdims else _squeeze(kept, axis), (a,), backward)


def prod(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Product over ``axis``. d/da_j = the product of the other entries: ``out / a_j`` where no
    entry is 0; with one zero, that product at the zero and 0 elsewhere; with two or more, 0.

    Example:
        >>> cr.tensor([[1.0, 2.0], [3.0, 4.0]]).prod(axis=1)   # [2.0, 12.0]
    """
    x = a.data
    xp = namespace(x)
    ax = _axis_arg(axis)
    kept = xp.prod(x, axis=ax, keepdims=True)

    def backward(g):
        if not keepdims:
            g = xp.reshape(g, kept.shape)
        zero = x == 0
        zeros = xp.sum(xp.astype(zero, x.dtype), axis=ax, keepdims=True)
        nonzero = xp.where(zero, 1.0, x)
        others = xp.prod(nonzero, axis=ax, keepdims=True)  # the product of the entries that are not 0
        d = xp.where(zero, xp.where(zeros == 1, others, 0.0), xp.where(zeros == 0, kept / nonzero, 0.0))
        return (g * d,)

    return node(kept if keepdims else _squeeze(kept, axis), (a,), backward)


def cumsum(a: Tensor, axis: int | None = None) -> Tensor:
    """Running sum along ``axis`` (over the flattened tensor when it is None, as NumPy).
    The gradient is the running sum of g taken from the other end.

    Example:
        >>> cr.tensor([1.0, 2.0, 3.0]).cumsum(0)   # [1.0, 3.0, 6.0]
    """
    x = a.data
    if axis is None:
        return cumsum(reshape(a, -1), 0)
    if x.ndim == 0:
        return reshape(cumsum(reshape(a, 1), 0), ())
    xp = namespace(x)
    ax = _one_axis(axis, x.ndim, "cumsum")

    def backward(g):
        return (xp.flip(_cumsum(xp, xp.flip(g, axis=ax), ax), axis=ax),)

    return node(_cumsum(xp, x, ax), (a,), backward)


def _cumsum(xp: Any, x: Any, axis: int) -> Any:
    """NumPy's and CuPy's ``cumsum``, the array API's ``cumulative_sum``."""
    f = getattr(xp, "cumsum", None)
    return f(x, axis=axis) if f is not None else xp.cumulative_sum(x, axis=axis)


def _one_axis(axis: Any, ndim: int, op: str) -> int:
    """``axis`` as a non-negative axis of an ``ndim``-dimensional tensor, or a ShapeError."""
    if not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ShapeError(f"{op}: axis {axis!r} is out of range for a tensor of {ndim} dimensions")
    return int(axis) % ndim


# ---- shape -----------------------------------------------------------------


def reshape(a: Tensor, *shape: Any) -> Tensor:
    """The same values in a new shape (one dimension may be -1)."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    x = a.data
    xp = namespace(x)
    try:
        out = xp.reshape(x, shape)
    except ValueError:
        raise ShapeError(f"cannot reshape a tensor of shape {a.shape} ({x.size} elements) into {shape}") from None
    old = x.shape

    def backward(g):
        return (xp.reshape(g, old),)

    return node(out, (a,), backward)


def transpose(a: Tensor, *axes: Any) -> Tensor:
    """Permute the axes (reverse them when none are given, as NumPy)."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    x = a.data
    axes = tuple(ax % x.ndim for ax in axes) or tuple(reversed(range(x.ndim)))
    inverse = tuple(sorted(range(len(axes)), key=axes.__getitem__))
    if type(x) in NUMPY_TYPES:
        return node(x.transpose(axes), (a,), lambda g: (g.transpose(inverse),))
    xp = namespace(x)
    return node(xp.permute_dims(x, axes), (a,), lambda g: (xp.permute_dims(g, inverse),))


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
    (added up where an integer array selects an entry twice).

    On other namespaces than NumPy (see :func:`_getitem_any`): integers, slices, None and
    ``...``; one boolean mask; integer arrays on adjacent axes, the others taken whole (``:``).
    """
    idx = _plain_index(idx)
    x = a.data
    if type(x) not in NUMPY_TYPES:
        return _getitem_any(a, idx)
    try:
        out = x[idx]
    except IndexError as e:
        raise ShapeError(f"index {idx!r} does not fit a tensor of shape {a.shape}: {e}") from None
    basic = _is_basic_index(idx)

    def backward(g):
        z = np.zeros_like(x, dtype=g.dtype)
        if basic:
            z[idx] = g
        else:
            np.add.at(z, idx, g)  # an entry selected twice gets both gradients
        return (z,)

    return node(out, (a,), backward)


def _getitem_any(a: Tensor, idx: Any) -> Tensor:
    """``getitem`` on an array-API namespace, whose ``__setitem__`` has no integer-array form and
    which has no scatter-add: the gradient of an integer-array index is a product with a one-hot
    matrix (CuPy adds up with ``cupyx.scatter_add`` instead, for every NumPy index form)."""
    x = a.data
    xp = namespace(x)
    items = [_index_item(xp, x, i) for i in (idx if isinstance(idx, tuple) else (idx,))]
    arrays = [k for k, i in enumerate(items) if is_array(i)]
    if _cupyx(x) is not None and arrays:  # CuPy indexes as NumPy does and has a scatter-add
        key = tuple(items)
        return node(x[key], (a,), lambda g: (_scatter_add_cupy(x, key, g),))
    if not arrays:  # integers, slices, None, ...: a view, and its gradient a slice assignment
        key = _full_key(items, x.ndim)
        try:
            out = x[key]
        except IndexError as e:
            raise ShapeError(f"index {idx!r} does not fit a tensor of shape {a.shape}: {e}") from None

        def backward(g):
            z = xp.zeros_like(x, dtype=g.dtype)
            # __setitem__ takes no None: drop them, and the length-1 axes they made in g
            into = tuple(i for i in key if i is not None)
            z[into] = xp.reshape(g, z[into].shape) if len(into) < len(key) else g
            return (z,)

        return node(out, (a,), backward)
    if len(items) == 1 and xp.isdtype(items[0].dtype, "bool"):  # one boolean mask
        mask = items[0]
        out = x[mask]

        def backward_mask(g):
            z = xp.zeros_like(x, dtype=g.dtype)
            z[mask] = g
            return (z,)

        return node(out, (a,), backward_mask)
    return _take_rows(a, items, arrays, idx)


def _index_item(xp: Any, x: Any, i: Any) -> Any:
    """One entry of an index in the namespace of ``x``: NumPy arrays and lists become arrays on
    its device, NumPy integers Python ints."""
    if isinstance(i, (int, slice)) or i is None or i is Ellipsis:
        return i
    if isinstance(i, np.integer):
        return int(i)
    if is_foreign(i):
        if type(i) is not type(x):
            check_same_device("getitem", x, i)
        return i
    return asarray(np.asarray(i), x)


def _full_key(items: list, ndim: int) -> tuple:
    """A basic index with a trailing ``...`` where it names fewer axes than ``ndim``: NumPy
    fills in ``:`` for the rest, the array API asks for it to be written."""
    if any(i is Ellipsis for i in items) or builtins.sum(i is not None for i in items) >= ndim:
        return tuple(items)
    return (*items, Ellipsis)


def _take_rows(a: Tensor, items: list, arrays: list, idx: Any) -> Tensor:
    """Integer-array indexing ``x[:, i, j, :]``: the arrays (and integers) on adjacent axes
    p..p+k-1 select entries of those axes flattened into one, which ``take`` gathers.

    Backward: entry f of the gathered axis goes back to row ``flat[f]``; with the one-hot
    matrix H[f, r] = (flat[f] == r), the gradient is H^T @ g, which also adds up repeated rows.
    Exact (sums of g times 0 or 1), and standard; its time grows as (entries picked) x (rows).
    """
    x = a.data
    xp = namespace(x)
    if any(i is Ellipsis for i in items):  # spell out ... as the ':' it stands for
        e = next(k for k, i in enumerate(items) if i is Ellipsis)
        items = items[:e] + [slice(None)] * (x.ndim - len(items) + 1) + items[e + 1 :]
        arrays = [k for k, i in enumerate(items) if is_array(i)]
    items = items + [slice(None)] * (x.ndim - len(items))
    p = q = arrays[0]
    while p > 0 and not isinstance(items[p - 1], slice):
        p -= 1
    while q < len(items) and not isinstance(items[q], slice):
        q += 1  # the run of arrays and integers around the first array: axes p..q-1
    whole = slice(None)
    rest = items[:p] + items[q:]
    if len(items) > x.ndim or arrays[-1] >= q or any(not isinstance(i, slice) or i != whole for i in rest):
        raise ShapeError(
            f"index {idx!r} of a tensor of shape {a.shape} on {type(x).__module__.split('.')[0]}: "
            "integer arrays are supported on adjacent axes with every other axis taken whole (':'); "
            "slice the tensor first, then index it"
        )
    flat = 0
    for i, n in zip(items[p:q], x.shape[p:q]):
        if isinstance(i, int):
            if not -n <= i < n:
                raise ShapeError(f"index {i} is out of bounds for an axis of size {n} in a tensor of shape {a.shape}")
            i = i % n
        else:
            if not xp.isdtype(i.dtype, "integral"):
                raise ShapeError(f"index arrays must hold integers or be one boolean mask, got dtype {i.dtype}")
            if builtins.bool(xp.any((i < -n) | (i >= n))):
                raise ShapeError(f"an index is out of bounds for an axis of size {n} in a tensor of shape {a.shape}")
            i = xp.where(i < 0, i + n, i)
        flat = flat * n + i
    rows = _prod(x.shape[p:q])
    pre, post = x.shape[:p], x.shape[q:]
    picked = flat.shape
    flat = xp.reshape(flat, (-1,))
    out = xp.take(xp.reshape(x, (*pre, rows, *post)), flat, axis=p)
    out = xp.reshape(out, (*pre, *picked, *post))

    def backward(g):
        g3 = xp.reshape(g, (_prod(pre), flat.shape[0], _prod(post)))
        ids = xp.arange(rows, dtype=flat.dtype, device=x.device)[None, :]
        step = builtins.max(1, _ONE_HOT_ENTRIES // rows)  # bounds H's memory: it is built in blocks of entries
        z = 0
        for lo in range(0, flat.shape[0], step):
            hi = builtins.min(lo + step, flat.shape[0])  # the array API allows no slice past the end
            h = xp.astype(flat[lo:hi, None] == ids, g.dtype)
            z = z + xp.matrix_transpose(h) @ g3[:, lo:hi, :]  # (rows, f) @ (pre, f, post)
        return (xp.reshape(z, x.shape),)

    return node(out, (a,), backward)


_ONE_HOT_ENTRIES = 1 << 22


def _prod(shape: tuple) -> int:
    n = 1
    for k in shape:
        n *= k
    return n


def _cupyx(x: Any) -> Any:
    """The ``cupyx`` module when ``x`` is a CuPy array, else None."""
    if type(x).__module__.split(".")[0] != "cupy":
        return None
    try:
        import cupyx
    except ImportError:  # pragma: no cover - CuPy without cupyx
        return None
    return cupyx


def _scatter_add_cupy(x: Any, key: tuple, g: Any) -> Any:
    z = namespace(x).zeros_like(x, dtype=g.dtype)
    _cupyx(x).scatter_add(z, key, g)  # np.add.at on the GPU
    return z


def concat(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis. The gradient is split back at the seams.

    Example:
        >>> cr.concat([a, b], axis=1)
    """
    tensors = tuple(t if isinstance(t, Tensor) else as_tensor(t) for t in tensors)
    if not tensors:
        raise ShapeError("concat needs at least one tensor, got none")
    _same_place("concat", tensors)
    datas = [t.data for t in tensors]
    xp = namespace(datas[0])
    try:
        out = np.concatenate(datas, axis=axis) if xp is np else xp.concat(datas, axis=axis)
    except ValueError as e:
        raise ShapeError(f"concat along axis {axis} of shapes {[t.shape for t in tensors]}: {e}") from None
    ax = axis % out.ndim
    before = (slice(None),) * ax
    seams = []
    lo = 0
    for d in datas:
        seams.append(before + (slice(lo, lo + d.shape[ax]), Ellipsis))
        lo += d.shape[ax]

    def backward(g):
        return tuple(g[s] for s in seams)

    return node(out, tensors, backward)


def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors of one shape along a new axis. The gradient is g taken apart along it."""
    tensors = tuple(t if isinstance(t, Tensor) else as_tensor(t) for t in tensors)
    if not tensors:
        raise ShapeError("stack needs at least one tensor, got none")
    _same_place("stack", tensors)
    xp = namespace(tensors[0].data)
    try:
        out = xp.stack([t.data for t in tensors], axis=axis)
    except ValueError as e:
        raise ShapeError(f"stack of shapes {[t.shape for t in tensors]}: {e}") from None
    before = (slice(None),) * (axis % out.ndim)

    def backward(g):
        return tuple(g[before + (k, Ellipsis)] for k in range(len(tensors)))

    return node(out, tensors, backward)


def squeeze(a: Tensor, axis: Any = None) -> Tensor:
    """Drop axes of length 1: all of them, or those of ``axis`` (an int or a tuple) that have
    length 1; an axis of another length is left as it is (as PyTorch). Composed from reshape."""
    shape = a.shape
    axes = _axes(axis, len(shape)) if shape else ()
    if axis is not None and shape:
        for ax in (axis,) if isinstance(axis, int) else tuple(axis):
            _one_axis(ax, len(shape), "squeeze")
    return reshape(a, tuple(n for i, n in enumerate(shape) if not (i in axes and n == 1)))


def unsqueeze(a: Tensor, axis: int) -> Tensor:
    """Insert an axis of length 1 at position ``axis`` (-1: at the end). Composed from reshape."""
    shape = a.shape
    ax = _one_axis(axis, len(shape) + 1, "unsqueeze")
    return reshape(a, (*shape[:ax], 1, *shape[ax:]))


def flatten(a: Tensor, start_axis: int = 0, end_axis: int = -1) -> Tensor:
    """Merge the axes from ``start_axis`` to ``end_axis`` (both included) into one; a 0-d tensor
    becomes shape (1,), as PyTorch. Composed from reshape.

    Example:
        >>> cr.zeros(2, 3, 4).flatten(1).shape   # (2, 12)
    """
    shape = a.shape
    if not shape:
        return reshape(a, (1,))
    lo, hi = _one_axis(start_axis, len(shape), "flatten"), _one_axis(end_axis, len(shape), "flatten")
    if lo > hi:
        raise ShapeError(f"flatten: start_axis {start_axis} comes after end_axis {end_axis} in a tensor of shape {shape}")
    return reshape(a, (*shape[:lo], _prod(shape[lo : hi + 1]), *shape[hi + 1 :]))


def broadcast_to(a: Tensor, shape: Sequence[int]) -> Tensor:
    """The tensor repeated along new leading axes and axes of length 1 to ``shape`` (NumPy's
    broadcasting rules). The gradient is summed back by the engine, as for any broadcast."""
    x = a.data
    shape = tuple(int(n) for n in shape)
    try:
        out = namespace(x).broadcast_to(x, shape)
    except ValueError:
        raise ShapeError(f"cannot broadcast a tensor of shape {a.shape} to {shape}") from None
    return node(out, (a,), lambda g: (g,))


def expand(a: Tensor, *sizes: Any) -> Tensor:
    """PyTorch's ``expand``: :func:`broadcast_to` with -1 meaning "keep this axis's length"."""
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    shape, lead = a.shape, len(sizes) - a.ndim
    if lead < 0:
        raise ShapeError(f"expand to {sizes} gives fewer axes than the tensor's shape {shape}")
    return broadcast_to(a, tuple(shape[i - lead] if n == -1 and i >= lead else n for i, n in enumerate(sizes)))


def flip(a: Tensor, axis: Any = None) -> Tensor:
    """The entries in reverse order along ``axis`` (every axis when None); the gradient is g flipped back."""
    x = a.data
    xp = namespace(x)
    ax = _axis_arg(axis)
    if ax is not None:
        for k in (ax,) if isinstance(ax, int) else ax:
            _one_axis(k, x.ndim, "flip")
    return node(xp.flip(x, axis=ax), (a,), lambda g: (xp.flip(g, axis=ax),))


# ---- elementwise functions -------------------------------------------------


def exp(a: Tensor) -> Tensor:
    """``e^a``; d/da = e^a."""
    out = namespace(a.data).exp(a.data)

    def backward(g):
        return (g * out,)

    return node(out, (a,), backward)


def log(a: Tensor) -> Tensor:
    """Natural logarithm; d/da = 1/a."""

    def backward(g):
        return (g / a.data,)

    return node(namespace(a.data).log(a.data), (a,), backward)


def sqrt(a: Tensor) -> Tensor:
    """Square root; d/da = 1 / (2 sqrt(a))."""
    out = namespace(a.data).sqrt(a.data)

    def backward(g):
        return (g * 0.5 / out,)

    return node(out, (a,), backward)


def abs(a: Tensor) -> Tensor:
    """``|a|``; d/da = sign(a), taken as 0 at a = 0 (as PyTorch)."""
    xp = namespace(a.data)

    def backward(g):
        return (g * xp.sign(a.data),)

    return node(xp.abs(a.data), (a,), backward)


def clip(a: Tensor, min: float | None = None, max: float | None = None) -> Tensor:
    """Limit values to [min, max]. The gradient passes where min <= a <= max (ends included,
    as ``torch.clamp``) and is 0 elsewhere."""
    x = a.data
    xp = namespace(x)
    min, max = _number(min), _number(max)
    out = xp.clip(x, min, max)

    def backward(g):
        if min is None and max is None:
            return (g,)
        mask = True
        if min is not None:
            mask = x >= min
        if max is not None:
            mask = mask & (x <= max)
        return (g * mask if xp is np else xp.where(mask, g, 0.0),)

    return node(out, (a,), backward)


def relu(a: Tensor) -> Tensor:
    """Rectified linear unit ``max(a, 0)``.

    Derivative: 1 where a > 0, and 0 where a <= 0; at the kink a = 0 we take 0,
    as PyTorch and JAX do, so that a unit sitting exactly at 0 gets no update. At NaN
    it is 1, as PyTorch (the mask is ``out != 0``: the output is 0 exactly where a <= 0).
    The formulas: the activation table (:mod:`chainrule.activation_rules`).
    """
    x = a.data
    out, _ = _RELU.forward(x)
    if type(x) in NUMPY_TYPES:
        return node(out, (a,), lambda g: (g * _RELU.slope(x, out, None),))
    xp = namespace(x)
    return node(out, (a,), lambda g: (xp.where(_RELU.slope(x, out, None), g, 0.0),))


def sigmoid(a: Tensor) -> Tensor:
    """Logistic function ``1 / (1 + e^-a)``; derivative ``s (1 - s)``, at most 0.25 (at a = 0).

    For a << 0, e^-a overflows to inf and 1 / (1 + inf) gives the correct limit 0,
    so the overflow is silenced rather than avoided. The formulas: the activation table.
    """
    out, _ = _SIGMOID.forward(a.data)

    def backward(g):
        d = _SIGMOID.slope(None, out, None)
        d *= g
        return (d,)

    return node(out, (a,), backward)


def tanh(a: Tensor) -> Tensor:
    """Hyperbolic tangent, zero-centred in (-1, 1); derivative ``1 - tanh^2``, at most 1.
    The formulas: the activation table."""
    out, _ = _TANH.forward(a.data)

    def backward(g):
        d = _TANH.slope(None, out, None)
        d *= g
        return (d,)

    return node(out, (a,), backward)


def _unary(name: str, forward: Any, derivative: Any, doc: str) -> Any:
    """An elementwise primitive from its forward ``forward(xp, x)`` and its derivative
    ``derivative(xp, x, out)`` (from the input, the output or both)."""

    def op(a: Tensor) -> Tensor:
        x = a.data
        xp = namespace(x)
        out = forward(xp, x)

        def backward(g):
            return (g * derivative(xp, x, out),)

        backward.__qualname__ = f"{name}.<locals>.backward"  # the operation's name, where a tool reads it
        return node(out, (a,), backward)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = doc
    return op


def _sign(xp: Any, x: Any) -> Any:
    s = xp.sign(x)
    return xp.where(xp.isnan(x), 0.0, s) if xp.isdtype(x.dtype, "real floating") else s


sign = _unary("sign", _sign, lambda xp, x, out: xp.zeros_like(x), """``sign(a)``: -1, 0 or 1, and 0 at NaN (as PyTorch). d/da = 0 everywhere (at 0, the jump, too).""")
sin = _unary("sin", lambda xp, x: xp.sin(x), lambda xp, x, out: xp.cos(x), """``sin(a)``; d/da = cos(a).""")
cos = _unary("cos", lambda xp, x: xp.cos(x), lambda xp, x, out: -xp.sin(x), """``cos(a)``; d/da = -sin(a).""")
log1p = _unary("log1p", lambda xp, x: xp.log1p(x), lambda xp, x, out: 1 / (1 + x), """``log(1 + a)``, exact for small a; d/da = 1 / (1 + a).""")
expm1 = _unary("expm1", lambda xp, x: xp.expm1(x), lambda xp, x, out: out + 1, """``e^a - 1``, exact for small a; d/da = e^a (computed as out + 1, as PyTorch).""")


def softplus(a: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """``log(1 + e^(beta a)) / beta``, a smooth ReLU, computed as ``(max(b, 0) + log(1 + e^-|b|)) / beta``
    with ``b = beta a`` so that nothing overflows; ``a`` itself where b > threshold (as PyTorch).

    d/da = sigmoid(beta a), and 1 where b > threshold.

    Example:
        >>> F.softplus(cr.tensor([0.0]))   # [0.6931]
    """
    x = a.data
    xp = namespace(x)
    beta, threshold = float(beta), float(threshold)
    b = x * beta if beta != 1 else x
    with quiet(xp):
        e = xp.exp(-xp.abs(b))
        smooth = xp.maximum(b, xp.zeros_like(b)) + xp.log1p(e)
    linear = b > threshold
    out = xp.where(linear, x, smooth / beta if beta != 1 else smooth)

    def backward(g):
        r = 1 / (1 + e)
        return (xp.where(linear, g, g * xp.where(b >= 0, r, e * r)),)  # sigmoid(b) from e^-|b|

    return node(out, (a,), backward)


def silu_derivative(x: Any) -> Any:
    """d silu / dx for an array x (NumPy, CuPy, array API), from the activation table."""
    return _SILU.derivative(x)


def silu(a: Tensor) -> Tensor:
    """SiLU (swish) ``a sigmoid(a)``: a smooth ReLU that dips below 0 (to -0.278 at a = -1.28).

    d/da = s (1 + a (1 - s)) with s = sigmoid(a), at most 1.0998 (at a = 2.40).
    A primitive (one node); the formulas: the activation table.

    Example:
        >>> F.silu(cr.tensor([-1.0, 0.0, 2.0]))   # [-0.2689, 0.0, 1.7616]
    """
    x = a.data
    out, s = _SILU.forward(x)
    return node(out, (a,), lambda g: (g * _SILU.slope(x, out, s),))


def gelu_derivative(x: Any, approximate: str = "none") -> Any:
    """d gelu / dx for an array x (NumPy, CuPy, array API), from the activation table."""
    return _GELU.derivative(x, approximate)


def gelu(a: Tensor, approximate: str = "none") -> Tensor:
    """GELU ``a Phi(a) = a/2 (1 + erf(a / sqrt 2))``, with Phi the standard normal CDF; or, with
    ``approximate="tanh"``, ``a/2 (1 + tanh(sqrt(2/pi) (a + 0.044715 a^3)))`` (as PyTorch).

    d/da = Phi(a) + a phi(a) (phi the normal density), at most 1.129 (at a = 1.41), and
    slightly negative for a < -0.75. A primitive (one node, its derivative shared with the
    diagnostics; the formulas: the activation table).

    Example:
        >>> F.gelu(cr.tensor([-1.0, 0.0, 1.0]))   # [-0.1587, 0.0, 0.8413]
    """
    if approximate not in GELU_APPROXIMATIONS:
        raise ValueError(f"gelu: approximate must be one of {GELU_APPROXIMATIONS}, got {approximate!r}")
    x = a.data
    out, aux = _GELU.forward(x, approximate)
    return node(out, (a,), lambda g: (g * _GELU.slope(x, out, aux, approximate),))


def where(condition: Any, a: Any, b: Any) -> Tensor:
    """``a`` where ``condition`` holds, else ``b`` (broadcast). The gradient goes to the branch taken.

    Example:
        >>> cr.where(x > 0, x, 0.01 * x)   # leaky ReLU
    """
    cond = condition.data if isinstance(condition, Tensor) else condition
    foreign = is_foreign(cond)
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        a = leaf(_float32_like(cond, a)) if foreign else as_tensor(a)  # float32, where the condition is
    a = a if isinstance(a, Tensor) else as_tensor(a, b)
    b = _t(b, a)
    if not foreign and type(cond) not in NUMPY_TYPES:  # a list, a bool, a NumPy scalar
        cond = asarray(cond, a.data)
    ad, bd = a.data, b.data
    if type(ad) is not type(bd) or type(cond) is not type(ad):
        check_same_device("where", cond, ad, bd)
    xp = namespace(ad)

    def backward(g):
        return (
            xp.where(cond, g, 0.0) if a.requires_grad else None,
            xp.where(cond, 0.0, g) if b.requires_grad else None,
        )

    return node(xp.where(cond, ad, bd), (a, b), backward)


def _float32_like(like: Any, value: Any) -> Any:
    """A float32 array holding ``value`` in the namespace and on the device of ``like``."""
    return asarray(value, like, "float32")


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise maximum. Where a = b the gradient is split in half between them; where either
    is NaN both get the whole gradient (PyTorch's rule: each gets g unless it is the smaller)."""
    a = a if isinstance(a, Tensor) else as_tensor(a, b if isinstance(b, Tensor) else None)
    b = _t(b, a)
    ad, bd = a.data, b.data
    if type(ad) is not type(bd):
        check_same_device("maximum", ad, bd)
    xp = namespace(ad)

    def backward(g):
        share = xp.where(ad == bd, g * 0.5, g)
        return (
            xp.where(ad < bd, 0.0, share) if a.requires_grad else None,
            xp.where(ad > bd, 0.0, share) if b.requires_grad else None,
        )

    return node(xp.maximum(ad, bd), (a, b), backward)


def minimum(a: Any, b: Any) -> Tensor:
    """Elementwise minimum, composed as ``-maximum(-a, -b)``."""
    a = a if isinstance(a, Tensor) else as_tensor(a, b if isinstance(b, Tensor) else None)
    return neg(maximum(neg(a), neg(_t(b, a))))


# ---- einsum ----------------------------------------------------------------


def einsum(subscripts: str, *operands: Any) -> Tensor:
    """Einstein summation over one or two tensors: ``cr.einsum("ij,jk->ik", a, b)`` is ``a @ b``.

    Each operand's axes are named by letters; letters missing from the output (after ``->``)
    are summed over, and a letter repeated in one operand takes its diagonal (``"ii->i"``,
    ``"ii->"`` the trace). Without ``->`` the output is the letters seen once, in alphabetical
    order (NumPy's and PyTorch's rule). ``...`` is not supported: name every axis.

    The gradient of an operand is itself an einsum: of g with the other operand, into the
    operand's letters (a vector of ones brings back a letter that was summed away in that
    operand alone, an identity matrix a repeated letter's diagonal).

    Example:
        >>> cr.einsum("bij,bjk->bik", a, b)   # batched matrix product
        >>> cr.einsum("ii->", m)              # trace
    """
    if not 1 <= len(operands) <= 2:
        raise ValueError(f"einsum takes one or two tensors, got {len(operands)}")
    first = operands[0] if isinstance(operands[0], Tensor) else as_tensor(operands[0])
    tensors = tuple(_t(o, first) for o in operands)
    _same_place("einsum", tensors)
    ins, out, sizes = _einsum_parse(subscripts, [t.shape for t in tensors])
    xp = namespace(tensors[0].data)
    result = _einsum_eval(xp, ins, out, [t.data for t in tensors])

    def backward(g):
        grads = []
        for k, t in enumerate(tensors):
            if not t.requires_grad:
                grads.append(None)
                continue
            others = [(ins[j], tensors[j].data) for j in range(len(tensors)) if j != k]
            grads.append(_einsum_grad(xp, ins[k], out, sizes, g, others, t.data))
        return tuple(grads)

    return node(result, tensors, backward)


def _einsum_parse(subscripts: str, shapes: list) -> tuple:
    """(input letter strings, output letters, size of each letter), checked against the shapes."""
    spec = subscripts.replace(" ", "")
    if "." in spec:
        raise ValueError(f"einsum {subscripts!r}: '...' is not supported; name every axis with a letter")
    lhs, arrow, rhs = spec.partition("->")
    ins = lhs.split(",")
    if len(ins) != len(shapes):
        raise ValueError(f"einsum {subscripts!r} names {len(ins)} operand(s), and {len(shapes)} were given")
    if not all(c.isalpha() for c in lhs.replace(",", "") + rhs):
        raise ValueError(f"einsum {subscripts!r}: subscripts are letters, ',' and '->'")
    if not arrow:
        letters = "".join(ins)
        rhs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    sizes: dict = {}
    for k, (names, shape) in enumerate(zip(ins, shapes)):
        if len(names) != len(shape):
            raise ShapeError(f"einsum {subscripts!r}: operand {k} has shape {shape}, and its subscripts {names!r} name {len(names)} axes")
        for c, n in zip(names, shape):
            if sizes.setdefault(c, n) != n:
                raise ShapeError(f"einsum {subscripts!r}: letter {c!r} stands for axes of lengths {sizes[c]} and {n} (shapes {shapes})")
    for c in rhs:
        if rhs.count(c) > 1 or c not in sizes:
            raise ValueError(f"einsum {subscripts!r}: each output letter must appear once in the output and in some input, {c!r} does not")
    return ins, rhs, sizes


def _einsum_eval(xp: Any, ins: list, out: str, arrays: list) -> Any:
    """einsum of arrays: the namespace's own where it has one (NumPy, CuPy), else products of
    broadcast arrays summed over the letters that are not kept (the array API has no einsum)."""
    f = getattr(xp, "einsum", None)
    spec = f"{','.join(ins)}->{out}"
    if f is not None:
        return f(spec, *arrays, optimize=len(arrays) > 1) if xp is np else f(spec, *arrays)
    letters = list(dict.fromkeys("".join(ins)))
    total = None
    for names, x in zip(ins, arrays):
        names, x = _einsum_diagonals(xp, names, x)
        present = [c for c in letters if c in names]
        x = xp.permute_dims(x, tuple(names.index(c) for c in present))
        x = xp.reshape(x, tuple(x.shape[present.index(c)] if c in names else 1 for c in letters))
        total = x if total is None else total * x
    summed = tuple(i for i, c in enumerate(letters) if c not in out)
    if summed:
        total = xp.sum(total, axis=summed)
    kept = [c for c in letters if c in out]
    return xp.permute_dims(total, tuple(kept.index(c) for c in out))


def _einsum_diagonals(xp: Any, names: str, x: Any) -> tuple:
    """``x`` with each repeated letter's axes reduced to their diagonal (``"ii"`` -> ``"i"``)."""
    for c in dict.fromkeys(names):
        while names.count(c) > 1:
            p, q = names.index(c), names.index(c, names.index(c) + 1)
            n = x.shape[p]
            eye = xp.reshape(xp.eye(n, dtype=x.dtype, device=x.device), tuple(n if i in (p, q) else 1 for i in range(x.ndim)))
            x = xp.sum(x * eye, axis=q)
            names = names[:q] + names[q + 1 :]
    return names, x


def _einsum_grad(xp: Any, names: str, out: str, sizes: dict, g: Any, others: list, x: Any) -> Any:
    """d/dx of einsum: einsum(g, the other operands [, ones, identities] -> x's letters)."""
    free = iter(c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in sizes)
    specs, arrays = [out], [g]
    for spec, data in others:
        specs.append(spec)
        arrays.append(data)
    seen = set(out).union(*(spec for spec, _ in others))
    target = ""
    for c in names:
        if c in target:  # a repeated letter: a fresh one, tied to it by an identity matrix
            fresh = next(free)
            specs.append(c + fresh)
            arrays.append(xp.eye(sizes[c], dtype=x.dtype, device=x.device) if xp is not np else np.eye(sizes[c], dtype=x.dtype))
            target += fresh
            continue
        if c not in seen:  # summed away in x alone: its gradient is the same along it
            specs.append(c)
            arrays.append(xp.ones((sizes[c],), dtype=x.dtype, device=x.device) if xp is not np else np.ones(sizes[c], dtype=x.dtype))
            seen.add(c)
        target += c
    return _einsum_eval(xp, specs, target, arrays)


# ---- comparisons and conversions (no gradient) ------------------------------


def _compare(fn: Any, name: str) -> Any:
    def op(a: Tensor, b: Any) -> Tensor:
        if isinstance(b, Tensor):
            b = b.data
        if type(b) is not type(a.data) and is_array(b):
            check_same_device(name, a.data, b)
        return Tensor(fn(a.data, b))

    op.__name__ = name
    return op


def argmax(a: Tensor, axis: int | None = None) -> Tensor:
    """Index of the largest entry (over the flattened tensor when ``axis`` is None); no gradient."""
    x = a.data
    return Tensor(x.argmax(axis=axis) if type(x) in NUMPY_TYPES else namespace(x).argmax(x, axis=axis))


def argmin(a: Tensor, axis: int | None = None) -> Tensor:
    """Index of the smallest entry (over the flattened tensor when ``axis`` is None); no gradient.
    The first one among ties; a NaN counts as the smallest (as NumPy and PyTorch)."""
    x = a.data
    return Tensor(x.argmin(axis=axis) if type(x) in NUMPY_TYPES else namespace(x).argmin(x, axis=axis))


def astype(a: Tensor, dtype: Any) -> Tensor:
    """The values converted to ``dtype`` (a name such as "float64" or a dtype), as a new leaf."""
    x = a.data
    if type(x) in NUMPY_TYPES:
        return leaf(x.astype(dtype))
    xp = namespace(x)
    return leaf(xp.astype(x, dtype_in(xp, dtype)))


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
    T.__gt__ = _compare(operator.gt, "greater")
    T.__ge__ = _compare(operator.ge, "greater_equal")
    T.__lt__ = _compare(operator.lt, "less")
    T.__le__ = _compare(operator.le, "less_equal")
    T.eq = _compare(operator.eq, "equal")
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
    T.argmax = argmax
    T.argmin = argmin
    T.astype = astype
    T.var = var
    T.std = std
    T.prod = prod
    T.cumsum = cumsum
    T.sign = sign
    T.sin = sin
    T.cos = cos
    T.log1p = log1p
    T.expm1 = expm1
    T.squeeze = squeeze
    T.unsqueeze = unsqueeze
    T.flatten = flatten
    T.broadcast_to = broadcast_to
    T.expand = expand
    T.flip = flip


_install()
