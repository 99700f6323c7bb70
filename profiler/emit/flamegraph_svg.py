"""Flame graph as an SVG: static frames (each with a ``<title>``) and an embedded
script for zoom, search and the ``#zoom=``/``#search=`` URL state, like FlameGraph's SVG.

The tree, colors and header numbers come from profiler.emit.flametree.
"""

from __future__ import annotations

import html

from profiler.emit.flametree import (
    HIGHLIGHT,
    KINDS,
    build_tree,
    pct,
    seconds,
    tree_stats,
)
from profiler.model import ProfileData

__all__ = ["render_svg"]

_SVG_ROW = 16
_SVG_PAD = 10
_SVG_TOP = 84          # frames start below the title, stats and buttons
_SVG_BOTTOM = 30       # status line
_SVG_CHAR_W = 7.3      # 12px DejaVu Sans Mono advances 7.22px; a little slack
_SVG_TEXT_PAD = 3

_SVG_STYLE = """
text { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px;
       fill: #111; }
.f { cursor: pointer; }
.f > text { pointer-events: none; }
.f:hover > rect { stroke: #222; stroke-width: 0.8; }
.k-unreliable > text { fill: #6e0000; }
.m > rect { fill: HIGHLIGHT; }
.a { opacity: 0.5; }
.h { display: none; }
.title { font-family: "DejaVu Sans", Verdana, sans-serif; font-size: 17px;
         font-weight: bold; text-anchor: middle; }
.stats { font-family: "DejaVu Sans", Verdana, sans-serif; font-size: 12px; fill: #444;
         text-anchor: middle; }
.btn { fill: #2350b0; cursor: pointer; text-decoration: underline; }
.off { visibility: hidden; }
""".replace("HIGHLIGHT", HIGHLIGHT)

