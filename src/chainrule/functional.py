"""Activations and losses as pure functions of tensors (``from chainrule import functional as F``).

Most are composed from the primitives in :mod:`chainrule.ops` and so need no
gradient of their own. Four are fused, each for a stated reason:
``linear`` (speed: one node instead of two on the hot path), ``log_softmax``
(stability: log-sum-exp), ``cross_entropy`` (stability and speed: softmax and
log fused, gradient ``softmax - target``) and ``binary_cross_entropy_with_logits``
(stability: never takes log of a saturated sigmoid).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import ops
from .autograd import Tensor, as_tensor, node
from .errors import DataError, ShapeError

# ---- activations -------------------------------------------------------------

sigmoid = ops.sigmoid
tanh = ops.tanh
relu = ops.relu


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
    exponential is taken of ``min(x, 0)`` so the unused branch cannot overflow.
    """
    return ops.where(x.data > 0, x, (ops.exp(ops.clip(x, None, 0.0)) - 1.0) * alpha)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """``x - logsumexp(x)`` along ``axis``: log-probabilities that never overflow.

    Fused for stability; gradient ``g - softmax(x) * sum(g)``.
    """
    z = x.data
    m = z.max(axis=axis, keepdims=True)
    shifted = z - m
    out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))

    def backward(g):
        return (g - np.exp(out) * g.sum(axis=axis, keepdims=True),)

    return node(out, (x,), backward)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """``e^x / sum(e^x)`` along ``axis``: probabilities that sum to 1.

    Example:
        >>> F.softmax(cr.tensor([[1.0, 2.0, 3.0]]))   # [[0.090, 0.245, 0.665]]
    """
    z = x.data
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    out = e / e.sum(axis=axis, keepdims=True)

    def backward(g):
        return (out * (g - (g * out).sum(axis=axis, keepdims=True)),)

    return node(out, (x,), backward)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Affine map ``x @ weight + bias`` with weight of shape (in, out).

    Fused for speed: one graph node, and no gradient for ``x`` is computed when
    ``x`` needs none (the first layer).
    """
    xd, w = x.data, weight.data
    out = xd @ w
    if bias is not None:
        out += bias.data

    def backward(g):
        gx = g @ w.T if x.requires_grad else None
        if xd.ndim == 2:
            gw = xd.T @ g if weight.requires_grad else None
            gb = g.sum(axis=0) if bias is not None and bias.requires_grad else None
        else:
            x2, g2 = xd.reshape(-1, xd.shape[-1]), g.reshape(-1, g.shape[-1])
            gw = x2.T @ g2 if weight.requires_grad else None
            gb = g2.sum(axis=0) if bias is not None and bias.requires_grad else None
        return gx, gw, gb

    parents = (x, weight) if bias is None else (x, weight, bias)
    return node(out, parents, backward)


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


_ROWS: dict = {}


def _rows(n: int) -> np.ndarray:
    """``arange(n)``, made once per batch size (cross-entropy indexes with it every step)."""
    r = _ROWS.get(n)
    if r is None:
        r = _ROWS[n] = np.arange(n)
        r.flags.writeable = False
    return r


def _class_targets(logits: np.ndarray, target: Any) -> tuple:
    """(indices or None, probabilities or None) from class indices (N,) or probabilities (N, C)."""
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    n, c = logits.shape[0], logits.shape[-1]
    if t.ndim == logits.ndim - 1:
        if t.dtype.kind not in "iu":
            if t.dtype.kind == "f" and np.all(np.mod(t, 1) == 0):
                t = t.astype(np.int64)
            else:
                raise DataError(f"cross_entropy class targets must be integers, got dtype {t.dtype}")
        if t.shape != logits.shape[:-1]:
            raise ShapeError(f"cross_entropy: logits {logits.shape} need class targets of shape {logits.shape[:-1]}, got {t.shape}")
        if t.size and (t.min() < 0 or t.max() >= c):  # (two reductions of a short vector: cheap)
            raise DataError(f"cross_entropy: class targets must lie in [0, {c - 1}], got values from {t.min()} to {t.max()}")
        return t, None
    if t.shape != logits.shape:
        raise ShapeError(
            f"cross_entropy: logits of shape {logits.shape} need class indices of shape {logits.shape[:-1]} "
            f"or probabilities of shape {logits.shape}, got {t.shape}"
        )
    return None, t.astype(logits.dtype, copy=False)


def cross_entropy(logits: Tensor, target: Any, label_smoothing: float = 0.0, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy ``-sum_c q_c log softmax(logits)_c``.

    Args:
        logits: (N, C) unnormalised scores.
        target: class indices (N,) or probabilities (N, C): one-hot or any soft
            distribution per row.
        label_smoothing: eps in [0, 1]; the target becomes ``(1 - eps) q + eps / C``.
        reduction: "mean" (over the N rows), "sum" or "none".

    Fused for stability (log-sum-exp) and speed (the gradient is
    ``softmax(logits) - q``, one node).

    Example:
        >>> F.cross_entropy(cr.tensor([[2.0, 0.5, -1.0]]), cr.tensor([0]))   # 0.241
    """
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing}")
    z = logits.data
    if z.ndim != 2:
        raise ShapeError(f"cross_entropy needs logits of shape (N, C), got {z.shape}")
    idx, probs = _class_targets(z, target)
    n, c = z.shape
    e = z - z.max(axis=1, keepdims=True)  # shifted logits, then their exponentials, in place
    shifted_at_target = e[_rows(n), idx] if idx is not None else None
    shifted = e.copy() if (idx is None or label_smoothing) else None
    np.exp(e, out=e)
    s = e.sum(axis=1, keepdims=True)
    log_s = np.log(s)
    if idx is not None:
        per = log_s[:, 0] - shifted_at_target  # -log softmax at the target, without the full log-softmax
        if label_smoothing:
            per = (1 - label_smoothing) * per + (label_smoothing / c) * (c * log_s[:, 0] - shifted.sum(axis=1))
    else:
        q = probs if not label_smoothing else (1 - label_smoothing) * probs + label_smoothing / c
        per = -(q * (shifted - log_s)).sum(axis=1)
    if reduction == "mean":
        scale = 1.0 / max(n, 1)
        out = per.sum() * scale
    elif reduction == "sum":
        out, scale = per.sum(), 1.0
    else:
        out, scale = per, None

    def backward(g):
        p = e / s  # softmax
        if idx is not None:
            if label_smoothing:
                p -= label_smoothing / c
                p[_rows(n), idx] -= 1 - label_smoothing
            else:
                p[_rows(n), idx] -= 1
        else:
            # soft targets whose rows need not sum to 1: d/dz = p * sum(q) - q
            p *= q.sum(axis=1, keepdims=True)
            p -= q
        p *= g[:, None] if scale is None else g * scale
        return (p,)

    return node(out, (logits,), backward)


