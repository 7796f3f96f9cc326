"""Gradient checking: backward() against central finite differences in float64."""

from __future__ import annotations

from typing import Callable

import numpy as np

from .autograd import Tensor
from .backend import asarray, namespace
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
            are copied to float64 first (the originals are not changed), in
            their own namespace and on their device, where backward() runs.

    Returns:
        True when every entry agrees.

    Raises:
        GradcheckError: an entry disagrees; the message names the input, the element, the analytic and the numeric value.

    Example:
        >>> x = cr.tensor([[0.5, -1.0]], requires_grad=True, dtype="float64")
        >>> cr.gradcheck(lambda t: (t.sigmoid() * t).sum(), x)
        True
    """
    xs = [_float64_copy(t) if isinstance(t, Tensor) else t for t in inputs]
    checked = [i for i, t in enumerate(xs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise GradcheckError("gradcheck needs at least one input tensor with requires_grad=True")
    out = fn(*xs)
    # the weights r live where the output does, so that backward() runs in its namespace
    r = asarray(np.random.default_rng(seed).standard_normal(out.shape), like=out.data)

    def scalar() -> float:
        d = fn(*xs).data
        if type(d) is np.ndarray:
            return float(np.sum(r * np.asarray(d, dtype=np.float64)))
        xp = namespace(d)
        return float(xp.sum(r * xp.astype(d, xp.float64)))

    (out * Tensor(r, dtype=np.float64)).sum().backward()
    for i in checked:
        x = xs[i]
        analytic = x.grad
        for j in range(x.size):
            # entries are set through a multi-index: the array API has no writable flat view
            where = tuple(int(k) for k in np.unravel_index(j, x.shape))
            old = float(x.data[where])
            x.data[where] = old + eps
            up = scalar()
            x.data[where] = old - eps
            down = scalar()
            x.data[where] = old
            numeric = (up - down) / (2 * eps)
            a = 0.0 if analytic is None else float(analytic[where])
            if not abs(a - numeric) <= atol + rtol * abs(numeric):
                raise GradcheckError(
                    f"gradcheck failed for input {i} (shape {x.shape}) at element {where}: "
                    f"analytic gradient {a:.10g}, numeric {numeric:.10g} (eps={eps}, atol={atol}, rtol={rtol})"
                )
    return True


def _float64_copy(t: Tensor) -> Tensor:
    """A float64 copy of ``t``'s data, in its namespace and on its device, as a new leaf."""
    d = t.data
    if type(d) is np.ndarray:
        data = np.array(d, dtype=np.float64)
    else:
        xp = namespace(d)
        data = xp.astype(d, xp.float64, copy=True)
    return Tensor(data, requires_grad=t.requires_grad, dtype="float64")
