"""The autograd engine: Tensor, the graph it records, and backpropagation.

A Tensor holds a backend array (``.data``). An operation on tensors that need
gradients returns a new Tensor that remembers its parents and a closure,
``_backward(g)``, mapping the gradient of the output to one gradient per parent
(the vector-Jacobian product). ``backward()`` sorts the graph once, walks it
from the output to the leaves, and hands each node its gradient only when every
consumer has contributed: each node's gradient is computed once and reused
(memoization), so backward costs time linear in the size of the graph.

The operations themselves live in :mod:`chainrule.ops`; this file is the engine.
Tools read the graph through :func:`walk`, :attr:`Tensor.parents`,
:attr:`Tensor.op`, :func:`vjp` and the ``observe`` hook of ``backward()``; the
underscore names are the engine's own.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Callable, Sequence

import numpy as np

from .backend import NUMPY_TYPES, asarray, check_same_device, device_of, dtype_in, is_foreign, move, namespace, normalize_device, to_numpy
from .errors import ChainruleError, ShapeError


_FLOATS = (np.float16, np.float32, np.float64)

# Every tensor gets a creation number. An operation's inputs always exist before
# its output, so sorting a graph's nodes by decreasing number is a reverse
# topological order: no recursive search is needed to order backpropagation.
_counter = itertools.count()

# Set by cr.compile while it records a step (chainrule.capture): called with the leaves that
# each backward() gave a gradient.
leaf_observer: Callable | None = None


class _GradMode(threading.local):
    enabled = True


_grad_mode = _GradMode()


class no_grad:
    """Context manager (and decorator) in which operations record no graph.

    Inside it, results have ``requires_grad=False`` and keep no references to
    their inputs, so inference uses no memory for backward.

    Example:
        >>> with cr.no_grad():
        ...     y = model(x)
    """

    def __enter__(self) -> None:
        self._prev = _grad_mode.enabled
        _grad_mode.enabled = False

    def __exit__(self, *exc: Any) -> None:
        _grad_mode.enabled = self._prev

    def __call__(self, fn: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with no_grad():
                return fn(*args, **kwargs)

        wrapper.__name__ = getattr(fn, "__name__", "wrapper")
        wrapper.__doc__ = fn.__doc__
        return wrapper


class enable_grad(no_grad):
    """Context manager that turns graph recording back on inside ``no_grad``."""

    def __enter__(self) -> None:
        self._prev = _grad_mode.enabled
        _grad_mode.enabled = True


def is_grad_enabled() -> bool:
    """True when operations record the graph (outside ``no_grad``)."""
    return _grad_mode.enabled


def _graph_freed(g: Any) -> None:
    raise ChainruleError(
        "backward() through a graph whose intermediate values were already freed by an "
        "earlier backward(); call backward(retain_graph=True) the first time to go through it twice"
    )


class Tensor:
    """An n-dimensional array that records the operations applied to it.

    Create one with :func:`chainrule.tensor`. Arithmetic (``+ - * / ** @``),
    reductions, shape changes and activations return new tensors; when any
    input has ``requires_grad=True`` the result remembers how it was made so
    that ``backward()`` can send gradients back.

    Attributes:
        data: the backend array (``numpy.ndarray`` on the CPU).
        grad: array of the same shape holding d(output)/d(self) after
            ``backward()``; ``None`` before. Gradients of leaf tensors
            *accumulate* across ``backward()`` calls, as in PyTorch: call
            ``optimizer.zero_grad()`` (or set ``.grad = None``) between steps.
        requires_grad: whether gradients flow to this tensor.
    """

    __slots__ = ("data", "grad", "requires_grad", "_parents", "_backward", "_retain", "name", "_seq", "_g", "__weakref__")
    __array_priority__ = 1000  # numpy_array * tensor defers to Tensor.__rmul__

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None, name: str | None = None):
        arr = _to_array(data, dtype)
        if requires_grad and not _is_float(arr):
            raise ChainruleError(
                f"requires_grad=True needs a floating-point tensor, got dtype {arr.dtype}; "
                "pass dtype='float32' or 'float64'"
            )
        self.data = arr
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._parents: tuple = ()
        self._backward = None
        self._retain = False
        self.name = name
        self._seq = next(_counter)
        self._g = None

    # ---- basic properties -------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def is_leaf(self) -> bool:
        """True for tensors created by the user rather than by an operation."""
        return self._backward is None

    @property
    def parents(self) -> tuple:
        """The tensors this one was computed from, one per input of its operation (``()`` for a
        leaf, for a result computed without a graph, and after ``backward()`` freed the graph)."""
        return self._parents

    @property
    def op(self) -> str | None:
        """The name of the operation that made this tensor ("add", "matmul", "fused_layers"...);
        None for a leaf. Read from the operation's backward rule, so it needs no bookkeeping."""
        return op_name(self._backward)

    @property
    def device(self) -> str:
        """Where the data lives: "cpu" for NumPy, "cuda" for CuPy, the namespace's device otherwise."""
        return device_of(self.data)

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __repr__(self) -> str:
        host = to_numpy(self.data)
        body = np.array2string(host, separator=", ", precision=4, threshold=20, prefix="tensor(")
        extra = ""
        if host.dtype != np.float32:
            extra += f", dtype={host.dtype}"
        if type(self.data) not in NUMPY_TYPES:
            extra += f", device={self.device!r}"
        if self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def item(self) -> float:
        """The value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ShapeError(f"item() needs a tensor with one element, got shape {self.shape}")
        return to_numpy(self.data).reshape(()).item()

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (a copy from a GPU or another device, the array itself on the CPU)."""
        return to_numpy(self.data)

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def detach(self) -> "Tensor":
        """A tensor sharing this one's data, cut off from the graph."""
        return leaf(self.data)

    def to(self, device: str) -> "Tensor":
        """This tensor on ``device`` ("cpu" or "cuda"); itself when it is already there."""
        return self if normalize_device(device) == self.device else _moved(self, device)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if flag and not _is_float(self.data):
            raise ChainruleError(f"requires_grad=True needs a floating-point tensor, got dtype {self.data.dtype}")
        self.requires_grad = bool(flag)
        return self

    def retain_grad(self) -> "Tensor":
        """Keep ``.grad`` on this intermediate tensor after ``backward()``."""
        self._retain = True
        return self

    def __hash__(self) -> int:
        return id(self)

    def __bool__(self) -> bool:
        return bool(self.data)

    def __float__(self) -> float:
        return float(self.item())

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self.numpy()
        return arr if dtype is None else arr.astype(dtype)

    # ---- backpropagation ---------------------------------------------------
    def backward(self, gradient: Any = None, retain_graph: bool = False, observe: Callable | None = None) -> None:
        """Backpropagate from this tensor, filling ``.grad`` of every leaf that needs it.

        Args:
            gradient: d(loss)/d(self), of this tensor's shape. Optional for a
                one-element tensor (taken as 1).
            retain_graph: keep the graph so that backward can run through it again.
            observe: optional ``observe(node, g, parent_grads)``, called once per
                operation in the order backpropagation visits them, with the node's
                whole gradient ``g`` and what its backward rule sends to each parent
                (see :func:`backpropagate`). :func:`chainrule.graph` uses it to show
                backpropagation step by step.

        Leaf gradients are *added* to whatever ``.grad`` held before.
        """
        if not self.requires_grad:
            raise ChainruleError(
                "backward() was called on a tensor that does not require grad: no input of the "
                "computation had requires_grad=True (or it ran under no_grad())"
            )
        if gradient is None:
            if self.data.size != 1:
                raise ShapeError(
                    f"backward() on a tensor of shape {self.shape} needs gradient= of that shape; "
                    "only a one-element (scalar) output can start backpropagation alone"
                )
            d = self.data
            if type(d) in NUMPY_TYPES:
                seed = np.array(1, dtype=d.dtype) if not d.ndim else np.ones(d.shape, dtype=d.dtype)
            else:
                seed = namespace(d).ones_like(d)
        else:
            seed = _seed(gradient.data if isinstance(gradient, Tensor) else gradient, self.data)
            if seed.shape != self.shape:
                raise ShapeError(f"backward(gradient) needs shape {self.shape}, got {seed.shape}")
        backpropagate(self, seed, retain_graph, observe)


