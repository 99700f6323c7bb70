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
from profiler.capture.recording import (
    MAGIC,
    CaptureError,
    CaptureHeader,
    CaptureWriter,
    FileIdentity,
    PackedSamples,
    read_capture,
)
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
from profiler.capture.recording import CaptureHeader, CaptureWriter
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


# -- the reader against protobuf ----------------------------------------------------------
# read_capture decodes the records by hand (profiler.capture.wire); capture_pb2 is the
# reference for what they hold.

SNAPSHOTS = Path(__file__).resolve().parent.parent / "snapshots"


def snapshot_capture(path: Path, name: str, version: int, pac_mask: int | None = -1) -> None:
    """A capture of the first samples of snapshot file `name`, with every kind of
    record: maps with identities (twice, the second at a sample's time), the vDSO
    image, a file blob, packed samples and Sample records (all of them for version 1),
    kernel symbols and the trailer."""
    from profiler.snapshots import read_snapshots

    samples = []
    for _, _obj, s in read_snapshots(str(SNAPSHOTS / name)):
        samples.append(s)
        if len(samples) == 12:
            break
    s0 = samples[0]
    idents = [FileIdentity("ab" * 20, 2049, 1234 + i, 27672 + i) if m.path.startswith("/")
              else None for i, m in enumerate(s0.mappings)]
    head = CaptureHeader(s0.arch, period_ns=10**7, frequency_hz=99, start_ns=T0,
                         hostname="host", kernel_release="6.1.0",
                         pac_mask=s0.pac_mask if pac_mask == -1 else pac_mask,
                         pids=(4242, 7), command=("sframe-prof", "record", "-p", "4242"),
                         stack_bytes=16384, version=version)
    with CaptureWriter(path, head) as w:
        w.add_maps(4242, s0.mappings, idents, time_ns=1)
        for start, blob in s0.memory:
            w.add_memory(4242, start, blob, "[vdso]")
        w.add_file("/targets/prog", b"\x7fELF" + bytes(60), FileIdentity("cd" * 20, 1, 2, 64))
        w.add_file("/targets/gone", b"")
        for i, s in enumerate(samples):
            regs = s.regs if version == 1 or i % 4 == 3 else {
                k: v for k, v in s.regs.items() if k in ("pc", "sp", "fp", "lr")}
            w.add_sample(replace(s, regs=regs, pid=4242, tid=4242 + i % 3, time_ns=2 + i,
                                 comm="prog" if i % 2 else "prög", cpu=i % 4,
                                 kernel_stack=(0xFFFFFFFF81000000 + 16 * i,) * (i % 3)))
            if i == 6:
                w.add_maps(4242, s0.mappings[:-1], idents[:-1], time_ns=2 + i)
                w.add_maps(7, s0.mappings[:2], time_ns=2 + i)
        w.add_kernel_symbols({0xFFFFFFFF81000000 + 16 * i: (f"sym_{i}", i) for i in range(12)})
        w.add_memory(7, 0x1000, b"", "")


