"""Decoder for one `.sframe` section (SFrame versions 1, 2 and 3).

`SFrameSection(data, section_addr, name)` checks the header and the FDE table once
(magic, version, flags, every offset and count inside the section, sorted and
non-overlapping functions) and raises `SFrameError("<name>: <defect>")` on any
defect.  Frame row entries (FREs) are decoded per function on first use and
memoized; a defect there raises `SFrameError` for that function only.

`find_rule(pc)` answers the unwinder's question for a link-time pc with a
format-neutral `Rule` (see profiler/unwind/rules.py), or None when no function covers pc.
Field names follow binutils' include/sframe.h.
"""

from __future__ import annotations

import bisect
import struct
from array import array
from typing import NamedTuple

import profiler.unwind.sframe.constants as C
from profiler.unwind import rules
from profiler.unwind.rules import Rule


class SFrameError(Exception):
    """A malformed or unsupported .sframe section; the message names file and defect."""


class FDE(NamedTuple):
    """One function descriptor, version independent.

    `fre_off` is the offset of the function's first FRE from the start of the FRE
    sub-section (for V3 this is past the 5-byte attribute record).
    """

    idx: int
    func_start: int
    func_size: int
    fre_off: int
    num_fres: int
    info: int
    info2: int
    rep_size: int

    @property
    def fre_type(self) -> int:
        return self.info & 0xF

    @property
    def pc_type(self) -> int:
        return (self.info >> 4) & 1

    @property
    def pauth_key(self) -> int:
        return (self.info >> 5) & 1

    @property
    def signal(self) -> bool:
        return bool(self.info & 0x80)

    @property
    def fde_type(self) -> int:
        return self.info2 & 0x1F


class FRE(NamedTuple):
    """One frame row entry: start offset, info byte and its data words (signed)."""

    start: int
    info: int
    words: tuple[int, ...]

    @property
    def base_reg(self) -> int:
        return self.info & 1

    @property
    def mangled_ra(self) -> bool:
        return bool(self.info & 0x80)

    @property
    def word_size(self) -> int:
        return C.WORD_SIZE.get((self.info >> 5) & 3, 0)


_ARCH_REGS = {
    # abi: (sp, fp, ra) DWARF numbers
    C.SFRAME_ABI_AMD64_ENDIAN_LITTLE: (rules.X86_64_RSP, rules.X86_64_RBP, rules.X86_64_RIP),
    C.SFRAME_ABI_AARCH64_ENDIAN_LITTLE: (rules.AARCH64_SP, rules.AARCH64_FP, rules.AARCH64_LR),
    C.SFRAME_ABI_AARCH64_ENDIAN_BIG: (rules.AARCH64_SP, rules.AARCH64_FP, rules.AARCH64_LR),
}


