"""Process identity, filters, PID reuse, forgetting, and the bounded caches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.paths import REPO, TARGETS

from profiler.app.agent.procs import (
    Matcher,
    ProcessBook,
    TargetScanner,
    container_id,
    read_cgroup,
)
from profiler.app.agent.windows import GroupKey, group_key, window_index
from profiler.lru import Lru
from profiler.model import Mapping
from profiler.symbolize.resolve import Resolver
from profiler.unwind.objfile import FileStream, ObjectFile
from profiler.unwind.process import Process, ProcessTable
from profiler.unwind.space import AddressSpace

CID = "0123456789abcdef" * 4


def agent_table(proc: str = "/proc", max_objects: int = 256) -> ProcessTable:
    """A ProcessTable with the agent's bounds."""
    return ProcessTable(proc=proc, max_objects=max_objects, max_object_bytes=256 << 20,
                        streaming=True, refresh_backoff=True)


def open_object(path: str, name: str) -> ObjectFile:
    return ObjectFile.open_streamed(path, name)


def test_lru_counts_and_bytes() -> None:
    lru: Lru[str, bytes] = Lru(3, 10, len)
    for k in "abc":
        lru[k] = b"xx"
    _ = lru["a"]                     # a is fresh again
    lru["d"] = b"xx"                 # evicts b (least recently used)
    assert list(lru) == ["c", "a", "d"] and lru.evictions == 1
    lru["e"] = b"x" * 7              # over the byte budget: evict until it fits
    assert lru.bytes <= 10 and "e" in lru
    del lru["e"]
    assert lru.bytes == sum(len(v) for v in lru.values())


@pytest.mark.parametrize(("path", "cid"), [
    (f"/system.slice/docker-{CID}.scope", CID),
    (f"/docker/{CID}", CID),
    (f"/kubepods.slice/kubepods-pod1.slice/cri-containerd-{CID}.scope", CID),
    (f"/machine.slice/libpod-{CID}.scope/container", CID),
    ("/user.slice/user-0.slice/session-1.scope", ""),
    ("/system.slice/" + "a" * 65 + ".service", ""),
])
def test_container_id(path: str, cid: str) -> None:
    assert container_id(path) == cid


def fake_proc(root: Path, pid: int, *, exe: str, cgroup: str, start: int,
              maps: str = "", flags: int = 0x400000) -> None:
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "cgroup").write_text(cgroup)
    rest = ["1"] * 18
    rest[5] = str(flags)                  # field 9
    (d / "stat").write_text(f"{pid} (some prog) S " + " ".join(rest) + f" {start} 0\n")
    (d / "maps").write_text(maps)
    if (d / "exe").is_symlink():
        (d / "exe").unlink()
    if exe:
        (d / "exe").symlink_to(exe)


def test_read_cgroup_prefers_v2(tmp_path: Path) -> None:
    fake_proc(tmp_path, 5, exe="", start=1,
              cgroup="12:cpu:/legacy\n0::/system.slice/nginx.service\n")
    assert read_cgroup(str(tmp_path), 5) == "/system.slice/nginx.service"
    fake_proc(tmp_path, 6, exe="", start=1, cgroup="3:memory:/v1only\n1:name=x:/\n")
    assert read_cgroup(str(tmp_path), 6) == "/v1only"
    assert read_cgroup(str(tmp_path), 7) == ""


def test_matcher_and_service_names() -> None:
    m = Matcher(["nginx", "/opt/app/bin/server"], ["billing.service", "0123"],
                {"python3": "api", "cgroup:batch": "batch-jobs", "/usr/bin/x": "ex"})
    assert m.matches("/usr/sbin/nginx", "", "")
    assert m.matches("/opt/app/bin/server", "", "")
    assert not m.matches("/usr/bin/server", "", "")
    assert m.matches("/usr/bin/other", "/system.slice/billing.service", "")
    assert m.matches("/usr/bin/other", "/docker/x", CID)
    assert not m.matches("/usr/bin/other", "/user.slice", "")
    assert m.service("/usr/bin/python3", "", "c") == "api"
    assert m.service("/usr/bin/x", "", "c") == "ex"
    assert m.service("/usr/bin/python3", "/batch/job-1", "c") == "batch-jobs"
    assert m.service("/usr/bin/ls", "", "c") == "ls"
    assert m.service("", "", "comm") == "comm"
    assert Matcher([], [], {}).matches("", "", "")      # no filter: everything


