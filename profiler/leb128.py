"""LEB128 numbers, as DWARF (CFI, expressions) encodes them, bounded to 64 bits."""

from __future__ import annotations

MAX_LEB_BYTES = 10  # 64-bit values; longer encodings are treated as corrupt


class LebError(Exception):
    """A truncated or overlong number (or, in profiler.unwind.cfi, any decoding defect)."""


def uleb(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it) of the unsigned LEB128 at data[pos:end]."""
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise LebError("truncated ULEB128")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if pos - start >= MAX_LEB_BYTES:
            raise LebError("ULEB128 longer than 10 bytes")


def sleb(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it) of the signed LEB128 at data[pos:end]."""
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise LebError("truncated SLEB128")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            if b & 0x40:
                result -= 1 << shift
            return result, pos
        if pos - start >= MAX_LEB_BYTES:
            raise LebError("SLEB128 longer than 10 bytes")
