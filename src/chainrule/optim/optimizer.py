"""Optimizer: the base class that holds parameters, the learning rate and per-parameter state."""

from __future__ import annotations

import operator
from typing import Any, Callable, Iterable

import numpy as np

from ..backend import NUMPY_TYPES, namespace, to_numpy
from ..capture import guard, per_step, register
from ..errors import ChainruleError
from ..nn.module import copy_like
from ..validation import number

# How a parameter is updated. The update of one parameter is written once, as ufunc calls on
# blocks of arrays (``_update_block``), and applied one of two ways:
# - whole: on the whole arrays, every temporary a new array (``out=None``). Small arrays are
#   quicker so: NumPy caches small allocations, and a Python loop over blocks costs more than
#   the pass it saves (the plain SGD step of a 64-128-128-10 MLP: 14.0 us with temporaries,
#   15.6 us with a kept scratch buffer per parameter).
# - blocked: NumPy parameters of BLOCKED_BYTES or more, over consecutive blocks of BLOCK_BYTES
#   of each (flattened, C-contiguous) array, the temporaries in one scratch buffer that the
#   optimizer keeps and that stays in the L2 cache. ``w -= lr * g`` on a 2048 x 2048 float32
#   weight makes a 16 MiB temporary and so two passes through memory (2.6-2.8 ms here, one
#   thread); blocked, 1.5-1.7 ms (one pass, ``w -= g``, is 1.2 ms).
# Each element goes through the same operations in the same order either way, so both give
# the same bits; a compiled step records whichever ran (the blocks' views and the scratch
# buffer included) and replays it.
# Measured here (Xeon, 2 MiB of L2 per core, one thread, median ms of plain SGD, whole vs blocks
# of 128 / 256 / 512 KiB): 2048 x 2048: 2.84 vs 1.67 / 1.72 / 1.61; 784 x 1024: 0.49 vs 0.28 /
# 0.28 / 0.26; 512 x 512: 0.109 vs 0.092 / 0.076 / 0.075; 256 x 256 (256 KiB): 0.014 vs 0.013;
# 128 x 128: 0.004 vs 0.005. Blocks under 64 KiB lose to the loop's own cost (16 KiB: 3.1 ms).

#: NumPy parameters of at least this many bytes are updated block by block.
BLOCKED_BYTES = 256 * 1024
#: The bytes of one block of one array (Adam's step touches six arrays of a block: w, g, m, v
#: and two temporaries, 1.5 MiB, within a 2 MiB L2 cache).
BLOCK_BYTES = 256 * 1024
#: How many temporaries an update needs at once (each optimizer's ``_update_block`` uses these).
TEMPORARIES = 2
_NEW = (None,) * TEMPORARIES  # the whole-array application: every temporary a new array


def _with_out(op: Callable, in_place: Callable) -> Callable:
    def call(a: Any, b: Any, out: Any = None) -> Any:
        return op(a, b) if out is None else in_place(out, b)

    return call


class _Operators:
    """The ufuncs an update calls, for a namespace without NumPy's ``out=`` (array-api-strict;
    CuPy alike): ``out`` is None (a new array) or the first operand (updated in place), which
    is all that the whole-array application passes."""

    multiply = staticmethod(_with_out(operator.mul, operator.imul))
    add = staticmethod(_with_out(operator.add, operator.iadd))
    subtract = staticmethod(_with_out(operator.sub, operator.isub))
    divide = staticmethod(_with_out(operator.truediv, operator.itruediv))

    def __init__(self, xp: Any):
        self._sqrt = xp.sqrt

    def sqrt(self, a: Any, out: Any = None) -> Any:
        return self._sqrt(a)


def _blockable(arrays: tuple) -> bool:
    """Whether the update may run on flat blocks of ``arrays`` (the parameter, its gradient and
    state): one shape, one dtype, each C-contiguous (a flat view, no copy)."""
    w = arrays[0]
    return all(a.shape == w.shape and a.dtype == w.dtype and a.flags.c_contiguous for a in arrays)


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
        self._scratch: np.ndarray | None = None  # the blocked update's temporaries (see _apply)

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (gradients accumulate otherwise)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter in place from its ``.grad`` (parameters whose grad is None are skipped)."""
        raise NotImplementedError

    # ---- the update of one parameter --------------------------------------------
    def _update_block(self, xp: Any, c: tuple, t: tuple, first: bool, w: Any, g: Any, *state: Any) -> None:
        """Update one block of a parameter ``w`` (or the whole of it) in place from its gradient
        ``g`` and state arrays (blocks of the same elements), with ufunc calls of namespace ``xp``.
        ``c``: this step's numbers (:meth:`_typed`); ``t``: TEMPORARIES arrays of the block's
        size for the intermediate results (or None each: new arrays); ``first``: whether this is
        the parameter's first step (its state was just made, contents undefined)."""
        raise NotImplementedError

    def _apply(self, c: tuple, first: bool, w: Any, g: Any, *state: Any) -> None:
        """Run :meth:`_update_block` on the whole arrays, or block by block (see the top of the module)."""
        if type(w) not in NUMPY_TYPES:
            self._update_block(_Operators(namespace(w)), c, _NEW, first, w, g, *state)
        elif w.nbytes < BLOCKED_BYTES or not _blockable((w, g, *state)):
            self._update_block(np, c, _NEW, first, w, g, *state)
        else:
            flat = [a.reshape(-1) for a in (w, g, *state)]
            if self._scratch is None:
                self._scratch = np.empty(TEMPORARIES * BLOCK_BYTES, dtype=np.uint8)
            # (as the gradient's array type: a compiled step's recording then sees the operations
            # on the scratch too, as it sees the gradient's)
            rows = self._scratch.view(dtype=g.dtype, type=type(g)).reshape(TEMPORARIES, -1)
            size, n = rows.shape[1], w.size
            for i in range(0, n, size):
                k = min(size, n - i)
                self._update_block(np, c, tuple(r[:k] for r in rows), first, *(a[i : i + k] for a in flat))

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
