"""Function names for addresses: ELF symbol tables, /proc/kallsyms and perf JIT maps.

ElfSymbols (one per ELF file, built once) merges every symbol source a stripped or
unstripped file can have:

* the file's own ``.symtab`` and ``.dynsym``;
* when the file has no ``.symtab``: a separate debug file found by build ID
  (``<debug_dir>/.build-id/ab/cdef....debug``, build ID checked) or by
  ``.gnu_debuglink`` (the file's directory, its ``.debug/`` subdirectory and
  ``<debug_dir>/<directory of the file>/``, CRC32 checked), else the MiniDebugInfo
  ``.gnu_debugdata`` section (an xz-compressed ELF holding a ``.symtab``);
* every path is taken under ``root`` when one is given (containers, chroots).

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

The table is a sorted array of segment starts searched with bisect: O(log n) per
lookup.  Names are demangled (profiler.demangle) on lookup, with a cache.

KernelSymbols reads /proc/kallsyms (real addresses as root; all-zero addresses mean
kptr_restrict hides them and the table reports itself unavailable).  PerfMap reads
/tmp/perf-PID.map, written by JIT compilers (``START SIZE name`` in hex).
"""

from __future__ import annotations

import heapq
import io
import lzma
import os
import re
import struct
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import Any, BinaryIO

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from profiler.demangle import demangle
from profiler.objfile import ObjectError, ObjectFile, c_string, check_elf_tables

__all__ = ["ElfSymbols", "KernelSymbols", "PerfMap", "read_build_id"]

STT_NOTYPE, STT_FUNC, STT_GNU_IFUNC = 0, 2, 10
STB_LOCAL, STB_GLOBAL, STB_WEAK, STB_GNU_UNIQUE = 0, 1, 2, 10
SHN_UNDEF, SHN_LORESERVE, SHN_ABS = 0, 0xFF00, 0xFFF1
SHF_EXECINSTR = 0x4
NT_GNU_BUILD_ID = 3
# Bounds on what a target's file can make us do: symbol-table entries read per table,
# and the size a MiniDebugInfo (.gnu_debugdata) section may decompress to.
MAX_SYMBOLS = 1 << 22
MAX_MINIDEBUGINFO_BYTES = 1 << 27

# Weak counts as global: libc's public names (puts, read) are weak aliases of strong
# internal ones (_IO_puts, __read), and the public name is the one people know.
_BIND_RANK = {STB_GLOBAL: 0, STB_GNU_UNIQUE: 0, STB_WEAK: 0, STB_LOCAL: 1}


def _rooted(root: str | None, path: str) -> str:
    if root and os.path.isabs(path):
        return os.path.join(root, path.lstrip("/"))
    return path


# -- segment tables -----------------------------------------------------------------

class _Segments:
    """Disjoint [start, next start) segments, each naming an entry index or -1 (none)."""

    __slots__ = ("idx", "starts")

    def __init__(self) -> None:
        self.starts = array("Q")
        self.idx = array("l")

    def emit(self, pos: int, idx: int) -> None:
        starts, ids = self.starts, self.idx
        if starts and starts[-1] == pos:
            ids[-1] = idx
            if len(ids) >= 2 and ids[-2] == idx:
                starts.pop()
                ids.pop()
        elif not ids or ids[-1] != idx:
            starts.append(pos)
            ids.append(idx)

    def find(self, addr: int) -> int:
        i = bisect_right(self.starts, addr) - 1
        return self.idx[i] if i >= 0 else -1


def _paint(items: list[tuple[int, int, int, int]]) -> _Segments:
    """Segments for (start, end, priority, index) intervals; the highest priority wins.

    Without overlaps this is one pass over the sorted intervals; with them a sweep over
    the interval boundaries keeps the live intervals in a heap (O(n log n)).
    """
    items.sort()
    segs = _Segments()
    overlap = any(items[k][1] > items[k + 1][0] for k in range(len(items) - 1))
    if not overlap:
        for start, end, _prio, idx in items:
            segs.emit(start, idx)
            segs.emit(end, -1)
        return segs
    points = sorted({p for s, e, _, _ in items for p in (s, e)})
    heap: list[tuple[int, int, int]] = []
    j, n = 0, len(items)
    for p in points:
        while j < n and items[j][0] <= p:
            s, e, prio, idx = items[j]
            heapq.heappush(heap, (-prio, e, idx))
            j += 1
        while heap and heap[0][1] <= p:
            heapq.heappop(heap)
        segs.emit(p, heap[0][2] if heap else -1)
    return segs


