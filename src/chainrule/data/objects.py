"""The "objects" multi-label set: small images holding any subset of five shapes.

The lesson's "laptop and smartphone in one picture": an image may contain
several objects at once, so each output gets its own sigmoid and its own
binary cross-entropy instead of sharing one softmax. Here the objects are five
shape patterns drawn at random positions and brightness, overlapping freely,
under Gaussian pixel noise; the target of an image is the multi-hot row of the
shapes it holds.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError

# The shapes, each a 0/1 stencil; the names are the label names, in column order.
_STENCILS = {
    "horizontal_bar": np.ones((1, 6)),
    "vertical_bar": np.ones((6, 1)),
    "square": np.pad(np.zeros((2, 2)), 1, constant_values=1.0),  # 4x4 outline
    "diagonal": np.eye(5),
    "cross": np.maximum(np.eye(3), np.fliplr(np.eye(3))),  # a 3x3 "x"
}

OBJECT_NAMES = tuple(_STENCILS)


def load_objects(
    n_samples: int = 6000,
    size: int = 12,
    seed: int = 0,
    noise: float = 0.1,
    p: float = 0.5,
) -> tuple:
    """Images of overlapping shapes and their multi-hot labels: (X, Y, names).

    Each of the five shapes (horizontal bar, vertical bar, square outline,
    diagonal, small "x") appears in an image independently with probability
    ``p``, at a uniformly random position that keeps it inside the frame, with
    a brightness drawn from U(0.6, 1). Overlapping shapes take the brighter
    pixel. Then N(0, noise^2) is added to every pixel and the result is clipped
    to [0, 1]. Images may hold no shape at all (all-zero target row).

    Args:
        n_samples: number of images.
        size: side of the square image in pixels (at least 8).
        seed: the same seed gives the same images.
        noise: standard deviation of the pixel noise.
        p: probability that each shape is present.

    Returns:
        X: float32 (n_samples, size * size), rows of pixels in [0, 1];
        Y: float32 (n_samples, 5), multi-hot; names: the five label names.

    Example:
        >>> X, Y, names = cr.data.load_objects(n_samples=100)
        >>> X.shape, Y.shape, names[0]
        ((100, 144), (100, 5), 'horizontal_bar')
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise DataError(f"n_samples must be a positive integer, got {n_samples!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise DataError(f"size must be an integer of at least 8 (pixels per side), got {size!r}")
    if not 0 <= noise < 1:
        raise DataError(f"noise must lie in [0, 1), got {noise!r}")
    if not 0 < p < 1:
        raise DataError(f"p must lie in (0, 1), got {p!r}")
    rng = np.random.default_rng(seed)
    n, k = int(n_samples), len(_STENCILS)
    Y = (rng.random((n, k)) < p).astype(np.float32)
    brightness = rng.uniform(0.6, 1.0, (n, k))
    images = np.zeros((n, size, size))
    for j, stencil in enumerate(_STENCILS.values()):
        h, w = stencil.shape
        rows = rng.integers(0, size - h + 1, n)
        cols = rng.integers(0, size - w + 1, n)
        for i in np.flatnonzero(Y[:, j]):
            patch = images[i, rows[i] : rows[i] + h, cols[i] : cols[i] + w]
            np.maximum(patch, brightness[i, j] * stencil, out=patch)
    images += rng.normal(0.0, noise, images.shape)
    X = np.clip(images, 0.0, 1.0).reshape(n, size * size).astype(np.float32)
    return X, Y, list(OBJECT_NAMES)
