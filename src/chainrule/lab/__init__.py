"""The lab: each claim of the lesson "going deeper" as an experiment that measures it.

Every experiment states its claim, measures it on seeded data, decides from
the numbers whether the claim held (the verdict is computed, never written
in), and returns tables, figures and every number it measured. ``chainrule lab``
runs them and writes an HTML report; from Python:

    from chainrule import lab
    result = lab.run("activations", quick=True)
    result.verdict, [c.detail for c in result.checks]
    lab.run_lab(quick=True, out="lab-report")      # all of them, and the report

``EXPERIMENTS`` maps each command-line name to its :class:`Experiment`: the
title, the claim and the module (``chainrule.lab.<module>``) whose ``run``
measures it. To add an experiment, write a module with
``run(quick: bool, jobs: int, seed: int) -> Result`` and register it here.
"""

from __future__ import annotations

import importlib
import time
import traceback
from dataclasses import dataclass

from ..errors import ChainruleError
from .common import HELD, NOT_HELD, NOT_RUN, PARTLY, Check, Result


@dataclass(frozen=True)
class Experiment:
    """One experiment of the lab: its command-line name, title, claim and module."""

    name: str
    title: str
    claim: str
    module: str

    def run(self, quick: bool = False, jobs: int = 1, seed: int = 0) -> Result:
        """Measure the claim; returns the Result (with ``seconds`` filled in)."""
        start = time.perf_counter()
        mod = importlib.import_module(f"{__name__}.{self.module}")
        result = mod.run(quick=quick, jobs=jobs, seed=seed)
        result.seconds = time.perf_counter() - start
        return result


_LIST = [
    Experiment(
        "single-weight",
        "Learning a single weight",
        "Gradient descent moves the weight against the sign of the slope of the loss, so it heads for the "
        "minimum; a small learning rate converges smoothly, a larger one overshoots and oscillates while "
        "still converging, and one past the critical value diverges.",
        "single_weight",
    ),
    Experiment(
        "backprop",
        "Backpropagation is the chain rule, memoized",
        "The chain rule applied by hand, automatic differentiation and finite differences give the same "
        "gradient for a network with two hidden layers (float64, within 1e-9); backpropagation reuses "
        "stored derivatives, so the number of local-derivative products it needs grows linearly with depth "
        "while enumerating every path separately grows exponentially.",
        "backprop",
    ),
    Experiment(
        "activations",
        "Six activation functions and their derivatives",
        "The sigmoid's derivative never exceeds 0.25 and vanishes away from zero; tanh is a scaled and "
        "shifted sigmoid whose output is zero-centred; the ReLU's derivative is a step that does not "
        "vanish for positive inputs; Leaky ReLU, PReLU and ELU keep a gradient on the negative side.",
        "activations",
    ),
    Experiment(
        "vanishing-gradients",
        "The vanishing gradient problem",
        "With sigmoid activations the gradient shrinks layer by layer on its way back, so in a deep "
        "network the early layers barely learn; tanh, also saturating, suffers from it too but trains "
        "better than the sigmoid; ReLU-family activations keep the gradient alive, so a deep ReLU network "
        "trains where a deep sigmoid network of the same size and budget does not.",
        "vanishing_gradients",
    ),
    Experiment(
        "dying-relu",
        "Dying ReLUs",
        "A ReLU unit pushed to a large negative bias (or by a too-large learning rate) never fires again: "
        "its gradient is zero, it stays dead and the network stops learning; Leaky ReLU, PReLU and ELU "
        "still pass a gradient, so under the same conditions their units recover and the network learns.",
        "dying_relu",
    ),
    Experiment(
        "digit-losses",
        "Digits are labels, not numbers",
        "Predicting the digit's value with one output and the mean squared error works worse than ten "
        "outputs with softmax cross-entropy, and on a digit that could be a 0 or a 6 the regressor "
        "answers in between, about 3, which it certainly is not; the classifier splits its belief "
        "between 0 and 6.",
        "digit_losses",
    ),
    Experiment(
        "soft-labels",
        "Soft labels",
        "Targets need not be one-hot: training on softened (label-smoothed) targets keeps the accuracy "
        "of one-hot training and makes the predicted probabilities less over-confident, which shows "
        "as a lower expected calibration error.",
        "soft_labels",
    ),
    Experiment(
        "multi-label",
        "Softmax or one sigmoid per label",
        "When a picture can hold several objects at once, softmax's competition between outputs "
        "hurts: one sigmoid per label with binary cross-entropy gets a higher subset accuracy and F1 "
        "than softmax with cross-entropy.",
        "multi_label",
    ),
    Experiment(
        "cross-entropy-asymmetry",
        "Cross-entropy is not symmetric",
        "H(p, q) differs from H(q, p); with a one-hot target p, H(q, p) = -sum q log p takes the log "
        "of 0 and is infinite, which is why the logarithm goes on the predicted distribution, where it "
        "undoes the softmax's exponential.",
        "cross_entropy_asymmetry",
    ),
    Experiment(
        "universal-approximation",
        "Universal approximation, depth and width",
        "One hidden layer of growing width drives the error on a 1-D function towards zero; but a deep "
        "narrow network reaches the same error with far fewer units on a composed function such as a "
        "sawtooth, and being able to represent a function does not mean gradient descent finds it.",
        "universal_approximation",
    ),
    Experiment(
        "going-deeper",
        "Going deeper, fixed: skip connections and normalization",
        "A plain 50-layer sigmoid network does not train: the gradient reaching its first layer is a vanishing "
        "fraction of the last layer's. Skip connections (y = x + block(x)) give the gradient a path around every "
        "block, so the first-to-last ratio stays within about 10x of 1 and 50 layers train; with ReLU the skips "
        "need normalization inside each block, or the signal grows with depth. Normalization alone helps the "
        "sigmoid more than the ReLU, but without skips it does not make 50 plain layers train.",
        "going_deeper",
    ),
]