def protobuf_view(path: Path) -> dict[str, object]:
    """What capture_pb2 finds in a capture file, in the shape of reader_view()."""
    data = path.read_bytes()
    pos, records = len(MAGIC), []
    while pos < len(data):
        length = shift = 0
        while pos < len(data):
            b = data[pos]
            pos += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        else:
            break
        if pos + length > len(data):
            break
        records.append(capture_pb2.Record.FromString(data[pos:pos + length]))
        pos += length
    h = records[0].header
    view: dict[str, object] = {
        "header": CaptureHeader(
            h.arch, h.period_ns, h.frequency_hz, h.start_time_ns, h.hostname,
            h.kernel_release, h.pac_mask if h.HasField("pac_mask") else None,
            tuple(h.pids), tuple(h.command), h.stack_bytes, h.version),
        "truncated": True, "lost": None, "trailer_samples": None, "end_ns": None,
        "maps": {}, "memory": {}, "files": [], "kernel_symbols": None, "samples": []}
    for rec in records[1:]:
        kind = rec.WhichOneof("kind")
        if kind == "maps":
            m = rec.maps
            snaps = view["maps"].setdefault(m.pid, [])  # type: ignore[attr-defined]
            snaps.append((m.time_ns, tuple(Mapping(e.start, e.end, e.offset, e.perms, e.path)
                                           for e in m.mappings),
                          tuple(FileIdentity(e.identity.build_id, e.identity.dev,
                                             e.identity.inode, e.identity.size)
                                if e.HasField("identity") else None for e in m.mappings)))
            snaps.sort(key=lambda snap: snap[0])
        elif kind == "memory":
            view["memory"].setdefault(rec.memory.pid, []).append(  # type: ignore[attr-defined]
                (rec.memory.start, rec.memory.data, rec.memory.name))
        elif kind == "file":
            fb = rec.file
            view["files"].append((fb.path, fb.data, FileIdentity(  # type: ignore[attr-defined]
                fb.identity.build_id, fb.identity.dev, fb.identity.inode, fb.identity.size)
                if fb.HasField("identity") else None))
        elif kind == "kernel_symbols":
            ks = rec.kernel_symbols
            view["kernel_symbols"] = dict(zip(ks.pcs, zip(ks.names, ks.offsets)))
        elif kind == "trailer":
            t = rec.trailer
            view.update(truncated=False, lost=t.lost_samples, trailer_samples=t.samples,
                        end_ns=t.end_time_ns)
        elif kind == "samples":
            view["samples"].append(("batch", rec.samples.count,  # type: ignore[attr-defined]
                                    rec.samples.packed))
        else:
            s = rec.sample
            view["samples"].append(("sample", s.pid, s.tid, s.cpu, s.time_ns, s.comm,  # type: ignore[attr-defined]
                                    dict(s.regs), s.stack_base, s.stack,
                                    tuple(s.kernel_stack)))
    return view


def reader_view(path: Path) -> dict[str, object]:
    cap = read_capture(path)
    samples: list[tuple[object, ...]] = []
    for block in cap.iter_blocks():
        if isinstance(block, PackedSamples):
            samples.append(("batch", block.n, bytes(block.buf[block.start:block.end])))
        else:
            samples.append(("sample", block.pid, block.tid, block.cpu, block.time_ns,
                            block.comm, block.regs, block.stack_base, block.stack,
                            block.kernel_stack))
    assert cap.sample_count == sum(s[1] if s[0] == "batch" else 1 for s in samples)  # type: ignore[misc]
    return {
        "header": cap.header, "truncated": cap.truncated, "lost": cap.lost_samples,
        "trailer_samples": cap.trailer_samples, "end_ns": cap.end_ns,
        "maps": {pid: [(s.time_ns, s.mappings, s.identities) for s in snaps]
                 for pid, snaps in cap.maps.items()},
        "memory": {pid: [(b.start, b.data, b.name) for b in blobs]
                   for pid, blobs in cap.memory.items()},
        "files": [(f.path, f.data, f.identity) for f in cap.files],
        "kernel_symbols": cap.kernel_symbols, "samples": samples}


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("name", ["v3sid-x86_64-O2.jsonl.gz",
                                  "v2trixie-aarch64-O2-pacret.jsonl.gz"])
