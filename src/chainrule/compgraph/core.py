"""The computation graph that ``backward()`` walks, as plain data: nodes, edges, visit order.

:func:`graph` reads the recorded graph through autograd's public walk
(:func:`chainrule.autograd.walk`, :attr:`Tensor.parents`, :attr:`Tensor.op`)
and, after :meth:`Graph.backward`, what each step of backpropagation sent along
each edge (the ``observe`` hook of ``backward()``). Nothing here knows a
derivative: every gradient and local derivative shown comes from the engine.

With a model, every ``nn.Sequential`` (so every ``nn.MLP``) that the graph ran
through is shown as its layers: the Sequential is replayed one layer at a time
on a copy of itself, from the same input, so the fused path (one
``fused_layers`` node) and the layer-by-layer path give the same logical graph.
By default each layer (a Linear and the modules after it up to the next Linear)
is one node; ``expand=True`` shows its operations and its parameters.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import autograd
from ..autograd import Tensor
from ..backend import to_numpy
from ..errors import ChainruleError

#: kinds of node: the output, an operation, a leaf that receives a gradient, a constant, a layer
KINDS = ("output", "op", "leaf", "constant", "layer")


def summarize(arr: Any) -> float | dict | None:
    """A number for a one-element array; else its shape-free statistics {mean, std, min, max, norm}."""
    if arr is None:
        return None
    a = to_numpy(arr)
    if a.size == 1:
        return float(a.item())
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "norm": 0.0}
    with np.errstate(all="ignore"):
        return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max()),
                "norm": float(np.sqrt(np.sum(a * a)))}


@dataclass
class GraphNode:
    """One node: an operation's result, a leaf, a constant, or a collapsed layer.

    ``value`` and ``grad`` are numbers for one-element tensors and summary
    statistics otherwise (:func:`summarize`); ``grad`` is None until known.
    ``order`` is the node's position in backpropagation's visit (None for a
    constant, which backward never reaches).
    """

    id: int
    kind: str
    op: str | None
    name: str | None
    shape: tuple
    dtype: str
    value: float | dict | None
    grad: float | dict | None
    order: int | None
    members: tuple = ()

    @property
    def label(self) -> str:
        """What a picture writes in the node: its name, or its operation."""
        if self.kind == "layer":
            return self.name or "layer"
        return self.name or self.op or self.kind


@dataclass
class GraphEdge:
    """An input of an operation: ``source`` feeds slot ``slot`` of ``target`` (node ids).

    After :meth:`Graph.backward`, ``grad`` summarizes what backpropagation sent
    back along the edge (the VJP), and ``local`` is the local derivative
    d target / d source when both are one-element tensors.
    """

    source: int
    target: int
    slot: int
    grad: float | dict | None = None
    local: float | None = None


@dataclass
class _Recorded:
    """What backward() did, keyed by id(tensor): each node's whole gradient, each edge's share."""

    grads: dict = field(default_factory=dict)  # id(node) -> gradient array
    edges: dict = field(default_factory=dict)  # (id(parent), id(node), slot) -> (contribution, local)
    visits: list = field(default_factory=list)  # the operations in the order backward() reached them
    version: int = 0  # how many backward passes were recorded (views made before are stale)

    def observe(self, node: Tensor, g: Any, parent_grads: Any) -> None:
        """The ``observe`` hook of ``backward()``: keeps ``g`` and each parent's share."""
        self.visits.append(node)
        self.grads[id(node)] = g
        local = autograd.vjp(node, 1.0) if node.data.size == 1 else None  # one-element: d node / d parent
        for slot, (p, pg) in enumerate(zip(node.parents, parent_grads)):
            if pg is None or not p.requires_grad:
                continue
            pg = autograd.unbroadcast(pg, p.data.shape)
            d = None
            if local is not None and local[slot] is not None and p.data.size == 1:
                d = float(to_numpy(local[slot]).reshape(()))
            self.edges[(id(p), id(node), slot)] = (pg, d)
            if not p.parents:  # a leaf: what this pass gave it, summed over its consumers
                prev = self.grads.get(id(p))
                self.grads[id(p)] = pg if prev is None else prev + pg


