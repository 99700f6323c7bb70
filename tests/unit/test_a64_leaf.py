"""The aarch64 frame-0 rule for functions without unwind data, against objdump.

`ObjectFile.a64_leaf_rule` gives CFA = SP, RA = LR for a function (its sized ELF
symbol) none of whose instructions touches SP, x29 or x30.  objdump's disassembly
is the oracle: a function gets the rule exactly when no instruction of it calls,
signs or authenticates LR, names sp, x29 or x30 as its destination, or writes back
an SP base.  Checked on every sized function of Debian's arm64 libc and libcrypto
(the wild panel's sysroot).
"""

from __future__ import annotations

import bisect
import re
import subprocess
from pathlib import Path

import pytest
from helpers.paths import arm64_sysroot

from profiler.unwind.objfile import ObjectFile

_FUNC = re.compile(r"^([0-9a-f]+) <([^>]+)>:$")
_INSN = re.compile(r"^\s*([0-9a-f]+):\s+[0-9a-f]{8}\s+(\S+)\s*(.*)$")


def touches_frame(mnem: str, ops: str) -> bool:
    """objdump's text of one instruction: does it change SP, x29 or x30?"""
    if mnem in ("bl", "blr", "blraa", "blrab", "blraaz", "blrabz", "paciasp", "pacibsp",
                "autiasp", "autibsp", "paciaz", "pacibz", "autiaz", "autibz"):
        return True
    ops = ops.split("//")[0].strip()
    if re.search(r"\[sp(, #-?\w+)?\]!|\[sp\], ", ops):
        return True                              # SP written back
    regs = [r.strip() for r in ops.split(",")]
    if mnem.startswith("st") and not mnem.startswith("stx") and not mnem.startswith("stlx"):
        return False                             # a store reads its registers
    dests = regs[:2] if mnem.startswith("ldp") or mnem.startswith("ldnp") else regs[:1]
    return any(r in ("sp", "wsp", "x29", "x30", "w29", "w30") for r in dests)


def instructions(path: Path) -> tuple[list[int], list[bool], dict[int, str]]:
    """Every instruction objdump lists (address, touches the frame), in order, and
    the names of its labels."""
    out = subprocess.run(["aarch64-linux-gnu-objdump", "-d", "-w", str(path)],
                         capture_output=True, text=True, check=True).stdout
    addrs: list[int] = []
    touch: list[bool] = []
    names: dict[int, str] = {}
    for line in out.splitlines():
        m = _FUNC.match(line)
        if m:
            names[int(m.group(1), 16)] = m.group(2)
            continue
        m = _INSN.match(line)
        if m:
            addrs.append(int(m.group(1), 16))
            touch.append(touches_frame(m.group(2), m.group(3)))
    return addrs, touch, names


def binaries() -> list[Path]:
    root = arm64_sysroot()
    libs = [root / "lib/aarch64-linux-gnu/libc.so.6",
            root / "usr/lib/aarch64-linux-gnu/libcrypto.so.3"]
    return libs


@pytest.mark.slow
@pytest.mark.parametrize("path", binaries(), ids=lambda p: p.name)
def test_leaf_rule_matches_objdump(path: Path) -> None:
    obj = ObjectFile.open(str(path))
    addrs, touch, names = instructions(path)
    leaves = framed = 0
    for start, name in names.items():
        fn = obj.function_symbol(start)
        if fn is None or fn[0] != start or "@plt" in name:
            continue        # no sized symbol starts here: no rule, nothing to compare
        lo, hi = bisect.bisect_left(addrs, start), bisect.bisect_left(addrs, start + fn[1])
        touches = any(touch[lo:hi])
        got = obj.a64_leaf_rule(start) is not None
        assert got == (not touches), f"{path.name}: {name} at 0x{start:x}: rule {got}"
        leaves += got
        framed += not got
    assert leaves >= 10 and framed >= 10, (leaves, framed)
