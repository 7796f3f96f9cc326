"""vanishing-gradients: gradient norms layer by layer, and what they do to training, on the digits.

Three measurements, all with MLPs of width 32 on the 8x8 digits and each
activation with its usual initialization (Xavier for sigmoid and tanh, He for
the ReLU family, as ``nn.MLP`` chooses):

1. At initialization: ||dL/dW|| of every layer for depths 2 to 20, from one
   backward pass on 256 training images.
2. During training: the same per-layer norms (and the update ratio
   ||dW|| / ||W||) averaged over each epoch by
   :class:`chainrule.diagnostics.Monitor`, for each activation and depth,
   all with the same optimizer (SGD, momentum 0.9, lr 0.01) and budget.
3. Training curves of 10-hidden-layer networks: every activation gets the
   same budget and the same sweep of learning rates, and is judged by its
   best one, so that no activation loses for want of a suitable step size.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import nn, optim
from ..errors import DivergenceError
from ..train import fit, predict
from .common import (Result, dead_fractions, digits, fmt, layer_grad_norms, legend_outside, new_figure, new_result,
                     parallel_map, preactivations)

ACTS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu")
WIDTH = 32
DEEP = 10  # hidden layers of the "deep" network


def _init_norms(activation: str, depth: int, seed: int) -> list:
    Xtr, _, ytr, _ = digits(seed)
    model = nn.MLP([64] + [WIDTH] * depth + [10], activation, generator=seed)
    return layer_grad_norms(model, Xtr[:256], ytr[:256], F.cross_entropy)


def train_one(activation: str, depth: int, lr: float, epochs: int, seed: int, monitor: bool = False,
              optimizer: str = "sgd") -> dict:
    """Train one MLP on the digits (SGD with momentum 0.9, or Adam); its curves, and per-epoch per-layer
    gradient norms when ``monitor``."""
    Xtr, Xte, ytr, yte = digits(seed)
    model = nn.MLP([64] + [WIDTH] * depth + [10], activation, generator=seed)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9) if optimizer == "sgd" else optim.Adam(model.parameters(), lr=lr)
    callbacks = []
    if monitor:
        from ..diagnostics import Monitor

        callbacks.append(Monitor(probe=(Xtr[:256], ytr[:256])))
    out = {"activation": activation, "depth": depth, "lr": lr, "diverged": False}
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # a divergence is an outcome here, caught below
            h = fit(model, F.cross_entropy, opt, Xtr, ytr, epochs=epochs, batch_size=32, validation=(Xte, yte),
                    seed=seed, callbacks=callbacks, progress=False)
        out.update(loss=h["loss"], val_accuracy=h["val_accuracy"])
    except DivergenceError:
        out.update(diverged=True, loss=[], val_accuracy=[])
    out["final_accuracy"] = out["val_accuracy"][-1] if out["val_accuracy"] else float("nan")
    out["best_accuracy"] = max(out["val_accuracy"]) if out["val_accuracy"] else float("nan")
    if monitor and not out["diverged"]:
        records = callbacks[0].records
        out["grad_norm"] = [[layer["grad_norm"] for layer in rec["layers"]] for rec in records]
        out["update_ratio"] = [[layer["update_ratio"] for layer in rec["layers"]] for rec in records]
        out["mean_derivative"] = [[layer.get("mean_derivative") for layer in rec["layers"][:-1]] for rec in records]
        out["saturated_fraction"] = [[layer.get("saturated_fraction") for layer in rec["layers"][:-1]] for rec in records]
    return out


def run(quick: bool = False, jobs: int = 1, seed: int = 0) -> Result:
    """Measure the claim of ``vanishing-gradients``; arguments as :func:`chainrule.lab.run` describes."""
    r = new_result("vanishing-gradients", quick, seed)
    init_depths = [2, 5, 10, 15, 20] if quick else [2, 4, 6, 8, 10, 12, 15, 20]
    sweep_depths = [2, 10] if quick else [2, 5, 10, 15, 20]
    sweep_acts = ("sigmoid", "tanh", "relu") if quick else ACTS
    sweep_epochs = 5 if quick else 10
    curve_acts = ("sigmoid", "tanh", "relu") if quick else ACTS
    curve_lrs = [0.01, 0.1] if quick else [0.003, 0.01, 0.03, 0.1, 0.3]
    curve_epochs = 8 if quick else 20
    r.settings = {"width": WIDTH, "init": "Xavier uniform (sigmoid, tanh), He normal (ReLU family)",
                  "init_depths": init_depths, "sweep_depths": sweep_depths, "sweep_epochs": sweep_epochs,
                  "sweep_optimizer": "SGD lr 0.01 momentum 0.9, batch 32", "curve_hidden_layers": DEEP,
                  "curve_learning_rates": curve_lrs, "curve_epochs": curve_epochs,
                  "gradients_during_training": "chainrule.diagnostics.Monitor (grad_norm, update_ratio per layer)"}

    # 1. at initialization
    tasks = [{"activation": a, "depth": d, "seed": seed} for a in ACTS for d in init_depths]
    norms = dict(zip([(t["activation"], t["depth"]) for t in tasks], parallel_map(_init_norms, tasks, jobs)))
    ratio = {k: v[0] / v[-1] for k, v in norms.items()}
    r.numbers["init_grad_norms"] = {f"{a}/{d}": norms[(a, d)] for a, d in norms}
    r.numbers["init_first_over_last"] = {f"{a}/{d}": ratio[(a, d)] for a, d in ratio}
    r.add_table(
        "At initialization: ||dL/dW|| of the first layer / that of the last layer",
        ["activation"] + [f"{d} hidden" for d in init_depths],
        [[a] + [fmt(ratio[(a, d)], 3) for d in init_depths] for a in ACTS],
    )
    deepest = init_depths[-1]
    sig = norms[("sigmoid", deepest)]
    shrinking = float(np.mean(np.array(sig[:-1]) < np.array(sig[1:])))
    r.numbers["sigmoid_fraction_layers_smaller_than_next"] = shrinking
    sig_ratios = [ratio[("sigmoid", d)] for d in init_depths]
    r.check(
        "With sigmoids the gradient shrinks layer by layer on its way back, more the deeper the network",
        shrinking >= 0.9 and all(b < a for a, b in zip(sig_ratios, sig_ratios[1:])) and ratio[("sigmoid", DEEP)] < 1e-3,
        f"at {deepest} hidden layers each layer's gradient was smaller than the next one's in {shrinking:.0%} of "
        f"layers; first/last went {', '.join(fmt(x, 2) for x in sig_ratios)} for "
        f"{', '.join(map(str, init_depths))} hidden layers",
    )
    relu_fam = {a: ratio[(a, deepest)] for a in ("relu", "leaky_relu", "elu")}
    r.check(
        "ReLU-family activations keep the gradient alive through depth",
        all(0.1 < v < 10 for v in relu_fam.values()),
        f"first/last gradient norm at {deepest} hidden layers: "
        + ", ".join(f"{a} {fmt(v, 3)}" for a, v in relu_fam.items())
        + f" (sigmoid {fmt(ratio[('sigmoid', deepest)], 2)})",
    )

    # 2. during training, per depth and activation
    tasks = [{"activation": a, "depth": d, "lr": 0.01, "epochs": sweep_epochs, "seed": seed, "monitor": True}
             for a in sweep_acts for d in sweep_depths]
    sweep = parallel_map(train_one, tasks, jobs)
    r.numbers["depth_sweep"] = sweep
    by = {(s["activation"], s["depth"]): s for s in sweep}
    r.add_table(
        f"Test accuracy after {sweep_epochs} epochs (SGD lr 0.01, momentum 0.9), by hidden layers",
        ["activation"] + [f"{d} hidden" for d in sweep_depths],
        [[a] + ["diverged" if by[(a, d)]["diverged"] else fmt(by[(a, d)]["final_accuracy"], 3) for d in sweep_depths]
         for a in sweep_acts],
    )

    def train_ratio(a: str, key: str) -> float:
        s = by[(a, DEEP)]
        if s["diverged"]:
            return float("nan")
        vals = [row[0] / row[-1] for row in s[key] if row[0] is not None and row[-1]]
        return float(np.mean(vals)) if vals else float("nan")

    tr = {a: (train_ratio(a, "grad_norm"), train_ratio(a, "update_ratio")) for a in sweep_acts}
    r.numbers["training_first_over_last"] = {a: {"grad_norm": g, "update_ratio": u} for a, (g, u) in tr.items()}
    r.add_table(
        f"During training ({DEEP} hidden layers): first layer / last layer, averaged over epochs",
        ["activation", "gradient norm", "update ratio ||dW|| / ||W||"],
        [[a, fmt(g, 3), fmt(u, 3)] for a, (g, u) in tr.items()],
    )
    r.check(
        f"In a deep sigmoid network ({DEEP} hidden layers) the early layers barely learn during training",
        tr["sigmoid"][0] < 1e-3 and tr["sigmoid"][1] < 1e-3 and tr["relu"][1] > 100 * tr["sigmoid"][1],
        f"first layer's gradient norm / last layer's, averaged over {sweep_epochs} epochs: sigmoid {fmt(tr['sigmoid'][0], 2)}, "
        f"relu {fmt(tr['relu'][0], 3)}; its relative update per step: sigmoid {fmt(tr['sigmoid'][1], 2)} of the last "
        f"layer's, relu {fmt(tr['relu'][1], 3)}",
    )

    # 3. training curves of deep networks, each activation with its best learning rate
    tasks = [{"activation": a, "depth": DEEP, "lr": lr, "epochs": curve_epochs, "seed": seed} for a in curve_acts for lr in curve_lrs]
    curves = parallel_map(train_one, tasks, jobs)
    r.numbers["deep_lr_sweep"] = curves
    best = {}
    for a in curve_acts:
        runs = [c for c in curves if c["activation"] == a and not c["diverged"]]
        best[a] = max(runs, key=lambda c: c["final_accuracy"]) if runs else None
    r.add_table(
        f"{DEEP} hidden layers of {WIDTH}: test accuracy after {curve_epochs} epochs, for each learning rate (SGD, momentum 0.9)",
        ["activation"] + [f"lr {lr:g}" for lr in curve_lrs] + ["best"],
        [[a] + ["diverged" if c["diverged"] else fmt(c["final_accuracy"], 3) for c in curves if c["activation"] == a]
         + [fmt(best[a]["final_accuracy"], 3) if best[a] else "-"] for a in curve_acts],
    )
    acc = {a: (best[a]["final_accuracy"] if best[a] else float("nan")) for a in curve_acts}
    r.numbers["deep_best_accuracy"] = acc
    r.check(
        f"With the same size ({DEEP} hidden layers) and budget, a ReLU network trains and a sigmoid network does not",
        acc["sigmoid"] < 0.2 and acc["relu"] >= 0.5,
        f"best test accuracy over learning rates {curve_lrs}: relu {fmt(acc['relu'], 3)}, sigmoid {fmt(acc['sigmoid'], 3)} "
        f"(chance is 0.1; 'does not train' means under 0.2, 'trains' at least 0.5)",
    )
    shallow_sig, shallow_tanh = by[("sigmoid", 2)], by[("tanh", 2)]
    r.check(
        "tanh trains better than the sigmoid, deep and shallow",
        acc["tanh"] > acc["sigmoid"] + 0.2 and shallow_tanh["final_accuracy"] > shallow_sig["final_accuracy"]
        and shallow_tanh["loss"][-1] < shallow_sig["loss"][-1],
        f"{DEEP} hidden layers, best learning rate: tanh {fmt(acc['tanh'], 3)} against sigmoid {fmt(acc['sigmoid'], 3)}; "
        f"2 hidden layers after {sweep_epochs} epochs at lr 0.01: tanh {fmt(shallow_tanh['final_accuracy'], 3)} "
        f"(training loss {fmt(shallow_tanh['loss'][-1], 3)}) against sigmoid {fmt(shallow_sig['final_accuracy'], 3)} "
        f"(loss {fmt(shallow_sig['loss'][-1], 3)})",
    )
    tanh_init, tanh_train = ratio[("tanh", deepest)], tr["tanh"][0]
    r.check(
        "tanh, also a saturating activation, suffers from the vanishing gradient too",
        tanh_init < 0.1 or tanh_train < 0.1,
        f"first/last gradient norm for tanh: {fmt(tanh_init, 3)} at initialization with {deepest} hidden layers, "
        f"{fmt(tanh_train, 3)} averaged over training with {DEEP}; vanishing would mean well under 0.1 "
        f"(sigmoid: {fmt(ratio[('sigmoid', deepest)], 2)} and {fmt(tr['sigmoid'][0], 2)})",
    )
    if not (tanh_init < 0.1 or tanh_train < 0.1):
        health = {}
        for a in ("sigmoid", "tanh"):
            last = by[(a, DEEP)]
            if not last["diverged"]:
                health[a] = (float(np.mean(last["mean_derivative"][-1])), float(np.mean(last["saturated_fraction"][-1])))
        r.numbers["last_epoch_mean_derivative_and_saturated_fraction"] = health
        r.notes.append(
            "Why tanh's gradient did not vanish here: with Xavier initialization (designed by Glorot and Bengio "
            "for exactly this) tanh units start in their near-linear middle, where the slope is close to 1, and "
            f"they stayed there: after training, the Monitor measured a mean local derivative of "
            f"{fmt(health['tanh'][0], 3)} for tanh units with {health['tanh'][1]:.1%} of them saturated, against "
            f"{fmt(health['sigmoid'][0], 3)} for sigmoid units (at most 0.25 even at their middle). tanh saturates, "
            "and its gradient vanishes, when its inputs grow large; on these settings they did not. Its zero-centred "
            "output is the other half of its advantage."
        )
    _why_the_deepest_fail(r, seed, jobs)
    _figures(r, norms, ratio, init_depths, by, sweep_depths, sweep_acts, best)
    return r


DEEPEST = 20  # hidden layers where the full run's ReLU and ELU fall behind tanh


def _start(activation: str, seed: int) -> dict:
    """What a DEEPEST-layer network looks like before training, on 256 training images."""
    Xtr, Xte, ytr, _ = digits(seed)
    model = nn.MLP([64] + [WIDTH] * DEEPEST + [10], activation, generator=seed)
    z = preactivations(model, Xtr[:256])
    h = predict(nn.Sequential(*list(model)[:-1]), Xtr[:256])  # the last hidden layer's output
    unit = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
    cosine = unit @ unit.T
    g = layer_grad_norms(model, Xtr[:256], ytr[:256], F.cross_entropy)
    return {"dead_at_init": float(np.mean(dead_fractions(model, Xtr[:256]))) if activation == "relu" else 0.0,
            "input_similarity": float(cosine[np.triu_indices(len(cosine), 1)].mean()),
            "preact_std_growth": float(z[-1].std() / z[0].std()), "first_over_last": float(g[0] / g[-1])}


def _why_the_deepest_fail(r: Result, seed: int, jobs: int) -> None:
    """At DEEPEST hidden layers, SGD lr 0.01 leaves ReLU and ELU far behind tanh: learning rate, dying,
    or exploding gradients? Measured, not guessed: a smaller learning rate, Adam, and the network at its start."""
    acts = ("relu", "elu", "tanh")
    runs = [("SGD lr 0.01", "sgd", 0.01), ("SGD lr 0.003", "sgd", 0.003), ("Adam lr 0.001", "adam", 1e-3)]
    tasks = [{"activation": a, "depth": DEEPEST, "lr": lr, "epochs": 10, "seed": seed, "monitor": True, "optimizer": o}
             for a in acts for _, o, lr in runs]
    out = iter(parallel_map(train_one, tasks, jobs))
    acc = {(a, name): next(out) for a in acts for name, _, _ in runs}
    start = {a: _start(a, seed) for a in acts}
    peak = {a: max(max(e) for e in acc[(a, "SGD lr 0.01")].get("grad_norm") or [[float("nan")]]) for a in acts}
    r.numbers["deepest"] = {"hidden_layers": DEEPEST, "start": start, "peak_grad_norm_sgd_0.01": peak,
                            "accuracy": {f"{a}/{n}": v["final_accuracy"] for (a, n), v in acc.items()}}
    r.add_table(
        f"Why {DEEPEST} hidden layers fail: 10 epochs each, and the network before training",
        ["activation", *[f"test accuracy, {n}" for n, _, _ in runs], "largest layer gradient norm (SGD 0.01)",
         "first/last gradient at init", "pre-activation std, last/first hidden layer", "similarity of two digits' "
         "last hidden layer at init (cosine)", "dead units at init"],
        [[a, *[fmt(acc[(a, n)]["final_accuracy"], 3) for n, _, _ in runs], fmt(peak[a], 3), fmt(start[a]["first_over_last"], 3),
          fmt(start[a]["preact_std_growth"], 3), fmt(start[a]["input_similarity"], 3), f"{start[a]['dead_at_init']:.0%}"]
         for a in acts],
    )
    a = {k: v["final_accuracy"] for k, v in acc.items()}
    relu, elu = start["relu"], start["elu"]
    told_apart = (a[("elu", "SGD lr 0.003")] - a[("elu", "SGD lr 0.01")] > 0.2
                  and a[("relu", "SGD lr 0.003")] - a[("relu", "SGD lr 0.01")] < 0.1 and relu["input_similarity"] > 0.95)
    if not told_apart:
        r.notes.append(f"At {DEEPEST} hidden layers this run did not separate a learning-rate failure (ELU) from a "
                       "failure of the start (ReLU) as the measured table usually does; read the table above.")
        return
    r.notes.append(
        f"Why ReLU and ELU fall behind tanh at {DEEPEST} hidden layers (SGD lr 0.01, 10 epochs): two different "
        f"causes, told apart by measurement. ELU: the learning rate. With He initialization its pre-activations grow "
        f"{fmt(elu['preact_std_growth'], 3)}x in spread from the first hidden layer to the last, the first steps are "
        f"too large (largest layer gradient norm {fmt(peak['elu'], 3)}), and it reaches {fmt(a[('elu', 'SGD lr 0.01')], 3)}; "
        f"at lr 0.003 it reaches {fmt(a[('elu', 'SGD lr 0.003')], 3)} and with Adam {fmt(a[('elu', 'Adam lr 0.001')], 3)}. "
        f"ReLU: not the learning rate ({fmt(a[('relu', 'SGD lr 0.003')], 3)} at lr 0.003 against "
        f"{fmt(a[('relu', 'SGD lr 0.01')], 3)}), and no vanishing or exploding gradient (first/last "
        f"{fmt(relu['first_over_last'], 3)} at initialization, largest layer norm {fmt(peak['relu'], 3)} in training). "
        f"It is the start: {relu['dead_at_init']:.0%} of its units are dead before the first step, and the last "
        f"hidden layer gives nearly the same direction for every digit (mean cosine {fmt(relu['input_similarity'], 3)}; "
        f"tanh {fmt(start['tanh']['input_similarity'], 3)}), so depth has erased most of what tells the inputs apart "
        f"before training begins. SGD recovers it slowly; Adam ({fmt(a[('relu', 'Adam lr 0.001')], 3)}) faster. "
        "Normalization layers and residual connections are the usual cure for such depth."
    )


def _figures(r, norms, ratio, init_depths, by, sweep_depths, sweep_acts, best) -> None:
    deepest = init_depths[-1]
    fig, axes = new_figure(2, 1, width=5.0, height=3.7)
    for a in ACTS:
        g = norms[(a, deepest)]
        axes[0][0].semilogy(range(1, len(g) + 1), g, "o-", ms=3, label=a)
        axes[0][1].semilogy(init_depths, [ratio[(a, d)] for d in init_depths], "o-", ms=4, label=a)
    axes[0][0].set(xlabel="layer (1 = first)", ylabel="||dL/dW||", title=f"At initialization, {deepest} hidden layers")
    axes[0][1].set(xlabel="hidden layers", ylabel="first / last layer", title="Gradient reaching the first layer")
    legend_outside(axes[0][1])
    r.add_figure("init", "Per-layer gradient norms at initialization (log scale).", fig)

    shown = [a for a in ("sigmoid", "tanh", "relu") if (a, DEEP) in by and not by[(a, DEEP)]["diverged"]]
    if shown:
        # one shared log axis: the sigmoid's six decades against tanh's and ReLU's one must show at a glance
        fig, axes = new_figure(len(shown), 1, width=4.0, height=3.4, sharey=True)
        cmap = __import__("matplotlib").colormaps["viridis"]
        for ax, a in zip(axes[0], shown):
            g = np.array(by[(a, DEEP)]["grad_norm"], dtype=float)  # epochs x layers
            for k in range(g.shape[1]):
                ax.semilogy(range(1, g.shape[0] + 1), g[:, k], color=cmap(k / max(g.shape[1] - 1, 1)), lw=1.2)
            spread = g[:, -1].mean() / max(g[:, 0].mean(), 1e-300)
            ax.set(xlabel="epoch", title=f"{a}, {DEEP} hidden layers\nlast/first layer: {spread:.0e}")
            ax.grid(True, which="major", axis="y", alpha=0.3)
        axes[0][0].set(ylabel="||dL/dW|| (epoch mean)")
        r.add_figure("training", "Per-layer gradient norms during training, from the Monitor, on one shared log "
                     "axis (dark: first layer, yellow: output layer).", fig)

    fig, axes = new_figure(2, 1, width=5.0, height=3.7)
    for a, b in best.items():
        if b is None:
            continue
        ep = range(1, len(b["val_accuracy"]) + 1)
        axes[0][0].plot(ep, b["val_accuracy"], "o-", ms=3, label=f"{a} (lr {b['lr']:g})")
        axes[0][1].plot(ep, b["loss"], "o-", ms=3, label=f"{a} (lr {b['lr']:g})")
    axes[0][0].set(xlabel="epoch", ylabel="test accuracy", title=f"{DEEP} hidden layers, best learning rate each", ylim=(0, 1))
    axes[0][1].set(xlabel="epoch", ylabel="training loss", title="Training loss")
    legend_outside(axes[0][1])
    r.add_figure("curves", "Training curves of deep networks with the same budget.", fig)

    fig, axes = new_figure(1, 1, width=5.0, height=3.6)
    for a in sweep_acts:
        axes[0][0].plot(sweep_depths, [by[(a, d)]["final_accuracy"] for d in sweep_depths], "o-", label=a)
    axes[0][0].set(xlabel="hidden layers", ylabel="test accuracy", title="Accuracy against depth (same budget)", ylim=(0, 1))
    legend_outside(axes[0][0])
    r.add_figure("depth", "Test accuracy against depth, SGD lr 0.01 with momentum, same number of epochs.", fig)
