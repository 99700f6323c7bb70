#!/usr/bin/env python3
"""Fuzz the ELF container reader (profiler.unwind.elf) and what it feeds: its section and
segment contents, symbol and relocation tables, notes, build ID and .gnu_debuglink; in
profiler.unwind.objfile, segments and load bias, code reads, the .sframe section found by name,
type or program header, the .eh_frame/.debug_frame table built from the ELF, and rule
lookups.

Input: one ELF file.  Seeds: the small programs and shared libraries of tests/targets
(x86_64 and aarch64, SFrame V1-V3), plus a few cut and header-damaged copies.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import common

with common.instrumented("profiler"):
    from profiler.unwind import elf as E
    from profiler.unwind.objfile import ObjectError, ObjectFile

TARGET = "elf"
MAX_LEN = 16384
MAX_QUERIES = 24
MAX_ENTRIES = 256   # symbols and relocations read per table


def reader(elf: E.ElfFile) -> None:
    """ElfFile's queries on the first sections and segments: only ElfError may come out."""
    for sec in elf.sections[:MAX_QUERIES]:
        try:
            elf.section_data(sec, 4096)
            if sec.sh_type in (E.SHT_SYMTAB, E.SHT_DYNSYM):
                elf.read_symbols(sec, MAX_ENTRIES)
                elf.linked_section(sec)
            elif sec.sh_type in (E.SHT_REL, E.SHT_RELA):
                elf.relocation_infos(sec, MAX_ENTRIES)
            elif sec.sh_type == E.SHT_NOTE:
                list(elf.iter_notes(elf.section_data(sec), 4))
        except E.ElfError as exc:
            common.check_one_line(exc)
    for seg in elf.segments[:MAX_QUERIES]:
        try:
            elf.segment_data(seg)
        except E.ElfError as exc:
            common.check_one_line(exc)
    bid = elf.build_id()
    if len(bid) % 2 or bid != bid.lower():
        raise common.InvariantError(f"build ID {bid!r}")
    try:
        elf.debuglink()
    except E.ElfError as exc:
        common.check_one_line(exc)


def one_input(data: bytes) -> None:
    try:
        obj = ObjectFile.from_bytes(data, "fuzz.so")
    except ObjectError as exc:
        common.check_one_line(exc)
        return
    reader(obj.elf)
    for vaddr, offset, filesz, _memsz, _flags in obj.loads[:8]:
        obj.load_bias(vaddr + 0x1000, offset)
        obj.read_code(vaddr, min(filesz, 16))
    sf = obj.sframe
    if sf is None and obj.sframe_error is not None:
        common.check_one_line(Exception(obj.sframe_error))
    cfi = obj.cfi
    if cfi is None and obj.cfi_error is not None:
        common.check_one_line(Exception(obj.cfi_error))
    pcs: list[int] = []
    if sf is not None:
        pcs += [f.func_start + f.func_size // 2 for f in sf.fdes[:MAX_QUERIES]]
    pcs += [vaddr + 4 for vaddr, *_ in obj.loads[:4]]
    for pc in pcs[:MAX_QUERIES]:
        rule, method = obj.lookup_rule(pc)
        if method not in ("sframe", "eh_frame", "", "bad-sframe", "bad-cfi", "tables-disagree"):
            raise common.InvariantError(f"lookup_rule method {method!r}")
        if (rule is None) != (method in ("", "bad-sframe", "bad-cfi", "tables-disagree")):
            raise common.InvariantError(f"lookup_rule gave {rule} with method {method!r}")
        obj.is_sigreturn(pc)
        obj.a64_plt_rule(pc)
        # What the call-edge check reads: function ranges, decoded code, relocations.
        rng = obj.function_range(pc)
        if rng is not None:
            obj.jump_targets(*rng)
        obj.x86_function(pc)
        obj.slot_symbol(pc)
        obj.exports("main")
        obj.in_stubs(pc)


def stripped(path: Path) -> bytes:
    """`path` without symbols and debug sections (fewer sections: faster inputs), or
    as it is when binutils cannot strip it here."""
    tool = "aarch64-linux-gnu-strip" if "aarch64" in path.parent.name else "strip"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        try:
            subprocess.run([tool, "--strip-all", "-R", ".comment", "-o", str(out), str(path)],
                           check=True, capture_output=True)
            return out.read_bytes()
        except (OSError, subprocess.CalledProcessError):
            return path.read_bytes()


# Real fixtures used as seeds (stripped); the rest of tests/targets adds little but
# slows every input down (more section headers to walk).
FIXTURES = ("v1host-x86_64-O2/prog", "v3sid-x86_64-O2/prog", "v2trixie-aarch64-O2/prog",
            "v3sid-aarch64-O2-pacret/prog", "v3sid-x86_64-O2-shlib/libsfpshape.so",
            "v1host-aarch64-O2-shlib/libsfpshape.so")


def tiny_elves() -> list[tuple[str, bytes]]:
    """tests/fuzz/src/tiny.c built as small executables and shared libraries."""
    src = common.HERE / "src" / "tiny.c"
    out = []
    flags = ["-O2", "-nostdlib", "-Wa,--gsframe", "-Wl,--build-id", "-Wl,--eh-frame-hdr",
             "-fasynchronous-unwind-tables"]
    kinds = {"exe": ["-static", "-Wl,-N", "-Wl,--no-warn-rwx-segments"],
             "so": ["-shared", "-fPIC", "-Wl,-z,max-page-size=0x1000",
                    "-Wl,-z,separate-code", "-Wl,-z,noseparate-code"]}
    with tempfile.TemporaryDirectory() as tmp:
        for cc, arch in (("gcc", "x86_64"), ("aarch64-linux-gnu-gcc", "aarch64")):
            for kind, extra in kinds.items():
                exe = Path(tmp) / f"tiny-{arch}-{kind}"
                try:
                    subprocess.run([cc, *flags, *extra, "-o", str(exe), str(src)],
                                   check=True, capture_output=True)
                except (OSError, subprocess.CalledProcessError):
                    continue
                out.append((exe.name, exe.read_bytes()))
    return out


def _programs() -> list[tuple[str, bytes]]:
    out = tiny_elves()
    for rel in FIXTURES:
        p = common.TARGETS / rel
        if p.is_file():
            data = stripped(p)
            if len(data) <= MAX_LEN:
                out.append((rel.replace("/", "-"), data))
    return out


def seeds() -> Iterator[tuple[str, bytes]]:
    progs = _programs()
    for name, data in progs:
        yield name, data
    # A few damaged copies of one program of each arch.
    for name, data in progs:
        if name not in ("tiny-x86_64-exe", "tiny-aarch64-so"):
            continue
        yield f"{name}-cut-half", data[:len(data) // 2]
        yield f"{name}-cut-4k", data[:4096]
        d = bytearray(data)
        d[0x28:0x30] = (len(data) - 64).to_bytes(8, "little")  # e_shoff near the end
        yield f"{name}-bad-shoff", bytes(d)
        d = bytearray(data)
        d[0x3C:0x3E] = (0xFFFF).to_bytes(2, "little")  # e_shnum
        yield f"{name}-bad-shnum", bytes(d)


if __name__ == "__main__":
    common.main(sys.modules[__name__])
