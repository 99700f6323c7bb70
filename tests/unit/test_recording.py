"""Raw capture files: round trip, files cut short anywhere, and files that are no capture."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from profiler import proto
from profiler.capture.fileformat import MAGIC, CaptureError, CaptureHeader, FileIdentity
from profiler.capture.reader import read_capture
from profiler.capture.writer import CaptureWriter
from profiler.model import Mapping, RawSample
from profiler.proto import capture_pb2

T0 = 1_752_000_000_000_000_000

EXE = "/usr/bin/app"
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
MAPS_A = (
    Mapping(0x55D0C2A00000, 0x55D0C2A01000, 0, "r--p", EXE),
    Mapping(0x55D0C2A01000, 0x55D0C2A05000, 0x1000, "r-xp", EXE),
    Mapping(0x7F3A1C628000, 0x7F3A1C7BD000, 0x28000, "r-xp", LIBC),
    Mapping(0x7F3A1C900000, 0x7F3A1C910000, 0, "rw-p", ""),
    Mapping(0x7FFD5B3F2000, 0x7FFD5B3F4000, 0, "r-xp", "[vdso]"),
    Mapping(0x7FFD5B000000, 0x7FFD5B021000, 0, "rw-p", "[stack]"),
)
IDS_A = (FileIdentity("3f0b6c4e2a9d41c7", 0x803, 1234567, 20480),
         FileIdentity("3f0b6c4e2a9d41c7", 0x803, 1234567, 20480),
         FileIdentity("c289da5071a3399d", 0x803, 998877, 2125328), None, None, None)
# pid A after dlopen("libblob.so")
MAPS_A2 = (*MAPS_A, Mapping(0x7F3A1CA00000, 0x7F3A1CA40000, 0x4000, "r-xp",
                            "/opt/vendor/lib/libblob.so"))
IDS_A2 = (*IDS_A, FileIdentity("", 0x10302, 42, 300000))
MAPS_B = (Mapping(0x400000, 0x452000, 0, "r-xp", "/usr/sbin/dbd"),)
VDSO_IMAGE = bytes(range(256)) * 32


def header(**kw: object) -> CaptureHeader:
    fields: dict[str, object] = {
        "arch": "x86_64", "period_ns": 10_101_010, "frequency_hz": 99, "start_ns": T0,
        "hostname": "build-7", "kernel_release": "6.12.38+deb13-amd64",
        "pac_mask": None, "pids": (4100, 733), "command": ("sframe-prof", "record", "-p",
                                                          "4100,733"),
        "stack_bytes": 16384}
    fields.update(kw)
    return CaptureHeader(**fields)  # type: ignore[arg-type]


def raw(pid: int, tid: int, n: int, t: int, comm: str = "app") -> RawSample:
    rng = random.Random(n)
    sp = 0x7FFD5B01F000 - 16 * n
    return RawSample(
        arch="x86_64",
        regs={"pc": 0x55D0C2A03300 + n, "sp": sp, "fp": sp + 0x40, "r12": 2**64 - 1 - n},
        stack_base=sp, stack=rng.randbytes(512 + 37 * n), mappings=(), pid=pid, tid=tid,
        comm=comm, time_ns=t, cpu=n % 4,
        kernel_stack=(0xFFFFFFFF8142A1B0, 0xFFFFFFFF81C0F2E4) if n % 3 == 0 else ())


def expected(sample: RawSample) -> RawSample:
    """`sample` as the reader should give it back, maps and memory filled in."""
    if sample.pid == 4100:
        maps = MAPS_A if sample.time_ns < T0 + 500 else MAPS_A2
        memory: tuple[tuple[int, bytes], ...] = ((0x7FFD5B3F2000, VDSO_IMAGE),)
    elif sample.pid == 733:
        maps, memory = MAPS_B, ()
    else:
        maps, memory = (), ()
    return RawSample(sample.arch, sample.regs, sample.stack_base, sample.stack, maps,
                     memory, None, sample.pid, sample.tid, sample.comm, sample.time_ns,
                     sample.cpu, sample.kernel_stack)


SAMPLES = [raw(4100, 4100, 0, T0 + 100), raw(4100, 4103, 1, T0 + 200),
           raw(733, 740, 2, T0 + 250, "db-poll"), raw(4100, 4103, 3, T0 + 600),
           raw(4100, 4100, 4, T0 + 700), raw(9999, 9999, 5, T0 + 800, "gone"),
           raw(733, 733, 6, T0 + 900, "dbd")]


def write_full(path: Path) -> list[int]:
    """Write the reference capture; returns the file size after each record."""
    ends: list[int] = []

    def mark() -> None:
        w.flush()
        ends.append(path.stat().st_size)

    w = CaptureWriter(path, header())
    mark()
    w.add_maps(4100, MAPS_A, IDS_A, time_ns=T0 + 50)
    mark()
    w.add_maps(733, MAPS_B, time_ns=T0 + 60)
    mark()
    w.add_memory(4100, 0x7FFD5B3F2000, VDSO_IMAGE, "[vdso]")
    mark()
    for s in SAMPLES[:3]:
        w.add_sample(s)
        mark()
    w.add_maps(4100, MAPS_A2, IDS_A2, time_ns=T0 + 500)
    mark()
    w.add_file("/opt/vendor/lib/libblob.so", b"\x7fELF" + bytes(100), IDS_A2[-1])
    mark()
    for s in SAMPLES[3:]:
        w.add_sample(s)
        mark()
    w.close(lost=3, end_ns=T0 + 1000)
    ends.append(path.stat().st_size)
    return ends


# -- the generated module ------------------------------------------------------------


def test_generated_module_matches_proto_source(repo_root: Path) -> None:
    text = (repo_root / "proto/capture.proto").read_text()
    source = proto.source_schema(text)
    assert proto.schema_differences(source, proto.descriptor_schema(capture_pb2)) == []
    record = source["sframeprof.capture.Record"]
    assert {n: (f.number, f.oneof) for n, f in record.items()} == {
        "header": (1, "kind"), "maps": (2, "kind"), "sample": (3, "kind"),
        "memory": (4, "kind"), "file": (5, "kind"), "trailer": (6, "kind"),
        "samples": (7, "kind"), "kernel_symbols": (8, "kind")}
    assert source["sframeprof.capture.Sample"]["regs"].type == "map<string,uint64>"
    assert source["sframeprof.capture.Header"]["pac_mask"].label == "optional"
    stale = proto.source_schema(text.replace("bytes stack = 8;", "bytes stack = 10;"))
    assert proto.schema_differences(stale, proto.descriptor_schema(capture_pb2)) == [
        "sframeprof.capture.Sample.stack: .proto FieldSchema(number=10, label='', "
        "type='bytes', oneof='') != generated FieldSchema(number=8, label='', "
        "type='bytes', oneof='')"]


# -- round trip ----------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run.sfcap"
    write_full(path)
    assert path.read_bytes().startswith(MAGIC)
    cap = read_capture(path)
    assert cap.header == header()
    assert not cap.truncated
    assert (cap.lost_samples, cap.trailer_samples, cap.end_ns) == (3, 7, T0 + 1000)
    assert cap.sample_count == 7
    got = list(cap.iter_samples())
    assert got == [expected(s) for s in SAMPLES]
    assert list(cap) == got  # iterating twice reads the file again

    snaps = cap.maps[4100]
    assert [(s.time_ns, s.mappings, s.identities) for s in snaps] == [
        (T0 + 50, MAPS_A, IDS_A), (T0 + 500, MAPS_A2, IDS_A2)]
    assert cap.maps[733][0].identities == (None,)
    assert [(b.start, b.name, b.data) for b in cap.memory[4100]] == [
        (0x7FFD5B3F2000, "[vdso]", VDSO_IMAGE)]
    (f,) = cap.files
    assert (f.path, f.data[:4], f.identity) == ("/opt/vendor/lib/libblob.so", b"\x7fELF",
                                                IDS_A2[-1])


def test_maps_at_picks_the_snapshot_in_force(tmp_path: Path) -> None:
    path = tmp_path / "run.sfcap"
    write_full(path)
    cap = read_capture(path)

    def at(pid: int, t: int) -> tuple[Mapping, ...] | None:
        snap = cap.maps_at(pid, t)
        return None if snap is None else snap.mappings

    assert at(4100, T0) == MAPS_A            # before any snapshot: the first one
    assert at(4100, T0 + 50) == MAPS_A
    assert at(4100, T0 + 499) == MAPS_A
    assert at(4100, T0 + 500) == MAPS_A2
    assert at(4100, T0 + 10**9) == MAPS_A2
    assert at(733, 0) == MAPS_B
    assert at(1, T0) is None


def test_pac_mask_and_empty_header_fields(tmp_path: Path) -> None:
    path = tmp_path / "a64.sfcap"
    h = CaptureHeader("aarch64", pac_mask=0xFF7F000000000000)
    with CaptureWriter(path, h) as w:
        w.add_maps(7, MAPS_B, time_ns=1)
        s = raw(7, 7, 1, 5)
        s.arch = "aarch64"
        s.pac_mask = 0xFF7F000000000000
        w.add_sample(s)
    cap = read_capture(path)
    assert cap.header == h
    (got,) = cap.iter_samples()
    assert got.pac_mask == 0xFF7F000000000000 and got.arch == "aarch64"
    assert got.mappings == MAPS_B
    # pac_mask 0 is a value, not "unset".
    CaptureWriter(tmp_path / "zero.sfcap", CaptureHeader("aarch64", pac_mask=0)).close()
    assert read_capture(tmp_path / "zero.sfcap").header.pac_mask == 0
    CaptureWriter(tmp_path / "none.sfcap", CaptureHeader("x86_64")).close()
    assert read_capture(tmp_path / "none.sfcap").header.pac_mask is None


def test_header_here_describes_this_machine() -> None:
    h = CaptureHeader.here("x86_64", period_ns=1000, pids=(1,))
    assert h.kernel_release == os.uname().release
    assert h.hostname and abs(h.start_ns - time.time_ns()) < 60 * 10**9
    assert (h.period_ns, h.pids) == (1000, (1,))


def test_writer_misuse(tmp_path: Path) -> None:
    w = CaptureWriter(tmp_path / "m.sfcap", header())
    with pytest.raises(ValueError, match="2 identities for 6 mappings"):
        w.add_maps(1, MAPS_A, IDS_A[:2])
    w.close()
    with pytest.raises(ValueError, match="already closed"):
        w.add_sample(SAMPLES[0])


# -- cut short -----------------------------------------------------------------------


def test_file_cut_anywhere_keeps_the_complete_records(tmp_path: Path) -> None:
    full = tmp_path / "full.sfcap"
    ends = write_full(full)
    data = full.read_bytes()
    assert ends[-1] == len(data)
    header_end = ends[0]
    sample_ends = [ends[4], ends[5], ends[6], ends[9], ends[10], ends[11], ends[12]]
    rng = random.Random(1234)
    cuts = {c + d for c in ends for d in (-1, 0, 1)} | {rng.randrange(len(data))
                                                       for _ in range(150)}
    cut_path = tmp_path / "cut.sfcap"
    for cut in sorted(c for c in cuts if 0 < c <= len(data)):
        cut_path.write_bytes(data[:cut])
        if cut < header_end:
            with pytest.raises(CaptureError, match=r"truncated inside the (magic|header)"):
                read_capture(cut_path)
            continue
        cap = read_capture(cut_path)
        assert cap.truncated == (cut < len(data)), cut
        complete = sum(1 for e in sample_ends if e <= cut)
        assert cap.sample_count == complete, cut
        assert list(cap.iter_samples()) == [expected(s) for s in SAMPLES[:complete]], cut
        assert (4100 in cap.maps) == (cut >= ends[1])
        assert len(cap.maps.get(4100, ())) == (cut >= ends[1]) + (cut >= ends[7])
        assert bool(cap.memory) == (cut >= ends[3])
        assert len(cap.files) == (cut >= ends[8])
        assert cap.lost_samples == (3 if cut == len(data) else None)


def test_writer_failing_inside_with_leaves_a_truncated_capture(tmp_path: Path) -> None:
    path = tmp_path / "t.sfcap"
    with pytest.raises(RuntimeError), CaptureWriter(path, header()) as w:
        w.add_maps(4100, MAPS_A, IDS_A, time_ns=T0)
        w.add_sample(SAMPLES[0])
        raise RuntimeError("sampler died")
    cap = read_capture(path)
    assert cap.truncated and cap.lost_samples is None
    assert list(cap.iter_samples()) == [replace(expected(SAMPLES[0]), memory=())]


WRITER_SCRIPT = """
import sys
from profiler.capture.fileformat import CaptureHeader
from profiler.capture.writer import CaptureWriter
from profiler.model import Mapping, RawSample
w = CaptureWriter(sys.argv[1], CaptureHeader("x86_64", period_ns=1000))
w.add_maps(1, (Mapping(0x1000, 0x2000, 0, "r-xp", "/bin/x"),), time_ns=0)
n = 0
while True:
    w.add_sample(RawSample("x86_64", {"pc": 0x1000 + n % 4096, "sp": n}, n,
                           n.to_bytes(8, "little") * 200, (), pid=1, tid=1, time_ns=n))
    n += 1
    if n % 10 == 0:
        w.flush()
    if n == 20:
        print("ready", flush=True)
