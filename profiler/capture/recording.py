"""Raw capture files: write what the sampler saw, read it back as RawSamples.

A capture keeps everything the later stages need to rerun without the traced
processes: registers and stack bytes per sample, /proc/PID/maps snapshots with the
identity of each mapped file, extra memory such as the vDSO image, and optionally
whole object files.  The layout (proto/capture.proto) is an 8-byte magic followed by
length-prefixed ``Record`` messages -- a Header first, a Trailer last::

    with CaptureWriter("run.sfcap", CaptureHeader.here("x86_64", period_ns=10**7)) as w:
        w.add_maps(pid, mappings, identities)
        w.add_sample(raw_sample)
        w.close(lost=ring_buffer_losses)

    cap = read_capture("run.sfcap")
    for sample in cap.iter_samples():   # RawSample with the pid's maps at its time
        ...

Format version 2 packs samples into SampleBatch records (a fixed little-endian layout
per sample, flushed every 256 samples or 1 MiB, and by flush()); the reader finds a
batch's bytes without protobuf and reads them in place from a mapping of the file
(``iter_blocks`` hands them out unparsed, ``iter_samples`` as RawSamples).  Version 1
files (one Sample record per sample) are still read.

A writer killed mid-run leaves a prefix of a valid file.  :func:`read_capture` then
keeps every complete record and sets ``truncated``; anything else that is not a capture
(bad magic, a record that does not decode, records after the trailer) raises
:class:`CaptureError` with a one-line ``"<path>: <defect>"`` message.
"""

from __future__ import annotations

import bisect
import mmap
import os
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import BinaryIO

from google.protobuf.message import DecodeError

from profiler.errors import SframeProfError
from profiler.model import Mapping, RawSample
from profiler.proto import capture_pb2

MAGIC = b"SFPCAP1\n"
# 2: samples in packed SampleBatch records, KernelSymbols; version 1 files still read.
FORMAT_VERSION = 2
# A length prefix above this is corruption, not a record cut short.
MAX_RECORD_BYTES = 1 << 30


