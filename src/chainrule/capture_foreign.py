"""Capture and replay on CuPy and other array-API namespaces: ``cr.compile`` off NumPy.

On NumPy a step is recorded through a NumPy subclass (see :mod:`chainrule.capture`) and replayed
with ``out=`` into the arrays made while recording. Other namespaces have neither subclasses
that their functions honour nor ``out=`` (the array API has none), so here a recording wraps
each array the step touches in a :class:`_Var`: a stand-in that carries the real array and its
number in the step's list of values. Every operation on a ``_Var`` (an operator, an indexing, a
function of the namespace that ``__array_namespace__`` hands out) runs on the real arrays and
is written down as one statement: ``E[7] = matmul(E[3], E[5])``. The statements, in the order
the eager step ran them, are the program.

A replay runs the program again, as one generated function of straight-line code, on the
values of this call: the step's inputs and the arrays the step's holders hold now (each
parameter's data and gradient, each optimizer buffer, each state tensor). The same calls on
the same numbers give the same bits, so a replay is bit-identical to eager; only the Python of
the tensors, the graph and the sort is gone. In-place operations run in place again, on the
same kinds of objects, so what the eager step updated in place (the parameters, the optimizer's
buffers) a replay updates in place too; what the step bound anew (each ``.grad``) a replay binds
to its new array at the end.

Statements that need no value of this call (an array made from constants) are run once, while
recording, and their arrays kept; host work (:func:`chainrule.capture.per_step`: the learning
rate, dropout's masks, the checks of class targets) runs on the host in its place.

On CuPy a replay is captured as CUDA graphs (CuPy's stream capture): the statements between two
pieces of host work become one graph, captured on a side stream from a memory pool of its own
(so no other allocation can take the memory a graph writes), and launched at each call after
the inputs are copied into the arrays the capture read. A step on a few small layers, several
hundred kernel launches eagerly, becomes two or three launches. Where capture fails (an
operation that synchronizes with the host), the step replays as above, after one warning.
"""

from __future__ import annotations

import operator
import warnings
from typing import Any, Callable

import numpy as np

from . import capture as _capture
from .capture import _get, _set, _slot_name, _state_slots
from .autograd import Tensor
from .backend import NUMPY_TYPES, _is_cupy, is_foreign, namespace, to_numpy
from .program import leaves

# ---- the recorded array ----------------------------------------------------------------------


class _Var:
    """A foreign array as a recording sees it: ``a`` the real array, ``i`` its number in the
    step's values. Operations on it run on ``a`` and are written down (see the module)."""

    __slots__ = ("a", "i", "rec")
    __array_priority__ = 1e6  # CuPy and NumPy operators yield to ours (then ours record)
    __array_ufunc__ = None

    def __init__(self, a: Any, i: int, rec: "_ForeignRecorder"):
        self.a, self.i, self.rec = a, i, rec

    # what an array tells without being computed on
    shape = property(lambda self: self.a.shape)
    dtype = property(lambda self: self.a.dtype)
    device = property(lambda self: self.a.device)
    ndim = property(lambda self: self.a.ndim)
    size = property(lambda self: self.a.size)

    recorded_array = property(lambda self: self.a)  # (read by chainrule.backend's device checks)

    def recorded_call(self, fn: Callable, *args: Any) -> Any:
        """``fn(*args)`` on the real arrays, written down as one operation (chainrule.backend's
        functions that pick their implementation by the array's type call this)."""
        return self.rec.call(fn, args, {})

    def __len__(self) -> int:
        return len(self.a)

    def __repr__(self) -> str:
        return f"<recorded array {self.i}: {self.a.shape} {self.a.dtype}>"

    def __array_namespace__(self, api_version: Any = None) -> "_Namespace":
        return self.rec.namespace(self.a)

    # what reads values into Python: a replay could not repeat it
    def _read(self, what: str) -> Callable:
        self.rec.refuse(f"the step reads an array's value into Python ({what}: .item(), float(), bool(), an if on a tensor)")
        return getattr(self.a, what)

    def __bool__(self) -> bool:
        return self._read("__bool__")()

    def __float__(self) -> float:
        return self._read("__float__")()

    def __int__(self) -> int:
        return self._read("__int__")()

    def __index__(self) -> int:
        return self._read("__index__")()

    def __complex__(self) -> complex:
        return self._read("__complex__")()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        self.rec.refuse("the step reads an array's value into Python (.item(), float(), numpy.asarray: a copy to the host)")
        a = to_numpy(self.a)
        return a if dtype is None else a.astype(dtype)

    def __getattr__(self, name: str) -> Any:  # methods of the array (astype, reshape, to_device, ...)
        attr = getattr(self.a, name)
        if name in _READS:
            self.rec.refuse(f"the step reads an array's value into Python ({name})")
            return attr
        if not callable(attr):
            return self.rec.call(_attribute, (self, name), {}) if is_foreign(attr) else attr
        method = getattr(type(self.a), name)
        return lambda *args, **kwargs: self.rec.call(method, (self, *args), kwargs)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.rec.call(operator.setitem, (self, key, value), {}, mutates=self)

    def __getitem__(self, key: Any) -> Any:
        return self.rec.call(operator.getitem, (self, key), {})

    T = property(lambda self: self.rec.call(_attribute, (self, "T"), {}))
    mT = property(lambda self: self.rec.call(_attribute, (self, "mT"), {}))


