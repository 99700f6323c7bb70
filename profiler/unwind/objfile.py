"""One mapped ELF object: its load segments, unwind tables and code bytes.

profiler.unwind.elf is the container reader: it finds the segments and sections.  The
`.sframe` section is found by name, by section type SHT_GNU_SFRAME or by the
PT_GNU_SFRAME program header, and decoded by profiler.unwind.sframe.  `.eh_frame` /
`.debug_frame` CFI comes from profiler.cfi and is loaded only when needed.  In a Go
executable the Go text is described by the runtime's own `.gopclntab`
(profiler.unwind.golang), which is kept by stripped builds too.
"""

from __future__ import annotations

import bisect
import io
import os
import struct
from collections.abc import Callable
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
    SHF_ALLOC,
    SHN_UNDEF,
    SHT_GNU_SFRAME,
    SHT_REL,
    SHT_RELA,
    STT_GNU_IFUNC,
    ElfError,
    ElfFile,
    Section,
)
from profiler.unwind.elfsyms import dynamic_exports, sized_functions
from profiler.unwind.rules import Rule
from profiler.unwind.sframe.section import SFrameError, SFrameSection

if TYPE_CHECKING:
    from profiler.cfi import CfiTable
    from profiler.unwind.golang.frames import GoFrames
    from profiler.unwind.golang.pclntab import GoFunc, Pclntab


class ObjectError(Exception):
    """The file is missing, unreadable or not an ELF file we can use."""


# Bounds on what one file can make us read or keep (the header tables are bounded by
# profiler.unwind.elf: MAX_SEGMENTS, MAX_SECTIONS).
MAX_RELOCS = 1 << 20     # dynamic relocations or .dynsym entries read per file
MAX_DECODED = 4096       # functions whose decoded code is kept per file
MAX_MEMO = 1 << 17       # memoized rule lookups per file


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


