"""Capture and replay (``cr.compile``): a training step recorded once, then replayed on the same buffers.

Eager execution rebuilds the graph at every step: new tensors, new nodes, a sort, new closures,
new arrays. Yet for a fixed network and a fixed batch shape the array operations that forward,
backward and the optimizer perform are the same at every step; only the numbers differ. That
list of operations is the chain rule worked out once for this network (the memoized graph), so
it can be kept and run again: the first call of a compiled step for a given input signature runs
eagerly; the second records every array operation (each ufunc, matmul, reduction, copy) with the
array it wrote; later calls replay that list with NumPy's ``out=`` on the arrays allocated while
recording, with no tensors, no graph and no sort. The same operations on the same numbers give
the same bits, so the replay is bit-identical to eager.

How operations are recorded: while recording, the inputs, the parameters, the optimizer's state
and the layers' buffers are viewed as :class:`_Traced`, a NumPy subclass whose
``__array_ufunc__`` and ``__array_function__`` compute the operation on plain arrays and write
down (function, arguments, result). Arrays are kept by reference, so a replay reads whatever
their memory holds then; numbers are kept as constants. The numbers that do change between steps
(the optimizer's step count and learning rate, dropout's masks, the checks of class targets) are
computed on the host by :func:`per_step`, which a replay calls again in its place.

Steps on CuPy and other array-API namespaces are recorded and replayed by
:mod:`chainrule.capture_foreign` (on CuPy as CUDA graphs), through the same hooks.

What cannot be replayed is never replayed: reading a value into Python inside the step
(``.item()``, ``float()``, ``bool()``, ``if loss < ...``), rebinding a parameter's or a state
array (``p.data = ...``), a layer whose ``forward`` is replaced (a watched layer). The step
then runs eagerly at every call, after one warning naming the cause (:class:`CompileWarning`). A change of the parameters (a load_state_dict that rebinds them, a new
parameter list) or of a guarded setting (``train()``/``eval()``, the optimizer's momentum) records
the step again.
"""

from __future__ import annotations

import functools
import threading
import warnings
import weakref
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

from . import autograd as _autograd
from . import backend as _backend
from .autograd import Tensor
from .program import _arrays_in, _root, optimize, substitute, ufunc_call

#: How many input signatures (shapes, dtypes) one compiled function keeps recorded.
CACHE_SIZE = 8

#: The name a replay gives the tensors it returns: they hold the step's buffers, not a graph.
REPLAYED = "result of a cr.compile replay"


class CompileWarning(UserWarning):
    """A compiled step that cannot be replayed runs eagerly; this warning (once) says why."""


class _Local(threading.local):
    recorder: Any = None


_local = _Local()
_RECORDING = threading.Lock()


# ---- the traced array ------------------------------------------------------------------------


def _plain(x: Any) -> Any:
    return x.view(np.ndarray) if isinstance(x, _Traced) else x


def _plain_tree(x: Any) -> Any:
    if isinstance(x, _Traced):
        return x.view(np.ndarray)
    if type(x) is tuple:
        return tuple(_plain_tree(v) for v in x)
    if type(x) is list:
        return [_plain_tree(v) for v in x]
    if type(x) is dict:
        return {k: _plain_tree(v) for k, v in x.items()}
    return x


class _Traced(np.ndarray):
    """A NumPy array whose operations the active recording writes down (see the module)."""

    @property
    def base(self) -> Any:  # (Python code reads this one; NumPy itself reads its own field)
        return None if self.__dict__.get("_fresh") else np.ndarray.base.__get__(self)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        ins = tuple(_plain(x) for x in inputs)
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(_plain(o) for o in out)
        f = ufunc if method == "__call__" else getattr(ufunc, method)
        rec = _local.recorder
        if rec is not None and rec.watched:
            rec.note(inputs)
        if rec is None:
            result = f(*ins, **kwargs)
        else:
            result = rec.ufunc(f, ins, kwargs)
        if out is not None and method != "at":  # in place: the very arrays given (x += y keeps x)
            return out[0] if len(out) == 1 else out
        return result

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        rec = _local.recorder
        if rec is not None and rec.watched:
            rec.note(args)
        args, kwargs = _plain_tree(args), _plain_tree(kwargs)
        if rec is None:
            return func(*args, **kwargs)
        return rec.call(func, args, kwargs)


