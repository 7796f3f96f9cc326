"""MLP: the multi-layer perceptron that the lesson, the lab and `chainrule train` use."""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import ChainruleError
from . import init as _init
from .activations import ACTIVATIONS, activation as _activation
from .containers import Sequential
from .linear import Linear
from .module import full_config, register_module

_RELU_FAMILY = ("relu", "leaky_relu", "prelu", "elu", "gelu", "silu")  # He initialization


@register_module
class MLP(Sequential):
    """Fully connected network: Linear, activation, ..., Linear (the last gives logits).

    Args:
        sizes: layer widths from input to output, e.g. ``[64, 128, 128, 10]``.
        activation: registry name of the hidden activation: "sigmoid", "tanh",
            "relu", "leaky_relu", "prelu", "elu", "gelu", "silu" or "identity".
        init: weight initializer name; by default He (normal) for the ReLU
            family (GELU and SiLU included) and Xavier (uniform) for sigmoid, tanh and identity.
        bias_init: constant for every hidden bias (the output bias starts at 0).
            A large negative value kills ReLUs from the start.
        activation_kwargs: passed to the activation, e.g. ``{"negative_slope": 0.1}``.
        generator: seed or numpy Generator for the weights.

    Example:
        >>> model = nn.MLP([64, 128, 128, 10], activation="relu")
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "relu",
        init: str | None = None,
        bias_init: float = 0.0,
        activation_kwargs: dict | None = None,
        generator: Any = None,
        dtype: Any = "float32",
    ):
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s <= 0 for s in sizes):
            raise ChainruleError(f"MLP needs at least two positive layer sizes (input and output), got {list(sizes)}")
        activation = str(activation).lower().replace("-", "_")
        if activation not in ACTIVATIONS:
            raise ChainruleError(f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}")
        scheme = init or ("he_normal" if activation in _RELU_FAMILY else "xavier_uniform")
        if scheme not in _init.INITIALIZERS:
            raise ChainruleError(f"unknown init {scheme!r}; expected one of {', '.join(_init.INITIALIZERS)}")
        kw = dict(activation_kwargs or {})
        rng = _init._generator(generator)
        slope = kw.get("negative_slope", kw.get("init"))
        layers = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            lin = Linear(n_in, n_out, dtype=dtype, generator=rng)
            _init.initialize(lin.weight, scheme, activation, slope, generator=rng)
            hidden = i < len(sizes) - 2
            _init.constant_(lin.bias, bias_init if hidden else 0.0)
            layers.append(lin)
            if hidden:
                layers.append(_activation(activation, **(dict(kw, dtype=dtype) if activation == "prelu" else kw)))
        super().__init__(*layers)
        self.sizes = sizes
        self.activation = activation
        self.init = scheme
        self.bias_init = float(bias_init)
        self.activation_kwargs = kw

    @classmethod
    def state_shapes(cls, config: dict) -> dict:
        # the layout __init__ builds: Linear i at index 2i, its activation at 2i + 1 (hidden layers only)
        sizes = [int(s) for s in config["sizes"]]
        act = ACTIVATIONS[str(config["activation"]).lower().replace("-", "_")]
        act_config = full_config(act, dict(config["activation_kwargs"] or {}))
        shapes: dict = {}
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers = [(Linear, {"in_features": n_in, "out_features": n_out, "bias": True})]
            if i < len(sizes) - 2:
                layers.append((act, act_config))
            for k, (layer, layer_config) in enumerate(layers):
                shapes.update({f"{2 * i + k}.{name}": shape for name, shape in layer.state_shapes(layer_config).items()})
        return shapes

    @property
    def linears(self) -> list:
        """The Linear layers, input to output."""
        return [m for m in self._layers if isinstance(m, Linear)]

    @property
    def in_features(self) -> int:
        return self.sizes[0]

    @property
    def out_features(self) -> int:
        return self.sizes[-1]

    def get_config(self) -> dict:
        return {
            "sizes": self.sizes,
            "activation": self.activation,
            "init": self.init,
            "bias_init": self.bias_init,
            "activation_kwargs": self.activation_kwargs,
        }

    def __repr__(self) -> str:
        head = f"MLP({'-'.join(map(str, self.sizes))}, activation={self.activation!r}, init={self.init!r}"
        return head + super().__repr__()[len("MLP(") :]
