"""The lab: every experiment in --quick mode asserts its claim with the margins measured, and the report.

One quick run of all eleven experiments (about 90 s on two busy cores) is shared by the
tests through a module-scoped fixture. Where a claim did not hold on the quick
settings, the test asserts what was measured, and that the verdict says so.
"""

import base64
import html
import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from chainrule import lab
from chainrule.lab import EXPERIMENTS, HELD, NOT_HELD, PARTLY
from chainrule.lab.common import Result, jsonable, parallel_map

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab-report")
    start = time.perf_counter()
    results = lab.run_lab(quick=True, out=out, jobs=2, seed=0)
    quick_seconds.append(time.perf_counter() - start)
    return {r.name: r for r in results}, out


quick_seconds: list = []  # the wall time of the quick lab, as `chainrule lab --quick` takes it on two cores


def test_the_readme_states_the_quick_lab_time_that_it_takes(quick):
    """Not a speed test (benchmarks do that): the README's number must not be off by more than 2.5x either way."""
    from test_readme import QUICK_LAB, readme_number

    stated, measured = readme_number(QUICK_LAB), quick_seconds[0]
    assert stated / 2.5 <= measured <= stated * 2.5, f"the README says about {stated:.0f} s; this run took {measured:.0f} s"


def checks(r: Result) -> dict:
    return {c.statement: c.held for c in r.checks}


def test_every_experiment_ran_with_claim_figures_tables_and_a_computed_verdict(quick):
    results, _ = quick
    assert list(results) == list(EXPERIMENTS)
    for name, r in results.items():
        assert r.error is None, f"{name}: {r.error}"
        assert r.claim == EXPERIMENTS[name].claim and r.quick
        assert r.checks and r.figures and r.tables, name
        held = [c.held for c in r.checks]
        assert r.verdict == (HELD if all(held) else PARTLY if any(held) else NOT_HELD)
        for f in r.figures:
            assert f.png.startswith(b"\x89PNG\r\n\x1a\n") and len(f.png) > 5_000


def test_single_weight(quick):
    r = quick[0]["single-weight"]
    runs = r.numbers["runs"]
    assert r.verdict == HELD
    assert r.numbers["fraction_minus_slope_points_to_minimum"] == 1.0
    assert runs["smooth"]["crossings"] == 0 and runs["smooth"]["loss_decreased_every_step"]
    assert runs["oscillating"]["crossings"] == r.settings["steps"]
    for kind in ("smooth", "oscillating"):
        assert runs[kind]["final_distance"] < 2e-3  # measured 1.4e-3 from 3, in 15 steps
    assert runs["diverging"]["final_distance"] > 10 * runs["diverging"]["initial_distance"]  # measured x15.4
    for run in runs.values():  # the distance to w* shrinks by |1 - lr L''| per step, exactly for a parabola
        assert run["distance_ratio_per_step"] == pytest.approx(run["theory_ratio"], rel=1e-9)


def test_backprop(quick):
    r = quick[0]["backprop"]
    three = r.numbers["three_ways"]
    assert r.verdict == HELD
    assert three["max_abs_hand_vs_autograd"] < 1e-15  # measured 2.8e-17
    assert three["max_abs_hand_vs_differences"] < 1e-9 and three["max_abs_autograd_vs_differences"] < 1e-9  # measured 1.9e-10
    paths = r.numbers["path_enumeration"]
    assert paths["max_abs_paths_vs_backprop"] < 1e-15
    assert paths["products_enumerated"] == paths["naive_products"] > 5 * paths["backprop_products"]
    assert len(set(r.numbers["backprop_added_per_layer"][1:])) == 1  # linear in depth
    assert min(r.numbers["naive_growth_per_layer"]) >= 3  # at least the width per layer: measured 3.56 at the least
    deepest = r.numbers["by_depth"][-1]
    assert deepest["naive_products"] > 100 * deepest["backprop_products"]
    # the pictured network: its graph's edges that carry a gradient are the products backprop counts
    pictured = r.numbers["pictured_network"]
    assert pictured["edges_with_gradient"] == pictured["backprop_products"] == 24
    assert pictured["paths"] == 9 and pictured["naive_products"] == 63
    (page,) = r.pages
    assert page.name == "graph" and "24 edges" in page.caption and "9 paths" in page.caption
    assert "chainruleGraph.player" in page.html