def test_book_identifies_on_first_sight_and_handles_reuse(tmp_path: Path) -> None:
    maps = "00400000-00401000 r-xp 00000000 fd:01 1234 /usr/bin/app\n"
    fake_proc(tmp_path, 42, exe="/usr/bin/app", start=100,
              cgroup=f"0::/system.slice/docker-{CID}.scope\n", maps=maps)
    table = agent_table(str(tmp_path))
    book = ProcessBook(table, Matcher([], [], {}), proc=str(tmp_path))
    info, proc = book.lookup(42, "app", time_ns=1)
    assert proc is not None and proc.exe == "/usr/bin/app"
    assert (info.service, info.container_id, info.start_time) == ("app", CID, 100)
    book.note_sample(42, 7)

    # exits: the window holding its last sample is not shipped yet, so it is kept
    import shutil
    shutil.rmtree(tmp_path / "42")
    assert book.reap(6) == 0 and 42 in book.infos and book.infos[42].gone_at_ns
    again, _ = book.lookup(42, "app", time_ns=0)       # a late sample of the old process
    assert again is info
    # the PID comes back as another program; its samples are newer than the exit
    fake_proc(tmp_path, 42, exe="/usr/bin/other", start=999, cgroup="0::/\n", maps=maps)
    import time
    new, _ = book.lookup(42, "other", time_ns=time.monotonic_ns())
    assert new is not info and new.service == "other" and book.reused == 1
    # forgotten once gone and shipped
    shutil.rmtree(tmp_path / "42")
    assert book.reap(7) == 1 and 42 not in book.infos and 42 not in table.procs


def test_book_keeps_unreadable_processes_with_their_comm(tmp_path: Path) -> None:
    book = ProcessBook(agent_table(str(tmp_path)), Matcher([], [], {}),
                       proc=str(tmp_path))
    info, proc = book.lookup(77, "shortlived", time_ns=1)
    assert proc is None and not info.identified and info.service == "shortlived"
    assert book.unidentified == 1


def test_kernel_threads_share_one_group(tmp_path: Path) -> None:
    for pid in (2, 3):
        fake_proc(tmp_path, pid, exe="", start=1, cgroup="0::/\n", flags=0x00208040)
    book = ProcessBook(agent_table(str(tmp_path)), Matcher([], [], {}),
                       proc=str(tmp_path))
    a, _ = book.lookup(2, "kworker/0:1", 1)
    b, _ = book.lookup(3, "ksoftirqd/0", 1)
    assert a.kernel_thread and a.service == "kernel"
    assert group_key(a, "pid") == group_key(b, "pid") == GroupKey("kernel", 0, "")
    # an exiting process has no maps and no exe either, but it is no kernel thread
    fake_proc(tmp_path, 4, exe="", start=1, cgroup="0::/\n")
    c, _ = ProcessBook(agent_table(str(tmp_path)), Matcher([], [], {}),
                       proc=str(tmp_path)).lookup(4, "dying", 1)
    assert not c.kernel_thread and c.service == "dying" and not c.identified


def test_group_keys() -> None:
    from profiler.app.agent.procs import ProcInfo
    info = ProcInfo(9, service="api", container_id=CID)
    assert group_key(info, "pid") == GroupKey("api", 9, CID)
    assert group_key(info, "service") == GroupKey("api", 0, CID)
    assert group_key(info, "container") == GroupKey("", 0, CID)


def test_window_alignment() -> None:
    w = 10_000_000_000
    assert window_index(1_700_000_009_999_999_999, w) == 170_000_000
    assert window_index(1_700_000_010_000_000_000, w) == 170_000_001


def test_scanner_adds_matching_processes_once(tmp_path: Path) -> None:
    fake_proc(tmp_path, 10, exe="/usr/sbin/nginx", start=1, cgroup="0::/\n")
    fake_proc(tmp_path, 11, exe="/usr/bin/bash", start=1, cgroup="0::/job.slice\n")
    fake_proc(tmp_path, 12, exe="/usr/bin/bash", start=1, cgroup="0::/\n")
    added: list[int] = []
    sc = TargetScanner(Matcher(["nginx"], ["job.slice"], {}), added.append, str(tmp_path))
    assert sc.scan() == 2 and sorted(added) == [10, 11]
    assert sc.scan() == 0
    fake_proc(tmp_path, 12, exe="/usr/sbin/nginx", start=1, cgroup="0::/\n")   # exec'd
    assert sc.scan() == 1 and added[-1] == 12


