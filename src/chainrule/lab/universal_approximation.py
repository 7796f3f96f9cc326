"""universal-approximation: width drives the error down; depth represents composed functions with far fewer units.

Three measurements, all with ReLU networks on [-1, 1]:

1. Width: one hidden layer of 1 to 128 units fitted to sin(pi x)
   (:func:`chainrule.data.make_function`); test error against width.
2. Representation: the composed sawtooth s_K = t o t o ... o t (K times) of the
   tent map t(u) = 1 - |2u - 1| on u = (x + 1) / 2 has 2^(K-1) teeth and 2^K linear
   pieces. Each tent is two ReLUs, t(u) = 2 relu(u) - 4 relu(u - 1/2), so K
   hidden layers of 2 units represent s_K exactly: 2K units. One hidden layer
   of n ReLUs makes at most n + 1 pieces, so it needs at least 2^K - 1 units;
   2^K units (one per kink) represent it exactly. Both networks are built by
   hand with chainrule's nn.MLP and their errors measured, for K = 1 to 10.
3. Learning: networks trained from random starts on s_4 (8 teeth) with one
   protocol for all (Adam lr 1e-2 with cosine decay, batch 64, best of the seeds):
   one hidden layer of 8 to 256 units against 4 hidden layers of 2 to 16 units.

Initialization: nn.MLP's He weights; the first layer's biases are drawn so that
each unit's kink lies uniformly in [-1, 1] (with zero biases every kink would
start at x = 0), for both families alike.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import nn, optim
from ..errors import DivergenceError
from ..train import fit, predict
from .common import Result, new_result, fmt, legend_outside, new_figure, parallel_map

K_TRAIN = 4


def sawtooth(x: np.ndarray, k: int) -> np.ndarray:
    """The tent map composed k times on u = (x + 1) / 2: 2^(k-1) teeth between 0 and 1 on [-1, 1]."""
    u = (np.asarray(x, dtype=np.float64) + 1) / 2
    for _ in range(k):
        u = 1 - np.abs(2 * u - 1)
    return u


def deep_sawtooth_net(k: int) -> nn.MLP:
    """k hidden layers of 2 ReLUs computing ``sawtooth(x, k)`` exactly (float64)."""
    model = nn.MLP([1] + [2] * k + [1], "relu", dtype="float64", generator=0)
    lins = model.linears
    lins[0].weight.data[:] = [[0.5, 0.5]]  # u = (x + 1) / 2: relu(u), relu(u - 1/2)
    lins[0].bias.data[:] = [0.5, 0.0]
    for lin in lins[1:-1]:  # t = 2 relu(u) - 4 relu(u - 1/2), then relu(t), relu(t - 1/2)
        lin.weight.data[:] = [[2.0, 2.0], [-4.0, -4.0]]
        lin.bias.data[:] = [0.0, -0.5]
    lins[-1].weight.data[:] = [[2.0], [-4.0]]
    lins[-1].bias.data[:] = [0.0]
    return model


def shallow_sawtooth_net(k: int) -> nn.MLP:
    """One hidden layer of 2^k ReLUs, one per kink, computing ``sawtooth(x, k)`` exactly (float64)."""
    n = 2**k
    model = nn.MLP([1, n, 1], "relu", dtype="float64", generator=0)
    hidden, out = model.linears
    kinks = np.arange(n) / n  # in u; the slopes alternate +n, -n, +n, ...
    hidden.weight.data[:] = 0.5
    hidden.bias.data[:] = 0.5 - kinks
    c = 2.0 * n * (-1.0) ** np.arange(n)
    c[0] = n
    out.weight.data[:, 0] = c
    out.bias.data[:] = 0.0
    return model


def _model(sizes: list, seed: int) -> nn.MLP:
    model = nn.MLP(sizes, "relu", generator=seed)
    first = model.linears[0]
    kinks = np.random.default_rng([seed, 1]).uniform(-1, 1, first.out_features)
    first.bias.data[:] = -first.weight.data[0] * kinks  # unit j's kink at x = kinks[j]
    return model


def fit_function(target: str, sizes: list, epochs: int, seed: int, n_train: int) -> dict:
    """Train a ReLU MLP of ``sizes`` on ``target`` ("sine" or "sawtooth4"); test MSE and predictions on a grid."""
    grid = np.linspace(-1, 1, 1001).reshape(-1, 1).astype(np.float32)
    if target == "sine":
        from ..data import make_function

        X, y = make_function("sine", n=n_train, seed=seed)
        truth = np.sin(np.pi * grid)
    else:
        X = np.sort(np.random.default_rng([seed, 2]).uniform(-1, 1, n_train)).reshape(-1, 1).astype(np.float32)
        y = sawtooth(X, K_TRAIN).astype(np.float32)
        truth = sawtooth(grid, K_TRAIN)
    model = _model(sizes, seed)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    out = {"target": target, "sizes": list(sizes), "units": int(sum(sizes[1:-1])), "seed": seed, "diverged": False}
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # a divergence is an outcome here, caught below
            fit(model, F.mse_loss, opt, X, y, epochs=epochs, batch_size=64, seed=seed, progress=False,
                scheduler=optim.CosineAnnealingLR(opt, T_max=epochs))
    except DivergenceError:
        out.update(diverged=True, test_mse=float("inf"), prediction=[])
        return out
    pred = predict(model, grid)
    out.update(test_mse=float(np.mean((pred - truth) ** 2)), prediction=pred[:, 0].tolist())
    return out


def _best(runs: list, **match) -> dict:
    chosen = [x for x in runs if all(x[k] == v for k, v in match.items())]
    return min(chosen, key=lambda x: x["test_mse"])


def _spearman(a: list, b: list) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def run(quick: bool = False, jobs: int = 1, seed: int = 0) -> Result:
    """Measure the claim of ``universal-approximation``; arguments as :func:`chainrule.lab.run` describes."""
    r = new_result("universal-approximation", quick, seed)
    sine_widths = [1, 2, 8, 32, 128] if quick else [1, 2, 4, 8, 16, 32, 64, 128]
    shallow_widths = [16, 64, 256] if quick else [8, 16, 32, 64, 128, 256]
    deep_widths = [2, 8, 16] if quick else [2, 4, 8, 16]
    seeds = [seed] if quick else [seed, seed + 1]
    sine_epochs, saw_epochs = (60, 120) if quick else (100, 300)
    r.settings = {"sine": {"widths": sine_widths, "epochs": sine_epochs, "train_points": 512},
                  "sawtooth_trained": {"K": K_TRAIN, "teeth": 2 ** (K_TRAIN - 1), "one_layer_widths": shallow_widths,
                                       "deep": f"{K_TRAIN} hidden layers of {deep_widths}", "epochs": saw_epochs,
                                       "train_points": 1024},
                  "optimizer": "Adam lr 1e-2, cosine decay to 0, batch 64", "seeds": seeds,
                  "error": "mean squared error on 1001 evenly spaced test points"}

    tasks = [{"target": "sine", "sizes": [1, w, 1], "epochs": sine_epochs, "seed": s, "n_train": 512} for w in sine_widths for s in seeds]
    tasks += [{"target": "sawtooth4", "sizes": [1, w, 1], "epochs": saw_epochs, "seed": s, "n_train": 1024} for w in shallow_widths for s in seeds]
    tasks += [{"target": "sawtooth4", "sizes": [1] + [w] * K_TRAIN + [1], "epochs": saw_epochs, "seed": s, "n_train": 1024}
              for w in deep_widths for s in seeds]
    runs = parallel_map(fit_function, tasks, jobs)
    r.numbers["runs"] = [{k: v for k, v in x.items() if k != "prediction"} for x in runs]

    # 1. width on the sine
    sine = [_best(runs, target="sine", units=w) for w in sine_widths]
    errs = [x["test_mse"] for x in sine]
    rho = _spearman(sine_widths, errs)
    r.numbers["sine_best_mse_by_width"] = dict(zip(map(str, sine_widths), errs))
    r.add_table("One hidden layer fitted to sin(pi x): test error by width (best of the seeds)",
                ["hidden units", "test MSE"], [[w, fmt(e, 3)] for w, e in zip(sine_widths, errs)])
    r.check(
        "One hidden layer of growing width drives the error on a 1-D function towards zero",
        rho <= -0.7 and errs[-1] < 1e-3 and errs[-1] < errs[0] / 100,
        f"test MSE on sin(pi x) from {fmt(errs[0], 3)} with {sine_widths[0]} unit to {fmt(errs[-1], 3)} with {sine_widths[-1]} "
        f"(rank correlation of width and error {fmt(rho, 3)})",
    )

    # 2. representation, built by hand
    grid = np.linspace(-1, 1, 2**12 + 1).reshape(-1, 1)
    rep = []
    for k in range(1, 11):
        truth = sawtooth(grid, k)
        d_err = float(np.max(np.abs(predict(deep_sawtooth_net(k), grid) - truth)))
        s_err = float(np.max(np.abs(predict(shallow_sawtooth_net(k), grid) - truth)))
        rep.append({"K": k, "teeth": 2 ** (k - 1), "pieces": 2**k, "deep_units": 2 * k, "deep_max_error": d_err,
                    "one_layer_units": 2**k, "one_layer_lower_bound": 2**k - 1, "one_layer_max_error": s_err})
    r.numbers["representation"] = rep
    r.add_table(
        "The composed sawtooth s_K, represented exactly by hand-built networks (largest error on 4,097 points, float64)",
        ["K", "teeth", "deep: hidden units (K layers of 2)", "deep: max error", "one layer: units used",
         "one layer: at least", "one layer: max error"],
        [[x["K"], x["teeth"], x["deep_units"], fmt(x["deep_max_error"], 2), x["one_layer_units"], x["one_layer_lower_bound"],
          fmt(x["one_layer_max_error"], 2)] for x in rep],
    )
    worst = max(max(x["deep_max_error"], x["one_layer_max_error"]) for x in rep)
    last = rep[-1]
    r.check(
        "A deep narrow network represents a composed sawtooth with far fewer units than one hidden layer can",
        worst < 1e-9 and last["deep_units"] * 10 < last["one_layer_lower_bound"],
        f"both hand-built networks are exact (largest error {fmt(worst, 2)}); for {last['teeth']} teeth the deep one "
        f"uses {last['deep_units']} units, one hidden layer needs at least {last['one_layer_lower_bound']}: "
        "the deep count grows with K, the shallow one with 2^K",
    )

    # 3. learning it
    shallow = [_best(runs, target="sawtooth4", sizes=[1, w, 1]) for w in shallow_widths]
    deep = [_best(runs, target="sawtooth4", sizes=[1] + [w] * K_TRAIN + [1]) for w in deep_widths]
    r.add_table(
        f"Trained on s_{K_TRAIN} ({2 ** (K_TRAIN - 1)} teeth, variance {np.var(sawtooth(grid, K_TRAIN)):.4f}): "
        "test error by architecture (best of the seeds)",
        ["architecture", "hidden units", "test MSE"],
        [[f"1 x {x['units']}", x["units"], fmt(x["test_mse"], 3)] for x in shallow]
        + [[f"{K_TRAIN} x {w}", x["units"], fmt(x["test_mse"], 3)] for w, x in zip(deep_widths, deep)],
    )
    target_err = min(x["test_mse"] for x in shallow)
    wide_units = next(x["units"] for x in shallow if x["test_mse"] == target_err)
    reached = [x for x in deep if x["test_mse"] <= target_err]
    fewest = min((x["units"] for x in reached), default=None)
    r.numbers["trained"] = {"best_one_layer_mse": target_err, "best_one_layer_units": wide_units,
                            "deep_units_reaching_it": fewest,
                            "deep_mse_by_width": {str(w): x["test_mse"] for w, x in zip(deep_widths, deep)},
                            "one_layer_mse_by_width": {str(x["units"]): x["test_mse"] for x in shallow}}
    r.check(
        "Trained by gradient descent, a deep narrow network reaches the best one-layer error with far fewer units (at most half)",
        fewest is not None and fewest * 2 <= wide_units,
        f"best one-layer error {fmt(target_err, 3)} with {wide_units} units; "
        + (f"the smallest {K_TRAIN}-layer network that matched it had {fewest} units"
           if fewest is not None else f"no {K_TRAIN}-layer network matched it (best {fmt(min(x['test_mse'] for x in deep), 3)})"),
    )
    var = float(np.var(sawtooth(grid, K_TRAIN)))
    narrow = deep[0]
    r.check(
        "Being able to represent a function does not mean gradient descent finds it",
        deep_widths[0] == 2 and narrow["test_mse"] > 0.1 * var,
        f"the {K_TRAIN} x 2 network represents s_{K_TRAIN} exactly (error {fmt(rep[K_TRAIN - 1]['deep_max_error'], 2)}), "
        f"but trained from random starts its best test MSE was {fmt(narrow['test_mse'], 3)}, "
        f"{narrow['test_mse'] / var:.0%} of the function's variance",
    )
    best_deep = min(deep, key=lambda x: x["test_mse"])
    r.notes.append(
        "The lesson's point, measured: depth buys an exponential saving in what a network can represent (the "
        "table built by hand), but gradient descent from a random start did not find the tight construction: "
        f"the {K_TRAIN} x 2 network, which represents s_{K_TRAIN} exactly, ended at MSE {fmt(narrow['test_mse'], 3)} "
        f"(the function's variance is {var:.4f}: it learned about nothing; the standard deviation of its output "
        f"across x was {float(np.std(narrow['prediction'])) if narrow['prediction'] else float('nan'):.3g}, against "
        f"{float(np.std(sawtooth(grid, K_TRAIN))):.3g} for the target). "
        f"Wider deep networks did profit from depth in training: {K_TRAIN} x {best_deep['units'] // K_TRAIN} "
        f"({best_deep['units']} units) reached {fmt(best_deep['test_mse'], 3)}, against {fmt(target_err, 3)} for "
        f"one layer of {wide_units}. How large that gap is depends on the training budget and the seeds."
    )
    _figures(r, runs, sine_widths, errs, rep, shallow, deep, deep_widths, seeds)
    return r


def _figures(r, runs, sine_widths, errs, rep, shallow, deep, deep_widths, seeds) -> None:
    xg = np.linspace(-1, 1, 1001)
    fig, axes = new_figure(2, 1, width=4.8, height=3.6)
    axes[0][0].plot(xg, np.sin(np.pi * xg), color="k", lw=2, label="sin(pi x)")
    for w in sorted(set(sine_widths[:: max(len(sine_widths) // 3, 1)] + [sine_widths[-1]])):  # each width once
        x = _best(runs, target="sine", units=w)
        if x["prediction"]:
            axes[0][0].plot(xg, x["prediction"], lw=1, label=f"{w} units")
    axes[0][0].set(xlabel="x", title="One hidden layer fitted to a sine")
    legend_outside(axes[0][0], fontsize=7)
    axes[0][1].loglog(sine_widths, errs, "o-")
    axes[0][1].set(xlabel="hidden units", ylabel="test MSE", title="Error against width")
    r.add_figure("width", "Growing one hidden layer: the fit to sin(pi x) and its test error.", fig)

    fig, axes = new_figure(2, 1, width=4.8, height=3.6)
    ks = [x["K"] for x in rep]
    axes[0][0].semilogy(ks, [x["one_layer_lower_bound"] for x in rep], "o-", label="one hidden layer (at least)")
    axes[0][0].semilogy(ks, [x["deep_units"] for x in rep], "s-", label="K layers of 2")
    axes[0][0].set(xlabel="compositions K (teeth 2^(K-1))", ylabel="hidden units", title="Units to represent s_K exactly")
    legend_outside(axes[0][0])
    axes[0][1].plot(xg, sawtooth(xg, K_TRAIN), color="k", lw=2, label=f"s_{K_TRAIN}")
    axes[0][1].plot(xg, predict(deep_sawtooth_net(K_TRAIN), xg.reshape(-1, 1))[:, 0], "--", color="tab:orange",
                    label=f"hand-built {K_TRAIN} x 2")
    axes[0][1].set(xlabel="x", title=f"{2 * K_TRAIN} ReLUs, exact")
    legend_outside(axes[0][1])
    r.add_figure("representation", "Depth against width in what a network can represent.", fig)

    fig, axes = new_figure(2, 1, width=4.8, height=3.6)
    axes[0][0].loglog([x["units"] for x in shallow], [x["test_mse"] for x in shallow], "o-", label="one hidden layer")
    axes[0][0].loglog([x["units"] for x in deep], [x["test_mse"] for x in deep], "s-", label=f"{K_TRAIN} hidden layers")
    axes[0][0].set(xlabel="hidden units", ylabel="test MSE", title=f"Trained on s_{K_TRAIN} (best of {len(seeds)} seed(s))")
    legend_outside(axes[0][0])
    axes[0][1].plot(xg, sawtooth(xg, K_TRAIN), color="k", lw=2, label="target")
    best_shallow = min(shallow, key=lambda x: x["test_mse"])
    best_deep = min(deep, key=lambda x: x["test_mse"])
    for x, label in ((best_shallow, f"1 x {best_shallow['units']}"), (best_deep, f"{K_TRAIN} x {best_deep['units'] // K_TRAIN}"),
                     (deep[0], f"{K_TRAIN} x {deep_widths[0]} (trained)")):
        if x["prediction"]:
            axes[0][1].plot(xg, x["prediction"], lw=1, label=label)
    axes[0][1].set(xlabel="x", title="What training found")
    legend_outside(axes[0][1], fontsize=7)
    r.add_figure("trained", "Trained networks on the composed sawtooth: error against units, and the fitted curves.", fig)
