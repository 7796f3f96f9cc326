"""Training behind the dashboard: one run per browser tab, each in its own thread.

A :class:`Run` is ``cr.fit`` on the chosen data, with the diagnostics'
:class:`~chainrule.diagnostics.Monitor` and one more callback, the run itself,
which after every step

1. collects the step's loss and per-layer gradient norms,
2. about ten times a second publishes a *snapshot* (JSON) of everything the
   charts show, measuring the test set, the units' health and the picture
   (decision boundary, fitted curve or digit predictions) at most every
   MEASURE_INTERVAL seconds, and
3. waits at a gate while the run is paused, letting one step through per Step
   press; Reset opens the gate with an exception that ends ``cr.fit``.

A :class:`Session` (one per tab) keeps the latest published setup and snapshot,
which the web app streams to the page; a :class:`SessionManager` holds the
sessions, bounds how many runs train at once and stops them all on shutdown.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from ..diagnostics import Monitor, find_layers
from ..errors import ChainruleError, DivergenceError
from ..memory import USABLE_FRACTION, available_memory, estimate_training_memory, format_bytes, release_memory
from ..metrics import accuracy, multilabel_scores
from ..runs import build
from ..train import TrainState, check_batches, fit, predict, prepare, score
from . import views
from .settings import Settings, SettingsError, check_loss

log = logging.getLogger("chainrule.dashboard")

SNAPSHOT_INTERVAL = 0.1  # seconds between snapshots while running (the charts' update rate)
MEASURE_INTERVAL = 0.4  # seconds between test-set, unit-health and picture measurements
MAX_STEPS = 200_000  # a run ends here (a forgotten tab does not train forever)
MAX_EPOCHS = 10**6
SERIES_POINTS = 1000  # points kept per chart line; older ones are thinned
HISTORY_COLUMNS = 200  # steps kept in the gradient-norm heat map; older ones are thinned
PROBE_ROWS = 256  # training rows the unit health is measured on
TEST_ROWS = 2000  # test rows measured (the first ones)
SCATTER_POINTS = 400  # data points drawn under a decision boundary or a curve
IMAGES = 24  # test images in the digit grid


class TooBusy(ChainruleError):
    """The server already trains as many runs, or holds as many sessions, as it allows (answered 429)."""


class _Stopped(Exception):
    """Raised at the gate to end cr.fit when the run is reset or the server stops."""


class Series:
    """A chart line of at most ``limit`` points: when full, every other point is dropped and
    from then on only every second new point is kept (then every fourth, ...)."""

    def __init__(self, limit: int = SERIES_POINTS):
        self.limit = limit
        self.x: list = []
        self.y: list = []
        self.stride = 1
        self.seen = 0

    def add(self, x: float, y: float | None) -> None:
        self.seen += 1
        if (self.seen - 1) % self.stride:
            return
        self.x.append(x)
        self.y.append(y)
        if len(self.x) >= self.limit:
            del self.x[1::2], self.y[1::2]
            self.stride *= 2

    def to_dict(self) -> dict:
        return {"step": self.x, "value": self.y}


@functools.lru_cache(maxsize=8)
def load_data(name: str, seed: int) -> Any:
    """``chainrule.data.load_dataset(name, seed)``, cached: runs share the arrays and never change them."""
    from ..data import load_dataset

    return load_dataset(name, seed=seed)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def layer_sizes(settings: Settings, data: Any) -> list:
    """The MLP's widths for ``settings`` on ``data``: inputs, ``depth`` hidden layers of ``width``, outputs."""
    return [data.X_train.shape[1]] + [settings.width] * settings.depth + [data.num_outputs]


def estimate_memory(settings: Settings) -> Any:
    """The memory a run of ``settings`` needs (:func:`chainrule.memory.estimate_training_memory`)."""
    d = load_data(settings.dataset, settings.seed)
    return estimate_training_memory(layer_sizes(settings, d), settings.batch_size, settings.optimizer, rows=len(d.X_train))


