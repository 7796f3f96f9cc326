"""cr.graph: node and edge counts against hand-counted graphs, values and gradients against
.data and .grad, backprop order against backward()'s own, DOT checked by Graphviz."""

import shutil
import subprocess
import sys

import numpy as np
import pytest

import chainrule as cr
from chainrule import autograd, nn
from chainrule import functional as F
from chainrule.compgraph import dot as dotmod
from chainrule.compgraph import summarize
from chainrule.errors import ChainruleError, ShapeError
from chainrule.train_step import training_step

DOT = shutil.which("dot")


def fan_out():
    """e = (c + a) * c with c = a * b: c feeds two operations, a feeds two, b one.

    Hand count: operations e (mul), d (add), c (mul); leaves a, b: 5 nodes.
    Edges: e <- d, c; d <- c, a; c <- a, b: 6.
    """
    a = cr.tensor(2.0, dtype="float64", requires_grad=True)
    b = cr.tensor(3.0, dtype="float64", requires_grad=True)
    c = a * b
    d = c + a
    e = d * c
    return a, b, c, d, e


def test_hand_counted_fan_out_graph():
    a, b, c, d, e = fan_out()
    g = cr.graph(e)
    assert len(g.nodes) == 5 and len(g.edges) == 6
    assert [n.op for n in g.nodes] == ["mul", "add", "mul", None, None]
    assert [n.kind for n in g.nodes] == ["output", "op", "op", "leaf", "leaf"]
    node = {t: g.node(t).id for t in (a, b, c, d, e)}
    pairs = sorted((x.source, x.target) for x in g.edges)
    want = sorted([(node[d], node[e]), (node[c], node[e]), (node[c], node[d]), (node[a], node[d]),
                   (node[a], node[c]), (node[b], node[c])])
    assert pairs == want
    consumers = [x.source for x in g.edges]
    assert consumers.count(node[c]) == 2 and consumers.count(node[a]) == 2  # the fan-out nodes
    assert all(n.grad is None for n in g.nodes)  # nothing known before backward


def test_fan_out_receives_and_sums_its_gradients():
    a, b, c, d, e = fan_out()
    g = cr.graph(e).backward()
    # de/dc = d + c (two routes), de/da = c*b + ... : from the engine, checked against the formulas
    cv, dv = 6.0, 8.0
    nodes = g.nodes
    assert nodes[g.node(c).id].grad == pytest.approx(dv + cv)
    assert g.node(a).grad == pytest.approx(float(a.grad)) == pytest.approx((dv + cv) * 3.0 + cv)
    assert g.node(b).grad == pytest.approx(float(b.grad)) == pytest.approx((dv + cv) * 2.0)
    into_c = [x.grad for x in g.edges if x.source == g.node(c).id]
    assert len(into_c) == 2 and sum(into_c) == pytest.approx(g.node(c).grad)
    into_a = [x.grad for x in g.edges if x.source == g.node(a).id]
    assert sum(into_a) == pytest.approx(float(a.grad))
    for x in g.edges:  # local derivative x the node's gradient = what the edge carries
        assert x.local * nodes[x.target].grad == pytest.approx(x.grad)
    step_c = next(s for s in g.steps if s["node"] == g.node(c).id)
    assert step_c["grad"] == pytest.approx(14.0) and [x["local"] for x in step_c["edges"]] == [3.0, 2.0]


def test_steps_follow_backward_order():
    x = cr.tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
    w = cr.tensor(np.ones((3, 2)), requires_grad=True)
    h = (x @ w).tanh()
    out = (h * h + h.sigmoid()).sum() + (x * 2).mean()
    walked = [t.op for t in autograd.walk(out) if t.parents]
    engine, ops = [], []
    out.backward(retain_graph=True, observe=lambda node, grad, parents: (engine.append(node), ops.append(node.op)))
    assert walked == ops
    x.grad = w.grad = None
    g = cr.graph(out).backward()
    assert [s["node"] for s in g.steps] == [g.node(t).id for t in engine]
    assert [g.nodes[i].op for i in g.order[: len(engine)]] == ops
    assert g.node(x).grad == summarize(x.grad) and g.node(w).grad == summarize(w.grad)


