"""Which array namespace runs the numbers: NumPy on the CPU, CuPy on a GPU.

The NumPy path calls NumPy directly (no wrapper per operation); this module is
consulted only when data moves between devices.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ChainruleError


def cupy() -> Any:
    """The CuPy module, or a clear error when CuPy or a GPU is missing."""
    try:
        import cupy  # noqa: F401
    except ImportError:
        raise ChainruleError(
            "device 'cuda' needs CuPy and an NVIDIA GPU; CuPy is not installed (pip install cupy-cuda12x)"
        ) from None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise ChainruleError("device 'cuda' asked for, but CuPy finds no GPU on this machine")
    except Exception as e:  # CUDA driver missing
        raise ChainruleError(f"device 'cuda' asked for, but no usable GPU was found: {e}") from None
    return cupy


def normalize_device(device: Any) -> str:
    d = str(device or "cpu").lower()
    if d.startswith("cuda") or d == "gpu":
        return "cuda"
    if d == "cpu":
        return "cpu"
    raise ChainruleError(f"unknown device {device!r}; expected 'cpu' or 'cuda'")


def to_device(t: Any, device: Any) -> Any:
    """A tensor's data moved to ``device`` (a no-op when it is there already)."""
    from .autograd import Tensor

    d = normalize_device(device)
    if d == "cpu":
        data = t.data if isinstance(t.data, np.ndarray) else t.data.get()
    else:
        data = cupy().asarray(t.data)
    out = Tensor.__new__(Tensor)
    out.data, out.grad, out.requires_grad = data, None, t.requires_grad
    out._parents, out._backward, out._retain, out.name = (), None, False, t.name
    out._seq, out._g = t._seq, None
    return out
