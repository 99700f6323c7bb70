"""ELF symbol table rows as the unwinder needs them: the sized functions (to bound a
function without unwind data) and the dynamic exports (to follow PLT and ifunc calls).

The symbolizer's name tables (profiler.symbolize.symbols) read the same tables with
their own ranking of aliases; both go through ElfFile.read_symbols.
"""

from __future__ import annotations

from profiler.unwind.elf import (
    SHN_UNDEF,
    SHT_DYNSYM,
    STT_FUNC,
    STT_GNU_IFUNC,
    ElfError,
    ElfFile,
    c_string,
)

# Bounds on the tables one file can make us read: dynamic relocations, or symbol
# entries (.symtab, .dynsym).
MAX_RELOCS = 1 << 20


def sized_functions(elf: ElfFile, limit: int) -> list[tuple[int, int]]:
    """Sorted (start, size) of the defined STT_FUNC symbols with a size, from .symtab,
    else .dynsym (the first `limit` entries); [] when neither is usable."""
    for secname in (".symtab", ".dynsym"):
        sec = elf.find_section(secname)
        if sec is None:
            continue
        try:
            rows = elf.read_symbols(sec, limit)
        except ElfError:
            continue
        found = sorted({(value, size) for _n, value, size, info, _o, shndx in rows
                        if info & 0xF == STT_FUNC and size and shndx != SHN_UNDEF})
        if found:
            return found
    return []


def dynamic_exports(elf: ElfFile, limit: int) -> dict[str, list[tuple[int, bool]]]:
    """{name: [(link-time value, is an ifunc), ...]} of the defined, nonzero entries
    among the first `limit` of `.dynsym` ({} when there is none).  ElfError when the
    table or its strings are damaged."""
    out: dict[str, list[tuple[int, bool]]] = {}
    sec = elf.find_section(".dynsym")
    if sec is None or sec.sh_type != SHT_DYNSYM:
        return out
    rows = elf.read_symbols(sec, limit)
    strtab = elf.section_data(elf.linked_section(sec))
    for noff, value, _size, info, _other, shndx in rows:
        if shndx == SHN_UNDEF or not value:
            continue
        out.setdefault(c_string(strtab, noff), []).append((value, info & 0xF == STT_GNU_IFUNC))
    return out