def binary_cross_entropy_with_logits(logits: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of ``sigmoid(logits)`` against targets in [0, 1], one term per output.

    ``-[y log s(x) + (1 - y) log(1 - s(x))] = max(x, 0) - x y + log(1 + e^-|x|)``.
    For multi-label problems: each output has its own sigmoid, so several
    labels can be on at once. Fused for stability (no log of a saturated
    sigmoid); gradient ``sigmoid(x) - y``. "mean" averages over every element.
    """
    _check_reduction(reduction)
    y = target.data if isinstance(target, Tensor) else np.asarray(target)
    x = logits.data
    if y.shape != x.shape:
        raise ShapeError(f"binary_cross_entropy_with_logits needs target of shape {x.shape}, got {y.shape}")
    y = y.astype(x.dtype, copy=False)
    e = np.exp(-np.abs(x))
    per = np.maximum(x, 0) - x * y + np.log1p(e)
    if reduction == "mean":
        out, scale = per.mean(), 1.0 / max(per.size, 1)
    elif reduction == "sum":
        out, scale = per.sum(), 1.0
    else:
        out, scale = per, None

    def backward(g):
        r = 1 / (1 + e)
        s = np.where(x >= 0, r, e * r)
        return ((s - y) * (g if scale is None else g * scale),)

    return node(out, (logits,), backward)


def binary_cross_entropy(probs: Tensor, target: Any, reduction: str = "mean", eps: float = 1e-12) -> Tensor:
    """Binary cross-entropy of probabilities, composed: ``-[y log p + (1 - y) log(1 - p)]``.

    Prefer :func:`binary_cross_entropy_with_logits`, which is stable; this one
    clips p to [eps, 1 - eps].
    """
    y = target if isinstance(target, Tensor) else as_tensor(target, probs)
    p = probs.clip(eps, 1 - eps)
    return _reduce(-(y * p.log() + (1 - y) * (1 - p).log()), reduction)
