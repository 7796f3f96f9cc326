"""cross-entropy-asymmetry: H(p, q) = -sum_k p_k log q_k is not symmetric in p and q.

Worked examples and random pairs show that H(p, q) and H(q, p) differ. With
a one-hot target p the reversed order takes log 0 and is infinite for every
prediction a softmax can make (a softmax is never exactly 0), so it cannot be
trained on; with the logarithm on the prediction, log softmax(z) = z -
logsumexp(z) undoes the exponential, and the gradient is softmax(z) - p:
bounded and informative. The convention 0 log 0 = 0 is used throughout.
"""

from __future__ import annotations

import numpy as np

from .. import autograd
from .. import functional as F
from .common import Result, new_result, fmt, new_figure


def cross_entropy(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """H(p, q) = -sum_k p_k log q_k along the last axis, with 0 log 0 = 0 (inf where p_k > 0 = q_k)."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(q), 0.0)
    return terms.sum(axis=-1)


EXAMPLES = [
    ("one-hot target, confident right prediction", [1.0, 0.0, 0.0], [0.7, 0.2, 0.1]),
    ("one-hot target, wrong prediction", [1.0, 0.0, 0.0], [0.1, 0.6, 0.3]),
    ("smoothed target", [0.9, 0.05, 0.05], [0.7, 0.2, 0.1]),
    ("two soft distributions", [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]),
    ("identical distributions", [0.5, 0.3, 0.2], [0.5, 0.3, 0.2]),
]


def run(quick: bool = False, jobs: int = 1, seed: int = 0) -> Result:
    """Measure the claim of ``cross-entropy-asymmetry``; arguments as :func:`chainrule.lab.run` describes."""
    r = new_result("cross-entropy-asymmetry", quick, seed)
    rng = np.random.default_rng(seed)
    n_pairs = 2_000 if quick else 20_000
    r.settings = {"random_pairs": n_pairs, "classes": 5, "convention": "0 log 0 = 0"}

    rows, worked = [], []
    for title, p, q in EXAMPLES:
        hpq, hqp = float(cross_entropy(p, q)), float(cross_entropy(q, p))
        worked.append({"example": title, "p": p, "q": q, "H_p_q": hpq, "H_q_p": hqp})
        rows.append([title, str(p), str(q), fmt(hpq), fmt(hqp)])
    r.numbers["worked_examples"] = worked
    r.add_table("Worked examples (p: the target, q: the prediction)", ["example", "p", "q", "H(p, q)", "H(q, p)"], rows)

    P = rng.dirichlet(np.ones(5), n_pairs)
    Q = rng.dirichlet(np.ones(5), n_pairs)
    gap = np.abs(cross_entropy(P, Q) - cross_entropy(Q, P))
    gibbs = cross_entropy(P, Q) - cross_entropy(P, P)
    frac_differ = float(np.mean(gap > 1e-9))
    r.numbers["random_pairs"] = {"fraction_H_pq_differs_from_H_qp": frac_differ, "median_abs_gap": float(np.median(gap)),
                                 "min_H_pq_minus_H_pp": float(gibbs.min())}
    soft = worked[3]
    r.check(
        "H(p, q) differs from H(q, p)",
        frac_differ > 0.99 and abs(soft["H_p_q"] - soft["H_q_p"]) > 0.01,
        f"H(p, q) = {fmt(soft['H_p_q'])} but H(q, p) = {fmt(soft['H_q_p'])} for p = {soft['p']}, q = {soft['q']}; "
        f"over {n_pairs:,} random pairs of 5-class distributions they differed in {frac_differ:.2%} "
        f"(median gap {fmt(np.median(gap))})",
    )
    r.check(
        "Yet H(p, q) is smallest when the prediction q equals the target p (a sensible thing to minimise)",
        float(gibbs.min()) >= -1e-12,
        f"H(p, q) - H(p, p) >= {fmt(gibbs.min())} over all {n_pairs:,} random pairs",
    )

    # one-hot targets: the reversed order takes log 0
    logits = rng.standard_normal((n_pairs, 5)) * 3
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    labels = rng.integers(0, 5, n_pairs)
    onehot = np.eye(5)[labels]
    forward, reverse = cross_entropy(onehot, probs), cross_entropy(probs, onehot)
    frac_inf, frac_finite = float(np.mean(np.isinf(reverse))), float(np.mean(np.isfinite(forward)))
    r.numbers["one_hot"] = {"fraction_H_q_p_infinite": frac_inf, "fraction_H_p_q_finite": frac_finite,
                            "mean_H_p_q": float(forward.mean())}
    r.check(
        "With a one-hot target, putting the log on the target gives log 0: H(q, p) is infinite",
        frac_inf == 1.0 and frac_finite == 1.0,
        f"for {n_pairs:,} softmax predictions q and one-hot targets p: H(q, p) = inf in {frac_inf:.0%} of cases, "
        f"H(p, q) finite in {frac_finite:.0%} (mean {fmt(forward.mean())})",
    )

    # the log on the prediction undoes the softmax: chainrule's cross_entropy, and its gradient
    z = autograd.tensor(logits[:256], dtype="float64", requires_grad=True)
    loss = F.cross_entropy(z, autograd.tensor(onehot[:256], dtype="float64"), reduction="sum")
    loss.backward()
    formula = float(cross_entropy(onehot[:256], probs[:256]).sum())
    d_loss = abs(float(loss.data) - formula)
    d_grad = float(np.max(np.abs(z.grad - (probs[:256] - onehot[:256]))))
    logsm = np.array(F.log_softmax(autograd.tensor(logits[:256], dtype="float64")).data)
    spread = float(np.max(np.ptp(logsm - logits[:256], axis=1)))
    r.numbers["log_on_prediction"] = {"chainrule_cross_entropy_vs_formula": d_loss, "gradient_vs_softmax_minus_target": d_grad,
                                      "max_spread_of_log_softmax_minus_logits": spread,
                                      "max_abs_gradient": float(np.max(np.abs(z.grad)))}
    r.check(
        "The log on the prediction undoes the softmax's exponential: log softmax(z) = z - constant, gradient softmax(z) - p",
        spread < 1e-12 and d_grad < 1e-12 and d_loss < 1e-9 and float(np.max(np.abs(z.grad))) <= 1.0,
        f"log softmax(z) - z varied by at most {fmt(spread)} across classes; chainrule's cross_entropy matched "
        f"-sum p log q to {fmt(d_loss)} and its gradient matched softmax(z) - p to {fmt(d_grad)} "
        f"(largest |gradient entry| {float(np.max(np.abs(z.grad))):.6f}: it can never leave [-1, 1])",
    )
    _figures(r)
    return r


def _figures(r: Result) -> None:
    q1 = np.linspace(0.001, 0.999, 500)
    fig, axes = new_figure(2, 1, width=4.8, height=3.6)
    for ax, target in zip(axes[0], (1.0, 0.9)):
        p = np.array([target, 1 - target])
        Q = np.stack([q1, 1 - q1], axis=1)
        hpq = cross_entropy(p, Q)
        hqp = cross_entropy(Q, np.broadcast_to(p, Q.shape))
        ax.plot(q1, hpq, color="tab:blue", label="H(p, q): log on the prediction")
        if np.all(np.isinf(hqp)):
            ax.axhspan(0, 8, color="tab:red", alpha=0.12, label="H(q, p) = inf everywhere")
        else:
            ax.plot(q1, hqp, color="tab:red", label="H(q, p): log on the target")
        ax.axvline(target, color="0.4", ls=":", lw=1)
        ax.set(xlabel="predicted probability of class 1, q1", ylabel="cross-entropy", ylim=(0, 8),
               title=f"target p = ({target:g}, {1 - target:.2g})")
        ax.legend(fontsize=8)
    r.add_figure("binary", "Cross-entropy in both orders for a two-class target, as the prediction moves "
                 "(dotted: prediction = target).", fig)
