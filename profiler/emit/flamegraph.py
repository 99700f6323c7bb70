"""Flame graph output: a self-contained interactive HTML page, or an SVG.

All samples are merged into one call tree.  The root frame "all" has one child per
process (``name [pid]``); below it come the user frames from the outermost caller
to the leaf, then the kernel frames on top, so identical stacks of different threads of
one process end up in the same frames.  Children are ordered by name, so the output is
the same for the same input.

The HTML page embeds the tree as compact JSON (one entry per tree node, never one per
sample) and draws it on a canvas with a small script: hover for details, click to zoom,
a regex search that shows the matched share, flame or icicle layout.  Its state can be
set from the URL, e.g. ``#zoom=app%20[42];main;work&search=memcpy&mode=icicle``.  The
SVG is static (each frame has a ``<title>``) with an embedded script for zoom and search,
like FlameGraph's SVG.

Colors say what a frame is: warm hues for user code, sand for user code without a
symbol (shown as ``module+0xoffset``), blue for the kernel, grey-red for the synthetic
frames that end an unreliable stack, lavender for the process frames.
"""

from __future__ import annotations

import html
import json
import operator
import os
import re
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import Literal

from profiler.model import Location, ProfileData

__all__ = [
    "KINDS",
    "FlameTree",
    "build_tree",
    "frame_color",
    "frame_label",
    "render_html",
    "render_svg",
    "write_flamegraph",
]

KIND_ROOT, KIND_PROCESS, KIND_USER, KIND_UNKNOWN, KIND_KERNEL, KIND_UNRELIABLE = range(6)
KINDS = ("root", "process", "user", "unknown", "kernel", "unreliable")
KIND_TITLES = {
    "user": "user code",
    "unknown": "no symbol (module+offset)",
    "kernel": "kernel",
    "unreliable": "unreliable stack end",
    "process": "process",
}
HIGHLIGHT = "#e600e6"  # search matches, in both formats

_TEMPLATE = Path(__file__).with_name("flamegraph_template.html")
_SHIFT = 48  # packing of (samples, unreliable samples) while building the tree
_PLACEHOLDER = re.compile(r"\{\{(TITLE|HEADER|HIGHLIGHT|DATA)\}\}")


# -- frames ------------------------------------------------------------------------


def _module_name(path: str) -> str:
    base = os.path.basename(path.rstrip("/"))
    return base or path or "[unknown]"


def frame_label(loc: Location) -> str:
    """The text shown for one frame: its function, else ``module+0xoffset``."""
    if loc.function:
        return loc.function
    if loc.synthetic:
        return "[synthetic]"
    m = loc.mapping
    if m is None:
        return f"[unknown]+0x{loc.address:x}"
    return f"{_module_name(m.path)}+0x{loc.address - m.start + m.offset:x}"


def _frame_kind(loc: Location) -> int:
    if loc.synthetic:
        return KIND_UNRELIABLE
    if loc.is_kernel:
        return KIND_KERNEL
    if not loc.function:
        return KIND_UNKNOWN
    return KIND_USER


def frame_color(name: str, kind: str) -> str:
    """The fill color of a frame as ``#rrggbb``: a hue family per kind, varied by name.

    The variation comes from a CRC of the name, so it is stable across runs and machines.
    """
    h = zlib.crc32(name.encode("utf-8", "surrogatepass"))
    a, b, c = (h & 0xFF) / 255, ((h >> 8) & 0xFF) / 255, ((h >> 16) & 0xFF) / 255
    if kind == "user":  # warm: red, orange, amber
        rgb = (205 + 45 * a, 75 + 120 * b, 25 + 45 * c)
    elif kind == "unknown":  # sand
        rgb = (214 + 20 * a, 196 + 18 * b, 148 + 22 * c)
    elif kind == "kernel":  # sky to steel blue
        rgb = (70 + 45 * a, 148 + 45 * b, 212 + 36 * c)
    elif kind == "process":  # lavender
        rgb = (178 + 24 * a, 166 + 20 * b, 224 + 22 * c)
    elif kind == "unreliable":  # one neutral grey, never varied (its text is dark red)
        rgb = (180, 180, 180)
    else:  # the root
        rgb = (200, 196, 222)
    return "#{:02x}{:02x}{:02x}".format(*(round(v) for v in rgb))


