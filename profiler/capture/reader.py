"""Reading raw capture files (the format: profiler.capture.fileformat).

:func:`read_capture` indexes a file: header, maps, memory and files at once, the
samples left on disk until iterated.  A SampleBatch's packed bytes are found without
protobuf and read in place from a mapping of the file (``iter_blocks`` hands them out
unparsed, as profiler.capture.packed.PackedSamples; ``iter_samples`` as RawSamples).

A file cut short (a writer killed mid-run) keeps every complete record and has
``truncated`` set; anything else that is not a capture (bad magic, a record that does
not decode, records after the trailer) raises CaptureError with a one-line
``"<path>: <defect>"`` message.
"""

from __future__ import annotations

import bisect
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from google.protobuf.message import DecodeError

from profiler.capture.fileformat import (
    FORMAT_VERSION,
    MAGIC,
    MAX_RECORD_BYTES,
    CaptureError,
    CaptureHeader,
    FileBlob,
    FileIdentity,
    MapsSnapshot,
    MemoryBlob,
)
from profiler.capture.packed import PackedSamples
from profiler.model import Mapping, RawSample
from profiler.proto import capture_pb2

__all__ = ["Capture", "read_capture"]


@dataclass(slots=True)
class Capture:
    """A capture file's records, with the samples left on disk until iterated."""

    path: str
    header: CaptureHeader
    truncated: bool = False        # no trailer: the writer stopped early
    lost_samples: int | None = None    # from the trailer
    trailer_samples: int | None = None
    end_ns: int | None = None
    maps: dict[int, list[MapsSnapshot]] = field(default_factory=dict)   # by time
    memory: dict[int, list[MemoryBlob]] = field(default_factory=dict)
    files: list[FileBlob] = field(default_factory=list)
    # kernel pc -> (symbol, offset), as the recorder resolved them (format version 2)
    kernel_symbols: dict[int, tuple[str, int]] | None = None
    # (start, end, samples, raw): a Sample record (samples 0), a SampleBatch record
    # (raw False), or the packed bytes of a SampleBatch found without protobuf (raw True)
    _sample_spans: list[tuple[int, int, int, bool]] = field(default_factory=list)
    _map_times: dict[int, list[int]] = field(default_factory=dict)
    _samples: int = 0

    @property
    def sample_count(self) -> int:
        """Complete samples in the file."""
        return self._samples

    # -- indexing (read_capture) --

    def add_samples(self, span: tuple[int, int, int, bool], n: int) -> None:
        """Index a sample record: `span` as in _sample_spans, `n` samples in it."""
        self._sample_spans.append(span)
        self._samples += n

    def add_maps(self, snap: MapsSnapshot) -> None:
        """Index a maps snapshot, in time order (equal times keep file order)."""
        snaps = self.maps.setdefault(snap.pid, [])
        times = self._map_times.setdefault(snap.pid, [])
        i = bisect.bisect_right(times, snap.time_ns)
        snaps.insert(i, snap)
        times.insert(i, snap.time_ns)

    # -- queries --

    def maps_at(self, pid: int, time_ns: int) -> MapsSnapshot | None:
        """The latest snapshot of `pid` taken at or before `time_ns` (the earliest one
        if all are later), or None if the capture has none for `pid`."""
        snaps = self.maps.get(pid)
        if not snaps:
            return None
        i = bisect.bisect_right(self._map_times[pid], time_ns)
        return snaps[max(i - 1, 0)]

    def iter_samples(self) -> Iterator[RawSample]:
        """Every complete sample, in file order, with its process's maps and memory."""
        if not self._sample_spans:
            return
        for block in self.iter_blocks():
            if isinstance(block, PackedSamples):
                yield from self._unpack_batch(block)
            else:
                yield block

    __iter__ = iter_samples

    def parts(self, k: int, lead: int = 0,
              lighter: int = 0) -> list[list[tuple[int, int, int, bool]]]:
        """The sample records cut into consecutive runs for iter_blocks(spans=...):
        with `lead`, first one of about `lead` samples; then the rest in at most `k`
        runs (whole records; none empty) of about equal sample counts, except that
        the first of them has about `lighter` samples fewer than each other one."""
        spans = self._sample_spans
        head: list[tuple[int, int, int, bool]] = []
        done = 0
        while lead and len(head) < len(spans) and done < lead:
            head.append(spans[len(head)])
            done += max(head[-1][2], 1)
        rest = spans[len(head):]
        total = sum(max(n, 1) for _s, _e, n, _r in rest)
        first = max(0.0, (total - (k - 1) * lighter) / k)
        each = (total - first) / (k - 1) if k > 1 else 0.0
        out: list[list[tuple[int, int, int, bool]]] = [head, []]
        done = 0
        for span in rest:
            if out[-1] and len(out) <= k and done >= first + each * (len(out) - 2):
                out.append([])
            out[-1].append(span)
            done += max(span[2], 1)
        return [part for part in out if part]

    def iter_blocks(self, spans: list[tuple[int, int, int, bool]] | None = None,
                    ) -> Iterator[RawSample | PackedSamples]:
        """The samples in file order: a RawSample per Sample record, a PackedSamples
        per batch (for callers that want to skip building RawSamples); only those of
        `spans` (a list from parts()) when given."""
        if spans is None:
            spans = self._sample_spans
        if not spans:
            return
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - closed below, also on an error
        except OSError as e:
            raise CaptureError(f"{self.path}: {e.strerror or e}") from None
        with f, _map(f, spans[0][0], spans[-1][1]) as mm:
            rec = capture_pb2.Record()
            for start, end, n, raw in spans:
                if end > len(mm):
                    raise CaptureError(f"{self.path}: file shrank while being read")
                if raw:     # read in place: only the words looked at are touched
                    yield PackedSamples(self.path, mm, n, start, end)
                    continue
                rec.ParseFromString(mm[start:end])
                if n:
                    packed = rec.samples.packed
                    yield PackedSamples(self.path, packed, n, 0, len(packed))
                else:
                    yield self._raw_sample(rec.sample)

    def _unpack_batch(self, batch: PackedSamples) -> Iterator[RawSample]:
        arch, pac_mask = self.header.arch, self.header.pac_mask
        maps_at = self.mappings_at
        memories: dict[int, tuple[tuple[int, bytes], ...]] = {}
        buf = batch.buf
        for (pid, tid, cpu, mask, comm, kernel, time_ns, base, pc, sp, fp, lr, pos,
             slen) in batch:
            if mask == 7:
                regs = {"pc": pc, "sp": sp, "fp": fp}
            else:
                regs = {name: v for name, v, bit in (("pc", pc, 1), ("sp", sp, 2),
                                                    ("fp", fp, 4), ("lr", lr, 8))
                        if mask & bit}
            memory = memories.get(pid)
            if memory is None:
                memory = memories[pid] = self.memory_of(pid)
            yield RawSample(arch, regs, base, buf[pos:pos + slen], maps_at(pid, time_ns),
                            memory, pac_mask, pid, tid, comm, time_ns, cpu, kernel)

    def mappings_at(self, pid: int, time_ns: int) -> tuple[Mapping, ...]:
        """The mappings of maps_at(), () if there are none."""
        snaps = self.maps.get(pid)
        if snaps is not None and len(snaps) == 1:
            return snaps[0].mappings
        snap = self.maps_at(pid, time_ns)
        return snap.mappings if snap is not None else ()

    def memory_of(self, pid: int) -> tuple[tuple[int, bytes], ...]:
        """The extra memory (vDSO image) recorded for `pid`, as RawSample.memory."""
        return tuple((b.start, b.data) for b in self.memory.get(pid, ()))

    def _raw_sample(self, s: capture_pb2.Sample) -> RawSample:
        snap = self.maps_at(s.pid, s.time_ns)
        return RawSample(
            arch=self.header.arch,
            regs=dict(s.regs),
            stack_base=s.stack_base,
            stack=bytes(s.stack),
            mappings=snap.mappings if snap is not None else (),
            memory=self.memory_of(s.pid),
            pac_mask=self.header.pac_mask,
            pid=s.pid, tid=s.tid, comm=s.comm, time_ns=s.time_ns, cpu=s.cpu,
            kernel_stack=tuple(s.kernel_stack),
        )