def test_scalar_graph_counts_match_the_layered_formula():
    from chainrule.lab.backprop import count_products, scalar_network

    for depth, width in ((1, 2), (3, 3), (4, 2), (2, 5)):
        c = count_products(*scalar_network(depth, width))
        # a neuron with n inputs: n products w * a (an edge to w, and to a unless a is the input),
        # n - 1 sums and the bias sum (two edges each), and its activation if hidden (one edge)
        sizes = [2] + [width] * depth + [1]
        edges = sum(n_out * (3 * n_in + (n_in if l > 0 else 0) + (1 if l < depth else 0))
                    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])))
        assert c["backprop_products"] == edges + 2  # and (y - 0.5) ** 2: one edge each


def test_activations(quick):
    r = quick[0]["activations"]
    a = r.numbers["activations"]
    assert r.verdict == HELD
    assert 0.25 - 1e-12 <= a["sigmoid"]["max_derivative"] <= 0.25 and a["sigmoid"]["argmax_derivative"] == 0.0
    assert r.numbers["sigmoid_max_derivative_beyond_5"] < 0.0067  # sigmoid'(5) = 0.00665
    assert abs(a["tanh"]["mean_output_on_standard_normal"]) < 0.01 and a["tanh"]["f_at_0"] == 0.0
    assert abs(a["sigmoid"]["mean_output_on_standard_normal"] - 0.5) < 0.01
    assert r.numbers["tanh_minus_2_sigmoid_2x_plus_1"] < 1e-12
    assert a["relu"]["min_derivative_positive_side"] == 1.0 and a["relu"]["min_derivative_negative_side"] == 0.0
    assert a["leaky_relu"]["min_derivative_negative_side"] == pytest.approx(0.01)
    assert a["prelu"]["min_derivative_negative_side"] == pytest.approx(0.25)
    assert a["elu"]["min_derivative_negative_side"] == pytest.approx(np.exp(-6), rel=1e-3)
    assert max(x["max_abs_autograd_vs_formula"] for x in a.values()) < 1e-12
    # beyond the lesson, beside the six: GELU and SiLU, with their measured slopes
    assert {"gelu", "silu"} <= set(a) and any("beyond the lesson" in row[0] for t in r.tables for row in t.rows)
    assert a["gelu"]["max_derivative"] == pytest.approx(1.1289, abs=1e-3) and a["silu"]["max_derivative"] == pytest.approx(1.0998, abs=1e-3)
    assert a["gelu"]["min_derivative_negative_side"] == pytest.approx(-0.1289, abs=1e-3)


