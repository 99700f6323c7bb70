"""Format-neutral unwind rules: what every unwind-info reader hands the unwinder.

An unwind table (from .sframe, .eh_frame/.debug_frame, or a built-in rule such as
"aarch64 PLT stub") answers one question: for a pc, how are the caller's CFA, return
address and frame pointer recovered?  The answer is a :class:`Rule`.  The unwinder
never sees the on-disk format.

Registers are named by their DWARF numbers (x86_64: rbp 6, rsp 7, rip 16; aarch64:
x29 29, x30 30, sp 31).  The CFA is the caller's stack pointer at the call site.
"""

from __future__ import annotations

from typing import NamedTuple

# How a value (the return address or the caller's frame pointer) is recovered.
LOC_SAME = 0        # unchanged: FP not saved yet; aarch64 RA still in the link register
LOC_CFA_DEREF = 1   # *(CFA + off)
LOC_REG = 2         # value of register `reg` + off (only meaningful in frame 0)
LOC_REG_DEREF = 3   # *(register `reg` + off)  (only meaningful in frame 0, unless reg is SP/FP)
LOC_UNDEFINED = 4   # RA undefined: this is the outermost frame

LOC_NAMES = {
    LOC_SAME: "same",
    LOC_CFA_DEREF: "cfa-deref",
    LOC_REG: "reg",
    LOC_REG_DEREF: "reg-deref",
    LOC_UNDEFINED: "undefined",
}

# DWARF register numbers.
X86_64_RBP = 6
X86_64_RSP = 7
X86_64_RIP = 16
AARCH64_FP = 29
AARCH64_LR = 30
AARCH64_SP = 31


class Rule(NamedTuple):
    """How to step from a frame to its caller at one pc.

    CFA = (*)(register cfa_reg + cfa_off), dereferenced when cfa_deref.
    RA and caller FP follow the LOC_* kinds above; `*_reg` is used only by the
    LOC_REG / LOC_REG_DEREF kinds.
    """

    cfa_reg: int
    cfa_off: int
    cfa_deref: bool
    ra_kind: int
    ra_reg: int
    ra_off: int
    fp_kind: int
    fp_reg: int
    fp_off: int
    mangled_ra: bool = False  # aarch64: the RA carries a PAC signature
    signal: bool = False      # the function is a signal trampoline
    cfa_add: int = 0          # added after the dereference (CFA = *(reg + off) + add)


def rule_shape(rule: Rule) -> tuple[int, ...]:
    """What a rule says about CFA, RA and FP, without the fields that do not matter
    for its kinds (a register number for a CFA-relative slot, say)."""
    return (rule.cfa_reg, rule.cfa_off, rule.cfa_deref, rule.cfa_add,
            rule.ra_kind, rule.ra_off if rule.ra_kind == LOC_CFA_DEREF else 0,
            rule.fp_kind, rule.fp_off if rule.fp_kind == LOC_CFA_DEREF else 0,
            rule.mangled_ra)
