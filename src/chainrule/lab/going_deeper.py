"""going-deeper: skip connections and normalization against the vanishing gradient, at 10, 30 and 50 layers.

Every network is an ``nn.MLP`` of width 64 on the 8x8 digits, in four variants: plain,
residual (a skip connection around each hidden block), normalized (LayerNorm after each
hidden Linear) and both; with sigmoid and with ReLU; at 10, 30 and 50 hidden layers. Each
gets the same budget: the same number of Adam steps at the same learning rate, batch 64.

The gradient ratio is measured where a skip connection acts: at each hidden block's output
``h_i`` (the residual stream; the activation's output in a plain network), from
:func:`chainrule.diagnostics.signal_propagation` on 256 training images. The ratio
(:func:`chainrule.diagnostics.gradient_ratio`) is ``rms(dL/dh_first) / rms(dL/dh_last)``, the first hidden block against the last: 1 means the
first layers get as much gradient as the last ones. (The weight gradients' ratio would mix
in the size of each layer's input, which grows along a residual stream.)
"""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from .. import nn, optim
from ..errors import DivergenceError
from ..train import evaluate, fit
from .common import Result, digits, fmt, new_figure, new_result, parallel_map

WIDTH = 64
ACTS = ("sigmoid", "relu")
NORM = "layer"  # layer normalization: the same in training and evaluation, and quicker here than batch norm
VARIANTS = {"plain": (False, None), "residual": (True, None), "normalized": (False, NORM), "both": (True, NORM)}
LR = 0.002  # Adam; the same for every network
BATCH = 64
PROBE_ROWS = 256
# The bars, from the measurements of the full run (seed 0, 300 steps): the three 50-layer networks
# with skips reached 0.858 (sigmoid), 0.884 (sigmoid, normalized) and 0.956 (ReLU, normalized).
TRAINS = 0.8  # test accuracy that counts as "trains" (chance is 0.1)
FAILS = 0.2  # and as "does not train"
NEAR_ONE = 10.0  # "within about 10x of 1"
TINY = 1e-6


def _profile(model: nn.MLP, X: np.ndarray, y: np.ndarray) -> tuple:
    """(first/last gradient ratio, rms(dL/dh) of every hidden block, input to output)."""
    from ..diagnostics import gradient_ratio, signal_propagation

    rows = signal_propagation(model, X, F.cross_entropy, y)["layers"]
    ratio = gradient_ratio(rows)
    return (float("nan") if ratio is None else ratio), [math.sqrt(r["activation_grad_var"]) for r in rows[:-1]]


def train_one(activation: str, variant: str, depth: int, steps: int, seed: int) -> dict:
    """Train one network for ``steps`` Adam steps; its gradient profile before and after, and its test accuracy."""
    Xtr, Xte, ytr, yte = digits(seed)
    residual, norm = VARIANTS[variant]
    model = nn.MLP([64] + [WIDTH] * depth + [10], activation, residual=residual, norm=norm, generator=seed)
    out = {"activation": activation, "variant": variant, "depth": depth, "diverged": False}
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        out["ratio_init"], out["grad_profile_init"] = _profile(model, Xtr[:PROBE_ROWS], ytr[:PROBE_ROWS])

        class Budget:
            def on_step_end(self, state):
                state.stop = state.step >= steps

        epochs = math.ceil(steps / math.ceil(len(Xtr) / BATCH))
        try:
            h = fit(model, F.cross_entropy, optim.Adam(model.parameters(), lr=LR), Xtr, ytr, epochs=epochs,
                    batch_size=BATCH, seed=seed, callbacks=[Budget()], progress=False)
            out["loss"] = h["loss"]
            out["accuracy"] = evaluate(model, F.cross_entropy, Xte, yte)["accuracy"]
            out["ratio_trained"], _ = _profile(model, Xtr[:PROBE_ROWS], ytr[:PROBE_ROWS])
        except DivergenceError:
            out.update(diverged=True, loss=[], accuracy=float("nan"), ratio_trained=float("nan"))
    return out