"""


def test_writer_killed_mid_run(tmp_path: Path, repo_root: Path) -> None:
    path = tmp_path / "killed.sfcap"
    proc = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(path)],
                            stdout=subprocess.PIPE, cwd=repo_root, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    cap = read_capture(path)
    assert cap.truncated
    samples = list(cap.iter_samples())
    assert len(samples) >= 20
    for n, s in enumerate(samples):
        assert (s.time_ns, s.regs, s.stack) == (n, {"pc": 0x1000 + n % 4096, "sp": n},
                                                n.to_bytes(8, "little") * 200)
        assert s.mappings == (Mapping(0x1000, 0x2000, 0, "r-xp", "/bin/x"),)


# -- not a capture -------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out) + bytes([n])


def _record(**kind: object) -> bytes:
    body = capture_pb2.Record(**kind).SerializeToString()  # type: ignore[arg-type]
    return _varint(len(body)) + body


HEADER = _record(header=capture_pb2.Header(version=1, arch="x86_64"))
TRAILER = _record(trailer=capture_pb2.Trailer(samples=0))


@pytest.mark.parametrize(("content", "defect"), [
    (b"", "empty file, not a capture"),
    (b"\x1f\x8b\x08\x00" + bytes(60), "not a sframe-prof capture (bad magic"),
    (b"perf.data\x00" * 20, "not a sframe-prof capture (bad magic"),
    (random.Random(7).randbytes(4096), "not a sframe-prof capture (bad magic"),
    (MAGIC + _varint(5) + b"\xff\xff\xff\xff\xff", "record 0 at offset 8 is corrupt"),
    (MAGIC + HEADER + _varint(3) + b"\x38\x01\x00", "record 1 at offset 21 is corrupt"),
    (MAGIC + _record(sample=capture_pb2.Sample(pid=1)), "sample record before the header"),
    (MAGIC + HEADER + TRAILER + _record(sample=capture_pb2.Sample()),
     "sample record after the trailer"),
    (MAGIC + HEADER + HEADER, "second header"),
    (MAGIC + HEADER + _varint(1 << 31) + b"x", "exceeds"),
    (MAGIC + HEADER + b"\xff" * 11, "length prefix longer than 10 bytes"),
    (MAGIC + _record(header=capture_pb2.Header(version=3)), "format version 3 is newer"),
    (MAGIC + _record(samples=capture_pb2.SampleBatch(count=1)),
     "samples record before the header"),
    (MAGIC + HEADER + _record(kernel_symbols=capture_pb2.KernelSymbols(pcs=[1], names=[])),
     "kernel symbols: 1 pcs, 0 names, 0 offsets"),
])
def test_not_a_capture(tmp_path: Path, content: bytes, defect: str) -> None:
    path = tmp_path / "bad.sfcap"
    path.write_bytes(content)
    with pytest.raises(CaptureError) as err:
        read_capture(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert defect in message
    assert "\n" not in message


@pytest.mark.parametrize(("batch", "defect"), [
    (capture_pb2.SampleBatch(count=2, packed=bytes(68)), "packed sample 1 of 2 cut short"),
    (capture_pb2.SampleBatch(count=1, packed=bytes(69)),
     "1 packed samples take 68 bytes, the batch has 69"),
    (capture_pb2.SampleBatch(count=1, packed=bytes(12) + b"\x10" + bytes(55)),
     "unknown register bits 0x10"),
    (capture_pb2.SampleBatch(count=1, packed=bytes(12) + b"\x07" + bytes(51) + b"\x01"
                             + bytes(3)), "packed sample 0 of 1: cut short"),
])
@pytest.mark.parametrize("canonical", [True, False])
def test_corrupt_sample_batch(tmp_path: Path, batch: capture_pb2.SampleBatch, defect: str,
                              canonical: bool) -> None:
    """Caught while reading the samples, whether the batch is found without protobuf
    (the writer's encoding) or decoded by it (fields in another order)."""
    body = capture_pb2.Record(samples=batch).SerializeToString()
    if not canonical:   # packed before count: valid protobuf, not the writer's layout
        inner = batch.SerializeToString()
        count_field = inner[:inner.index(b"\x12")]
        inner = inner[len(count_field):] + count_field
        body = b"\x3a" + _varint(len(inner)) + inner
        assert capture_pb2.Record.FromString(body) == capture_pb2.Record(samples=batch)
    path = tmp_path / "bad.sfcap"
    path.write_bytes(MAGIC + HEADER + _varint(len(body)) + body)
    cap = read_capture(path)
    with pytest.raises(CaptureError) as err:
        list(cap.iter_samples())
    assert str(err.value).startswith(f"{path}: sample batch at offset ")
    assert defect in str(err.value) and "\n" not in str(err.value)



def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match=r"nope\.sfcap: No such file or directory$"):
        read_capture(tmp_path / "nope.sfcap")


