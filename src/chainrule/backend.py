"""Which array namespace runs the numbers: NumPy on the CPU, CuPy on a GPU, any array-API
namespace in tests.

The namespace is chosen once per tensor, by its data: a ``numpy.ndarray`` is computed by
NumPy, anything else by the module its ``__array_namespace__()`` names (CuPy for a
``cupy.ndarray``; ``array_api_strict`` in the tests, whose arrays on a non-CPU device stand
in for a GPU and refuse every NumPy call). Operations look the namespace up with
:func:`namespace`, which answers NumPy after one type check, so the NumPy path adds no
wrapper call per operation; NumPy-only speed-ups (``out=``, ``errstate``) run behind
``xp is np``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np

from .errors import ChainruleError

#: The array types that take NumPy's fast paths: NumPy's ndarray, and cr.compile's recording
#: view of it (added by chainrule.capture), so that a recording follows the eager step's paths.
#: Engine modules test ``type(a) in NUMPY_TYPES``; the set only ever grows, so a recording in
#: one thread changes nothing for plain arrays in another.
NUMPY_TYPES: set = {np.ndarray}


def namespace(a: Any) -> Any:
    """The array namespace of array ``a``: ``numpy`` for NumPy arrays, CuPy's (see
    :class:`CuPyNamespace`) for CuPy arrays, else ``a.__array_namespace__()``."""
    if type(a) in NUMPY_TYPES:
        return np
    if _is_cupy(a):
        return _cupy_namespace()
    get = getattr(a, "__array_namespace__", None)
    if get is None:
        if isinstance(a, (np.ndarray, np.generic)):
            return np
        raise ChainruleError(f"expected an array (NumPy, CuPy or array-API), got {type(a).__name__}")
    return get()


def _is_cupy(a: Any) -> bool:
    return type(a).__module__.split(".")[0] == "cupy"


class CuPyNamespace:
    """CuPy's module, with the few array-API names that some CuPy versions lack or spell
    differently filled in: creation functions take ``device=`` (CuPy places arrays on the
    current device, so the call runs inside that device's context), and ``concat``,
    ``permute_dims``, ``matrix_transpose``, ``astype`` and ``isdtype`` exist. Everything else
    is CuPy's own function."""

    _CREATION = ("zeros", "ones", "empty", "full", "arange", "eye", "linspace")

    def __init__(self, cp: Any):
        self._cp = cp
        for name in self._CREATION:
            setattr(self, name, self._on_device(getattr(cp, name)))

    def asarray(self, obj: Any, dtype: Any = None, device: Any = None, copy: Any = None) -> Any:
        """``asarray`` with the standard's ``device=`` and ``copy=`` (``copy=True``: always a new array)."""
        make = (lambda: self._cp.array(obj, dtype=dtype, copy=True)) if copy else (lambda: self._cp.asarray(obj, dtype=dtype))
        if device is None:
            return make()
        with device:
            return make()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cp, name)

    @staticmethod
    def _on_device(fn: Any) -> Any:
        def create(*args: Any, device: Any = None, **kwargs: Any) -> Any:
            if device is None:
                return fn(*args, **kwargs)
            with device:
                return fn(*args, **kwargs)

        return create

    def concat(self, arrays: Any, axis: int = 0) -> Any:
        return self._cp.concatenate(arrays, axis=axis)

    def permute_dims(self, x: Any, axes: Any) -> Any:
        return self._cp.transpose(x, axes)

    def matrix_transpose(self, x: Any) -> Any:
        return self._cp.swapaxes(x, -1, -2)

    def astype(self, x: Any, dtype: Any, copy: bool = True) -> Any:
        return x.astype(dtype, copy=copy)

    def isdtype(self, dtype: Any, kind: Any) -> bool:
        return np.isdtype(np.dtype(dtype), kind)


_CUPY_NS: list = []


def _cupy_namespace() -> CuPyNamespace:
    if not _CUPY_NS:
        import cupy

        _CUPY_NS.append(CuPyNamespace(cupy))
    return _CUPY_NS[0]


