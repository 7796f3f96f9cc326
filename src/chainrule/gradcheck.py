"""Gradient checking: backward() against central finite differences in float64."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .autograd import Tensor
from .errors import ChainruleError


class GradcheckError(ChainruleError):
    """An analytic gradient that disagrees with the finite-difference one."""


def gradcheck(
    fn: Callable[..., Tensor],
    *inputs: Tensor,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    seed: int = 0,
) -> bool:
    """Check ``backward()`` of ``fn`` against central differences, in float64.

    The output is reduced to a scalar with fixed random weights r,
    L = sum(r * fn(*inputs)), so one backward pass gives dL/dx for every input
    x, and each entry is compared with (L(x + eps) - L(x - eps)) / (2 eps).
    An entry passes when |analytic - numeric| <= atol + rtol * |numeric|.

    Args:
        fn: function of tensors returning a tensor.
        inputs: tensors; those with ``requires_grad=True`` are checked. They
            are copied to float64 first (the originals are not changed).

    Returns:
        True when every entry agrees.

    Raises:
        GradcheckError: an entry disagrees; the message names the input, the element, the analytic and the numeric value.

    Example:
        >>> x = cr.tensor([[0.5, -1.0]], requires_grad=True, dtype="float64")
        >>> cr.gradcheck(lambda t: (t.sigmoid() * t).sum(), x)
        True
    """
    xs = [
        Tensor(np.array(t.data, dtype=np.float64), requires_grad=t.requires_grad, dtype=np.float64)
        if isinstance(t, Tensor)
        else t
        for t in inputs
    ]
    checked = [i for i, t in enumerate(xs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise GradcheckError("gradcheck needs at least one input tensor with requires_grad=True")
    out = fn(*xs)
    r = np.random.default_rng(seed).standard_normal(out.shape)

    def scalar() -> float:
        return float(np.sum(r * np.asarray(fn(*xs).data, dtype=np.float64)))

    (out * Tensor(r, dtype=np.float64)).sum().backward()
    for i in checked:
        x = xs[i]
        analytic = np.zeros_like(x.data) if x.grad is None else x.grad
        flat = x.data.reshape(-1)
        for j in range(flat.size):
            old = flat[j]
            flat[j] = old + eps
            up = scalar()
            flat[j] = old - eps
            down = scalar()
            flat[j] = old
            numeric = (up - down) / (2 * eps)
            a = analytic.reshape(-1)[j]
            if not abs(a - numeric) <= atol + rtol * abs(numeric):
                where = np.unravel_index(j, x.shape) if x.shape else ()
                raise GradcheckError(
                    f"gradcheck failed for input {i} (shape {x.shape}) at element {tuple(int(k) for k in where)}: "
                    f"analytic gradient {a:.10g}, numeric {numeric:.10g} (eps={eps}, atol={atol}, rtol={rtol})"
                )
    return True
