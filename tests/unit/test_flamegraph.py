"""Flame graph output (profiler/emit/flamegraph.py, flamegraph_svg.py, flametree.py).

The merged tree is read back from the HTML's embedded JSON and from the SVG's elements
and compared with what the samples say.  Then headless Chromium opens the files: the
page's script leaves its state on #fg-state (HTML) or the root <svg>, which --dump-dom
shows, and the screenshots are decoded here (a small PNG reader, no Pillow) to count
the pixels of each frame kind.  Chromium is required: without it these tests fail and
say to run scripts/setup.sh.
"""

from __future__ import annotations

import collections
import html
import json
import random
import re
import shutil
import struct
import subprocess
import time
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from profiler.emit.flamegraph import render_html, write_flamegraph
from profiler.emit.flamegraph_svg import render_svg
from profiler.emit.flametree import HIGHLIGHT, KINDS, frame_color
from profiler.model import Location, MappingInfo, ProfileData, StackSample

# -- a hand-made profile ------------------------------------------------------------------

NGINX = MappingInfo(0x400000, 0x500000, 0, "/usr/sbin/nginx", "ab12", True)
LIBC = MappingInfo(0x7F0000000000, 0x7F0000200000, 0x28000,
                   "/usr/lib/x86_64-linux-gnu/libc.so.6", "cd34", True)
LIBX = MappingInfo(0x7F1000000000, 0x7F1000100000, 0x1000, "/opt/vendor/libsecret.so")
KERNEL = MappingInfo(0xFFFFFFFF81000000, 0xFFFFFFFF83000000, 0, "[kernel.kallsyms]")


def user(name: str, m: MappingInfo = NGINX) -> Location:
    return Location(m.start + 0x1000 + len(name), m, name)


def kern(name: str) -> Location:
    return Location(KERNEL.start + 0x2000 + len(name), KERNEL, name, is_kernel=True)


def nosym(off: int) -> Location:
    return Location(LIBX.start + off, LIBX, "")


def broken(reason: str) -> Location:
    return Location(0, None, f"[unreliable: {reason}]", synthetic=True)


def sample(pid: int, tid: int, proc: str, frames: list[Location], count: int,
           reason: str = "", thread: str = "") -> StackSample:
    return StackSample(tuple(frames), pid, tid, thread or proc, not reason, reason, count,
                       count * 10_000_000, proc)


SEND = [kern("copy_user_enhanced_fast_string"), kern("tcp_sendmsg"),
        kern("__x64_sys_sendto"), kern("entry_SYSCALL_64"), user("__send", LIBC),
        user("ngx_http_write_filter"), user("ngx_process_events_and_timers"),
        user("ngx_worker_process_cycle"), user("main")]


def profile() -> ProfileData:
    ev = [user("ngx_process_events_and_timers"), user("ngx_worker_process_cycle"),
          user("main")]
    samples = [
        sample(100, 100, "nginx", SEND, 300),
        sample(100, 101, "nginx", SEND, 200),           # same stack, other thread: merged
        sample(100, 101, "nginx", [user("ngx_http_parse_request_line"),
                                   user("ngx_http_process_request_line"), *ev], 250),
        sample(100, 100, "nginx", [nosym(0x1234), nosym(0x5678), *ev], 120),
        sample(100, 100, "nginx", [user("memcpy", LIBC), broken("stack-truncated")], 130,
               "stack-truncated"),
        sample(200, 200, "python3", [user("_PyEval_EvalFrameDefault"),
                                     user("PyEval_EvalCode"), user("Py_RunMain"),
                                     user("main")], 400),
        sample(200, 201, "python3", [kern("do_syscall_64"), kern("entry_SYSCALL_64"),
                                     user("__GI___poll", LIBC), broken("no-unwind-info")],
               100, "no-unwind-info"),
        sample(300, 300, "postgres", [user("hash_search"), user("ExecScan"),
                                      user("PostgresMain"), user("main")], 150),
        sample(400, 400, "", [kern("worker_thread"), kern("kthread"),
                              kern("ret_from_fork")], 50, thread="kworker/0:1"),
        sample(300, 300, "postgres", [user("never_counted")], 0),
    ]
    return ProfileData(samples, 10_000_000, 1_700_000_000_000_000_000, 10_000_000_000,
                       ["host: test-box", "kernel 6.1.0"])


TOTAL = 1700
UNRELIABLE = 230

# name -> (samples, {children}); root first, as the flame graph shows it.
SEND_TREE = {"__send": (500, {"entry_SYSCALL_64": (500, {"__x64_sys_sendto": (500, {
    "tcp_sendmsg": (500, {"copy_user_enhanced_fast_string": (500, {})})})})})}
