"""Flame graph output: a self-contained interactive HTML page, or an SVG
(profiler.emit.flamegraph_svg); write_flamegraph writes either.

The call tree is built by profiler.emit.flametree.  The HTML page embeds it as compact
JSON (one entry per tree node, never one per sample) and draws it on a canvas with a
small script (the page is the package data file flamegraph_template.html): hover for
details, click to zoom, a regex search that shows the matched share, flame or icicle
layout.  Its state can be set from the URL, e.g.
``#zoom=app%20[42];main;work&search=memcpy&mode=icicle``.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Literal

from profiler.emit.flamegraph_svg import render_svg
from profiler.emit.flametree import (
    HIGHLIGHT,
    FlameTree,
    build_tree,
    frame_color,
    pct,
    tree_stats,
)
from profiler.model import ProfileData

__all__ = ["KIND_TITLES", "render_html", "write_flamegraph"]

KIND_TITLES = {
    "user": "user code",
    "unknown": "no symbol (module+offset)",
    "kernel": "kernel",
    "unreliable": "unreliable stack end",
    "process": "process",
}

_TEMPLATE = Path(__file__).with_name("flamegraph_template.html")
_PLACEHOLDER = re.compile(r"\{\{(TITLE|HEADER|HIGHLIGHT|DATA)\}\}")


# -- header text ------------------------------------------------------------------------


def _header_html(data: ProfileData, tree: FlameTree, title: str) -> str:
    esc = html.escape
    parts = [f'<span class="stat">{esc(k)} <b>{esc(v)}</b></span>'
             for k, v in tree_stats(data, tree)]
    rel = pct(tree.reliable, tree.total)
    cls = "good" if tree.total and tree.reliable * 100 >= 95 * tree.total else "bad"
    parts.append(
        f'<span class="stat reliable {cls}" id="fg-reliable" data-reliable="{tree.reliable}"'
        f' data-total="{tree.total}">reliable stacks <b>{esc(rel)}</b></span>'
    )
    legend = "".join(
        f'<span class="key"><i style="background:{frame_color(k, k)}"></i>{esc(t)}</span>'
        for k, t in KIND_TITLES.items()
    )
    lines = [f"<h1>{esc(title)}</h1>", f'<div class="stats">{" ".join(parts)}</div>',
             f'<div class="legend">{legend}</div>']
    if data.comments:
        items = "".join(f"<li>{esc(c)}</li>" for c in data.comments)
        lines.append(f'<ul class="comments">{items}</ul>')
    return "\n".join(lines)


# -- HTML ----------------------------------------------------------------------------------


def render_html(data: ProfileData, title: str = "sframe-prof", *, icicle: bool = False) -> str:
    """The interactive flame graph page as one self-contained HTML string."""
    tree = build_tree(data)
    values = {
        "TITLE": html.escape(title),
        "HEADER": _header_html(data, tree, title),
        "HIGHLIGHT": HIGHLIGHT,
        "DATA": tree.to_json(data.period_ns, icicle),
    }
    # One pass, so that text inside a value is never taken for a placeholder.
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], _TEMPLATE.read_text(encoding="utf-8"))


# -- entry point ----------------------------------------------------------------------------


def write_flamegraph(
    data: ProfileData,
    path: str | os.PathLike[str],
    title: str = "sframe-prof",
    fmt: Literal["html", "svg"] = "html",
    *,
    icicle: bool = False,
) -> None:
    """Write `data` as a flame graph to `path`: an interactive HTML page or an SVG.

    `icicle` puts the root at the top instead of the bottom (the page can switch).
    """
    if fmt == "html":
        text = render_html(data, title, icicle=icicle)
    elif fmt == "svg":
        text = render_svg(data, title, icicle=icicle)
    else:
        raise ValueError(f"unknown flame graph format {fmt!r} (expected 'html' or 'svg')")
    Path(path).write_text(text, encoding="utf-8")
