"""Gradient-flow diagnostics: see vanishing gradients, saturated units and dying
ReLUs while a network trains, explained in plain words.

    from chainrule.diagnostics import Monitor, health_table
    monitor = Monitor(probe=(X_train[:64], y_train[:64]))
    cr.fit(model, F.cross_entropy, opt, X_train, y_train, callbacks=[monitor])
    for w in monitor.warnings():
        print(w.message)

Pieces: :class:`Monitor` (the callback and its per-epoch records),
:func:`signal_propagation` (forward and backward variance per layer),
the thresholds and :class:`HealthWarning` (``advice``), the end-of-training
summary (:func:`health_summary`, :func:`health_text`, :func:`health_table`) and
:func:`write_tensorboard`. Plots live in :mod:`chainrule.report.diagnostics_plots`.
"""

from .advice import (
    DEAD_FRACTION_WARN,
    EXPLODING_GROWTH,
    EXPLODING_RATIO,
    GAP_LOSS_RATIO,
    GAP_WARN,
    KINDS,
    LARGE_UPDATE_RATIO,
    SATURATED_FRACTION_WARN,
    VANISHING_RATIO,
    HealthWarning,
)
from .layers import CAN_DIE, SATURATION_LEVEL, SMOOTH_RELUS, dead_threshold, find_layers, health_rule, saturation_threshold, unit_health
from .monitor import Monitor
from .probe import probe
from .signal import gradient_ratio, signal_propagation
from .summary import health_summary, health_table, health_text
from .tensorboard import write_tensorboard

__all__ = [
    "DEAD_FRACTION_WARN",
    "EXPLODING_GROWTH",
    "EXPLODING_RATIO",
    "KINDS",
    "GAP_LOSS_RATIO",
    "GAP_WARN",
    "LARGE_UPDATE_RATIO",
    "SATURATED_FRACTION_WARN",
    "CAN_DIE",
    "SATURATION_LEVEL",
    "SMOOTH_RELUS",
    "VANISHING_RATIO",
    "HealthWarning",
    "Monitor",
    "dead_threshold",
    "find_layers",
    "health_rule",
    "health_summary",
    "health_table",
    "health_text",
    "saturation_threshold",
    "gradient_ratio",
    "probe",
    "unit_health",
    "signal_propagation",
    "write_tensorboard",
]