_READS = {"item", "tolist", "get", "tobytes", "__dlpack__", "__dlpack_device__"}


def _attribute(a: Any, name: str) -> Any:
    return getattr(a, name)


def _binary(op: Callable) -> tuple:
    def forward(self: _Var, other: Any) -> Any:
        return self.rec.call(op, (self, other), {})

    def reflected(self: _Var, other: Any) -> Any:
        return self.rec.call(op, (other, self), {})

    return forward, reflected


def _in_place(op: Callable) -> Callable:
    def method(self: _Var, other: Any) -> _Var:
        self.rec.call(op, (self, other), {}, mutates=self)
        return self

    return method


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor", "lshift", "rshift"):
    _forward, _reflected = _binary(getattr(operator, f"{_name}_" if _name in ("and", "or") else _name))
    setattr(_Var, f"__{_name}__", _forward)
    setattr(_Var, f"__r{_name}__", _reflected)
    setattr(_Var, f"__i{_name}__", _in_place(getattr(operator, f"i{_name}")))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(_Var, f"__{_name}__", _binary(getattr(operator, _name))[0])
for _name in ("neg", "pos", "abs", "invert"):
    setattr(_Var, f"__{_name}__", (lambda op: lambda self: self.rec.call(op, (self,), {}))(getattr(operator, _name)))
_Var.__hash__ = None  # (as arrays: == is elementwise)


class _Namespace:
    """A namespace (CuPy's, array-api-strict's) whose functions a recording writes down."""

    def __init__(self, xp: Any, rec: "_ForeignRecorder"):
        self._xp, self._rec = xp, rec

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._xp, name)
        if not callable(attr) or isinstance(attr, type) or name in _METADATA:
            return attr
        rec = self._rec

        def recorded(*args: Any, **kwargs: Any) -> Any:
            return rec.call(attr, args, kwargs)

        recorded.__name__ = name
        setattr(self, name, recorded)  # (looked up once)
        return recorded


# functions of dtypes and shapes, not of values: called as they are
_METADATA = {"isdtype", "finfo", "iinfo", "result_type", "can_cast", "__array_namespace_info__", "broadcast_shapes"}


# ---- recording -------------------------------------------------------------------------------


class _Ref:
    """Value number ``i`` in a statement's arguments."""

    __slots__ = ("i",)

    def __init__(self, i: int):
        self.i = i


class _Statement:
    """``targets = fn(*args, **kwargs)``; ``host``: run on the host between graphs (per_step work,
    or reading host arrays); ``const``: reads no value of this call."""

    __slots__ = ("fn", "args", "kwargs", "targets", "host", "const", "refill")

    def __init__(self, fn: Any, args: tuple, kwargs: dict, targets: Any, host: bool, const: bool, refill: Any = None):
        self.fn, self.args, self.kwargs, self.targets = fn, args, kwargs, targets
        self.host, self.const, self.refill = host, const, refill


def _refs(tree: Any, found: list) -> list:
    """The value numbers that ``tree`` (nested tuples, lists, dicts) refers to, appended to ``found``."""
    found.extend(v.i for v in leaves(tree, []) if type(v) is _Ref)
    return found


