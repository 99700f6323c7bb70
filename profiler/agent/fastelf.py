"""ObjectFile with fast readers for the tables the unwinder scans whole.

The unwinder's call-edge checks ask an object, once, for every GOT slot's relocation
target (``_read_slots``) and for its dynamic exports (``exports``).  ObjectFile reads
them through pyelftools, one construct parse per entry: a big library (a few hundred
thousand relocations, e.g. LLVM) then costs seconds to tens of seconds of CPU the
first time a sample lands in it.  A long-running agent on a host that keeps starting
new programs pays that again and again, so here the same tables are read with
``struct.iter_unpack`` straight from the mapped file (64-bit little-endian ELF, which
is every x86_64 and aarch64 Linux binary); anything else, or any surprise in the
headers, falls back to ObjectFile's own readers.  The results are the same
(tests/unit/test_agent_procs.py compares both on real files).
"""

from __future__ import annotations

import struct
from typing import Any

from profiler import objfile as _objfile
from profiler.objfile import ObjectFile

SHT_SYMTAB, SHT_RELA, SHT_REL, SHT_DYNSYM = 2, 4, 9, 11
SHF_ALLOC = 2
STT_GNU_IFUNC = 10
_SHDR = struct.Struct("<IIQQQQIIQQ")     # Elf64_Shdr
_SYM = struct.Struct("<IBBHQQ")          # Elf64_Sym
_IRELATIVE = {"EM_X86_64": 37, "EM_AARCH64": 1032}


class _Fallback(Exception):
    """Not a file the fast readers handle: use ObjectFile's."""


class AgentObjectFile(ObjectFile):
    """ObjectFile whose whole-table scans read the bytes with struct, not pyelftools."""

    _shdrs: list[tuple[int, ...]] | None = None

    # -- raw access ---------------------------------------------------------------

    def _bytes(self, offset: int, size: int) -> bytes:
        stream: Any = self._stream
        if offset < 0 or size < 0:
            raise _Fallback
        stream.seek(offset)
        data = bytes(stream.read(size))
        if len(data) != size:
            raise _Fallback
        return data

    def _headers(self) -> list[tuple[int, ...]]:
        """Every Elf64_Shdr as a tuple (name, type, flags, addr, offset, size, link,
        info, addralign, entsize)."""
        if self._shdrs is None:
            elf = self.elf
            if elf.elfclass != 64 or not elf.little_endian:
                raise _Fallback
            count = elf.num_sections()
            if elf["e_shentsize"] != _SHDR.size or not count:
                raise _Fallback
            raw = self._bytes(elf["e_shoff"], count * _SHDR.size)
            self._shdrs = list(_SHDR.iter_unpack(raw))
        return self._shdrs

    def _symbol_names(self, symtab: int) -> tuple[bytes, bytes, int]:
        """(symbol table bytes, its string table bytes, entry count)."""
        hdrs = self._headers()
        if not 0 <= symtab < len(hdrs):
            raise _Fallback
        h = hdrs[symtab]
        if h[1] not in (SHT_SYMTAB, SHT_DYNSYM) or not 0 <= h[6] < len(hdrs):
            raise _Fallback
        entsize = h[9] or _SYM.size
        if entsize != _SYM.size:
            raise _Fallback
        strtab = hdrs[h[6]]
        return self._bytes(h[4], h[5]), self._bytes(strtab[4], strtab[5]), h[5] // entsize

    def _entries(self, fmt: str, offset: int, size: int, chunk: int = 4096) -> Any:
        """struct.iter_unpack over a table, read in pieces of `chunk` entries (a big
        library's .rela.dyn is tens of MB: one copy would leave that much heap)."""
        step = struct.calcsize(fmt) * chunk
        for at in range(offset, offset + size, step):
            yield from struct.iter_unpack(fmt, self._bytes(at, min(step, offset + size - at)))

    @staticmethod
    def _name(strtab: bytes, at: int) -> str:
        end = strtab.find(b"\0", at)
        if at >= len(strtab):
            return ""
        return strtab[at:end if end >= 0 else len(strtab)].decode("utf-8", errors="replace")

    # -- the tables -----------------------------------------------------------------

    def _read_slots(self) -> dict[int, str]:
        try:
            return self._fast_slots()
        except _Fallback:
            pass
        except Exception:  # noqa: BLE001 - a damaged file: ObjectFile decides
            pass
        reader = getattr(super(), "_read_slots", None)
        return reader() if reader is not None else {}

    def _fast_slots(self) -> dict[int, str]:
        limit = getattr(_objfile, "MAX_RELOCS", 1 << 20)
        irelative = _IRELATIVE.get(self.machine, -1)
        out: dict[int, str] = {}
        tables: dict[int, tuple[bytes, bytes, int]] = {}
        for h in self._headers():
            kind, flags, offset, size, link, entsize = h[1], h[2], h[4], h[5], h[6], h[9]
            if kind not in (SHT_RELA, SHT_REL) or not flags & SHF_ALLOC:
                continue
            fmt = "<QQq" if kind == SHT_RELA else "<QQ"
            need = struct.calcsize(fmt)
            if (entsize or need) != need:
                raise _Fallback
            for n, rel in enumerate(self._entries(fmt, offset, size - size % need)):
                if n >= limit:
                    break
                r_offset, info = rel[0], rel[1]
                rtype, sym = info & 0xFFFFFFFF, info >> 32
                if rtype == irelative:
                    out[r_offset] = ""
                elif sym:
                    table = tables.get(link)
                    if table is None:
                        try:
                            table = tables[link] = self._symbol_names(link)
                        except _Fallback:
                            return out       # ObjectFile stops at the same point
                    syms, strtab, count = table
                    if sym >= count:
                        return out
                    out[r_offset] = self._name(strtab, _SYM.unpack_from(syms, sym * 24)[0])
        return out

    def exports(self, name: str) -> list[tuple[int, bool]]:
        if getattr(self, "_exports", None) is None:
            try:
                self._exports = self._fast_exports()
            except Exception:  # noqa: BLE001 - _Fallback or a damaged file
                self._exports = None
                return super().exports(name)
        table: dict[str, list[tuple[int, bool]]] = self._exports or {}
        return table.get(name, [])

    def _fast_exports(self) -> dict[str, list[tuple[int, bool]]]:
        limit = getattr(_objfile, "MAX_RELOCS", 1 << 20)
        out: dict[str, list[tuple[int, bool]]] = {}
        names = [sec[0] for sec in self._sections]
        if ".dynsym" not in names:
            return out
        syms, strtab, _count = self._symbol_names(names.index(".dynsym"))
        for n, (st_name, info, _other, shndx, value, _size) in enumerate(
                _SYM.iter_unpack(syms[:len(syms) - len(syms) % _SYM.size])):
            if n >= limit:
                break
            if shndx != 0 and value:
                out.setdefault(self._name(strtab, st_name), []).append(
                    (value, info & 0xF == STT_GNU_IFUNC))
        return out
