"""multi-label: softmax with cross-entropy against one sigmoid per label with binary cross-entropy.

The objects set (:func:`chainrule.data.load_objects`): 12x12 images holding any
subset of five shapes, each present with probability 1/2. Two identical
networks (144 -> 128 -> 128 -> 5, ReLU, Adam lr 1e-3) differ only in the head:

- softmax + cross-entropy, the multi-hot row normalised into a distribution
  (an image with k objects gets 1/k on each); a label is predicted where its
  softmax probability exceeds a threshold. Softmax gets two thresholds: 0.5,
  and the one that gives the best subset accuracy on the training set, so that
  it is not judged by a threshold that does not suit it;
- one sigmoid per label + binary cross-entropy, a label predicted where its
  probability exceeds 0.5.

Subset accuracy counts images whose whole label set is right; micro-F1 pools
every (image, label) decision.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import nn, optim
from ..metrics import multilabel_scores
from ..train import fit, predict
from .common import Result, new_result, fmt, new_figure, parallel_map

THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def _data(n: int, seed: int) -> tuple:
    from ..data import load_objects, train_test_split

    X, Y, names = load_objects(n_samples=n, seed=seed)
    Xtr, Xte, Ytr, Yte = train_test_split(X, Y, test_size=0.25, seed=seed)
    return Xtr, Xte, Ytr, Yte, names


def train_head(head: str, n: int, epochs: int, seed: int) -> dict:
    """Train one network with a "softmax" or "sigmoid" head; its train and test probabilities."""
    Xtr, Xte, Ytr, Yte, names = _data(n, seed)
    model = nn.MLP([Xtr.shape[1], 128, 128, Ytr.shape[1]], "relu", generator=seed)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    if head == "softmax":
        counts = Ytr.sum(axis=1, keepdims=True)
        target = np.divide(Ytr, counts, out=np.zeros_like(Ytr), where=counts > 0)
        fit(model, F.cross_entropy, opt, Xtr, target, epochs=epochs, seed=seed, progress=False)
        squash = _softmax
    else:
        fit(model, F.binary_cross_entropy_with_logits, opt, Xtr, Ytr, epochs=epochs, seed=seed, progress=False)
        squash = _sigmoid
    return {"head": head, "train_probs": squash(predict(model, Xtr)), "test_probs": squash(predict(model, Xte)),
            "Ytr": Ytr, "Yte": Yte, "names": names}


def run(quick: bool = False, jobs: int = 1, seed: int = 0) -> Result:
    """Measure the claim of ``multi-label``; arguments as :func:`chainrule.lab.run` describes."""
    r = new_result("multi-label", quick, seed)
    n, epochs = (2000, 10) if quick else (6000, 20)
    r.settings = {"dataset": f"load_objects(n_samples={n}, seed={seed}), 75/25 split", "network": "144 -> 128 -> 128 -> 5, ReLU",
                  "optimizer": "Adam lr 1e-3, batch 32", "epochs": epochs,
                  "softmax_threshold": "0.5, and the best on the training set", "sigmoid_threshold": 0.5}
    soft, sig = parallel_map(train_head, [{"head": h, "n": n, "epochs": epochs, "seed": seed} for h in ("softmax", "sigmoid")], jobs)
    Ytr, Yte = soft["Ytr"], soft["Yte"]

    train_subset = [multilabel_scores(soft["train_probs"], Ytr, threshold=t)["subset_accuracy"] for t in THRESHOLDS]
    best_t = float(THRESHOLDS[int(np.argmax(train_subset))])
    scores = {
        "softmax + CE, threshold 0.5": multilabel_scores(soft["test_probs"], Yte, threshold=0.5),
        f"softmax + CE, threshold {best_t:g} (best on train)": multilabel_scores(soft["test_probs"], Yte, threshold=best_t),
        "sigmoids + BCE, threshold 0.5": multilabel_scores(sig["test_probs"], Yte, threshold=0.5),
    }
    r.numbers.update({"softmax_best_threshold": best_t, "softmax_train_subset_accuracy_by_threshold": dict(zip(THRESHOLDS.tolist(), train_subset)),
                      "test_scores": scores, "mean_labels_per_image": float(Yte.sum(1).mean())})
    r.add_table(
        f"Test set ({len(Yte)} images, {Yte.sum(1).mean():.2f} objects per image on average)",
        ["model", "subset accuracy", "micro-F1", "Hamming loss"],
        [[k, fmt(v["subset_accuracy"], 3), fmt(v["micro_f1"], 3), fmt(v["hamming_loss"], 3)] for k, v in scores.items()],
    )

    k_true = Yte.sum(1).astype(int)
    by_k, rows = {}, []
    for k in range(Yte.shape[1] + 1):
        m = k_true == k
        if not m.any():
            continue
        s = multilabel_scores(soft["test_probs"][m], Yte[m], threshold=best_t)["subset_accuracy"]
        g = multilabel_scores(sig["test_probs"][m], Yte[m], threshold=0.5)["subset_accuracy"]
        present = Yte[m] > 0.5
        p_soft = float(soft["test_probs"][m][present].mean()) if present.any() else float("nan")
        p_sig = float(sig["test_probs"][m][present].mean()) if present.any() else float("nan")
        by_k[k] = {"images": int(m.sum()), "softmax_subset_accuracy": s, "sigmoid_subset_accuracy": g,
                   "softmax_mean_p_present": p_soft, "sigmoid_mean_p_present": p_sig}
        # an image with no object has no present object to average over: a dash, not a nan
        shown = [fmt(p, 3) if present.any() else "- (none present)" for p in (p_soft, p_sig)]
        rows.append([k, int(m.sum()), fmt(s, 3), fmt(g, 3), *shown])
    r.numbers["by_number_of_objects"] = by_k
    r.add_table(
        "By number of objects in the image (test set)",
        ["objects", "images", f"softmax subset accuracy (threshold {best_t:g})", "sigmoid subset accuracy",
         "softmax: mean probability of a present object", "sigmoid: mean probability of a present object"],
        rows,
    )
    _overfit(r, soft, sig, best_t, n, epochs, seed, quick, jobs)
    s_best = scores[f"softmax + CE, threshold {best_t:g} (best on train)"]
    g = scores["sigmoids + BCE, threshold 0.5"]
    r.check(
        "One sigmoid per label with BCE beats softmax with CE in subset accuracy",
        g["subset_accuracy"] > s_best["subset_accuracy"],
        f"subset accuracy: sigmoids {fmt(g['subset_accuracy'], 3)}, softmax {fmt(s_best['subset_accuracy'], 3)} at its best "
        f"training threshold {best_t:g} ({fmt(scores['softmax + CE, threshold 0.5']['subset_accuracy'], 3)} at 0.5)",
    )
    r.check(
        "... and in F1",
        g["micro_f1"] > s_best["micro_f1"],
        f"micro-F1: sigmoids {fmt(g['micro_f1'], 3)}, softmax {fmt(s_best['micro_f1'], 3)} at threshold {best_t:g}",
    )
    ks = sorted(k for k in by_k if k > 0)
    p_decay = [by_k[k]["softmax_mean_p_present"] for k in ks]
    r.check(
        "Softmax makes the labels compete: the more objects an image holds, the less probability each gets",
        all(b < a for a, b in zip(p_decay, p_decay[1:])),
        "softmax's mean probability of a present object with " + ", ".join(f"{k}: {fmt(p, 3)}" for k, p in zip(ks, p_decay))
        + " objects; sigmoids: " + ", ".join(f"{fmt(by_k[k]['sigmoid_mean_p_present'], 3)}" for k in ks),
    )
    r.notes.append(
        "A softmax must spread one unit of probability over all labels, so with k objects present each gets about "
        "1/k and no single threshold separates 'present' from 'absent' for every k. Independent sigmoids answer "
        "each label's yes-or-no question on its own."
    )
    _figures(r, by_k, train_subset, best_t)
    return r


def _overfit(r: Result, soft: dict, sig: dict, best_t: float, n: int, epochs: int, seed: int, quick: bool, jobs: int) -> None:
    """Name the gap between training and test: both heads overfit, and more images narrow it."""
    gap = {}
    for label, out, t in (("softmax + CE", soft, best_t), ("sigmoids + BCE", sig, 0.5)):
        train = multilabel_scores(out["train_probs"], out["Ytr"], threshold=t)["subset_accuracy"]
        test = multilabel_scores(out["test_probs"], out["Yte"], threshold=t)["subset_accuracy"]
        gap[label] = (train, test)
    r.numbers["train_and_test_subset_accuracy"] = gap
    r.add_table("Training against test set: subset accuracy", ["model", "threshold", "training", "test"],
                [[k, f"{t:g}", fmt(a, 3), fmt(b, 3)] for (k, (a, b)), t in zip(gap.items(), (best_t, 0.5))])
    note = ("Both heads overfit: " + "; ".join(f"{k} gets {fmt(a, 3)} of the training images' label sets right "
                                                 f"and {fmt(b, 3)} of the test images'" for k, (a, b) in gap.items())
            + f". The network (about 35,000 weights) learns the {len(soft['Ytr'])} training images by heart, so the "
            "threshold chosen on the training set and the test scores above belong to overfit networks. The "
            "comparison of the heads stands: both get the same network, data and budget.")
    if not quick:  # the measurement behind it: three times the images, the same number of steps
        more = 3 * n
        big = parallel_map(train_head, [{"head": "sigmoid", "n": more, "epochs": max(1, round(epochs / 3)), "seed": seed}], jobs)[0]
        a = multilabel_scores(big["train_probs"], big["Ytr"], threshold=0.5)["subset_accuracy"]
        b = multilabel_scores(big["test_probs"], big["Yte"], threshold=0.5)["subset_accuracy"]
        r.numbers["sigmoid_with_three_times_the_images"] = {"n": more, "train": a, "test": b}
        note += (f" With three times the images ({more}) and the same number of steps, the sigmoid head gets "
                 f"{fmt(a, 3)} on training and {fmt(b, 3)} on test ({fmt(gap['sigmoids + BCE'][1], 3)} before): the "
                 "gap is the size of the data set, not the head. More data, weight decay or early stopping narrow it.")
    r.notes.append(note)


def _figures(r: Result, by_k: dict, train_subset: list, best_t: float) -> None:
    fig, axes = new_figure(2, 1, width=4.8, height=3.6)
    ks = sorted(by_k)
    ax = axes[0][0]
    ax.plot(ks, [by_k[k]["softmax_mean_p_present"] for k in ks], "o-", label="softmax")
    ax.plot(ks, [by_k[k]["sigmoid_mean_p_present"] for k in ks], "s-", label="sigmoids")
    kk = [k for k in ks if k > 0]
    ax.plot(kk, [1 / k for k in kk], ":", color="0.5", label="1 / k")
    ax.set(xlabel="objects in the image", ylabel="mean probability of a present object", ylim=(0, 1.05), title="Competition")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    ax.plot(ks, [by_k[k]["softmax_subset_accuracy"] for k in ks], "o-", label=f"softmax (threshold {best_t:g})")
    ax.plot(ks, [by_k[k]["sigmoid_subset_accuracy"] for k in ks], "s-", label="sigmoids (0.5)")
    ax.set(xlabel="objects in the image", ylabel="subset accuracy", ylim=(0, 1.05), title="Whole label set right")
    ax.legend(fontsize=8)
    r.add_figure("by-count", "By number of objects per test image: what each head gives a present object, and how often it gets the whole set right.", fig)
    fig, axes = new_figure(1, 1, width=4.8, height=3.4)
    axes[0][0].plot(THRESHOLDS, train_subset, "o-")
    axes[0][0].axvline(best_t, color="0.4", ls=":")
    axes[0][0].set(xlabel="threshold on the softmax probability", ylabel="training subset accuracy", title="Choosing softmax's threshold")
    r.add_figure("threshold", "Softmax's threshold, chosen on the training set (dotted).", fig)
