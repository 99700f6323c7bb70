"""The call-frame instruction interpreter (DWARF 5 section 6.4.2).

:func:`run` executes a CIE's initial instructions or an FDE's instructions on a
:class:`State`, appending a row (location, state) each time the location advances.
Each opcode has one handler below, named and ordered as in the spec: row creation
(6.4.2.1), CFA definition (6.4.2.2), register rules (6.4.2.3), row state (6.4.2.4),
padding (6.4.2.5), then the GNU and AArch64 extensions.

Only the CFA, the CIE's return-address column and the frame-pointer register are
tracked (row.py); rules for other registers are decoded and dropped.  On aarch64,
``DW_CFA_AARCH64_negate_ra_state`` (and ``..._with_pc``) toggles the "RA signed"
state; remember/restore_state save and restore it with the columns.
"""

from __future__ import annotations

from collections.abc import Callable

import profiler.unwind.cfi.constants as C
from profiler.leb128 import sleb, uleb

from .encoding import Bad
from .entries import Cie, Section
from .row import (
    R_EXPR,
    R_OFFSET,
    R_REGISTER,
    R_SAME,
    R_UNDEF,
    R_VAL_EXPR,
    R_VAL_OFFSET,
    Key,
    RegRule,
    State,
)

# Bounds on what one CIE or FDE may make the interpreter do: instructions run (real
# ones have tens, hand-written assembly a few hundred) and remembered states.
MAX_CFI_INSTRUCTIONS = 1 << 16
MAX_STATE_STACK = 1024

Rows = tuple[list[int], list[Key]]


class _Vm:
    """What the handlers work on: the instructions, the state, and the CIE's factors."""

    __slots__ = ("sec", "cie", "data", "end", "st", "stack", "init", "out",
                 "caf", "daf", "ra", "fp", "aarch64")

    def __init__(self, sec: Section, cie: Cie, end: int, st: State, init: State | None,
                 out: Rows | None) -> None:
        self.sec = sec
        self.cie = cie
        self.data = sec.data
        self.end = end
        self.st = st
        self.stack: list[Key] = []
        self.init = init  # the CIE's state while running an FDE; None in the CIE
        self.out = out
        self.caf = cie.code_align
        self.daf = cie.data_align
        self.ra = cie.ra_reg
        self.fp = sec.table.fp_reg
        self.aarch64 = sec.table.aarch64

    def advance(self, delta: int) -> None:
        """Close the current row and move the location by delta bytes."""
        st = self.st
        if self.out is not None:
            self.out[0].append(st.loc)
            self.out[1].append(st.key())
        st.loc += delta

    def set_reg(self, reg: int, rule: RegRule) -> None:
        if reg == self.ra:
            self.st.ra = rule
        elif reg == self.fp:
            self.st.fp = rule

    def restore(self, reg: int) -> None:
        """Give reg the rule the CIE's initial instructions gave it."""
        if self.init is None:
            raise Bad("DW_CFA_restore in a CIE")
        if reg == self.ra:
            self.st.ra = self.init.ra
        elif reg == self.fp:
            self.st.fp = self.init.fp

    def block(self, pos: int, what: str) -> tuple[bytes, int]:
        """A ULEB128 length and that many bytes (a DWARF expression)."""
        n, pos = uleb(self.data, pos, self.end)
        if pos + n > self.end:
            raise Bad(f"truncated {what}")
        return bytes(self.data[pos:pos + n]), pos + n


# A handler gets the opcode byte and the position after it; it returns the
# position after the operands.
_Handler = Callable[[_Vm, int, int], int]


# -- 6.4.2.1 row creation -----------------------------------------------------
def _set_loc(vm: _Vm, op: int, pos: int) -> int:
    sec, cie = vm.sec, vm.cie
    if sec.is_eh:
        new, pos = sec.encoded(cie.fde_enc, pos, vm.end)
    else:
        new, pos = sec.address(pos, vm.end, cie.addr_size)
    if vm.init is None:
        raise Bad("DW_CFA_set_loc in a CIE")
    if new < vm.st.loc:
        raise Bad(f"DW_CFA_set_loc moves backwards to 0x{new:x}")
    vm.advance(new - vm.st.loc)
    return pos


