"""Stochastic gradient descent, with momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

from typing import Any, Iterable

from ..backend import namespace
from ..errors import ChainruleError
from .optimizer import Optimizer


class SGD(Optimizer):
    """Gradient descent: ``w <- w - lr * g``.

    With weight decay, ``g = grad + weight_decay * w``. With momentum m the
    step follows a velocity ``v <- m v + g`` (v = g at the first step) and
    ``w <- w - lr * v``; Nesterov looks ahead: ``w <- w - lr * (g + m v)``.
    Updates are in place. Matches ``torch.optim.SGD`` step for step.

    Example:
        >>> opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> opt.zero_grad(); loss.backward(); opt.step()
    """

    _SETTINGS = ("momentum", "nesterov", "weight_decay", "dampening")

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        dampening: float = 0.0,
    ):
        super().__init__(params, lr)
        if momentum < 0:
            raise ChainruleError(f"momentum must be >= 0, got {momentum}")
        if weight_decay < 0:
            raise ChainruleError(f"weight_decay must be >= 0, got {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ChainruleError("nesterov momentum needs momentum > 0 and dampening = 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)
        self.dampening = float(dampening)
        self.velocity = [None] * len(self.params)

    def _buffers(self) -> dict:
        return {"velocity": self.velocity} if self.momentum else {}

    def _step_values(self) -> tuple:
        return (self.lr, self.momentum, self.weight_decay, 1 - self.dampening)

    def _new_state(self, i: int, w: Any) -> None:
        self.velocity[i] = namespace(w).empty_like(w)  # (the first step sets v = g)

    def _update_block(self, xp: Any, c: tuple, t: tuple, first: bool, w: Any, g: Any, state: tuple) -> None:
        lr, m, wd, keep = c
        t0, t1 = t
        if self.weight_decay:  # g + wd w
            decay = xp.multiply(wd, w, t0)
            g = xp.add(g, decay, decay)
        if state:
            (v,) = state
            if first:
                v[...] = g
            else:  # v <- m v + (1 - dampening) g
                xp.multiply(v, m, v)
                xp.add(v, xp.multiply(keep, g, t1), v)
            if self.nesterov:  # g + m v
                ahead = xp.multiply(m, v, t1)
                g = xp.add(g, ahead, ahead)
            else:
                g = v
        xp.subtract(w, xp.multiply(g, lr, t1), w)
