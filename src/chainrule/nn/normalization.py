"""Normalization layers: BatchNorm1d (over the batch) and LayerNorm (over each sample's features)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..capture import guard
from ..errors import ChainruleError, ShapeError
from ..validation import real_number
from .module import Module, Parameter, register_module


def _positive_number(layer: str, name: str, value: Any, upper: float | None = None) -> float:
    v = real_number(value)
    if not (v > 0 and (upper is None or v <= upper)):
        bounds = "> 0" if upper is None else f"in (0, {upper}]"
        raise ChainruleError(f"{layer} needs {name} {bounds}, got {value!r}")
    return v


def _scale_and_shift(learned: bool, shape: tuple, dtype: Any) -> tuple:
    """(weight, bias) Parameters of ``shape`` starting at ones and zeros (the identity), or (None, None)."""
    if not learned:
        return None, None
    return Parameter(np.ones(shape, dtype=dtype), dtype=dtype), Parameter(np.zeros(shape, dtype=dtype), dtype=dtype)


@register_module
class BatchNorm1d(Module):
    """Batch normalization of (N, num_features) input (Ioffe and Szegedy 2015).

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, per feature. In training mode the
    mean and variance are the batch's, and the running statistics (buffers
    ``running_mean`` and ``running_var``, saved with the model) move towards them by
    ``momentum``; in evaluation mode (``model.eval()``, as ``cr.predict`` uses) the running
    statistics normalize, so a prediction does not depend on the other rows of its batch.
    The same numbers as PyTorch's BatchNorm1d.

    Args:
        num_features: the width of the input.
        eps: added to the variance under the square root.
        momentum: weight of the newest batch in the running statistics.
        affine: learn ``weight`` (ones at first) and ``bias`` (zeros).

    Example:
        >>> bn = nn.BatchNorm1d(64)
        >>> bn(cr.randn(32, 64)).shape
        (32, 64)
    """

    #: Rows every training batch needs (``cr.fit`` checks its batches against it before training).
    min_batch_rows = F.BATCH_NORM_MIN_ROWS

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True, dtype: Any = "float32"):
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)) or num_features <= 0:
            raise ChainruleError(f"BatchNorm1d needs a positive integer num_features, got {num_features!r}")
        self.num_features = int(num_features)
        self.eps = _positive_number("BatchNorm1d", "eps", eps)
        self.momentum = _positive_number("BatchNorm1d", "momentum", momentum, 1.0)
        self.affine = bool(affine)
        self.weight, self.bias = _scale_and_shift(self.affine, (self.num_features,), dtype)
        self.register_buffer("running_mean", np.zeros(self.num_features, dtype=dtype))
        self.register_buffer("running_var", np.ones(self.num_features, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        shape = tuple(x.data.shape)
        if len(shape) != 2 or shape[1] != self.num_features:
            raise ShapeError(f"BatchNorm1d({self.num_features}) got input of shape {shape}; expected (N, {self.num_features})")
        guard(self, "training", "momentum", "eps")  # (a compiled step records again after train() / eval())
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training, self.momentum, self.eps)

    @classmethod
    def state_shapes(cls, config: dict) -> dict:
        n = (int(config["num_features"]),)
        return {**({"weight": n, "bias": n} if config["affine"] else {}), "running_mean": n, "running_var": n}

    def get_config(self) -> dict:
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum, "affine": self.affine}

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps:g}, momentum={self.momentum:g}" + ("" if self.affine else ", affine=False")


@register_module
class LayerNorm(Module):
    """Layer normalization (Ba, Kiros and Hinton 2016): each sample standardized over its last axes.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, with the mean and variance of each
    sample's ``normalized_shape`` trailing entries: no batch statistics, so training and
    evaluation compute the same thing, and a batch of one works. The same numbers as PyTorch's
    LayerNorm.

    Args:
        normalized_shape: the trailing shape to normalize over (an int: the last axis' width).
        eps: added to the variance under the square root.
        elementwise_affine: learn ``weight`` (ones at first) and ``bias`` (zeros) of that shape.

    Example:
        >>> ln = nn.LayerNorm(64)
        >>> ln(cr.randn(32, 64)).shape
        (32, 64)
    """

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5, elementwise_affine: bool = True, dtype: Any = "float32"):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
        if not shape or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s <= 0 for s in shape):
            raise ChainruleError(f"LayerNorm needs a positive width or shape of positive widths, got {normalized_shape!r}")
        self.normalized_shape = tuple(int(s) for s in shape)
        self.eps = _positive_number("LayerNorm", "eps", eps)
        self.elementwise_affine = bool(elementwise_affine)
        self.weight, self.bias = _scale_and_shift(self.elementwise_affine, self.normalized_shape, dtype)

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    @classmethod
    def state_shapes(cls, config: dict) -> dict:
        shape = config["normalized_shape"]
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
        return {"weight": shape, "bias": shape} if config["elementwise_affine"] else {}

    def get_config(self) -> dict:
        return {"normalized_shape": list(self.normalized_shape), "eps": self.eps, "elementwise_affine": self.elementwise_affine}

    def extra_repr(self) -> str:
        width = self.normalized_shape[0] if len(self.normalized_shape) == 1 else self.normalized_shape
        return f"{width}, eps={self.eps:g}" + ("" if self.elementwise_affine else ", elementwise_affine=False")
