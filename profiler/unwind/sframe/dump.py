"""Text dump of a .sframe section in the layout of `objdump --sframe`.

The output starts at the line "Contents of the SFrame section .sframe:", so it can
be compared line by line with what binutils prints for the same file, with no
option: by default the layout is that of the binutils that reads the section's
version, 2.40 for SFrame V1 (2.46 and later refuse V1) and 2.41 and later (the same
layout as 2.46) for V2 and V3.
"""

from __future__ import annotations

from profiler.unwind.sframe import constants as C
from profiler.unwind.sframe.section import FDE, FRE, SFrameSection

_FLAG_NAMES = (
    (C.SFRAME_F_FDE_SORTED, "SFRAME_F_FDE_SORTED"),
    (C.SFRAME_F_FRAME_POINTER, "SFRAME_F_FRAME_POINTER"),
    (C.SFRAME_F_FDE_FUNC_START_PCREL, "SFRAME_F_FDE_FUNC_START_PCREL"),
)


def _reg_name(sec: SFrameSection, regnum: int) -> str:
    if sec.abi_arch == C.SFRAME_ABI_AMD64_ENDIAN_LITTLE:
        names = {7: "sp", 6: "fp"}
    elif sec.abi_arch in (C.SFRAME_ABI_AARCH64_ENDIAN_LITTLE, C.SFRAME_ABI_AARCH64_ENDIAN_BIG):
        names = {31: "sp", 29: "fp"}
    else:
        names = {15: "sp", 11: "fp"}
    return names.get(regnum, f"r{regnum}")


COMPAT = ("2.46", "2.40")


def default_compat(sec: SFrameSection) -> str:
    """The layout of the binutils release that reads `sec`'s version."""
    return "2.40" if sec.version == C.SFRAME_VERSION_1 else "2.46"


def dump_header(sec: SFrameSection, compat: str | None = None) -> list[str]:
    compat = compat or default_compat(sec)
    names = [name for bit, name in _FLAG_NAMES if sec.flags & bit]
    lines = ["  Header :", "", f"    Version: SFRAME_VERSION_{sec.version}"]
    if not names:
        lines.append("    Flags: NONE")
    else:
        lines.append("    Flags: " + (",\n           ".join(names)))
    if sec.cfa_fixed_fp_offset:
        lines.append(f"    CFA fixed FP offset: {sec.cfa_fixed_fp_offset}")
    if sec.cfa_fixed_ra_offset and compat != "2.40":
        lines.append(f"    CFA fixed RA offset: {sec.cfa_fixed_ra_offset}")
    lines.append(f"    Num FDEs: {sec.num_fdes}")
    lines.append(f"    Num FREs: {sec.num_fres}")
    return lines


def _flex_loc_text(sec: SFrameSection, ctl: int, off: int) -> str:
    if not ctl & 1:
        return f"c{off:+d}"
    text = f"{_reg_name(sec, ctl >> 3)}{off:+d}"
    return f"({text})" if ctl & 2 else text


def _fre_columns(sec: SFrameSection, fde: FDE, fre: FRE,
                 compat: str) -> tuple[str, str, str]:
    w = fre.words
    n = len(w)
    fixed_ra = sec.cfa_fixed_ra_offset != 0
    if sec.version == C.SFRAME_VERSION_3 and fde.fde_type == C.SFRAME_FDE_TYPE_FLEX:
        mask = (1 << (8 * fre.word_size)) - 1
        cfa = _flex_loc_text(sec, w[0] & mask, w[1]) if n >= 2 else "?"
        rest = n - 2
        if rest in (1, 3):
            ra, pos = "U", 3
        elif rest in (2, 4):
            ra, pos = _flex_loc_text(sec, w[2] & mask, w[3]), 4
        else:
            ra, pos = ("f" if fixed_ra else "u"), n
        fp = _flex_loc_text(sec, w[pos] & mask, w[pos + 1]) if n - pos == 2 else "u"
        return cfa, fp, ra
    base = "sp" if fre.base_reg == C.SFRAME_BASE_REG_SP else "fp"
    cfa = f"{base}+{w[0]}" if w[0] >= 0 else f"{base}{w[0]}"
    fp_idx = 1 if fixed_ra else 2
    fp = f"c{w[fp_idx]:+d}" if n > fp_idx else "u"
    if fixed_ra:
        ra = "u" if compat == "2.40" else "f"
    elif n >= 2:
        ra = f"c{w[1]:+d}"
    else:
        ra = "u"
    return cfa, fp, ra


def dump_function(sec: SFrameSection, fde: FDE, compat: str | None = None) -> list[str]:
    compat = compat or default_compat(sec)
    line = f"    func idx [{fde.idx}]: pc = 0x{fde.func_start:x}, size = {fde.func_size} bytes"
    attr = ""
    if sec.version == C.SFRAME_VERSION_3:
        if fde.signal:
            attr += "S"
        if fde.fde_type == C.SFRAME_FDE_TYPE_FLEX:
            attr += "F"
    if attr:
        line += f', attr = "{attr}"'
    if (sec.abi_arch in (C.SFRAME_ABI_AARCH64_ENDIAN_LITTLE, C.SFRAME_ABI_AARCH64_ENDIAN_BIG)
            and fde.pauth_key == C.SFRAME_AARCH64_PAUTH_KEY_B):
        line += ", pauth = B key"
    mask = fde.pc_type == C.SFRAME_PC_TYPE_MASK
    lines = [line, "    {:<7s}{:<8s} {:<10s}{:<10s}{:<13s}".format(
        "STARTPC", "[m]" if mask else "   ", "CFA", "FP", "RA")]
    for fre in sec.get_fres(fde):
        addr = fre.start if mask else fde.func_start + fre.start
        if not fre.words:
            lines.append(f"    {addr:016x}  RA undefined")
            continue
        cfa, fp, ra = _fre_columns(sec, fde, fre, compat)
        ra += "[s]" if fre.mangled_ra else "   "
        lines.append(f"    {addr:016x}  {cfa:<10s}{fp:<10s}{ra:<13s}")
    return lines


def dump_section(sec: SFrameSection, section_name: str = ".sframe",
                 compat: str | None = None) -> str:
    """The whole dump, from "Contents of the SFrame section" on, newline terminated.

    `compat="2.40"` reproduces the binutils 2.40 dumper, which left out the "CFA
    fixed RA offset" header line and printed a fixed (x86_64) RA as "u", not "f";
    `compat="2.46"` is the layout of 2.41 and later.  None (the default) picks the
    layout of the release that reads the section: 2.40 for V1, 2.46 otherwise.
    """
    compat = compat or default_compat(sec)
    lines = [f"Contents of the SFrame section {section_name}:"]
    lines += dump_header(sec, compat)
    lines += ["", "  Function Index :", ""]
    for i, fde in enumerate(sec.fdes):
        if i:
            lines.append("")
        lines += dump_function(sec, fde, compat)
    return "\n".join(lines) + "\n"