def _seed(gradient: Any, like: Any) -> Any:
    """``backward(gradient)``'s array: a copy of dtype and device of ``like``. Python data is
    placed there; an array of another namespace or device is refused, as in every operation."""
    if type(like) in NUMPY_TYPES:
        if type(gradient) not in NUMPY_TYPES and is_foreign(gradient):
            check_same_device("backward(gradient)", like, gradient)
        return np.array(gradient, dtype=like.dtype)
    if is_foreign(gradient) or isinstance(gradient, np.ndarray):
        if type(gradient) is not type(like) or gradient.device != like.device:
            check_same_device("backward(gradient)", like, gradient)
    return namespace(like).asarray(gradient, dtype=like.dtype, device=like.device, copy=True)


def _toposort(root: Tensor, leaves: bool = True) -> list:
    """Nodes reachable from ``root`` that need gradients, each once, root first.

    Collects the graph with an explicit stack (a chain of any length works, no
    recursion), then orders it by creation number, newest first: every node
    comes before the nodes it was computed from. Nodes without parents (leaves)
    come last, or not at all with ``leaves=False``.
    """
    if not root._parents:
        return [root]
    nodes = [root]
    ends = []
    seen = {id(root)}
    stack = [root]
    while stack:
        for p in stack.pop()._parents:
            if not p.requires_grad:
                continue
            if p._parents:
                if id(p) not in seen:
                    seen.add(id(p))
                    nodes.append(p)
                    stack.append(p)
            elif leaves and id(p) not in seen:
                seen.add(id(p))
                ends.append(p)  # no parents: they need no place in the order, only to come last
    nodes.sort(key=_seq_of, reverse=True)
    nodes += ends
    return nodes


