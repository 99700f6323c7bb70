"""profiler.unwind.cfi against binutils ground truth (readelf --debug-dump=frames[-interp]).

Real files only: the host libc / ld.so / libstdc++ / vDSO, small C programs compiled
here with gcc (x86_64) and aarch64-linux-gnu-gcc (pac-ret), and the arm64 cross libc.
The expected rule for each sampled pc is derived from readelf's interpreted table
(CFA, RA and FP columns); readelf's raw instruction dump settles what its table
cannot show: whether a "u" column is a real DW_CFA_undefined or merely a register
not mentioned yet, which expression an "exp" stands for, and the aarch64
negate_ra_state (PAC) toggles.
"""

from __future__ import annotations

import io
import os
import random
import re
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass, field

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiler.unwind.cfi import CfiError, CfiTable
from profiler.unwind.elf import ElfFile
from profiler.unwind.rules import (
    LOC_CFA_DEREF,
    LOC_REG,
    LOC_REG_DEREF,
    LOC_SAME,
    LOC_UNDEFINED,
)

HOST_LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
HOST_LD = "/lib64/ld-linux-x86-64.so.2"
HOST_LIBSTDCXX = "/lib/x86_64-linux-gnu/libstdc++.so.6"
A64_LIBC = "/usr/aarch64-linux-gnu/lib/libc.so.6"
A64_GCC = "aarch64-linux-gnu-gcc"

X86_REGS = ["rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp"] + \
    [f"r{i}" for i in range(8, 16)] + ["rip"]
A64_REGS = [f"x{i}" for i in range(31)] + ["sp"]
ARCH = {  # machine -> (register names by DWARF number, FP register)
    "EM_X86_64": (X86_REGS, 6),
    "EM_AARCH64": (A64_REGS, 29),
}
ARCH_RA = {"EM_X86_64": 16, "EM_AARCH64": 30}  # rip / x30 (the link register)

SMALL_C = r"""
#include <alloca.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sink(char *a, char *b) { __asm__ volatile("" :: "r"(a), "r"(b) : "memory"); }

__attribute__((noinline)) int leaf(int x) { return x * 3 + 1; }

__attribute__((noinline)) int recurse(int x) {
    char buf[64];
    snprintf(buf, sizeof buf, "%d", x);
    return leaf(atoi(buf)) + (x > 3 ? recurse(x - 1) : 0);
}

__attribute__((noinline)) int vla(int n) {
    char v[n];
    memset(v, n, n);
    sink(v, v);
    return v[n / 2];
}

__attribute__((noinline)) int realign(int n) {   /* DRAP on x86_64 -O2 */
    __attribute__((aligned(64))) char buf[64];
    char *p = alloca(n);
    memset(p, 1, n);
    sink(buf, p);
    return buf[0] + p[0];
}

__attribute__((noinline)) int shrinkwrap(int x) { /* remember/restore_state */
    if (x < 0)
        return 0;
    char b[128];
    snprintf(b, sizeof b, "%d", x);
    sink(b, b);
    if (b[0] == '9')
        return 9;
    return (int)strlen(b) + leaf(x);
}

__attribute__((noinline, noreturn)) void die(const char *m) { puts(m); abort(); }

int main(int argc, char **argv) {
    if (argc > 50)
        die("too many");
    printf("%d %d %d %d\n", recurse(argc + 5), vla(argc + 8), realign(argc * 16),
           shrinkwrap(argc));
    return 0;
}
"""

# Hand-written CFI for the rarely generated opcodes and augmentations (gas encodes
# them; readelf decodes them; neither knows about profiler.unwind.cfi).
ZOO_X86_64_S = r"""
    .text
    .globl    cfi_zoo
    .type    cfi_zoo, @function
cfi_zoo:
    .cfi_startproc
    pushq    %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbp, 0
    .cfi_register %rip, %rdx
    nop
    .cfi_restore %rip
    nop
    .cfi_val_offset %rbp, -16
    nop
    .cfi_same_value %rbp
    nop
    .cfi_undefined %rbp
    nop
    .cfi_escape 0x10, 0x06, 0x02, 0x76, 0x08        # expression rbp: breg6 8
    nop
    .cfi_escape 0x16, 0x06, 0x02, 0x77, 0x10        # val_expression rbp: breg7 16
    nop
    .cfi_escape 0x10, 0x06, 0x03, 0x76, 0x08, 0x06  # expression rbp: breg6 8; deref
    nop
    .cfi_restore %rbp
    .cfi_def_cfa %r10, 0
    nop
    .cfi_escape 0x0f, 0x03, 0x77, 0x08, 0x06        # def_cfa_expression breg7 8; deref
    nop
    .cfi_escape 0x0f, 0x04, 0x92, 0x07, 0x08, 0x06  # def_cfa_expression bregx 7 8; deref
    nop
    .cfi_escape 0x0f, 0x02, 0x77, 0x08              # def_cfa_expression breg7 8 (no deref)
    nop
    .cfi_def_cfa %rsp, 8
    .cfi_escape 0x12, 0x07, 0x7e                    # def_cfa_sf rsp, -2
    nop
    .cfi_escape 0x13, 0x7d                          # def_cfa_offset_sf -3
    nop
    .cfi_escape 0x2f, 0x06, 0x03                    # GNU_negative_offset_extended rbp 3
    nop
    .cfi_escape 0x2e, 0x10                          # GNU_args_size 16
    .cfi_remember_state
    .cfi_undefined %rip
    nop
    .cfi_restore_state
    nop
    .cfi_escape 0x14, 0x10, 0x01                    # val_offset rip, 1
    nop
    .cfi_escape 0x15, 0x06, 0x7f                    # val_offset_sf rbp, -1
    nop
    .cfi_def_cfa_offset 8
    .cfi_restore %rbp
    .cfi_restore %rip
    popq    %rbp
    ret
    .cfi_endproc
    .size    cfi_zoo, .-cfi_zoo

    .globl    cfi_sig
    .type    cfi_sig, @function
cfi_sig:
    .cfi_startproc
    .cfi_signal_frame
    nop
    .cfi_def_cfa_offset 16
    nop
    ret
    .cfi_endproc
    .size    cfi_sig, .-cfi_sig

    .globl    cfi_pers
    .type    cfi_pers, @function
cfi_pers:
    .cfi_startproc
    .cfi_personality 0x9b, DW.ref.__gcc_personality_v0
    .cfi_lsda 0x1b, .LLSDA1
    .cfi_signal_frame
    pushq %rbx
    .cfi_def_cfa_offset 16
    .cfi_offset %rbx, -16
    popq %rbx
    .cfi_def_cfa_offset 8
    ret
    .cfi_endproc
    .size    cfi_pers, .-cfi_pers
    .section .gcc_except_table,"a",@progbits
.LLSDA1:
    .byte 0xff, 0xff, 0x01, 0x00
    .data
    .align 8
    .type    DW.ref.__gcc_personality_v0, @object
    .size    DW.ref.__gcc_personality_v0, 8
DW.ref.__gcc_personality_v0:
    .quad    __gcc_personality_v0
    .section    .note.GNU-stack,"",@progbits
"""