EXPECTED = {"all": (TOTAL, {
    "kworker/0:1 [400]": (50, {"ret_from_fork": (50, {"kthread": (50, {
        "worker_thread": (50, {})})})}),
    "nginx [100]": (1000, {
        "[unreliable: stack-truncated]": (130, {"memcpy": (130, {})}),
        "main": (870, {"ngx_worker_process_cycle": (870, {
            "ngx_process_events_and_timers": (870, {
                "libsecret.so+0x6678": (120, {"libsecret.so+0x2234": (120, {})}),
                "ngx_http_process_request_line": (250, {
                    "ngx_http_parse_request_line": (250, {})}),
                "ngx_http_write_filter": (500, SEND_TREE),
            })})}),
    }),
    "postgres [300]": (150, {"main": (150, {"PostgresMain": (150, {"ExecScan": (150, {
        "hash_search": (150, {})})})})}),
    "python3 [200]": (500, {
        "[unreliable: no-unwind-info]": (100, {"__GI___poll": (100, {
            "entry_SYSCALL_64": (100, {"do_syscall_64": (100, {})})})}),
        "main": (400, {"Py_RunMain": (400, {"PyEval_EvalCode": (400, {
            "_PyEval_EvalFrameDefault": (400, {})})})}),
    }),
})}
KERNEL_NAMES = {"copy_user_enhanced_fast_string", "tcp_sendmsg", "__x64_sys_sendto",
                "entry_SYSCALL_64", "do_syscall_64", "worker_thread", "kthread",
                "ret_from_fork"}
NOSYM_NAMES = {"libsecret.so+0x6678", "libsecret.so+0x2234"}
UNRELIABLE_NAMES = {"[unreliable: stack-truncated]", "[unreliable: no-unwind-info]"}
PROCESS_NAMES = {"kworker/0:1 [400]", "nginx [100]", "postgres [300]", "python3 [200]"}


# -- reading the outputs back --------------------------------------------------------------


def page_data(page: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="fg-data">(.*?)</script>', page,
                  re.S)
    assert m, "no embedded data"
    doc: dict[str, Any] = json.loads(m.group(1))
    return doc


@dataclass
class Node:
    name: str
    kind: str
    color: str
    total: int
    unreliable: int
    children: list[Node]


def page_tree(doc: dict[str, Any]) -> Node:
    fr, nodes = doc["frames"], doc["nodes"]
    stack: list[Node] = []
    root = None
    for f, t, u, d in zip(nodes["frame"], nodes["total"], nodes["unreliable"],
                          nodes["depth"], strict=True):
        node = Node(fr["name"][f], doc["kinds"][fr["kind"][f]], fr["color"][f], t, u, [])
        assert len(stack) >= d, "depth jumps by more than one"
        del stack[d:]
        if stack:
            stack[-1].children.append(node)
        else:
            assert root is None, "two roots"
            root = node
        stack.append(node)
    assert root is not None
    return root


def shape(node: Node) -> dict[str, Any]:
    return {node.name: (node.total, {k: v for c in node.children for k, v in shape(c).items()})}


def walk(node: Node) -> list[Node]:
    out = [node]
    for c in node.children:
        out.extend(walk(c))
    return out


def kind_of(name: str) -> str:
    if name == "all":
        return "root"
    for kind, names in (("kernel", KERNEL_NAMES), ("unknown", NOSYM_NAMES),
                        ("unreliable", UNRELIABLE_NAMES), ("process", PROCESS_NAMES)):
        if name in names:
            return kind
    return "user"


def rgb(color: str) -> tuple[int, int, int]:
    assert re.fullmatch(r"#[0-9a-f]{6}", color), color
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def looks_like(kind: str, color: str) -> bool:
    """The hue family promised for each kind."""
    r, g, b = rgb(color)
    return {
        "user": r >= 200 and b <= 75 and r > g > b,                 # warm
        "unknown": r > 200 and g > 190 and 140 < b < 175,           # sand
        "kernel": b > 200 and b > g > r and r < 120,                # blue
        "unreliable": r == g == b and 150 < r < 200,                # neutral grey
        "process": b > 215 and b > r > g and r > 170,               # lavender
        "root": b > r > 190,
    }[kind]


# -- the tree -------------------------------------------------------------------------------


def test_html_embeds_the_merged_tree() -> None:
    root = page_tree(page_data(render_html(profile())))
    assert shape(root) == EXPECTED
    assert root.unreliable == UNRELIABLE
    by_name = {n.name: n for n in walk(root)}
    assert by_name["nginx [100]"].unreliable == 130
    assert by_name["[unreliable: no-unwind-info]"].unreliable == 100
    assert by_name["postgres [300]"].unreliable == 0
    # Children are ordered by name, so the layout is stable.
    for n in walk(root):
        names = [c.name for c in n.children]
        assert names == sorted(names)


