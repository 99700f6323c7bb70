"""Unwind rules for Go code from the runtime's own table (.gopclntab).

The Go compiler does not describe its frames in .eh_frame; the runtime unwinds with
the pcsp table: at each pc, the bytes the function has pushed or reserved below the
stack pointer it was entered with.  From it:

* amd64: CFA = SP + pcsp + 8, the return address at CFA-8.  The caller's BP is saved
  at CFA-16 once the prologue stored it: Go 1.19-1.20 open the frame with
  ``SUBQ $n, SP; MOVQ BP, n-8(SP)`` (saved from the end of the MOVQ), later releases
  with ``PUSHQ BP; MOVQ SP, BP; SUBQ`` (saved from the end of the PUSHQ); the
  epilogues restore BP before or while they drop the frame, where pcsp reaches 0.
  A function whose first SP change is neither keeps the caller's BP (LOC_SAME).
* arm64: with pcsp == 0 the return address is still in LR (frame 0 only); with
  pcsp > 0 the prologue has stored LR at the new SP, CFA - pcsp, in the same
  instruction that moved SP.  Go saves the caller's frame pointer at SP-8, below its
  own frame, which a stack copy starting at the sampled SP does not hold for frame 0
  or for the caller of a frameless leaf, so FP is passed on unchanged (LOC_SAME):
  Go code never needs it, and a later frame basing its CFA on that value fails the
  unwinder's FP >= SP check instead of giving a wrong chain.
* TOPFRAME functions that start a stack (runtime.goexit, runtime.mstart,
  runtime.rt0_go) are outermost frames (RA undefined).  runtime.sigtramp is also
  marked TOPFRAME, because Go's traceback does not cross signal frames; here it gets
  its pcsp rule so the unwinder reaches the signal restorer and the signal frame.
* SPWRITE functions (systemstack, mcall, morestack, gogo, asmcgocall, ...) write SP
  in ways pcsp does not describe, usually switching between a goroutine stack and
  the system stack: they get no rule, so a chain through them is not reliable;
  only their entry pc (frame 0 stopped there, before any SP write) keeps its rule.
  runtime.cgocallback is the exception the runtime also makes: it arranges that its
  frame is valid for unwinding on both stacks.
"""

from __future__ import annotations

from collections.abc import Callable

from profiler.unwind import insn
from profiler.unwind import rules as R
from profiler.unwind.golang.pclntab import FLAG_SPWRITE, FLAG_TOPFRAME, GoFunc, Pclntab
from profiler.unwind.rules import Rule

OUTERMOST = frozenset({"goexit", "mstart", "rt0_go"})
# SPWRITE functions whose return address, in a caller frame, is always on the system
# stack they switched to: the top of that stack, where Go's own traceback stops too
# (systemstack only returns there after switching; on g0 already it tail-jumps).
SWITCH_ENDS = frozenset({"systemstack", "mcall", "morestack"})
MAX_FUNCS_KEPT = 4096
# SPWRITE functions that switch to the system stack to call the vDSO and switch back,
# with the frame pointer their prologue set kept all along (the runtime's vDSO calls):
# between the prologue's setting of the frame pointer and the epilogue's restoring of
# it, their frame is found from the frame pointer, on whichever stack SP is.
FP_BODY = frozenset({"runtime.nanotime1.abi0", "runtime.nanotime1",
                     "runtime.walltime.abi0", "runtime.walltime",
                     "runtime.walltime1.abi0", "runtime.walltime1"})
_A64_SET_FP = 0xD10023FD        # sub x29, sp, #8    (Go's arm64 prologue)
# its epilogue: ldur x29, [sp, #-8] (Go 1.24), or ldp x29, x30, [sp, #-8] (Go 1.19)
_A64_RESTORE_FP = frozenset({0xF85F83FD, 0xA97FFBFD})
_X86_LEA_BP8 = b"\x48\x8d\x6c\x24"     # LEAQ disp8(SP), BP
_X86_LOAD_BP8 = b"\x48\x8b\x6c\x24"    # MOVQ disp8(SP), BP
_X86_ADD_SP8 = b"\x48\x83\xc4"          # ADDQ $imm8, SP

_X86_SUB_SP8 = b"\x48\x83\xec"          # SUBQ $imm8, SP
_X86_SUB_SP32 = b"\x48\x81\xec"         # SUBQ $imm32, SP
_X86_MOV_BP8 = b"\x48\x89\x6c\x24"      # MOVQ BP, disp8(SP)
_X86_MOV_BP32 = b"\x48\x89\xac\x24"     # MOVQ BP, disp32(SP)


