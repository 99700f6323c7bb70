"""The reference step: a frame's rule (or its frame pointer) applied to the walk.

rule_step checks every step the way the kernel's SFrame unwinder does: the CFA must
rise and be aligned, every load must fall inside the stack copy, and the return
address must follow a call that can lead to this frame (profiler.unwind.calls).  A
rule that gives no usable step falls back to frame pointers (fp_step), and the chain
is unreliable from there on.  The unwinder's loop inlines the common case of
rule_step; this is what it falls back to, and what defines a step.
"""

from __future__ import annotations

import bisect

from profiler.model import Frame
from profiler.reasons import (
    BAD_CFI,
    BAD_SFRAME,
    CALL_MISMATCH,
    CFA_MISALIGNED,
    CFA_NOT_INCREASING,
    RA_ABOVE_CFA,
    RA_IN_LR,
    RA_NOT_AFTER_CALL,
    REGISTER_RULE,
    STACK_TRUNCATED,
    TRAMPOLINE,
    UNSUPPORTED_RULE,
)
from profiler.unwind import rules as R
from profiler.unwind.calls import call_ok, ra_status
from profiler.unwind.walkstate import WalkState

# Failed checks that a walk goes past (the step itself was computed from the data):
# the chain is unreliable from the caller on, but keeps its shape.
_DOUBTED = frozenset({RA_NOT_AFTER_CALL, CALL_MISMATCH})
# Steps the unwind data could not give, where frame pointers are tried next.
_FP_AFTER = frozenset({CFA_NOT_INCREASING, CFA_MISALIGNED, RA_ABOVE_CFA,
                       REGISTER_RULE, UNSUPPORTED_RULE, RA_IN_LR, BAD_SFRAME,
                       BAD_CFI})