def test_threads_of_one_process_merge_but_processes_do_not() -> None:
    root = page_tree(page_data(render_html(profile())))
    procs = {c.name: c for c in root.children}
    assert set(procs) == PROCESS_NAMES
    main_nodes = [n for n in walk(root) if n.name == "main"]
    assert sorted(n.total for n in main_nodes) == [150, 400, 870]
    # Threads 100 and 101 of nginx sent the same stack: one path with both counts.
    leaves = [n for n in walk(procs["nginx [100]"])
              if n.name == "copy_user_enhanced_fast_string"]
    assert [n.total for n in leaves] == [500]


def test_frames_are_colored_by_kind() -> None:
    doc = page_data(render_html(profile()))
    fr = doc["frames"]
    seen = set()
    for name, k, color in zip(fr["name"], fr["kind"], fr["color"], strict=True):
        kind = doc["kinds"][k]
        assert kind == kind_of(name), name
        assert looks_like(kind, color), (name, kind, color)
        assert color == frame_color(name, kind)
        seen.add(kind)
    assert seen == set(KINDS)
    unreliable = {c for n, c in zip(fr["name"], fr["color"], strict=True)
                  if n in UNRELIABLE_NAMES}
    assert len(unreliable) == 1
    assert HIGHLIGHT not in fr["color"]
    # Kinds never share a color.
    by_kind = collections.defaultdict(set)
    for k, c in zip(fr["kind"], fr["color"], strict=True):
        by_kind[k].add(c)
    colors = [c for cs in by_kind.values() for c in cs]
    assert len(colors) == len(set(colors))


def test_unknown_functions_show_module_and_file_offset() -> None:
    doc = page_data(render_html(profile()))
    names = doc["frames"]["name"]
    # address - start + file offset: 0x1234 + 0x1000.
    assert "libsecret.so+0x2234" in names
    assert doc["modules"] == ["[kernel.kallsyms]", "libc.so.6", "libsecret.so", "nginx"]
    mods = {n: doc["modules"][m] for n, m in zip(names, doc["frames"]["module"], strict=True)
            if m >= 0}
    assert mods["__send"] == "libc.so.6"
    assert mods["tcp_sendmsg"] == "[kernel.kallsyms]"
    assert "[unreliable: stack-truncated]" not in mods


def test_header_has_title_totals_and_reliable_share() -> None:
    page = render_html(profile(), title="web <tier> & db")
    assert "<title>web &lt;tier&gt; &amp; db</title>" in page
    assert "<h1>web &lt;tier&gt; &amp; db</h1>" in page
    assert "samples <b>1,700</b>" in page
    assert "processes <b>4</b>" in page
    assert "threads <b>6</b>" in page
    assert "CPU <b>17.00 s</b>" in page
    assert "rate <b>100 Hz</b>" in page
    # 1470 of 1700 samples came from reliable stacks.
    assert re.search(r'reliable stacks <b>86\.5%</b>', page)
    assert 'data-reliable="1470" data-total="1700"' in page
    assert "<li>host: test-box</li>" in page
    assert "https://" not in page and "http://" not in page  # nothing from the network


def test_output_is_deterministic_and_independent_of_sample_order() -> None:
    data = profile()
    first = render_html(data), render_svg(data)
    shuffled = list(data.samples)
    random.Random(7).shuffle(shuffled)
    again = ProfileData(shuffled, data.period_ns, data.start_ns, data.duration_ns,
                        data.comments)
    assert (render_html(again), render_svg(again)) == first


def test_names_cannot_break_out_of_the_page() -> None:
    evil = "</script><script>alert(1)</script><!--"
    data = ProfileData([sample(1, 1, "a&b", [user(evil), user("x]]>y")], 5)], 1, 0, 0)
    page = render_html(data)
    assert page.count("</script>") == 2
    names = page_data(page)["frames"]["name"]
    assert evil in names and "x]]>y" in names
    root = ET.fromstring(render_svg(data).encode())
    titles = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert any(t.startswith(evil + "\n") for t in titles)


