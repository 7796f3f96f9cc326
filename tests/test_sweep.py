"""chainrule.sweep and ``chainrule sweep``: grids of runs on local processes and on a real
Dask cluster, one results table, failed points recorded while the rest goes on."""

import csv
import io
import json

import pytest

from chainrule.errors import ChainruleError
from chainrule.sweep import check_sweep, expand, load_sweep, run_sweep

# small and quick: 1-hidden-layer nets, one epoch on the digits
SWEEP_TOML = """
[sweep]
name = "tiny"
seeds = [0, 1]

[base]
dataset = "digits"
epochs = 1
batch_size = 64
optimizer = "sgd"
layers = [16]

[grid]
activation = ["relu", "tanh"]
lr = [0.1, 1e20]
"""

SWEEP_YAML = """
sweep: {name: tiny, seeds: [0, 1]}
base: {dataset: digits, epochs: 1, batch_size: 64, optimizer: sgd, layers: [16]}
grid:
  activation: [relu, tanh]
  lr: [0.1, 1.0e+20]
"""


@pytest.fixture
def toml_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(SWEEP_TOML)
    return path


@pytest.fixture(scope="module")
def local_result():
    """The tiny sweep run here, in this process (jobs=1): the reference for the other backends."""
    import tomllib

    return run_sweep(check_sweep(tomllib.loads(SWEEP_TOML)), jobs=1)


def test_expand_is_every_combination_for_each_seed_in_file_order():
    config = {"sweep": {"seeds": [3, 4]}, "base": {"epochs": 2}, "grid": {"lr": [0.1, 0.01], "layers": [[8], [8, 8]]}}
    points = expand(config)
    assert len(points) == 2 * 2 * 2
    assert points[0] == {"epochs": 2, "lr": 0.1, "layers": [8], "seed": 3}
    assert points[1] == {"epochs": 2, "lr": 0.1, "layers": [8], "seed": 4}
    assert points[-1] == {"epochs": 2, "lr": 0.01, "layers": [8, 8], "seed": 4}
    assert expand({"base": {"epochs": 1}}) == [{"epochs": 1, "seed": 0}]  # no grid, default seed


@pytest.mark.parametrize(
    "config, message",
    [
        ({"grid": {"lr": 0.1}}, "grid.lr must be a non-empty list"),
        ({"grid": {"lr": []}}, "grid.lr must be a non-empty list"),
        ({"base": {"lr": 0.1}, "grid": {"lr": [0.1]}}, "both in \\[base\\] and in \\[grid\\]"),
        ({"base": {"seed": 1}}, "sweep.seeds"),
        ({"sweep": {"seeds": [0.5]}}, "seeds must be a non-empty list of integers"),
        ({"sweeps": {}}, "unknown sections"),
        ({"sweep": {"jobs": 2}}, "unknown keys \\['jobs'\\] in \\[sweep\\]"),
    ],
)
def test_bad_sweep_configs_are_refused_with_the_reason(config, message):
    with pytest.raises(ChainruleError, match=message):
        check_sweep(config)


def test_toml_and_yaml_files_give_the_same_sweep(tmp_path, toml_file):
    pytest.importorskip("yaml")
    yaml_file = tmp_path / "tiny.yaml"
    yaml_file.write_text(SWEEP_YAML)
    assert load_sweep(toml_file) == load_sweep(yaml_file)
    assert len(expand(load_sweep(toml_file))) == 8
    bad = tmp_path / "tiny.json"
    bad.write_text("{}")
    with pytest.raises(ChainruleError, match="expected a .toml, .yaml or .yml file"):
        load_sweep(bad)
    with pytest.raises(ChainruleError, match="does not exist"):
        load_sweep(tmp_path / "missing.toml")


def test_unknown_train_settings_stop_the_sweep_before_it_runs():
    with pytest.raises(ChainruleError, match="unknown train settings \\['learning_rate'\\]"):
        run_sweep({"grid": {"learning_rate": [0.1]}})


def test_failed_points_are_recorded_and_the_rest_goes_on(local_result):
    rows = local_result.rows
    assert [r["point"] for r in rows] == list(range(1, 9))
    failed = [r for r in rows if r["status"] == "failed"]
    # sgd at lr 1e20 diverges: with ReLU the loss becomes inf; tanh's bounded units keep it finite,
    # but far above a million times its start
    assert [(r["settings"]["activation"], r["settings"]["lr"]) for r in failed] == [("relu", 1e20)] * 2 + [("tanh", 1e20)] * 2
    assert all(r["error"].startswith("DivergenceError: the loss ") for r in failed)
    good = [r for r in rows if r["settings"]["lr"] == 0.1]
    assert all(r["status"] == "ok" and r["epochs"] == 1 for r in good)
    # one epoch of a 64-16-10 net: measured test accuracy 0.58-0.80
    assert all(r["test_accuracy"] > 0.45 and r["train_loss"] > 0 for r in good)
    assert rows[0]["settings"] == {"dataset": "digits", "epochs": 1, "batch_size": 64, "optimizer": "sgd", "layers": [16], "activation": "relu", "lr": 0.1, "seed": 0}