def _has(tree: Any, test: Callable) -> bool:
    return any(test(v) for v in leaves(tree, []))


class _ForeignRecorder:
    """The recording of one call of a step on foreign arrays. The capture module's hooks
    (register, guard, refuse, per_step, adopt) reach it as they reach its NumPy recorder."""

    def __init__(self) -> None:
        self.reasons: list = []
        self.optimizers: list = []
        self.states: list = []
        self.guards: list = []
        self.values: list = []  # value number -> the real array while recording
        self.statements: list = []
        self.mutated: set = set()  # value numbers written in place (they or what they view)
        self.aliases: dict = {}  # value number -> the numbers whose memory it may share
        self._namespaces: dict = {}
        self.paused = 0

    # hooks the capture module's functions call
    def refuse(self, reason: str) -> None:
        if not self.paused and reason not in self.reasons:
            self.reasons.append(reason)

    def namespace(self, a: Any) -> _Namespace:
        xp = namespace(a)
        ns = self._namespaces.get(id(xp))
        if ns is None:
            ns = self._namespaces[id(xp)] = _Namespace(xp, self)
        return ns

    def new(self, a: Any) -> _Var:
        i = len(self.values)
        self.values.append(a)
        self.aliases[i] = {i}
        return _Var(a, i, self)

    # the operations
    def plain(self, tree: Any) -> Any:
        t = type(tree)
        if t is _Var:
            return tree.a
        if t in (tuple, list):
            return t(self.plain(v) for v in tree)
        if t is dict:
            return {k: self.plain(v) for k, v in tree.items()}
        return tree

    def refs(self, tree: Any) -> Any:
        t = type(tree)
        if t is _Var:
            return _Ref(tree.i)
        if t in (tuple, list):
            return t(self.refs(v) for v in tree)
        if t is dict:
            return {k: self.refs(v) for k, v in tree.items()}
        return tree

    def call(self, fn: Any, args: tuple, kwargs: dict, mutates: _Var | None = None) -> Any:
        result = fn(*self.plain(args), **self.plain(kwargs))
        if self.paused:
            return result
        rargs, rkwargs = self.refs(args), self.refs(kwargs)
        read = _refs((rargs, rkwargs), [])
        host = _has((args, kwargs), lambda v: type(v) in NUMPY_TYPES)  # a host array: copied to the device
        # made from constants alone (numbers, shapes, dtypes): no array at all, not even one held
        # outside the step, whose contents may change between calls
        const = not _has((args, kwargs), lambda v: type(v) is _Var or isinstance(v, np.ndarray) or is_foreign(v))
        if mutates is not None:
            for j in self.aliases[mutates.i]:
                self.mutated.add(j)
            mutates.a = result if result is not None else mutates.a
            self.values[mutates.i] = mutates.a
            self.statements.append(_Statement(fn, rargs, rkwargs, mutates.i if result is not None else None, host, False))
            return None
        if result is None:  # in place through a function (copyto-like): its arguments change
            for j in read:
                self.mutated.update(self.aliases[j])
            self.statements.append(_Statement(fn, rargs, rkwargs, None, host, False))
            return None
        if is_foreign(result):
            var = self.new(result)
            for j in read:  # (a result may view an argument: they share their aliases)
                self.aliases[var.i] |= self.aliases[j]
            self.statements.append(_Statement(fn, rargs, rkwargs, var.i, host, const))
            return var
        if type(result) in (tuple, list) and result and all(is_foreign(r) for r in result):
            out = []
            for r in result:
                var = self.new(r)
                for j in read:
                    self.aliases[var.i] |= self.aliases[j]
                out.append(var)
            self.statements.append(_Statement(fn, rargs, rkwargs, tuple(v.i for v in out), host, const))
            return type(result)(out)
        if isinstance(result, (np.ndarray, np.generic)) and read:
            self.refuse(f"the step copies an array to the host ({getattr(fn, '__name__', fn)})")
        return result

    def per_step(self, fn: Callable, args: tuple) -> Any:
        """Host work, run now and at each replay in its place (see capture.per_step)."""
        self.paused += 1
        try:
            result = fn(*self.plain(args))
        finally:
            self.paused -= 1
        rargs = self.refs(args)
        if is_foreign(result):
            var = self.new(result)
            self.statements.append(_Statement(fn, rargs, {}, var.i, True, False))
            return var
        if type(result) in NUMPY_TYPES:  # a host array: refilled at each replay, read by what follows
            self.statements.append(_Statement(fn, rargs, {}, None, True, False, refill=result))
            return result
        self.statements.append(_Statement(fn, rargs, {}, None, True, False))
        return result

    def adopt(self, values: tuple) -> tuple:
        """Arrays made outside the step (an optimizer's numbers for this step, which its host
        work updates in place) as recorded values whose contents a replay reads as they are."""
        return tuple(self.new(v) if is_foreign(v) else v for v in values)


