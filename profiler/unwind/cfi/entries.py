"""CIE and FDE entries of one CFI section, and the index that finds the FDE of a pc.

An ``.eh_frame`` or ``.debug_frame`` section is a sequence of entries, each a length
and an id: a CIE (common information: alignment factors, return column, augmentation,
initial instructions) or an FDE (a pc range, a pointer back to its CIE and the
instructions for that range).  The two sections differ in the CIE id (0 vs all ones),
in the CIE pointer (relative to the field vs a section offset) and in how FDE
addresses are stored (encoded pointers vs plain addresses).

Lookup: with ``.eh_frame_hdr`` its sorted search table (eh_frame_hdr.py) is
binary-searched and only the FDE found (and its CIE) is decoded; without it (and for
``.debug_frame``) the entry headers are scanned once on first use.  Entries are
parsed on first use and memoized, a defect as its message.  All addresses are
link-time addresses (pc-relative pointers are resolved against the section's
``sh_addr``).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from typing import Protocol, TypeVar

from profiler.leb128 import sleb, uleb

from .encoding import FORMAT_MASK, Bad, Reader, read_augmentation
from .row import Key, Row, State

# Bound on the entries indexed by the one-time scan of a section without .eh_frame_hdr.
MAX_CFI_ENTRIES = 1 << 22


class Machine(Protocol):
    """What decoding a section's rows needs to know of the file's machine."""

    fp_reg: int    # DWARF number of the frame pointer
    ra_reg: int    # ... of the standard return-address column
    aarch64: bool


class Cie:
    """A decoded CIE header (its instructions are run once, on first use)."""

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
    initial: State | None  # the state after the initial instructions (memoized)


class Fde:
    """A decoded FDE header: [start, end) and where its instructions are."""

    __slots__ = ("offset", "cie", "start", "end", "instr_start", "instr_end", "rows")
    offset: int
    cie: Cie
    start: int
    end: int
    instr_start: int
    instr_end: int
    rows: tuple[list[int], list[Row]] | None  # memoized (locs, rules)

    def __init__(self) -> None:
        self.rows = None


class Section(Reader):
    """One CFI section (.eh_frame or .debug_frame) with its lookup index."""

    def __init__(self, table: Machine, secname: str, data: bytes, addr: int,
                 is_eh: bool, addr_size: int, little: bool) -> None:
        super().__init__(data, addr, addr_size, little)
        self.table = table
        self.secname = secname
        self.is_eh = is_eh
        # Memoized entries; a str is the message of a defect found earlier.
        self._cies: dict[int, Cie | str] = {}
        self._fdes: dict[int, Fde | str] = {}
        # Index: sorted starts, parallel FDE offsets, and (scan only) ends.
        self.starts: list[int] | None = None
        self.offs: list[int] | None = None
        self.ends: list[int] | None = None
        self.index_kind = "none"
        self._index_error: str | None = None
        self.rule_cache: dict[tuple[bool, int, Key], Row] = {}

    # -- entry headers ------------------------------------------------------
    def _entry_header(self, off: int) -> tuple[int, int, int, int, int]:
        """Return (end, id_pos, id_value, id_size, after_id) of the entry at off.

        end == off + 4 with id_size == 0 marks an .eh_frame zero terminator.
        """
        if off < 0 or off + 4 > self.size:
            raise Bad(f"entry offset 0x{off:x} outside section (size 0x{self.size:x})")
        length, pos = self.fixed(self.u32, off, self.size)
        id_size = 4
        if length == 0xFFFFFFFF:  # 64-bit DWARF
            length, pos = self.fixed(self.u64, pos, self.size)
            id_size = 8
        elif length >= 0xFFFFFFF0:
            raise Bad(f"reserved initial length 0x{length:x} at offset 0x{off:x}")
        if length == 0:
            return pos, pos, 0, 0, pos
        end = pos + length
        if end > self.size:
            raise Bad(f"entry at offset 0x{off:x} length 0x{length:x} runs past section end")
        if length < id_size:
            raise Bad(f"entry at offset 0x{off:x} too short ({length} bytes)")
        id_val, after = self.fixed(self.u64 if id_size == 8 else self.u32, pos, end)
        return end, pos, id_val, id_size, after

    def _is_cie_id(self, id_val: int, id_size: int) -> bool:
        if self.is_eh:
            return id_val == 0
        return id_val == (0xFFFFFFFF if id_size == 4 else 0xFFFFFFFFFFFFFFFF)

    # -- CIEs and FDEs --------------------------------------------------------
    def cie_at(self, off: int) -> Cie:
        return _memoized(self._cies, off, self._parse_cie, "CIE")

    def _parse_cie(self, off: int) -> Cie:
        data = self.data
        end, _, id_val, id_size, pos = self._entry_header(off)
        if id_size == 0:
            raise Bad("is a zero terminator, not a CIE")
        if not self._is_cie_id(id_val, id_size):
            raise Bad("is not a CIE")
        c = Cie()
        c.offset = off
        if pos >= end:
            raise Bad("truncated header")
        c.version = data[pos]
        pos += 1
        if c.version not in (1, 3, 4):
            raise Bad(f"unsupported version {c.version}")
        nul = data.find(b"\0", pos, end)
        if nul < 0:
            raise Bad("unterminated augmentation string")
        c.augmentation = aug = data[pos:nul].decode("latin-1")
        pos = nul + 1
        c.addr_size = self.addr_size
        c.seg_size = 0
        if aug.startswith("eh"):  # old GCC: an eh_ptr follows the string
            pos += self.addr_size
        if c.version == 4:
            if pos + 2 > end:
                raise Bad("truncated header")
            c.addr_size = data[pos]
            c.seg_size = data[pos + 1]
            pos += 2
            if c.addr_size not in (2, 4, 8):
                raise Bad(f"unsupported address size {c.addr_size}")
            if c.seg_size not in (0, 1, 2, 4, 8):
                raise Bad(f"unsupported segment selector size {c.seg_size}")
        c.code_align, pos = uleb(data, pos, end)
        c.data_align, pos = sleb(data, pos, end)
        if c.version == 1:
            if pos >= end:
                raise Bad("truncated header")
            c.ra_reg = data[pos]
            pos += 1
        else:
            c.ra_reg, pos = uleb(data, pos, end)
        (c.fde_enc, c.has_z, c.signal), pos = read_augmentation(self, aug, pos, end)
        c.instr_start = pos
        c.instr_end = end
        c.initial = None
        return c

    def fde_at(self, off: int) -> Fde:
        return _memoized(self._fdes, off, self._parse_fde, "FDE")

    def fde_failed(self, fde: Fde, msg: str) -> str:
        """Remember that `fde`'s instructions are bad; the message names the FDE."""
        self._fdes[fde.offset] = msg = f"FDE at 0x{fde.offset:x}: {msg}"
        return msg

    def _parse_fde(self, off: int) -> Fde:
        end, id_pos, id_val, id_size, pos = self._entry_header(off)
        if id_size == 0:
            raise Bad("is a zero terminator, not an FDE")
        if self._is_cie_id(id_val, id_size):
            raise Bad("is a CIE, not an FDE")
        cie_off = id_pos - id_val if self.is_eh else id_val
        if cie_off < 0 or cie_off >= self.size:
            raise Bad(f"CIE pointer 0x{id_val:x} outside section")
        cie = self.cie_at(cie_off)
        f = Fde()
        f.offset = off
        f.cie = cie
        if self.is_eh:
            enc = cie.fde_enc
            f.start, pos = self.encoded(enc, pos, end)
            rng, pos = self.encoded(enc & FORMAT_MASK, pos, end, apply=False)
        else:
            if cie.seg_size:
                pos += cie.seg_size
            f.start, pos = self.address(pos, end, cie.addr_size)
            rng, pos = self.address(pos, end, cie.addr_size)
        if cie.has_z:
            aug_len, pos = uleb(self.data, pos, end)
            pos += aug_len
            if pos > end:
                raise Bad("augmentation data runs past entry end")
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
                raise Bad(self._index_error)
            try:
                self._scan()
            except Bad as e:
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
                raise Bad(f"{size - off} trailing bytes at offset 0x{off:x}")
            if len(items) >= MAX_CFI_ENTRIES:
                raise Bad(f"more than {MAX_CFI_ENTRIES} FDEs")
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

    def lookup(self, pc: int) -> Fde | None:
        """The FDE covering pc, or None."""
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
        """[start, end) of every indexed FDE."""
        starts, offs, ends = self._ensure_index()
        if ends is not None:
            return list(zip(starts, ends))
        out = []
        for off in offs:
            f = self.fde_at(off)
            out.append((f.start, f.end))
        return out



_E = TypeVar("_E")


def _memoized(memo: dict[int, _E | str], off: int, parse: Callable[[int], _E],
              kind: str) -> _E:
    """The entry at `off`, parsed once; a damaged one is remembered by its message,
    raised again as Bad on every later lookup."""
    got = memo.get(off)
    if got is not None:
        if isinstance(got, str):
            raise Bad(got)
        return got
    try:
        entry = parse(off)
    except Bad as e:
        memo[off] = msg = f"{kind} at 0x{off:x}: {e}"
        raise Bad(msg) from None
    memo[off] = entry
    return entry
