"""The unwind table of one ELF file from its CFI: the lookup API the unwinder uses.

:class:`CfiTable` holds the file's ``.eh_frame`` (consulted first) and
``.debug_frame`` (consulted for a pc that no ``.eh_frame`` FDE covers: a file compiled
without unwind tables but with ``-g`` still has ``.eh_frame`` FDEs for its crt files).
``find(pc)`` finds the FDE covering pc, decodes its rows on first use (the CIE's
initial instructions, then the FDE's; memoized per FDE) and returns the row's
:class:`Rule`.  Every defect becomes a one-line :class:`CfiError` naming the file,
the section and the entry.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from typing import TypeGuard

from profiler.unwind.elf import ET_REL, SHT_NOBITS, ElfError, ElfFile
from profiler.unwind.elf import Section as ElfSection
from profiler.unwind.rules import LOC_REG, LOC_SAME, X86_64_RIP, Rule

from .eh_frame_hdr import parse_eh_frame_hdr
from .encoding import Bad
from .entries import Cie, Fde, Section
from .interpreter import run
from .row import Key, Loc, PcRule, Row, State, make_rule

__all__ = ["CfiError", "CfiTable"]


class CfiError(Exception):
    """Malformed or unsupported CFI; the message is one line naming file and defect."""


# e_machine -> (frame-pointer, stack-pointer, return-address (rip / x30) DWARF register)
_ARCHES = {
    "EM_X86_64": (6, 7, 16),
    "EM_AARCH64": (29, 31, 30),
}


class CfiTable:
    """Unwind rules from .eh_frame (preferred) or .debug_frame of one ELF file."""

    def __init__(self, name: str, machine: str, sections: list[Section] | None = None):
        self.name = name
        self.machine = machine
        self.fp_reg, self.sp_reg, self.ra_reg = _ARCHES[machine]
        self.aarch64 = machine == "EM_AARCH64"
        self._sections: list[Section] = sections or []

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
        except Bad as e:
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

        def usable(sec: ElfSection | None) -> TypeGuard[ElfSection]:
            return sec is not None and sec.sh_type != SHT_NOBITS and sec.sh_size > 0

        eh = elf.find_section(".eh_frame")
        if usable(eh):
            s = Section(table, ".eh_frame", elf.section_data(eh), eh.sh_addr, True,
                        addr_size, little)
            table._sections.append(s)
            if use_hdr:
                hdr = elf.find_section(".eh_frame_hdr")
                if usable(hdr):
                    idx = parse_eh_frame_hdr(elf.section_data(hdr), hdr.sh_addr, s)
                    if idx is not None:
                        s.set_hdr_index(*idx)
        df = elf.find_section(".debug_frame")
        if usable(df):
            table._sections.append(Section(
                table, ".debug_frame", elf.section_data(df), 0, False, addr_size, little))
        if not table._sections:
            return None
        return table

    def _error(self, sec: Section, msg: str) -> CfiError:
        return CfiError(_one_line(f"{self.name}: {sec.secname}: {msg}"))

    def _malformed(self, pc: int, e: Exception) -> CfiError:
        return CfiError(_one_line(f"{self.name}: malformed CFI near pc 0x{pc:x}: "
                                  f"{type(e).__name__}: {e}"))

    # -- queries ---------------------------------------------------------------
    @property
    def index_kinds(self) -> list[tuple[str, str]]:
        """(section, "eh_frame_hdr" | "scan" | "none") for each CFI section."""
        return [(s.secname, s.index_kind) for s in self._sections]

    def _lookup(self, pc: int) -> tuple[Section, Fde] | None:
        for sec in self._sections:
            try:
                fde = sec.lookup(pc)
            except Bad as e:
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
            raise self._malformed(pc, e) from None
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
                locs, rules = _rows(sec, fde)
            except Bad as e:
                raise self._error(sec, str(e)) from None
            i = bisect_right(locs, pc) - 1
            if i < 0:  # cannot happen: the first row is at the FDE start
                return None
            rule = rules[i]
            return rule.at(pc) if isinstance(rule, PcRule) else rule
        except CfiError:
            raise
        except (struct.error, IndexError, ValueError, OverflowError) as e:
            raise self._malformed(pc, e) from None

    def fde_ranges(self) -> list[tuple[int, int]]:
        """[start, end) of every indexed FDE (forces the index; for tests/tools)."""
        out: list[tuple[int, int]] = []
        for sec in self._sections:
            try:
                out.extend(sec.ranges())
            except Bad as e:
                raise self._error(sec, str(e)) from None
        return out


def _one_line(msg: str) -> str:
    return " ".join(msg.split())


# -- decoded rows ----------------------------------------------------------------
def _cie_initial(sec: Section, cie: Cie) -> State:
    """The state after the CIE's initial instructions (memoized on the CIE)."""
    if cie.initial is None:
        st = State()
        try:
            run(sec, cie, cie.instr_start, cie.instr_end, st, None, None, 0, 0)
        except Bad as e:
            raise Bad(f"CIE at 0x{cie.offset:x}: {e}") from None
        cie.initial = st
    return cie.initial


def _rows(sec: Section, fde: Fde) -> tuple[list[int], list[Row]]:
    """(locations, rules) of the FDE's rows, decoded once; a defect is remembered as
    the FDE's."""
    if fde.rows is None:
        try:
            fde.rows = _decode_rows(sec, fde)
        except Bad as e:
            raise Bad(sec.fde_failed(fde, str(e))) from None
    return fde.rows


def _decode_rows(sec: Section, fde: Fde) -> tuple[list[int], list[Row]]:
    cie = fde.cie
    init = _cie_initial(sec, cie)
    st = init.copy()
    locs: list[int] = []
    states: list[Key] = []
    run(sec, cie, fde.instr_start, fde.instr_end, st, init, (locs, states),
        fde.start, fde.end)
    locs.append(st.loc)
    states.append(st.key())
    # Drop rows superseded by a later row at the same location.
    out_locs: list[int] = []
    out_rules: list[Row] = []
    for loc, key in zip(locs, states):
        rule = _rule(sec, cie, key)
        if out_locs and out_locs[-1] == loc:
            out_rules[-1] = rule
        else:
            out_locs.append(loc)
            out_rules.append(rule)
    return out_locs, out_rules


def _rule(sec: Section, cie: Cie, key: Key) -> Row:
    """The Rule of one row state (memoized per section: rows repeat a lot)."""
    ck = (cie.signal, cie.ra_reg, key)
    try:
        return sec.rule_cache[ck]
    except KeyError:
        pass
    if cie.ra_reg == sec.table.ra_reg:
        ra_same: Loc = (LOC_SAME, 0, 0)
    else:
        # `.cfi_return_column x15` (glibc aarch64 rawmemchr: "mov x15, x30" ...
        # "ret x15"): an unchanged return column means the RA is in that
        # register, not in the link register.
        ra_same = (LOC_REG, cie.ra_reg, 0)
    # x86_64's rip is DWARF register 16; aarch64 CFA expressions have no pc.
    rule = make_rule(key, cie.signal, ra_same, -1 if sec.table.aarch64 else X86_64_RIP)
    sec.rule_cache[ck] = rule
    return rule
