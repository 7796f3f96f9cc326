"""backprop: the chain rule by hand, by chainrule's autograd and by finite differences; memoization.

Part 1 takes a network with two hidden layers (3 -> 4 tanh -> 4 sigmoid -> 1,
mean squared error, float64) and computes dL/dW three ways: the chain rule
written out layer by layer in NumPy, ``loss.backward()``, and central finite
differences. They must agree within 1e-9.

Part 2 builds the same kind of network out of *scalar* tensors, one node per
product, sum and activation, so that the graph chainrule records is the
graph of the lesson's pictures. Backpropagation visits each edge of it once:
one product "upstream gradient x local derivative" per edge, counted from the
graph itself (``autograd.walk`` and each node's parents). The naive way
writes dL/dw as a sum over every path from the loss down to w of the product
of the local derivatives along it: its cost is the total length of all those
paths, counted exactly by dynamic programming over the same graph. On a small
network the paths are also enumerated for real, to show that they give the
same gradient.
"""

from __future__ import annotations

import numpy as np

from .. import autograd
from .. import functional as F
from .common import Result, new_result, fmt, new_figure

TOLERANCE = 1e-9


# ---- part 1: three ways to the gradient ------------------------------------------------


def _init_params(rng: np.random.Generator, sizes: tuple) -> dict:
    p = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        p[f"W{i}"] = rng.standard_normal((a, b)) / np.sqrt(a)
        p[f"b{i}"] = 0.1 * rng.standard_normal(b)
    return p


def forward_numpy(p: dict, X: np.ndarray, t: np.ndarray) -> float:
    """The loss of the 3-4-4-1 network (tanh, sigmoid, linear output) by plain NumPy."""
    a1 = np.tanh(X @ p["W1"] + p["b1"])
    a2 = 1 / (1 + np.exp(-(a1 @ p["W2"] + p["b2"])))
    y = a2 @ p["W3"] + p["b3"]
    return float(np.mean((y - t) ** 2))


def gradient_by_hand(p: dict, X: np.ndarray, t: np.ndarray) -> dict:
    """dL/dparams by the chain rule, written out: dL/dW = dL/dy * dy/dz * dz/dW, layer by layer."""
    z1 = X @ p["W1"] + p["b1"]
    a1 = np.tanh(z1)
    z2 = a1 @ p["W2"] + p["b2"]
    a2 = 1 / (1 + np.exp(-z2))
    y = a2 @ p["W3"] + p["b3"]
    dy = 2 * (y - t) / y.size  # dL/dy for L = mean((y - t)^2)
    g = {"W3": a2.T @ dy, "b3": dy.sum(0)}
    dz2 = (dy @ p["W3"].T) * a2 * (1 - a2)  # sigmoid' = s (1 - s)
    g["W2"], g["b2"] = a1.T @ dz2, dz2.sum(0)
    dz1 = (dz2 @ p["W2"].T) * (1 - a1**2)  # tanh' = 1 - tanh^2
    g["W1"], g["b1"] = X.T @ dz1, dz1.sum(0)
    return g


def gradient_by_autograd(p: dict, X: np.ndarray, t: np.ndarray) -> dict:
    """dL/dparams from chainrule's ``backward()`` in float64."""
    T = {k: autograd.tensor(v, dtype="float64", requires_grad=True) for k, v in p.items()}
    x = autograd.tensor(X, dtype="float64")
    a1 = (x @ T["W1"] + T["b1"]).tanh()
    a2 = (a1 @ T["W2"] + T["b2"]).sigmoid()
    y = a2 @ T["W3"] + T["b3"]
    F.mse_loss(y, autograd.tensor(t, dtype="float64")).backward()
    return {k: np.array(v.grad) for k, v in T.items()}


