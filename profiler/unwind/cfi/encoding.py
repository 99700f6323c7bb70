"""Values inside CFI sections: fixed-size fields, DW_EH_PE pointers, CIE augmentations.

``.eh_frame`` and ``.eh_frame_hdr`` store addresses as "encoded pointers": a
``DW_EH_PE_*`` byte names the format (absolute, 2/4/8-byte, (S)LEB128) in its low
nibble and how the value applies (as is, relative to the field's own address, ...)
in bits 4-6 (the LSB "Exception Frame" chapter).  A CIE's augmentation string says
which of its optional fields follow (``z``: a length, ``R``: the FDE pointer
encoding, ``P``: a personality pointer, ``L``: the LSDA encoding) and flags the
frame (``S``: signal frame; ``B``/``G``: aarch64 B-key / MTE).

:class:`Reader` reads these fields from one section's bytes, bounded by an end
offset that callers give (the end of the entry being decoded); a field that does not
fit raises :data:`Bad`.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from profiler.leb128 import LebError, sleb, uleb

# A defect found while decoding; the table wraps it into CfiError with context.
Bad = LebError

# DW_EH_PE pointer encodings: the value format (low nibble) ...
DW_EH_PE_absptr = 0x00
DW_EH_PE_uleb128 = 0x01
DW_EH_PE_udata2 = 0x02
DW_EH_PE_udata4 = 0x03
DW_EH_PE_udata8 = 0x04
DW_EH_PE_sleb128 = 0x09
DW_EH_PE_sdata2 = 0x0A
DW_EH_PE_sdata4 = 0x0B
DW_EH_PE_sdata8 = 0x0C
# ... how it applies (bits 4-6) ...
DW_EH_PE_pcrel = 0x10
DW_EH_PE_datarel = 0x30
DW_EH_PE_aligned = 0x50
# ... and two flags.
DW_EH_PE_indirect = 0x80
DW_EH_PE_omit = 0xFF

FORMAT_MASK = 0x0F
APPLICATION_MASK = 0x70

_FIXED_SIZES = {
    DW_EH_PE_udata2: 2, DW_EH_PE_udata4: 4, DW_EH_PE_udata8: 8,
    DW_EH_PE_sdata2: 2, DW_EH_PE_sdata4: 4, DW_EH_PE_sdata8: 8,
}
# Formats a CIE's 'R' may name for its FDEs' pointers.
_FDE_FORMATS = frozenset(_FIXED_SIZES) | {DW_EH_PE_absptr, DW_EH_PE_uleb128,
                                          DW_EH_PE_sleb128}


class Reader:
    """Field reader over one section's bytes, loaded at link-time address `addr`."""

    def __init__(self, data: bytes, addr: int, addr_size: int, little: bool) -> None:
        self.data = data
        self.size = len(data)
        self.addr = addr
        self.addr_size = addr_size
        self.addr_mask = (1 << (8 * addr_size)) - 1
        self.little = little
        e = "<" if little else ">"
        self.u16 = struct.Struct(e + "H")
        self.u32 = struct.Struct(e + "I")
        self.u64 = struct.Struct(e + "Q")
        self._formats = {
            DW_EH_PE_udata2: self.u16, DW_EH_PE_udata4: self.u32,
            DW_EH_PE_udata8: self.u64, DW_EH_PE_sdata2: struct.Struct(e + "h"),
            DW_EH_PE_sdata4: struct.Struct(e + "i"), DW_EH_PE_sdata8: struct.Struct(e + "q"),
        }

    def fixed(self, st: struct.Struct, pos: int, end: int) -> tuple[int, int]:
        """(value, position after it) of the fixed-size field `st` at pos."""
        nxt = pos + st.size
        if nxt > end:
            raise Bad(f"truncated field at offset 0x{pos:x}")
        val: int = st.unpack_from(self.data, pos)[0]
        return val, nxt

    def address(self, pos: int, end: int, size: int | None = None) -> tuple[int, int]:
        """An unsigned address of `size` bytes (default: the file's address size)."""
        size = self.addr_size if size is None else size
        if size == 8:
            return self.fixed(self.u64, pos, end)
        if size == 4:
            return self.fixed(self.u32, pos, end)
        if size == 2:
            return self.fixed(self.u16, pos, end)
        raise Bad(f"unsupported address size {size}")

    def encoded(self, enc: int, pos: int, end: int, *, apply: bool = True) -> tuple[int, int]:
        """Read the DW_EH_PE-encoded pointer at offset pos: (value, position after it).

        With `apply`, a pc-relative value is resolved against the field's address;
        other applications (and indirect pointers) are not supported.
        """
        if enc == DW_EH_PE_omit:
            raise Bad("omitted pointer where one is required")
        fmt = enc & FORMAT_MASK
        app = enc & APPLICATION_MASK
        if app == DW_EH_PE_aligned:
            # An absolute pointer, aligned to the address size.
            pos += (-(self.addr + pos)) % self.addr_size
            fmt = DW_EH_PE_absptr
            app = 0
        field_pos = pos
        val, pos = self._value(enc, fmt, pos, end)
        if apply:
            if app == DW_EH_PE_pcrel:
                val += self.addr + field_pos
            elif app != 0:
                raise Bad(f"unsupported pointer encoding 0x{enc:02x}")
            if enc & DW_EH_PE_indirect:
                raise Bad(f"unsupported indirect pointer encoding 0x{enc:02x}")
        return val & self.addr_mask, pos

    def _value(self, enc: int, fmt: int, pos: int, end: int) -> tuple[int, int]:
        st = self._formats.get(fmt)
        if st is not None:
            return self.fixed(st, pos, end)
        if fmt == DW_EH_PE_absptr:
            return self.address(pos, end)
        if fmt == DW_EH_PE_uleb128:
            return uleb(self.data, pos, end)
        if fmt == DW_EH_PE_sleb128:
            return sleb(self.data, pos, end)
        raise Bad(f"unknown pointer encoding 0x{enc:02x}")

    def skip_encoded(self, enc: int, pos: int, end: int) -> int:
        """Skip an encoded pointer without interpreting its application."""
        if enc == DW_EH_PE_omit:
            return pos
        fmt = enc & FORMAT_MASK
        if enc & APPLICATION_MASK == DW_EH_PE_aligned:
            pos += (-(self.addr + pos)) % self.addr_size
            fmt = DW_EH_PE_absptr
        if fmt in (DW_EH_PE_uleb128, DW_EH_PE_sleb128):
            return uleb(self.data, pos, end)[1]
        size = self.addr_size if fmt == DW_EH_PE_absptr else _FIXED_SIZES.get(fmt)
        if size is None:
            raise Bad(f"unknown pointer encoding 0x{enc:02x}")
        if pos + size > end:
            raise Bad("truncated encoded pointer")
        return pos + size


