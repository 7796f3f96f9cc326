"""The 8x8 handwritten digits that ship inside scikit-learn (1,797 images, 10 classes)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError


def load_digits(binary: bool = False, threshold: float = 0.5) -> tuple:
    """The 8x8 digits as (X, y): X float32 of shape (1797, 64), y int64 labels 0-9.

    Pixels are scaled from 0-16 to [0, 1]. With ``binary=True`` each pixel is
    thresholded at ``threshold`` into 0 or 1: the 8x8 binary matrix of the lesson.

    Example:
        >>> X, y = cr.data.load_digits()
        >>> X.shape, y.shape
        ((1797, 64), (1797,))
    """
    from sklearn.datasets import load_digits as _sk_digits

    d = _sk_digits()
    X = (d.data / 16.0).astype(np.float32)
    if binary:
        X = (X >= threshold).astype(np.float32)
    return X, d.target.astype(np.int64)


def train_test_split(X: Any, y: Any, test_size: float = 0.25, seed: int = 0) -> tuple:
    """A fixed stratified split: (X_train, X_test, y_train, y_test).

    Stratified on y when it holds class labels (each class keeps its share in
    both parts); a plain seeded shuffle otherwise. The same seed gives the same split.
    """
    X, y = np.asarray(X), np.asarray(y)
    if len(X) != len(y):
        raise DataError(f"X and y must have one row per sample, got {len(X)} and {len(y)}")
    if not 0 < test_size < 1:
        raise DataError(f"test_size must lie in (0, 1), got {test_size}")
    rng = np.random.default_rng(seed)
    if y.ndim == 1 and y.dtype.kind in "iub":
        test = []
        for c in np.unique(y):
            members = rng.permutation(np.flatnonzero(y == c))
            test.extend(members[: int(round(test_size * len(members)))])
        test_mask = np.zeros(len(y), dtype=bool)
        test_mask[np.asarray(test, dtype=np.int64)] = True
    else:
        order = rng.permutation(len(y))
        test_mask = np.zeros(len(y), dtype=bool)
        test_mask[order[: int(round(test_size * len(y)))]] = True
    train_idx = rng.permutation(np.flatnonzero(~test_mask))
    test_idx = rng.permutation(np.flatnonzero(test_mask))
    return X[train_idx], X[test_idx], y[train_idx], y[test_idx]