def _advance_loc(vm: _Vm, op: int, pos: int) -> int:
    vm.advance((op & C.OPERAND_MASK) * vm.caf)
    return pos


def _advance_loc1(vm: _Vm, op: int, pos: int) -> int:
    if pos + 1 > vm.end:
        raise Bad("truncated DW_CFA_advance_loc1")
    vm.advance(vm.data[pos] * vm.caf)
    return pos + 1


def _advance_loc2(vm: _Vm, op: int, pos: int) -> int:
    delta, pos = vm.sec.fixed(vm.sec.u16, pos, vm.end)
    vm.advance(delta * vm.caf)
    return pos


def _advance_loc4(vm: _Vm, op: int, pos: int) -> int:
    delta, pos = vm.sec.fixed(vm.sec.u32, pos, vm.end)
    vm.advance(delta * vm.caf)
    return pos


def _mips_advance_loc8(vm: _Vm, op: int, pos: int) -> int:
    delta, pos = vm.sec.fixed(vm.sec.u64, pos, vm.end)
    vm.advance(delta * vm.caf)
    return pos


# -- 6.4.2.2 CFA definition ---------------------------------------------------
def _def_cfa(vm: _Vm, op: int, pos: int) -> int:
    reg, pos = uleb(vm.data, pos, vm.end)
    off, pos = uleb(vm.data, pos, vm.end)
    vm.st.cfa = (reg, off)
    return pos


def _def_cfa_sf(vm: _Vm, op: int, pos: int) -> int:
    reg, pos = uleb(vm.data, pos, vm.end)
    off, pos = sleb(vm.data, pos, vm.end)
    vm.st.cfa = (reg, off * vm.daf)
    return pos


def _def_cfa_register(vm: _Vm, op: int, pos: int) -> int:
    """New register, same offset (invalid unless the CFA is register+offset)."""
    reg, pos = uleb(vm.data, pos, vm.end)
    cfa = vm.st.cfa
    vm.st.cfa = (reg, cfa[1]) if isinstance(cfa, tuple) else None
    return pos


def _def_cfa_offset(vm: _Vm, op: int, pos: int) -> int:
    """Same register, new offset (invalid unless the CFA is register+offset)."""
    off, pos = uleb(vm.data, pos, vm.end)
    cfa = vm.st.cfa
    vm.st.cfa = (cfa[0], off) if isinstance(cfa, tuple) else None
    return pos


def _def_cfa_offset_sf(vm: _Vm, op: int, pos: int) -> int:
    off, pos = sleb(vm.data, pos, vm.end)
    cfa = vm.st.cfa
    vm.st.cfa = (cfa[0], off * vm.daf) if isinstance(cfa, tuple) else None
    return pos


def _def_cfa_expression(vm: _Vm, op: int, pos: int) -> int:
    vm.st.cfa, pos = vm.block(pos, "DW_CFA_def_cfa_expression")
    return pos


# -- 6.4.2.3 register rules ---------------------------------------------------
def _undefined(vm: _Vm, op: int, pos: int) -> int:
    reg, pos = uleb(vm.data, pos, vm.end)
    vm.set_reg(reg, (R_UNDEF, 0))
    return pos


def _same_value(vm: _Vm, op: int, pos: int) -> int:
    reg, pos = uleb(vm.data, pos, vm.end)
    vm.set_reg(reg, (R_SAME, 0))
    return pos


def _offset(vm: _Vm, op: int, pos: int) -> int:
    off, pos = uleb(vm.data, pos, vm.end)
    vm.set_reg(op & C.OPERAND_MASK, (R_OFFSET, off * vm.daf))
    return pos


def _offset_extended(vm: _Vm, op: int, pos: int) -> int:
    reg, pos = uleb(vm.data, pos, vm.end)
    off, pos = uleb(vm.data, pos, vm.end)
    vm.set_reg(reg, (R_OFFSET, off * vm.daf))
    return pos