# -- ELF helpers --------------------------------------------------------------------

def _note_build_id(data: bytes, little: bool, align: int) -> str:
    fmt = "<III" if little else ">III"
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from(fmt, data, pos)
        pos += 12
        name = data[pos:pos + namesz]
        pos += (namesz + align - 1) & ~(align - 1)
        desc = data[pos:pos + descsz]
        pos += (descsz + align - 1) & ~(align - 1)
        if ntype == NT_GNU_BUILD_ID and name.rstrip(b"\0") == b"GNU" and len(desc) == descsz:
            return desc.hex()
    return ""


# -- section headers without pyelftools' per-field parsing -----------------------------

SHT_SYMTAB, SHT_NOTE, SHT_NOBITS, SHT_DYNSYM = 2, 7, 8, 11
SHF_COMPRESSED = 0x800


class _Section:
    __slots__ = ("addr", "addralign", "flags", "link", "name", "offset", "size", "type")

    def __init__(self, name: str, stype: int, flags: int, addr: int, offset: int, size: int,
                 link: int, addralign: int) -> None:
        self.name = name
        self.type = stype
        self.flags = flags
        self.addr = addr
        self.offset = offset
        self.size = size
        self.link = link
        self.addralign = addralign


def _sections(elf: ELFFile) -> list[_Section] | None:
    """The section headers of `elf` decoded with one struct call, or None when the
    file is anything but plain (extended numbering, compressed or out-of-file
    sections, short reads): the callers then use pyelftools, as before."""
    try:
        h = elf.header
        shoff, shnum, shentsize, shstrndx = (h["e_shoff"], h["e_shnum"], h["e_shentsize"],
                                             h["e_shstrndx"])
        e = "<" if elf.little_endian else ">"
        if elf.elfclass == 64:
            fmt = struct.Struct(e + "IIQQQQIIQQ")
        else:
            fmt = struct.Struct(e + "IIIIIIIIII")
        if not shoff or not 0 < shnum < SHN_LORESERVE or shentsize != fmt.size \
                or not 0 < shstrndx < shnum:
            return None
        stream = elf.stream
        stream.seek(0, os.SEEK_END)
        file_size = stream.tell()
        stream.seek(shoff)
        raw = stream.read(shnum * shentsize)
        if len(raw) != shnum * shentsize:
            return None
        rows = list(fmt.iter_unpack(raw))
        for (_n, stype, flags, _a, offset, size, *_r) in rows:
            if flags & SHF_COMPRESSED or (stype != SHT_NOBITS and offset + size > file_size):
                return None
        _n, _t, _f, _a, str_off, str_size, *_r = rows[shstrndx]
        stream.seek(str_off)
        names = stream.read(str_size)
        out = []
        for (name_off, stype, flags, addr, offset, size, link, _info, align,
             _entsize) in rows:
            name = c_string(names, name_off)
            out.append(_Section(name, stype, flags, addr, offset, size, link, align))
        return out
    except (ELFError, ValueError, struct.error, OSError, OverflowError, KeyError,
            AttributeError):
        return None


def _section_data(elf: ELFFile, sec: _Section) -> bytes:
    if sec.type == SHT_NOBITS:
        return b""
    elf.stream.seek(sec.offset)
    return elf.stream.read(sec.size)


