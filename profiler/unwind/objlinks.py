"""How an object links to others at run time (a mixin of ObjectFile): its PLT stubs,
the symbol each GOT slot is relocated to, and the symbols it exports.

The call-edge check (profiler.unwind.calls) follows a call through a PLT stub or a
GOT slot to the function it reaches: the slot's dynamic relocation names a symbol,
and the symbol's definition is looked up in the exports of the mapped objects, the
way the dynamic linker finds it (.gnu.hash), or in a table of all of .dynsym for a
file without a hash table.  An ifunc (R_*_IRELATIVE, STT_GNU_IFUNC) can resolve to
anything, and says so.
"""

from __future__ import annotations

from profiler.unwind.elf import (
    SHF_ALLOC,
    SHN_UNDEF,
    SHT_REL,
    SHT_RELA,
    STT_GNU_IFUNC,
    ElfError,
    ElfFile,
    Section,
)
from profiler.unwind.elfsyms import MAX_RELOCS, dynamic_exports

EXPORT_MEMO = 1 << 17    # names looked up through .gnu.hash, kept per file

_IRELATIVE = {"EM_X86_64": 37, "EM_AARCH64": 1032}   # R_X86_64_IRELATIVE, R_AARCH64_IRELATIVE


class DynamicLinks:
    """PLT stubs, GOT slot relocations and dynamic exports of an ELF object."""

    elf: ElfFile
    machine: str

    def _init_links(self) -> None:
        sections = self.elf.sections
        self.plt_ranges = [
            (sec.sh_addr, sec.sh_addr + sec.sh_size) for sec in sections
            if sec.name == ".plt" and sec.sh_size > 32
        ]
        # Every PLT-like section: .plt, .plt.sec, .plt.got, .iplt (static ifuncs).
        self.stub_ranges = [
            (sec.sh_addr, sec.sh_addr + sec.sh_size) for sec in sections
            if sec.name.startswith((".plt", ".iplt")) and sec.sh_size
        ]
        self._slots: list[tuple[dict[int, int], Section | None]] | None = None
        self._exports: dict[str, list[tuple[int, bool]]] | None = None
        self._export_memo: dict[str, list[tuple[int, bool]]] = {}

    def in_stubs(self, vaddr: int) -> bool:
        """Whether link-time `vaddr` is in a PLT (or ifunc PLT) section."""
        return any(lo <= vaddr < hi for lo, hi in self.stub_ranges)

    def slot_symbol(self, slot: int) -> str | None:
        """The symbol a GOT slot (link-time address) is relocated to: its name, ""
        for an ifunc slot (R_*_IRELATIVE), None when no dynamic relocation names it.
        The relocation tables are read whole once; a name is read when asked for."""
        if self._slots is None:
            self._slots = self._read_slots()
        elf = self.elf
        irelative = _IRELATIVE.get(self.machine, -1)
        for infos, symtab in reversed(self._slots):   # the last relocation wins
            info = infos.get(slot)
            if info is None:
                continue
            if info & elf.r_type_mask == irelative:
                return ""
            sym = info >> elf.r_sym_shift
            if not sym:
                continue
            try:
                if symtab is None:
                    raise ElfError("no symbol table")
                return elf.symbol_name(symtab, sym).decode("utf-8", "replace")
            except ElfError:
                return None     # a damaged table names nothing
        return None

    def _read_slots(self) -> list[tuple[dict[int, int], Section | None]]:
        """slot_symbol's tables: ({r_offset: r_info}, symbol table) of each dynamic
        (SHF_ALLOC) relocation section, in file order."""
        out: list[tuple[dict[int, int], Section | None]] = []
        elf = self.elf
        for sec in elf.sections:
            if sec.sh_type not in (SHT_RELA, SHT_REL) or not sec.sh_flags & SHF_ALLOC:
                continue
            try:
                infos = elf.relocation_infos(sec, MAX_RELOCS)
            except ElfError:
                break   # a damaged table: what was read stays
            try:
                symtab: Section | None = elf.linked_section(sec)
            except ElfError:
                symtab = None
            out.append((infos, symtab))
        return out

    def exports(self, name: str) -> list[tuple[int, bool]]:
        """(link-time value, is an ifunc) of each .dynsym definition of `name`: found
        through .gnu.hash like the dynamic linker does, or from a table of all of
        .dynsym built once for a file without one."""
        if not name:
            return []       # unnamed symbols are nobody's export
        if self._exports is None and "\ufffd" not in name:   # (not a name c_string mended)
            found = self._export_memo.get(name)
            if found is not None:
                return found
            hits = self.elf.gnu_hash_lookup(name.encode())
            if hits is not None:
                dynsym = self.elf.find_section(".dynsym")
                try:
                    rows = [self.elf.symbol_row(dynsym, i) for i in hits  # type: ignore[arg-type]
                            if i < MAX_RELOCS]
                except ElfError:
                    rows = []
                found = [(value, info & 0xF == STT_GNU_IFUNC)
                         for _n, value, _size, info, _other, shndx in rows
                         if shndx != SHN_UNDEF and value]
                if len(self._export_memo) >= EXPORT_MEMO:
                    self._export_memo.clear()
                self._export_memo[name] = found
                return found
        if self._exports is None:
            try:
                self._exports = dynamic_exports(self.elf, MAX_RELOCS)
            except ElfError:
                self._exports = {}
        return self._exports.get(name, [])

    @property
    def is_dynamic_linker(self) -> bool:
        """Whether this is glibc's ld.so (it defines _rtld_global)."""
        return bool(self.exports("_rtld_global"))