class RuleSteps(WalkState):
    """Steps by an unwind rule, and by frame pointers where the rules give none."""

    def give_up(self, obj: str, reason: str, cfa: int | None = None, method: str = "") -> bool:
        """The unwind data gave no usable step here: try frame pointers where they
        may still give a caller (not past a truncated copy), else stop."""
        if reason in _FP_AFTER and not self.fp_only:
            self.note_fp()
            return self.fp_step(obj, reason)
        return self.stop(obj, reason, cfa, method)

    def reg_value(self, reg: int) -> int | None:
        if reg == self.sp_reg:
            return self.sp
        if reg == self.fp_reg:
            self.note_fp()
            return self.fp
        if self.regs is not None:
            src = self.reg_src.pop(reg, -1)
            if src >= 0 and self.reads is not None:
                self.reads.append(src)
            return self.regs.get(reg)
        return None

    def rule_step(self, rule: R.Rule, method: str, obj: str) -> bool:
        if rule.ra_kind == R.LOC_UNDEFINED:
            # Outermost frame: a clean, positively identified end of the chain.
            cfa = self._cfa(rule)
            self.frames.append(Frame(self.pc, cfa if isinstance(cfa, int) else None,
                                     method, obj, self.exact))
            self.done = True
            return True
        if rule.ra_kind == R.LOC_CFA_DEREF and rule.ra_off >= 0:
            # The ABIs save registers below the CFA (the caller's SP).  A slot at or
            # above it means this "CFA" is not the caller's SP (glibc's aarch64 lazy
            # binding trampoline describes the PLT0 push that way): stepping would
            # give the caller a wrong SP, so stop.
            return self.give_up(obj, RA_ABOVE_CFA)
        cfa = self._cfa(rule)
        if isinstance(cfa, str):
            return self.give_up(obj, cfa)
        if cfa < self.sp or (cfa == self.sp and not self.topmost):
            return self.give_up(obj, CFA_NOT_INCREASING)
        if cfa % self.align:
            return self.give_up(obj, CFA_MISALIGNED)
        ra = self._loc(rule.ra_kind, rule.ra_reg, rule.ra_off, cfa, self.ra_reg)
        if isinstance(ra, str):
            return self.give_up(obj, ra, cfa, method)
        fp = self._loc(rule.fp_kind, rule.fp_reg, rule.fp_off, cfa, self.fp_reg)
        if isinstance(fp, str):
            return self.give_up(obj, fp, cfa, method)
        return self.advance(ra, cfa, fp, method, obj)

    def _cfa(self, rule: R.Rule) -> int | str:
        if rule.cfa_reg < 0:
            return UNSUPPORTED_RULE
        base = self.reg_value(rule.cfa_reg)
        if base is None:
            return REGISTER_RULE
        if rule.cfa_reg == self.fp_reg and base < self.sp:
            return CFA_NOT_INCREASING
        addr = (base + rule.cfa_off) & 0xFFFFFFFFFFFFFFFF
        if rule.cfa_deref:
            val = self.read(addr)
            if val is None:
                return STACK_TRUNCATED
            return (val + rule.cfa_add) & 0xFFFFFFFFFFFFFFFF
        return addr

    def _loc(self, kind: int, reg: int, off: int, cfa: int, which: int) -> int | str:
        if kind == R.LOC_CFA_DEREF:
            val = self.read(cfa + off)
            if val is None and which == self.fp_reg and cfa + off < self.sp \
                    and self.topmost and self.regs is not None and self.fp_popped():
                self.note_fp()
                return self.fp      # popped already: the register holds what was saved
            return STACK_TRUNCATED if val is None else val
        if kind == R.LOC_SAME:
            if which == self.ra_reg:
                if not self.topmost or self.regs is None or self.ra_reg not in self.regs:
                    return RA_IN_LR
                return self.reg_value(self.ra_reg)  # type: ignore[return-value]
            self.note_fp()
            return self.fp
        if kind == R.LOC_REG or kind == R.LOC_REG_DEREF:
            base = self.reg_value(reg) if (self.topmost or reg in (self.sp_reg, self.fp_reg)) \
                else None
            if base is None:
                return REGISTER_RULE
            if kind == R.LOC_REG:
                return (base + off) & 0xFFFFFFFFFFFFFFFF
            val = self.read(base + off)
            return STACK_TRUNCATED if val is None else val
        return UNSUPPORTED_RULE

    def advance(self, ra: int, cfa: int, fp: int, method: str, obj: str,
                known_cfa: bool = True) -> bool:
        """Record the current frame and move to its caller at return address `ra`."""
        ra &= self.ra_mask
        self.frames.append(Frame(self.pc, cfa if known_cfa else None, method, obj,
                                 self.exact))
        status = ra_status(self.space, ra)
        if status == TRAMPOLINE:
            self.frames.append(Frame(ra, None, "", "[uprobes]", False))
        elif not status and method != "fp" and not call_ok(
                self.space, self.pc if self.exact else self.pc - 1, ra):
            status = CALL_MISMATCH
        if status in _DOUBTED and method != "fp":
            # The data gives a caller that a check refuses: follow it anyway, so the
            # chain keeps its shape, and mark where the doubt begins.
            self.doubt(status, len(self.frames))
        elif status:
            self._last = self.verdict(status)
            return False
        self.pc, self.sp, self.fp = ra, cfa, fp
        self.topmost = False
        self.exact = False
        self.regs = None
        return True

    def fp_step(self, obj: str, reason: str) -> bool:
        """Frame-pointer fallback; the chain is unreliable from the caller on."""
        self.doubt(reason, len(self.frames) + 1)
        fp = self.fp
        if fp < self.sp or fp % 8:
            return self.stop(obj, reason)
        saved_fp = self.read(fp)
        ra = self.read(fp + 8)
        if saved_fp is None or ra is None:
            return self.stop(obj, reason)
        if self.a64:
            # The frame record sits at the bottom of an arm64 frame: the caller's
            # SP is unknown, so continue with frame records only.
            self.fp_only = True
        return self.advance(ra, fp + 16, saved_fp, "fp", obj, known_cfa=not self.a64)

    def fp_popped(self) -> bool:
        """At an interrupted x86_64 pc in an epilogue, whether the frame pointer was
        popped already: the instructions just before the pc are pops, back to a
        ``pop %rbp``.  GCC's CFI keeps saying "RBP saved at CFA-n" after that pop
        (it has no .cfi_restore there), at an address below SP that the stack
        copy does not hold, while the register itself holds the saved value."""
        if self.a64:
            return False
        m = self.space.find(self.pc)
        obj, bias = self.space.object_for(m) if m is not None else (None, 0)
        fn = obj.x86_function(self.pc - bias) if obj is not None else None
        if fn is None:
            return False
        at = self.pc - bias
        i = bisect.bisect_left(fn.offsets, at - fn.start)
        for _ in range(8):             # at most the 6 callee-saved pops, and then some
            if i <= 0:
                return False
            i -= 1
            start = fn.start + fn.offsets[i]
            code = obj.read_code(start, at - start)   # type: ignore[union-attr]
            at = start
            if code == b"\x5d":
                return True
            if not (len(code) == 1 and 0x58 <= code[0] <= 0x5F
                    or len(code) == 2 and code[0] == 0x41 and 0x58 <= code[1] <= 0x5F):
                return False
        return False
