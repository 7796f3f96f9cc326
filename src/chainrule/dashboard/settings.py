"""The dashboard's settings: what a run may be asked for, their limits, and the checks.

Settings travel as strings (the page's URL query string) or as JSON (the Start
and Step requests); :func:`parse_settings` accepts both and refuses anything
malformed or out of range with a :class:`SettingsError` that names the setting,
what was expected and what was received. The web app answers those with 400.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping
from urllib.parse import urlencode

from ..data import DATASETS as _DATA
from ..errors import ChainruleError
from ..nn.activations import ACTIVATIONS
from ..nn.init import INITIALIZERS
from ..nn.mlp import NORMS
from ..runs import LOSSES as RUN_LOSSES
from ..runs import LOSSES_FOR_TASK, parse_layers
from ..validation import boolean, check_fields, choice, integer, number, rule, shown

# name -> (task, what the page says about it), from chainrule.data's registry. The task
# picks the default loss and refuses losses that cannot fit it.
DATASETS = {name: (info.task, info.description) for name, info in _DATA.items()}
INITS = ("default",) + tuple(INITIALIZERS)  # "default": He for the ReLU family, Xavier otherwise
LOSSES = ("auto",) + RUN_LOSSES
OPTIMIZERS = ("adam", "sgd", "momentum")  # momentum: SGD with momentum MOMENTUM
MOMENTUM = 0.9
NORM_CHOICES = ("none",) + tuple(NORMS)

MAX_DEPTH = 64
MAX_WIDTH = 1024
MAX_BATCH_SIZE = 1024
MAX_LR = 10
MAX_ABS_BIAS_INIT = 10.0
MAX_SEED = 2**31 - 1


class SettingsError(ChainruleError):
    """A setting that is malformed, unknown or out of range (the web app answers 400)."""


@dataclass(frozen=True)
class Settings:
    """One run's settings; ``depth`` counts hidden layers (each a Linear and its activation,
    with the normalization and dropout that ``norm`` and ``dropout`` add, and a skip connection
    around it with ``residual``)."""

    dataset: str = "digits"
    depth: int = 3
    width: int = 32
    activation: str = "relu"
    residual: bool = False
    norm: str = "none"
    dropout: float = 0.0
    init: str = "default"
    bias_init: float = 0.0
    loss: str = "auto"
    optimizer: str = "adam"
    lr: float = 0.01
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self, RULES, SettingsError)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_query(self) -> str:
        """The URL query string that reopens these settings: ``dataset=digits&depth=3&...``."""
        return urlencode({k: _format(v) for k, v in asdict(self).items()})

    def to_config(self) -> Any:
        """These settings as the :class:`~chainrule.runs.TrainConfig` (resolved) that
        :func:`chainrule.runs.build` turns into the run's model, optimizer, loss and targets:
        ``depth`` layers of ``width``, no label smoothing, "momentum" as SGD with momentum 0.9."""
        from ..runs import TrainConfig

        sgd = self.optimizer in ("sgd", "momentum")
        return TrainConfig(
            dataset=self.dataset, layers=(self.width,) * self.depth, activation=self.activation,
            init=None if self.init == "default" else self.init, bias_init=self.bias_init, residual=self.residual,
            norm=None if self.norm == "none" else self.norm, dropout=self.dropout,
            loss=None if self.loss == "auto" else self.loss, label_smoothing=0.0,
            optimizer="sgd" if sgd else self.optimizer, lr=self.lr, momentum=MOMENTUM if self.optimizer == "momentum" else 0.0,
            batch_size=self.batch_size, seed=self.seed, data_seed=self.seed,
        ).resolved()


def _format(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


def _dropout(name: str, value: Any, error: type) -> float:
    v = number(name, value, 0.0, 1.0, error=error, text=True)
    if v >= 1.0:  # nn.MLP's rule: [0, 1)
        raise error(f"dropout must be a probability in [0, 1), got {shown(value)}")
    return v


# How each setting is checked (from strings of a query string, or JSON values) and put in its
# canonical form: a choice's own spelling, a number as an int or a float.
RULES = {
    "dataset": rule(choice, tuple(DATASETS)),
    "depth": rule(integer, 1, MAX_DEPTH, text=True),
    "width": rule(integer, 1, MAX_WIDTH, text=True),
    "activation": rule(choice, tuple(ACTIVATIONS)),
    "residual": rule(boolean, text=True),
    "norm": rule(choice, NORM_CHOICES),
    "dropout": _dropout,
    "init": rule(choice, INITS),
    "bias_init": rule(number, -MAX_ABS_BIAS_INIT, MAX_ABS_BIAS_INIT, text=True),
    "loss": rule(choice, LOSSES),
    "optimizer": rule(choice, OPTIMIZERS),
    "lr": rule(number, 0, MAX_LR, open_low=True, text=True),
    "batch_size": rule(integer, 1, MAX_BATCH_SIZE, text=True),
    "seed": rule(integer, 0, MAX_SEED, text=True),
}


DEFAULTS = Settings()
FIELDS = tuple(DEFAULTS.to_dict())


def _depth_and_width(values: dict) -> tuple:
    """(depth, width) given as two settings, or depth as the WIDTHxCOUNT shorthand ("64x50":
    50 hidden layers of width 64) of ``chainrule train --layers``."""
    depth, width = values.get("depth", DEFAULTS.depth), values.get("width", DEFAULTS.width)
    if isinstance(depth, str) and "x" in depth.lower():
        try:
            widths = parse_layers(depth)
        except ChainruleError:
            widths = ()
        if len(set(widths)) != 1:
            raise SettingsError(f"depth must be a number of hidden layers or WIDTHxCOUNT such as 64x50, got {shown(depth)}")
        if "width" in values and str(values["width"]).strip() != str(widths[0]):
            raise SettingsError(f"depth {depth!r} sets the width to {widths[0]}, but width {values['width']!r} was given too")
        if not 1 <= len(widths) <= MAX_DEPTH:
            raise SettingsError(f"depth must be from 1 to {MAX_DEPTH} hidden layers, got {shown(depth)}")
        depth, width = len(widths), widths[0]
    return depth, width


def parse_settings(values: Mapping[str, Any] | None) -> Settings:
    """Checked :class:`Settings` from a mapping of strings (a query string) or JSON values.

    Missing settings take their defaults; unknown names, malformed values and
    values out of range raise :class:`SettingsError`, as does a loss that cannot
    fit the dataset's task (cross-entropy on a regression).

    Example:
        >>> parse_settings({"dataset": "digits", "depth": "10", "activation": "sigmoid"}).depth
        10
        >>> parse_settings({"depth": "64x50"}).width      # the --layers shorthand: 50 layers of 64
        64
        >>> parse_settings({"depth": "80"})
        Traceback (most recent call last):
        SettingsError: depth must be an integer from 1 to 64, got '80'
    """
    values = dict(values or {})
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise SettingsError(f"unknown setting {unknown[0]!r}; expected some of {', '.join(FIELDS)}")
    depth, width = _depth_and_width(values)
    s = Settings(**{**values, "depth": depth, "width": width})
    check_loss(s, DATASETS[s.dataset][0])
    return s


def check_loss(s: Settings, task: str) -> None:
    """Refuse a loss that cannot train the dataset's task."""
    allowed = LOSSES_FOR_TASK[task]
    if s.loss != "auto" and s.loss not in allowed:
        raise SettingsError(
            f"loss {s.loss!r} does not fit {s.dataset} ({task}); expected auto or one of {', '.join(allowed)}"
        )


def options() -> dict:
    """What the page offers: the choices, the limits and the defaults (plain data for /api/options)."""
    return {
        "datasets": [{"name": k, "task": t, "description": d} for k, (t, d) in DATASETS.items()],
        "activations": list(ACTIVATIONS),
        "inits": list(INITS),
        "losses": list(LOSSES),
        "losses_for_task": {k: list(v) for k, v in LOSSES_FOR_TASK.items()},
        "optimizers": list(OPTIMIZERS),
        "norms": list(NORM_CHOICES),
        "limits": {
            "depth": [1, MAX_DEPTH],
            "width": [1, MAX_WIDTH],
            "batch_size": [1, MAX_BATCH_SIZE],
            "lr": [0.0, MAX_LR],
            "bias_init": [-MAX_ABS_BIAS_INIT, MAX_ABS_BIAS_INIT],
            "seed": [0, MAX_SEED],
            "dropout": [0.0, 1.0],  # 1 itself excluded
        },
        "defaults": DEFAULTS.to_dict(),
    }
