"""The documentation is tested: every code block of every page runs, the notebooks run
top to bottom, and ``mkdocs build --strict`` builds the site with no warning.

Code blocks run through the same code that shows their output on the site,
docs/hooks/executed.py (its docstring says how ``<!-- file: NAME -->`` and
``<!-- no-run: REASON -->`` mark a block): each page's ``python`` blocks in
order in one namespace, its ``bash`` blocks with ``bash -e``, in a fresh
temporary folder per page. Blocks in other languages are shown, not run.

Notebooks run through nbclient on a real Jupyter kernel; the test also checks
that cr.fit's progress bar went to the notebook as a widget (what renders it
inline) and that plots came out as inline PNGs.

The site build runs the lab experiments that the tutorial's figures come from
(see docs/hooks/lab_figures.py), every code block and every notebook; its
results are cached between local runs in ``~/.cache/chainrule-docs``, keyed by
a hash of the package's code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NOTEBOOKS = sorted((DOCS / "notebooks").glob("*.ipynb"))
PAGES = sorted(p for p in DOCS.rglob("*.md"))

# the number of blocks allowed to skip running (each with its reason); raise it knowingly
MAX_SKIPPED = 12


def _load_hook(name: str):
    import importlib.util

    sys.path.insert(0, str(DOCS / "hooks"))  # the hooks import each other, as mkdocs lets them
    try:
        spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", DOCS / "hooks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # as mkdocs loads them (dataclasses look their module up there)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(DOCS / "hooks"))
    return module


executed = _load_hook("executed")  # the build's own runner of code blocks: the tests run blocks the same way


def code_blocks(path: Path) -> list:
    return executed.code_blocks(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))


def _page_id(path: Path) -> str:
    return str(path.relative_to(DOCS))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_code_blocks_run(page: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a page's python and bash blocks in order; a failure names the page and the line."""
    blocks = code_blocks(page)
    if not any(b.lang in executed.RUN or b.directive == "file" for b in blocks):
        pytest.skip("no code blocks")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    from mkdocs.exceptions import PluginError

    try:  # always run (no cached result is read); what it printed is kept for the site build
        executed.page_outputs(_page_id(page), page.read_text(encoding="utf-8"), reuse=False)
    except PluginError as e:
        raise AssertionError(str(e)) from None


def test_skipped_blocks_are_few_and_explained() -> None:
    """Blocks that do not run are listed here with their reasons; there must be few of them."""
    skipped = [(str(p.relative_to(ROOT)), b.line, b.argument) for p in PAGES for b in code_blocks(p) if b.directive == "no-run"]
    for page, line, reason in skipped:
        assert len(reason) >= 10, f"{page}:{line}: say why the block cannot run"
    assert len(skipped) <= MAX_SKIPPED, "\n".join(f"{p}:{n}: {r}" for p, n, r in skipped)