def _elf_build_id(elf: ELFFile) -> str:
    little = bool(elf.little_endian)
    table = _sections(elf)
    try:
        notes: list[tuple[str, int, Any]]
        if table is not None:
            notes = [(sec.name, sec.addralign, sec) for sec in table if sec.type == SHT_NOTE]
        else:
            notes = [(s.name, s["sh_addralign"], s) for s in elf.iter_sections()
                     if s["sh_type"] == "SHT_NOTE"]
        notes.sort(key=lambda n: n[0] != ".note.gnu.build-id")
        for _name, addralign, sec in notes:
            data = _section_data(elf, sec) if table is not None else sec.data()
            bid = _note_build_id(data, little, 8 if addralign == 8 else 4)
            if bid:
                return bid
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_NOTE":
                align = 8 if seg["p_align"] == 8 else 4
                bid = _note_build_id(seg.data(), little, align)
                if bid:
                    return bid
    except (ELFError, ValueError, struct.error, OSError, OverflowError):
        return ""   # OverflowError: pyelftools seeking to a p_offset past 2**63
    return ""


def read_build_id(obj: ObjectFile) -> str:
    """The GNU build ID of `obj` as lowercase hex ("" if it has none)."""
    return _elf_build_id(obj.elf)


def _debuglink(elf: ELFFile) -> tuple[str, int] | None:
    """(file name, CRC32) from .gnu_debuglink, if present and well formed."""
    sec = elf.get_section_by_name(".gnu_debuglink")
    if sec is None:
        return None
    data = sec.data()
    end = data.find(b"\0")
    if end <= 0:
        return None
    crc_at = (end + 4) & ~3
    if crc_at + 4 > len(data):
        return None
    crc = struct.unpack_from("<I" if elf.little_endian else ">I", data, crc_at)[0]
    name = data[:end].decode("utf-8", "surrogateescape")
    if "/" in name:
        return None
    return name, crc


def _file_crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


# One raw symbol: (value, size, name offset, type, binding, section index).
_RawSym = tuple[int, int, int, int, int, int]
_WANTED_TYPES = frozenset((STT_NOTYPE, STT_FUNC, STT_GNU_IFUNC))


def _raw_symbols(elf: ELFFile, sec: Any) -> tuple[list[_RawSym], bytes]:
    """The defined, nonzero FUNC/IFUNC/NOTYPE entries of a SYMTAB/DYNSYM section,
    decoded with struct, and its string table."""
    if sec["sh_type"] not in ("SHT_SYMTAB", "SHT_DYNSYM"):
        return [], b""
    data = sec.data()
    strtab = elf.get_section(sec["sh_link"]).data()
    return _decode_symbols(elf, data), strtab


def _decode_symbols(elf: ELFFile, data: bytes) -> list[_RawSym]:
    e = "<" if elf.little_endian else ">"
    wanted = _WANTED_TYPES
    if elf.elfclass == 64:
        fmt = struct.Struct(e + "IBBHQQ")
        usable = min(len(data) - len(data) % fmt.size, MAX_SYMBOLS * fmt.size)
        out = [(value, size, name, info & 0xF, info >> 4, shndx)
               for name, info, _other, shndx, value, size in fmt.iter_unpack(data[:usable])
               if value and shndx and info & 0xF in wanted]
    else:
        fmt = struct.Struct(e + "IIIBBH")
        usable = min(len(data) - len(data) % fmt.size, MAX_SYMBOLS * fmt.size)
        out = [(value, size, name, info & 0xF, info >> 4, shndx)
               for name, value, size, info, _other, shndx in fmt.iter_unpack(data[:usable])
               if value and shndx and info & 0xF in wanted]
    return out


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


def _collect(elf: ELFFile, which: Iterable[str], out: list[_Candidate],
             errors: list[str], label: str = "") -> list[str]:
    """Append the function symbols of `elf`'s sections named in `which`; returns the
    names of the sections that had any.  A damaged table is skipped with a note in
    `errors` (pyelftools raises many exception types on bad input)."""
    used: list[str] = []
    table = _sections(elf)
    try:
        if table is not None:
            shinfo = [(sec.flags, sec.addr, sec.size) for sec in table]
        else:
            shinfo = [(s["sh_flags"], s["sh_addr"], s["sh_size"]) for s in elf.iter_sections()]
    except Exception as exc:  # noqa: BLE001
        errors.append(f"{label}section headers: unusable ({exc})")
        return used
    for secname in which:
        try:
            if table is not None:
                found = next((sec for sec in table if sec.name == secname), None)
                if found is None:
                    continue
                if found.type not in (SHT_SYMTAB, SHT_DYNSYM):
                    raw, strtab = [], b""
                else:
                    if not 0 <= found.link < len(table):
                        raise ValueError(f"string table index {found.link} out of range")
                    raw = _decode_symbols(elf, _section_data(elf, found))
                    strtab = _section_data(elf, table[found.link])
            else:
                sec = elf.get_section_by_name(secname)
                if sec is None:
                    continue
                raw, strtab = _raw_symbols(elf, sec)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{label}{secname}: unusable ({exc})")
            continue
        before = len(out)
        for value, size, noff, stype, bind, shndx in raw:
            if value == 0 or shndx == SHN_UNDEF or (shndx >= SHN_LORESERVE and shndx != SHN_ABS):
                continue
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