def test_values_and_gradients_equal_data_and_grad():
    rng = np.random.default_rng(0)
    model = nn.MLP([4, 5, 3], activation="tanh", generator=0)
    X = cr.tensor(rng.standard_normal((6, 4)))
    h = model.forward_layers(X)
    for t in (h,):
        t.retain_grad()
    loss = F.cross_entropy(h, cr.tensor([0, 1, 2, 0, 1, 2]))
    g = cr.graph(loss, model, expand=True).backward()
    assert g.nodes[0].value == pytest.approx(float(loss.data))
    for name, p in model.named_parameters():
        n = g.node(name)
        assert n.kind == "leaf" and n.shape == p.shape
        assert n.value == summarize(p.data) and n.grad == summarize(p.grad)
    logits = g.nodes[1]
    assert logits.op == "linear" and logits.value == summarize(h.data)
    assert logits.grad["norm"] == pytest.approx(summarize(h.grad)["norm"], rel=1e-6)
    assert g.node(X).kind == "constant" and g.node(X).grad is None and g.node(X).order is None


def test_a_hundred_thousand_node_chain_does_not_recurse():
    x = cr.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = -y
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(400)  # far below the chain's length: any recursion over it fails
    try:
        g = cr.graph(y)
        assert len(g.nodes) == 100_001 and len(g.edges) == 100_000
        assert g.nodes[0].kind == "output" and g.nodes[-1].kind == "leaf"
        text = g.to_dot()
        assert text.count("->") == 100_000
        g.to_dict()
    finally:
        sys.setrecursionlimit(limit)


def _mlp_graph(fused, expand):
    rng = np.random.default_rng(1)
    model = nn.MLP([3, 4, 4, 2], activation="sigmoid", generator=1)
    X = cr.tensor(rng.standard_normal((5, 3)))
    out = model(X) if fused else model.forward_layers(X)
    assert (out.op == "fused_layers") == fused
    loss = F.cross_entropy(out, cr.tensor([0, 1, 1, 0, 1]))
    return cr.graph(loss, model, expand=expand).backward(), model


@pytest.mark.parametrize("expand", [False, True])
def test_fused_and_layer_by_layer_paths_show_the_same_graph(expand):
    (gf, mf), (gl, ml) = _mlp_graph(True, expand), _mlp_graph(False, expand)
    key = lambda n: (n.kind, n.op, n.label, n.shape, n.order, n.members)  # noqa: E731
    assert [key(n) for n in gf.nodes] == [key(n) for n in gl.nodes]
    assert [(e.source, e.target, e.slot) for e in gf.edges] == [(e.source, e.target, e.slot) for e in gl.edges]
    for a, b in zip(gf.nodes, gl.nodes):
        for x, y in ((a.value, b.value), (a.grad, b.grad)):
            if isinstance(x, dict):
                assert x == pytest.approx(y, rel=1e-4, abs=1e-6)
            else:
                assert x == pytest.approx(y, rel=1e-4)
    assert [s["node"] for s in gf.steps] == [s["node"] for s in gl.steps]


def test_an_mlp_collapses_to_one_node_per_layer():
    g, model = _mlp_graph(True, False)
    layers = [n for n in g.nodes if n.kind == "layer"]
    assert [n.label for n in layers] == ["layer 3", "layer 2", "layer 1"]
    assert layers[-1].members == ("0: Linear 3\u21924", "1: Sigmoid", "0.weight", "0.bias")
    assert len(g.nodes) == 5 and len(g.edges) == 4  # input -> 3 layers -> loss
    # each layer's gradient is the gradient of its output; the parameters keep theirs in .grad
    assert layers[0].grad["norm"] > 0 and all(p.grad is not None for p in model.parameters())
    expanded, _ = _mlp_graph(True, True)
    # 3 linear + 2 sigmoid + the loss, 6 parameters, the input
    assert len(expanded.nodes) == 6 + 6 + 1 and len(expanded.edges) == 5 + 6 + 1