class SFrameSection:
    """A decoded .sframe section; addresses are link-time (add the load bias)."""

    def __init__(self, data: bytes, section_addr: int, name: str = "<sframe>") -> None:
        self.name = name
        self.data = bytes(data)
        self.section_addr = section_addr
        self._parse_header()
        self._parse_fdes()
        self._fre_cache: dict[int, list[FRE]] = {}
        self._rule_cache: dict[int, list[Rule | None]] = {}

    # -- header ---------------------------------------------------------------

    def _fail(self, defect: str) -> SFrameError:
        return SFrameError(f"{self.name}: bad .sframe: {defect}")

    def _parse_header(self) -> None:
        d = self.data
        if len(d) < C.SFRAME_HEADER_SIZE:
            raise self._fail(f"section is {len(d)} bytes, shorter than the 28-byte header")
        magic_le = struct.unpack_from("<H", d, 0)[0]
        if magic_le == C.SFRAME_MAGIC:
            self.endian = "<"
        elif magic_le == 0xE2DE:
            self.endian = ">"
        else:
            raise self._fail(f"bad magic 0x{magic_le:04x} (want 0xdee2)")
        e = self.endian
        (_, self.version, self.flags, self.abi_arch, self.cfa_fixed_fp_offset,
         self.cfa_fixed_ra_offset, self.auxhdr_len, self.num_fdes, self.num_fres,
         self.fre_len, self.fdeoff, self.freoff) = struct.unpack_from(e + "HBBBbbBIIIII", d, 0)
        if self.version not in C.VALID_FLAGS:
            raise self._fail(f"unknown version {self.version}")
        bad = self.flags & ~C.VALID_FLAGS[self.version]
        if bad:
            raise self._fail(f"unknown flags 0x{bad:x} for version {self.version}")
        if self.abi_arch not in C.ABI_NAMES:
            raise self._fail(f"unknown ABI/arch {self.abi_arch}")
        want_endian = ">" if self.abi_arch in (C.SFRAME_ABI_AARCH64_ENDIAN_BIG,
                                                C.SFRAME_ABI_S390X_ENDIAN_BIG) else "<"
        if want_endian != e:
            raise self._fail(f"byte order does not match ABI {C.ABI_NAMES[self.abi_arch]}")
        if self.num_fdes > C.MAX_FDES:
            raise self._fail(f"{self.num_fdes} FDEs (at most {C.MAX_FDES})")
        self.header_size = C.SFRAME_HEADER_SIZE + self.auxhdr_len
        self.fde_size = C.FDE_SIZE[self.version]
        fdes_start = self.header_size + self.fdeoff
        fdes_end = fdes_start + self.num_fdes * self.fde_size
        self.fres_start = self.header_size + self.freoff
        self.fres_end = self.fres_start + self.fre_len
        if fdes_end > len(d):
            raise self._fail(f"{self.num_fdes} FDEs at offset {fdes_start} run past the "
                             f"end of the {len(d)}-byte section")
        if self.fres_end > len(d):
            raise self._fail(f"FRE sub-section [{self.fres_start}, {self.fres_end}) runs "
                             f"past the end of the {len(d)}-byte section")
        if self.num_fdes and self.fres_start < fdes_end and self.fre_len:
            raise self._fail("FDE and FRE sub-sections overlap")
        self.fdes_start = fdes_start

    @property
    def abi_name(self) -> str:
        return C.ABI_NAMES[self.abi_arch]

    @property
    def sorted(self) -> bool:
        return bool(self.flags & C.SFRAME_F_FDE_SORTED)

    @property
    def pcrel(self) -> bool:
        return bool(self.flags & C.SFRAME_F_FDE_FUNC_START_PCREL)

    # -- FDEs -----------------------------------------------------------------

    def _parse_fdes(self) -> None:
        d, e, v = self.data, self.endian, self.version
        fdes: list[FDE] = []
        total_fres = 0
        for i in range(self.num_fdes):
            off = self.fdes_start + i * self.fde_size
            field_addr = self.section_addr + off
            if v == C.SFRAME_VERSION_3:
                start_val, size, attr_off = struct.unpack_from(e + "qII", d, off)
                if attr_off + C.V3_FDE_ATTR_SIZE > self.fre_len:
                    raise self._fail(f"FDE {i}: attribute record at FRE offset {attr_off} "
                                     f"outside the {self.fre_len}-byte FRE sub-section")
                num_fres, info, info2, rep = struct.unpack_from(
                    e + "HBBB", d, self.fres_start + attr_off)
                fre_off = attr_off + C.V3_FDE_ATTR_SIZE
            elif v == C.SFRAME_VERSION_2:
                start_val, size, fre_off, num_fres, info, rep = struct.unpack_from(
                    e + "iIIIBB", d, off)
                info2 = 0
            else:
                start_val, size, fre_off, num_fres, info = struct.unpack_from(e + "iIIIB", d, off)
                # V1 FDEs have no repeat size.  binutils 2.40 emitted PC-mask FDEs only
                # for the x86_64 PLT, whose entries are 16 bytes; the V1 lookup masked
                # the low pc bits, which is a modulo 16 (checked against gdb on PLT stops).
                info2, rep = 0, 16 if (info >> 4) & 1 else 0
            func_start = (field_addr if self.pcrel else self.section_addr) + start_val
            func_start &= 0xFFFFFFFFFFFFFFFF
            if info & 0xF not in C.FRE_START_SIZE:
                raise self._fail(f"FDE {i}: invalid FRE type {info & 0xF}")
            if fre_off > self.fre_len:
                raise self._fail(f"FDE {i}: FRE offset {fre_off} past the end of the "
                                 f"{self.fre_len}-byte FRE sub-section")
            if num_fres and fre_off == self.fre_len:
                raise self._fail(f"FDE {i}: {num_fres} FREs start at the end of the FRE "
                                 f"sub-section")
            if num_fres > C.MAX_FRES_PER_FDE:
                raise self._fail(f"FDE {i}: {num_fres} FREs (at most {C.MAX_FRES_PER_FDE})")
            if num_fres > self.num_fres:
                raise self._fail(f"FDE {i}: {num_fres} FREs, more than the header's "
                                 f"{self.num_fres}")
            total_fres += num_fres
            fdes.append(FDE(i, func_start, size, fre_off, num_fres, info, info2, rep))
        if total_fres != self.num_fres:
            raise self._fail(f"FDEs hold {total_fres} FREs, header says {self.num_fres}")
        self.fdes = fdes
        order = fdes
        if self.sorted:
            for a, b in zip(fdes, fdes[1:]):
                if b.func_start < a.func_start:
                    raise self._fail(f"FDEs not sorted although FDE_SORTED is set: FDE "
                                     f"{b.idx} starts at 0x{b.func_start:x}, before FDE "
                                     f"{a.idx} at 0x{a.func_start:x}")
        else:
            order = sorted(fdes, key=lambda f: f.func_start)
        for a, b in zip(order, order[1:]):
            if a.func_size and a.func_start + a.func_size > b.func_start:
                raise self._fail(f"FDE {a.idx} [0x{a.func_start:x}, "
                                 f"0x{a.func_start + a.func_size:x}) overlaps FDE {b.idx} "
                                 f"at 0x{b.func_start:x}")
        self._order = order
        self._starts = array("Q", (f.func_start for f in order))

    def find_fde(self, pc: int) -> FDE | None:
        """The FDE whose [start, start + size) holds link-time `pc`, or None."""
        i = bisect.bisect_right(self._starts, pc) - 1
        if i < 0:
            return None
        fde = self._order[i]
        if pc - fde.func_start < fde.func_size:
            return fde
        return None

    # -- FREs -----------------------------------------------------------------

    def get_fres(self, fde: FDE) -> list[FRE]:
        """Decode (once) and return the FREs of one function."""
        fres = self._fre_cache.get(fde.idx)
        if fres is None:
            fres = self._decode_fres(fde)
            self._fre_cache[fde.idx] = fres
        return fres

    def _decode_fres(self, fde: FDE) -> list[FRE]:
        d, e = self.data, self.endian
        start_size = C.FRE_START_SIZE[fde.fre_type]
        start_fmt = e + {1: "B", 2: "H", 4: "I"}[start_size]
        word_fmt = {1: "b", 2: "h", 4: "i"}
        pos = self.fres_start + fde.fre_off
        end = self.fres_end
        flex = self.version == C.SFRAME_VERSION_3 and fde.fde_type == C.SFRAME_FDE_TYPE_FLEX
        if self.version == C.SFRAME_VERSION_3 and fde.fde_type not in (
                C.SFRAME_FDE_TYPE_DEFAULT, C.SFRAME_FDE_TYPE_FLEX):
            raise self._fail(f"FDE {fde.idx}: unknown FDE type {fde.fde_type}")
        max_words = C.MAX_FLEX_WORDS if flex else C.MAX_DEFAULT_WORDS
        out: list[FRE] = []
        prev = -1
        for j in range(fde.num_fres):
            if pos + start_size + 1 > end:
                raise self._fail(f"FDE {fde.idx}: FRE {j} runs off the end of the FRE "
                                 f"sub-section")
            start = struct.unpack_from(start_fmt, d, pos)[0]
            info = d[pos + start_size]
            pos += start_size + 1
            code = (info >> 5) & 3
            if code not in C.WORD_SIZE:
                raise self._fail(f"FDE {fde.idx}: FRE {j} has invalid word size code {code}")
            nwords = (info >> 1) & 0xF
            if nwords > max_words:
                raise self._fail(f"FDE {fde.idx}: FRE {j} has {nwords} data words "
                                 f"(at most {max_words})")
            size = C.WORD_SIZE[code]
            if pos + nwords * size > end:
                raise self._fail(f"FDE {fde.idx}: FRE {j} runs off the end of the FRE "
                                 f"sub-section")
            words = struct.unpack_from(e + word_fmt[size] * nwords, d, pos)
            pos += nwords * size
            if start <= prev:
                raise self._fail(f"FDE {fde.idx}: FRE {j} start 0x{start:x} not above "
                                 f"the previous 0x{prev:x}")
            if fde.pc_type == C.SFRAME_PC_TYPE_INC and start > fde.func_size:
                raise self._fail(f"FDE {fde.idx}: FRE {j} starts at 0x{start:x}, past the "
                                 f"{fde.func_size}-byte function")
            prev = start
            out.append(FRE(start, info, words))
        return out

    def find_fre(self, fde: FDE, pc: int) -> int:
        """Index of the FRE of `fde` that applies at link-time `pc`, or -1."""
        fres = self.get_fres(fde)
        off = pc - fde.func_start
        if fde.pc_type == C.SFRAME_PC_TYPE_MASK:
            if fde.rep_size == 0:
                raise self._fail(f"FDE {fde.idx}: PC-mask FDE with repeat size 0")
            off %= fde.rep_size
        lo, hi = 0, len(fres)
        while lo < hi:
            mid = (lo + hi) // 2
            if fres[mid].start <= off:
                lo = mid + 1
            else:
                hi = mid
        return lo - 1

    # -- rules ----------------------------------------------------------------

    def find_rule(self, pc: int) -> Rule | None:
        """The unwind rule at link-time `pc`; None when no FDE or FRE covers it.

        Raises SFrameError when the function's entries are corrupt.
        """
        fde = self.find_fde(pc)
        if fde is None:
            return None
        i = self.find_fre(fde, pc)
        if i < 0:
            return None
        cached = self._rule_cache.get(fde.idx)
        if cached is None:
            cached = [None] * fde.num_fres
            self._rule_cache[fde.idx] = cached
        rule = cached[i]
        if rule is None:
            rule = self.fre_rule(fde, self.get_fres(fde)[i])
            cached[i] = rule
        return rule

    def fre_rule(self, fde: FDE, fre: FRE) -> Rule:
        """Translate one FRE into a format-neutral Rule."""
        regs = _ARCH_REGS.get(self.abi_arch)
        if regs is None:
            raise self._fail(f"unwinding for ABI {self.abi_name} is not supported")
        sp, fp, ra = regs
        n = len(fre.words)
        mangled = fre.mangled_ra
        if n == 0:
            return Rule(-1, 0, False, rules.LOC_UNDEFINED, 0, 0, rules.LOC_SAME, 0, 0,
                        mangled, fde.signal)
        if self.version == C.SFRAME_VERSION_3 and fde.fde_type == C.SFRAME_FDE_TYPE_FLEX:
            return self._flex_rule(fde, fre, sp, ra)
        w = fre.words
        cfa_reg = sp if fre.base_reg == C.SFRAME_BASE_REG_SP else fp
        fixed_ra = self.cfa_fixed_ra_offset
        if fixed_ra:
            ra_kind, ra_off, fp_idx = rules.LOC_CFA_DEREF, fixed_ra, 1
        elif n >= 2:
            ra_kind, ra_off, fp_idx = rules.LOC_CFA_DEREF, w[1], 2
        else:
            ra_kind, ra_off, fp_idx = rules.LOC_SAME, 0, 2
        if n > fp_idx + 1:
            raise self._fail(f"FDE {fde.idx}: FRE at +0x{fre.start:x} has {n} data words, "
                             f"more than a default FDE of {self.abi_name} uses")
        if n > fp_idx:
            fp_kind, fp_off = rules.LOC_CFA_DEREF, w[fp_idx]
        elif self.cfa_fixed_fp_offset:
            fp_kind, fp_off = rules.LOC_CFA_DEREF, self.cfa_fixed_fp_offset
        else:
            fp_kind, fp_off = rules.LOC_SAME, 0
        return Rule(cfa_reg, w[0], False, ra_kind, ra, ra_off, fp_kind, fp, fp_off,
                    mangled, fde.signal)

    def _flex_rule(self, fde: FDE, fre: FRE, sp: int, ra: int) -> Rule:
        mask = (1 << (8 * fre.word_size)) - 1
        w = fre.words
        n = len(w)
        if n not in (2, 3, 4, 5, 6):
            raise self._fail(f"FDE {fde.idx}: flex FRE at +0x{fre.start:x} has {n} words")
        ctl = w[0] & mask
        if not ctl & 1:
            raise self._fail(f"FDE {fde.idx}: flex FRE at +0x{fre.start:x}: CFA not "
                             f"register based")
        cfa_reg, cfa_deref = ctl >> 3, bool(ctl & 2)
        rest = n - 2
        pos = 2
        if rest in (1, 3):      # single padding word in the RA slot
            if w[2] != 0:
                raise self._fail(f"FDE {fde.idx}: flex FRE at +0x{fre.start:x}: nonzero "
                                 f"RA padding word")
            ra_loc = None
            pos = 3
        elif rest in (2, 4):
            ra_loc = self._flex_loc(fde, fre, w[2] & mask, w[3])
            pos = 4
        else:
            ra_loc = None
        fp_loc = self._flex_loc(fde, fre, w[pos] & mask, w[pos + 1]) if n - pos == 2 else None
        if ra_loc is None:
            if self.cfa_fixed_ra_offset:
                ra_loc = (rules.LOC_CFA_DEREF, 0, self.cfa_fixed_ra_offset)
            else:
                ra_loc = (rules.LOC_SAME, ra, 0)
        if fp_loc is None:
            fp_loc = (rules.LOC_SAME, 0, 0)
        return Rule(cfa_reg, w[1], cfa_deref, ra_loc[0], ra_loc[1], ra_loc[2],
                    fp_loc[0], fp_loc[1], fp_loc[2], fre.mangled_ra, fde.signal)

    def _flex_loc(self, fde: FDE, fre: FRE, ctl: int, off: int) -> tuple[int, int, int]:
        reg_p, deref = ctl & 1, bool(ctl & 2)
        if not reg_p:
            if not deref:
                raise self._fail(f"FDE {fde.idx}: flex FRE at +0x{fre.start:x}: "
                                 f"invalid control word {ctl}")
            return (rules.LOC_CFA_DEREF, 0, off)
        return (rules.LOC_REG_DEREF if deref else rules.LOC_REG, ctl >> 3, off)

    def iter_rows(self) -> list[tuple[FDE, list[FRE]]]:
        """Every function with its decoded FREs, in section order."""
        return [(fde, self.get_fres(fde)) for fde in self.fdes]
