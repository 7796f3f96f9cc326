"""Signal propagation: how the variance of activations (forward) and of gradients
(backward) changes from layer to layer at the current weights.

A well-initialized network keeps both roughly level across depth (Glorot and
Bengio 2010; He et al. 2015). A shrinking backward variance is the vanishing
gradient, measured before a single step is taken.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from typing import Any, Callable

import numpy as np

from ..autograd import Tensor, enable_grad, leaf
from ..nn.module import unchanged_state, watch
from .layers import find_layers, host, like_weights


def _retaining(store: dict, key: Any) -> Callable:
    def wrap(forward: Callable) -> Callable:
        def run(x: Tensor) -> Tensor:
            out = forward(x)
            if out.requires_grad:
                out.retain_grad()
            store[key] = out
            return out

        return run

    return wrap


def _var(a: Any) -> float | None:
    return None if a is None else float(np.var(host(a), dtype=np.float64))


def signal_propagation(model: Any, X_probe: Any, loss_fn: Any = None, y_probe: Any = None) -> dict:
    """Per-layer forward activation variance and backward gradient variance at the current weights.

    One forward and one backward pass over ``X_probe``, in the model's current mode, leaving its
    running statistics and dropout generators as they were. For layer i with pre-activation
    ``z_i = a_{i-1} @ W_i + b_i`` (normalized, when a normalization layer sits between the
    Linear and the activation) and output ``a_i = f(z_i)``:

    - ``preact_var``     = Var(z_i) over all samples and units
    - ``activation_var`` = Var(a_i) (the forward signal; equals preact_var for the output layer)
    - ``grad_var``       = Var(dL/dz_i) (the backward signal at the pre-activation)
    - ``activation_grad_var`` = Var(dL/da_i), the backward signal at the layer's output (None for
      the output layer). In a residual block ``h_i = h_{i-1} + a_i`` this is the gradient that
      flows along the skip path, dL/dh_i: its ratio between the first and the last hidden
      layer shows whether the gradient reaches the early layers undiminished, free of the
      scale of each Linear's output that ``grad_var`` carries.
    - ``weight_grad_var``= Var(dL/dW_i)

    The model's parameters keep the gradients they had before the call.

    Args:
        model: an nn.Module built from Linear and activation modules.
        X_probe: a batch of inputs, shape (N, in_features).
        loss_fn: ``loss_fn(output, target)`` or a name ("cross_entropy", "mse", "bce").
            Without it (or without ``y_probe``) only the forward variances are measured.
        y_probe: targets for ``X_probe``.

    Returns:
        ``{"input_var": Var(X), "layers": [{"layer": 1, "name": "0", "activation": "sigmoid",
        "preact_var": ..., "activation_var": ..., "grad_var": ..., "weight_grad_var": ...}, ...]}``

    Example:
        >>> sp = signal_propagation(nn.MLP([64] + [64] * 10 + [10], "sigmoid"), X[:256], "cross_entropy", y[:256])
        >>> [round(l["grad_var"] / sp["layers"][-1]["grad_var"], 12) for l in sp["layers"]]   # shrinks towards layer 1
    """
    from ..train import get_loss

    layers = find_layers(model)
    params = model.parameters()
    X = like_weights(host(X_probe.data) if isinstance(X_probe, Tensor) else X_probe, layers[0])
    backward = loss_fn is not None and y_probe is not None
    saved_grads = [p.grad for p in params]
    z_out: dict = {}
    a_out: dict = {}
    try:
        with ExitStack() as stack:
            for layer in layers:
                stack.enter_context(watch(layer.preact_module, _retaining(z_out, layer.index)))
                if layer.act_module is not None:
                    stack.enter_context(watch(layer.act_module, _retaining(a_out, layer.index)))
            stack.enter_context(unchanged_state(model))
            with enable_grad():
                for p in params:
                    p.grad = None
                out = model(leaf(X))
                if backward:
                    y = host(y_probe.data if isinstance(y_probe, Tensor) else y_probe)
                    if y.ndim == 1 and tuple(out.data.shape) == (len(y), 1) and y.dtype.kind == "f":
                        y = y.reshape(-1, 1)  # one regression target per row, as fit shapes it
                    y = like_weights(y, layers[0], cast=y.dtype.kind == "f")
                    get_loss(loss_fn)(out, leaf(y)).backward()
        rows = []
        for layer in layers:
            z = z_out.get(layer.index)
            a = a_out.get(layer.index, z)
            rows.append(
                {
                    **layer.describe(),
                    "preact_var": _var(None if z is None else z.data),
                    "activation_var": _var(None if a is None else a.data),
                    "grad_var": _var(z.grad) if backward and z is not None else None,
                    "activation_grad_var": _var(a.grad) if backward and a is not None and a is not z else None,
                    "weight_grad_var": _var(layer.linear.weight.grad) if backward else None,
                }
            )
    finally:
        for p, g in zip(params, saved_grads):
            p.grad = g
    return {"input_var": _var(X), "layers": rows}



def gradient_ratio(rows: list) -> float | None:
    """rms(dL/da) at the first hidden layer's output over that at the last hidden layer's, from
    :func:`signal_propagation`'s ``layers``: about 1 when the early layers get as much gradient
    as the late ones (as skip connections ensure), tiny when the gradient vanishes on its way
    back. None without a backward measurement or with fewer than two layers.

    Example:
        >>> gradient_ratio(signal_propagation(model, X[:256], "cross_entropy", y[:256])["layers"])
    """
    if len(rows) < 2:
        return None
    first, last = rows[0].get("activation_grad_var"), rows[-2].get("activation_grad_var")
    if first is None or not last or not math.isfinite(last) or not math.isfinite(first):
        return None
    return math.sqrt(first / last)
