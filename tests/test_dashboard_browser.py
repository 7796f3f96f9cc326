"""The dashboard end to end in a real browser: headless Chromium driven by Playwright.

Opens the page on a digits run with 10 sigmoid layers, reads the per-layer
gradients it shows, and checks what a person would see: charts drawn, and
changing while the network trains. Measures the first paint and the chart
update rate and prints them (run with -s to see them).
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("plotly")
playwright = pytest.importorskip("playwright.sync_api", reason="the browser test needs the playwright package")


def _chromium() -> str | None:
    for path in (os.environ.get("CHAINRULE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


CHROMIUM = _chromium()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found (apt-get install chromium, or set CHAINRULE_CHROMIUM)"),
]
# no network on the test machines: keep Chromium from trying to reach anything
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER = (
    "import socket, sys; from chainrule.dashboard.app import serve; "
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(128); "
    "print(f'http://127.0.0.1:{s.getsockname()[1]}/', flush=True); serve(sock=s)"
)


@pytest.fixture
def server():
    with subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:"), proc.stderr.read()
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def grad_values(page) -> list:
    cells = page.eval_on_selector_all("#grad-table tbody td.grad", "cells => cells.map(c => c.dataset.value || '')")
    return [float(v) if v else None for v in cells]


def loss_chart(page) -> dict:
    """What the loss chart shows: its points and the drawn SVG path of the training-loss line."""
    return page.evaluate(
        """() => {
        const gd = document.getElementById('chart-loss');
        const line = gd.querySelector('.scatterlayer .trace .js-line');
        return {points: gd.data ? gd.data[0].x.length : 0, path: line ? line.getAttribute('d') : ''};
    }"""
    )


def test_deep_sigmoid_network_in_the_browser(server, tmp_path):
    sync_playwright = playwright.sync_playwright
    requests = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000}
        )
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))

            # settings from the address fill the form; the first paint is measured by the browser
            page.goto(server + "?dataset=digits&depth=10&activation=sigmoid", wait_until="commit")
            page.wait_for_selector("body[data-ready='1']")
            paint = page.evaluate("() => (performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint') || {}).startTime")
            assert paint is not None and paint > 0
            assert page.input_value("#depth") == "10" and page.input_value("#activation") == "sigmoid"

            # an out-of-range setting is refused with the server's message on the page
            assert page.input_value("#residual") == "false" and page.input_value("#norm") == "none"
            page.fill("#depth", "80")
            page.click("#start")
            page.wait_for_selector("#message:not([hidden])")
            assert "depth must be an integer from 1 to 64, got '80'" in page.inner_text("#message")
            assert "depth=80" in page.url  # the address follows the form
            page.fill("#depth", "10")
            page.dispatch_event("#depth", "change")

            # one step: the vanishing gradient is in the table
            page.click("#step")
            page.wait_for_function("() => document.querySelector('#grad-table td.grad') && document.querySelector('#grad-table td.grad').dataset.value")
            assert page.is_hidden("#message")
            first = grad_values(page)
            assert len(first) == 11 and all(v is not None and v > 0 for v in first)
            assert first[0] / first[-1] < 1e-5  # measured about 7e-7 after the first step

            # train: the charts update while it runs
            page.click("#start")
            page.wait_for_function("() => window.dashboardStats.draws >= 5 && document.getElementById('state').textContent === 'running'")
            before = loss_chart(page)
            stats = "() => [window.dashboardStats.draws, window.dashboardStats.snapshots, window.dashboardStats.drawMs]"
            (d0, n0, ms0), t0 = page.evaluate(stats), time.monotonic()
            page.wait_for_timeout(2000)
            (d1, n1, ms1), t1 = page.evaluate(stats), time.monotonic()
            after = loss_chart(page)
            updates_per_second = (d1 - d0) / (t1 - t0)
            later = grad_values(page)
            progress = page.inner_text("#progress")
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)

            # what a person sees: every chart drawn, and changing over time
            assert after["points"] > before["points"] and after["path"] != before["path"]
            assert later != first and all(v is not None and v > 0 for v in later)
            assert page.locator("#chart-grad .bars .point").count() == 11
            assert page.locator("#chart-health .bars .point").count() >= 10
            assert page.locator("#chart-loss .scatterlayer .trace").count() == 4  # training loss raw and smoothed, test loss, accuracy
            captions = page.eval_on_selector_all("#digits figcaption", "els => els.map(e => e.textContent)")
            assert len(captions) == 24 and all(re.fullmatch(r"\d · [01]\.\d\d", c) for c in captions)
            assert re.search(r"step \d+ · epoch", progress) and "test accuracy" in progress

            # Pause holds the step count
            page.click("#pause")
            page.wait_for_function("() => window.dashboardStats.snapshots > 0 && document.getElementById('state').textContent === 'paused'")
            page.wait_for_timeout(300)
            held = page.inner_text("#progress").split(" · ")[0]
            page.wait_for_timeout(500)
            assert page.inner_text("#progress").split(" · ")[0] == held

            # an address with bad settings says so on opening
            bad = browser.new_page()
            bad.goto(server + "?depth=99&width=8", wait_until="commit")
            bad.wait_for_selector("#message:not([hidden])")
            assert "depth must be an integer from 1 to 64, got '99'" in bad.inner_text("#message")
            assert errors == []
        finally:
            browser.close()

    assert all(u.startswith(server) for u in requests), [u for u in requests if not u.startswith(server)]
    assert shot.stat().st_size > 20_000
    snapshots_per_second = (n1 - n0) / (t1 - t0)
    draw_ms = (ms1 - ms0) / max(d1 - d0, 1)
    measured = {
        "first_contentful_paint_ms": round(paint, 1),
        "chart_updates_per_second": round(updates_per_second, 2),
        "snapshots_per_second": round(snapshots_per_second, 2),
        "mean_draw_ms": round(draw_ms, 1),
        "screenshot": str(shot),
    }
    (tmp_path / "measured.json").write_text(json.dumps(measured))
    print(
        f"\ndashboard in Chromium: first paint {paint:.0f} ms, charts updated {updates_per_second:.1f} times a second "
        f"({snapshots_per_second:.1f} snapshots a second received, {draw_ms:.0f} ms per redraw); screenshot {shot}"
    )


def test_backprop_animation_steps_through_backward_offline(tmp_path):
    """The animation page, opened from disk: one step per node of backward()'s order, the fan-out
    node showing both contributions and their sum, the leaves ending with their .grad."""
    import chainrule as cr

    a = cr.tensor(2.0, dtype="float64", requires_grad=True)
    b = cr.tensor(3.0, dtype="float64", requires_grad=True)
    c = a * b
    e = (c + a) * c
    g = cr.graph(e).backward()
    path = tmp_path / "backprop.html"
    g.save_html(path)
    requests = []
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri())
            assert page.locator("svg.graph g.node").count() == 5 and page.locator("svg.graph path.edge").count() == 6
            assert page.inner_text(".counter") == "step 0 of 3"
            shown = []
            for _ in range(3):
                page.click(".next")
                current = page.get_attribute("svg.graph g.node.current", "data-id")
                shown.append(int(current))
            assert shown == [s["node"] for s in g.steps] == g.order[:3]
            # the third step is c = a * b: it received 8 (from the add) and 6 (from the output) and sums them
            assert "8 + 6 = 14" in page.inner_text(".explain")
            rows = page.eval_on_selector_all(".explain tr", "rows => rows.slice(1).map(r => r.innerText.split('\\t'))")
            assert rows == [["leaf", "3", "14", "42"], ["leaf", "2", "14", "28"]]
            page.click(".next")
            grads = page.eval_on_selector_all("svg.graph g.node .grad", "els => els.map(e => e.textContent)")
            assert grads[g.node(a).id] == f"grad {float(a.grad):g}" and grads[g.node(b).id] == f"grad {float(b.grad):g}"
            assert errors == []
        finally:
            browser.close()
    assert all(u.startswith("file:") for u in requests), requests


@contextlib.contextmanager
def open_page(viewport: dict):
    """A Chromium page, with the page errors it raises and every address it requests."""
    errors, requests = [], []
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=viewport)
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.on("request", lambda r: requests.append(r.url))
            yield page, errors, requests
        finally:
            browser.close()


def test_dashboard_draws_the_live_graph(server, tmp_path):
    with open_page({"width": 1400, "height": 1000}) as (page, errors, requests):
        page.goto(server + "?dataset=xor&depth=2&width=6&activation=tanh", wait_until="commit")
        page.wait_for_selector("body[data-ready='1']")
        page.click("#step")
        page.wait_for_function("() => window.graphPanel && window.graphPanel.draws >= 1", timeout=30_000)
        panel = page.evaluate("() => window.graphPanel")
        assert panel["nodes"] == page.locator("#graph-svg g.node").count() > 0
        assert panel["edges"] == page.locator("#graph-svg path.edge").count()
        strokes = page.eval_on_selector_all("#graph-svg path.edge", "els => els.map(e => e.getAttribute('stroke'))")
        assert sum(s.startswith("hsl(") for s in strokes) >= 11  # every edge into an operation but the data's
        assert "operation by operation" in page.inner_text("#graph-note")
        page.click("#start")
        page.wait_for_function(f"() => window.graphPanel.step > {panel['step']}", timeout=30_000)
        assert errors == []
    assert all(u.startswith(server) for u in requests), [u for u in requests if not u.startswith(server)]


def _artifacts(tmp_path):
    """Where the screenshots go: $CHAINRULE_TEST_ARTIFACTS when set (kept after the run, never committed), else tmp."""
    folder = os.environ.get("CHAINRULE_TEST_ARTIFACTS")
    path = (os.path.join(folder, "dashboard") if folder else str(tmp_path / "artifacts"))
    os.makedirs(path, exist_ok=True)
    return path


def test_dashboard_items_a_learner_needs(server, tmp_path):
    """Hints in the empty panels, a dead network's zero gradients shown as dead layers (not "no step
    taken"), the gradient-norm heat map over steps, the smoothed loss, the decision boundary over
    the whole plotted area, and the network view with each unit's activity on hover; a screenshot of each."""
    shots = _artifacts(tmp_path)
    with open_page({"width": 1400, "height": 1100}) as (page, errors, requests):
        # at load: every empty panel says what will appear in it
        page.goto(server + "?dataset=circles&depth=3&width=8&activation=relu&bias_init=-3&optimizer=sgd", wait_until="commit")
        page.wait_for_selector("body[data-ready='1']")
        hints = page.locator(".hint")
        assert hints.count() == 6 and all(hints.nth(i).is_visible() for i in range(6))
        assert "Press Start" in page.inner_text(".hint[data-for='chart-loss']")
        page.screenshot(path=os.path.join(shots, "1-hints-at-load.png"), full_page=True)

        # a dead network (hidden biases at -3): every weight gradient is exactly 0, shown as dead layers
        for _ in range(3):
            page.click("#step")
            page.wait_for_timeout(150)
        page.wait_for_function("() => document.querySelector('#grad-table td.grad').dataset.value !== ''", timeout=30_000)
        page.wait_for_function("() => window.Plotly && document.getElementById('chart-grad').data", timeout=30_000)
        page.wait_for_function("() => document.getElementById('chart-grad').data.length === 2", timeout=30_000)
        assert hints.nth(0).is_hidden()  # the hints go once a run starts
        grad = page.evaluate("() => { const gd = document.getElementById('chart-grad'); return {names: gd.data.map(t => t.name), "
                             "x: gd.data[1].x, notes: gd.layout.annotations.map(a => a.text)}; }")
        assert grad["names"][1] == "gradient exactly 0: dead layer" and grad["x"] == ["1", "2", "3", "out"]
        assert any("every gradient is exactly 0" in n for n in grad["notes"])
        assert not any("no step taken" in n for n in grad["notes"])
        # the heat map over steps shows the dead layers as a red overlay
        page.wait_for_function("() => (document.getElementById('chart-grad-history').data || []).length === 2", timeout=30_000)
        history = page.evaluate("() => { const d = document.getElementById('chart-grad-history').data; "
                                "return {rows: d[0].y, cols: d[0].x.length, zero: d[1].z.flat().filter(v => v === 1).length}; }")
        assert history["rows"] == ["1", "2", "3", "out"] and history["cols"] >= 1 and history["zero"] >= 4
        page.screenshot(path=os.path.join(shots, "2-dead-network-zero-gradients.png"), full_page=True)

        # a healthy run: the smoothed loss beside the raw one, the heat map filling, the boundary, the network
        page.goto(server + "?dataset=spirals&depth=3&width=8&activation=tanh&optimizer=adam&lr=0.01", wait_until="commit")
        page.wait_for_selector("body[data-ready='1']")
        page.click("#start")
        page.wait_for_function("() => window.dashboardStats.draws >= 10 && window.networkPanel && window.networkPanel.draws >= 1", timeout=60_000)
        page.wait_for_function("() => document.getElementById('chart-grad-history').data[0].x.length >= 5", timeout=30_000)
        page.click("#pause")
        page.wait_for_function("() => document.getElementById('state').textContent === 'paused'")
        page.wait_for_timeout(500)
        loss = page.evaluate("() => document.getElementById('chart-loss').data.map(t => [t.name, t.y.length])")
        names = [n for n, _ in loss]
        assert names[:2] == ["training loss (batch)", "smoothed (0.9)"] and loss[0][1] == loss[1][1] > 5
        heat = page.evaluate("() => { const d = document.getElementById('chart-grad-history').data[0]; return [d.type, d.y, d.z.length]; }")
        assert heat == ["heatmap", ["1", "2", "3", "out"], 4]
        page.screenshot(path=os.path.join(shots, "3-smoothed-loss-and-gradient-heat-map.png"), full_page=True)

        # the boundary: a fine grid whose picture covers the whole plotted area
        view = page.evaluate(
            """() => { const gd = document.getElementById('chart-view'); const z = gd.data[0].z;
            const img = gd.querySelector('.heatmaplayer image').getBoundingClientRect();
            const bg = gd.querySelector('.nsewdrag').getBoundingClientRect();  // the plotted area
            return {rows: z.length, cols: z[0].length, img: [img.left, img.top, img.width, img.height], bg: [bg.left, bg.top, bg.width, bg.height]}; }"""
        )
        assert view["rows"] >= 100 and view["cols"] >= 100
        assert all(abs(a - b) <= 3 for a, b in zip(view["img"], view["bg"])), view  # measured within 2 px
        page.locator("#chart-view").screenshot(path=os.path.join(shots, "4-decision-boundary.png"))

        # the network: units as nodes, weights as edges coloured by sign, activity on hover
        net = page.evaluate("() => window.networkPanel")
        assert net["nodes"] == page.locator("#network-svg g.unit").count() == 2 + 8 * 3 + 2  # two inputs, three layers of 8, two classes
        assert net["edges"] == page.locator("#network-svg line.edge").count() == 2 * 8 + 8 * 8 * 2 + 8 * 2
        signs = {page.locator("#network-svg line.edge.positive").count() > 0, page.locator("#network-svg line.edge.negative").count() > 0}
        assert signs == {True}
        widths = set(page.eval_on_selector_all("#network-svg line.edge", "els => els.map(e => e.getAttribute('stroke-width'))"))
        assert len(widths) > 5  # thicker where the weight is larger
        unit = page.locator("#network-svg g.unit").nth(5)
        assert "mean output" in unit.locator("title").text_content()
        unit.hover()
        page.locator("#network-card").screenshot(path=os.path.join(shots, "5-network-view.png"))
        assert errors == []
    assert all(u.startswith(server) for u in requests), [u for u in requests if not u.startswith(server)]
    print(f"\nscreenshots of the dashboard's items: {shots}")
