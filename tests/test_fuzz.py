"""Hostile input, drawn by hypothesis: corrupt model files and checkpoints, random command lines
and random dashboard requests. Whatever comes in, the answer is chainrule's own error (one line,
exit status 2, a 4xx JSON answer) or a correct result: never a traceback, never a 500. Memory
bounds: loading a file takes less than its size plus 1 MiB (traced); a refused command line
less than 256 MiB; the dashboard's runs stay within its memory budget.

Example counts are modest so that the whole file runs in well under a minute on a loaded
machine (about 11 s on two busy cores); FUZZ_EXAMPLES=1000 runs a longer search."""

import json
import shlex
import struct
import sys
import tracemalloc
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import chainrule as cr
from chainrule import nn, optim
from chainrule.errors import ChainruleError, ModelFileError

FUZZ = settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", "40")), deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
# what loading may take beyond the file's own size: the header's JSON and Python's bookkeeping
LOAD_OVERHEAD_BYTES = 1 << 20


# ---- model files and checkpoints: every region ---------------------------------------------------


@lru_cache(maxsize=None)
def _files() -> dict:
    """A saved model and a checkpoint (bytes), made once, with the regions of each."""
    import tempfile

    from chainrule.checkpoint import save_checkpoint
    from chainrule.io import read_header

    folder = Path(tempfile.mkdtemp(prefix="chainrule-fuzz-"))
    model = nn.MLP([6, 5, 4, 3], activation="prelu", generator=0)
    opt = optim.Adam(model.parameters(), lr=0.01)
    X = np.random.default_rng(0).random((16, 6), dtype=np.float32)
    cr.fit(model, "cross_entropy", opt, X, np.arange(16) % 3, epochs=1, batch_size=8, progress=False)
    out = {}
    for kind, path in (("model", cr.save(model, folder / "m.safetensors")),
                       ("checkpoint", save_checkpoint(folder / "c.safetensors", model, opt, config={"seed": 0}, epoch=1,
                                                      batch=0, step=2, history=[{"epoch": 1, "loss": 1.0}]))):
        header = read_header(path)
        regions = {"header length": (0, 8), "header": (8, header.data_start)}
        for name, t in header.tensors.items():
            regions[f"tensor {name}"] = (header.data_start + t.start, header.data_start + t.end)
        out[kind] = (path.read_bytes(), regions, header)
    out["model_object"] = model
    return out


def _load(kind: str, path: Path):
    from chainrule.checkpoint import load_checkpoint

    return cr.load(path) if kind == "model" else load_checkpoint(path).model


@FUZZ
@given(
    kind=st.sampled_from(["model", "checkpoint"]),
    region_index=st.integers(0, 100),
    where=st.floats(0, 1, exclude_max=True),
    change=st.one_of(st.integers(1, 255).map(lambda x: ("xor", x)), st.just(("cut", 0)), st.binary(min_size=1, max_size=64).map(lambda b: ("add", b))),
)
def test_corrupt_files_are_refused_or_load_exactly(tmp_path_factory, kind, region_index, where, change):
    raw, regions, header = _files()[kind]
    names = sorted(regions)
    lo, hi = regions[names[region_index % len(names)]]
    offset = lo + int(where * (hi - lo))
    how, value = change
    if how == "xor":
        data = bytearray(raw)
        data[offset] ^= value
        data = bytes(data)
    elif how == "cut":
        data = raw[:offset]
    else:
        data = raw[:offset] + value + raw[offset:]
    path = tmp_path_factory.mktemp("fuzz") / "bad.safetensors"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        loaded = _load(kind, path)
    except ModelFileError as e:
        loaded = None
        assert str(e) and "\n" not in str(e) and "bad.safetensors" in str(e)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < len(data) + LOAD_OVERHEAD_BYTES
    if loaded is not None:  # a change the format tolerates (say, inside a JSON string): the weights are the saved ones
        original = _files()["model_object"]
        for (name, a), (_, b) in zip(original.state_dict().items(), loaded.state_dict().items()):
            assert np.array_equal(a, b), name


@FUZZ
@given(arch=st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(["type", "config", "layers", "sizes", "activation", "in_features", "out_features", "x"]), children, max_size=4),
    max_leaves=20,
))
def test_random_architectures_never_build_more_than_the_file_holds(tmp_path_factory, arch):
    from chainrule.io import read_safetensors, write_safetensors

    raw, _, _ = _files()["model"]
    folder = tmp_path_factory.mktemp("arch")
    (folder / "m.safetensors").write_bytes(raw)
    arrays, meta = read_safetensors(folder / "m.safetensors")
    for candidate in (arch, {"type": "MLP", "config": arch}, {"type": "Sequential", "layers": arch}):
        path = folder / "bad.safetensors"
        write_safetensors(path, arrays, {**meta, "architecture": json.dumps(candidate)})
        tracemalloc.start()
        try:
            cr.load(path)
        except ModelFileError as e:
            assert "\n" not in str(e)
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak < path.stat().st_size + LOAD_OVERHEAD_BYTES


# ---- the command line: random arguments for every command -----------------------------------------