def run(quick: bool = False, jobs: int = 1, seed: int = 0) -> Result:
    """Measure the claim of ``going-deeper``; arguments as :func:`chainrule.lab.run` describes."""
    r = new_result("going-deeper", quick, seed)
    depths = [10, 20] if quick else [10, 30, 50]
    steps = 150 if quick else 300
    deep = depths[-1]
    r.settings = {"width": WIDTH, "depths": depths, "activations": list(ACTS), "variants": {k: {"residual": v[0], "norm": v[1]} for k, v in VARIANTS.items()},
                  "optimizer": f"Adam lr {LR}", "batch_size": BATCH, "steps": steps,
                  "gradient_ratio": "rms(dL/dh) at the first hidden block's output / at the last's, on 256 training images",
                  "init": "Xavier uniform (sigmoid), He normal (ReLU)"}
    tasks = [{"activation": a, "variant": v, "depth": d, "steps": steps, "seed": seed} for d in depths for a in ACTS for v in VARIANTS]
    runs = parallel_map(train_one, tasks, jobs)
    by = {(x["activation"], x["variant"], x["depth"]): x for x in runs}
    r.numbers["runs"] = runs

    for d in depths:
        r.add_table(
            f"{d} hidden layers of {WIDTH}: test accuracy after {steps} steps, and first/last gradient ratio at initialization -> after training",
            ["activation"] + list(VARIANTS),
            [[a] + [_cell(by[(a, v, d)]) for v in VARIANTS] for a in ACTS],
        )

    plain = by[("sigmoid", "plain", deep)]
    r.check(
        f"A plain {deep}-layer sigmoid network does not train, and the gradient reaching its first layer is a vanishing fraction of the last one's",
        plain["accuracy"] < FAILS and plain["ratio_init"] < TINY,
        f"test accuracy {fmt(plain['accuracy'], 3)} (does not train: under {FAILS}; chance is 0.1); first/last gradient "
        f"ratio {fmt(plain['ratio_init'], 2)} at initialization (tiny: under {TINY:g})",
    )
    skipped = [by[k] for k in (("sigmoid", "residual", deep), ("sigmoid", "both", deep), ("relu", "both", deep))]
    near = lambda x: 1 / NEAR_ONE <= x <= NEAR_ONE  # noqa: E731
    r.check(
        f"With skip connections the ratio stays within about {NEAR_ONE:g}x of 1 and {deep} layers train",
        all(near(x["ratio_init"]) and near(x["ratio_trained"]) and x["accuracy"] >= TRAINS for x in skipped),
        "; ".join(f"{x['activation']} {x['variant']}: ratio {fmt(x['ratio_init'], 3)} -> {fmt(x['ratio_trained'], 3)}, "
                  f"test accuracy {fmt(x['accuracy'], 3)}" for x in skipped)
        + f" (trains: at least {TRAINS}); the plain sigmoid network's ratio: {fmt(plain['ratio_init'], 2)}",
    )
    relu_skip, relu_both = by[("relu", "residual", deep)], by[("relu", "both", deep)]
    r.check(
        f"Skips alone do not rescue {deep} ReLU layers: each block adds to the signal, which grows with depth, until "
        "normalization inside the block keeps it in scale",
        not (near(relu_skip["ratio_init"]) and relu_skip["accuracy"] >= TRAINS) and relu_both["accuracy"] >= TRAINS,
        f"ReLU with skips only: ratio {fmt(relu_skip['ratio_init'], 3)} at initialization, test accuracy "
        f"{fmt(relu_skip['accuracy'], 3)}; with skips and {NORM} normalization: ratio {fmt(relu_both['ratio_init'], 3)}, "
        f"test accuracy {fmt(relu_both['accuracy'], 3)}",
    )
    gain = {a: {d: by[(a, "normalized", d)]["accuracy"] - by[(a, "plain", d)]["accuracy"] for d in depths} for a in ACTS}
    r.numbers["normalization_alone_gain"] = gain
    shallow = depths[0]
    alone_deep = {a: by[(a, "normalized", deep)]["accuracy"] for a in ACTS}
    r.check(
        f"Normalization alone helps the sigmoid more than the ReLU (at {shallow} layers), and alone it does not make "
        f"{deep} plain layers train",
        gain["sigmoid"][shallow] > gain["relu"][shallow] and all(v < TRAINS for v in alone_deep.values()),
        f"test accuracy gained by {NORM} normalization without skips: "
        + "; ".join(f"{a} " + ", ".join(f"{d} layers {gain[a][d]:+.3f}" for d in depths) for a in ACTS)
        + f"; at {deep} layers with normalization alone: "
        + ", ".join(f"{a} {fmt(v, 3)}" for a, v in alone_deep.items()),
    )
    r.notes.append(
        "Why skips keep the gradient: a block computes h_i = h_(i-1) + f(h_(i-1)), so dL/dh_(i-1) = dL/dh_i (I + J_f): "
        "the identity term carries the gradient back unchanged, however small f's Jacobian J_f is. In a plain sigmoid "
        "network each layer multiplies the gradient by a derivative of at most 0.25 and a weight matrix, and 50 such "
        "factors leave almost nothing. Why ReLU skips need normalization: with He initialization each ReLU block's "
        "output has about the variance of its input, so the sum doubles the variance at every block, 2^50 over 50 "
        "blocks; normalizing inside the block keeps each addition of unit size. Why normalization alone does not "
        "rescue 30 or 50 plain layers here: it keeps each layer's input in scale, but the gradient still passes "
        "through every layer's Jacobian in turn, with no path around them (the degradation that He et al. saw in "
        "deep plain networks with batch normalization)."
    )
    _figures(r, by, depths, steps)
    return r


