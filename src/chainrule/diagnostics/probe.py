"""The layer-health probe: one pass of a batch through the model, and per layer what it shows.

The Monitor (once per epoch and at the start), the lab's experiments and the dashboard all
measure layer health with :func:`probe`, so a dead or saturated unit means the same thing in
each (the definition is :func:`chainrule.diagnostics.unit_health`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..activation_rules import ACTIVATION_RULES
from .layers import SATURATING, find_layers, host, layer_outputs, unit_health

# A probe row's keys, None until measured (a layer the pass did not reach keeps them so).
EMPTY_PROBE = {
    "preact_mean": None,
    "preact_std": None,
    "mean_derivative": None,
    "saturated_fraction": None,
    "dead_fraction": None,
    "prelu_slope": None,
    "bn_running_mean": None,
    "bn_running_var": None,
}


def probe(model: Any, X: Any, layers: Sequence | None = None) -> list:
    """Per layer, the health of its units on the rows ``X``: one dict of plain numbers each.

    One forward pass with no graph, in the model's current mode, leaving its running
    statistics and dropout generators as they were. Each row holds the mean and standard
    deviation of what the activation receives (``preact_mean``, ``preact_std``; normalized,
    in a normalized layer), :func:`~chainrule.diagnostics.unit_health`'s ``mean_derivative``,
    ``dead_fraction`` and ``saturated_fraction`` (None where the rule does not apply), a
    PReLU's slopes and a batch normalization's running statistics. Written for speed: float32
    pairwise sums, BLAS dot products, sigmoid's and tanh's derivatives from their outputs.

    Args:
        model: the network (an ``nn.MLP`` or a Sequential of Linear layers and activations).
        X: input rows.
        layers: from :func:`~chainrule.diagnostics.find_layers` (found when not given).

    Example:
        >>> [row["dead_fraction"] for row in probe(model, X[:256])]
        [0.0, 0.03, None]
    """
    layers = find_layers(model) if layers is None else layers
    out = []
    for layer, (zk, ak) in zip(layers, layer_outputs(model, layers, X)):
        row = dict(EMPTY_PROBE)
        out.append(row)
        if layer.norm == "batch":  # the statistics evaluation mode normalizes with
            rm = host(layer.norm_module.running_mean.data).astype(np.float64)
            rv = host(layer.norm_module.running_var.data).astype(np.float64)
            row["bn_running_mean"] = float(rm.mean())
            row["bn_running_var"] = float(rv.mean())
            row["bn_running_var_range"] = [float(rv.min()), float(rv.max())]
        if zk is None:
            continue
        zk = host(zk)
        zk = zk.reshape(-1, zk.shape[-1])
        n = zk.size
        mean = float(zk.sum()) / n
        centred = (zk - zk.dtype.type(mean)).ravel()
        row["preact_mean"] = mean
        row["preact_std"] = math.sqrt(float(np.vdot(centred, centred)) / n)
        act = layer.activation
        d = None
        if act in SATURATING and ak is not None:
            ak = host(ak)
            d = ACTIVATION_RULES[act].slope(None, ak, None)  # from the output: s(1 - s), 1 - tanh^2
        elif act == "relu":
            d = zk > 0  # ReLU' as a mask: the same test, without a float copy
        health = unit_health(layer, zk, d)
        for key in ("mean_derivative", "dead_fraction", "saturated_fraction"):
            if health[key] is not None:
                row[key] = health[key]
        if act == "prelu":
            a = host(layer.act_module.weight.data).astype(np.float64)
            row["prelu_slope"] = float(a.mean())
            row["prelu_slope_range"] = [float(a.min()), float(a.max())]
    return out