# ---- the program and its replays ---------------------------------------------------------------


def _numbers(targets: Any) -> tuple:
    return () if targets is None else targets if type(targets) is tuple else (targets,)


def _source(tree: Any, bind: Callable) -> str:
    t = type(tree)
    if t is _Ref:
        return f"E[{tree.i}]"
    if t is tuple:
        return "(" + "".join(f"{_source(v, bind)}, " for v in tree) + ")"
    if t is list:
        return "[" + ", ".join(_source(v, bind) for v in tree) + "]"
    if t is dict:
        return "{" + ", ".join(f"{k!r}: {_source(v, bind)}" for k, v in tree.items()) + "}"
    if tree is None or t in (bool, int, str):
        return repr(tree)
    return bind(tree)


def _line(s: _Statement, bind: Callable) -> str:
    call = ", ".join([_source(a, bind) for a in s.args] + [f"{k}={_source(v, bind)}" for k, v in s.kwargs.items()])
    if s.refill is not None:
        return f"refill({bind(s.refill)}, {bind(s.fn)}({call}))"
    ts = _numbers(s.targets)
    target = "" if not ts else f"E[{ts[0]}] = " if type(s.targets) is not tuple else "(" + "".join(f"E[{i}], " for i in ts) + ") = "
    return f"{target}{bind(s.fn)}({call})"


def _refill(dst: np.ndarray, src: Any) -> None:
    np.copyto(dst, src, casting="unsafe")


def _set_item(dst: Any, src: Any) -> None:
    dst[...] = src


class _Source:
    """Generated code and the objects its names stand for."""

    def __init__(self, base: dict):
        self.names = dict(base)

    def bind(self, value: Any) -> str:
        name = f"c{len(self.names)}"
        self.names[name] = value
        return name

    def function(self, name: str, params: str, lines: list) -> Callable:
        source = "\n".join([f"def {name}({params}):"] + ["    " + ln for ln in (lines or ["pass"])] + [""])
        scope = dict(self.names)
        exec(source, scope)  # (our own source: names and calls, no user text)
        return scope[name]


