"""Linear: the fully connected layer ``y = x @ weight + bias``."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..errors import ChainruleError, ShapeError
from . import init as _init
from .module import Module, Parameter, register_module


@register_module
class Linear(Module):
    """Fully connected layer: ``y = x @ weight + bias``.

    ``weight`` has shape (in_features, out_features), so the forward pass is a
    plain matrix product with no transpose. Initialised as PyTorch's Linear:
    U(-1/sqrt(in), 1/sqrt(in)) for weight and bias (nn.MLP chooses He or
    Xavier instead).

    Example:
        >>> layer = nn.Linear(64, 128)
        >>> layer(cr.randn(32, 64)).shape
        (32, 128)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: Any = "float32", generator: Any = None):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, (int, np.integer)) or v <= 0:
                raise ChainruleError(f"Linear needs a positive integer {name}, got {v!r}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.weight = Parameter(np.empty((in_features, out_features), dtype=dtype), dtype=dtype)
        _init.default_uniform_(self.weight, in_features, generator)
        if bias:
            self.bias = Parameter(np.empty((out_features,), dtype=dtype), dtype=dtype)
            _init.default_uniform_(self.bias, in_features, generator)
        else:
            self.bias = None

    def forward(self, x: Tensor) -> Tensor:
        if x.data.shape[-1] != self.in_features:
            raise ShapeError(
                f"Linear({self.in_features} -> {self.out_features}) got input of shape {x.data.shape}; "
                f"expected (..., {self.in_features})"
            )
        return F.linear(x, self.weight, self.bias)

    @classmethod
    def state_shapes(cls, config: dict) -> dict:
        n_in, n_out = int(config["in_features"]), int(config["out_features"])
        return {"weight": (n_in, n_out), **({"bias": (n_out,)} if config["bias"] else {})}

    def get_config(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias is not None}

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}" + ("" if self.bias is not None else ", bias=False")