class CaptureError(SframeProfError):
    """A file that is not a readable capture; the message is ``"<path>: <defect>"``."""


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """Which file was mapped: enough to tell later whether the file on disk changed."""

    build_id: str = ""   # hex GNU build ID, "" if none
    dev: int = 0
    inode: int = 0
    size: int = 0

    @classmethod
    def of_path(cls, path: str, build_id: str = "") -> FileIdentity | None:
        """The identity of the file now at `path`, or None if it cannot be stat'ed."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(build_id, st.st_dev, st.st_ino, st.st_size)


@dataclass(slots=True)
class CaptureHeader:
    arch: str                     # "x86_64" or "aarch64"
    period_ns: int = 0
    frequency_hz: int = 0
    start_ns: int = 0             # wall clock, ns since the epoch
    hostname: str = ""
    kernel_release: str = ""
    pac_mask: int | None = None
    pids: tuple[int, ...] = ()
    command: tuple[str, ...] = ()
    stack_bytes: int = 0
    version: int = FORMAT_VERSION

    @classmethod
    def here(cls, arch: str, **fields: object) -> CaptureHeader:
        """A header for a capture starting now on this machine."""
        uname = os.uname()
        header = cls(arch, start_ns=time.time_ns(), hostname=os.uname().nodename,
                     kernel_release=uname.release)
        for name, value in fields.items():
            setattr(header, name, value)
        return header


@dataclass(frozen=True, slots=True)
class MapsSnapshot:
    pid: int
    time_ns: int
    mappings: tuple[Mapping, ...]
    identities: tuple[FileIdentity | None, ...]   # one per mapping


@dataclass(frozen=True, slots=True)
class MemoryBlob:
    pid: int
    start: int
    data: bytes
    name: str = ""


@dataclass(frozen=True, slots=True)
class FileBlob:
    path: str
    data: bytes
    identity: FileIdentity | None = None


# -- writing ------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _identity_msg(msg: capture_pb2.FileIdentity, ident: FileIdentity) -> None:
    msg.build_id = ident.build_id
    msg.dev = ident.dev
    msg.inode = ident.inode
    msg.size = ident.size


# SampleBatch.packed, one sample (see proto/capture.proto): pid, tid, cpu, regs present,
# comm length, kernel pcs, time_ns, stack_base, pc, sp, fp, lr, stack length.
_PACKED = struct.Struct("<IIIBBHQQQQQQI")
_PACKED_REGS = ("pc", "sp", "fp", "lr")
_REG_BIT = {name: 1 << i for i, name in enumerate(_PACKED_REGS)}
BATCH_SAMPLES = 256          # a batch is written when it has this many samples
BATCH_BYTES = 1 << 20        # ... or this many bytes


def _pack_sample(sample: RawSample) -> bytes | None:
    """`sample` in the packed layout, or None if it does not fit (other registers)."""
    regs = sample.regs
    mask = 0
    for name in regs:
        bit = _REG_BIT.get(name)
        if bit is None:
            return None
        mask |= bit
    comm = sample.comm.encode("utf-8")
    kernel = sample.kernel_stack
    if len(comm) > 255 or len(kernel) > 0xFFFF:
        return None
    head = _PACKED.pack(sample.pid, sample.tid, sample.cpu, mask, len(comm), len(kernel),
                        sample.time_ns, sample.stack_base, regs.get("pc", 0),
                        regs.get("sp", 0), regs.get("fp", 0), regs.get("lr", 0),
                        len(sample.stack))
    return b"".join((head, comm, struct.pack(f"<{len(kernel)}Q", *kernel), sample.stack))


class CaptureWriter:
    """Appends records to a new capture file; see the module docstring.

    Samples are buffered into packed batches; a batch is written when it is full,
    before any other record, and by flush() and close().
    """

    def __init__(self, path: str | os.PathLike[str], header: CaptureHeader) -> None:
        self.path = os.fspath(path)
        self.samples_written = 0
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._out: BinaryIO | None = open(self.path, "wb")  # closed by close()
        self._out.write(MAGIC)
        rec = capture_pb2.Record()
        h = rec.header
        h.version = header.version
        h.arch = header.arch
        h.hostname = header.hostname
        h.kernel_release = header.kernel_release
        h.start_time_ns = header.start_ns
        h.frequency_hz = header.frequency_hz
        h.period_ns = header.period_ns
        if header.pac_mask is not None:
            h.pac_mask = header.pac_mask
        h.pids.extend(header.pids)
        h.command.extend(header.command)
        h.stack_bytes = header.stack_bytes
        self._write(rec)
        self.flush()

    def _write(self, rec: capture_pb2.Record) -> None:
        if self._out is None:
            raise ValueError(f"{self.path}: capture already closed")
        if self._batch:
            self._write_batch()
        self._write_body(rec.SerializeToString(deterministic=True))

    def _write_batch(self) -> None:
        rec = capture_pb2.Record()
        rec.samples.count = len(self._batch)
        rec.samples.packed = b"".join(self._batch)
        self._batch = []
        self._batch_bytes = 0
        self._write_body(rec.SerializeToString(deterministic=True))

    def _write_body(self, body: bytes) -> None:
        assert self._out is not None
        self._out.write(_varint(len(body)))
        self._out.write(body)

    def add_maps(self, pid: int, mappings: Sequence[Mapping],
                 identities: Sequence[FileIdentity | None] | None = None,
                 time_ns: int | None = None) -> None:
        """Record the memory map of `pid` (now, unless `time_ns` says when it was read).

        `identities`, if given, has one entry per mapping (None for anonymous and
        pseudo mappings).
        """
        if identities is not None and len(identities) != len(mappings):
            raise ValueError(f"{len(identities)} identities for {len(mappings)} mappings")
        rec = capture_pb2.Record()
        snap = rec.maps
        snap.pid = pid
        snap.time_ns = time.time_ns() if time_ns is None else time_ns
        for i, m in enumerate(mappings):
            entry = snap.mappings.add(start=m.start, end=m.end, offset=m.offset,
                                      perms=m.perms, path=m.path)
            ident = identities[i] if identities is not None else None
            if ident is not None:
                _identity_msg(entry.identity, ident)
        self._write(rec)
        self.flush()  # few and precious: on disk before the samples that need them

    def add_sample(self, sample: RawSample) -> None:
        """Record one sample.  Its `mappings` and `memory` are not stored: record them
        with add_maps / add_memory."""
        if self._out is None:
            raise ValueError(f"{self.path}: capture already closed")
        packed = _pack_sample(sample)
        if packed is not None:
            self._batch.append(packed)
            self._batch_bytes += len(packed)
            self.samples_written += 1
            if len(self._batch) >= BATCH_SAMPLES or self._batch_bytes >= BATCH_BYTES:
                self._write_batch()
            return
        rec = capture_pb2.Record()
        s = rec.sample
        s.pid = sample.pid
        s.tid = sample.tid
        s.cpu = sample.cpu
        s.time_ns = sample.time_ns
        s.comm = sample.comm
        for name, value in sample.regs.items():
            s.regs[name] = value
        s.stack_base = sample.stack_base
        s.stack = sample.stack
        s.kernel_stack.extend(sample.kernel_stack)
        self._write(rec)
        self.samples_written += 1

    def add_memory(self, pid: int, start: int, data: bytes, name: str = "") -> None:
        """Record readable memory of `pid` at `start`, e.g. its vDSO image."""
        rec = capture_pb2.Record()
        rec.memory.pid = pid
        rec.memory.start = start
        rec.memory.data = data
        rec.memory.name = name
        self._write(rec)

    def add_file(self, path: str, data: bytes, identity: FileIdentity | None = None) -> None:
        """Record a whole object file, for one that may be gone when the capture is read."""
        rec = capture_pb2.Record()
        rec.file.path = path
        rec.file.data = data
        if identity is not None:
            _identity_msg(rec.file.identity, identity)
        self._write(rec)

    def add_kernel_symbols(self, symbols: dict[int, tuple[str, int]]) -> None:
        """Record names for kernel pcs: {pc: (symbol, offset)}."""
        rec = capture_pb2.Record()
        ks = rec.kernel_symbols
        for pc in sorted(symbols):
            name, offset = symbols[pc]
            ks.pcs.append(pc)
            ks.names.append(name)
            ks.offsets.append(offset)
        self._write(rec)

    def flush(self) -> None:
        if self._out is not None:
            if self._batch:
                self._write_batch()
            self._out.flush()

    def close(self, lost: int = 0, samples: int | None = None,
              end_ns: int | None = None) -> None:
        """Write the trailer and close the file.  `samples` defaults to the number of
        add_sample calls."""
        rec = capture_pb2.Record()
        rec.trailer.lost_samples = lost
        rec.trailer.samples = self.samples_written if samples is None else samples
        rec.trailer.end_time_ns = time.time_ns() if end_ns is None else end_ns
        self._write(rec)
        self._close_file()

    def _close_file(self) -> None:
        if self._out is not None:
            if self._batch:
                try:
                    self._write_batch()
                except OSError:
                    pass
            self._out.close()
            self._out = None

    @property
    def closed(self) -> bool:
        return self._out is None

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.closed:
            return
        if exc_type is None:
            self.close()
        else:
            self._close_file()  # no trailer: readers will see a truncated capture


# -- reading ------------------------------------------------------------------------


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


class PackedSamples:
    """One SampleBatch's bytes; iterating gives each sample's fields, checked:
    (pid, tid, cpu, regs present, comm, kernel pcs, time_ns, stack_base, pc, sp, fp,
    lr, offset of the stack bytes in `buf`, stack length).  CaptureError if the
    samples do not fill the batch exactly."""

    __slots__ = ("path", "buf", "n", "start", "end")

    def __init__(self, path: str, buf: bytes | mmap.mmap, n: int, start: int,
                 end: int) -> None:
        self.path = path
        self.buf = buf        # the samples are buf[start:end]; offsets are into buf
        self.n = n
        self.start = start
        self.end = end

    def _corrupt(self, what: str) -> CaptureError:
        return CaptureError(f"{self.path}: sample batch at offset {self.start} is corrupt "
                            f"({what})")

    def __iter__(self) -> Iterator[tuple[int, int, int, int, str, tuple[int, ...], int, int,
                                         int, int, int, int, int, int]]:
        buf, n = self.buf, self.n
        unpack = _PACKED.unpack_from
        head = _PACKED.size
        comms: dict[bytes, str] = {}
        kstructs: dict[int, struct.Struct] = {}
        pos = self.start
        size = self.end
        for i in range(n):
            if pos + head > size:
                raise self._corrupt(f"packed sample {i} of {n} cut short")
            (pid, tid, cpu, mask, clen, nk, time_ns, base, pc, sp, fp, lr,
             slen) = unpack(buf, pos)
            if mask & ~0xF:
                raise self._corrupt(f"packed sample {i} of {n}: unknown register bits "
                                    f"0x{mask:x}")
            if pos + head + clen + 8 * nk + slen > size:
                raise self._corrupt(f"packed sample {i} of {n}: cut short")
            pos += head
            cb = buf[pos:pos + clen]
            comm = comms.get(cb)
            if comm is None:
                comm = comms[cb] = cb.decode("utf-8", "replace")
            pos += clen
            kernel: tuple[int, ...] = ()
            if nk:
                ks = kstructs.get(nk)
                if ks is None:
                    ks = kstructs[nk] = struct.Struct(f"<{nk}Q")
                kernel = ks.unpack_from(buf, pos)
                pos += 8 * nk
            yield (pid, tid, cpu, mask, comm, kernel, time_ns, base, pc, sp, fp, lr, pos,
                   slen)
            pos += slen
        if pos != size:
            raise self._corrupt(f"{n} packed samples take {pos - self.start} bytes, the "
                                f"batch has {size - self.start}")


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
            capture._sample_spans.append((pos, pos + length, 0, False))
            capture._samples += 1
        elif kind == "samples":
            # The packed samples are checked as they are read (iter_samples).
            if batch is not None:
                n, pstart, pend = batch
                span = (pstart, pend, n, True)
            else:
                n = rec.samples.count
                span = (pos, pos + length, n, False)
            if n:
                capture._sample_spans.append(span)
                capture._samples += n
        elif kind == "kernel_symbols":
            ks = rec.kernel_symbols
            if not len(ks.pcs) == len(ks.names) == len(ks.offsets):
                raise CaptureError(f"{where} is corrupt (kernel symbols: {len(ks.pcs)} pcs, "
                                   f"{len(ks.names)} names, {len(ks.offsets)} offsets)")
            table = capture.kernel_symbols if capture.kernel_symbols is not None else {}
            table.update(zip(ks.pcs, zip(ks.names, ks.offsets)))
            capture.kernel_symbols = table
        elif kind == "maps":
            snap = _snapshot(rec.maps)
            snaps = capture.maps.setdefault(snap.pid, [])
            times = capture._map_times.setdefault(snap.pid, [])
            i = bisect.bisect_right(times, snap.time_ns)  # equal times keep file order
            snaps.insert(i, snap)
            times.insert(i, snap.time_ns)
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
