"""The pictures of the chain-rule chapter's example, made by cr.graph.

    python docs/hooks/graph_images.py    # rewrite the SVG after changing how graphs are drawn

The example is the chapter's own (the lesson's smallest network with a hidden
unit): a = w1 x + b1, h = sigmoid(a), y = w2 h + b2, L = (y - t)^2. The README
and the chapter show the committed SVG (drawn from the committed DOT, which
tests/test_compgraph.py checks is what cr.graph makes now). The animation page
is made at each site build (this file is also a MkDocs hook), so that no copy
of its script is committed.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOT = ROOT / "docs" / "images" / "chain-rule-graph.dot"
SVG = ROOT / "docs" / "images" / "chain-rule-graph.svg"
HTML = "images/chain-rule-backprop.html"  # in the built site
TITLE = "backward() on the chapter's example, one node at a time"


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
    """{path: text} of the committed pictures: the DOT (the SVG is drawn from it by Graphviz)."""
    return {DOT: lesson_graph().to_dot()}


def on_files(files, config):
    """MkDocs hook: add the animation page to the site."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, HTML, content=lesson_graph().to_html(TITLE)))
    return files


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    from chainrule.compgraph.dot import render_svg

    made = pictures()
    for path, text in made.items():
        path.write_text(text, encoding="utf-8")
    SVG.write_text(render_svg(made[DOT]), encoding="utf-8")
    print("wrote", ", ".join(str(p.relative_to(ROOT)) for p in (*made, SVG)))