def is_foreign(a: Any) -> bool:
    """Whether ``a`` is an array of a namespace other than NumPy (CuPy, array-API): CuPy arrays
    are recognised by their module, whatever their CuPy version says of the standard."""
    return not isinstance(a, (np.ndarray, np.generic)) and (hasattr(a, "__array_namespace__") or _is_cupy(a))


def is_array(a: Any) -> bool:
    """Whether ``a`` is an array of any namespace, NumPy's included."""
    return isinstance(a, np.ndarray) or is_foreign(a)


def device_of(a: Any) -> str:
    """The device of array ``a`` as a string: "cpu" for NumPy, "cuda" (or "cuda:N") for CuPy,
    ``str(a.device)`` for other namespaces."""
    if isinstance(a, np.ndarray):
        return "cpu"
    a = getattr(a, "recorded_array", a)  # (cr.compile's stand-in for an array while it records a step)
    dev = getattr(a, "device", None)
    if _is_cupy(a):
        n = getattr(dev, "id", 0)
        return "cuda" if not n else f"cuda:{n}"
    return str(dev) if dev is not None else type(a).__module__


def check_same_device(op: str, *arrays: Any) -> None:
    """Raise naming both devices when the arrays of one operation live on different devices
    (or in different namespaces). Callers test ``type(a) is not type(b)`` first, so this
    runs only on a mismatch."""
    arrays = tuple(getattr(a, "recorded_array", a) for a in arrays)  # (cr.compile's stand-ins: their arrays)
    first = arrays[0]
    for other in arrays[1:]:
        if isinstance(first, (np.ndarray, np.generic)) and isinstance(other, (np.ndarray, np.generic)):
            continue  # NumPy subclasses (memmap, matrix views) and scalars are on the CPU too
        if type(other) is not type(first) or device_of(other) != device_of(first):
            raise ChainruleError(
                f"{op}: its inputs are on different devices, {device_of(first)} ({type(first).__name__}) and "
                f"{device_of(other)} ({type(other).__name__}); move them to one with .to(device) first"
            )


def to_numpy(a: Any) -> np.ndarray:
    """A host (NumPy) array with the values of ``a``: ``a`` itself when it is one already."""
    if isinstance(a, np.ndarray):
        return a
    if isinstance(a, np.generic):
        return np.asarray(a)
    if _is_cupy(a):
        return a.get()
    to_device = getattr(a, "to_device", None)
    if to_device is not None:  # array-API arrays: move to the namespace's CPU device first
        xp = namespace(a)
        cpu = _cpu_device(xp)
        if cpu is not None:
            a = to_device(cpu)
    return np.asarray(a)


def _cpu_device(xp: Any) -> Any:
    info = getattr(xp, "__array_namespace_info__", None)
    if info is None:
        return None
    try:
        return info().default_device()
    except Exception:  # pragma: no cover - namespaces without a default device
        return None


def asarray(data: Any, like: Any, dtype: Any = None) -> Any:
    """``data`` (NumPy, Python numbers) as an array in the namespace and on the device of ``like``."""
    if type(like) in NUMPY_TYPES:
        return np.asarray(data, dtype=dtype)
    xp = namespace(like)
    dt = None if dtype is None else dtype_in(xp, dtype)
    return xp.asarray(data, dtype=dt, device=like.device)


def dtype_in(xp: Any, dtype: Any) -> Any:
    """``dtype`` (a name, a NumPy dtype or ``xp``'s own dtype) as a dtype of namespace ``xp``."""
    if xp is np:
        return np.dtype(dtype)
    if isinstance(dtype, str):
        return getattr(xp, dtype)
    try:
        return getattr(xp, np.dtype(dtype).name)
    except TypeError:  # already one of xp's dtypes
        return dtype