class Run:
    """One training run: builds the model from the settings, then trains it in a thread on command.

    Building raises :class:`~chainrule.errors.ChainruleError` (for instance a loss
    that cannot fit the data) before any thread starts.

    Args:
        settings: checked settings (see :func:`~chainrule.dashboard.settings.parse_settings`).
        run_id: a number unique in this server, sent with everything the run publishes.
        publish: ``publish(setup=json_text)`` or ``publish(snapshot=json_text)``.

    Example:
        >>> run = Run(parse_settings({"dataset": "xor"}), 1, print)
        >>> run.start("paused", steps=3)     # three steps, then wait
        >>> run.stop()
    """

    def __init__(self, settings: Settings, run_id: int, publish: Callable[..., None]):
        self.settings = s = settings
        self.id = run_id
        self.publish = publish
        self.data = d = load_data(s.dataset, s.seed)
        check_loss(s, d.task)
        config = s.to_config()
        built = build(config, d.X_train.shape[1], d.num_outputs)
        self.model, self.optimizer, self.loss_fn, self.loss_name = built.model, built.optimizer, built.loss_fn, config.loss
        y_train, y_test = built.targets(d.y_train), built.targets(d.y_test)  # one-hot rows for mse and bce on classes
        self.X_train, self.y_train, _ = prepare(self.model, self.loss_fn, d.X_train, y_train, d.task)
        self.X_test, self.y_test, _ = prepare(self.model, self.loss_fn, d.X_test[:TEST_ROWS], y_test[:TEST_ROWS], d.task, name="_test")
        check_batches(self.model, len(self.X_train), s.batch_size)  # before any thread: the page gets the reason
        self.labels_test = d.y_test[:TEST_ROWS]
        self.layers = find_layers(self.model)
        self.probe = self.X_train[:PROBE_ROWS]
        self.monitor = Monitor(probe=(self.probe, self.y_train[:PROBE_ROWS]), attach_to_history=False)
        self.picture = self._picture_kind()
        if self.picture == "boundary":
            self.grid = views.plane_grid(d.X_train)
        elif self.picture == "curve":
            lo, hi = float(d.X_train.min()), float(d.X_train.max())
            self.grid = np.linspace(lo, hi, views.CURVE_POINTS)
        self.setup_json = _dumps(self._setup())

        self.mode = "paused"  # running | paused | stopping | finished | error
        self.budget = 0  # steps allowed through the gate while paused
        self.error: str | None = None
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._main, name=f"chainrule-dashboard-run-{run_id}", daemon=True)
        self._shown_mode: str | None = None
        self._last_snapshot: dict | None = None
        self._state: Any = None
        self.loss_series = Series()
        self.test_loss = Series()
        self.test_metric = Series()
        self._grad_sum = np.zeros(len(self.layers))
        self._ratio_sum = np.zeros(len(self.layers))
        self._ratio_count = np.zeros(len(self.layers))
        self._grad_count = 0
        self._grad = [None] * len(self.layers)
        self._ratio = [None] * len(self.layers)
        self.grad_history: dict = {"step": [], "norms": []}  # per snapshot: the step and each layer's ||dL/dW||
        self._network: dict | None = None
        self._health: dict = {"saturated_fraction": [None] * len(self.layers), "dead_fraction": [None] * len(self.layers)}
        self._view: dict | None = None
        self._measured_at = -1
        self._metric: float | None = None
        self._t_snapshot = self._t_measure = 0.0
        self._rate_mark = (0, time.perf_counter())
        self._rate: float | None = None

    # ---- commands (from the web app's threads) ---------------------------------------
    def start(self, mode: str = "running", steps: int = 0) -> None:
        """Start the thread, running or paused with ``steps`` steps allowed through."""
        with self.cond:
            self.mode, self.budget = mode, steps
        self.thread.start()

    def resume(self) -> None:
        with self.cond:
            if self.mode == "paused":
                self.mode = "running"
                self.cond.notify_all()

    def pause(self) -> None:
        with self.cond:
            if self.mode == "running":
                self.mode = "paused"
                self.budget = 0
                self.cond.notify_all()

    def step(self, steps: int = 1) -> None:
        """Pause (if running) and let ``steps`` more steps through."""
        with self.cond:
            if self.mode in ("running", "paused"):
                self.mode = "paused"
                self.budget += steps
                self.cond.notify_all()

    def stop(self, timeout: float | None = 5.0) -> None:
        """End the run at its next step boundary and wait up to ``timeout`` seconds for its thread."""
        with self.cond:
            if self.mode in ("running", "paused"):
                self.mode = "stopping"
            self.cond.notify_all()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    @property
    def done(self) -> bool:
        """Its thread has run and ended (a run not yet started is not done)."""
        return self.thread.ident is not None and not self.thread.is_alive()

    @property
    def active(self) -> bool:
        """Running or paused (a Start with the same settings resumes it)."""
        return self.mode in ("running", "paused")

    # ---- cr.fit callbacks (in the run's thread) ----------------------------------------
    def on_train_begin(self, state: TrainState) -> None:
        self._state = state
        self._emit(state, measure=True)
        self._gate()

    def on_step_end(self, state: TrainState) -> None:
        last = self.monitor.last_step
        if last is not None:
            self._grad_sum += np.asarray(last["grad_norm"], dtype=np.float64)
            self._grad_count += 1
            for k, r in enumerate(last["update_ratio"]):
                if r is not None:
                    self._ratio_sum[k] += r
                    self._ratio_count[k] += 1
        self.loss_series.add(state.step, views.num(state.loss))
        if len(self.monitor.records) > 64:  # a long run on a small set closes many epochs; keep the first as baseline
            del self.monitor.records[1:-32]
        if state.step >= MAX_STEPS:
            with self.cond:
                self.mode = "finished"
            state.stop = True
        now = time.perf_counter()
        paced = self.mode != "running"
        if paced or now - self._t_snapshot >= SNAPSHOT_INTERVAL:
            self._emit(state, measure=paced or now - self._t_measure >= MEASURE_INTERVAL)
        if not state.stop:
            self._gate()

    # ---- internals ---------------------------------------------------------------------
    def _main(self) -> None:  # (fit silences NumPy's overflow warnings: a divergence is shown on the page)
        try:
            fit(
                self.model, self.loss_fn, self.optimizer, self.X_train, self.y_train,
                epochs=MAX_EPOCHS, batch_size=self.settings.batch_size, seed=self.settings.seed,
                callbacks=[self.monitor, self], progress=False, task=self.data.task,
            )  # fmt: skip
            self._finish("finished")
        except _Stopped:
            pass  # reset or shutdown: the session has moved on, nothing to publish
        except DivergenceError as e:
            self.monitor.divergence(e)
            self._finish("error", str(e))
        except Exception as e:  # shown on the page rather than lost in a thread
            log.exception("dashboard run %s failed", self.id)
            self._finish("error", f"training failed: {type(e).__name__}: {e}")

    def _finish(self, mode: str, error: str | None = None) -> None:
        with self.cond:
            if self.mode == "stopping":
                return
            self.mode, self.error = mode, error
        if self._state is not None:
            self._emit(self._state, measure=error is None)

    def _gate(self) -> None:
        while True:
            with self.cond:
                if self.mode in ("stopping", "finished"):
                    raise _Stopped
                if self.mode == "running":
                    return
                if self.budget > 0:
                    self.budget -= 1
                    return
                if self._shown_mode == self.mode:
                    self.cond.wait()
                    continue
            if self._last_snapshot is not None:  # the page still shows "running": say "paused"
                self._publish_snapshot(self._last_snapshot)

    def _emit(self, state: Any, measure: bool) -> None:
        now = time.perf_counter()
        if self._grad_count:
            self._grad = views.nums(self._grad_sum / self._grad_count)
            self._add_history(state.step, self._grad)
            self._ratio = [views.num(s / c) if c else None for s, c in zip(self._ratio_sum, self._ratio_count)]
            self._grad_sum[:] = 0.0
            self._ratio_sum[:] = 0.0
            self._ratio_count[:] = 0
            self._grad_count = 0
        step0, t0 = self._rate_mark
        if self.mode == "running" and now > t0 and state.step > step0:
            self._rate = views.num((state.step - step0) / (now - t0), 3)
        elif self.mode != "running":
            self._rate = None
        self._rate_mark = (state.step, now)
        if measure and self._measured_at != state.step:
            self._measure(state.step)
            self._t_measure = time.perf_counter()
        nb = max(state.batches_per_epoch, 1)
        snap = {
            "type": "snapshot",
            "run": self.id,
            "step": state.step,
            "epoch": views.num(state.step / nb, 4),
            "steps_per_second": self._rate,
            "loss": self.loss_series.to_dict(),
            "test_loss": self.test_loss.to_dict(),
            "test_metric": self.test_metric.to_dict(),
            "metric": self._metric,
            "layers": {"grad_norm": self._grad, "update_ratio": self._ratio, **self._health},
            "grad_history": self.grad_history,
            "network": self._network,
            "measured_at": self._measured_at,
            "view": self._view,
            "warnings": [w.message for w in self.monitor.warnings()],
        }
        self._publish_snapshot(snap)
        self._t_snapshot = now

    def _add_history(self, step: int, norms: list) -> None:
        """One column of the gradient-norm heat map; past HISTORY_COLUMNS every other old one goes."""
        h = self.grad_history
        h["step"].append(step)
        h["norms"].append(norms)
        if len(h["step"]) > HISTORY_COLUMNS:
            h["step"], h["norms"] = h["step"][::2], h["norms"][::2]

    def _publish_snapshot(self, snap: dict) -> None:
        mode = self.mode
        snap["state"] = mode
        snap["error"] = self.error
        self._last_snapshot = snap
        self._shown_mode = mode
        self.publish(snapshot=_dumps(snap))

    def _measure(self, step: int) -> None:
        """Test loss and metric, unit health on the probe, and the picture, at this step."""
        d = self.data
        out = predict(self.model, self.X_test)
        self.test_loss.add(step, views.num(score(self.loss_fn, out, self.y_test, d.task)["loss"]))
        metric = None
        if d.task == "multiclass":
            metric = accuracy(out, self.labels_test)
        elif d.task == "multilabel":  # bce's outputs are logits (0: probability 1/2); mse's are the probabilities
            metric = multilabel_scores(out, self.labels_test, threshold=0.0 if self.loss_name == "bce" else 0.5)["subset_accuracy"]
        if metric is not None:
            self._metric = views.num(metric)
            self.test_metric.add(step, self._metric)
        self._health = views.layer_health(self.model, self.layers, self.probe)
        self._network = views.network(self.model, self.layers, self.probe)
        if self.picture == "boundary":
            self._view = views.boundary(self.model, self.grid[0], self.grid[1], self.loss_name, d.num_outputs)
        elif self.picture == "curve":
            self._view = {"y": views.curve(self.model, self.grid)}
        elif self.picture == "images":
            self._view = views.image_predictions(out[:IMAGES], self.loss_name, d.task)
        self._measured_at = step

    def _picture_kind(self) -> str | None:
        d = self.data
        if d.image_shape is not None:
            return "images"
        if d.X_train.shape[1] == 2 and d.task == "multiclass":
            return "boundary"
        if d.X_train.shape[1] == 1 and d.task == "regression":
            return "curve"
        return None

    def _setup(self) -> dict:
        """What the page needs once per run: settings, shapes, names and the data the picture draws on."""
        d, s = self.data, self.settings
        setup = {
            "type": "setup",
            "run": self.id,
            "settings": s.to_dict(),
            "query": s.to_query(),
            "task": d.task,
            "loss": self.loss_name,
            "metric_name": {"multiclass": "accuracy", "multilabel": "subset accuracy"}.get(d.task),
            "sizes": self.model.sizes,
            "layers": [{"layer": l.index, "activation": l.activation} for l in self.layers],
            "train_rows": int(len(d.X_train)),
            "test_rows": int(len(self.X_test)),
            "picture": self.picture,
            "names": [str(n) for n in getattr(d, "names", None) or range(d.num_outputs)],
        }
        rng = np.random.default_rng(0)
        if self.picture == "boundary":
            n = len(d.X_test)
            take = np.sort(rng.permutation(n)[:SCATTER_POINTS])
            setup["grid"] = {"x": views.nums(self.grid[0]), "y": views.nums(self.grid[1])}
            setup["points"] = {"x": views.nums(d.X_test[take, 0]), "y": views.nums(d.X_test[take, 1]), "label": d.y_test[take].astype(int).tolist()}
            setup["num_classes"] = d.num_outputs
        elif self.picture == "curve":
            n = len(d.X_train)
            take = rng.permutation(n)[:SCATTER_POINTS]
            setup["grid"] = {"x": views.nums(self.grid)}
            setup["points"] = {"x": views.nums(d.X_train[take, 0]), "y": views.nums(np.asarray(d.y_train, dtype=np.float64).reshape(n, -1)[take, 0])}
        elif self.picture == "images":
            imgs = d.X_test[:IMAGES].astype(np.float64)
            lo, hi = float(d.X_test.min()), float(d.X_test.max())
            imgs = (imgs - lo) / (hi - lo if hi > lo else 1.0)
            setup["image_shape"] = list(d.image_shape)
            setup["images"] = [views.nums(im, 2) for im in imgs]
            setup["image_labels"] = [np.flatnonzero(np.asarray(t) >= 0.5).tolist() for t in d.y_test[:IMAGES]] if d.task == "multilabel" else d.y_test[:IMAGES].astype(int).tolist()
        return setup