def test_parameters_are_named_from_the_model():
    model = nn.Sequential(nn.Linear(2, 2, generator=0))
    x = cr.tensor([[1.0, 2.0]])
    g = cr.graph((model(x) ** 2).sum(), model, expand=True)
    assert {n.label for n in g.nodes if n.kind == "leaf"} == {"0.weight", "0.bias"}
    with pytest.raises(ChainruleError, match="nn.Module"):
        cr.graph((model(x) ** 2).sum(), model="not a model")


def test_a_freed_graph_is_refused_with_the_fix():
    a, b, c, d, e = fan_out()
    e.backward()
    with pytest.raises(ChainruleError, match="before backward"):
        cr.graph(e)
    with pytest.raises(ChainruleError, match="needs the Tensor"):
        cr.graph(3.0)


def test_vjp_is_the_local_derivative_on_scalars():
    a = cr.tensor(3.0, requires_grad=True)
    b = cr.tensor(4.0, requires_grad=True)
    assert [float(v) for v in autograd.vjp(a * b, 1.0)] == [4.0, 3.0]
    w = cr.tensor(np.ones((2, 3)), requires_grad=True)
    v = w + cr.tensor(np.ones(3), requires_grad=True)  # broadcasting undone in the VJP, as in backward
    gw, gb = autograd.vjp(v, np.ones((2, 3)))
    assert gw.shape == (2, 3) and gb.shape == (3,) and np.all(gb == 2)
    with pytest.raises(ShapeError, match=r"shape \(2, 3\)"):
        autograd.vjp(v, 1.0)
    with pytest.raises(ChainruleError, match="leaf"):
        autograd.vjp(a, 1.0)


def test_constants_can_be_left_out():
    w = cr.tensor(2.0, requires_grad=True)
    y = w * 3.0 + 1.0
    assert len(cr.graph(y).nodes) == 5 and len(cr.graph(y, constants=False).nodes) == 3


def test_the_lab_counts_one_product_per_edge_of_the_graph():
    from chainrule.lab.backprop import count_products, scalar_network

    loss, params = scalar_network(2, 3)
    counted = count_products(loss, params)
    g = cr.graph(loss, constants=False)
    assert len(g.edges) == counted["backprop_products"] and len(g.nodes) == counted["nodes"]