MADV_POPULATE_READ = 22     # Linux 5.14; mmap does not name it before Python 3.13


def _map(f: BinaryIO, start: int, end: int) -> mmap.mmap:
    """The file mapped read-only, with the pages of bytes [start, end) mapped in at
    once where the system can: cheaper than a page fault per page, and no copy.
    Only that range: the unwinding may be split between processes, each reading its
    own part, and mapping in all of a large capture costs as much as reading a part."""
    try:
        mm = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    except OSError as e:
        raise CaptureError(f"{f.name}: {e.strerror or e}") from None
    lo = start - start % mmap.PAGESIZE
    hi = min(end, len(mm))
    if hi > lo:
        for advice in (MADV_POPULATE_READ, mmap.MADV_WILLNEED):
            try:
                mm.madvise(advice, lo, hi - lo)
                break
            except OSError:
                continue    # an older kernel: a hint instead
    return mm


def _read_varint(buf: bytes | mmap.mmap, pos: int) -> tuple[int, int] | None:
    """(value, position after it), or None if the buffer ends inside the varint."""
    value = shift = 0
    while pos < len(buf):
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift >= 64:
            raise ValueError("length prefix longer than 10 bytes")
    return None


_TAG_RECORD_SAMPLES = 0x3A   # Record field 7 (samples), length-delimited
_TAG_BATCH_COUNT = 0x08      # SampleBatch field 1 (count), varint
_TAG_BATCH_PACKED = 0x12     # SampleBatch field 2 (packed), length-delimited


