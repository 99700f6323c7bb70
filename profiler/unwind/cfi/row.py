"""One row of a CFI table: the interpreter's state, and its mapping to a :class:`Rule`.

Only the three columns the unwinder needs are tracked: the CFA, the return-address
column (the CIE's ``return_address_register``: 16 on x86_64, 30 on aarch64) and the
frame-pointer register (rbp 6 / x29 29), plus the aarch64 "RA signed" state.

Mapping to :class:`Rule` (RA = the CIE's return column, FP = rbp / x29):

* CFA ``reg+off`` -> ``cfa_deref=False``; ``DW_OP_breg<r> off; DW_OP_deref`` (or
  ``bregx``) -> ``cfa_deref=True``; other CFA expressions are evaluated by
  profiler.unwind.cfa_expr (one that reads the pc gives a :class:`PcRule`); any it
  cannot reduce -> None.
* ``offset(n)`` -> LOC_CFA_DEREF n; ``undefined`` -> LOC_UNDEFINED; not mentioned /
  ``same_value`` -> LOC_SAME (for a non-standard return column, e.g.
  ``.cfi_return_column x15``, the RA is in that register: LOC_REG reg 15);
  ``register(r)`` -> LOC_REG r+0; ``val_offset(n)`` with a register CFA ->
  LOC_REG cfa_reg+(cfa_off+n); ``expression``/``val_expression`` of the form
  ``DW_OP_breg<r> off`` -> LOC_REG_DEREF / LOC_REG r+off (glibc's x86_64
  ``__restore_rt`` and the DRAP prologue use these); anything else -> None.
"""

from __future__ import annotations

from typing import NamedTuple

from profiler.leb128 import LebError, sleb, uleb
from profiler.unwind import cfa_expr
from profiler.unwind.rules import (
    LOC_CFA_DEREF,
    LOC_REG,
    LOC_REG_DEREF,
    LOC_SAME,
    LOC_UNDEFINED,
    Rule,
)

# Register-rule kinds (DWARF 5 section 6.4.1).  A rule is (kind, arg); None = not
# mentioned since the CIE's initial instructions.
R_UNDEF = 0       # (R_UNDEF, 0)
R_SAME = 1        # (R_SAME, 0)
R_OFFSET = 2      # (R_OFFSET, n)       saved at CFA + n
R_VAL_OFFSET = 3  # (R_VAL_OFFSET, n)   value is CFA + n
R_REGISTER = 4    # (R_REGISTER, r)     value is in register r
R_EXPR = 5        # (R_EXPR, bytes)     saved at the address an expression computes
R_VAL_EXPR = 6    # (R_VAL_EXPR, bytes) value is what an expression computes
RegRule = tuple[int, int | bytes] | None
# CFA rule: (reg, off) | expression bytes | None (undefined or invalid)
CfaRule = tuple[int, int] | bytes | None
# Row state as hashed for the Rule cache: (cfa, ra, fp, ra_signed)
Key = tuple[CfaRule, RegRule, RegRule, bool]
Loc = tuple[int, int, int]  # (LOC_* kind, reg, off)

_DW_OP_breg0 = 0x70
_DW_OP_breg31 = 0x8F
_DW_OP_bregx = 0x92
_DW_OP_deref = 0x06


class State:
    """Interpreter state: current location and the three tracked columns."""

    __slots__ = ("loc", "cfa", "ra", "fp", "neg")

    def __init__(self) -> None:
        self.loc = 0
        self.cfa: CfaRule = None
        self.ra: RegRule = None
        self.fp: RegRule = None
        self.neg = False  # aarch64: RA signed (odd number of negate_ra_state)

    def copy(self) -> State:
        s = State()
        s.loc, s.cfa, s.ra, s.fp, s.neg = self.loc, self.cfa, self.ra, self.fp, self.neg
        return s

    def key(self) -> Key:
        return (self.cfa, self.ra, self.fp, self.neg)