# The engine's NumPy fast paths (``type(x) in NUMPY_TYPES``) take traced arrays as NumPy arrays,
# so a recording follows the eager step's own paths. Plain arrays of other threads are unaffected.
_backend.NUMPY_TYPES.add(_Traced)


def _method(name: str) -> Callable:
    base = getattr(np.ndarray, name)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        rec = _local.recorder
        if rec is not None and rec.watched:
            rec.note((self, *args))
        args, kwargs = (self.view(np.ndarray), *_plain_tree(args)), _plain_tree(kwargs)
        if rec is None:
            return base(*args, **kwargs)
        return rec.call(base, args, kwargs)

    method.__name__ = name
    return method


def _reader(name: str) -> Callable:
    base = getattr(np.ndarray, name)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        rec = _local.recorder
        if rec is not None:
            rec.refuse(f"the step reads an array's value into Python ({name}: .item(), float(), bool(), an if on a tensor)")
        return base(self.view(np.ndarray), *args, **kwargs)

    method.__name__ = name
    return method


# methods that make a new array (or write in place) without passing through a ufunc
for _name in ("astype", "copy", "reshape", "flatten", "ravel", "take", "repeat", "argmax", "argmin", "dot",
              "cumsum", "cumprod", "fill", "sort", "argsort", "nonzero", "put", "__getitem__", "__setitem__",
              "__copy__", "__deepcopy__", "diagonal", "trace", "choose", "compress", "searchsorted"):
    setattr(_Traced, _name, _method(_name))
for _name in ("item", "tolist", "tobytes", "__float__", "__int__", "__index__", "__bool__", "__complex__"):
    setattr(_Traced, _name, _reader(_name))


# ---- recording ------------------------------------------------------------------------------


def _refill(result: np.ndarray, func: Any, args: tuple, kwargs: dict) -> None:
    np.copyto(result, func(*args, **kwargs), casting="unsafe")


def _refill_many(results: tuple, func: Any, args: tuple, kwargs: dict) -> None:
    for dst, src in zip(results, func(*args, **kwargs)):
        if dst is not None:
            np.copyto(dst, src, casting="unsafe")


_UNDEFINED_CONTENTS = {np.empty_like, np.empty}
_COPIES = {np.ndarray.astype, np.ndarray.copy}
# methods that write into out= (no temporary): argmax's index array must be of the platform's integer
_TAKE_OUT = {np.ndarray.argmax, np.ndarray.argmin, np.ndarray.take}
_OUT_DTYPE = {np.ndarray.argmax: np.dtype(np.intp), np.ndarray.argmin: np.dtype(np.intp)}
_NO_KWARGS: dict = {}
_UNSAFE = {"casting": "unsafe"}


def _ufunc_call(f: Any, ins: tuple, kwargs: dict) -> tuple:
    """A ufunc call for the program: as :func:`chainrule.program.ufunc_call` makes it when its
    only keyword is its one output, else as called."""
    out = kwargs.get("out")
    if len(kwargs) == 1 and len(out) == 1 and isinstance(f, np.ufunc) and f.nin == len(ins):
        return ufunc_call(f, ins, out[0])
    return (f, ins, kwargs)


