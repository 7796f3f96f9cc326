"""chainrule.backend: the array namespace of a tensor's data, devices, and moving between them."""

import contextlib

import numpy as np
import pytest

from chainrule import backend
from chainrule.errors import ChainruleError
from conftest import to_strict


def test_namespace_device_and_host_copies(strict):
    xp, dev = strict
    a = np.ones((2, 3), np.float32)
    s = to_strict(strict, a)
    assert backend.namespace(a) is np and backend.namespace(np.float32(1)) is np
    assert backend.namespace(s) is xp
    assert backend.device_of(a) == "cpu" and "device1" in backend.device_of(s)
    np.testing.assert_array_equal(backend.to_numpy(s), a)
    assert backend.to_numpy(a) is a
    moved = backend.asarray([1.0, 2.0], like=s, dtype="float64")
    assert moved.device == dev and moved.dtype == xp.float64
    with pytest.raises(ChainruleError, match="expected an array"):
        backend.namespace([1.0])


def test_mixed_devices_are_named(strict):
    a = np.ones(2)
    backend.check_same_device("add", a, a.view(np.matrix))  # a NumPy subclass is on the CPU as well
    with pytest.raises(ChainruleError, match=r"add: its inputs are on different devices, cpu \(ndarray\) and .*device1"):
        backend.check_same_device("add", a, to_strict(strict, a))


def test_unknown_and_missing_devices():
    with pytest.raises(ChainruleError, match="unknown device 'tpu'; expected 'cpu' or 'cuda'"):
        backend.normalize_device("tpu")
    assert backend.normalize_device("cuda:0") == "cuda" and backend.normalize_device(None) == "cpu"
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(ChainruleError, match="CuPy is not installed"):
            backend.move(np.ones(2), "cuda")


def test_cupy_namespace_fills_in_the_standard_names():
    """The CuPy shim, exercised over NumPy (which has the CuPy spellings it falls back to)."""
    entered = []

    @contextlib.contextmanager
    def device():
        entered.append(True)
        yield

    ns = backend.CuPyNamespace(np)
    z = ns.zeros((2, 3), dtype=np.float32, device=device())
    assert entered and z.shape == (2, 3) and ns.ones((2,)).shape == (2,)
    src = np.arange(3.0)
    assert ns.asarray(src) is src and ns.asarray(src, copy=True) is not src
    assert ns.asarray([1, 2], dtype=np.float32, device=device()).dtype == np.float32 and len(entered) == 2
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(ns.concat([x, x], axis=0), np.concatenate([x, x]))
    np.testing.assert_array_equal(ns.matrix_transpose(x), x.T)
    np.testing.assert_array_equal(ns.permute_dims(x, (1, 0)), x.T)
    assert ns.astype(x, np.float32).dtype == np.float32
    assert ns.isdtype(np.float32, "real floating") and not ns.isdtype(np.int64, "real floating")
    assert ns.exp is np.exp  # everything else is the module's own


def test_cupy_arrays_are_recognised_by_their_module(strict):
    """Whether or not a CuPy version defines __array_namespace__, its arrays count as foreign."""
    FakeCupyArray = type("ndarray", (), {"__module__": "cupy._core.core"})
    assert backend.is_foreign(FakeCupyArray()) and backend.is_array(FakeCupyArray())
    assert not backend.is_foreign(np.ones(2)) and backend.is_array(np.ones(2)) and not backend.is_foreign(np.float32(1))
    assert backend.is_foreign(to_strict(strict, np.ones(2))) and not backend.is_array([1.0])
