"""Monitor: per-layer gradient-flow measurements while a network trains.

It plugs into ``cr.fit`` as a callback and works in a hand-written loop too.
What it measures, per layer (a Linear and the activation after it):

==========================  ================================================================
field                       meaning
==========================  ================================================================
grad_norm                   ||dL/dW|| (Frobenius), mean over the epoch's monitored steps
grad_norm_bias              ||dL/db||, likewise
update_ratio                ||W_after - W_before|| / ||W_before|| around optimizer.step(),
                            mean over the monitored steps (healthy: about 1e-3 to 1e-2)
update_ratio_max            the largest of those in the epoch
preact_mean, preact_std     mean and standard deviation of z = x @ W + b on the probe batch
mean_derivative             mean local derivative f'(z) on the probe (sigmoid <= 0.25, tanh <= 1):
                            roughly the share of the gradient each unit passes back
saturated_fraction          sigmoid and tanh: share of (sample, unit) pairs on the probe whose
                            local derivative is below 1% of its peak (|z| > 5.99 for the
                            sigmoid, |z| > 2.99 for tanh); None for other activations
dead_fraction               ReLU: share of units never active (z <= 0) on any probe sample
dead_fraction_epoch         ReLU: share of units never active on any monitored batch of the epoch
prelu_slope                 PReLU: the mean learned negative slope, with prelu_slope_range [min, max]
==========================  ================================================================

The probe is a fixed batch (``probe=``, or the first ``probe_size`` training
rows seen), measured at the end of each epoch with no graph recorded. At the
start, ``initial`` holds the same probe measurements plus the signal
propagation (forward activation variance and backward gradient variance layer
by layer) before any training.

How pre-activations are seen: ``begin`` gives each watched Linear an
instance-level ``forward`` that calls the original and keeps a reference to its
output array (no copy); ``end`` removes it. Per monitored step the cost is a
few vector norms per layer; ``monitor_every=N`` measures every N-th step.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from ..autograd import Tensor, _leaf, no_grad
from ..errors import ChainruleError
from ..validation import check_positive_int
from . import advice
from .layers import SATURATING, SATURATION_LEVEL, find_layers, local_derivative
from .signal import signal_propagation

PROBE_SIZE = 256  # rows in the probe batch taken from training data when none is given
STEP_LOG_LENGTH = 64  # monitored steps kept in step_log (for the diagnosis of a divergence)
HISTOGRAM_BINS = 30


def _norm(a: Any) -> float:
    if type(a) is np.ndarray:
        return math.sqrt(float(np.vdot(a, a)))
    return math.sqrt(float((a * a).sum()))


def _mean_or_none(total: float, count: int) -> float | None:
    return total / count if count else None


def _histogram(a: Any) -> dict:
    a = np.asarray(a, dtype=np.float64).ravel()
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


class Monitor:
    """Records gradient flow per layer while a network trains, and says in plain words what is wrong.

    Args:
        model: the network (optional here; ``cr.fit`` or ``begin(model)`` supplies it).
        probe: a fixed batch of inputs for the per-epoch unit health (pre-activation
            statistics, saturated and dead fractions) and the signal propagation at
            initialization; by default the first ``probe_size`` training rows seen.
        probe_targets: targets of ``probe``, for the backward half of the signal propagation.
        loss_fn: for the signal propagation (``cr.fit`` supplies its own).
        monitor_every: measure every N-th step (1: every step). Probe measurements
            happen once per epoch either way.
        probe_size: rows taken from the training batches when no probe is given.
        histograms: also keep per-epoch histograms of weights, gradients and
            pre-activations (for TensorBoard; costs a little at each epoch end).
        attach_to_history: inside ``cr.fit``, put each epoch's record into the
            History's epoch record under "diagnostics" (so it lands in metrics.json).

    Attributes:
        records: one dict per epoch: ``{"epoch": 1, "steps_monitored": 42,
            "grad_norm_ratio": ..., "layers": [{"layer": 1, "name": "0",
            "activation": "sigmoid", "grad_norm": ..., "update_ratio": ...,
            "saturated_fraction": ..., "dead_fraction": ..., ...}, ...]}``.
        initial: the same per-layer probe fields before training, plus
            ``preact_var``, ``activation_var``, ``grad_var`` and ``weight_grad_var``
            (see :func:`signal_propagation`).
        step_log: the last monitored steps: ``{"step", "loss", "grad_norm": [...], "update_ratio": [...]}``.

    Example, with ``cr.fit``:
        >>> monitor = Monitor(probe=(X_train[:256], y_train[:256]))
        >>> cr.fit(model, F.cross_entropy, opt, X_train, y_train, epochs=10, callbacks=[monitor])
        >>> for w in monitor.warnings(): print(w.message)

    Example, in a hand-written loop (call ``step`` after ``optimizer.step()``,
    while the gradients are still on the parameters):
        >>> monitor = Monitor(probe=(X[:256], y[:256]), loss_fn=F.cross_entropy)
        >>> monitor.begin(model)
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
        self.monitor_every = check_positive_int("monitor_every", monitor_every)
        self.probe_size = check_positive_int("probe_size", probe_size)
        self.probe = None if probe is None else np.asarray(probe.data if isinstance(probe, Tensor) else probe)
        self.probe_targets = None if probe_targets is None else np.asarray(probe_targets.data if isinstance(probe_targets, Tensor) else probe_targets)
        if self.probe is not None and self.probe_targets is not None and len(self.probe) != len(self.probe_targets):
            raise ChainruleError(f"probe has {len(self.probe)} rows but probe_targets has {len(self.probe_targets)}")
        self.attach_to_history = attach_to_history
        self.records: list = []
        self.initial: dict | None = None
        self.step_log: deque = deque(maxlen=STEP_LOG_LENGTH)
        self.histograms: list | None = [] if histograms else None
        self.layers: list = []
        self.steps = 0
        self.epoch = 0
        self._warnings: dict = {}
        self._active = False

    # ---- cr.fit callbacks ----------------------------------------------------------
    def on_train_begin(self, state: Any) -> None:
        self.begin(state.model, loss_fn=state.loss_fn)
        self.epoch = state.epoch

    def on_step_end(self, state: Any) -> None:
        self.step(state.loss, state.xb, state.yb)

    def on_epoch_end(self, state: Any) -> None:
        record = self.end_epoch(epoch=state.epoch + 1)
        if self.attach_to_history and record is not None:
            state.record["diagnostics"] = record

    def on_train_end(self, state: Any) -> None:
        self.end()

    def on_divergence(self, state: Any, error: Any = None) -> None:
        """For a fit loop that reports a NaN/inf loss to its callbacks before raising."""
        self.divergence(error, loss=getattr(state, "loss", None))

    # ---- the hand-written loop's calls -----------------------------------------------
    def begin(self, model: Any = None, loss_fn: Any = None) -> "Monitor":
        """Start watching ``model``: find its layers, hook their outputs, measure the initial state."""
        model = model if model is not None else self.model
        if model is None:
            raise ChainruleError("Monitor.begin needs the model: pass it to Monitor(model) or begin(model)")
        if self._active:
            self.end()
        self.model = model
        if loss_fn is not None:
            self.loss_fn = loss_fn
        self.layers = find_layers(model)
        n = len(self.layers)
        self._z: list = [None] * n
        for k, layer in enumerate(self.layers):
            self._hook(layer.linear, k)
        self._active = True
        self._relu = [k for k, layer in enumerate(self.layers) if layer.activation == "relu"]
        self._prev = [None] * n  # weights before the next monitored step
        self._snapshot_step = -1
        self._reset_epoch()
        self._snapshot(0)
        self._init_params = None
        if self.probe is not None:
            self.initial = self._measure_initial(self.probe, self.probe_targets)
        else:  # measured at the first step, on its batch, with the weights from before that step
            self._init_params = [(p, p.data.copy()) for p in model.parameters()]
            self._probe_rows: list = []
            self._probe_targets_rows: list = []
        return self

    def step(self, loss: Any = None, xb: Any = None, yb: Any = None) -> None:
        """Record one training step; call after ``optimizer.step()`` (gradients still present).

        Args:
            loss: the step's loss (Tensor or number), kept in ``step_log``.
            xb, yb: the step's batch, used to build the probe when none was given.
        """
        if not self._active:
            raise ChainruleError("Monitor.step() before begin(): call monitor.begin(model) first (cr.fit does it)")
        self.steps += 1
        t = self.steps
        value = None if loss is None else float(loss.data if isinstance(loss, Tensor) else loss)
        if self.probe is None and xb is not None:
            self._collect_probe(xb, yb)
        if t == 1 and self.initial is None and self._init_params is not None and xb is not None:
            self._initial_from_batch(xb, yb)
        if (t - 1) % self.monitor_every == 0:
            self._measure(t, value)
        if t % self.monitor_every == 0:
            self._snapshot(t)
        if value is not None and not math.isfinite(value):
            self.divergence(loss=value, step=t, finish=False)

    def end_epoch(self, epoch: int | None = None, partial: bool = False) -> dict | None:
        """Close the epoch: measure the probe, average the steps, check for problems; returns its record."""
        if not self._active:
            raise ChainruleError("Monitor.end_epoch() before begin(): call monitor.begin(model) first")
        self.epoch = epoch if epoch is not None else self.epoch + 1
        if self.probe is None and self._probe_rows:
            self._fix_probe()
        count = self._count
        probe = self._probe_stats(self.probe) if self.probe is not None else None
        rows = []
        for k, layer in enumerate(self.layers):
            row = {
                **layer.describe(),
                "grad_norm": _mean_or_none(self._gn[k], count),
                "grad_norm_bias": _mean_or_none(self._gb[k], count) if layer.linear.bias is not None else None,
                "update_ratio": _mean_or_none(self._ur[k], self._ur_count[k]),
                "update_ratio_max": self._um[k] if self._ur_count[k] else None,
                "dead_fraction_epoch": None,
            }
            if k in self._relu and count:
                row["dead_fraction_epoch"] = 1.0 - float(self._ever[k].mean())
            row.update(probe[k] if probe is not None else _EMPTY_PROBE)
            rows.append(row)
        first, last = rows[0]["grad_norm"], rows[-1]["grad_norm"]
        ratio = first / last if (first is not None and last) else None
        record = {"epoch": self.epoch, "steps_monitored": count, "grad_norm_ratio": ratio, "layers": rows}
        if partial:
            record["partial"] = True
        self.records.append(record)
        found = advice.check_record(record, self.records[0])
        for w in found:
            self._add_warning(w)
        if found:
            record["warnings"] = [w.message for w in found]
        if self.histograms is not None:
            self.histograms.append(self._histograms())
        self._reset_epoch()
        return record

    def end(self) -> None:
        """Stop watching: remove the output hooks from the model's layers."""
        if not self._active:
            return
        for layer in reversed(self.layers):
            hook = layer.linear.__dict__.get("forward")
            if isinstance(hook, _WatchedForward) and hook.store is self._z:
                hook.unhook()
        self._z = [None] * len(self.layers)
        self._prev = [None] * len(self.layers)
        self._init_params = None
        self._active = False

    def divergence(self, error: Any = None, loss: float | None = None, step: int | None = None, finish: bool = True) -> "advice.HealthWarning":
        """Diagnose a loss that became NaN or infinite; returns (and records) the warning.

        Call it from the ``except DivergenceError`` of the code that ran ``cr.fit``:
        it closes the unfinished epoch's record, explains what the last monitored
        steps show (growing gradient norms, updates as large as the weights) and
        stops watching (``finish=False`` keeps watching).

        Example:
            >>> try:
            ...     cr.fit(model, F.cross_entropy, opt, X, y, callbacks=[monitor])
            ... except cr.DivergenceError as e:
            ...     print(monitor.divergence(e).message)
        """
        step = step if step is not None else self.steps + 1
        if loss is None and error is not None:
            loss = _loss_in_message(str(error))
        warning = advice.divergence_warning(list(self.step_log), step, loss, self.layers, self.epoch + 1)
        self._add_warning(warning)
        if finish and self._active:
            if self._count:
                self.end_epoch(partial=True)
            self.end()
        return warning

    # ---- results ----------------------------------------------------------------------
    def warnings(self) -> list:
        """The problems found so far, each a :class:`HealthWarning` with ``kind`` and a plain-words ``message``."""
        order = {k: i for i, k in enumerate(advice.KINDS)}
        return sorted(self._warnings.values(), key=lambda w: (w.epoch or 0, order.get(w.kind, 99)))

    @property
    def last_step(self) -> dict | None:
        """The latest monitored step's per-layer measurements (from ``step_log``)."""
        return self.step_log[-1] if self.step_log else None

    def to_dict(self) -> dict:
        """Plain data for metrics.json: settings, the initial state, per-epoch records and the warnings."""
        return {
            "monitor_every": self.monitor_every,
            "saturation_rule": f"local derivative below {SATURATION_LEVEL:g} of its maximum",
            "initial": self.initial,
            "epochs": self.records,
            "warnings": [w.to_dict() for w in self.warnings()],
        }

    # ---- internals -------------------------------------------------------------------
    def _hook(self, linear: Any, k: int) -> None:
        object.__setattr__(linear, "forward", _WatchedForward(linear, self._z, k))

    def _reset_epoch(self) -> None:
        n = len(self.layers)
        self._count = 0
        self._gn = [0.0] * n
        self._gb = [0.0] * n
        self._ur = [0.0] * n
        self._ur_count = [0] * n
        self._um = [0.0] * n
        self._ever = {k: np.zeros(self.layers[k].linear.out_features, dtype=bool) for k in self._relu}

    def _snapshot(self, t: int) -> None:
        for k, layer in enumerate(self.layers):
            w = layer.linear.weight.data
            prev = self._prev[k]
            if prev is None or prev.shape != w.shape or type(prev) is not type(w):
                self._prev[k] = w.copy()
            else:
                prev[...] = w
        self._snapshot_step = t

    def _measure(self, t: int, loss: float | None) -> None:
        have_prev = self._snapshot_step == t - 1
        gns, urs = [], []
        z = self._z
        for k, layer in enumerate(self.layers):
            lin = layer.linear
            g = lin.weight.grad
            gn = _norm(g) if g is not None else 0.0
            self._gn[k] += gn
            if lin.bias is not None and lin.bias.grad is not None:
                self._gb[k] += _norm(lin.bias.grad)
            ur = None
            if have_prev:
                prev = self._prev[k]
                wn = _norm(prev)
                if wn > 0:
                    ur = _norm(lin.weight.data - prev) / wn
                    self._ur[k] += ur
                    if ur > self._um[k]:
                        self._um[k] = ur
                    self._ur_count[k] += 1
            gns.append(gn)
            urs.append(ur)
        for k in self._relu:
            zk = z[k]
            if zk is not None:
                zk = zk.reshape(-1, zk.shape[-1])
                np.logical_or(self._ever[k], (zk > 0).any(axis=0), out=self._ever[k])
                z[k] = None
        self._count += 1
        self.step_log.append({"step": t, "loss": loss, "grad_norm": gns, "update_ratio": urs})
        if not all(math.isfinite(v) for v in gns):
            bad = next(i for i, v in enumerate(gns) if not math.isfinite(v))
            self._add_warning(advice.nonfinite_gradient_warning(self.layers[bad], t, gns[bad], self.epoch + 1))

    def _probe_stats(self, X: np.ndarray) -> list:
        """Per layer: pre-activation statistics and unit health on the probe batch."""
        dtype = self.layers[0].linear.weight.data.dtype
        X = X.astype(dtype, copy=False)
        z = self._z
        for k in range(len(z)):
            z[k] = None
        with no_grad():
            self.model(_leaf(X))
        out = []
        for k, layer in enumerate(self.layers):
            zk = z[k]
            z[k] = None
            if zk is None:
                out.append(dict(_EMPTY_PROBE))
                continue
            zk = np.asarray(zk, dtype=np.float64).reshape(-1, zk.shape[-1])
            row = dict(_EMPTY_PROBE)
            row["preact_mean"] = float(zk.mean())
            row["preact_std"] = float(zk.std())
            d = local_derivative(layer, zk)
            if d is not None:
                row["mean_derivative"] = float(d.mean())
            if layer.activation in SATURATING:
                row["saturated_fraction"] = float((d < SATURATION_LEVEL * SATURATING[layer.activation]).mean())
            if layer.activation == "relu":
                row["dead_fraction"] = float((zk <= 0).all(axis=0).mean())
            if layer.activation == "prelu":
                a = np.asarray(layer.act_module.weight.data, dtype=np.float64)
                row["prelu_slope"] = float(a.mean())
                row["prelu_slope_range"] = [float(a.min()), float(a.max())]
            out.append(row)
        return out

    def _measure_initial(self, X: np.ndarray, y: Any) -> dict:
        loss_fn = self.loss_fn if y is not None else None
        sp = signal_propagation(self.model, X, loss_fn, y)
        probe = self._probe_stats(X)
        for row, extra in zip(sp["layers"], probe):
            row.update(extra)
        sp["probe_rows"] = int(len(X))
        return sp

    def _initial_from_batch(self, xb: Any, yb: Any) -> None:
        X = np.asarray(xb.data if isinstance(xb, Tensor) else xb)
        y = None if yb is None else np.asarray(yb.data if isinstance(yb, Tensor) else yb)
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
        if have >= self.probe_size:
            return
        X = np.asarray(xb.data if isinstance(xb, Tensor) else xb)
        take = min(len(X), self.probe_size - have)
        self._probe_rows.append(X[:take].copy())
        if yb is not None:
            y = np.asarray(yb.data if isinstance(yb, Tensor) else yb)
            self._probe_targets_rows.append(y[:take].copy())
        if have + take >= self.probe_size:
            self._fix_probe()

    def _fix_probe(self) -> None:
        self.probe = np.concatenate(self._probe_rows)
        if self._probe_targets_rows and len(self._probe_targets_rows) == len(self._probe_rows):
            self.probe_targets = np.concatenate(self._probe_targets_rows)
        self._probe_rows, self._probe_targets_rows = [], []

    def _histograms(self) -> dict:
        out = {}
        probe_z = {}
        if self.probe is not None:
            with no_grad():
                self.model(_leaf(self.probe.astype(self.layers[0].linear.weight.data.dtype, copy=False)))
            probe_z = {k: zk for k, zk in enumerate(self._z) if zk is not None}
            self._z[:] = [None] * len(self._z)
        for k, layer in enumerate(self.layers):
            tag = f"layer{layer.index}"
            out[f"{tag}/weight"] = _histogram(layer.linear.weight.data)
            if layer.linear.weight.grad is not None:
                out[f"{tag}/weight_grad"] = _histogram(layer.linear.weight.grad)
            if k in probe_z:
                out[f"{tag}/preactivation"] = _histogram(probe_z[k])
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