def test_tree_matches_a_naive_merge_of_random_stacks() -> None:
    rng = random.Random(1234)
    funcs = [user(f"f{i}") for i in range(12)] + [kern(f"k{i}") for i in range(4)]
    samples = []
    for _ in range(400):
        frames = [rng.choice(funcs) for _ in range(rng.randint(0, 7))]
        pid = rng.choice([1, 2, 3])
        samples.append(sample(pid, rng.randint(1, 4), f"p{pid}", frames,
                              rng.randint(1, 9), rng.choice(["", "", "too-deep"])))
    naive: dict[str, Any] = {}
    for s in samples:
        path = ["all", f"p{s.pid} [{s.pid}]", *(loc.function for loc in reversed(s.locations))]
        level = naive
        for name in path:
            entry = level.setdefault(name, [0, 0, {}])
            entry[0] += s.count
            entry[1] += 0 if s.reliable else s.count
            level = entry[2]

    def freeze(level: dict[str, Any]) -> dict[str, Any]:
        return {k: (v[0], v[1], freeze(v[2])) for k, v in level.items()}

    def thaw(node: Node) -> dict[str, Any]:
        return {node.name: (node.total, node.unreliable,
                            {k: v for c in node.children for k, v in thaw(c).items()})}

    data = ProfileData(samples, 1_000_000, 0, 0)
    assert thaw(page_tree(page_data(render_html(data)))) == freeze(naive)


def test_empty_profile_and_bad_format(tmp_path: Path) -> None:
    empty = ProfileData([], 10_000_000, 0, 0)
    doc = page_data(render_html(empty))
    assert doc["total"] == 0 and doc["nodes"]["frame"] == [0]
    ET.fromstring(render_svg(empty).encode())
    with pytest.raises(ValueError, match="unknown flame graph format"):
        write_flamegraph(empty, tmp_path / "x.png", fmt="png")  # type: ignore[arg-type]


@pytest.mark.slow
def test_hundred_thousand_unique_stacks_stay_fast() -> None:
    rng = random.Random(5)
    mods = [MappingInfo(0x400000 * (i + 1), 0x400000 * (i + 2), 0, f"/lib/m{i}.so")
            for i in range(8)]
    funcs = [Location(m.start + j * 64, m, f"m{i}::fn{j}") for i, m in enumerate(mods)
             for j in range(400)]
    seen: set[tuple[int, ...]] = set()
    samples = []
    while len(samples) < 100_000:
        stack = (*(rng.randrange(3200) for _ in range(rng.randint(4, 24))),
                 rng.randrange(40), rng.randrange(40, 200))
        if stack not in seen:
            seen.add(stack)
            samples.append(sample(10 + len(samples) % 5, 1, "app", [funcs[i] for i in stack],
                                  rng.randint(1, 5)))
    data = ProfileData(samples, 1_000_000, 0, 0)
    t0 = time.perf_counter()
    page = render_html(data)
    elapsed = time.perf_counter() - t0
    doc = page_data(page)
    assert doc["total"] == sum(s.count for s in samples)
    assert len(doc["nodes"]["frame"]) > 100_000
    assert elapsed < 15, f"{elapsed:.1f} s for 100k stacks"


# -- SVG ------------------------------------------------------------------------------------

SVG_NS = "{http://www.w3.org/2000/svg}"


def svg_frames(svg: str) -> list[dict[str, Any]]:
    root = ET.fromstring(svg.encode())
    out = []
    for g in root.iter(SVG_NS + "g"):
        if "f" not in (g.get("class") or "").split():
            continue
        title = g.find(SVG_NS + "title")
        rect = g.find(SVG_NS + "rect")
        text = g.find(SVG_NS + "text")
        assert title is not None and rect is not None and text is not None
        out.append({
            "name": (title.text or "").split("\n")[0], "title": title.text or "",
            "kind": (g.get("class") or "").split()[1].removeprefix("k-"),
            "s": int(g.get("data-s") or -1), "n": int(g.get("data-n") or -1),
            "d": int(g.get("data-d") or -1), "x": float(rect.get("x") or 0),
            "y": float(rect.get("y") or 0), "w": float(rect.get("width") or 0),
            "fill": rect.get("fill"), "label": text.text or "",
        })
    return out


def test_svg_has_one_element_per_tree_node() -> None:
    data = profile()
    root = page_tree(page_data(render_html(data)))
    frames = svg_frames(render_svg(data, width=1200))
    nodes = walk(root)
    assert [(f["name"], f["n"]) for f in frames] == [(n.name, n.total) for n in nodes]
    by_start: dict[tuple[int, int], dict[str, Any]] = {}
    for f, n in zip(frames, nodes, strict=True):
        assert f["kind"] == n.kind == kind_of(n.name)
        assert f["fill"] == n.color and looks_like(f["kind"], f["fill"])
        assert f"{n.total:,} samples ({100 * n.total / TOTAL:.2f}%)" in f["title"]
        assert f["w"] == pytest.approx(1180 * n.total / TOTAL - 1, abs=0.01)
        assert f["x"] == pytest.approx(10 + 1180 * f["s"] / TOTAL, abs=0.01)
        by_start[f["d"], f["s"]] = f
        # Flame layout: depth d is d rows above the root.
        assert f["y"] == frames[0]["y"] - 16 * f["d"]
        if f["label"]:
            assert f["label"] == f["name"] or (
                f["label"].endswith("\u2026") and f["name"].startswith(f["label"][:-1]))
            assert len(f["label"]) * 7.3 <= f["w"] + 1
    # A child starts inside its parent.
    for f in frames[1:]:
        parents = [p for (d, s), p in by_start.items()
                   if d == f["d"] - 1 and s <= f["s"] < s + p["n"]]
        assert len(parents) == 1
    truncated = [f for f in frames if f["label"].endswith("\u2026")]
    assert truncated, "the narrow frames must be shortened"
    assert any(f["label"] == f["name"] == "copy_user_enhanced_fast_string" for f in frames)


