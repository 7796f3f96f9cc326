"""Optimizer: the base class that holds parameters, the learning rate and per-parameter state."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..errors import ChainruleError
from ..validation import check_lr


class Optimizer:
    """Base class: ``params`` to update, ``lr`` (which schedules change), ``step()`` and ``zero_grad()``."""

    def __init__(self, params: Iterable, lr: float):
        self.params = [p for p in params]
        if not self.params:
            raise ChainruleError("optimizer got an empty parameter list")
        self.lr = check_lr(lr)
        self.steps = 0

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (gradients accumulate otherwise)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter in place from its ``.grad`` (parameters whose grad is None are skipped)."""
        raise NotImplementedError

    # ---- checkpoints ----------------------------------------------------------
    def _buffers(self) -> dict:
        """name -> list of per-parameter arrays (or None)."""
        return {}

    def state_dict(self) -> dict:
        """Plain data: hyperparameters, the step count and every buffer, for checkpoints."""
        return {
            "lr": self.lr,
            "steps": self.steps,
            "buffers": {k: [None if b is None else np.asarray(b) for b in v] for k, v in self._buffers().items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.lr = float(state["lr"])
        self.steps = int(state["steps"])
        for name, arrays in state.get("buffers", {}).items():
            current = getattr(self, name)
            if len(arrays) != len(current):
                raise ChainruleError(f"optimizer state has {len(arrays)} {name} buffers, this optimizer {len(current)} parameters")
            for i, a in enumerate(arrays):
                current[i] = None if a is None else np.array(a, dtype=self.params[i].data.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr}, {len(self.params)} parameters)"