def test_reader_finds_what_protobuf_finds(tmp_path: Path, name: str, version: int) -> None:
    path = tmp_path / "run.sfcap"
    snapshot_capture(path, name, version)
    want = protobuf_view(path)
    assert reader_view(path) == want
    h = want["header"]
    assert isinstance(h, CaptureHeader) and h.version == version
    assert (h.pac_mask is None) == name.startswith("v3sid-x86_64")
    kinds = [s[0] for s in want["samples"]]  # type: ignore[attr-defined]
    assert kinds.count("sample") == (12 if version == 1 else 3)
    assert len(want["maps"][4242]) == 2 and want["maps"][7][0][2] == (None, None)  # type: ignore[index]
    assert not want["truncated"] and len(want["files"]) == 2  # type: ignore[arg-type]
    # Cut short anywhere after the header: the same records, truncated.
    data = path.read_bytes()
    rng = random.Random(name)
    for cut in sorted(rng.sample(range(300, len(data)), 60)):
        path.write_bytes(data[:cut])
        assert reader_view(path) == protobuf_view(path), cut


@pytest.mark.parametrize("pac_mask", [None, 0, 2**64 - 1])
def test_reader_and_protobuf_agree_on_pac_mask(tmp_path: Path, pac_mask: int | None) -> None:
    path = tmp_path / "run.sfcap"
    snapshot_capture(path, "v2trixie-aarch64-O2-pacret.jsonl.gz", 2, pac_mask)
    assert reader_view(path) == protobuf_view(path)
    assert read_capture(path).header.pac_mask == pac_mask


def test_a_record_cut_anywhere_is_a_capture_error(tmp_path: Path) -> None:
    """Each record of a capture, its length prefix shortened with it: never anything
    but a one-line CaptureError.  (test_capture_wire cuts records at every byte.)"""
    full = tmp_path / "full.sfcap"
    snapshot_capture(full, "v2trixie-aarch64-O2-pacret.jsonl.gz", 2)
    data = full.read_bytes()
    pos, spans = len(MAGIC), []
    while pos < len(data):
        length, body = _read_prefix(data, pos)
        spans.append((pos, body, body + length))
        pos = body + length
    path = tmp_path / "cut.sfcap"
    for k, (at, body, end) in enumerate(spans):
        size = end - body     # every cut near the ends, where the tags are; some inside
        for cut in sorted({*range(min(size, 64)), *range(max(size - 16, 0), size),
                           *range(0, size, 97)}):
            path.write_bytes(data[:at] + _varint(cut) + data[body:body + cut] + data[end:])
            with pytest.raises(CaptureError) as err:
                read_capture(path)
            message = str(err.value)
            assert message.startswith(f"{path}: record {k} at offset {at} is corrupt ("), cut
            assert "\n" not in message


def _read_prefix(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, pos


READ_SCRIPT = """
import sys
from profiler.capture.recording import read_capture
cap = read_capture(sys.argv[1])
n = sum(1 for _ in cap.iter_samples())
print(n, cap.kernel_symbols is not None, "google.protobuf" in sys.modules)
"""


def test_reading_needs_protobuf_only_for_format_1_samples(tmp_path: Path,
                                                          repo_root: Path) -> None:
    """`report` reads a capture before it writes the pprof: reading a format 2 capture
    must not import google.protobuf (a third of report's start-up)."""
    v2 = tmp_path / "v2.sfcap"
    with CaptureWriter(v2, header()) as w:
        w.add_maps(4100, MAPS_A, IDS_A, time_ns=T0)
        w.add_memory(4100, 0x7FFD5B3F2000, VDSO_IMAGE, "[vdso]")
        w.add_file("/opt/vendor/lib/libblob.so", b"\x7fELF" + bytes(100), IDS_A2[-1])
        for s in PACKABLE[:300]:
            w.add_sample(s)
        w.add_kernel_symbols({0xFFFFFFFF8142A1B0: ("do_syscall_64", 0x30)})
    v1 = tmp_path / "v1.sfcap"
    write_full(v1)      # SAMPLES have a register the packed layout lacks: Sample records
    for path, want in ((v2, "300 True False"), (v1, "7 False True")):
        out = subprocess.run([sys.executable, "-c", READ_SCRIPT, str(path)], cwd=repo_root,
                             capture_output=True, text=True, check=True).stdout
        assert out.split() == want.split(), path