def _seq_of(t: Tensor) -> int:
    return t._seq


def walk(root: Tensor) -> list:
    """The tensors that ``root.backward()`` visits, each once, in the order it visits them.

    Operations come in reverse topological order (``root`` first; every node
    before the nodes it was computed from), then the leaves that need a
    gradient. Tensors that need no gradient (data, constants) are not part of
    the walk; read them from :attr:`Tensor.parents`. The graph is collected with
    an explicit stack, so a chain of any length works (no recursion).

    Example:
        >>> x = cr.tensor(2.0, requires_grad=True)
        >>> [t.op for t in autograd.walk(x * x + x)]
        ['add', 'mul', None]
    """
    if root._backward is _graph_freed:
        raise ChainruleError(
            "this graph was already freed by backward(); walk it (or call cr.graph) before backward(), "
            "or run backward(retain_graph=True)"
        )
    return _toposort(root)


def op_name(backward: Any) -> str | None:
    """The operation's name from its backward rule: ``add`` for the closure ``add.<locals>.backward``."""
    if backward is None:
        return None
    if backward is _graph_freed:
        return "freed"
    name = getattr(backward, "__qualname__", type(backward).__name__).split(".<locals>", 1)[0]
    return name.rsplit(".", 1)[-1].strip("_") or "op"


def vjp(t: Tensor, g: Any) -> tuple:
    """What ``t``'s operation sends back to each parent for the upstream gradient ``g``.

    The vector-Jacobian product ``g^T (d t / d parent)`` of the operation's own
    backward rule, summed back to each parent's shape; ``None`` for a parent
    that needs no gradient. With ``g = 1`` on a one-element tensor it is the
    local derivative of each edge. The graph must not have been freed by
    ``backward()`` yet.

    Example:
        >>> a, b = cr.tensor(3.0, requires_grad=True), cr.tensor(4.0, requires_grad=True)
        >>> [float(d) for d in autograd.vjp(a * b, 1.0)]   # d(ab)/da = b, d(ab)/db = a
        [4.0, 3.0]
    """
    backward = t._backward
    if backward is None:
        raise ChainruleError("vjp() of a leaf tensor: it has no operation to differentiate")
    seed = _seed(g.data if isinstance(g, Tensor) else g, t.data)
    if seed.shape != t.data.shape:
        raise ShapeError(f"vjp() needs an upstream gradient of the tensor's shape {t.shape}, got {seed.shape}")
    grads = backward(seed)
    return tuple(
        None if pg is None or not p.requires_grad else unbroadcast(pg, p.data.shape)
        for p, pg in zip(t._parents, grads)
    )


