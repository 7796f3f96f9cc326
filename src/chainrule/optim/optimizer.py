"""Optimizer: the base class that holds parameters, the learning rate and per-parameter state."""

from __future__ import annotations

import operator
from typing import Any, Callable, Iterable

import numpy as np

from ..backend import NUMPY_TYPES, asarray, namespace, to_numpy
from ..capture import adopt, guard, per_step, register
from ..errors import ChainruleError
from ..nn.module import copy_like
from ..validation import number

# How a parameter is updated. The update of one parameter is written once, as ufunc calls on
# blocks of arrays (``_update_block``), and applied one of two ways:
# - whole: on the whole arrays, each temporary a new array (``out`` None) that the operations
#   after it update in place. Small arrays are quicker so: NumPy caches small allocations, the
#   arrays sit in the cache anyway, and a loop over blocks costs a few microseconds of Python.
# - blocked: NumPy arrays flattened (in the order of their common contiguous layout) and cut
#   into blocks of BLOCK_BYTES, the temporaries in one scratch buffer that the optimizer keeps,
#   when the arrays the update reads and writes (the parameter, its gradient, its state)
#   together reach BLOCKED_BYTES. ``w -= lr * g`` on a 2048 x 2048 float32 weight makes a
#   16 MiB temporary: two passes through memory, where blocks that stay in the L2 cache make
#   about one, and no large allocation (which the allocator may serve from fresh pages).
# Each element goes through the same operations in the same order either way, so both give
# the same bits; a compiled step records whichever ran (the blocks' views and the scratch
# buffer included) and replays it.
#
# Measured (Xeon, 2 MiB of L2 per core, one thread, float32, ms per step of plain SGD /
# momentum / Adam, the best of 15 runs). Block sizes, 2048 x 2048: whole 2.33 / 5.25 / 20.0;
# blocks of 64 KiB 1.51 / 3.62 / 11.5, 128 KiB 1.35 / 3.20 / 9.71, 256 KiB 1.28 / 2.96 / 9.98,
# 512 KiB 1.26 / 2.86 / 10.2, 1 MiB 1.66 / 4.14 / 11.8 (one pass, ``w -= g``, is 1.2); 784 x
# 1024: whole 0.46 / 1.03 / 2.43, 256 KiB blocks 0.27 / 0.55 / 1.47. Where blocks start to pay,
# whole against blocked: 256 x 256 0.013 / 0.032 / 0.212 against 0.019 / 0.037 / 0.111; 362 x
# 362 0.026 / 0.067 / 0.503 against 0.032 / 0.075 / 0.240; 420 x 420 0.045 / 0.115 / 0.722
# against 0.054 / 0.117 / 0.333; 480 x 480 0.074 / 0.186 / 0.974 against 0.070 / 0.152 /
# 0.428; 600 x 600 0.179 / 0.416 / 1.55 against 0.116 / 0.245 / 0.662; 1024 x 1024 0.591 /
# 1.32 / 4.08 against 0.332 / 0.699 / 1.91. The more arrays an update touches, the sooner blocks
# pay; the threshold below costs plain SGD a few microseconds on parameters of 512-800 KiB and
# saves Adam half its time from 256 KiB. (The expressions this replaced, ``w -= lr * g`` and so
# on, ran as fast as the whole application.)

#: Blocked when the parameter, its gradient and its state together reach this many bytes
#: (plain SGD from 512 KiB parameters, momentum from 342 KiB, Adam from 256 KiB).
BLOCKED_BYTES = 1024 * 1024
#: The bytes of one block of one array.
BLOCK_BYTES = 256 * 1024
#: How many temporaries an update needs at once (each optimizer's ``_update_block`` uses these).
TEMPORARIES = 2
_NEW = (None,) * TEMPORARIES  # the whole-array application: every temporary a new array


def _with_out(op: Callable, in_place: Callable) -> Callable:
    def call(a: Any, b: Any, out: Any = None) -> Any:
        if out is None:
            return op(a, b)
        if out is a:
            return in_place(a, b)
        out[...] = op(a, b)
        return out

    return call


class _Operators:
    """The ufuncs an update calls, with NumPy's ``out``, for a namespace that has no ``out=``
    (array-api-strict), and for CuPy alike: operators, in place where ``out`` is the first
    operand, else a new array copied into ``out``."""

    multiply = staticmethod(_with_out(operator.mul, operator.imul))
    add = staticmethod(_with_out(operator.add, operator.iadd))
    subtract = staticmethod(_with_out(operator.sub, operator.isub))
    divide = staticmethod(_with_out(operator.truediv, operator.itruediv))

    def __init__(self, xp: Any):
        self._sqrt = xp.sqrt

    def sqrt(self, a: Any, out: Any = None) -> Any:
        if out is None:
            return self._sqrt(a)
        out[...] = self._sqrt(a)
        return out


