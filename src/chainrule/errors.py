"""chainrule's exceptions: each message says what was expected and what was received."""

from __future__ import annotations


class ChainruleError(ValueError):
    """Base class of chainrule's errors (a ValueError, so ``except ValueError`` catches it)."""


class ShapeError(ChainruleError):
    """Arrays whose shapes do not fit the operation, with both shapes named."""


class DataError(ChainruleError):
    """Input data refused before any work: NaN or infinite values, labels out of range, empty sets."""


class ModelFileError(ChainruleError):
    """A model or checkpoint file that is missing, truncated, corrupt or does not fit its architecture."""


class DivergenceError(ChainruleError):
    """Training stopped because the loss became NaN or infinite, or rose far above its start
    (``chainrule.train.DIVERGENCE_FACTOR`` times the first step's loss)."""