@dataclass
class _Replay:
    """A Sequential of the model replayed one layer at a time from the input it got in the graph."""

    prefix: str
    region: set  # ids of the real graph's nodes that the replay stands for
    real_out: Tensor  # the real graph's node that the Sequential returned
    out: Tensor  # the replay's output
    order: list  # the replay's tensors, in backward()'s order
    alias: dict  # id(replay leaf) -> the real tensor it copies (the input, the parameters)
    layers: list  # (name, operations of the layer in creation order, its parameters' names, modules)
    hidden: set  # ids of the real parameters that collapsed layers show inside themselves
    input: Tensor  # the real tensor the Sequential was applied to
    visits: list = field(default_factory=list)


def _parameter_names(model: Any) -> dict:
    if model is None:
        return {}
    if not hasattr(model, "named_parameters"):
        raise ChainruleError(f"cr.graph(output, model) needs an nn.Module as model, got {type(model).__name__}")
    return {id(p): name for name, p in model.named_parameters()}


def _sequentials(model: Any) -> list:
    """(prefix, Sequential) for each outermost Sequential of ``model`` that starts with a Linear."""
    if model is None:
        return []
    from ..nn import Linear, Sequential

    found: list = []
    for name, m in model.named_modules():
        if isinstance(m, Sequential) and len(m) and isinstance(m[0], Linear):
            if not any(name == p or name.startswith(p + ".") for p, _ in found if p) and not any(p == "" for p, _ in found):
                found.append((name, m))
    return found


def _replay(prefix: str, seq: Any, order: list) -> _Replay | None:
    """Run a copy of ``seq`` layer by layer from the input that the real graph gave it.

    Finds where the graph entered ``seq`` (the node reading its first weight),
    replays it, and finds the node that ``seq`` returned (the first one after
    the entry whose value is the replay's output). None when ``seq`` is not in
    the graph or its output cannot be found (a layer that draws random numbers).
    """
    from ..nn import Linear

    w = seq[0].weight
    # the first layer's operation reads (input, weight, ...): linear unfused, fused_layers fused
    entries = [t for t in order if len(t.parents) > 1 and t.parents[1] is w and t.parents[0] is not w]
    if not entries:
        return None
    first = entries[-1]  # the earliest: the walk runs newest first
    x = first.parents[0]
    children: dict = {}
    for t in order:
        for p in t.parents:
            children.setdefault(id(p), []).append(t)
    below, stack = {id(first)}, [first]
    while stack:
        for c in children.get(id(stack.pop()), ()):
            if id(c) not in below:
                below.add(id(c))
                stack.append(c)
    twin = copy.deepcopy(seq)
    x_copy = autograd.tensor(x.data, requires_grad=x.requires_grad)
    alias = {id(x_copy): x}
    real_params = dict(seq.named_parameters())
    for name, p in twin.named_parameters():
        p.grad = None
        alias[id(p)] = real_params[name]
    pre = prefix + "." if prefix else ""
    groups: list = []  # (first module index, [modules]) : a Linear and what follows it
    for i, m in enumerate(twin):
        if isinstance(m, Linear) or not groups:
            groups.append((i, []))
        groups[-1][1].append((i, m))
    h, seen, layers = x_copy, set(), []
    for k, (_, mods) in enumerate(groups, start=1):
        with autograd.enable_grad():
            for _, m in mods:
                h = m(h)
        ops = [t for t in reversed(autograd.walk(h)) if t.parents and id(t) not in seen]
        seen.update(map(id, ops))
        params = tuple(f"{pre}{i}.{n}" for i, m in mods for n, _ in m.named_parameters())
        modules = tuple(f"{pre}{i}: {_describe(m)}" for i, m in mods)
        layers.append((f"{pre}layer {k}", ops, params, modules))
    y = h.data
    real_out = None
    for t in reversed(order):  # creation order
        if id(t) in below and t.shape == h.shape and np.allclose(to_numpy(t.data), to_numpy(y), rtol=1e-5, atol=1e-6):
            real_out = t
            break
    if real_out is None:
        return None
    region = {id(t) for t in autograd.walk(real_out) if id(t) in below}
    hidden = {id(real_params[n[len(pre):]]) for _, _, names, _ in layers for n in names}
    return _Replay(prefix, region, real_out, h, autograd.walk(h), alias, layers, hidden, x)


_DTYPE_NAMES: dict = {}


def _dtype_name(dtype: Any) -> str:
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype)
    return name


def _describe(m: Any) -> str:
    if hasattr(m, "in_features") and hasattr(m, "out_features"):
        return f"{type(m).__name__} {m.in_features}\u2192{m.out_features}"
    return type(m).__name__


