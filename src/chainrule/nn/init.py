"""Weight initializers, in place on a tensor's data (trailing underscore, as PyTorch).

Random values are drawn on the host by NumPy's generator and then copied to the
tensor's namespace and device, so a seed gives the same weights on every device.

Weights of :class:`~chainrule.nn.Linear` have shape (in_features, out_features),
so fan_in = shape[0] and fan_out = shape[1].
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any

import numpy as np

from ..autograd import Tensor
from ..errors import ChainruleError
from ..random import generator as _generator
from .module import copy_like


def _fans(t: Tensor) -> tuple:
    shape = t.data.shape
    if len(shape) < 2:
        raise ChainruleError(f"fan-in/fan-out need a weight of at least 2 dimensions, got shape {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[0] * receptive, shape[1] * receptive


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The gain that keeps activation variance steady through ``nonlinearity``.

    sigmoid, identity, linear: 1; tanh: 5/3; relu: sqrt(2);
    leaky_relu and prelu with slope a: sqrt(2 / (1 + a^2)); elu: 1 (He initialization of an ELU network uses the ReLU gain instead).
    """
    if nonlinearity in ("sigmoid", "identity", "linear", "elu"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity in ("leaky_relu", "prelu"):
        a = (0.01 if nonlinearity == "leaky_relu" else 0.25) if param is None else param
        return math.sqrt(2.0 / (1 + a * a))
    raise ChainruleError(f"unknown nonlinearity {nonlinearity!r} for calculate_gain")


def _fill(t: Tensor, values: np.ndarray) -> Tensor:
    """Write host ``values`` into ``t.data`` in place, in its dtype, on its device."""
    d = t.data
    d[...] = values.astype(d.dtype, copy=False) if type(d) is np.ndarray else copy_like(values, d)
    return t


# Set while cr.load builds a model whose values the file then replaces: random draws are skipped
# (they would cost time, and temporaries of twice the weights' size).
_SKIP_RANDOM: contextvars.ContextVar = contextvars.ContextVar("chainrule_skip_random_init", default=False)


@contextlib.contextmanager
def skip_random_init():
    """Within this block (in this thread), normal_ and uniform_ leave tensors as they are.

    Example:
        >>> with skip_random_init():
        ...     model = nn.MLP([64, 10])    # weights uninitialized: about to be overwritten
    """
    token = _SKIP_RANDOM.set(True)
    try:
        yield
    finally:
        _SKIP_RANDOM.reset(token)


def normal_(t: Tensor, mean: float = 0.0, std: float = 1.0, generator: Any = None) -> Tensor:
    """Fill with samples of N(mean, std^2)."""
    if _SKIP_RANDOM.get():
        return t
    return _fill(t, _generator(generator).normal(mean, std, t.data.shape))


def uniform_(t: Tensor, a: float = 0.0, b: float = 1.0, generator: Any = None) -> Tensor:
    """Fill with samples of U(a, b)."""
    if _SKIP_RANDOM.get():
        return t
    return _fill(t, _generator(generator).uniform(a, b, t.data.shape))


def constant_(t: Tensor, value: float) -> Tensor:
    """Fill with ``value`` (a large negative bias kills ReLUs: the lab uses that)."""
    t.data[...] = value
    return t


def zeros_(t: Tensor) -> Tensor:
    return constant_(t, 0.0)


def xavier_uniform_(t: Tensor, gain: float = 1.0, generator: Any = None) -> Tensor:
    """Glorot uniform: U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)). For sigmoid and tanh."""
    fan_in, fan_out = _fans(t)
    b = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -b, b, generator)


def xavier_normal_(t: Tensor, gain: float = 1.0, generator: Any = None) -> Tensor:
    """Glorot normal: N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(t)
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def he_uniform_(t: Tensor, nonlinearity: str = "relu", param: float | None = None, generator: Any = None) -> Tensor:
    """He (Kaiming) uniform: U(-b, b) with b = gain * sqrt(3 / fan_in). For the ReLU family."""
    fan_in, _ = _fans(t)
    b = calculate_gain(nonlinearity, param) * math.sqrt(3.0 / fan_in)
    return uniform_(t, -b, b, generator)


def he_normal_(t: Tensor, nonlinearity: str = "relu", param: float | None = None, generator: Any = None) -> Tensor:
    """He (Kaiming) normal: N(0, std^2) with std = gain / sqrt(fan_in); gain sqrt(2) for ReLU."""
    fan_in, _ = _fans(t)
    return normal_(t, 0.0, calculate_gain(nonlinearity, param) / math.sqrt(fan_in), generator)


def default_uniform_(t: Tensor, fan_in: int, generator: Any = None) -> Tensor:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for Linear layers."""
    b = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return uniform_(t, -b, b, generator)


INITIALIZERS = ("xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "normal", "uniform")


def initialize(weight: Tensor, scheme: str, activation: str = "relu", param: float | None = None, generator: Any = None) -> Tensor:
    """Initialize a weight by scheme name (as the command line and configs name them).

    "normal" is N(0, 0.01^2), the small fixed scale that makes deep networks'
    signals vanish; "uniform" is PyTorch's Linear default.
    """
    if scheme == "xavier_uniform":
        return xavier_uniform_(weight, generator=generator)
    if scheme == "xavier_normal":
        return xavier_normal_(weight, generator=generator)
    if scheme in ("he_uniform", "he_normal"):
        nl = activation if activation in ("relu", "leaky_relu", "prelu") else "relu"
        fn = he_uniform_ if scheme == "he_uniform" else he_normal_
        return fn(weight, nl, param, generator=generator)
    if scheme == "normal":
        return normal_(weight, 0.0, 0.01, generator)
    if scheme == "uniform":
        return default_uniform_(weight, weight.data.shape[0], generator)
    raise ChainruleError(f"unknown init {scheme!r}; expected one of {', '.join(INITIALIZERS)}")
