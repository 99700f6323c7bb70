"""pprof output: rules of docs/peers section 10, checked three ways.

* ``check_valid`` (our port of pprof's CheckValid plus Parca's and Pyroscope's rules) on
  every profile built here, and on broken copies that it must reject;
* ``go tool pprof`` (Debian's golang-go, installed by scripts/setup.sh) reading the file
  with ``-raw``, ``-traces`` and ``-top``, and symbolizing a real binary from its mapping;
* the project's own reader, profiler.emit.pprof_read.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from profiler import proto
from profiler.emit.pprof import (
    InvalidProfileError,
    build_profile,
    check_valid,
    find_problems,
    write_pprof,
)
from profiler.emit.pprof_read import read_pprof
from profiler.model import Location, MappingInfo, ProfileData, StackSample
from profiler.proto import profile_pb2

PERIOD = 10_000_000  # 100 Hz
START = 1_752_000_000_123_456_789
DURATION = 5_000_000_000

KERNEL = MappingInfo(0xFFFFFFFF81000000, 0xFFFFFFFF83000000, 0, "[kernel.kallsyms]",
                     "", True)
APP = MappingInfo(0x55D0C2A01000, 0x55D0C2A05000, 0x1000, "/usr/bin/app",
                  "3f0b6c4e2a9d41c7b1e8a5d09c2f7e6b4a1d3c58", True)
LIBC = MappingInfo(0x7F3A1C628000, 0x7F3A1C7BD000, 0x28000,
                   "/usr/lib/x86_64-linux-gnu/libc.so.6",
                   "c289da5071a3399de893d2af81d6a30c62646e1e", True)
BLOB = MappingInfo(0x7F3A1C900000, 0x7F3A1C940000, 0x4000, "/opt/vendor/lib/libblob.so",
                   "5e1d0a7c93b24f68", False)
VDSO = MappingInfo(0x7FFD5B3F2000, 0x7FFD5B3F4000, 0, "[vdso]", "", True)
DB = MappingInfo(0x5611AA000000, 0x5611AA200000, 0, "/usr/sbin/dbd",
                 "a0b1c2d3e4f5061728394a5b6c7d8e9f00112233", True)
TRUNCATED = Location(0, None, "[unreliable: stack-truncated]", synthetic=True)
NO_INFO = Location(0, None, "[unreliable: no-unwind-info]", synthetic=True)


def k(addr: int, name: str) -> Location:
    return Location(addr, KERNEL, name, is_kernel=True)


def u(mapping: MappingInfo, addr: int, name: str = "") -> Location:
    return Location(addr, mapping, name)


# Leaf first, kernel frames before user frames, as the aggregate stage hands them over.
S_WRITE = (k(0xFFFFFFFF8142A1B0, "ksys_write"), k(0xFFFFFFFF81C0F2E4, "do_syscall_64"),
           k(0xFFFFFFFF82000130, "entry_SYSCALL_64_after_hwframe"),
           u(LIBC, 0x7F3A1C714887, "__GI___libc_write"), u(APP, 0x55D0C2A02A31, "flush_log"),
           u(APP, 0x55D0C2A0215C, "main"), u(LIBC, 0x7F3A1C629D90, "__libc_start_call_main"),
           u(APP, 0x55D0C2A01A25, "_start"))
S_COMPUTE = (u(APP, 0x55D0C2A03300, "crunch"), u(APP, 0x55D0C2A0391F, "worker_main"),
             u(LIBC, 0x7F3A1C694AC3, "start_thread"), u(LIBC, 0x7F3A1C726850, "clone3"))
S_BLOB = (u(BLOB, 0x7F3A1C912340), u(BLOB, 0x7F3A1C9055A8), u(APP, 0x55D0C2A0391F, "worker_main"),
          TRUNCATED)
S_DB = (u(VDSO, 0x7FFD5B3F2A4D, "__vdso_clock_gettime"),
        u(LIBC, 0x7F3A1C6E56BD, "clock_gettime"), u(DB, 0x5611AA012F00, "poll_loop"),
        u(DB, 0x5611AA0102A0, "main"), u(DB, 0x5611AA001050, "_start"))
S_DB_KERNEL = (k(0xFFFFFFFF81123450, "schedule"), k(0xFFFFFFFF81C0F2E4, "do_syscall_64"),
               u(DB, 0x5611AA013AB0, "io_wait"), NO_INFO)


def sample(locs: tuple[Location, ...], pid: int, tid: int, thread: str, count: int,
           reason: str = "", process: str = "") -> StackSample:
    return StackSample(locs, pid, tid, thread, not reason, reason, count, count * PERIOD,
                       process)


SAMPLES = [
    sample(S_WRITE, 4100, 4100, "app", 5, process="app"),
    sample(S_COMPUTE, 4100, 4103, "app-worker", 6, process="app"),
    sample(S_BLOB, 4100, 4103, "app-worker", 2, "stack-truncated", process="app"),
    sample(S_COMPUTE, 4100, 4104, "app-worker", 3, process="app"),
    sample(S_DB, 733, 740, "db-poll", 4, process="dbd"),
    sample(S_DB_KERNEL, 733, 733, "dbd", 1, "no-unwind-info"),
]


def make_data() -> ProfileData:
    return ProfileData(list(SAMPLES), PERIOD, START, DURATION,
                       ["sframe-prof test profile", "hz=100"])


def names_root_first(locs: tuple[Location, ...]) -> tuple[str, ...]:
    """What a reader should show for each frame, root first."""
    out = []
    for loc in reversed(locs):
        if loc.function:
            out.append(loc.function)
        else:
            assert loc.mapping is not None
            base = loc.mapping.path.rsplit("/", 1)[-1]
            out.append(f"{base}+{loc.address - loc.mapping.start + loc.mapping.offset:#x}")
    return tuple(out)


# -- the generated module ------------------------------------------------------------


def test_generated_module_matches_proto_source(repo_root: Path) -> None:
    text = (repo_root / "proto/profile.proto").read_text()
    source = proto.source_schema(text)
    assert proto.schema_differences(source, proto.descriptor_schema(profile_pb2)) == []
    # The fields pprof's wire format fixes, spelled out once more.
    loc = source["perftools.profiles.Location"]
    assert {n: f.number for n, f in loc.items()} == {
        "id": 1, "mapping_id": 2, "address": 3, "line": 4, "is_folded": 5}
    assert source["perftools.profiles.Profile"]["string_table"] == proto.FieldSchema(
        6, "repeated", "string", "")
    assert len(source) == 8


@pytest.mark.parametrize("edit", [
    ("uint64 address = 3;", "uint64 address = 6;"),            # renumbered
    ("int64 num = 3;", "uint64 num = 3;"),                      # retyped
    ("repeated Line line = 4;", "Line line = 4;"),              # label
    ("  int64 column = 3;\n", "  int64 column = 3;\n  int64 extra = 4;\n"),   # added
    ("message Line {", "message Line2 {"),                      # renamed message
])
def test_schema_comparison_catches_a_stale_module(repo_root: Path,
                                                  edit: tuple[str, str]) -> None:
    text = (repo_root / "proto/profile.proto").read_text()
    assert edit[0] in text
    changed = proto.source_schema(text.replace(edit[0], edit[1], 1))
    assert proto.schema_differences(changed, proto.descriptor_schema(profile_pb2))


# -- structure of the message ----------------------------------------------------------


def test_profile_header_and_tables() -> None:
    p = build_profile(make_data())
    st = p.string_table
    assert st[0] == ""
    assert len(set(st)) == len(st)
    assert [(st[t.type], st[t.unit]) for t in p.sample_type] == [
        ("samples", "count"), ("cpu", "nanoseconds")]
    assert (st[p.period_type.type], st[p.period_type.unit]) == ("cpu", "nanoseconds")
    assert (p.period, p.time_nanos, p.duration_nanos) == (PERIOD, START, DURATION)
    assert [st[c] for c in p.comment] == ["sframe-prof test profile", "hz=100"]
    assert p.default_sample_type == 0  # pprof then shows the last type, cpu
    for table in (p.mapping, p.location, p.function):
        assert [x.id for x in table] == list(range(1, len(table) + 1))

    maps = [(st[m.filename], m.memory_start, m.memory_limit, m.file_offset, st[m.build_id],
             m.has_functions) for m in p.mapping]
    # The app holds the outermost frame of most samples: mapping 1 (pprof's main binary).
    # Then user objects in order of first use, the kernel last.
    assert maps == [
        ("/usr/bin/app", APP.start, APP.limit, 0x1000, APP.build_id, True),
        (LIBC.path, LIBC.start, LIBC.limit, 0x28000, LIBC.build_id, True),
        (BLOB.path, BLOB.start, BLOB.limit, 0x4000, BLOB.build_id, False),
        ("[vdso]", VDSO.start, VDSO.limit, 0, "", True),
        (DB.path, DB.start, DB.limit, 0, DB.build_id, True),
        ("[kernel.kallsyms]", KERNEL.start, KERNEL.limit, 0, "", True),
    ]
    assert not any(m.has_filenames or m.has_line_numbers or m.has_inline_frames
                   for m in p.mapping)
    check_valid(p)


def test_locations_functions_and_interning() -> None:
    p = build_profile(make_data())
    st = p.string_table
    distinct = {(loc.mapping, loc.address, loc.is_kernel, loc.function)
                for s in SAMPLES for loc in s.locations}
    assert len(p.location) == len(distinct)
    assert len(p.function) == len({loc.function for s in SAMPLES for loc in s.locations
                                   if loc.function})
    by_name = {}
    for loc in p.location:
        if loc.line:
            assert len(loc.line) == 1
            by_name[st[p.function[loc.line[0].function_id - 1].name]] = loc
        else:
            by_name[f"{loc.address:#x}"] = loc
    # Synthetic frames: address 0, no mapping, one line naming them.
    for marker in (TRUNCATED, NO_INFO):
        loc = by_name[marker.function]
        assert (loc.address, loc.mapping_id) == (0, 0)
    # Frames without a symbol: no line, address kept inside their mapping.
    for addr in (0x7F3A1C912340, 0x7F3A1C9055A8):
        loc = by_name[f"{addr:#x}"]
        assert st[p.mapping[loc.mapping_id - 1].filename] == BLOB.path
        assert loc.address == addr
    # Kernel frames live in the [kernel.kallsyms] mapping under their symbol.
    assert st[p.mapping[by_name["do_syscall_64"].mapping_id - 1].filename] == (
        "[kernel.kallsyms]")
    # worker_main is one location although two stacks use it.
    users = [s for s in p.sample if by_name["worker_main"].id in s.location_id]
    assert len(users) == 3
    # A function's system name is its name; no file is claimed.
    for f in p.function:
        assert f.system_name == f.name and f.filename == 0


def test_samples_values_and_labels() -> None:
    p = build_profile(make_data())
    st = p.string_table
    assert len(p.sample) == len(SAMPLES)
    for got, want in zip(p.sample, SAMPLES, strict=True):
        assert list(got.value) == [want.count, want.count * PERIOD]
        labels = {st[lb.key]: (st[lb.str] if lb.str else lb.num) for lb in got.label}
        expect: dict[str, str | int] = {"pid": want.pid, "tid": want.tid,
                                        "thread": want.thread_name,
                                        "unwind": "reliable" if want.reliable
                                        else "unreliable"}
        if want.process_name:
            expect["process"] = want.process_name
        if not want.reliable:
            expect["unwind_reason"] = want.reason
            expect["unwind_doubt_frame"] = sum(1 for loc in want.locations
                                               if not loc.is_kernel and not loc.synthetic)
        assert labels == expect
        assert len(got.label) == len(expect)
        # Leaf first: the first location is the sampled pc (kernel first if any).
        first = p.location[got.location_id[0] - 1]
        if want.locations[0].is_kernel:
            assert st[p.mapping[first.mapping_id - 1].filename] == "[kernel.kallsyms]"
        assert len(got.location_id) == len(want.locations)


def test_file_is_gzip_and_deterministic(tmp_path: Path) -> None:
    write_pprof(make_data(), tmp_path / "a.pb.gz")
    buf = io.BytesIO()
    write_pprof(make_data(), buf)
    raw = (tmp_path / "a.pb.gz").read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert raw == buf.getvalue()
    p = profile_pb2.Profile()
    p.ParseFromString(gzip.decompress(raw))
    assert p == build_profile(make_data())


def test_kernel_frames_without_a_mapping_get_one() -> None:
    locs = (Location(0xFFFFFFFF81200010, None, "native_safe_halt", is_kernel=True),
            Location(0xFFFFFFFF810A0000, None, "", is_kernel=True),
            Location(0xFFFFFFFF81000500, None, "do_idle", is_kernel=True))
    p = build_profile(ProfileData([sample(locs, 0, 0, "swapper/0", 9)], PERIOD, START, 1))
    (m,) = p.mapping
    assert p.string_table[m.filename] == "[kernel.kallsyms]"
    assert (m.memory_start, m.memory_limit) == (0xFFFFFFFF81000500, 0xFFFFFFFF81200011)
    assert not m.has_functions  # one of its frames has no name
    assert all(loc.mapping_id == 1 for loc in p.location)


def test_unmapped_address_is_kept_as_a_bare_address(tmp_path: Path) -> None:
    locs = (Location(0x7F0000001234, None, ""), u(APP, 0x55D0C2A0215C, "main"))
    data = ProfileData([sample(locs, 9, 9, "jit", 1, "pc-not-mapped")], PERIOD, START, 1)
    p = build_profile(data)
    assert (p.location[0].mapping_id, p.location[0].address, len(p.location[0].line)) == (
        0, 0x7F0000001234, 0)
    write_pprof(data, tmp_path / "j.pb.gz")
    assert read_pprof(tmp_path / "j.pb.gz").samples[0].names_leaf_first == (
        "0x7f0000001234", "main")
    raw = go_pprof("-raw", tmp_path / "j.pb.gz")
    assert re.search(r"^\s+1: 0x7f0000001234\s*$", raw, re.M), raw


def test_empty_profile(tmp_path: Path) -> None:
    data = ProfileData([], PERIOD, START, DURATION)
    p = build_profile(data)
    assert (len(p.sample), len(p.location), len(p.mapping)) == (0, 0, 0)
    write_pprof(data, tmp_path / "e.pb.gz")
    assert read_pprof(tmp_path / "e.pb.gz").samples == []
    go_pprof("-top", tmp_path / "e.pb.gz")


# -- check_valid rejects broken profiles -----------------------------------------------


def _break(p: profile_pb2.Profile, how: str) -> None:
    if how == "address outside mapping":
        p.location[0].address = p.mapping[p.location[0].mapping_id - 1].memory_limit
    elif how == "sparse ids":
        p.location[-1].id += 1
    elif how == "string 0 not empty":
        p.string_table[0] = "x"
    elif how == "value count":
        p.sample[0].value.append(1)
    elif how == "missing location":
        p.sample[0].location_id.append(len(p.location) + 1)
    elif how == "zero location id":
        p.sample[0].location_id.insert(0, 0)
    elif how == "missing mapping":
        p.location[0].mapping_id = len(p.mapping) + 1
    elif how == "missing function":
        p.location[0].line[0].function_id = len(p.function) + 1
    elif how == "string index":
        p.function[0].name = len(p.string_table)
    elif how == "label str and num":
        p.sample[0].label[0].str = 1
    elif how == "label repeated":
        p.sample[0].label.append(p.sample[0].label[0])
    elif how == "has_functions lie":
        p.mapping[2].has_functions = True  # libblob: frames without names
    elif how == "no sample types":
        del p.sample_type[:]
    elif how == "empty mapping":
        p.mapping[0].memory_limit = p.mapping[0].memory_start
    elif how == "duplicate string":
        p.string_table.append(p.string_table[1])
    elif how == "default type unknown":
        p.default_sample_type = p.string_table[:].index("thread")
    else:
        raise AssertionError(how)


BREAKAGES = ["address outside mapping", "sparse ids", "string 0 not empty", "value count",
             "missing location", "zero location id", "missing mapping", "missing function",
             "string index", "label str and num", "label repeated", "has_functions lie",
             "no sample types", "empty mapping", "duplicate string", "default type unknown"]


@pytest.mark.parametrize("how", BREAKAGES)
def test_check_valid_rejects(how: str) -> None:
    p = build_profile(make_data())
    assert find_problems(p) == []
    _break(p, how)
    with pytest.raises(InvalidProfileError) as err:
        check_valid(p)
    assert err.value.problems
    assert "\n" not in str(err.value)


def test_builder_refuses_a_location_outside_its_mapping(tmp_path: Path) -> None:
    bad = (u(APP, APP.limit + 0x10, "after_the_end"),)
    with pytest.raises(InvalidProfileError, match="outside mapping 1"):
        write_pprof(ProfileData([sample(bad, 1, 1, "x", 1)], PERIOD, START, 1),
                    tmp_path / "bad.pb.gz")
    assert not (tmp_path / "bad.pb.gz").exists()  # checked before the file is opened


# -- the project's reader ------------------------------------------------------------


def test_read_back_with_own_reader(tmp_path: Path) -> None:
    write_pprof(make_data(), tmp_path / "p.pb.gz")
    prof = read_pprof(tmp_path / "p.pb.gz")
    assert prof.sample_types == [("samples", "count"), ("cpu", "nanoseconds")]
    assert prof.period_type == ("cpu", "nanoseconds")
    assert (prof.period, prof.time_nanos, prof.duration_nanos) == (PERIOD, START, DURATION)
    assert prof.comments == ["sframe-prof test profile", "hz=100"]
    assert prof.total() == sum(s.count for s in SAMPLES)
    assert prof.total("cpu") == sum(s.count for s in SAMPLES) * PERIOD

    for got, want in zip(prof.samples, SAMPLES, strict=True):
        assert got.names_root_first == names_root_first(want.locations)
        assert got.values == (want.count, want.cpu_ns)
        assert got.labels["tid"] == want.tid
        assert [f.is_kernel for f in got.frames] == [loc.is_kernel for loc in want.locations]
        assert [f.synthetic for f in got.frames] == [loc.synthetic for loc in want.locations]

    blob = prof.samples[2]
    assert blob.names_leaf_first == ("libblob.so+0x16340", "libblob.so+0x95a8", "worker_main",
                                     "[unreliable: stack-truncated]")
    assert blob.labels == {"pid": 4100, "tid": 4103, "thread": "app-worker",
                           "process": "app", "unwind": "unreliable",
                           "unwind_reason": "stack-truncated", "unwind_doubt_frame": 3}
    # The two compute samples of different threads are one stack.
    compute = ("clone3", "start_thread", "worker_main", "crunch")
    assert prof.stacks()[compute] == 9
    assert prof.stacks(where={"tid": 4104})[compute] == 3
    assert prof.stacks("cpu", where={"unwind": "unreliable"}) == {
        names_root_first(S_BLOB): 2 * PERIOD, names_root_first(S_DB_KERNEL): PERIOD}


# -- go tool pprof ---------------------------------------------------------------------


def go_pprof(*args: str | Path, env: dict[str, str] | None = None,
             allow_stderr: bool = False) -> str:
    """Run ``go tool pprof ARGS``; fail on a nonzero exit or (by default) any stderr."""
    go = shutil.which("go")
    assert go, "go is missing: scripts/setup.sh installs golang-go for `go tool pprof`"
    home = Path(os.environ.get("PYTEST_GO_HOME", "/tmp/sframe-prof-go-home"))
    home.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "HOME": str(home), "GOCACHE": str(home / "cache"),
                "PPROF_TMPDIR": str(home / "tmp"), "GOTOOLCHAIN": "local",
                "GOFLAGS": "", **(env or {})}
    run = subprocess.run([go, "tool", "pprof", *map(str, args)], capture_output=True,
                         text=True, env=full_env, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    if not allow_stderr:
        assert run.stderr == "", run.stderr
    return run.stdout


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pprof") / "cpu.pb.gz"
    write_pprof(make_data(), path)
    return path


def parse_raw(text: str) -> tuple[list[tuple[list[int], list[int], dict[str, str]]],
                                  dict[int, tuple[int, int | None, str]], list[str]]:
    """go tool pprof -raw: samples (values, location ids, labels), locations
    (id -> address, mapping, function), mapping lines."""
    samples: list[tuple[list[int], list[int], dict[str, str]]] = []
    locations: dict[int, tuple[int, int | None, str]] = {}
    mappings: list[str] = []
    section = ""
    for line in text.splitlines():
        if line in ("Samples:", "Locations", "Mappings"):
            section = line
            continue
        if section == "Samples:":
            m = re.match(r"^\s+([\d ]+): ([\d ]+)\s*$", line)
            if m:
                samples.append(([int(v) for v in m.group(1).split()],
                                [int(v) for v in m.group(2).split()], {}))
            elif samples and re.match(r"^\s+\S+:\[", line):
                samples[-1][2].update(re.findall(r"(\S+):\[([^\]]*)\]", line))
        elif section == "Locations":
            m = re.match(r"^\s+(\d+): 0x([0-9a-f]+)(?: M=(\d+))?\s?(.*)$", line)
            if m:
                func = re.sub(r" \S*:-?\d+ s=\d+$", "", m.group(4)).strip()
                locations[int(m.group(1))] = (int(m.group(2), 16),
                                              int(m.group(3)) if m.group(3) else None, func)
        elif section == "Mappings" and line.strip():
            mappings.append(line.strip())
    return samples, locations, mappings


def test_go_pprof_raw(profile_path: Path) -> None:
    out = go_pprof("-raw", "-symbolize=none", profile_path)
    assert "PeriodType: cpu nanoseconds" in out
    assert f"Period: {PERIOD}" in out
    assert "Duration: 5s" in out
    assert "Comment: sframe-prof test profile" in out
    assert re.search(r"^samples/count cpu/nanoseconds\s*$", out, re.M)
    samples, locations, mappings = parse_raw(out)
    assert len(samples) == len(SAMPLES)
    for (values, ids, labels), want in zip(samples, SAMPLES, strict=True):
        assert values == [want.count, want.cpu_ns]
        names = []
        for lid in ids:
            addr, mapping, func = locations[lid]
            names.append(func or f"{addr:#x}")
        expect = [loc.function or f"{loc.address:#x}" for loc in want.locations]
        assert names == expect
        assert labels["pid"] == str(want.pid) and labels["tid"] == str(want.tid)
        assert labels["thread"] == want.thread_name
        assert labels["unwind"] == ("reliable" if want.reliable else "unreliable")
        assert labels.get("unwind_reason", "") == want.reason
    # Synthetic frames have no mapping; unnamed ones keep theirs.
    synthetic = [loc for loc in locations.values() if loc[2].startswith("[unreliable")]
    assert sorted(synthetic) == [(0, None, "[unreliable: no-unwind-info]"),
                                 (0, None, "[unreliable: stack-truncated]")]
    # pprof renumbers mappings (main binary first, then by first use): match by id.
    by_id = {int(line.split(":", 1)[0]): line for line in mappings}
    assert len(by_id) == 6
    assert by_id[1] == (f"1: {APP.start:#x}/{APP.limit:#x}/0x1000 /usr/bin/app "
                        f"{APP.build_id} [FN]")
    blob_id, func = locations_of(locations, 0x7F3A1C912340)
    assert func == "" and blob_id is not None
    assert by_id[blob_id] == (f"{blob_id}: {BLOB.start:#x}/{BLOB.limit:#x}/0x4000 "
                              f"{BLOB.path} {BLOB.build_id}")
    kernel_id, func = locations_of(locations, 0xFFFFFFFF81C0F2E4)
    assert func == "do_syscall_64"
    assert by_id[kernel_id] == f"{kernel_id}: {KERNEL.start:#x}/{KERNEL.limit:#x}/0x0 " \
                               "[kernel.kallsyms]  [FN]"


def locations_of(locations: dict[int, tuple[int, int | None, str]],
                 addr: int) -> tuple[int | None, str]:
    (hit,) = [(m, f) for a, m, f in locations.values() if a == addr]
    return hit


def parse_traces(text: str) -> list[tuple[dict[str, str], int, list[str]]]:
    """go tool pprof -traces: (labels, value, frames leaf first) per sample."""
    out: list[tuple[dict[str, str], int, list[str]]] = []
    blocks = re.split(r"^-+\+-+$", text, flags=re.M)[1:]
    for block in blocks:
        labels: dict[str, str] = {}
        frames: list[str] = []
        value = 0
        for line in block.splitlines():
            if not line.strip():
                continue
            m = re.match(r"^\s*(\w+):  (.*)$", line)
            if m and not frames:
                labels[m.group(1)] = m.group(2).strip()
                continue
            m = re.match(r"^\s*(\d+)   (.*)$", line)
            if m and not frames:
                value = int(m.group(1))
                frames.append(m.group(2))
            else:
                frames.append(line.strip())
        if frames:
            out.append((labels, value, frames))
    return out


def test_go_pprof_traces(profile_path: Path) -> None:
    out = go_pprof("-traces", "-symbolize=none", "-sample_index=samples", profile_path)
    traces = parse_traces(out)
    assert len(traces) == len(SAMPLES)
    for (labels, value, frames), want in zip(traces, SAMPLES, strict=True):
        assert value == want.count
        # pprof names an address-only frame after its object.
        expect = [loc.function or f"[{loc.mapping.path.rsplit('/', 1)[-1]}]"
                  for loc in want.locations if loc.function or loc.mapping]
        assert frames == expect
        assert labels["thread"] == want.thread_name
        assert labels["pid"] == str(want.pid)
        assert labels["unwind"] == ("reliable" if want.reliable else "unreliable")
        if want.reliable:
            assert "unwind_reason" not in labels
        else:
            assert labels["unwind_reason"] == want.reason
    assert traces[2][2] == ["[libblob.so]", "[libblob.so]", "worker_main",
                            "[unreliable: stack-truncated]"]
    assert traces[0][2][:3] == ["ksys_write", "do_syscall_64",
                                "entry_SYSCALL_64_after_hwframe"]


def test_go_pprof_top_without_warnings(profile_path: Path) -> None:
    out = go_pprof("-top", "-symbolize=none", "-sample_index=samples", profile_path)
    assert "File: app" in out
    assert "Type: samples" in out
    assert "Total samples = 21" in out
    flat = {m.group(2): int(m.group(1)) for m in re.finditer(
        r"^\s+(\d+)\s+[\d.]+%\s+[\d.]+%\s+\d+\s+[\d.]+%\s+(.+)$", out, re.M)}
    assert flat["crunch"] == 9
    assert flat["ksys_write"] == 5
    assert flat["__vdso_clock_gettime"] == 4
    assert flat["schedule"] == 1
    out = go_pprof("-top", "-symbolize=none", profile_path)
    assert "Type: cpu" in out and "Total samples = 210ms" in out
    # Label filters work on our labels.
    out = go_pprof("-top", "-symbolize=none", "-sample_index=samples",
                   "-tagfocus=unwind=unreliable", profile_path)
    assert re.search(r"accounting for 3, ", out), out


def _build_id(path: Path) -> str:
    with path.open("rb") as f:
        for sec in ELFFile(f).iter_sections():
            if sec.header.sh_type == "SHT_NOTE":
                for note in sec.iter_notes():
                    if note.n_type == "NT_GNU_BUILD_ID":
                        return str(note.n_desc)
    raise AssertionError(f"{path}: no build ID")


def _symbols(path: Path) -> dict[str, int]:
    with path.open("rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        assert symtab is not None
        return {s.name: s["st_value"] for s in symtab.iter_symbols()
                if s["st_info"]["type"] == "STT_FUNC" and s["st_value"]}


def test_go_pprof_symbolizes_unnamed_frames_from_build_id_and_offset(
        repo_root: Path, tmp_path: Path) -> None:
    """A mapping without function names: pprof finds the file, trusts our build ID and
    file offset, and names the frames itself -- only right if the address, start and
    offset are consistent with the ELF's program headers."""
    binary = repo_root / "tests/targets/v1host-x86_64-O2/prog"
    with binary.open("rb") as f:
        (text,) = [s for s in ELFFile(f).iter_segments()
                   if s["p_type"] == "PT_LOAD" and s["p_flags"] & 1]
        vaddr, offset, size = text["p_vaddr"], text["p_offset"], text["p_memsz"]
    bias = 0x5631F0A00000  # where the PIE was loaded
    start = bias + vaddr - (vaddr % 0x1000)
    mapping = MappingInfo(start, bias + vaddr + size + 0x1000 - (vaddr + size) % 0x1000,
                          offset - (vaddr % 0x1000), str(binary), _build_id(binary), False)
    syms = _symbols(binary)
    # (Not main: Go 1.19's own pprof cannot name code placed in .text.startup.)
    chain = ("deep", "big_frame", "by_value")
    locs = tuple(Location(bias + syms[name] + 4, mapping, "") for name in chain)
    path = tmp_path / "sym.pb.gz"
    write_pprof(ProfileData([sample(locs, 5, 5, "prog", 7)], PERIOD, START, 1), path)
    # Without symbolization: addresses only.
    assert read_pprof(path).samples[0].names_leaf_first == tuple(
        f"prog+{syms[n] + 4 - vaddr + offset:#x}" for n in chain)
    out = go_pprof("-traces", "-sample_index=samples", path,
                   env={"PPROF_BINARY_PATH": str(tmp_path)})
    ((_, value, frames),) = parse_traces(out)
    assert (value, frames) == (7, list(chain))
