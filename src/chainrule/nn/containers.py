"""Sequential: layers applied one after another."""

from __future__ import annotations

from typing import Any, Iterator

from .. import functional as F
from ..autograd import Tensor
from .activations import ELU, GELU, Identity, LeakyReLU, PReLU, ReLU, Sigmoid, SiLU, Tanh
from .linear import Linear
from .module import Module, register_module

# Layer types that F.fused_layers can run, and the step kind each becomes.
_FUSED_KIND = {
    Linear: "linear",
    Identity: "identity",
    ReLU: "relu",
    Sigmoid: "sigmoid",
    Tanh: "tanh",
    LeakyReLU: "leaky_relu",
    ELU: "elu",
    PReLU: "prelu",
    GELU: "gelu",
    SiLU: "silu",
}

_BARE_STEPS = {kind: (kind, None, None) for kind in ("identity", "relu", "sigmoid", "tanh", "silu")}


@register_module
class Sequential(Module):
    """Apply ``layers`` in order: ``Sequential(a, b, c)(x) == c(b(a(x)))``.

    A stack of Linear layers and activations (the usual MLP) runs as one fused
    graph node, :func:`chainrule.functional.fused_layers`: the same values and
    gradients, several times less bookkeeping per step (:attr:`fused` says whether
    the stack qualifies). It runs layer by layer instead while a layer is watched
    (:func:`chainrule.nn.module.watch`, as the diagnostics do to keep each layer's
    output), when the input is not a batch of rows, or when a layer is of another
    type.

    Example:
        >>> model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    """

    def __init__(self, *layers: Module):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential takes modules, got {type(layer).__name__} at position {i}")
            setattr(self, str(i), layer)
        object.__setattr__(self, "_layers", tuple(layers))
        object.__setattr__(self, "_fusion", _fusion_plan(layers))

    def forward(self, x: Tensor) -> Tensor:
        plan = self._fusion
        if plan is not None and x.data.ndim == 2 and x.data.shape[1] == plan[0][1].in_features:
            steps = []
            append = steps.append
            for kind, m in plan:
                if m.watched:  # someone watches this layer's calls: run them one by one
                    return self.forward_layers(x)
                attrs = m.__dict__  # (read directly: this runs for every layer of every step)
                if kind == "linear":
                    append((kind, attrs["weight"], attrs["bias"]))
                elif kind == "prelu":
                    append((kind, attrs["weight"], None))
                elif kind == "leaky_relu":
                    append((kind, attrs["negative_slope"], None))
                elif kind == "elu":
                    append((kind, attrs["alpha"], None))
                elif kind == "gelu":
                    append((kind, attrs["approximate"], None))
                else:
                    append(_BARE_STEPS[kind])
            return F.fused_layers(x, steps)
        return self.forward_layers(x)

    @property
    def fused(self) -> bool:
        """Whether this stack runs as one fused node (on a batch of rows, while no layer is watched)."""
        return self._fusion is not None

    def forward_layers(self, x: Tensor) -> Tensor:
        """The forward pass one layer (one module call, one graph node) at a time."""
        for layer in self._layers:
            x = layer(x)
        return x

    def __getitem__(self, i: int) -> Module:
        return self._layers[i]

    def __len__(self) -> int:
        return len(self._layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._layers)

    def get_config(self) -> dict:
        return {}


def _fusion_plan(layers: Any) -> tuple | None:
    """((kind, module), ...) when the layers can run as F.fused_layers: a Linear first, then
    only Linear and known activations with matching widths; else None."""
    if not layers or type(layers[0]) is not Linear:
        return None
    plan, width = [], None
    for m in layers:
        kind = _FUSED_KIND.get(type(m))
        if kind is None:
            return None
        if kind == "linear":
            if width is not None and m.in_features != width:
                return None  # let the layer-by-layer path raise its clear shape error
            width = m.out_features
        elif kind == "prelu" and m.num_parameters not in (1, width):
            return None
        plan.append((kind, m))
    return tuple(plan)
