"""The default random generator used by initializers when none is passed."""

from __future__ import annotations

from typing import Any

import numpy as np

_default = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed chainrule's default generator (weights made afterwards repeat exactly).

    Example:
        >>> cr.manual_seed(0); a = nn.Linear(3, 2)
        >>> cr.manual_seed(0); b = nn.Linear(3, 2)   # same weights as a
    """
    global _default
    _default = np.random.default_rng(seed)
    return _default


def default_generator() -> np.random.Generator:
    return _default


def generator(seed_or_rng: Any = None) -> np.random.Generator:
    """A Generator from a seed, a Generator (returned as is) or None (the default one)."""
    if seed_or_rng is None:
        return _default
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    return np.random.default_rng(seed_or_rng)