@pytest.mark.skipif(DOT is None, reason="Graphviz's dot is not installed (apt-get install graphviz)")
def test_dot_text_is_valid_graphviz():
    a, b, c, d, e = fan_out()
    g = cr.graph(e)
    for graph in (g, g.backward(), _mlp_graph(True, False)[0], _mlp_graph(False, True)[0]):
        text = graph.to_dot()
        done = subprocess.run([DOT, "-Tcanon"], input=text, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("->") == len(graph.edges)
    svg = g.to_svg()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and g._repr_svg_() == svg
    with pytest.raises(ChainruleError, match="rankdir"):
        g.to_dot(rankdir="up")


def test_without_graphviz_the_error_names_the_fix(monkeypatch):
    monkeypatch.setattr(dotmod.shutil, "which", lambda name: None)
    g = cr.graph(fan_out()[-1])
    with pytest.raises(ChainruleError, match="apt-get install graphviz"):
        g.to_svg()
    assert g._repr_svg_() is None and "<iframe" in g._repr_html_()


def test_the_committed_pictures_of_the_chapter_example_are_current():
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("graph_images", root / "docs" / "hooks" / "graph_images.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for path, text in mod.pictures().items():
        assert path.read_text(encoding="utf-8") == text, f"{path} is out of date: run python docs/hooks/graph_images.py"
    g = mod.lesson_graph()
    # the chapter's hand-derived dL/dw1 = 2 (y - t) * w2 * h (1 - h) * x, read off the picture's node
    h = 1 / (1 + np.exp(-(0.8 * 0.5 - 0.2)))
    y = 1.5 * h + 0.1
    assert g.node("w1").grad == pytest.approx(2 * (y - 1.0) * 1.5 * h * (1 - h) * 0.5, rel=1e-12)
    svg = mod.SVG.read_text(encoding="utf-8")
    for n in g.nodes:
        assert n.label in svg


def test_a_model_inside_a_module_with_a_penalty_on_its_weights():
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.MLP([3, 4, 2], generator=0)
            self.scale = nn.Parameter(np.ones(2, dtype=np.float32))

        def forward(self, x):
            return self.net(x) * self.scale

    model = Wrapped()
    X = cr.tensor(np.random.default_rng(0).standard_normal((4, 3)))
    w = model.net[0].weight
    penalty = (w * w).sum()  # the first weight read before the forward pass, by another operation
    loss = F.cross_entropy(model(X), cr.tensor([0, 1, 1, 0])) + penalty * 0.01
    g = cr.graph(loss, model).backward()
    assert [n.label for n in g.nodes if n.kind == "layer"] == ["net.layer 2", "net.layer 1"]
    assert g.node("net.layer 1").members == ("net.0: Linear 3\u21924", "net.1: ReLU", "net.0.weight", "net.0.bias")
    assert g.node("scale").grad == summarize(model.scale.grad)
    # the penalty still reads the weight, which therefore stays in the picture with its whole gradient
    assert g.node("net.0.weight").grad == summarize(w.grad)


def test_op_names_come_from_the_operations_themselves():
    x = cr.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    w = cr.tensor(np.ones((3, 2)), requires_grad=True)
    named = {
        "add": x + 1, "mul": x * 2, "neg": -x, "pow": x**2, "matmul": x @ w, "sum": x.sum(), "mean": x.mean(),
        "transpose": x.T, "reshape": x.reshape(3, 2), "getitem": x[0], "relu": x.relu(), "sigmoid": x.sigmoid(),
        "tanh": x.tanh(), "exp": x.exp(), "linear": F.linear(x, w), "softmax": F.softmax(x), "cross_entropy":
        F.cross_entropy(x, cr.tensor([0, 2])),
    }
    assert {name: t.op for name, t in named.items()} == {name: name for name in named}
    assert x.op is None and x.parents == () and named["mul"].parents[0] is x
    y = (x * x).sum()
    y.backward()
    assert y.op == "freed" and y.parents == ()


def test_an_html_page_of_a_huge_graph_is_refused_with_what_to_do():
    from chainrule.compgraph.animation import MAX_NODES

    y = x = cr.tensor(1.0, requires_grad=True)
    for _ in range(MAX_NODES):
        y = -y
    with pytest.raises(ChainruleError, match="pass the model"):
        cr.graph(y).to_html()
    small = cr.graph(-x).backward().to_html()
    assert small.startswith("<!doctype html>") and "http" not in small and '"steps": [{' in small


def test_expanded_shares_what_backward_recorded():
    model = nn.MLP([3, 4, 2], generator=0)
    X = cr.tensor(np.random.default_rng(0).standard_normal((4, 3)))
    g = cr.graph(F.cross_entropy(model(X), cr.tensor([0, 1, 1, 0])), model)
    wide = g.expanded()
    assert [n.kind for n in g.nodes].count("layer") == 2 and "layer" not in [n.kind for n in wide.nodes]
    assert all(n.grad is None for n in wide.nodes if n.kind == "op")
    g.backward()
    assert all(n.grad is not None for n in wide.nodes if n.kind in ("op", "output", "leaf"))
    assert wide.expanded(False).nodes[1].grad == g.nodes[1].grad and len(wide.steps) == 4


def test_a_compiled_step_replays_the_graph_of_its_eager_run_and_its_replayed_result_says_so():
    model = nn.MLP([4, 5, 3], generator=0)
    opt = cr.optim.SGD(model.parameters(), lr=0.1)
    x = cr.tensor(np.random.default_rng(0).normal(size=(8, 4)).astype("float32"))
    y = cr.tensor(np.arange(8) % 3)

    step = training_step(model, F.cross_entropy, opt)  # the compiled step cr.fit runs

    eager = cr.graph(F.cross_entropy(model(x), y), model)
    for _ in range(3):  # eager, recorded, replayed
        _, loss = step(x, y)
    with pytest.raises(ChainruleError, match="cr.compile step returned on a replay"):
        cr.graph(loss, model)
    # the logical graph is the model's, whichever way the step ran
    again = cr.graph(F.cross_entropy(model(x), y), model)
    assert [n.label for n in again.nodes] == [n.label for n in eager.nodes] and len(again.edges) == len(eager.edges)
