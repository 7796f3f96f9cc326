"""Layers and models: ``from chainrule import nn``."""

from . import init
from .activations import ACTIVATIONS, ELU, Identity, LeakyReLU, LogSoftmax, PReLU, ReLU, Sigmoid, Softmax, Tanh, activation
from .containers import Sequential
from .dropout import Dropout
from .linear import Linear
from .mlp import MLP
from .module import MODULES, Module, Parameter, register_module
from .normalization import BatchNorm1d, LayerNorm
from .residual import Residual

__all__ = [
    "ACTIVATIONS",
    "BatchNorm1d",
    "Dropout",
    "ELU",
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
    "Softmax",
    "Tanh",
    "activation",
    "init",
    "register_module",
]
