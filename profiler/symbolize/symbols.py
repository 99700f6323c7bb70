"""Function names for addresses in one ELF file: its symbol tables, merged.

ElfSymbols (one per ELF file, built once) merges every symbol source a stripped or
unstripped file can have:

* the file's own ``.symtab`` and ``.dynsym``;
* when the file has no ``.symtab``: a separate debug file found by build ID or by
  ``.gnu_debuglink``, else the MiniDebugInfo ``.gnu_debugdata`` section
  (profiler.symbolize.debugfiles finds them, under ``root`` when one is given);
* a stripped Go executable's ``.gopclntab``.

Function symbols are STT_FUNC and STT_GNU_IFUNC, plus STT_NOTYPE symbols with a size in
an executable section (hand-written assembly); ARM mapping symbols (``$x``, ``$d``) and
annobin markers are not functions.  A zero-size function extends to the next symbol
(bounded by its section).  Aliases at one address collapse to one name, chosen
deterministically: sized over unsized, FUNC over IFUNC (an IFUNC symbol's value is its
resolver, which has its own FUNC name when .symtab is there) over NOTYPE, global or
weak over local, fewer leading underscores, shorter, then alphabetical; the entry
spans the widest of the aliases.  Where symbols nest (a label
with a size inside a larger function) the innermost one names an address.  An
address in no symbol (padding, or a local function that only a full symbol table
would name) has no name: lookup returns None and the caller keeps module + offset.

The table is a sorted array of segment starts searched with bisect
(profiler.symbolize.segments): O(log n) per lookup.  Names are demangled
(profiler.symbolize.demangle) on lookup, with a cache.  nbytes() is what a built
table holds in memory, estimate() what an object's table would, from its section sizes.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence

from profiler.symbolize.debugfiles import find_debug_file, mini_debuginfo, read_build_id
from profiler.symbolize.demangle import demangle
from profiler.symbolize.segments import paint
from profiler.unwind.elf import (
    SHF_EXECINSTR,
    SHN_ABS,
    SHN_LORESERVE,
    SHT_DYNSYM,
    SHT_SYMTAB,
    STT_FUNC,
    STT_GNU_IFUNC,
    STT_NOTYPE,
    ElfError,
    ElfFile,
)
from profiler.unwind.golang.pclntab import Pclntab
from profiler.unwind.objfile import ObjectFile

__all__ = ["ElfSymbols"]

STB_LOCAL, STB_GLOBAL, STB_WEAK, STB_GNU_UNIQUE = 0, 1, 2, 10
# A bound on what a target's file can make us do: symbol-table entries read per table.
MAX_SYMBOLS = 1 << 22
_SYMBOL_TABLES = (".symtab", ".dynsym")

# Weak counts as global: libc's public names (puts, read) are weak aliases of strong
# internal ones (_IO_puts, __read), and the public name is the one people know.
_BIND_RANK = {STB_GLOBAL: 0, STB_GNU_UNIQUE: 0, STB_WEAK: 0, STB_LOCAL: 1}



_WANTED_TYPES = frozenset((STT_NOTYPE, STT_FUNC, STT_GNU_IFUNC))


class _Candidate:
    """A function symbol before aliases are merged."""

    __slots__ = ("name", "rank", "sec_end", "size", "start")

    def __init__(self, start: int, size: int, name: str, rank: tuple[int, ...],
                 sec_end: int) -> None:
        self.start = start
        self.size = size
        self.name = name
        self.rank = rank
        self.sec_end = sec_end


def _collect(elf: ElfFile, which: Iterable[str], out: list[_Candidate],
             errors: list[str], label: str = "") -> list[str]:
    """Append the function symbols of `elf`'s sections named in `which`; returns the
    names of the sections that had any.  A damaged table is skipped with a note in
    `errors`."""
    used: list[str] = []
    shinfo = [(sec.sh_flags, sec.sh_addr, sec.sh_size) for sec in elf.sections]
    wanted = _WANTED_TYPES
    for secname in which:
        sec = elf.find_section(secname)
        if sec is None or sec.sh_type not in (SHT_SYMTAB, SHT_DYNSYM):
            continue
        try:
            rows = elf.read_symbols(sec, MAX_SYMBOLS)
            strtab = elf.section_data(elf.linked_section(sec))
        except ElfError as exc:
            errors.append(f"{label}{secname}: unusable ({exc})")
            continue
        before = len(out)
        for noff, value, size, info, _other, shndx in [
                r for r in rows if r[1] and r[5] and r[3] & 0xF in wanted]:
            if shndx >= SHN_LORESERVE and shndx != SHN_ABS:
                continue
            stype, bind = info & 0xF, info >> 4
            if shndx == SHN_ABS:
                if stype not in (STT_FUNC, STT_GNU_IFUNC):
                    continue
                flags, sec_end = 0, 0
            elif shndx < len(shinfo):
                flags, sh_addr, sh_size = shinfo[shndx]
                sec_end = sh_addr + sh_size if sh_addr <= value < sh_addr + sh_size else 0
            else:
                continue
            if stype == STT_FUNC:
                type_rank = 0
            elif stype == STT_GNU_IFUNC:        # its value is the resolver's address
                type_rank = 1
            elif stype == STT_NOTYPE and size > 0 and flags & SHF_EXECINSTR:
                type_rank = 2
            else:
                continue
            end = strtab.find(b"\0", noff)
            if end < 0:
                end = len(strtab)
            name = strtab[noff:end].decode("utf-8", "surrogateescape")
            if not name or name[0] == "$" or name.startswith(("..annobin", ".annobin")):
                continue
            underscores = len(name) - len(name.lstrip("_"))
            rank = (0 if size else 1, type_rank, _BIND_RANK.get(bind, 1), underscores,
                    len(name))
            out.append(_Candidate(value, size, name, rank, sec_end))
        if len(out) > before:
            used.append(secname)
    return used


# -- ELF symbols --------------------------------------------------------------------

class ElfSymbols:
    """The function symbols of one ELF file, looked up by link-time address."""

    def __init__(self, name: str, build_id: str, candidates: list[_Candidate],
                 sources: list[str], debug_file: str | None, errors: list[str]) -> None:
        self.name = name
        self.build_id = build_id
        self.sources = sources          # e.g. [".symtab", ".dynsym", "debuglink:/path"]
        self.debug_file = debug_file    # the separate debug file used, if any
        self.errors = errors            # why a symbol source was rejected
        self._starts = array("Q")
        self._sizes = array("Q")        # effective sizes (zero-size symbols extended)
        self._names: list[str] = []
        self._go: Pclntab | None = None
        self._build(candidates)

    # -- building --

    def _build(self, cands: list[_Candidate]) -> None:
        best: dict[int, _Candidate] = {}
        widest: dict[int, int] = {}
        for c in cands:
            cur = best.get(c.start)
            if cur is None or (c.rank, c.name) < (cur.rank, cur.name):
                best[c.start] = c
            if c.size > widest.get(c.start, 0):
                widest[c.start] = c.size
        chosen = sorted(best.values(), key=lambda c: c.start)
        items: list[tuple[int, int, int, int]] = []
        for i, c in enumerate(chosen):
            # Aliases of different sizes: the name of the preferred one, the widest extent.
            size = widest.get(c.start, 0)
            end = c.start + size
            if size == 0:
                nxt = chosen[i + 1].start if i + 1 < len(chosen) else 0
                limits = [x for x in (nxt, c.sec_end) if x > c.start]
                end = min(limits) if limits else c.start + 1
            end = min(end, (1 << 64) - 1)   # a symbol running past the address space
            self._starts.append(c.start)
            self._sizes.append(end - c.start)
            self._names.append(c.name)
            # Later starts win where symbols overlap: the innermost symbol names a pc.
            items.append((c.start, end, c.start, i))
        self._segs = paint(items)

    @classmethod
    def load(cls, obj: ObjectFile, debug_dirs: Sequence[str] = ("/usr/lib/debug",),
             root: str | None = None) -> ElfSymbols:
        """Every symbol source of `obj` merged into one table (see the module docstring)."""
        build_id = read_build_id(obj)
        cands: list[_Candidate] = []
        errors: list[str] = []
        sources = _collect(obj.elf, (".symtab", ".dynsym"), cands, errors)
        debug_file = None
        if ".symtab" not in sources:
            try:
                found = find_debug_file(obj, build_id, debug_dirs, root, errors)
            except (ElfError, OSError, ValueError) as exc:  # e.g. a damaged .gnu_debuglink
                errors.append(f"separate debug file: not usable ({exc})")
                found = None
            if found is not None:
                path, how, stream = found
                with stream:
                    try:
                        debug_elf = ElfFile(stream)
                    except ElfError as exc:
                        errors.append(f"{path}: unusable debug file ({exc})")
                    else:
                        if _collect(debug_elf, (".symtab",), cands, errors, f"{path}: "):
                            sources.append(f"{how}:{path}")
                            debug_file = path
            if debug_file is None:
                mini = mini_debuginfo(obj.elf, errors)
                if mini is not None and _collect(mini, (".symtab",), cands, errors,
                                                 ".gnu_debugdata: "):
                    sources.append(".gnu_debugdata")
        go = _go_functions(obj, ".symtab" not in sources, cands, errors)
        if go is not None:
            sources.append(".gopclntab")
        table = cls(obj.name, build_id, cands, sources, debug_file, errors)
        table._go = obj.gopclntab
        return table

    # -- queries --

    @property
    def has_symbols(self) -> bool:
        return bool(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def lookup(self, vaddr: int) -> tuple[str, int] | None:
        """(demangled function name, offset into it) for a link-time address, or None."""
        i = self._segs.find(vaddr)
        if i < 0:
            return None
        return demangle(self._names[i]), vaddr - self._starts[i]

    def lookup_raw(self, vaddr: int) -> tuple[str, int, int] | None:
        """(mangled name, start, effective size) of the symbol naming `vaddr`, or None."""
        i = self._segs.find(vaddr)
        if i < 0:
            return None
        return self._names[i], self._starts[i], self._sizes[i]

    def source_line(self, vaddr: int) -> tuple[str, int] | None:
        """(file, line) of a link-time address in Go code, from .gopclntab (Go
        binaries keep it when stripped), or None."""
        from profiler.unwind.golang.pclntab import GoPclnError
        if self._go is None:
            return None
        try:
            fn = self._go.lookup(vaddr)
            return None if fn is None else self._go.file_line(fn, vaddr)
        except GoPclnError:
            return None

    def symbols(self) -> list[tuple[int, int, str]]:
        """(start, effective size, mangled name) of every function, sorted by start."""
        return list(zip(self._starts, self._sizes, self._names, strict=True))

    # -- memory --

    def nbytes(self) -> int:
        """About what the table holds in memory: its address arrays, its segments and
        its names (a str object is 49 bytes plus its characters, and a list slot 8)."""
        names = self._names
        return (57 * len(names) + sum(map(len, names))
                + 8 * (len(self._starts) + len(self._sizes))
                + 16 * len(self._segs.starts))

    @staticmethod
    def estimate(obj: ObjectFile) -> int:
        """What the table of `obj` would cost in memory, from its section sizes (before
        it is built): 24-byte ELF symbols, about 110 bytes each once loaded."""
        entries = sum(sec.sh_size for sec in obj.elf.sections
                      if sec.name in _SYMBOL_TABLES) // 24
        return 16 + 110 * entries


def _go_functions(obj: ObjectFile, stripped: bool, out: list[_Candidate],
                  errors: list[str]) -> Pclntab | None:
    """Append the functions of a Go executable's .gopclntab when its own .symtab is
    gone (``-ldflags=-s``): the runtime's table keeps every Go function's full
    package-qualified name and exact [entry, end).  With a .symtab that is used
    instead: it names the same functions (generics with their type arguments, which
    .gopclntab shortens to "[...]") and the C code of cgo programs as well."""
    from profiler.unwind.golang.pclntab import GoPclnError
    table = obj.gopclntab
    if obj.go_error:
        errors.append(obj.go_error)
    if table is None or not stripped:
        return None
    try:
        funcs = table.functions()
    except GoPclnError as exc:
        errors.append(str(exc))
        return None
    out.extend(_Candidate(fn.entry, fn.end - fn.entry, fn.name, (0, 0, 0, 0, len(fn.name)),
                          fn.end) for fn in funcs)
    return table
