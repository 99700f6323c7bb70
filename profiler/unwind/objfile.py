"""One mapped ELF object: its load segments, unwind tables and code bytes.

profiler.unwind.elf is the container reader: it finds the segments and sections.  The
`.sframe` section is found by name, by section type SHT_GNU_SFRAME or by the
PT_GNU_SFRAME program header, and decoded by profiler.unwind.sframe.  `.eh_frame` /
`.debug_frame` CFI comes from profiler.unwind.cfi and is loaded only when needed.  In a Go
executable the Go text is described by the runtime's own `.gopclntab`
(profiler.unwind.golang.object), which is kept by stripped builds too.  What the
unwinder decodes of the code itself is profiler.unwind.objcode's, and what it
follows through PLT stubs and GOT slots profiler.unwind.objlinks'.

A file is read whole into memory (ObjectFile.open), or, by a long-running profiler,
opened as a stream that reads only what is asked for (open_streamed).
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, BinaryIO

from profiler.reasons import (
    BAD_CFI,
    BAD_SFRAME,
    TABLES_DISAGREE,
)
from profiler.unwind import insn, rules
from profiler.unwind.elf import (
    PT_GNU_SFRAME,
    PT_LOAD,
    SHT_GNU_SFRAME,
    ElfError,
    ElfFile,
)
from profiler.unwind.golang.object import GoText
from profiler.unwind.objcode import FunctionCode
from profiler.unwind.objlinks import DynamicLinks
from profiler.unwind.rules import Rule, rule_shape
from profiler.unwind.sframe.section import SFrameError, SFrameSection

if TYPE_CHECKING:
    from profiler.unwind.cfi import CfiTable


class ObjectError(Exception):
    """The file is missing, unreadable or not an ELF file we can use."""


# Bounds on what one file can make us keep (the header tables are bounded by
# profiler.unwind.elf: MAX_SEGMENTS, MAX_SECTIONS; decoded code by objcode).
MAX_MEMO = 1 << 17       # memoized rule lookups per file

_MACHINES = {"EM_X86_64": "x86_64", "EM_AARCH64": "aarch64"}

# Sections a streamed object copies into memory when they are used.
_TABLE_SECTIONS = {".eh_frame", ".eh_frame_hdr", ".debug_frame", ".sframe"}


class FileStream(io.BufferedReader):
    """A read-only file opened once, as the seekable stream ObjectFile reads.

    ObjectFile.open reads the whole file into memory; through this only what the
    unwinder and symbolizer read (headers, .sframe, .eh_frame, symbol tables) is
    read, through a 64 KiB buffer.  Not a memory mapping: a target can truncate a
    file it has mapped, and touching a mapped page past the new end raises SIGBUS,
    which kills the profiler; a read past the end of a file only comes back short, a
    damaged-file error for that one object (tests/unit/test_agent_procs.py truncates
    one)."""


class ObjectFile(FunctionCode, DynamicLinks, GoText):
    """An ELF file (on disk or in memory, like the vDSO) as the unwinder sees it."""

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self.name = name
        self._stream = stream
        try:
            self.elf = ElfFile(stream)
        except ElfError as exc:
            raise ObjectError(f"{name}: not a usable ELF file ({exc})") from None
        self.machine = self.elf.machine
        self.arch = _MACHINES.get(self.machine, self.machine)
        self.loads = [(s.p_vaddr, s.p_offset, s.p_filesz, s.p_memsz, s.p_flags)
                      for s in self.elf.segments if s.p_type == PT_LOAD]
        self._sframe_loaded = False
        self._sframe: SFrameSection | None = None
        self.sframe_error: str | None = None
        self._cfi_loaded = False
        self._cfi: CfiTable | None = None
        self.cfi_error: str | None = None
        self._rule_memo: dict[int, tuple[Rule | None, str]] = {}
        self._sig_memo: dict[int, bool] = {}
        self._init_go()
        self._init_links()
        self._init_code()

    @classmethod
    def open(cls, path: str, name: str | None = None) -> ObjectFile:
        """The file at `path`, read whole into memory."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ObjectError(f"{name or path}: cannot read ({exc.strerror})") from None
        except ValueError:  # a NUL byte in a path from a capture or snapshot file
            raise ObjectError(f"{name or path!r}: cannot read (not a valid path)") from None
        return cls(io.BytesIO(data), name or path)

    @classmethod
    def open_streamed(cls, path: str, name: str) -> ObjectFile:
        """The file at `path`, kept open and read as needed (see FileStream)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise ObjectError(f"{name}: cannot read ({exc.strerror})") from None
        except ValueError:
            raise ObjectError(f"{name!r}: cannot read (not a valid path)") from None
        stream = FileStream(io.FileIO(fd, "rb"), 1 << 16)
        try:
            if os.fstat(fd).st_size == 0:
                raise ObjectError(f"{name}: not a usable ELF file (empty)")
            return cls(stream, name)
        except BaseException:
            stream.close()
            raise

    @classmethod
    def from_bytes(cls, data: bytes, name: str) -> ObjectFile:
        return cls(io.BytesIO(data), name)

    @property
    def streamed(self) -> bool:
        """Whether the file is read as needed (open_streamed), not held in memory."""
        return isinstance(self._stream, FileStream)

    def nbytes(self) -> int:
        """Memory this object will hold: the unwind tables it copies out of a file it
        reads as a stream (.eh_frame, .debug_frame, .sframe), or the whole image it
        read into memory."""
        if isinstance(self._stream, FileStream):
            return 4096 + sum(sec.sh_size for sec in self.elf.sections
                              if sec.name in _TABLE_SECTIONS)
        getbuffer = getattr(self._stream, "getbuffer", None)
        if getbuffer is not None:
            try:
                return int(getbuffer().nbytes)
            except (ValueError, BufferError):
                return 0
        return 0

    def trim_memos(self, limit: int) -> None:
        """Forget the memoized rule lookups and trampoline checks once either holds
        more than `limit` entries (they are made again on demand)."""
        for memo in (self._rule_memo, self._sig_memo):
            if len(memo) > limit:
                memo.clear()

    # -- segments -------------------------------------------------------------

    def load_bias(self, map_start: int, map_offset: int) -> int:
        """Runtime minus link-time address for a mapping of this file at `map_offset`."""
        for slack in (0, 0xFFF, 0xFFFF):
            for vaddr, offset, filesz, _memsz, _flags in self.loads:
                if (offset & ~slack) <= map_offset < offset + max(filesz, 1):
                    return map_start - (vaddr + map_offset - offset)
        return map_start - map_offset

    def read_code(self, vaddr: int, size: int) -> bytes:
        """Bytes of the file image at link-time `vaddr` (empty if outside every segment)."""
        for seg_vaddr, offset, filesz, _memsz, _flags in self.loads:
            if seg_vaddr <= vaddr and vaddr + size <= seg_vaddr + filesz:
                try:
                    return self.elf.read(offset + vaddr - seg_vaddr, size)
                except ElfError:
                    return b""   # past the end of the file (a p_offset past 2**63, say)
        return b""

    # -- unwind tables --------------------------------------------------------

    def lookup_rule(self, vaddr: int) -> tuple[Rule | None, str]:
        """(rule, method) at link-time `vaddr`, memoized.

        method is "sframe" or "eh_frame" with a rule; with no rule it is "" (no
        unwind info) or the reason the tables are unusable ("bad-sframe", "bad-cfi").
        """
        hit = self._rule_memo.get(vaddr)
        if hit is None:
            if len(self._rule_memo) >= MAX_MEMO:
                self._rule_memo.clear()
            hit = self._lookup_rule(vaddr)
            self._rule_memo[vaddr] = hit
        return hit

    def _lookup_rule(self, vaddr: int) -> tuple[Rule | None, str]:
        from profiler.unwind.cfi import CfiError
        go = self.go_frames
        if go is not None and go.table.covers(vaddr):
            # Go text: the runtime's own table (Go's .debug_frame is generated from
            # it, and has no rows for some runtime functions).  No rule here means
            # none is right (an SP-writing function): the CFI would not have one.
            from profiler.unwind.golang.pclntab import GoPclnError
            if self.go_switch_return(vaddr + 1):
                vaddr += 1   # the planted pc is a function's entry: vaddr + 1 is its frame
            try:
                rule, _fn = go.rule(vaddr)
            except GoPclnError:
                rule = None
            return (rule, "gopclntab") if rule is not None else (None, "")
        sf = self.sframe
        if sf is not None:
            try:
                rule = sf.find_rule(vaddr)
            except SFrameError:
                return None, BAD_SFRAME
            if rule is not None:
                return self._cross_check(vaddr, rule)
        elif self.sframe_error is not None:
            return None, BAD_SFRAME
        cfi = self.cfi
        if cfi is not None:
            try:
                rule = cfi.find(vaddr)
            except CfiError:
                return None, BAD_CFI
            if rule is not None:
                return rule, "eh_frame"
        elif self.cfi_error is not None and sf is None:
            return None, BAD_CFI
        return None, ""

    def _cross_check(self, vaddr: int, rule: Rule) -> tuple[Rule | None, str]:
        """An SFrame row, checked against the .eh_frame row for the same pc.

        The assembler builds both tables from the same .cfi directives, so where
        both describe a pc they agree (checked on every pc of every test binary);
        a difference means one of them is corrupt or wrong (ld 2.44-2.47 give
        .plt.got entries CFA = SP+16 in .sframe, SP+8 in .eh_frame, and only the
        latter is right).  Not knowing which, the unwinder stops there.  A pc the
        CFI cannot express (PLT expressions) or a corrupt CFI leaves SFrame alone.
        """
        from profiler.unwind.cfi import CfiError
        cfi = self.cfi
        if cfi is None:
            return rule, "sframe"
        try:
            other = cfi.find(vaddr)
        except CfiError:
            return rule, "sframe"
        if other is None:
            # A row .eh_frame cannot express (PLT expressions) is taken from .sframe,
            # but not the claim "outermost frame" for a pc .eh_frame describes.
            if rule.ra_kind == rules.LOC_UNDEFINED:
                try:
                    if cfi.has_pc(vaddr):
                        return None, TABLES_DISAGREE
                except CfiError:
                    pass
            return rule, "sframe"
        if rule_shape(other) == rule_shape(rule):
            return rule, "sframe"
        return None, TABLES_DISAGREE

    def unwind_tables(self) -> str:
        """The best unwind table the file has: "sframe", "gopclntab", "eh_frame"
        (or .debug_frame) or "none"."""
        if self.sframe is not None:
            return "sframe"
        if self.go_frames is not None:
            return "gopclntab"
        return "eh_frame" if self.cfi is not None else "none"

    def cfi_rule(self, vaddr: int) -> Rule | None:
        """The .eh_frame/.debug_frame row alone at link-time `vaddr` (None if there
        is none or the CFI is corrupt): what a walk follows, in doubt, where the
        tables disagree or the .sframe section is corrupt."""
        from profiler.unwind.cfi import CfiError
        cfi = self.cfi
        if cfi is None:
            return None
        try:
            return cfi.find(vaddr)
        except CfiError:
            return None

    def function_range(self, vaddr: int) -> tuple[int, int] | None:
        """[start, end) at link time of the function (FDE, or Go function) holding
        `vaddr`, if any."""
        from profiler.unwind.cfi import CfiError
        fn = self.go_function(vaddr)
        if fn is not None:
            return fn.entry, fn.end
        sf = self.sframe
        if sf is not None:
            fde = sf.find_fde(vaddr)
            if fde is not None:
                return fde.func_start, fde.func_start + fde.func_size
        cfi = self.cfi
        if cfi is not None:
            try:
                return cfi.fde_range(vaddr)
            except CfiError:
                return None
        return None

    def is_sigreturn(self, vaddr: int) -> bool:
        """Whether link-time `vaddr` is in an rt_sigreturn trampoline (on either insn)."""
        hit = self._sig_memo.get(vaddr)
        if hit is None:
            if len(self._sig_memo) >= MAX_MEMO:
                self._sig_memo.clear()
            hit = insn.is_sigreturn_at(self.arch, vaddr, self.read_code)
            self._sig_memo[vaddr] = hit
        return hit

    @property
    def sframe(self) -> SFrameSection | None:
        """The decoded .sframe section, or None (reason in `sframe_error` if corrupt)."""
        if not self._sframe_loaded:
            self._sframe_loaded = True
            try:
                self._sframe = self._load_sframe()
            except SFrameError as exc:
                self.sframe_error = str(exc)
        return self._sframe

    def find_sframe_location(self) -> tuple[int, int, int] | None:
        """(link-time address, file offset, size) of the SFrame section, if any."""
        for sec in self.elf.sections:
            if sec.name == ".sframe" or sec.sh_type == SHT_GNU_SFRAME:
                return sec.sh_addr, sec.sh_offset, sec.sh_size
        for seg in self.elf.segments:
            if seg.p_type == PT_GNU_SFRAME:
                return seg.p_vaddr, seg.p_offset, seg.p_filesz
        return None

    def _load_sframe(self) -> SFrameSection | None:
        loc = self.find_sframe_location()
        if loc is None:
            return None
        addr, offset, size = loc
        if size == 0:
            return None
        try:
            data = self.elf.read(offset, size)
        except ElfError:
            raise SFrameError(f"{self.name}: bad .sframe: section runs past the end of the "
                              "file") from None
        return SFrameSection(data, addr, self.name)

    @property
    def cfi(self) -> CfiTable | None:
        """The .eh_frame/.debug_frame table, or None (reason in `cfi_error` if corrupt)."""
        if not self._cfi_loaded:
            self._cfi_loaded = True
            from profiler.unwind.cfi import CfiError, CfiTable
            try:
                self._cfi = CfiTable.from_elf(self.elf, self.name)
            except CfiError as exc:
                self.cfi_error = str(exc)
        return self._cfi


class ObjectCache:
    """Opens each file once; resolves absolute mapping paths under an optional root."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root
        self._by_path: dict[str, ObjectFile | None] = {}
        self.errors: dict[str, str] = {}

    def resolve(self, path: str) -> str:
        if self.root and path.startswith("/"):
            return os.path.join(self.root, path.lstrip("/"))
        return path

    def get(self, path: str) -> ObjectFile | None:
        if path in self._by_path:
            return self._by_path[path]
        obj: ObjectFile | None
        try:
            obj = ObjectFile.open(self.resolve(path), path)
        except ObjectError as exc:
            self.errors[path] = str(exc)
            obj = None
        self._by_path[path] = obj
        return obj

    def get_image(self, key: str, data: bytes) -> ObjectFile | None:
        """An ELF image held in memory (the vDSO), cached under `key`."""
        if key in self._by_path:
            return self._by_path[key]
        obj: ObjectFile | None
        try:
            obj = ObjectFile.from_bytes(data, key)
        except ObjectError as exc:
            self.errors[key] = str(exc)
            obj = None
        self._by_path[key] = obj
        return obj
