"""Raw capture files: the format, and the records a capture holds.

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

CaptureWriter is in profiler.capture.writer, read_capture in profiler.capture.reader,
and the packed sample layout of format version 2 (samples in SampleBatch records) in
profiler.capture.packed.  Version 1 files (one Sample record per sample) are still read.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from profiler.errors import SframeProfError
from profiler.model import Mapping

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_RECORD_BYTES",
    "CaptureError",
    "CaptureHeader",
    "FileBlob",
    "FileIdentity",
    "MapsSnapshot",
    "MemoryBlob",
]

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
