"""A griffe extension that lets chainrule's docstrings render well in the API reference.

chainrule's docstrings are written for ``help()`` and for reading in the
source: Google style with doctest-style examples under an ``Example:`` header
and a few reStructuredText roles (``:func:`fit```). mkdocstrings reads Markdown,
so before griffe parses a docstring this extension

- wraps each run of doctest lines (``>>>``, ``...`` and their output) in a
  fenced ``pycon`` block, so examples keep their line breaks and highlighting;
- turns a header such as ``Example, with cr.fit:`` (which is no Google section)
  into an ``Example:`` admonition whose title keeps the words;
- writes a reST role such as ``:class:`~chainrule.nn.MLP``` as inline code.

Nothing in the source changes; only what the site shows.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:mod|func|class|meth|attr|data|obj|exc):`~?([^`]+)`")
_SECTION = re.compile(r"^\s*[\w][\s\w-]*:(\s+\S.*)?\s*$")  # griffe's admonition and section headers
_EXAMPLE_HEAD = re.compile(r"^(\s*)(Examples?\b[^:]*?)(:?)\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _headers(lines: list) -> list:
    """``Example, with X:`` (over up to three lines) -> ``Example: Example, with X``."""
    out, i = [], 0
    while i < len(lines):
        m = _EXAMPLE_HEAD.match(lines[i])
        if m and not re.match(r"^\s*Examples?:", lines[i]):
            # gather continuation lines until the one that ends with a colon
            words, j = [m.group(2)], i
            done = bool(m.group(3))
            while not done and j + 1 < len(lines) and j - i < 2 and lines[j + 1].strip():
                j += 1
                text = lines[j].strip()
                done = text.endswith(":")
                words.append(text.rstrip(":"))
            nxt = lines[j + 1].strip() if j + 1 < len(lines) else ""
            if done and nxt.startswith(">>>"):
                out.append(f"{m.group(1)}Example: {' '.join(words)}")
                i = j + 1
                continue
        out.append(lines[i])
        i += 1
    return out


def _fences(lines: list) -> list:
    """Each run of doctest lines as a fenced pycon block at the right indentation."""
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        if not line.lstrip().startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = _indent(line)
        block = []
        while i < len(lines) and lines[i].strip() and _indent(lines[i]) >= indent:
            block.append(lines[i][indent:])
            i += 1
        previous = next((p for p in reversed(out) if p.strip()), "")
        if _SECTION.match(previous) and _indent(previous) < indent:
            at = indent  # the content of a section or admonition: keep it inside
        else:
            at = _indent(previous)  # an example after a paragraph: a block of its own
            if out and out[-1].strip():
                out.append("")
        pad = " " * at
        out += [f"{pad}```pycon", *[pad + b for b in block], f"{pad}```"]
        if i < len(lines) and lines[i].strip():
            out.append("")
    return out


def rewrite(text: str) -> str:
    """The Markdown-ready form of one docstring."""
    text = _ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    return "\n".join(_fences(_headers(text.split("\n"))))


class DocstringMarkdown(griffe.Extension):
    """Rewrite every docstring as it is loaded (see the module docstring)."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
