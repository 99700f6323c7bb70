"""Just enough instruction decoding to check return addresses and call edges.

The unwinder asks of the code around a return address: does a call instruction end
right before it, and if so, where does that call go (a function, a PLT stub, a GOT
slot, or a register)?  And of a function: which other code can it reach by a direct
jump (a tail call, a jump into its ``.cold`` part)?  Of an interrupted pc saved in a
signal frame: is it the start of an instruction?  Is a pc in the kernel's signal
return trampoline?

aarch64 instructions are fixed-size words: ``BL``/``BLR``/``BLRA*`` calls and ``B``,
``B.cond``, ``CBZ``/``CBNZ``, ``TBZ``/``TBNZ`` branches are read where they stand.
x86_64 functions are decoded from their first byte by a length decoder (legacy
prefixes, REX, VEX, EVEX, XOP, the one-, two- and three-byte opcode maps), checked
against objdump on every function of libc, ld.so, libstdc++, libm, libcrypto and
python3 (tests/unit/test_insn.py); where a function cannot be decoded, the byte
patterns of ``E8 rel32`` and ``FF /2`` before a return address are the fallback.
"""

from __future__ import annotations

import array
import bisect
import struct
from collections.abc import Callable

# An aarch64 function longer than this, or an x86_64 one, is not scanned for jumps.
MAX_SCAN = 1 << 21


def a64_is_call(insn: int) -> bool:
    """BL, BLR, or a pointer-authenticating BLRAA/BLRAB/BLRAAZ/BLRABZ."""
    return (insn & 0xFC000000 == 0x94000000          # BL imm26
            or insn & 0xFFFFFC1F == 0xD63F0000       # BLR Xn
            or insn & 0xFEFFF800 == 0xD63F0800)      # BLRA[AB][Z]


def x86_indirect_call_before(code: bytes) -> bool:
    """Whether `code` (the bytes just before a return address) ends with an
    ``FF /2`` call (call r/m64) whose length matches."""
    n = len(code)
    for k in range(2, min(n, 7) + 1):
        i = n - k
        if code[i] != 0xFF:
            continue
        modrm = code[i + 1]
        if (modrm >> 3) & 7 != 2:
            continue
        mod, rm = modrm >> 6, modrm & 7
        length = 2
        if mod != 3:
            if rm == 4:                      # SIB byte
                length += 1
                if mod == 0 and k > 2 and code[i + 2] & 7 == 5:
                    length += 4              # SIB with disp32 and no base
            if mod == 0 and rm == 5:
                length += 4                  # rip-relative disp32
            elif mod == 1:
                length += 1
            elif mod == 2:
                length += 4
        if length == k:
            return True
    return False


def x86_call_before(code: bytes) -> bool:
    """Whether `code` ends with a call: E8 rel32, or FF /2 of the right length."""
    n = len(code)
    return (n >= 5 and code[n - 5] == 0xE8) or x86_indirect_call_before(code)


def call_target(arch: str, ra: int, code: bytes) -> int | None:
    """The target of the direct call that ends at `ra`, or None.

    `code` holds the bytes before `ra` (7 on x86_64, 4 on aarch64).  None when the
    call is indirect, when no call ends there, or when the bytes read both ways on
    x86_64 (an ``FF /2`` whose tail looks like ``E8 rel32``): only a call that is
    certainly direct names a target.
    """
    if arch == "aarch64":
        if len(code) != 4:
            return None
        insn = int.from_bytes(code, "little")
        if insn & 0xFC000000 != 0x94000000:
            return None
        imm = insn & 0x03FFFFFF
        if imm & 0x02000000:
            imm -= 1 << 26
        return ra - 4 + imm * 4
    if arch == "x86_64":
        n = len(code)
        if n < 5 or code[n - 5] != 0xE8 or x86_indirect_call_before(code):
            return None
        return ra + int.from_bytes(code[n - 4:], "little", signed=True)
    return None


def x86_got_call_slot(ra: int, code: bytes) -> int | None:
    """The GOT slot read by a ``call *disp32(%rip)`` (FF 15) ending at `ra`, or None."""
    n = len(code)
    if n < 6 or code[n - 6] != 0xFF or code[n - 5] != 0x15:
        return None
    return ra + int.from_bytes(code[n - 4:], "little", signed=True)