ZOO_AARCH64_S = r"""
    .text
    .globl    cfi_zoo
    .type    cfi_zoo, %function
cfi_zoo:
    .cfi_startproc
    .cfi_b_key_frame
    .cfi_signal_frame
    pacibsp
    .cfi_negate_ra_state
    stp    x29, x30, [sp, -16]!
    .cfi_def_cfa_offset 16
    .cfi_offset 29, -16
    .cfi_offset 30, -8
    mov    x29, sp
    .cfi_def_cfa_register 29
    .cfi_remember_state
    ldp    x29, x30, [sp], 16
    .cfi_restore 30
    .cfi_restore 29
    .cfi_def_cfa 31, 0
    autibsp
    .cfi_negate_ra_state
    ret
    .cfi_restore_state
    .cfi_register 30, 9
    nop
    .cfi_undefined 30
    nop
    .cfi_same_value 29
    ret
    .cfi_endproc
    .size    cfi_zoo, .-cfi_zoo

    .globl    cfi_retcol
    .type    cfi_retcol, %function
cfi_retcol:
    .cfi_startproc
    .cfi_return_column 15
    mov    x15, x30
    nop
    ret    x15
    .cfi_endproc
    .size    cfi_retcol, .-cfi_retcol
"""

MAIN_C = "int main(void) { return 0; }\n"

LIBC_FDE_SAMPLE = None  # None: check every libc FDE (about 2 s per libc)


# --------------------------------------------------------------------------------
# readelf output parsing
# --------------------------------------------------------------------------------

@dataclass
class Entry:
    section: str
    offset: int
    kind: str                      # "CIE" | "FDE"
    cie: int = -1
    start: int = 0
    end: int = 0
    aug: str = ""
    ra: int = -1
    cols: list = field(default_factory=list)
    rows: list = field(default_factory=list)    # (loc, cfa, {col: value})
    instrs: list = field(default_factory=list)  # raw instruction text


_HDR_RE = re.compile(r"^([0-9a-f]+) ([0-9a-f]+) ([0-9a-f]+) (CIE|FDE)(.*)$")
_FDE_RE = re.compile(r"cie=([0-9a-f]+) pc=([0-9a-f]+)\.\.([0-9a-f]+)")
_CIE_INTERP_RE = re.compile(r'"(.*)" cf=(-?\d+) df=(-?\d+) ra=(\d+)')
_SECTION_RE = re.compile(r"^Contents of the (\S+) section")


def _readelf_bin(machine: str) -> str:
    if machine == "EM_AARCH64" and shutil.which("aarch64-linux-gnu-readelf"):
        return "aarch64-linux-gnu-readelf"
    return "readelf"


def _readelf(path, machine, what) -> str:
    # no-follow-links: do not chase .gnu_debuglink (readelf exits 1 when the
    # separate debug file is missing).
    return subprocess.run([_readelf_bin(machine), f"--debug-dump={what},no-follow-links",
                           str(path)],
                          check=True, capture_output=True, text=True).stdout


def parse_readelf(path, machine) -> dict:
    """{(section, offset): Entry} from frames-interp (rows) + frames (instructions)."""
    entries: dict = {}
    section = None
    cur = None
    for line in _readelf(path, machine, "frames-interp").splitlines():
        m = _SECTION_RE.match(line)
        if m:
            section, cur = m.group(1), None
            continue
        m = _HDR_RE.match(line)
        if m:
            off, kind, rest = int(m.group(1), 16), m.group(4), m.group(5)
            cur = Entry(section, off, kind)
            if kind == "FDE":
                fm = _FDE_RE.search(rest)
                cur.cie, cur.start, cur.end = (int(g, 16) for g in fm.groups())
            else:
                cm = _CIE_INTERP_RE.search(rest)
                cur.aug, cur.ra = cm.group(1), int(cm.group(4))
            entries[(section, off)] = cur
            continue
        if cur is None or not line.strip() or "ZERO terminator" in line:
            continue
        # A register-valued column prints as "r<N> (<name>)": keep "r<N>".
        toks = re.sub(r"\b(r\d+) \(\S+\)", r"\1", line).split()
        if toks[0] == "LOC":
            assert toks[1] == "CFA", line
            cur.cols = toks[2:]
            continue
        assert re.fullmatch(r"[0-9a-f]{8,16}", toks[0]) and len(toks) == 2 + len(cur.cols), \
            f"unexpected readelf line: {line!r}"
        cur.rows.append((int(toks[0], 16), toks[1], dict(zip(cur.cols, toks[2:]))))

    section = None
    cur = None
    for line in _readelf(path, machine, "frames").splitlines():
        m = _SECTION_RE.match(line)
        if m:
            section, cur = m.group(1), None
            continue
        m = _HDR_RE.match(line)
        if m:
            cur = entries.get((section, int(m.group(1), 16)))
            continue
        if cur is not None and line.startswith("  DW_CFA_"):
            cur.instrs.append(line.strip())
    return entries