def test_svg_icicle_puts_the_root_on_top_and_drops_hairlines() -> None:
    frames = svg_frames(render_svg(profile(), icicle=True))
    assert frames[0]["name"] == "all"
    assert all(f["y"] == frames[0]["y"] + 16 * f["d"] for f in frames)
    few = svg_frames(render_svg(profile(), min_width=200))
    # Only frames at least 200 px wide remain (1180 px for 1700 samples: 289 samples).
    assert [f["name"] for f in few] == [
        "all", "nginx [100]", "main", "ngx_worker_process_cycle",
        "ngx_process_events_and_timers", "ngx_http_write_filter", "__send",
        "entry_SYSCALL_64", "__x64_sys_sendto", "tcp_sendmsg",
        "copy_user_enhanced_fast_string", "python3 [200]", "main", "Py_RunMain",
        "PyEval_EvalCode", "_PyEval_EvalFrameDefault"]


# -- in the browser -------------------------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--window-size=1200,800",
]
# Appended to a copy of the page: drives the mouse and buttons, then records what the
# page showed on a #probe element.  Rows are 18 px, the root at the canvas bottom.
PROBE = """<script>
(function () {
  var c = document.getElementById("fg"), st = document.getElementById("fg-state");
  var tip = document.getElementById("tip"), out = document.createElement("div");
  function at(fx, depth) {
    var r = c.getBoundingClientRect();
    return { clientX: r.left + fx * r.width, clientY: r.bottom - (depth + 0.5) * 18,
             bubbles: true, cancelable: true, button: 0 };
  }
  function fire(type, fx, depth) { c.dispatchEvent(new MouseEvent(type, at(fx, depth))); }
  function note(key) {
    out.setAttribute("data-" + key + "-zoom", st.getAttribute("data-zoom"));
    out.setAttribute("data-" + key + "-drawn", st.getAttribute("data-drawn"));
    out.setAttribute("data-" + key + "-matched", st.getAttribute("data-matched-samples"));
    out.setAttribute("data-" + key + "-hash", decodeURIComponent(location.hash));
  }
  out.id = "probe";
  fire("mousemove", 0.3, 2);  /* nginx's main: samples 130..1000 of 1700 */
  out.setAttribute("data-tip", tip.hidden ? "(hidden)" : tip.textContent);
  out.setAttribute("data-status", document.getElementById("status").textContent);
  fire("click", 0.3, 2);
  note("click");
  fire("contextmenu", 0.8, 9);  /* tcp_sendmsg, now that main fills the width */
  note("menu");
  document.getElementById("up").click();
  note("up");
  document.getElementById("reset").click();
  note("reset");
  fire("mousemove", 0.5, 30);  /* above every frame */
  out.setAttribute("data-tip-after", tip.hidden ? "(hidden)" : tip.textContent);
  out.setAttribute("data-status-after", document.getElementById("status").textContent);
  document.getElementById("icicle").click();  /* the screenshot shows this state */
  note("icicle");
  document.body.appendChild(out);
})();
</script>"""
SEARCH_ZOOM = ("#zoom=nginx%20%5B100%5D;main;ngx_worker_process_cycle"
               "&search=ngx_http")


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Chromium is not installed (Debian package 'chromium'): run scripts/setup.sh")


