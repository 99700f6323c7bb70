#!/usr/bin/env python3
"""Fuzz the capture-file reader (profiler.capture.reader) and the report path
behind it: every sample read back is unwound the way `sframe-prof report` does.

Input: the bytes of one capture file (magic + length-prefixed protobuf records).
Seeds: captures written with CaptureWriter from ground-truth snapshots of
tests/snapshots (both architectures; header, maps with file identities, samples,
the vDSO image, a file blob, trailer), and cut-short copies.  Mapped files are looked
up under an empty root, so the unwinder sees registers, stack bytes and maps only.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator

import common

with common.instrumented("profiler"):
    from profiler.capture.fileformat import CaptureError, CaptureHeader, FileIdentity
    from profiler.capture.reader import read_capture
    from profiler.capture.writer import CaptureWriter
    from profiler.model import RawSample
    from profiler.reasons import REASONS
    from profiler.unwind.objfile import ObjectCache
    from profiler.unwind.space import AddressSpace
    from profiler.unwind.unwinder import Unwinder

TARGET = "capture"
MAX_LEN = 32768
MAX_SAMPLES = 32
_DIR = tempfile.mkdtemp(prefix="fuzz-capture-", dir="/dev/shm" if os.path.isdir("/dev/shm")
                        else None)
_PATH = os.path.join(_DIR, "input.sfcap")


def one_input(data: bytes) -> None:
    with open(_PATH, "wb") as f:
        f.write(data)
    try:
        cap = read_capture(_PATH)
        samples = []
        for i, s in enumerate(cap.iter_samples()):
            if i >= MAX_SAMPLES:
                break
            samples.append(s)
    except CaptureError as exc:
        common.check_one_line(exc)
        return
    cap.maps_at(0, 0)
    # A fresh object cache per input: each mutated vDSO image would stay cached.
    unwinder = Unwinder(ObjectCache(_DIR))
    for s in samples:
        if not isinstance(s, RawSample):
            raise common.InvariantError(f"iter_samples gave {type(s).__name__}")
        # As report.py: unwind when the sample has a user stack.
        if s.regs.get("sp") and s.stack:
            space = AddressSpace(s.mappings, s.memory, unwinder.objects)
            st = unwinder.unwind(s, space)
            if st.reliable == bool(st.reason) or (st.reason and st.reason not in REASONS):
                raise common.InvariantError(f"verdict {st.reliable} {st.reason!r}")


def write_capture(path: str, samples: list[RawSample], *, vdso: bool, trailer: bool,
                  file_blob: bytes = b"") -> None:
    s0 = samples[0]
    header = CaptureHeader(s0.arch, period_ns=10_101_010, frequency_hz=99,
                           start_ns=1_764_000_000_000_000_000, hostname="fuzz",
                           kernel_release="6.1.0", pac_mask=s0.pac_mask, pids=(4242,),
                           command=("sframe-prof", "record", "-p", "4242"),
                           stack_bytes=16384)
    w = CaptureWriter(path, header)
    idents = [FileIdentity("ab" * 20, 2049, 1234 + i, 27672) if m.path.startswith("/")
              else None for i, m in enumerate(s0.mappings)]
    w.add_maps(4242, s0.mappings, idents, time_ns=1)
    if vdso:
        for start, blob in s0.memory:
            w.add_memory(4242, start, blob, "[vdso]")
    if file_blob:
        w.add_file("/targets/prog", file_blob, FileIdentity("cd" * 20, 1, 2, len(file_blob)))
    for i, s in enumerate(samples):
        s.pid, s.tid, s.time_ns, s.comm, s.cpu = 4242, 4242 + i, 2 + i, "prog", i % 2
        s.kernel_stack = (0xFFFFFFFF81000000 + 16 * i,)
        w.add_sample(s)
    if trailer:
        w.close(lost=3, end_ns=10**9)
    else:
        w._close_file()


def seeds() -> Iterator[tuple[str, bytes]]:
    from profiler.capture.snapshots import read_snapshots

    picks = {"v3sid-x86_64-O2.jsonl.gz": 3, "v2trixie-aarch64-O2-pacret.jsonl.gz": 3,
             "v1host-x86_64-O2-drap.jsonl.gz": 2}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "seed.sfcap")
        for fname, n in picks.items():
            samples = []
            for _, _obj, s in read_snapshots(str(common.SNAPSHOTS / fname)):
                s.stack = s.stack[:768]      # keep the seeds small
                samples.append(s)
                if len(samples) == n:
                    break
            stem = fname.split(".")[0]
            for vdso, trailer, tag in ((False, True, "full"), (True, True, "vdso"),
                                       (False, False, "no-trailer")):
                write_capture(path, samples, vdso=vdso, trailer=trailer,
                              file_blob=b"\x7fELF" + bytes(60) if tag == "full" else b"")
                with open(path, "rb") as f:
                    data = f.read()
                if len(data) <= MAX_LEN:
                    yield f"{stem}-{tag}", data
                if tag == "full":
                    yield f"{stem}-cut", data[:len(data) * 2 // 3]


if __name__ == "__main__":
    common.main(sys.modules[__name__])
