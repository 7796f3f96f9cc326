"""MLP: the multi-layer perceptron that the lesson, the lab and `chainrule train` use."""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

from ..errors import ChainruleError
from . import init as _init
from .activations import ACTIVATIONS, activation as _activation
from .containers import Sequential
from .dropout import Dropout, check_dropout
from .linear import Linear
from .module import full_config, register_module
from .normalization import BatchNorm1d, LayerNorm
from .residual import Residual

_RELU_FAMILY = ("relu", "leaky_relu", "prelu", "elu", "gelu", "silu")  # He initialization

#: Normalization layers by the name ``MLP(norm=...)``, the command line and configs use.
NORMS = {"batch": BatchNorm1d, "layer": LayerNorm}


def check_norm(norm: Any) -> str | None:
    """``norm`` as None, "batch" or "layer" ("none" and "" are None); ChainruleError otherwise."""
    if norm is None or (isinstance(norm, str) and norm.strip().lower() in ("", "none")):
        return None
    key = str(norm).strip().lower()
    if key not in NORMS:
        raise ChainruleError(f"unknown norm {norm!r}; expected none, {', '.join(NORMS)}")
    return key


def _block(hidden: bool, norm: str | None, dropout: float) -> list:
    """The kinds of layer in one block, in order (the output block is its Linear alone): the one
    layout that MLP builds and MLP.state_shapes declares."""
    if not hidden:
        return ["linear"]
    return ["linear"] + (["norm"] if norm else []) + ["activation"] + (["dropout"] if dropout else [])


def _arrange(blocks: Iterable, residual: bool, sequential: Any, skip: Any) -> Iterator:
    """The MLP's elements from its blocks, (layers, keeps_width) pairs: one flat stack, or with
    ``residual`` one element per block, ``skip(sequential(layers))`` where the block keeps the width.
    Lazy, so that declaring the shapes of a long MLP holds one block at a time."""
    if not residual:
        return (m for b, _ in blocks for m in b)
    return ((skip(sequential(b)) if keeps else sequential(b)) if len(b) > 1 else b[0] for b, keeps in blocks)


@register_module
class MLP(Sequential):
    """Fully connected network: Linear, activation, ..., Linear (the last gives logits).

    Each hidden block is Linear, then normalization (``norm``), then the activation, then
    dropout, and with ``residual`` a skip connection around each block that keeps the width
    (``x + block(x)``). The order is the usual one and each step has a reason: the
    normalization standardizes the Linear's output, which is what the activation sees, so
    sigmoid and tanh units stay in their steep middle and ReLUs stay half on; dropout comes
    last, on what the block passes on, so it silences units rather than pre-activations; the
    skip goes around the whole block so the gradient has one path back that no derivative
    shrinks. Without any of the three options the network is the plain stack, and runs fused.

    Args:
        sizes: layer widths from input to output, e.g. ``[64, 128, 128, 10]``.
        activation: registry name of the hidden activation: "sigmoid", "tanh",
            "relu", "leaky_relu", "prelu", "elu", "gelu", "silu" or "identity".
        init: weight initializer name; by default He (normal) for the ReLU
            family (GELU and SiLU included) and Xavier (uniform) for sigmoid, tanh and identity.
        bias_init: constant for every hidden bias (the output bias starts at 0).
            A large negative value kills ReLUs from the start.
        activation_kwargs: passed to the activation, e.g. ``{"negative_slope": 0.1}``.
        generator: seed or numpy Generator for the weights (and, spawned from it, the dropout masks).
        residual: a skip connection around each hidden block whose input and output widths are equal.
        norm: None, "batch" (:class:`BatchNorm1d`) or "layer" (:class:`LayerNorm`) after each hidden Linear.
        dropout: probability of :class:`Dropout` after each hidden activation (0: none).

    With ``residual``, each hidden block is one element of the network (``model[i]``): a
    :class:`Residual` around a Sequential, or the Sequential alone where the width changes.

    Example:
        >>> model = nn.MLP([64, 128, 128, 10], activation="relu")
        >>> deep = nn.MLP([64] + [64] * 50 + [10], residual=True, norm="layer")
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
        residual: bool = False,
        norm: str | None = None,
        dropout: float = 0.0,
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
        norm = check_norm(norm)
        dropout = check_dropout(dropout)
        residual = bool(residual)
        kw = dict(activation_kwargs or {})
        rng = _init._generator(generator)
        slope = kw.get("negative_slope", kw.get("init"))
        blocks = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            hidden = i < len(sizes) - 2
            block = []
            for kind in _block(hidden, norm, dropout):
                if kind == "linear":
                    layer = Linear(n_in, n_out, dtype=dtype, generator=rng)
                    _init.initialize(layer.weight, scheme, activation, slope, generator=rng)
                    _init.constant_(layer.bias, bias_init if hidden else 0.0)
                elif kind == "norm":
                    layer = NORMS[norm](n_out, dtype=dtype)
                elif kind == "activation":
                    layer = _activation(activation, **(dict(kw, dtype=dtype) if activation == "prelu" else kw))
                else:
                    layer = Dropout(dropout)  # generators set below, once the weights are drawn
                block.append(layer)
            blocks.append((block, hidden and n_in == n_out))
        if dropout:  # one generator for the masks, spawned from the weights' one, so the seed fixes both
            masks = rng.spawn(1)[0]
            for block, _ in blocks:
                for m in block:
                    if isinstance(m, Dropout):
                        m.generator = masks
        super().__init__(*_arrange(blocks, residual, lambda layers: Sequential(*layers), Residual))
        self.sizes = sizes
        self.activation = activation
        self.init = scheme
        self.bias_init = float(bias_init)
        self.activation_kwargs = kw
        self.residual = residual
        self.norm = norm
        self.dropout = dropout

    @classmethod
    def state_shapes(cls, config: dict) -> dict:
        sizes = [int(s) for s in config["sizes"]]
        act = ACTIVATIONS[str(config["activation"]).lower().replace("-", "_")]
        norm, dropout = check_norm(config["norm"]), check_dropout(config["dropout"])
        act_shapes = act.state_shapes(full_config(act, dict(config["activation_kwargs"] or {})))

        def declared(kind: str, n_in: int, n_out: int) -> dict:
            if kind == "linear":
                return Linear.state_shapes({"in_features": n_in, "out_features": n_out, "bias": True})
            if kind == "norm":
                return NORMS[norm].state_shapes(full_config(NORMS[norm], {}, n_out))
            return act_shapes if kind == "activation" else {}

        last = len(sizes) - 2
        blocks = (
            ([declared(kind, n_in, n_out) for kind in _block(i < last, norm, dropout)], i < last and n_in == n_out)
            for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]))
        )

        def sequential(layers: list) -> dict:
            return {f"{k}.{name}": shape for k, shapes in enumerate(layers) for name, shape in shapes.items()}

        return sequential(_arrange(blocks, bool(config["residual"]), sequential, lambda shapes: {f"block.{n}": s for n, s in shapes.items()}))

    @property
    def linears(self) -> list:
        """The Linear layers, input to output."""
        return [m for m in self.modules() if isinstance(m, Linear)]

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
            "residual": self.residual,
            "norm": self.norm,
            "dropout": self.dropout,
        }

    def __repr__(self) -> str:
        head = f"MLP({'-'.join(map(str, self.sizes))}, activation={self.activation!r}, init={self.init!r}"
        head += "".join(f", {k}={v!r}" for k, v in (("residual", self.residual), ("norm", self.norm), ("dropout", self.dropout)) if v)
        return head + super().__repr__()[len("MLP(") :]