def stub_slot(arch: str, addr: int, code: bytes) -> int | None:
    """The GOT slot a PLT stub at `addr` jumps through (`code`: its first 16 bytes).

    x86_64: ``jmp *disp32(%rip)`` after an optional ``endbr64`` and ``bnd`` prefix.
    aarch64: ``adrp x16, page; ldr x17, [x16, #off]`` after an optional ``bti c``.
    """
    if arch == "x86_64":
        i = 4 if code[:4] == b"\xf3\x0f\x1e\xfa" else 0
        if code[i:i + 1] == b"\xf2":
            i += 1
        if len(code) >= i + 6 and code[i:i + 2] == b"\xff\x25":
            return addr + i + 6 + int.from_bytes(code[i + 2:i + 6], "little", signed=True)
        return None
    if arch == "aarch64" and len(code) >= 12:
        words = struct.unpack("<3I", code[:12])
        i = 1 if words[0] == 0xD503245F else 0                  # bti c
        adrp, ldr = words[i], words[i + 1]
        if adrp & 0x9F00001F != 0x90000010:                     # adrp x16
            return None
        if ldr & 0xFFC003FF != 0xF9400211:                      # ldr x17, [x16, #imm]
            return None
        imm = ((adrp >> 29) & 3) | (((adrp >> 5) & 0x7FFFF) << 2)
        if imm & (1 << 20):
            imm -= 1 << 21
        page = ((addr + 4 * i) & ~0xFFF) + (imm << 12)
        return int(page + ((ldr >> 10) & 0xFFF) * 8)
    return None


# -- x86_64 instruction lengths ----------------------------------------------------

def _bits(*ranges: tuple[int, int]) -> frozenset[int]:
    return frozenset(b for lo, hi in ranges for b in range(lo, hi + 1))


_PREFIXES = frozenset((0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65))
# One-byte opcodes with a ModRM byte.
_MODRM1 = _bits((0x00, 0x03), (0x08, 0x0B), (0x10, 0x13), (0x18, 0x1B), (0x20, 0x23),
                (0x28, 0x2B), (0x30, 0x33), (0x38, 0x3B), (0x63, 0x63), (0x69, 0x69),
                (0x6B, 0x6B), (0x80, 0x8F), (0xC0, 0xC1), (0xC6, 0xC7), (0xD0, 0xD3),
                (0xD8, 0xDF), (0xF6, 0xF7), (0xFE, 0xFF))
_IMM8_1 = _bits((0x04, 0x04), (0x0C, 0x0C), (0x14, 0x14), (0x1C, 0x1C), (0x24, 0x24),
                (0x2C, 0x2C), (0x34, 0x34), (0x3C, 0x3C), (0x6A, 0x6A), (0x6B, 0x6B),
                (0x70, 0x7F), (0x80, 0x80), (0x83, 0x83), (0xA8, 0xA8), (0xB0, 0xB7),
                (0xC0, 0xC1), (0xC6, 0xC6), (0xCD, 0xCD), (0xE0, 0xE7), (0xEB, 0xEB))
_IMMZ_1 = _bits((0x05, 0x05), (0x0D, 0x0D), (0x15, 0x15), (0x1D, 0x1D), (0x25, 0x25),
                (0x2D, 0x2D), (0x35, 0x35), (0x3D, 0x3D), (0x68, 0x69), (0x81, 0x81),
                (0xA9, 0xA9), (0xC7, 0xC7), (0xE8, 0xE9))
# One-byte opcodes that do not exist in 64-bit mode.
_INVALID1 = frozenset((0x06, 0x07, 0x0E, 0x16, 0x17, 0x1E, 0x1F, 0x27, 0x2F, 0x37, 0x3F,
                       0x60, 0x61, 0x82, 0x9A, 0xCE, 0xD4, 0xD5, 0xD6, 0xEA))
# Two-byte (0F xx) opcodes without a ModRM byte.
_NO_MODRM2 = _bits((0x05, 0x09), (0x0B, 0x0B), (0x0E, 0x0E), (0x30, 0x37), (0x77, 0x77),
                   (0x80, 0x8F), (0xA0, 0xA2), (0xA8, 0xAA), (0xC8, 0xCF))