def _block_order(arrays: tuple) -> str | None:
    """The order ("C" or "F") in which ``arrays`` (the parameter, its gradient and state) can be
    flattened into views and cut into blocks of the same elements: one shape, one dtype, one
    layout, contiguous. None when they cannot (a strided view, mixed dtypes or layouts)."""
    w = arrays[0]
    if any(a.shape != w.shape or a.dtype != w.dtype or a.strides != w.strides for a in arrays):
        return None
    return "C" if w.flags.c_contiguous else "F" if w.flags.f_contiguous else None


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
        """Drop every parameter's gradient: set each ``.grad`` to None, as PyTorch does by default.

        Gradients accumulate otherwise (``backward()`` adds into a ``.grad`` that is set).
        Eagerly, the next ``backward()`` gives each parameter a new array, the gradient it
        computed, kept without a copy. No gradient buffer is kept between eager steps: NumPy's
        allocator hands the freed memory straight back, and the gradient of a 784 x 1024 or
        2048 x 2048 weight made new (``x.T @ g``) or into a kept buffer
        (``np.matmul(x.T, g, out=buf)``) measured the same within the noise (a few percent
        either way, one thread). A compiled step (``cr.compile``) keeps its gradient buffers
        for good: each replay writes the step's gradients into the arrays made while recording
        and rebinds every ``.grad`` to its array. A ``zero_grad()`` in the step is Python, not
        an array operation, so a replay does not run it; between steps it drops the references
        until the next replay rebinds them. Copy a gradient to keep it past the next replay.

        Example:
            >>> opt.zero_grad(); loss.backward(); opt.step()
        """
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter in place from its ``.grad`` (parameters whose grad is None are skipped)."""
        self._begin_step(*self._SETTINGS)
        buffers = tuple(self._buffers().values())  # per parameter: SGD's velocity, Adam's m and v
        states = list(zip(*buffers)) if buffers else None  # per parameter: its state arrays
        whole_below = BLOCKED_BYTES // (2 + len(buffers))  # (bytes of a parameter)
        update, typed, numpy_types = self._update_block, self._typed, NUMPY_TYPES
        dtype = c = None
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            w = p.data
            first, state = False, ()
            if states is not None:
                state = states[i]
                if state[0] is None:
                    first = True
                    self._new_state(i, w)
                    state = tuple(b[i] for b in buffers)
            if type(w) in numpy_types and w.nbytes < whole_below:  # the common case, in the fewest calls
                if g.dtype is not dtype:
                    dtype, c = g.dtype, typed(g)
                update(np, c, _NEW, first, w, g, state)
            else:
                self._apply(typed(g), first, w, g, state)

    # ---- the update of one parameter, written once by each optimizer -------------
    #: The settings a compiled step's replay checks (a change records the step again).
    _SETTINGS: tuple = ()

    def _new_state(self, i: int, w: Any) -> None:
        """Make parameter ``i``'s state arrays (its first step), like its data ``w``."""

    def _update_block(self, xp: Any, c: tuple, t: tuple, first: bool, w: Any, g: Any, state: tuple) -> None:
        """Update one block of a parameter ``w`` (or the whole of it) in place from its gradient
        ``g`` and its ``state`` arrays (blocks of the same elements), with ufunc calls of ``xp``
        whose third argument is ``out`` (positional: the quickest call): a temporary of ``t``, an
        array the update owns already (in place), or a state array. ``c``: this step's numbers
        (:meth:`_typed`); ``t``: TEMPORARIES arrays of the block's size (or None each: new
        arrays); ``first``: whether this is the parameter's first step (its state was just made
        by :meth:`_new_state`)."""
        raise NotImplementedError

    def _apply(self, c: tuple, first: bool, w: Any, g: Any, state: tuple) -> None:
        """Run :meth:`_update_block` on the whole arrays of another namespace, or on NumPy arrays
        block by block where they allow it (see the top of the module), else whole."""
        if type(w) not in NUMPY_TYPES:
            self._update_block(_Operators(namespace(w)), c, _NEW, first, w, g, state)
            return
        order = _block_order((w, g, *state))
        if order is None:
            self._update_block(np, c, _NEW, first, w, g, state)
            return
        w, g, *rest = [a.reshape(-1, order=order) for a in (w, g, *state)]
        if self._scratch is None:
            self._scratch = np.empty(TEMPORARIES * BLOCK_BYTES, dtype=np.uint8)
        # (as the gradient's array type: a compiled step's recording then sees the operations on
        # the scratch too, as it sees the gradient's)
        rows = tuple(self._scratch.view(dtype=g.dtype, type=type(g)).reshape(TEMPORARIES, -1))
        size, n = len(rows[0]), len(w)
        for i in range(0, n, size):
            j = min(i + size, n)
            t = rows if j - i == size else tuple(r[: j - i] for r in rows)
            self._update_block(np, c, t, first, w[i:j], g[i:j], tuple(a[i:j] for a in rest))

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
        before, values = self._values, self._step_values()
        self._values = values
        if values == before:  # (most steps of plain SGD: the arrays hold these numbers already)
            return
        for arrays in self._live.values():
            for a, v in zip(arrays, values):
                a[...] = v

    def _typed(self, like: Any) -> tuple:
        """This step's numbers in the dtype of array ``like``: 0-d NumPy arrays of its dtype
        (NumPy multiplies by a scalar of the array's own dtype several times faster than by a
        Python float, with the same result, and a replay reads arrays), or 0-d arrays of
        ``like``'s namespace, dtype and device for other namespaces (an array of the array's
        dtype gives the bits a Python number gives, and a replay reads them: see
        :func:`chainrule.capture.adopt`)."""
        if type(like) not in NUMPY_TYPES:
            key = (str(like.dtype), str(like.device))
            arrays = self._live.get(key)
            if arrays is None:
                arrays = self._live[key] = tuple(asarray(v, like, dtype=like.dtype) for v in self._values)
            return adopt(arrays)
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
