"""Optimizer: the base class that holds parameters, the learning rate and per-parameter state."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..backend import NUMPY_TYPES, to_numpy
from ..capture import guard, per_step, register
from ..errors import ChainruleError
from ..nn.module import copy_like
from ..validation import number



class Optimizer:
    """Base class: ``params`` to update, ``lr`` (which schedules change), ``step()`` and ``zero_grad()``."""

    def __init__(self, params: Iterable, lr: float):
        self.params = [p for p in params]
        if not self.params:
            raise ChainruleError("optimizer got an empty parameter list")
        self.lr = number("lr", lr, 0, open_low=True)
        self.steps = 0
        self._values: tuple = ()
        self._live: dict = {}  # dtype -> this step's numbers as 0-d arrays (see _begin_step)

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (gradients accumulate otherwise)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter in place from its ``.grad`` (parameters whose grad is None are skipped)."""
        raise NotImplementedError

    # ---- the numbers of one step ------------------------------------------------
    def _step_values(self) -> tuple:
        """The numbers of the current step (after ``steps`` advanced): the learning rate and
        what the update derives from it and from the step count."""
        raise NotImplementedError

    def _begin_step(self, *settings: str) -> None:
        """Advance the step count and compute this step's numbers on the host.

        Run through :func:`chainrule.compile.per_step`, so a compiled step repeats it at every
        replay: the numbers land in 0-d arrays (one set per dtype, :meth:`_typed`) that the
        recorded update reads, so a schedule's new rate and Adam's bias corrections reach it.
        ``settings`` are attributes a replay checks (a change records the step again).
        """
        register("optimizer", self)
        guard(self, *settings)
        per_step(self._advance)

    def _advance(self) -> None:
        self.steps += 1
        values = self._values = self._step_values()
        for arrays in self._live.values():
            for a, v in zip(arrays, values):
                a[()] = v

    def _typed(self, like: Any) -> tuple:
        """This step's numbers in the dtype of array ``like``: 0-d NumPy arrays of its dtype
        (NumPy multiplies by a scalar of the array's own dtype several times faster than by a
        Python float, with the same result, and a replay reads arrays), or Python numbers for
        arrays of other namespaces."""
        if type(like) not in NUMPY_TYPES:
            return self._values
        arrays = self._live.get(like.dtype)
        if arrays is None:
            arrays = self._live[like.dtype] = tuple(np.array(v, dtype=like.dtype) for v in self._values)
        return arrays

    # ---- checkpoints ----------------------------------------------------------
    def _buffers(self) -> dict:
        """name -> list of per-parameter arrays (or None)."""
        return {}

    def buffers(self) -> dict:
        """The optimizer's state: name -> the live list of per-parameter arrays (or None), such as
        SGD's ``velocity`` or Adam's ``m`` and ``v``. ``cr.compile`` follows them."""
        return self._buffers()

    def state_dict(self) -> dict:
        """Plain data: hyperparameters, the step count and every buffer, for checkpoints.

        Buffers come as NumPy arrays (host copies of those on a GPU; on the CPU the live arrays).
        """
        return {
            "lr": self.lr,
            "steps": self.steps,
            "buffers": {k: [None if b is None else to_numpy(b) for b in v] for k, v in self._buffers().items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s data; each buffer is copied to its parameter's namespace, device and dtype."""
        self.lr = float(state["lr"])
        self.steps = int(state["steps"])
        for name, arrays in state.get("buffers", {}).items():
            current = getattr(self, name)
            if len(arrays) != len(current):
                raise ChainruleError(f"optimizer state has {len(arrays)} {name} buffers, this optimizer {len(current)} parameters")
            for i, a in enumerate(arrays):
                current[i] = None if a is None else copy_like(a, self.params[i].data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr}, {len(self.params)} parameters)"
