"""The program of a compiled step, and the passes that make its replay quicker.

:mod:`chainrule.capture` records a step as a program: a list of ``(function, args, kwargs)``,
each a NumPy call that writes its result into an array of the program (``out=``). The passes
here rewrite that list before it is turned into one straight-line function. Each keeps every
element's arithmetic exactly as recorded, so a replay stays bit-identical to the eager step:

- :func:`typed_constants`: a Python number in an arithmetic ufunc call becomes a 0-d array of
  the array's dtype, the same number NumPy would convert it to at every call (NEP 50), once.
- :func:`merge_siblings`: the same exact elementwise operation applied to several arrays in a
  row (an optimizer's ``lr * grad`` for every parameter) becomes one call over one buffer that
  holds those arrays side by side. Each array becomes a view into that buffer.
- :func:`share_dead_buffers`: an intermediate array moves into the memory of one that is dead
  by then, so the replay holds about what an eager step holds at its peak.
- :func:`bound_methods`: a call of an unbound array method with keywords becomes a call of
  the bound method.

Example:
    >>> program, moved = optimize(program, candidates=fresh, fixed=inputs, keep=kept)
"""

from __future__ import annotations

from typing import Any

import numpy as np

_BASE = np.ndarray.base.__get__  # the memory's owner as NumPy knows it (not a subclass's .base)

#: Ufuncs whose every element is one correctly rounded IEEE operation (or exact): applying them
#: to arrays side by side in one buffer gives the same bits as one call per array.
EXACT = frozenset({
    np.add, np.subtract, np.multiply, np.true_divide, np.negative, np.positive, np.absolute, np.sqrt,
    np.square, np.reciprocal, np.maximum, np.minimum, np.fmax, np.fmin, np.greater, np.greater_equal,
    np.less, np.less_equal, np.equal, np.not_equal, np.logical_and, np.logical_or, np.logical_not,
    np.copysign, np.sign,
})
#: Ufuncs whose Python-number operands NumPy converts to the arrays' dtype (NEP 50): arithmetic
#: (the result of that dtype too) and comparisons (a boolean result).
_ARITHMETIC = frozenset({np.add, np.subtract, np.multiply, np.true_divide, np.maximum, np.minimum, np.power})
_COMPARISONS = frozenset({np.greater, np.greater_equal, np.less, np.less_equal, np.equal, np.not_equal})
# maximum and minimum deprecate a positional out=
_OUT_BY_KEYWORD = frozenset({np.maximum, np.minimum})
#: A run of operations that can merge spans at most this many operations (bounds the search).
WINDOW = 256
#: Arrays of at most this many elements merge: the call saved matters for small arrays only, and
#: a large array's move would hold it twice for a moment (the peak memory of the recording).
MERGE_SIZE = 1 << 16


def _root(a: np.ndarray) -> np.ndarray:
    """The array that owns ``a``'s memory."""
    b = _BASE(a)
    while isinstance(b, np.ndarray):
        a, b = b, _BASE(b)
    return a


def leaves(x: Any, found: list) -> list:
    """Every value in ``x`` that is not a tuple, list or dict (nested), appended to ``found``."""
    if type(x) in (tuple, list):
        for v in x:
            leaves(v, found)
    elif type(x) is dict:
        for v in x.values():
            leaves(v, found)
    else:
        found.append(x)
    return found


def _arrays_in(x: Any, found: list) -> list:
    """Every NumPy array in ``x`` (nested tuples, lists and dicts), appended to ``found``."""
    found.extend(v for v in leaves(x, []) if isinstance(v, np.ndarray))
    return found


def _whole(a: np.ndarray, r: np.ndarray) -> bool:
    return a is r or (a.shape == r.shape and a.strides == r.strides and a.__array_interface__["data"][0] == r.__array_interface__["data"][0])


def _partial_roots(program: list) -> set:
    """Ids of the roots that some operation uses through a view of a part of them."""
    partial = set()
    for _, args, kwargs in program:
        for a in _arrays_in((args, kwargs), []):
            r = _root(a)
            if not _whole(a, r):
                partial.add(id(r))
    return partial