# -- the merged call tree -------------------------------------------------------------


@dataclass(slots=True)
class FlameTree:
    """The merged call tree in preorder, plus a frame table the nodes point into.

    Node 0 is the root "all" (depth 0); processes are at depth 1.  A node's subtree is
    the run of nodes after it with a greater depth.
    """

    frame_names: list[str]
    frame_kinds: list[int]        # index into KINDS
    frame_modules: list[int]      # index into modules, -1 for none
    frame_colors: list[str]
    modules: list[str]
    node_frame: list[int]
    node_total: list[int]         # samples in the subtree
    node_unreliable: list[int]    # of which from unreliable stacks
    node_depth: list[int]
    total: int
    reliable: int
    processes: int
    threads: int

    def to_json(self, period_ns: int, icicle: bool) -> str:
        doc = {
            "version": 1,
            "total": self.total,
            "period_ns": period_ns,
            "icicle": icicle,
            "kinds": list(KINDS),
            "modules": self.modules,
            "frames": {
                "name": self.frame_names,
                "kind": self.frame_kinds,
                "module": self.frame_modules,
                "color": self.frame_colors,
            },
            "nodes": {
                "frame": self.node_frame,
                "total": self.node_total,
                "unreliable": self.node_unreliable,
                "depth": self.node_depth,
            },
        }
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        # Safe inside <script>: "<" only occurs in strings, where \u003c means the same.
        return text.replace("<", "\\u003c")


def build_tree(data: ProfileData) -> FlameTree:
    """Merge all samples of `data` into one call tree (see the module docstring).

    Each sample becomes a path of frame ids (process first); equal paths are summed,
    the unique paths are sorted by frame name, and one pass over them emits the tree in
    preorder: a path shares its first nodes with the path before it.  No per-node
    objects are made, which keeps 100k unique stacks within a few seconds.
    """
    keys: dict[tuple[str, int, str], int] = {}   # (name, kind, module) -> provisional id
    loc_ids: dict[Location, int] = {}
    proc_ids: dict[tuple[int, str], int] = {}
    paths: dict[tuple[int, ...], list[int]] = {}  # path -> [samples, unreliable samples]
    threads: set[tuple[int, int]] = set()
    total = reliable = 0

    def key_id(key: tuple[str, int, str]) -> int:
        fid = keys.get(key)
        if fid is None:
            fid = keys[key] = len(keys)
        return fid

    root_id = key_id(("all", KIND_ROOT, ""))
    get_loc = loc_ids.__getitem__
    for s in data.samples:
        c = s.count
        if c <= 0:
            continue
        u = 0 if s.reliable else c
        total += c
        reliable += c - u
        threads.add((s.pid, s.tid))
        pname = s.process_name or s.thread_name or "?"
        pid = proc_ids.get((s.pid, pname))
        if pid is None:
            pid = proc_ids[(s.pid, pname)] = key_id((f"{pname} [{s.pid}]", KIND_PROCESS, ""))
        locs = s.locations
        try:
            ids = tuple(map(get_loc, locs))
        except KeyError:
            for loc in locs:
                if loc not in loc_ids:
                    mod = _module_name(loc.mapping.path) if loc.mapping is not None else ""
                    loc_ids[loc] = key_id((frame_label(loc), _frame_kind(loc), mod))
            ids = tuple(map(get_loc, locs))
        path = (pid, *ids[::-1])
        acc = paths.get(path)
        if acc is None:
            paths[path] = [c, u]
        else:
            acc[0] += c
            acc[1] += u

    # Frame table sorted by name; paths of ranks then sort in the order siblings are shown.
    order = sorted(keys, key=lambda k: (k[0], k[1], k[2]))
    rank = [0] * len(order)
    for r, key in enumerate(order):
        rank[keys[key]] = r
    modules = sorted({k[2] for k in order if k[2]})
    mod_index = {m: i for i, m in enumerate(modules)}
    to_rank = rank.__getitem__
    ranked = sorted((tuple(map(to_rank, p)), acc) for p, acc in paths.items())

    # Preorder emission.  Sorted paths share a prefix with the path before them; only
    # the rest are new nodes, added with C-level list operations.  A path's count goes
    # to its last node, and one reverse pass then adds every node into its parent.
    # Counts are packed as samples << 48 | unreliable samples to halve that pass.
    node_frame = [rank[root_id]]
    node_depth = [0]
    parent = [-1]
    packed = [0]                 # samples whose stack ends at this node
    open_nodes: list[int] = []   # node index of path[:d + 1] for the previous path
    prev: tuple[int, ...] = ()
    for p, (c, u) in ranked:
        # Length of the shared prefix, by bisection on slice compares.
        lo, hi = 0, min(len(p), len(prev))
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if p[:mid] == prev[:mid]:
                lo = mid
            else:
                hi = mid - 1
        base, k = len(node_frame), len(p) - lo   # k >= 1: sorted unique paths
        node_frame.extend(p[lo:])
        node_depth.extend(range(lo + 1, len(p) + 1))
        parent.append(open_nodes[lo - 1] if lo else 0)
        parent.extend(range(base, base + k - 1))
        packed.extend([0] * (k - 1))
        packed.append(c << _SHIFT | u)
        open_nodes[lo:] = range(base, base + k)
        prev = p
    for i, up in zip(range(len(parent) - 1, 0, -1), parent[:0:-1], strict=True):
        packed[up] += packed[i]
    node_total = list(map(operator.rshift, packed, repeat(_SHIFT)))
    node_unrel = list(map(operator.and_, packed, repeat((1 << _SHIFT) - 1)))

    return FlameTree(
        frame_names=[k[0] for k in order],
        frame_kinds=[k[1] for k in order],
        frame_modules=[mod_index[k[2]] if k[2] else -1 for k in order],
        frame_colors=[frame_color(k[0], KINDS[k[1]]) for k in order],
        modules=modules,
        node_frame=node_frame,
        node_total=node_total,
        node_unreliable=node_unrel,
        node_depth=node_depth,
        total=total,
        reliable=reliable,
        processes=len(proc_ids),
        threads=len(threads),
    )