def test_vanishing_gradients(quick):
    r = quick[0]["vanishing-gradients"]
    ratio = r.numbers["init_first_over_last"]
    assert ratio["sigmoid/10"] < 1e-5 and ratio["sigmoid/20"] < 1e-11  # measured 8.0e-7 and 4.2e-13
    assert ratio["sigmoid/2"] > ratio["sigmoid/5"] > ratio["sigmoid/10"] > ratio["sigmoid/15"] > ratio["sigmoid/20"]
    for act in ("tanh", "relu", "leaky_relu", "elu"):
        assert 0.3 < ratio[f"{act}/20"] < 3  # measured 1.07 to 1.91
    during = r.numbers["training_first_over_last"]
    assert during["sigmoid"]["grad_norm"] < 1e-5 and during["sigmoid"]["update_ratio"] < 1e-5  # measured 1e-6, 6e-7
    assert during["relu"]["update_ratio"] > 0.1
    best = r.numbers["deep_best_accuracy"]
    assert best["sigmoid"] < 0.15 and best["relu"] > 0.7 and best["tanh"] > 0.7  # measured 0.10, 0.84, 0.88
    # measured: with Xavier initialization tanh's gradient did not vanish (first/last 1.9 at init,
    # 3.8 in training; its units' mean slope 0.71, none saturated), so the lesson's "tanh suffers
    # too" did not hold on these settings, and the verdict says so
    assert during["tanh"]["grad_norm"] > 1 and ratio["tanh/20"] > 1
    tanh_health = r.numbers["last_epoch_mean_derivative_and_saturated_fraction"]["tanh"]
    assert tanh_health[0] > 0.5 and tanh_health[1] < 0.05
    assert not checks(r)["tanh, also a saturating activation, suffers from the vanishing gradient too"]
    assert sum(not c.held for c in r.checks) == 1 and r.verdict == PARTLY
    # at 20 hidden layers: ELU fails from the learning rate, ReLU from its start (measured, seed 0:
    # ReLU 0.533 / 0.582 / 0.822 at SGD 0.01 / SGD 0.003 / Adam, ELU 0.451 / 0.929 / 0.896; ReLU's
    # last hidden layer at init has cosine 0.996 between digits, 28% of its units dead)
    deep = r.numbers["deepest"]
    acc, start = deep["accuracy"], deep["start"]
    assert acc["elu/SGD lr 0.003"] > acc["elu/SGD lr 0.01"] + 0.3
    assert acc["relu/SGD lr 0.003"] < acc["relu/SGD lr 0.01"] + 0.15 and acc["relu/Adam lr 0.001"] > 0.7
    assert start["relu"]["input_similarity"] > 0.98 and start["relu"]["dead_at_init"] > 0.15
    assert 0.5 < start["relu"]["first_over_last"] < 2  # no vanishing, no exploding
    assert any("Why ReLU and ELU fall behind tanh" in n for n in r.notes)


def test_dying_relu(quick):
    r = quick[0]["dying-relu"]
    adam = {b["activation"]: b for b in r.numbers["bias_kill"] if b["optimizer"] == "adam"}
    relu = adam["relu"]
    assert relu["dead_start"] == [1.0, 1.0] and relu["dead_end"] == [1.0, 1.0]
    assert relu["grad_norm_start"][:2] == [0.0, 0.0]
    assert all(g == 0.0 for epoch in relu["monitor_grad_norm"] for g in epoch[:-1])
    assert relu["final_accuracy"] < 0.15 and abs(relu["loss"][-1] - relu["loss"][0]) < 1e-3
    for act in ("leaky_relu", "prelu", "elu"):  # measured 0.87, 0.92, 0.93
        assert adam[act]["grad_norm_start"][0] > 0
        assert adam[act]["final_accuracy"] > 0.8 and max(adam[act]["inactive_end"]) < 1.0
        # one definition of dead: units below zero under the bias still pass back a gradient, so none is dead
        # (the lab used to count ELU's 95-100% below-zero units as dead)
        if act == "elu":  # measured: 0% and 4.7% dead (pushed below -4.6) of the units below zero
            assert max(adam[act]["dead_start"]) < 0.1 and min(adam[act]["inactive_start"]) > 0.9
        else:
            assert adam[act]["dead_start"] == [None, None]  # Leaky ReLU and PReLU cannot die
    killed = [x for x in r.numbers["learning_rate_kill"] if x["activation"] == "relu"]
    assert all(x["dead_after_burst"][0] > 0.5 for x in killed)  # measured 64% of layer 1
    assert all(x["first_layer_still_inactive"] == x["first_layer_inactive_after_burst"] for x in killed)
    assert all(x["dead_after_burst"] == x["inactive_after_burst"] for x in killed)  # for a ReLU, below zero is dead
    # measured: after the too-large learning rate the alternatives did not all recover
    # (PReLU diverged, ELU saturated), so that part of the claim did not hold on these settings
    rec = r.numbers["learning_rate_kill_recovered"]
    assert rec["prelu"]["diverged"] == 1 and rec["elu"]["recovered"] == 0
    assert not checks(r)["Under the same too-large learning rate, Leaky ReLU, PReLU and ELU recover"]
    assert r.verdict == PARTLY
    assert r.numbers["prelu_mean_abs_slope_change"] > 0.05  # measured 0.10