# -- format version 2: packed sample batches, kernel symbols ------------------------------


def packable(pid: int, tid: int, n: int, t: int, comm: str = "app") -> RawSample:
    """A sample the writer packs (pc, sp, fp and maybe lr: no other registers)."""
    s = raw(pid, tid, n, t, comm)
    regs = {"pc": s.regs["pc"], "sp": s.regs["sp"], "fp": s.regs["fp"]}
    if n % 4 == 1:
        regs["lr"] = 0xAAAA0000 + n
    if n % 5 == 2:
        del regs["fp"]
    return replace(s, regs=regs, stack=s.stack[:0] if n == 3 else s.stack)


PACKABLE = [packable(4100, 4100 + n % 3, n, T0 + 100 * n, "héllo" if n % 2 else "app")
            for n in range(600)]


def test_packed_round_trip_with_batches_and_mixed_records(tmp_path: Path) -> None:
    path = tmp_path / "v2.sfcap"
    odd = raw(4100, 4100, 7, T0 + 100 * 300 + 50)      # has r12: a Sample record
    with CaptureWriter(path, header()) as w:
        w.add_maps(4100, MAPS_A, IDS_A, time_ns=T0)
        for s in PACKABLE[:300]:
            w.add_sample(s)
        w.add_sample(odd)
        for s in PACKABLE[300:]:
            w.add_sample(s)
        w.add_kernel_symbols({0xFFFFFFFF8142A1B0: ("do_syscall_64", 0x30),
                              0xFFFFFFFF81C0F2E4: ("entry_SYSCALL_64", 0x64)})
    cap = read_capture(path)
    want = [replace(s, mappings=MAPS_A) for s in PACKABLE[:300]] + \
        [replace(odd, mappings=MAPS_A)] + [replace(s, mappings=MAPS_A) for s in PACKABLE[300:]]
    assert cap.sample_count == len(want) == cap.trailer_samples
    assert list(cap.iter_samples()) == want
    assert cap.kernel_symbols == {0xFFFFFFFF8142A1B0: ("do_syscall_64", 0x30),
                                  0xFFFFFFFF81C0F2E4: ("entry_SYSCALL_64", 0x64)}
    assert cap.header.version == 2
    # 600 packable samples in batches of at most 256, not 600 records
    assert len(cap._sample_spans) < 10


