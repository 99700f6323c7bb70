"""Writing raw capture files (the format: profiler.capture.fileformat).

Samples are packed (profiler.capture.packed) into SampleBatch records, flushed every
BATCH_SAMPLES samples or BATCH_BYTES bytes, before any other record, and by flush().
A writer killed mid-run leaves a prefix of a valid file, which the reader accepts as
a truncated capture.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from types import TracebackType
from typing import BinaryIO

from profiler.capture.fileformat import MAGIC, CaptureHeader, FileIdentity
from profiler.capture.packed import pack_sample
from profiler.model import Mapping, RawSample
from profiler.proto import capture_pb2

__all__ = ["BATCH_BYTES", "BATCH_SAMPLES", "CaptureWriter"]

BATCH_SAMPLES = 256          # a batch is written when it has this many samples
BATCH_BYTES = 1 << 20        # ... or this many bytes


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
        packed = pack_sample(sample)
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
