"""DWARF CFA expressions (``DW_CFA_def_cfa_expression``) that reduce to a Rule.

The unwinder's Rule says CFA = reg + off, or *(reg + off) + add.  Some real CFA
expressions have one of those values but a longer spelling:

* the x86_64 ``.plt`` (binutils' ld writes it for every lazy PLT):
  ``DW_OP_breg7 (rsp) 8; DW_OP_breg16 (rip) 0; DW_OP_lit15; DW_OP_and;
  DW_OP_lit11 (lit10 with IBT); DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus``:
  rsp + 8, or rsp + 16 once the entry has pushed its index.  With the pc known,
  everything but rsp is a constant.  (Runtime and link-time pcs differ by a
  page-aligned bias, so the low bits the expression looks at are the same.)
* OpenSSL's Montgomery multiplication (``bn_mul_mont``, ``bn_mul4x_mont``):
  ``DW_OP_breg7 40; DW_OP_deref; DW_OP_plus_uconst 8``, the CFA kept in a slot of a
  realigned frame.

The evaluation is symbolic: a value is a constant, a register plus a constant, or
the word at a register plus a constant, plus a constant.  Any other shape (two
registers, arithmetic on an unknown value, an opcode not listed) is not a Rule and
gives None, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from profiler.leb128 import LebError, sleb, uleb

MASK = (1 << 64) - 1
MAX_DEPTH = 64



class _Val(NamedTuple):
    """A symbolic value: kind "c" (the constant `off`), "r" (register `reg` +
    `off`) or "d" (the word at register `reg` + `off`, plus `add`)."""

    kind: str
    reg: int = -1
    off: int = 0
    add: int = 0


def _c(value: int) -> _Val:
    return _Val("c", -1, value & MASK)


class NeedsPc(Exception):
    """The expression reads the pc register: evaluate it again with the pc."""


class _Unsupported(Exception):
    pass


_CONST_SIZES = {0x08: (1, False), 0x09: (1, True), 0x0A: (2, False), 0x0B: (2, True),
                0x0C: (4, False), 0x0D: (4, True), 0x0E: (8, False), 0x0F: (8, True)}

_BINARY: dict[int, Callable[[int, int], int]] = {
    0x1A: lambda a, b: a & b, 0x1C: lambda a, b: a - b, 0x1E: lambda a, b: a * b,
    0x21: lambda a, b: a | b, 0x22: lambda a, b: a + b, 0x27: lambda a, b: a ^ b,
    0x24: lambda a, b: a << b if b < 64 else 0, 0x25: lambda a, b: a >> b if b < 64 else 0,
    0x29: lambda a, b: int(a == b), 0x2A: lambda a, b: int(a >= b),
    0x2B: lambda a, b: int(a > b), 0x2C: lambda a, b: int(a <= b),
    0x2D: lambda a, b: int(a < b), 0x2E: lambda a, b: int(a != b),
}


def evaluate(expr: bytes, pc_reg: int, pc: int | None = None
             ) -> tuple[int, int, bool, int] | None:
    """(reg, off, deref, add) for a CFA expression of one of the shapes above, or
    None.  `pc_reg` is the DWARF number of the pc (x86_64: 16; -1 if the
    architecture has none); reading it raises NeedsPc while `pc` is None."""
    try:
        top = _run(expr, pc_reg, pc)
    except (_Unsupported, LebError):
        return None
    if top.kind == "c":
        return None
    return top.reg, top.off, top.kind == "d", top.add


def _run(expr: bytes, pc_reg: int, pc: int | None) -> _Val:
    stack: list[_Val] = []
    pos = 0
    n = len(expr)
    while pos < n:
        op = expr[pos]
        pos += 1
        if 0x30 <= op <= 0x4F:                       # DW_OP_lit0..31
            stack.append(_c(op - 0x30))
        elif op in _CONST_SIZES:
            size, signed = _CONST_SIZES[op]
            if pos + size > n:
                raise _Unsupported
            stack.append(_c(int.from_bytes(expr[pos:pos + size], "little", signed=signed)))
            pos += size
        elif op == 0x10:                             # DW_OP_constu
            k, pos = uleb(expr, pos, n)
            stack.append(_c(k))
        elif op == 0x11:                             # DW_OP_consts
            k, pos = sleb(expr, pos, n)
            stack.append(_c(k))
        elif 0x70 <= op <= 0x8F or op == 0x92:       # DW_OP_breg<n>, DW_OP_bregx
            if op == 0x92:
                reg, pos = uleb(expr, pos, n)
            else:
                reg = op - 0x70
            off, pos = sleb(expr, pos, n)
            if reg == pc_reg:
                if pc is None:
                    raise NeedsPc
                stack.append(_c(pc + off))
            else:
                stack.append(_Val("r", reg, off))
        elif op == 0x06:                             # DW_OP_deref
            v = _pop(stack)
            if v.kind != "r":
                raise _Unsupported
            stack.append(_Val("d", v.reg, v.off))
        elif op == 0x23:                             # DW_OP_plus_uconst
            k, pos = uleb(expr, pos, n)
            stack.append(_add(_pop(stack), k))
        elif op == 0x12:                             # DW_OP_dup
            stack.append(_peek(stack, 0))
        elif op == 0x13:                             # DW_OP_drop
            _pop(stack)
        elif op == 0x14:                             # DW_OP_over
            stack.append(_peek(stack, 1))
        elif op == 0x16:                             # DW_OP_swap
            b, a = _pop(stack), _pop(stack)
            stack += [b, a]
        elif op in _BINARY:
            b, a = _pop(stack), _pop(stack)
            stack.append(_binary(op, a, b))
        else:
            raise _Unsupported
        if len(stack) > MAX_DEPTH:
            raise _Unsupported
    return _pop(stack)


def _pop(stack: list[_Val]) -> _Val:
    if not stack:
        raise _Unsupported
    return stack.pop()


def _peek(stack: list[_Val], i: int) -> _Val:
    if len(stack) <= i:
        raise _Unsupported
    return stack[-1 - i]


def _add(v: _Val, k: int) -> _Val:
    if v.kind == "c":
        return _c(v.off + k)
    if v.kind == "r":
        return v._replace(off=v.off + k)
    return v._replace(add=v.add + k)


def _binary(op: int, a: _Val, b: _Val) -> _Val:
    if a.kind == "c" and b.kind == "c":
        return _c(_BINARY[op](a.off, b.off))
    if op == 0x22:                                   # plus: a symbol and a constant
        if b.kind == "c":
            return _add(a, b.off)
        if a.kind == "c":
            return _add(b, a.off)
    if op == 0x1C and b.kind == "c":                 # minus a constant
        return _add(a, -b.off)
    raise _Unsupported
