"""See the chain rule: the graph that ``backward()`` walks, drawn and animated.

    g = cr.graph(loss, model)   # before backward(), which frees the graph
    g.backward()                # loss.backward(), watched step by step
    g.to_svg(); g.save_html("backprop.html")
"""

from __future__ import annotations

from typing import Any

from ..autograd import Tensor
from ..errors import ChainruleError
from .core import Graph, GraphEdge, GraphNode, summarize


def graph(output: Tensor, model: Any = None, expand: bool = False, constants: bool = True) -> Graph:
    """The computation graph behind ``output``: what ``output.backward()`` walks, as data.

    Nodes are the output, each operation, the leaves that receive a gradient and
    (with ``constants``) the tensors that need none; edges run from each input of
    an operation to its result. Each node has its operation's name, shape, value
    (a number, or summary statistics) and gradient once known. Call it before
    ``backward()`` (which frees the graph), then run :meth:`Graph.backward` to
    record every step, or ``output.backward()`` to see the leaves' gradients.

    Args:
        output: the tensor a computation returned (a loss, usually).
        model: an ``nn.Module``: its parameters are named as in
            ``named_parameters()`` ("0.weight"), and each Sequential (every
            ``nn.MLP``) shows one node per layer, the same for the fused and the
            layer-by-layer paths.
        expand: show a model's layers operation by operation, with their parameters.
        constants: include the inputs that need no gradient (data, targets).

    Returns:
        A :class:`~chainrule.compgraph.Graph`: ``nodes``, ``edges``, ``order``,
        ``steps``; ``to_dot()``, ``to_svg()``, ``to_html()``.

    Example:
        >>> a = cr.tensor(2.0, requires_grad=True)
        >>> b = a * a + a
        >>> g = cr.graph(b).backward()
        >>> [(n.label, n.value, n.grad) for n in g.nodes]
        [('add', 6.0, 1.0), ('mul', 4.0, 1.0), ('leaf', 2.0, 5.0)]
    """
    from ..capture import REPLAYED

    if isinstance(output, Tensor) and output.name == REPLAYED and not output.parents:
        raise ChainruleError(
            "this tensor is what a cr.compile step returned on a replay: the replay runs the step's recorded "
            "array operations, so there is no graph behind it to draw. The graph it replays is the eager one: "
            "draw it from an eager forward pass, e.g. cr.graph(F.cross_entropy(model(x), y), model), before backward()"
        )
    return Graph(output, model, expand=expand, constants=constants)


__all__ = ["Graph", "GraphEdge", "GraphNode", "graph", "summarize"]