def gradient_by_differences(p: dict, X: np.ndarray, t: np.ndarray, eps: float = 1e-6) -> dict:
    """dL/dparams by central differences (L(w + eps) - L(w - eps)) / (2 eps), one entry at a time."""
    g = {}
    for k, v in p.items():
        gk = np.zeros_like(v)
        flat, gflat = v.reshape(-1), gk.reshape(-1)
        for j in range(flat.size):
            old = flat[j]
            flat[j] = old + eps
            up = forward_numpy(p, X, t)
            flat[j] = old - eps
            down = forward_numpy(p, X, t)
            flat[j] = old
            gflat[j] = (up - down) / (2 * eps)
        g[k] = gk
    return g


def _max_diff(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


# ---- part 2: counting the products ------------------------------------------------------


def scalar_network(depth: int, width: int, n_in: int = 2, seed: int = 0) -> tuple:
    """A fully connected sigmoid network of scalar tensors: (loss, weights and biases).

    Every weighted sum is built from scalar products and additions, so each
    edge of the recorded graph is one local derivative of the lesson's pictures.
    """
    rng = np.random.default_rng(seed)
    params = []
    acts = [autograd.tensor(v, dtype="float64") for v in rng.standard_normal(n_in)]
    for i, a in enumerate(acts):
        a.name = f"x{i + 1}"
    for layer, n_out in enumerate([width] * depth + [1], start=1):
        nxt = []
        for unit in range(1, n_out + 1):
            z = None
            for i, a in enumerate(acts, start=1):
                w = autograd.tensor(rng.standard_normal() / np.sqrt(len(acts)), dtype="float64", requires_grad=True)
                w.name = f"w{layer}[{unit},{i}]"  # layer, unit, input: the names cr.graph shows
                params.append(w)
                z = w * a if z is None else z + w * a
            b = autograd.tensor(0.1 * rng.standard_normal(), dtype="float64", requires_grad=True)
            b.name = f"b{layer}[{unit}]"
            params.append(b)
            z = z + b
            nxt.append(z.sigmoid() if layer <= depth else z)
        acts = nxt
    loss = (acts[0] - 0.5) ** 2
    return loss, params


def count_products(loss: autograd.Tensor, params: list) -> dict:
    """Products of local derivatives for backprop (one per edge) and for enumerating every path.

    Walks the graph in reverse topological order (root first). ``paths[n]`` is
    the number of paths from the loss to node n, ``length[n]`` their total
    length: each edge n -> parent p extends every path that reaches n.
    """
    order = autograd.walk(loss)
    paths = {id(loss): 1}
    length = {id(loss): 0}
    edges = 0
    for n in order:
        pn, ln = paths.get(id(n), 0), length.get(id(n), 0)
        for parent in n.parents:
            if not parent.requires_grad:
                continue
            edges += 1
            paths[id(parent)] = paths.get(id(parent), 0) + pn
            length[id(parent)] = length.get(id(parent), 0) + ln + pn
    naive = sum(length.get(id(w), 0) for w in params)
    n_paths = sum(paths.get(id(w), 0) for w in params)
    return {"nodes": len(order), "backprop_products": edges, "paths": n_paths, "naive_products": naive}


def gradient_by_paths(loss: autograd.Tensor, params: list) -> tuple:
    """dL/dw for each parameter as the sum over every path of the product of local derivatives.

    Evaluates each path separately (exponential work: only for small graphs).
    Reads each node's local derivatives from its backward rule with upstream
    gradient 1, so call this before ``loss.backward()`` frees the graph.
    Returns (gradients, products multiplied).
    """
    local = {}
    for n in autograd.walk(loss):
        if not n.is_leaf:
            grads = autograd.vjp(n, 1.0)
            local[id(n)] = [(p, float(g)) for p, g in zip(n.parents, grads) if g is not None]
    grad = {id(w): 0.0 for w in params}
    products = 0
    stack = [(loss, ())]
    while stack:  # depth-first over every path, keeping the local derivatives along it
        n, path = stack.pop()
        if id(n) in grad:  # a path from the loss down to a parameter: multiply it out on its own
            prod = 1.0
            for d in path:
                prod *= d
            grad[id(n)] += prod
            products += len(path)
        for p, d in local.get(id(n), ()):
            stack.append((p, path + (d,)))
    return [grad[id(w)] for w in params], products


def run(quick: bool = False, jobs: int = 1, seed: int = 0) -> Result:
    """Measure the claim of ``backprop``; arguments as :func:`chainrule.lab.run` describes."""
    r = new_result("backprop", quick, seed)
    rng = np.random.default_rng(seed)
    sizes = (3, 4, 4, 1)
    p = _init_params(rng, sizes)
    X = rng.standard_normal((8, 3))
    t = rng.standard_normal((8, 1))
    hand, auto, fd = gradient_by_hand(p, X, t), gradient_by_autograd(p, X, t), gradient_by_differences(p, X, t)
    d_ha, d_hf, d_af = _max_diff(hand, auto), _max_diff(hand, fd), _max_diff(auto, fd)
    scale = max(float(np.max(np.abs(v))) for v in hand.values())
    r.settings = {"network": "3 -> 4 (tanh) -> 4 (sigmoid) -> 1, mean squared error, 8 samples, float64",
                  "finite_difference_eps": 1e-6, "tolerance": TOLERANCE}
    r.numbers["three_ways"] = {"max_abs_hand_vs_autograd": d_ha, "max_abs_hand_vs_differences": d_hf,
                               "max_abs_autograd_vs_differences": d_af, "largest_gradient_entry": scale,
                               "parameters": int(sum(v.size for v in p.values()))}
    r.add_table(
        "The gradient of a two-hidden-layer network three ways (largest absolute difference over all "
        f"{r.numbers['three_ways']['parameters']} parameters)",
        ["pair", "max |difference|", "tolerance"],
        [["chain rule by hand vs autograd", fmt(d_ha), fmt(TOLERANCE)],
         ["chain rule by hand vs finite differences", fmt(d_hf), fmt(TOLERANCE)],
         ["autograd vs finite differences", fmt(d_af), fmt(TOLERANCE)]],
    )
    r.check(
        "The chain rule by hand, automatic differentiation and finite differences agree within 1e-9",
        max(d_ha, d_hf, d_af) < TOLERANCE,
        f"largest differences: hand/autograd {fmt(d_ha)}, hand/differences {fmt(d_hf)}, "
        f"autograd/differences {fmt(d_af)} (gradient entries up to {fmt(scale)})",
    )

    # every path, for real, on a small scalar network
    loss, params = scalar_network(2, 3, seed=seed)
    by_paths, path_products = gradient_by_paths(loss, params)
    counted = count_products(loss, params)
    loss.backward()
    by_backprop = [float(w.grad) for w in params]
    d_paths = float(np.max(np.abs(np.array(by_paths) - by_backprop)))
    r.numbers["path_enumeration"] = {"depth": 2, "width": 3, "max_abs_paths_vs_backprop": d_paths,
                                     "products_enumerated": path_products, **counted}
    r.check(
        "Summing the product of local derivatives over every path gives the same gradient as backpropagation",
        d_paths < 1e-12 and path_products == counted["naive_products"],
        f"scalar network with 2 hidden layers of 3: {counted['paths']} paths, {path_products} products "
        f"(the count predicted {counted['naive_products']}), largest difference from backprop {fmt(d_paths)}; "
        f"backprop used {counted['backprop_products']} products",
    )

    _graph_page(r, seed)

    depths = list(range(1, 7 if quick else 11))
    widths = list(range(1, 6 if quick else 9))
    by_depth = [{"depth": d, "width": 3, **count_products(*scalar_network(d, 3, seed=seed))} for d in depths]
    by_width = [{"depth": 4, "width": w, **count_products(*scalar_network(4, w, seed=seed))} for w in widths]
    r.numbers["by_depth"], r.numbers["by_width"] = by_depth, by_width
    for title, rows in (("growing depth, width 3", by_depth), ("growing width, depth 4", by_width)):
        r.add_table(
            f"Local-derivative products for one gradient: {title}",
            ["depth", "width", "graph nodes", "backprop products (edges)", "paths to the weights",
             "naive products (total path length)", "naive / backprop"],
            [[x["depth"], x["width"], x["nodes"], x["backprop_products"], x["paths"], x["naive_products"],
              fmt(x["naive_products"] / x["backprop_products"])] for x in rows],
        )

    bp = np.array([x["backprop_products"] for x in by_depth], dtype=float)
    nv = np.array([x["naive_products"] for x in by_depth], dtype=float)
    steps = np.diff(bp[1:])  # from depth 2 on, each added layer adds the same edges
    linear = bool(np.all(steps == steps[0]))
    growth = nv[1:] / nv[:-1]
    r.numbers["naive_growth_per_layer"] = growth.tolist()
    r.numbers["backprop_added_per_layer"] = np.diff(bp).tolist()
    r.check(
        "Backpropagation's products grow linearly with depth",
        linear,
        f"each hidden layer of width 3 added {', '.join(fmt(s) for s in np.diff(bp))} products "
        f"({'the same for every layer from depth 2 on' if linear else 'not constant'})",
    )
    r.check(
        "Enumerating every path grows exponentially with depth: each layer multiplies it by at least the width",
        bool(np.all(growth >= 3)),
        f"with width 3, naive products grew by x{', x'.join(fmt(g, 3) for g in growth)} per added layer "
        f"(smallest factor {fmt(growth.min(), 3)}): at least 3^depth",
    )
    r.notes.append(
        "A product here is one multiplication of a gradient by a local derivative. Backpropagation "
        "stores each node's gradient (memoization) and multiplies once per edge of the graph; the "
        "naive sum over paths multiplies along every path again, and the number of paths multiplies "
        "by the width with every layer."
    )
    _figures(r, by_depth, by_width)
    return r


def _graph_page(r: Result, seed: int) -> None:
    """The graph of a small scalar network with its path count, and backward() animated on it."""
    from ..compgraph import graph

    loss, params = scalar_network(1, 2, seed=seed)
    counted = count_products(loss, params)
    g = graph(loss).backward()
    edges = sum(e.grad is not None for e in g.edges)  # the edges that carry a gradient: one product each
    r.numbers["pictured_network"] = {"depth": 1, "width": 2, "graph_nodes": len(g.nodes), "graph_edges": len(g.edges),
                                     "edges_with_gradient": edges, **counted}
    r.add_page(
        "graph",
        f"The graph of a scalar network 2 -> 2 (sigmoid) -> 1, squared error: {counted['nodes']} nodes that "
        f"receive a gradient, {counted['backprop_products']} edges, so {counted['backprop_products']} products for "
        f"backpropagation; the {counted['paths']} paths from the loss to the weights hold "
        f"{counted['naive_products']} products. Press Next to watch backward() visit each node once.",
        g.to_html("backward() on a small network, one node at a time"),
    )


def _figures(r: Result, by_depth: list, by_width: list) -> None:
    fig, axes = new_figure(2, 1, width=4.8, height=3.6)
    for ax, rows, key in ((axes[0][0], by_depth, "depth"), (axes[0][1], by_width, "width")):
        xs = [x[key] for x in rows]
        ax.semilogy(xs, [x["naive_products"] for x in rows], "o-", color="tab:red", label="every path (naive)")
        ax.semilogy(xs, [x["backprop_products"] for x in rows], "s-", color="tab:blue", label="backprop (memoized)")
        ax.set(xlabel=f"hidden {'layers' if key == 'depth' else 'units per layer'}", ylabel="local-derivative products",
               title=f"Growing {key} ({'width 3' if key == 'depth' else 'depth 4'})")
        ax.legend()
    r.add_figure("memoization", "Products of local derivatives needed for one gradient (log scale).", fig)
