"""Folded stacks: exact lines for hand-built input, merging, kernel suffix, escaping."""

from __future__ import annotations

import io
import re
from pathlib import Path

from profiler.emit.folded import folded_lines, write_folded
from profiler.model import Location, MappingInfo, ProfileData, StackSample

PERIOD = 1_000_000

KERNEL = MappingInfo(0xFFFFFFFF81000000, 0xFFFFFFFF83000000, 0, "[kernel.kallsyms]")
APP = MappingInfo(0x55D0C2A01000, 0x55D0C2A05000, 0x1000, "/usr/bin/app", "ab12")
LIBC = MappingInfo(0x7F3A1C628000, 0x7F3A1C7BD000, 0x28000,
                   "/usr/lib/x86_64-linux-gnu/libc.so.6")
BLOB = MappingInfo(0x7F3A1C900000, 0x7F3A1C940000, 0x4000, "/opt/vendor/lib/libblob.so")
VDSO = MappingInfo(0x7FFD5B3F2000, 0x7FFD5B3F4000, 0, "[vdso]")


def k(addr: int, name: str) -> Location:
    return Location(addr, KERNEL, name, is_kernel=True)


def u(m: MappingInfo, addr: int, name: str = "") -> Location:
    return Location(addr, m, name)


def st(locs: tuple[Location, ...], tid: int, thread: str, count: int, pid: int = 100,
       reason: str = "", process: str = "") -> StackSample:
    return StackSample(locs, pid, tid, thread, not reason, reason, count, count * PERIOD,
                       process)


WRITE = (k(0xFFFFFFFF8142A1B0, "ksys_write"), k(0xFFFFFFFF81C0F2E4, "do_syscall_64"),
         u(LIBC, 0x7F3A1C714887, "__GI___libc_write"), u(APP, 0x55D0C2A02A31, "flush_log"),
         u(APP, 0x55D0C2A0215C, "main"))
CRUNCH = (u(APP, 0x55D0C2A03300, "crunch"), u(APP, 0x55D0C2A0391F, "worker_main"),
          u(LIBC, 0x7F3A1C694AC3, "start_thread"))
BLOBBY = (u(BLOB, 0x7F3A1C912340), u(BLOB, 0x7F3A1C9055A8), u(APP, 0x55D0C2A0391F, "worker_main"),
          Location(0, None, "[unreliable: stack-truncated]", synthetic=True))
CLOCK = (u(VDSO, 0x7FFD5B3F2A4D, "__vdso_clock_gettime"), u(LIBC, 0x7F3A1C6E56BD, "clock_gettime"),
         u(APP, 0x55D0C2A0215C, "main"))
IDLE = (k(0xFFFFFFFF81200010, "native_safe_halt"), k(0xFFFFFFFF810A0000, ""),
        k(0xFFFFFFFF81000500, "do_idle"))


def data(*samples: StackSample) -> ProfileData:
    return ProfileData(list(samples), PERIOD, 0, 10 * PERIOD)


def test_exact_lines() -> None:
    prof = data(
        st(WRITE, 100, "app", 5, process="app"),
        st(CRUNCH, 101, "worker", 6),
        st(BLOBBY, 101, "worker", 2, reason="stack-truncated"),
        st(CLOCK, 100, "app", 4),
        st(IDLE, 0, "swapper/0", 9, pid=0),
    )
    assert folded_lines(prof) == [
        "app;main;clock_gettime;__vdso_clock_gettime 4",
        "app;main;flush_log;__GI___libc_write;do_syscall_64_[k];ksys_write_[k] 5",
        "swapper/0;do_idle_[k];[kernel.kallsyms]+0xa0000_[k];native_safe_halt_[k] 9",
        "worker;[unreliable: stack-truncated];worker_main;libblob.so+0x95a8;"
        "libblob.so+0x16340 2",
        "worker;start_thread;worker_main;crunch 6",
    ]