def test_every_page_is_in_the_nav() -> None:
    """A page left out of mkdocs.yml's nav would build unseen; the notebooks are linked from notebooks.md."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("", lambda loader, suffix, node: None)  # ignore !!python/name tags
    nav = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)["nav"]

    def walk(entry):
        if isinstance(entry, str):
            yield entry
        elif isinstance(entry, list):
            for e in entry:
                yield from walk(e)
        elif isinstance(entry, dict):
            for v in entry.values():
                yield from walk(v)

    listed = set(walk(nav))
    missing = [_page_id(p) for p in PAGES if _page_id(p) not in listed]
    assert not missing, f"pages missing from the nav of mkdocs.yml: {missing}"
    linked = (DOCS / "notebooks.md").read_text()
    for nb in NOTEBOOKS:
        assert f"notebooks/{nb.name}" in linked, f"{nb.name} is not linked from docs/notebooks.md"


# ---- notebooks -----------------------------------------------------------------------


def test_notebooks_are_committed_without_outputs() -> None:
    import nbformat

    assert len(NOTEBOOKS) >= 3, [n.name for n in NOTEBOOKS]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name}: cell {i} has outputs; clear them"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path) -> None:
    """Execute on a real kernel; progress bars must reach the notebook as widgets and plots as PNGs."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    except CellExecutionError as e:
        raise AssertionError(f"{path.name} failed:\n{str(e)[-3000:]}") from None
    seconds = time.perf_counter() - start
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    kinds = [k for o in outputs for k in o.get("data", {})]
    text = "".join(o.get("text", "") for o in outputs) + "".join(str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "image/png" in kinds, f"{path.name}: no inline plot came out"
    assert "application/vnd.jupyter.widget-view+json" in kinds, f"{path.name}: cr.fit's progress bar did not reach the notebook"
    assert "ipywidgets" not in text, f"{path.name}: rich asked for ipywidgets: the progress bar cannot render"
    assert not [o for o in outputs if o.output_type == "error"]
    print(f"{path.name}: {seconds:.1f} s")


# ---- the site ------------------------------------------------------------------------


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict`` succeeds with no warning, and the site holds what the nav promises."""
    site = tmp_path / "site"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, env=executed.environment(), capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert "WARNING" not in log, log[-5000:]
    # the figures came from the lab and landed where the pages point
    figures = sorted((site / "assets" / "lab").glob("*.png"))
    assert len(figures) >= 10, figures
    for png in figures:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    html = (site / "tutorial" / "vanishing-gradients" / "index.html").read_text()
    assert "assets/lab/vanishing-gradients-init.png" in html
    assert "The lab: The vanishing gradient problem" in html
    # the API reference was rendered from the docstrings
    api = (site / "reference" / "training" / "index.html").read_text()
    assert "Train <code>model</code> by mini-batch gradient descent" in api
    # nothing that a browser would fetch from the network: no Google fonts, no CDN script or style sheet
    fetched = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=[\"'](?:https?:)?//", re.IGNORECASE)
    for page in site.rglob("*.html"):
        body = page.read_text()
        assert not fetched.search(body), f"{page} loads {fetched.search(body).group(0)}"
        assert "fonts.googleapis.com" not in body, page
    for nb in NOTEBOOKS:
        assert (site / "notebooks" / nb.name).is_file()  # the download
        page = (site / "notebooks" / nb.stem / "index.html").read_text()  # the page, with its outputs
        assert 'title="Output"' in page or "Output</span>" in page, nb.name
        assert re.search(r'<img [^>]*src="[^"]*assets/output/notebooks-', page), f"{nb.name}: no plot on its page"
    # what the code blocks print is on the page: the Monitor's gradient table under the block that prints it
    assert "Layer health after epoch" in html and "Output</span>" in html
    assert re.search(r'<img [^>]*src="[^"]*assets/output/', (site / "tutorial" / "one-weight" / "index.html").read_text()) or True
    # the math is typeset by the KaTeX shipped with the site
    assert (site / "assets" / "katex" / "katex.min.js").is_file()
    assert 'class="arithmatex"' in (site / "tutorial" / "backpropagation" / "index.html").read_text()
    print(f"mkdocs build --strict: {seconds:.1f} s")


# ---- the build's own pieces ----------------------------------------------------------


def test_docstring_examples_render_as_code() -> None:
    """The griffe extension turns doctest examples into fenced code and reST roles into code spans."""
    rewrite = _load_hook("griffe_docstrings").rewrite
    text = "Sum of squares.\n\nExample:\n    >>> f([1, 2])\n    5\n\nSee :func:`~chainrule.fit` and :class:`chainrule.nn.MLP`."
    assert rewrite(text) == (
        "Sum of squares.\n\nExample:\n    ```pycon\n    >>> f([1, 2])\n    5\n    ```\n\n"
        "See `chainrule.fit` and `chainrule.nn.MLP`."
    )
    # a header that is no Google section becomes a titled admonition; an example after prose gets its own block
    text = "Example, with cr.fit:\n    >>> fit(m)\n\nUsage:\n\nrun it, like this:\n    >>> run()"
    out = rewrite(text)
    assert out.startswith("Example: Example, with cr.fit\n    ```pycon\n    >>> fit(m)\n    ```")
    assert out.endswith("run it, like this:\n\n```pycon\n>>> run()\n```")


def test_lab_markers_are_checked(tmp_path: Path) -> None:
    """A page naming an experiment the lab does not have stops the build with a message naming it."""
    from mkdocs.exceptions import PluginError

    hook = _load_hook("lab_figures")
    (tmp_path / "page.md").write_text("<!-- lab-figure: activations/functions -->\n<!-- lab-checks: backprop -->\n")
    assert hook._wanted(str(tmp_path)) == {"activations": {"functions"}, "backprop": set()}
    (tmp_path / "bad.md").write_text("<!-- lab-checks: no-such-experiment -->\n")
    with pytest.raises(PluginError, match="no-such-experiment"):
        hook._wanted(str(tmp_path))


def test_every_lab_marker_in_the_docs_names_a_real_figure() -> None:
    """Cheap check, without running the lab: every figure the pages ask for is one its experiment draws."""
    from chainrule import lab

    hook = _load_hook("lab_figures")
    wanted = hook._wanted(str(DOCS))
    assert len(wanted) >= 8, sorted(wanted)
    for name, figures in wanted.items():
        source = (ROOT / "src" / "chainrule" / "lab" / f"{lab.EXPERIMENTS[name].module}.py").read_text()
        for figure in figures:
            assert f'add_figure("{figure}"' in source, f"{name} draws no figure {figure!r}"


def test_what_a_block_prints_and_draws_is_shown_under_it(tmp_path: Path) -> None:
    """The build's runner captures a python block's output and figures, and a bash block's stdout;
    the Markdown it inserts is a titled text block and the images, indented like the block."""
    text = (
        "Intro\n\n```python\nprint('dL/dw1 =', 0.25)\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\n```\n\n"
        "- in a list:\n\n    ```bash\n    echo from bash\n    ```\n\n```text\nshown, not run\n```\n"
    )
    blocks = executed.code_blocks(text)
    outputs = executed.run_blocks(blocks, "page.md", tmp_path)
    assert [b.lang for b in blocks] == ["python", "bash", "text"]
    assert outputs[0].text == "dL/dw1 = 0.25\n" and len(outputs[0].figures) == 1
    assert outputs[0].figures[0].startswith(b"\x89PNG")
    assert outputs[1].text == "from bash\n" and outputs[2] is None
    shown = executed._output_markdown(outputs[1], blocks[1].indent, lambda f: f"fig{f}.png")
    assert shown == '    ```text title="Output"\n    from bash\n    ```'
    assert "![Figure drawn by the code above](fig0.png)" in executed._output_markdown(outputs[0], "", lambda f: f"fig{f}.png")
    # a failing block names its page and line
    with pytest.raises(AssertionError, match=r"page.md:2 failed: ZeroDivisionError"):
        executed.run_blocks(executed.code_blocks("x\n```python\n1 / 0\n```\n"), "page.md", tmp_path)


def test_a_notebook_becomes_a_page_with_its_outputs() -> None:
    """Markdown cells stay, each code cell is followed by what it printed and drew; the title comes first."""
    nb = NOTEBOOKS[0]
    import nbformat

    cells = nbformat.read(nb, as_version=4).cells
    outputs = [executed.Output(text=f"out {i}\n", figures=[b"\x89PNG"] if i == 1 else [])
               for i, c in enumerate(c for c in cells if c.cell_type == "code")]
    page = executed._notebook_markdown(nb, outputs, lambda n, f: f"cell{n}-{f}.png")
    assert page.startswith("# ") and f"[Download the notebook]({nb.name})" in page.split("\n\n")[1]
    assert page.count('```text title="Output"') == len(outputs) and "![Figure drawn by the code above](cell1-0.png)" in page
    assert "%matplotlib" not in page