_IMM8_2 = _bits((0x70, 0x73), (0xA4, 0xA4), (0xAC, 0xAC), (0xBA, 0xBA), (0xC2, 0xC2),
                (0xC4, 0xC6))


def _modrm_len(code: bytes, p: int) -> int:
    """Bytes taken by the ModRM byte at p and its SIB and displacement."""
    modrm = code[p]
    mod, rm = modrm >> 6, modrm & 7
    n = 1
    if mod == 3:
        return n
    if rm == 4:
        n += 1
        if mod == 0 and code[p + 1] & 7 == 5:
            n += 4
    elif mod == 0 and rm == 5:
        n += 4
    if mod == 1:
        n += 1
    elif mod == 2:
        n += 4
    return n


# Instruction kinds x86_length reports.
X86_OTHER, X86_JUMP, X86_CALL, X86_CALL_INDIRECT, X86_CALL_RIP, X86_JUMP_INDIRECT = range(6)


def x86_length(code: bytes, p: int) -> tuple[int, int, int | None]:
    """(length, kind, rel) of the instruction at code[p].

    kind: X86_JUMP (jmp/jcc rel8/rel32) and X86_CALL (E8 rel32) with rel their
    displacement; X86_CALL_RIP, a ``call *disp32(%rip)`` with rel its disp32;
    X86_CALL_INDIRECT, any other ``FF /2`` or ``FF /3`` call; X86_JUMP_INDIRECT, an
    ``FF /4`` or ``FF /5`` jump (through a register or memory); X86_OTHER.
    Raises IndexError past the end and ValueError on bytes that are no instruction."""
    start = p
    opsize16 = addr32 = False
    while code[p] in _PREFIXES:
        opsize16 |= code[p] == 0x66
        addr32 |= code[p] == 0x67
        p += 1
        if p - start > 14:
            raise ValueError("too many prefixes")
    rex_w = False
    if 0x40 <= code[p] <= 0x4F:
        rex_w = bool(code[p] & 8)
        p += 1
    op = code[p]
    p += 1
    kind, rel = 0, None
    if op == 0x8F and code[p] & 0x1F >= 8:             # AMD XOP: maps 8, 9, 0xA
        mmap = code[p] & 0x1F
        p += 3                                         # 2 payload bytes, opcode
        p += _modrm_len(code, p)
        p += {8: 1, 9: 0, 10: 4}.get(mmap, 0)
    elif op in (0xC4, 0xC5, 0x62):                       # VEX3, VEX2, EVEX
        if op == 0xC5:
            mmap = 1
            p += 1
        elif op == 0xC4:
            mmap = code[p] & 0x1F
            p += 2
        else:
            mmap = code[p] & 0x07
            p += 3
        op2 = code[p]
        p += 1
        if not (mmap == 1 and op2 == 0x77):            # vzeroupper/vzeroall: no ModRM
            p += _modrm_len(code, p)
        if mmap == 3 or (mmap == 1 and op2 in _IMM8_2):
            p += 1
        elif mmap not in (1, 2, 3, 5, 6):
            raise ValueError("unknown VEX/EVEX map")
    elif op == 0x0F:
        op2 = code[p]
        p += 1
        if op2 == 0x38:
            p += 1 + _modrm_len(code, p + 1)
        elif op2 == 0x3A:
            p += 1 + _modrm_len(code, p + 1) + 1
        elif op2 == 0x0F:                                  # 3DNow!: ModRM, then imm8
            p += _modrm_len(code, p) + 1
        elif 0x80 <= op2 <= 0x8F:                          # jcc rel32
            rel = int.from_bytes(code[p:p + 4], "little", signed=True)
            p += 4
            kind = X86_JUMP
        elif op2 in _NO_MODRM2:
            pass
        else:
            p += _modrm_len(code, p)
            if op2 in _IMM8_2:
                p += 1
    else:
        if op in _INVALID1:
            raise ValueError(f"opcode 0x{op:02x} is invalid in 64-bit mode")
        if op in _MODRM1:
            modrm = code[p]
            reg = (modrm >> 3) & 7
            if op == 0xFF and reg in (2, 3):
                kind = X86_CALL_INDIRECT
                if modrm == 0x15:
                    kind, rel = X86_CALL_RIP, int.from_bytes(code[p + 1:p + 5], "little",
                                                             signed=True)
            elif op == 0xFF and reg in (4, 5):
                kind = X86_JUMP_INDIRECT
            p += _modrm_len(code, p)
            if op == 0xF6 and reg < 2:
                p += 1
            elif op == 0xF7 and reg < 2:
                p += 2 if opsize16 else 4
        if op in _IMM8_1:
            if op in (0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A,
                      0x7B, 0x7C, 0x7D, 0x7E, 0x7F, 0xEB):
                rel = code[p] - 256 if code[p] & 0x80 else code[p]
                kind = X86_JUMP
            p += 1
        elif op in _IMMZ_1:
            if op in (0xE8, 0xE9):
                rel = int.from_bytes(code[p:p + 4], "little", signed=True)
                kind = X86_CALL if op == 0xE8 else X86_JUMP
                p += 4
            else:
                p += 2 if opsize16 else 4
        elif 0xB8 <= op <= 0xBF:
            p += 8 if rex_w else (2 if opsize16 else 4)
        elif 0xA0 <= op <= 0xA3:
            p += 4 if addr32 else 8
        elif op in (0xC2, 0xCA):
            p += 2
        elif op == 0xC8:
            p += 3
    if p > len(code):
        raise IndexError("instruction runs past the code")
    return p - start, kind, rel


