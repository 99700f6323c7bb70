"""objdump's reading of x86_64 code: the oracle for the length decoder
(profiler.unwind.insn) and for what counts as an instruction start."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

_LINE = re.compile(r"^ *([0-9a-f]+):\t((?:[0-9a-f]{2} )+)[ \t]*([^ \t\n]*)[ \t]*(.*)$", re.M)
_TARGET = re.compile(r"^([0-9a-f]+) <")


@cache
def listing(path: Path) -> tuple[list[int], dict[int, tuple[str, int | None]]]:
    """objdump's instruction starts, and for each call or jump: (mnemonic, target).
    Read once per file and session; callers must not change what it returns."""
    out = subprocess.run(["objdump", "-d", "-w", str(path)], capture_output=True,
                         text=True, check=True).stdout
    starts = []
    branches: dict[int, tuple[str, int | None]] = {}
    for m in _LINE.finditer(out):
        addr = int(m.group(1), 16)
        starts.append(addr)
        mnem, ops = m.group(3), m.group(4)
        if mnem.startswith(("call", "j")) or mnem in ("bnd", "notrack"):
            if mnem in ("bnd", "notrack"):
                mnem, _, ops = ops.partition(" ")
            t = _TARGET.match(ops.strip())
            branches[addr] = (mnem, int(t.group(1), 16) if t else None)
    return sorted(set(starts)), branches
