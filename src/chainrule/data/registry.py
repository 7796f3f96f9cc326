"""Every dataset by name, split into train and test, as the command line, lab and tools load it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import DataError
from .digits import load_digits, train_test_split
from .functions import FUNCTIONS, make_2d, make_function
from .objects import OBJECT_NAMES, load_objects

# The loss each task trains with unless told otherwise.
DEFAULT_LOSS = {"multiclass": "cross_entropy", "multilabel": "bce", "regression": "mse"}


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset before loading it: its task and shapes."""

    name: str
    task: str  # "multiclass" | "multilabel" | "regression"
    num_features: int
    num_outputs: int
    image_shape: tuple | None
    names: tuple  # class or label names; ("y",) for regression
    description: str
    make: Callable[[int], tuple]  # seed -> (X, y)

    @property
    def default_loss(self) -> str:
        return DEFAULT_LOSS[self.task]


@dataclass(frozen=True)
class Dataset:
    """A dataset split 75/25 into train and test (stratified when it has classes).

    Fields: ``X_train, X_test`` float32 (samples, features); ``y_train, y_test``:
    int64 labels (multiclass), float32 multi-hot rows (multilabel) or float32
    (samples, 1) values (regression); ``task``, ``num_outputs``, ``image_shape``
    (for pictures, e.g. (8, 8), else None), ``names`` (class or label names).
    """

    name: str
    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    task: str
    num_outputs: int
    image_shape: tuple | None
    names: tuple
    description: str

    @property
    def num_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def default_loss(self) -> str:
        return DEFAULT_LOSS[self.task]

    def __getitem__(self, key: str) -> Any:  # also readable as a dict: ds["X_train"]
        return getattr(self, key)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {self.task}, train {self.X_train.shape}, test {self.X_test.shape}, {self.num_outputs} outputs)"


def _digits(binary: bool) -> Callable[[int], tuple]:
    return lambda seed: load_digits(binary=binary)


def _objects(seed: int) -> tuple:
    X, Y, _ = load_objects(seed=seed)
    return X, Y


_DIGIT_NAMES = tuple(str(d) for d in range(10))
_INFOS = [
    DatasetInfo("digits", "multiclass", 64, 10, (8, 8), _DIGIT_NAMES, "8x8 handwritten digits (1,797), pixels in [0, 1]", _digits(False)),
    DatasetInfo("digits-binary", "multiclass", 64, 10, (8, 8), _DIGIT_NAMES, "8x8 digits thresholded to 0/1: the binary matrix of the lesson", _digits(True)),
    DatasetInfo("objects", "multilabel", 144, len(OBJECT_NAMES), (12, 12), OBJECT_NAMES, "12x12 images holding any subset of five shapes (multi-label)", _objects),
    DatasetInfo("spirals", "multiclass", 2, 2, None, ("0", "1"), "two interleaved spirals in 2-D", lambda seed: make_2d("spirals", seed=seed)),
    DatasetInfo("xor", "multiclass", 2, 2, None, ("0", "1"), "XOR: class 1 where the two coordinates have opposite signs", lambda seed: make_2d("xor", seed=seed)),
    DatasetInfo("circles", "multiclass", 2, 2, None, ("outer", "inner"), "two concentric circles in 2-D", lambda seed: make_2d("circles", seed=seed)),
]
_INFOS += [
    DatasetInfo(name, "regression", 1, 1, None, ("y",), f"fit y = {formula} on [-1, 1]", (lambda seed, name=name: make_function(name, seed=seed, noise=0.0)))
    for name, (_, formula) in FUNCTIONS.items()
]

DATASETS: dict = {info.name: info for info in _INFOS}


def dataset_info(name: str) -> DatasetInfo:
    """The DatasetInfo of ``name``; DataError listing the valid names otherwise."""
    info = DATASETS.get(str(name).lower().replace("_", "-"))
    if info is None:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return info


def load_dataset(name: str, seed: int = 0, test_size: float = 0.25) -> Dataset:
    """A dataset by name, split into train and test: the one loader every tool uses.

    Names: "digits", "digits-binary", "objects", "spirals", "xor", "circles",
    "sine", "abs", "step", "sawtooth". ``seed`` drives both the generated data
    and the split; the same seed gives the same arrays.

    Example:
        >>> ds = cr.data.load_dataset("digits")
        >>> ds.X_train.shape, ds.X_test.shape, ds.task
        ((1347, 64), (450, 64), 'multiclass')
    """
    info = dataset_info(name)
    X, y = info.make(seed)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, seed=seed)
    return Dataset(
        name=info.name,
        X_train=X_train,
        X_test=X_test,
        y_train=y_train,
        y_test=y_test,
        task=info.task,
        num_outputs=info.num_outputs,
        image_shape=info.image_shape,
        names=info.names,
        description=info.description,
    )