class Program:
    """A step recorded on foreign arrays (see the module): its statements, the values it reads
    at the start (the inputs, the holders' arrays), the checks that the recording still holds,
    what it binds at the end and what it returns."""

    def __init__(self, rec: _ForeignRecorder, inputs: list, loads: list, bindings: list, checks: list, output: Any):
        self.inputs, self.loads, self.bindings, self.checks = inputs, loads, bindings, checks
        self.output = output
        kept = {i for _, i in bindings if i is not None} | set(_output_numbers(output))
        defined = {i for i, _, _ in inputs if i is not None} | {i for i, _ in loads}
        # values made from constants alone and never written: made once (while recording), kept
        constant = set()
        for s in rec.statements:
            ts = _numbers(s.targets)
            if s.const and not s.host and s.refill is None and ts and not any(t in rec.mutated or t in kept for t in ts):
                constant.update(ts)
        self.statements = [s for s in rec.statements if not (_numbers(s.targets) and _numbers(s.targets)[0] in constant)]
        for s in self.statements:
            defined.update(_numbers(s.targets))
        # the starting list of values: the constants and the arrays adopted from outside the step
        self.template = [None if i in defined else v for i, v in enumerate(rec.values)]
        # an array of the step's namespace (which says whether it has CUDA graphs: graphs_for)
        self.example = next((rec.values[i] for i in sorted(defined)), None)
        # what host work made while recording (a graph reads its array: see GraphReplay)
        self.made_on_host = {t: rec.values[t] for s in self.statements if s.host for t in _numbers(s.targets)}

    # -- one function for the whole replay
    def _prologue(self, src: _Source) -> tuple:
        """(checks, loads): source lines that return _STALE when the recording no longer holds,
        and that fill E with this call's values."""
        tests = []
        for kind, obj, attr, value in self.checks:
            h = src.bind(obj)
            if kind == "is not None":
                tests.append(f"{h}.{attr} is not None")
            elif kind == "params":
                tests.append(f"tuple({h}.params) != {src.bind(value)}")
            else:
                tests.append(f"getattr({h}, {attr!r}) != {src.bind(value)}")
        head = [f"if {' or '.join(tests)}:", "    return _STALE"] if tests else []
        lines = ["E = TEMPLATE.copy()"]
        for i, where, tensor in self.inputs:
            if i is not None:
                lines.append(f"E[{i}] = args[{where}]{'.data' if tensor else ''}")
            else:
                buf, k = where
                lines.append(f"refill({src.bind(buf)}, args[{k}]{'.data' if tensor else ''})")
        meta = []
        for i, (holder, key, shape, dtype) in self.loads:
            lines.append(f"E[{i}] = {_read(src.bind(holder), key)}")
            meta.append(f"E[{i}].shape != {src.bind(shape)} or E[{i}].dtype != {src.bind(dtype)}")
        if meta:
            lines += [f"if {' or '.join(meta)}:", "    return _STALE"]
        return head, lines

    def _names(self) -> dict:
        return {"_STALE": _capture._STALE, "refill": _refill, "materialize": _materialize, "OUTPUT": self.output, "TEMPLATE": self.template}

    def replay(self) -> Callable:
        """The replay as one function of straight-line code: ``replay(args)``."""
        src = _Source(self._names())
        head, lines = self._prologue(src)
        body = [_line(s, src.bind) for s in self.statements]
        tail = [f"{_read(src.bind(s[0]), s[1])} = {'None' if i is None else f'E[{i}]'}" for s, i in self.bindings]
        return src.function("replay", "args", head + lines + body + tail + ["return materialize(OUTPUT, E)"])

    # -- CUDA graphs: the device statements between two pieces of host work, one graph each
    def parts(self) -> list:
        """[(host, function of E, the value numbers it makes)]: the runs of device statements and
        of host statements, in order, each as one generated function ``part(E)``."""
        runs: list = []
        for s in self.statements:
            if not runs or runs[-1][0] != s.host:
                runs.append((s.host, []))
            runs[-1][1].append(s)
        parts = []
        for host, statements in runs:
            src = _Source(self._names())
            made = [t for s in statements for t in _numbers(s.targets)]
            parts.append((host, src.function("part", "E", [_line(s, src.bind) for s in statements]), made))
        return parts

    def prologue(self) -> Callable:
        """``prologue(args)``: the checks, then E with this call's values (or _STALE)."""
        src = _Source(self._names())
        head, lines = self._prologue(src)
        return src.function("prologue", "args", head + lines + ["return E"])


