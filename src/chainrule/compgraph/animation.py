"""Backpropagation animated: a self-contained HTML page (its script and data inline, no network)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ..errors import ChainruleError

STATIC = Path(__file__).parent / "static"
MAX_NODES = 2000  # a browser draws this many boxes comfortably; beyond, the picture is unreadable anyway

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2430; margin: 16px; }
h1 { font-size: 18px; margin: 0 0 4px; }
.lead { color: #5d6675; margin: 0 0 10px; max-width: 60em; }
.controls { display: flex; gap: 6px; align-items: center; margin: 8px 0; }
.controls button { font: inherit; padding: 4px 12px; border: 1px solid #c9ced6; border-radius: 4px; background: #fff; cursor: pointer; }
.counter { color: #5d6675; font-variant-numeric: tabular-nums; margin-left: 8px; }
.scroll { overflow: auto; }
svg.graph { width: 100%; border: 1px solid #e3e6ec; border-radius: 6px; background: #fcfcfd; }
svg .node text { font-size: 11px; fill: #1d2430; }
svg .node .title { font-weight: 600; }
svg .node .grad { fill: #b03a1a; }
svg .node.current rect { stroke: #d35400; stroke-width: 3; }
svg .node.target rect { stroke: #2f6fdf; stroke-width: 2.5; }
svg .node.done { opacity: 0.75; }
svg .edge.sent { stroke: #b03a1a; }
svg .edge.active { stroke: #d35400; stroke-width: 3; }
svg .edge-label { font-size: 10px; fill: #b03a1a; }
.explain { min-height: 7em; max-width: 60em; }
.explain table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
.explain th, .explain td { padding: 2px 10px; border-bottom: 1px solid #eef0f4; text-align: right; }
.explain th:first-child, .explain td:first-child { text-align: left; }
"""


def script() -> str:
    """The drawing and player script (``static/graph.js``), as text."""
    return (STATIC / "graph.js").read_text(encoding="utf-8")


def _json(data: Any) -> str:
    # inside <script>: no "</" may close the element early
    return json.dumps(data, allow_nan=False).replace("</", "<\\/")


def to_html(graph: Any, title: str = "chainrule: backpropagation on the graph") -> str:
    """A page that draws ``graph`` and, when :meth:`Graph.backward` ran, plays backpropagation.

    Each step is one node of backward()'s order: the gradient it received (the sum
    of what each of its consumers sent), then, per input, the local derivative,
    the incoming gradient and their product sent back. Self-contained: the data
    and the script are in the page.
    """
    if len(graph.nodes) > MAX_NODES:
        raise ChainruleError(
            f"this graph has {len(graph.nodes)} nodes and the page draws at most {MAX_NODES}: pass the model "
            "(cr.graph(output, model)) to show its layers as one node each, or write to_dot() for Graphviz"
        )
    data = graph.to_dict()
    has_steps = bool(data["steps"])
    lead = (
        "backward() visits the nodes from the output to the inputs, each once. At every step the node "
        "multiplies its gradient by each local derivative and sends the product to that input; a node "
        "used several times adds up what it received before passing its gradient on."
        if has_steps else
        "The graph as recorded, with each node's value (call Graph.backward() to add the steps of backpropagation)."
    )
    controls = (
        '<div class="controls"><button class="reset">Reset</button><button class="prev">\u25c0 Prev</button>'
        '<button class="next">Next \u25b6</button><button class="play">Play</button><span class="counter"></span></div>'
        if has_steps else ""
    )
    start = (
        'chainruleGraph.player(document.getElementById("backprop"), DATA);' if has_steps
        else 'chainruleGraph.draw(document.querySelector("#backprop svg"), DATA, {colourEdges: false});'
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p class="lead">{lead}</p>
<div id="backprop">
{controls}
<div class="scroll"><svg class="graph" role="img" aria-label="computation graph"></svg></div>
<div class="explain"></div>
</div>
<script>{script()}</script>
<script>
const DATA = {_json(data)};
window.backprop = {start}
</script>
</body>
</html>
"""


def to_iframe(graph: Any, height: int = 560) -> str:
    """:func:`to_html` inside an ``<iframe srcdoc>``: a notebook cell shows it with its script."""
    page = html.escape(to_html(graph), quote=True)
    return f'<iframe srcdoc="{page}" style="width:100%;height:{height}px;border:0" sandbox="allow-scripts"></iframe>'
