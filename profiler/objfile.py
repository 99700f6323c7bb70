"""One mapped ELF object: its load segments, unwind tables and code bytes.

pyelftools is the container reader: it finds the segments and sections.  The
`.sframe` section is found by name, by section type SHT_GNU_SFRAME or by the
PT_GNU_SFRAME program header, and decoded by profiler.sframe.  `.eh_frame` /
`.debug_frame` CFI comes from profiler.cfi and is loaded only when needed.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from profiler import insn, rules
from profiler.rules import Rule
from profiler.sframe import constants as C
from profiler.sframe.section import SFrameError, SFrameSection

if TYPE_CHECKING:
    from profiler.cfi import CfiTable


class ObjectError(Exception):
    """The file is missing, unreadable or not an ELF file we can use."""


# Bounds on the header tables of a file we open (real files have a dozen segments and
# at most a few thousand sections; pyelftools walks every entry on each iteration).
MAX_SEGMENTS = 1 << 12
MAX_SECTIONS = 1 << 16
MAX_RELOCS = 1 << 20     # dynamic relocations or .dynsym entries read per file
MAX_DECODED = 4096       # functions whose decoded code is kept per file
MAX_MEMO = 1 << 17       # memoized rule lookups per file


def check_elf_tables(elf: ELFFile, size: int, name: str) -> None:
    """Raise ObjectError unless the program and section header tables lie inside the
    `size`-byte file with entries of the right size, and are not absurdly long.

    pyelftools checks neither: e_phentsize 0 with e_phnum 65535 makes it parse the ELF
    header 65535 times per walk over the segments.
    """
    wide = elf.elfclass == 64
    for what, count, off, entsize, need, limit in (
            ("program header", elf.num_segments(), elf["e_phoff"], elf["e_phentsize"],
             56 if wide else 32, MAX_SEGMENTS),
            ("section header", elf.num_sections(), elf["e_shoff"], elf["e_shentsize"],
             64 if wide else 40, MAX_SECTIONS)):
        if not count:
            continue
        if count > limit:
            raise ObjectError(f"{name}: {count} {what} entries (at most {limit})")
        if entsize < need or off + count * entsize > size:
            raise ObjectError(f"{name}: {what} table ({count} x {entsize} bytes at offset "
                              f"{off}) does not fit the {size}-byte file")


_MACHINES = {"EM_X86_64": "x86_64", "EM_AARCH64": "aarch64"}

# The kernel's rt_sigreturn trampolines, recognised by their code, and the offsets
# into it where a sampled pc can be: on either instruction, or just past the system
# call while the kernel runs rt_sigreturn.  SP points at the signal frame at all of them.
SIGRETURN_CODE = {
    "x86_64": (bytes.fromhex("48c7c00f0000000f05"), (0, 7, 9)),   # mov $15,%rax; syscall
    "aarch64": (bytes.fromhex("681180d2010000d4"), (0, 4, 8)),    # mov x8,#139; svc #0
}


def is_sigreturn_at(arch: str, addr: int, read: Callable[[int, int], bytes]) -> bool:
    """Whether `addr` is inside (or just past) an rt_sigreturn trampoline."""
    code, offsets = SIGRETURN_CODE.get(arch, (b"-", ()))
    return any(read(addr - off, len(code)) == code for off in offsets)


_IRELATIVE = {"EM_X86_64": 37, "EM_AARCH64": 1032}   # R_X86_64_IRELATIVE, R_AARCH64_IRELATIVE
_RELA = struct.Struct("<QQq")                        # Elf64_Rela
_REL = struct.Struct("<QQ")                          # Elf64_Rel
_SYM64 = struct.Struct("<IBBHQQ")                    # Elf64_Sym


def c_string(table: bytes, at: int) -> str:
    """The NUL-terminated string at offset `at` of an ELF string table (to its end
    if unterminated), undecodable bytes replaced."""
    end = table.find(b"\0", at)
    return table[at:end if end >= 0 else len(table)].decode("utf-8", "replace")


def _symbol_name(symtab: bytes, strtab: bytes, index: int) -> str:
    """Name of entry `index` of an Elf64_Sym table (IndexError past its end)."""
    if (index + 1) * _SYM64.size > len(symtab):
        raise IndexError(index)
    return c_string(strtab, _SYM64.unpack_from(symtab, index * _SYM64.size)[0])


def rule_shape(rule: Rule) -> tuple[int, ...]:
    """What a rule says about CFA, RA and FP, without the fields that do not matter
    for its kinds (a register number for a CFA-relative slot, say)."""
    return (rule.cfa_reg, rule.cfa_off, rule.cfa_deref,
            rule.ra_kind, rule.ra_off if rule.ra_kind == rules.LOC_CFA_DEREF else 0,
            rule.fp_kind, rule.fp_off if rule.fp_kind == rules.LOC_CFA_DEREF else 0,
            rule.mangled_ra)


A64_PLT_RULE = Rule(rules.AARCH64_SP, 0, False, rules.LOC_SAME, rules.AARCH64_LR, 0,
                    rules.LOC_SAME, 0, 0)


class ObjectFile:
    """An ELF file (on disk or in memory, like the vDSO) as the unwinder sees it."""

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self.name = name
        self._stream = stream
        try:
            self.elf = ELFFile(stream)
            check_elf_tables(self.elf, self.elf.stream_len, name)
            self.machine = self.elf["e_machine"]
            self.arch = _MACHINES.get(self.machine, self.machine)
            self.loads = [
                (s["p_vaddr"], s["p_offset"], s["p_filesz"], s["p_memsz"], s["p_flags"])
                for s in self.elf.iter_segments() if s["p_type"] == "PT_LOAD"
            ]
            self._sections: list[tuple[str, object, int, int, int]] = []
            # (sh_flags, sh_link, sh_entsize) of each section, in the same order.
            self._section_links: list[tuple[int, int, int]] = []
            for sec in self.elf.iter_sections():
                self._sections.append((sec.name, sec["sh_type"], sec["sh_addr"],
                                       sec["sh_offset"], sec["sh_size"]))
                self._section_links.append((sec["sh_flags"], sec["sh_link"],
                                            sec["sh_entsize"]))
        except ObjectError:
            raise
        except (ELFError, ValueError, KeyError, OSError, Exception) as exc:  # noqa: BLE001
            # pyelftools raises many exception types (construct errors among them)
            # on a damaged file; they all mean the same thing to us.
            raise ObjectError(f"{name}: not a usable ELF file ({exc})") from None
        self._sframe_loaded = False
        self._sframe: SFrameSection | None = None
        self.sframe_error: str | None = None
        self._cfi_loaded = False
        self._cfi: CfiTable | None = None
        self.cfi_error: str | None = None
        self._rule_memo: dict[int, tuple[Rule | None, str]] = {}
        self._sig_memo: dict[int, bool] = {}
        self.plt_ranges = [
            (addr, addr + size) for name, _t, addr, _o, size in self._sections
            if name == ".plt" and size > 32
        ]
        # Every PLT-like section: .plt, .plt.sec, .plt.got, .iplt (static ifuncs).
        self.stub_ranges = [
            (addr, addr + size) for name, _t, addr, _o, size in self._sections
            if name.startswith((".plt", ".iplt")) and size
        ]
        self._jumps_memo: dict[int, frozenset[int] | None] = {}
        self._x86_memo: dict[int, insn.X86Function] = {}
        self._slots: dict[int, str] | None = None
        self._exports: dict[str, list[tuple[int, bool]]] | None = None

    @classmethod
    def open(cls, path: str, name: str | None = None) -> ObjectFile:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ObjectError(f"{name or path}: cannot read ({exc.strerror})") from None
        except ValueError:  # a NUL byte in a path from a capture or snapshot file
            raise ObjectError(f"{name or path!r}: cannot read (not a valid path)") from None
        return cls(io.BytesIO(data), name or path)

    @classmethod
    def from_bytes(cls, data: bytes, name: str) -> ObjectFile:
        return cls(io.BytesIO(data), name)

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
                    self._stream.seek(offset + vaddr - seg_vaddr)
                    return self._stream.read(size)
                except (OverflowError, ValueError, OSError):
                    return b""   # a p_offset no file can have (past 2**63)
        return b""

    def a64_plt_rule(self, vaddr: int) -> Rule | None:
        """The frame-0 rule for an aarch64 PLT entry (ld emits no unwind data for .plt).

        PLT entries (adrp x16; ldr x17; add x16; br x17, maybe after "bti c") touch
        neither SP nor LR: CFA = SP, RA = LR.  PLT0 (the first 32 bytes) pushes
        {x16, x30} and jumps to the lazy-binding resolver, whose own CFI does not
        give the caller's SP (see "ra-above-cfa"); gdb's walks through it were wrong
        as well, so PLT0 gets no rule and such chains are not called reliable.
        """
        for lo, hi in self.plt_ranges:
            if lo + 32 <= vaddr < hi:
                return A64_PLT_RULE
        return None

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
        from profiler.cfi import CfiError
        sf = self.sframe
        if sf is not None:
            try:
                rule = sf.find_rule(vaddr)
            except SFrameError:
                return None, "bad-sframe"
            if rule is not None:
                return self._cross_check(vaddr, rule)
        elif self.sframe_error is not None:
            return None, "bad-sframe"
        cfi = self.cfi
        if cfi is not None:
            try:
                rule = cfi.find(vaddr)
            except CfiError:
                return None, "bad-cfi"
            if rule is not None:
                return rule, "eh_frame"
        elif self.cfi_error is not None and sf is None:
            return None, "bad-cfi"
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
        from profiler.cfi import CfiError
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
                        return None, "tables-disagree"
                except CfiError:
                    pass
            return rule, "sframe"
        if rule_shape(other) == rule_shape(rule):
            return rule, "sframe"
        return None, "tables-disagree"

    def function_range(self, vaddr: int) -> tuple[int, int] | None:
        """[start, end) at link time of the function (FDE) holding `vaddr`, if any."""
        from profiler.cfi import CfiError
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

    def in_stubs(self, vaddr: int) -> bool:
        """Whether link-time `vaddr` is in a PLT (or ifunc PLT) section."""
        return any(lo <= vaddr < hi for lo, hi in self.stub_ranges)

    def jump_targets(self, start: int, end: int) -> frozenset[int] | None:
        """Link-time targets outside [start, end) of the direct jumps of the function
        there; None when its code cannot be decoded."""
        if self.arch == "x86_64":
            fn = self.x86_function(start)
            return None if fn is None else fn.jumps
        if self.arch != "aarch64":
            return None
        hit = self._jumps_memo.get(start, False)
        if hit is False:
            if len(self._jumps_memo) >= MAX_DECODED:
                self._jumps_memo.clear()
            hit = insn.a64_branch_targets(start, self.read_code(start, end - start))
            self._jumps_memo[start] = hit
        return hit  # type: ignore[return-value]

    def x86_function(self, vaddr: int) -> insn.X86Function | None:
        """The decoded x86_64 function (FDE) holding link-time `vaddr`, if decodable."""
        rng = self.function_range(vaddr)
        if rng is None:
            return None
        fn = self._x86_memo.get(rng[0])
        if fn is None:
            if len(self._x86_memo) >= MAX_DECODED:
                self._x86_memo.clear()
            size = rng[1] - rng[0]
            code = self.read_code(rng[0], size) if 0 < size <= insn.MAX_SCAN else b""
            fn = insn.X86Function(rng[0], code)
            if len(code) != size:
                fn.complete = False
            self._x86_memo[rng[0]] = fn
        return fn if fn.complete else None

    def slot_symbol(self, slot: int) -> str | None:
        """The symbol a GOT slot (link-time address) is relocated to: its name, ""
        for an ifunc slot (R_*_IRELATIVE), None when no dynamic relocation names it."""
        if self._slots is None:
            self._slots = self._read_slots()
        return self._slots.get(slot)

    def _read_slots(self) -> dict[int, str]:
        """slot_symbol's table, read with struct from the dynamic relocation sections
        (pyelftools parses one entry at a time: 1.7 s for libLLVM's, 60 ms this way)."""
        if self.elf.elfclass != 64 or not self.elf.little_endian:
            return self._read_slots_elftools()
        out: dict[int, str] = {}
        irelative = _IRELATIVE.get(self.machine, -1)
        names: dict[int, tuple[bytes, bytes]] = {}
        try:
            for (_name, sh_type, _addr, offset, size), (flags, link, entsize) in zip(
                    self._sections, self._section_links):
                if sh_type not in ("SHT_RELA", "SHT_REL") or not flags & 2:
                    continue
                fmt = _RELA if sh_type == "SHT_RELA" else _REL
                if entsize not in (0, fmt.size):
                    return self._read_slots_elftools()
                count = min(size // fmt.size, MAX_RELOCS)
                for at in range(0, count, 4096):            # in pieces: big tables
                    n = min(4096, count - at)
                    for rel in fmt.iter_unpack(self._read_at(offset + at * fmt.size,
                                                             n * fmt.size)):
                        rtype, sym = rel[1] & 0xFFFFFFFF, rel[1] >> 32
                        if rtype == irelative:
                            out[rel[0]] = ""
                        elif sym:
                            if link not in names:
                                names[link] = self._symbol_table(link)
                            out[rel[0]] = _symbol_name(*names[link], sym)
        except (ObjectError, struct.error, IndexError, OverflowError, ValueError):
            pass    # a damaged table: what was read stays
        return out

    def _read_at(self, offset: int, size: int) -> bytes:
        self._stream.seek(offset)
        data = self._stream.read(size)
        if len(data) != size:
            raise ObjectError(f"{self.name}: table at {offset} runs past the end of the file")
        return data

    def _symbol_table(self, index: int) -> tuple[bytes, bytes]:
        """(symbol table bytes, its string table bytes) of section `index`."""
        if not 0 <= index < len(self._sections):
            raise ObjectError(f"{self.name}: no section {index}")
        _n, _t, _a, offset, size = self._sections[index]
        strtab = self._section_links[index][1]
        if not 0 <= strtab < len(self._sections):
            raise ObjectError(f"{self.name}: no section {strtab}")
        size = min(size, MAX_RELOCS * _SYM64.size)
        return (self._read_at(offset, size - size % _SYM64.size),
                self._read_at(self._sections[strtab][3], self._sections[strtab][4]))

    def _read_slots_elftools(self) -> dict[int, str]:
        """_read_slots for files that are not 64-bit little-endian, with pyelftools."""
        out: dict[int, str] = {}
        irelative = _IRELATIVE.get(self.machine, -1)
        try:
            for sec in self.elf.iter_sections():
                if sec["sh_type"] not in ("SHT_RELA", "SHT_REL") or not sec["sh_flags"] & 2:
                    continue
                symtab = self.elf.get_section(sec["sh_link"])
                for n, rel in enumerate(sec.iter_relocations()):  # type: ignore[attr-defined]
                    if n >= MAX_RELOCS:
                        break
                    if rel["r_info_type"] == irelative:
                        out[rel["r_offset"]] = ""
                    elif rel["r_info_sym"]:
                        out[rel["r_offset"]] = symtab.get_symbol(  # type: ignore[attr-defined]
                            rel["r_info_sym"]).name
        except Exception:  # noqa: BLE001 -- a damaged table: what was read stays
            pass
        return out

    def exports(self, name: str) -> list[tuple[int, bool]]:
        """(link-time value, is an ifunc) of each .dynsym definition of `name`."""
        if self._exports is None:
            from profiler.symbolize import dynamic_exports
            try:
                self._exports = dynamic_exports(self.elf, MAX_RELOCS)
            except Exception:  # noqa: BLE001 -- damaged headers: read them below
                self._exports = None
            if self._exports is None:
                self._exports = self._read_exports()
        return self._exports.get(name, [])

    @property
    def is_dynamic_linker(self) -> bool:
        """Whether this is glibc's ld.so (it defines _rtld_global)."""
        return bool(self.exports("_rtld_global"))

    def _read_exports(self) -> dict[str, list[tuple[int, bool]]]:
        """exports() the slow way (pyelftools), for files with unusual headers."""
        out: dict[str, list[tuple[int, bool]]] = {}
        try:
            dynsym = self.elf.get_section_by_name(".dynsym")
            syms = dynsym.iter_symbols() if dynsym is not None else ()  # type: ignore[attr-defined]
            for n, sym in enumerate(syms):
                if n >= MAX_RELOCS:
                    break
                if sym["st_shndx"] != "SHN_UNDEF" and sym["st_value"]:
                    out.setdefault(sym.name, []).append(
                        (sym["st_value"], sym["st_info"]["type"] == "STT_LOOS"))
        except Exception:  # noqa: BLE001 -- a damaged table: what was read stays
            pass
        return out

    def is_sigreturn(self, vaddr: int) -> bool:
        """Whether link-time `vaddr` is in an rt_sigreturn trampoline (on either insn)."""
        hit = self._sig_memo.get(vaddr)
        if hit is None:
            if len(self._sig_memo) >= MAX_MEMO:
                self._sig_memo.clear()
            hit = is_sigreturn_at(self.arch, vaddr, self.read_code)
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
        for name, sh_type, addr, offset, size in self._sections:
            if name == ".sframe" or sh_type in (C.SHT_GNU_SFRAME, "SHT_GNU_SFRAME"):
                return addr, offset, size
        for seg in self.elf.iter_segments():
            if seg["p_type"] in (C.PT_GNU_SFRAME, "PT_GNU_SFRAME"):
                return seg["p_vaddr"], seg["p_offset"], seg["p_filesz"]
        return None

    def _load_sframe(self) -> SFrameSection | None:
        loc = self.find_sframe_location()
        if loc is None:
            return None
        addr, offset, size = loc
        if size == 0:
            return None
        file_size = self._stream.seek(0, io.SEEK_END)
        if offset + size > file_size:
            raise SFrameError(f"{self.name}: bad .sframe: section runs past the end of the file")
        self._stream.seek(offset)
        data = self._stream.read(size)
        if len(data) != size:
            raise SFrameError(f"{self.name}: bad .sframe: section runs past the end of the file")
        return SFrameSection(data, addr, self.name)

    @property
    def cfi(self) -> CfiTable | None:
        """The .eh_frame/.debug_frame table, or None (reason in `cfi_error` if corrupt)."""
        if not self._cfi_loaded:
            self._cfi_loaded = True
            from profiler.cfi import CfiError, CfiTable
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