def dynamic_exports(elf: ELFFile,
                    limit: int = MAX_SYMBOLS) -> dict[str, list[tuple[int, bool]]] | None:
    """{name: [(link-time value, is an ifunc), ...]} of the defined, nonzero entries
    among the first `limit` of `.dynsym`, read with struct (pyelftools' per-symbol
    parsing costs ~60 ms on libc); None when the section headers are not plain (the
    caller then reads them its own way).  {} when there is no .dynsym."""
    table = _sections(elf)
    if table is None:
        return None
    out: dict[str, list[tuple[int, bool]]] = {}
    sec = next((t for t in table if t.name == ".dynsym"), None)
    if sec is None or sec.type != SHT_DYNSYM or not 0 <= sec.link < len(table):
        return out
    data = _section_data(elf, sec)
    strtab = _section_data(elf, table[sec.link])
    e = "<" if elf.little_endian else ">"
    if elf.elfclass == 64:
        fmt = struct.Struct(e + "IBBHQQ")
        rows = ((name, info, shndx, value) for name, info, _o, shndx, value, _size
                in fmt.iter_unpack(data[:min(len(data) - len(data) % fmt.size,
                                             limit * fmt.size)]))
    else:
        fmt = struct.Struct(e + "IIIBBH")
        rows = ((name, info, shndx, value) for name, value, _size, info, _o, shndx
                in fmt.iter_unpack(data[:min(len(data) - len(data) % fmt.size,
                                             limit * fmt.size)]))
    for noff, info, shndx, value in rows:
        if shndx == SHN_UNDEF or not value:
            continue
        out.setdefault(c_string(strtab, noff), []).append((value, info & 0xF == STT_GNU_IFUNC))
    return out


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
        self._segs = _paint(items)

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
                found = _find_debug_file(obj, build_id, debug_dirs, root, errors)
            except Exception as exc:  # noqa: BLE001 - e.g. a damaged .gnu_debuglink
                errors.append(f"separate debug file: not usable ({exc})")
                found = None
            if found is not None:
                path, how, stream = found
                with stream:
                    try:
                        debug_elf = ELFFile(stream)
                        if _collect(debug_elf, (".symtab",), cands, errors, f"{path}: "):
                            sources.append(f"{how}:{path}")
                            debug_file = path
                    except (ELFError, ValueError, struct.error, OSError) as exc:
                        errors.append(f"{path}: unusable debug file ({exc})")
            if debug_file is None:
                mini = _mini_debuginfo(obj.elf, errors)
                if mini is not None and _collect(mini, (".symtab",), cands, errors,
                                                 ".gnu_debugdata: "):
                    sources.append(".gnu_debugdata")
        return cls(obj.name, build_id, cands, sources, debug_file, errors)

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

    def symbols(self) -> list[tuple[int, int, str]]:
        """(start, effective size, mangled name) of every function, sorted by start."""
        return list(zip(self._starts, self._sizes, self._names, strict=True))


def _open_elf_candidate(path: str) -> BinaryIO | None:
    try:
        f = open(path, "rb")  # noqa: SIM115 - handed to the caller, closed there
    except OSError:
        return None
    if f.read(4) != b"\x7fELF":
        f.close()
        return None
    f.seek(0)
    return f


