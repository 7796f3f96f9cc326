"""Checks where data enters: each failure names the argument, what was expected and what came.

``cr.fit``, ``cr.evaluate``, ``cr.predict``, the optimizers and the command line
call these before any work, so a mistake is refused with one of chainrule's
errors (``DataError`` or ``ShapeError``, both ValueErrors) instead of failing
deep inside a training step.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import numpy as np

from .errors import DataError, ShapeError


def as_array(name: str, value: Any, dtype: Any = None) -> np.ndarray:
    """``value`` as a NumPy array of numbers, refusing non-numeric data.

    Tensors and arrays of other namespaces (a GPU's) are copied to the host: data is checked there.

    Example:
        >>> as_array("X", [[1, 2]]).shape
        (1, 2)
    """
    from .autograd import Tensor
    from .backend import is_foreign, to_numpy

    if isinstance(value, Tensor):
        value = value.data
    if is_foreign(value):
        value = to_numpy(value)
    try:
        arr = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name} must be an array of numbers, got {type(value).__name__} ({e})") from None
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name} must be an array of numbers, got an array of dtype {arr.dtype}")
    return arr


def check_not_empty(name: str, arr: np.ndarray) -> None:
    """Refuse an array with no samples (zero rows)."""
    if arr.ndim and len(arr) == 0:
        raise DataError(f"{name} must hold at least one sample, got an empty array of shape {arr.shape}")


def check_finite(name: str, arr: np.ndarray) -> None:
    """Refuse NaN and infinite values, naming the first one's index."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise DataError(f"{name} must be finite, got {arr[tuple(bad)]} at index {tuple(int(i) for i in bad)}")


def check_features(name: str, X: np.ndarray, expected: int | None) -> None:
    """Refuse X that is not (samples, features) or whose feature count is not the model's."""
    if X.ndim < 2:
        raise ShapeError(f"{name} must have shape (samples, features), got shape {X.shape}")
    if expected is not None and X.shape[-1] != expected:
        raise ShapeError(f"{name} has {X.shape[-1]} features per sample but the model expects {expected}")


def check_targets(task: str, y: np.ndarray, num_outputs: int | None, name: str = "y") -> np.ndarray:
    """Refuse targets that do not fit the loss; returns y in the dtype training uses.

    - "multiclass" (cross-entropy): integer class labels in [0, outputs - 1], shape (N,),
      or non-negative class probabilities (N, outputs);
    - "multilabel" (binary cross-entropy): a (N, outputs) matrix with values in [0, 1];
    - "regression": any finite numbers.

    Example:
        >>> check_targets("multiclass", np.array([0.0, 2.0]), 3)
        array([0, 2])
    """
    check_finite(name, y)
    if task == "multiclass":
        if y.ndim == 1:
            if y.dtype.kind == "f":
                if not np.all(np.mod(y, 1) == 0):
                    raise DataError(f"{name} for cross-entropy must be integer class labels, got non-integer values such as {y[np.mod(y, 1) != 0][0]}")
                y = y.astype(np.int64)
            if y.dtype.kind == "b":
                y = y.astype(np.int64)
            if len(y) and (y.min() < 0 or (num_outputs is not None and y.max() >= num_outputs)):
                hi = "?" if num_outputs is None else num_outputs - 1
                raise DataError(f"{name} for cross-entropy must hold class labels in [0, {hi}], got values from {y.min()} to {y.max()}")
            return y
        if y.ndim == 2:
            if num_outputs is not None and y.shape[1] != num_outputs:
                raise ShapeError(f"{name} of class probabilities must have {num_outputs} columns, got {y.shape[1]}")
            if (y < 0).any():
                raise DataError(f"{name} of class probabilities must be non-negative, got values down to {y.min()}")
            return y.astype(np.float32) if y.dtype.kind != "f" else y
        raise ShapeError(f"{name} for cross-entropy must be labels (N,) or probabilities (N, C), got shape {y.shape}")
    if task == "multilabel":
        if y.ndim != 2:
            raise ShapeError(f"{name} for binary cross-entropy must be a (samples, labels) matrix, got shape {y.shape}")
        if (y < 0).any() or (y > 1).any():
            raise DataError(f"{name} for binary cross-entropy must lie in [0, 1], got values from {y.min()} to {y.max()}")
        if num_outputs is not None and y.shape[1] != num_outputs:
            raise ShapeError(f"{name} has {y.shape[1]} labels but the model has {num_outputs} outputs")
        return y.astype(np.float32) if y.dtype.kind != "f" else y
    return y.astype(np.float32) if y.dtype.kind != "f" else y


def check_validation(validation: Any) -> tuple:
    """``validation`` as a pair (X_val, y_val), refusing anything else by what it is."""
    if not isinstance(validation, (tuple, list)) or len(validation) != 2:
        got = f"a {type(validation).__name__} of {len(validation)}" if isinstance(validation, (tuple, list)) else type(validation).__name__
        raise DataError(f"validation must be a pair (X_val, y_val), got {got}")
    return validation[0], validation[1]


# ---- scalar settings: one rule each for integers, numbers and choices ------------------
# Every entry point (fit, the optimizers, run configs, the dashboard's settings, the estimators,
# checkpoints) checks its scalars with these, raising its own error class.


def shown(value: Any) -> str:
    """``repr(value)``, cut to about 60 characters: what a message says was received."""
    text = repr(value)
    return text if len(text) <= 60 else text[:56] + "...'"


def integer(name: str, value: Any, low: int = 0, high: int | None = None, error: type = DataError, text: bool = False) -> int:
    """``value`` as an int in [low, high] (no upper bound when ``high`` is None).

    A float with an integer value is taken (``2.0`` is 2); bools and other floats are refused,
    and strings too unless ``text`` (a query string's ``"10"``).

    Example:
        >>> integer("batch_size", 0, 1)
        Traceback (most recent call last):
        chainrule.errors.DataError: batch_size must be an integer >= 1, got 0
    """
    v = value
    if isinstance(value, float) and value.is_integer():
        v = int(value)
    elif text and isinstance(value, str):
        try:
            v = int(value.strip())
        except ValueError:
            v = None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low or (high is not None and v > high):
        bounds = f">= {low}" if high is None else f"from {low} to {high}"
        raise error(f"{name} must be an integer {bounds}, got {shown(value)}")
    return int(v)


def number(
    name: str, value: Any, low: float = -math.inf, high: float = math.inf, open_low: bool = False,
    open_high: bool = False, error: type = DataError, text: bool = False,
) -> float:
    """``value`` as a finite float in [low, high] (an open end with ``open_low`` or ``open_high``).

    Bools are refused, and strings too unless ``text``.

    Example:
        >>> number("lr", 0, 0.0, open_low=True)
        Traceback (most recent call last):
        chainrule.errors.DataError: lr must be a finite number > 0.0, got 0
    """
    v = real_number(value.strip() if text and isinstance(value, str) else value, text)
    if not (math.isfinite(v) and (v > low if open_low else v >= low) and (v < high if open_high else v <= high)):
        if high == math.inf:
            bounds = "" if low == -math.inf else f" {'>' if open_low else '>='} {low}"
        else:
            bounds = f" in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise error(f"{name} must be a finite number{bounds}, got {shown(value)}")
    return v


def choice(name: str, value: Any, choices: Sequence[str], error: type = DataError) -> str:
    """The entry of ``choices`` that ``value`` names, ignoring case and ``-`` against ``_``.

    Example:
        >>> choice("optimizer", "Adam", ("sgd", "adam"))
        'adam'
    """
    key = value.strip().lower().replace("-", "_") if isinstance(value, str) else None
    for c in choices:
        if key == c.replace("-", "_"):
            return c
    raise error(f"unknown {name} {shown(value)}; expected one of {', '.join(choices)}")


def boolean(name: str, value: Any, error: type = DataError, text: bool = False) -> bool:
    """``value`` as a bool: True or False (NumPy's too), or with ``text`` "true"/"on"/"1"/"yes"
    and "false"/"off"/"0"/"no".

    Example:
        >>> boolean("residual", "on", text=True)
        True
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    word = value.strip().lower() if text and isinstance(value, str) else None
    if word in ("true", "on", "1", "yes", "false", "off", "0", "no"):
        return word in ("true", "on", "1", "yes")
    raise error(f"{name} must be true or false, got {shown(value)}")


def rule(check: Callable, *args: Any, **kwargs: Any) -> Callable:
    """A settings field's rule for :func:`check_fields`: ``check(name, value, *args, error=..., **kwargs)``.

    Example:
        >>> RULES = {"epochs": rule(integer, 0), "optimizer": rule(choice, ("sgd", "adam"))}
    """
    return lambda name, value, error: check(name, value, *args, error=error, **kwargs)


def check_fields(obj: Any, rules: dict, error: type) -> None:
    """Check each field of the (frozen) dataclass ``obj`` by its rule in ``rules``
    (``rules[name](name, value, error)``, see :func:`rule`) and keep what the rule returns:
    the value in its canonical form. A field whose default is None may stay None.

    Settings objects declare their rules in one table and call this from ``__post_init__``.
    """
    for f in dataclasses.fields(obj):
        value, check = getattr(obj, f.name), rules.get(f.name)
        if check is not None and not (value is None and f.default is None):
            object.__setattr__(obj, f.name, check(f.name, value, error))


def real_number(value: Any, text: bool = False) -> float:
    """``value`` as a float, or NaN when it is not a real number (bools and strings included,
    unless ``text`` lets a string of a number through), so that the range check that follows
    refuses it by what was received.

    Example:
        >>> real_number("0.5")
        nan
    """
    if isinstance(value, bool) or (isinstance(value, str) and not text):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def check_file(path: Any, what: str, error: type = DataError) -> None:
    """Refuse a path that is not a regular file, saying which: missing, a folder or a device.

    Example:
        >>> check_file(Path("/dev/null"), "input file")
        Traceback (most recent call last):
        DataError: input file '/dev/null' is not a regular file (a device or a pipe)
    """
    import os
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{what} {str(path)!r} does not exist") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise error(f"{what} {str(path)!r} cannot be read: {getattr(e, 'strerror', None) or e}") from None
    if stat.S_ISDIR(mode):
        raise error(f"{what} {str(path)!r} is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise error(f"{what} {str(path)!r} is not a regular file (a device or a pipe)")


# JSON read from files and requests: deeper nesting is refused before it can exhaust the
# stack (chainrule's own JSON nests at most about 8 levels: a checkpoint's diagnostics).
MAX_JSON_DEPTH = 64


def parse_json(text: str | bytes, what: str, error: type = DataError, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON ``text`` as Python data, or ``error`` naming ``what`` (never a RecursionError).

    Refuses text that is not UTF-8, not JSON, or nested deeper than ``max_depth``
    arrays and objects.

    Example:
        >>> parse_json('{"a": [1, 2]}', "config file 'x.json'")
        {'a': [1, 2]}
    """
    import json

    try:
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8")
        data = json.loads(text)
    except UnicodeDecodeError as e:
        raise error(f"{what} is not UTF-8 text: {e}") from None
    except json.JSONDecodeError as e:
        raise error(f"{what} is not valid JSON: {e}") from None
    except (RecursionError, ValueError) as e:  # ValueError: an integer of more digits than Python converts
        raise error(f"{what} is not valid JSON: {'nested too deeply' if isinstance(e, RecursionError) else e}") from None
    stack = [(data, 1)]
    while stack:  # a stack rather than recursion
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > max_depth:
                raise error(f"{what} nests JSON arrays and objects deeper than {max_depth} levels")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return data
