"""Which layers a monitor watches, and the local derivative of each activation.

A *layer* here is one :class:`~chainrule.nn.Linear` together with the
activation module that follows it (in an MLP or a Sequential, the next leaf
module), and the normalization layer between them if there is one. Its
pre-activation, what the activation sees, is ``z = x @ W + b``, or that
normalized: a normalized layer is judged by the values its activation
receives, not by the Linear's raw output.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .. import ops
from ..activation_rules import ACTIVATION_RULES
from ..autograd import Tensor, leaf, no_grad
from ..backend import asarray, namespace, to_numpy
from ..errors import ChainruleError
from ..nn.activations import ACTIVATIONS
from ..nn.linear import Linear
from ..nn.module import Module, unchanged_state, watch
from ..nn.normalization import BatchNorm1d, LayerNorm
from ..nn.residual import Residual

# The saturation rule: a unit is saturated on a sample when its local derivative
# is below this fraction of the activation's largest derivative. For the sigmoid
# (largest derivative 0.25 at z = 0) that is |z| > 5.99; for tanh (largest 1) |z| > 2.99.
SATURATION_LEVEL = 0.01

# Activations whose derivative dies away for large |z|, with their largest derivative.
SATURATING = {"sigmoid": 0.25, "tanh": 1.0}

# The smooth ReLUs (beyond the lesson). They do not saturate: for large z their derivative
# tends to 1. For z << 0 it dies away as ReLU's does, so a unit counts as dead when every
# probe sample puts it in that flat left tail, z < dead_threshold(activation), below which
# |f'(z)| stays under SATURATION_LEVEL of its peak (z < -3.02 for GELU, z < -6.14 for SiLU).
SMOOTH_RELUS = ("gelu", "silu")

# The activations whose units can die: one-sided ones, flat far below zero (ReLU exactly, ELU
# once saturated at -1, GELU and SiLU in their tails) and steep above. Sigmoid and tanh flatten
# at both ends: their units saturate (SATURATING). Leaky ReLU and PReLU keep a slope of their own.
CAN_DIE = ("relu", "elu", *SMOOTH_RELUS)

_NAME_OF_CLASS = {cls: name for name, cls in ACTIVATIONS.items()}
_NORM_NAME = {BatchNorm1d: "batch", LayerNorm: "layer"}


@dataclass
class Layer:
    """One watched layer: its 1-based position, dotted module name, Linear and activation, the
    normalization between them (or None) and the Residual block around it (its name, or None)."""

    index: int
    name: str
    linear: Linear
    activation: str  # a registry name ("sigmoid", "relu", ...) or "none" (the output layer)
    act_module: Module | None = None
    norm_module: Module | None = None
    block: str | None = None

    @property
    def norm(self) -> str | None:
        """"batch", "layer" or None."""
        return None if self.norm_module is None else _NORM_NAME[type(self.norm_module)]

    @property
    def preact_module(self) -> Module:
        """The module whose output the activation receives: the normalization, else the Linear."""
        return self.linear if self.norm_module is None else self.norm_module

    @property
    def unit_bias(self) -> Any:
        """The bias added last before the activation (the normalization's, else the Linear's; or
        None): its gradient is zero for a unit exactly when the unit passed back no gradient."""
        bias = getattr(self.norm_module, "bias", None) if self.norm_module is not None else None
        return bias if bias is not None else self.linear.bias

    def describe(self) -> dict:
        return {"layer": self.index, "name": self.name, "activation": self.activation, "norm": self.norm, "block": self.block}


def find_layers(model: Any) -> list:
    """Each Linear of ``model``, in execution order, paired with the activation that follows it.

    Order is the order in which the modules were registered, which for
    ``nn.Sequential`` and ``nn.MLP`` is the order they run in. A Linear
    followed directly by another Linear (or by nothing, as the output layer)
    gets activation "none". A BatchNorm1d or LayerNorm between a Linear and its
    activation is the layer's ``norm_module``; a Linear inside an ``nn.Residual``
    has that block's name as its ``block``.

    Raises:
        ChainruleError: the model holds no Linear layer.

    Example:
        >>> [l.activation for l in find_layers(nn.MLP([64, 32, 10], activation="tanh"))]
        ['tanh', 'none']
    """
    if not isinstance(model, Module):
        raise ChainruleError(f"gradient-flow diagnostics need a chainrule nn.Module, got {type(model).__name__}")
    layers: list = []
    blocks: list = []
    for name, m in model.named_modules():
        if isinstance(m, Residual):
            blocks.append(name)
        if m._modules:  # containers: their leaves come next
            continue
        if isinstance(m, Linear):
            block = next((b for b in reversed(blocks) if name.startswith(b + ".")), None)
            layers.append(Layer(len(layers) + 1, name or "model", m, "none", block=block))
        elif layers and layers[-1].act_module is None and layers[-1].norm_module is None and type(m) in _NORM_NAME:
            layers[-1].norm_module = m
        elif layers and layers[-1].act_module is None and type(m) in _NAME_OF_CLASS:
            layers[-1].activation = _NAME_OF_CLASS[type(m)]
            layers[-1].act_module = m
    if not layers:
        raise ChainruleError(
            f"gradient-flow diagnostics watch nn.Linear layers, and {type(model).__name__} has none; "
            "build the model from nn.Linear and activation modules (nn.MLP or nn.Sequential)"
        )
    return layers


def layer_outputs(model: Any, layers: list, X: Any) -> list:
    """Each layer's (pre-activation, activation output) arrays on the batch ``X``, ``(None, None)``
    for a layer the pass did not reach.

    One forward pass of the whole model with no graph, in its current mode, during which each
    layer's ``preact_module`` and activation keep their outputs; the model's running statistics
    and dropout generators are left as they were (:func:`chainrule.nn.module.unchanged_state`).
    """
    kept: dict = {}

    def keeping(key: tuple) -> Any:
        def wrap(forward: Any) -> Any:
            def run(x: Tensor) -> Tensor:
                out = forward(x)
                kept[key] = out.data
                return out

            return run

        return wrap

    with ExitStack() as stack:
        for k, layer in enumerate(layers):
            stack.enter_context(watch(layer.preact_module, keeping((k, 0))))
            if layer.act_module is not None:
                stack.enter_context(watch(layer.act_module, keeping((k, 1))))
        with no_grad(), unchanged_state(model):
            model(leaf(like_weights(X, layers[0])))
    return [(kept.get((k, 0)), kept.get((k, 1))) for k in range(len(layers))]


def local_derivative(layer: Layer, z: np.ndarray) -> np.ndarray | None:
    """d activation(z) / dz, elementwise, for the layer's activation (None for "none").

    ``z`` is a NumPy array (the diagnostics measure host copies). Kinks take the derivative the forward pass uses: ReLU'(0) = 0, leaky/PReLU
    take the left slope at 0.
    """
    act, m = layer.activation, layer.act_module
    rule = ACTIVATION_RULES.get(act)
    if rule is None or act == "identity":
        return None
    param = to_numpy(m.weight.data).astype(z.dtype) if act == "prelu" else getattr(m, _SETTING.get(act, ""), None)
    return np.asarray(rule.derivative(z, param)).astype(z.dtype, copy=False)


# the activation module's attribute that is its setting in the activation table
_SETTING = {"leaky_relu": "negative_slope", "elu": "alpha", "gelu": "approximate"}


def derivative_peak(layer: Layer) -> float:
    """The largest |f'(z)| of the layer's activation: the yardstick of "flat" (``SATURATION_LEVEL`` of it)."""
    act, m = layer.activation, layer.act_module
    if act in SATURATING:
        return SATURATING[act]
    if act in SMOOTH_RELUS:
        return _smooth_peak(act, getattr(m, "approximate", "none"))
    if act == "elu":
        return max(1.0, float(m.alpha))
    return 1.0


@lru_cache(maxsize=None)
def _smooth_peak(activation: str, approximate: str) -> float:
    z = np.linspace(0.0, 6.0, 60_001)
    return float((ops.gelu_derivative(z, approximate) if activation == "gelu" else ops.silu_derivative(z)).max())


def unit_health(layer: Layer | str, z: Any, derivative: Any = None) -> dict:
    """Dead and saturated units of one layer on a batch: the one definition that the Monitor, the
    lab and the dashboard use.

    A unit is *flat* on a row when its local derivative there is below ``SATURATION_LEVEL``
    (1%) of the largest its activation has: it passes back almost none of the gradient.

    - ``dead_fraction``: the share of units flat on every row, which pass back no gradient
      to speak of whatever the input and so cannot recover (a ReLU with z <= 0 everywhere).
      For the activations in ``CAN_DIE``; None for the others.
    - ``saturated_fraction``: the share of (row, unit) pairs that are flat, for sigmoid and
      tanh (``SATURATING``), which flatten at both ends; None for the others.
    - ``mean_derivative``: the mean local derivative, about the share of the gradient each
      unit passes back. All three are None for a layer with no activation.

    Args:
        layer: a :class:`Layer` from :func:`find_layers`, or an activation's registry name
            (with its default settings).
        z: the pre-activations, (rows, units).
        derivative: f'(z) when the caller has it already (the Monitor takes the sigmoid's
            from its output); computed from ``z`` otherwise.

    Example:
        >>> unit_health("relu", np.array([[-1.0, 2.0], [-0.5, 3.0]]))["dead_fraction"]
        0.5
    """
    if isinstance(layer, str):
        if layer not in ACTIVATIONS:
            raise ChainruleError(f"unit_health needs a layer or an activation name ({', '.join(ACTIVATIONS)}), got {layer!r}")
        layer = Layer(0, layer, None, layer, ACTIVATIONS[layer]())
    z = np.asarray(host(z))
    z = z.reshape(-1, z.shape[-1]) if z.ndim != 2 else z
    d = local_derivative(layer, z) if derivative is None else np.asarray(host(derivative)).reshape(z.shape)
    if d is None or not z.size:
        return {"dead_fraction": None, "saturated_fraction": None, "mean_derivative": None}
    flat = flat_mask(layer, d)
    act = layer.activation
    return {
        "dead_fraction": float(1.0 - np.any(~flat, axis=0).mean()) if act in CAN_DIE else None,
        "saturated_fraction": float(np.count_nonzero(flat) / flat.size) if act in SATURATING else None,
        "mean_derivative": float(d.sum(dtype=np.float64)) / d.size,
    }


def flat_mask(layer: Layer, derivative: np.ndarray) -> np.ndarray:
    """Where a unit is flat: |f'(z)| below ``SATURATION_LEVEL`` of its activation's peak (rows x units)."""
    return np.abs(derivative) < SATURATION_LEVEL * derivative_peak(layer)


def health_rule(activation: str, approximate: str = "none") -> str:
    """How the monitor judges a unit of ``activation`` saturated or dead, in one sentence.

    Example:
        >>> health_rule("relu")
        'dead: z <= 0 on every probe sample, so no gradient passes; never saturated'
    """
    level = f"{100 * SATURATION_LEVEL:g}%"
    if activation in SATURATING:
        return (f"saturated: |z| > {saturation_threshold(activation):.2f}, where f'(z) < {level} of its peak "
                f"{SATURATING[activation]:g}, counted over (sample, unit) pairs; never dead")
    if activation == "relu":
        return "dead: z <= 0 on every probe sample, so no gradient passes; never saturated"
    if activation in SMOOTH_RELUS:
        return (f"dead: every probe sample puts the unit in the flat left tail, z < {dead_threshold(activation, approximate):.2f}, "
                f"where |f'(z)| < {level} of its peak {_smooth_peak(activation, approximate):.3f}; never saturated "
                "(f'(z) tends to 1 for large z)")
    if activation == "elu":
        return (f"dead: every probe sample puts the unit at z < {math.log(SATURATION_LEVEL):.2f} (alpha 1), saturated at -1, "
                f"where f'(z) = alpha e^z < {level} of its peak 1; not counted as saturated")
    return "no saturated or dead rule for this activation"


@lru_cache(maxsize=None)
def dead_threshold(activation: str, approximate: str = "none") -> float:
    """z below which a GELU or SiLU unit counts as dead: in the left tail where |f'(z)| stays
    under ``SATURATION_LEVEL`` of f's largest derivative (found on a grid of step 1e-4)."""
    if activation not in SMOOTH_RELUS:
        raise ChainruleError(f"the dead-unit threshold is defined for {', '.join(SMOOTH_RELUS)}, got {activation!r}")
    z = np.linspace(-12.0, 6.0, 180_001)
    d = ops.gelu_derivative(z, approximate) if activation == "gelu" else ops.silu_derivative(z)
    live = np.abs(d) >= SATURATION_LEVEL * d.max()
    return float(z[np.argmax(live)])


