"""MkDocs hook: the tutorial's figures and measured claims, regenerated from the lab at build time.

A page asks for a figure or a verdict with an HTML comment on a line of its own:

    <!-- lab-figure: vanishing-gradients/init -->
    <!-- lab-checks: vanishing-gradients -->

When the build starts (``on_files``) this hook finds every experiment the pages
name, runs each one once with :func:`chainrule.lab.run_safely` (quick
versions, seeded, so the numbers repeat), and adds its figures to the site as
``assets/lab/<experiment>-<figure>.png``. Then (``on_page_markdown``) each
marker becomes the image with its caption, or a box with the claim, the
computed verdict and every check's measured numbers. No PNG is committed: the
pictures always show what the code of this checkout measures.

A name that the lab does not know, a figure the experiment does not draw, or
an experiment that raises stops the build with a message saying which.

Settings (environment variables):

- ``CHAINRULE_DOCS_LAB``: ``quick`` (default) or ``full`` (the full-length
  experiments, as ``chainrule lab`` without ``--quick``: under a minute on two cores).
- ``CHAINRULE_DOCS_CACHE``: folder for results between builds (default
  ``~/.cache/chainrule-docs``); ``off`` runs everything every time. An entry
  is keyed by a hash of every file of the chainrule package, this hook, the
  mode and the versions of NumPy and matplotlib, so any change to the code
  runs the experiments again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import time
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.lab_figures")

MARKER = re.compile(r"^<!--\s*lab-(figure|checks):\s*([\w-]+)(?:/([\w-]+))?\s*-->\s*$", re.MULTILINE)
ASSETS = "assets/lab"
SEED = 0

# experiment name -> {"result": Result.to_dict(), "png": {figure name: bytes}}
_results: dict = {}


def _settings() -> tuple:
    mode = os.environ.get("CHAINRULE_DOCS_LAB", "quick").strip().lower()
    if mode not in ("quick", "full"):
        raise PluginError(f"CHAINRULE_DOCS_LAB must be 'quick' or 'full', got {mode!r}")
    cache = os.environ.get("CHAINRULE_DOCS_CACHE", str(Path.home() / ".cache" / "chainrule-docs"))
    return mode == "quick", (None if cache.strip().lower() in ("", "off", "0", "no") else Path(cache))


def _source_key(quick: bool) -> str:
    """A hash of everything that decides what the experiments measure and draw."""
    import chainrule
    import matplotlib
    import numpy

    h = hashlib.sha256()
    package = Path(chainrule.__file__).parent
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode())
        h.update(path.read_bytes())
    h.update(Path(__file__).read_bytes())
    h.update(f"quick={quick} seed={SEED} numpy={numpy.__version__} matplotlib={matplotlib.__version__}".encode())
    return h.hexdigest()[:20]


def _wanted(docs_dir: str) -> dict:
    """experiment -> set of figure names asked for, from every page's markers."""
    from chainrule import lab

    wanted: dict = {}
    for path in sorted(Path(docs_dir).rglob("*.md")):
        for kind, name, figure in MARKER.findall(path.read_text(encoding="utf-8")):
            where = path.relative_to(docs_dir)
            if name not in lab.EXPERIMENTS:
                raise PluginError(f"{where}: lab-{kind} names experiment {name!r}; the lab has: {', '.join(lab.EXPERIMENTS)}")
            if kind == "figure" and not figure:
                raise PluginError(f"{where}: lab-figure needs EXPERIMENT/FIGURE, got {name!r}")
            wanted.setdefault(name, set())
            if figure:
                wanted[name].add(figure)
    return wanted


def _load_cached(folder: Path, name: str) -> dict | None:
    meta = folder / f"{name}.json"
    if not meta.is_file():
        return None
    result = json.loads(meta.read_text())
    png = {}
    for f in result["figures"]:
        path = folder / f["file"]
        if not path.is_file():
            return None
        png[f["file"][len(name) + 1 : -len(".png")]] = path.read_bytes()
    return {"result": result, "png": png}


