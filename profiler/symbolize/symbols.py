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
lookup.  Names are demangled (profiler.symbolize.demangle) on lookup, with a cache.

KernelSymbols reads /proc/kallsyms (real addresses as root; all-zero addresses mean
kptr_restrict hides them and the table reports itself unavailable).  PerfMap reads
/tmp/perf-PID.map, written by JIT compilers (``START SIZE name`` in hex).
"""

from __future__ import annotations

import heapq
import io
import lzma
import os
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import BinaryIO

from profiler.symbolize.demangle import demangle
from profiler.unwind.elf import (
    SHF_EXECINSTR,
    SHN_ABS,
    SHN_LORESERVE,
    SHT_DYNSYM,
    SHT_NOBITS,
    SHT_SYMTAB,
    STT_FUNC,
    STT_GNU_IFUNC,
    STT_NOTYPE,
    ElfError,
    ElfFile,
)
from profiler.unwind.golang.pclntab import Pclntab
from profiler.unwind.objfile import ObjectFile

__all__ = ["ElfSymbols", "KernelSymbols", "PerfMap", "read_build_id"]

STB_LOCAL, STB_GLOBAL, STB_WEAK, STB_GNU_UNIQUE = 0, 1, 2, 10
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

def read_build_id(obj: ObjectFile) -> str:
    """The GNU build ID of `obj` as lowercase hex ("" if it has none)."""
    return obj.elf.build_id()


def _debuglink(elf: ElfFile) -> tuple[str, int] | None:
    """(file name, CRC32) from .gnu_debuglink, if present and a plain file name."""
    link = elf.debuglink()
    if link is None or "/" in link[0]:
        return None
    return link


def _file_crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


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
                mini = _mini_debuginfo(obj.elf, errors)
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
        return ElfFile(f).build_id()
    except ElfError:
        return ""


def _mini_debuginfo(elf: ElfFile, errors: list[str]) -> ElfFile | None:
    """The ELF file inside .gnu_debugdata (MiniDebugInfo), or None."""
    sec = elf.find_section(".gnu_debugdata")
    if sec is None or sec.sh_type == SHT_NOBITS:
        return None
    try:
        dec = lzma.LZMADecompressor()
        data = dec.decompress(elf.section_data(sec), max_length=MAX_MINIDEBUGINFO_BYTES)
        if not dec.eof:
            errors.append(".gnu_debugdata: unusable (truncated, or larger than "
                          f"{MAX_MINIDEBUGINFO_BYTES} bytes decompressed)")
            return None
        return ElfFile(io.BytesIO(data))
    except (lzma.LZMAError, ElfError) as exc:
        errors.append(f".gnu_debugdata: unusable ({exc})")
        return None


# -- kernel -------------------------------------------------------------------------
#
# /proc/kallsyms (about 200,000 lines) as a few flat arrays and one bytes object
# (about 4 MB): every line is parsed and dropped at once.  Parsed into tuples with
# one str per symbol, the transient objects and the surviving names shared the
# interpreter's small-object arenas, and tens of megabytes of arenas stayed resident
# after the parse -- in the agent, for months.
#
# Lookups: non-text symbols end the text symbol before them; aliases at one address
# keep the best-ranked name (text over data, global over local, fewer leading
# underscores, shorter, then by name); the last symbol covers one page.

_KERNEL_TEXT = frozenset(b"tTwW")
_KERNEL_LAST_SIZE = 4096   # kallsyms has no sizes; the last symbol gets one page


def _kernel_rank(stype: int, name: bytes) -> tuple[int, int, int, int, bytes]:
    return (0 if stype in _KERNEL_TEXT else 1, 0 if 65 <= stype <= 90 else 1,
            len(name) - len(name.lstrip(b"_")), len(name), name)


class KernelSymbols:
    """/proc/kallsyms as sorted arrays: starts, name offsets (-1: not text), modules."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        self._starts = array("Q")
        self._name_at = array("q")
        self._module_of = array("H")
        self._blob = b""
        self._modules: list[str] = [""]
        self.available = False

    @classmethod
    def load(cls, path: str = "/proc/kallsyms") -> KernelSymbols:
        try:
            with open(path, "rb") as f:
                return cls._parse(f, path)
        except OSError as exc:
            return cls(f"{path}: cannot read ({exc.strerror})")

    @classmethod
    def _parse(cls, lines: object, path: str) -> KernelSymbols:
        self = cls()
        starts, types = array("Q"), array("B")
        name_at, module_of = array("q"), array("H")
        blob = bytearray()
        modules: dict[bytes, int] = {b"": 0}
        hidden = True
        for line in lines:  # type: ignore[attr-defined]
            parts = line.split()
            if len(parts) < 3 or len(parts[1]) != 1:
                continue
            stype = parts[1][0]
            if stype in b"aA":
                continue
            try:
                addr = int(parts[0], 16)
            except ValueError:
                continue
            if not addr:
                continue
            hidden = False
            mod = b""
            if len(parts) > 3 and parts[3].startswith(b"[") and parts[3].endswith(b"]"):
                mod = parts[3][1:-1]
            mi = modules.get(mod)
            if mi is None:
                mi = modules[mod] = len(modules)
            starts.append(addr)
            types.append(stype)
            name_at.append(len(blob))
            blob += parts[2] + b"\0"
            module_of.append(mi)
        if hidden:
            return cls(f"{path}: no symbols, or addresses are hidden "
                       "(kernel.kptr_restrict, or not root)")
        n = len(starts)
        if any(starts[i] > starts[i + 1] for i in range(n - 1)):
            order = sorted(range(n), key=starts.__getitem__)
        else:
            order = range(n)    # type: ignore[assignment]
        raw = bytes(blob)
        out_blob = bytearray()
        i = 0
        while i < n:
            addr = starts[order[i]]
            j = i + 1
            while j < n and starts[order[j]] == addr:
                j += 1
            best = order[i]
            if j > i + 1:
                best = min((order[k] for k in range(i, j)),
                           key=lambda e: _kernel_rank(types[e], _kernel_name(raw, name_at[e])))
            self._starts.append(addr)
            self._module_of.append(module_of[best])
            if types[best] in _KERNEL_TEXT:
                self._name_at.append(len(out_blob))
                out_blob += _kernel_name(raw, name_at[best]) + b"\0"
            else:
                self._name_at.append(-1)
            i = j
        self._blob = bytes(out_blob)
        self._modules = [m.decode("utf-8", "replace") for m in modules]
        self.available = bool(self._starts)
        return self

    def _index(self, addr: int) -> int:
        i = bisect_right(self._starts, addr) - 1
        if i < 0 or self._name_at[i] < 0:
            return -1
        if i == len(self._starts) - 1 and addr >= self._starts[i] + _KERNEL_LAST_SIZE:
            return -1
        return i

    def lookup(self, addr: int) -> tuple[str, int] | None:
        """(symbol, offset) for a kernel text address, or None."""
        i = self._index(addr)
        if i < 0:
            return None
        return (_kernel_name(self._blob, self._name_at[i]).decode("utf-8", "replace"),
                addr - self._starts[i])

    def module(self, addr: int) -> str | None:
        """The module owning a kernel text address ("" for the kernel image), or None."""
        i = self._index(addr)
        return self._modules[self._module_of[i]] if i >= 0 else None

    def __len__(self) -> int:
        return len(self._starts)


def _kernel_name(blob: bytes, at: int) -> bytes:
    return blob[at:blob.index(b"\0", at)]


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
