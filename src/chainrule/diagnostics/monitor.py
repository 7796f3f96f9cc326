"""Monitor: per-layer gradient-flow measurements while a network trains.

It plugs into ``cr.fit`` as a callback and works in a hand-written loop too.
What it measures, per layer (a Linear and the activation after it):

==========================  ================================================================
field                       meaning
==========================  ================================================================
grad_norm                   ||dL/dW|| (Frobenius), mean over the epoch's monitored steps
grad_norm_bias              ||dL/db||, likewise
update_ratio                ||W_after - W_before|| / ||W_before|| around optimizer.step(),
                            mean over the monitored steps (healthy: about 1e-3 to 1e-2);
                            for optimizers other than SGD, on one step in 4
update_ratio_max            the largest of those in the epoch
preact_mean, preact_std     mean and standard deviation of z = x @ W + b on the probe batch
mean_derivative             mean local derivative f'(z) on the probe (sigmoid <= 0.25, tanh <= 1,
                            ReLU: the share of active units; GELU <= 1.13, SiLU <= 1.10): about
                            the share of the gradient each unit passes back
saturated_fraction          sigmoid and tanh: share of (sample, unit) pairs on the probe whose
                            local derivative is below 1% of its peak (|z| > 5.99 for the
                            sigmoid, |z| > 2.99 for tanh); None for other activations (GELU and
                            SiLU do not saturate: their derivative tends to 1 for large z)
dead_fraction               ReLU, ELU, GELU, SiLU: share of units flat on every probe sample, where
                            |f'(z)| stays below 1% of its peak: never active (z <= 0) for ReLU,
                            z < -4.61 for ELU, z < -3.02 for GELU, z < -6.14 for SiLU; they pass
                            back almost no gradient (diagnostics.layers.unit_health, the one
                            definition that the lab and the dashboard use too)
dead_fraction_epoch         ReLU only: share of units whose bias got exactly zero gradient on every
                            monitored batch of the epoch, that is, never active on any of
                            those samples (or cut off from the loss); None without a bias
prelu_slope                 PReLU: the mean learned negative slope, and prelu_slope_range [min, max]
bn_running_mean,            BatchNorm1d after the Linear: the mean over units of its running mean and
bn_running_var              running variance (and bn_running_var_range [min, max]): the statistics
                            that evaluation mode normalizes with; a running variance far from 1
                            means the Linear's output is far from unit scale (a shifted input)
==========================  ================================================================

In a layer with normalization between the Linear and the activation, z (and so
preact_mean, preact_std, mean_derivative, saturated_fraction and dead_fraction)
is the normalized value the activation receives, not the Linear's raw output,
and dead_fraction_epoch reads the normalization's bias. Layers inside an
``nn.Residual`` carry its name as ``block``, and their gradient norms are the
block's.

The probe is a fixed batch (``probe=``, or the first ``probe_size`` training
rows seen), run through the model once per epoch with no graph recorded. At the
start, ``initial`` holds the same probe measurements plus the signal
propagation (forward activation variance and backward gradient variance layer
by layer) before any training.

Cost: the training steps run the model untouched. A monitored step reads the
gradients after ``optimizer.step()``: per layer a dot product for the weight
gradient and one for the bias gradient. The update comes from the optimizer's
rule for SGD (``lr * grad``, or ``lr * velocity`` with momentum); for other
optimizers, from a copy of the weights taken before the step, on one step in
four. The pre-activations are seen only in the probe pass at the end of each
epoch, where the layers' forwards are wrapped for that one call. Per-step
values are kept as raw squared norms and summarized at the epoch's end.
``monitor_every=N`` measures every N-th step.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from ..autograd import Tensor
from ..backend import namespace
from ..errors import ChainruleError
from ..optim.sgd import SGD
from ..train import TrainState
from ..validation import integer
from . import advice
from .layers import SATURATION_LEVEL, find_layers, health_rule, host, layer_outputs, like_weights
from .probe import EMPTY_PROBE, probe
from .signal import signal_propagation

PROBE_SIZE = 64  # rows in the probe batch taken from training data when none is given (it runs once per epoch)
STEP_LOG_LENGTH = 64  # monitored steps kept in step_log (for the diagnosis of a divergence)
HISTOGRAM_BINS = 30
# Optimizers other than SGD (Adam, ...): the update, which needs a copy of the weights from
# before the step, is measured on one step in COPY_UPDATE_EVERY (at least), exactly.
COPY_UPDATE_EVERY = 4
# The weight norm in an update ratio's denominator is recomputed when the updates since its
# last exact value could have moved it by this fraction: the ratio is exact to within 1%.
NORM_DRIFT = 0.01


def _sq(a: Any) -> float:
    """Squared Frobenius norm: one BLAS dot product for a NumPy array, a sum on its device otherwise."""
    if type(a) is np.ndarray:
        return float(np.vdot(a, a))
    return float(namespace(a).sum(a * a))


def _buffer_like(w: Any) -> Any:
    """A copy of ``w`` in a buffer placed half a page away from w's address (modulo the page).

    Copying between two arrays whose addresses are nearly equal modulo 4 KiB
    hits a slow path of the CPU (4K aliasing): large NumPy arrays come from
    mmap at nearly the same offset within a page, and such a copy of a
    256 x 256 float32 weight measured 13 times slower than an offset one.
    """
    if type(w) is not np.ndarray:
        return _copy(w)
    size = w.itemsize
    raw = np.empty(w.size + 4096 // size, dtype=w.dtype)
    gap = (raw.ctypes.data - w.ctypes.data) % 4096
    start = ((2048 - gap) % 4096) // size
    buf = raw[start : start + w.size].reshape(w.shape)
    buf[...] = w
    return buf


def _copy(a: Any) -> Any:
    """A copy of array ``a`` in its namespace, on its device."""
    return a.copy() if type(a) is np.ndarray else namespace(a).asarray(a, copy=True)


def _histogram(a: Any) -> dict:
    a = np.asarray(host(a), dtype=np.float64).ravel()
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"min": 0.0, "max": 0.0, "num": 0, "sum": 0.0, "sum_squares": 0.0, "bucket_limits": [0.0], "bucket_counts": [0]}
    counts, edges = np.histogram(a, bins=HISTOGRAM_BINS)
    return {
        "min": float(a.min()),
        "max": float(a.max()),
        "num": int(a.size),
        "sum": float(a.sum()),
        "sum_squares": float(np.dot(a, a)),
        "bucket_limits": edges[1:].tolist(),
        "bucket_counts": counts.tolist(),
    }


def _array(x: Any) -> np.ndarray:
    return host(x.data if isinstance(x, Tensor) else np.asarray(x) if not hasattr(x, "shape") else x)


class Monitor:
    """Records gradient flow per layer while a network trains, and says in plain words what is wrong.

    Args:
        model: the network (optional here; ``cr.fit`` or ``begin(model)`` supplies it).
        probe: a fixed batch of inputs, or a pair (inputs, targets), for the
            per-epoch unit health (pre-activation statistics, saturated and dead
            fractions) and the signal propagation at initialization; by default
            the first ``probe_size`` training rows seen.
        probe_targets: targets of ``probe``, for the backward half of the signal propagation.
        loss_fn: for the signal propagation (``cr.fit`` supplies its own).
        monitor_every: measure every N-th step (1: every step). The probe is
            measured once per epoch either way.
        probe_size: rows taken from the training batches when no probe is given.
        histograms: also keep per-epoch histograms of weights, gradients and
            pre-activations (for TensorBoard; costs one more probe pass per epoch).
        attach_to_history: inside ``cr.fit``, put each epoch's record into the
            History's epoch record under "diagnostics" (so it lands in metrics.json).

    Attributes:
        records: one dict per epoch: ``{"epoch": 1, "steps_monitored": 42,
            "grad_norm_ratio": first layer's grad_norm / last layer's, "layers":
            [{"layer": 1, "name": "0", "activation": "sigmoid", "grad_norm": ...,
            "update_ratio": ..., "saturated_fraction": ..., "dead_fraction": ..., ...}]}``
            (the fields are listed in this module's docstring).
        initial: the probe fields before training, plus ``preact_var``,
            ``activation_var``, ``grad_var`` and ``weight_grad_var`` per layer
            (see :func:`signal_propagation`).
        step_log: the last monitored steps: ``{"step", "loss", "grad_norm": [...],
            "grad_norm_bias": [...], "update_ratio": [...]}``, one value per layer.

    Example, with ``cr.fit``:
        >>> monitor = Monitor(probe=(X_train[:64], y_train[:64]))
        >>> cr.fit(model, F.cross_entropy, opt, X_train, y_train, epochs=10, callbacks=[monitor])
        >>> for w in monitor.warnings(): print(w.message)

    Example, in a hand-written loop (call ``step`` after ``optimizer.step()``,
    while the gradients are still on the parameters):
        >>> monitor = Monitor(probe=(X[:64], y[:64]), loss_fn=F.cross_entropy)
        >>> monitor.begin(model, optimizer=opt)   # optimizer: optional; with SGD it spares a weight copy
        >>> for epoch in range(10):
        ...     for xb, yb in batches:
        ...         loss = F.cross_entropy(model(xb), yb)
        ...         opt.zero_grad(); loss.backward(); opt.step()
        ...         monitor.step(loss)
        ...     monitor.end_epoch()
        >>> monitor.end()
    """

    def __init__(
        self,
        model: Any = None,
        probe: Any = None,
        probe_targets: Any = None,
        loss_fn: Any = None,
        monitor_every: int = 1,
        probe_size: int = PROBE_SIZE,
        histograms: bool = False,
        attach_to_history: bool = True,
    ):
        if isinstance(probe, tuple):
            if len(probe) != 2:
                raise ChainruleError(f"probe must be an array of inputs or a pair (inputs, targets), got a tuple of {len(probe)}")
            probe, probe_targets = probe
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer: Any = None
        self.monitor_every = integer("monitor_every", monitor_every, 1)
        self.probe_size = integer("probe_size", probe_size, 1)
        self.probe = None if probe is None else _array(probe)
        self.probe_targets = None if probe_targets is None else _array(probe_targets)
        if self.probe is not None and self.probe.ndim != 2:
            raise ChainruleError(f"probe must have shape (samples, features), got shape {self.probe.shape}")
        if self.probe is not None and self.probe_targets is not None and len(self.probe) != len(self.probe_targets):
            raise ChainruleError(f"probe has {len(self.probe)} rows but probe_targets has {len(self.probe_targets)}")
        self.attach_to_history = attach_to_history
        self.records: list = []
        self.initial: dict | None = None
        self._log: deque = deque(maxlen=STEP_LOG_LENGTH)  # (step, loss, raw row) of the last monitored steps
        self.histograms: list | None = [] if histograms else None
        self.layers: list = []
        self.steps = 0
        self.epoch = 0
        self._warnings: dict = {}
        self._active = False
        self._diverged = False
        self._probe_rows: list = []
        self._probe_target_rows: list = []

    # ---- cr.fit callbacks ----------------------------------------------------------
    def on_train_begin(self, state: TrainState) -> None:
        self.begin(state.model, loss_fn=state.loss_fn, optimizer=state.optimizer)
        self.epoch = state.epoch

    def on_step_end(self, state: TrainState) -> None:
        self.step(state.loss, state.xb, state.yb)

    def on_epoch_end(self, state: TrainState) -> None:
        record = self.end_epoch(epoch=state.epoch + 1, metrics=getattr(state, "record", None))
        if self.attach_to_history:
            state.record["diagnostics"] = record

    def on_train_end(self, state: TrainState) -> None:
        self.end()

    def on_divergence(self, state: TrainState, error: Any = None) -> None:
        """cr.fit tells its callbacks about a NaN/inf loss before raising: diagnose it."""
        self.divergence(error, loss=getattr(state, "loss", None), step=getattr(state, "step", self.steps) + 1)

    # ---- the hand-written loop's calls -----------------------------------------------
    def begin(self, model: Any = None, loss_fn: Any = None, optimizer: Any = None) -> "Monitor":
        """Start watching ``model``: find its layers, keep its weights, measure the initial state.

        The model itself is not changed. With ``optimizer`` given and SGD
        (plain or with momentum), the update is known from the optimizer's
        rule (``-lr * grad`` or ``-lr * velocity``) and no copy of the weights is kept.
        """
        model = model if model is not None else self.model
        if model is None:
            raise ChainruleError("Monitor.begin needs the model: pass it to Monitor(model) or begin(model)")
        self.model = model
        if loss_fn is not None:
            self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.layers = find_layers(model)
        self._params = [(layer.linear.weight, layer.linear.bias) for layer in self.layers]
        # each watched weight's position in the optimizer's parameter list (None: not all there)
        position = {id(p): i for i, p in enumerate(getattr(optimizer, "params", None) or [])}
        index = [position.get(id(w)) for w, _ in self._params]
        self._opt_index = index if all(i is not None for i in index) else None
        n = len(self.layers)
        self._active = True
        self._relu = [k for k, layer in enumerate(self.layers) if layer.activation == "relu" and layer.unit_bias is not None]
        self._prev = [None] * n  # weights before the next monitored step
        self._prev_sq = [math.nan] * n  # squared norms of the weights at the last snapshot
        self._drift = [0.0] * n  # sum of update norms since prev_sq was exact
        self._snapshot_step = -1
        self._snapshot_rule = ""
        self._reset_epoch()
        rule = self._update_rule()
        if rule != "copy" or self._copy_step(self.steps + 1):
            self._snapshot(self.steps, rule)
        self._init_params = None
        if self.initial is None:
            if self.probe is not None:
                self.initial = self._measure_initial(self.probe, self.probe_targets)
            else:  # measured at the first step, on its batch, with the weights from before that step
                self._init_params = [(p, _copy(p.data)) for p in model.parameters()]
        return self

    def step(self, loss: Any = None, xb: Any = None, yb: Any = None) -> None:
        """Record one training step; call it after ``optimizer.step()`` (the gradients are still there).

        Args:
            loss: the step's loss (Tensor or number), kept in ``step_log``; a
                NaN or infinite loss adds a "nonfinite_loss" warning.
            xb, yb: the step's batch; needed only when no probe was given
                (the probe is then built from the first batches).
        """
        if not self._active:
            raise ChainruleError("Monitor.step() before begin(): call monitor.begin(model) first (cr.fit does it)")
        self.steps += 1
        t = self.steps
        value = None if loss is None else float(loss.data if isinstance(loss, Tensor) else loss)
        if self._init_params is not None and xb is not None:
            self._initial_from_batch(xb, yb)
        if self.probe is None and xb is not None:
            self._collect_probe(xb, yb)
        rule = self._update_rule()
        # keep the weights before the next step when it is monitored (and, under "copy", measures its update)
        snapshot = t % self.monitor_every == 0 and (rule != "copy" or self._copy_step(t + 1))
        if (t - 1) % self.monitor_every == 0:
            self._measure(t, value, rule, snapshot)
        elif snapshot:
            self._snapshot(t, rule)
        if value is not None and not math.isfinite(value):
            self.divergence(loss=value, step=t, finish=False)

    def end_epoch(self, epoch: int | None = None, partial: bool = False, metrics: dict | None = None) -> dict:
        """Close the epoch: measure the probe, average the steps, check for problems; returns its record.

        ``metrics``: the epoch's training and validation metrics ("accuracy", "val_accuracy", ...),
        as cr.fit records them; with them, a large generalization gap is warned about too.
        """
        if not self._active:
            raise ChainruleError("Monitor.end_epoch() before begin(): call monitor.begin(model) first")
        self.epoch = epoch if epoch is not None else self.epoch + 1
        if self.probe is None and self._probe_rows:
            self._fix_probe()
        count = len(self._rows)
        steps = self._step_table()
        measured = probe(self.model, self.probe, self.layers) if self.probe is not None else None
        rows = []
        for k, (layer, summary) in enumerate(zip(self.layers, _summarize(steps))):
            row = {**layer.describe(), **summary, "dead_fraction_epoch": None}
            if k in self._alive and count:
                row["dead_fraction_epoch"] = 1.0 - float(host(self._alive[k]).mean())
            row.update(measured[k] if measured is not None else EMPTY_PROBE)
            rows.append(row)
        first, last = rows[0]["grad_norm"], rows[-1]["grad_norm"]
        ratio = first / last if (first is not None and last) else None
        record = {"epoch": self.epoch, "steps_monitored": count, "grad_norm_ratio": ratio, "layers": rows}
        if partial:
            record["partial"] = True
        self.records.append(record)
        found = advice.check_record(record, self.records[0], initial=self.initial,
                                    large_updates=advice.LARGE_UPDATES in self._warnings)
        gap = advice.generalization_gap(metrics, self.epoch) if metrics else None
        if gap is not None:
            found.append(gap)
        for w in found:
            self._add_warning(w)
        if found:
            record["warnings"] = [w.message for w in found]
        if self.histograms is not None:
            self.histograms.append(self._histograms())
        self._reset_epoch()
        return record

    def end(self) -> None:
        """Stop watching (drops the weight copies; the records stay)."""
        self._prev = [None] * len(self.layers)
        self._init_params = None
        self._active = False

    def divergence(
        self, error: Any = None, loss: float | None = None, step: int | None = None, finish: bool = True
    ) -> "advice.HealthWarning":
        """Diagnose a loss that became NaN or infinite; returns (and records) the warning.

        ``cr.fit`` calls it (through ``on_divergence``) before it raises
        DivergenceError; calling it again, from the ``except`` around
        ``cr.fit``, returns the same warning. It explains what the last
        monitored steps show (growing gradient norms, updates as large as the
        weights), closes the unfinished epoch's record (marked ``"partial":
        True``) and stops watching (``finish=False`` keeps watching).

        Example:
            >>> try:
            ...     cr.fit(model, F.cross_entropy, opt, X, y, callbacks=[monitor])
            ... except cr.DivergenceError as e:
            ...     print(monitor.divergence(e).message)
        """
        warning = self._warnings.get(advice.NONFINITE_LOSS) if self._diverged else None
        if warning is None:  # the first call; later ones (cr.fit's on_divergence, then the caller's) reuse it
            step = step if step is not None else self.steps + 1
            if loss is None and error is not None:
                loss = _loss_in_message(str(error))
            warning = advice.divergence_warning(self.step_log, step, loss, self.layers, self.epoch + 1)
            self._add_warning(warning)
            self._diverged = True
        if finish and self._active:
            if self._rows:
                self.end_epoch(partial=True)
            self.end()
        return warning

    # ---- results ----------------------------------------------------------------------
    def warnings(self) -> list:
        """The problems found so far, each a :class:`HealthWarning` with ``kind`` and a plain-words ``message``.

        One warning per kind, holding the latest epoch's message and every
        epoch and layer it was seen in; ordered by the epoch first seen.
        """
        order = {k: i for i, k in enumerate(advice.KINDS)}
        return sorted(self._warnings.values(), key=lambda w: (w.epoch or 0, order.get(w.kind, 99)))

    @property
    def step_log(self) -> list:
        """The last monitored steps (up to STEP_LOG_LENGTH), oldest first:
        ``{"step", "loss", "grad_norm": [per layer], "grad_norm_bias": [...], "update_ratio": [...]}``
        (None where unknown)."""
        out = []
        for t, loss, raw in self._log:
            table = _table([raw], len(self.layers))
            out.append(
                {
                    "step": t,
                    "loss": loss,
                    "grad_norm": [float(v) for v in table["grad_norm"][0]],
                    "grad_norm_bias": [None if not math.isfinite(v) else float(v) for v in table["bias_norm"][0]],
                    "update_ratio": [None if not math.isfinite(v) else float(v) for v in table["update_ratio"][0]],
                }
            )
        return out

    @property
    def last_step(self) -> dict | None:
        """The latest monitored step's per-layer measurements (from ``step_log``)."""
        log = self.step_log
        return log[-1] if log else None

    def health_rules(self) -> dict:
        """How each watched activation's units are judged saturated or dead, in words:
        ``{"gelu": "dead: every probe sample puts the unit in the flat left tail, z < -3.02, ..."}``."""
        rules = {}
        for layer in self.layers or []:
            if layer.act_module is not None and layer.activation not in rules:
                rules[layer.activation] = health_rule(layer.activation, getattr(layer.act_module, "approximate", "none"))
        return rules

    def to_dict(self) -> dict:
        """Plain data for metrics.json: settings, the initial state, per-epoch records and the warnings."""
        return {
            "monitor_every": self.monitor_every,
            "saturation_rule": f"local derivative below {SATURATION_LEVEL:g} of its maximum",
            "health_rules": self.health_rules(),
            "initial": self.initial,
            "epochs": self.records,
            "warnings": [w.to_dict() for w in self.warnings()],
        }

    # ---- internals -------------------------------------------------------------------
    def _reset_epoch(self) -> None:
        self._rows: list = []  # one raw row per monitored step, see _measure
        self._row_steps: list = []
        # per ReLU unit: did its bias get a non-zero gradient in a monitored batch of the epoch?
        self._alive = {k: np.zeros(self.layers[k].linear.out_features, dtype=bool) for k in self._relu}

    def _update_rule(self) -> str:
        """How this step's update is known, from the optimizer's own rule (see optim.SGD):

        - "grad": plain SGD, ``W -= lr * grad``, so ||update|| = lr ||grad||;
        - "velocity": SGD with momentum (not Nesterov), ``W -= lr * v``, so ||update|| = lr ||v||;
        - "copy": any other optimizer (Adam, ...): the weights are copied before the
          step and subtracted after, on one monitored step in ``COPY_UPDATE_EVERY``
          training steps (or every monitored step when ``monitor_every`` is larger).
        """
        opt = self.optimizer
        if type(opt) is SGD and not opt.nesterov and self._opt_index is not None:
            if not opt.momentum and not opt.weight_decay:
                return "grad"
            if opt.momentum:
                return "velocity"
        return "copy"

    def _copy_step(self, t: int) -> bool:
        """Whether monitored step t measures its update under the "copy" rule."""
        n = self.monitor_every
        return ((t - 1) // n) % -(-COPY_UPDATE_EVERY // n) == 0

    def _snapshot(self, t: int, rule: str) -> None:
        """Keep the "before" of step t + 1's update: each weight's squared norm (and a copy, for "copy")."""
        for k, layer in enumerate(self.layers):
            w = layer.linear.weight.data
            self._prev_sq[k] = _sq(w)
            self._drift[k] = 0.0
            if rule == "copy":
                self._copy_weights(k, w)
        self._snapshot_step = t
        self._snapshot_rule = rule

    def _copy_weights(self, k: int, w: Any) -> None:
        prev = self._prev[k]
        if prev is None or prev.shape != w.shape or type(prev) is not type(w) or prev.dtype != w.dtype:
            self._prev[k] = _buffer_like(w)
        else:
            prev[...] = w

    def _measure(self, t: int, loss: float | None, rule: str, snapshot: bool) -> None:
        """One monitored step, the hot path: squared norms now, everything else at the epoch's end.

        The raw row is ``[lr, then per layer: ||dW||^2, ||db||^2, ||W_before||^2,
        ||W_after - W_before||^2]``, the last NaN under the "grad" rule (it is
        lr^2 ||dW||^2, worked out at the epoch's end) and where not measured.
        Per layer: one dot product each for the gradient and the bias gradient,
        and with ``snapshot`` one for the weights (the next step's "before";
        under "grad" and "velocity" only when the last exact value may be 1% off);
        one more for the velocity with momentum; under the "copy" rule, on the
        steps that measure it, a subtraction, a copy and one more dot product,
        in place on a kept buffer.
        """
        nan = math.nan
        vdot = np.vdot
        have_prev = self._snapshot_step == t - 1 and self._snapshot_rule == rule
        velocity = self.optimizer.velocity if rule == "velocity" else None
        lr = self.optimizer.lr if rule != "copy" else nan
        row = [lr]
        prev_all, prev_sq, index, drift = self._prev, self._prev_sq, self._opt_index, self._drift
        for k, (weight, bias) in enumerate(self._params):
            w, g = weight.data, weight.grad
            numpy = type(w) is np.ndarray
            gb = bias.grad if bias is not None else None
            if numpy:
                gsq = float(vdot(g, g)) if g is not None else 0.0
                bsq = float(vdot(gb, gb)) if gb is not None else nan
            else:
                gsq = _sq(g) if g is not None else 0.0
                bsq = _sq(gb) if gb is not None else nan
            usq = nan
            if velocity is not None:
                v = velocity[index[k]]
                usq = lr * lr * _sq(v) if v is not None else 0.0
            elif rule == "copy" and have_prev:
                prev = prev_all[k]
                if numpy:
                    np.subtract(w, prev, out=prev)  # prev now holds the update
                else:
                    prev -= w  # minus the update: the same norm
                usq = _sq(prev)
            row += (gsq, bsq, prev_sq[k] if have_prev else nan, usq)
            if snapshot:
                # The next step's "before" norm. Under "grad" and "velocity" the update's norm
                # bounds how far ||W|| moved (triangle inequality), so the last exact value is
                # kept until the updates since add up to NORM_DRIFT of it.
                un = lr * math.sqrt(gsq) if rule == "grad" else math.sqrt(usq) if rule == "velocity" else nan
                moved = drift[k] + un
                if have_prev and moved <= NORM_DRIFT * math.sqrt(prev_sq[k]):
                    drift[k] = moved
                else:
                    prev_sq[k] = float(vdot(w, w)) if numpy else _sq(w)
                    drift[k] = 0.0
                if rule == "copy":
                    self._copy_weights(k, w)
        self._snapshot_step = t if snapshot else -1
        self._snapshot_rule = rule
        alive = self._alive
        for k in self._relu:
            gb = self.layers[k].unit_bias.grad
            if gb is None:
                continue
            # a unit whose bias got a non-zero gradient was active on some sample
            if type(gb) is np.ndarray:
                np.logical_or(alive[k], gb, out=alive[k])
            else:  # kept on the device until the epoch's end: no copy to the host per step
                active = gb != 0
                alive[k] = active if type(alive[k]) is np.ndarray else alive[k] | active
        self._rows.append(row)
        self._row_steps.append(t)
        self._log.append((t, loss, row))

    def _step_table(self) -> dict:
        """The epoch's raw rows as per-step, per-layer arrays; warns about non-finite gradients."""
        steps = _table(self._rows, len(self.layers))
        bad = ~np.isfinite(steps["grad_norm"])
        if bad.any():
            i, k = np.argwhere(bad)[0]
            t = self._row_steps[int(i)]
            layer = self.layers[int(k)]
            self._add_warning(advice.nonfinite_gradient_warning(layer, t, float(steps["grad_norm"][i, k]), self.epoch))
        return steps

    def _measure_initial(self, X: np.ndarray, y: Any) -> dict:
        loss_fn = self.loss_fn if y is not None else None
        sp = signal_propagation(self.model, X, loss_fn, y)
        for row, extra in zip(sp["layers"], probe(self.model, X, self.layers)):
            row.update(extra)
        sp["probe_rows"] = int(len(X))
        return sp

    def _initial_from_batch(self, xb: Any, yb: Any) -> None:
        X = _array(xb)
        y = None if yb is None else _array(yb)
        now = [(p, p.data) for p, _ in self._init_params]
        try:
            for p, before in self._init_params:
                p.data = before
            self.initial = self._measure_initial(X, y)
        finally:
            for p, data in now:
                p.data = data
            self._init_params = None

    def _collect_probe(self, xb: Any, yb: Any) -> None:
        have = sum(len(r) for r in self._probe_rows)
        X = _array(xb)
        take = min(len(X), self.probe_size - have)
        self._probe_rows.append(X[:take].copy())
        if yb is not None:
            self._probe_target_rows.append(_array(yb)[:take].copy())
        if have + take >= self.probe_size:
            self._fix_probe()

    def _fix_probe(self) -> None:
        self.probe = np.concatenate(self._probe_rows)
        if len(self._probe_target_rows) == len(self._probe_rows):
            self.probe_targets = np.concatenate(self._probe_target_rows)
        self._probe_rows, self._probe_target_rows = [], []

    def _histograms(self) -> dict:
        out = {}
        probe_z = [z for z, _ in layer_outputs(self.model, self.layers, self.probe)] if self.probe is not None else [None] * len(self.layers)
        for layer, zk in zip(self.layers, probe_z):
            tag = f"layer{layer.index}"
            out[f"{tag}/weight"] = _histogram(layer.linear.weight.data)
            if layer.linear.weight.grad is not None:
                out[f"{tag}/weight_grad"] = _histogram(layer.linear.weight.grad)
            if zk is not None:
                out[f"{tag}/preactivation"] = _histogram(zk)
        return out

    def _add_warning(self, w: "advice.HealthWarning") -> bool:
        """Keep one warning per kind: the latest message, every epoch and layer it was seen in."""
        old = self._warnings.get(w.kind)
        if old is None:
            self._warnings[w.kind] = w
            return True
        old.message, old.value, old.threshold = w.message, w.value, w.threshold
        old.epochs.extend(e for e in w.epochs if e not in old.epochs)
        old.layers = sorted(set(old.layers) | set(w.layers))
        old.layer = old.layers[0] if old.layers else None
        return False

    def __repr__(self) -> str:
        state = "watching" if self._active else "idle"
        return f"Monitor({state}, {len(self.layers)} layers, {len(self.records)} epochs, monitor_every={self.monitor_every})"


def _table(rows: list, n: int) -> dict:
    """Raw rows (see Monitor._measure) -> arrays of shape (steps, layers): grad_norm, bias_norm, update_ratio."""
    if not rows:
        empty = np.zeros((0, n))
        return {"grad_norm": empty, "bias_norm": empty, "update_ratio": empty}
    a = np.array(rows, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        norms = np.sqrt(a[:, 1:].reshape(len(rows), n, 4))  # gradient, bias gradient, weights before, update
        gn, before, update = norms[..., 0], norms[..., 2], norms[..., 3]
        unknown = np.isnan(update)
        if unknown.any():  # the "grad" rule: the update is lr * grad
            update = np.where(unknown, a[:, :1] * gn, update)
        ratio = np.where(before > 0, update / before, np.nan)
    return {"grad_norm": gn, "bias_norm": norms[..., 1], "update_ratio": ratio}


def _summarize(steps: dict) -> list:
    """Per layer: epoch means of the per-step values, and the largest update ratio."""
    gn, bn, ur = steps["grad_norm"], steps["bias_norm"], steps["update_ratio"]
    n = gn.shape[1]
    if not len(gn):
        return [dict.fromkeys(("grad_norm", "grad_norm_bias", "update_ratio", "update_ratio_max")) for _ in range(n)]
    known = np.isfinite(ur)
    counts = known.sum(axis=0).tolist()
    with np.errstate(invalid="ignore", divide="ignore"):
        ur_mean = (np.where(known, ur, 0.0).sum(axis=0) / np.maximum(counts, 1)).tolist()
    ur_max = np.where(known, ur, -np.inf).max(axis=0).tolist()
    g, b = gn.mean(axis=0).tolist(), bn.mean(axis=0).tolist()
    return [
        {
            "grad_norm": _finite(g[k]),
            "grad_norm_bias": _finite(b[k]),
            "update_ratio": _finite(ur_mean[k]) if counts[k] else None,
            "update_ratio_max": _finite(ur_max[k]) if counts[k] else None,
        }
        for k in range(n)
    ]


def _finite(v: float) -> float | None:
    """A float for metrics.json; None for NaN or infinity (which JSON cannot hold)."""
    return v if math.isfinite(v) else None




def _loss_in_message(text: str) -> float | None:
    for word in ("-inf", "inf", "nan"):
        if f"became {word}" in text:
            return float(word)
    return None
