"""Sweeps: a grid of training runs over settings and seeds, run in parallel by
joblib on local processes or on a Dask cluster, gathered into one table.

A sweep file (TOML; YAML of the same shape when PyYAML is installed)::

    [sweep]
    name = "activations"
    seeds = [0, 1, 2]          # every grid point runs once per seed

    [base]                     # settings that every point shares
    dataset = "digits"
    epochs = 5

    [grid]                     # each key lists its values; every combination is a point
    activation = ["sigmoid", "relu"]
    layers = [[64, 32, 10], [64, 32, 32, 10]]

The keys of ``base`` and ``grid`` are :class:`chainrule.runs.TrainConfig`
fields (any of them). Each point is one :func:`chainrule.runs.run`; a point
that raises is recorded as failed, with its error, and the others go on.

    >>> from chainrule.sweep import load_sweep, run_sweep
    >>> result = run_sweep(load_sweep("sweep.toml"), jobs=2)                  # local processes
    >>> result = run_sweep(config, dask="tcp://10.0.0.5:8786")               # a Dask cluster
    >>> result.save("sweeps/activations")   # results.csv, results.json, summary.png

The same engine, :func:`map_points`, runs any module-level function over a
list of settings, for the lab's sweeps.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import re
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .errors import ChainruleError
from .threads import limit_threads
from .validation import check_file

__all__ = ["SweepResult", "expand", "load_sweep", "map_points", "run_point", "run_sweep"]

SECTIONS = ("sweep", "base", "grid")
# A sweep's name becomes a folder under sweeps/: no separators, so it cannot leave that folder
SWEEP_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
# columns of a row that are not metrics, and are left out when two sweeps' results are compared
TIMING_COLUMNS = ("seconds",)


# ---- the sweep file -----------------------------------------------------------------


def load_sweep(path: str | os.PathLike) -> dict:
    """Read a sweep file (``.toml``, or ``.yaml``/``.yml`` with PyYAML) into a checked dict.

    Returns ``{"sweep": {"name": ..., "seeds": [...]}, "base": {...}, "grid": {...}}``.

    Example:
        >>> config = load_sweep("sweeps/activations.toml")
        >>> len(expand(config))   # points: grid combinations x seeds
    """
    path = Path(path)
    check_file(path, "sweep file", ChainruleError)
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ChainruleError(f"sweep file {str(path)!r} is not UTF-8 text: {e}") from None
    if suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, RecursionError) as e:
            raise ChainruleError(f"{path}: not valid TOML: {e or 'nested too deeply'}") from None
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ChainruleError(f"{path}: YAML sweep files need PyYAML (pip install pyyaml); or write the sweep in TOML") from None
        try:
            data = yaml.safe_load(text)
        except (yaml.YAMLError, RecursionError) as e:
            raise ChainruleError(f"{path}: not valid YAML: {e}") from None
    else:
        raise ChainruleError(f"sweep file {str(path)!r}: expected a .toml, .yaml or .yml file, got {suffix or 'no suffix'!r}")
    return check_sweep(data, source=str(path))


def check_sweep(data: Any, source: str = "sweep") -> dict:
    """The sweep config with defaults filled in; raises ChainruleError saying what is wrong and where.

    Every ``grid`` value must be a non-empty list (its candidate values),
    ``seeds`` a list of integers (default ``[0]``), and no setting may be both
    in ``base`` and ``grid``, nor ``seed`` anywhere but ``sweep.seeds``.
    """
    if not isinstance(data, dict):
        raise ChainruleError(f"{source}: expected a table with sections {', '.join(SECTIONS)}, got {type(data).__name__}")
    unknown = [k for k in data if k not in SECTIONS]
    if unknown:
        raise ChainruleError(f"{source}: unknown sections {unknown}; expected {', '.join(SECTIONS)}")
    sweep, base, grid = (data.get(k) or {} for k in SECTIONS)
    for name, section in (("sweep", sweep), ("base", base), ("grid", grid)):
        if not isinstance(section, dict):
            raise ChainruleError(f"{source}: [{name}] must be a table of settings, got {type(section).__name__}")
    extra = [k for k in sweep if k not in ("name", "seeds")]
    if extra:
        raise ChainruleError(f"{source}: unknown keys {extra} in [sweep]; expected name, seeds")
    seeds = sweep.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ChainruleError(f"{source}: sweep.seeds must be a non-empty list of integers, got {seeds!r}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ChainruleError(
                f"{source}: grid.{key} must be a non-empty list of values to try, got {values!r} "
                f"(a single value belongs in [base]; a list-valued setting is a list of lists: [[64, 32, 10]])"
            )
    both = sorted(set(base) & set(grid))
    if both:
        raise ChainruleError(f"{source}: {both} set both in [base] and in [grid]; keep each setting in one place")
    if "seed" in base or "seed" in grid:
        raise ChainruleError(f"{source}: give seeds as sweep.seeds = [0, 1, ...], not as a train setting")
    name = sweep.get("name", "sweep")
    if not isinstance(name, str) or not SWEEP_NAME.match(name) or name.strip(".") == "":
        raise ChainruleError(
            f"{source}: sweep.name must be a plain folder name of letters, digits, '.', '-' and '_' "
            f"(the results go to sweeps/NAME), not a path; got {str(name)[:80]!r}"
        )
    return {"sweep": {"name": name, "seeds": list(seeds)}, "base": dict(base), "grid": dict(grid)}


def expand(config: dict) -> list:
    """The sweep's points: every combination of the grid's values, for each seed, in file order.

    Each point is a dict of train settings: ``{**base, **combination, "seed": s}``.

    Example:
        >>> expand({"base": {"epochs": 2}, "grid": {"lr": [0.1, 0.01]}, "sweep": {"seeds": [0, 1]}})
        [{'epochs': 2, 'lr': 0.1, 'seed': 0}, {'epochs': 2, 'lr': 0.1, 'seed': 1}, {'epochs': 2, 'lr': 0.01, 'seed': 0}, ...]
    """
    config = check_sweep(config)
    grid, base, seeds = config["grid"], config["base"], config["sweep"]["seeds"]
    keys = list(grid)
    points = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        for seed in seeds:
            points.append({**base, **dict(zip(keys, combo)), "seed": seed})
    return points


# ---- running ----------------------------------------------------------------------------


def run_point(settings: dict) -> dict:
    """Train one point with :func:`chainrule.runs.run`; never raises.

    Returns ``{"status": "ok", <final metrics>, "epochs": ..., "seconds": ...}``,
    or ``{"status": "failed", "error": "TypeName: message", "traceback": ...}``.
    BLAS runs on one thread: the sweep's parallelism is across points (and a
    point's numbers do not depend on where it ran).
    """
    start = time.perf_counter()
    try:
        from .runs import TrainConfig, run

        with limit_threads(1):  # (fit reports an overflow once, as the point's DivergenceError)
            result = run(TrainConfig.from_dict(dict(settings)))
        row = {"status": "ok", **_final_metrics(result)}
        row["seconds"] = float(getattr(result, "seconds", time.perf_counter() - start))
        return row
    except Exception as e:  # a failed point is a result, not the end of the sweep
        return {
            "status": "failed",
            "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": "),
            "traceback": traceback.format_exc(limit=8),
            "seconds": time.perf_counter() - start,
        }


def _final_metrics(result: Any) -> dict:
    """A RunResult's final train and test metrics, flat: {"train_loss": ..., "test_accuracy": ...}, and its epochs."""
    out: dict = {}
    for split in ("train", "test"):
        for k, v in (result.metrics.get(split) or {}).items():
            if _is_number(v):
                out[f"{split}_{k}"] = float(v)
    out["epochs"] = len(result.history.epochs)
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def map_points(fn: Callable, points: Sequence[dict], jobs: int = 1, dask: str | None = None, on_result: Callable | None = None) -> list:
    """``[fn(p) for p in points]``, in order, run by joblib: on local processes, or on a Dask cluster.

    Args:
        fn: a module-level function (workers import it by name) of one dict.
        points: the arguments.
        jobs: local worker processes (joblib's loky backend); 1 runs here,
            in this process; -1 uses every core.
        dask: the address of a dask.distributed scheduler, e.g.
            ``"tcp://10.0.0.5:8786"``: the same calls go to its workers through
            joblib's Dask backend (``jobs`` is then ignored: the cluster decides).
        on_result: called with (index, result) as each result arrives, in order.

    Example:
        >>> map_points(run_point, expand(config), jobs=4)
    """
    from joblib import Parallel, delayed

    points = list(points)
    if not points:
        return []
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs == 0 or jobs < -1:
        raise ChainruleError(f"jobs must be a positive integer or -1 (every core), got {jobs!r}")
    results: list = []

    def collect(it: Iterable) -> list:
        for i, r in enumerate(it):
            results.append(r)
            if on_result is not None:
                on_result(i, r)
        return results

    calls = (delayed(fn)(p) for p in points)
    if dask is None:
        if jobs == 1:
            return collect(fn(p) for p in points)
        n = min(jobs, len(points)) if jobs > 0 else jobs
        return collect(Parallel(n_jobs=n, return_as="generator")(calls))
    import joblib

    client = _dask_client(dask)
    try:
        with joblib.parallel_config(backend="dask"):
            return collect(Parallel(n_jobs=-1, return_as="generator")(calls))
    finally:
        client.close()