def _owned(value: Any) -> "_Traced":
    """``value`` (a fresh array, or a NumPy scalar made a 0-d array) as a traced array that reports
    ``.base is None``, as the result of an eager operation does: the engine may then keep it as
    a gradient without copying it. (It shares the fresh array's memory; nothing else holds it.)"""
    a = np.asarray(value)
    t = a.view(_Traced)
    t.__dict__["_fresh"] = True
    rec = _local.recorder
    if rec is not None:
        rec.fresh[id(a)] = a  # (NumPy makes a view's base the array that owns the memory: this one)
    return t


class _Recorder:
    """The program of one recording: a list of ``(function, args, kwargs)`` to call in order."""

    def __init__(self, tracing: bool):
        self.tracing = tracing  # False for the discovering (eager) first call
        self.program: list = []
        self.reasons: list = []
        self.optimizers: list = []
        self.states: list = []  # tensors whose .data is state updated in place (running statistics)
        self.leaves: dict = {}  # id -> leaf tensor that a backward() inside the step reached
        self.guards: list = []  # (object, attribute, value) that a replay checks first
        self.paused = 0
        self.fresh: dict = {}  # id -> each array the recording made (a result it owns)
        self.watched: set = set()  # ids of the gradients the step found on entry
        self.read: set = set()  # ... of those it read (then they are inputs: a replay needs the same arrays)

    def note(self, values: Any) -> None:
        for v in values:
            if id(v) in self.watched:
                self.read.add(id(v))
            elif type(v) in (tuple, list):
                self.note(v)

    def saw_leaves(self, leaves: list) -> None:
        if _local.recorder is not self:  # another thread's backward (the observer is global)
            return
        for t in leaves:
            self.leaves.setdefault(id(t), t)

    def refuse(self, reason: str) -> None:
        if not self.paused and reason not in self.reasons:
            self.reasons.append(reason)

    def ufunc(self, f: Any, ins: tuple, kwargs: dict) -> Any:
        result = f(*ins, **kwargs)
        if self.paused:
            return result
        out = kwargs.get("out")
        if out is not None:
            self.program.append(_ufunc_call(f, ins, kwargs))
            return result
        if result is None:  # ufunc.at: in place
            self.program.append((f, ins, kwargs))
            return None
        if isinstance(result, tuple):
            owned = tuple(_owned(r) for r in result)
            self.program.append((f, ins, {**kwargs, "out": tuple(t.view(np.ndarray) for t in owned)}))
            return owned
        t = _owned(result)  # (a NumPy scalar becomes a 0-d buffer)
        self.program.append(_ufunc_call(f, ins, {**kwargs, "out": (t.view(np.ndarray),)}))
        return t

    def call(self, func: Any, args: tuple, kwargs: dict) -> Any:
        result = func(*args, **kwargs)
        if self.paused:
            return result
        if result is None:  # in place (copyto, fill, __setitem__): call it again
            self.program.append((func, args, kwargs))
            return None
        if isinstance(result, np.ndarray):
            if "out" in kwargs and kwargs["out"] is not None:
                self.program.append((func, args, kwargs))
            elif self._is_view(result, args, kwargs):
                return result.view(_Traced)
            else:
                t = _owned(result)
                if func in _COPIES:  # astype, copy: one pass into the buffer
                    self.program.append((np.copyto, (t.view(np.ndarray), args[0]), _UNSAFE))
                elif func in _TAKE_OUT and result.dtype == _OUT_DTYPE.get(func, result.dtype):
                    self.program.append((func, args, {**kwargs, "out": t.view(np.ndarray)}))  # straight into the buffer
                elif func not in _UNDEFINED_CONTENTS:
                    self.program.append((_refill, (t.view(np.ndarray), func, args, kwargs), _NO_KWARGS))
                return t
            return result.view(_Traced)
        if isinstance(result, (tuple, list)) and result and all(isinstance(r, np.ndarray) for r in result):
            fresh = tuple(None if self._is_view(r, args, kwargs) else r for r in result)
            if any(r is not None for r in fresh):
                self.program.append((_refill_many, (fresh, func, args, kwargs), {}))
            return type(result)(r.view(_Traced) for r in result)
        if isinstance(result, np.generic):  # a full reduction (np.sum): kept as a 0-d buffer
            t = _owned(result)
            self.program.append((_refill, (t.view(np.ndarray), func, args, kwargs), _NO_KWARGS))
            return t
        if isinstance(result, (bool, float, complex)):
            self.refuse(f"the step reads an array's value into Python ({getattr(func, '__name__', func)})")
        return result

    @staticmethod
    def _is_view(result: np.ndarray, args: tuple, kwargs: dict) -> bool:
        root = _root(result)
        return any(_root(a) is root for a in _arrays_in((args, kwargs), []))


