#!/usr/bin/env python3
"""Fuzz the DWARF CFI reader: .eh_frame / .eh_frame_hdr / .debug_frame bytes.

Input layout (little endian)::

    [0]      flags: bit 0 aarch64 (else x86_64), bit 1 use the .eh_frame_hdr index
    [1:9]    .eh_frame address           [9:17]  .eh_frame_hdr address
    [17:21]  .eh_frame length n          [21:25] .eh_frame_hdr length m
    then n bytes of .eh_frame, m bytes of .eh_frame_hdr, the rest is .debug_frame

The table is built the way CfiTable.from_elf builds it, then asked for every FDE
range and for rules at the edges of the first ones.  Seeds: the CFI of every program
in tests/targets and slices (whole entries, from the start) of the glibc and ld.so
.eh_frame in tests/snapshots/root, both architectures.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator

import common

with common.instrumented("profiler"):
    from profiler.unwind.cfi import CfiError, CfiTable
    from profiler.unwind.cfi.eh_frame_hdr import parse_eh_frame_hdr as _parse_eh_frame_hdr
    from profiler.unwind.cfi.entries import Section as _Section
    from profiler.unwind.elf import SHT_NOBITS
    from profiler.unwind.objfile import ObjectFile

TARGET = "cfi"
MAX_LEN = 65536
MAX_QUERIES = 32
_HEAD = struct.Struct("<BQQII")


def pack(aarch64: bool, use_hdr: bool, eh_addr: int, eh: bytes, hdr_addr: int = 0,
         hdr: bytes = b"", debug_frame: bytes = b"") -> bytes:
    flags = (1 if aarch64 else 0) | (2 if use_hdr else 0)
    return _HEAD.pack(flags, eh_addr, hdr_addr, len(eh), len(hdr)) + eh + hdr + debug_frame


def build(data: bytes) -> CfiTable | None:
    if len(data) < _HEAD.size:
        return None
    flags, eh_addr, hdr_addr, n, m = _HEAD.unpack_from(data)
    rest = data[_HEAD.size:]
    eh, rest = rest[:n], rest[n:]
    hdr, debug_frame = rest[:m], rest[m:]
    machine = "EM_AARCH64" if flags & 1 else "EM_X86_64"
    table = CfiTable("fuzz.so", machine)
    if eh:
        s = _Section(table, ".eh_frame", eh, eh_addr, True, 8, True)
        table._sections.append(s)
        if flags & 2 and hdr:
            idx = _parse_eh_frame_hdr(hdr, hdr_addr, s)
            if idx is not None:
                s.set_hdr_index(*idx)
    if debug_frame:
        table._sections.append(_Section(table, ".debug_frame", debug_frame, 0, False, 8, True))
    return table


def one_input(data: bytes) -> None:
    table = build(data)
    if table is None:
        return
    try:
        ranges = table.fde_ranges()
    except CfiError as exc:
        common.check_one_line(exc)
        ranges = []
    # One lookup per function decodes its rows; the last row is checked at its end.
    pcs = [pc for lo, hi in ranges[:MAX_QUERIES] for pc in (lo, hi - 1)]
    for pc in pcs:
        try:
            table.find(pc)
        except CfiError as exc:
            common.check_one_line(exc)
    try:
        table.has_pc(pcs[0] if pcs else 0)
    except CfiError as exc:
        common.check_one_line(exc)


def _sections(path: str) -> tuple[bool, dict[str, tuple[int, bytes]]] | None:
    try:
        obj = ObjectFile.open(path)
    except Exception:  # noqa: BLE001
        return None
    out = {}
    for name in (".eh_frame", ".eh_frame_hdr", ".debug_frame"):
        sec = obj.elf.find_section(name)
        if sec is not None and sec.sh_type != SHT_NOBITS:
            out[name] = (sec.sh_addr, obj.elf.section_data(sec))
    return obj.arch == "aarch64", out


def _entry_prefix(eh: bytes, limit: int) -> bytes:
    """The longest run of whole entries from the start that fits in `limit` bytes."""
    pos = 0
    while pos + 4 <= len(eh):
        (length,) = struct.unpack_from("<I", eh, pos)
        if length in (0, 0xFFFFFFFF) or pos + 4 + length > limit:
            break
        pos += 4 + length
    return eh[:pos] + b"\0\0\0\0"


def seeds() -> Iterator[tuple[str, bytes]]:
    progs = sorted(p for p in common.TARGETS.glob("*/*")
                   if p.is_file() and (p.name == "prog" or p.name.endswith(".so")))
    for prog in progs:
        got = _sections(str(prog))
        if got is None:
            continue
        a64, secs = got
        if ".eh_frame" not in secs:
            continue
        eh_addr, eh = secs[".eh_frame"]
        hdr_addr, hdr = secs.get(".eh_frame_hdr", (0, b""))
        df = secs.get(".debug_frame", (0, b""))[1]
        name = f"{prog.parent.name}-{prog.name}"
        blob = pack(a64, True, eh_addr, eh, hdr_addr, hdr, df)
        if len(blob) <= MAX_LEN:
            yield name, blob
    root = common.SNAPSHOTS / "root"
    for lib in sorted(root.glob("usr/**/*.so*")):
        got = _sections(str(lib))
        if got is None:
            continue
        a64, secs = got
        eh_addr, eh = secs[".eh_frame"]
        for limit in (2048, 8192, 32768):
            yield (f"{lib.parent.name}-{lib.name}-{limit}",
                   pack(a64, False, eh_addr, _entry_prefix(eh, limit)))
        # The same entries read as .debug_frame would be (CIE ids differ: a CfiError).
        yield f"{lib.parent.name}-{lib.name}-as-debug", pack(
            a64, False, 0, b"", debug_frame=_entry_prefix(eh, 4096))


if __name__ == "__main__":
    common.main(sys.modules[__name__])
