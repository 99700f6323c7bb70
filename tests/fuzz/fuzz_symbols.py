#!/usr/bin/env python3
"""Fuzz the symbol readers (profiler.symbolize.symbols and .debugfiles): .symtab/.dynsym,
build-ID notes, .gnu_debuglink, MiniDebugInfo (.gnu_debugdata, an xz-compressed ELF) and
the demangler behind every lookup.

Input: one ELF file, read as if mapped from /fuzz/fuzz.so under an empty root (so no
separate debug file is ever found; the MiniDebugInfo path runs instead).  Seeds: the
tiny test ELFs with symbols, stripped copies carrying MiniDebugInfo, and two real
programs of tests/targets.
"""

from __future__ import annotations

import lzma
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import common

with common.instrumented("profiler"):
    from profiler.symbolize.debugfiles import read_build_id
    from profiler.symbolize.symbols import ElfSymbols
    from profiler.unwind.objfile import ObjectError, ObjectFile

TARGET = "symbols"
MAX_LEN = 16384
MAX_QUERIES = 64
_ROOT = tempfile.mkdtemp(prefix="fuzz-symbols-root-")


def one_input(data: bytes) -> None:
    try:
        obj = ObjectFile.from_bytes(data, "/fuzz/fuzz.so")
    except ObjectError as exc:
        common.check_one_line(exc)
        return
    read_build_id(obj)
    es = ElfSymbols.load(obj, debug_dirs=("/usr/lib/debug",), root=_ROOT)
    for err in es.errors:
        common.check_one_line(Exception(err))
    syms = es.symbols()
    for start, size, _name in syms[:MAX_QUERIES]:
        for addr in (start, start + max(size, 1) - 1):
            hit = es.lookup(addr)
            if hit is not None and (not isinstance(hit[0], str) or hit[1] < 0):
                raise common.InvariantError(f"lookup(0x{addr:x}) = {hit!r}")
            es.lookup_raw(addr)


def _run(*cmd: str) -> bool:
    try:
        subprocess.run(cmd, check=True, capture_output=True)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


def with_minidebuginfo(name: str, data: bytes, arch: str) -> bytes | None:
    """Fedora's recipe: strip the file, keep its function symbols in an xz'd ELF in
    .gnu_debugdata."""
    prefix = "aarch64-linux-gnu-" if arch == "aarch64" else ""
    with tempfile.TemporaryDirectory() as tmp:
        exe, mini = Path(tmp) / name, Path(tmp) / "mini"
        exe.write_bytes(data)
        if not (_run(f"{prefix}objcopy", "--only-keep-debug", str(exe), str(mini))
                and _run(f"{prefix}objcopy", "-S", "--keep-symbol=mid", "--keep-symbol=leaf",
                         "--keep-symbol=_ZN3foo3barEv", str(mini))
                and _run(f"{prefix}strip", "--strip-all", "-R", ".comment", str(exe))):
            return None
        xz = Path(tmp) / "mini.xz"
        xz.write_bytes(lzma.compress(mini.read_bytes(), format=lzma.FORMAT_XZ))
        if not _run(f"{prefix}objcopy", f"--add-section=.gnu_debugdata={xz}", str(exe)):
            return None
        return exe.read_bytes()


def seeds() -> Iterator[tuple[str, bytes]]:
    elf = common.load_harness("elf")
    for name, data in elf.tiny_elves():
        yield name, data
        arch = "aarch64" if "aarch64" in name else "x86_64"
        mini = with_minidebuginfo(name, data, arch)
        if mini is not None:
            yield f"{name}-minidebuginfo", mini
    for rel in ("v3sid-x86_64-O2-shlib/libsfpshape.so", "v1host-x86_64-O2/prog"):
        p = common.TARGETS / rel
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out"
            if _run("strip", "--strip-debug", "-R", ".comment", "-o", str(out), str(p)):
                data = out.read_bytes()
                if len(data) <= MAX_LEN:
                    yield rel.replace("/", "-"), data


if __name__ == "__main__":
    common.main(sys.modules[__name__])
