"""activations: the six activations of the lesson and their derivatives, measured by autograd,
with GELU and SiLU, the smooth ReLUs of today's networks, beside them (beyond the lesson).

Each derivative is read from ``backward()`` of ``sum(f(x))`` over a grid of
inputs (each input's gradient is f'(x) there) in float64, and checked against
the formula. Then the claims: the sigmoid's slope is at most 0.25 and dies
away from zero, tanh is a shifted and scaled sigmoid with outputs centred
on zero, ReLU's slope is a step that stays 1 for every positive input, and
the ReLU variants keep a non-zero slope on the negative side. GELU and SiLU are
shown and checked as well, marked as beyond the lesson: slopes that tend to 1 on the
right and to 0 on the left, with a small negative dip in between.
"""

from __future__ import annotations

import math

import numpy as np

from .. import autograd
from .. import functional as F
from .common import Result, new_result, fmt, new_figure

LEAKY_SLOPE = 0.01  # the registry default
PRELU_SLOPE = 0.25  # PReLU's default starting slope (learned in training)


def _prelu(x):
    return F.prelu(x, autograd.tensor([PRELU_SLOPE], dtype="float64"))


ACTIVATIONS = {
    "sigmoid": (F.sigmoid, lambda x: (s := 1 / (1 + np.exp(-x))) * (1 - s)),
    "tanh": (F.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "relu": (F.relu, lambda x: (x > 0).astype(float)),  # ReLU'(0) = 0, as PyTorch
    "leaky_relu": (lambda x: F.leaky_relu(x, LEAKY_SLOPE), lambda x: np.where(x > 0, 1.0, LEAKY_SLOPE)),
    "prelu": (_prelu, lambda x: np.where(x > 0, 1.0, PRELU_SLOPE)),
    "elu": (F.elu, lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0)))),
    # beyond the lesson: Phi(x) + x phi(x), with erf from the standard library as the reference
    "gelu": (F.gelu, lambda x: 0.5 * (1 + _erf(x / math.sqrt(2))) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)),
    "silu": (F.silu, lambda x: (s := 0.5 * (1 + np.tanh(x / 2))) * (1 + x * (1 - s))),
}
BEYOND_THE_LESSON = ("gelu", "silu")
_erf = np.vectorize(math.erf, otypes=[float])


def _label(name: str) -> str:
    return f"{name} (beyond the lesson)" if name in BEYOND_THE_LESSON else name


def value_and_derivative(name: str, x: np.ndarray) -> tuple:
    """(f(x), f'(x)) for a registry activation on a 1-D grid, the derivative by backpropagation."""
    fn = ACTIVATIONS[name][0]
    t = autograd.tensor(x, dtype="float64", requires_grad=True)
    y = fn(t)
    y.sum().backward()
    return np.array(y.data), np.array(t.grad)


