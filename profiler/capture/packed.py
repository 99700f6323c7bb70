"""The packed sample layout of capture format version 2 (SampleBatch.packed in
proto/capture.proto): a fixed little-endian header per sample, then its comm, kernel
pcs and stack bytes.  pack_sample writes one sample; PackedSamples reads a batch back,
in place (from a file mapping), checking that the samples fill it exactly.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator

from profiler.capture.fileformat import CaptureError
from profiler.model import RawSample

__all__ = ["PACKED", "PackedSamples", "pack_sample"]

# SampleBatch.packed, one sample (see proto/capture.proto): pid, tid, cpu, regs present,
# comm length, kernel pcs, time_ns, stack_base, pc, sp, fp, lr, stack length.
PACKED = struct.Struct("<IIIBBHQQQQQQI")
_PACKED_REGS = ("pc", "sp", "fp", "lr")
_REG_BIT = {name: 1 << i for i, name in enumerate(_PACKED_REGS)}


def pack_sample(sample: RawSample) -> bytes | None:
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
    head = PACKED.pack(sample.pid, sample.tid, sample.cpu, mask, len(comm), len(kernel),
                       sample.time_ns, sample.stack_base, regs.get("pc", 0),
                       regs.get("sp", 0), regs.get("fp", 0), regs.get("lr", 0),
                       len(sample.stack))
    return b"".join((head, comm, struct.pack(f"<{len(kernel)}Q", *kernel), sample.stack))


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
        unpack = PACKED.unpack_from
        head = PACKED.size
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
