"""Gradient-descent optimizers and learning-rate schedules: ``from chainrule import optim``."""

from .adam import Adam, AdamW
from .lr_scheduler import CosineAnnealingLR, LRScheduler, StepLR
from .optimizer import Optimizer
from .sgd import SGD

OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}

__all__ = ["Adam", "AdamW", "CosineAnnealingLR", "LRScheduler", "OPTIMIZERS", "Optimizer", "SGD", "StepLR"]
