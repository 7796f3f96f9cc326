"""A layered drawing of a graph without Graphviz: inputs on the left, the output on the right."""

from __future__ import annotations


def layered(n: int, edges: list) -> list:
    """(column, row) for each of ``n`` nodes, given (source, target) edges of a DAG.

    Each node goes one column right of its furthest input; a node without
    inputs sits one column left of its nearest consumer. Within a column, nodes
    are stacked by the mean row of the nodes they feed (ties in id order), so
    that edges run mostly straight. Iterative (no recursion): ids must come
    output first in reverse topological order for operations, as
    :class:`Graph` numbers them.
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
    # rows, from the output's column leftwards: each node near the rows of what it feeds
    # (the mean row of its users), so that edges run mostly straight
    by_col: dict = {}
    for i in range(n):
        by_col.setdefault(col[i], []).append(i)
    row = [0.0] * n
    for c in sorted(by_col, reverse=True):
        wanted = []
        for i in by_col[c]:
            placed = [row[t] for t in users[i] if col[t] > c]
            wanted.append((sum(placed) / len(placed) if placed else float("inf"), i))
        wanted.sort()
        for r, (_, i) in enumerate(wanted):
            row[i] = r
    return [(col[i], int(row[i])) for i in range(n)]
