"""The code of an object's functions, decoded for the unwinder (a mixin of ObjectFile).

What the call-edge check (profiler.unwind.calls) and the frame-0 rules need to know
about a function beyond its unwind rows: its decoded x86_64 instructions (calls,
jumps, instruction boundaries), the targets of its direct jumps, whether it leaves
through an indirect jump with its frame torn down, and on aarch64 whether a function
without unwind data never touches its frame (a leaf rule) or is a PLT entry.
Decoding is profiler.unwind.insn's; each result is kept per function, a bounded
number of functions per file.
"""

from __future__ import annotations

import bisect
import struct
from typing import TYPE_CHECKING

from profiler.unwind import insn, rules
from profiler.unwind.elf import ElfFile
from profiler.unwind.elfsyms import MAX_RELOCS, sized_functions
from profiler.unwind.rules import Rule

MAX_DECODED = 4096       # functions whose decoded code is kept per file

# CFA = SP, RA = LR, FP unchanged: an aarch64 PLT entry, or a leaf that keeps its frame.
A64_PLT_RULE = Rule(rules.AARCH64_SP, 0, False, rules.LOC_SAME, rules.AARCH64_LR, 0,
                    rules.LOC_SAME, 0, 0)


class FunctionCode:
    """Decoded functions of an ELF object; ObjectFile supplies the bytes and tables."""

    arch: str
    elf: ElfFile
    plt_ranges: list[tuple[int, int]]
    if TYPE_CHECKING:
        def read_code(self, vaddr: int, size: int) -> bytes: ...
        def function_range(self, vaddr: int) -> tuple[int, int] | None: ...
        def lookup_rule(self, vaddr: int) -> tuple[Rule | None, str]: ...

    def _init_code(self) -> None:
        self._jumps_memo: dict[int, frozenset[int] | None] = {}
        self._leaves_memo: dict[int, bool] = {}
        self._leaf_memo: dict[int, bool] = {}
        self._func_syms: list[tuple[int, int]] | None = None
        self._x86_memo: dict[int, insn.X86Function] = {}

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
        fn = self.function_symbol(vaddr)
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

    def function_symbol(self, vaddr: int) -> tuple[int, int] | None:
        """(start, size) of the sized STT_FUNC symbol (.symtab, else .dynsym) that
        holds link-time `vaddr`."""
        if self._func_syms is None:
            self._func_syms = sized_functions(self.elf, MAX_RELOCS)
        i = bisect.bisect_right(self._func_syms, (vaddr, 1 << 64)) - 1
        if i >= 0 and vaddr < self._func_syms[i][0] + self._func_syms[i][1]:
            return self._func_syms[i]
        return None

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
