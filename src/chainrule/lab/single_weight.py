"""single-weight: gradient descent on a model with one weight, y_hat = w x.

The loss L(w) = mean((w x - y)^2) is a parabola with curvature L'' = 2 mean(x^2)
and minimum w*. A gradient step w <- w - lr L'(w) multiplies the distance to
the minimum by (1 - lr L''): for lr L'' < 1 the weight creeps up on w* from
one side, for 1 < lr L'' < 2 it jumps across w* each step yet still closes
in, and for lr L'' > 2 every jump lands further away. The slopes come from
chainrule's autograd; the three learning rates are set from the measured
curvature, and what each run did is read off its trajectory.
"""

from __future__ import annotations

import numpy as np

from .. import autograd
from .common import Result, new_result, fmt, legend_outside, new_figure

# learning rates as multiples of 1 / L'': smooth, oscillating, divergent
LR_FACTORS = {"smooth": 0.4, "oscillating": 1.6, "diverging": 2.2}


def slope_and_loss(w: float, x: np.ndarray, y: np.ndarray) -> tuple:
    """(L(w), dL/dw) for L(w) = mean((w x - y)^2), the slope by backpropagation in float64."""
    wt = autograd.tensor(w, dtype="float64", requires_grad=True)
    loss = ((wt * autograd.tensor(x, dtype="float64") - autograd.tensor(y, dtype="float64")) ** 2).mean()
    loss.backward()
    return float(loss.data), float(wt.grad)


def descend(w0: float, lr: float, steps: int, x: np.ndarray, y: np.ndarray) -> dict:
    """Run ``steps`` of w <- w - lr dL/dw from w0; the weights, losses and slopes along the way."""
    ws, losses, slopes = [w0], [], []
    w = w0
    for _ in range(steps):
        loss, g = slope_and_loss(w, x, y)
        losses.append(loss)
        slopes.append(g)
        w = w - lr * g
        ws.append(w)
    losses.append(slope_and_loss(w, x, y)[0])
    return {"w": ws, "loss": losses, "slope": slopes}


