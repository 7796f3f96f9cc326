"""Activations and losses as pure functions of tensors (``from chainrule import functional as F``).

Most are composed from the primitives in :mod:`chainrule.ops` and so need no
gradient of their own. Five are fused, each for a stated reason:
``linear`` (speed: one node instead of two on the hot path), ``fused_layers``
(speed: a whole stack of Linear layers and activations as one node; ``nn.Sequential``
and ``nn.MLP`` use it), ``log_softmax`` (stability: log-sum-exp), ``cross_entropy``
(stability and speed: softmax and log fused, gradient ``softmax - target``) and
``binary_cross_entropy_with_logits`` (stability: never takes log of a saturated sigmoid).

Every function computes in the array namespace of its input (NumPy, CuPy, or any
array-API library); NumPy-only speed-ups sit behind a type check.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import ops
from .activation_rules import ACTIVATION_RULES
from .autograd import Tensor, leaf, as_tensor, node
from .backend import NUMPY_TYPES, asarray, check_same_device, namespace, quiet
from .capture import per_step, register
from .errors import DataError, ShapeError


# ---- activations -------------------------------------------------------------

sigmoid = ops.sigmoid
tanh = ops.tanh
relu = ops.relu
silu = ops.silu
gelu = ops.gelu
softplus = ops.softplus
GELU_APPROXIMATIONS = ops.GELU_APPROXIMATIONS


def logsigmoid(x: Tensor) -> Tensor:
    """``log(sigmoid(x)) = -softplus(-x)``, computed without overflow; composed.

    d/dx = sigmoid(-x) = 1 - sigmoid(x).

    Example:
        >>> F.logsigmoid(cr.tensor([0.0]))   # [-0.6931]
    """
    return -ops.softplus(-x, threshold=float("inf"))


def identity(x: Tensor) -> Tensor:
    """``x`` unchanged (a linear output)."""
    return x


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    """Leaky ReLU: ``x`` for x > 0, ``negative_slope * x`` otherwise.

    Units never go fully silent: the gradient on the left is ``negative_slope``,
    so a unit pushed negative still gets updates and can recover. Derivative
    at 0 taken from the left branch (``negative_slope``), as PyTorch.

    Example:
        >>> F.leaky_relu(cr.tensor([-2.0, 3.0]), 0.1)   # [-0.2, 3.0]
    """
    return ops.where(x.data > 0, x, x * negative_slope)


def prelu(x: Tensor, weight: Tensor) -> Tensor:
    """Parametric ReLU: ``x`` for x > 0, ``weight * x`` otherwise, with the slope learned.

    ``weight`` has one element (shared) or one per unit of the last axis.
    Derivatives: d/dx = 1 or weight; d/dweight = x where x <= 0, else 0.
    """
    return ops.where(x.data > 0, x, x * weight)


def elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    """Exponential linear unit: ``x`` for x > 0, ``alpha (e^x - 1)`` otherwise.

    Smooth, with negative outputs that pull mean activations towards zero. The
    exponential is taken of x where x <= 0 and of 0 elsewhere, so the unused branch can
    neither overflow nor turn a NaN input's gradient into NaN.
    Derivative 1 for x > 0 and at NaN (as PyTorch), ``alpha e^x`` for x <= 0.
    """
    neg = x.data <= 0
    return ops.where(neg, (ops.exp(ops.where(neg, x, 0.0)) - 1.0) * alpha, x)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """``x - logsumexp(x)`` along ``axis``: log-probabilities that never overflow.

    Fused for stability; gradient ``g - softmax(x) * sum(g)``.
    """
    z = x.data
    xp = namespace(z)
    shifted = z - xp.max(z, axis=axis, keepdims=True)
    out = shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))

    def backward(g):
        return (g - xp.exp(out) * xp.sum(g, axis=axis, keepdims=True),)

    return node(out, (x,), backward)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """``e^x / sum(e^x)`` along ``axis``: probabilities that sum to 1.

    Example:
        >>> F.softmax(cr.tensor([[1.0, 2.0, 3.0]]))   # [[0.090, 0.245, 0.665]]
    """
    z = x.data
    xp = namespace(z)
    e = xp.exp(z - xp.max(z, axis=axis, keepdims=True))
    out = e / xp.sum(e, axis=axis, keepdims=True)

    def backward(g):
        return (out * (g - xp.sum(g * out, axis=axis, keepdims=True)),)

    return node(out, (x,), backward)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Affine map ``x @ weight + bias`` with weight of shape (in, out).

    Fused for speed: one graph node, and no gradient for ``x`` is computed when
    ``x`` needs none (the first layer).
    """
    xd, w = x.data, weight.data
    if type(xd) is not type(w):
        check_same_device("linear", xd, w)
    out = xd @ w
    if bias is not None:
        out += bias.data

    def backward(g):
        if type(g) not in NUMPY_TYPES:
            return _linear_backward_generic(g, xd, w, x, weight, bias)
        gx = _input_gradient(g, w) if x.requires_grad else None
        if xd.ndim == 2:
            gw = xd.T @ g if weight.requires_grad else None
            gb = _column_sums(g) if bias is not None and bias.requires_grad else None
        else:
            x2, g2 = xd.reshape(-1, xd.shape[-1]), g.reshape(-1, g.shape[-1])
            gw = x2.T @ g2 if weight.requires_grad else None
            gb = g2.sum(axis=0) if bias is not None and bias.requires_grad else None
        return gx, gw, gb

    parents = (x, weight) if bias is None else (x, weight, bias)
    return node(out, parents, backward)


