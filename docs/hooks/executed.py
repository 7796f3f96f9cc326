"""MkDocs hook: every page's code runs while the site is built, and what it prints is shown under it.

Code blocks. Each page's ``python`` blocks run in order in one namespace (a page
reads as one session) and its ``bash`` blocks with ``bash -e``, all in a fresh
temporary folder per page. What a block prints, and every matplotlib figure it
makes, is inserted right after it on the page as an "Output" block and images.
A failing block stops the build with the page and line. Two HTML comments,
invisible on the site, say more about the block that follows them:

- ``<!-- file: NAME -->``: the block is a file the page talks about (a CSV, a
  sweep file); it is written to NAME instead of being run.
- ``<!-- no-run: REASON -->``: the block cannot run here (it needs a Dask
  cluster or a GPU, or it is the hour-long default of a command); the reason
  is required.

Blocks in other languages (``text``, ``toml``, ``pycon`` ...) are shown, not run.
tests/test_docs.py runs every page through :func:`page_outputs` and so fills the
cache, which the site build it runs next then reads.

Notebooks. Each ``notebooks/*.ipynb`` is executed on a Jupyter kernel (nbclient)
and also becomes a page, ``notebooks/<name>.md``, with its outputs: text,
tables and inline plots. The ``.ipynb`` stays downloadable as it is committed
(without outputs).

Results are cached like the lab's figures (see lab_figures.py and its
``CHAINRULE_DOCS_CACHE``), keyed by the page's text and a hash of the package.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from lab_figures import _settings, _source_key  # the same cache folder and package hash
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.executed")

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
DIRECTIVE = re.compile(r"<!--\s*(file|no-run):\s*(.*?)\s*-->\s*$")
RUN = ("python", "bash")
ASSETS = "assets/output"
MAX_LINES = 60  # longer outputs show their first and last lines
COLUMNS = 100  # the terminal width that rich's tables are drawn for


@dataclass
class Block:
    """One fenced code block of a page: where it ends, its language, its code and directive."""

    line: int
    end: int  # offset just past the closing fence
    indent: str
    lang: str
    code: str
    directive: str | None = None
    argument: str | None = None


@dataclass
class Output:
    """What one block printed, and the figures it drew (PNG bytes)."""

    text: str = ""
    figures: list = field(default_factory=list)


def _dedent(body: str, indent: str) -> str:
    return "".join(line[len(indent):] if line.startswith(indent) else line for line in body.splitlines(keepends=True))


def code_blocks(text: str, where: str = "page") -> list[Block]:
    """Every fenced block of a page's Markdown, in order, with its directive if one precedes it."""
    blocks = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        d = DIRECTIVE.match(before)
        directive, argument = (d.group(1), d.group(2)) if d else (None, None)
        if directive == "no-run" and not argument:
            raise PluginError(f"{where}:{line}: <!-- no-run: --> needs a reason")
        blocks.append(Block(line, m.end(), m.group("indent"), m.group("lang").lower(),
                            _dedent(m.group("body"), m.group("indent")), directive, argument))
    return blocks


def environment() -> dict:
    """The environment bash blocks run in: Agg plots, a fixed width, this Python's chainrule command."""
    env = dict(os.environ, MPLBACKEND="Agg", NO_MKDOCS_2_WARNING="1", COLUMNS=str(COLUMNS))
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


@contextlib.contextmanager
def library_as_shipped() -> Iterator[None]:
    """Pages register activations and modules and reseed the default generator: undo all of it afterwards."""
    import chainrule.random
    from chainrule import nn, train

    registries = [(r, dict(r)) for r in (nn.ACTIVATIONS, nn.MODULES, train.LOSSES)]
    generator = chainrule.random.default_generator()
    state = generator.bit_generator.state
    try:
        yield
    finally:
        for registry, saved in registries:
            registry.clear()
            registry.update(saved)
        generator.bit_generator.state = state
        chainrule.random._default = generator


def _new_figures(before: set) -> list:
    import matplotlib.pyplot as plt

    pngs = []
    for number in plt.get_fignums():
        if number not in before:
            buffer = io.BytesIO()
            plt.figure(number).savefig(buffer, format="png", dpi=100, bbox_inches="tight")
            pngs.append(buffer.getvalue())
            plt.close(number)
    return pngs