def backpropagate(root: Tensor, seed: Any, retain_graph: bool = False, observe: Callable | None = None) -> None:
    """Run reverse-mode differentiation from ``root`` with d(out)/d(root) = ``seed``.

    Each node is visited once, in reverse topological order, so its gradient
    is complete (summed over all its consumers) before it is passed on; then
    that intermediate gradient is dropped.

    ``observe(node, g, parent_grads)``, when given, is called for each
    operation right after its backward rule ran, before anything is freed:
    ``g`` is the node's whole gradient, ``parent_grads`` what the rule returned
    per parent (possibly in the broadcast shape; :func:`unbroadcast` sums it
    back; ``None`` for a parent that needs none). It must not change them.
    """
    order = _toposort(root, leaves=False)
    ends = []  # nodes without parents (leaves), in the order their first gradient arrives
    root._g = seed
    try:
        for node in order:
            g = node._g
            if g is None:
                continue
            node._g = None
            backward = node._backward
            if backward is None:  # the root is itself a leaf
                ends.append(node)
                node._g = g
                break
            if node._retain:
                node.grad = g
            parent_grads = backward(g)
            if observe is not None:
                observe(node, g, parent_grads)
            if not retain_graph:
                node._backward = _graph_freed
                node._parents, parents = (), node._parents
            else:
                parents = node._parents
            for p, pg in zip(parents, parent_grads):
                if pg is None or not p.requires_grad:
                    continue
                if pg.shape != p.data.shape:
                    pg = unbroadcast(pg, p.data.shape)
                prev = p._g
                if prev is None:
                    p._g = pg
                    if not p._parents:
                        ends.append(p)
                else:
                    p._g = prev + pg
        # The leaves, after every interior node: each now has its whole gradient, which it
        # keeps in .grad (added to what .grad held before).
        given = set()  # ids of arrays handed out in this pass: no two leaves may share one
        for node in ends:
            g = node._g
            node._g = None
            if node._backward is not None:  # parentless but not a leaf: a graph already freed
                node._backward(g)
            if node.grad is None:
                if type(g) not in NUMPY_TYPES:
                    g = _own_copy(g, node.data, id(g) in given)
                elif g.base is not None or id(g) in given:
                    g = g.astype(node.data.dtype)  # (a copy; a method, so that cr.compile records it)
                given.add(id(g))
                node.grad = g
            else:
                node.grad += g
        if leaf_observer is not None:  # cr.compile, recording: which leaves a step updates
            leaf_observer(ends)
    except BaseException:  # leave no half-summed gradient behind for the next pass
        for node in itertools.chain(order, ends):
            node._g = None
        raise


def _own_copy(g: Any, like: Any, given: bool) -> Any:
    """A gradient, not of type ``ndarray``, that a leaf may own (and later add to in place):
    a NumPy scalar becomes an array; another namespace's array is copied unless it is known
    to own its memory (CuPy's ``.base is None``) and was not handed out already.
    array-api-strict has no ``.base``, so its arrays are always copied."""
    if isinstance(g, np.generic):
        return np.array(g, dtype=like.dtype)
    if not given and getattr(g, "base", g) is None and g.dtype == like.dtype:
        return g
    return namespace(g).astype(g, like.dtype, copy=True)


def unbroadcast(g: Any, shape: tuple) -> Any:
    """Sum ``g`` down to ``shape``: the gradient of NumPy broadcasting, in one place.

    Broadcasting copies an input along new leading axes and along axes of
    length 1; the chain rule adds the copies' gradients back together.
    """
    if g.shape == shape:
        return g
    xp = np if type(g) in NUMPY_TYPES else namespace(g)
    extra = g.ndim - len(shape)
    if extra > 0:
        axes = tuple(range(extra))
        g = g.sum(axis=axes) if xp is np else xp.sum(g, axis=axes)
    if extra < 0 or any(n != m and m != 1 for n, m in zip(g.shape, shape)):
        # a gradient that is smaller than its input (a scalar standing for a constant array)
        return xp.broadcast_to(g, shape)
    axes = tuple(i for i, (n, m) in enumerate(zip(g.shape, shape)) if m == 1 and n != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True) if xp is np else xp.sum(g, axis=axes, keepdims=True)
    return g


# ---- construction ----------------------------------------------------------