def simple_breg(expr: bytes, want_deref: bool) -> tuple[int, int] | None:
    """Match ``DW_OP_breg<r> off`` / ``DW_OP_bregx r off`` (+ ``DW_OP_deref`` if asked).

    Returns (reg, off) or None if the expression has any other shape.
    """
    try:
        n = len(expr)
        if n < 2:
            return None
        op = expr[0]
        if _DW_OP_breg0 <= op <= _DW_OP_breg31:
            reg = op - _DW_OP_breg0
            off, pos = sleb(expr, 1, n)
        elif op == _DW_OP_bregx:
            reg, pos = uleb(expr, 1, n)
            off, pos = sleb(expr, pos, n)
        else:
            return None
        if want_deref:
            if pos == n - 1 and expr[pos] == _DW_OP_deref:
                return reg, off
            return None
        return (reg, off) if pos == n else None
    except LebError:
        return None


class PcRule(NamedTuple):
    """A row whose CFA expression reads the pc (the x86_64 .plt's): `at(pc)` is
    its Rule at one pc (profiler.unwind.cfa_expr)."""

    key: Key
    signal: bool
    ra_same: Loc
    pc_reg: int

    def at(self, pc: int) -> Rule | None:
        rule = make_rule(self.key, self.signal, self.ra_same, self.pc_reg, pc)
        return None if isinstance(rule, PcRule) else rule


# What one decoded row gives the unwinder.
Row = Rule | PcRule | None


def make_rule(key: Key, signal: bool, ra_same: Loc, pc_reg: int,
              pc: int | None = None) -> Row:
    """The Rule of a row state; `ra_same` is the RA's location when its column is
    unchanged, `pc_reg` the DWARF number of the pc (-1: none) for CFA expressions."""
    cfa, ra, fp, neg = key
    if cfa is None:
        return None
    add = 0
    if isinstance(cfa, tuple):
        cfa_reg, cfa_off = cfa
        deref = False
    else:
        m = simple_breg(cfa, want_deref=True)
        if m is not None:
            cfa_reg, cfa_off = m
            deref = True
        else:
            try:
                found = cfa_expr.evaluate(cfa, pc_reg, pc)
            except cfa_expr.NeedsPc:
                return PcRule(key, signal, ra_same, pc_reg)
            if found is None:
                return None
            cfa_reg, cfa_off, deref, add = found
    r = _loc(ra, cfa_reg, cfa_off, deref, ra_same)
    f = _loc(fp, cfa_reg, cfa_off, deref, (LOC_SAME, 0, 0))
    if r is None or f is None:
        return None
    return Rule(cfa_reg, cfa_off, deref, r[0], r[1], r[2], f[0], f[1], f[2],
                mangled_ra=neg, signal=signal, cfa_add=add)


def _loc(rule: RegRule, cfa_reg: int, cfa_off: int, cfa_deref: bool,
         same: Loc) -> Loc | None:
    """Register rule -> (LOC_* kind, reg, off), or None if not expressible.

    `same` is the answer for "not mentioned" / DW_CFA_same_value.
    """
    if rule is None:
        return same
    kind, arg = rule
    if isinstance(arg, bytes):
        m = simple_breg(arg, want_deref=False)
        if m is None:
            return None
        if kind == R_EXPR:  # saved at reg + off
            return (LOC_REG_DEREF, m[0], m[1])
        return (LOC_REG, m[0], m[1])  # R_VAL_EXPR: value is reg + off
    if kind == R_OFFSET:
        return (LOC_CFA_DEREF, 0, arg)
    if kind == R_SAME:
        return same
    if kind == R_UNDEF:
        return (LOC_UNDEFINED, 0, 0)
    if kind == R_REGISTER:
        return (LOC_REG, arg, 0)
    if kind == R_VAL_OFFSET:
        # value = CFA + n = cfa_reg + cfa_off + n, when the CFA is register-based.
        if cfa_deref:
            return None
        return (LOC_REG, cfa_reg, cfa_off + arg)
    return None
