"""The merged call tree behind the flame graphs (profiler.emit.flamegraph and
profiler.emit.flamegraph_svg): frames, their kinds and colors, and the header numbers.

All samples are merged into one call tree.  The root frame "all" has one child per
process (``name [pid]``); below it come the user frames from the outermost caller
to the leaf, then the kernel frames on top, so identical stacks of different threads of
one process end up in the same frames.  Children are ordered by name, so the output is
the same for the same input.

Colors say what a frame is: warm hues for user code, sand for user code without a
symbol (shown as ``module+0xoffset``), blue for the kernel, grey-red for the synthetic
frames that end an unreliable stack, lavender for the process frames.
"""

from __future__ import annotations

import json
import operator
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat

from profiler.emit import location_label, module_name
from profiler.model import Location, ProfileData

__all__ = [
    "HIGHLIGHT",
    "KINDS",
    "FlameTree",
    "build_tree",
    "frame_color",
    "pct",
    "seconds",
    "tree_stats",
]

KIND_ROOT, KIND_PROCESS, KIND_USER, KIND_UNKNOWN, KIND_KERNEL, KIND_UNRELIABLE = range(6)
KINDS = ("root", "process", "user", "unknown", "kernel", "unreliable")
HIGHLIGHT = "#e600e6"  # search matches, in both formats
_SHIFT = 48  # packing of (samples, unreliable samples) while building the tree


# -- frames ------------------------------------------------------------------------


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
                    mod = module_name(loc.mapping.path) if loc.mapping is not None else ""
                    loc_ids[loc] = key_id((location_label(loc), _frame_kind(loc), mod))
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


def pct(part: int, whole: int) -> str:
    """A percentage with one decimal that never rounds to 0.0 or 100.0 unless exact."""
    if whole <= 0:
        return "n/a"
    if part == whole:
        return "100%"
    if part == 0:
        return "0%"
    v = 100.0 * part / whole
    return f"{min(max(v, 0.1), 99.9):.1f}%"


def seconds(ns: int) -> str:
    s = ns / 1e9
    if s >= 100:
        return f"{s:,.0f} s"
    if s >= 1:
        return f"{s:.2f} s"
    return f"{s * 1e3:.1f} ms"


def tree_stats(data: ProfileData, tree: FlameTree) -> list[tuple[str, str]]:
    """(label, value) pairs for the header, in display order."""
    items = [("samples", f"{tree.total:,}")]
    if data.period_ns > 0:
        items.append(("CPU", seconds(tree.total * data.period_ns)))
        items.append(("rate", f"{1e9 / data.period_ns:,.4g} Hz"))
    if data.duration_ns > 0:
        items.append(("duration", seconds(data.duration_ns)))
    items.append(("processes", f"{tree.processes:,}"))
    items.append(("threads", f"{tree.threads:,}"))
    if data.start_ns > 0:
        t = datetime.fromtimestamp(data.start_ns / 1e9, UTC)
        items.append(("start", t.strftime("%Y-%m-%d %H:%M:%S UTC")))
    return items
