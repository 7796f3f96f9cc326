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

    def step(self) -> None:
        self._begin_step("momentum", "nesterov", "weight_decay", "dampening")
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            if not self.momentum:
                self._apply(self._typed(g), False, p.data, g)
                continue
            first = self.velocity[i] is None
            if first:  # (the first step sets v = g: its contents now are undefined)
                self.velocity[i] = namespace(p.data).empty_like(p.data)
            self._apply(self._typed(g), first, p.data, g, (self.velocity[i],))

    def _update_block(self, xp: Any, c: tuple, t: tuple, first: bool, w: Any, g: Any, state: tuple) -> None:
        lr, m, wd, keep = c
        if self.weight_decay:
            g = xp.add(g, xp.multiply(wd, w, out=t[0]), out=t[0])
        if state:
            (v,) = state
            if first:
                v[...] = g
            else:
                xp.multiply(v, m, out=v)
                xp.add(v, xp.multiply(keep, g, out=t[1]), out=v)
            g = xp.add(g, xp.multiply(m, v, out=t[1]), out=t[1]) if self.nesterov else v
        xp.subtract(w, xp.multiply(g, lr, out=t[1]), out=w)
