"""The committed pictures of the chain-rule chapter's example, made by cr.graph.

    python docs/hooks/graph_images.py    # rewrite them after changing how graphs are drawn

The example is the chapter's own (the lesson's smallest network with a hidden
unit): a = w1 x + b1, h = sigmoid(a), y = w2 h + b2, L = (y - t)^2. The README
shows the SVG; the chapter shows the SVG and links the animation.
tests/test_compgraph.py checks that the committed DOT and HTML are what this
script makes now.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOT = ROOT / "docs" / "images" / "chain-rule-graph.dot"
SVG = ROOT / "docs" / "images" / "chain-rule-graph.svg"
HTML = ROOT / "docs" / "images" / "chain-rule-backprop.html"


def lesson_graph():
    """The chapter's example, recorded and backpropagated by cr.graph."""
    import chainrule as cr

    values = {"x": 0.5, "t": 1.0, "w1": 0.8, "b1": -0.2, "w2": 1.5, "b2": 0.1}
    v = {}
    for name, value in values.items():
        v[name] = cr.tensor(value, dtype="float64", requires_grad=name not in ("x", "t"))
        v[name].name = name
    h = (v["w1"] * v["x"] + v["b1"]).sigmoid()
    loss = (v["w2"] * h + v["b2"] - v["t"]) ** 2
    return cr.graph(loss).backward()


def pictures() -> dict:
    """{path: text} of the DOT and the animation (the SVG is drawn from the DOT by Graphviz)."""
    g = lesson_graph()
    return {DOT: g.to_dot(), HTML: g.to_html("backward() on the chapter's example, one node at a time")}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    from chainrule.compgraph.dot import render_svg

    made = pictures()
    for path, text in made.items():
        path.write_text(text, encoding="utf-8")
    SVG.write_text(render_svg(made[DOT]), encoding="utf-8")
    print("wrote", ", ".join(str(p.relative_to(ROOT)) for p in (*made, SVG)))