class GoFrames:
    """Rules for the Go text of one object; `read` reads its code at link time."""

    def __init__(self, table: Pclntab, arch: str, read: Callable[[int, int], bytes]) -> None:
        self.table = table
        self.arch = arch
        self._read = read
        # entry -> (function, pcsp rows, pc from which BP is saved or None)
        self._funcs: dict[int, tuple[GoFunc, list[tuple[int, int, int]], int | None]] = {}
        self._switch_ra: dict[int, int | None] = {}
        self._fp_body: dict[int, tuple[int, int, int] | None] = {}

    def _info(self, fn: GoFunc) -> tuple[GoFunc, list[tuple[int, int, int]], int | None]:
        hit = self._funcs.get(fn.entry)
        if hit is None:
            if len(self._funcs) >= MAX_FUNCS_KEPT:
                self._funcs.clear()
            rows = self.table.pcsp_rows(fn)
            saved = self._bp_saved_from(rows) if self.arch == "x86_64" else None
            hit = (fn, rows, saved)
            self._funcs[fn.entry] = hit
        return hit

    def _bp_saved_from(self, rows: list[tuple[int, int, int]]) -> int | None:
        """The pc from which an amd64 Go function has saved the caller's BP at
        CFA-16, or None when its prologue does not save it."""
        first = next((r for r in rows if r[2] > 0), None)
        if first is None:
            return None
        read = self._read
        for back in (1, 4, 7):    # the instruction that ended where pcsp became > 0
            code = read(first[0] - back, back + 8)
            if len(code) < back + 8:
                continue
            if back == 1 and code[0] == 0x55 and first[2] == 8:      # PUSHQ BP
                return first[0]
            if back == 4 and code[:3] == _X86_SUB_SP8:
                n = code[3]
            elif back == 7 and code[:3] == _X86_SUB_SP32:
                n = int.from_bytes(code[3:7], "little")
            else:
                continue
            if n != first[2]:
                continue
            rest = code[back:]
            if rest[:4] == _X86_MOV_BP8 and rest[4] == n - 8:
                return first[0] + 5
            if rest[:4] == _X86_MOV_BP32 and int.from_bytes(rest[4:8], "little") == n - 8:
                return first[0] + 8
            return None
        return None

    def stack_switch(self, vaddr: int) -> str:
        """For a return address's lookup pc in an SPWRITE function: "end" when the
        frame is the top of the system stack it switched to (SWITCH_ENDS), "stop"
        for another SPWRITE function (asmcgocall may or may not have switched),
        "" otherwise.  Raises GoPclnError on a damaged table."""
        fn = self.table.lookup(vaddr)
        if fn is None or not fn.flags & FLAG_SPWRITE or vaddr == fn.entry:
            return ""
        name = self.table.funcid_name(fn.funcid)
        if name == "cgocallback":
            return ""
        if name == "asmcgocall":
            return "end" if vaddr + 1 == self._cgo_switch_return(fn) else "stop"
        return "end" if name in SWITCH_ENDS else "stop"

    def _cgo_switch_return(self, fn: GoFunc) -> int | None:
        """The return address of asmcgocall's call into C on the path that switched to
        the system stack: the first call through a register (or to
        asmcgocall_landingpad, Go 1.23+) after the call to gosave_systemstack_switch;
        the path taken on g0 already, `nosave`, makes the last such call and does not
        switch (Go 1.19-1.24, amd64 and arm64).  None when the code has another shape."""
        hit = self._switch_ra.get(fn.entry, False)
        if hit is not False:
            return hit
        size = fn.end - fn.entry
        code = self._read(fn.entry, size) if 0 < size <= 4096 else b""
        calls: list[tuple[int, int | None]] = []        # (return address, direct target)
        if self.arch == "x86_64":
            decoded = insn.X86Function(fn.entry, code)
            if decoded.complete:
                calls = sorted((ra, t) for ra, (_kind, t) in decoded.calls.items())
        else:
            for i in range(len(code) // 4):
                word = int.from_bytes(code[4 * i:4 * i + 4], "little")
                if insn.a64_is_call(word):
                    at = fn.entry + 4 * i
                    calls.append((at + 4, insn.call_target("aarch64", at + 4,
                                                           code[4 * i:4 * i + 4])))
        save = self.table.by_name("gosave_systemstack_switch")
        pad = (self.table.by_name("runtime.asmcgocall_landingpad.abi0")
               or self.table.by_name("runtime.asmcgocall_landingpad"))
        found = None
        if save is not None:
            after = [i for i, (_ra, t) in enumerate(calls) if t == save.entry][:1]
            into_c = [ra for ra, t in calls[after[0] + 1:] if t is None
                      or (pad is not None and t == pad.entry)] if after else []
            if len(into_c) >= 2:        # the switching path's, then nosave's
                found = into_c[0]
        self._switch_ra[fn.entry] = found
        return found

    def rule(self, vaddr: int) -> tuple[Rule | None, GoFunc | None]:
        """(rule, function) for link-time `vaddr` in the Go text; rule None where
        the table cannot give one (SPWRITE functions, a pc without a pcsp value).
        Raises GoPclnError on a damaged table."""
        fn = self.table.lookup(vaddr)
        if fn is None:
            return None, None
        fn, rows, bp_from = self._info(fn)
        sp = next((v for lo, hi, v in rows if lo <= vaddr < hi), None)
        if sp is None or sp < 0:
            return None, fn
        if fn.flags & FLAG_TOPFRAME and self.table.funcid_name(fn.funcid) in OUTERMOST:
            if self.arch == "x86_64":
                return Rule(R.X86_64_RSP, sp + 8, False, R.LOC_UNDEFINED, 0, 0,
                            R.LOC_SAME, 0, 0), fn
            return Rule(R.AARCH64_SP, sp, False, R.LOC_UNDEFINED, 0, 0,
                        R.LOC_SAME, 0, 0), fn
        if fn.flags & FLAG_SPWRITE and vaddr != fn.entry and \
                self.table.funcid_name(fn.funcid) != "cgocallback":
            return self._fp_body_rule(fn, rows, bp_from, vaddr), fn
        if self.arch == "x86_64":
            if bp_from is not None and sp >= 8 and vaddr >= bp_from:
                return Rule(R.X86_64_RSP, sp + 8, False, R.LOC_CFA_DEREF, 0, -8,
                            R.LOC_CFA_DEREF, 0, -16), fn
            return Rule(R.X86_64_RSP, sp + 8, False, R.LOC_CFA_DEREF, 0, -8,
                        R.LOC_SAME, 0, 0), fn
        if sp == 0:
            return Rule(R.AARCH64_SP, 0, False, R.LOC_SAME, R.AARCH64_LR, 0,
                        R.LOC_SAME, 0, 0), fn
        return Rule(R.AARCH64_SP, sp, False, R.LOC_CFA_DEREF, 0, -sp,
                    R.LOC_SAME, 0, 0), fn

    # -- the vDSO callers' bodies ---------------------------------------------------

    def _fp_body_rule(self, fn: GoFunc, rows: list[tuple[int, int, int]],
                      bp_from: int | None, vaddr: int) -> Rule | None:
        """The frame-pointer rule inside a FP_BODY function's body, or None."""
        if fn.name not in FP_BODY:
            return None
        if fn.entry not in self._fp_body:
            self._fp_body[fn.entry] = self._find_fp_body(rows, bp_from)
        body = self._fp_body[fn.entry]
        if body is None or not body[0] <= vaddr < body[1]:
            return None
        n = body[2]
        if self.arch == "x86_64":   # BP = the saved-BP slot, under the return address
            return Rule(R.X86_64_RBP, 16, False, R.LOC_CFA_DEREF, 0, -8,
                        R.LOC_CFA_DEREF, 0, -16)
        # arm64: x29 = SP after the prologue - 8; the caller's x29 there, LR above it
        return Rule(R.AARCH64_FP, n + 8, False, R.LOC_CFA_DEREF, 0, -n,
                    R.LOC_CFA_DEREF, 0, -n - 8)

    def _find_fp_body(self, rows: list[tuple[int, int, int]],
                      bp_from: int | None) -> tuple[int, int, int] | None:
        """[first pc with the frame pointer set, pc of its restore) and the frame size,
        from the prologue and the one epilogue, decoded; None for another shape."""
        if not rows:
            return None
        n = max(v for _lo, _hi, v in rows)
        if self.arch == "x86_64":
            return self._x86_fp_body(rows, bp_from, n)
        entry = rows[0][0]
        words = self._read(entry, rows[-1][1] - entry)
        codes = [int.from_bytes(words[i:i + 4], "little") for i in range(0, len(words) - 3, 4)]
        sets = [i for i, w in enumerate(codes) if w == _A64_SET_FP]
        restores = [i for i, w in enumerate(codes) if w in _A64_RESTORE_FP]
        if n <= 0 or len(sets) != 1 or len(restores) != 1 or not sets[0] < restores[0] \
                or sets[0] > 4:
            return None
        return entry + 4 * sets[0] + 4, entry + 4 * restores[0], n

    def _x86_fp_body(self, rows: list[tuple[int, int, int]], bp_from: int | None,
                     n: int) -> tuple[int, int, int] | None:
        """The two amd64 shapes: SUBQ $n, SP; MOVQ BP, n-8(SP); LEAQ n-8(SP), BP ...
        MOVQ n-8(SP), BP; ADDQ $n, SP; RET (Go 1.19), and PUSHQ BP; MOVQ SP, BP ...
        POPQ BP; RET (later Go)."""
        read = self._read
        entry = rows[0][0]
        pairs = list(zip(rows, rows[1:]))
        if read(entry, 4) == b"\x55\x48\x89\xe5":          # PUSHQ BP; MOVQ SP, BP
            pops = [lo for (_l, _h, v0), (lo, _hi, v1) in pairs if v0 == 8 and v1 == 0]
            if len(pops) != 1 or read(pops[0] - 1, 1) != b"\x5d":
                return None
            return entry + 4, pops[0] - 1, n
        ends = [lo for (_l, _h, v0), (lo, _hi, v1) in pairs if v0 == n and v1 == 0]
        if bp_from is None or len(ends) != 1 or not 8 < n < 0x80:
            return None
        if read(bp_from, 5) != _X86_LEA_BP8 + bytes([n - 8]):
            return None
        restore = ends[0] - 4 - 5
        if read(restore, 9) != _X86_LOAD_BP8 + bytes([n - 8]) + _X86_ADD_SP8 + bytes([n]):
            return None
        return bp_from + 5, restore, n