def _find_debug_file(obj: ObjectFile, build_id: str, debug_dirs: Sequence[str],
                     root: str | None, errors: list[str]
                     ) -> tuple[str, str, BinaryIO] | None:
    """(path, "build-id" or "debuglink", open stream) of a matching separate debug file."""
    if len(build_id) >= 4:
        for d in debug_dirs:
            path = _rooted(root, os.path.join(d, ".build-id", build_id[:2],
                                              build_id[2:] + ".debug"))
            f = _open_elf_candidate(path)
            if f is None:
                continue
            if _stream_build_id(f) == build_id:
                f.seek(0)
                return path, "build-id", f
            errors.append(f"{path}: build ID does not match")
            f.close()
    link = _debuglink(obj.elf)
    if link is None:
        return None
    name, crc = link
    objdir = os.path.dirname(obj.name)
    dirs = [objdir]
    if not root and objdir:
        real = os.path.dirname(os.path.realpath(obj.name))
        if real != objdir:
            dirs.append(real)
    own_path = _rooted(root, obj.name)
    seen: set[str] = set()
    for dirpath in dirs:
        paths = [_rooted(root, os.path.join(dirpath, name)),
                 _rooted(root, os.path.join(dirpath, ".debug", name))]
        if os.path.isabs(dirpath):
            paths += [_rooted(root, os.path.join(d, dirpath.lstrip("/"), name))
                      for d in debug_dirs]
        for path in paths:
            if path in seen:
                continue
            seen.add(path)
            try:
                if os.path.samefile(path, own_path):
                    continue
            except OSError:
                pass
            f = _open_elf_candidate(path)
            if f is None:
                continue
            try:
                ok = _file_crc32(path) == crc
            except OSError:
                ok = False
            if not ok:
                errors.append(f"{path}: CRC32 does not match .gnu_debuglink")
                f.close()
                continue
            other = _stream_build_id(f)
            if build_id and other and other != build_id:
                errors.append(f"{path}: build ID does not match")
                f.close()
                continue
            f.seek(0)
            return path, "debuglink", f
    return None


def _stream_build_id(f: BinaryIO) -> str:
    try:
        f.seek(0)
        return _elf_build_id(ELFFile(f))
    except (ELFError, ValueError, struct.error, OSError):
        return ""


def _mini_debuginfo(elf: ELFFile, errors: list[str]) -> ELFFile | None:
    """The ELF file inside .gnu_debugdata (MiniDebugInfo), or None."""
    sec = elf.get_section_by_name(".gnu_debugdata")
    if sec is None or sec["sh_type"] == "SHT_NOBITS":
        return None
    try:
        dec = lzma.LZMADecompressor()
        data = dec.decompress(sec.data(), max_length=MAX_MINIDEBUGINFO_BYTES)
        if not dec.eof:
            errors.append(".gnu_debugdata: unusable (truncated, or larger than "
                          f"{MAX_MINIDEBUGINFO_BYTES} bytes decompressed)")
            return None
        mini = ELFFile(io.BytesIO(data))
        check_elf_tables(mini, len(data), "the embedded ELF file")
        return mini
    except (lzma.LZMAError, ELFError, ValueError, struct.error, EOFError,
            OverflowError, ObjectError) as exc:
        errors.append(f".gnu_debugdata: unusable ({exc})")
        return None


# -- kernel -------------------------------------------------------------------------

_KERNEL_TEXT = frozenset("tTwW")
_KALLSYMS_LINE = re.compile(r"^([0-9a-fA-F]+) ([A-Za-z]) (\S+)(?:[ \t]+\[([^\]\s]+)\])?[ \t]*$",
                            re.M)


def _first(e: tuple[int, str, str, str]) -> int:
    return e[0]


def _kernel_rank(e: tuple[int, str, str, str]) -> tuple[int, int, int, int, str]:
    """Text over data, global over local, fewer leading underscores, shorter, by name."""
    _, stype, name, _module = e
    return (0 if stype in _KERNEL_TEXT else 1, 0 if stype.isupper() else 1,
            len(name) - len(name.lstrip("_")), len(name), name)
_KERNEL_LAST_SIZE = 4096   # kallsyms has no sizes; the last symbol gets one page