def test_streamed_objects_read_like_files() -> None:
    path = os.path.realpath(sys.executable)
    streamed = open_object(path, path)
    whole = ObjectFile.open(path)
    assert streamed.loads == whole.loads
    vaddr = whole.loads[0][0]
    assert streamed.read_code(vaddr, 64) == whole.read_code(vaddr, 64)
    stream = streamed._stream
    assert isinstance(stream, FileStream) and streamed.streamed and not whole.streamed
    assert stream.seek(0, os.SEEK_END) == os.path.getsize(path)
    assert streamed.read_code(vaddr, 64) == whole.read_code(vaddr, 64)
    # held in memory: the image read whole, or only the unwind tables of a stream
    assert whole.nbytes() == os.path.getsize(path) > streamed.nbytes() > 4096


def test_file_truncated_under_an_open_object(tmp_path: Path) -> None:
    """A target may truncate a file it has mapped.  Reading an object opened before
    that must cost at most that object (short reads, damaged tables), never the
    agent: a memory mapping would die of SIGBUS here, so it runs in a child."""
    victim = tmp_path / "victim"
    victim.write_bytes((TARGETS / "v3sid-x86_64-O2" /
                        "prog").read_bytes())
    code = (
        "import os, sys\n"
        "from profiler.unwind.objfile import ObjectFile\n"
        "obj = ObjectFile.open_streamed(sys.argv[1], 'victim')\n"
        "os.truncate(sys.argv[1], 100)\n"
        "for pc in range(0x1000, 0x2000, 0x40):\n"
        "    obj.lookup_rule(pc); obj.read_code(pc, 16); obj.function_range(pc)\n"
        "obj.exports('main'); obj.slot_symbol(0x4000)\n"
        "print('survived', obj.sframe_error is not None or obj.sframe is None)\n")
    out = subprocess.run([sys.executable, "-c", code, str(victim)], capture_output=True,
                         text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, (out.returncode, out.stderr[-500:])
    assert out.stdout.startswith("survived"), out.stdout


def test_symbol_cache_is_bounded() -> None:
    path = os.path.realpath(sys.executable)
    r = Resolver(max_symbols=1)
    a, b = open_object(path, path), open_object(path, path)
    assert r.symbols(a) is r.symbols(a)
    r.symbols(b)
    assert len(r.symbol_cache) == 1 and a not in r.symbol_cache
    r.end_window()
    assert r.symbols(a) is not None and b not in r.symbol_cache   # loaded again


def test_profile_labels_keep_the_profile_valid() -> None:
    from profiler.emit.pprof import build_profile, check_valid
    from profiler.model import Location, MappingInfo, ProfileData, StackSample
    exe = MappingInfo(0x400000, 0x401000, 0, "/usr/bin/app", "", True)
    data = ProfileData([StackSample((Location(0x400010, exe, "main"),), 5, 5, "app", True, "",
                                    3, 30)], 10, 0, 100, ["c1"],
                       {"host": "h", "service": "app", "pid": "5", "empty": "", "thread": "x"})
    p = build_profile(data)
    check_valid(p)
    strings = p.string_table
    labels = {strings[lab.key]: strings[lab.str] if lab.str else lab.num
              for lab in p.sample[0].label}
    assert labels["host"] == "h" and labels["service"] == "app" and labels["pid"] == 5
    assert labels["thread"] == "app"     # a sample's own label wins
    assert "empty" not in labels and strings[p.comment[-1]] == "c1"


def test_exec_after_first_sight_is_noticed(tmp_path: Path) -> None:
    """A forked child sampled before its exec keeps its PID and start time: a new thread
    name makes the book check the executable, and read the maps again."""
    maps = "00400000-00401000 r-xp 00000000 fd:01 1234 /usr/bin/python3\n"
    fake_proc(tmp_path, 50, exe="/usr/bin/python3", start=5, cgroup="0::/\n", maps=maps)
    table = agent_table(str(tmp_path))
    book = ProcessBook(table, Matcher([], [], {}), proc=str(tmp_path))
    info, _ = book.lookup(50, "python3", 1)
    assert info.service == "python3"
    fake_proc(tmp_path, 50, exe="/opt/prog", start=5, cgroup="0::/\n",
              maps="00500000-00501000 r-xp 00000000 fd:01 99 /opt/prog\n")
    again, proc = book.lookup(50, "prog", 2)
    assert again is info and info.service == "prog" and book.execs == 1
    assert proc is not None and proc.mappings[0].path == "/opt/prog"
    book.lookup(50, "worker-thread", 3)          # a new thread, same program
    assert book.execs == 1


def test_scanner_forgets_exited_targets(tmp_path: Path) -> None:
    import shutil
    fake_proc(tmp_path, 20, exe="/usr/sbin/nginx", start=1, cgroup="0::/\n")
    added: list[int] = []
    removed: list[int] = []
    sc = TargetScanner(Matcher(["nginx"], [], {}), added.append, str(tmp_path),
                       remove=removed.append)
    sc.scan()
    shutil.rmtree(tmp_path / "20")
    sc.scan()
    assert added == [20] and removed == [20] and not sc.targets


def test_memory_pressure_drops_objects_and_symbols(tmp_path: Path) -> None:
    path = os.path.realpath(sys.executable)
    table = agent_table(str(tmp_path))
    obj = open_object(path, path)
    table.object_cache["k"] = obj
    assert table.object_cache.bytes > 0
    table.drop_objects()
    assert len(table.object_cache) == 0 and table.object_cache.bytes == 0
    r = Resolver(max_symbols=128, max_symbol_bytes=96 << 20)
    syms = r.symbols(obj)
    assert syms is not None and r.symbol_cache.bytes == syms.nbytes() > 0
    r.drop_caches()
    assert len(r.symbol_cache) == 0 and r.symbol_cache.bytes == 0


def test_evicted_objects_are_let_go_by_processes(tmp_path: Path) -> None:
    path = os.path.realpath(sys.executable)
    table = agent_table(str(tmp_path), max_objects=1)
    a, b = open_object(path, path), open_object(path, path)
    m = Mapping(0x1000, 0x2000, 0, "r-xp", path)
    space = AddressSpace((m,), (), table.objects, opener=lambda _m: a)
    assert space.object_for(m)[0] is a and space.opened() == [a]
    table.procs[9] = Process(9, space=space)
    table.object_cache["a"] = a                   # type: ignore[index]
    table.object_cache["b"] = b                   # type: ignore[index]  (evicts a)
    assert "a" not in table.object_cache and space.opened() == []


def test_default_table_keeps_every_object_whole(tmp_path: Path) -> None:
    """The one-shot CLI's table: no LRU, no streams, no backoff."""
    table = ProcessTable(proc=str(tmp_path))
    assert type(table.object_cache) is dict and not table.streaming
    path = os.path.realpath(sys.executable)
    assert not table.open_file(path, path).streamed
    assert agent_table().open_file(path, path).streamed


def test_trim_bounds_the_memos(tmp_path: Path) -> None:
    path = os.path.realpath(sys.executable)
    table = agent_table(str(tmp_path))
    obj = open_object(path, path)
    m = Mapping(0x1000, 0x2000, 0, "r-xp", path)
    space = AddressSpace((m,), (), table.objects, opener=lambda _m: obj)
    space.object_for(m)
    table.procs[9] = Process(9, space=space)
    lo = obj.loads[0][0]
    for pc in range(lo, lo + 64):
        obj.lookup_rule(pc)
        space.ra_ok[pc] = True
    table.trim(max_memo=100)                      # under the limit: kept
    assert len(obj._rule_memo) == 64 and len(space.ra_ok) == 64
    table.trim(max_memo=10)
    assert not obj._rule_memo and not space.ra_ok
    table.forget(9)
    assert 9 not in table.procs


def test_symbol_tables_over_the_budget_are_not_built() -> None:
    path = os.path.realpath(sys.executable)
    obj = open_object(path, path)
    r = Resolver(max_symbols=128, max_symbol_bytes=1000)
    assert r.symbols(obj) is None and obj.name in r.too_big
    assert Resolver(max_symbols=128, max_symbol_bytes=96 << 20).symbols(obj) is not None
    assert Resolver().symbols(obj) is not None     # no budget: every table is built


def test_snapshot_models_a_process_that_has_exited(tmp_path: Path) -> None:
    """The reader thread's snapshot keeps what the process was: maps, executable,
    cgroup, and its files through open descriptors, after the process is gone."""
    import subprocess
    prog = os.path.realpath(sys.executable)
    child = subprocess.Popen([prog, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    table = agent_table()
    try:
        import time
        deadline = time.monotonic() + 10
        while "python" not in open(f"/proc/{child.pid}/maps").read():   # exec'd
            assert time.monotonic() < deadline
            time.sleep(0.01)
        snap = table.snapshot(child.pid, ("cgroup",))
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()
    assert snap.maps and snap.exe == prog and snap.fds and "cgroup" in snap.extra
    book = ProcessBook(table, Matcher([], [], {}))
    book.snapshot_source = {child.pid: snap}.pop
    info, proc = book.lookup(child.pid, "python3", time_ns=1)
    assert info.identified and info.exe == prog and info.start_time > 0
    assert info.service == os.path.basename(prog) and book.from_snapshot == 1
    assert proc is not None and proc.space is not None and not proc.fds and not snap.fds
    main = next(m for m in proc.mappings if m.executable and m.path == prog)
    obj, _bias = proc.space.object_for(main)
    assert obj is not None and obj.loads == ObjectFile.open(prog).loads


def test_reader_hands_out_records_in_order_with_snapshots(tmp_path: Path) -> None:
    from dataclasses import dataclass

    from profiler.app.agent.reader import Reader

    @dataclass
    class Rec:
        pid: int
        comm: str = "python3"

    fake_proc(tmp_path, 42, exe="/usr/bin/python3", start=5, cgroup="0::/\n",
              maps="00400000-00401000 r-xp 00000000 fd:01 1 /usr/bin/python3\n")

    class FakeSampler:
        def __init__(self) -> None:
            self.batches = [[Rec(42), Rec(42)], [Rec(1)], [Rec(42, "worker")],
                            [Rec(42, "prog")]]

        def poll(self, timeout_ms: int) -> list[Rec]:
            if self.batches:
                batch = self.batches.pop(0)
                if batch[0].comm == "prog":          # an exec, before its sample
                    fake_proc(tmp_path, 42, exe="/usr/bin/prog", start=5, cgroup="0::/\n")
                return batch
            import time
            time.sleep(timeout_ms / 1000)
            return []

    reader = Reader(FakeSampler(), agent_table(str(tmp_path)), poll_ms=10).start()
    try:
        got: list[Rec] = []
        import time
        deadline = time.monotonic() + 10
        while len(got) < 5 and time.monotonic() < deadline:
            got += reader.get(0.1)
        assert [r.pid for r in got] == [42, 42, 1, 42, 42]
        # one per new PID, none for a new thread, one for the exec
        assert reader.snapshots == 3
        first, second = reader.snapshot(42), reader.snapshot(42)
        assert first is not None and second is not None and first.taken <= second.taken
        assert (first.exe, second.exe) == ("/usr/bin/python3", "/usr/bin/prog")
        assert first.maps and reader.snapshot(42) is None
        first.close()
        second.close()
        reader.forget(1)
        assert reader.snapshot(1) is None and reader._bytes == 0
    finally:
        reader.stop()


def test_agent_sampler_wakes_its_reader_at_every_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent builds the sampler with wakeup_every=1 (a new process must be read
    within milliseconds of its first sample), and BpfSampler turns that into the
    WAKEUP_EVERY=1 compiler flag of the BPF program."""
    import types

    from profiler.app.agent.agent import Agent
    from profiler.app.agent.config import AgentConfig
    from profiler.capture import bcc_source

    seen: list[list[str]] = []

    class FakeBPF:
        def __init__(self, *, src_file: bytes, cflags: list[str]) -> None:
            seen.append(cflags)
            raise RuntimeError("stop here")

    fake = types.SimpleNamespace(BPF=FakeBPF, PerfType=object())
    monkeypatch.setattr(bcc_source, "import_bcc", lambda: fake)
    monkeypatch.setattr(bcc_source, "_has_ringbuf", lambda bcc: True)
    with pytest.raises(Exception):
        Agent(AgentConfig())._make_sampler()
    assert seen and "-DWAKEUP_EVERY=1" in seen[0], seen