def _dask_client(address: str) -> Any:
    """A dask.distributed Client connected to ``address``, with a clear error when that fails."""
    if not isinstance(address, str) or "://" not in address:
        raise ChainruleError(f"the Dask scheduler address must look like tcp://HOST:PORT, got {address!r}")
    try:
        from distributed import Client
    except ImportError:
        raise ChainruleError('--dask needs dask.distributed: pip install "dask[distributed]"') from None
    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError) as e:
        raise ChainruleError(f"could not reach the Dask scheduler at {address}: {e}") from None


def run_sweep(
    config: dict,
    jobs: int = 1,
    dask: str | None = None,
    out: str | os.PathLike | None = None,
    fn: Callable = run_point,
    on_result: Callable | None = None,
) -> "SweepResult":
    """Run every point of a sweep and gather the results into a :class:`SweepResult`.

    Args:
        config: from :func:`load_sweep` (or a dict of the same shape).
        jobs, dask: where the points run (see :func:`map_points`).
        out: a folder to write results.csv, results.json and summary.png into.
        fn: the point function (settings -> row dict with "status"); by default
            :func:`run_point`, one :func:`chainrule.runs.run` per point.
        on_result: called with (index, row) as each point finishes.

    Example:
        >>> result = run_sweep(load_sweep("sweep.toml"), jobs=2, out="sweeps/act")
        >>> [row["test_accuracy"] for row in result.ok]
    """
    config = check_sweep(config)
    points = expand(config)
    _check_settings(points)
    start = time.perf_counter()

    def row_of(i: int, r: dict) -> dict:
        return {"point": i + 1, "settings": points[i], **r}

    def report(i: int, r: dict) -> None:
        if on_result is not None:
            on_result(i, row_of(i, r))

    raw = map_points(fn, points, jobs=jobs, dask=dask, on_result=report)
    rows = [row_of(i, r) for i, r in enumerate(raw)]
    result = SweepResult(config, rows, seconds=time.perf_counter() - start, backend=f"dask {dask}" if dask else f"joblib jobs={jobs}")
    if out is not None:
        result.save(out)
    return result


