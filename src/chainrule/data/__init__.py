"""Datasets: the bundled 8x8 digits and generated sets for multi-label and function fitting.

Every loader returns float32 features; nothing is ever downloaded.
``load_dataset(name)`` gives any of them split into train and test.
"""

from .digits import load_digits, train_test_split
from .functions import FUNCTIONS, SETS_2D, make_2d, make_function
from .objects import OBJECT_NAMES, load_objects
from .registry import DATASETS, Dataset, DatasetInfo, dataset_info, load_dataset

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetInfo",
    "FUNCTIONS",
    "OBJECT_NAMES",
    "SETS_2D",
    "dataset_info",
    "load_dataset",
    "load_digits",
    "load_objects",
    "make_2d",
    "make_function",
    "train_test_split",
]
