"""digit-losses: one output trained with MSE on the digit's value against ten outputs with softmax cross-entropy.

Both networks are 64 -> 64 -> 64 -> (1 or 10) ReLU MLPs trained the same way
(Adam, lr 1e-3, batch 32) on the same digits. The regressor's answer is its
output rounded to the nearest digit in 0..9. Then the lesson's doubtful digit:
a test image labelled 0 or 6 that the regressor calls a 3 is searched for,
and pixel blends (0 + 6) / 2 of test zeros and sixes are built, which look like
either digit and like no 3; what each model says about them is measured.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import nn, optim
from ..train import fit, predict
from .common import Result, new_result, digits, fmt, new_figure


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def run(quick: bool = False, jobs: int = 1, seed: int = 0) -> Result:
    """Measure the claim of ``digit-losses``; arguments as :func:`chainrule.lab.run` describes."""
    r = new_result("digit-losses", quick, seed)
    epochs, n_pairs = (20, 40) if quick else (40, 100)
    r.settings = {"networks": "64 -> 64 -> 64 -> 1 (MSE on the value) and 64 -> 64 -> 64 -> 10 (cross-entropy), ReLU",
                  "optimizer": "Adam lr 1e-3, batch 32", "epochs": epochs, "blend_pairs": n_pairs}
    Xtr, Xte, ytr, yte = digits(seed)
    reg = nn.MLP([64, 64, 64, 1], "relu", generator=seed)
    fit(reg, F.mse_loss, optim.Adam(reg.parameters(), lr=1e-3), Xtr, ytr.astype(np.float32), epochs=epochs, seed=seed, progress=False)
    clf = nn.MLP([64, 64, 64, 10], "relu", generator=seed)
    fit(clf, F.cross_entropy, optim.Adam(clf.parameters(), lr=1e-3), Xtr, ytr, epochs=epochs, seed=seed, progress=False)

    value = predict(reg, Xte)[:, 0]
    called = np.clip(np.round(value), 0, 9).astype(int)
    probs = _softmax(predict(clf, Xte))
    acc_reg, acc_clf = float(np.mean(called == yte)), float(np.mean(probs.argmax(1) == yte))
    per_class = {int(c): {"mean_output": float(value[yte == c].mean()), "regressor_accuracy": float(np.mean(called[yte == c] == c)),
                          "classifier_accuracy": float(np.mean(probs[yte == c].argmax(1) == c))} for c in range(10)}
    r.numbers.update({"regressor_accuracy": acc_reg, "classifier_accuracy": acc_clf,
                      "regressor_test_mse": float(np.mean((value - yte) ** 2)), "per_class": per_class})
    r.add_table(
        "Test accuracy per digit",
        ["digit", "regressor: mean output", "regressor accuracy", "classifier accuracy"],
        [[c, fmt(v["mean_output"], 3), fmt(v["regressor_accuracy"], 3), fmt(v["classifier_accuracy"], 3)] for c, v in per_class.items()]
        + [["all", "", fmt(acc_reg, 3), fmt(acc_clf, 3)]],
    )
    r.check(
        "Ten outputs with softmax cross-entropy beat one output trained with MSE on the digit's value",
        acc_clf > acc_reg + 0.1,
        f"test accuracy: cross-entropy {fmt(acc_clf, 3)}, MSE regression (rounded) {fmt(acc_reg, 3)}",
    )

    # real doubtful digits: labelled 0 or 6, called 3 by the regressor
    real = np.flatnonzero(np.isin(yte, [0, 6]) & (called == 3))
    r.numbers["real_zero_or_six_called_three"] = [
        {"test_index": int(i), "label": int(yte[i]), "regressor_output": float(value[i]),
         "classifier_probabilities": probs[i].tolist()} for i in real]

    # blends of a zero and a six
    rng = np.random.default_rng(seed)
    zeros, sixes = Xte[yte == 0], Xte[yte == 6]
    i, j = rng.integers(0, len(zeros), n_pairs), rng.integers(0, len(sixes), n_pairs)
    alphas = np.linspace(0, 1, 11)
    path_value, path_probs = [], []
    for a in alphas:
        B = ((1 - a) * zeros[i] + a * sixes[j]).astype(np.float32)
        path_value.append(predict(reg, B)[:, 0])
        path_probs.append(_softmax(predict(clf, B)))
    mid = len(alphas) // 2
    bv, bp = path_value[mid], path_probs[mid]
    median = float(np.median(bv))
    frac3 = float(np.mean(np.clip(np.round(bv), 0, 9) == 3))
    between = float(np.mean((bv > 1) & (bv < 5)))
    p06, p3 = float(np.mean(bp[:, 0] + bp[:, 6])), float(np.mean(bp[:, 3]))
    top06 = float(np.mean(np.isin(bp.argmax(1), [0, 6])))
    r.numbers["blends"] = {"median_regressor_output": median, "fraction_called_three": frac3,
                           "fraction_output_between_1_and_5": between, "classifier_mean_p0_plus_p6": p06,
                           "classifier_mean_p3": p3, "classifier_fraction_top_class_0_or_6": top06,
                           "alphas": alphas.tolist(), "mean_regressor_output_along_blend": [float(v.mean()) for v in path_value],
                           "mean_classifier_probabilities_along_blend": [p.mean(0).tolist() for p in path_probs]}
    r.add_table(
        f"What the two models say about {n_pairs} blends (0 + 6) / 2",
        ["measure", "value"],
        [["regressor: median output", fmt(median, 3)], ["regressor: share called 3", fmt(frac3, 3)],
         ["regressor: share with output between 1 and 5", fmt(between, 3)],
         ["classifier: mean p(0) + p(6)", fmt(p06, 3)], ["classifier: mean p(3)", fmt(p3, 3)],
         ["classifier: share whose top class is 0 or 6", fmt(top06, 3)],
         ["real test images labelled 0 or 6 that the regressor calls 3", len(real)]],
    )
    r.check(
        "On a digit between 0 and 6 the regressor answers in between: about 3 (within one digit of it)",
        abs(median - 3) <= 1 and between >= 0.9,
        f"median regressor output on the blends {fmt(median, 3)}; {frac3:.0%} of them rounded to exactly 3 and "
        f"{between:.0%} lay between 1 and 5; on the real test set {len(real)} image(s) labelled 0 or 6 were called 3"
        + (f" (outputs {', '.join(fmt(value[k], 3) for k in real)})" if len(real) else ""),
    )
    r.check(
        "The classifier splits its belief between 0 and 6 and gives 3 almost nothing",
        p06 > 0.9 and p3 < 0.01 and top06 == 1.0,
        f"on the blends: mean p(0) + p(6) = {fmt(p06, 3)}, mean p(3) = {fmt(p3, 3)}, top class 0 or 6 for {top06:.0%}",
    )
    r.notes.append(
        "The regressor's single number forces an order on the digits: halfway between the values 0 and 6 lies 3, "
        "whatever a 3 looks like. The classifier's ten outputs have no order; an image between a 0 and a 6 "
        "gets probability split between 0 and 6."
    )
    _figures(r, value, yte, called, probs, zeros[i[0]], sixes[j[0]], bv[0], bp[0], real, Xte, alphas, path_value, path_probs)
    return r


def _figures(r, value, yte, called, probs, zero, six, bval, bprob, real, Xte, alphas, path_value, path_probs) -> None:
    fig, axes = new_figure(1, 1, width=5.4, height=3.8)
    ax = axes[0][0]
    jitter = np.random.default_rng(0).uniform(-0.25, 0.25, len(yte))
    ax.scatter(yte + jitter, value, s=6, c=(called == yte), cmap="RdYlGn", vmin=0, vmax=1)
    ax.plot([-0.5, 9.5], [-0.5, 9.5], color="0.5", lw=0.8)
    for k in range(10):
        ax.axhspan(k - 0.5, k + 0.5, color="0.9" if k % 2 else "1.0", zorder=-1)
    ax.set(xlabel="true digit", ylabel="regressor output", title="MSE regression on the digit's value (red: wrong)", xticks=range(10))
    r.add_figure("regression", "The regressor's output for each test image, by true digit; bands show which digit it rounds to.", fig)

    shown = [("a test 0", zero, None, None), ("a test 6", six, None, None), ("their blend", 0.5 * (zero + six), bval, bprob)]
    shown += [(f"test image {k}, label {yte[k]}", Xte[k], value[k], probs[k]) for k in list(real)[:2]]
    fig, axes = new_figure(len(shown), 1, width=2.6, height=3.0)
    for ax, (title, img, v, p) in zip(axes[0], shown):
        ax.imshow(np.asarray(img).reshape(8, 8), cmap="gray_r")
        ax.set(xticks=[], yticks=[], title=title)
        if v is not None:
            top = np.argsort(p)[::-1][:2]
            ax.set_xlabel(f"regressor: {v:.2f}\nclassifier: " + ", ".join(f"{t}: {p[t]:.2f}" for t in top), fontsize=8)
    r.add_figure("doubtful", "Digits between 0 and 6: what the regressor and the classifier answer.", fig)

    fig, axes = new_figure(2, 1, width=4.6, height=3.4)
    pv = np.array([v.mean() for v in path_value])
    pp = np.array([p.mean(0) for p in path_probs])
    axes[0][0].plot(alphas, pv, "o-")
    axes[0][0].axhline(3, color="0.5", ls=":", lw=1)
    axes[0][0].set(xlabel="blend weight of the 6", ylabel="mean regressor output", title="Regressor along the blend")
    for c, colour in ((0, "tab:blue"), (6, "tab:orange"), (3, "tab:red")):
        axes[0][1].plot(alphas, pp[:, c], "o-", color=colour, label=f"p({c})")
    axes[0][1].set(xlabel="blend weight of the 6", ylabel="mean probability", title="Classifier along the blend", ylim=(0, 1))
    axes[0][1].legend(fontsize=8)
    r.add_figure("blend", "From a 0 (left) to a 6 (right): the regressor passes through 3, the classifier never says 3.", fig)
