"""chainrule bench --curves: the runners agree and the table and the PNG are made (chainrule/bench/curves.py).
Speed itself is measured by the benchmark, never here."""

import numpy as np

from chainrule.bench import curves as C
from chainrule.bench import runners as R
from chainrule.bench import workloads as B


def test_the_compiled_runner_trains_like_the_eager_one_and_the_floor():
    w = B.Workload("curve", (6, 8, 8, 3), "relu", batch_size=4, epochs=2, lr=0.1, data="synthetic", n_samples=16)
    X, y = B.load_data(w)
    weights = B.initial_weights(w)
    plan = B.batch_plan(len(X), 4, 2)
    trained = {}
    for name, make in (("compiled", C._compiled_trainer), ("eager", R._chainrule_trainer), ("floor", R._numpy_trainer)):
        run, get = make(w, weights, X, y, plan)
        assert len(run()) == 2  # one mark per epoch
        trained[name] = get()
    for (a, b), (c, d) in zip(trained["compiled"], trained["eager"]):
        assert np.array_equal(a, c) and np.array_equal(b, d)  # bit-identical
    for (a, b), (c, d) in zip(trained["compiled"], trained["floor"]):
        assert np.allclose(a, c, atol=1e-5) and np.allclose(b, d, atol=1e-5)


def test_curves_make_a_table_and_a_png(tmp_path):
    ok, _ = C.runners(("chainrule", "chainrule-compiled", "numpy"))
    seconds = C.measure_point((6, 8, 8, 3), 4, ok, repeats=1, steps=2)
    assert set(seconds) == {"chainrule", "chainrule-compiled", "numpy"} and all(s > 0 for s in seconds.values())
    row = {"value": 4, "sizes": [6, 8, 8, 3], "batch": 4, "seconds": seconds,
           "vs_torch": C._ratios(seconds, "torch"), "vs_numpy": C._ratios(seconds, "numpy")}
    result = {"curves": {"batch": [row, {**row, "value": 8}]}}
    table = C.format_curves(result)
    assert "batch" in table and "chainrule-compiled" in table
    C.plot_curves(result, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
