"""Datasets: the bundled 8x8 digits and generated sets for multi-label and function fitting.

Every loader returns float32 features; nothing is ever downloaded.
"""

from .digits import load_digits, train_test_split

__all__ = ["load_digits", "train_test_split"]
