#!/usr/bin/env python3
"""Fuzz the SFrame decoder: header and FDE checks, FRE decoding, rules, the dump.

Input: the bytes of one ``.sframe`` section, mapped at SECTION_ADDR.  Seeds: the
binutils test-case sections (tests/data/sframe-testcases) and the ``.sframe`` of every
program in tests/targets (V1, V2 and V3, x86_64 and aarch64).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import common

with common.instrumented("profiler"):
    from profiler.unwind.objfile import ObjectFile
    from profiler.unwind.sframe.dump import dump_section
    from profiler.unwind.sframe.section import SFrameError, SFrameSection

TARGET = "sframe"
MAX_LEN = 16384
SECTION_ADDR = 0x401000
MAX_QUERIES = 64


def one_input(data: bytes) -> None:
    try:
        sec = SFrameSection(data, SECTION_ADDR, "fuzz.so")
    except SFrameError as exc:
        common.check_one_line(exc)
        return
    # Lookups at the edges of the first functions (decodes their FREs on demand).
    for fde in sec.fdes[:MAX_QUERIES]:
        for pc in (fde.func_start - 1, fde.func_start, fde.func_start + fde.func_size // 2,
                   fde.func_start + fde.func_size - 1, fde.func_start + fde.func_size):
            try:
                rule = sec.find_rule(pc)
            except SFrameError as exc:
                common.check_one_line(exc)
                continue
            if rule is not None and sec.find_fde(pc) is None:
                raise common.InvariantError(f"rule at 0x{pc:x} outside every function")
    # The whole table, as sframe-dump prints it.
    for compat in ("2.46", "2.40"):
        try:
            dump_section(sec, compat=compat)
        except SFrameError as exc:
            common.check_one_line(exc)


def seeds() -> Iterator[tuple[str, bytes]]:
    for p in sorted((common.DATA / "sframe-testcases").glob("*.json")):
        content = bytes(json.loads(p.read_text())["content"])
        if content:
            yield p.stem, content
    for prog in sorted(common.TARGETS.glob("*/*")):
        if prog.suffix or not prog.is_file() or prog.name == "README.md":
            continue
        if prog.name not in ("prog", "libsfpshape.so") and not prog.name.endswith(".so"):
            continue
        try:
            obj = ObjectFile.open(str(prog))
        except Exception:  # noqa: BLE001
            continue
        loc = obj.find_sframe_location()
        if loc is None:
            continue
        _addr, off, size = loc
        data = prog.read_bytes()[off:off + size]
        if len(data) <= MAX_LEN:
            yield f"{prog.parent.name}-{prog.name}", data


if __name__ == "__main__":
    common.main(sys.modules[__name__])