EXPERIMENTS: dict = {e.name: e for e in _LIST}


def get(name: str) -> Experiment:
    """The experiment registered under ``name`` (underscores and case forgiven)."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in EXPERIMENTS:
        raise ChainruleError(f"unknown experiment {name!r}; expected one of: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[key]


def run(name: str, quick: bool = False, jobs: int = 1, seed: int = 0) -> Result:
    """Run one experiment by name and return its Result.

    Args:
        name: an experiment's name (``chainrule lab --list``).
        quick: the short version (fewer steps, sizes or seeds).
        jobs: worker processes for the sweeps (joblib); the numbers do not depend on it.
        seed: base seed; the same seed gives the same numbers.

    Example:
        >>> r = lab.run("activations", quick=True)
        >>> r.verdict
        'held'
    """
    return get(name).run(quick=quick, jobs=jobs, seed=seed)


def run_safely(name: str, quick: bool = False, jobs: int = 1, seed: int = 0) -> Result:
    """Like :func:`run`, but an experiment that raises gives a Result with ``error`` set (verdict "not run")."""
    exp = get(name)
    start = time.perf_counter()
    try:
        return exp.run(quick=quick, jobs=jobs, seed=seed)
    except Exception as e:  # one broken experiment must not sink the whole report
        r = Result(exp.name, exp.title, exp.claim, quick, seed)
        r.error = f"{type(e).__name__}: {e}"
        r.notes.append(traceback.format_exc(limit=6))
        r.seconds = time.perf_counter() - start
        return r


def run_lab(*args, **kwargs):
    """Run experiments and write the report; see :func:`chainrule.lab.runner.run_lab`."""
    from .runner import run_lab as _run_lab

    return _run_lab(*args, **kwargs)


__all__ = [
    "EXPERIMENTS",
    "HELD",
    "NOT_HELD",
    "NOT_RUN",
    "PARTLY",
    "Check",
    "Experiment",
    "Result",
    "get",
    "run",
    "run_lab",
    "run_safely",
]
