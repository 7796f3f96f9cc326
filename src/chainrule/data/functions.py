"""Function-fitting sets: four 1-D curves to approximate and three 2-D classification puzzles.

The universal approximation theorem says one wide hidden layer can fit any of
these; the lab shows how much easier depth makes it. The 1-D curves test
smooth (sine), kinked (abs), discontinuous (step) and repeated-discontinuous
(sawtooth) targets; the 2-D sets need curved (circles), crossed (XOR) and
wound (two spirals) decision boundaries.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError


def _sine(x: np.ndarray) -> np.ndarray:
    return np.sin(np.pi * x)


def _abs(x: np.ndarray) -> np.ndarray:
    return np.abs(x)


def _step(x: np.ndarray) -> np.ndarray:
    return (x >= 0).astype(x.dtype)


def _sawtooth(x: np.ndarray) -> np.ndarray:
    return 2.0 * np.mod(x + 1.0, 1.0) - 1.0


# name -> (target function on [-1, 1], its formula for docs and --help)
FUNCTIONS = {
    "sine": (_sine, "sin(pi x)"),
    "abs": (_abs, "|x|"),
    "step": (_step, "0 for x < 0, 1 for x >= 0"),
    "sawtooth": (_sawtooth, "2 ((x + 1) mod 1) - 1: two ramps from -1 to 1"),
}

SETS_2D = ("spirals", "xor", "circles")


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise DataError(f"n must be an integer of at least 2, got {n!r}")
    return int(n)


def _check_noise(noise: float) -> float:
    if not np.isfinite(noise) or noise < 0:
        raise DataError(f"noise must be a finite number >= 0, got {noise!r}")
    return float(noise)


def make_function(name: str, n: int = 1000, seed: int = 0, noise: float = 0.0) -> tuple:
    """Samples of a 1-D function on [-1, 1] for regression: (X, y), both float32 (n, 1).

    x is drawn uniformly from [-1, 1] and sorted (so ``plot(X, y)`` draws the
    curve); ``y = f(x) + N(0, noise^2)`` with f one of:
    "sine" sin(pi x), "abs" |x|, "step" [x >= 0], "sawtooth" 2 ((x + 1) mod 1) - 1.

    Example:
        >>> X, y = cr.data.make_function("sine", n=200, noise=0.05)
        >>> X.shape, y.shape
        ((200, 1), (200, 1))
    """
    key = str(name).lower()
    if key not in FUNCTIONS:
        raise DataError(f"unknown function {name!r}; expected one of {', '.join(FUNCTIONS)}")
    n, noise = _check_n(n), _check_noise(noise)
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-1.0, 1.0, n))
    y = FUNCTIONS[key][0](x) + (rng.normal(0.0, noise, n) if noise else 0.0)
    return x.reshape(-1, 1).astype(np.float32), y.reshape(-1, 1).astype(np.float32)


def make_2d(name: str, n: int = 1000, seed: int = 0, noise: float = 0.05) -> tuple:
    """A 2-D two-class puzzle: (X float32 (n, 2), y int64 (n,) labels 0 and 1), rows shuffled.

    - "spirals": two interleaved spirals of 1.5 turns each, radius from 0.1 to 1;
    - "xor": points uniform in [-1, 1]^2, class 1 where x1 and x2 have opposite signs;
    - "circles": class 0 on the circle of radius 1, class 1 on the circle of radius 0.5.

    Gaussian noise of standard deviation ``noise`` is added to the coordinates
    (after the labels are set, so noise blurs the boundary). Spirals and
    circles hold n // 2 points of class 0 and the rest of class 1.

    Example:
        >>> X, y = cr.data.make_2d("spirals", n=400)
        >>> X.shape, sorted(set(y.tolist()))
        ((400, 2), [0, 1])
    """
    key = str(name).lower()
    if key not in SETS_2D:
        raise DataError(f"unknown 2-D set {name!r}; expected one of {', '.join(SETS_2D)}")
    n, noise = _check_n(n), _check_noise(noise)
    rng = np.random.default_rng(seed)
    y = (np.arange(n) >= n // 2).astype(np.int64)
    if key == "spirals":
        t = rng.uniform(0.0, 1.0, n)
        angle = 3.0 * np.pi * t + np.pi * y
        radius = 0.1 + 0.9 * t
        X = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    elif key == "circles":
        angle = rng.uniform(0.0, 2.0 * np.pi, n)
        radius = np.where(y == 0, 1.0, 0.5)
        X = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    else:  # xor
        X = rng.uniform(-1.0, 1.0, (n, 2))
        y = ((X[:, 0] > 0) != (X[:, 1] > 0)).astype(np.int64)
    X = X + rng.normal(0.0, noise, X.shape)
    order = rng.permutation(n)
    return X[order].astype(np.float32), y[order]
