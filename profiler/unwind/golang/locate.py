"""Finding a Go executable's .gopclntab: by section name, or by its header's magic
in the data load segments when there is no such section (section headers removed,
or an externally linked PIE, where the table is merged into .data.rel.ro); and the
text start address when the table's own copy is left to a dynamic relocation (PIE).
"""

from __future__ import annotations

import struct

from profiler.unwind.elf import PT_LOAD, SHT_RELA, ElfError, ElfFile
from profiler.unwind.golang.pclntab import MAGIC_118, MAGIC_120, GoPclnError, Pclntab

SECTION_NAMES = (".gopclntab", ".data.rel.ro.gopclntab")
MAX_SCAN = 256 << 20          # bytes of segments searched for a table without a section
MAX_RELA = 1 << 21            # dynamic relocations read to find the text start
_RELATIVE = {"EM_X86_64": 8, "EM_AARCH64": 1027}   # R_X86_64_RELATIVE, R_AARCH64_RELATIVE


def find_pclntab(elf: ElfFile, name: str) -> Pclntab | None:
    """The decoded .gopclntab of `elf`, None when it has none (not a Go 1.18+
    executable); GoPclnError when the table found is damaged."""
    for secname in SECTION_NAMES:
        sec = elf.find_section(secname)
        if sec is not None and sec.sh_size >= 8:
            try:
                data = elf.section_data(sec)
            except ElfError:
                raise GoPclnError(f"{name}: bad .gopclntab: runs past the end of the file") \
                    from None
            return _with_text(elf, Pclntab(data, name), sec.sh_addr)
    names = {sec.name for sec in elf.sections}
    if ".text" in names and not names & {".go.buildinfo", ".note.go.buildid"}:
        return None       # not a Go executable
    # No section headers, or a Go executable linked externally as PIE, where the
    # table is part of .data.rel.ro
    return _scan_segments(elf, name)


def _scan_segments(elf: ElfFile, name: str) -> Pclntab | None:
    """Look for the table header in the non-executable load segments.  A candidate
    must have consistent first and last function records."""
    budget = MAX_SCAN
    for seg in elf.segments:
        if seg.p_type != PT_LOAD or seg.p_flags & 1 or not seg.p_filesz:
            continue
        size = min(seg.p_filesz, budget)
        budget -= size
        try:
            data = elf.read(seg.p_offset, size)
        except ElfError:
            continue
        for magic in (MAGIC_120, MAGIC_118):
            needle = struct.pack("<I", magic) + b"\0\0"
            pos = data.find(needle)
            while 0 <= pos:
                if pos % 8 == 0:
                    try:
                        table = Pclntab(data[pos:], name)
                        table.func_at(0)
                        table.func_at(table.nfunc - 1)
                        return _with_text(elf, table, seg.p_vaddr + pos)
                    except GoPclnError:
                        pass
                pos = data.find(needle, pos + 1)
        if budget <= 0:
            break
    return None


def _with_text(elf: ElfFile, table: Pclntab, addr: int) -> Pclntab:
    """`table` with its text start filled in from the dynamic relocation of the
    header word when the file holds 0 there (position-independent executables)."""
    if table.header_text_start:
        return table
    slot = addr + 8 + 2 * table.ptrsize
    rel_type = _RELATIVE.get(elf.machine)
    for sec in elf.sections:
        if sec.sh_type != SHT_RELA or sec.sh_entsize not in (0, 24):
            continue
        try:
            data = elf.section_data(sec, MAX_RELA * 24)
        except ElfError:
            continue
        for r_offset, r_info, addend in struct.iter_unpack("<QQq", data[:len(data) // 24 * 24]):
            if r_offset == slot and r_info & 0xFFFFFFFF == rel_type:
                return Pclntab(table.data, table.name, addend)
    raise GoPclnError(f"{table.name}: bad .gopclntab: no text start address")