class Session:
    """One browser tab: its current run and the latest setup and snapshot it published.

    The event stream polls it with a cursor (run id, version) and gets the
    messages the page has not seen: a setup when the run changed (or a reset
    when there is none), then the latest snapshot.
    """

    RESET = _dumps({"type": "reset"})

    def __init__(self, sid: str):
        self.id = sid
        self.lock = threading.Lock()  # guards what is published
        self.control = threading.Lock()  # one command at a time
        self.run: Run | None = None
        self.run_id: int | None = None
        self.setup: str | None = None
        self.snapshot: str | None = None
        self.version = 0
        self.consumers = 0
        self.last_seen = time.monotonic()

    def switch(self, run: Run | None) -> Run | None:
        """Make ``run`` the session's run (None: no run); returns the previous one."""
        with self.lock:
            old, self.run = self.run, run
            self.run_id = run.id if run is not None else None
            self.setup = run.setup_json if run is not None else None
            self.snapshot = None
            self.version += 1
        return old

    def publish(self, run_id: int, setup: str | None = None, snapshot: str | None = None) -> None:
        with self.lock:
            if run_id != self.run_id:
                return  # a replaced run's last words
            if setup is not None:
                self.setup = setup
            if snapshot is not None:
                self.snapshot = snapshot
            self.version += 1

    def poll(self, cursor: tuple | None) -> tuple:
        """The messages newer than ``cursor`` (None at first) and the new cursor."""
        with self.lock:
            out = []
            if cursor is None or cursor[0] != self.run_id:
                if self.setup is None:
                    out.append(self.RESET)
                else:
                    out.append(self.setup)
                    if self.snapshot is not None:
                        out.append(self.snapshot)
            elif cursor[1] != self.version and self.snapshot is not None:
                out.append(self.snapshot)
            return out, (self.run_id, self.version)

    def status(self) -> dict:
        run = self.run
        if run is None:
            return {"session": self.id, "run": None, "state": "idle", "settings": None, "query": None, "error": None}
        return {
            "session": self.id,
            "run": run.id,
            "state": run.mode,
            "settings": run.settings.to_dict(),
            "query": run.settings.to_query(),
            "error": run.error,
        }