def _batch_span(buf: mmap.mmap, start: int, end: int) -> tuple[int, int, int] | None:
    """(count, start, end of the packed bytes) of a SampleBatch record at buf[start:end]
    in the writer's encoding, read without copying it; None for anything else (the
    record is then decoded with protobuf)."""
    try:
        if buf[start] != _TAG_RECORD_SAMPLES:
            return None
        got = _read_varint(buf, start + 1)
        if got is None or got[0] + got[1] != end:
            return None
        pos, count = got[1], 0
        if pos < end and buf[pos] == _TAG_BATCH_COUNT:
            got = _read_varint(buf, pos + 1)
            if got is None:
                return None
            count, pos = got
        if pos == end:
            return count, pos, pos
        if buf[pos] != _TAG_BATCH_PACKED:
            return None
        got = _read_varint(buf, pos + 1)
        if got is None or got[0] + got[1] != end:
            return None
        return count, got[1], end
    except (ValueError, IndexError):
        return None


def _identity(msg: capture_pb2.FileIdentity) -> FileIdentity:
    return FileIdentity(msg.build_id, msg.dev, msg.inode, msg.size)


def _header(h: capture_pb2.Header) -> CaptureHeader:
    return CaptureHeader(
        arch=h.arch, period_ns=h.period_ns, frequency_hz=h.frequency_hz,
        start_ns=h.start_time_ns, hostname=h.hostname, kernel_release=h.kernel_release,
        pac_mask=h.pac_mask if h.HasField("pac_mask") else None,
        pids=tuple(h.pids), command=tuple(h.command), stack_bytes=h.stack_bytes,
        version=h.version)


def _snapshot(m: capture_pb2.MapsSnapshot) -> MapsSnapshot:
    return MapsSnapshot(
        m.pid, m.time_ns,
        tuple(Mapping(e.start, e.end, e.offset, e.perms, e.path) for e in m.mappings),
        tuple(_identity(e.identity) if e.HasField("identity") else None for e in m.mappings))