_KEPT: dict = {}


def _kept(key: tuple, make: Any) -> np.ndarray:
    """The array ``make()``, made once per ``key`` and kept read-only: the training step uses the
    same few constants (row numbers, vectors of ones) at every batch."""
    a = _KEPT.get(key)
    if a is None:
        a = _KEPT[key] = make()
        a.flags.writeable = False
    return a


def _ones(n: int, dtype: Any) -> np.ndarray:
    """A vector of n ones."""
    return _kept(("ones", n, dtype.char), lambda: np.ones(n, dtype=dtype))


def _row_starts(n: int, c: int) -> np.ndarray:
    """``arange(n) * c``: where each row of an (n, c) array starts when it is flattened."""
    return _kept(("starts", n, c), lambda: np.arange(n) * c)


def _column_sums(g: np.ndarray) -> np.ndarray:
    """``g.sum(axis=0)`` of a 2-D NumPy array as a vector-matrix product: BLAS does it in about
    half the time of NumPy's reduction on the small batches that training uses (speed)."""
    return _ones(g.shape[0], g.dtype) @ g


def _input_gradient(g: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``g @ w.T``: a linear layer's input gradient, for g of shape (rows, out) and w (in, out).

    Written so, NumPy hands OpenBLAS a product with the weight transposed, which OpenBLAS
    computes slowly in float32 when the rows are few and the layer is wide. The transposed
    product ``w @ g.T``, an (in, rows) array, is the same sums in a layout OpenBLAS computes
    fast; it is copied back to (rows, in) order, because an F-ordered gradient meeting the
    C-ordered activations makes every elementwise product several times slower. Time of
    ``(w @ g.T).T.copy()`` over the time of ``g @ w.T`` (square weights, float32, one thread,
    medians of 11 interleaved runs, the cache flushed before each run with a weight of 2 MB or more):

    ======  =====  =====  =====  =====  =====
    rows    512    768    1024   2048   4096
    ======  =====  =====  =====  =====  =====
    1       1.02   1.06   0.99   0.95   1.00
    2       1.01   0.50   0.58   0.65   0.68
    4       0.55   0.52   0.54   0.61   0.70
    32      0.70   0.73   0.74   0.75   0.80
    64      0.94   0.82   0.86   0.86   0.89
    128     1.05   0.96   0.95   0.95   0.97
    ======  =====  =====  =====  =====  =====

    (32 rows, width 2048: 4.26 ms against 3.20 ms.) Narrower layers gain too, at fewer rows
    (warm cache, medians of 41 interleaved runs): width 384 gives 1.04, 0.58, 0.59, 0.65, 0.73,
    0.85, 0.99 at 2, 4, 8, 16, 32, 48, 64 rows; width 512 gives 1.03, 0.58, 0.57, 0.60, 0.73,
    0.80, 0.94. So the transposed form is used from 2 to 64 rows when both widths are at least
    768, from 4 to 48 rows when both are at least 384, and only in float32: in float64 it is
    1.2-1.3x slower. The forward product ``x @ w`` and the weight gradient ``x.T @ g`` showed
    no layout and no split into blocks that is faster by a clear margin in a training step, so
    they stay as written. Plain NumPy calls (a product, a transposed view, a copy): ``cr.compile``
    records and replays them.
    """
    if transposes_input_gradient(g, w):
        return (w @ g.T).T.copy()
    return g @ w.T


def transposes_input_gradient(g: np.ndarray, w: np.ndarray) -> bool:
    """Whether :func:`_input_gradient` computes ``g @ w.T`` as the transposed product (the rule
    its table measures; the benchmark's hand-fused floor follows it too)."""
    if g.ndim != 2 or g.dtype != np.float32:
        return False
    rows, narrow = g.shape[0], min(w.shape)
    return (2 <= rows <= 64 and narrow >= 768) or (4 <= rows <= 48 and narrow >= 384)


def _linear_backward_generic(g: Any, xd: Any, w: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> tuple:
    xp = namespace(g)
    gx = g @ xp.matrix_transpose(w) if x.requires_grad else None
    x2, g2 = xp.reshape(xd, (-1, xd.shape[-1])), xp.reshape(g, (-1, g.shape[-1]))
    gw = xp.matrix_transpose(x2) @ g2 if weight.requires_grad else None
    gb = xp.sum(g2, axis=0) if bias is not None and bias.requires_grad else None
    return gx, gw, gb


# ---- a stack of layers as one node ---------------------------------------------

_RELU = ACTIVATION_RULES["relu"]

#: The step kinds that :func:`fused_layers` runs (the activations' formulas: the activation table).
FUSED_STEPS = ("linear", "identity", "relu", "sigmoid", "tanh", "leaky_relu", "elu", "prelu", "gelu", "silu")


def _fused_forward(x: Tensor, steps: Any, xp: Any, on_numpy: bool) -> tuple:
    """fused_layers' forward pass: (output array, parent tensors, what each step's backward needs)."""
    a = x.data
    parents = [x]
    saved = []
    fresh = False  # whether `a` is a linear output nothing else holds, so NumPy may overwrite it
    for kind, p, q in steps:
        if kind == "linear":
            if type(p.data) is not type(a):
                check_same_device("fused_layers", a, p.data)
            z = a @ p.data
            if q is not None:
                z += q.data
                parents += (p, q)
            else:
                parents.append(p)
            saved.append(a)
            a, fresh = z, True
            continue
        if kind == "identity":
            saved.append(None)
            continue
        act = ACTIVATION_RULES.get(kind)
        if act is None:
            raise ValueError(f"fused_layers: unknown step {kind!r}; expected one of {FUSED_STEPS}")
        if act.reads == "output":  # relu, sigmoid, tanh: in place on a layer output we own; the output is kept
            a, _ = act.forward(a, None, a if (fresh and on_numpy) else None)
            saved.append(a)
            fresh = False
            continue
        z = a
        if kind == "prelu":
            parents.append(p)
            a, d = act.forward(z, p.data)
            saved.append((d, xp.where(z > 0, xp.zeros_like(z), z)))  # x where x <= 0: d/dweight
        else:
            a, aux = act.forward(z, p)
            saved.append((act.slope(z, a, aux, p), None))
        fresh = True
    return a, parents, saved


def fused_layers(x: Tensor, steps: Any) -> Tensor:
    """A stack of fully connected layers and activations, computed as one graph node.

    Equal, value for value and gradient for gradient, to applying :func:`linear`
    and the activation functions one after another. Fused for speed: a small
    network otherwise spends more time recording one node per layer than
    computing; here each activation runs in place on its layer's output, the
    derivative it needs is kept from the forward pass, and backward is one
    closure. ``nn.Sequential`` (and so ``nn.MLP``) uses it when every layer is
    a Linear or one of the activations below and no layer's ``forward`` has
    been replaced (the diagnostics wrap them to watch each layer).

    Args:
        x: input of shape (N, in).
        steps: sequence of ``(kind, a, b)``: ``("linear", weight, bias or None)``,
            ``("leaky_relu", negative_slope, None)``, ``("elu", alpha, None)``,
            ``("prelu", weight, None)``, ``("gelu", approximate, None)``, or
            ``(kind, None, None)`` for "identity", "relu", "sigmoid", "tanh", "silu".
            Derivatives at kinks as the
            unfused functions: ReLU'(0) = 0, leaky and PReLU take the slope at 0,
            ELU'(0) = alpha.

    Example:
        >>> F.fused_layers(x, [("linear", w1, b1), ("relu", None, None), ("linear", w2, b2)])
    """
    a = x.data
    if a.ndim != 2:
        raise ShapeError(f"fused_layers needs input of shape (N, features), got {a.shape}")
    xp = namespace(a)
    on_numpy = xp is np
    if on_numpy and any(step[0] == "sigmoid" for step in steps):
        with quiet(np):  # (entered once for all sigmoid layers)
            a, parents, saved = _fused_forward(x, steps, xp, True)
    else:
        a, parents, saved = _fused_forward(x, steps, xp, on_numpy)
    need_x = x.requires_grad

    def backward(g):
        grads = []
        ones = _ones(g.shape[0], g.dtype) if on_numpy else None  # for the bias gradients
        owned = False  # whether g is our own array (else it may be shared: never write into it)
        i = len(steps)
        for (kind, p, q), s in zip(reversed(steps), reversed(saved)):
            i -= 1
            last = i == 0 and not need_x  # the input needs no gradient: stop at the first step
            if kind == "linear":
                if on_numpy:
                    if q is not None:
                        grads.append(ones @ g)  # g summed over the rows, by BLAS (see _column_sums)
                    grads.append(s.T @ g)
                    if last:
                        break
                    g = _input_gradient(g, p.data)
                else:
                    if q is not None:
                        grads.append(xp.sum(g, axis=0))
                    grads.append(xp.matrix_transpose(s) @ g)
                    if last:
                        break
                    g = g @ xp.matrix_transpose(p.data)
                owned = True
                continue
            if kind == "identity":
                if last:
                    break
                continue
            if kind == "relu" and not on_numpy:  # (the standard multiplies no floats by booleans)
                if last:
                    break
                g = xp.where(_RELU.slope(None, s, None), g, 0.0)
                owned = True
                continue
            if kind in ("relu", "sigmoid", "tanh"):
                m = ACTIVATION_RULES[kind].slope(None, s, None)  # from the output (at NaN ReLU passes the gradient)
            else:
                d, neg = s
                if neg is not None:  # PReLU's slope: summed over the rows (and the units when it is shared)
                    gw = xp.sum(g * neg, axis=0)
                    w_shape = p.data.shape
                    grads.append(xp.reshape(xp.sum(gw), w_shape) if gw.shape != w_shape else gw)
                m = d
            if last:
                break
            if owned and on_numpy:
                g *= m
            else:
                g = g * m
                owned = True
        grads.reverse()
        return ((g if need_x else None), *grads)

    return node(a, tuple(parents), backward)


# ---- normalization and dropout ---------------------------------------------------


def _standardize(x: Tensor, axes: tuple, eps: float) -> tuple:
    """``(x - mean) / sqrt(var + eps)`` over ``axes`` (biased variance), as one node; also returns
    the mean and variance arrays. Fused for speed: one node instead of seven per normalization
    layer, which a 50-layer network runs 50 times a step.

    With ``xhat`` the output, ``r = 1 / sqrt(var + eps)`` and means over ``axes``, the
    gradient is ``r * (g - mean(g) - xhat * mean(g * xhat))``.
    """
    a = x.data
    xp = namespace(a)
    n = 1
    for ax in axes:
        n *= a.shape[ax]
    inv_n = 1.0 / n  # sums scaled by 1/n: NumPy's mean costs several times a sum on these small arrays
    mean = xp.sum(a, axis=axes, keepdims=True) * inv_n
    centered = a - mean
    var = xp.sum(centered * centered, axis=axes, keepdims=True) * inv_n
    r = 1.0 / xp.sqrt(var + eps)
    out = centered * r

    def backward(g):
        gm = xp.sum(g, axis=axes, keepdims=True) * inv_n
        gx = xp.sum(g * out, axis=axes, keepdims=True) * inv_n
        return (r * (g - gm - out * gx),)

    return node(out, (x,), backward), mean, var


def _affine(x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    if weight is not None:
        x = x * weight
    return x if bias is None else x + bias


#: Rows a batch needs for batch normalization in training mode (a variance needs two).
BATCH_NORM_MIN_ROWS = 2


def batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch normalization of (N, C) input: each feature standardized over the batch, then scaled and shifted.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``. In training the mean and the
    (biased) variance are the batch's, and the running statistics (updated in place,
    when given) move towards them: ``running = (1 - momentum) * running + momentum * batch``,
    with the unbiased variance ``var * N / (N - 1)``, as PyTorch does. Otherwise the
    running statistics normalize.

    Example:
        >>> F.batch_norm(x, rm, rv, w, b, training=True)
    """
    a = x.data
    if a.ndim != 2:
        raise ShapeError(f"batch_norm needs input of shape (N, features), got {a.shape}")
    if not training:
        if running_mean is None or running_var is None:
            raise ShapeError("batch_norm in evaluation mode needs the running mean and variance")
        xp = namespace(a)
        r = 1.0 / xp.sqrt(running_var.data + eps)
        return _affine((x - leaf(running_mean.data)) * leaf(r), weight, bias)  # (leaves keep the dtype)
    n = a.shape[0]
    if n < BATCH_NORM_MIN_ROWS:
        raise ShapeError(f"batch_norm in training mode needs more than one row per batch to take a variance, got input of shape {a.shape}")
    out, mean, var = _standardize(x, (0,), eps)
    # the running statistics in place (a compiled step replays the update on the same arrays)
    if running_mean is not None:
        register("state", running_mean)
        _blend(running_mean.data, 1 - momentum, mean[0, ...] * momentum)  # (every axis named: the array API)
    if running_var is not None:
        register("state", running_var)
        _blend(running_var.data, 1 - momentum, var[0, ...] * (momentum * n / (n - 1)))
    return _affine(out, weight, bias)


def _blend(running: Any, keep: float, new: Any) -> None:
    """``running <- running * keep + new``, in place."""
    running *= keep
    running += new


def layer_norm(x: Tensor, normalized_shape: tuple, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Layer normalization: each sample standardized over its last ``len(normalized_shape)`` axes.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, the mean and (biased) variance taken
    per sample, so the same in training and evaluation and independent of the batch.

    Example:
        >>> F.layer_norm(x, (64,), w, b)
    """
    shape = tuple(x.data.shape)
    k = len(normalized_shape)
    if shape[len(shape) - k :] != tuple(normalized_shape) or len(shape) < k:
        raise ShapeError(f"layer_norm over the last axes {tuple(normalized_shape)} got input of shape {shape}")
    out, _, _ = _standardize(x, tuple(range(len(shape) - k, len(shape))), eps)
    return _affine(out, weight, bias)


def dropout(x: Tensor, p: float = 0.5, training: bool = True, generator: Any = None) -> Tensor:
    """Inverted dropout: each entry zeroed with probability ``p``, the others scaled by ``1 / (1 - p)``.

    The expected output equals the input, so evaluation uses the identity (``training=False``).
    The mask is drawn on the host from ``generator`` (a seed, a NumPy Generator, or chainrule's
    default generator when None), so a seed gives the same masks on every device. The gradient
    is the same mask times ``g``.

    Example:
        >>> F.dropout(x, 0.2, generator=np.random.default_rng(0))
    """
    if not training or p == 0:
        return x
    a = x.data
    if p >= 1:
        return x * 0.0
    # drawn through per_step, so a compiled step draws a new mask at each replay
    if type(a) in NUMPY_TYPES:
        return x * leaf(per_step(_dropout_mask, generator, a.shape, p, a.dtype))
    mask = per_step(_dropout_mask, generator, a.shape, p, np.float64)
    return x * leaf(namespace(a).astype(asarray(mask, like=a), a.dtype))


def _dropout_mask(generator: Any, shape: tuple, p: float, dtype: Any) -> np.ndarray:
    """Inverted dropout's mask, drawn on the host from ``generator`` (resolved at each draw: the
    default one is whichever ``cr.manual_seed`` made last): 0 with probability p, else
    1 / (1 - p) (computed in float64, then given ``dtype``)."""
    from .random import generator as _generator

    return ((_generator(generator).random(shape) >= p) * (1.0 / (1.0 - p))).astype(dtype)


# ---- losses --------------------------------------------------------------------

REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _reduced(per: Any, reduction: str, count: int) -> tuple:
    """A fused loss's per-example values reduced, with the factor its gradient takes:
    (total / count, 1 / count) for "mean", (total, 1) for "sum", (per, None) for "none".
    ``count`` is a number of entries, or an array (a sum of class weights)."""
    if reduction == "none":
        return per, None
    total = np.add.reduce(per, axis=None) if type(per) in NUMPY_TYPES else namespace(per).sum(per)
    if reduction == "sum":
        return total, 1.0
    if isinstance(count, int):
        scale = ops.inverse_count(count)  # NaN over an empty batch, as PyTorch
        return total * scale, scale
    with quiet(namespace(count)):  # a sum of class weights, on the device: 0 gives NaN as well
        scale = 1 / count
        return total * scale, scale


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def mse_loss(pred: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Mean squared error ``mean((pred - target)^2)``, composed from primitives.

    Example:
        >>> F.mse_loss(cr.tensor([1.0, 2.0]), cr.tensor([1.0, 4.0]))   # 2.0
    """
    target = target if isinstance(target, Tensor) else as_tensor(target, pred)
    if pred.shape != target.shape:
        raise ShapeError(f"mse_loss needs pred and target of one shape, got {pred.shape} and {target.shape}")
    return _reduce((pred - target) ** 2, reduction)


# size in bytes -> the unsigned integer dtype of that size, for a one-reduction range check
_UNSIGNED = {n: np.dtype(f"u{n}") for n in (1, 2, 4, 8)}


def _target_array(target: Any, like: Any) -> Any:
    """The target's array, in the namespace and on the device of ``like`` (host data is moved there)."""
    t = target.data if isinstance(target, Tensor) else target
    if type(t) is type(like):
        return t
    if type(like) in NUMPY_TYPES:
        if not isinstance(t, (np.ndarray, np.generic, list, tuple, int, float)):
            check_same_device("loss", like, t)
        return np.asarray(t)
    if isinstance(t, (np.ndarray, np.generic, list, tuple, int, float)):
        return asarray(t, like)
    check_same_device("loss", like, t)
    return t


def _class_targets(logits: Any, target: Any, ignore_index: int | None = None) -> tuple:
    """(indices or None, probabilities or None) from class indices (N,) or probabilities (N, C).
    Indices equal to ``ignore_index`` are exempt from the range check."""
    t = _target_array(target, logits)
    c = logits.shape[-1]
    if t.ndim == logits.ndim - 1:
        if t.shape != logits.shape[:-1]:
            raise ShapeError(f"cross_entropy: logits {logits.shape} need class targets of shape {logits.shape[:-1]}, got {t.shape}")
        if type(t) in NUMPY_TYPES:
            if t.dtype.kind not in "iu":
                if t.dtype.kind == "f" and np.all(np.mod(t, 1) == 0):
                    t = t.astype(np.int64)
                else:
                    raise DataError(f"cross_entropy class targets must be integers, got dtype {t.dtype}")
            per_step(_check_class_range, t, c, ignore_index)  # (a compiled step checks each batch too)
            return t, None
        xp = namespace(t)
        if not xp.isdtype(t.dtype, "integral"):
            if xp.isdtype(t.dtype, "real floating") and bool(xp.all(t == xp.round(t))):
                t = xp.astype(t, xp.int64)
            else:
                raise DataError(f"cross_entropy class targets must be integers, got dtype {t.dtype}")
        per_step(_check_class_range, t, c, ignore_index)
        return t, None
    if ignore_index is not None:
        raise ValueError(
            f"cross_entropy: ignore_index={ignore_index} applies to class-index targets, and the target "
            f"holds probabilities (shape {t.shape}); set the probabilities of the rows to leave out to 0 instead"
        )
    if t.shape != logits.shape:
        raise ShapeError(
            f"cross_entropy: logits of shape {logits.shape} need class indices of shape {logits.shape[:-1]} "
            f"or probabilities of shape {logits.shape}, got {t.shape}"
        )
    if type(t) in NUMPY_TYPES:
        return None, t.astype(logits.dtype, copy=False)
    xp = namespace(t)
    return None, (t if t.dtype == logits.dtype else xp.astype(t, logits.dtype))


def _check_class_range(t: Any, c: int, ignore_index: int | None) -> None:
    """Raise DataError unless every class index in ``t`` lies in [0, c) (or equals ``ignore_index``)."""
    if isinstance(t, np.ndarray):
        kept = t if ignore_index is None else t[t != ignore_index]
        # one reduction checks both ends: seen as unsigned, a negative index is huge
        if kept.size and np.maximum.reduce(kept.view(_UNSIGNED[t.itemsize]) if t.dtype.kind == "i" else kept) >= c:
            raise DataError(_class_range_message(c, ignore_index, kept.min(), kept.max()))
        return
    xp = namespace(t)
    out_of_range = (t < 0) | (t >= c)
    if ignore_index is not None:
        out_of_range = out_of_range & (t != ignore_index)
    if t.size and bool(xp.any(out_of_range)):  # one read-back (a GPU waits for it once)
        raise DataError(_class_range_message(c, ignore_index, int(xp.min(t)), int(xp.max(t))))


def _class_range_message(c: int, ignore_index: int | None, lo: Any, hi: Any) -> str:
    but = "" if ignore_index is None else f" (or equal ignore_index={ignore_index})"
    return f"cross_entropy: class targets must lie in [0, {c - 1}]{but}, got values from {lo} to {hi}"


def cross_entropy(
    logits: Tensor,
    target: Any,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    weight: Any = None,
    ignore_index: int | None = None,
) -> Tensor:
    """Softmax cross-entropy ``-sum_c w_c q_c log softmax(logits)_c``.

    Args:
        logits: (N, C) unnormalised scores, or (C,) for one unbatched sample.
        target: class indices (N,) (a scalar for (C,) logits) or probabilities (N, C):
            one-hot or any soft distribution per row. Probabilities that require grad get
            a gradient, ``-w_c log softmax(logits)_c`` (distillation, learned soft labels).
        label_smoothing: eps in [0, 1]; the target becomes ``(1 - eps) q + eps / C``.
        reduction: "mean", "sum" or "none". "mean" divides by N, or with class indices and
            ``weight`` by the sum of the weights of the rows' classes (as PyTorch); NaN for
            an empty batch, or when every row is ignored.
        weight: one weight per class, shape (C,) (no gradient flows to it, as in PyTorch).
        ignore_index: a class index whose rows add nothing to the loss or to the count of
            a "mean" (class-index targets only).

    Fused for stability (log-sum-exp) and speed (the gradient is
    ``softmax(logits) sum_c Q_c - Q``, one node, with ``Q = w q``).

    Example:
        >>> F.cross_entropy(cr.tensor([[2.0, 0.5, -1.0]]), cr.tensor([0]))   # 0.241
    """
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing}")
    z = logits.data
    if z.ndim == 1:  # one unbatched sample, as PyTorch: a batch of one
        return _unbatched_cross_entropy(logits, target, label_smoothing, reduction, weight, ignore_index)
    if z.ndim != 2:
        raise ShapeError(f"cross_entropy needs logits of shape (N, C) or (C,), got {z.shape}")
    idx, probs = _class_targets(z, target, ignore_index)
    target_grad = probs is not None and isinstance(target, Tensor) and target.requires_grad
    if type(z) not in NUMPY_TYPES or weight is not None or ignore_index is not None or target_grad:
        return _cross_entropy_general(logits, target, idx, probs, label_smoothing, reduction, weight, ignore_index)
    n, c = z.shape
    # NumPy is slow at reductions along short rows, so (speed): the row maxima come from argmax
    # and a gather, the row sums from a product with a vector of ones, and the maxima and the
    # target entries are picked through flat indices with take (one call each, which a compiled
    # replay repeats as it is; a fancy index would make and copy a temporary)
    starts = _row_starts(n, c)
    e = z - z.reshape(-1).take(starts + z.argmax(axis=1))[:, None]  # shifted logits, then their exponentials, in place
    flat = starts + idx if idx is not None else None
    shifted_at_target = e.reshape(-1).take(flat) if idx is not None else None
    shifted = e.copy() if (idx is None or label_smoothing) else None
    np.exp(e, out=e)
    s = (e @ _ones(c, e.dtype))[:, None]
    log_s = np.log(s)
    if idx is not None:
        per = log_s[:, 0] - shifted_at_target  # -log softmax at the target, without the full log-softmax
        if label_smoothing:
            per = (1 - label_smoothing) * per + (label_smoothing / c) * (c * log_s[:, 0] - shifted.sum(axis=1))
    else:
        q = probs if not label_smoothing else (1 - label_smoothing) * probs + label_smoothing / c
        per = -(q * (shifted - log_s)).sum(axis=1)
    out, scale = _reduced(per, reduction, n)

    def backward(g):
        p = e / s  # softmax
        if idx is not None:
            if label_smoothing:
                p -= label_smoothing / c
            at_target = p.reshape(-1)  # (a view: p is a fresh contiguous array)
            at_target.put(flat, at_target.take(flat) - (1 - label_smoothing))
        else:
            # soft targets whose rows need not sum to 1: d/dz = p * sum(q) - q
            p *= q.sum(axis=1, keepdims=True)
            p -= q
        if scale is None:
            p *= g[:, None]
        elif type(g) in NUMPY_TYPES and g.ndim == 0:
            p *= p.dtype.type(float(g) * scale)  # one Python multiplication instead of an array one
        else:
            p *= g * scale
        return (p,)

    return node(out, (logits,), backward)


def _unbatched_cross_entropy(logits: Tensor, target: Any, label_smoothing: float, reduction: str, weight: Any, ignore_index: int | None) -> Tensor:
    """cross_entropy of (C,) logits: the same as a batch of one row, with a scalar result."""
    c = logits.shape[0]
    if isinstance(target, Tensor):
        t = target.reshape(1, *target.shape) if target.requires_grad else target.data
    else:
        t = target
    if not isinstance(t, Tensor):
        t = _target_array(t, logits.data)
        t = namespace(t).reshape(t, (1, *t.shape))
    if t.shape not in ((1,), (1, c)):
        raise ShapeError(f"cross_entropy: logits of shape ({c},) need a scalar class index or probabilities of shape ({c},), got {t.shape[1:]}")
    out = cross_entropy(logits.reshape(1, c), t, label_smoothing, reduction, weight, ignore_index)
    return out.reshape(()) if reduction == "none" else out


def _constant(value: Any, like: Any, what: str) -> Any:
    """A loss's weights as an array of the namespace, device and dtype of ``like``; no gradient
    flows to them (as in PyTorch, which refuses weights that require one)."""
    if isinstance(value, Tensor):
        if value.requires_grad:
            raise ValueError(f"{what} gets no gradient (as in PyTorch); pass it with requires_grad=False")
        value = value.data
    a = _target_array(value, like)
    return a if a.dtype == like.dtype else namespace(a).astype(a, like.dtype)


def _class_weight(weight: Any, z: Any) -> Any:
    """``weight`` as a (C,) array of the logits' namespace, device and dtype."""
    w = _constant(weight, z, "cross_entropy: the class weight")
    if w.shape != (z.shape[1],):
        raise ShapeError(f"cross_entropy: weight needs one entry per class, shape ({z.shape[1]},), got {w.shape}")
    return w


def _cross_entropy_general(
    logits: Tensor, target: Any, idx: Any, probs: Any, label_smoothing: float, reduction: str, weight: Any, ignore_index: int | None
) -> Tensor:
    """cross_entropy in any array-API namespace, with class weights, ignored rows and a gradient
    for probability targets: everything becomes one weighted target matrix Q, and the loss of
    row i is ``-sum_c Q_ic log p_ic``."""
    z = logits.data
    xp = namespace(z)
    n, c = z.shape
    shifted = z - xp.max(z, axis=1, keepdims=True)
    e = xp.exp(shifted)
    s = xp.sum(e, axis=1, keepdims=True)
    logp = shifted - xp.log(s)
    w = None if weight is None else _class_weight(weight, z)
    count: Any = n
    if idx is not None:
        safe = idx if ignore_index is None else xp.where(idx == ignore_index, xp.zeros_like(idx), idx)
        q = xp.astype(xp.expand_dims(safe, axis=1) == xp.arange(c, device=z.device), z.dtype)
        if ignore_index is not None:
            q = q * xp.astype(xp.expand_dims(idx != ignore_index, axis=1), z.dtype)
        if ignore_index is not None or w is not None:  # "mean" divides by the rows' weights (or the rows kept)
            count = xp.sum(q if w is None else q * w)
        if label_smoothing:  # spread over every class of the rows kept
            q = (1 - label_smoothing) * q + (label_smoothing / c) * xp.sum(q, axis=1, keepdims=True)
    else:
        q = probs if not label_smoothing else (1 - label_smoothing) * probs + label_smoothing / c
    wq = q if w is None else q * w
    per = -xp.sum(wq * logp, axis=1)
    out, scale = _reduced(per, reduction, count)
    parents = (logits, target) if probs is not None and isinstance(target, Tensor) and target.requires_grad else (logits,)

    def backward(g):
        factor = xp.expand_dims(g, axis=1) if scale is None else g * scale
        gz = ((e / s) * xp.sum(wq, axis=1, keepdims=True) - wq) * factor  # softmax * sum(Q) - Q
        if len(parents) == 1:
            return (gz,)
        gq = logp * (-(1 - label_smoothing) * factor)  # d/dq of -sum_c w_c ((1 - eps) q_c + eps/C) log p_c
        return gz, (gq if w is None else gq * w)

    backward.__qualname__ = "cross_entropy.<locals>.backward"  # one operation, whichever path computed it
    return node(out, parents, backward)


def binary_cross_entropy_with_logits(logits: Tensor, target: Any, reduction: str = "mean", pos_weight: Any = None) -> Tensor:
    """Binary cross-entropy of ``sigmoid(logits)`` against targets in [0, 1], one term per output.

    ``-[p y log s(x) + (1 - y) log(1 - s(x))] = (1 - y) x + (1 + (p - 1) y) softplus(-x)``,
    with ``softplus(-x) = max(-x, 0) + log(1 + e^-|x|)``.
    For multi-label problems: each output has its own sigmoid, so several
    labels can be on at once. Fused for stability (no log of a saturated
    sigmoid); gradient ``(1 + (p - 1) y) s(x) - p y`` (``s(x) - y`` without ``pos_weight``),
    and ``-x + (p - 1) softplus(-x)`` for a target that requires grad.

    Args:
        logits: scores of any shape.
        target: the same shape, values in [0, 1].
        reduction: "mean" (over every element; NaN for none), "sum" or "none".
        pos_weight: p, the weight of the positive term, broadcast against the logits
            (one per output, shape (C,), weighs each label's positives). No gradient flows to it.
    """
    _check_reduction(reduction)
    x = logits.data
    xp = namespace(x)
    y = _target_array(target, x)
    if y.shape != x.shape:
        raise ShapeError(f"binary_cross_entropy_with_logits needs target of shape {x.shape}, got {y.shape}")
    if y.dtype != x.dtype:
        y = xp.astype(y, x.dtype)
    pw = None if pos_weight is None else _pos_weight(pos_weight, x)
    e = xp.exp(-xp.abs(x))
    if pw is None:
        per = xp.maximum(x, xp.zeros_like(x)) - x * y + xp.log1p(e)
    else:
        lw = 1 + (pw - 1) * y
        soft = xp.log1p(e) + xp.maximum(-x, xp.zeros_like(x))  # softplus(-x) = -log s(x)
        per = (1 - y) * x + lw * soft
    out, scale = _reduced(per, reduction, per.size)
    parents = (logits, target) if isinstance(target, Tensor) and target.requires_grad else (logits,)

    def backward(g):
        factor = g if scale is None else g * scale
        r = 1 / (1 + e)
        sig = xp.where(x >= 0, r, e * r)
        gx = (sig - y if pw is None else lw * sig - pw * y) * factor
        if len(parents) == 1:
            return (gx,)
        gy = -x if pw is None else (pw - 1) * soft - x
        return gx, gy * factor

    return node(out, parents, backward)


def _pos_weight(pos_weight: Any, x: Any) -> Any:
    """``pos_weight`` as an array of the logits' namespace, device and dtype, checked to broadcast."""
    pw = _constant(pos_weight, x, "binary_cross_entropy_with_logits: pos_weight")
    try:
        fits = np.broadcast_shapes(pw.shape, x.shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise ShapeError(f"binary_cross_entropy_with_logits: pos_weight of shape {pw.shape} does not broadcast against logits of shape {x.shape}")
    return pw


def binary_cross_entropy(probs: Tensor, target: Any, reduction: str = "mean", eps: float = 1e-12) -> Tensor:
    """Binary cross-entropy of probabilities, composed: ``-[y log p + (1 - y) log(1 - p)]``.

    Prefer :func:`binary_cross_entropy_with_logits`, which is stable; this one
    clips p to [eps, 1 - eps].
    """
    y = target if isinstance(target, Tensor) else as_tensor(target, probs)
    p = probs.clip(eps, 1 - eps)
    return _reduce(-(y * p.log() + (1 - y) * (1 - p).log()), reduction)