def test_digit_losses(quick):
    r = quick[0]["digit-losses"]
    n = r.numbers
    assert r.verdict == HELD
    assert n["classifier_accuracy"] > 0.95 and n["regressor_accuracy"] < 0.65  # measured 0.969 and 0.502
    b = n["blends"]
    assert 2.0 <= b["median_regressor_output"] <= 3.5  # measured 2.52
    assert b["fraction_output_between_1_and_5"] > 0.9
    assert b["classifier_mean_p3"] < 1e-2 and b["classifier_mean_p0_plus_p6"] > 0.9
    assert all(2.5 <= x["regressor_output"] < 3.5 and x["label"] in (0, 6) for x in n["real_zero_or_six_called_three"])


def test_soft_labels(quick):
    r = quick[0]["soft-labels"]
    hard, soft = r.numbers["mean_over_seeds"]["0.0"], r.numbers["mean_over_seeds"]["0.1"]
    assert soft["accuracy"] >= hard["accuracy"] - 0.01  # measured 0.984 against 0.979
    assert soft["mean_confidence"] < hard["mean_confidence"] - 0.05  # measured 0.85 against 0.97
    # measured: the one-hot network was already calibrated, so smoothing made it under-confident
    # and the ECE rose; the report says so and the claim's calibration part did not hold
    assert abs(hard["overconfidence"]) < 0.03 and soft["overconfidence"] < -0.05
    assert soft["ece"] > hard["ece"] + 0.05  # measured 0.136 against 0.018
    assert not checks(r)["... which lowers the expected calibration error"]
    assert r.verdict == PARTLY and any("under-confident" in n for n in r.notes)


def test_multi_label(quick):
    r = quick[0]["multi-label"]
    s = r.numbers["test_scores"]
    sig = s["sigmoids + BCE, threshold 0.5"]
    soft = next(v for k, v in s.items() if "best on train" in k)
    assert r.verdict == HELD
    assert sig["subset_accuracy"] > soft["subset_accuracy"] + 0.03 and sig["micro_f1"] > soft["micro_f1"] + 0.01
    p = [v["softmax_mean_p_present"] for k, v in sorted(r.numbers["by_number_of_objects"].items()) if int(k) > 0]
    assert p[0] > 2 * p[-1]
    # both heads overfit, and the lab names it (measured: sigmoids 0.639 train, 0.262 test; softmax 0.635, 0.190)
    for train, test in r.numbers["train_and_test_subset_accuracy"].values():
        assert train > test + 0.25
    assert any(n.startswith("Both heads overfit") for n in r.notes)
    assert "nan" not in json.dumps([t.rows for t in r.tables])  # no object present: a dash, not a nan


def test_cross_entropy_asymmetry(quick):
    r = quick[0]["cross-entropy-asymmetry"]
    assert r.verdict == HELD
    ex = {e["example"]: e for e in r.numbers["worked_examples"]}
    assert ex["one-hot target, confident right prediction"]["H_p_q"] == pytest.approx(-np.log(0.7))
    assert ex["one-hot target, confident right prediction"]["H_q_p"] == np.inf
    assert ex["two soft distributions"]["H_p_q"] != pytest.approx(ex["two soft distributions"]["H_q_p"], abs=0.05)
    assert r.numbers["random_pairs"]["fraction_H_pq_differs_from_H_qp"] == 1.0
    assert r.numbers["one_hot"]["fraction_H_q_p_infinite"] == 1.0 and r.numbers["one_hot"]["fraction_H_p_q_finite"] == 1.0
    assert r.numbers["log_on_prediction"]["gradient_vs_softmax_minus_target"] < 1e-12


