"""chainrule: a deep-learning framework built up from the chain rule.

    import chainrule as cr
    from chainrule import nn, optim, functional as F

``import chainrule`` imports NumPy and nothing else heavy: the command line,
plots, the lab and the estimators load their libraries when first used.
"""

from . import ops as _ops  # noqa: F401  (installs the Tensor operators)
from . import data, functional, nn, optim
from .autograd import (
    Tensor,
    enable_grad,
    full,
    is_grad_enabled,
    no_grad,
    ones,
    ones_like,
    rand,
    randn,
    tensor,
    zeros,
    zeros_like,
)
from .capture import CompileWarning, compile
from .compgraph import graph
from .errors import ChainruleError, DataError, DivergenceError, ModelFileError, ShapeError
from .gradcheck import GradcheckError, gradcheck
from .io import load, save
from .ops import concat, exp, log, logsumexp, maximum, minimum, sigmoid, sqrt, stack, tanh, where
from .ops import broadcast_to, cos, cumsum, einsum, expm1, flatten, flip, log1p, prod, relu, sign, sin, squeeze, std, unsqueeze, var
from .random import manual_seed
from .train import History, TrainState, evaluate, fit, predict

__version__ = "0.1.0"

__all__ = [
    "ChainruleError",
    "CompileWarning",
    "DataError",
    "DivergenceError",
    "GradcheckError",
    "History",
    "TrainState",
    "ModelFileError",
    "ShapeError",
    "Tensor",
    "broadcast_to",
    "compile",
    "concat",
    "cos",
    "cumsum",
    "data",
    "einsum",
    "enable_grad",
    "evaluate",
    "exp",
    "expm1",
    "fit",
    "flatten",
    "flip",
    "full",
    "functional",
    "gradcheck",
    "graph",
    "is_grad_enabled",
    "load",
    "log",
    "log1p",
    "logsumexp",
    "manual_seed",
    "maximum",
    "minimum",
    "nn",
    "no_grad",
    "ones",
    "ones_like",
    "optim",
    "predict",
    "prod",
    "rand",
    "randn",
    "relu",
    "save",
    "sigmoid",
    "sign",
    "sin",
    "sqrt",
    "squeeze",
    "stack",
    "std",
    "tanh",
    "tensor",
    "unsqueeze",
    "var",
    "where",
    "zeros",
    "zeros_like",
]
