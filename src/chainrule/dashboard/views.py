"""What the dashboard's charts show, measured on the live model: plain functions on NumPy arrays.

Each returns plain data (lists and dicts of numbers) ready for JSON.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np

from ..diagnostics.layers import CAN_DIE, flat_mask, host, layer_outputs, local_derivative
from ..diagnostics.probe import probe
from ..train import predict

GRID = 100  # the decision boundary is drawn from GRID x GRID predictions, over the whole plotted area
NETWORK_UNITS = 12  # the network view shows at most this many units of a layer (evenly spread)
CURVE_POINTS = 200  # the fitted 1-D curve


def num(v: Any, digits: int = 4) -> float | None:
    """A float with ``digits`` significant digits for JSON; None for NaN and infinities."""
    v = float(v)
    if not math.isfinite(v):
        return None
    return float(f"{v:.{digits}g}")


def nums(values: Any, digits: int = 4) -> list:
    return [num(v, digits) for v in np.asarray(values, dtype=np.float64).ravel()]


@contextmanager
def _evaluating(model: Any) -> Iterator[None]:
    """The model in evaluation mode (running statistics, no dropout) for a ``with`` block."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def layer_health(model: Any, layers: Sequence, probe_rows: np.ndarray) -> dict:
    """Saturated and dead fractions per layer on a probe batch, from the diagnostics' one probe
    (:func:`chainrule.diagnostics.probe`), the model in evaluation mode; None where the rule
    does not apply.

    Args:
        model: the network.
        layers: from :func:`chainrule.diagnostics.find_layers`.
        probe_rows: input rows.
    """
    with _evaluating(model):
        rows = probe(model, probe_rows, layers)
    return {key: [None if r[key] is None else num(r[key]) for r in rows] for key in ("saturated_fraction", "dead_fraction")}


def _evaluated_outputs(model: Any, layers: Sequence, rows: np.ndarray) -> list:
    with _evaluating(model):
        return layer_outputs(model, layers, rows)


def probabilities(outputs: np.ndarray, loss: str) -> np.ndarray:
    """What the outputs say as probabilities: softmax for cross-entropy, sigmoid for
    binary cross-entropy, the raw outputs clipped to [0, 1] for MSE on classes."""
    out = np.asarray(outputs, dtype=np.float64)
    if loss == "cross_entropy":
        e = np.exp(out - out.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if loss == "bce":
        return 1.0 / (1.0 + np.exp(-np.clip(out, -60, 60)))
    return np.clip(out, 0.0, 1.0)


def plane_grid(X: np.ndarray, n: int = GRID, margin: float = 0.1) -> tuple:
    """The axes (xs, ys) of an n x n grid over the 2-D points X, widened by ``margin`` of their range."""
    lo, hi = X.min(axis=0).astype(np.float64), X.max(axis=0).astype(np.float64)
    pad = (hi - lo) * margin + 1e-6
    return np.linspace(lo[0] - pad[0], hi[0] + pad[0], n), np.linspace(lo[1] - pad[1], hi[1] + pad[1], n)


def boundary(model: Any, xs: np.ndarray, ys: np.ndarray, loss: str, num_classes: int) -> dict:
    """The model's decision over the grid xs x ys.

    Two classes: z is the probability of class 1 (the boundary is z = 0.5);
    more classes: z is the predicted class.
    """
    gx, gy = np.meshgrid(xs, ys)
    points = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    p = probabilities(predict(model, points), loss)
    if num_classes == 2 and p.shape[1] == 2:
        z, kind = p[:, 1], "probability"
    elif p.shape[1] == 1:
        z, kind = p[:, 0], "probability"
    else:
        z, kind = p.argmax(axis=1).astype(np.float64), "class"
    return {"kind": kind, "z": [nums(row, 2) for row in z.reshape(len(ys), len(xs))]}  # 2 digits: a colour


def curve(model: Any, xs: np.ndarray) -> list:
    """The model's output at each x of a 1-D grid."""
    out = predict(model, xs.reshape(-1, 1).astype(np.float32))
    return nums(out[:, 0])


def image_predictions(outputs: np.ndarray, loss: str, task: str) -> dict:
    """Predicted class and its probability per image (multi-class), or the labels above 0.5 (multi-label)."""
    p = probabilities(outputs, loss)
    if task == "multilabel":
        return {"labels": [np.flatnonzero(row >= 0.5).tolist() for row in p], "probability": [nums(row, 2) for row in p]}
    return {"predicted": p.argmax(axis=1).tolist(), "probability": nums(p.max(axis=1), 3)}


def _spread(n: int, most: int) -> list:
    """``most`` unit indices spread evenly over ``n`` (all of them when n <= most)."""
    return list(range(n)) if n <= most else sorted({round(i * (n - 1) / (most - 1)) for i in range(most)})


def network(model: Any, layers: Sequence, probe: np.ndarray, most: int = NETWORK_UNITS) -> dict:
    """The network as TensorFlow Playground draws it: units, the weights between them, each unit's activity.

    Per column (the input, each hidden layer, the output): the units shown (at most ``most``),
    each one's mean output on the probe batch, the share of rows on which it passes a gradient
    back, and whether it is dead (by :func:`chainrule.diagnostics.unit_health`'s definition);
    per pair of columns, the weights between the units shown.
    """
    sizes = [int(layers[0].linear.weight.data.shape[0])] + [int(layer.linear.weight.data.shape[1]) for layer in layers]
    shown = [_spread(n, most) for n in sizes]
    weights, activity, active, dead = [], [nums(probe[:, shown[0]].mean(axis=0))], [None], [None]
    for k, (layer, (z, a)) in enumerate(zip(layers, _evaluated_outputs(model, layers, probe))):
        w = host(layer.linear.weight.data)[np.ix_(shown[k], shown[k + 1])]
        weights.append([nums(row, 3) for row in w])
        if z is None:
            activity.append([None] * len(shown[k + 1]))
            active.append(None)
            dead.append(None)
            continue
        z = np.asarray(host(z), dtype=np.float64)[:, shown[k + 1]]
        out = z if a is None else np.asarray(host(a), dtype=np.float64)[:, shown[k + 1]]
        activity.append(nums(out.mean(axis=0)))
        d = local_derivative(layer, z)
        if d is None:
            active.append(None)
            dead.append(None)
            continue
        flat = flat_mask(layer, d)
        active.append(nums(1.0 - flat.mean(axis=0)))
        dead.append([bool(x) for x in flat.all(axis=0)] if layer.activation in CAN_DIE else None)
    top = max((abs(v) for m in weights for row in m for v in row if v is not None), default=1.0)
    names = ["input"] + [f"layer {k + 1}" for k in range(len(layers) - 1)] + ["output"]
    return {"sizes": sizes, "shown": shown, "weights": weights, "activity": activity, "active": active,
            "dead": dead, "names": names, "max_weight": num(top)}
