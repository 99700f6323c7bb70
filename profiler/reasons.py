"""Every reason code a chain can be unreliable for: one table, with its meaning.

A code is stable: never change or reuse one (profiles, dashboards and alerts key on
them).  The unwinder and the stages use the constants below, never a literal; the
README's table of verdicts is checked against this one (tests/unit/test_cli.py), and
so is every code the unwinder can return (tests/unit/test_reasons.py).

`side` says which part of a sample the code is about: "user" for the user-space
chain; kernel chains get codes of their own (side "kernel") when the kernel unwinder
judges them.
"""

from __future__ import annotations

from typing import NamedTuple


class Reason(NamedTuple):
    code: str
    side: str        # "user" or "kernel"
    meaning: str


NO_UNWIND_INFO = "no-unwind-info"
STACK_TRUNCATED = "stack-truncated"
CFA_NOT_INCREASING = "cfa-not-increasing"
CFA_MISALIGNED = "cfa-misaligned"
RA_NOT_EXECUTABLE = "ra-not-executable"
TRAMPOLINE = "trampoline"
BAD_SFRAME = "bad-sframe"
BAD_CFI = "bad-cfi"
PC_NOT_MAPPED = "pc-not-mapped"
OBJECT_UNAVAILABLE = "object-unavailable"
RA_IN_LR = "ra-in-lr"
REGISTER_RULE = "register-rule"
UNSUPPORTED_RULE = "unsupported-rule"
TOO_DEEP = "too-deep"
RA_ABOVE_CFA = "ra-above-cfa"
RA_NOT_AFTER_CALL = "ra-not-after-call"
CALL_MISMATCH = "call-mismatch"
BAD_SIGNAL_PC = "bad-signal-pc"
TABLES_DISAGREE = "tables-disagree"
GO_STACK_SWITCH = "go-stack-switch"


TABLE: tuple[Reason, ...] = (
    Reason(NO_UNWIND_INFO, "user",
           "a pc had neither SFrame nor CFI data; the rest was walked with frame "
           "pointers (or the walk stopped)"),
    Reason(STACK_TRUNCATED, "user", "a read fell outside the copied stack bytes"),
    Reason(CFA_NOT_INCREASING, "user", "a step did not move the CFA up the stack"),
    Reason(CFA_MISALIGNED, "user", "a CFA was not aligned to the ABI's stack alignment"),
    Reason(RA_NOT_EXECUTABLE, "user", "a return address is not in an executable mapping (or is 0)"),
    Reason(TRAMPOLINE, "user", "a return address points into a trampoline such as [uprobes]"),
    Reason(BAD_SFRAME, "user", "the object's .sframe section is corrupt"),
    Reason(BAD_CFI, "user", "the object's .eh_frame/.debug_frame is corrupt"),
    Reason(PC_NOT_MAPPED, "user", "the sampled pc is not in an executable mapping"),
    Reason(OBJECT_UNAVAILABLE, "user", "a mapped file could not be opened or parsed"),
    Reason(RA_IN_LR, "user", "unwind data says the RA is in the link register below frame 0"),
    Reason(REGISTER_RULE, "user",
           "unwind data needs a register value that is only known in frame 0"),
    Reason(UNSUPPORTED_RULE, "user",
           "the CFI row uses an expression the unwinder does not evaluate"),
    Reason(TOO_DEEP, "user", "the chain exceeded the frame limit"),
    Reason(RA_ABOVE_CFA, "user",
           "unwind data saves the RA at or above the CFA, so the CFA is not the "
           "caller's stack pointer"),
    Reason(RA_NOT_AFTER_CALL, "user",
           "a return address does not follow a call instruction (a corrupt stack word "
           "or unwind row)"),
    Reason(CALL_MISMATCH, "user",
           "a return address follows a direct call to a function that neither is nor "
           "jumps to the function of the frame below (a corrupt stack word or unwind "
           "row)"),
    Reason(BAD_SIGNAL_PC, "user",
           "the interrupted pc saved in a signal frame is not the start of an "
           "instruction"),
    Reason(TABLES_DISAGREE, "user",
           "the .sframe and .eh_frame rows for a pc differ, so one of them is wrong"),
    Reason(GO_STACK_SWITCH, "user",
           "a Go runtime function that may have switched stacks (asmcgocall, gogo, "
           "...): the rest of the chain is on a stack the copy does not hold"),
)

# code -> meaning, for lookups
REASONS: dict[str, str] = {r.code: r.meaning for r in TABLE}