def per_step(fn: Callable, *args: Any) -> Any:
    """Run ``fn(*args)`` now, and again at each replay of a compiled step that is being recorded.

    For the host work that a step repeats with new numbers: the optimizer's step count and
    learning rate, dropout's masks, checks of class targets. Arrays among ``args`` are passed
    as plain NumPy arrays (their values are read freely); when ``fn`` returns an array, a replay
    copies its new result into the array returned while recording (which the recorded
    operations read). Outside a recording this is just ``fn(*args)``.

    Example:
        >>> mask = per_step(lambda: rng.random(shape) >= p)
    """
    rec = _local.recorder
    if rec is None:
        return fn(*args)
    if type(rec) is not _Recorder:  # (a recording on another namespace)
        return rec.per_step(fn, args)
    args = _plain_tree(args)
    rec.paused += 1
    try:
        result = fn(*args)
    finally:
        rec.paused -= 1
    if not rec.tracing:
        return result
    if isinstance(result, np.ndarray):
        result = _plain(result)
        rec.program.append((_refill, (result, fn, args, {}), {}))
        return result
    rec.program.append((fn, args, {}))
    return result


def adopt(values: tuple) -> tuple:
    """Arrays made outside a step that it reads, and that host work (:func:`per_step`) updates in
    place (an optimizer's numbers for this step), as the active recording must see them: as they
    are on NumPy, as recorded values on other namespaces. Outside a recording, ``values``."""
    rec = _local.recorder
    if rec is None or type(rec) is _Recorder:
        return values
    return rec.adopt(values)


def register(kind: str, obj: Any) -> None:
    """Tell the recording of a compiled step about state it must follow: ``"optimizer"`` (whose
    parameters and buffers are updated in place), ``"state"`` (a tensor whose ``.data`` a step
    updates in place, such as a running mean). Outside a recording, nothing."""
    rec = _local.recorder
    if rec is None:
        return
    bucket = rec.optimizers if kind == "optimizer" else rec.states
    if all(o is not obj for o in bucket):
        bucket.append(obj)


def guard(obj: Any, *attributes: str) -> None:
    """While recording, note ``obj``'s ``attributes``: a replay whose values differ records the step
    again (``train()``/``eval()``, an optimizer's momentum). Outside a recording, nothing."""
    rec = _local.recorder
    if rec is not None:
        for a in attributes:
            rec.guards.append((obj, a, getattr(obj, a)))


def refuse(reason: str) -> None:
    """While recording, mark the step as not replayable for ``reason`` (it then runs eagerly)."""
    rec = _local.recorder
    if rec is not None:
        rec.refuse(reason)


# ---- the compiled function -----------------------------------------------------------------


class _Entry:
    """One input signature: discovered (first call), then recorded (second), then replayed."""

    __slots__ = ("stage", "program", "run", "holders", "reasons")

    def __init__(self) -> None:
        self.stage = "new"
        self.reasons: list = []


def _signature(args: tuple) -> tuple:
    key = []
    for a in args:
        if isinstance(a, Tensor):
            d = a.data
            key.append(("t", type(d), d.shape, d.dtype, None if type(d) is np.ndarray else _backend.device_of(d), a.requires_grad))
        elif isinstance(a, np.ndarray):
            key.append(("a", a.shape, a.dtype))
        else:
            try:
                hash(a)
            except TypeError:
                key.append(("id", id(a)))
            else:
                key.append(("v", type(a), a))
    return tuple(key)