def run(quick: bool = False, jobs: int = 1, seed: int = 0) -> Result:
    """Measure the claim of ``single-weight``; arguments as :func:`chainrule.lab.run` describes."""
    r = new_result("single-weight", quick, seed)
    rng = np.random.default_rng(seed)
    n, steps = 64, (15 if quick else 30)
    x = rng.standard_normal(n)
    y = 2.0 * x + 0.3 * rng.standard_normal(n)
    curvature = 2 * float(np.mean(x * x))  # L''(w), the same everywhere for a parabola
    w_star = float(np.mean(x * y) / np.mean(x * x))
    w0 = w_star - 3.0
    r.settings = {"samples": n, "steps": steps, "w0": w0, "lr_factors_of_1_over_curvature": LR_FACTORS}
    r.numbers.update({"curvature": curvature, "w_star": w_star, "critical_lr": 2 / curvature})

    # 1. the slope's sign points away from the minimum, everywhere on a grid
    grid = np.linspace(w_star - 5, w_star + 5, 201)
    grid = grid[np.abs(grid - w_star) > 1e-9]
    toward, lower = 0, 0
    for w in grid:
        loss, g = slope_and_loss(float(w), x, y)
        toward += np.sign(w_star - w) == -np.sign(g)
        lower += slope_and_loss(float(w - 1e-3 * np.sign(g)), x, y)[0] < loss
    frac_toward, frac_lower = toward / len(grid), lower / len(grid)
    r.numbers.update({"grid_points": len(grid), "fraction_minus_slope_points_to_minimum": frac_toward,
                      "fraction_small_step_against_slope_lowers_loss": frac_lower})
    r.check(
        "The sign of the slope says which way the minimum lies: stepping against it lowers the loss",
        frac_toward == 1.0 and frac_lower == 1.0,
        f"at {len(grid)} weights around w* = {w_star:.4f}: -sign(dL/dw) pointed towards w* at {frac_toward:.0%} "
        f"of them, and a step of 1e-3 against the slope lowered the loss at {frac_lower:.0%}",
    )

    runs, rows = {}, []
    for kind, factor in LR_FACTORS.items():
        lr = factor / curvature
        tr = descend(w0, lr, steps, x, y)
        err = np.abs(np.array(tr["w"]) - w_star)
        side = np.sign(np.array(tr["w"]) - w_star)
        crossings = int(np.sum(side[1:] != side[:-1]))
        ratios = err[1:] / err[:-1]
        factor_measured = float(np.exp(np.mean(np.log(ratios))))
        decreasing = bool(np.all(np.diff(tr["loss"]) < 0))
        against = float(np.mean(np.sign(np.diff(tr["w"])) == -np.sign(tr["slope"])))
        runs[kind] = {**tr, "lr": lr, "crossings": crossings, "distance_ratio_per_step": factor_measured,
                      "theory_ratio": abs(1 - lr * curvature), "final_distance": float(err[-1]),
                      "initial_distance": float(err[0]), "loss_decreased_every_step": decreasing,
                      "fraction_steps_against_slope": against}
        behaviour = "diverged" if err[-1] > err[0] else ("oscillated, converged" if crossings > steps // 2 else "converged smoothly")
        runs[kind]["behaviour"] = behaviour
        rows.append([kind, fmt(lr), fmt(lr * curvature), fmt(factor_measured), fmt(abs(1 - lr * curvature)),
                     crossings, fmt(err[-1]), fmt(tr["loss"][-1]), behaviour])
    r.numbers["runs"] = runs
    r.add_table(
        "Gradient descent on L(w) = mean((w x - y)^2) from w0 = w* - 3",
        ["run", "lr", "lr * L''", "measured |w-w*| ratio per step", "theory |1 - lr L''|", "crossings of w*",
         "final |w - w*|", "final loss", "what happened"],
        rows,
    )

    s, o, d = runs["smooth"], runs["oscillating"], runs["diverging"]
    r.check(
        "A small learning rate converges smoothly",
        s["crossings"] == 0 and s["loss_decreased_every_step"] and s["final_distance"] < 1e-3 * s["initial_distance"],
        f"lr L'' = {LR_FACTORS['smooth']}: never crossed w*, loss fell at every one of {steps} steps, "
        f"|w - w*| went from {fmt(s['initial_distance'])} to {fmt(s['final_distance'])}",
    )
    r.check(
        "A larger learning rate overshoots and oscillates around the minimum, yet converges",
        o["crossings"] == steps and o["final_distance"] < 1e-3 * o["initial_distance"],
        f"lr L'' = {LR_FACTORS['oscillating']}: crossed w* at {o['crossings']} of {steps} steps, "
        f"|w - w*| went from {fmt(o['initial_distance'])} to {fmt(o['final_distance'])}",
    )
    r.check(
        "A learning rate past the critical value 2 / L'' diverges",
        d["final_distance"] > 10 * d["initial_distance"],
        f"lr L'' = {LR_FACTORS['diverging']}: |w - w*| grew from {fmt(d['initial_distance'])} to "
        f"{fmt(d['final_distance'])} (x{d['final_distance'] / d['initial_distance']:.3g})",
    )
    r.notes.append(
        "Each step multiplies the distance to w* by (1 - lr L''); the measured ratio per step matches "
        "this to the printed digits, because the loss is exactly quadratic in w."
    )
    _figures(r, x, y, runs, w_star)
    return r


def _figures(r: Result, x: np.ndarray, y: np.ndarray, runs: dict, w_star: float) -> None:
    colours = {"smooth": "tab:green", "oscillating": "tab:orange", "diverging": "tab:red"}
    fig, axes = new_figure(3, 1, width=4.2, height=3.4)
    span = np.linspace(w_star - 4.5, w_star + 4.5, 300)
    curve = [np.mean((w * x - y) ** 2) for w in span]
    for ax, (kind, tr) in zip(axes[0], runs.items()):
        ws = np.clip(np.array(tr["w"]), span[0], span[-1])
        ax.plot(span, curve, color="0.6")
        ax.plot(ws, [np.mean((w * x - y) ** 2) for w in ws], "o-", ms=3, lw=1, color=colours[kind])
        ax.axvline(w_star, color="0.3", ls=":", lw=1)
        ax.set(title=f"{kind}: lr L'' = {tr['lr'] * 2 * np.mean(x * x):.1f}", xlabel="w", ylabel="L(w)")
    r.add_figure("trajectories", "The loss L(w) and the weights visited by gradient descent (clipped to the plot).", fig)

    # each run its own marker and line style, hollow markers: where two runs overlap both stay visible
    styles = {"smooth": ("o", "-"), "oscillating": ("s", "--"), "diverging": ("^", ":")}
    fig, axes = new_figure(2, 1, width=4.8, height=3.4)
    for kind, tr in runs.items():
        marker, line = styles[kind]
        label = f"{kind} (lr L'' = {tr['lr'] * 2 * np.mean(x * x):.1f})"
        style = dict(marker=marker, ls=line, ms=5, lw=1.2, color=colours[kind], mfc="none", label=label)
        axes[0][0].plot(np.array(tr["w"]) - w_star, **style)
        axes[0][1].semilogy(tr["loss"], **style)
    axes[0][0].set(xlabel="step", ylabel="w - w*", yscale="symlog", title="Distance to the minimum")
    axes[0][1].set(xlabel="step", ylabel="loss L(w) (log scale)", title="Loss")
    legend_outside(axes[0][1])
    factors = {kind: abs(1 - tr["lr"] * 2 * np.mean(x * x)) for kind, tr in runs.items()}
    same = "" if abs(factors["smooth"] - factors["oscillating"]) > 1e-6 else (
        f" The smooth and the oscillating runs have the same loss at every step: both shrink the distance by "
        f"|1 - lr L''| = {factors['smooth']:.1f} per step, one from one side of w*, the other crossing it each time.")
    r.add_figure("curves", "Weight and loss per step for the three learning rates." + same, fig)