class GraphReplay:
    """A :class:`Program` replayed as CUDA graphs: each run of device statements captured once as
    one graph (``graphs.capture``), launched at each call after this call's inputs and holders'
    arrays are copied into the arrays the capture read; host work runs between the launches and
    its results are copied into the arrays the next graph reads. What a graph writes stays where
    the capture put it, so each ``.grad`` and the returned loss are the same arrays at every call.

    ``graphs``: ``copy(a)`` (a new array like ``a``, from the graphs' own memory) and
    ``capture(part, E)`` (run ``part(E)`` under stream capture: nothing computed, E's entries
    that ``part`` makes become the arrays the graph writes; returns an object with
    ``launch()``). Where capture fails, the step replays without graphs, after one warning."""

    def __init__(self, program: Program, graphs: Any):
        self.program, self.graphs = program, graphs
        self.prologue = program.prologue()
        self.parts = program.parts()
        self.fallback: Callable | None = None
        self.values: list | None = None  # the values of the capture, which the graphs read and write
        self.sequence: list = []

    def __call__(self, args: tuple) -> Any:
        if self.fallback is not None:
            return self.fallback(args)
        E = self.prologue(args)
        if type(E) is not list:
            return E  # (stale)
        if self.values is None:
            try:
                self._capture(E)
            except Exception as e:  # (an operation that synchronizes with the host, say)
                warnings.warn(
                    f"cr.compile: capturing the step as CUDA graphs failed ({type(e).__name__}: {e}); it replays without graphs",
                    _capture.CompileWarning,
                    stacklevel=3,
                )
                self.fallback = self.program.replay()
                return self.fallback(args)
        C = self.values
        for i in self.copied:  # this call's inputs and holders' arrays, where the capture read
            if E[i] is not C[i]:
                _set_item(C[i], E[i])
        for graph, host, made in self.sequence:
            if graph is not None:
                graph.launch()
                continue
            host(C)
            for t in made:  # (into the arrays the next graphs read)
                kept = self.kept[t]
                if C[t] is not kept:
                    _set_item(kept, C[t])
                    C[t] = kept
        for slot, i in self.bound:
            _set(slot, None if i is None else C[i])
        return _materialize(self.program.output, C)

    def _capture(self, E: list) -> None:
        program, graphs = self.program, self.graphs
        C = list(E)
        inputs = [i for i, _, _ in program.inputs if i is not None]
        for i in inputs:  # (the caller's batch stays the caller's: the graphs read a copy)
            C[i] = graphs.copy(E[i])
        sequence, kept = [], {}
        for host, part, made in self.parts:
            if host:
                for t in made:  # what host work makes, in arrays of the graphs: copies of the recording's
                    C[t] = kept[t] = graphs.copy(program.made_on_host[t])
                sequence.append((None, part, made))
            else:
                sequence.append((graphs.capture(part, C), None, made))
        loads = [i for i, _ in program.loads]
        bound = {(id(h), k): ((h, k), i) for (h, k), i in program.bindings}
        for i, (holder, key, _, _) in program.loads:  # holders keep the arrays the graphs update
            bound.setdefault((id(holder), key), ((holder, key), i))
        self.values, self.sequence, self.kept = C, sequence, kept
        self.copied = inputs + loads
        self.bound = list(bound.values())


def graphs_for(a: Any) -> Any:
    """The CUDA graphs of array ``a``'s namespace (:class:`CuPyGraphs` for CuPy), or None."""
    return CuPyGraphs() if _is_cupy(a) else None


class CuPyGraphs:
    """CuPy's stream capture (``Stream.begin_capture``/``end_capture``), on a side stream and from
    a memory pool of its own: memory a capture takes (and frees, for its later operations) is
    never handed to an allocation outside the graphs, which write it at each launch."""

    def __init__(self) -> None:
        import cupy

        self.cp = cupy
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pool = cupy.cuda.MemoryPool()

    def copy(self, a: Any) -> Any:
        with self.cp.cuda.using_allocator(self.pool.malloc):
            return a.copy()

    def capture(self, part: Callable, E: list) -> Any:
        cp, stream = self.cp, self.stream
        stream.wait_event(cp.cuda.get_current_stream().record())  # (after the copies queued so far)
        with cp.cuda.using_allocator(self.pool.malloc), stream:
            stream.begin_capture()
            try:
                part(E)
            except BaseException:
                try:
                    stream.end_capture()
                except Exception:  # (the capture was invalidated already)
                    pass
                raise
            graph = stream.end_capture()
        return _Launch(graph, cp)


class _Launch:
    __slots__ = ("graph", "cp")

    def __init__(self, graph: Any, cp: Any):
        self.graph, self.cp = graph, cp

    def launch(self) -> None:
        self.graph.launch(stream=self.cp.cuda.get_current_stream())


def _read(holder: str, key: Any) -> str:
    return f"{holder}[{key}]" if isinstance(key, int) else f"{holder}.{key}"


def _output_numbers(output: Any) -> list:
    kind, value = output
    if kind in ("tensor", "array"):
        return [value]
    if kind == "tuple":
        return [i for o in value for i in _output_numbers(o)]
    return []