class X86Function:
    """The instructions of one x86_64 function, decoded from its first byte.

    `complete` is False when some bytes are no instruction (data in code, a table
    that is wrong about where the function starts): nothing else is then usable.
    """

    __slots__ = ("start", "offsets", "jumps", "calls", "indirect_jumps", "complete")

    def __init__(self, start: int, code: bytes) -> None:
        self.start = start
        self.offsets = array.array("I")           # instruction starts, from `start`
        jumps: set[int] = set()                   # direct jump targets outside it
        # Address after each call -> (kind, target or GOT slot; None if indirect).
        self.calls: dict[int, tuple[int, int | None]] = {}
        indirect: list[int] = []                  # addresses of FF /4, FF /5 jumps
        self.complete = True
        end = start + len(code)
        p = 0
        try:
            while p < len(code):
                self.offsets.append(p)
                n, kind, rel = x86_length(code, p)
                p += n
                if kind == X86_JUMP and rel is not None:
                    t = start + p + rel
                    if not start <= t < end:
                        jumps.add(t)
                elif kind == X86_JUMP_INDIRECT:
                    indirect.append(start + p - n)
                elif kind != X86_OTHER:
                    self.calls[start + p] = (kind, None if rel is None else start + p + rel)
        except (IndexError, ValueError):
            self.complete = False
        self.jumps: frozenset[int] = frozenset(jumps)
        self.indirect_jumps: tuple[int, ...] = tuple(indirect)

    def is_boundary(self, addr: int) -> bool:
        """Whether an instruction starts at `addr`."""
        off = addr - self.start
        i = bisect.bisect_left(self.offsets, off)
        return i < len(self.offsets) and self.offsets[i] == off


def a64_is_indirect_branch(insn: int) -> bool:
    """BR Xn, or a pointer-authenticating BRAA/BRAB/BRAAZ/BRABZ (not RET)."""
    return (insn & 0xFFFFFC1F == 0xD61F0000          # BR Xn
            or insn & 0xFFFFF81F == 0xD61F081F       # BRAAZ, BRABZ
            or insn & 0xFFFFF800 == 0xD71F0800)      # BRAA, BRAB


