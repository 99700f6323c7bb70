#!/usr/bin/env python3
"""Fuzz the unwinder with random registers and stack bytes against real tables.

The base samples are ground-truth snapshots (tests/snapshots, 39 variants: SFrame V1-V3,
x86_64 and aarch64, with their real programs, libc and ld.so under tests/snapshots/root
and the vDSO image).  The input picks one and edits it::

    [0:2]  snapshot index (modulo the number loaded)
    then operations, each an opcode byte and its operands (little endian):
      0 off:u16 val:u8          set one stack byte
      1 off:u16 val:u64         set one 8-byte stack word
      2 off:u16 map:u8 d:u16    set a stack word to an address in an executable mapping
      3 reg:u8 val:u64          set a register (pc, sp, fp, lr, ...)
      4 reg:u8 d:s16            add to a register
      5 len:u16                 cut the stack copy
      6 src:u16 dst:u16         copy a stack word to another slot
      7 mask:u64                set the aarch64 PAC mask

Checked: unwind() returns an UnwoundStack (never raises), reliable exactly when there is
no reason, the reason is a known code, at most MAX_FRAMES + 2 frames, frame 0 is the
sampled pc; and with no edits the chain is the one the unmodified snapshot gives.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator

import common

with common.instrumented("profiler"):
    from profiler.capture.snapshots import read_snapshots
    from profiler.model import RawSample
    from profiler.reasons import REASONS
    from profiler.unwind.objfile import ObjectCache
    from profiler.unwind.space import AddressSpace
    from profiler.unwind.unwinder import MAX_FRAMES, Unwinder

TARGET = "unwind"
MAX_LEN = 512
PER_FILE = 8
MAX_OPS = 32

_samples: list[tuple[RawSample, tuple[int, ...]]] = []
_unwinder: Unwinder | None = None
_baseline: dict[int, object] = {}


def _load() -> Unwinder:
    global _unwinder
    if _unwinder is None:
        _unwinder = Unwinder(ObjectCache(str(common.SNAPSHOTS / "root")))
        for path in sorted(common.SNAPSHOTS.glob("*.jsonl.gz")):
            rows = list(read_snapshots(str(path)))
            step = max(1, len(rows) // PER_FILE)
            for _, _obj, s in rows[::step][:PER_FILE]:
                execs = tuple(m.start for m in s.mappings if m.executable)
                _samples.append((s, execs))
    return _unwinder


def edit(data: bytes) -> RawSample | None:
    """The sample `data` selects, with its edits applied."""
    if len(data) < 2:
        return None
    base, execs = _samples[int.from_bytes(data[:2], "little") % len(_samples)]
    stack = bytearray(base.stack)
    regs = dict(base.regs)
    names = sorted(regs)
    pac = base.pac_mask
    pos, n = 2, len(data)

    def take(fmt: str) -> tuple[int, ...] | None:
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > n:
            return None
        vals = struct.unpack_from(fmt, data, pos)
        pos += size
        return vals

    ops = 0
    while pos < n and ops < MAX_OPS:
        op = data[pos] % 8
        pos += 1
        ops += 1
        if op == 0 and (a := take("<HB")) and stack:
            stack[a[0] % len(stack)] = a[1]
        elif op == 1 and (a := take("<HQ")) and len(stack) >= 8:
            off = (a[0] % len(stack)) & ~7
            stack[off:off + 8] = a[1].to_bytes(8, "little")
        elif op == 2 and (a := take("<HBH")) and len(stack) >= 8 and execs:
            off = (a[0] % len(stack)) & ~7
            stack[off:off + 8] = (execs[a[1] % len(execs)] + a[2]).to_bytes(8, "little")
        elif op == 3 and (a := take("<BQ")):
            regs[names[a[0] % len(names)]] = a[1]
        elif op == 4 and (a := take("<Bh")):
            r = names[a[0] % len(names)]
            regs[r] = (regs[r] + a[1]) & 0xFFFFFFFFFFFFFFFF
        elif op == 5 and (a := take("<H")):
            del stack[a[0] % (len(stack) + 1):]
        elif op == 6 and (a := take("<HH")) and len(stack) >= 8:
            src, dst = (a[0] % len(stack)) & ~7, (a[1] % len(stack)) & ~7
            stack[dst:dst + 8] = stack[src:src + 8]
        elif op == 7 and (a := take("<Q")):
            pac = a[0]
    return RawSample(base.arch, regs, base.stack_base, bytes(stack), base.mappings,
                     base.memory, pac)


def one_input(data: bytes) -> None:
    unwinder = _load()
    sample = edit(data)
    if sample is None:
        return
    st = unwinder.unwind(sample, unwinder.space_for(sample))
    if st.reliable == bool(st.reason):
        raise common.InvariantError(f"reliable={st.reliable} with reason {st.reason!r}")
    if st.reason and st.reason not in REASONS:
        raise common.InvariantError(f"unknown reason {st.reason!r}")
    if len(st.frames) > MAX_FRAMES + 2:
        raise common.InvariantError(f"{len(st.frames)} frames")
    if st.frames and st.frames[0].pc != sample.regs.get("pc", 0):
        raise common.InvariantError("frame 0 is not the sampled pc")
    if len(data) == 2:   # no edits: the same chain as a fresh unwinder gives
        key = int.from_bytes(data, "little") % len(_samples)
        want = _baseline.get(key)
        if want is None:
            fresh = Unwinder(unwinder.objects)
            want = _baseline[key] = fresh.unwind(sample, AddressSpace(
                sample.mappings, sample.memory, unwinder.objects))
        if st != want:
            raise common.InvariantError(f"cached unwind differs: {st} != {want}")


def seeds() -> Iterator[tuple[str, bytes]]:
    _load()
    for i, (s, _execs) in enumerate(_samples):
        yield f"{i:03d}-{s.arch}", i.to_bytes(2, "little")
    # A few edits of each kind on the first samples of both architectures.
    a64 = next(i for i, (s, _) in enumerate(_samples) if s.arch == "aarch64")
    for i in (0, a64):
        b = i.to_bytes(2, "little")
        yield f"{i:03d}-byte", b + bytes([0]) + struct.pack("<HB", 16, 0x41)
        yield f"{i:03d}-word", b + bytes([1]) + struct.pack("<HQ", 24, 0x1122334455667788)
        yield f"{i:03d}-ptr", b + bytes([2]) + struct.pack("<HBH", 8, 0, 0x40)
        yield f"{i:03d}-reg", b + bytes([3]) + struct.pack("<BQ", 0, 0)
        yield f"{i:03d}-regadd", b + bytes([4]) + struct.pack("<Bh", 1, -8)
        yield f"{i:03d}-cut", b + bytes([5]) + struct.pack("<H", 64)
        yield f"{i:03d}-copy", b + bytes([6]) + struct.pack("<HH", 0, 8)
        yield f"{i:03d}-pac", b + bytes([7]) + struct.pack("<Q", 0x007F000000000000)


if __name__ == "__main__":
    common.main(sys.modules[__name__])