class Augmentation(NamedTuple):
    """What a CIE's augmentation says about its FDEs and frames."""

    fde_enc: int   # DW_EH_PE encoding of the FDEs' pc_begin / set_loc ('R')
    has_z: bool    # FDEs carry augmentation data with a length ('z')
    signal: bool   # signal frame ('S')


def read_augmentation(r: Reader, aug: str, pos: int, end: int) -> tuple[Augmentation, int]:
    """Decode the augmentation data of a CIE whose string is `aug`, at pos (after the
    return-address register): (what it says, position after it).

    Letters after one this reader does not know are skipped by the ``z`` length; an
    ``R`` among them would be lost, so it is an error.
    """
    fde_enc = DW_EH_PE_absptr
    has_z = signal = False
    if aug and not aug.startswith("eh"):
        if aug[0] != "z":
            raise Bad(f"unsupported augmentation {aug!r}")
        has_z = True
        aug_len, pos = uleb(r.data, pos, end)
        aug_end = pos + aug_len
        if aug_end > end:
            raise Bad(f"augmentation data runs past entry end ({aug!r})")
        known = True
        for ch in aug[1:]:
            if ch in "SBG":  # S: signal frame; B: aarch64 B-key; G: aarch64 MTE
                signal = signal or ch == "S"
                continue
            if not known:
                if ch == "R":
                    raise Bad(f"augmentation {aug!r}: unknown letter before 'R'")
                continue
            if ch not in "LRP":
                known = False  # the data positions that follow are unknown
                continue
            if pos >= aug_end:
                raise Bad(f"augmentation {aug!r}: truncated data")
            if ch == "R":
                fde_enc = r.data[pos]
                pos += 1
            elif ch == "P":
                pos = r.skip_encoded(r.data[pos], pos + 1, aug_end)
            else:  # L: the LSDA encoding byte
                pos += 1
        pos = aug_end
    elif aug and aug.startswith("eh") and len(aug) > 2:
        raise Bad(f"unsupported augmentation {aug!r}")
    if fde_enc != DW_EH_PE_omit and (fde_enc & FORMAT_MASK) not in _FDE_FORMATS:
        raise Bad(f"unknown FDE pointer encoding 0x{fde_enc:02x}")
    return Augmentation(fde_enc, has_z, signal), pos
