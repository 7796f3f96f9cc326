"""How much memory a training run will take, estimated before anything is built, and the check
that refuses a run the machine cannot hold.

Every tool that builds a run from settings (``chainrule train`` and its config files, sweeps,
the scikit-learn estimators, the dashboard) calls :func:`check_training_memory` first, so a
mistyped width is one line naming the estimate, not a traceback from the allocator or a
machine driven into swap.

The estimate, for an MLP with layer widths ``sizes`` (P parameters, float32: 4 bytes each):

    weights, gradients and optimizer buffers   4 P (1 + 1 + buffers), buffers: Adam 2, SGD 1
    a model file or checkpoint being written   4 P (1 + buffers) x 2   (host copy, file bytes)
    activations kept for backward              4 x batch x sum(hidden and output widths) x 4
    the update's temporaries, all kept while   4 P x temporaries, Adam 8, SGD 2, momentum 4
      cr.compile records the step (once per batch shape)
    evaluation in batches of 1024 rows          4 x 1024 x max(width) x 2
    the training data, as float32              4 x rows x features

It leaves out Python's own overhead and the small arrays of the diagnostics; measured against
the peak memory traced while training (tests/test_memory.py) it errs on the high side.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from .errors import ChainruleError

# Arrays per unit that a training step keeps for backward (pre-activation, output, their
# gradients): a deliberate over-count of what F.fused_layers holds.
ACTIVATION_COPIES = 4
EVAL_ROWS = 1024  # cr.evaluate and cr.predict run in batches of at least this many rows
OPTIMIZER_BUFFERS = {"adam": 2, "adamw": 2, "sgd": 1, "momentum": 1}
# Parameter-sized temporaries of one optimizer step (``lr * g``, Adam's ``g * g``, ``sqrt(v)``...):
# eager frees each at once, a recording of cr.compile holds them all until it ends.
UPDATE_TEMPORARIES = {"adam": 8, "adamw": 9, "sgd": 2, "momentum": 4}
# The share of the memory available when a run is checked that it may plan to use: the rest
# is left to Python, the other processes, and estimates that fall short.
USABLE_FRACTION = 0.8


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training run needs, by part; ``total`` is their sum."""

    parameters: int
    state: int
    saving: int
    activations: int
    evaluation: int
    data: int
    recording: int = 0

    @property
    def total(self) -> int:
        return self.state + self.saving + self.activations + self.evaluation + self.data + self.recording

    def describe(self) -> str:
        return (
            f"about {format_bytes(self.total)} ({self.parameters:,} parameters: {format_bytes(self.state)} "
            f"with gradients and optimizer state, {format_bytes(self.activations)} of activations)"
        )


def format_bytes(n: float) -> str:
    """Bytes as text with a binary unit: ``format_bytes(3 * 2**30)`` is "3.0 GiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def estimate_training_memory(
    sizes: Sequence[int], batch_size: int, optimizer: str = "adam", rows: int = 0, itemsize: int = 4
) -> MemoryEstimate:
    """The memory a run of an MLP with layer widths ``sizes`` needs, from the settings alone.

    Args:
        sizes: widths from input to output, e.g. ``[64, 256, 256, 128, 10]``.
        batch_size: rows per step.
        optimizer: "adam", "adamw", "sgd" or "momentum" (the buffers it keeps per parameter).
        rows: training rows (their float32 copy is counted).
        itemsize: bytes per number (4 for float32).

    Example:
        >>> estimate_training_memory([64, 256, 256, 128, 10], 32).total < 10 * 2**20
        True
    """
    sizes = [int(s) for s in sizes]
    params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))  # Python ints: no overflow
    buffers = OPTIMIZER_BUFFERS.get(str(optimizer).lower(), 2)
    widest = max(sizes, default=0)
    return MemoryEstimate(
        parameters=params,
        state=itemsize * params * (2 + buffers),
        saving=itemsize * params * (1 + buffers) * 2,
        activations=itemsize * int(batch_size) * sum(sizes[1:]) * ACTIVATION_COPIES,
        evaluation=itemsize * EVAL_ROWS * widest * 2,
        data=itemsize * int(rows) * (sizes[0] if sizes else 0),
        recording=itemsize * params * UPDATE_TEMPORARIES.get(str(optimizer).lower(), 8),
    )


def available_memory() -> int | None:
    """Bytes this process may still allocate: the system's available memory, lowered to the
    room left under a cgroup (container) limit; None where neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                found.append(int(limit) - int(f.read().strip()))
    except (OSError, ValueError):
        pass
    if not found and hasattr(os, "sysconf"):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError):
            pass
    return max(0, min(found)) if found else None


def check_training_memory(estimate: MemoryEstimate, what: str = "this run", available: int | None = None) -> MemoryEstimate:
    """Refuse, with one line giving the estimate, a run that cannot fit in the memory available.

    Args:
        estimate: from :func:`estimate_training_memory`.
        what: how the message names the run.
        available: bytes to plan within; by default USABLE_FRACTION of :func:`available_memory`
            (no check when that cannot be read).

    Returns:
        ``estimate``, when it fits.

    Example:
        >>> check_training_memory(estimate_training_memory([64, 10**8, 10], 32))
        Traceback (most recent call last):
        ChainruleError: this run needs about 1.1 TiB (7,500,000,010 parameters: ...), but 18.3 GiB of memory is available; ...
    """
    if available is None:
        free = available_memory()
        if free is None:
            return estimate
        available = int(free * USABLE_FRACTION)
    if estimate.total > available:
        raise ChainruleError(
            f"{what} needs {estimate.describe()}, but {format_bytes(max(available, 0))} of memory is available; "
            "choose fewer or narrower layers, or a smaller batch"
        )
    return estimate



def release_memory() -> None:
    """Collect garbage and hand freed memory back to the operating system.

    The C allocator (glibc's malloc) keeps what NumPy frees for later reuse, so a
    process's resident memory stays at its peak after large arrays are gone; on glibc,
    ``malloc_trim(0)`` returns it. Elsewhere only the collection happens.
    """
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)