# Zoom, search, hover status and the #zoom=/#search= URL state for the SVG.  Frames are
# <g class="f"> in preorder with data-s (first sample), data-n (samples), data-d (depth).
_SVG_SCRIPT = """
(function () {
  "use strict";
  var root = document.documentElement;
  var W = +root.getAttribute("data-width"), PAD = +root.getAttribute("data-pad");
  var CW = +root.getAttribute("data-char-width"), TP = +root.getAttribute("data-text-pad");
  var TOTAL = +root.getAttribute("data-total");
  var status = document.getElementById("status"), matchEl = document.getElementById("match");
  var resetEl = document.getElementById("reset"), searchEl = document.getElementById("search");
  var clearEl = document.getElementById("clear");
  var gs = document.querySelectorAll("g.f"), F = [], stack = [];
  for (var i = 0; i < gs.length; i++) {
    var g = gs[i], t = g.querySelector("title").textContent.split("\\n");
    var fr = { g: g, s: +g.getAttribute("data-s"), n: +g.getAttribute("data-n"),
               d: +g.getAttribute("data-d"), name: t[0], info: t.slice(1).join(", "),
               rect: g.querySelector("rect"), text: g.querySelector("text"), parent: null };
    while (stack.length && stack[stack.length - 1].d >= fr.d) stack.pop();
    fr.parent = stack.length ? stack[stack.length - 1] : null;
    stack.push(fr); F.push(fr); g.fgIndex = i;
  }
  var zoom = F.length ? F[0] : null, query = "", matched = 0;

  function label(name, w) {
    var fit = Math.floor((w - 2 * TP) / CW);
    if (fit < 3) return "";
    return name.length <= fit ? name : name.slice(0, fit - 1) + "\\u2026";
  }
  function pathOf(fr) {
    var p = [];
    for (; fr && fr.parent; fr = fr.parent) p.unshift(fr.name);
    return p.join(";");
  }
  function place(fr, x, w) {
    fr.rect.setAttribute("x", x.toFixed(2));
    fr.rect.setAttribute("width", Math.max(w - 1, 0.1).toFixed(2));
    fr.text.setAttribute("x", (x + TP).toFixed(2));
    fr.text.textContent = label(fr.name, w);
  }
  function render() {
    var zs = zoom.s, zn = zoom.n, zd = zoom.d, scale = (W - 2 * PAD) / zn, drawn = 0;
    for (var i = 0; i < F.length; i++) {
      var fr = F[i], c = fr.g.classList;
      if (fr.d >= zd && fr.s >= zs && fr.s + fr.n <= zs + zn && fr.n * scale >= 0.1) {
        place(fr, PAD + (fr.s - zs) * scale, fr.n * scale);
        c.remove("h"); c.remove("a"); drawn++;
      } else if (fr.d < zd && fr.s <= zs && fr.s + fr.n >= zs + zn) {
        place(fr, PAD, W - 2 * PAD);
        c.remove("h"); c.add("a"); drawn++;
      } else {
        c.add("h");
      }
    }
    resetEl.classList.toggle("off", zoom === F[0]);
    root.setAttribute("data-drawn", drawn);
    root.setAttribute("data-zoom", pathOf(zoom));
    root.setAttribute("data-zoom-samples", zoom.n);
  }
  function setZoom(fr) { zoom = fr; render(); }
  function setSearch(q) {
    query = q || "";
    var re = null;
    if (query) {
      try { re = new RegExp(query); } catch (e) {
        re = { test: function (s) { return s.indexOf(query) >= 0; } };
      }
    }
    matched = 0;
    var until = -1;  // samples below a counted match are not counted again
    for (var i = 0; i < F.length; i++) {
      var fr = F[i], hit = !!re && fr.parent !== null && re.test(fr.name);
      fr.g.classList.toggle("m", hit);
      if (hit && fr.s >= until) { matched += fr.n; until = fr.s + fr.n; }
    }
    var pct = TOTAL ? (100 * matched / TOTAL).toFixed(2) : "0.00";
    matchEl.textContent = query ? "Matched: " + pct + "% (" + matched + " samples)" : "";
    clearEl.classList.toggle("off", !query);
    root.setAttribute("data-search", query);
    root.setAttribute("data-matched-samples", matched);
    root.setAttribute("data-matched-pct", pct);
  }
  function findPath(p) {
    var node = F[0], idx = 0, rest = p;
    while (rest && node) {
      var best = null;
      for (var j = idx + 1; j < F.length && F[j].d > node.d; j++) {
        var c = F[j];
        if (c.parent !== node) continue;
        if ((rest === c.name || rest.indexOf(c.name + ";") === 0) &&
            (!best || c.name.length > best.name.length)) { best = c; }
      }
      if (!best) break;
      node = best; idx = F.indexOf(best); rest = rest.slice(best.name.length + 1);
    }
    return node;
  }
  function applyHash() {
    var h = (location.hash || "").replace(/^#/, ""), kv = {};
    h.split("&").forEach(function (part) {
      var k = part.indexOf("=");
      if (k <= 0) return;
      try { kv[part.slice(0, k)] = decodeURIComponent(part.slice(k + 1)); } catch (e) {}
    });
    if (!zoom) return;
    zoom = kv.zoom ? findPath(kv.zoom) : F[0];
    render();
    setSearch(kv.search || "");
  }
  if (!F.length) { root.setAttribute("data-drawn", 0); return; }
  root.addEventListener("click", function (e) {
    var g = e.target.closest ? e.target.closest("g.f") : null;
    if (g) setZoom(F[g.fgIndex]);
  });
  root.addEventListener("mouseover", function (e) {
    var g = e.target.closest ? e.target.closest("g.f") : null;
    if (g) { var fr = F[g.fgIndex]; status.textContent = fr.name + " \\u2014 " + fr.info; }
  });
  root.addEventListener("mouseout", function () { status.textContent = " "; });
  resetEl.addEventListener("click", function () { setZoom(F[0]); });
  searchEl.addEventListener("click", function () {
    var q = window.prompt("Search frames (regular expression)", query);
    if (q !== null) setSearch(q);
  });
  clearEl.addEventListener("click", function () { setSearch(""); });
  window.addEventListener("hashchange", applyHash);
  applyHash();
})();
"""


def _svg_title(name: str, n: int, u: int, total: int, period_ns: int) -> str:
    lines = [name, f"{n:,} samples ({100 * n / total:.2f}%)"]
    if period_ns > 0:
        lines.append(f"CPU {seconds(n * period_ns)}")
    if u:
        lines.append(f"{u:,} unreliable ({100 * u / n:.1f}%)")
    return "\n".join(lines)