def test_packed_batch_cut_short_keeps_the_whole_batches(tmp_path: Path) -> None:
    path = tmp_path / "v2.sfcap"
    w = CaptureWriter(path, header())
    w.add_maps(4100, MAPS_A, IDS_A, time_ns=T0)
    ends = []
    for i, s in enumerate(PACKABLE[:100]):
        w.add_sample(s)
        if i % 10 == 9:
            w.flush()
            ends.append(path.stat().st_size)
    w.close()
    data = path.read_bytes()
    for k, end in enumerate(ends):
        for cut in (end - 1, end, end + 1):
            path.write_bytes(data[:cut])
            cap = read_capture(path)
            n = 10 * (k + (cut >= end))
            assert cap.truncated and cap.sample_count == n
            assert [s.time_ns for s in cap.iter_samples()] == [s.time_ns for s in PACKABLE[:n]]


def test_version_1_captures_are_still_read(tmp_path: Path) -> None:
    path = tmp_path / "v1.sfcap"
    sample = capture_pb2.Sample(pid=1, tid=2, cpu=1, time_ns=5, comm="old", stack_base=16,
                                stack=b"x" * 32, kernel_stack=[7])
    sample.regs["pc"] = 0x1000
    sample.regs["sp"] = 16
    path.write_bytes(MAGIC + HEADER + _record(sample=sample)
                     + _record(trailer=capture_pb2.Trailer(samples=1)))
    cap = read_capture(path)
    assert cap.header.version == 1 and cap.kernel_symbols is None
    (got,) = cap.iter_samples()
    assert (got.pid, got.tid, got.comm, got.regs, got.stack, got.kernel_stack) == (
        1, 2, "old", {"pc": 0x1000, "sp": 16}, b"x" * 32, (7,))
