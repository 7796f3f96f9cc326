"""Layers and models: ``from chainrule import nn``."""

from . import init
from .activations import ACTIVATIONS, BEYOND_THE_LESSON, ELU, GELU, Identity, LeakyReLU, LogSoftmax, PReLU, ReLU, Sigmoid, SiLU, Softmax, Tanh, activation
from .containers import Sequential
from .dropout import Dropout
from .linear import Linear
from .mlp import MLP
from .module import MODULES, Module, Parameter, register_module
from .normalization import BatchNorm1d, LayerNorm
from .residual import Residual

__all__ = [
    "ACTIVATIONS",
    "BEYOND_THE_LESSON",
    "BatchNorm1d",
    "Dropout",
    "ELU",
    "GELU",
    "Identity",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MLP",
    "MODULES",
    "Module",
    "PReLU",
    "Parameter",
    "ReLU",
    "Residual",
    "Sequential",
    "Sigmoid",
    "SiLU",
    "Softmax",
    "Tanh",
    "activation",
    "init",
    "register_module",
]
