"""ELF container reader: header, program and section headers, section bytes, notes,
symbol and relocation tables, decoded with struct from a seekable binary stream.

Field names follow the ELF specification (``e_shoff``, ``sh_link``, ``p_filesz``), and
ELF32 and big-endian files are read by the same code as ELF64 little-endian ones
(only the struct formats differ).  Numbers stay numbers: ``sh_type`` is 11, not
"SHT_DYNSYM"; ``machine`` gives the ``EM_*`` name of ``e_machine``.

The constructor reads the ELF header, the program header table, the section header
table and the section-name string table, and checks them: the tables must lie inside
the file, with entries at least as large as the format's, and hold at most
MAX_SEGMENTS / MAX_SECTIONS entries (extended numbering, where e_shnum, e_phnum or
e_shstrndx live in section 0, included).  Section and segment contents are read when
asked for, and only inside the file.  Anything malformed raises ElfError, whose message
is one line (names read from the file are quoted with repr).
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

__all__ = ["ElfError", "ElfFile", "Section", "Segment", "c_string"]


class ElfError(Exception):
    """A malformed, truncated or unreadable ELF file; the message is one line."""


# Bounds on what a file's headers can make us read.  Real files have a dozen segments,
# at most a few thousand sections and section names of a few kilobytes.
MAX_SEGMENTS = 1 << 12
MAX_SECTIONS = 1 << 16
MAX_SECTION_NAMES = 1 << 24       # bytes of the section-name string table
MAX_DECOMPRESSED = 1 << 27        # bytes a compressed (SHF_COMPRESSED) section may expand to

ET_REL, ET_EXEC, ET_DYN, ET_CORE = 1, 2, 3, 4

PT_NULL, PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_NOTE, PT_PHDR, PT_TLS = 0, 1, 2, 3, 4, 6, 7
PT_GNU_EH_FRAME = 0x6474E550
PT_GNU_STACK = 0x6474E551
PT_GNU_RELRO = 0x6474E552
PT_GNU_PROPERTY = 0x6474E553
PT_GNU_SFRAME = 0x6474E554
PN_XNUM = 0xFFFF

SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA = 0, 1, 2, 3, 4
SHT_NOTE, SHT_NOBITS, SHT_REL, SHT_DYNSYM = 7, 8, 9, 11
SHT_GNU_SFRAME = 0x6FFFFFF4
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR, SHF_COMPRESSED = 0x1, 0x2, 0x4, 0x800
SHN_UNDEF, SHN_LORESERVE, SHN_ABS, SHN_XINDEX = 0, 0xFF00, 0xFFF1, 0xFFFF
STT_NOTYPE, STT_FUNC, STT_GNU_IFUNC = 0, 2, 10
ELFCOMPRESS_ZLIB = 1
NT_GNU_BUILD_ID = 3

EM_386, EM_ARM, EM_X86_64, EM_AARCH64 = 3, 40, 62, 183
MACHINE_NAMES = {
    EM_386: "EM_386", 8: "EM_MIPS", 20: "EM_PPC", 21: "EM_PPC64", 22: "EM_S390",
    EM_ARM: "EM_ARM", 43: "EM_SPARCV9", EM_X86_64: "EM_X86_64", EM_AARCH64: "EM_AARCH64",
    243: "EM_RISCV", 258: "EM_LOONGARCH",
}


def machine_name(e_machine: int) -> str:
    """"EM_X86_64" for 62; "EM_<number>" for a machine not in MACHINE_NAMES."""
    return MACHINE_NAMES.get(e_machine, f"EM_{e_machine}")


def c_string(table: bytes, at: int) -> str:
    """The NUL-terminated string at offset `at` of an ELF string table (to its end
    if unterminated), undecodable bytes replaced."""
    end = table.find(b"\0", at)
    return table[at:end if end >= 0 else len(table)].decode("utf-8", "replace")


class Segment(NamedTuple):
    """One program header (Elf64_Phdr field order, for both classes)."""

    p_type: int
    p_flags: int
    p_offset: int
    p_vaddr: int
    p_paddr: int
    p_filesz: int
    p_memsz: int
    p_align: int


class Section(NamedTuple):
    """One section header with its name.  The first five fields are where the section
    is; profiler/app/agent/procs.py reads name and size by position."""

    name: str
    sh_type: int
    sh_addr: int
    sh_offset: int
    sh_size: int
    sh_flags: int
    sh_link: int
    sh_info: int
    sh_addralign: int
    sh_entsize: int
    sh_name: int


# A symbol-table entry: (st_name, st_value, st_size, st_info, st_other, st_shndx), the
# Elf32_Sym order, for both classes.
SymbolRow = tuple[int, int, int, int, int, int]
# A relocation: (r_offset, symbol index, relocation type).


class _Layout:
    """The struct formats of one ELF class and byte order."""

    def __init__(self, wide: bool, little: bool) -> None:
        e = "<" if little else ">"
        self.wide = wide
        if wide:
            self.ehdr = struct.Struct(e + "16xHHIQQQIHHHHHH")
            self.phdr = struct.Struct(e + "IIQQQQQQ")
            self.shdr = struct.Struct(e + "IIQQQQIIQQ")
            self.sym = struct.Struct(e + "IBBHQQ")
            self.rel = struct.Struct(e + "QQ")
            self.rela = struct.Struct(e + "QQ8x")         # r_addend not needed
            self.chdr = struct.Struct(e + "I4xQQ")        # ch_type, ch_size, ch_addralign
            self.r_sym_shift, self.r_type_mask = 32, 0xFFFFFFFF
        else:
            self.ehdr = struct.Struct(e + "16xHHIIIIIHHHHHH")
            self.phdr = struct.Struct(e + "IIIIIIII")
            self.shdr = struct.Struct(e + "IIIIIIIIII")
            self.sym = struct.Struct(e + "IIIBBH")
            self.rel = struct.Struct(e + "II")
            self.rela = struct.Struct(e + "II4x")
            self.chdr = struct.Struct(e + "III")
            self.r_sym_shift, self.r_type_mask = 8, 0xFF
        self.word = struct.Struct(e + "I")
        self.nhdr = struct.Struct(e + "III")


_LAYOUTS = {(wide, little): _Layout(wide, little)
            for wide in (False, True) for little in (False, True)}


class ElfFile:
    """The headers of one ELF file read from `stream`, and its contents on demand.

    The stream is kept (not copied) and must stay open while the object is used.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        try:
            self.file_size = stream.seek(0, 2)
        except (OSError, ValueError) as exc:
            raise ElfError(f"cannot read ({exc})") from None
        ident = self.read(0, 16) if self.file_size >= 16 else b""
        if ident[:4] != b"\x7fELF":
            raise ElfError("not an ELF file (no ELF magic)")
        if ident[4] not in (1, 2) or ident[5] not in (1, 2):
            raise ElfError(f"unknown ELF class {ident[4]} or byte order {ident[5]}")
        self.elfclass = 64 if ident[4] == 2 else 32
        self.little_endian = ident[5] == 1
        self.ei_osabi = ident[7]
        lay = self._layout = _LAYOUTS[self.elfclass == 64, self.little_endian]
        if self.file_size < lay.ehdr.size:
            raise ElfError(f"ELF header runs past the end of the {self.file_size}-byte file")
        (self.e_type, self.e_machine, self.e_version, self.e_entry, self.e_phoff,
         self.e_shoff, self.e_flags, self.e_ehsize, self.e_phentsize, self.e_phnum,
         self.e_shentsize, self.e_shnum, self.e_shstrndx) = lay.ehdr.unpack(
            self.read(0, lay.ehdr.size))
        self.machine = machine_name(self.e_machine)
        self._by_name: dict[str, int] | None = None
        self._gnu_hash: tuple[int, int, array[int], array[int]] | None = None
        self._strtabs: dict[int, bytes] = {}    # by section index, for symbol_name

        num_sections, num_segments, self.shstrndx = self._counts()
        rows = self._table("section header", num_sections, self.e_shoff, self.e_shentsize,
                           lay.shdr, MAX_SECTIONS)
        names = self._section_names(rows)
        self.sections = [
            Section(c_string(names, n), t, a, o, s, f, link, i, align, es, n)
            for n, t, f, a, o, s, link, i, align, es in rows]
        rows = self._table("program header", num_segments, self.e_phoff, self.e_phentsize,
                           lay.phdr, MAX_SEGMENTS)
        if lay.wide:
            self.segments = [Segment._make(r) for r in rows]
        else:   # Elf32_Phdr keeps p_flags after p_memsz
            self.segments = [Segment(t, f, o, v, p, fs, ms, al)
                             for t, o, v, p, fs, ms, f, al in rows]

    # -- headers ------------------------------------------------------------------

    def _counts(self) -> tuple[int, int, int]:
        """(sections, segments, section-name table index), with extended numbering:
        e_shnum 0, e_phnum PN_XNUM and e_shstrndx SHN_XINDEX defer to section 0."""
        shnum, phnum, shstrndx = self.e_shnum, self.e_phnum, self.e_shstrndx
        if not self.e_shoff:
            if phnum == PN_XNUM:
                raise ElfError("e_phnum is PN_XNUM but there is no section 0 to hold the count")
            return 0, phnum, SHN_UNDEF
        if shnum == 0 or phnum == PN_XNUM or shstrndx == SHN_XINDEX:
            shdr = self._layout.shdr
            if self.e_shentsize < shdr.size or self.e_shoff + shdr.size > self.file_size:
                raise ElfError(f"section 0 (at offset {self.e_shoff}, {self.e_shentsize} "
                               f"bytes) does not fit the {self.file_size}-byte file")
            _n, _t, _f, _a, _o, size, link, info, _al, _es = shdr.unpack(
                self.read(self.e_shoff, shdr.size))
            shnum = shnum or size
            phnum = info if phnum == PN_XNUM else phnum
            shstrndx = link if shstrndx == SHN_XINDEX else shstrndx
        return shnum, phnum, shstrndx

    def _table(self, what: str, count: int, offset: int, entsize: int,
               st: struct.Struct, limit: int) -> list[tuple[int, ...]]:
        """The `count` entries of a header table, checked to fit the file."""
        if not count:
            return []
        if count > limit:
            raise ElfError(f"{count} {what} entries (at most {limit})")
        if entsize < st.size or offset + count * entsize > self.file_size:
            raise ElfError(f"{what} table ({count} x {entsize} bytes at offset {offset}) "
                           f"does not fit the {self.file_size}-byte file")
        raw = self.read(offset, count * entsize)
        if entsize == st.size:
            return list(st.iter_unpack(raw))
        return [st.unpack_from(raw, k * entsize) for k in range(count)]

    def _section_names(self, rows: list[tuple[int, ...]]) -> bytes:
        """The bytes of the section-name string table (b"" when there is none)."""
        if not rows or self.shstrndx == SHN_UNDEF:
            return b""
        if self.shstrndx >= len(rows):
            raise ElfError(f"section name table index {self.shstrndx} is not one of the "
                           f"{len(rows)} sections")
        _n, sh_type, _f, _a, offset, size, *_rest = rows[self.shstrndx]
        if sh_type == SHT_NOBITS:
            return b""
        if size > MAX_SECTION_NAMES:
            raise ElfError(f"section name table of {size} bytes (at most {MAX_SECTION_NAMES})")
        return self._read_inside(offset, size, "section name table")

    # -- reading ------------------------------------------------------------------

    def read(self, offset: int, size: int) -> bytes:
        """`size` bytes at file offset `offset`; ElfError unless they are all in the file."""
        if offset < 0 or size < 0 or offset + size > self.file_size:
            raise ElfError(f"{size} bytes at offset {offset} run past the end of the "
                           f"{self.file_size}-byte file")
        try:
            self._stream.seek(offset)
            data = self._stream.read(size)
        except (OSError, ValueError) as exc:
            raise ElfError(f"cannot read {size} bytes at offset {offset} ({exc})") from None
        if len(data) != size:   # the file shrank since it was opened
            raise ElfError(f"short read: {len(data)} of {size} bytes at offset {offset}")
        return data

    def _read_inside(self, offset: int, size: int, what: str) -> bytes:
        self._check_inside(offset, size, what)
        return self.read(offset, size)

    def _check_inside(self, offset: int, size: int, what: str) -> None:
        if offset + size > self.file_size:
            raise ElfError(f"{what} ({size} bytes at offset {offset}) runs past the end of "
                           f"the {self.file_size}-byte file")

    def section_data(self, sec: Section, limit: int | None = None) -> bytes:
        """The contents of `sec` (decompressed if SHF_COMPRESSED; b"" for SHT_NOBITS),
        or only its first `limit` bytes.  The whole section must lie in the file."""
        if sec.sh_type == SHT_NOBITS:
            return b""
        what = f"section {sec.name!r}"
        if sec.sh_flags & SHF_COMPRESSED:
            return self._decompress(sec, what, limit)
        self._check_inside(sec.sh_offset, sec.sh_size, what)
        return self.read(sec.sh_offset, sec.sh_size if limit is None else min(sec.sh_size, limit))

    def _decompress(self, sec: Section, what: str, limit: int | None) -> bytes:
        import zlib
        chdr = self._layout.chdr
        raw = self._read_inside(sec.sh_offset, sec.sh_size, what)
        if len(raw) < chdr.size:
            raise ElfError(f"{what}: compressed, but smaller than a compression header")
        ch_type, ch_size, _align = chdr.unpack_from(raw)
        if ch_type != ELFCOMPRESS_ZLIB:
            raise ElfError(f"{what}: compression type {ch_type} is not supported")
        if ch_size > MAX_DECOMPRESSED:
            raise ElfError(f"{what}: {ch_size} bytes decompressed (at most {MAX_DECOMPRESSED})")
        want = ch_size if limit is None else min(ch_size, limit)
        if want <= 0:   # (zlib reads a max_length of 0 as "no limit")
            return b""
        try:
            data = zlib.decompressobj().decompress(memoryview(raw)[chdr.size:], want)
        except zlib.error as exc:
            raise ElfError(f"{what}: cannot decompress ({exc})") from None
        if len(data) != want:
            raise ElfError(f"{what}: decompresses to {len(data)} bytes, not {want}")
        return data

    def segment_data(self, seg: Segment) -> bytes:
        """The p_filesz bytes of `seg` in the file."""
        return self._read_inside(seg.p_offset, seg.p_filesz, "segment")

    # -- sections -----------------------------------------------------------------

    def find_section(self, name: str) -> Section | None:
        """The first section called `name`, or None."""
        if self._by_name is None:
            self._by_name = {}
            for i, sec in enumerate(self.sections):
                self._by_name.setdefault(sec.name, i)
        at = self._by_name.get(name)
        return None if at is None else self.sections[at]

    def linked_section(self, sec: Section) -> Section:
        """The section `sec`'s sh_link names (a symbol table's strings, say)."""
        if not 0 < sec.sh_link < len(self.sections):
            raise ElfError(f"section {sec.name!r} links to section {sec.sh_link}, not one of "
                           f"the {len(self.sections)} sections")
        return self.sections[sec.sh_link]

    def _entries(self, sec: Section, st: struct.Struct, limit: int) -> memoryview:
        """The first `limit` whole `st`-sized entries of a table section."""
        if sec.sh_entsize not in (0, st.size):
            raise ElfError(f"section {sec.name!r}: entries of {sec.sh_entsize} bytes, "
                           f"not {st.size}")
        data = self.section_data(sec, limit * st.size)
        return memoryview(data)[:len(data) - len(data) % st.size]

    def read_symbols(self, sec: Section, limit: int) -> list[SymbolRow]:
        """The first `limit` entries of a SHT_SYMTAB / SHT_DYNSYM section, as
        (st_name, st_value, st_size, st_info, st_other, st_shndx)."""
        if sec.sh_type not in (SHT_SYMTAB, SHT_DYNSYM):
            raise ElfError(f"section {sec.name!r} (type {sec.sh_type}) is not a symbol table")
        st = self._layout.sym
        rows = st.iter_unpack(self._entries(sec, st, limit))
        if self._layout.wide:   # Elf64_Sym: name, info, other, shndx, value, size
            return [(n, v, s, i, o, x) for n, i, o, x, v, s in rows]
        return list(rows)

    def relocation_infos(self, sec: Section, limit: int) -> dict[int, int]:
        """{r_offset: r_info} of the first `limit` entries of a SHT_REL / SHT_RELA
        section (the last entry for an offset wins), built without a Python loop:
        libLLVM has hundreds of thousands.  r_info >> r_sym_shift is the symbol
        index, r_info & r_type_mask the type."""
        if sec.sh_type == SHT_RELA:
            st = self._layout.rela
        elif sec.sh_type == SHT_REL:
            st = self._layout.rel
        else:
            raise ElfError(f"section {sec.name!r} (type {sec.sh_type}) is not a relocation "
                           "table")
        return dict(st.iter_unpack(self._entries(sec, st, limit)))

    @property
    def r_sym_shift(self) -> int:
        return self._layout.r_sym_shift

    @property
    def r_type_mask(self) -> int:
        return self._layout.r_type_mask

    def symbol_row(self, sec: Section, index: int) -> SymbolRow:
        """Entry `index` of a symbol table section, like read_symbols' rows."""
        st = self._layout.sym
        if sec.sh_type not in (SHT_SYMTAB, SHT_DYNSYM) or sec.sh_entsize not in (0, st.size):
            raise ElfError(f"section {sec.name!r} is not a symbol table of {st.size}-byte "
                           "entries")
        if not 0 <= index < sec.sh_size // st.size:
            raise ElfError(f"symbol {index} is past the end of {sec.name!r}")
        row = st.unpack(self._read_inside(sec.sh_offset + index * st.size, st.size,
                                          f"symbol {index} of {sec.name!r}"))
        if self._layout.wide:
            n, i, o, x, v, sz = row
            return (n, v, sz, i, o, x)
        return row

    def gnu_hash_lookup(self, name: bytes) -> list[int] | None:
        """Indexes into .dynsym of the symbols called `name`, found through the
        .gnu.hash table the way the dynamic linker does (no table is built); None
        when the file has no usable .gnu.hash (the caller scans .dynsym instead)."""
        sec = self.find_section(".gnu.hash")
        dynsym = self.find_section(".dynsym")
        if sec is None or dynsym is None or sec.sh_link >= len(self.sections) \
                or self.sections[sec.sh_link] is not dynsym:
            return None
        try:
            table = self._gnu_hash_table(sec)
        except ElfError:
            return None
        nbuckets, symoffset, buckets, chains = table
        h = 5381
        for c in name:
            h = (h * 33 + c) & 0xFFFFFFFF
        out: list[int] = []
        i = buckets[h % nbuckets]
        if i < symoffset:
            return out
        nsyms = dynsym.sh_size // self._layout.sym.size
        while i - symoffset < len(chains) and i < nsyms:
            h2 = chains[i - symoffset]
            if h2 | 1 == h | 1:
                try:
                    if self.symbol_name(dynsym, i) == name:
                        out.append(i)
                except ElfError:
                    return None
            if h2 & 1:
                return out
            i += 1
        return None   # a chain that does not end inside the table: damaged

    def _gnu_hash_table(self, sec: Section) -> tuple[int, int, array[int], array[int]]:
        cached = self._gnu_hash
        if cached is None:
            data = self.section_data(sec)
            word = self._layout.word
            if len(data) < 16:
                raise ElfError(".gnu.hash is cut short")
            nbuckets, symoffset, bloom_words, _shift = (
                word.unpack_from(data, 4 * k)[0] for k in range(4))
            at = 16 + bloom_words * (8 if self._layout.wide else 4)
            if not nbuckets or at + 4 * nbuckets > len(data):
                raise ElfError(".gnu.hash is cut short")
            words = array("I", data[at:len(data) - (len(data) - at) % 4])
            if word.format[0] != ("<" if sys.byteorder == "little" else ">"):
                words.byteswap()
            cached = self._gnu_hash = (nbuckets, symoffset, words[:nbuckets],
                                       words[nbuckets:])
        return cached

    def symbol_name(self, sec: Section, index: int) -> bytes:
        """The name of entry `index` of symbol table `sec` (its string table is read
        once and kept)."""
        strtab = self._strtabs.get(sec.sh_link)
        if strtab is None:
            strtab = self._strtabs[sec.sh_link] = self.section_data(self.linked_section(sec))
        at = self.symbol_row(sec, index)[0]
        end = strtab.find(b"\0", at)
        return strtab[at:end if end >= 0 else len(strtab)]

    # -- notes --------------------------------------------------------------------

    def iter_notes(self, data: bytes, align: int) -> Iterator[tuple[bytes, int, bytes]]:
        """(name without its NULs, n_type, desc) of each note in a note section's or
        segment's bytes, name and desc padded to `align` (4 or 8); a truncated note ends
        the walk."""
        nhdr = self._layout.nhdr
        pos = 0
        while pos + nhdr.size <= len(data):
            namesz, descsz, ntype = nhdr.unpack_from(data, pos)
            pos += nhdr.size
            name = data[pos:pos + namesz]
            pos += (namesz + align - 1) & ~(align - 1)
            desc = data[pos:pos + descsz]
            pos += (descsz + align - 1) & ~(align - 1)
            if len(name) != namesz or len(desc) != descsz:
                return
            yield name.rstrip(b"\0"), ntype, desc

    def build_id(self) -> str:
        """The GNU build ID as lowercase hex, "" if none: from the note sections
        (.note.gnu.build-id first), then the PT_NOTE segments.  Unreadable notes are
        skipped."""
        notes = sorted((sec for sec in self.sections if sec.sh_type == SHT_NOTE),
                       key=lambda sec: sec.name != ".note.gnu.build-id")
        places: list[Section | Segment] = [*notes]
        places += [seg for seg in self.segments if seg.p_type == PT_NOTE]
        for where in places:
            try:
                if isinstance(where, Section):
                    data, align = self.section_data(where), where.sh_addralign
                else:
                    data, align = self.segment_data(where), where.p_align
            except ElfError:
                continue
            for name, ntype, desc in self.iter_notes(data, 8 if align == 8 else 4):
                if ntype == NT_GNU_BUILD_ID and name == b"GNU" and desc:
                    return desc.hex()
        return ""

    def debuglink(self) -> tuple[str, int] | None:
        """(file name, CRC32) from .gnu_debuglink, None if absent or malformed."""
        sec = self.find_section(".gnu_debuglink")
        if sec is None:
            return None
        data = self.section_data(sec)
        end = data.find(b"\0")
        if end <= 0:
            return None
        crc_at = (end + 4) & ~3
        if crc_at + 4 > len(data):
            return None
        crc: int = self._layout.word.unpack_from(data, crc_at)[0]
        return data[:end].decode("utf-8", "surrogateescape"), crc