# -- header text ------------------------------------------------------------------------


def _pct(part: int, whole: int) -> str:
    """A percentage with one decimal that never rounds to 0.0 or 100.0 unless exact."""
    if whole <= 0:
        return "n/a"
    if part == whole:
        return "100%"
    if part == 0:
        return "0%"
    v = 100.0 * part / whole
    return f"{min(max(v, 0.1), 99.9):.1f}%"


def _seconds(ns: int) -> str:
    s = ns / 1e9
    if s >= 100:
        return f"{s:,.0f} s"
    if s >= 1:
        return f"{s:.2f} s"
    return f"{s * 1e3:.1f} ms"


def _stats(data: ProfileData, tree: FlameTree) -> list[tuple[str, str]]:
    """(label, value) pairs for the header, in display order."""
    items = [("samples", f"{tree.total:,}")]
    if data.period_ns > 0:
        items.append(("CPU", _seconds(tree.total * data.period_ns)))
        items.append(("rate", f"{1e9 / data.period_ns:,.4g} Hz"))
    if data.duration_ns > 0:
        items.append(("duration", _seconds(data.duration_ns)))
    items.append(("processes", f"{tree.processes:,}"))
    items.append(("threads", f"{tree.threads:,}"))
    if data.start_ns > 0:
        t = datetime.fromtimestamp(data.start_ns / 1e9, UTC)
        items.append(("start", t.strftime("%Y-%m-%d %H:%M:%S UTC")))
    return items


def _header_html(data: ProfileData, tree: FlameTree, title: str) -> str:
    esc = html.escape
    parts = [f'<span class="stat">{esc(k)} <b>{esc(v)}</b></span>' for k, v in _stats(data, tree)]
    rel = _pct(tree.reliable, tree.total)
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


# -- SVG -----------------------------------------------------------------------------------

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
        lines.append(f"CPU {_seconds(n * period_ns)}")
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

    stats = " \u00b7 ".join(f"{k} {v}" for k, v in _stats(data, tree))
    stats += f" \u00b7 reliable stacks {_pct(tree.reliable, tree.total)}"
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
