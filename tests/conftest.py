import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def to_torch(torch, a, requires_grad=True):
    t = torch.tensor(np.array(a, dtype=np.float64))
    return t.requires_grad_(requires_grad)


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return np.inf
    scale = np.maximum(np.abs(b).max(initial=0.0), 1.0)
    return float(np.abs(a - b).max(initial=0.0) / scale)


@pytest.fixture(scope="session", autouse=True)
def _one_blas_thread():
    """Small matrices gain nothing from BLAS threads, and on a loaded 2-core machine threads
    that wait for each other cost 100x: tests run with one."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1):
        yield


def torch_copy(torch, model):
    """A float64 torch.nn.Sequential with the same layers and weights as a chainrule MLP or
    Sequential (or list) of Linear, BatchNorm1d, LayerNorm and sigmoid/tanh/relu/gelu/silu layers
    (chainrule's weight is (in, out): transposed; the normalizations start as PyTorch's do)."""
    from chainrule import nn

    layers = []
    for m in model:
        if isinstance(m, nn.Linear):
            lin = torch.nn.Linear(m.in_features, m.out_features).double()
            with torch.no_grad():
                lin.weight.copy_(torch.tensor(m.weight.data.T))
                lin.bias.copy_(torch.tensor(m.bias.data))
            layers.append(lin)
        elif isinstance(m, nn.BatchNorm1d):
            layers.append(torch.nn.BatchNorm1d(m.num_features, eps=m.eps, momentum=m.momentum).double())
        elif isinstance(m, nn.LayerNorm):
            layers.append(torch.nn.LayerNorm(m.normalized_shape, eps=m.eps).double())
        else:
            kinds = {"Sigmoid": torch.nn.Sigmoid, "Tanh": torch.nn.Tanh, "ReLU": torch.nn.ReLU, "GELU": torch.nn.GELU, "SiLU": torch.nn.SiLU}
            layers.append(kinds[type(m).__name__]())
    return torch.nn.Sequential(*layers)


# ---- array-API namespaces: array-api-strict arrays on a non-CPU device stand in for a GPU ----


@pytest.fixture(scope="session")
def strict():
    """(array_api_strict, its non-CPU device): arrays there refuse NumPy conversion, as GPU arrays do."""
    xp = pytest.importorskip("array_api_strict")
    return xp, xp.Device("device1")


def to_strict(strict, a):
    """NumPy array (or nested list) ``a`` as an array-api-strict array on the stand-in device."""
    xp, dev = strict
    a = np.asarray(a)
    return xp.asarray(a, dtype=getattr(xp, a.dtype.name), device=dev)


def from_strict(a):
    """An array-api-strict array back as NumPy (through its CPU device)."""
    from chainrule.backend import to_numpy

    return to_numpy(a)