def _to_array(data: Any, dtype: Any = None) -> Any:
    if isinstance(data, Tensor):
        data = data.data
    if type(data) not in NUMPY_TYPES and is_foreign(data):
        return _foreign_array(data, dtype)  # CuPy, array-API: stays in its namespace, on its device
    if dtype is not None:
        dt = np.dtype(dtype)
        if isinstance(data, np.ndarray) and data.dtype == dt:
            return data
        return np.asarray(data, dtype=dt)
    if isinstance(data, np.ndarray):
        arr = data
    else:
        arr = np.asarray(data)
    if arr.dtype == np.float64 or arr.dtype == np.float16:
        return arr.astype(np.float32)
    if arr.dtype.kind in "OUSV":
        raise ChainruleError(f"cannot make a tensor from data of dtype {arr.dtype}; expected numbers")
    return arr


def _foreign_array(data: Any, dtype: Any) -> Any:
    """``data`` of another namespace with the dtype rules of NumPy data: ``dtype`` when given,
    else float64 (and float16) become float32."""
    xp = namespace(data)
    if dtype is not None:
        dt = dtype_in(xp, dtype)
    elif data.dtype == xp.float64 or data.dtype == getattr(xp, "float16", xp.float64):
        dt = xp.float32
    else:
        return data
    return data if data.dtype == dt else xp.astype(data, dt)


def _is_float(arr: Any) -> bool:
    """Whether ``arr`` holds real floating-point numbers (so that it can carry a gradient)."""
    dt = arr.dtype
    if isinstance(dt, np.dtype):
        return dt.type in _FLOATS
    return namespace(arr).isdtype(dt, "real floating")


def _is_integral(arr: Any) -> bool:
    """Whether ``arr`` holds integers or booleans."""
    dt = arr.dtype
    if isinstance(dt, np.dtype):
        return dt.kind in "iub"
    return namespace(arr).isdtype(dt, ("integral", "bool"))


def leaf(data: Any) -> Tensor:
    """A constant tensor (no gradient, no parents) around the backend array ``data``, as is.

    The fast way for tools to wrap an array they already hold (a batch, a probe): no copy,
    no dtype conversion and no checks, unlike :func:`tensor`.

    Example:
        >>> x = autograd.leaf(np.zeros((2, 3), dtype=np.float32))
        >>> x.requires_grad, x.parents
        (False, ())
    """
    t = Tensor.__new__(Tensor)
    t.data = data
    t.grad = None
    t.requires_grad = False
    t._parents = ()
    t._backward = None
    t._retain = False
    t.name = None
    t._seq = next(_counter)
    t._g = None
    return t


def node(data: Any, parents: tuple, backward: Callable) -> Tensor:
    """The result of an operation: records ``parents`` and ``backward`` if a gradient is needed.

    ``backward(g)`` returns one gradient (or None) per parent.
    """
    t = Tensor.__new__(Tensor)
    if type(data) not in NUMPY_TYPES and isinstance(data, np.generic):
        data = np.asarray(data)  # NumPy reductions give scalars; a tensor always holds an array
    t.data = data
    t.grad = None
    t._retain = False
    t.name = None
    t._seq = next(_counter)
    t._g = None
    if _grad_mode.enabled:
        for p in parents:
            if p.requires_grad:
                t.requires_grad = True
                t._parents = parents
                t._backward = backward
                return t
    t.requires_grad = False
    t._parents = ()
    t._backward = None
    return t


def as_tensor(x: Any, like: Tensor | None = None) -> Tensor:
    """``x`` as a Tensor; Python numbers take the dtype of ``like``."""
    if isinstance(x, Tensor):
        return x
    if like is not None and isinstance(x, (int, float, bool)):
        return leaf(asarray(x, like.data, like.data.dtype))
    arr = _to_array(x)
    if like is not None and _is_integral(arr) and _is_float(like.data):
        # integers meeting floats take the float dtype, as in PyTorch
        arr = arr.astype(like.data.dtype) if type(arr) in NUMPY_TYPES else namespace(arr).astype(arr, like.data.dtype)
    return leaf(arr)


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None, device: str | None = None) -> Tensor:
    """Make a tensor from a number, a (nested) list or an array.

    Floating-point data becomes float32 unless ``dtype`` is given (for example
    ``dtype="float64"`` for gradient checks); integers stay integers (labels).
    An array of another namespace (a CuPy array on the GPU) stays in it, on its
    device, unless ``device`` ("cpu" or "cuda") says where the tensor goes.

    Example:
        >>> x = cr.tensor([[1.0, 2.0]], requires_grad=True)
        >>> x.dtype
        dtype('float32')
        >>> cr.tensor([1.0, 2.0], device="cuda")  # needs CuPy and an NVIDIA GPU
    """
    if type(data) in NUMPY_TYPES and dtype is None and device is None and not requires_grad and data.dtype.char in _AS_IS:
        return leaf(data)  # the common case of a training batch, without the general checks
    t = Tensor(data, requires_grad=requires_grad, dtype=dtype)
    return t if device is None else _placed(t, device)


