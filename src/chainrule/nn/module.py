"""Module: the base of every layer and model; Parameter: a tensor that a module learns."""

from __future__ import annotations

import copy

from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from ..autograd import Tensor
from ..backend import asarray, device_of, dtype_in, move, namespace, to_numpy
from ..capture import refuse
from ..errors import ChainruleError, ShapeError


class Parameter(Tensor):
    """A tensor that a module owns and an optimizer updates (``requires_grad=True``)."""

    __slots__ = ()

    def __init__(self, data: Any, dtype: Any = None, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)

    def __repr__(self) -> str:
        return "Parameter(" + super().__repr__() + ")"


def copy_like(value: Any, like: Any) -> Any:
    """A new array with the values of ``value`` (any namespace, or NumPy) in the namespace,
    on the device and in the dtype of array ``like``: a copy, never a view of ``value``."""
    if type(like) is np.ndarray:
        return np.array(to_numpy(value), dtype=like.dtype)
    xp = namespace(like)
    if type(value) is not type(like) or device_of(value) != device_of(like):
        value = asarray(to_numpy(value), like=like)  # through the host: namespaces have no common path
    # always a copy: asarray may share memory with a NumPy input (array_api_strict does)
    return xp.astype(value, like.dtype, copy=True)


def _to_namespace(a: Any, xp: Any, device: Any) -> Any:
    """Array ``a`` copied into namespace ``xp``, on ``device`` (its default device when None)."""
    if xp is np:
        return to_numpy(a)
    host = to_numpy(a)
    return xp.asarray(host, copy=True) if device is None else xp.asarray(host, copy=True, device=device)


@contextmanager
def unchanged_state(model: "Module") -> Iterator[None]:
    """A ``with`` block after which ``model``'s buffers and random generators are as they were.

    Measurements (the diagnostics' probes, signal propagation) run the model as training
    does, in its current mode, without moving batch normalization's running statistics or
    drawing dropout masks that training would otherwise have drawn: watching a run does not
    change it.

    Example:
        >>> with unchanged_state(model):
        ...     model(probe)
    """
    buffers = [(b, copy_like(b.data, b.data)) for _, b in model.named_buffers()]  # (layers update them in place)
    generators = [g for m in model.modules() if isinstance(g := m.__dict__.get("generator"), np.random.Generator)]
    states = [g.bit_generator.state for g in generators]
    try:
        yield
    finally:
        for b, data in buffers:
            b.data[...] = data
        for g, state in zip(generators, states):
            g.bit_generator.state = state


@contextmanager
def watch(module: "Module", wrap: Any) -> Iterator[None]:
    """A ``with`` block during which ``module`` is *watched*: its forward is ``wrap(forward)``.

    This is the switch between watched layers and fast ones. A watched layer sets
    ``module.watched = True`` for the block, and an ``nn.Sequential`` that holds it runs layer
    by layer (one module call each, so ``wrap`` sees every call) instead of as one fused node.
    The diagnostics watch layers this way to keep their outputs; afterwards the module is
    as it was.

    Example:
        >>> seen = []
        >>> with watch(model[1], lambda forward: lambda x: seen.append(x.shape) or forward(x)):
        ...     model(x)
    """
    had = "forward" in module.__dict__
    previous = module.__dict__.get("forward")
    was_watched = module.__dict__.get("watched")
    object.__setattr__(module, "forward", wrap(module.forward))
    object.__setattr__(module, "watched", True)
    try:
        yield
    finally:
        if was_watched is None:
            del module.__dict__["watched"]
        if had:
            object.__setattr__(module, "forward", previous)
        else:
            del module.__dict__["forward"]


# name -> class, for model files: only these types are ever built from a file.
MODULES: dict = {}


def register_module(cls: type) -> type:
    """Class decorator: make a module type loadable by name from a model file."""
    MODULES[cls.__name__] = cls
    return cls


def full_config(cls: type, config: dict, *args: Any) -> dict:
    """``config`` (after positional ``args``) with every other argument of ``cls``'s constructor at
    its default; a TypeError names an argument the constructor does not take, or a required one missing."""
    import inspect

    bound = inspect.signature(cls).bind(*args, **config)
    bound.apply_defaults()
    return dict(bound.arguments)


