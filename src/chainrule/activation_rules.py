"""The table of activations: each one's forward and derivative, written once.

Every entry gives ``forward(x, param)`` -> ``(y, aux)`` and ``slope(x, y, aux, param)`` -> f'(x),
elementwise, for arrays of any namespace (NumPy, CuPy, the array API). ``aux`` is what the
forward pass computed on the way that the derivative reuses (GELU's normal CDF, SiLU's
sigmoid, the leaky slopes); ``reads`` says what the derivative needs: the output (sigmoid,
tanh, ReLU: nothing else has to be kept), the input, or both. ``param`` is the activation's
setting (leaky ReLU's negative slope, ELU's alpha, GELU's approximation, PReLU's weight array).

The primitives (:mod:`chainrule.ops`), the fused stack of layers
(:func:`chainrule.functional.fused_layers`), and the diagnostics' local derivative
(:func:`chainrule.diagnostics.layers.local_derivative`, which the Monitor's probe reads) all
take their formulas from here. Adding an activation is one entry and its tests. The
benchmark's hand-fused MLP keeps its own formulas on purpose: it is the floor that the
framework is measured against.

Kinks take the derivative PyTorch takes: ReLU'(0) = 0 (and 1 at NaN, where the output is not
0), leaky ReLU and PReLU take the left slope at 0, ELU'(0) = alpha.

On NumPy, ``forward`` takes an optional ``out`` array (the fused stack computes in place
into a layer's output it owns); ``slope`` returns a new array the caller may overwrite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .backend import erf, namespace, quiet

GELU_APPROXIMATIONS = ("none", "tanh")
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_CUBIC = 0.044715


@dataclass(frozen=True)
class Activation:
    """One activation's forward and derivative (see the module)."""

    name: str
    forward: Callable
    slope: Callable
    reads: str  # what slope needs: "output", "input" or "both"
    peak: float | None = None  # the largest derivative, for activations that saturate

    def derivative(self, x: Any, param: Any = None) -> Any:
        """f'(x) for an array x: the forward pass, then its slope."""
        y, aux = self.forward(x, param)
        return self.slope(x, y, aux, param)


# ---- the entries ---------------------------------------------------------------------------


def _identity_forward(x: Any, param: Any = None, out: Any = None) -> tuple:
    return x, None


def _identity_slope(x: Any, y: Any, aux: Any, param: Any = None) -> Any:
    return namespace(y).ones_like(y)


def _relu_forward(x: Any, param: Any = None, out: Any = None) -> tuple:
    """max(x, 0)."""
    if isinstance(x, np.ndarray):
        return np.maximum(x, x.dtype.type(0), out=out), None
    return namespace(x).maximum(x, 0), None  # (Python scalars: the 2024.12 standard)


def _relu_slope(x: Any, y: Any, aux: Any, param: Any = None) -> Any:
    """A boolean mask: 1 where y != 0 (x > 0, or NaN), 0 where x <= 0 (ReLU'(0) = 0). Callers
    multiply by it on NumPy and select with it elsewhere (the standard multiplies no floats by
    booleans)."""
    return y != 0


def _sigmoid_forward(x: Any, param: Any = None, out: Any = None) -> tuple:
    """1 / (1 + e^-x): for x << 0, e^-x overflows to inf and 1 / (1 + inf) = 0 is the right limit,
    so the overflow is silenced rather than avoided (on NumPy: four passes in place)."""
    if isinstance(x, np.ndarray):
        y = np.negative(x, out=np.empty_like(x) if out is None else out)
        with quiet(np):
            np.exp(y, out=y)
        y += y.dtype.type(1)
        np.reciprocal(y, out=y)
        return y, None
    xp = namespace(x)
    return 1 / (1 + xp.exp(-x)), None


def _sigmoid_slope(x: Any, y: Any, aux: Any, param: Any = None) -> Any:
    """s (1 - s), from the output; at most 0.25 (at x = 0)."""
    d = 1 - y
    d *= y
    return d


def _tanh_forward(x: Any, param: Any = None, out: Any = None) -> tuple:
    if isinstance(x, np.ndarray):
        return np.tanh(x, out=out), None
    return namespace(x).tanh(x), None