def _offset_extended_sf(vm: _Vm, op: int, pos: int) -> int:
    reg, pos = uleb(vm.data, pos, vm.end)
    off, pos = sleb(vm.data, pos, vm.end)
    vm.set_reg(reg, (R_OFFSET, off * vm.daf))
    return pos


def _val_offset(vm: _Vm, op: int, pos: int) -> int:
    reg, pos = uleb(vm.data, pos, vm.end)
    off, pos = uleb(vm.data, pos, vm.end)
    vm.set_reg(reg, (R_VAL_OFFSET, off * vm.daf))
    return pos


def _val_offset_sf(vm: _Vm, op: int, pos: int) -> int:
    reg, pos = uleb(vm.data, pos, vm.end)
    off, pos = sleb(vm.data, pos, vm.end)
    vm.set_reg(reg, (R_VAL_OFFSET, off * vm.daf))
    return pos


def _register(vm: _Vm, op: int, pos: int) -> int:
    reg, pos = uleb(vm.data, pos, vm.end)
    reg2, pos = uleb(vm.data, pos, vm.end)
    vm.set_reg(reg, (R_REGISTER, reg2))
    return pos


def _expression(vm: _Vm, op: int, pos: int) -> int:
    """DW_CFA_expression and DW_CFA_val_expression."""
    reg, pos = uleb(vm.data, pos, vm.end)
    expr, pos = vm.block(pos, "DW_CFA_expression")
    vm.set_reg(reg, (R_EXPR if op == C.DW_CFA_expression else R_VAL_EXPR, expr))
    return pos


def _restore(vm: _Vm, op: int, pos: int) -> int:
    vm.restore(op & C.OPERAND_MASK)
    return pos


def _restore_extended(vm: _Vm, op: int, pos: int) -> int:
    reg, pos = uleb(vm.data, pos, vm.end)
    vm.restore(reg)
    return pos


# -- 6.4.2.4 row state --------------------------------------------------------
def _remember_state(vm: _Vm, op: int, pos: int) -> int:
    if len(vm.stack) >= MAX_STATE_STACK:
        raise Bad("DW_CFA_remember_state nested too deeply")
    vm.stack.append(vm.st.key())
    return pos


def _restore_state(vm: _Vm, op: int, pos: int) -> int:
    if not vm.stack:
        raise Bad("DW_CFA_restore_state without DW_CFA_remember_state")
    st = vm.st
    st.cfa, st.ra, st.fp, st.neg = vm.stack.pop()
    return pos


# -- 6.4.2.5 padding ----------------------------------------------------------
def _nop(vm: _Vm, op: int, pos: int) -> int:
    return pos


# -- GNU and AArch64 extensions -------------------------------------------------
def _window_save_or_negate_ra_state(vm: _Vm, op: int, pos: int) -> int:
    """aarch64: DW_CFA_AARCH64_negate_ra_state; SPARC's DW_CFA_GNU_window_save is
    meaningless on x86_64 and ignored there."""
    if vm.aarch64:
        vm.st.neg = not vm.st.neg
    return pos


def _negate_ra_state_with_pc(vm: _Vm, op: int, pos: int) -> int:
    """aarch64 pac-ret+pc: the RA is signed/unsigned as with negate_ra_state (the pc
    only changes the modifier, which a stripper does not need)."""
    if not vm.aarch64:
        raise _unknown(op, pos)
    vm.st.neg = not vm.st.neg
    return pos


def _gnu_args_size(vm: _Vm, op: int, pos: int) -> int:
    return uleb(vm.data, pos, vm.end)[1]


def _gnu_negative_offset_extended(vm: _Vm, op: int, pos: int) -> int:
    reg, pos = uleb(vm.data, pos, vm.end)
    off, pos = uleb(vm.data, pos, vm.end)
    vm.set_reg(reg, (R_OFFSET, -off * vm.daf))
    return pos