def test_identical_stacks_of_different_threads_and_processes_merge() -> None:
    prof = data(
        st(CRUNCH, 101, "worker", 6, pid=100),
        st(CRUNCH, 102, "worker", 3, pid=100),
        st(CRUNCH, 201, "worker", 1, pid=200),
        st(CRUNCH, 103, "worker-2", 7, pid=100),
        st(CRUNCH, 104, "worker", 0, pid=100),
    )
    assert folded_lines(prof) == [
        "worker-2;start_thread;worker_main;crunch 7",
        "worker;start_thread;worker_main;crunch 10",
    ]
    assert folded_lines(prof, "nanoseconds") == [
        f"worker-2;start_thread;worker_main;crunch {7 * PERIOD}",
        f"worker;start_thread;worker_main;crunch {10 * PERIOD}",
    ]


def test_kernel_suffix_only_on_kernel_frames() -> None:
    (line,) = folded_lines(data(st(WRITE, 100, "app", 1)))
    frames = line.rsplit(" ", 1)[0].split(";")
    assert [f for f in frames if f.endswith("_[k]")] == ["do_syscall_64_[k]", "ksys_write_[k]"]
    # Kernel frames are the leaf end of the line (root first).
    assert frames[-2:] == ["do_syscall_64_[k]", "ksys_write_[k]"]


def test_names_that_would_break_the_format_are_cleaned() -> None:
    odd = (u(APP, 0x55D0C2A03300, "std::map<int;int>::find"),
           u(APP, 0x55D0C2A0391F, "operator()\nthen"))
    (line,) = folded_lines(data(st(odd, 1, "a;b", 2)))
    assert line == "a:b;operator() then;std::map<int:int>::find 2"


def test_thread_name_falls_back_to_process_then_unknown() -> None:
    prof = data(st(CRUNCH, 5, "", 1, process="dbd"), st(CRUNCH, 6, "", 1))
    assert [line.split(";", 1)[0] for line in folded_lines(prof)] == ["[unknown]", "dbd"]


def test_every_line_parses_like_flamegraph_pl_reads_it(tmp_path: Path) -> None:
    prof = data(st(WRITE, 100, "app", 5), st(BLOBBY, 101, "worker pool", 2, reason="x"),
                st(IDLE, 0, "swapper/0", 9, pid=0))
    path = tmp_path / "out.folded"
    write_folded(prof, path)
    buf = io.StringIO()
    write_folded(prof, buf)
    text = path.read_text()
    assert text == buf.getvalue()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert lines == sorted(lines)
    # flamegraph.pl: the count is after the last space; frames split on ';'.
    total = 0
    for line in lines:
        m = re.fullmatch(r"(.+) (\d+)", line)
        assert m, line
        assert all(m.group(1).split(";"))
        total += int(m.group(2))
    assert total == 16


def test_empty_profile_writes_nothing() -> None:
    buf = io.StringIO()
    write_folded(data(), buf)
    assert buf.getvalue() == ""


def test_the_flame_graph_names_frames_as_folded_output_does() -> None:
    """One naming rule (profiler.emit.location_label) for every emitter: a frame with
    no symbol, no mapping, or a synthetic reason reads the same in the flame graph as
    in folded output (folded adds only its `_[k]` kernel suffix)."""
    from profiler.emit.flametree import build_tree
    unmapped = (Location(0x1234, None, ""), u(BLOB, 0x7F3A1C912340),
                u(APP, 0x55D0C2A0215C, "main"))
    d = data(st(BLOBBY, 5, "w", 1), st(unmapped, 6, "x", 1), st(IDLE, 0, "swapper/0", 1))
    folded = {name.removesuffix("_[k]") for line in folded_lines(d)
              for name in line.rsplit(" ", 1)[0].split(";")[1:]}
    tree = build_tree(d)
    shown = set(tree.frame_names[1:]) - {n for n in tree.frame_names if n.endswith("]")
                                         and " [" in n}
    assert {"0x1234", "libblob.so+0x16340", "[unreliable: stack-truncated]"} <= folded
    assert folded <= set(tree.frame_names), sorted(folded - set(tree.frame_names))
    assert shown <= folded | {"all"}, sorted(shown - folded)