class Graph:
    """The graph of one computation: :attr:`nodes`, :attr:`edges` and backpropagation's order.

    Made by :func:`chainrule.graph`. Render it with :meth:`to_dot`,
    :meth:`to_svg` (needs Graphviz) or :meth:`to_html` (self-contained, with
    the step-by-step animation of backward once :meth:`backward` ran). In
    Jupyter it draws itself.
    """

    def __init__(self, output: Tensor, model: Any = None, expand: bool = False, constants: bool = True):
        if not isinstance(output, Tensor):
            raise ChainruleError(f"cr.graph needs the Tensor a computation returned, got {type(output).__name__}")
        self.output = output
        self.model = model
        self.expand = bool(expand)
        self.constants = bool(constants)
        self._names = _parameter_names(model)
        order = autograd.walk(output)
        self._replays = [r for r in (_replay(p, s, order) for p, s in _sequentials(model)) if r is not None]
        self._recorded = _Recorded()
        self._cache = None
        self._build(order)

    # ---- data -------------------------------------------------------------
    def _build(self, order: list) -> None:
        """The tensors shown (output first, in backprop order; then the rest) and the edges
        between them as (shown parent, tensor, slot, the parent backward() saw)."""
        region: set = set()
        head: dict = {}
        alias: dict = {}
        for r in self._replays:
            region |= r.region
            head[id(r.real_out)] = r
            alias.update(r.alias)
        outside = {id(r.real_out): r.out for r in self._replays}  # consumers of a Sequential read its replay
        tensors: list = []
        index: set = set()

        def add(t: Tensor) -> None:
            if id(t) not in index:
                index.add(id(t))
                tensors.append(t)

        replayed = {id(t) for t in alias.values()}
        leaves = []  # after every operation; a Sequential's in its replay's order, on either path
        for t in order:
            if id(t) in head:
                for u in head[id(t)].order:
                    if u.parents:
                        add(u)
                    else:
                        leaves.append(alias.get(id(u), u))
            elif not t.parents:
                if id(t) not in replayed:
                    leaves.append(t)
            elif id(t) not in region:
                add(t)
        for t in leaves:
            add(t)
        edges = []
        i = 0
        while i < len(tensors):  # (constants are appended as they are met)
            t = tensors[i]
            i += 1
            for slot, p in enumerate(t.parents):
                if not p.requires_grad and not self.constants:
                    continue
                shown = outside[id(p)] if id(p) in outside else alias.get(id(p), p)
                add(shown)
                edges.append((shown, t, slot, p))
        self._tensors, self._edges = tensors, edges
        # backward() frees the graph it walks: keep each tensor's operation and whether it has inputs
        self._op = {id(t): t.op for t in tensors}
        self._computed = {id(t) for t in tensors if t.parents}
        self._region, self._head = region, head

    @property
    def nodes(self) -> list:
        """The nodes: the output and the operations in backpropagation's order, the leaves that
        receive a gradient, then the constants; a model's layers are one node each unless ``expand``."""
        return self._view()[0]

    @property
    def edges(self) -> list:
        """The edges, one per input of each operation (a tensor used twice gives two edges)."""
        return self._view()[1]

    @property
    def order(self) -> list:
        """Node ids in the order backpropagation visits them (output first, leaves last)."""
        return [n.id for n in sorted((n for n in self.nodes if n.order is not None), key=lambda n: n.order)]

    def expanded(self, expand: bool = True) -> "Graph":
        """The same graph, with a model's layers shown operation by operation (``expand=False``:
        one node per layer). It shares what :meth:`backward` recorded, before or after.

        Example:
            >>> g = cr.graph(loss, model).backward()   # one node per layer
            >>> g.expanded().to_svg()                  # every operation and parameter
        """
        other = copy.copy(self)
        other.expand, other._cache = bool(expand), None
        return other

    def node(self, key: Any) -> GraphNode:
        """The node of a tensor of the graph, or the node named ``key`` ("0.weight", "layer 1")."""
        nodes, _, tensors = self._view()
        for n, ts in zip(nodes, tensors):
            if n.name == key or (isinstance(key, Tensor) and any(t is key for t in ts)):
                return n
        raise KeyError(f"no node for {key!r} in this graph")

    def _grad_of(self, t: Tensor) -> Any:
        g = self._recorded.grads.get(id(t))
        if t.grad is not None and (g is None or id(t) not in self._computed):
            return t.grad  # a leaf's gradient, or a retained one (retain_grad)
        return g

    def _view(self) -> tuple:
        """(nodes, edges, tensors of each node), collapsing layers unless ``expand``; made once
        per state of the graph (again after :meth:`backward`, or a leaf's ``.grad`` changing)."""
        leaves = tuple(id(t.grad) for t in self._tensors if id(t) not in self._computed and t.requires_grad)
        key = (self._recorded.version, leaves)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._make_view())
        return self._cache[1]

    def _make_view(self) -> tuple:
        layer_of: dict = {}
        layers: dict = {}
        hidden: set = set()
        if not self.expand:
            for r in self._replays:
                hidden |= r.hidden
                for name, ops, params, modules in r.layers:
                    layers[name] = (ops, params, modules)
                    for t in ops:
                        layer_of[id(t)] = name
            # a parameter that something outside its layer reads too (a penalty) stays in the picture
            hidden -= {id(shown) for shown, t, _, _ in self._edges if id(shown) in hidden and id(t) not in layer_of}
        visit = {id(t): i for i, t in enumerate(self._visit_order())}
        nodes, per_node, node_of = [], [], {}
        for t in self._tensors:
            if id(t) in hidden:
                continue
            key = layer_of.get(id(t), id(t))
            if key in node_of:
                continue
            nid = len(nodes)
            node_of[key] = nid
            if key in layers:
                ops, params, modules = layers[key]
                out = ops[-1]  # the layer's output
                nodes.append(GraphNode(nid, "layer", "layer", key, tuple(out.shape), _dtype_name(out.dtype), summarize(out.data),
                                       summarize(self._grad_of(out)), visit.get(id(out)), modules + params))
                per_node.append(tuple(ops))
            else:
                nodes.append(GraphNode(nid, self._kind(t), self._op[id(t)], self._name(t), tuple(t.shape), _dtype_name(t.dtype),
                                       summarize(t.data), summarize(self._grad_of(t)) if t.requires_grad else None,
                                       visit.get(id(t)) if t.requires_grad else None))
                per_node.append((t,))
        ranked = sorted((n for n in nodes if n.order is not None), key=lambda n: n.order)
        for i, n in enumerate(ranked):
            n.order = i
        shares = self._recorded.edges
        edges = []
        for shown, t, slot, seen in self._edges:
            if id(shown) in hidden:
                continue
            a, b = node_of[layer_of.get(id(shown), id(shown))], node_of[layer_of.get(id(t), id(t))]
            if a == b:
                continue  # inside one layer
            share = shares.get((id(seen), id(t), slot))
            if share is None and seen is not shown:
                share = shares.get((id(shown), id(t), slot))
            edges.append(GraphEdge(a, b, slot, summarize(share[0]) if share else None, share[1] if share else None))
        return nodes, edges, per_node

    def _visit_order(self) -> list:
        """The tensors in backward()'s order: as recorded by :meth:`backward`, else as walked."""
        shown = {id(t) for t in self._tensors}
        if self._recorded.visits:
            ops = [t for t in self._recorded.visits if id(t) in shown]
        else:
            ops = [t for t in self._tensors if id(t) in self._computed and t.requires_grad]
        return ops + [t for t in self._tensors if id(t) not in self._computed and t.requires_grad]

    def _kind(self, t: Tensor) -> str:
        if t is self._tensors[0]:
            return "output"
        if id(t) in self._computed:
            return "op"
        return "leaf" if t.requires_grad else "constant"

    def _name(self, t: Tensor) -> str | None:
        name = self._names.get(id(t)) or t.name
        if name is None and any(r.input is t for r in self._replays):
            return "input"  # what a model was applied to
        return name

    # ---- backpropagation, watched ------------------------------------------
    def backward(self, gradient: Any = None) -> "Graph":
        """Run ``output.backward(gradient)``, recording every node's gradient and each edge's share.

        Use it in place of ``output.backward()``: the leaves get their ``.grad``
        as usual, and the graph keeps what each step of backpropagation
        computed (every node's whole gradient, what it sent along each edge),
        which :attr:`steps` lists and :meth:`to_html` animates. A model's layers
        are replayed backward from the gradient their output received.
        Returns the graph itself.

        Example:
            >>> g = cr.graph(loss, model).backward()
            >>> g.save_html("backprop.html")
        """
        rec = _Recorded()
        self.output.backward(gradient, observe=rec.observe)
        real, rec.visits = rec.visits, []
        for r in self._replays:
            g = rec.grads.get(id(r.real_out))
            if g is not None:
                start = len(rec.visits)
                r.out.backward(g, retain_graph=True, observe=rec.observe)
                r.visits = rec.visits[start:]
        merged = []
        for t in real:
            if id(t) in self._head:
                merged += self._head[id(t)].visits
            elif id(t) not in self._region:
                merged.append(t)
        # in place: a graph made by expanded() shares the record
        kept = self._recorded
        kept.grads, kept.edges, kept.visits, kept.version = rec.grads, rec.edges, merged, kept.version + 1
        return self

    @property
    def steps(self) -> list:
        """Backpropagation one node at a time, in backward()'s order (empty before :meth:`backward`).

        Each step is a dict: ``node`` (its id), ``grad`` (its whole gradient, summed over
        its consumers) and ``edges``: per input, ``source``, ``slot``, ``local`` (the local
        derivative, for one-element tensors) and ``grad``, the product sent back.
        """
        if not self._recorded.visits:
            return []
        nodes, edges, _ = self._view()
        incoming: dict = {}
        for e in edges:
            incoming.setdefault(e.target, []).append(e)
        return [
            {"node": n.id, "grad": n.grad,
             "edges": [{"source": e.source, "slot": e.slot, "local": e.local, "grad": e.grad}
                       for e in incoming.get(n.id, ()) if e.grad is not None]}
            for n in sorted((n for n in nodes if n.order is not None and n.kind in ("output", "op", "layer")),
                            key=lambda n: n.order)
            if n.grad is not None
        ]
    # ---- output -------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON-ready data: nodes, edges, order, steps and a layout for drawing."""
        from ..runs import json_ready
        from .layout import layered

        nodes, edges = self.nodes, self.edges
        pos = layered(len(nodes), [(e.source, e.target) for e in edges])

        def number(x: Any) -> Any:  # (only values and gradients can be non-finite)
            return x if type(x) is float and math.isfinite(x) else json_ready(x, nonfinite_as_text=True)

        return {
            "nodes": [{"id": n.id, "kind": n.kind, "op": n.op, "name": n.name, "label": n.label, "shape": list(n.shape),
                       "dtype": n.dtype, "value": number(n.value), "grad": number(n.grad), "order": n.order,
                       "members": list(n.members), "x": pos[n.id][0], "y": pos[n.id][1]} for n in nodes],
            "edges": [{"source": e.source, "target": e.target, "slot": e.slot, "grad": number(e.grad), "local": number(e.local)}
                      for e in edges],
            "order": self.order,
            "steps": json_ready(self.steps, nonfinite_as_text=True),
        }

    def to_dot(self, **kwargs: Any) -> str:
        """Graphviz DOT text of the graph (see :func:`chainrule.compgraph.dot.to_dot`)."""
        from .dot import to_dot

        return to_dot(self, **kwargs)

    def to_svg(self) -> str:
        """The graph drawn as SVG by Graphviz's ``dot`` program (raises naming the fix when it is missing)."""
        from .dot import render_svg

        return render_svg(self.to_dot())

    def to_html(self, title: str = "chainrule: backpropagation on the graph") -> str:
        """A self-contained HTML page (no network, no CDN) drawing the graph; after :meth:`backward`
        it steps through backpropagation one node at a time."""
        from .animation import to_html

        return to_html(self, title)

    def save_html(self, path: Any, title: str = "chainrule: backpropagation on the graph") -> None:
        """Write :meth:`to_html` to ``path``."""
        from pathlib import Path

        Path(path).write_text(self.to_html(title), encoding="utf-8")

    def _repr_svg_(self) -> str | None:
        from .dot import dot_program

        return self.to_svg() if dot_program() else None

    def _repr_html_(self) -> str | None:
        from .dot import dot_program
        from .animation import to_iframe

        return None if dot_program() and not self.steps else to_iframe(self)

    def __repr__(self) -> str:
        ops = sum(n.kind in ("op", "output", "layer") for n in self.nodes)
        return f"Graph({len(self.nodes)} nodes, {ops} operations, {len(self.edges)} edges, output {self.nodes[0].label!r})"