def run_blocks(blocks: list[Block], where: str, folder: Path) -> list:
    """Run a page's blocks in ``folder``; one :class:`Output` (or None when not run) per block.

    A block that fails raises an AssertionError naming ``where`` and its line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    namespace: dict = {"__name__": f"docs.{Path(where).stem}"}
    outputs: list = []
    old = os.getcwd()
    os.chdir(folder)
    try:
        with library_as_shipped():
            for block in blocks:
                if block.directive == "no-run" or block.lang not in RUN and block.directive != "file":
                    outputs.append(None)
                elif block.directive == "file":
                    (folder / block.argument).parent.mkdir(parents=True, exist_ok=True)
                    (folder / block.argument).write_text(block.code, encoding="utf-8")
                    outputs.append(None)
                elif block.lang == "python":
                    outputs.append(_run_python(block, where, namespace))
                else:
                    outputs.append(_run_bash(block, where, folder))
    finally:
        os.chdir(old)
        plt.close("all")
    return outputs


def _run_python(block: Block, where: str, namespace: dict) -> Output:
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(block.code, f"{where}:{block.line}", "exec"), namespace)
    except Exception as e:
        raise AssertionError(f"the python block at {where}:{block.line} failed: {type(e).__name__}: {e}") from e
    return Output(printed.getvalue(), _new_figures(before))


def _run_bash(block: Block, where: str, folder: Path) -> Output:
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.code], cwd=folder, env=environment(),
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(
            f"the bash block at {where}:{block.line} exited with {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
        )
    return Output(proc.stdout)  # progress bars and logs go to stderr: not shown


# ---- the cache -----------------------------------------------------------------------


def _cached(kind: str, name: str, text: str, compute, reuse: bool = True) -> list:
    """compute() -> list of Output, or the cached copy for this text and this package.

    With ``reuse=False`` it always computes, and stores the result for the next build (the test
    suite runs every page this way, so that the site build that follows it runs none again).
    """
    quick, cache = _settings()
    key = hashlib.sha256(f"{_source_key(quick)}\0{Path(__file__).read_bytes()!r}\0{text}".encode()).hexdigest()[:20]
    path = cache / "executed" / kind / f"{name.replace('/', '--')}-{key}.json" if cache is not None else None
    if reuse and path is not None and path.is_file():
        return [None if o is None else Output(o["text"], [base64.b64decode(f) for f in o["figures"]])
                for o in json.loads(path.read_text())]
    outputs = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([None if o is None else {"text": o.text, "figures": [base64.b64encode(f).decode() for f in o.figures]}
                                   for o in outputs]))
        tmp.replace(path)
    return outputs


def page_outputs(src_uri: str, text: str, reuse: bool = True) -> list:
    """Run a page's blocks (``src_uri``: its path under docs/) in a fresh folder, or take them from the
    cache; a failing block raises PluginError naming the page and line."""

    def compute() -> list:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="chainrule-docs-") as tmp:
            try:
                outputs = run_blocks(code_blocks(text, src_uri), src_uri, Path(tmp))
            except AssertionError as e:
                raise PluginError(str(e)) from None
        log.info("code blocks of %s ran in %.1f s", src_uri, time.perf_counter() - start)
        return outputs

    return _cached("pages", src_uri, text, compute, reuse)


# ---- notebooks -----------------------------------------------------------------------


def _notebook_outputs(path: Path) -> list:
    """Execute a notebook; per code cell, one Output with its text and PNGs (widgets are left out)."""
    import nbformat
    from nbclient import NotebookClient
    from jupyter_client.manager import KernelManager
    from nbclient.exceptions import CellExecutionError

    def compute() -> list:
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="chainrule-nb-") as tmp:
            try:
                # over IPC (a socket file), not TCP, which makes the kernel print a warning that --strict would see
                km = KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(tmp) / "kernel"))
                NotebookClient(nb, km=km, timeout=300, resources={"metadata": {"path": tmp}}).execute()
            except CellExecutionError as e:
                raise PluginError(f"notebook {path.name} failed:\n{str(e)[-3000:]}") from None
            finally:
                if km.has_kernel:
                    km.shutdown_kernel()
        log.info("notebook %s ran in %.1f s", path.name, time.perf_counter() - start)
        outputs = []
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            out = Output()
            for o in cell.outputs:
                data = o.get("data", {})
                if o.output_type == "stream" and o.name == "stdout":
                    out.text += o.text
                elif "image/png" in data:
                    out.figures.append(base64.b64decode(data["image/png"]))
                elif "image/svg+xml" in data:  # cr.graph's drawings: kept as SVG files
                    out.figures.append(data["image/svg+xml"].encode())
                elif "text/plain" in data and "application/vnd.jupyter.widget-view+json" not in data:
                    out.text += data["text/plain"] + "\n"
            outputs.append(out)
        return outputs

    return _cached("notebooks", path.name, path.read_text(encoding="utf-8"), compute)


def _notebook_markdown(path: Path, outputs: list, figure_uri) -> str:
    """The notebook as a Markdown page: its Markdown cells, and each code cell followed by its output.

    ``figure_uri(cell, figure)`` gives the link to a code cell's figure.
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    download = (f"<small>[Download the notebook]({path.name}) (saved without outputs; "
                "the outputs below were computed while this site was built).</small>")
    parts = []
    code = iter(enumerate(outputs))
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append(cell.source)
        elif cell.cell_type == "code":
            source = "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
            n, out = next(code)
            parts.append(f"```python\n{source}\n```")
            parts.append(_output_markdown(out, "", lambda f, n=n: figure_uri(n, f)))
    title, _, rest = parts[0].partition("\n") if parts and parts[0].startswith("# ") else ("", "", parts[0])
    parts[0] = "\n\n".join(p for p in (title, download, rest) if p)
    return "\n\n".join(p for p in parts if p) + "\n"