def test_universal_approximation(quick):
    r = quick[0]["universal-approximation"]
    sine = r.numbers["sine_best_mse_by_width"]
    assert sine["128"] < 1e-4 and sine["1"] > 0.1  # measured 1.5e-5 and 0.16
    for x in r.numbers["representation"]:
        assert x["deep_max_error"] < 1e-12 and x["one_layer_max_error"] < 1e-12
        assert x["deep_units"] == 2 * x["K"] and x["one_layer_lower_bound"] == 2 ** x["K"] - 1
    t = r.numbers["trained"]
    # measured: 4 x 16 (64 units) reached 0.039, one layer of 256 units 0.041; the narrowest deep
    # network, which can represent the sawtooth exactly, learned nothing (0.084, the variance)
    assert t["deep_mse_by_width"]["16"] < 1.25 * t["best_one_layer_mse"]
    assert t["deep_mse_by_width"]["2"] > 0.07
    held = checks(r)
    trained = "Trained by gradient descent, a deep narrow network reaches the best one-layer error with far fewer units (at most half)"
    fewest = t["deep_units_reaching_it"]
    assert held[trained] == (fewest is not None and 2 * fewest <= t["best_one_layer_units"])


def test_going_deeper(quick):
    r = quick[0]["going-deeper"]
    by = {(x["activation"], x["variant"], x["depth"]): x for x in r.numbers["runs"]}
    deep = r.settings["depths"][-1]
    assert deep == 20 and r.settings["steps"] == 150 and len(by) == 16
    # measured (quick, seed 0): a plain 20-layer sigmoid network stays at chance (0.098) with a first/last
    # gradient ratio of 9e-13; with skips the ratio is 1.1-1.9 and it reaches 0.83-0.94
    plain = by[("sigmoid", "plain", deep)]
    assert plain["accuracy"] < 0.15 and plain["ratio_init"] < 1e-9
    for key in (("sigmoid", "residual", deep), ("sigmoid", "both", deep), ("relu", "both", deep)):
        assert 0.5 < by[key]["ratio_init"] < 3 and by[key]["accuracy"] > 0.8
    # ReLU skips without normalization: the signal grows (ratio 8.8e3 at 20 layers, 2.3e10 at 50 in the full run)
    assert by[("relu", "residual", deep)]["ratio_init"] > 1e3 and by[("relu", "residual", deep)]["accuracy"] < 0.6
    assert r.numbers["normalization_alone_gain"]["sigmoid"][10] > 0.5  # measured +0.58; relu +0.009
    held = checks(r)
    assert r.verdict == PARTLY and sum(held.values()) == 3
    # what did not hold on the quick settings: at 20 layers layer normalization alone lets ReLU train (0.816)
    alone = [k for k, v in held.items() if not v]
    assert alone and alone[0].startswith("Normalization alone") and by[("relu", "normalized", deep)]["accuracy"] > 0.8
    assert {f.name for f in r.figures} == {"gradients", "accuracy"}