@lru_cache(maxsize=None)
def saturation_threshold(activation: str) -> float:
    """|z| beyond which a sigmoid or tanh unit counts as saturated (its derivative < 1% of its peak).

    sigmoid: s(1 - s) < 0.01 * 0.25; tanh: 1 - tanh(z)^2 < 0.01.
    """
    if activation == "sigmoid":
        # s(1-s) = c  <=>  s = (1 + sqrt(1 - 4c)) / 2, z = log(s / (1 - s))
        c = SATURATION_LEVEL * 0.25
        s = (1 + math.sqrt(1 - 4 * c)) / 2
        return math.log(s / (1 - s))
    if activation == "tanh":
        return math.atanh(math.sqrt(1 - SATURATION_LEVEL))
    raise ChainruleError(f"saturation is defined for {', '.join(SATURATING)}, got {activation!r}")


def host(a: Any) -> np.ndarray:
    """A backend array as a NumPy array (arrays on a GPU or another device are copied to the host)."""
    return to_numpy(a)


def like_weights(X: Any, layer: Layer, cast: bool = True) -> Any:
    """``X`` in the namespace and on the device of the model's weights; with ``cast``, in their
    dtype (inputs, not class labels)."""
    w = layer.linear.weight.data
    X = to_numpy(np.asarray(X) if not hasattr(X, "shape") else X)
    if type(w) is np.ndarray:
        return X.astype(w.dtype, copy=False) if cast else X
    X = asarray(X, like=w)
    return namespace(w).astype(X, w.dtype, copy=False) if cast else X