def cupy() -> Any:
    """The CuPy module, or a clear error when CuPy or a GPU is missing."""
    try:
        import cupy  # noqa: F401
    except ImportError:
        raise ChainruleError(
            "device 'cuda' needs CuPy and an NVIDIA GPU; CuPy is not installed (pip install cupy-cuda12x)"
        ) from None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise ChainruleError("device 'cuda' asked for, but CuPy finds no GPU on this machine")
    except ChainruleError:
        raise
    except Exception as e:  # CUDA driver missing
        raise ChainruleError(f"device 'cuda' asked for, but no usable GPU was found: {e}") from None
    return cupy


def normalize_device(device: Any) -> str:
    d = str(device or "cpu").lower()
    if d.startswith("cuda") or d == "gpu":
        return "cuda"
    if d == "cpu":
        return "cpu"
    raise ChainruleError(f"unknown device {device!r}; expected 'cpu' or 'cuda'")


def move(a: Any, device: Any) -> Any:
    """Array ``a`` on ``device`` ("cpu" or "cuda"): itself when it is there already."""
    d = normalize_device(device)
    if d == "cpu":
        return to_numpy(a)
    cp = cupy()
    return a if isinstance(a, cp.ndarray) else cp.asarray(to_numpy(a))


def _warnings_switch() -> tuple | None:
    """(set, reset, state): NumPy's own context variable for its floating-point error handling,
    and the state of ``np.errstate(all="ignore")`` made once; None where this NumPy lacks them."""
    try:
        from numpy._core._ufunc_config import _extobj_contextvar, _make_extobj

        return _extobj_contextvar.set, _extobj_contextvar.reset, _make_extobj(all="ignore")
    except Exception:  # (another NumPy: np.errstate, the public way)
        return None


#: See :func:`_warnings_switch`; cr.compile's replays use it too.
WARNINGS_OFF = _warnings_switch()


class _Quiet:
    """NumPy's floating-point warnings off inside ``with`` (0.3 us against np.errstate's 0.8)."""

    __slots__ = ("token",)

    def __enter__(self) -> None:
        self.token = WARNINGS_OFF[0](WARNINGS_OFF[2])

    def __exit__(self, *exc: Any) -> None:
        WARNINGS_OFF[1](self.token)


def quiet(xp: Any) -> Any:
    """A context in which NumPy's floating-point warnings are silenced, for operations whose inf
    and NaN are the answers wanted (e^-x overflowing in a sigmoid, 0 ** -1): all of them off on
    NumPy, nothing elsewhere (other namespaces do not warn)."""
    if xp is not np:
        return contextlib.nullcontext()
    return _Quiet() if WARNINGS_OFF is not None else np.errstate(all="ignore")


def erf(x: Any) -> Any:
    """The error function ``erf(x) = 2/sqrt(pi) * integral_0^x e^(-t^2) dt`` of an array, in its
    namespace (the array API has none): SciPy's on NumPy (SciPy comes with scikit-learn, and is
    imported on first use), ``cupyx.scipy.special.erf`` on CuPy, a series elsewhere."""
    if isinstance(x, (np.ndarray, np.generic)):
        from scipy.special import erf as scipy_erf

        return scipy_erf(x)
    recorded_call = getattr(x, "recorded_call", None)
    if recorded_call is not None:  # (cr.compile recording a step: this call is written down whole)
        return recorded_call(erf, x)
    if _is_cupy(x):
        from cupyx.scipy.special import erf as cupy_erf

        return cupy_erf(x)
    return _erf_series(namespace(x), x)


_ERF_TERMS = 100  # enough for |x| <= 6 to within 3e-15 of SciPy's erf (measured on a grid of 1e5 points)


def _erf_series(xp: Any, x: Any) -> Any:
    """``erf(x) = 2/sqrt(pi) e^(-x^2) sum_n (2x^2)^n x / (1*3*...*(2n+1))``: every term has the
    sign of x, so nothing cancels. Past |x| = 6, erf is +-1 to within 2e-17, so x is clipped there."""
    x = xp.clip(x, -6.0, 6.0)
    two_x2 = 2 * x * x
    term = x
    total = x
    for n in range(1, _ERF_TERMS):
        term = term * two_x2 / (2 * n + 1)
        total = total + term
    return (2 / math.sqrt(math.pi)) * xp.exp(-x * x) * total