def _materialize(output: Any, E: list) -> Any:
    kind, value = output
    if kind == "tensor":
        return _capture._materialize(("tensor", E[value]))  # (the tensor a replay returns: made there)
    if kind == "array":
        return E[value]
    if kind == "tuple":
        return tuple(_materialize(o, E) for o in value)
    return value


def _outputs(result: Any, rec: _ForeignRecorder) -> Any:
    """What the step returned, as ("tensor", number) / ("array", number) / tuples / constants."""
    if isinstance(result, Tensor):
        if type(result.data) is _Var:
            return ("tensor", result.data.i)
        rec.refuse("the step returns a tensor it did not compute; return the tensors the step makes")
        return ("value", None)
    if type(result) is _Var:
        return ("array", result.i)
    if isinstance(result, tuple):
        return ("tuple", tuple(_outputs(r, rec) for r in result))
    if result is not None and not isinstance(result, (str, bool, int)):
        rec.refuse(f"the step returns a {type(result).__name__}, which a replay cannot recompute; return tensors")
    return ("value", result)


def _untraced(result: Any) -> Any:
    if isinstance(result, Tensor):
        if type(result.data) is _Var:
            result.data = result.data.a
        return result
    if isinstance(result, tuple):
        return tuple(_untraced(r) for r in result)
    return result.a if type(result) is _Var else result


# ---- recording a call ------------------------------------------------------------------------


def record(fn: Callable, args: tuple, holders: tuple, local: Any) -> tuple:
    """Run ``fn(*args)`` once, recording it: (Program or None, its result, reasons not to replay).
    ``holders``: the optimizers, state tensors and leaves found by the first (eager) call;
    ``local``: the capture module's thread-local, whose ``recorder`` the hooks read."""
    optimizers, states, leaves = holders
    rec = _ForeignRecorder()
    targs, inputs = [], []
    for k, a in enumerate(args):
        tensor = isinstance(a, Tensor)
        d = a.data if tensor else a
        if type(d) in NUMPY_TYPES:  # host data with device data: copied into a buffer each call
            buf = np.array(d, copy=True)
            inputs.append((None, (buf, k), tensor))
            targs.append(Tensor(buf) if tensor else buf)
        elif is_foreign(d):
            var = rec.new(d)
            inputs.append((var.i, k, tensor))
            targs.append(Tensor(var) if tensor else var)
        else:
            targs.append(a)
    slots = _state_slots(optimizers, states, leaves)
    originals = [_get(s) for s in slots]
    installed = {}
    for k, (s, v) in enumerate(zip(slots, originals)):
        if v is not None and is_foreign(v):
            installed[k] = rec.new(v)
            _set(s, installed[k])
    local.recorder = rec
    try:
        result = fn(*targs)
    finally:
        local.recorder = None
        bindings = []
        for k, (s, orig) in enumerate(zip(slots, originals)):
            now = _get(s)
            if type(now) is _Var:
                _set(s, now.a)
                if installed.get(k) is not now:
                    bindings.append((s, now.i))
            elif now is None:
                if orig is not None:
                    bindings.append((s, None))
            elif now is not orig:
                rec.refuse(f"the step binds an array made outside it ({_slot_name(s)} = an array); update it in place")
        for opt in optimizers:  # (numbers made while recording are the recording's, not the optimizer's)
            opt._live = {k: v for k, v in opt._live.items() if not any(type(a) is _Var for a in v)}
    output = _outputs(result, rec)
    read: list = []
    for st in rec.statements:
        _refs((st.args, st.kwargs), read)
    read_set = set(read) | {i for _, i in bindings if i is not None} | set(_output_numbers(output))
    loads, checks = [], []
    for k, s in enumerate(slots):
        var = installed.get(k)
        if var is not None and var.i in read_set:
            loads.append((var.i, (s[0], s[1], originals[k].shape, originals[k].dtype)))
        if s[1] == "grad" and originals[k] is None:  # (a gradient found would be added to)
            checks.append(("is not None", s[0], "grad", None))
    checks += [("!=", obj, attr, value) for obj, attr, value in rec.guards]
    checks += [("params", opt, "params", tuple(opt.params)) for opt in optimizers]
    program = Program(rec, inputs, loads, bindings, checks, output)
    return (None if rec.reasons else program), _untraced(result), rec.reasons
