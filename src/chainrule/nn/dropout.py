"""Dropout: units silenced at random while training, the identity while evaluating."""

from __future__ import annotations

from typing import Any

from .. import functional as F
from ..autograd import Tensor
from ..capture import guard
from ..errors import ChainruleError
from ..random import generator as _generator
from ..validation import real_number
from .module import Module, register_module


def check_dropout(p: Any, name: str = "dropout") -> float:
    """``p`` as a dropout probability in [0, 1); ChainruleError naming ``name`` and ``p`` otherwise."""
    value = real_number(p)
    if not 0.0 <= value < 1.0:
        raise ChainruleError(f"{name} must be a probability in [0, 1), got {p!r}")
    return value


@register_module
class Dropout(Module):
    """Inverted dropout (Srivastava et al. 2014): in training mode each entry is zeroed with
    probability ``p`` and the others are scaled by ``1 / (1 - p)``; in evaluation mode, the identity.

    A new mask is drawn at every call from ``generator``: a seed, a NumPy Generator, or
    chainrule's default generator as it is when the layer is made (``cr.manual_seed`` first)
    when None. Checkpoints keep the
    generator's state, so a resumed run draws the masks an uninterrupted one would.

    Args:
        p: the probability of zeroing an entry, in [0, 1).
        generator: where the masks come from.

    Example:
        >>> drop = nn.Dropout(0.2)
        >>> drop.eval()(x) is x
        True
    """

    def __init__(self, p: float = 0.5, generator: Any = None):
        super().__init__()
        self.p = check_dropout(p, "Dropout's p")
        self.generator = _generator(generator)

    def forward(self, x: Tensor) -> Tensor:
        guard(self, "training", "p", "generator")  # (a compiled step records again after train() / eval())
        return F.dropout(x, self.p, self.training, self.generator)

    def get_config(self) -> dict:
        return {"p": self.p}

    def extra_repr(self) -> str:
        return f"p={self.p:g}"


def generator_states(model: Module) -> dict:
    """Dotted module name -> its generator's state (JSON-ready), for every Dropout of ``model``."""
    return {name: m.generator.bit_generator.state for name, m in model.named_modules() if isinstance(m, Dropout)}


def set_generator_states(model: Module, states: dict) -> None:
    """Restore :func:`generator_states` into the Dropout layers of ``model``, by name.

    Raises ChainruleError naming a Dropout that the states lack, or a state that fits none.
    """
    own = {name: m for name, m in model.named_modules() if isinstance(m, Dropout)}
    if set(own) != set(states):
        raise ChainruleError(f"dropout generator states for layers {sorted(states)}, but the model's Dropout layers are {sorted(own)}")
    for name, m in own.items():
        try:
            m.generator.bit_generator.state = states[name]
        except (TypeError, ValueError, KeyError) as e:
            raise ChainruleError(f"dropout layer {name!r}: its saved generator state does not fit: {e}") from None
