"""What the measurements mean: thresholds, and warnings in plain words.

Each threshold is a module-level constant, so a test, a lesson or a user can
read it (and change it). The checks run on each epoch's record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .layers import CAN_DIE, SATURATING, SATURATION_LEVEL, SMOOTH_RELUS

_NAMES = {"relu": "ReLU", "elu": "ELU", "gelu": "GELU", "silu": "SiLU"}

# Vanishing gradients: the first layer's weight-gradient norm is below this
# fraction of the output layer's. An MLP of 10 hidden layers of 64 on the digits,
# after one epoch of SGD: 1.2-1.6 with ReLU and He initialization, 7e-7 with sigmoids.
VANISHING_RATIO = 1e-3
# Exploding gradients: the first layer's gradient norm above this multiple of the output layer's,
EXPLODING_RATIO = 1e3
# ... or a layer's gradient norm grew by this factor since the first epoch.
EXPLODING_GROWTH = 1e3
# Large updates: one step changed a layer's weights by this fraction of their norm (||dW|| / ||W||).
# Healthy training on the digits stays below 0.08 (median 0.002-0.01); a learning rate
# 10x too large reaches 0.5-5.
LARGE_UPDATE_RATIO = 0.25
# Dead units: this share of a layer's units never active on the probe batch (ReLU), or always in
# the flat left tail of a GELU or SiLU (see diagnostics.layers.SMOOTH_RELUS).
DEAD_FRACTION_WARN = 0.5
# Saturation: this share of a sigmoid or tanh layer's (sample, unit) pairs saturated
# (local derivative below SATURATION_LEVEL of its peak).
SATURATED_FRACTION_WARN = 0.5

VANISHING = "vanishing_gradients"
EXPLODING = "exploding_gradients"
LARGE_UPDATES = "large_updates"
DEAD_UNITS = "dead_units"
SATURATED_UNITS = "saturated_units"
NONFINITE_LOSS = "nonfinite_loss"
NONFINITE_GRADIENT = "nonfinite_gradient"
GENERALIZATION_GAP = "generalization_gap"
KINDS = (VANISHING, EXPLODING, LARGE_UPDATES, DEAD_UNITS, SATURATED_UNITS, NONFINITE_LOSS, NONFINITE_GRADIENT,
         GENERALIZATION_GAP)


@dataclass
class HealthWarning:
    """One problem found in training, said in plain words.

    Attributes:
        kind: one of ``KINDS`` ("vanishing_gradients", "exploding_gradients",
            "large_updates", "dead_units", "saturated_units", "nonfinite_loss",
            "nonfinite_gradient", "generalization_gap").
        message: the diagnosis and what to try.
        layer: the 1-based layer it concerns (None for the whole network).
        epoch: the first epoch it was seen in.
        value: the measured number that crossed the threshold.
        threshold: that threshold.
        epochs: every epoch it was seen in.
        layers: every layer it concerns (``layer`` is the first of them).
    """

    kind: str
    message: str
    layer: int | None = None
    epoch: int | None = None
    value: float | None = None
    threshold: float | None = None
    epochs: list = field(default_factory=list)
    layers: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "message": self.message,
            "layer": self.layer,
            "epoch": self.epoch,
            "value": self.value if self.value is None or math.isfinite(self.value) else None,
            "threshold": self.threshold,
            "epochs": list(self.epochs),
            "layers": list(self.layers),
        }

    def __str__(self) -> str:
        return self.message


def _g(x: float) -> str:
    """A number in a short form: 3e-06, 0.21, 1.5e+03."""
    return f"{x:.2g}" if x != 0 else "0"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _layers(items: list) -> str:
    """"layer 3" or "layers 2, 3 and 5" from (layer, ...) tuples."""
    ids = [str(t[0]) for t in items]
    return f"layer {ids[0]}" if len(ids) == 1 else f"layers {', '.join(ids[:-1])} and {ids[-1]}"


def _share(items: list) -> str:
    """"75% of" or "52-88% of" from (layer, fraction, ...) tuples."""
    lo, hi = min(t[1] for t in items), max(t[1] for t in items)
    return f"{_pct(hi)} of" if _pct(lo) == _pct(hi) else f"{100 * lo:.0f}-{_pct(hi)} of"


def check_record(record: dict, first: dict | None = None, initial: dict | None = None, large_updates: bool = False) -> list:
    """The warnings one epoch's record calls for.

    ``first``: the first epoch's record, for growth; ``initial``: the Monitor's measurement
    before the first step, and ``large_updates``: whether an earlier epoch had too-large
    steps. The last two tell what killed dead units, and so which cure to advise.
    """
    rows = record["layers"]
    epoch = record["epoch"]
    out = []

    def warn(kind: str, message: str, layers: list, value: float | None, threshold: float) -> None:
        out.append(HealthWarning(kind, message, layers[0], epoch, value, threshold, [epoch], list(layers)))

    ratio = record.get("grad_norm_ratio")
    n = len(rows)
    if ratio is not None and n >= 2 and ratio < VANISHING_RATIO:
        warn(VANISHING, _vanishing_message(rows, ratio), [1], ratio, VANISHING_RATIO)
    if ratio is not None and n >= 2 and ratio > EXPLODING_RATIO:
        per_layer = ratio ** (1 / (n - 1))
        warn(
            EXPLODING,
            f"exploding gradients: layer 1's gradient norm is {_g(ratio)} times layer {n}'s "
            f"(warning above {EXPLODING_RATIO:g}), growing about {per_layer:.1f}x per layer going backwards; "
            "try a smaller initial scale (Xavier for sigmoid/tanh, He for ReLU), a smaller learning rate or fewer layers",
            [1],
            ratio,
            EXPLODING_RATIO,
        )
    if first is not None and first is not record:
        grown = []
        for row, row0 in zip(rows, first["layers"]):
            g, g0 = row.get("grad_norm"), row0.get("grad_norm")
            if g is not None and g0 and math.isfinite(g) and g / g0 > EXPLODING_GROWTH:
                grown.append((row["layer"], g / g0, g0, g))
        if grown:
            worst = max(grown, key=lambda t: t[1])
            warn(
                EXPLODING,
                f"exploding gradients: the gradient norm of {_layers(grown)} grew up to {_g(worst[1])}x since epoch "
                f"{first['epoch']} (layer {worst[0]}: from {_g(worst[2])} to {_g(worst[3])}; warning above "
                f"{EXPLODING_GROWTH:g}x); try a smaller learning rate or gradient clipping",
                [t[0] for t in grown],
                worst[1],
                EXPLODING_GROWTH,
            )
    large = [(r["layer"], r["update_ratio_max"]) for r in rows if (r.get("update_ratio_max") or 0) > LARGE_UPDATE_RATIO]
    if large:
        worst = max(large, key=lambda t: t[1])
        warn(
            LARGE_UPDATES,
            f"large updates: one step changed the weights of {_layers(large)} by up to {_g(worst[1])} of their size "
            f"(layer {worst[0]}; warning above {LARGE_UPDATE_RATIO:g}, healthy training stays near 0.001-0.01); "
            "the learning rate is likely too large: try a tenth of it",
            [t[0] for t in large],
            worst[1],
            LARGE_UPDATE_RATIO,
        )
    dead, where = [], "on the probe batch"
    for row in rows:
        d = row.get("dead_fraction")
        if d is None and row.get("dead_fraction_epoch") is not None:
            d, where = row["dead_fraction_epoch"], f"in any batch of epoch {epoch}"
        if row["activation"] in CAN_DIE and d is not None and d >= DEAD_FRACTION_WARN:
            dead.append((row["layer"], d, row["activation"]))
    if dead:
        worst = max(dead, key=lambda t: t[1])
        acts = sorted({t[2] for t in dead})
        tails = ", ".join(_NAMES[a] for a in acts if a != "relu")
        if "relu" not in acts:
            how = "stay in the flat left tail, where the derivative is near 0,"
        else:
            how = "are never active" if acts == ["relu"] else f"are never active (ReLU) or stay in the flat left tail ({tails})"
        large = large_updates or any((r.get("update_ratio_max") or 0) > LARGE_UPDATE_RATIO for r in rows)
        warn(
            DEAD_UNITS,
            f"dead units: {_share(dead)} the {'/'.join(_NAMES[a] for a in acts)} units of {_layers(dead)} {how} {where} "
            f"(warning at {_pct(DEAD_FRACTION_WARN)}), so they pass back {'no' if acts == ['relu'] else 'almost no'} gradient "
            f"and cannot recover; {_dead_cure(dead, initial, large)}",
            [t[0] for t in dead],
            worst[1],
            DEAD_FRACTION_WARN,
        )
    sat = [
        (r["layer"], r["saturated_fraction"], r["activation"])
        for r in rows
        if r["activation"] in SATURATING
        and r.get("saturated_fraction") is not None
        and r["saturated_fraction"] >= SATURATED_FRACTION_WARN
    ]
    if sat:
        worst = max(sat, key=lambda t: t[1])
        acts = " and ".join(sorted({t[2] for t in sat}))
        warn(
            SATURATED_UNITS,
            f"saturated units: {_share(sat)} the {acts} units of {_layers(sat)} are saturated on the probe batch "
            f"(derivative below {SATURATION_LEVEL:g} of its peak; warning at {_pct(SATURATED_FRACTION_WARN)}), "
            "so almost no gradient passes through them; try an initialization that keeps the inputs in the steep "
            "middle (Xavier, inputs scaled to about [0, 1]) or an activation that does not saturate, such as ReLU "
            "(chainrule lab vanishing-gradients: tanh under Xavier kept 0% of its units saturated and its gradient "
            "intact through 20 layers)",
            [t[0] for t in sat],
            worst[1],
            SATURATED_FRACTION_WARN,
        )
    return out


def _dead_cure(dead: list, initial: dict | None, large_updates: bool) -> str:
    """What to try, by what killed the units: the start (bias, initialization) or too-large steps.

    Each cure is the one ``chainrule lab dying-relu`` measured working for that cause.
    """
    at_start = {}
    for row in (initial or {}).get("layers", []):
        if row.get("dead_fraction") is not None:
            at_start[row["layer"]] = row["dead_fraction"]
    start = [at_start[t[0]] for t in dead if t[0] in at_start]
    if start and min(start) >= DEAD_FRACTION_WARN:
        return (f"they were already dead before the first step ({_pct(max(start))} at initialization), so the bias or the "
                "initialization killed them: start the biases at 0 (He initialization for the ReLU family); if they must "
                "start negative, Leaky ReLU, PReLU and ELU come back under Adam where ReLU does not (measured by "
                "chainrule lab dying-relu, bias experiment)")
    if large_updates or (start and max(start) < DEAD_FRACTION_WARN):
        cause = "after steps too large for the weights" if large_updates else "during training, not at the start"
        return (f"they died {cause}, so the learning rate killed them: lower it (try a tenth) or use Adam; another "
                "activation is no cure here: after too-large steps PReLU diverged and ELU units saturated and died, and "
                "only Leaky ReLU recovered (measured by chainrule lab dying-relu, learning-rate experiment)")
    return ("if they died during training, lower the learning rate or use Adam; if they were dead from the start, start the "
            "biases at 0, and Leaky ReLU, PReLU or ELU come back from a negative bias under Adam (both measured by "
            "chainrule lab dying-relu)")


# Generalization gap: a training metric (higher is better) beats its validation value by more than this ...
GAP_WARN = 0.1
# ... or, for a task with no such metric, the validation loss is more than this multiple of the training loss
# (and larger by GAP_LOSS_MIN). Measured: the objects set's sigmoid head, 0.993 on training and 0.625 on test.
GAP_LOSS_RATIO = 2.0
GAP_LOSS_MIN = 0.05
_HIGHER_IS_BETTER = ("accuracy", "subset_accuracy", "micro_f1", "r2")


def generalization_gap(metrics: dict, epoch: int) -> HealthWarning | None:
    """A warning when an epoch's training metrics beat its validation ones by far: overfitting, on any task.

    ``metrics``: one epoch of ``cr.fit``'s history ("loss", "accuracy", "val_loss", "val_accuracy", ...).
    """
    for name in _HIGHER_IS_BETTER:
        train, val = metrics.get(name), metrics.get(f"val_{name}")
        if train is None or val is None or not (math.isfinite(train) and math.isfinite(val)):
            continue
        if train - val > GAP_WARN:
            return HealthWarning(
                GENERALIZATION_GAP,
                f"generalization gap: {name.replace('_', ' ')} {train:.3f} on the training data against {val:.3f} on the "
                f"validation data (warning at a gap of {GAP_WARN:g}): the network is learning its training rows by heart; "
                "try more data, weight decay or early stopping (chainrule lab multi-label measured such a gap shrink, and "
                "the test score rise, with three times the images)",
                None, epoch, train - val, GAP_WARN, [epoch], [])
        break  # the task's first metric decides; the loss is its fallback
    else:
        train, val = metrics.get("loss"), metrics.get("val_loss")
        if (train is not None and val is not None and math.isfinite(train) and math.isfinite(val)
                and val > GAP_LOSS_RATIO * train and val - train > GAP_LOSS_MIN):
            return HealthWarning(
                GENERALIZATION_GAP,
                f"generalization gap: validation loss {val:.3g} against {train:.3g} on the training data "
                f"(warning above {GAP_LOSS_RATIO:g}x): the network is learning its training rows by heart; try more data, "
                "weight decay or early stopping",
                None, epoch, val / train if train else math.inf, GAP_LOSS_RATIO, [epoch], [])
    return None


def _vanishing_message(rows: list, ratio: float) -> str:
    n = len(rows)
    per_layer = ratio ** (1 / (n - 1)) if ratio > 0 else 0.0
    head = (
        f"vanishing gradients: layer 1's gradient norm is {_g(ratio)} of layer {n}'s "
        f"(warning below {VANISHING_RATIO:g})"
    )
    if per_layer > 0:
        head += f", shrinking about {1 / per_layer:.1f}x per layer going backwards"
    hidden = rows[:-1]
    acts = {r["activation"] for r in hidden}
    if len(acts) == 1 and next(iter(acts)) in SATURATING:
        act = next(iter(acts))
        sat = _mean([r.get("saturated_fraction") for r in hidden])
        md = _mean([r.get("mean_derivative") for r in hidden])
        why = ""
        if sat is not None and md is not None:
            why = (
                f"; {_pct(sat)} of the {act} units in layers 1-{n - 1} are saturated and on average each passes back "
                f"{md:.2f} of the gradient (at most {SATURATING[act]:g})"
            )
        return head + why + "; try ReLU, He initialization, skip connections (residual) or fewer layers"
    if "relu" in acts:
        dead = rows[0].get("dead_fraction")
        why = f"; {_pct(dead)} of layer 1's ReLU units are dead" if dead is not None else ""
        return head + why + "; try He initialization, a smaller learning rate, LeakyReLU or fewer layers"
    return head + "; try ReLU with He initialization, or fewer layers"


def nonfinite_gradient_warning(layer: Any, step: int, value: float, epoch: int) -> HealthWarning:
    return HealthWarning(
        NONFINITE_GRADIENT,
        f"non-finite gradient: layer {layer.index}'s gradient norm became {value} at step {step}; "
        "the learning rate is likely too large, or the loss takes the log of 0",
        layer.index,
        epoch,
        value,
        None,
        [epoch],
        [layer.index],
    )


def divergence_warning(log: list, step: int, loss: float | None, layers: list, epoch: int) -> HealthWarning:
    """Explain a loss that became NaN or infinite, or rose far above its start, from the last
    monitored steps (``Monitor.step_log``)."""
    if loss is None:
        became = "the loss became NaN or infinite"
    else:  # fit also stops a finite loss far above the first step's (train.DIVERGENCE_FACTOR)
        became = f"the loss became {loss}" if not math.isfinite(loss) else f"the loss rose to {loss:.3g}"
    if not log:
        msg = (
            f"{became} at step {step}, before any step was measured: the learning rate is likely far too large, "
            "or the inputs are not scaled (scale features to about [0, 1] or to unit variance)"
        )
        return HealthWarning(NONFINITE_LOSS, msg, None, epoch, loss, None, [epoch])

    def largest(entry: dict) -> tuple:
        """(norm, layer index, "weights" or "biases") of the step's largest gradient."""
        best = (0.0, 0, "weights")
        for what, key in (("weights", "grad_norm"), ("biases", "grad_norm_bias")):
            for i, v in enumerate(entry.get(key) or []):
                if v is not None and math.isfinite(v) and v > best[0]:
                    best = (v, i, what)
        return best

    first = largest(log[0])
    peak_step, peak = max(((e["step"], largest(e)) for e in log), key=lambda t: t[1][0])
    updates = [(u, e["step"]) for e in log for u in e["update_ratio"] if u is not None and math.isfinite(u)]
    umax = max(updates) if updates else None

    def name(i: int) -> int:
        return layers[i].index if i < len(layers) else i + 1

    msg = f"{became} at step {step} (epoch {epoch})"
    if log[-1]["step"] > log[0]["step"]:
        msg += (
            f"; over steps {log[0]['step']}-{log[-1]['step']} the largest gradient norm went from {_g(first[0])} "
            f"(step {log[0]['step']}) to {_g(peak[0])} (step {peak_step}, layer {name(peak[1])}'s {peak[2]})"
        )
    if umax is not None:
        msg += f", and one step changed a layer's weights by up to {_g(umax[0])} of their size (step {umax[1]})"
    grew = first[0] > 0 and peak[0] / first[0] > 10
    if grew or (umax is not None and umax[0] > LARGE_UPDATE_RATIO):
        msg += "; the learning rate is too large for this network: try a tenth of it, or gradient clipping"
    else:
        msg += (
            "; the gradients did not grow before it, so look for a log of 0 or a division by 0 in the loss, "
            "or for a learning rate that is far too large"
        )
    return HealthWarning(NONFINITE_LOSS, msg, None, epoch, loss, None, [epoch])
