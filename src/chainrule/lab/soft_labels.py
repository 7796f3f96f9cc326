"""soft-labels: one-hot targets against smoothed ones, judged by accuracy and calibration.

Label smoothing with strength eps trains on the target (1 - eps) one_hot + eps / 10
instead of the one-hot row. The same network (64 -> 128 -> 128 -> 10 ReLU, Adam
lr 1e-3) is trained with each eps and seed. Calibration is the expected
calibration error (ECE, 15 bins): the gap between how confident the model is
and how often it is right, averaged over confidence bins. Over-confidence is
mean confidence minus accuracy (negative: under-confident).
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import nn, optim
from ..metrics import expected_calibration_error
from ..train import fit, predict
from .common import Result, new_result, digits, fmt, new_figure, parallel_map

BINS = 15
MAIN_EPS = 0.1


def train_smoothed(eps: float, epochs: int, seed: int) -> dict:
    """Train with label smoothing ``eps``; test accuracy, ECE, confidence and the test probabilities."""
    Xtr, Xte, ytr, yte = digits(seed)
    model = nn.MLP([64, 128, 128, 10], "relu", generator=seed)

    def loss(out, target):
        return F.cross_entropy(out, target, label_smoothing=eps)

    fit(model, loss, optim.Adam(model.parameters(), lr=1e-3), Xtr, ytr, epochs=epochs, seed=seed, progress=False, task="multiclass")
    z = predict(model, Xte)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    acc = float(np.mean(p.argmax(1) == yte))
    conf = float(p.max(1).mean())
    return {"eps": eps, "seed": seed, "accuracy": acc, "ece": expected_calibration_error(p, yte, bins=BINS),
            "mean_confidence": conf, "overconfidence": conf - acc,
            "nll": float(-np.mean(np.log(p[np.arange(len(yte)), yte] + 1e-12))),
            "confidence": p.max(1).tolist(), "correct": (p.argmax(1) == yte).tolist()}


def run(quick: bool = False, jobs: int = 1, seed: int = 0) -> Result:
    """Measure the claim of ``soft-labels``; arguments as :func:`chainrule.lab.run` describes."""
    r = new_result("soft-labels", quick, seed)
    eps_list = [0.0, MAIN_EPS] if quick else [0.0, 0.05, MAIN_EPS, 0.2]
    seeds = [seed, seed + 1] if quick else [seed, seed + 1, seed + 2]
    epochs = 10 if quick else 30
    r.settings = {"network": "64 -> 128 -> 128 -> 10, ReLU", "optimizer": "Adam lr 1e-3, batch 32", "epochs": epochs,
                  "label_smoothing": eps_list, "seeds": seeds, "ece_bins": BINS, "compared": f"eps = 0 against eps = {MAIN_EPS}"}
    runs = parallel_map(train_smoothed, [{"eps": e, "epochs": epochs, "seed": s} for e in eps_list for s in seeds], jobs)
    r.numbers["runs"] = [{k: v for k, v in x.items() if k not in ("confidence", "correct")} for x in runs]
    mean = {e: {k: float(np.mean([x[k] for x in runs if x["eps"] == e])) for k in ("accuracy", "ece", "mean_confidence", "overconfidence", "nll")}
            for e in eps_list}
    r.numbers["mean_over_seeds"] = {str(e): v for e, v in mean.items()}
    r.add_table(
        f"Test results, mean over seeds {seeds}",
        ["label smoothing eps", "accuracy", "ECE", "mean confidence", "confidence - accuracy", "test NLL"],
        [[f"{e:g}" + (" (one-hot)" if e == 0 else ""), fmt(m["accuracy"], 4), fmt(m["ece"], 3), fmt(m["mean_confidence"], 4),
          fmt(m["overconfidence"], 3), fmt(m["nll"], 3)] for e, m in mean.items()],
    )
    hard, soft = mean[0.0], mean[MAIN_EPS]
    r.check(
        f"Soft labels (eps = {MAIN_EPS}) keep the accuracy of one-hot training (within one point)",
        soft["accuracy"] >= hard["accuracy"] - 0.01,
        f"test accuracy {fmt(soft['accuracy'], 4)} with soft labels against {fmt(hard['accuracy'], 4)} one-hot",
    )
    r.check(
        "Soft labels make the predictions less confident",
        soft["mean_confidence"] < hard["mean_confidence"] and soft["overconfidence"] < hard["overconfidence"],
        f"mean confidence {fmt(soft['mean_confidence'], 4)} against {fmt(hard['mean_confidence'], 4)}; "
        f"confidence - accuracy {fmt(soft['overconfidence'], 3)} against {fmt(hard['overconfidence'], 3)}",
    )
    r.check(
        "... which lowers the expected calibration error",
        soft["ece"] < hard["ece"],
        f"ECE {fmt(soft['ece'], 3)} with soft labels against {fmt(hard['ece'], 3)} one-hot",
    )
    if soft["ece"] >= hard["ece"]:
        r.notes.append(
            f"Why the calibration got worse here: the one-hot network was not over-confident to begin with (its "
            f"confidence was within {abs(hard['overconfidence']):.3f} of its accuracy), so there was no "
            f"over-confidence to remove. Smoothing with eps = {MAIN_EPS} teaches a top probability of about "
            f"1 - eps + eps/10 = {1 - MAIN_EPS + MAIN_EPS / 10:g} while the network is right "
            f"{soft['accuracy']:.1%} of the time, so it becomes under-confident by about that gap "
            f"({fmt(soft['overconfidence'], 3)}), and the ECE measures exactly that gap. The reliability diagram "
            "shows the soft-label points above the diagonal. Label smoothing calibrates models that are "
            "over-confident; on these digits, this network is not."
        )
    _figures(r, runs, eps_list, mean)
    return r


def _reliability(conf: np.ndarray, correct: np.ndarray) -> tuple:
    edges = np.linspace(0, 1, BINS + 1)
    centres, accs, counts = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            centres.append(float(conf[inside].mean()))
            accs.append(float(correct[inside].mean()))
            counts.append(int(inside.sum()))
    return centres, accs, counts


def _figures(r: Result, runs: list, eps_list: list, mean: dict) -> None:
    fig, axes = new_figure(2, 1, width=4.6, height=3.8)
    ax = axes[0][0]
    ax.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls=":")
    for e, colour in ((0.0, "tab:blue"), (MAIN_EPS, "tab:orange")):
        conf = np.concatenate([x["confidence"] for x in runs if x["eps"] == e])
        corr = np.concatenate([x["correct"] for x in runs if x["eps"] == e]).astype(float)
        c, a, n = _reliability(conf, corr)
        ax.plot(c, a, "o-", color=colour, label=f"eps = {e:g} (ECE {mean[e]['ece']:.3f})")
    ax.set(xlabel="confidence (top probability)", ylabel="accuracy", title="Reliability diagram (all seeds)", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.legend(fontsize=8)
    ax = axes[0][1]
    xs = [float(e) for e in eps_list]
    ax.plot(xs, [mean[e]["ece"] for e in eps_list], "o-", label="ECE")
    ax.plot(xs, [mean[e]["overconfidence"] for e in eps_list], "s-", label="confidence - accuracy")
    ax.plot(xs, [1 - mean[e]["accuracy"] for e in eps_list], "^-", label="test error")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set(xlabel="label smoothing eps", title="Calibration and error against smoothing")
    ax.legend(fontsize=8)
    r.add_figure("calibration", "Calibration of one-hot and smoothed training: points above the diagonal are under-confident.", fig)
