"""Activation layers: thin modules over the pure functions in chainrule.functional,
and the registry that lets the command line and configs name them."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..errors import ChainruleError
from .module import Module, Parameter, register_module


@register_module
class Identity(Module):
    """Returns its input unchanged."""

    def forward(self, x: Tensor) -> Tensor:
        return x

    def get_config(self) -> dict:
        return {}


@register_module
class Sigmoid(Module):
    """``1 / (1 + e^-x)``; saturates for large |x|, derivative at most 0.25."""

    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)

    def get_config(self) -> dict:
        return {}


@register_module
class Tanh(Module):
    """``tanh(x)``: a zero-centred sigmoid, ``2 sigmoid(2x) - 1``."""

    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)

    def get_config(self) -> dict:
        return {}


@register_module
class ReLU(Module):
    """``max(x, 0)``; derivative 1 for x > 0, 0 for x <= 0."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)

    def get_config(self) -> dict:
        return {}


@register_module
class LeakyReLU(Module):
    """``x`` for x > 0, ``negative_slope * x`` otherwise."""

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        if not np.isfinite(negative_slope) or negative_slope < 0:
            raise ChainruleError(f"LeakyReLU needs a finite negative_slope >= 0, got {negative_slope}")
        self.negative_slope = float(negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def get_config(self) -> dict:
        return {"negative_slope": self.negative_slope}

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


@register_module
class PReLU(Module):
    """Parametric ReLU: ``x`` for x > 0, ``a * x`` otherwise, with the slope ``a`` learned.

    Args:
        num_parameters: 1 (one slope shared by all units) or the number of
            units (one slope each, along the last axis).
        init: the starting slope.
    """

    def __init__(self, num_parameters: int = 1, init: float = 0.25, dtype: Any = "float32"):
        super().__init__()
        if not isinstance(num_parameters, (int, np.integer)) or num_parameters < 1:
            raise ChainruleError(f"PReLU needs num_parameters >= 1, got {num_parameters!r}")
        self.num_parameters = int(num_parameters)
        self.init = float(init)
        self.weight = Parameter(np.full((num_parameters,), init, dtype=dtype), dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        if self.num_parameters != 1 and x.data.shape[-1] != self.num_parameters:
            raise ChainruleError(f"PReLU({self.num_parameters}) got input of shape {x.data.shape}; expected (..., {self.num_parameters})")
        return F.prelu(x, self.weight)

    @classmethod
    def state_shapes(cls, config: dict) -> dict:
        return {"weight": (int(config["num_parameters"]),)}

    def get_config(self) -> dict:
        return {"num_parameters": self.num_parameters, "init": self.init}

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"


@register_module
class ELU(Module):
    """``x`` for x > 0, ``alpha (e^x - 1)`` otherwise."""

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: Tensor) -> Tensor:
        return F.elu(x, self.alpha)

    def get_config(self) -> dict:
        return {"alpha": self.alpha}

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


@register_module
class SiLU(Module):
    """SiLU (swish) ``x sigmoid(x)``: smooth, slightly negative for x < 0, derivative at most 1.0998.
    Beyond the lesson's six activations."""

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x)

    def get_config(self) -> dict:
        return {}


@register_module
class GELU(Module):
    """GELU ``x Phi(x)`` (Phi the normal CDF), or its tanh approximation with
    ``approximate="tanh"``; derivative at most 1.129. Beyond the lesson's six activations."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in F.GELU_APPROXIMATIONS:
            raise ChainruleError(f"GELU needs approximate in {F.GELU_APPROXIMATIONS}, got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, self.approximate)

    def get_config(self) -> dict:
        return {"approximate": self.approximate}

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


@register_module
class Softmax(Module):
    """``e^x / sum(e^x)`` along ``axis``."""

    def __init__(self, axis: int = -1):
        super().__init__()
        self.axis = int(axis)

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(x, self.axis)

    def get_config(self) -> dict:
        return {"axis": self.axis}


@register_module
class LogSoftmax(Module):
    """``x - logsumexp(x)`` along ``axis``."""

    def __init__(self, axis: int = -1):
        super().__init__()
        self.axis = int(axis)

    def forward(self, x: Tensor) -> Tensor:
        return F.log_softmax(x, self.axis)

    def get_config(self) -> dict:
        return {"axis": self.axis}


# The six activations of the lesson, two beyond it (GELU and SiLU, the smooth ReLUs of
# today's networks) and identity, by the names the command line uses.
ACTIVATIONS = {
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "prelu": PReLU,
    "elu": ELU,
    "gelu": GELU,
    "silu": SiLU,
    "identity": Identity,
}

#: Registry names of the activations that the lesson does not cover.
BEYOND_THE_LESSON = ("gelu", "silu")


def activation(name: str, **kwargs: Any) -> Module:
    """A new activation module by registry name, e.g. ``activation("leaky_relu", negative_slope=0.1)``."""
    cls = ACTIVATIONS.get(str(name).lower().replace("-", "_"))
    if cls is None:
        raise ChainruleError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
    return cls(**kwargs)