def test_results_table_csv_json_and_plot(local_result, tmp_path):
    paths = local_result.save(tmp_path / "out")
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert list(rows[0])[:5] == ["point", "status", "activation", "lr", "seed"]
    assert {"train_loss", "test_accuracy", "seconds", "error"} <= set(rows[0])
    assert [r["status"] for r in rows].count("failed") == 4
    assert float(rows[0]["test_accuracy"]) == local_result.rows[0]["test_accuracy"]
    data = json.loads(paths["json"].read_text())
    assert data["name"] == "tiny" and data["points"] == 8 and data["failed"] == 4
    assert data["config"]["grid"]["lr"] == [0.1, 1e20]
    assert data["rows"][2]["error"] == local_result.rows[2]["error"]
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_local_processes_give_the_same_results(local_result):
    import tomllib

    parallel = run_sweep(check_sweep(tomllib.loads(SWEEP_TOML)), jobs=2)
    assert parallel.comparable() == local_result.comparable()


@pytest.fixture
def dask_cluster():
    """A real dask.distributed cluster on 127.0.0.1: 2 worker processes, 1 thread each; always shut down."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.mark.slow
def test_dask_cluster_gives_the_same_results_as_the_local_run(dask_cluster, local_result):
    import tomllib

    address = dask_cluster.scheduler_address
    assert address.startswith("tcp://127.0.0.1:")
    seen = []
    remote = run_sweep(check_sweep(tomllib.loads(SWEEP_TOML)), dask=address, on_result=lambda i, row: seen.append(i))
    assert seen == list(range(8)) and "dask" in remote.backend
    assert remote.comparable() == local_result.comparable()
    assert len(dask_cluster.scheduler_info["workers"]) == 2


def test_bad_dask_address_is_a_clear_error():
    with pytest.raises(ChainruleError, match="tcp://HOST:PORT"):
        run_sweep({"base": {"epochs": 1}}, dask="localhost:8786")


# ---- the command line -------------------------------------------------------------------


def test_cli_sweep_writes_the_table_and_exits_1_on_failed_points(toml_file, tmp_path):
    from typer.testing import CliRunner

    from chainrule.cli import app

    out = tmp_path / "results"
    res = CliRunner().invoke(app, ["sweep", str(toml_file), "--out", str(out)])
    assert res.exit_code == 1, res.output
    assert "4 of 8 points failed" in res.output and "DivergenceError" in res.output
    assert "[8/8]" in res.output
    assert {p.name for p in out.iterdir()} == {"results.csv", "results.json", "summary.png"}

    dry = CliRunner().invoke(app, ["sweep", str(toml_file), "--dry-run"])
    assert dry.exit_code == 0 and "activation=tanh, lr=1e+20, seed=1" in dry.output


def test_cli_sweep_refuses_a_bad_file_in_one_line(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.toml"
    bad.write_text("[grid]\nlr = 0.1\n")
    proc = subprocess.run([sys.executable, "-m", "chainrule", "sweep", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and "grid.lr must be a non-empty list" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_help_texts_keep_their_section_names_and_speak_to_users():
    """rich would read [sweep], [base] and [grid] as markup and drop them; bench --help names no tracker issue."""
    from typer.testing import CliRunner

    from chainrule.cli import app

    sweep_help = CliRunner().invoke(app, ["sweep", "--help"], env={"COLUMNS": "200"}).output
    for section in ("[sweep]", "[base]", "[grid]"):
        assert section in sweep_help, sweep_help
    bench_help = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "200"}).output
    assert "target" in bench_help and "issue" not in bench_help.lower(), bench_help


@pytest.mark.parametrize("name", ["../../../somewhere", "/tmp/elsewhere", "a/b", "..", ".", "a\\b", "", 7])
def test_sweep_names_cannot_leave_the_output_folder(tmp_path, name):
    path = tmp_path / "escape.toml"
    path.write_text(SWEEP_TOML.replace('name = "tiny"', f"name = {json.dumps(name)}"))
    with pytest.raises(ChainruleError, match="sweep.name must be a plain folder name"):
        load_sweep(path)


def test_a_point_too_large_for_memory_fails_with_the_estimate_before_building():
    from chainrule.sweep import run_point

    row = run_point({"layers": [10**9], "epochs": 1})
    assert row["status"] == "failed" and row["error"].startswith("ChainruleError: this run needs about ")


def test_a_sweep_with_a_point_too_large_for_memory_is_refused_before_it_runs():
    with pytest.raises(ChainruleError, match=r"sweep point 2 \(layers \[1000000000\]\) needs about"):
        run_sweep({"base": {"epochs": 1}, "grid": {"layers": [[8], [10**9]]}})


def test_a_sweep_over_depth_skips_and_normalization(tmp_path):
    """The layers shorthand and the residual/norm/dropout settings are sweep keys like any other."""
    config = {
        "sweep": {"name": "deeper", "seeds": [0]},
        "base": {"dataset": "xor", "epochs": 1, "layers": "8x6", "dropout": 0.1},
        "grid": {"residual": [False, True], "norm": ["none", "layer"]},
    }
    assert len(expand(config)) == 4
    result = run_sweep(config, jobs=1)
    assert [r["status"] for r in result.rows] == ["ok"] * 4, [r.get("error") for r in result.rows]
    columns, rows = result.table()
    assert columns[2:4] == ["residual", "norm"] and [(row["residual"], row["norm"]) for row in rows] == [(False, "none"), (False, "layer"), (True, "none"), (True, "layer")]
    bad = {**config, "grid": {"norm": ["group"]}}
    assert "unknown norm 'group'" in run_sweep(bad, jobs=1).rows[0]["error"]
