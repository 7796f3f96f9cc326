"""Graphviz output: DOT text, and SVG through the ``dot`` program where it is installed."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from ..errors import ChainruleError

INSTALL_HINT = (
    "install Graphviz, which provides it (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz; "
    "conda: conda install graphviz), or draw without it: Graph.to_dot() gives the text, Graph.to_html() a "
    "self-contained page"
)

_STYLE = {
    "output": 'shape=box, style="rounded,filled,bold", fillcolor="#fde2c8"',
    "op": 'shape=box, style="rounded,filled", fillcolor="#e8eef9"',
    "layer": 'shape=box, style="rounded,filled", fillcolor="#dcefdc"',
    "leaf": 'shape=ellipse, style=filled, fillcolor="#fff6cc"',
    "constant": 'shape=ellipse, style=dashed, color="#888888", fontcolor="#555555"',
}


def number(x: Any) -> str:
    """A short text for a value or gradient: the number, or mean and range of an array."""
    if x is None:
        return "?"
    if isinstance(x, dict):
        if x.get("mean") is None:
            return "empty"
        return f"mean {x['mean']:.3g}, [{x['min']:.3g}, {x['max']:.3g}]"
    return f"{x:.4g}"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def node_text(n: Any) -> str:
    """The lines a picture writes in a node: label, shape, value and gradient."""
    lines = [n.label if n.kind != "layer" else f"{n.label}: " + ", ".join(m.split(": ", 1)[-1] for m in n.members if ": " in m)]
    if n.op and n.name and n.kind != "layer":
        lines[0] += f" ({n.op})"
    if n.shape:
        lines.append("shape " + "\u00d7".join(map(str, n.shape)))
    lines.append("value " + number(n.value))
    if n.grad is not None:
        lines.append("grad " + number(n.grad))
    return "\n".join(lines)


def to_dot(graph: Any, rankdir: str = "LR", edge_labels: bool = True) -> str:
    """Graphviz DOT text: one node per graph node (value and gradient in its label), one edge
    per input of an operation, labelled with what backpropagation sent along it once known.

    Args:
        graph: a :class:`~chainrule.compgraph.Graph`.
        rankdir: "LR" (inputs on the left) or "TB".
        edge_labels: write each edge's gradient (and local derivative) on it.
    """
    if rankdir not in ("LR", "RL", "TB", "BT"):
        raise ChainruleError(f"rankdir must be one of LR, RL, TB, BT, got {rankdir!r}")
    out = ["digraph chainrule {", f"  rankdir={rankdir};",
           '  node [fontname="Helvetica", fontsize=10];', '  edge [fontname="Helvetica", fontsize=9, color="#555555"];']
    for n in graph.nodes:
        out.append(f"  n{n.id} [label={_quote(node_text(n))}, {_STYLE[n.kind]}];")
    for e in graph.edges:
        attrs = []
        if edge_labels and e.grad is not None:
            text = ("local " + number(e.local) + "\n") if e.local is not None else ""
            attrs.append(f"label={_quote(text + 'grad ' + number(e.grad))}")
        out.append(f"  n{e.source} -> n{e.target}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    out.append("}")
    return "\n".join(out) + "\n"


def dot_program() -> str | None:
    """The path of Graphviz's ``dot``, or None when it is not installed."""
    return shutil.which("dot")


def render_svg(dot_text: str, timeout: float = 60.0) -> str:
    """SVG text of ``dot_text`` drawn by Graphviz's ``dot``; raises naming the fix when it is missing."""
    prog = dot_program()
    if prog is None:
        raise ChainruleError("drawing a graph as SVG needs Graphviz's `dot` program, which is not on PATH: " + INSTALL_HINT)
    done = subprocess.run([prog, "-Tsvg"], input=dot_text, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise ChainruleError(f"Graphviz's dot could not draw the graph: {done.stderr.strip()}")
    return done.stdout
