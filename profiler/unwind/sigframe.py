"""Stepping through a signal frame: from the kernel's rt_sigreturn trampoline (the
return address of a signal handler) to the context the signal interrupted.

The kernel saves the interrupted registers in the signal frame on the stack; SP
points at it when the trampoline runs (profiler.unwind.insn.is_sigreturn_at tells the
trampoline by its code).  Every register comes back, so the frame after it is
unwound like frame 0, at an exact pc.
"""

from __future__ import annotations

from profiler.model import Frame
from profiler.reasons import (
    BAD_SIGNAL_PC,
    CFA_MISALIGNED,
    CFA_NOT_INCREASING,
    RA_NOT_EXECUTABLE,
    STACK_TRUNCATED,
)
from profiler.unwind.walkstate import U64, WalkState

# aarch64 rt_sigframe: siginfo (128) + ucontext; uc_mcontext at +176, regs at +8.
_A64_SIGCTX_REGS = 128 + 176 + 8
# x86_64: SP points at the ucontext; uc_mcontext.gregs at +40.
_X86_GREGS = 40
# x86_64 gregs index -> DWARF register number.
_X86_GREG_DWARF = (8, 9, 10, 11, 12, 13, 14, 15, 5, 4, 6, 3, 1, 0, 2, 7, 16)


class SignalStep(WalkState):
    """The step out of a signal handler, through the frame the kernel saved."""

    def sigframe_step(self, obj: str) -> bool:
        """Step through the kernel's signal frame to the interrupted context."""
        sp = self.sp
        # The saved registers, each with the stack offset it was read from; only SP
        # and PC are used at once (the others are noted in `reads` when used).
        if self.a64:
            slots = [(i, sp + _A64_SIGCTX_REGS + 8 * i) for i in range(33)]
            sp_num, pc_num = 31, 32
        else:
            slots = [(num, sp + _X86_GREGS + 8 * i) for i, num in enumerate(_X86_GREG_DWARF)]
            sp_num, pc_num = 7, 16
        regs: dict[int, int] = {}
        src: dict[int, int] = {}
        stack, last = self.stack, self.stack_len - 8
        for num, addr in slots:
            off = addr - self.base
            if not 0 <= off <= last:
                return self.stop(obj, STACK_TRUNCATED)
            regs[num] = U64.unpack_from(stack, off)[0]
            src[num] = off
        new_sp, new_pc = regs[sp_num], regs[pc_num]
        if self.reads is not None:
            self.reads += (src.pop(sp_num), src.pop(pc_num))
        if self.a64:
            del regs[31], regs[32]
        if new_sp <= sp:
            return self.stop(obj, CFA_NOT_INCREASING)
        if new_sp % self.align:
            return self.stop(obj, CFA_MISALIGNED)
        self.frames.append(Frame(self.pc, new_sp, "sigframe", obj, self.exact))
        m = self.space.find(new_pc)
        if m is None or not m.executable or (self.a64 and new_pc & 3):
            self._last = self.verdict(RA_NOT_EXECUTABLE)
            return False
        if not self.a64:
            # The interrupted pc is the start of an instruction (of the x86_64
            # function that holds it, decoded from its first byte).
            code_obj, bias = self.space.object_for(m)
            fn = code_obj.x86_function(new_pc - bias) if code_obj is not None else None
            if fn is not None and not fn.is_boundary(new_pc - bias):
                self.doubt(BAD_SIGNAL_PC, len(self.frames))
        regs[self.sp_reg] = new_sp
        self.pc, self.sp, self.fp = new_pc, new_sp, regs[self.fp_reg]
        self.fp_src = src.pop(self.fp_reg)
        self.regs = regs
        self.reg_src = src
        self.topmost = True   # registers are known again, like at the sample
        self.exact = True     # an interrupted pc, not a return address
        return True