class Compiled:
    """A step function compiled by :func:`compile`: call it as the function itself."""

    def __init__(self, fn: Callable, cache_size: int = CACHE_SIZE, cuda_graphs: bool = True):
        self.fn = fn
        self.cache_size = int(cache_size)
        self.cuda_graphs = bool(cuda_graphs)
        self._entries: OrderedDict = OrderedDict()
        self._warned: set = set()
        self.replays = 0  # how many calls were replays (for tests and the curious)
        functools.update_wrapper(self, fn)

    # the public counters, for tests and curious users
    @property
    def signatures(self) -> int:
        """How many input signatures are kept."""
        return len(self._entries)

    def __call__(self, *args: Any) -> Any:
        key = _signature(args)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            if len(self._entries) > self.cache_size:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        if entry.stage == "ready":
            result = entry.run(args)
            if result is not _STALE:
                self.replays += 1
                return result
            entry = self._entries[key] = _Entry()
        if entry.stage == "eager" or _local.recorder is not None:
            return self.fn(*args)
        if entry.stage == "new":
            return self._discover(entry, args)
        return self._record(entry, args)

    # -- stage 1: an eager call that finds the optimizers and the state
    def _discover(self, entry: _Entry, args: tuple) -> Any:
        rec = _Recorder(tracing=False)
        reason = _unsupported(args)
        _local.recorder = rec
        _autograd.leaf_observer = rec.saw_leaves
        try:
            result = self.fn(*args)
        finally:
            _local.recorder = None
            _autograd.leaf_observer = None
        if reason:
            rec.refuse(reason)
        entry.holders = (rec.optimizers, rec.states, list(rec.leaves.values()))
        self._settle(entry, rec.reasons, "recorded")
        return result

    # -- stage 2: record the array operations
    def _record(self, entry: _Entry, args: tuple) -> Any:
        with _RECORDING:  # one recording at a time: backward's leaf observer is global
            return self._record_alone(entry, args)

    def _record_alone(self, entry: _Entry, args: tuple) -> Any:
        optimizers, states, leaves = entry.holders
        if _on_another_namespace(args, optimizers):
            from . import capture_foreign

            program, result, reasons = capture_foreign.record(self.fn, args, entry.holders, _local)
            if program is not None:
                graphs = capture_foreign.graphs_for(program.example) if self.cuda_graphs else None
                entry.program = program
                entry.run = capture_foreign.GraphReplay(program, graphs) if graphs is not None else program.replay()
            self._settle(entry, reasons, "ready")
            return result
        rec = _Recorder(tracing=True)
        inputs, targs = [], []
        for a in args:
            if isinstance(a, Tensor) or isinstance(a, np.ndarray):
                d = a.data if isinstance(a, Tensor) else a
                buf = np.array(d, copy=True)
                inputs.append((buf, isinstance(a, Tensor)))
                targs.append(Tensor(buf.view(_Traced), requires_grad=a.requires_grad) if isinstance(a, Tensor) else buf.view(_Traced))
            else:
                inputs.append(None)
                targs.append(a)
        slots = _state_slots(optimizers, states, leaves)
        originals = [_get(s) for s in slots]
        for s, orig in zip(slots, originals):
            if isinstance(orig, np.ndarray):
                _set(s, orig.view(_Traced))
        orig = None  # (no stray reference to the last one)
        installed = [_get(s) for s in slots]
        rec.watched = {id(v) for s, v in zip(slots, installed) if s[1] == "grad" and v is not None}
        # the gradients found on entry are held weakly, so that those the step drops (zero_grad)
        # are freed as in an eager step, not kept to the end of the recording
        for k, s in enumerate(slots):
            if s[1] == "grad" and installed[k] is not None:
                originals[k] = weakref.ref(originals[k])
                installed[k] = weakref.ref(installed[k], functools.partial(_forget, rec.watched, id(installed[k])))
        _local.recorder = rec
        try:
            result = self.fn(*targs)
        finally:
            _local.recorder = None
            bindings = []
            originals = [v() if type(v) is weakref.ref else v for v in originals]
            installed = [v() if type(v) is weakref.ref else v for v in installed]
            read_grads = [(s, orig) for s, orig, inst in zip(slots, originals, installed) if s[1] == "grad" and inst is not None and id(inst) in rec.read]
            for s, orig, inst in zip(slots, originals, installed):
                now = _get(s)
                if now is inst:
                    _set(s, orig)
                    now = orig
                elif s[1] == "grad" and (now is None or isinstance(now, _Traced)):
                    now = _plain(now)
                    _set(s, now)
                else:
                    rec.refuse(f"the step rebinds an array it reads ({_slot_name(s)} = a new array); update it in place")
                    now = _plain(now)
                    _set(s, now)
                bindings.append((s, now))
        output = _outputs(result, rec)
        keep = [v for _, v in bindings] + [v for _, v in read_grads] + _arrays_in(output, []) + [slot[0] for slot in inputs if slot]
        # arrays the program may place anywhere: those it made, and the optimizers' buffers (not
        # the parameters, the layers' state or the inputs, which their owners hold)
        candidates = dict(rec.fresh)
        candidates.update((id(v), v) for (_, key), v in bindings if isinstance(key, int) and isinstance(v, np.ndarray))
        for a in [v for (_, key), v in bindings if key == "data"] + [slot[0] for slot in inputs if slot]:
            candidates.pop(id(_root(a)), None)
        entry.program, moved = optimize(rec.program, candidates, keep, rec.fresh)
        if moved:  # arrays now in a shared buffer: the step's holders follow them
            bindings = [(s, substitute(v, moved)) for s, v in bindings]
            for s, v in bindings:
                if isinstance(s[1], int):
                    _set(s, v)
            output = _substitute_output(output, moved)
        entry.run = _straight_line(entry.program, inputs, bindings, read_grads, rec.guards, [(o, tuple(o.params)) for o in optimizers], output)
        self._settle(entry, rec.reasons, "ready")
        return _materialize(output) if entry.stage == "ready" else _untraced(result)

    def _settle(self, entry: _Entry, reasons: list, stage: str) -> None:
        if reasons:
            entry.stage = "eager"
            entry.reasons = reasons
            for r in reasons:
                if r not in self._warned:
                    self._warned.add(r)
                    warnings.warn(f"cr.compile({getattr(self.fn, '__name__', 'step')}): runs eagerly: {r}", CompileWarning, stacklevel=4)
        else:
            entry.stage = stage