class Module:
    """Base class of layers and models.

    Assigning a :class:`Parameter` or a Module as an attribute registers it, so
    ``parameters()`` finds it; ``register_buffer`` adds state that is saved but
    not learned (batch normalization's running statistics). Subclasses define ``forward``; calling the
    module calls ``forward``. Subclasses that should load from a model file
    define ``get_config()`` returning their constructor arguments.
    """

    training: bool
    watched: bool = False  # True inside a watch(module, ...) block: containers then call it layer by layer

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    def __deepcopy__(self, memo: dict) -> "Module":
        """A deep copy that is not watched: the ``forward`` and ``watched`` that a :func:`watch`
        block sets on this module belong to that block (a probe in another thread, say), and a
        copy taken meanwhile must not run its wrapper, which writes into the probe's results."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        skip = ("forward", "watched") if self.__dict__.get("watched") else ()
        for key, value in self.__dict__.items():
            if key not in skip:
                object.__setattr__(new, key, copy.deepcopy(value, memo))
        return new

    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_parameters")
        if params is None:
            raise ChainruleError(f"{type(self).__name__}.__init__ must call super().__init__() before setting attributes")
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            self._modules[name] = value
        elif name in params and value is None:
            params.pop(name)
        elif name in self._buffers:  # a buffer replaced as a whole stays registered (None removes it)
            if value is None:
                self._buffers.pop(name)
            elif not isinstance(value, Tensor):
                raise ChainruleError(f"{type(self).__name__}.{name} is a buffer: assign a Tensor (or set .{name}.data), got {type(value).__name__}")
            else:
                self._buffers[name] = value
        object.__setattr__(self, name, value)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if "forward" in self.__dict__:  # watched, or replaced on the instance: a compiled step cannot replay it
            refuse(f"{type(self).__name__}.forward is replaced on the instance (a watched layer)")
        return self.forward(*args, **kwargs)

    # ---- traversal -----------------------------------------------------------
    def named_children(self) -> Iterator[tuple]:
        return iter(self._modules.items())

    def children(self) -> Iterator["Module"]:
        return iter(self._modules.values())

    def named_modules(self, prefix: str = "") -> Iterator[tuple]:
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def register_buffer(self, name: str, value: Any) -> Tensor:
        """Keep array ``value`` as a buffer: state that is not learned by the optimizer but belongs to
        the model (running statistics), so ``state_dict``, model files, checkpoints and ``to()`` carry it.

        The buffer is a Tensor without gradient, reachable as ``self.<name>``; update it by
        assigning its ``.data``.

        Example:
            >>> self.register_buffer("running_mean", np.zeros(64, dtype="float32"))
        """
        t = Tensor(value, requires_grad=False, dtype=getattr(value, "dtype", None))  # keeps the array's dtype
        self._buffers[name] = t
        object.__setattr__(self, name, t)
        return t

    def named_buffers(self, prefix: str = "") -> Iterator[tuple]:
        """(dotted name, buffer Tensor) for every buffer, this module's first."""
        for name, b in self._buffers.items():
            yield (f"{prefix}.{name}" if prefix else name), b
        for name, m in self._modules.items():
            yield from m.named_buffers(f"{prefix}.{name}" if prefix else name)

    def named_state(self) -> Iterator[tuple]:
        """(dotted name, Tensor) of every parameter, then every buffer: what ``state_dict`` holds."""
        yield from self.named_parameters()
        yield from self.named_buffers()

    def named_parameters(self, prefix: str = "") -> Iterator[tuple]:
        """(dotted name, Parameter) for every parameter, this module's first."""
        for name, p in self._parameters.items():
            yield (f"{prefix}.{name}" if prefix else name), p
        for name, m in self._modules.items():
            yield from m.named_parameters(f"{prefix}.{name}" if prefix else name)

    def parameters(self) -> list:
        """Every parameter of this module and its submodules (each once)."""
        seen, out = set(), []
        for _, p in self.named_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    def num_parameters(self) -> int:
        return int(sum(p.data.size for p in self.parameters()))

    # ---- state ---------------------------------------------------------------
    def zero_grad(self) -> None:
        """Drop every parameter's gradient (set it to None, as PyTorch does by default)."""
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> "Module":
        """Set training mode (``mode=True``) or evaluation mode on this module and every submodule; returns self."""
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        """Evaluation mode, ``train(False)`` (``cr.predict`` and ``cr.evaluate`` switch to it); returns self."""
        return self.train(False)

    def state_dict(self) -> "OrderedDict[str, Any]":
        """Parameter and buffer name -> array (the live arrays, not copies, on the parameters' device)."""
        return OrderedDict((name, t.data) for name, t in self.named_state())

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy arrays into this module's parameters and buffers, checking names and shapes.

        The values may be NumPy arrays (as read from a file) or arrays of any
        namespace and device; each parameter gets a copy in its own namespace,
        on its own device and in its own dtype.

        Raises ShapeError naming the parameter whose shape differs, and (with
        ``strict``) ChainruleError listing missing and unexpected names.
        """
        own = dict(self.named_state())
        if strict:
            missing = [k for k in own if k not in state]
            unexpected = [k for k in state if k not in own]
            if missing or unexpected:
                raise ChainruleError(
                    f"load_state_dict: missing parameters {missing or 'none'}, unexpected {unexpected or 'none'}"
                )
        for name, value in state.items():
            if name not in own:
                continue
            p = own[name]
            arr = value.data if isinstance(value, Tensor) else value
            if tuple(arr.shape) != tuple(p.data.shape):
                raise ShapeError(f"load_state_dict: parameter {name!r} has shape {tuple(p.data.shape)}, got {tuple(arr.shape)}")
            p.data = copy_like(arr, p.data)

    def to(self, device: Any = None, dtype: Any = None, xp: Any = None) -> "Module":
        """Move parameters and buffers to ``device`` and/or cast them to ``dtype``, in place; returns self.

        Args:
            device: "cpu" (NumPy) or "cuda" (CuPy); with ``xp``, one of that namespace's devices.
            dtype: "float32", "float64" or a NumPy dtype.
            xp: an array-API namespace to hold the parameters (array_api_strict in the tests);
                ``device=None`` takes its default device.

        Gradients are dropped; build the optimizer after moving the model.

        Example:
            >>> model = nn.MLP([64, 128, 10]).to("cuda")
        """
        for p in [*self.parameters(), *(b for _, b in self.named_buffers())]:
            if xp is not None:
                p.data = _to_namespace(p.data, xp, device)
            elif device is not None:
                p.data = move(p.data, device)
            if dtype is not None:
                d = p.data
                p.data = d.astype(dtype) if type(d) is np.ndarray else namespace(d).astype(d, dtype_in(namespace(d), dtype))
            p.grad = None
        return self

    def double(self) -> "Module":
        return self.to(dtype=np.float64)

    def float(self) -> "Module":
        return self.to(dtype=np.float32)

    # ---- description -----------------------------------------------------------
    @classmethod
    def state_shapes(cls, config: dict) -> dict:
        """The shape of each array that ``cls(**config)`` keeps in its ``state_dict()``, by name,
        from the config alone, allocating nothing.

        ``cr.load`` compares a model file's stored tensors with these before it builds
        anything, so a file cannot make it allocate more than the file holds. ``config``
        holds every constructor argument (defaults filled in). A layer type with parameters
        or buffers overrides this; the default declares none.

        Example:
            >>> nn.Linear.state_shapes({"in_features": 64, "out_features": 10, "bias": True})
            {'weight': (64, 10), 'bias': (10,)}
        """
        return {}

    def get_config(self) -> dict:
        """Constructor arguments, for model files. Modules without one cannot be saved."""
        raise ChainruleError(f"{type(self).__name__} has no get_config(), so it cannot be written to a model file")

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = list(self._modules.items())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, m in children:
            body = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        lines.append(")")
        return "\n".join(lines)
