"""One training step as one function, compiled by default: what ``cr.fit`` runs for each batch.

forward, loss, a look at the loss on the host (``check``: divergence, the history's first
loss), zero_grad, backward, optimizer step. ``check`` runs through
:func:`chainrule.capture.per_step`, so a replayed step calls it at the same point, after the
forward pass and before backward: a check that raises stops the step before any gradient
or weight changes, compiled or not.
"""

from __future__ import annotations

from typing import Any, Callable

from .capture import compile as _compile
from .capture import per_step


def training_step(model: Any, loss_fn: Callable, optimizer: Any, check: Callable | None = None, compile: bool = True) -> Callable:
    """``step(xb, yb) -> (output, loss)``: one SGD step on a batch, recorded once and replayed
    (see :func:`chainrule.compile`) unless ``compile=False``.

    ``check(loss_array)`` is called on the host with the loss (a 0-d array) after the forward
    pass and before backward, at every step; it may raise to stop training there.

    With ``compile``, the output and the loss returned hold the step's own buffers, valid
    until the next step: copy what must outlive it.

    Example:
        >>> step = training_step(model, F.cross_entropy, opt)
        >>> out, loss = step(cr.tensor(X[:32]), cr.tensor(y[:32]))
    """

    def step(xb: Any, yb: Any) -> tuple:
        out = model(xb)
        loss = loss_fn(out, yb)
        if check is not None:
            per_step(check, loss.data)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return out, loss

    return _compile(step) if compile else step