#: What a replay returns when the step's state changed since the recording (record it again).
_STALE = object()


def _straight_line(program: list, inputs: list, bindings: list, read_grads: list, guards: list, params: list, output: Any) -> Callable:
    """The whole replay as one Python function of straight-line code, its objects bound as local
    names (default arguments): the checks that the recording still holds (each array the step
    updates is still the one bound where it was; the gradients it reads, the guarded settings
    and the optimizers' parameters unchanged), the copies of the inputs into their buffers, one
    plain call per recorded operation, the gradients bound again, the result. A replay thus pays
    no loop, no tuple unpacking and no argument lists built. It returns :data:`_STALE` when a
    check fails."""
    names: dict = {"_STALE": _STALE, "copyto": np.copyto, "materialize": _materialize, "output": output}
    quiet = _backend.WARNINGS_OFF
    if quiet:
        names["quiet_on"], names["quiet_off"], names["QUIET"] = quiet
    else:
        names["errstate"] = np.errstate
    stale, copies, body, rebind = [], [], [], []

    def bind(prefix: str, value: Any) -> str:
        name = f"{prefix}{len(names)}"
        names[name] = value
        return name

    def read(holder: str, key: Any) -> str:
        return f"{holder}[{key}]" if isinstance(key, int) else f"{holder}.{key}"

    for (obj, key), value in bindings:
        h, v = bind("h", obj), bind("v", value)
        if key == "grad":
            rebind.append(f"    {h}.grad = {v}")
        else:
            stale.append(f"{read(h, key)} is not {v}")
    for (obj, _), value in read_grads:  # gradients the step reads (an update compiled alone)
        stale.append(f"{bind('h', obj)}.grad is not {bind('v', value)}")
    for obj, attr, value in guards:
        stale.append(f"getattr({bind('h', obj)}, {attr!r}) != {bind('v', value)}")
    for opt, ps in params:
        stale.append(f"tuple({bind('h', opt)}.params) != {bind('v', ps)}")
    for i, slot in enumerate(inputs):
        if slot is not None:
            copies.append(f"    copyto({bind('i', slot[0])}, args[{i}]{'.data' if slot[1] else ''})")
    for f, args, kwargs in program:
        call = [bind("a", v) for v in args] + [f"{key}={bind('k', v)}" for key, v in kwargs.items()]
        body.append(f"        {bind('f', f)}({', '.join(call)})")
    source = "\n".join(
        [f"def replay(args, {', '.join(f'{n}={n}' for n in names)}):"]
        + ([f"    if {' or '.join(stale)}:", "        return _STALE"] if stale else [])
        + copies
        # (the eager step silences its own expected overflows; a replay cannot tell which)
        + (['    token = quiet_on(QUIET)', '    try:'] if quiet else ['    with errstate(all="ignore"):'])
        + (body or ["        pass"])
        + (['    finally:', '        quiet_off(token)'] if quiet else [])
        + rebind
        + ["    return materialize(output)", ""]
    )
    scope: dict = dict(names)
    exec(source, scope)  # (our own source: names and calls, no user text)
    return scope["replay"]


