"""A layered drawing of a graph without Graphviz: inputs on the left, the output on the right."""

from __future__ import annotations


def layered(n: int, edges: list) -> list:
    """(column, row) for each of ``n`` nodes, given (source, target) edges of a DAG.

    Each node goes one column right of its furthest input; a node without
    inputs sits one column left of its nearest consumer. Nodes of a column are
    stacked in id order. Iterative (no recursion): ids must come output first
    in reverse topological order for operations, as :class:`Graph` numbers them.
    """
    inputs: list = [[] for _ in range(n)]
    users: list = [[] for _ in range(n)]
    for s, t in edges:
        inputs[t].append(s)
        users[s].append(t)
    col = [0] * n
    for t in sorted(range(n), key=lambda i: -i):  # the inputs of an operation have larger ids
        if inputs[t]:
            col[t] = 1 + max(col[s] for s in inputs[t] if s != t)
    for s in range(n):
        if not inputs[s] and users[s]:
            col[s] = max(0, min(col[t] for t in users[s]) - 1)
    rows: dict = {}
    out = []
    for i in range(n):
        r = rows.get(col[i], 0)
        rows[col[i]] = r + 1
        out.append((col[i], r))
    return out