def _tanh_slope(x: Any, y: Any, aux: Any, param: Any = None) -> Any:
    """1 - tanh^2, from the output; at most 1 (at x = 0)."""
    d = y * y
    if isinstance(d, np.ndarray):
        return np.subtract(d.dtype.type(1), d, out=d)
    return 1 - d


def _leaky_forward(x: Any, slope: float = 0.01, out: Any = None) -> tuple:
    """x for x > 0, slope * x otherwise; aux is the derivative itself (1 or slope)."""
    xp = namespace(x)
    d = xp.where(x > 0, xp.ones_like(x), xp.full_like(x, slope))
    return x * d, d


def _prelu_forward(x: Any, weight: Any, out: Any = None) -> tuple:
    """x for x > 0, weight * x otherwise (weight: one slope, or one per unit of the last axis)."""
    xp = namespace(x)
    d = xp.where(x > 0, xp.ones_like(x), xp.broadcast_to(weight, x.shape))
    return x * d, d


def _aux_slope(x: Any, y: Any, aux: Any, param: Any = None) -> Any:
    return aux


def _elu_forward(x: Any, alpha: float = 1.0, out: Any = None) -> tuple:
    """x for x > 0, alpha (e^x - 1) otherwise; e^x is taken of min(x, 0), so the unused branch
    cannot overflow. aux: the derivative, alpha e^x for x <= 0 and 1 elsewhere (NaN included)."""
    xp = namespace(x)
    e = xp.exp(xp.minimum(x, xp.zeros_like(x)))
    neg = x <= 0
    return xp.where(neg, (e - 1) * alpha, x), xp.where(neg, e * alpha, xp.ones_like(x))


def _gelu_forward(x: Any, approximate: str = "none", out: Any = None) -> tuple:
    """x Phi(x), with aux = Phi(x) the normal CDF; for the tanh form
    0.5 x (1 + t), t = tanh(sqrt(2/pi) (x + 0.044715 x^3)), aux = t."""
    if approximate == "tanh":
        t = namespace(x).tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x))
        return 0.5 * x * (1 + t), t
    cdf = 0.5 * (1 + erf(x * (1 / math.sqrt(2))))
    return x * cdf, cdf


def _gelu_slope(x: Any, y: Any, aux: Any, approximate: str = "none") -> Any:
    """Phi(x) + x phi(x) (exact), or the derivative of the tanh form; at most 1.129 (x = 1.41),
    slightly negative for x < -0.75."""
    if approximate == "tanh":
        return 0.5 * (1 + aux) + 0.5 * x * (1 - aux * aux) * _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * x * x)
    return aux + x * namespace(x).exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))


def _silu_forward(x: Any, param: Any = None, out: Any = None) -> tuple:
    """x sigmoid(x), with aux = sigmoid(x)."""
    xp = namespace(x)
    with quiet(xp):
        s = 1 / (1 + xp.exp(-x))
    return x * s, s


def _silu_slope(x: Any, y: Any, aux: Any, param: Any = None) -> Any:
    """s (1 + x (1 - s)) with s = sigmoid(x); at most 1.0998 (at x = 2.40)."""
    return aux * (1 + x * (1 - aux))


#: name -> :class:`Activation`: the one table.
ACTIVATION_RULES = {
    a.name: a
    for a in (
        Activation("identity", _identity_forward, _identity_slope, "output"),
        Activation("relu", _relu_forward, _relu_slope, "output"),
        Activation("sigmoid", _sigmoid_forward, _sigmoid_slope, "output", peak=0.25),
        Activation("tanh", _tanh_forward, _tanh_slope, "output", peak=1.0),
        Activation("leaky_relu", _leaky_forward, _aux_slope, "input"),
        Activation("prelu", _prelu_forward, _aux_slope, "input"),
        Activation("elu", _elu_forward, _aux_slope, "input"),
        Activation("gelu", _gelu_forward, _gelu_slope, "both"),
        Activation("silu", _silu_forward, _silu_slope, "both"),
    )
}


def rule(name: str) -> Activation:
    """The table's entry for activation ``name`` ("relu", "gelu"...).

    Example:
        >>> rule("tanh").derivative(np.array([0.0, 1.0]))   # [1.0, 0.42]
    """
    try:
        return ACTIVATION_RULES[name]
    except KeyError:
        raise ValueError(f"no activation named {name!r}; expected one of {sorted(ACTIVATION_RULES)}") from None