def _run(name: str, quick: bool) -> dict:
    from chainrule import lab

    jobs = max(1, min(os.cpu_count() or 1, 4))
    start = time.perf_counter()
    result = lab.run_safely(name, quick=quick, jobs=jobs, seed=SEED)
    if result.error:
        raise PluginError(f"lab experiment {name!r} failed while building the docs: {result.error}")
    log.info("lab: %s ran in %.1f s: %s", name, time.perf_counter() - start, result.verdict)
    return {"result": result.to_dict(), "png": {f.name: f.png for f in result.figures}}


def _store(folder: Path, name: str, entry: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for fig, png in entry["png"].items():
        (folder / f"{name}-{fig}.png").write_bytes(png)
    tmp = folder / f".{name}.json.tmp"
    tmp.write_text(json.dumps(entry["result"]))
    tmp.replace(folder / f"{name}.json")  # written last: a half-written entry is never read


def on_files(files: Any, config: Any) -> Any:
    """Run (or fetch from the cache) every experiment the pages name; add its figures to the site."""
    quick, cache = _settings()
    wanted = _wanted(config["docs_dir"])
    folder = cache / _source_key(quick) if cache is not None else None
    for name in sorted(wanted):
        entry = _results.get(name)
        if entry is None and folder is not None:
            entry = _load_cached(folder, name)
        if entry is None:
            entry = _run(name, quick)
            if folder is not None:
                _store(folder, name, entry)
        _results[name] = entry
        missing = wanted[name] - set(entry["png"])
        if missing:
            raise PluginError(
                f"lab experiment {name!r} draws no figure named {', '.join(sorted(missing))}; "
                f"it draws: {', '.join(entry['png'])}"
            )
        for fig, png in entry["png"].items():  # every figure: the verdict box links them all
            files.append(File.generated(config, f"{ASSETS}/{name}-{fig}.png", content=png))
    return files


_ADMONITION = {"held": "success", "partly held": "warning", "did not hold": "failure", "not run": "note"}


def _checks_block(result: dict) -> str:
    mode = "quick run" if result["quick"] else "full run"
    kind = _ADMONITION.get(result["verdict"], "note")
    lines = [
        f'!!! {kind} "The lab: {result["title"]}: {result["verdict"]}"',
        "",
        f"    **Claim.** {result['claim']}",
        "",
        f"    Measured by `chainrule lab {result['name']}` ({mode}, seed {result['seed']}) while this site was built:",
        "",
    ]
    for c in result["checks"]:
        mark = "held" if c["verdict"] == "held" else "**did not hold**"
        lines.append(f"    - {c['statement']}: {mark}. <small>{_escape(c['detail'])}</small>")
    if result.get("notes"):  # the lab's explanations of what it measured belong beside the verdict
        lines += ["", "    **Notes from the lab.**", ""]
        lines += [f"    - {_escape(note)}" for note in result["notes"]]
    figures = result["figures"]
    if figures:
        links = ", ".join(f"[{f['file'][len(result['name']) + 1:-4]}]({{root}}{ASSETS}/{f['file']})" for f in figures)
        lines += ["", f"    Every figure of this run, at full resolution: {links}."]
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    """Measured details contain `*`, `_` and `<`: keep Markdown from reading them as markup."""
    return re.sub(r"([\\`*_\[\]<>|])", r"\\\1", text)


def _figure_block(result: dict, figure: str, page_uri: str) -> str:
    caption = next(f["caption"] for f in result["figures"] if f["file"] == f"{result['name']}-{figure}.png")
    target = posixpath.relpath(f"{ASSETS}/{result['name']}-{figure}.png", posixpath.dirname(page_uri) or ".")
    return (f"[![{_escape(caption)}]({target})]({target})\n\n*{_escape(caption)}* "
            f"<small>(from `chainrule lab {result['name']}`; click for full size)</small>\n")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace each marker by its figure or its box of measured checks."""

    def replace(m: re.Match) -> str:
        kind, name, figure = m.groups()
        result = _results[name]["result"]
        if kind == "checks":
            root = posixpath.relpath(".", posixpath.dirname(page.file.src_uri) or ".")
            return _checks_block(result).replace("{root}", "" if root == "." else root + "/")
        return _figure_block(result, figure, page.file.src_uri)

    return MARKER.sub(replace, markdown)
