"""Adam, and AdamW's decoupled weight decay as an option."""

from __future__ import annotations

import math
from typing import Any, Iterable

from ..backend import namespace
from ..errors import ChainruleError
from .optimizer import Optimizer


class Adam(Optimizer):
    """Adam: steps scaled by running estimates of the gradient's first and second moments.

    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``, and with bias
    corrections ``c1 = 1 - b1^t``, ``c2 = 1 - b2^t``:
    ``w <- w - lr / c1 * m / (sqrt(v) / sqrt(c2) + eps)``.

    ``weight_decay`` adds ``weight_decay * w`` to g (L2, as ``torch.optim.Adam``);
    with ``decoupled=True`` it shrinks w by ``lr * weight_decay`` instead (AdamW).

    Example:
        >>> opt = optim.Adam(model.parameters(), lr=1e-3)
    """

    _SETTINGS = ("betas", "eps", "weight_decay", "decoupled")

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = False,
    ):
        super().__init__(params, lr)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ChainruleError(f"Adam betas must lie in [0, 1), got {betas}")
        if eps <= 0 or weight_decay < 0:
            raise ChainruleError(f"Adam needs eps > 0 and weight_decay >= 0, got eps={eps}, weight_decay={weight_decay}")
        self.betas = (float(b1), float(b2))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.decoupled = bool(decoupled)
        self.m = [None] * len(self.params)
        self.v = [None] * len(self.params)

    def _buffers(self) -> dict:
        return {"m": self.m, "v": self.v}

    def _step_values(self) -> tuple:
        t, lr, (b1, b2), wd = self.steps, self.lr, self.betas, self.weight_decay
        step_size = lr / (1 - b1**t)
        c2_sqrt = math.sqrt(1 - b2**t)
        return (b1, b2, 1 - b1, 1 - b2, step_size, c2_sqrt, self.eps, wd, 1 - lr * wd)

    def _new_state(self, i: int, w: Any) -> None:
        xp = namespace(w)
        self.m[i], self.v[i] = xp.zeros_like(w), xp.zeros_like(w)

    def _update_block(self, xp: Any, c: tuple, t: tuple, first: bool, w: Any, g: Any, state: tuple) -> None:
        b1, b2, keep1, keep2, step_size, c2_sqrt, eps, wd, shrink = c
        t0, t1 = t
        m, v = state
        if self.weight_decay:
            if self.decoupled:
                xp.multiply(w, shrink, w)
            else:  # g + wd w
                decay = xp.multiply(wd, w, t0)
                g = xp.add(g, decay, decay)
        xp.multiply(m, b1, m)
        xp.add(m, xp.multiply(keep1, g, t1), m)
        xp.multiply(v, b2, v)
        square = xp.multiply(g, g, t1)
        xp.add(v, xp.multiply(square, keep2, square), v)  # (keep2 g^2: the same product)
        denominator = xp.sqrt(v, t1)  # sqrt(v) / sqrt(c2) + eps
        xp.divide(denominator, c2_sqrt, denominator)
        xp.add(denominator, eps, denominator)
        step = xp.multiply(step_size, m, t0)  # (t0: g + wd w is read no more)
        xp.subtract(w, xp.divide(step, denominator, step), w)


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01), as ``torch.optim.AdamW``."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(params, lr, betas, eps, weight_decay, decoupled=True)
