"""The state of one unwind, and what every kind of step does with it.

A walk starts from the sample's registers (its pc, SP and FP; the others only for
frame 0 and after a signal frame) and its stack copy; each step appends a frame and
moves to the caller, or ends the chain with a verdict.  The steps themselves are the
mixins built on WalkState: profiler.unwind.steps (rules, frame pointers),
profiler.unwind.sigframe (signal frames) and profiler.unwind.suffixes (chain ends
walked before); profiler.unwind.unwinder is the loop.

When the caller asks for them, the offsets of the stack words the walk used are
noted in `reads` (profiler.unwind.memo reuses a chain when those words are equal).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from profiler.model import Frame, RawSample, UnwoundStack
from profiler.unwind import rules as R
from profiler.unwind.space import AddressSpace

U64 = struct.Struct("<Q")

# In a walk's `reads`: the FP value was used without a stack word standing for it
# (it is the sample's register, or a word already noted): whoever reuses the walk
# must have the same FP value.
READ_FP = -1

_X86_REG_NAMES = {"rax": 0, "rdx": 1, "rcx": 2, "rbx": 3, "rsi": 4, "rdi": 5, "rbp": 6,
                  "rsp": 7, **{f"r{i}": i for i in range(8, 16)}}


def _dwarf_regs(arch: str, regs: dict[str, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    if arch == "x86_64":
        for name, num in _X86_REG_NAMES.items():
            if name in regs:
                out[num] = regs[name]
        out[R.X86_64_RSP] = regs.get("sp", 0)
        out[R.X86_64_RBP] = regs.get("fp", 0)
        out[R.X86_64_RIP] = regs.get("pc", 0)
    else:
        for i in range(31):
            if f"x{i}" in regs:
                out[i] = regs[f"x{i}"]
        out[R.AARCH64_SP] = regs.get("sp", 0)
        out[R.AARCH64_FP] = regs.get("fp", 0)
        if "lr" in regs:
            out[R.AARCH64_LR] = regs["lr"]
    return out


def _noting(reads: list[int]) -> Callable[[bytes, int], tuple[int]]:
    """An 8-byte stack reader that appends each offset it reads to `reads`."""
    real = U64.unpack_from

    def unpack(buf: bytes, offset: int) -> tuple[int]:
        reads.append(offset)
        return real(buf, offset)
    return unpack


class WalkState:
    """The state of one unwind: registers, stack copy, frames so far, first doubt."""

    def __init__(self, max_frames: int, sample: RawSample, space: AddressSpace,
                 reads: list[int] | None = None) -> None:
        self.max_frames = max_frames
        # Every stack word is read through this (noting its offset when asked to).
        self.unpack = U64.unpack_from if reads is None else _noting(reads)
        self.reads = reads
        # Where the values not yet noted in `reads` came from: the stack offset of
        # the current FP value (-1: noted, or from the sample's registers), and of
        # the registers restored from a signal frame.  They are noted when used.
        self.fp_src = -1
        self.reg_src: dict[int, int] = {}
        # (frame index, pc, sp, fp, len(reads)) where the walk entered a frame in a
        # state that a later walk can meet again (profiler.unwind.suffixes); noted
        # only when the reads are, to record what the chain's end depended on.
        self.marks: list[tuple[int, int, int, int, int]] | None = \
            [] if reads is not None else None
        self.space = space
        self.arch = sample.arch
        self.a64 = sample.arch == "aarch64"
        self.stack = sample.stack
        self.base = sample.stack_base
        self.stack_len = len(sample.stack)
        regs = sample.regs
        # A register missing from a capture or snapshot reads as 0: an unmapped pc,
        # a stack that cannot be read (a per-sample reason, not a KeyError).
        self.pc = regs.get("pc", 0)
        self.sp = regs.get("sp", 0)
        self.fp = regs.get("fp", 0)
        self.regs: dict[int, int] | None = _dwarf_regs(sample.arch, regs)
        self.topmost = True
        self.exact = True
        self.fp_only = False
        self.align = 16 if self.a64 else 8
        if self.a64:
            mask = sample.pac_mask if sample.pac_mask is not None else 0x00FF000000000000
            self.ra_mask = ~(mask | 0xFF00000000000000) & 0xFFFFFFFFFFFFFFFF
            self.sp_reg, self.fp_reg, self.ra_reg = R.AARCH64_SP, R.AARCH64_FP, R.AARCH64_LR
        else:
            self.ra_mask = 0xFFFFFFFFFFFFFFFF
            self.sp_reg, self.fp_reg, self.ra_reg = R.X86_64_RSP, R.X86_64_RBP, R.X86_64_RIP
        self.frames: list[Frame] = []
        self.end_addr = self.base + self.stack_len

    # -- memory ---------------------------------------------------------------

    def read(self, addr: int) -> int | None:
        off = addr - self.base
        if 0 <= off <= self.stack_len - 8:
            return self.unpack(self.stack, off)[0]  # type: ignore[no-any-return]
        return None

    # -- ends -----------------------------------------------------------------

    _last: UnwoundStack     # the verdict, when a step returns False
    done = False
    first_reason = ""
    doubt_at = -1

    def stop(self, obj: str, reason: str, cfa: int | None = None, method: str = "") -> bool:
        self._last = self.end(obj, reason, cfa, method)
        return False

    def end(self, obj: str, reason: str, cfa: int | None = None, method: str = "") -> UnwoundStack:
        self.frames.append(Frame(self.pc, cfa, method, obj, self.exact))
        return self.verdict(reason)

    def verdict(self, reason: str, doubt: int = -1) -> UnwoundStack:
        """The chain so far; the first reason met (e.g. an FP fallback) wins, and
        with it the index of the first frame in doubt.  Without one, the doubt
        begins past the last frame (`doubt`, from a reused chain end, says else)."""
        if self.first_reason:
            reason, doubt = self.first_reason, self.doubt_at
        elif doubt < 0:
            doubt = len(self.frames)
        return UnwoundStack(tuple(self.frames), not reason, reason, doubt)

    def doubt(self, reason: str, at: int) -> None:
        """A step was taken against a failed check (or without unwind data): the
        chain goes on, unreliable from frame `at` on, for its first such reason."""
        if not self.first_reason:
            self.first_reason = reason
            self.doubt_at = at

    def note_fp(self) -> None:
        """The current FP value is used: note the stack word it came from, or
        READ_FP when no unnoted word stands for it."""
        if self.reads is not None:
            self.reads.append(self.fp_src if self.fp_src >= 0 else READ_FP)
        self.fp_src = -1