def _cell(x: dict) -> str:
    if x["diverged"]:
        return f"diverged (ratio {fmt(x['ratio_init'], 2)})"
    return f"{fmt(x['accuracy'], 3)} ({fmt(x['ratio_init'], 2)} -> {fmt(x['ratio_trained'], 2)})"


def _figures(r: Result, by: dict, depths: list, steps: int) -> None:
    deep = depths[-1]
    styles = {"plain": "o-", "residual": "s-", "normalized": "^-", "both": "D-"}
    fig, axes = new_figure(2, 1, width=5.0, height=3.7)
    for ax, a in zip(axes[0], ACTS):
        for v in VARIANTS:
            g = np.array(by[(a, v, deep)]["grad_profile_init"], dtype=float)
            g = np.where(g > 0, g, np.nan)  # an underflow to 0 has no place on a log scale
            ax.semilogy(range(1, len(g) + 1), g, styles[v], ms=2, lw=1, label=v)
        ax.set(xlabel="hidden layer (1 = first)", ylabel="rms dL/dh at the layer's output", title=f"{a}, {deep} hidden layers, at initialization")
    axes[0][0].legend(fontsize=8)
    r.add_figure("gradients", "The gradient at each hidden layer's output at initialization (log scale). Flat is "
                 "healthy: the skip connections carry the gradient back to the first layer.", fig)

    fig, axes = new_figure(2, 1, width=5.0, height=3.7)
    for ax, a in zip(axes[0], ACTS):
        for v in VARIANTS:
            ax.plot(depths, [by[(a, v, d)]["accuracy"] for d in depths], styles[v], label=v)
        ax.axhline(0.1, color="grey", lw=0.8, ls=":")
        ax.set(xlabel="hidden layers", ylabel="test accuracy", title=f"{a}: same budget ({steps} Adam steps)", ylim=(0, 1), xticks=depths)
    axes[0][0].legend(fontsize=8)
    r.add_figure("accuracy", "Test accuracy against depth, plain, with skips, with normalization and with both "
                 "(dotted: chance).", fig)