@dataclass
class Shot:
    state: dict[str, str]     # attributes of the page's state element
    png: Path
    dom: str


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Shot]:
    """Opens each view in its own headless Chromium, all at once: DOM dump + screenshot."""
    exe = find_chromium()
    tmp = tmp_path_factory.mktemp("flamegraph")
    data = profile()
    write_flamegraph(data, tmp / "fg.html", title="sframe-prof test")
    write_flamegraph(data, tmp / "fg.svg", title="sframe-prof test", fmt="svg")
    page = (tmp / "fg.html").read_text()
    (tmp / "probe.html").write_text(page.replace("</body>", PROBE + "\n</body>"))
    views = {
        "probe": "probe.html",
        "html": "fg.html",
        "html-zoom": "fg.html" + SEARCH_ZOOM,
        "svg": "fg.svg",
        "svg-zoom": "fg.svg" + SEARCH_ZOOM,
    }
    procs = {}
    for key, target in views.items():
        cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / ('profile-' + key)}",
               f"--screenshot={tmp / (key + '.png')}", "--dump-dom",
               (tmp / target.split("#")[0]).as_uri() + target[len(target.split("#")[0]):]]
        procs[key] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
    shots = {}
    try:
        outputs = {key: proc.communicate(timeout=90) for key, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for key, proc in procs.items():
        out, err = outputs[key]
        png = tmp / (key + ".png")
        assert proc.returncode == 0 and png.exists(), f"chromium failed for {key}: {err[-2000:]}"
        tag = "<svg" if key.startswith("svg") else '<div id="fg-state"'
        m = re.search(re.escape(tag) + r"[^>]*>", out)
        assert m, f"no state element in the DOM of {key}"
        state = {k: html.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', m.group(0))}
        shots[key] = Shot(state, png, out)
    return shots


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """8-bit RGB or RGBA PNG -> width, height, rows of RGB bytes."""
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(blob):
        size, kind = struct.unpack_from(">I4s", blob, pos)
        body = blob[pos + 8:pos + 8 + size]
        pos += 12 + size
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    assert header is not None
    width, height, depth, ctype, _, _, interlace = header
    assert depth == 8 and ctype in (2, 6) and interlace == 0, header
    bpp = 3 if ctype == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(b"".join(idat))
    assert len(raw) == height * (stride + 1)
    # Bytewise addition mod 256 of whole rows held as big integers (SWAR).
    low7 = int.from_bytes(b"\x7f" * stride, "big")
    high = int.from_bytes(b"\x80" * stride, "big")

    def add(a: int, b: int) -> int:
        return ((a & low7) + (b & low7)) ^ ((a ^ b) & high)

    prev, rows = bytes(stride), []
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)]
        if ftype == 0:
            cur = line
        elif ftype == 1:  # Sub: prefix sums per channel, by doubling the shift
            x, shift = int.from_bytes(line, "big"), 8 * bpp
            while shift < 8 * stride:
                x = add(x, x >> shift)
                shift *= 2
            cur = x.to_bytes(stride, "big")
        elif ftype == 2:  # Up
            cur = add(int.from_bytes(line, "big"), int.from_bytes(prev, "big")).to_bytes(
                stride, "big")
        else:  # Average or Paeth, byte by byte
            out = bytearray(line)
            for i in range(stride):
                a = out[i - bpp] if i >= bpp else 0
                b = prev[i]
                if ftype == 3:
                    out[i] = (out[i] + ((a + b) >> 1)) & 0xFF
                    continue
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                out[i] = (out[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
            cur = bytes(out)
        rows.append(cur)
        prev = cur
    if bpp == 4:
        rows = [bytes(b for i, b in enumerate(r) if i % 4 != 3) for r in rows]
    return width, height, rows


def test_png_reader_decodes_every_filter_type(tmp_path: Path) -> None:
    # A 3x3 RGB image whose rows use filters None, Sub, Up, then a second image for
    # Average and Paeth, checked against values worked out by hand.
    pixels = [bytes([10, 20, 30, 40, 50, 60, 70, 80, 90]),
              bytes([15, 25, 35, 250, 5, 8, 1, 2, 3]),
              bytes([200, 100, 0, 0, 100, 200, 255, 255, 255])]

    def png(filtered: list[bytes]) -> bytes:
        def chunk(kind: bytes, body: bytes) -> bytes:
            return (struct.pack(">I", len(body)) + kind + body
                    + struct.pack(">I", zlib.crc32(kind + body)))
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 3, 3, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(b"".join(filtered))) + chunk(b"IEND", b""))

    def sub(row: bytes) -> bytes:
        return bytes((row[i] - (row[i - 3] if i >= 3 else 0)) & 0xFF for i in range(9))

    def up(row: bytes, prev: bytes) -> bytes:
        return bytes((a - b) & 0xFF for a, b in zip(row, prev, strict=True))

    def avg(row: bytes, prev: bytes) -> bytes:
        return bytes((row[i] - (((row[i - 3] if i >= 3 else 0) + prev[i]) >> 1)) & 0xFF
                     for i in range(9))

    def paeth(row: bytes, prev: bytes) -> bytes:
        out = []
        for i in range(9):
            a, b, c = (row[i - 3] if i >= 3 else 0), prev[i], (prev[i - 3] if i >= 3 else 0)
            p = a + b - c
            pr = a if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c) else (
                b if abs(p - b) <= abs(p - c) else c)
            out.append((row[i] - pr) & 0xFF)
        return bytes(out)

    one, two = tmp_path / "1.png", tmp_path / "2.png"
    one.write_bytes(png([b"\0" + pixels[0], b"\1" + sub(pixels[1]),
                         b"\2" + up(pixels[2], pixels[1])]))
    two.write_bytes(png([b"\1" + sub(pixels[0]), b"\3" + avg(pixels[1], pixels[0]),
                         b"\4" + paeth(pixels[2], pixels[1])]))
    assert read_png(one) == (3, 3, pixels)
    assert read_png(two) == (3, 3, pixels)