def _svg_label(name: str, w: float) -> str:
    fit = int((w - 2 * _SVG_TEXT_PAD) // _SVG_CHAR_W)
    if fit < 3:
        return ""
    return name if len(name) <= fit else name[: fit - 1] + "\u2026"


def render_svg(
    data: ProfileData,
    title: str = "sframe-prof",
    *,
    icicle: bool = False,
    width: int = 1200,
    min_width: float = 0.1,
) -> str:
    """The flame graph as an SVG document; frames narrower than `min_width` px are left out."""
    tree = build_tree(data)
    esc = html.escape
    depth = tree.node_depth
    n_nodes = len(depth)
    max_depth = max(depth) if n_nodes else 0
    height = _SVG_TOP + (max_depth + 1) * _SVG_ROW + _SVG_BOTTOM
    inner = width - 2 * _SVG_PAD
    total = tree.total
    scale = inner / total if total else 0.0

    stats = " \u00b7 ".join(f"{k} {v}" for k, v in tree_stats(data, tree))
    stats += f" \u00b7 reliable stacks {pct(tree.reliable, tree.total)}"
    out = [
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>',
        f'<svg version="1.1" xmlns="http://www.w3.org/2000/svg" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}" data-width="{width}"'
        f' data-pad="{_SVG_PAD}" data-char-width="{_SVG_CHAR_W}"'
        f' data-text-pad="{_SVG_TEXT_PAD}" data-total="{total}" data-reliable="{tree.reliable}"'
        f' data-mode="{"icicle" if icicle else "flame"}">',
        f"<title>{esc(title)}</title>",
        f"<style>{_SVG_STYLE}</style>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fcfcfc"/>',
        f'<text class="title" x="{width / 2}" y="24">{esc(title)}</text>',
        f'<text class="stats" id="stats" x="{width / 2}" y="44">{esc(stats)}</text>',
        f'<text class="btn off" id="reset" x="{_SVG_PAD}" y="68">Reset zoom</text>',
        f'<text class="btn" id="search" x="{width - _SVG_PAD - 150}" y="68">Search</text>',
        f'<text class="btn off" id="clear" x="{width - _SVG_PAD - 90}" y="68">Clear</text>',
        f'<text id="match" x="{width / 2}" y="68" style="text-anchor:middle"> </text>',
        f'<text id="status" x="{_SVG_PAD}" y="{height - 10}"> </text>',
        '<g id="frames">',
    ]

    # Preorder walk with the sample offset of each node; narrow subtrees are skipped whole.
    next_start: list[float] = []   # per open ancestor: where its next child starts
    i = 0
    names, kinds, colors = tree.frame_names, tree.frame_kinds, tree.frame_colors
    totals, unrel, frames = tree.node_total, tree.node_unreliable, tree.node_frame
    while i < n_nodes:
        d = depth[i]
        del next_start[d:]
        s = next_start[d - 1] if d else 0
        n = totals[i]
        if d:
            next_start[d - 1] = s + n
        w = n * scale
        if w < min_width or n <= 0:
            i += 1
            while i < n_nodes and depth[i] > d:
                i += 1
            continue
        next_start.append(s)
        f = frames[i]
        name = names[f]
        x = _SVG_PAD + s * scale
        y = _SVG_TOP + (d if icicle else max_depth - d) * _SVG_ROW
        tip = _svg_title(name, n, unrel[i], total, data.period_ns)
        out.append(
            f'<g class="f k-{KINDS[kinds[f]]}" data-s="{s}" data-n="{n}" data-d="{d}">'
            f"<title>{esc(tip, quote=False)}</title>"
            f'<rect x="{x:.2f}" y="{y}" width="{max(w - 1, 0.1):.2f}" height="{_SVG_ROW - 1}"'
            f' rx="2" fill="{colors[f]}"/>'
            f'<text x="{x + _SVG_TEXT_PAD:.2f}" y="{y + _SVG_ROW - 4}">'
            f"{esc(_svg_label(name, w), quote=False)}</text></g>"
        )
        i += 1
    out.append("</g>")
    out.append(f'<script type="text/ecmascript"><![CDATA[{_SVG_SCRIPT}]]></script>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