def _command_options() -> dict:
    """Each command's option names, from the command line's own definition."""
    import typer

    from chainrule.cli import app

    group = typer.main.get_command(app)
    out = {}
    for name, command in group.commands.items():
        names = [o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")]
        out[name] = sorted(set(names) - {"--host"})  # host names are resolved by the system, perhaps over the network
    return out


COMMANDS = _command_options()
WORDS = ["", "0", "-1", "1", "3", "1e308", "-1e308", "nan", "inf", "1e9", "2.5", "..", ".", "/", "/dev/null", "-", "--",
         "digits", "xor", "relu", "adam", "100000000,100000000", "64,0", "a,b", "5m", "2e", "{}", "[]", "é", "\t"]
token = st.one_of(st.sampled_from(WORDS), st.text(max_size=12), st.integers().map(str), st.floats().map(repr))


@pytest.fixture
def no_heavy_work(monkeypatch, tmp_path):
    """Arguments that pass every check would start real work (training, the lab, benchmarks, a
    server): here that work is replaced by a chainrule error, so each call ends at once."""
    import chainrule.bench
    import chainrule.bench.curves
    import chainrule.dashboard.app
    import chainrule.lab
    import chainrule.runs
    import chainrule.sweep

    def skipped(*args, **kwargs):
        raise ChainruleError("(fuzz) the work itself is skipped")

    for module, name in ((chainrule.runs, "build_model"), (chainrule.lab, "run_lab"), (chainrule.bench, "run_benchmark"),
                         (chainrule.bench.curves, "run_curves"),
                         (chainrule.sweep, "run_sweep"), (chainrule.dashboard.app, "serve")):
        monkeypatch.setattr(module, name, skipped)
    monkeypatch.chdir(tmp_path)


def _run_cli(args: list, monkeypatch, capsys) -> tuple:
    from chainrule.cli import main

    monkeypatch.setattr(sys, "argv", ["chainrule", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@FUZZ
@given(command=st.sampled_from(sorted(COMMANDS)), data=st.data())
def test_random_command_lines_end_in_status_0_or_2_without_a_traceback(no_heavy_work, monkeypatch, capsys, command, data):
    options = COMMANDS[command]
    tokens = data.draw(st.lists(st.one_of(st.sampled_from(options) if options else token, token), max_size=6))
    _check_command_line([command, *tokens], monkeypatch, capsys)


@pytest.mark.parametrize("args", [  # the failures that were found by hand, first
    ["train", "--layers", "100000000,100000000"],
    ["train", "--layers", "2000000,2000000"],
    ["predict", ".", "--input", "/dev/null"],
    ["evaluate", "/dev/null"],
    ["sweep", "/dev/null"],
], ids=shlex.join)
def test_known_hostile_command_lines(no_heavy_work, monkeypatch, capsys, args):
    _check_command_line(args, monkeypatch, capsys)


# what one refused command line may take: the data set, the modules it imports, Python's bookkeeping
CLI_MEMORY_BYTES = 256 << 20


def _check_command_line(args: list, monkeypatch, capsys) -> None:
    command, *tokens = args
    tracemalloc.start()
    try:
        code, out, err = _run_cli([command, *tokens], monkeypatch, capsys)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    shown = shlex.join([command, *tokens])
    assert peak < CLI_MEMORY_BYTES, (shown, peak)
    assert code in (0, 2), (shown, code, err)  # a sweep's failed points (status 1) cannot happen with the work skipped
    assert "Traceback" not in out + err, shown
    if code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, (shown, err)


# ---- the dashboard: random JSON for every endpoint -------------------------------------------------

json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=16),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
SETTING_NAMES = ["dataset", "depth", "width", "activation", "init", "bias_init", "loss", "optimizer", "lr", "batch_size", "seed"]
settings_body = st.dictionaries(st.sampled_from(SETTING_NAMES), json_value | st.sampled_from(["xor", "1", "3", "0.5", "relu", "sgd"]), max_size=5)


@pytest.fixture(scope="module")
def dashboard():
    pytest.importorskip("starlette")
    pytest.importorskip("plotly")
    from starlette.testclient import TestClient

    from chainrule.dashboard import create_app
    from chainrule.dashboard.worker import SessionManager

    manager = SessionManager(max_sessions=8, max_runs=1, memory_budget=64 << 20)
    with TestClient(create_app(manager)) as client:
        yield client, manager


@FUZZ
@given(
    endpoint=st.sampled_from(["start", "step", "pause", "reset", "close", "state", "events", "graph", "settings"]),
    sid=st.one_of(st.sampled_from(["fuzz-session-1", "fuzz-session-2", "fuzz-session-3"]), st.text(min_size=1, max_size=70)),
    body=st.one_of(
        settings_body.map(json.dumps), json_value.map(json.dumps), st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
        st.sampled_from([10, 1_000, 30_000]).map(lambda n: "[" * n + "]" * n),  # nested past any stack
        st.integers(60_000, 300_000).map(lambda n: " " * n + "{}"),  # past the body cap
    ),
    query=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
)
@example(endpoint="start", sid="fuzz-session-1", body="[" * 30_000 + "]" * 30_000, query={})  # the known failures first
@example(endpoint="step", sid="fuzz-session-1", body=" " * 300_000, query={})
@example(endpoint="state", sid="fuzz-session-9", body="", query={})
def test_random_requests_get_json_answers_and_never_a_500(dashboard, endpoint, sid, body, query):
    client, manager = dashboard
    base = f"/api/sessions/{quote(sid, safe='')}"
    if endpoint == "settings":
        r = client.get("/api/settings", params=query)
    elif endpoint in ("state", "graph"):
        r = client.get(f"{base}/{endpoint}", params=query)
    elif endpoint == "events":
        r = client.get(f"{base}/events", params={**query, "limit": query.get("limit", "1")})
    else:
        r = client.post(f"{base}/{endpoint}", content=body.encode("utf-8", "surrogatepass"))
    assert r.status_code in (200, 400, 404, 405, 413, 429), (endpoint, sid, body, r.status_code, r.text[:200])
    if r.status_code != 200 or endpoint != "events":
        assert r.headers["content-type"] == "application/json"
        if r.status_code != 200:
            assert r.json()["error"]
    for s in list(manager.sessions):  # keep the server small: at most one run at a time, closed at once
        manager.close(s)
    assert manager.live_runs() == 0 and sum(manager._held.values()) <= manager.memory_budget
