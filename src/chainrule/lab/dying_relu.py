"""dying-relu: ReLUs killed by a large negative bias or a too-large learning rate, and the variants that recover.

The network is 64 -> 64 -> 64 -> 10 on the digits. Two shares of units are
measured on the whole training set. *Below zero*: the pre-activation is <= 0 on
every image. *Dead*: the unit passes back no gradient to speak of on any image
(its slope below 1% of its peak everywhere), by the one definition that the
Monitor and the dashboard use too (:func:`chainrule.diagnostics.unit_health`).
A ReLU below zero is dead. Leaky ReLU (slope 0.01), PReLU (one learned slope
per unit, starting at 0.25) and ELU still pass back a gradient from there, so
the same units can come back; an ELU pushed far below zero saturates and dies.

Two ways to kill, each followed by the same training for every activation:

- bias: every hidden bias starts at -3, then Adam (lr 1e-3) trains it.
  (In the full run the same is repeated with SGD + momentum, whose steps are
  proportional to the gradient, to show how slowly a slope of 0.01 recovers.)
- learning rate: 20 steps of plain SGD at lr 1.0, then Adam (lr 1e-3) as above.

Per-layer gradient norms (and the dead fraction on a probe batch, as a
cross-check) come from :class:`chainrule.diagnostics.Monitor`.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import nn, optim
from ..errors import DivergenceError
from ..nn import PReLU
from ..train import evaluate, fit
from .common import (Result, dead_fractions, digits, fmt, inactive_fractions, layer_grad_norms, new_figure, new_result,
                     parallel_map)

ACTS = ("relu", "leaky_relu", "prelu", "elu")
WIDTH = 64
BIAS = -3.0
BURST_LR, BURST_STEPS = 1.0, 20
LEARNS = 0.5  # test accuracy that counts as "the network learns" (chance is 0.1)


def _model(activation: str, bias: float, seed: int):
    kw = {"num_parameters": WIDTH} if activation == "prelu" else None
    return nn.MLP([64, WIDTH, WIDTH, 10], activation, bias_init=bias, activation_kwargs=kw, generator=seed)


def _slopes(model) -> list:
    return [np.array(m.weight.data).tolist() for m in model.modules() if isinstance(m, PReLU)]


def kill_by_bias(activation: str, optimizer: str, epochs: int, seed: int) -> dict:
    """Hidden biases at -3, then train; dead fractions, gradients and accuracy along the way."""
    from ..diagnostics import Monitor

    Xtr, Xte, ytr, yte = digits(seed)
    model = _model(activation, BIAS, seed)
    out = {"activation": activation, "optimizer": optimizer, "inactive_start": inactive_fractions(model, Xtr),
           "dead_start": dead_fractions(model, Xtr),
           "grad_norm_start": layer_grad_norms(model, Xtr[:512], ytr[:512], F.cross_entropy)}
    model.zero_grad()
    opt = optim.Adam(model.parameters(), lr=1e-3) if optimizer == "adam" else optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    mon = Monitor(probe=(Xtr[:512], ytr[:512]))
    h = fit(model, F.cross_entropy, opt, Xtr, ytr, epochs=epochs, batch_size=32, validation=(Xte, yte), seed=seed,
            callbacks=[mon], progress=False)
    out.update(loss=h["loss"], val_accuracy=h["val_accuracy"], inactive_end=inactive_fractions(model, Xtr),
               dead_end=dead_fractions(model, Xtr),
               final_accuracy=h["val_accuracy"][-1],
               monitor_grad_norm=[[layer["grad_norm"] for layer in rec["layers"]] for rec in mon.records],
               monitor_dead_fraction=[[layer.get("dead_fraction") for layer in rec["layers"]] for rec in mon.records],
               prelu_slopes=_slopes(model))
    return out


def kill_by_learning_rate(activation: str, epochs: int, seed: int) -> dict:
    """20 steps of SGD at lr 1.0, then Adam at lr 1e-3; which units died and which came back."""
    Xtr, Xte, ytr, yte = digits(seed)
    model = _model(activation, 0.0, seed)
    out = {"activation": activation, "seed": seed, "inactive_start": inactive_fractions(model, Xtr),
           "dead_start": dead_fractions(model, Xtr), "diverged": None}
    n = 32 * BURST_STEPS
    try:
        with np.errstate(all="ignore"):  # a blow-up is one of the outcomes measured here
            fit(model, F.cross_entropy, optim.SGD(model.parameters(), lr=BURST_LR), Xtr[:n], ytr[:n], epochs=1,
                batch_size=32, seed=seed, progress=False)
    except DivergenceError:
        out["diverged"] = "during the large-learning-rate steps"
        return out
    z1 = _first_layer_inactive_mask(model, Xtr)
    out.update(inactive_after_burst=inactive_fractions(model, Xtr), dead_after_burst=dead_fractions(model, Xtr),
               accuracy_after_burst=evaluate(model, F.cross_entropy, Xte, yte)["accuracy"])
    try:
        with np.errstate(all="ignore"):
            h = fit(model, F.cross_entropy, optim.Adam(model.parameters(), lr=1e-3), Xtr, ytr, epochs=epochs,
                    batch_size=32, validation=(Xte, yte), seed=seed, progress=False)
    except DivergenceError:
        out["diverged"] = "during the training that followed"
        return out
    z2 = _first_layer_inactive_mask(model, Xtr)
    out.update(inactive_end=inactive_fractions(model, Xtr), dead_end=dead_fractions(model, Xtr),
               val_accuracy=h["val_accuracy"], final_accuracy=h["val_accuracy"][-1],
               first_layer_inactive_after_burst=int(z1.sum()),
               first_layer_still_inactive=int((z1 & z2).sum()))
    return out


def _first_layer_inactive_mask(model, X) -> np.ndarray:
    from .common import preactivations

    return np.all(preactivations(model, X)[0] <= 0, axis=0)


def run(quick: bool = False, jobs: int = 1, seed: int = 0) -> Result:
    """Measure the claim of ``dying-relu``; arguments as :func:`chainrule.lab.run` describes."""
    r = new_result("dying-relu", quick, seed)
    epochs = 12 if quick else 15
    lr_epochs = 6 if quick else 10
    seeds = [seed] if quick else [seed, seed + 1, seed + 2]
    r.settings = {"network": f"64 -> {WIDTH} -> {WIDTH} -> 10", "bias_init": BIAS, "epochs_after_bias_kill": epochs,
                  "optimizer": "Adam lr 1e-3, batch 32", "burst": f"{BURST_STEPS} steps of SGD at lr {BURST_LR}",
                  "epochs_after_burst": lr_epochs, "burst_seeds": seeds, "learns_threshold": LEARNS,
                  "leaky_relu_slope": 0.01, "prelu": f"one slope per unit, starting at 0.25", "elu_alpha": 1.0,
                  "gradients": "chainrule.diagnostics.Monitor (grad_norm per layer)",
                  "dead": "chainrule.diagnostics.unit_health on the training set"}

    tasks = [{"activation": a, "optimizer": "adam", "epochs": epochs, "seed": seed} for a in ACTS]
    if not quick:
        tasks += [{"activation": a, "optimizer": "sgd", "epochs": epochs, "seed": seed} for a in ACTS]
    tasks_lr = [{"activation": a, "epochs": lr_epochs, "seed": s} for a in ACTS for s in seeds]
    bias_runs = parallel_map(kill_by_bias, tasks, jobs)
    lr_runs = parallel_map(kill_by_learning_rate, tasks_lr, jobs)
    r.numbers["bias_kill"], r.numbers["learning_rate_kill"] = bias_runs, lr_runs
    adam = {b["activation"]: b for b in bias_runs if b["optimizer"] == "adam"}

    def pct(xs):
        return "/".join("-" if x is None else f"{x:.0%}" for x in xs)

    for opt_name in ("adam", "sgd"):
        runs = [b for b in bias_runs if b["optimizer"] == opt_name]
        if runs:
            r.add_table(
                f"Hidden biases start at {BIAS:g}, then {'Adam lr 1e-3' if opt_name == 'adam' else 'SGD lr 0.01, momentum 0.9'}"
                f" for {epochs} epochs (layer 1/layer 2; below zero: z <= 0 on every training image; dead: "
                "no gradient to speak of on any, by chainrule.diagnostics.unit_health)",
                ["activation", "below zero at start", "dead at start", "||dL/dW1|| at start", "below zero at end",
                 "dead at end", "loss first epoch", "loss last epoch", "test accuracy"],
                [[b["activation"], pct(b["inactive_start"]), pct(b["dead_start"]), fmt(b["grad_norm_start"][0], 3),
                  pct(b["inactive_end"]), pct(b["dead_end"]), fmt(b["loss"][0]), fmt(b["loss"][-1]),
                  fmt(b["final_accuracy"], 3)] for b in runs],
            )

    relu = adam["relu"]
    hidden_grads = [g for rec in relu["monitor_grad_norm"] for g in rec[:-1]]
    relu_loss_change = abs(relu["loss"][-1] - relu["loss"][0])
    r.check(
        f"A large negative bias ({BIAS:g}) kills the ReLUs; they stay dead and the network stops learning",
        min(relu["dead_start"]) == 1.0 and min(relu["dead_end"]) == 1.0 and max(hidden_grads) == 0.0
        and relu_loss_change < 1e-3 and relu["final_accuracy"] < 0.2,
        f"dead units {pct(relu['dead_start'])} at the start and {pct(relu['dead_end'])} after {epochs} epochs; the "
        f"Monitor saw hidden-layer gradient norms of exactly {fmt(max(hidden_grads))} at every epoch; the loss moved "
        f"by {fmt(relu_loss_change)} and the test accuracy is {fmt(relu['final_accuracy'], 3)} (chance 0.1)",
    )
    others = [a for a in ACTS if a != "relu"]
    r.check(
        "Under the same bias, Leaky ReLU, PReLU and ELU units still get a gradient",
        all(adam[a]["grad_norm_start"][0] > 0 for a in others) and relu["grad_norm_start"][0] == 0.0,
        "||dL/dW1|| at the start: " + ", ".join(f"{a} {fmt(adam[a]['grad_norm_start'][0], 3)}" for a in ACTS),
    )
    rec = {a: adam[a]["final_accuracy"] >= LEARNS and max(adam[a]["inactive_end"]) < min(adam[a]["inactive_start"]) for a in others}
    r.check(
        "... and they recover: the units the bias pushed below zero come back and the network learns",
        all(rec.values()),
        "; ".join(f"{a}: below zero {pct(adam[a]['inactive_start'])} -> {pct(adam[a]['inactive_end'])}, test accuracy "
                  f"{fmt(adam[a]['final_accuracy'], 3)}" for a in others) + f" (learning means at least {LEARNS})",
    )
    sgd = {b["activation"]: b for b in bias_runs if b["optimizer"] == "sgd"}
    if sgd:
        r.notes.append(
            "With SGD and momentum (steps proportional to the gradient) the same start is harder: test accuracy "
            + ", ".join(f"{a} {fmt(sgd[a]['final_accuracy'], 3)}" for a in ACTS)
            + f" after {epochs} epochs. A Leaky ReLU's gradient through two dead layers is scaled by 0.01 x 0.01, so "
            "its recovery is real but slow; Adam divides each step by the gradient's own size and recovers quickly. "
            "The ReLU network, with exactly zero gradient, recovers under neither."
        )

    # killing by a too-large learning rate
    rows = []
    for x in lr_runs:
        if x["diverged"]:
            rows.append([x["activation"], x["seed"], pct(x["inactive_start"]), f"diverged {x['diverged']}", "-", "-", "-", "-"])
        else:
            rows.append([x["activation"], x["seed"], pct(x["inactive_start"]), pct(x["inactive_after_burst"]),
                         pct(x["inactive_end"]), pct(x["dead_end"]),
                         f"{x['first_layer_still_inactive']} of {x['first_layer_inactive_after_burst']}", fmt(x["final_accuracy"], 3)])
    r.add_table(
        f"{BURST_STEPS} steps of SGD at lr {BURST_LR:g}, then Adam lr 1e-3 for {lr_epochs} epochs (layer 1/layer 2; "
        "below zero and dead as in the table above)",
        ["activation", "seed", "below zero at start", "below zero after the large steps", "below zero at end",
         "dead at end", "layer-1 units below zero after the large steps that still are", "test accuracy"],
        rows,
    )
    relu_lr = [x for x in lr_runs if x["activation"] == "relu"]
    killed = [x for x in relu_lr if not x["diverged"]]
    stay = all(x["first_layer_still_inactive"] == x["first_layer_inactive_after_burst"] for x in killed)
    kill_frac = [x["dead_after_burst"][0] for x in killed]
    rose = all(x["dead_after_burst"][0] > x["dead_start"][0] for x in killed)
    r.check(
        "A too-large learning rate kills ReLUs, and the killed units of the first layer stay dead",
        bool(killed) and rose and stay,
        f"layer-1 dead fraction {pct([x['dead_start'][0] for x in killed])} at the start, "
        f"{pct(kill_frac)} after {BURST_STEPS} steps at lr {BURST_LR:g} (seeds {seeds}); still dead after "
        f"{lr_epochs} epochs of Adam: " + ", ".join(f"{x['first_layer_still_inactive']} of {x['first_layer_inactive_after_burst']}" for x in killed),
    )
    outcome = {}
    for a in others:
        xs = [x for x in lr_runs if x["activation"] == a]
        ok = [x for x in xs if not x["diverged"] and x["final_accuracy"] >= LEARNS
              and x["first_layer_still_inactive"] < x["first_layer_inactive_after_burst"]]
        outcome[a] = (len(ok), len(xs), sum(1 for x in xs if x["diverged"]))
    r.numbers["learning_rate_kill_recovered"] = {a: {"recovered": o[0], "runs": o[1], "diverged": o[2]} for a, o in outcome.items()}
    r.check(
        "Under the same too-large learning rate, Leaky ReLU, PReLU and ELU recover",
        all(o[0] == o[1] for o in outcome.values()),
        "runs in which some of the layer-1 units pushed below zero by the large steps came back and the network learned "
        f"(test accuracy at least {LEARNS}): "
        + ", ".join(f"{a} {o[0]} of {o[1]}" + (f" ({o[2]} diverged)" if o[2] else "") for a, o in outcome.items()),
    )
    if killed:
        r.notes.append(
            "Only part of the ReLUs died from the large steps, and the living ones still learned (test accuracy "
            + ", ".join(fmt(x["final_accuracy"], 3) for x in killed)
            + "): a partly dead ReLU network loses capacity, not all learning. It stops learning when every unit "
            "of a layer is dead, as in the bias experiment."
        )
    elu_dead = [x["dead_end"][0] for x in lr_runs if x["activation"] == "elu" and not x["diverged"]]
    r.notes.append(
        "Why a too-large learning rate is a different matter: the same steps that push ReLUs below zero can blow "
        "up a PReLU network (its slopes are parameters taking the same huge steps), and push ELU units so far "
        "negative that they saturate at -1, where ELU's slope e^z is as good as zero. Such a unit is dead by "
        "the one definition the lab, the Monitor and the dashboard share (its slope below 1% of its peak on every "
        "image)" + (f": {pct(elu_dead)} of ELU's first layer at the end of the runs that did not diverge" if elu_dead else "")
        + ". Leaky ReLU's fixed slope keeps a gradient. So for deaths from the learning rate the cure is a smaller "
        "learning rate (or Adam), not another activation."
    )

    slopes = adam["prelu"]["prelu_slopes"]
    moved = float(np.mean([abs(s - 0.25) for layer in slopes for s in layer]))
    r.numbers["prelu_mean_abs_slope_change"] = moved
    r.check(
        "PReLU learns its slopes",
        moved > 0.01,
        "learned slopes after the bias experiment: " + "; ".join(
            f"layer {i + 1} mean {fmt(np.mean(s), 3)}, range [{fmt(np.min(s), 3)}, {fmt(np.max(s), 3)}]" for i, s in enumerate(slopes))
        + f" (from 0.25; mean change {fmt(moved, 3)})",
    )
    _figures(r, adam, slopes)
    return r


def _figures(r: Result, adam: dict, slopes: list) -> None:
    fig, axes = new_figure(2, 1, width=4.8, height=3.6)
    for a, b in adam.items():
        ep = range(1, len(b["loss"]) + 1)
        axes[0][0].plot(ep, b["loss"], "o-", ms=3, label=a)
        axes[0][1].plot(ep, b["val_accuracy"], "o-", ms=3, label=a)
    axes[0][0].set(xlabel="epoch", ylabel="training loss", title=f"Hidden biases start at {BIAS:g}")
    axes[0][1].set(xlabel="epoch", ylabel="test accuracy", ylim=(0, 1), title="Test accuracy")
    axes[0][0].legend(fontsize=8)
    r.add_figure("bias", "Training after a large negative bias: the ReLU network never moves; the others recover.", fig)

    fig, axes = new_figure(2, 1, width=4.8, height=3.6)
    x = np.arange(len(ACTS))
    for k, (key, label) in enumerate((("inactive_start", "start"), ("inactive_end", "end"))):
        for layer in range(2):
            axes[0][layer].bar(x + (k - 0.5) * 0.38, [adam[a][key][layer] for a in ACTS], width=0.38, label=label)
    for layer in range(2):
        axes[0][layer].set(xticks=x, xticklabels=ACTS, ylabel="share below zero on every image", ylim=(0, 1.05), title=f"Hidden layer {layer + 1}")
    axes[0][0].legend(fontsize=8)
    r.add_figure("dead", "Share of units with no positive pre-activation on any training image, before and after "
                 "(for ReLU these are dead; the others still pass back a gradient from there).", fig)

    fig, axes = new_figure(1, 1, width=5.0, height=3.4)
    for i, s in enumerate(slopes):
        axes[0][0].hist(s, bins=20, alpha=0.6, label=f"layer {i + 1}")
    axes[0][0].axvline(0.25, color="0.3", ls=":", lw=1)
    axes[0][0].set(xlabel="learned negative slope", ylabel="units", title="PReLU slopes after training (dotted: start 0.25)")
    axes[0][0].legend(fontsize=8)
    r.add_figure("prelu", "The negative-side slopes PReLU learned, one per unit.", fig)