def histogram(rows: list[bytes], box: tuple[int, int, int, int]) -> collections.Counter[str]:
    """Pixel counts by #rrggbb inside box = (left, top, width, height)."""
    left, top, width, height = box
    counts: collections.Counter[str] = collections.Counter()
    for row in rows[top:top + height]:
        part = row[3 * left:3 * (left + width)]
        counts.update(zip(part[0::3], part[1::3], part[2::3]))
    return collections.Counter({"#{:02x}{:02x}{:02x}".format(*k): v
                                for k, v in counts.items()})


def canvas_box(shot: Shot) -> tuple[int, int, int, int]:
    left, top, width, height = map(int, shot.state["data-canvas"].split(","))
    assert width > 1000 and height > 0
    return left, top, width, height


def kind_pixels(hist: collections.Counter[str], doc: dict[str, Any]) -> dict[str, int]:
    fr = doc["frames"]
    colors = {c: doc["kinds"][k] for c, k in zip(fr["color"], fr["kind"], strict=True)}
    out: dict[str, int] = collections.Counter()
    for color, n in hist.items():
        if color in colors:
            out[colors[color]] += n
    return out


@pytest.mark.slow
def test_page_script_draws_every_frame(browser: dict[str, Shot]) -> None:
    s = browser["html"].state
    nodes = len(walk(page_tree(page_data(render_html(profile())))))
    assert s["data-ready"] == "1"
    assert s["data-drawn"] == s["data-nodes"] == str(nodes)
    assert s["data-total"] == str(TOTAL)
    assert s["data-mode"] == "flame"
    assert s["data-zoom"] == "" and s["data-zoom-samples"] == str(TOTAL)
    assert s["data-matched-samples"] == "0"


@pytest.mark.slow
def test_screenshot_shows_frames_in_their_colors(browser: dict[str, Shot]) -> None:
    shot = browser["html"]
    width, height, rows = read_png(shot.png)
    assert (width, height) == (1200, 800)
    whole = histogram(rows, (0, 0, width, height))
    assert len(whole) > 50, "blank screenshot"
    assert whole["#f5f3fa"] > 50_000, "header background missing"
    doc = page_data(render_html(profile()))
    left, top, cw, ch = canvas_box(shot)
    hist = histogram(rows, (left, top, cw, ch))
    got = kind_pixels(hist, doc)
    # Expected areas: a frame is samples/total of the width and 17 px tall; gaps and
    # labels take some of it.
    expected: dict[str, float] = collections.Counter()
    for n in walk(page_tree(doc)):
        expected[n.kind] += cw * n.total / TOTAL * 17
    for kind in KINDS:
        assert 0.6 * expected[kind] <= got[kind] <= 1.02 * expected[kind], (kind, got, expected)
    ratio = got["kernel"] / got["unreliable"]
    assert ratio == pytest.approx(expected["kernel"] / expected["unreliable"], rel=0.3)
    # The root spans the whole width in the bottom row (flame layout).
    root_color = doc["frames"]["color"][doc["nodes"]["frame"][0]]
    bottom = histogram(rows, (left, top + ch - 9, cw, 1))
    assert bottom[root_color] >= 0.9 * cw
    assert hist[HIGHLIGHT] == 0


@pytest.mark.slow
def test_zoom_and_search_from_the_url(browser: dict[str, Shot]) -> None:
    s = browser["html-zoom"].state
    assert s["data-zoom"] == "nginx [100];main;ngx_worker_process_cycle"
    assert s["data-zoom-samples"] == "870"
    # all, nginx, main (faded ancestors) + the 12 frames from the zoomed one up.
    assert s["data-drawn"] == "15"
    assert s["data-search"] == "ngx_http"
    # 750 samples are under a frame named ngx_http_*, of 1700.
    assert s["data-matched-samples"] == "750"
    assert s["data-matched-pct"] == "44.12"
    assert s["data-matched-drawn"] == "3"
    assert "Matched 44.12% (750 samples), 86.21% of zoomed frame" in browser["html-zoom"].dom