def _unknown(op: int, pos: int) -> Bad:
    return Bad(f"unknown CFA opcode 0x{op:02x} at offset 0x{pos - 1:x}")


# The opcodes with no operand in their byte (all below 0x40), indexed by opcode.
_EXTENDED: dict[int, _Handler] = {
    C.DW_CFA_nop: _nop,
    C.DW_CFA_set_loc: _set_loc,
    C.DW_CFA_advance_loc1: _advance_loc1,
    C.DW_CFA_advance_loc2: _advance_loc2,
    C.DW_CFA_advance_loc4: _advance_loc4,
    C.DW_CFA_offset_extended: _offset_extended,
    C.DW_CFA_restore_extended: _restore_extended,
    C.DW_CFA_undefined: _undefined,
    C.DW_CFA_same_value: _same_value,
    C.DW_CFA_register: _register,
    C.DW_CFA_remember_state: _remember_state,
    C.DW_CFA_restore_state: _restore_state,
    C.DW_CFA_def_cfa: _def_cfa,
    C.DW_CFA_def_cfa_register: _def_cfa_register,
    C.DW_CFA_def_cfa_offset: _def_cfa_offset,
    C.DW_CFA_def_cfa_expression: _def_cfa_expression,
    C.DW_CFA_expression: _expression,
    C.DW_CFA_offset_extended_sf: _offset_extended_sf,
    C.DW_CFA_def_cfa_sf: _def_cfa_sf,
    C.DW_CFA_def_cfa_offset_sf: _def_cfa_offset_sf,
    C.DW_CFA_val_offset: _val_offset,
    C.DW_CFA_val_offset_sf: _val_offset_sf,
    C.DW_CFA_val_expression: _expression,
    C.DW_CFA_MIPS_advance_loc8: _mips_advance_loc8,
    C.DW_CFA_AARCH64_negate_ra_state_with_pc: _negate_ra_state_with_pc,
    C.DW_CFA_AARCH64_negate_ra_state: _window_save_or_negate_ra_state,
    C.DW_CFA_GNU_args_size: _gnu_args_size,
    C.DW_CFA_GNU_negative_offset_extended: _gnu_negative_offset_extended,
}
_DISPATCH: list[_Handler | None] = [_EXTENDED.get(op) for op in range(C.DW_CFA_hi_user + 1)]
# The primary opcodes, by the high two bits of their byte.
_PRIMARY: dict[int, _Handler] = {
    C.DW_CFA_advance_loc: _advance_loc,
    C.DW_CFA_offset: _offset,
    C.DW_CFA_restore: _restore,
}


def run(sec: Section, cie: Cie, pos: int, end: int, st: State, init: State | None,
        out: Rows | None, start: int, fend: int) -> None:
    """Execute the instructions at [pos, end) of `sec` on st from location `start`.

    `init` is the CIE's state when running an FDE's instructions (None while running
    the CIE's own); `out` receives a row at each advance.  In an FDE, decoding stops
    once the location reaches `fend`, the end of the FDE's range.
    """
    vm = _Vm(sec, cie, end, st, init, out)
    data = vm.data
    dispatch = _DISPATCH
    primaries = _PRIMARY
    in_fde = init is not None
    st.loc = start
    budget = MAX_CFI_INSTRUCTIONS
    while pos < end:
        budget -= 1
        if budget < 0:
            raise Bad(f"more than {MAX_CFI_INSTRUCTIONS} call-frame instructions")
        op = data[pos]
        pos += 1
        primary = op & C.PRIMARY_MASK
        if primary:  # advance_loc, offset, restore: operand in the low six bits
            pos = primaries[primary](vm, op, pos)
            continue
        if op == C.DW_CFA_nop:  # padding (also: no early stop on it)
            continue
        handler = dispatch[op]
        if handler is None:
            raise _unknown(op, pos)
        pos = handler(vm, op, pos)
        if in_fde and st.loc >= fend:
            # Rows beyond the FDE's range can never be selected; stop early.
            # (Remaining instructions cannot change rows inside the range.)
            return