# ---- Markdown of an output -----------------------------------------------------------


def _shorten(text: str) -> str:
    lines = text.rstrip().splitlines()
    if len(lines) <= MAX_LINES:
        return "\n".join(lines)
    keep = MAX_LINES // 2
    return "\n".join(lines[:keep] + [f"... ({len(lines) - 2 * keep} lines more) ..."] + lines[-keep:])


def _output_markdown(output: Output | None, indent: str, figure_uri) -> str:
    """An Output as Markdown: a titled text block and the figures; empty when it showed nothing."""
    if output is None:
        return ""
    parts = []
    text = _shorten(output.text)
    if text.strip():
        fence = "````" if "```" in text else "```"
        parts.append(f'{fence}text title="Output"\n{text}\n{fence}')
    for number, _ in enumerate(output.figures):
        parts.append(f"![Figure drawn by the code above]({figure_uri(number)})")
    return "\n\n".join("\n".join(indent + l if l else l for l in p.splitlines()) for p in parts)


# ---- the hook's events ---------------------------------------------------------------

_outputs: dict = {}  # page src_uri -> [Output | None per block]; figures' site paths alongside


def _asset(stem: str, number: int, figure: int, data: bytes = b"\x89PNG") -> str:
    """The site path of a block's figure: PNG, or SVG for the drawings that notebooks show as SVG."""
    kind = "png" if data.startswith(b"\x89PNG") else "svg"
    return f"{ASSETS}/{stem.replace('/', '-')}-{number}-{figure}.{kind}"


def on_files(files: Any, config: Any) -> Any:
    """Run every page's code blocks and every notebook (or fetch them from the cache); add their figures."""
    docs = Path(config["docs_dir"])
    for page in list(files.documentation_pages()):
        text = Path(page.abs_src_path).read_text(encoding="utf-8")
        if not any(b.lang in RUN for b in code_blocks(text, page.src_uri)):
            continue
        outputs = page_outputs(page.src_uri, text)
        _outputs[page.src_uri] = outputs
        for n, out in enumerate(outputs):
            for f, png in enumerate(out.figures if out else []):
                files.append(File.generated(config, _asset(page.src_uri[:-3], n, f, png), content=png))
    for path in sorted((docs / "notebooks").glob("*.ipynb")):
        outputs = _notebook_outputs(path)
        stem = f"notebooks/{path.stem}"
        for n, out in enumerate(outputs):
            for f, png in enumerate(out.figures):
                files.append(File.generated(config, _asset(stem, n, f, png), content=png))

        markdown = _notebook_markdown(path, outputs, lambda n, f, stem=stem, outputs=outputs: posixpath.relpath(
            _asset(stem, n, f, outputs[n].figures[f]), "notebooks"))
        files.append(File.generated(config, f"{stem}.md", content=markdown))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Insert each block's output right after the block."""
    outputs = _outputs.get(page.file.src_uri)
    if not outputs:
        return markdown
    blocks = code_blocks(markdown, page.file.src_uri)
    if len(blocks) != len(outputs):  # another hook changed the blocks: leave the page alone
        raise PluginError(f"{page.file.src_uri}: {len(blocks)} code blocks at render, {len(outputs)} when run")
    pieces, at = [], 0
    for n, (block, out) in enumerate(zip(blocks, outputs)):
        shown = _output_markdown(out, block.indent, lambda f, n=n, out=out: posixpath.relpath(
            _asset(page.file.src_uri[:-3], n, f, out.figures[f]), posixpath.dirname(page.file.src_uri) or "."))
        pieces.append(markdown[at:block.end])
        if shown:
            pieces.append("\n\n" + shown + "\n")
        at = block.end
    pieces.append(markdown[at:])
    return "".join(pieces)
