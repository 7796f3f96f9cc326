"""The lab's HTML report: one self-contained page, figures embedded as base64 PNG.

The page loads nothing: styles are inline, every image is a ``data:`` URI,
an animation is an ``<iframe srcdoc>`` holding its own script and data, and
the only links are anchors within the page, so it opens from disk in any
browser with no network. One section per experiment: the claim, the verdict
and the checks that decided it (with their numbers), the figures, the tables,
notes and settings.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any, Sequence

_CSS = """
figure.page iframe { width: 100%; height: 640px; border: 1px solid #ddd; border-radius: 6px; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 0 1.2em 3em; color: #1d1d1f; background: #fff; }
h1 { margin-top: 1.2em; } h2 { margin-top: 2.2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
.meta { color: #555; }
.claim { background: #f5f7fa; border-left: 4px solid #8aa4c8; padding: .6em 1em; }
.verdict { display: inline-block; padding: .05em .6em; border-radius: 1em; font-size: .8em; font-weight: 600;
           vertical-align: middle; margin-left: .4em; color: #fff; }
.v-held { background: #2e7d32; } .v-partly-held { background: #b26a00; } .v-did-not-hold { background: #c62828; }
.v-not-run { background: #757575; }
ul.checks { padding-left: 1.2em; } ul.checks li { margin: .35em 0; }
.mark { font-weight: 700; margin-right: .3em; } .ok { color: #2e7d32; } .no { color: #c62828; }
.detail { color: #444; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .88em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
caption { text-align: left; font-weight: 600; padding: .3em 0; }
.note { background: #fffbea; border-left: 4px solid #e0c050; padding: .5em 1em; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: .85em; }
.error { background: #fdecea; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _slug(verdict: str) -> str:
    return "v-" + verdict.replace(" ", "-")


def _badge(verdict: str) -> str:
    return f'<span class="verdict {_slug(verdict)}">{_e(verdict)}</span>'


def _table(t: Any) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    return f"<table><caption>{_e(t.title)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(name: str, f: Any) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(f.caption)}">'
            f"<figcaption>{_e(f.caption)} <code>{_e(name)}-{_e(f.name)}.png</code></figcaption></figure>")


def _page(name: str, p: Any) -> str:
    # the page inline (srcdoc), so that the report stays one file; its script runs sandboxed
    return (f'<figure class="page"><iframe srcdoc="{_e(p.html)}" sandbox="allow-scripts" title="{_e(p.caption)}"></iframe>'
            f"<figcaption>{_e(p.caption)} <code>{_e(name)}-{_e(p.name)}.html</code></figcaption></figure>")


def _section(r: Any) -> str:
    parts = [f'<section id="{_e(r.name)}">',
             f"<h2>{_e(r.title)} {_badge(r.verdict)}</h2>",
             f'<p class="meta"><code>chainrule lab {_e(r.name)}</code> &middot; {r.seconds:.1f} s'
             f"{' &middot; quick' if r.quick else ''} &middot; seed {r.seed}</p>",
             f'<p class="claim"><strong>Claim.</strong> {_e(r.claim)}</p>']
    if r.error:
        parts.append(f'<pre class="error">{_e(r.error)}</pre>')
    if r.checks:
        held = sum(c.held for c in r.checks)
        parts.append(f"<p><strong>Verdict: {_e(r.verdict)}</strong> ({held} of {len(r.checks)} parts held, "
                     "each decided from the numbers measured below).</p><ul class=\"checks\">")
        for c in r.checks:
            mark = '<span class="mark ok">held</span>' if c.held else '<span class="mark no">did not hold</span>'
            parts.append(f"<li>{mark} {_e(c.statement)}<br><span class=\"detail\">{_e(c.detail)}</span></li>")
        parts.append("</ul>")
    for note in r.notes:
        parts.append(f'<p class="note">{_e(note)}</p>' if not r.error else f"<pre>{_e(note)}</pre>")
    parts.extend(_figure(r.name, f) for f in r.figures)
    parts.extend(_page(r.name, p) for p in getattr(r, "pages", ()))
    parts.extend(_table(t) for t in r.tables)
    if r.settings:
        parts.append("<details><summary>Settings</summary><pre>"
                     f"{_e(json.dumps(r.settings, indent=1, default=str))}</pre></details>")
    parts.append("</section>")
    return "\n".join(parts)


def render_html(results: Sequence[Any], meta: dict | None = None) -> str:
    """The report page for a list of lab Results, as one self-contained HTML string.

    Args:
        results: :class:`chainrule.lab.Result` objects, in the order to show them.
        meta: optional run facts shown at the top ("chainrule_version", "quick",
            "seed", "jobs", "total_seconds").

    Example:
        >>> from chainrule import lab
        >>> page = render_html([lab.run("activations", quick=True)])
        >>> "data:image/png;base64," in page
        True
    """
    meta = meta or {}
    counts: dict = {}
    for r in results:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    facts = []
    if "chainrule_version" in meta:
        facts.append(f"chainrule {_e(meta['chainrule_version'])}")
    if "quick" in meta:
        facts.append("quick run" if meta["quick"] else "full run")
    for key, label in (("seed", "seed"), ("jobs", "jobs")):
        if key in meta:
            facts.append(f"{label} {_e(meta[key])}")
    if "total_seconds" in meta:
        facts.append(f"{float(meta['total_seconds']):.0f} s in all")
    rows = "".join(
        f'<tr><td><a href="#{_e(r.name)}">{_e(r.title)}</a></td><td><code>{_e(r.name)}</code></td>'
        f"<td>{_badge(r.verdict)}</td><td>{r.seconds:.1f} s</td></tr>"
        for r in results
    )
    summary = ", ".join(f"{n} {_e(v)}" for v, n in counts.items())
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>chainrule lab</title><style>{_CSS}</style></head><body>",
        "<h1>The chainrule lab: the lesson's claims, measured</h1>",
        f'<p class="meta">{" &middot; ".join(facts)}</p>',
        "<p>Each experiment states a claim from the lesson <em>Artificial Neural Networks: going deeper</em>, "
        "measures it, and decides from the measured numbers whether it held. A verdict is computed, never written "
        "in; where a claim did not hold on these settings, the section says so and shows why.</p>",
        f"<p><strong>{len(results)} experiments:</strong> {summary}.</p>",
        "<table><thead><tr><th>experiment</th><th>name</th><th>verdict</th><th>time</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>",
        *(_section(r) for r in results),
        "</body></html>",
    ])