class SessionManager:
    """The server's sessions: at most ``max_sessions`` tabs and ``max_runs`` runs alive at once,
    and the runs the sessions hold within ``memory_budget`` bytes by their memory estimate.

    Only Start and Step create a session; reading one (its state, its events) never does.
    A run's place is taken, under one lock, before it is built: concurrent Starts cannot
    pass the limits together. Each command returns the session's status (plain data for the page).
    """

    def __init__(self, max_sessions: int = 32, max_runs: int = 4, memory_budget: int | None = None):
        self.max_sessions = max_sessions
        self.max_runs = max_runs
        if memory_budget is None:
            free = available_memory()
            memory_budget = int(free * USABLE_FRACTION) if free is not None else 1 << 62
        self.memory_budget = memory_budget
        self.sessions: dict = {}
        self.lock = threading.Lock()
        self.closed = False
        self._ids = itertools.count(1)
        self._stopping: list = []  # runs told to stop by stop_all, joined by shutdown
        self._held: dict = {}  # a session's run (or a key while it is built) -> bytes of its memory estimate
        self._leaving: dict = {}  # runs let go of whose threads are still ending -> bytes

    def session(self, sid: str) -> Session:
        """The tab's session, created on first use (by Start and Step only)."""
        with self.lock:
            if self.closed:
                raise TooBusy("the dashboard server is shutting down")
            s = self.sessions.get(sid)
            if s is None:
                if len(self.sessions) >= self.max_sessions:
                    raise TooBusy(f"the server already holds {self.max_sessions} sessions; close a dashboard tab first")
                s = self.sessions[sid] = Session(sid)
            s.last_seen = time.monotonic()
            return s

    def find(self, sid: str) -> Session | None:
        """The tab's session if it exists (never creates one)."""
        with self.lock:
            s = self.sessions.get(sid)
            if s is not None:
                s.last_seen = time.monotonic()
            return s

    def live_runs(self) -> int:
        """Runs training or paused, and runs being built."""
        with self.lock:
            return self._live()

    def _live(self) -> int:
        self._leaving = {run: need for run, need in self._leaving.items() if run.alive}
        return sum(1 for place in self._held if not isinstance(place, Run) or not place.done) + len(self._leaving)

    def _reserve(self, settings: Settings) -> object:
        """Take a place for a run of ``settings`` (TooBusy when none is left); returns its key."""
        need = estimate_memory(settings).total
        if need > self.memory_budget:  # never fits, whatever the other tabs do
            raise SettingsError(
                f"this run needs about {format_bytes(need)} of memory, more than the {format_bytes(self.memory_budget)} "
                "the server's runs may hold: choose a smaller network or batch"
            )
        with self.lock:
            if self._live() >= self.max_runs:
                raise TooBusy(f"the server already trains {self.max_runs} networks; pause and reset one in another tab first")
            used = sum(self._held.values()) + sum(self._leaving.values())
            if used + need > self.memory_budget:
                raise TooBusy(
                    f"this run needs about {format_bytes(need)} of memory; the server's runs already hold "
                    f"{format_bytes(used)} of its {format_bytes(self.memory_budget)}: choose a smaller network or batch, "
                    "or reset a run in another tab"
                )
            key = object()
            self._held[key] = need
            return key

    def _release(self, run: Run | None) -> None:
        """Forget ``run`` (stopped, or being stopped) and give its place back; collect its memory."""
        if run is None:
            return
        with self.lock:
            need = self._held.pop(run, 0)
            if run.alive:  # still finishing its step: its memory counts until its thread ends
                self._leaving[run] = need
        if not run.alive:
            release_memory()  # the allocator would otherwise keep the run's arrays' pages

    def start(self, sid: str, settings: Settings, steps: int = 0) -> dict:
        """Start (or resume) training; with ``steps`` > 0, take that many steps and pause (Step)."""
        s = self.session(sid)
        with s.control:
            run = s.run
            if run is not None and run.active and run.settings == settings:
                if steps:
                    run.step(steps)
                else:
                    run.resume()
                return s.status()
            if run is not None:
                s.switch(None)
                run.stop()
                self._release(run)
            key = self._reserve(settings)
            try:
                rid = next(self._ids)
                run = Run(settings, rid, functools.partial(s.publish, rid))
            except BaseException:
                with self.lock:
                    self._held.pop(key)
                raise
            with self.lock:
                self._held[run] = self._held.pop(key)
            s.switch(run)
            run.start("paused" if steps else "running", steps)
            return s.status()

    def status(self, sid: str) -> dict:
        """The session's status; an idle one for a session that does not exist (none is created)."""
        s = self.find(sid)
        return s.status() if s is not None else Session(sid).status()

    def pause(self, sid: str) -> dict:
        s = self.find(sid)
        if s is None:
            return self.status(sid)
        with s.control:
            if s.run is not None:
                s.run.pause()
            return s.status()

    def reset(self, sid: str) -> dict:
        """Stop the tab's run and forget it (the page clears its charts)."""
        s = self.find(sid)
        if s is None:
            return self.status(sid)
        with s.control:
            run = s.switch(None)
            if run is not None:
                run.stop()
                self._release(run)
            return s.status()

    def close(self, sid: str) -> None:
        """The tab went away: stop its run and drop the session."""
        with self.lock:
            s = self.sessions.pop(sid, None)
        if s is not None:
            with s.control:
                run = s.switch(None)
            if run is not None:
                run.stop(timeout=None if self.closed else 5.0)
                self._release(run)

    def reap(self, idle_seconds: float) -> list:
        """Close the sessions nobody has watched or commanded for ``idle_seconds``; returns their ids."""
        now = time.monotonic()
        with self.lock:
            idle = [sid for sid, s in self.sessions.items() if s.consumers == 0 and now - s.last_seen > idle_seconds]
        for sid in idle:
            self.close(sid)
        return idle

    def stop_all(self) -> None:
        """Refuse new work and tell every run to stop, without waiting (safe in a signal handler)."""
        with self.lock:
            self.closed = True
            sessions = list(self.sessions.values())
            self.sessions.clear()
        for s in sessions:
            run = s.switch(None)
            if run is not None:
                self._stopping.append(run)
                run.stop(timeout=0)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop every run and wait up to ``timeout`` seconds for their threads (the server is going down)."""
        self.stop_all()
        deadline = time.monotonic() + timeout
        for run in self._stopping:
            run.thread.join(max(0.0, deadline - time.monotonic()))
        self._stopping = [run for run in self._stopping if run.alive]