@pytest.mark.slow
def test_zoomed_screenshot_differs_and_highlights(browser: dict[str, Shot]) -> None:
    _, _, plain = read_png(browser["html"].png)
    _, _, zoomed = read_png(browser["html-zoom"].png)
    assert plain != zoomed
    box = canvas_box(browser["html-zoom"])
    left, top, cw, ch = box
    hist = histogram(zoomed, box)
    # The three ngx_http_* frames cover 250 + 250 + 500 of the 870 zoomed samples.
    assert hist[HIGHLIGHT] == pytest.approx(cw * (250 + 250 + 500) / 870 * 17, rel=0.3)
    doc = page_data(render_html(profile()))
    names = doc["frames"]["name"]
    cycle = doc["frames"]["color"][names.index("ngx_worker_process_cycle")]
    # The zoomed frame now spans the whole width.
    rows_of_cycle = [y for y in range(top, top + ch)
                     if histogram(zoomed, (left, y, cw, 1))[cycle] >= 0.9 * cw]
    assert len(rows_of_cycle) >= 12
    # Outside the zoomed frame nothing is drawn: no postgres, python or kworker.
    got = kind_pixels(hist, doc)
    assert got["unreliable"] == 0


@pytest.mark.slow
def test_mouse_and_buttons(browser: dict[str, Shot]) -> None:
    m = re.search(r'<div id="probe"[^>]*>', browser["probe"].dom)
    assert m, "the probe script did not run"
    probe = {k: html.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', m.group(0))}
    tip = probe["data-tip"]
    assert tip.startswith("main")
    assert "user \u00b7 nginx" in tip
    assert "Samples: 870 (51.18% of all), CPU 8.70 s" in tip
    assert "Self: 0 (0.00%)" in tip
    assert probe["data-status"].startswith("main \u2014 870 samples")
    assert probe["data-click-zoom"] == "nginx [100];main"
    assert probe["data-click-drawn"] == "15"   # all, nginx + the 13 frames of main
    assert probe["data-click-hash"] == "#zoom=nginx [100];main"
    assert probe["data-menu-zoom"] == "nginx [100];main"
    assert probe["data-menu-matched"] == "500"
    assert probe["data-menu-hash"] == "#zoom=nginx [100];main&search=^tcp_sendmsg$"
    assert probe["data-up-zoom"] == "nginx [100]"
    assert probe["data-reset-zoom"] == ""
    assert probe["data-reset-drawn"] == str(len(walk(page_tree(page_data(
        render_html(profile()))))))
    assert probe["data-reset-hash"] == "#search=^tcp_sendmsg$"
    assert probe["data-tip-after"] == "(hidden)"
    assert probe["data-status-after"].startswith("Hover a frame for details")
    assert probe["data-icicle-hash"] == "#search=^tcp_sendmsg$&mode=icicle"


@pytest.mark.slow
def test_icicle_mode_puts_the_root_on_top(browser: dict[str, Shot]) -> None:
    shot = browser["probe"]   # it ends by ticking the Icicle box
    assert shot.state["data-mode"] == "icicle"
    _, _, rows = read_png(shot.png)
    left, top, cw, _ = canvas_box(shot)
    doc = page_data(render_html(profile()))
    root_color = doc["frames"]["color"][doc["nodes"]["frame"][0]]
    assert histogram(rows, (left, top + 8, cw, 1))[root_color] >= 0.9 * cw


@pytest.mark.slow
def test_svg_renders_and_zooms_in_the_browser(browser: dict[str, Shot]) -> None:
    plain, zoomed = browser["svg"], browser["svg-zoom"]
    nodes = len(walk(page_tree(page_data(render_html(profile())))))
    assert plain.state["data-drawn"] == str(nodes)
    assert plain.state["data-zoom"] == ""
    assert zoomed.state["data-zoom"] == "nginx [100];main;ngx_worker_process_cycle"
    assert zoomed.state["data-zoom-samples"] == "870"
    assert zoomed.state["data-drawn"] == "15"
    assert zoomed.state["data-matched-samples"] == "750"
    assert zoomed.state["data-matched-pct"] == "44.12"
    doc = page_data(render_html(profile()))
    # Frames are drawn from y=84 down to 30 px above the bottom of the SVG.
    root = ET.fromstring(render_svg(profile()).encode())
    frames_box = (0, 84, 1200, int(root.get("height") or 0) - 84 - 30)
    _, _, rows = read_png(plain.png)
    got = kind_pixels(histogram(rows, frames_box), doc)
    for kind in KINDS:
        assert got[kind] > 500, (kind, got)
    _, _, zrows = read_png(zoomed.png)
    assert zrows != rows
    zhist = histogram(zrows, frames_box)
    assert zhist[HIGHLIGHT] > 5000
    assert kind_pixels(zhist, doc)["unreliable"] == 0
