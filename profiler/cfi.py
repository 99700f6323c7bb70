"""DWARF CFI reader: ``.eh_frame`` / ``.debug_frame`` -> format-neutral :class:`Rule`.

This is the fallback unwind table for ELF files without ``.sframe`` (today libc,
ld.so, libstdc++ and the vDSO).  profiler.unwind.elf reads the ELF container (header,
section table, section bytes); the CFI itself (CIE/FDE headers, augmentations,
pointer encodings and the call-frame instructions) is decoded here, byte by byte,
because pyelftools' CFI decoder

* parses every entry of the section up front (0.4 s for the host libc, 0.6 s with
  the row tables) and has no public way to parse the single FDE found through
  ``.eh_frame_hdr``;
* does not track ``DW_CFA_AARCH64_negate_ra_state`` (it decodes and drops it);
* (0.33) scales ``DW_CFA_def_cfa_sf`` by the code, not the data, alignment factor;
  fails on ``DW_CFA_GNU_args_size`` when building a row table (a ``ValueError``
  from formatting its own error message; libc has such an FDE); rejects
  ``DW_CFA_GNU_negative_offset_extended`` and
  ``DW_CFA_AARCH64_negate_ra_state_with_pc``; asserts on FDE pointer encodings
  other than absptr/pcrel and on CIEs with an augmentation string but no ``R``;
  and loses letters such as ``S`` that follow one it does not know (``zRBS``:
  aarch64 B-key signal frame).

Only the three columns the unwinder needs are tracked: the CFA, the return-address
column (the CIE's ``return_address_register``: 16 on x86_64, 30 on aarch64) and the
frame-pointer register (rbp 6 / x29 29), plus the aarch64 "RA signed" state.

Lookup: with ``.eh_frame_hdr`` the sorted search table is binary-searched and only
the FDE found (and its CIE) is decoded; without it (and for ``.debug_frame``) the
entry headers are scanned once on first use.  Decoded FDE row tables are memoized.
All addresses are link-time addresses (pc-relative pointers are resolved against
the section's ``sh_addr``).

``.eh_frame`` is consulted first; ``.debug_frame`` (if present) is consulted for a
pc that no ``.eh_frame`` FDE covers (a file compiled without unwind tables but with
``-g`` still has ``.eh_frame`` FDEs for its crt files).

Mapping to :class:`Rule` (RA = the CIE's return column, FP = rbp / x29):

* CFA ``reg+off`` -> ``cfa_deref=False``; ``DW_OP_breg<r> off; DW_OP_deref`` (or
  ``bregx``) -> ``cfa_deref=True``; any other CFA expression -> ``find()`` is None.
* ``offset(n)`` -> LOC_CFA_DEREF n; ``undefined`` -> LOC_UNDEFINED; not mentioned /
  ``same_value`` -> LOC_SAME (for a non-standard return column, e.g.
  ``.cfi_return_column x15``, the RA is in that register: LOC_REG reg 15);
  ``register(r)`` -> LOC_REG r+0; ``val_offset(n)`` with a register CFA ->
  LOC_REG cfa_reg+(cfa_off+n); ``expression``/``val_expression`` of the form
  ``DW_OP_breg<r> off`` -> LOC_REG_DEREF / LOC_REG r+off (glibc's x86_64
  ``__restore_rt`` and the DRAP prologue use these); anything else -> None.
* aarch64 ``DW_CFA_AARCH64_negate_ra_state`` (and ``..._with_pc``) toggles
  ``mangled_ra``; remember/restore_state save and restore it with the columns.
* CIE augmentation ``S`` -> ``signal=True``; ``z``, ``L``, ``P``, ``R``, ``B``,
  ``G`` and old ``eh`` are parsed; unknown letters after ``R`` are skipped by the
  ``z`` length.

Not supported (CfiError): relocatable objects, machines other than x86_64/aarch64,
FDE pointer encodings other than absolute/pc-relative, unknown CFA opcodes.  Files
without section headers (CFI reachable only through PT_GNU_EH_FRAME) give None.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_right
from typing import NamedTuple, TypeGuard

from profiler.leb128 import LebError
from profiler.leb128 import sleb as _sleb
from profiler.leb128 import uleb as _uleb
from profiler.unwind import cfa_expr
from profiler.unwind.elf import ET_REL, SHT_NOBITS, ElfError, ElfFile, Section
from profiler.unwind.rules import (
    LOC_CFA_DEREF,
    LOC_REG,
    LOC_REG_DEREF,
    LOC_SAME,
    LOC_UNDEFINED,
    X86_64_RIP,
    Rule,
)

__all__ = ["CfiError", "CfiTable"]


class CfiError(Exception):
    """Malformed or unsupported CFI; the message is one line naming file and defect."""


# Internal: a defect found while decoding; wrapped into CfiError with context.
_Bad = LebError


# e_machine -> (frame-pointer, stack-pointer, return-address (rip / x30) DWARF register)
_ARCHES = {
    "EM_X86_64": (6, 7, 16),
    "EM_AARCH64": (29, 31, 30),
}

# DW_EH_PE pointer encodings
_PE_OMIT = 0xFF
_PE_ABSPTR = 0x00
_PE_ULEB128 = 0x01
_PE_UDATA2 = 0x02
_PE_UDATA4 = 0x03
_PE_UDATA8 = 0x04
_PE_SLEB128 = 0x09
_PE_SDATA2 = 0x0A
_PE_SDATA4 = 0x0B
_PE_SDATA8 = 0x0C
_PE_PCREL = 0x10
_PE_DATAREL = 0x30
_PE_ALIGNED = 0x50
_PE_INDIRECT = 0x80

# Register-rule kinds of the interpreter.  A rule is (kind, arg); None = not mentioned.
_R_UNDEF = 0       # (_R_UNDEF, 0)
_R_SAME = 1        # (_R_SAME, 0)
_R_OFFSET = 2      # (_R_OFFSET, n)       saved at CFA + n
_R_VAL_OFFSET = 3  # (_R_VAL_OFFSET, n)   value is CFA + n
_R_REGISTER = 4    # (_R_REGISTER, r)     value is in register r
_R_EXPR = 5        # (_R_EXPR, bytes)     saved at the address an expression computes
_R_VAL_EXPR = 6    # (_R_VAL_EXPR, bytes) value is what an expression computes
_RegRule = tuple[int, int | bytes] | None
# CFA rule: (reg, off) | expression bytes | None (undefined or invalid)
_CfaRule = tuple[int, int] | bytes | None
# Row state as hashed for the Rule cache: (cfa, ra, fp, ra_signed)
_Key = tuple[_CfaRule, _RegRule, _RegRule, bool]
_Loc = tuple[int, int, int]  # (LOC_* kind, reg, off)

_MAX_STATE_STACK = 1024
# Bounds on what one section may make the reader do: call-frame instructions run for
# one CIE or FDE (real ones have tens, hand-written assembly a few hundred), and
# entries indexed by the one-time scan of a section without .eh_frame_hdr.
MAX_CFI_INSTRUCTIONS = 1 << 16
MAX_CFI_ENTRIES = 1 << 22


def _simple_breg(expr: bytes, want_deref: bool) -> tuple[int, int] | None:
    """Match ``DW_OP_breg<r> off`` / ``DW_OP_bregx r off`` (+ ``DW_OP_deref`` if asked).

    Returns (reg, off) or None if the expression has any other shape.
    """
    try:
        n = len(expr)
        if n < 2:
            return None
        op = expr[0]
        if 0x70 <= op <= 0x8F:
            reg = op - 0x70
            off, pos = _sleb(expr, 1, n)
        elif op == 0x92:
            reg, pos = _uleb(expr, 1, n)
            off, pos = _sleb(expr, pos, n)
        else:
            return None
        if want_deref:
            if pos == n - 1 and expr[pos] == 0x06:  # DW_OP_deref
                return reg, off
            return None
        return (reg, off) if pos == n else None
    except _Bad:
        return None


class _State:
    """Interpreter state: current location and the three tracked columns."""

    __slots__ = ("loc", "cfa", "ra", "fp", "neg")

    def __init__(self) -> None:
        self.loc = 0
        self.cfa: _CfaRule = None
        self.ra: _RegRule = None
        self.fp: _RegRule = None
        self.neg = False  # aarch64: RA signed (odd number of negate_ra_state)

    def copy(self) -> _State:
        s = _State()
        s.loc, s.cfa, s.ra, s.fp, s.neg = self.loc, self.cfa, self.ra, self.fp, self.neg
        return s

    def key(self) -> _Key:
        return (self.cfa, self.ra, self.fp, self.neg)


class _Cie:
    __slots__ = (
        "offset", "version", "augmentation", "code_align", "data_align", "ra_reg",
        "fde_enc", "has_z", "signal", "addr_size", "seg_size", "instr_start",
        "instr_end", "initial",
    )
    offset: int
    version: int
    augmentation: str
    code_align: int
    data_align: int
    ra_reg: int
    fde_enc: int
    has_z: bool
    signal: bool
    addr_size: int
    seg_size: int
    instr_start: int
    instr_end: int
    initial: _State | None


class _Fde:
    __slots__ = ("offset", "cie", "start", "end", "instr_start", "instr_end", "rows")
    offset: int
    cie: _Cie
    start: int
    end: int
    instr_start: int
    instr_end: int
    rows: tuple[list[int], list[Rule | PcRule | None]] | None  # memoized (locs, rules)

    def __init__(self) -> None:
        self.rows = None


class _Section:
    """One CFI section (.eh_frame or .debug_frame) with its lookup index."""

    def __init__(self, table: CfiTable, secname: str, data: bytes, addr: int,
                 is_eh: bool, addr_size: int, little: bool) -> None:
        self.table = table
        self.secname = secname
        self.data = data
        self.size = len(data)
        self.addr = addr
        self.is_eh = is_eh
        self.addr_size = addr_size
        self.addr_mask = (1 << (8 * addr_size)) - 1
        e = "<" if little else ">"
        self.u16 = struct.Struct(e + "H")
        self.s16 = struct.Struct(e + "h")
        self.u32 = struct.Struct(e + "I")
        self.s32 = struct.Struct(e + "i")
        self.u64 = struct.Struct(e + "Q")
        self.s64 = struct.Struct(e + "q")
        self.little = little
        # Memoized entries; a str is the message of a defect found earlier.
        self._cies: dict[int, _Cie | str] = {}
        self._fdes: dict[int, _Fde | str] = {}
        # Index: sorted starts, parallel FDE offsets, and (scan only) ends.
        self.starts: list[int] | None = None
        self.offs: list[int] | None = None
        self.ends: list[int] | None = None
        self.index_kind = "none"
        self._index_error: str | None = None
        self.rule_cache: dict[tuple[bool, int, _Key], Rule | PcRule | None] = {}

    # -- low-level readers --------------------------------------------------
    def _fixed(self, st: struct.Struct, pos: int, end: int) -> tuple[int, int]:
        nxt = pos + st.size
        if nxt > end:
            raise _Bad(f"truncated field at offset 0x{pos:x}")
        val: int = st.unpack_from(self.data, pos)[0]
        return val, nxt

    def _addr(self, pos: int, end: int, size: int | None = None) -> tuple[int, int]:
        size = self.addr_size if size is None else size
        if size == 8:
            return self._fixed(self.u64, pos, end)
        if size == 4:
            return self._fixed(self.u32, pos, end)
        if size == 2:
            return self._fixed(self.u16, pos, end)
        raise _Bad(f"unsupported address size {size}")

    def _encoded(self, enc: int, pos: int, end: int, *, apply: bool = True) -> tuple[int, int]:
        """Read a DW_EH_PE-encoded pointer at section offset pos."""
        if enc == _PE_OMIT:
            raise _Bad("omitted pointer where one is required")
        fmt = enc & 0x0F
        app = enc & 0x70
        field_pos = pos
        if app == _PE_ALIGNED:
            # Value is an absolute pointer aligned to the address size.
            field_addr = self.addr + pos
            pad = (-field_addr) % self.addr_size
            pos += pad
            field_pos = pos
            fmt = _PE_ABSPTR
            app = 0
        if fmt == _PE_ABSPTR:
            val, pos = self._addr(pos, end)
        elif fmt == _PE_ULEB128:
            val, pos = _uleb(self.data, pos, end)
        elif fmt == _PE_UDATA2:
            val, pos = self._fixed(self.u16, pos, end)
        elif fmt == _PE_UDATA4:
            val, pos = self._fixed(self.u32, pos, end)
        elif fmt == _PE_UDATA8:
            val, pos = self._fixed(self.u64, pos, end)
        elif fmt == _PE_SLEB128:
            val, pos = _sleb(self.data, pos, end)
        elif fmt == _PE_SDATA2:
            val, pos = self._fixed(self.s16, pos, end)
        elif fmt == _PE_SDATA4:
            val, pos = self._fixed(self.s32, pos, end)
        elif fmt == _PE_SDATA8:
            val, pos = self._fixed(self.s64, pos, end)
        else:
            raise _Bad(f"unknown pointer encoding 0x{enc:02x}")
        if apply:
            if app == _PE_PCREL:
                val += self.addr + field_pos
            elif app != 0:
                raise _Bad(f"unsupported pointer encoding 0x{enc:02x}")
            if enc & _PE_INDIRECT:
                raise _Bad(f"unsupported indirect pointer encoding 0x{enc:02x}")
        return val & self.addr_mask, pos

    def _skip_encoded(self, enc: int, pos: int, end: int) -> int:
        """Skip over an encoded pointer without interpreting its application."""
        if enc == _PE_OMIT:
            return pos
        fmt = enc & 0x0F
        if enc & 0x70 == _PE_ALIGNED:
            pos += (-(self.addr + pos)) % self.addr_size
            fmt = _PE_ABSPTR
        if fmt in (_PE_ULEB128, _PE_SLEB128):
            return _uleb(self.data, pos, end)[1]
        size = {_PE_ABSPTR: self.addr_size, _PE_UDATA2: 2, _PE_UDATA4: 4, _PE_UDATA8: 8,
                _PE_SDATA2: 2, _PE_SDATA4: 4, _PE_SDATA8: 8}.get(fmt)
        if size is None:
            raise _Bad(f"unknown pointer encoding 0x{enc:02x}")
        if pos + size > end:
            raise _Bad("truncated encoded pointer")
        return pos + size

    # -- entry headers ------------------------------------------------------
    def _entry_header(self, off: int) -> tuple[int, int, int, int, int]:
        """Return (end, id_pos, id_value, id_size, after_id) of the entry at off.

        end == off + 4 with id_size == 0 marks an .eh_frame zero terminator.
        """
        if off < 0 or off + 4 > self.size:
            raise _Bad(f"entry offset 0x{off:x} outside section (size 0x{self.size:x})")
        length, pos = self._fixed(self.u32, off, self.size)
        id_size = 4
        if length == 0xFFFFFFFF:
            length, pos = self._fixed(self.u64, pos, self.size)
            id_size = 8
        elif length >= 0xFFFFFFF0:
            raise _Bad(f"reserved initial length 0x{length:x} at offset 0x{off:x}")
        if length == 0:
            return pos, pos, 0, 0, pos
        end = pos + length
        if end > self.size:
            raise _Bad(f"entry at offset 0x{off:x} length 0x{length:x} runs past section end")
        if length < id_size:
            raise _Bad(f"entry at offset 0x{off:x} too short ({length} bytes)")
        id_val, after = self._fixed(self.u64 if id_size == 8 else self.u32, pos, end)
        return end, pos, id_val, id_size, after

    def _is_cie_id(self, id_val: int, id_size: int) -> bool:
        if self.is_eh:
            return id_val == 0
        return id_val == (0xFFFFFFFF if id_size == 4 else 0xFFFFFFFFFFFFFFFF)

    def cie_at(self, off: int) -> _Cie:
        got = self._cies.get(off)
        if got is not None:
            if isinstance(got, str):
                raise _Bad(got)
            return got
        try:
            cie = self._parse_cie(off)
        except _Bad as e:
            self._cies[off] = msg = f"CIE at 0x{off:x}: {e}"
            raise _Bad(msg) from None
        self._cies[off] = cie
        return cie

    def _parse_cie(self, off: int) -> _Cie:
        data = self.data
        end, _, id_val, id_size, pos = self._entry_header(off)
        if id_size == 0:
            raise _Bad("is a zero terminator, not a CIE")
        if not self._is_cie_id(id_val, id_size):
            raise _Bad("is not a CIE")
        c = _Cie()
        c.offset = off
        if pos >= end:
            raise _Bad("truncated header")
        c.version = data[pos]
        pos += 1
        if c.version not in (1, 3, 4):
            raise _Bad(f"unsupported version {c.version}")
        nul = data.find(b"\0", pos, end)
        if nul < 0:
            raise _Bad("unterminated augmentation string")
        aug = data[pos:nul].decode("latin-1")
        pos = nul + 1
        c.augmentation = aug
        c.addr_size = self.addr_size
        c.seg_size = 0
        if aug.startswith("eh"):  # old GCC: an eh_ptr follows the string
            pos += self.addr_size
        if c.version == 4:
            if pos + 2 > end:
                raise _Bad("truncated header")
            c.addr_size = data[pos]
            c.seg_size = data[pos + 1]
            pos += 2
            if c.addr_size not in (2, 4, 8):
                raise _Bad(f"unsupported address size {c.addr_size}")
            if c.seg_size not in (0, 1, 2, 4, 8):
                raise _Bad(f"unsupported segment selector size {c.seg_size}")
        c.code_align, pos = _uleb(data, pos, end)
        c.data_align, pos = _sleb(data, pos, end)
        if c.version == 1:
            if pos >= end:
                raise _Bad("truncated header")
            c.ra_reg = data[pos]
            pos += 1
        else:
            c.ra_reg, pos = _uleb(data, pos, end)
        c.fde_enc = _PE_ABSPTR
        c.has_z = False
        c.signal = False
        if aug and not aug.startswith("eh"):
            if aug[0] != "z":
                raise _Bad(f"unsupported augmentation {aug!r}")
            c.has_z = True
            aug_len, pos = _uleb(data, pos, end)
            aug_end = pos + aug_len
            if aug_end > end:
                raise _Bad(f"augmentation data runs past entry end ({aug!r})")
            known = True
            for ch in aug[1:]:
                if ch in "SBG":
                    # S: signal frame; B: aarch64 B-key; G: aarch64 MTE tagged frame.
                    if ch == "S":
                        c.signal = True
                    continue
                if not known:
                    if ch == "R":
                        raise _Bad(f"augmentation {aug!r}: unknown letter before 'R'")
                    continue
                if ch == "L":
                    if pos >= aug_end:
                        raise _Bad(f"augmentation {aug!r}: truncated data")
                    pos += 1
                elif ch == "R":
                    if pos >= aug_end:
                        raise _Bad(f"augmentation {aug!r}: truncated data")
                    c.fde_enc = data[pos]
                    pos += 1
                elif ch == "P":
                    if pos >= aug_end:
                        raise _Bad(f"augmentation {aug!r}: truncated data")
                    penc = data[pos]
                    pos = self._skip_encoded(penc, pos + 1, aug_end)
                else:
                    known = False  # remaining data positions unknown; skip by length
            pos = aug_end
        elif aug and aug.startswith("eh") and len(aug) > 2:
            raise _Bad(f"unsupported augmentation {aug!r}")
        if c.fde_enc != _PE_OMIT and (c.fde_enc & 0x0F) not in (
                _PE_ABSPTR, _PE_UDATA2, _PE_UDATA4, _PE_UDATA8, _PE_SDATA2, _PE_SDATA4,
                _PE_SDATA8, _PE_ULEB128, _PE_SLEB128):
            raise _Bad(f"unknown FDE pointer encoding 0x{c.fde_enc:02x}")
        c.instr_start = pos
        c.instr_end = end
        c.initial = None
        return c

    def fde_at(self, off: int) -> _Fde:
        got = self._fdes.get(off)
        if got is not None:
            if isinstance(got, str):
                raise _Bad(got)
            return got
        try:
            fde = self._parse_fde(off)
        except _Bad as e:
            self._fdes[off] = msg = f"FDE at 0x{off:x}: {e}"
            raise _Bad(msg) from None
        self._fdes[off] = fde
        return fde

    def _parse_fde(self, off: int) -> _Fde:
        end, id_pos, id_val, id_size, pos = self._entry_header(off)
        if id_size == 0:
            raise _Bad("is a zero terminator, not an FDE")
        if self._is_cie_id(id_val, id_size):
            raise _Bad("is a CIE, not an FDE")
        cie_off = id_pos - id_val if self.is_eh else id_val
        if cie_off < 0 or cie_off >= self.size:
            raise _Bad(f"CIE pointer 0x{id_val:x} outside section")
        cie = self.cie_at(cie_off)
        f = _Fde()
        f.offset = off
        f.cie = cie
        if self.is_eh:
            enc = cie.fde_enc
            f.start, pos = self._encoded(enc, pos, end)
            rng, pos = self._encoded(enc & 0x0F, pos, end, apply=False)
        else:
            if cie.seg_size:
                pos += cie.seg_size
            f.start, pos = self._addr(pos, end, cie.addr_size)
            rng, pos = self._addr(pos, end, cie.addr_size)
        if cie.has_z:
            aug_len, pos = _uleb(self.data, pos, end)
            pos += aug_len
            if pos > end:
                raise _Bad("augmentation data runs past entry end")
        f.end = f.start + rng
        f.instr_start = pos
        f.instr_end = end
        return f

    # -- index ----------------------------------------------------------------
    def set_hdr_index(self, starts: list[int], offs: list[int]) -> None:
        self.starts = starts
        self.offs = offs
        self.ends = None
        self.index_kind = "eh_frame_hdr"

    def _ensure_index(self) -> tuple[list[int], list[int], list[int] | None]:
        if self.starts is None or self.offs is None:
            if self._index_error is not None:
                raise _Bad(self._index_error)
            try:
                self._scan()
            except _Bad as e:
                self._index_error = str(e)
                raise
        assert self.starts is not None and self.offs is not None
        return self.starts, self.offs, self.ends

    def _scan(self) -> None:
        """One pass over all entry headers (no instruction decoding)."""
        items: list[tuple[int, int, int]] = []
        off = 0
        size = self.size
        while off < size:
            if size - off < 4:
                raise _Bad(f"{size - off} trailing bytes at offset 0x{off:x}")
            if len(items) >= MAX_CFI_ENTRIES:
                raise _Bad(f"more than {MAX_CFI_ENTRIES} FDEs")
            end, _, id_val, id_size, _ = self._entry_header(off)
            if id_size == 0:
                if self.is_eh:
                    break  # zero terminator
                off = end
                continue
            if not self._is_cie_id(id_val, id_size):
                fde = self.fde_at(off)
                if fde.end > fde.start:
                    items.append((fde.start, fde.end, off))
            off = end
        items.sort()
        self.starts = [s for s, _, _ in items]
        self.ends = [e for _, e, _ in items]
        self.offs = [o for _, _, o in items]
        self.index_kind = "scan"

    def lookup(self, pc: int) -> _Fde | None:
        starts, offs, ends = self._ensure_index()
        i = bisect_right(starts, pc) - 1
        if i < 0:
            return None
        s = starts[i]
        # Among entries sharing the greatest start <= pc (zero-length or duplicate
        # FDEs), take the one that covers pc.
        while i >= 0 and starts[i] == s:
            if ends is not None:
                if pc < ends[i]:
                    return self.fde_at(offs[i])
            else:
                fde = self.fde_at(offs[i])
                if fde.start <= pc < fde.end:
                    return fde
            i -= 1
        return None

    def ranges(self) -> list[tuple[int, int]]:
        starts, offs, ends = self._ensure_index()
        if ends is not None:
            return list(zip(starts, ends))
        out = []
        for off in offs:
            f = self.fde_at(off)
            out.append((f.start, f.end))
        return out

    # -- instruction interpreter ----------------------------------------------
    def cie_initial(self, cie: _Cie) -> _State:
        if cie.initial is None:
            st = _State()
            try:
                self._run(cie, cie.instr_start, cie.instr_end, st, None, None, 0, 0)
            except _Bad as e:
                raise _Bad(f"CIE at 0x{cie.offset:x}: {e}") from None
            cie.initial = st
        return cie.initial

    def rows(self, fde: _Fde) -> tuple[list[int], list[Rule | PcRule | None]]:
        if fde.rows is None:
            try:
                fde.rows = self._decode_rows(fde)
            except _Bad as e:
                self._fdes[fde.offset] = msg = f"FDE at 0x{fde.offset:x}: {e}"
                raise _Bad(msg) from None
        return fde.rows

    def _decode_rows(self, fde: _Fde) -> tuple[list[int], list[Rule | PcRule | None]]:
        cie = fde.cie
        init = self.cie_initial(cie)
        st = init.copy()
        locs: list[int] = []
        states: list[_Key] = []
        self._run(cie, fde.instr_start, fde.instr_end, st, init, (locs, states),
                  fde.start, fde.end)
        locs.append(st.loc)
        states.append(st.key())
        # Drop rows superseded by a later row at the same location.
        out_locs: list[int] = []
        out_rules: list[Rule | PcRule | None] = []
        for loc, key in zip(locs, states):
            rule = self._rule(cie, key)
            if out_locs and out_locs[-1] == loc:
                out_rules[-1] = rule
            else:
                out_locs.append(loc)
                out_rules.append(rule)
        return out_locs, out_rules

    def _run(self, cie: _Cie, pos: int, end: int, st: _State, init: _State | None,
             out: tuple[list[int], list[_Key]] | None, start: int, fend: int) -> None:
        """Execute CFA instructions [pos, end) on st (init: the CIE's state; None
        while running the CIE itself).  Rows are appended to out at each advance."""
        data = self.data
        caf = cie.code_align
        daf = cie.data_align
        ra = cie.ra_reg
        fp = self.table.fp_reg
        aarch64 = self.table.aarch64
        stack: list[tuple[_CfaRule, _RegRule, _RegRule, bool]] = []
        in_fde = init is not None
        init_ra = init.ra if init is not None else None
        init_fp = init.fp if init is not None else None
        st.loc = start

        def set_reg(reg: int, rule: _RegRule) -> None:
            if reg == ra:
                st.ra = rule
            elif reg == fp:
                st.fp = rule

        def restore(reg: int) -> None:
            if not in_fde:
                raise _Bad("DW_CFA_restore in a CIE")
            if reg == ra:
                st.ra = init_ra
            elif reg == fp:
                st.fp = init_fp

        def advance(delta: int) -> None:
            if out is not None:
                out[0].append(st.loc)
                out[1].append(st.key())
            st.loc += delta

        budget = MAX_CFI_INSTRUCTIONS
        while pos < end:
            budget -= 1
            if budget < 0:
                raise _Bad(f"more than {MAX_CFI_INSTRUCTIONS} call-frame instructions")
            op = data[pos]
            pos += 1
            hi = op & 0xC0
            if hi == 0x40:  # DW_CFA_advance_loc
                advance((op & 0x3F) * caf)
                continue
            if hi == 0x80:  # DW_CFA_offset
                n, pos = _uleb(data, pos, end)
                set_reg(op & 0x3F, (_R_OFFSET, n * daf))
                continue
            if hi == 0xC0:  # DW_CFA_restore
                restore(op & 0x3F)
                continue
            if op == 0x00:  # nop
                continue
            if op == 0x01:  # set_loc
                if self.is_eh:
                    new, pos = self._encoded(cie.fde_enc, pos, end)
                else:
                    new, pos = self._addr(pos, end, cie.addr_size)
                if not in_fde:
                    raise _Bad("DW_CFA_set_loc in a CIE")
                if new < st.loc:
                    raise _Bad(f"DW_CFA_set_loc moves backwards to 0x{new:x}")
                advance(new - st.loc)
            elif op == 0x02:  # advance_loc1
                if pos + 1 > end:
                    raise _Bad("truncated DW_CFA_advance_loc1")
                advance(data[pos] * caf)
                pos += 1
            elif op == 0x03:  # advance_loc2
                d, pos = self._fixed(self.u16, pos, end)
                advance(d * caf)
            elif op == 0x04:  # advance_loc4
                d, pos = self._fixed(self.u32, pos, end)
                advance(d * caf)
            elif op == 0x1D:  # DW_CFA_MIPS_advance_loc8
                d, pos = self._fixed(self.u64, pos, end)
                advance(d * caf)
            elif op == 0x05:  # offset_extended
                reg, pos = _uleb(data, pos, end)
                n, pos = _uleb(data, pos, end)
                set_reg(reg, (_R_OFFSET, n * daf))
            elif op == 0x06:  # restore_extended
                reg, pos = _uleb(data, pos, end)
                restore(reg)
            elif op == 0x07:  # undefined
                reg, pos = _uleb(data, pos, end)
                set_reg(reg, (_R_UNDEF, 0))
            elif op == 0x08:  # same_value
                reg, pos = _uleb(data, pos, end)
                set_reg(reg, (_R_SAME, 0))
            elif op == 0x09:  # register
                reg, pos = _uleb(data, pos, end)
                reg2, pos = _uleb(data, pos, end)
                set_reg(reg, (_R_REGISTER, reg2))
            elif op == 0x0A:  # remember_state
                if len(stack) >= _MAX_STATE_STACK:
                    raise _Bad("DW_CFA_remember_state nested too deeply")
                stack.append((st.cfa, st.ra, st.fp, st.neg))
            elif op == 0x0B:  # restore_state
                if not stack:
                    raise _Bad("DW_CFA_restore_state without DW_CFA_remember_state")
                st.cfa, st.ra, st.fp, st.neg = stack.pop()
            elif op == 0x0C:  # def_cfa
                reg, pos = _uleb(data, pos, end)
                off, pos = _uleb(data, pos, end)
                st.cfa = (reg, off)
            elif op == 0x0D:  # def_cfa_register (keeps the offset)
                reg, pos = _uleb(data, pos, end)
                st.cfa = (reg, st.cfa[1]) if isinstance(st.cfa, tuple) else None
            elif op == 0x0E:  # def_cfa_offset (keeps the register)
                off, pos = _uleb(data, pos, end)
                st.cfa = (st.cfa[0], off) if isinstance(st.cfa, tuple) else None
            elif op == 0x0F:  # def_cfa_expression
                n, pos = _uleb(data, pos, end)
                if pos + n > end:
                    raise _Bad("truncated DW_CFA_def_cfa_expression")
                st.cfa = bytes(data[pos:pos + n])
                pos += n
            elif op == 0x10 or op == 0x16:  # expression / val_expression
                reg, pos = _uleb(data, pos, end)
                n, pos = _uleb(data, pos, end)
                if pos + n > end:
                    raise _Bad("truncated DW_CFA_expression")
                set_reg(reg, (_R_EXPR if op == 0x10 else _R_VAL_EXPR,
                              bytes(data[pos:pos + n])))
                pos += n
            elif op == 0x11:  # offset_extended_sf
                reg, pos = _uleb(data, pos, end)
                n, pos = _sleb(data, pos, end)
                set_reg(reg, (_R_OFFSET, n * daf))
            elif op == 0x12:  # def_cfa_sf
                reg, pos = _uleb(data, pos, end)
                n, pos = _sleb(data, pos, end)
                st.cfa = (reg, n * daf)
            elif op == 0x13:  # def_cfa_offset_sf
                n, pos = _sleb(data, pos, end)
                st.cfa = (st.cfa[0], n * daf) if isinstance(st.cfa, tuple) else None
            elif op == 0x14:  # val_offset
                reg, pos = _uleb(data, pos, end)
                n, pos = _uleb(data, pos, end)
                set_reg(reg, (_R_VAL_OFFSET, n * daf))
            elif op == 0x15:  # val_offset_sf
                reg, pos = _uleb(data, pos, end)
                n, pos = _sleb(data, pos, end)
                set_reg(reg, (_R_VAL_OFFSET, n * daf))
            elif op == 0x2D:
                # aarch64: DW_CFA_AARCH64_negate_ra_state (SPARC: GNU_window_save,
                # meaningless on x86_64 and ignored there).
                if aarch64:
                    st.neg = not st.neg
            elif op == 0x2C and aarch64:
                # DW_CFA_AARCH64_negate_ra_state_with_pc (pac-ret+pc): the RA is
                # signed/unsigned as with negate_ra_state (the pc only changes the
                # modifier, which a stripper does not need).
                st.neg = not st.neg
            elif op == 0x2E:  # GNU_args_size
                _, pos = _uleb(data, pos, end)
            elif op == 0x2F:  # GNU_negative_offset_extended
                reg, pos = _uleb(data, pos, end)
                n, pos = _uleb(data, pos, end)
                set_reg(reg, (_R_OFFSET, -n * daf))
            else:
                raise _Bad(f"unknown CFA opcode 0x{op:02x} at offset 0x{pos - 1:x}")
            if in_fde and st.loc >= fend:
                # Rows beyond the FDE's range can never be selected; stop early.
                # (Remaining instructions cannot change rows inside the range.)
                return

    # -- state -> Rule ----------------------------------------------------------
    def _rule(self, cie: _Cie, key: _Key) -> Rule | PcRule | None:
        ck = (cie.signal, cie.ra_reg, key)
        try:
            return self.rule_cache[ck]
        except KeyError:
            pass
        if cie.ra_reg == self.table.ra_reg:
            ra_same: _Loc = (LOC_SAME, 0, 0)
        else:
            # `.cfi_return_column x15` (glibc aarch64 rawmemchr: "mov x15, x30" ...
            # "ret x15"): an unchanged return column means the RA is in that
            # register, not in the link register.
            ra_same = (LOC_REG, cie.ra_reg, 0)
        # x86_64's rip is DWARF register 16; aarch64 CFA expressions have no pc.
        rule = _make_rule(key, cie.signal, ra_same, -1 if self.table.aarch64 else X86_64_RIP)
        self.rule_cache[ck] = rule
        return rule


class PcRule(NamedTuple):
    """A row whose CFA expression reads the pc (the x86_64 .plt's): `at(pc)` is
    its Rule at one pc (profiler.unwind.cfa_expr)."""

    key: _Key
    signal: bool
    ra_same: _Loc
    pc_reg: int

    def at(self, pc: int) -> Rule | None:
        rule = _make_rule(self.key, self.signal, self.ra_same, self.pc_reg, pc)
        return None if isinstance(rule, PcRule) else rule


def _make_rule(key: _Key, signal: bool, ra_same: _Loc, pc_reg: int,
               pc: int | None = None) -> Rule | PcRule | None:
    cfa, ra, fp, neg = key
    if cfa is None:
        return None
    add = 0
    if isinstance(cfa, tuple):
        cfa_reg, cfa_off = cfa
        deref = False
    else:
        m = _simple_breg(cfa, want_deref=True)
        if m is not None:
            cfa_reg, cfa_off = m
            deref = True
        else:
            try:
                found = cfa_expr.evaluate(cfa, pc_reg, pc)
            except cfa_expr.NeedsPc:
                return PcRule(key, signal, ra_same, pc_reg)
            if found is None:
                return None
            cfa_reg, cfa_off, deref, add = found
    r = _loc(ra, cfa_reg, cfa_off, deref, ra_same)
    f = _loc(fp, cfa_reg, cfa_off, deref, (LOC_SAME, 0, 0))
    if r is None or f is None:
        return None
    return Rule(cfa_reg, cfa_off, deref, r[0], r[1], r[2], f[0], f[1], f[2],
                mangled_ra=neg, signal=signal, cfa_add=add)


def _loc(rule: _RegRule, cfa_reg: int, cfa_off: int, cfa_deref: bool,
         same: _Loc) -> _Loc | None:
    """Register rule -> (LOC_* kind, reg, off), or None if not expressible.

    `same` is the answer for "not mentioned" / DW_CFA_same_value.
    """
    if rule is None:
        return same
    kind, arg = rule
    if isinstance(arg, bytes):
        m = _simple_breg(arg, want_deref=False)
        if m is None:
            return None
        if kind == _R_EXPR:  # saved at reg + off
            return (LOC_REG_DEREF, m[0], m[1])
        return (LOC_REG, m[0], m[1])  # _R_VAL_EXPR: value is reg + off
    if kind == _R_OFFSET:
        return (LOC_CFA_DEREF, 0, arg)
    if kind == _R_SAME:
        return same
    if kind == _R_UNDEF:
        return (LOC_UNDEFINED, 0, 0)
    if kind == _R_REGISTER:
        return (LOC_REG, arg, 0)
    if kind == _R_VAL_OFFSET:
        # value = CFA + n = cfa_reg + cfa_off + n, when the CFA is register-based.
        if cfa_deref:
            return None
        return (LOC_REG, cfa_reg, cfa_off + arg)
    return None


class CfiTable:
    """Unwind rules from .eh_frame (preferred) or .debug_frame of one ELF file."""

    def __init__(self, name: str, machine: str, sections: list[_Section] | None = None):
        self.name = name
        self.machine = machine
        self.fp_reg, self.sp_reg, self.ra_reg = _ARCHES[machine]
        self.aarch64 = machine == "EM_AARCH64"
        self._sections: list[_Section] = sections or []

    # -- construction -----------------------------------------------------------
    @classmethod
    def from_elf(cls, elf: ElfFile, name: str, *,
                 use_eh_frame_hdr: bool = True) -> CfiTable | None:
        """Read the CFI sections of `elf`; None if the file has none.

        Section bytes are copied, so the table does not keep using `elf`'s stream.
        `use_eh_frame_hdr=False` forces the one-time header scan (for tests).
        """
        try:
            return cls._from_elf(elf, name, use_eh_frame_hdr)
        except CfiError:
            raise
        except _Bad as e:
            raise CfiError(_one_line(f"{name}: {e}")) from None
        except ElfError as e:
            raise CfiError(_one_line(f"{name}: cannot read ELF file: {e}")) from None

    @classmethod
    def _from_elf(cls, elf: ElfFile, name: str, use_hdr: bool) -> CfiTable | None:
        machine = elf.machine
        if machine not in _ARCHES:
            raise CfiError(_one_line(f"{name}: unsupported machine {machine}"))
        if elf.e_type == ET_REL:
            raise CfiError(_one_line(
                f"{name}: relocatable object (unrelocated CFI) not supported"))
        addr_size = 8 if elf.elfclass == 64 else 4
        little = elf.little_endian
        table = cls(name, machine)

        def usable(sec: Section | None) -> TypeGuard[Section]:
            return sec is not None and sec.sh_type != SHT_NOBITS and sec.sh_size > 0

        eh = elf.find_section(".eh_frame")
        if usable(eh):
            s = _Section(table, ".eh_frame", elf.section_data(eh), eh.sh_addr, True,
                         addr_size, little)
            table._sections.append(s)
            if use_hdr:
                hdr = elf.find_section(".eh_frame_hdr")
                if usable(hdr):
                    idx = _parse_eh_frame_hdr(elf.section_data(hdr), hdr.sh_addr, s)
                    if idx is not None:
                        s.set_hdr_index(*idx)
        df = elf.find_section(".debug_frame")
        if usable(df):
            table._sections.append(_Section(
                table, ".debug_frame", elf.section_data(df), 0, False, addr_size, little))
        if not table._sections:
            return None
        return table

    def _error(self, sec: _Section, msg: str) -> CfiError:
        return CfiError(_one_line(f"{self.name}: {sec.secname}: {msg}"))

    # -- queries ---------------------------------------------------------------
    @property
    def index_kinds(self) -> list[tuple[str, str]]:
        """(section, "eh_frame_hdr" | "scan" | "none") for each CFI section."""
        return [(s.secname, s.index_kind) for s in self._sections]

    def _lookup(self, pc: int) -> tuple[_Section, _Fde] | None:
        for sec in self._sections:
            try:
                fde = sec.lookup(pc)
            except _Bad as e:
                raise self._error(sec, str(e)) from None
            if fde is not None:
                return sec, fde
        return None

    def fde_range(self, pc: int) -> tuple[int, int] | None:
        """[start, end) of the FDE covering pc, or None."""
        try:
            found = self._lookup(pc)
        except CfiError:
            raise
        except (struct.error, IndexError, ValueError, OverflowError) as e:
            raise CfiError(_one_line(f"{self.name}: malformed CFI near pc 0x{pc:x}: "
                                     f"{type(e).__name__}: {e}")) from None
        return None if found is None else (found[1].start, found[1].end)

    def has_pc(self, pc: int) -> bool:
        """True if an FDE covers pc (its row may still be inexpressible)."""
        return self.fde_range(pc) is not None

    def find(self, pc: int) -> Rule | None:
        """Rule for link-time address pc; None if no FDE covers pc or the row
        uses a rule the Rule type cannot express."""
        try:
            found = self._lookup(pc)
            if found is None:
                return None
            sec, fde = found
            try:
                locs, rules = sec.rows(fde)
            except _Bad as e:
                raise self._error(sec, str(e)) from None
            i = bisect_right(locs, pc) - 1
            if i < 0:  # cannot happen: the first row is at the FDE start
                return None
            rule = rules[i]
            return rule.at(pc) if isinstance(rule, PcRule) else rule
        except CfiError:
            raise
        except (struct.error, IndexError, ValueError, OverflowError) as e:
            raise CfiError(_one_line(f"{self.name}: malformed CFI near pc 0x{pc:x}: "
                                     f"{type(e).__name__}: {e}")) from None

    def fde_ranges(self) -> list[tuple[int, int]]:
        """[start, end) of every indexed FDE (forces the index; for tests/tools)."""
        out: list[tuple[int, int]] = []
        for sec in self._sections:
            try:
                out.extend(sec.ranges())
            except _Bad as e:
                raise self._error(sec, str(e)) from None
        return out


def _one_line(msg: str) -> str:
    return " ".join(msg.split())


def _parse_eh_frame_hdr(hdr: bytes, hdr_addr: int,
                        eh: _Section) -> tuple[list[int], list[int]] | None:
    """Decode .eh_frame_hdr's search table -> (starts, fde offsets) or None.

    None (caller falls back to a scan of .eh_frame) when the header has no table,
    uses an encoding we do not decode, points somewhere other than the .eh_frame
    section, or is not sorted.
    """
    if len(hdr) < 4 or hdr[0] != 1:
        return None
    ptr_enc, count_enc, table_enc = hdr[1], hdr[2], hdr[3]
    if count_enc == _PE_OMIT or table_enc == _PE_OMIT:
        return None
    # Reuse the pointer decoder with a throwaway section view over the header.
    view = _Section(eh.table, ".eh_frame_hdr", hdr, hdr_addr, True, eh.addr_size,
                    eh.little)
    try:
        eh_ptr, pos = view._encoded(ptr_enc, 4, len(hdr))
        count, pos = view._encoded(count_enc, pos, len(hdr))
    except _Bad:
        return None
    if eh_ptr != eh.addr:
        return None
    mask = eh.addr_mask
    if table_enc == 0x3B:  # DW_EH_PE_datarel | DW_EH_PE_sdata4: what GNU ld writes
        nbytes = count * 8
        if pos + nbytes > len(hdr):
            return None
        raw = array("i")
        raw.frombytes(hdr[pos:pos + nbytes])
        if (sys.byteorder == "little") != eh.little:
            raw.byteswap()
        starts = [(hdr_addr + v) & mask for v in raw[0::2]]
        fdes = [(hdr_addr + v) & mask for v in raw[1::2]]
    else:
        app = table_enc & 0x70
        if app not in (0, _PE_DATAREL) or table_enc & _PE_INDIRECT:
            return None
        fmt = table_enc & 0x0F
        if fmt in (_PE_ULEB128, _PE_SLEB128):
            return None
        starts, fdes = [], []
        end = len(hdr)
        try:
            for _ in range(count):
                vals = []
                for _k in range(2):
                    v, pos = view._encoded(fmt, pos, end, apply=False)
                    # _encoded masked the value to the address size: re-sign it.
                    sign = 1 << (8 * eh.addr_size - 1)
                    if fmt in (_PE_SDATA2, _PE_SDATA4, _PE_SDATA8) and v & sign:
                        v -= sign << 1
                    if app == _PE_DATAREL:
                        v += hdr_addr
                    vals.append(v & mask)
                starts.append(vals[0])
                fdes.append(vals[1])
        except _Bad:
            return None
    offs = [a - eh.addr for a in fdes]
    if any(o < 0 or o >= eh.size for o in offs):
        return None
    if any(starts[i] > starts[i + 1] for i in range(len(starts) - 1)):
        return None
    return starts, offs
