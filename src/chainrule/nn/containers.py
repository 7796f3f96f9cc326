"""Sequential: layers applied one after another."""

from __future__ import annotations

from typing import Any, Iterator

from ..autograd import Tensor
from .module import Module, register_module


@register_module
class Sequential(Module):
    """Apply ``layers`` in order: ``Sequential(a, b, c)(x) == c(b(a(x)))``.

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

    def forward(self, x: Tensor) -> Tensor:
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