def read_capture(path: str | os.PathLike[str]) -> Capture:
    """Index a capture file: header, maps, memory and files now, samples on iteration.

    Raises :class:`CaptureError` for anything that is not a (possibly cut short)
    capture.  A file cut short comes back with ``truncated=True`` and every record
    that was complete.
    """
    spath = os.fspath(path)
    try:
        with open(spath, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise CaptureError(f"{spath}: empty file, not a capture")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return _index(spath, mm)
    except OSError as e:
        raise CaptureError(f"{spath}: {e.strerror or e}") from None


def _index(path: str, buf: mmap.mmap) -> Capture:
    head = buf[:len(MAGIC)]
    if head != MAGIC:
        if MAGIC.startswith(head):
            raise CaptureError(f"{path}: truncated inside the magic, no header")
        raise CaptureError(f"{path}: not a sframe-prof capture (bad magic {head[:8]!r})")
    pos = len(MAGIC)
    capture: Capture | None = None
    rec = capture_pb2.Record()
    nrec = 0
    while pos < len(buf):
        at = pos
        try:
            prefix = _read_varint(buf, pos)
        except ValueError as e:
            raise CaptureError(f"{path}: record {nrec} at offset {at}: {e}") from None
        if prefix is None:
            break  # cut inside a length prefix
        length, pos = prefix
        if length > MAX_RECORD_BYTES:
            raise CaptureError(f"{path}: record {nrec} at offset {at}: length {length} "
                               f"exceeds {MAX_RECORD_BYTES}")
        if pos + length > len(buf):
            break  # cut inside a record
        batch = _batch_span(buf, pos, pos + length) if length else None
        if batch is not None:
            kind: str | None = "samples"
        else:
            try:
                rec.ParseFromString(buf[pos:pos + length])
            except DecodeError as e:
                raise CaptureError(f"{path}: record {nrec} at offset {at} is corrupt "
                                   f"({str(e).splitlines()[0] if str(e) else 'decode error'})"
                                   ) from None
            kind = rec.WhichOneof("kind")
        where = f"{path}: record {nrec} at offset {at}"
        if kind is None:
            raise CaptureError(f"{where} is corrupt (no known record type)")
        if capture is None:
            if kind != "header":
                raise CaptureError(f"{where}: {kind} record before the header")
            if rec.header.version > FORMAT_VERSION:
                raise CaptureError(f"{path}: capture format version {rec.header.version} "
                                   f"is newer than this reader's {FORMAT_VERSION}")
            # `truncated` stays True until the trailer turns up.
            capture = Capture(path, _header(rec.header), truncated=True)
        elif not capture.truncated:
            raise CaptureError(f"{where}: {kind} record after the trailer")
        elif kind == "header":
            raise CaptureError(f"{where}: second header")
        elif kind == "sample":
            capture.add_samples((pos, pos + length, 0, False), 1)
        elif kind == "samples":
            # The packed samples are checked as they are read (iter_samples).
            if batch is not None:
                n, pstart, pend = batch
                span = (pstart, pend, n, True)
            else:
                n = rec.samples.count
                span = (pos, pos + length, n, False)
            if n:
                capture.add_samples(span, n)
        elif kind == "kernel_symbols":
            ks = rec.kernel_symbols
            if not len(ks.pcs) == len(ks.names) == len(ks.offsets):
                raise CaptureError(f"{where} is corrupt (kernel symbols: {len(ks.pcs)} pcs, "
                                   f"{len(ks.names)} names, {len(ks.offsets)} offsets)")
            table = capture.kernel_symbols if capture.kernel_symbols is not None else {}
            table.update(zip(ks.pcs, zip(ks.names, ks.offsets)))
            capture.kernel_symbols = table
        elif kind == "maps":
            capture.add_maps(_snapshot(rec.maps))
        elif kind == "memory":
            m = rec.memory
            capture.memory.setdefault(m.pid, []).append(
                MemoryBlob(m.pid, m.start, bytes(m.data), m.name))
        elif kind == "file":
            fb = rec.file
            capture.files.append(FileBlob(
                fb.path, bytes(fb.data),
                _identity(fb.identity) if fb.HasField("identity") else None))
        elif kind == "trailer":
            t = rec.trailer
            capture.truncated = False
            capture.lost_samples = t.lost_samples
            capture.trailer_samples = t.samples
            capture.end_ns = t.end_time_ns
        pos += length
        nrec += 1
    if capture is None:
        raise CaptureError(f"{path}: truncated inside the header")
    return capture