def _forget(ids: set, key: int, _: Any) -> None:
    ids.discard(key)


def _on_another_namespace(args: tuple, optimizers: list) -> bool:
    """Whether the step works on CuPy or array-API arrays (recorded by chainrule.capture_foreign)."""
    arrays = [a.data if isinstance(a, Tensor) else a for a in args] + [p.data for o in optimizers for p in o.params[:1]]
    return any(_backend.is_foreign(a) for a in arrays)


def _unsupported(args: tuple) -> str | None:
    for a in args:
        if isinstance(a, Tensor):
            if a.requires_grad:
                return "an input requires grad (its gradient would go to a copy); pass inputs without requires_grad"
    return None


def _state_slots(optimizers: list, states: list, leaves: list) -> list:
    """(holder, key) of every array the step may update in place: each parameter's (and each
    leaf's that got a gradient) data and grad, each optimizer buffer, each state tensor's data."""
    slots = []
    seen = set()
    for p in [p for opt in optimizers for p in opt.params] + leaves:
        if id(p) not in seen:
            seen.add(id(p))
            slots.append((p, "data"))
            slots.append((p, "grad"))
    for opt in optimizers:
        for buffers in opt.buffers().values():
            slots.extend((buffers, i) for i in range(len(buffers)))
    for t in states:
        slots.append((t, "data"))
    return slots


def _get(slot: tuple) -> Any:
    holder, key = slot
    return holder[key] if isinstance(key, int) else getattr(holder, key)


def _set(slot: tuple, value: Any) -> None:
    holder, key = slot
    if isinstance(key, int):
        holder[key] = value
    else:
        setattr(holder, key, value)


def _slot_name(slot: tuple) -> str:
    holder, key = slot
    return f"a buffer[{key}]" if isinstance(key, int) else f"a tensor's .{key}"


