"""Finding .sframe in an ELF file: by name, by section type, by PT_GNU_SFRAME."""

from __future__ import annotations

import struct
from pathlib import Path

from helpers.paths import TARGETS

from profiler.unwind.objfile import ObjectFile
from profiler.unwind.sframe.dump import dump_section

V3 = TARGETS / "v3sid-x86_64-O2" / "prog"     # binutils 2.47: SHT_GNU_SFRAME
V1 = TARGETS / "v1host-aarch64-O2" / "prog"   # binutils 2.40: SHT_PROGBITS


def _reference(path: Path) -> str:
    obj = ObjectFile.open(str(path))
    assert obj.sframe is not None
    return dump_section(obj.sframe)


def test_found_by_type_when_renamed(tmp_path: Path) -> None:
    blob = V3.read_bytes()
    assert blob.count(b".sframe\x00") == 1
    renamed = tmp_path / "renamed"
    renamed.write_bytes(blob.replace(b".sframe\x00", b".sfrXme\x00"))
    obj = ObjectFile.open(str(renamed))
    assert obj.sframe is not None
    assert dump_section(obj.sframe) == _reference(V3)


def _strip_section_headers(blob: bytes) -> bytes:
    b = bytearray(blob)
    # Elf64_Ehdr: e_shoff at 0x28 (8 bytes), e_shnum at 0x3c, e_shstrndx at 0x3e.
    struct.pack_into("<Q", b, 0x28, 0)
    struct.pack_into("<HH", b, 0x3C, 0, 0)
    return bytes(b)


def test_found_by_program_header_without_sections(tmp_path: Path) -> None:
    for src in (V3, V1):
        bare = tmp_path / (src.parent.name + "-bare")
        bare.write_bytes(_strip_section_headers(src.read_bytes()))
        obj = ObjectFile.open(str(bare))
        assert obj.sframe is not None, src
        assert dump_section(obj.sframe) == _reference(src)


def test_no_sframe(tmp_path: Path) -> None:
    blob = V1.read_bytes()
    # Rename the section and turn PT_GNU_SFRAME into PT_NULL: nothing left to find.
    b = bytearray(blob.replace(b".sframe\x00", b".sfrXme\x00"))
    phoff, = struct.unpack_from("<Q", b, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", b, 0x36)
    for i in range(phnum):
        if struct.unpack_from("<I", b, phoff + i * phentsize)[0] == 0x6474E554:
            struct.pack_into("<I", b, phoff + i * phentsize, 0)
    path = tmp_path / "none"
    path.write_bytes(bytes(b))
    obj = ObjectFile.open(str(path))
    assert obj.sframe is None and obj.sframe_error is None