_INSN_RE = re.compile(r"^(DW_CFA_\w+)(?::? ?(.*))$")
_TO_RE = re.compile(r"([0-9a-f]+)$")
_BREG_RE = re.compile(
    r"^DW_OP_breg(?:(\d+) \([^)]*\):|x: (\d+) \([^)]*\)) (-?\d+)(; DW_OP_deref)?$")


def parse_breg(text):
    """readelf's text of `DW_OP_breg<r> off [; DW_OP_deref]` -> (reg, off, deref)."""
    m = _BREG_RE.match(text or "")
    if not m:
        return None
    return int(m.group(1) or m.group(2)), int(m.group(3)), bool(m.group(4))


def _reg_of(arg: str) -> int:
    return int(re.match(r"r(\d+)", arg).group(1))


class RawTracker:
    """Replays readelf's raw instruction text for the facts frames-interp hides.

    Per location: aarch64 RA-signed state, whether RA/FP were explicitly made
    undefined, and the text of any expression rule (CFA, RA, FP).
    """

    def __init__(self, cie: Entry, fde: Entry, aarch64: bool):
        self.aarch64 = aarch64
        state = {"neg": False, "undef": {}, "expr": {}, "cfa_expr": None}
        for ins in cie.instrs:
            self._apply(ins, state, None)
        init = self._copy(state)
        self.locs, self.states = [fde.start], [self._copy(state)]
        stack = []
        for ins in fde.instrs:
            name, _arg = _INSN_RE.match(ins).groups()
            if name.startswith("DW_CFA_advance_loc") or name == "DW_CFA_set_loc":
                loc = int(_TO_RE.search(ins).group(1), 16)
                self.locs.append(loc)
                self.states.append(self._copy(state))
                continue
            if name == "DW_CFA_remember_state":
                stack.append(self._copy(state))
            elif name == "DW_CFA_restore_state":
                state = stack.pop()
            else:
                self._apply(ins, state, init)
            self.states[-1] = self._copy(state)

    @staticmethod
    def _copy(s):
        return {"neg": s["neg"], "undef": dict(s["undef"]), "expr": dict(s["expr"]),
                "cfa_expr": s["cfa_expr"]}

    def _apply(self, ins, state, init):
        name, arg = _INSN_RE.match(ins).groups()
        if name in ("DW_CFA_AARCH64_negate_ra_state", "DW_CFA_GNU_window_save"):
            if self.aarch64:
                state["neg"] = not state["neg"]
            return
        if name == "DW_CFA_def_cfa_expression":
            state["cfa_expr"] = re.match(r"^\((.*)\)$", arg).group(1)
            return
        if name.startswith("DW_CFA_def_cfa"):
            state["cfa_expr"] = None
            return
        if name in ("DW_CFA_nop", "DW_CFA_GNU_args_size") or not arg.startswith("r"):
            return
        reg = _reg_of(arg)
        if name.startswith("DW_CFA_restore"):
            state["undef"][reg] = init["undef"].get(reg, False)
            state["expr"][reg] = init["expr"].get(reg)
            return
        state["undef"][reg] = name == "DW_CFA_undefined"
        if name in ("DW_CFA_expression", "DW_CFA_val_expression"):
            state["expr"][reg] = re.match(r"^r\d+ \([^)]*\) \((.*)\)$", arg).group(1)
        else:
            state["expr"][reg] = None

    def at(self, pc):
        i = max(i for i, loc in enumerate(self.locs) if loc <= pc)
        return self.states[i]


_OPS = {"DW_OP_and": lambda a, b: a & b, "DW_OP_or": lambda a, b: a | b,
        "DW_OP_mul": lambda a, b: a * b, "DW_OP_shl": lambda a, b: a << b,
        "DW_OP_shr": lambda a, b: a >> b, "DW_OP_ge": lambda a, b: int(a >= b),
        "DW_OP_gt": lambda a, b: int(a > b), "DW_OP_le": lambda a, b: int(a <= b),
        "DW_OP_lt": lambda a, b: int(a < b), "DW_OP_eq": lambda a, b: int(a == b),
        "DW_OP_ne": lambda a, b: int(a != b)}