_AS_IS = frozenset(np.dtype(t).char for t in ("float32", "int64", "int32", "uint8", "bool"))


def _moved(t: Tensor, device: Any) -> Tensor:
    """A new leaf holding ``t``'s data on ``device``, with ``t``'s flag, name and creation number."""
    out = leaf(move(t.data, device))
    out.requires_grad, out.name, out._seq = t.requires_grad, t.name, t._seq
    return out


def _placed(t: Tensor, device: Any) -> Tensor:
    """``t`` on ``device`` ("cpu" or "cuda"): ``t`` itself when it is there already."""
    if device == "cpu" and type(t.data) in NUMPY_TYPES:
        return t
    return t if normalize_device(device) == t.device else _moved(t, device)


def _shape(shape: Sequence) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def zeros(*shape: int, dtype: Any = "float32", requires_grad: bool = False, device: str = "cpu") -> Tensor:
    """A tensor of zeros: ``cr.zeros(2, 3)`` or ``cr.zeros((2, 3), device="cuda")``."""
    return _placed(Tensor(np.zeros(_shape(shape), dtype=dtype), requires_grad=requires_grad), device)


def ones(*shape: int, dtype: Any = "float32", requires_grad: bool = False, device: str = "cpu") -> Tensor:
    """A tensor of ones: ``cr.ones(2, 3)``."""
    return _placed(Tensor(np.ones(_shape(shape), dtype=dtype), requires_grad=requires_grad), device)


def full(
    shape: Sequence[int], value: float, dtype: Any = "float32", requires_grad: bool = False, device: str = "cpu"
) -> Tensor:
    """A tensor filled with ``value``."""
    return _placed(Tensor(np.full(tuple(shape), value, dtype=dtype), requires_grad=requires_grad), device)


def _rng(generator: Any) -> np.random.Generator:
    if generator is None:
        return np.random.default_rng()
    if isinstance(generator, np.random.Generator):
        return generator
    return np.random.default_rng(generator)


def randn(
    *shape: int, generator: Any = None, dtype: Any = "float32", requires_grad: bool = False, device: str = "cpu"
) -> Tensor:
    """Standard normal samples; ``generator`` is a seed or a ``numpy.random.Generator``.

    The samples are drawn on the CPU and then moved to ``device``, so one seed
    gives the same numbers on every device.

    Example:
        >>> w = cr.randn(64, 10, generator=0)
    """
    data = _rng(generator).standard_normal(_shape(shape)).astype(dtype)
    return _placed(Tensor(data, requires_grad=requires_grad), device)


def rand(
    *shape: int, generator: Any = None, dtype: Any = "float32", requires_grad: bool = False, device: str = "cpu"
) -> Tensor:
    """Uniform samples in [0, 1); ``generator`` is a seed or a ``numpy.random.Generator``."""
    data = _rng(generator).random(_shape(shape)).astype(dtype)
    return _placed(Tensor(data, requires_grad=requires_grad), device)


def zeros_like(t: Tensor, requires_grad: bool = False, device: str | None = None) -> Tensor:
    """Zeros of ``t``'s shape and dtype, on ``t``'s device unless ``device`` is given."""
    d = t.data
    data = np.zeros_like(d) if type(d) in NUMPY_TYPES else namespace(d).zeros_like(d)
    out = Tensor(data, requires_grad=requires_grad, dtype=d.dtype)
    return out if device is None else _placed(out, device)


def ones_like(t: Tensor, requires_grad: bool = False, device: str | None = None) -> Tensor:
    """Ones of ``t``'s shape and dtype, on ``t``'s device unless ``device`` is given."""
    d = t.data
    data = np.ones_like(d) if type(d) in NUMPY_TYPES else namespace(d).ones_like(d)
    out = Tensor(data, requires_grad=requires_grad, dtype=d.dtype)
    return out if device is None else _placed(out, device)