def run(quick: bool = False, jobs: int = 1, seed: int = 0) -> Result:
    """Measure the claim of ``activations``; arguments as :func:`chainrule.lab.run` describes."""
    r = new_result("activations", quick, seed)
    dense = np.linspace(-20, 20, 40_001 if quick else 400_001)  # contains 0 exactly
    grid = np.linspace(-6, 6, 1201)
    z = np.random.default_rng(seed).standard_normal(100_000)  # inputs centred on zero
    r.settings = {"grid": "[-20, 20]", "grid_points": len(dense), "leaky_relu_slope": LEAKY_SLOPE,
                  "prelu_slope": PRELU_SLOPE, "elu_alpha": 1.0, "centring_inputs": "100,000 draws of N(0, 1)"}
    curves, rows, stats = {}, [], {}
    for name in ACTIVATIONS:
        y, d = value_and_derivative(name, dense)
        d_formula = ACTIVATIONS[name][1](dense)
        neg = dense < 0
        mean_out = float(np.mean(value_and_derivative(name, z)[0]))
        stats[name] = {
            "f_at_0": float(y[len(dense) // 2]),
            "max_derivative": float(d.max()),
            "argmax_derivative": float(dense[np.argmax(d)]),
            "min_derivative_negative_side": float(d[neg & (dense >= -6)].min()),
            "min_derivative_positive_side": float(d[dense > 0].min()),
            "derivative_at_5": float(np.interp(5.0, dense, d)),
            "mean_output_on_standard_normal": mean_out,
            "max_abs_autograd_vs_formula": float(np.max(np.abs(d - d_formula))),
        }
        s = stats[name]
        rows.append([_label(name), fmt(s["f_at_0"]), fmt(s["max_derivative"]), fmt(s["derivative_at_5"]),
                     fmt(s["min_derivative_negative_side"]), fmt(s["min_derivative_positive_side"]),
                     fmt(s["mean_output_on_standard_normal"]), fmt(s["max_abs_autograd_vs_formula"])])
        curves[name] = value_and_derivative(name, grid)
    r.numbers["activations"] = stats
    r.add_table(
        "Each activation and its derivative (by autograd, float64)",
        ["activation", "f(0)", "max f'", "f'(5)", "min f' on [-6, 0)", "min f' on (0, 20]",
         "mean f(z), z ~ N(0,1)", "autograd vs formula"],
        rows,
    )

    worst = max(s["max_abs_autograd_vs_formula"] for s in stats.values())
    r.check("Autograd's derivatives match the formulas", worst < 1e-12,
            f"largest difference over {len(ACTIVATIONS)} activations and {len(dense):,} inputs: {fmt(worst)}")
    sg = stats["sigmoid"]
    r.check(
        "The sigmoid's derivative never exceeds 0.25",
        sg["max_derivative"] <= 0.25 + 1e-15,
        f"max sigmoid'(x) on [-20, 20] = {sg['max_derivative']:.12f}, reached at x = {fmt(sg['argmax_derivative'])}",
    )
    far = np.abs(dense) >= 5
    _, d_sig = value_and_derivative("sigmoid", dense[far])
    r.numbers["sigmoid_max_derivative_beyond_5"] = float(d_sig.max())
    r.check(
        "The sigmoid's derivative saturates to very small numbers away from zero",
        d_sig.max() < 0.01,
        f"sigmoid'(x) <= {fmt(d_sig.max())} for |x| >= 5, under 3% of its peak; a chain of ten such slopes "
        f"at x = 0 already multiplies the gradient by 0.25^10 = {fmt(0.25 ** 10)}",
    )
    th = stats["tanh"]
    t_odd = float(np.max(np.abs(np.tanh(dense) + np.tanh(-dense))))
    y_t, _ = value_and_derivative("tanh", dense)
    y_s2, _ = value_and_derivative("sigmoid", 2 * dense)
    shift = float(np.max(np.abs(y_t - (2 * y_s2 - 1))))
    r.numbers.update({"tanh_minus_2_sigmoid_2x_plus_1": shift, "tanh_odd_symmetry_error": t_odd})
    r.check(
        "tanh is a scaled and shifted sigmoid, tanh(x) = 2 sigmoid(2x) - 1",
        shift < 1e-12,
        f"largest |tanh(x) - (2 sigmoid(2x) - 1)| = {fmt(shift)}",
    )
    r.check(
        "tanh's output is zero-centred; the sigmoid's is not",
        th["f_at_0"] == 0.0 and abs(th["mean_output_on_standard_normal"]) < 0.01
        and abs(sg["mean_output_on_standard_normal"] - 0.5) < 0.01,
        f"tanh(0) = {fmt(th['f_at_0'])}, mean tanh(z) = {fmt(th['mean_output_on_standard_normal'])} "
        f"against mean sigmoid(z) = {fmt(sg['mean_output_on_standard_normal'])} for z ~ N(0, 1)",
    )
    rl = stats["relu"]
    r.check(
        "ReLU's derivative is a step that does not vanish for positive inputs",
        rl["min_derivative_positive_side"] == 1.0 and rl["max_derivative"] == 1.0 and rl["min_derivative_negative_side"] == 0.0,
        f"relu'(x) = {fmt(rl['min_derivative_positive_side'])} for every x in (0, 20], "
        f"{fmt(rl['min_derivative_negative_side'])} for x < 0",
    )
    keep = {k: stats[k]["min_derivative_negative_side"] for k in ("leaky_relu", "prelu", "elu")}
    r.check(
        "Leaky ReLU, PReLU and ELU keep a non-zero gradient for negative inputs",
        all(v > 0 for v in keep.values()),
        "smallest slope on [-6, 0): " + ", ".join(f"{k} {fmt(v)}" for k, v in keep.items()),
    )
    r.notes.append(
        "ELU's slope on the negative side is e^x: non-zero, but it too shrinks for very negative inputs "
        f"(elu'(-6) = {fmt(keep['elu'])})."
    )
    smooth = {k: stats[k] for k in BEYOND_THE_LESSON}
    far_left = {k: float(value_and_derivative(k, np.array([-10.0]))[1][0]) for k in BEYOND_THE_LESSON}
    r.numbers["derivative_at_minus_10"] = far_left
    r.check(
        "Beyond the lesson: GELU and SiLU are smooth ReLUs, slope near 1 on the right, near 0 far left, dipping below 0 between",
        all(abs(v["derivative_at_5"] - 1) < 0.05 and -0.2 < v["min_derivative_negative_side"] < 0 and abs(far_left[k]) < 0.01
            for k, v in smooth.items()),
        "; ".join(f"{k}'(5) = {fmt(v['derivative_at_5'])}, {k}'(-10) = {fmt(far_left[k])}, max {fmt(v['max_derivative'])} "
                  f"at x = {fmt(v['argmax_derivative'])}, min {fmt(v['min_derivative_negative_side'])} on [-6, 0)" for k, v in smooth.items()),
    )
    r.notes.append(
        "GELU and SiLU are not in the lesson; they are shown for comparison. Their slope dips below 0 for "
        "negative inputs and vanishes far to the left, so a unit pushed far negative learns as slowly as a dead ReLU."
    )
    _figures(r, grid, curves)
    return r


def _figures(r: Result, grid: np.ndarray, curves: dict) -> None:
    fig, axes = new_figure(2, 1, width=5.0, height=3.8)
    for name, (y, d) in curves.items():
        style = "--" if name in BEYOND_THE_LESSON else "-"
        axes[0][0].plot(grid, y, style, label=_label(name))
        axes[0][1].plot(grid, d, style, label=_label(name))
    axes[0][0].set(xlabel="x", ylabel="f(x)", title="Activations", ylim=(-2, 4))
    axes[0][1].axhline(0.25, color="0.5", ls=":", lw=1)
    axes[0][1].set(xlabel="x", ylabel="f'(x)", title="Derivatives (dotted: 0.25)", ylim=(-0.2, 1.2))
    axes[0][0].legend(fontsize=8)
    r.add_figure("functions", "The six activations of the lesson and their derivatives (by backpropagation); "
                 "dashed, GELU and SiLU, beyond the lesson.", fig)
    fig, axes = new_figure(4, 2, width=3.2, height=2.4)
    for ax, (name, (y, d)) in zip(axes.ravel(), curves.items()):
        ax.plot(grid, y, label="f")
        ax.plot(grid, d, label="f'")
        ax.axhline(0, color="0.7", lw=0.6)
        ax.set(title=_label(name), ylim=(-1.5, 3))
    axes[0][0].legend(fontsize=8)
    r.add_figure("panels", "Each activation with its derivative.", fig)