def readelf_cfa(text, pc, aarch64):
    """(reg, off, deref, add) of a CFA expression as readelf prints it, evaluated
    with the pc (rip) known, or None when it is not register + constant (optionally
    dereferenced, plus a constant).  Values: ("c", n) | ("r", reg, off) |
    ("d", reg, off, add)."""
    stack = []
    for op in (text or "").split("; "):
        name, _, arg = op.partition(" ")
        name = name.rstrip(":")
        m = re.fullmatch(r"DW_OP_breg(\d+)", name)
        if m or name == "DW_OP_bregx":      # "DW_OP_breg7 (rsp): 8", "DW_OP_bregx: 7 (rsp) 8"
            reg = int(m.group(1)) if m else int(arg.split()[0])
            off = int(arg.split()[-1])
            stack.append(("c", pc + off) if reg == 16 and not aarch64 else ("r", reg, off))
        elif re.fullmatch(r"DW_OP_lit\d+", name):
            stack.append(("c", int(name[9:])))
        elif name == "DW_OP_deref" and stack and stack[-1][0] == "r":
            stack.append(("d",) + stack.pop()[1:] + (0,))
        elif name == "DW_OP_plus_uconst" and stack and stack[-1][0] != "c":
            arg = arg.split()[-1]
            v = stack.pop()
            stack.append(v[:2] + (v[2] + int(arg),) if v[0] == "r" else v[:3] + (v[3] + int(arg),))
        elif name in _OPS and len(stack) >= 2 and stack[-1][0] == stack[-2][0] == "c":
            b, a = stack.pop(), stack.pop()
            stack.append(("c", _OPS[name](a[1], b[1])))
        elif name == "DW_OP_plus" and len(stack) >= 2 and "c" in (stack[-1][0], stack[-2][0]):
            b, a = stack.pop(), stack.pop()
            k, v = (b[1], a) if b[0] == "c" else (a[1], b)
            stack.append(v[:2] + (v[2] + k,) if v[0] == "r" else v[:3] + (v[3] + k,))
        else:
            return None
    if len(stack) != 1 or stack[0][0] == "c":
        return None
    v = stack[0]
    return (v[1], v[2], False, 0) if v[0] == "r" else (v[1], v[2], True, v[3])


def expected_rule(row, state, regnames, fp_reg, ra_reg, signal, aarch64, pc=0):
    """Expected Rule fields as a tuple (or None) from a readelf row + raw state.

    ra_reg is the CIE's return-address column.  "Unchanged" means LOC_SAME for
    the architectural RA register (rip / LR) and "in register ra_reg" for any
    other return column (`.cfi_return_column`).
    """
    arch_ra = ARCH_RA["EM_AARCH64" if aarch64 else "EM_X86_64"]
    _loc, cfa_s, cols = row
    add = 0
    if cfa_s == "exp":
        b = readelf_cfa(state["cfa_expr"], pc, aarch64)
        if not b:
            return None
        cfa, add = b[:3], b[3]
    else:
        m = re.fullmatch(r"(\w+)([+-]\d+)", cfa_s)
        name = m.group(1)
        reg = regnames.index(name) if name in regnames else _reg_of(name)
        cfa = (reg, int(m.group(2)), False)

    def loc(col, reg):
        same = (LOC_SAME, 0, 0) if reg != ra_reg or reg == arch_ra else (LOC_REG, reg, 0)
        v = cols.get(col)
        if v is None or v == "s":
            return same
        if v == "u":
            return (LOC_UNDEFINED, 0, 0) if state["undef"].get(reg) else same
        if v[0] == "c" and v[1] in "+-":
            return (LOC_CFA_DEREF, 0, int(v[1:]))
        if v[0] == "v" and v[1] in "+-":
            return None if cfa[2] else (LOC_REG, cfa[0], cfa[1] + int(v[1:]))
        if v in ("exp", "vexp"):
            b = parse_breg(state["expr"].get(reg))
            if not b or b[2]:
                return None
            return (LOC_REG_DEREF if v == "exp" else LOC_REG, b[0], b[1])
        return (LOC_REG, regnames.index(v) if v in regnames else _reg_of(v), 0)

    ra = loc("ra", ra_reg)
    fp = loc(regnames[fp_reg] if fp_reg != ra_reg else "ra", fp_reg)
    if ra is None or fp is None:
        return None
    return cfa + ra + fp + (state["neg"] if aarch64 else False, signal, add)


# --------------------------------------------------------------------------------
# comparison driver
# --------------------------------------------------------------------------------

def load(path, **kw):
    with open(path, "rb") as f:
        elf = ElfFile(f)
        machine = elf.machine
        return CfiTable.from_elf(elf, str(path), **kw), machine