class _WatchedForward:
    """A Linear's forward that also keeps a reference to its output array in ``store[k]``.

    A copy of the watched module (``copy.deepcopy``) gets the plain forward
    back, so a copied model never reads the original's weights nor feeds this monitor.
    """

    __slots__ = ("module", "forward", "previous", "store", "k")

    def __init__(self, module: Any, store: list, k: int):
        self.module = module
        self.previous = module.__dict__.get("forward")  # another watcher's, restored by unhook
        self.forward = module.forward
        self.store = store
        self.k = k

    def __call__(self, x: Tensor) -> Tensor:
        out = self.forward(x)
        self.store[self.k] = out.data
        return out

    def __deepcopy__(self, memo: dict) -> Any:
        copied = memo.get(id(self.module))
        return _plain_forward(copied) if copied is not None else None

    def __reduce__(self) -> tuple:
        return (_plain_forward, (self.module,))

    def unhook(self) -> None:
        if self.previous is None:
            self.module.__dict__.pop("forward", None)
        else:
            object.__setattr__(self.module, "forward", self.previous)


def _plain_forward(module: Any) -> Any:
    return type(module).forward.__get__(module)


_EMPTY_PROBE = {
    "preact_mean": None,
    "preact_std": None,
    "mean_derivative": None,
    "saturated_fraction": None,
    "dead_fraction": None,
    "prelu_slope": None,
}


def _loss_in_message(text: str) -> float | None:
    for word in ("nan", "inf", "-inf"):
        if f"became {word}" in text:
            return float(word)
    return None