class KernelSymbols:
    """/proc/kallsyms as a sorted table; `available` is False when addresses are hidden."""

    def __init__(self, entries: list[tuple[int, str, str, str]], reason: str = "") -> None:
        self.reason = reason
        self._starts = array("Q")
        self._names: list[str | None] = []
        self._modules: list[str] = []
        entries = sorted(entries, key=_first)
        i, n = 0, len(entries)
        while i < n:
            j = i + 1
            addr = entries[i][0]
            while j < n and entries[j][0] == addr:
                j += 1
            # aliases at one address: the best-ranked name (ranks only for the few ties)
            _, stype, name, module = (entries[i] if j == i + 1 else
                                      min(entries[i:j], key=_kernel_rank))
            self._starts.append(addr)
            self._names.append(name if stype in _KERNEL_TEXT else None)
            self._modules.append(module)
            i = j
        self.available = bool(self._starts) and not reason

    @classmethod
    def load(cls, path: str = "/proc/kallsyms") -> KernelSymbols:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as exc:
            return cls([], f"{path}: cannot read ({exc.strerror})")
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: str, path: str = "kallsyms") -> KernelSymbols:
        # One regex pass over the whole text: about 120k lines on a distro kernel.
        rows = _KALLSYMS_LINE.findall(text)
        if not rows:
            return cls([], f"{path}: no symbols")
        entries = [(int(a, 16), t, name, mod) for a, t, name, mod in rows if t not in "aA"]
        if not any(e[0] for e in entries):
            return cls([], f"{path}: addresses are hidden (kernel.kptr_restrict, or not root)")
        return cls([e for e in entries if e[0]])

    def _index(self, addr: int) -> int:
        i = bisect_right(self._starts, addr) - 1
        if i < 0 or self._names[i] is None:
            return -1
        if i == len(self._starts) - 1 and addr >= self._starts[i] + _KERNEL_LAST_SIZE:
            return -1
        return i

    def lookup(self, addr: int) -> tuple[str, int] | None:
        """(symbol, offset) for a kernel text address, or None."""
        i = self._index(addr)
        if i < 0:
            return None
        name = self._names[i]
        assert name is not None
        return name, addr - self._starts[i]

    def module(self, addr: int) -> str | None:
        """The module owning a kernel text address ("" for the kernel image), or None."""
        i = self._index(addr)
        return self._modules[i] if i >= 0 else None

    def __len__(self) -> int:
        return len(self._starts)


# -- perf maps ----------------------------------------------------------------------

class PerfMap:
    """/tmp/perf-PID.map: "START SIZE name" lines (hex) written by JIT compilers.

    Where entries overlap (a JIT reusing memory) the later line wins.
    """

    def __init__(self, entries: list[tuple[int, int, str]], path: str = "") -> None:
        self.path = path
        self._starts = array("Q")
        self._names: list[str] = []
        items: list[tuple[int, int, int, int]] = []
        for seq, (start, size, name) in enumerate(entries):
            self._starts.append(start)
            self._names.append(name)
            items.append((start, start + size, seq, seq))
        self._segs = _paint(items)

    @classmethod
    def load(cls, pid: int, root: str | None = None) -> PerfMap | None:
        path = _rooted(root, f"/tmp/perf-{pid}.map")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            return None
        return cls(cls.parse(text), path)

    @staticmethod
    def parse(text: str) -> list[tuple[int, int, str]]:
        out: list[tuple[int, int, str]] = []
        for line in text.splitlines():
            parts = line.strip().split(None, 2)
            if len(parts) < 2:
                continue
            try:
                start = int(parts[0], 16)
                size = int(parts[1], 16)
            except ValueError:
                continue
            if size <= 0 or start < 0 or start + size >= 1 << 64:
                continue
            out.append((start, size, parts[2].strip() if len(parts) > 2 else ""))
        return out

    def lookup(self, addr: int) -> tuple[str, int] | None:
        i = self._segs.find(addr)
        if i < 0:
            return None
        return demangle(self._names[i]), addr - self._starts[i]

    def __len__(self) -> int:
        return len(self._names)