def a64_keeps_frame(word: int) -> bool:
    """Whether an aarch64 instruction leaves SP, FP (x29) and LR (x30) alone, as
    far as a conservative reading can tell: False for any call (BL/BLR: they set
    LR), any PAC operation on LR, any write of SP by ADD/SUB or by a load/store
    that writes back its base, and any instruction naming x29 or x30 as its
    destination (or first or second transfer register) that is not a store."""
    if a64_is_call(word) or word in (0xD503233F, 0xD50323BF, 0xD503237F, 0xD50323FF):
        return False                                  # bl/blr; paci[ab]sp, auti[ab]sp
    rd = word & 0x1F
    if word & 0x1F000000 == 0x11000000 and not word & 0x20000000 and rd == 31:
        return False                                  # ADD/SUB (immediate) to SP
    if word & 0x1FE00000 == 0x0B200000 and not word & 0x20000000 and rd == 31:
        return False                                  # ADD/SUB (extended register) to SP
    if word & 0x0A000000 == 0x08000000:               # loads and stores
        rn = (word >> 5) & 0x1F
        pair = word & 0x3A000000 == 0x28000000
        single = word & 0x3A000000 == 0x38000000      # one register: any addressing
        writeback = (word & 0x03800000 in (0x00800000, 0x01800000) if pair
                     else word & 0x3B200400 == 0x38000400)
        if writeback and rn == 31:
            return False
        if word & 0x04000000 and (pair or single):
            return True                               # SIMD registers: not x29, x30
        if pair:                                      # LDP writes Rt and Rt2
            named = {rd, (word >> 10) & 0x1F} if word & 0x00400000 else set()
        elif single:                                  # loads and atomics write Rt
            atomic = word & 0x00200C00 == 0x00200000
            named = {rd} if word & 0x00C00000 or atomic else set()
        elif word & 0x3F000000 == 0x08000000:         # exclusives: Rt, Rt2 or status Rs
            named = {rd, (word >> 10) & 0x1F} if word & 0x00400000 else {(word >> 16) & 0x1F}
        else:                                         # literal loads
            named = {rd}
        return not named & {29, 30}
    if word & 0x1C000000 == 0x14000000:               # branches, exceptions, system
        return not (word & 0xFFF00000 == 0xD5300000 and rd in (29, 30))   # MRS x29/x30
    return rd not in (29, 30)


def a64_indirect_branches(start: int, code: bytes) -> tuple[int, ...]:
    """Addresses of the indirect branches (a64_is_indirect_branch) in `code`."""
    words = len(code) // 4
    return tuple(start + 4 * i
                 for i, word in enumerate(struct.unpack(f"<{words}I", code[:words * 4]))
                 if a64_is_indirect_branch(word))


def a64_branch_targets(start: int, code: bytes) -> frozenset[int] | None:
    """Targets outside [start, start + len(code)) of the direct branches in `code`
    (an aarch64 function's bytes); None for a function too long to scan."""
    if len(code) > MAX_SCAN:
        return None
    end = start + len(code)
    out: set[int] = set()
    words = len(code) // 4
    for i, word in enumerate(struct.unpack(f"<{words}I", code[:words * 4])):
        if word & 0xFC000000 == 0x14000000:                    # B imm26
            imm, bits = word & 0x03FFFFFF, 26
        elif word & 0xFF000010 == 0x54000000:                  # B.cond imm19
            imm, bits = (word >> 5) & 0x7FFFF, 19
        elif word & 0x7E000000 == 0x34000000:                  # CBZ/CBNZ imm19
            imm, bits = (word >> 5) & 0x7FFFF, 19
        elif word & 0x7E000000 == 0x36000000:                  # TBZ/TBNZ imm14
            imm, bits = (word >> 5) & 0x3FFF, 14
        else:
            continue
        if imm >> (bits - 1):
            imm -= 1 << bits
        t = start + 4 * i + imm * 4
        if not start <= t < end:
            out.add(t)
    return frozenset(out)


# The kernel's rt_sigreturn trampolines, recognised by their code, and the offsets
# into it where a sampled pc can be: on either instruction, or just past the system
# call while the kernel runs rt_sigreturn.  SP points at the signal frame at all of them.
SIGRETURN_CODE = {
    "x86_64": (bytes.fromhex("48c7c00f0000000f05"), (0, 7, 9)),   # mov $15,%rax; syscall
    "aarch64": (bytes.fromhex("681180d2010000d4"), (0, 4, 8)),    # mov x8,#139; svc #0
}


def is_sigreturn_at(arch: str, addr: int, read: Callable[[int, int], bytes]) -> bool:
    """Whether `addr` is inside (or just past) an rt_sigreturn trampoline."""
    code, offsets = SIGRETURN_CODE.get(arch, (b"-", ()))
    return any(read(addr - off, len(code)) == code for off in offsets)