def _check_settings(points: list) -> None:
    """Refuse setting names that TrainConfig does not have, and points too large for the
    memory, before anything runs (other bad values fail their own point)."""
    from .memory import check_training_memory
    from .runs import TrainConfig, estimate_memory

    known = TrainConfig.fields()
    unknown = sorted({k for p in points for k in p if k not in known})
    if unknown:
        raise ChainruleError(f"unknown train settings {unknown} in the sweep; expected any of {', '.join(known)}")
    for i, point in enumerate(points, 1):
        try:
            config = TrainConfig.from_dict(dict(point))
        except ChainruleError:
            continue
        check_training_memory(estimate_memory(config), f"sweep point {i} (layers {list(config.layers)})")


# ---- the results --------------------------------------------------------------------------


class SweepResult:
    """A finished sweep: one row per point, with its settings, status and final metrics.

    ``rows``: dicts with ``point`` (from 1), ``settings`` (the full train
    settings), ``status`` ("ok" or "failed"), the final metrics
    (``train_loss``, ``test_accuracy``, ...), ``epochs``, ``seconds`` and, for a
    failed point, ``error`` and ``traceback``. ``table()`` flattens them into
    the CSV's columns: point, status, the grid's keys, seed, metrics, seconds, error.
    """

    def __init__(self, config: dict, rows: list, seconds: float = 0.0, backend: str = ""):
        self.config = config
        self.rows = rows
        self.seconds = seconds
        self.backend = backend

    @property
    def name(self) -> str:
        return self.config["sweep"]["name"]

    @property
    def grid_keys(self) -> list:
        return list(self.config["grid"])

    @property
    def ok(self) -> list:
        return [r for r in self.rows if r["status"] == "ok"]

    @property
    def failed(self) -> list:
        return [r for r in self.rows if r["status"] != "ok"]

    def metric_names(self) -> list:
        """The metric columns, in the order first seen (train_* before test_*)."""
        skip = {"point", "settings", "status", "error", "traceback", *TIMING_COLUMNS}
        names: list = []
        for r in self.rows:
            for k in r:
                if k not in skip and k not in names:
                    names.append(k)
        return names

    def table(self) -> tuple:
        """(columns, rows of plain values): the flat table that results.csv holds."""
        columns = ["point", "status", *self.grid_keys, "seed", *self.metric_names(), "seconds", "error"]
        flat = []
        for r in self.rows:
            s = r["settings"]
            row = {"point": r["point"], "status": r["status"], **{k: s.get(k) for k in [*self.grid_keys, "seed"]}}
            row.update({k: r.get(k) for k in [*self.metric_names(), "seconds"]})
            row["error"] = r.get("error", "")
            flat.append(row)
        return columns, flat

    def to_csv(self) -> str:
        """The table as CSV text; list values as JSON (``[64, 32, 10]``), missing values empty."""
        columns, flat = self.table()
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        for row in flat:
            w.writerow({k: _cell(v) for k, v in row.items()})
        return buf.getvalue()

    def to_dict(self) -> dict:
        """Plain data for results.json: the config, where it ran, and every row in full."""
        return {
            "name": self.name,
            "config": self.config,
            "backend": self.backend,
            "seconds": self.seconds,
            "points": len(self.rows),
            "failed": len(self.failed),
            "columns": self.table()[0],
            "rows": self.rows,
        }

    def comparable(self) -> list:
        """The rows without timings (and tracebacks): equal for two runs of one sweep, wherever they ran."""
        drop = {*TIMING_COLUMNS, "traceback"}
        return [{k: v for k, v in r.items() if k not in drop} for r in self.rows]

    def main_metric(self) -> str | None:
        """The metric the summary plot shows: test accuracy if there is one, else the first test_, else any."""
        names = self.metric_names()
        for pick in ("test_accuracy", "test_subset_accuracy", "test_loss", "train_accuracy", "train_loss"):
            if pick in names:
                return pick
        tests = [n for n in names if n.startswith("test_")]
        return (tests or [n for n in names if n != "epochs"] or [None])[0]

    def plot(self, metric: str | None = None) -> Any:
        """A matplotlib Figure: per grid combination, each seed's final ``metric`` and their mean; failed points marked."""
        from matplotlib.figure import Figure

        metric = metric or self.main_metric()
        keys = self.grid_keys
        groups: dict = {}
        for r in self.rows:
            label = ", ".join(f"{k}={_label(r['settings'].get(k))}" for k in keys) or "all"
            groups.setdefault(label, []).append(r)
        labels = list(groups)
        fig = Figure(figsize=(8, 1.2 + 0.45 * len(labels)), layout="constrained")
        ax = fig.add_subplot()
        for y, label in enumerate(labels):
            values = [r[metric] for r in groups[label] if r["status"] == "ok" and _is_number(r.get(metric))]
            values = [v for v in values if math.isfinite(v)]
            failed = sum(r["status"] != "ok" for r in groups[label])
            if values:
                mean = sum(values) / len(values)
                ax.barh(y, mean, color="#4c72b0", alpha=0.6)
                ax.plot(values, [y] * len(values), "o", color="#1f3b63", markersize=4)
            if failed:
                ax.text(0, y, f"  {failed} failed", va="center", color="#c44e52", fontsize=9)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"final {metric} (bar: mean over seeds; dots: each seed)" if metric else "no metric")
        ok, n = len(self.ok), len(self.rows)
        ax.set_title(f"sweep {self.name}: {ok} of {n} points ok")
        return fig

    def save(self, out: str | os.PathLike) -> dict:
        """Write results.csv, results.json and summary.png into the folder ``out``; returns their paths."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        from .io import write_atomic

        out = Path(out)
        paths = {"csv": out / "results.csv", "json": out / "results.json", "plot": out / "summary.png"}
        write_atomic(paths["csv"], self.to_csv().encode("utf-8"))
        write_atomic(paths["json"], json.dumps(self.to_dict(), indent=1, default=_json_default, allow_nan=True).encode("utf-8"))
        fig = self.plot()
        FigureCanvasAgg(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
        write_atomic(paths["plot"], buf.getvalue())
        return paths

    def __repr__(self) -> str:
        return f"SweepResult({self.name!r}, {len(self.rows)} points, {len(self.failed)} failed, {self.backend})"


def _cell(v: Any) -> Any:
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v)
    return "" if v is None else v


def _label(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(_cell(v))


def _json_default(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)