def _outputs(result: Any, rec: _Recorder) -> Any:
    """What the step returned, as ("tensor", buffer) / ("array", buffer) / nested tuples / constants."""
    if isinstance(result, Tensor):
        return ("tensor", _plain(result.data))
    if isinstance(result, np.ndarray):
        return ("array", _plain(result))
    if isinstance(result, tuple):
        return ("tuple", tuple(_outputs(r, rec) for r in result))
    if result is not None and not isinstance(result, (str, bool, int)):
        rec.refuse(f"the step returns a {type(result).__name__}, which a replay cannot recompute; return tensors")
    return ("value", result)


def _substitute_output(output: tuple, moved: dict) -> tuple:
    kind, value = output
    if kind in ("tensor", "array"):
        return (kind, substitute(value, moved))
    if kind == "tuple":
        return ("tuple", tuple(_substitute_output(o, moved) for o in value))
    return output


def _materialize(output: tuple) -> Any:
    kind, value = output
    if kind == "tensor":
        t = _autograd.leaf(value)  # (a leaf on the step's buffer: no copy)
        t.name = REPLAYED  # so that cr.graph can say why it has no graph to draw
        return t
    if kind == "tuple":
        return tuple(_materialize(o) for o in value)
    return value


def _untraced(result: Any) -> Any:
    if isinstance(result, Tensor):
        result.data = _plain(result.data)
        return result
    if isinstance(result, tuple):
        return tuple(_untraced(r) for r in result)
    return _plain(result)


def compile(fn: Callable | None = None, *, cache_size: int = CACHE_SIZE, cuda_graphs: bool = True) -> Any:
    """Compile a step function: record its array operations once, then replay them on the same buffers.

    ``fn`` takes tensors (or NumPy arrays) and returns a tensor, a tuple of them, or nothing;
    typically a whole training step (zero_grad, forward, loss, backward, optimizer step). For
    each input signature (shapes, dtypes, device, requires_grad; other arguments by value) the
    first call runs eagerly and finds the optimizers and layer state, the second records every
    array operation, and later calls replay them with ``out=`` on arrays allocated once:
    no tensors, no graph, no allocation per step. Results are bit-identical to eager: the loss,
    every ``.grad``, the parameters and the optimizer state. A new signature (the short last
    batch of an epoch) is recorded once more; ``cache_size`` signatures are kept (least recently
    used dropped).

    The tensor returned by a replay holds the step's own buffer: it stays valid until the next
    call of the compiled function, which overwrites it. Read it (``loss.item()``) or copy it
    before then.

    On CuPy and other array-API namespaces (see :mod:`chainrule.capture_foreign`) a replay runs
    the recorded operations again, as generated code, on the arrays the step's holders hold at
    that call; on CuPy each run of device operations between two pieces of host work is
    captured once as a CUDA graph (``cuda_graphs=False``: not), so a small step costs a few
    launches. Bit-identical to eager there too.

    Not replayed, but run eagerly after one :class:`CompileWarning`: a step that reads a value
    into Python (``.item()``, ``float()``, ``bool()`` inside ``fn``), rebinds an array it reads,
    or calls a layer whose ``forward`` is replaced (a watched layer). Recorded again: after the
    parameters are rebound on NumPy (``load_state_dict``) or the optimizer's parameters,
    ``train()``/``eval()`` or an optimizer's settings change. The learning rate may change
    freely (schedules); it is read at every replay.

    Example:
        >>> @cr.compile
        ... def step(x, y):
        ...     opt.zero_grad()
        ...     loss = F.cross_entropy(model(x), y)
        ...     loss.backward()
        ...     opt.step()
        ...     return loss
        >>> for xb, yb in batches:
        ...     loss = step(xb, yb)
    """
    if fn is None:
        return functools.partial(compile, cache_size=cache_size, cuda_graphs=cuda_graphs)
    return Compiled(fn, cache_size, cuda_graphs)