def substitute(x: Any, moved: dict) -> Any:
    """``x`` with each array whose root was moved (``moved``: id of the old root -> its new
    array) replaced; only whole arrays are ever moved, so the array is its root."""
    if isinstance(x, np.ndarray):
        return moved.get(id(_root(x)), x)
    if type(x) in (tuple, list):
        return type(x)(substitute(v, moved) for v in x)
    if type(x) is dict:
        return {key: substitute(v, moved) for key, v in x.items()}
    return x


# ---- the ufunc calls of a program ------------------------------------------------------------


def _ufunc_parts(f: Any, args: tuple, kwargs: dict) -> tuple | None:
    """(inputs, output) of a ufunc call with one output given, else None."""
    if not isinstance(f, np.ufunc) or f.nout != 1:
        return None
    if len(args) == f.nin + 1 and not kwargs:
        return args[: f.nin], args[f.nin]
    out = kwargs.get("out")
    if len(args) == f.nin and len(kwargs) == 1 and isinstance(out, tuple) and len(out) == 1:
        return args, out[0]
    return None


def ufunc_call(f: Any, ins: tuple, out: np.ndarray) -> tuple:
    """A ufunc call for the program: its one output by position (the quickest call), except for
    the ufuncs whose positional ``out`` NumPy deprecates (maximum and minimum)."""
    return (f, ins, {"out": (out,)}) if f in _OUT_BY_KEYWORD else (f, (*ins, out), {})


def typed_constants(program: list) -> list:
    """Each Python number (and NumPy scalar of the same dtype) among the operands of an
    arithmetic ufunc whose array operands and output share one dtype, or of a comparison of
    arrays of one dtype, made a 0-d array of that dtype once: NumPy converts a Python number to
    the arrays' dtype at every call anyway (NEP 50), and a 0-d array is the quickest operand to
    pass (about 0.2 us a call)."""
    out_program = []
    for f, args, kwargs in program:
        parts = _ufunc_parts(f, args, kwargs) if f in _ARITHMETIC or f in _COMPARISONS else None
        if parts is not None:
            ins, out = parts
            arrays = [a for a in ins if isinstance(a, np.ndarray)]
            dt = arrays[0].dtype if arrays else None
            if arrays and all(a.dtype == dt for a in arrays) and dt.kind in "fiu" and (f in _COMPARISONS or out.dtype == dt):
                new = tuple(_typed(v, dt) for v in ins)
                if any(n is not v for n, v in zip(new, ins)):
                    f, args, kwargs = ufunc_call(f, new, out)
        out_program.append((f, args, kwargs))
    return out_program


def _typed(v: Any, dt: np.dtype) -> Any:
    if type(v) is float and dt.kind == "f" or type(v) is int and dt.kind in "fiu":
        try:
            with np.errstate(over="raise"):
                return np.array(v, dtype=dt)
        except (OverflowError, FloatingPointError):
            return v
    if isinstance(v, np.generic) and v.dtype == dt:
        return np.array(v)
    return v


def bound_methods(program: list) -> list:
    """Each call of an unbound NumPy array method (``np.ndarray.take(a, i, out=o)``) made a call
    of the bound method (``a.take(i, out=o)``), which NumPy runs with less argument handling."""
    out = []
    for f, args, kwargs in program:
        if type(f).__name__ == "method_descriptor" and getattr(f, "__objclass__", None) is np.ndarray and args and type(args[0]) is np.ndarray:
            f, args = getattr(args[0], f.__name__), args[1:]
        out.append((f, args, kwargs))
    return out


# ---- merging sibling operations --------------------------------------------------------------


def _effects(f: Any, args: tuple, kwargs: dict) -> tuple:
    """(roots read, roots written, barrier) of one operation, by id. A NumPy call is taken to
    read and write every array it names unless it is a ufunc call with its output given; any
    other function (a host function of the step) is a barrier that nothing moves across."""
    parts = _ufunc_parts(f, args, kwargs)
    if parts is not None:
        ins, out = parts
        return {id(_root(a)) for a in ins if isinstance(a, np.ndarray)}, {id(_root(out))}, False
    touched = {id(_root(a)) for a in _arrays_in((args, kwargs), [])}
    numpy_call = isinstance(f, np.ufunc) or isinstance(getattr(f, "__self__", None), np.ufunc) or f is np.copyto or (
        getattr(f, "__objclass__", None) is np.ndarray
    )
    return touched, touched, not numpy_call


