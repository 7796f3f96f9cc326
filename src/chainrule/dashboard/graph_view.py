"""The dashboard's live computation graph: the run's network at its current step, as JSON.

``GET /api/sessions/{sid}/graph`` answers :func:`live_graph`: the graph of the
loss on a few training rows, through a copy of the network taken now (the
training thread is not disturbed and its gradients are not touched), after
backward, so that every edge carries the gradient that flows through it. A
small network (up to :data:`MAX_UNITS` units) is shown operation by operation
with its named parameters; a larger one as one node per layer.
"""

from __future__ import annotations

import copy
from typing import Any

from ..autograd import tensor
from ..compgraph import graph
from ..compgraph.animation import STATIC

SCRIPT = STATIC / "graph.js"  # the drawing, shared with Graph.to_html()

GRAPH_ROWS = 16  # training rows the graph's loss is computed on
MAX_UNITS = 50  # networks with more units than this are shown one node per layer


def live_graph(run: Any) -> dict:
    """The graph of ``run``'s network now: nodes, edges (with gradients), layout, and the step."""
    state = run._state
    model = copy.deepcopy(run.model)  # a consistent copy: the run keeps training meanwhile
    for p in model.parameters():
        p.grad = None
    X, y = run.X_train[:GRAPH_ROWS], run.y_train[:GRAPH_ROWS]
    loss = run.loss_fn(model(tensor(X)), tensor(y))
    units = sum(model.sizes)
    g = graph(loss, model, expand=units <= MAX_UNITS).backward()
    return {"step": 0 if state is None else int(state.step), "units": units, "expanded": g.expand,
            "rows": int(len(X)), **g.to_dict()}