def sample_pcs(fde: Entry, rows):
    locs = sorted({r[0] for r in rows if fde.start <= r[0] < fde.end} | {fde.start})
    pcs = set()
    for i, loc in enumerate(locs):
        nxt = locs[i + 1] if i + 1 < len(locs) else fde.end
        pcs.update({loc, min(loc + 1, nxt - 1), (loc + nxt) // 2, nxt - 1})
    return sorted(p for p in pcs if fde.start <= p < fde.end)


def compare_file(path, fde_sample=None, seed=0, table=None, select=None, entries=None):
    """Check every sampled pc of (a sample of) the file's FDEs; return stats."""
    if table is None:
        table, machine = load(path)
    else:
        machine = table.machine
    assert table is not None, f"{path}: no CFI found"
    regnames, fp_reg = ARCH[machine]
    aarch64 = machine == "EM_AARCH64"
    if entries is None:
        entries = parse_readelf(path, machine)
    fdes = [e for e in entries.values() if e.kind == "FDE"]
    assert fdes, f"{path}: readelf shows no FDE"
    # Every FDE readelf shows is indexed by the table (and nothing else).
    got = sorted(set(table.fde_ranges()))
    want = sorted({(e.start, e.end) for e in fdes if e.end > e.start})
    assert got == want, f"{path}: FDE ranges differ ({len(got)} vs {len(want)})"

    # Intervals covered by some FDE: a pc covered by two FDEs would be ambiguous.
    spans = sorted((e.start, e.end) for e in fdes if e.end > e.start)
    if select is not None:
        fdes = [e for e in fdes if select(e)]
    if fde_sample is not None and len(fdes) > fde_sample:
        fdes = random.Random(seed).sample(fdes, fde_sample)
    by_sec_eh_first = {".eh_frame": 0, ".debug_frame": 1}
    eh_cover = [(e.start, e.end) for e in entries.values()
                if e.kind == "FDE" and e.section == ".eh_frame"]

    stats = {"pcs": 0, "fdes": 0, "none": 0, "cfa_deref": 0, "ra_undef": 0,
             "fp_saved": 0, "fp_regderef": 0, "ra_regderef": 0, "mangled": 0,
             "unmangled": 0, "signal": 0, "ra_reg": 0, "fp_reg": 0, "augs": set(),
             "sections": set()}
    mismatches = []
    for fde in sorted(fdes, key=lambda e: (by_sec_eh_first[e.section], e.start)):
        if fde.end <= fde.start:
            continue
        if fde.section == ".debug_frame" and any(s <= fde.start < e for s, e in eh_cover):
            continue  # .eh_frame wins for this pc
        overlapping = [s for s in spans if s[0] < fde.end and fde.start < s[1]]
        if len(overlapping) > 1:
            continue
        cie = entries[(fde.section, fde.cie)]
        stats["augs"].add(cie.aug)
        stats["sections"].add(fde.section)
        rows = fde.rows or cie.rows[-1:]  # no rows printed: the CIE row applies
        tracker = RawTracker(cie, fde, aarch64)
        stats["fdes"] += 1
        for pc in sample_pcs(fde, rows):
            stats["pcs"] += 1
            cand = [r for r in rows if r[0] <= pc]
            if not cand:
                want = None  # CFA undefined (CIE without instructions, no FDE row)
            else:
                want = expected_rule(cand[-1], tracker.at(pc), regnames, fp_reg,
                                     cie.ra, "S" in cie.aug, aarch64, pc)
            rule = table.find(pc)
            got = None if rule is None else tuple(rule)
            if not table.has_pc(pc):
                mismatches.append(f"pc 0x{pc:x}: has_pc False inside FDE")
            if got != want:
                mismatches.append(f"pc 0x{pc:x} (FDE {fde.section}@0x{fde.offset:x}): "
                                  f"got {got} want {want}")
                continue
            if rule is None:
                stats["none"] += 1
                continue
            stats["cfa_deref"] += rule.cfa_deref
            stats["ra_undef"] += rule.ra_kind == LOC_UNDEFINED
            stats["fp_saved"] += rule.fp_kind == LOC_CFA_DEREF
            stats["fp_regderef"] += rule.fp_kind == LOC_REG_DEREF
            stats["ra_regderef"] += rule.ra_kind == LOC_REG_DEREF
            stats["ra_reg"] += rule.ra_kind == LOC_REG
            stats["fp_reg"] += rule.fp_kind == LOC_REG
            stats["mangled"] += rule.mangled_ra
            stats["unmangled"] += not rule.mangled_ra
            stats["signal"] += rule.signal
        # Just past the FDE: nothing, unless another FDE starts there.
        if not any(s <= fde.end < e for s, e in spans):
            if table.find(fde.end) is not None or table.has_pc(fde.end):
                mismatches.append(f"pc 0x{fde.end:x}: covered by no FDE but found")
    assert not mismatches, f"{path}: {len(mismatches)} mismatches, e.g.\n" + \
        "\n".join(mismatches[:20])
    assert stats["pcs"] > 0
    return stats


# --------------------------------------------------------------------------------
# fixtures: compiled programs
# --------------------------------------------------------------------------------

def _compile(tmp_path_factory, cc, flags, name, source=SMALL_C, asm=None):
    if shutil.which(cc) is None:
        pytest.fail(f"{cc} not installed: run scripts/setup.sh")
    d = tmp_path_factory.mktemp("cfi")
    srcs = [d / "t.c"]
    srcs[0].write_text(source)
    if asm is not None:
        srcs.append(d / "zoo.s")
        srcs[1].write_text(asm)
    out = d / name
    subprocess.run([cc, *flags.split(), "-o", str(out), *map(str, srcs)], check=True,
                   capture_output=True)
    return out


X86_VARIANTS = [
    "-O0",
    "-O2",
    "-O0 -fomit-frame-pointer",
    "-O2 -fomit-frame-pointer",
    "-O2 -fno-omit-frame-pointer",
    "-O2 -no-pie",
    "-O2 -shared -fPIC",
    "-O2 -g -fno-asynchronous-unwind-tables",  # user code only in .debug_frame
    "-O2 -g -fno-asynchronous-unwind-tables -Wl,--compress-debug-sections=zlib",
]
A64_VARIANTS = [
    "-O0 -mbranch-protection=pac-ret",
    "-O2 -mbranch-protection=pac-ret",
    "-O2 -fomit-frame-pointer -mbranch-protection=pac-ret",
    "-O2 -mbranch-protection=pac-ret+leaf",
    "-O2 -mbranch-protection=pac-ret+b-key",
    "-O2 -mbranch-protection=standard",
    "-O2 -shared -fPIC -mbranch-protection=pac-ret",
]

@pytest.mark.parametrize("flags", X86_VARIANTS)
def test_small_program_x86_64(tmp_path_factory, flags):
    exe = _compile(tmp_path_factory, "gcc", flags, "prog")
    stats = compare_file(exe)
    table, machine = load(exe)
    assert machine == "EM_X86_64"
    # Link-time addresses: the FDE of each function starts at its symbol value.
    starts = {s for s, _ in table.fde_ranges()}
    with open(exe, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        for fn in ("leaf", "recurse", "vla", "realign", "shrinkwrap", "main"):
            addr = symtab.get_symbol_by_name(fn)[0]["st_value"]
            assert addr in starts, (flags, fn)
            assert table.has_pc(addr), (flags, fn)
            assert table.find(addr) is not None, (flags, fn)
    kinds = dict(table.index_kinds)
    assert kinds[".eh_frame"] == "eh_frame_hdr"
    if "-g" in flags:
        assert ".debug_frame" in kinds and kinds[".debug_frame"] == "scan"
        assert ".debug_frame" in stats["sections"], stats
    # The outermost frame (_start, crt1) marks RA undefined in executables.
    if "-shared" not in flags:
        assert stats["ra_undef"] > 0, stats
    if "-fomit-frame-pointer" not in flags and "-g" not in flags:
        assert stats["fp_saved"] > 0, stats


def test_x86_64_expression_rules_exercised(tmp_path_factory):
    """DRAP (stack realignment) gives CFA = *(rbp-8) and rbp = *(rbp+0)."""
    exe = _compile(tmp_path_factory, "gcc", "-O2", "prog")
    stats = compare_file(exe)
    assert stats["cfa_deref"] > 0 and stats["fp_regderef"] > 0, stats


def test_hand_written_cfi_x86_64(tmp_path_factory):
    """register/restore/val_offset/same_value/undefined/(val_)expression/bregx/
    def_cfa_sf/def_cfa_offset_sf/GNU_negative_offset_extended/GNU_args_size/
    remember_state, a signal frame ("zRS") and personality+LSDA ("zPLRS")."""
    exe = _compile(tmp_path_factory, "gcc", "-O2", "zoo", source=MAIN_C, asm=ZOO_X86_64_S)
    stats = compare_file(exe)
    assert {"zRS", "zPLRS"} <= stats["augs"], stats["augs"]
    for key in ("ra_reg", "fp_reg", "fp_regderef", "cfa_deref", "signal", "none",
                "ra_undef"):
        assert stats[key] > 0, (key, stats)
    table, _ = load(exe)
    with open(exe, "rb") as f:
        addr = ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name(
            "cfi_zoo")[0]["st_value"]
    # def_cfa_sf rsp, -2 (x data alignment -8) -> rsp+16, as readelf shows it
    # (pyelftools 0.33 would scale by the code alignment factor instead).
    r = table.find(addr + 13)
    assert (r.cfa_reg, r.cfa_off, r.cfa_deref) == (7, 16, False)


def test_hand_written_cfi_aarch64(tmp_path_factory):
    """B-key + signal-frame CIE ("zRBS": pyelftools stops at the unknown B and
    loses S), negate_ra_state across remember/restore_state, RA in x9,
    RA undefined, x29 same_value, and a non-LR return column."""
    exe = _compile(tmp_path_factory, A64_GCC, "-O2", "zoo", source=MAIN_C,
                   asm=ZOO_AARCH64_S)
    stats = compare_file(exe)
    assert "zRBS" in stats["augs"], stats["augs"]
    for key in ("ra_reg", "ra_undef", "signal", "mangled", "unmangled"):
        assert stats[key] > 0, (key, stats)
    table, _ = load(exe)
    with open(exe, "rb") as f:
        addr = ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name(
            "cfi_retcol")[0]["st_value"]
    r = table.find(addr + 4)  # `.cfi_return_column 15`: the RA is in x15, not LR
    assert (r.ra_kind, r.ra_reg, r.ra_off) == (LOC_REG, 15, 0)


@pytest.mark.parametrize("flags", A64_VARIANTS)
def test_small_program_aarch64_pac(tmp_path_factory, flags):
    exe = _compile(tmp_path_factory, A64_GCC, flags, "prog")
    stats = compare_file(exe)
    table, machine = load(exe)
    assert machine == "EM_AARCH64"
    assert stats["mangled"] > 0 and stats["unmangled"] > 0, stats
    if "b-key" in flags:
        assert any("B" in a for a in stats["augs"]), stats["augs"]
    if "-shared" not in flags:
        assert stats["ra_undef"] > 0, stats


def test_aarch64_unsigned_build_has_no_mangled_rows(tmp_path_factory):
    exe = _compile(tmp_path_factory, A64_GCC, "-O2 -mbranch-protection=none", "prog")
    stats = compare_file(exe)
    assert stats["mangled"] == 0 and stats["unmangled"] > 0


@pytest.mark.slow
def test_aarch64_cross_libc():
    _need(A64_LIBC)
    stats = compare_file(A64_LIBC, fde_sample=LIBC_FDE_SAMPLE, seed=2)
    assert stats["fdes"] >= 300


# --------------------------------------------------------------------------------
# host libraries
# --------------------------------------------------------------------------------

def _need(path):
    if not os.path.exists(path):
        pytest.fail(f"{path} not present: run scripts/setup.sh")


@pytest.mark.slow
def test_host_libc_fdes():
    _need(HOST_LIBC)
    stats = compare_file(HOST_LIBC, fde_sample=LIBC_FDE_SAMPLE, seed=1)
    assert stats["fdes"] >= 300


def test_host_libc_special_frames():
    """clone's child (RA undefined) and __restore_rt (signal frame, expressions)."""
    _need(HOST_LIBC)
    table, machine = load(HOST_LIBC)
    entries = parse_readelf(HOST_LIBC, machine)
    fdes = [e for e in entries.values() if e.kind == "FDE"]
    undef = [e for e in fdes if any(i.startswith("DW_CFA_undefined: r16") for i in e.instrs)]
    sig = [e for e in fdes if "S" in entries[(e.section, e.cie)].aug]
    assert undef and sig
    picked = {id(e) for e in undef + sig}
    stats = compare_file(HOST_LIBC, table=table, select=lambda e: id(e) in picked,
                         entries=entries)
    assert stats["fdes"] == len(picked)
    assert stats["ra_undef"] > 0 and stats["signal"] > 0
    # __restore_rt is fully expressible: CFA = *(rsp+off), RA/FP = *(rsp+off).
    r = table.find(sig[0].start)
    assert r is not None and r.signal and r.cfa_deref and r.cfa_reg == 7
    assert r.ra_kind == LOC_REG_DEREF and r.ra_reg == 7
    assert r.fp_kind == LOC_REG_DEREF and r.fp_reg == 7


def test_host_ld_so_all_fdes():
    _need(HOST_LD)
    stats = compare_file(HOST_LD)
    assert stats["fdes"] > 50


def test_host_libstdcxx_sampled_fdes():
    _need(HOST_LIBSTDCXX)
    stats = compare_file(HOST_LIBSTDCXX, fde_sample=200, seed=3)
    assert any("P" in a and "L" in a for a in stats["augs"]), stats["augs"]


def test_vdso(tmp_path):
    """The running process's vDSO image (read from /proc/self/mem)."""
    start = end = None
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith("[vdso]"):
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
    if start is None:
        pytest.fail("no [vdso] mapping")
    try:
        with open("/proc/self/mem", "rb") as m:
            m.seek(start)
            image = m.read(end - start)
    except OSError as e:
        pytest.fail(f"cannot read the vDSO: {e}")
    path = tmp_path / "vdso.so"
    path.write_bytes(image)
    table, machine = load(path)
    if table is None:
        pytest.fail("vDSO has no CFI")
    compare_file(path, table=table)


def test_hdr_index_and_full_scan_agree():
    """.eh_frame_hdr binary search vs the one-time scan, on every libc FDE."""
    _need(HOST_LIBC)
    hdr, _ = load(HOST_LIBC)
    scan, _ = load(HOST_LIBC, use_eh_frame_hdr=False)
    assert dict(hdr.index_kinds)[".eh_frame"] == "eh_frame_hdr"
    assert dict(scan.index_kinds)[".eh_frame"] == "none"  # built lazily
    ranges = scan.fde_ranges()
    assert dict(scan.index_kinds)[".eh_frame"] == "scan"
    assert sorted(ranges) == sorted(hdr.fde_ranges())
    rng = random.Random(5)
    for s, e in ranges:
        for pc in (s, e - 1, rng.randrange(s, e), e):
            assert hdr.find(pc) == scan.find(pc), hex(pc)
            assert hdr.has_pc(pc) == scan.has_pc(pc), hex(pc)


def test_timing_libc(capsys):
    """Cold (open + first find) must stay well under a second; report warm cost."""
    _need(HOST_LIBC)
    with open(HOST_LIBC, "rb") as f:
        t0 = time.perf_counter()
        elf = ElfFile(f)
        table = CfiTable.from_elf(elf, HOST_LIBC)
        ranges = [(s, e) for s, e in table.fde_ranges()]
        pc0 = ranges[len(ranges) // 2][0]
        t0 = time.perf_counter()
        elf = ElfFile(f)
        table = CfiTable.from_elf(elf, HOST_LIBC)
        table.find(pc0 + 1)
        cold = time.perf_counter() - t0
    rng = random.Random(7)
    pcs = [rng.randrange(s, e) for s, e in rng.choices(ranges, k=20000)]
    t1 = time.perf_counter()
    for pc in pcs:
        table.find(pc)
    first_pass = (time.perf_counter() - t1) / len(pcs)
    t2 = time.perf_counter()
    for pc in pcs:
        table.find(pc)
    warm = (time.perf_counter() - t2) / len(pcs)
    t3 = time.perf_counter()
    scan = load(HOST_LIBC, use_eh_frame_hdr=False)[0]
    scan.find(pc0 + 1)
    scan_cold = time.perf_counter() - t3
    with capsys.disabled():
        print(f"\n[cfi timing] libc cold open+first find {cold * 1e3:.1f} ms; "
              f"no-hdr scan cold {scan_cold * 1e3:.0f} ms; random finds: first pass "
              f"{first_pass * 1e6:.1f} us/find, warm {warm * 1e6:.1f} us/find")
    assert cold < 1.0
    assert warm < 1e-3


# --------------------------------------------------------------------------------
# malformed input
# --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def victim(tmp_path_factory):
    """A small -O2 program plus the layout facts the corruption tests need."""
    exe = _compile(tmp_path_factory, "gcc", "-O2", "victim")
    data = exe.read_bytes()
    with open(exe, "rb") as f:
        elf = ELFFile(f)
        secs = {}
        for i, s in enumerate(elf.iter_sections()):
            secs[s.name] = (i, s["sh_offset"], s["sh_size"], s["sh_addr"])
        shoff, shentsize = elf["e_shoff"], elf["e_shentsize"]
    entries = parse_readelf(exe, "EM_X86_64")
    fdes = [e for e in entries.values() if e.kind == "FDE" and e.section == ".eh_frame"]
    pcs = sorted({p for e in fdes for p in (e.start, (e.start + e.end) // 2, e.end - 1)})
    return {"path": exe, "data": data, "secs": secs, "shoff": shoff,
            "shentsize": shentsize, "entries": entries, "fdes": fdes, "pcs": pcs}


def _query_all(data: bytes, pcs, name="victim", **kw):
    """Run the public API over pcs; only CfiError may escape (returned as list)."""
    errors = []
    try:
        table = CfiTable.from_elf(ElfFile(io.BytesIO(data)), name, **kw)
    except CfiError as e:
        return [e]
    if table is None:
        return errors
    for pc in pcs:
        for call in (table.find, table.has_pc):
            try:
                call(pc)
            except CfiError as e:
                errors.append(e)
    return errors


def _check_msg(e: CfiError, name="victim"):
    msg = str(e)
    assert "\n" not in msg and msg.startswith(name), msg
    # Every defect must be caught by an explicit check, not by the last-resort
    # wrapping of a stray Python/pyelftools exception.
    assert "malformed CFI near pc" not in msg and "cannot read ELF" not in msg, msg


@settings(max_examples=300, deadline=1000, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(st.data())
def test_random_corruption_never_escapes(victim, data):
    """Byte flips in .eh_frame_hdr/.eh_frame and truncated section sizes."""
    _, hdr_off, hdr_size, _ = victim["secs"][".eh_frame_hdr"]
    eh_idx, eh_off, eh_size, _ = victim["secs"][".eh_frame"]
    lo = min(hdr_off, eh_off)
    hi = max(hdr_off + hdr_size, eh_off + eh_size)
    buf = bytearray(victim["data"])
    flips = data.draw(st.lists(st.tuples(st.integers(lo, hi - 1), st.integers(1, 255)),
                               min_size=0, max_size=6))
    for off, x in flips:
        buf[off] ^= x
    if data.draw(st.booleans()):
        new_size = data.draw(st.integers(0, eh_size))
        pos = victim["shoff"] + eh_idx * victim["shentsize"] + 32  # Elf64_Shdr.sh_size
        struct.pack_into("<Q", buf, pos, new_size)
    use_hdr = data.draw(st.booleans())
    t0 = time.perf_counter()
    for e in _query_all(bytes(buf), victim["pcs"], use_eh_frame_hdr=use_hdr):
        _check_msg(e)
    assert time.perf_counter() - t0 < 1.0


def test_corrupt_cie_version_is_reported(victim):
    _, eh_off, _, _ = victim["secs"][".eh_frame"]
    cies = [e for e in victim["entries"].values()
            if e.kind == "CIE" and e.section == ".eh_frame"]
    buf = bytearray(victim["data"])
    for cie in cies:
        buf[eh_off + cie.offset + 8] = 9  # version byte after length + CIE id
    for use_hdr in (True, False):
        errors = _query_all(bytes(buf), victim["pcs"], use_eh_frame_hdr=use_hdr)
        assert errors, use_hdr
        for e in errors:
            _check_msg(e)
            assert "version 9" in str(e) and ".eh_frame" in str(e)


def test_unknown_opcode_is_reported(victim):
    """An unknown DW_CFA opcode in one FDE: CfiError for that FDE only."""
    _, eh_off, _, _ = victim["secs"][".eh_frame"]
    ents = victim["entries"]
    fde = next(e for e in victim["fdes"] if len([i for i in e.instrs if i != "DW_CFA_nop"]) > 2
               and ents[(e.section, e.cie)].aug == "zR")
    buf = bytearray(victim["data"])
    # zR/pcrel|sdata4: length, CIE pointer, start, range, aug length (0) = 17 bytes.
    buf[eh_off + fde.offset + 17] = 0x3F
    table = CfiTable.from_elf(ElfFile(io.BytesIO(bytes(buf))), "victim")
    with pytest.raises(CfiError) as ei:
        table.find(fde.start)
    _check_msg(ei.value)
    assert "opcode 0x3f" in str(ei.value)
    with pytest.raises(CfiError):  # memoized failure, same answer
        table.find(fde.start)
    others = [e for e in victim["fdes"] if e is not fde and e.end > e.start]
    assert all(table.find(e.start) is not None for e in others
               if ents[(e.section, e.cie)].rows or e.rows)


def test_oversized_length_is_reported(victim):
    _, eh_off, _, _ = victim["secs"][".eh_frame"]
    fde = victim["fdes"][-1]
    buf = bytearray(victim["data"])
    struct.pack_into("<I", buf, eh_off + fde.offset, 0x7FFFFFF0)
    scan = CfiTable.from_elf(ElfFile(io.BytesIO(bytes(buf))), "victim",
                             use_eh_frame_hdr=False)
    with pytest.raises(CfiError) as ei:
        scan.find(fde.start)
    _check_msg(ei.value)
    assert "past section end" in str(ei.value)
    hdr = CfiTable.from_elf(ElfFile(io.BytesIO(bytes(buf))), "victim")
    with pytest.raises(CfiError):
        hdr.find(fde.start)


def test_no_cfi_returns_none(tmp_path_factory):
    exe = _compile(tmp_path_factory, "gcc",
                   "-O2 -nostdlib -static -fno-asynchronous-unwind-tables "
                   "-fno-unwind-tables -Wl,-e,leaf", "nocfi",
                   source="int leaf(int x) { return x + 1; }\n")
    table, _ = load(exe)
    assert table is None


def test_unsupported_machine_is_an_error(victim):
    buf = bytearray(victim["data"])
    struct.pack_into("<H", buf, 18, 0x28)  # e_machine = EM_ARM
    with pytest.raises(CfiError) as ei:
        CfiTable.from_elf(ElfFile(io.BytesIO(bytes(buf))), "victim")
    _check_msg(ei.value)