def merge_siblings(program: list, candidates: dict) -> tuple:
    """Merge runs of one exact elementwise ufunc applied to different arrays into one call.

    Two operations are siblings when they call the same ufunc of :data:`EXACT` and, position by
    position, pass either the very same operand (a number or a 0-d array) or different arrays
    of ``candidates`` (id -> array: arrays the program may place anywhere; those of at most
    :data:`MERGE_SIZE` elements), of one dtype and of the shape of the result (no
    broadcasting), tied alike where an operation works in place. A later sibling joins an
    earlier one when it can move up to the earlier one's place: nothing between writes what it
    reads or touches what it writes, and no host function lies between. Each merged position
    gets one new buffer holding its arrays side by side (their values copied in), each array a
    view of it.

    Returns (program, moved): moved maps the id of each array that now lives in a new buffer to
    its view there; the caller rebinds its own references to those arrays.
    """
    partial = _partial_roots(program)
    movable = {
        k: a for k, a in candidates.items() if k not in partial and a.size <= MERGE_SIZE and a.flags.c_contiguous and _BASE(a) is None
    }
    effects = [_effects(*op) for op in program]
    groups: list = []
    open_groups: dict = {}  # an operation's kind (see _kind) -> its open groups, oldest first
    for i, (f, args, kwargs) in enumerate(program):
        if effects[i][2]:
            open_groups = {}
            continue
        parts = _ufunc_parts(f, args, kwargs) if f in EXACT else None
        kind = _kind(f, (*parts[0], parts[1]), movable) if parts is not None else None
        if kind is None:
            continue
        key, roots = kind
        waiting = open_groups.setdefault(key, [])
        while waiting and i - waiting[0]["members"][0] > WINDOW:  # (too far back to join)
            waiting.pop(0)
        for g in reversed(waiting):
            if not (g["used"] & set(roots)) and _can_move(effects, g, i):
                g["members"].append(i)
                g["roots"].append(roots)
                g["used"].update(roots)
                break
        else:
            g = {"f": f, "key": key, "members": [i], "roots": [roots], "used": set(roots), "seen": i, "reads": set(), "writes": set()}
            waiting.append(g)
            groups.append(g)
    moved: dict = {}
    merged: dict = {}  # index of a group's first member -> the merged call
    dropped: set = set()
    for g in groups:
        if len(g["members"]) < 2:
            continue
        call = _merge(g, program, movable, moved)
        if call is not None:
            merged[g["members"][0]] = call
            dropped.update(g["members"][1:])
    if not merged:
        return program, {}
    out = []
    for i, (f, args, kwargs) in enumerate(program):
        if i in merged:
            out.append(merged[i])
        elif i not in dropped:
            out.append((f, substitute(args, moved), substitute(kwargs, moved)))
    return out, moved


def _kind(f: Any, operands: tuple, movable: dict) -> tuple | None:
    """(key, roots) of an operation that could merge, else None. ``operands``: its inputs, then
    its output. Siblings have equal keys: the ufunc, and per position either the shared operand
    (a number, or a 0-d array that is not the output) or, for a movable array of the result's
    shape, its dtype and the first position holding the same array (an operation in place).
    ``roots``: the ids of the movable arrays, by position."""
    out = operands[-1]
    key: list = [f]
    roots: list = []
    for p, x in enumerate(operands):
        if isinstance(x, np.ndarray):
            r = _root(x)
            if id(r) in movable and _whole(x, r) and x.shape == out.shape:
                tie = next((q for q in range(p) if roots[q] == id(r)), p)
                key.append(("vary", x.dtype.str, tie))
                roots.append(id(r))
                continue
            if x.ndim == 0 and p < len(operands) - 1:
                key.append(("shared", id(x)))
                roots.append(None)
                continue
            return None
        if p == len(operands) - 1 or not isinstance(x, (int, float, bool, np.generic)):
            return None
        key.append(("number", type(x), x))
        roots.append(None)
    return tuple(key), tuple(r for r in roots if r is not None)


def _can_move(effects: list, g: dict, i: int) -> bool:
    """Whether operation ``i`` may run at the place of the group's first member: nothing from
    there to ``i`` writes what it reads or touches what it writes. The group keeps what the
    operations after its first member read and write, extended up to ``i`` as it goes."""
    for j in range(g["seen"] + 1, i):
        r, w, _ = effects[j]
        g["reads"] |= r
        g["writes"] |= w
    g["seen"] = max(g["seen"], i - 1)
    reads, writes, _ = effects[i]
    if reads & g["writes"] or writes & (g["reads"] | g["writes"]):
        return False
    return True