def test_report_is_self_contained_with_every_figure(quick):
    results, out = quick
    page = (out / "index.html").read_text(encoding="utf-8")
    figures = [(r.name, f) for r in results.values() for f in r.figures]
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == len(figures) == page.count("<img")
    for (name, f), data in zip(figures, embedded):
        assert base64.b64decode(data) == f.png == (out / f"{name}-{f.name}.png").read_bytes()
    for ref in re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page):
        assert ref.startswith(("data:image/png;base64,", "#")), ref
    assert "http://" not in page and "https://" not in page and "<script" not in page and "<link" not in page
    # an animation is an iframe holding its own page (script and data inline), also saved beside the report
    pages = [(r.name, p) for r in results.values() for p in r.pages]
    frames = re.findall(r'<iframe srcdoc="([^"]*)"', page)
    assert pages and len(frames) == len(pages) == page.count("<iframe")
    for (name, p), frame in zip(pages, frames):
        assert html.unescape(frame) == p.html == (out / f"{name}-{p.name}.html").read_text(encoding="utf-8")
        assert "https://" not in p.html and "http://" not in p.html and "<script src" not in p.html
    for r in results.values():
        assert f'id="{r.name}"' in page and r.verdict in page


def test_results_json_holds_every_number(quick):
    results, out = quick

    def strict(text):
        raise AssertionError(f"non-standard JSON constant {text}")

    data = json.loads((out / "results.json").read_text(), parse_constant=strict)
    assert data["quick"] is True and data["seed"] == 0
    assert [e["name"] for e in data["experiments"]] == list(EXPERIMENTS)
    for e in data["experiments"]:
        r = results[e["name"]]
        assert e["verdict"] == r.verdict and e["numbers"] == jsonable(r.numbers)
        assert [c["detail"] for c in e["checks"]] == [c.detail for c in r.checks]
        for f in e["figures"]:
            assert (out / f["file"]).is_file()


def test_experiments_repeat_exactly():
    a, b = lab.run("single-weight", quick=True), lab.run("single-weight", quick=True)
    da, db = a.to_dict(), b.to_dict()
    da.pop("seconds"), db.pop("seconds")
    assert da == db and [f.png for f in a.figures] == [f.png for f in b.figures]
    c = lab.run("single-weight", quick=True, seed=1)
    assert c.numbers["w_star"] != a.numbers["w_star"]


def test_sweeps_give_the_same_numbers_on_one_or_two_processes():
    from chainrule.lab.vanishing_gradients import _init_norms

    tasks = [{"activation": "sigmoid", "depth": 4, "seed": 0}, {"activation": "relu", "depth": 3, "seed": 1}]
    assert parallel_map(_init_norms, tasks, jobs=1) == parallel_map(_init_norms, tasks, jobs=2)


def test_unknown_experiment_is_refused():
    with pytest.raises(lab.ChainruleError, match="expected one of: single-weight"):
        lab.get("no-such-thing")
    assert lab.get("Dying_ReLU").name == "dying-relu"


def test_a_failing_experiment_is_recorded_and_the_rest_still_run(monkeypatch, tmp_path):
    from chainrule.lab import activations

    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(activations, "run", broken)
    results = lab.run_lab(["activations", "cross-entropy-asymmetry"], quick=True, out=tmp_path)
    assert results[0].verdict == lab.NOT_RUN and "boom" in results[0].error
    assert results[1].verdict == HELD
    assert "boom" in (tmp_path / "index.html").read_text()


def test_cli_lists_runs_and_refuses(tmp_path):
    from typer.testing import CliRunner

    from chainrule.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["lab", "--list"])
    assert listed.exit_code == 0
    for name in EXPERIMENTS:
        assert name in listed.output
    bad = runner.invoke(app, ["lab", "no-such-thing"])
    assert bad.exit_code == 2 and "unknown experiment" in bad.output
    ran = runner.invoke(app, ["lab", "cross-entropy-asymmetry", "--quick", "--out", str(tmp_path), "--jobs", "1"])
    assert ran.exit_code == 0, ran.output
    assert "held" in ran.output and (tmp_path / "index.html").is_file()
    assert (tmp_path / "cross-entropy-asymmetry-binary.png").is_file()


def test_importing_the_lab_loads_no_plotting_or_parallel_library():
    code = ("import sys, chainrule.lab; "
            "print([m for m in ('matplotlib', 'joblib', 'sklearn', 'typer', 'rich') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