def rule_shape(rule: Rule) -> tuple[int, ...]:
    """What a rule says about CFA, RA and FP, without the fields that do not matter
    for its kinds (a register number for a CFA-relative slot, say)."""
    return (rule.cfa_reg, rule.cfa_off, rule.cfa_deref, rule.cfa_add,
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
            self.elf = ElfFile(stream)
        except ElfError as exc:
            raise ObjectError(f"{name}: not a usable ELF file ({exc})") from None
        self.machine = self.elf.machine
        self.arch = _MACHINES.get(self.machine, self.machine)
        self.loads = [(s.p_vaddr, s.p_offset, s.p_filesz, s.p_memsz, s.p_flags)
                      for s in self.elf.segments if s.p_type == PT_LOAD]
        # The section headers, for profiler/app/agent/procs.py (it sizes the tables).
        self._sections = self.elf.sections
        self._sframe_loaded = False
        self._sframe: SFrameSection | None = None
        self.sframe_error: str | None = None
        self._cfi_loaded = False
        self._cfi: CfiTable | None = None
        self.cfi_error: str | None = None
        self._go_loaded = False
        self._go: GoFrames | None = None
        self.go_error: str | None = None
        self._go_specials: dict[str, GoFunc | None] = {}
        self._rule_memo: dict[int, tuple[Rule | None, str]] = {}
        self._sig_memo: dict[int, bool] = {}
        self.plt_ranges = [
            (sec.sh_addr, sec.sh_addr + sec.sh_size) for sec in self.elf.sections
            if sec.name == ".plt" and sec.sh_size > 32
        ]
        # Every PLT-like section: .plt, .plt.sec, .plt.got, .iplt (static ifuncs).
        self.stub_ranges = [
            (sec.sh_addr, sec.sh_addr + sec.sh_size) for sec in self.elf.sections
            if sec.name.startswith((".plt", ".iplt")) and sec.sh_size
        ]
        self._jumps_memo: dict[int, frozenset[int] | None] = {}
        self._leaves_memo: dict[int, bool] = {}
        self._leaf_memo: dict[int, bool] = {}
        self._func_syms: list[tuple[int, int]] | None = None
        self._x86_memo: dict[int, insn.X86Function] = {}
        self._slots: list[tuple[dict[int, int], Section | None]] | None = None
        self._exports: dict[str, list[tuple[int, bool]]] | None = None
        self._export_memo: dict[str, list[tuple[int, bool]]] = {}

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
                    return self.elf.read(offset + vaddr - seg_vaddr, size)
                except ElfError:
                    return b""   # past the end of the file (a p_offset past 2**63, say)
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

    def a64_leaf_rule(self, vaddr: int) -> Rule | None:
        """The frame-0 rule for an aarch64 function without unwind data that never
        touches its frame: CFA = SP, RA = LR, FP unchanged (A64_PLT_RULE).

        Hand-written assembly often has no CFI (OpenSSL's OPENSSL_cleanse).  The
        function is its ELF symbol, [st_value, st_value + st_size); every one of its
        instructions must keep SP, x29 and x30 (insn.a64_keeps_frame), whatever
        path reached the pc.  Without a sized symbol there is no rule."""
        fn = self._function_symbol(vaddr)
        if fn is None:
            return None
        hit = self._leaf_memo.get(fn[0])
        if hit is None:
            start, size = fn
            code = self.read_code(start, size) if 0 < size <= insn.MAX_SCAN else b""
            words = len(code) // 4
            hit = bool(code) and all(insn.a64_keeps_frame(w) for w in
                                     struct.unpack(f"<{words}I", code[:words * 4]))
            if len(self._leaf_memo) >= MAX_DECODED:
                self._leaf_memo.clear()
            self._leaf_memo[start] = hit
        return A64_PLT_RULE if hit else None

    def _function_symbol(self, vaddr: int) -> tuple[int, int] | None:
        """(start, size) of the sized STT_FUNC symbol (.symtab, else .dynsym) that
        holds link-time `vaddr`."""
        if self._func_syms is None:
            self._func_syms = sized_functions(self.elf, MAX_RELOCS)
        i = bisect.bisect_right(self._func_syms, (vaddr, 1 << 64)) - 1
        if i >= 0 and vaddr < self._func_syms[i][0] + self._func_syms[i][1]:
            return self._func_syms[i]
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
        from profiler.cfi import CfiError
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
        from profiler.cfi import CfiError
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

    def leaves_indirectly(self, start: int, end: int) -> bool:
        """Whether the function at link-time [start, end) may leave through an
        indirect jump: a tail call through a register or memory (CPython's
        `_Py_Dealloc` is ``jmp *0x30(%rax)``), whose target no table names.

        An indirect jump counts when its frame is torn down there: the unwind rule
        at the jump is the function's entry state (x86_64: CFA = SP+8, RA at CFA-8;
        aarch64: CFA = SP, RA in the link register), or there is no rule.  A jump
        table inside a set-up frame does not count; nor does a function whose code
        cannot be decoded (jump_targets is None for it, and the callers pass it)."""
        hit = self._leaves_memo.get(start)
        if hit is None:
            if len(self._leaves_memo) >= MAX_DECODED:
                self._leaves_memo.clear()
            hit = any(self._entry_state(pc) for pc in self._indirect_jumps(start, end))
            self._leaves_memo[start] = hit
        return hit

    def _indirect_jumps(self, start: int, end: int) -> tuple[int, ...]:
        if self.arch == "x86_64":
            fn = self.x86_function(start)
            return () if fn is None else fn.indirect_jumps
        if self.arch == "aarch64" and 0 < end - start <= insn.MAX_SCAN:
            return insn.a64_indirect_branches(start, self.read_code(start, end - start))
        return ()

    def _entry_state(self, pc: int) -> bool:
        rule, _method = self.lookup_rule(pc)
        if rule is None:
            return True
        if rule.cfa_deref:
            return False
        if self.arch == "x86_64":
            return (rule.cfa_reg == rules.X86_64_RSP and rule.cfa_off == 8
                    and rule.ra_kind == rules.LOC_CFA_DEREF and rule.ra_off == -8)
        return (rule.cfa_reg == rules.AARCH64_SP and rule.cfa_off == 0
                and rule.ra_kind == rules.LOC_SAME)

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
                if len(self._export_memo) >= MAX_MEMO:
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

    # -- Go executables ---------------------------------------------------------

    @property
    def go_frames(self) -> GoFrames | None:
        """Unwind rules from the .gopclntab of a Go 1.18+ executable, or None (the
        reason in `go_error` if the table is damaged)."""
        if not self._go_loaded:
            self._go_loaded = True
            from profiler.unwind.golang.frames import GoFrames
            from profiler.unwind.golang.locate import find_pclntab
            from profiler.unwind.golang.pclntab import GoPclnError
            try:
                table = find_pclntab(self.elf, self.name)
            except GoPclnError as exc:
                self.go_error = str(exc)
                table = None
            if table is not None:
                self._go = GoFrames(table, self.arch, self.read_code)
        return self._go

    @property
    def gopclntab(self) -> Pclntab | None:
        go = self.go_frames
        return None if go is None else go.table

    def go_function(self, vaddr: int) -> GoFunc | None:
        """The Go function (from .gopclntab) holding link-time `vaddr`, if any."""
        from profiler.unwind.golang.pclntab import GoPclnError
        table = self.gopclntab
        if table is None:
            return None
        try:
            return table.lookup(vaddr)
        except GoPclnError:
            return None

    def _go_special(self, funcid: str) -> GoFunc | None:
        """The runtime function with that funcID ("goexit"), found once by name."""
        if funcid in self._go_specials:
            return self._go_specials[funcid]
        from profiler.unwind.golang.pclntab import GoPclnError
        found = None
        table = self.gopclntab
        try:
            for name in (f"runtime.{funcid}", f"runtime.{funcid}.abi0"):
                fn = None if table is None else table.by_name(name)
                if fn is not None and table.funcid_name(fn.funcid) == funcid:  # type: ignore[union-attr]
                    found = fn
                    break
        except GoPclnError:
            pass
        self._go_specials[funcid] = found
        return found

    def go_stack_switch(self, vaddr: int) -> str:
        """profiler.unwind.golang.frames.GoFrames.stack_switch at link-time `vaddr` ("" for
        a file without Go text or a damaged table)."""
        from profiler.unwind.golang.pclntab import GoPclnError
        go = self.go_frames
        if go is None or not go.table.covers(vaddr):
            return ""
        try:
            return go.stack_switch(vaddr)
        except GoPclnError:
            return ""

    def designed_return(self, vaddr: int) -> bool:
        """Whether link-time `vaddr` is the return address the Go runtime gives every
        goroutine's outermost frame without a call: runtime.goexit + PCQuantum (the
        instruction after goexit's entry NOP).  A frame at it is goexit itself, an
        outermost frame (look it up at `vaddr`, or `vaddr` - 1: both are in goexit)."""
        fn = self._go_special("goexit")
        return fn is not None and vaddr == fn.entry + self.gopclntab.quantum  # type: ignore[union-attr]

    def go_switch_return(self, vaddr: int) -> bool:
        """Whether link-time `vaddr` is the pc the runtime saves for a goroutine that
        switched to the system stack (systemstack, asmcgocall): runtime.systemstack_switch
        at its entry (Go 1.19-1.20 amd64) or 8 bytes in (arm64, amd64 Go 1.21+).
        runtime.cgocallback plants it as its return address on the goroutine stack
        when C calls back into Go, so the chain continues into the Go frames that
        called C.  No call precedes it (or a dummy one), and the frame at it must be
        looked up at `vaddr` itself, not `vaddr` - 1 (which can be another function)."""
        fn = self._go_special("systemstack_switch")
        return fn is not None and vaddr in (fn.entry, fn.entry + 8)

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