def _merge(g: dict, program: list, movable: dict, moved: dict) -> tuple | None:
    """The one call that does the work of the group's members, each varying position's arrays
    moved into one new buffer (recorded in ``moved``); None when an array was moved already."""
    members = [_operands(program[i]) for i in g["members"]]
    kinds = g["key"][1:]
    flats: dict = {}  # position -> the buffer
    for p, kind in enumerate(kinds):
        if kind[0] != "vary":
            continue
        if kind[2] != p:  # tied in place to an earlier position
            flats[p] = flats[kind[2]]
            continue
        arrays = [_root(ops[p]) for ops in members]
        if any(id(a) in moved for a in arrays):
            return None
        flats[p] = np.empty(sum(a.size for a in arrays), dtype=arrays[0].dtype)
    for p, flat in flats.items():
        if kinds[p][2] != p:  # (filled with the position it is tied to)
            continue
        start = 0
        for ops in members:
            a = _root(ops[p])
            view = flat[start : start + a.size].reshape(a.shape)
            view[...] = a
            moved[id(a)] = view
            start += a.size
    ins = tuple(flats[p] if kinds[p][0] == "vary" else members[0][p] for p in range(len(kinds) - 1))
    return ufunc_call(g["f"], ins, flats[len(kinds) - 1])


def _operands(op: tuple) -> tuple:
    ins, out = _ufunc_parts(*op)
    return (*ins, out)


# ---- sharing dead buffers --------------------------------------------------------------------


def share_dead_buffers(program: list, keep: list, fresh: dict) -> list:
    """The program with each array it made while recording placed in the memory of one that is
    dead by then (same shape, dtype and strides), where it can be: the replay then holds about
    what an eager step holds at its peak, not every intermediate at once.

    An array qualifies when the recording made it (a fresh result), nothing outside the program
    sees it (``keep``: gradients, outputs, inputs, state) and the program uses it whole (no view
    of a part of it). Its first use writes it entirely (each recorded operation writes its whole
    result), so the dead array's old values never show.
    """
    refs: list = []  # per operation: the arrays it references
    for f, args, kwargs in program:
        refs.append(_arrays_in((args, kwargs), []))
    first: dict = {}
    last: dict = {}
    roots: dict = {}
    partial: set = set()
    for i, arrays in enumerate(refs):
        for a in arrays:
            r = _root(a)
            k = id(r)
            roots[k] = r
            first.setdefault(k, i)
            last[k] = i
            if not _whole(a, r):
                partial.add(k)
    kept = {id(_root(a)) for a in keep if isinstance(a, np.ndarray)}
    movable = {k for k in roots if k in fresh and k not in kept and k not in partial}
    starts: dict = {}
    for k in movable:
        starts.setdefault(first[k], []).append(k)
    ends: dict = {}
    for k, i in last.items():
        ends.setdefault(i, []).append(k)
    pool: dict = {}
    moved: dict = {}  # id of a root -> the plain array it now lives in
    for i in range(len(program)):
        for k in starts.get(i, ()):
            r = roots[k]
            key = (r.shape, r.dtype.str, r.strides)
            if pool.get(key):
                moved[k] = pool[key].pop()
        for k in ends.get(i, ()):
            r = roots[k]
            if k in movable:
                home = moved.get(k, r)
                pool.setdefault((r.shape, r.dtype.str, r.strides), []).append(home)
    if not moved:
        return program

    return [(f, substitute(args, moved), substitute(kwargs, moved)) for f, args, kwargs in program]


# ---- all of them -----------------------------------------------------------------------------


def optimize(program: list, candidates: dict, keep: list, fresh: dict) -> tuple:
    """The passes of this module in turn: constants typed, siblings merged, dead buffers shared,
    methods bound. ``candidates``: id -> array that the program may place anywhere (see
    :func:`merge_siblings`); ``keep`` and ``fresh`` as :func:`share_dead_buffers` takes them.
    Returns (program, moved) as :func:`merge_siblings` does."""
    program = typed_constants(program)
    program, moved = merge_siblings(program, candidates)
    keep = [substitute(a, moved) for a in keep]
    program = share_dead_buffers(program, keep, fresh)
    return bound_methods(program), moved
