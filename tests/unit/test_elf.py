"""profiler.unwind.elf against pyelftools (the reference), and on malformed files.

Every field the reader decodes is compared with what pyelftools decodes from the same
file: the ELF header, every program and section header, section and segment bytes
(compressed sections decompressed), symbol tables (all entries of small tables, an
even sample of large ones), dynamic relocations, the build ID and .gnu_debuglink.
The files: every binary under tests/targets (x86_64 and aarch64) and the glibc of
tests/snapshots/root, the host's libc, ld.so, libstdc++ and python3.11, separate
debug files from /usr/lib/debug (compressed sections), and small programs built here
for the classes and byte orders the fixtures lack: ELF32 i386 and x32, ELF64 big-endian and ELF32
big-endian (aarch64 ILP32) executables, shared libraries, relocatable objects, a
split debug file and its .gnu_debuglink.

Malformed files (truncated at every length of a small program, header tables past the
end, bad counts, entry sizes and indices, damaged sections, random header bytes) must
raise ElfError and nothing else.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elftools.elf import enums
from elftools.elf.elffile import ELFFile
from helpers.paths import TESTS

from profiler.unwind import elf as E
from profiler.unwind.elf import ElfError, ElfFile
from profiler.unwind.objfile import ObjectError, ObjectFile

TARGET_FILES = sorted(p for p in (TESTS / "targets").glob("*/*")
                      if p.is_file() and p.read_bytes()[:4] == b"\x7fELF")
SNAPSHOT_FILES = sorted(p for p in (TESTS / "snapshots" / "root" / "usr").rglob("*")
                        if p.is_file() and p.read_bytes()[:4] == b"\x7fELF")
HOST_FILES = ["/usr/lib/x86_64-linux-gnu/libc.so.6",
              "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
              "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/bin/python3.11"]
SAMPLE = 600            # symbols or relocations compared per large table
TINY = TESTS / "fuzz" / "corpus" / "elf" / "seed-tiny-x86_64-exe"


def _debug_files() -> list[str]:
    """Up to three separate debug files: the largest (libc's, here), a middle-sized
    and a small one."""
    files = sorted(Path("/usr/lib/debug/.build-id").glob("*/*.debug"),
                   key=lambda p: p.stat().st_size)
    if not files:
        return []
    return [str(p) for p in dict.fromkeys([files[-1], files[len(files) // 2], files[0]])]


# -- pyelftools as the reference ----------------------------------------------------

def _enum_values(prefix: str, name: object) -> set[int]:
    """The numbers pyelftools' name `name` stands for in its ENUM_<prefix>* tables
    (an int stays itself)."""
    if isinstance(name, int):
        return {name}
    out = {table[name] for attr in dir(enums) if attr.startswith("ENUM_" + prefix)
           for table in [getattr(enums, attr)] if name in table}
    assert out, (prefix, name)
    return out


def _same(prefix: str, theirs: object, ours: int) -> bool:
    return ours in _enum_values(prefix, theirs)


def _sample(n: int) -> range | list[int]:
    if n <= SAMPLE:
        return range(n)
    return sorted({*range(0, n, n // SAMPLE), n - 1})


def _ref_build_id(ref: ELFFile) -> str:
    for sec in ref.iter_sections():
        if sec["sh_type"] == "SHT_NOTE":
            for note in sec.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID" and note["n_name"] == "GNU":
                    return str(note["n_desc"])
    for seg in ref.iter_segments():
        if seg["p_type"] == "PT_NOTE" and seg["p_offset"] + seg["p_filesz"] <= ref.stream_len:
            for note in seg.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID" and note["n_name"] == "GNU":
                    return str(note["n_desc"])
    return ""


def _ref_debuglink(ref: ELFFile) -> tuple[str, int] | None:
    """.gnu_debuglink: the name up to its NUL, the CRC in the section's last 4 bytes."""
    sec = ref.get_section_by_name(".gnu_debuglink")
    if sec is None:
        return None
    data = sec.data()
    crc = struct.unpack("<I" if ref.little_endian else ">I", data[-4:])[0]
    return data[:data.index(b"\0")].decode(), crc


def compare_with_pyelftools(path: str) -> dict[str, int]:
    """Assert that ElfFile reads `path` as pyelftools does; returns what was compared."""
    counts = {"sections": 0, "segments": 0, "symbols": 0, "relocations": 0, "bytes": 0}
    with open(path, "rb") as f1, open(path, "rb") as f2:
        ours, ref = ElfFile(f1), ELFFile(f2)
        size = ref.stream_len
        assert (ours.elfclass, ours.little_endian) == (ref.elfclass, ref.little_endian)
        h = ref.header
        assert _same("E_TYPE", h["e_type"], ours.e_type)
        assert _same("E_MACHINE", h["e_machine"], ours.e_machine)
        if isinstance(h["e_machine"], str) and ours.e_machine in E.MACHINE_NAMES:
            assert ours.machine == h["e_machine"]
        for field in ("e_entry", "e_phoff", "e_shoff", "e_flags", "e_ehsize", "e_phentsize",
                      "e_phnum", "e_shentsize", "e_shnum", "e_shstrndx"):
            assert getattr(ours, field) == h[field], field
        assert (len(ours.sections), len(ours.segments)) == (ref.num_sections(),
                                                            ref.num_segments())
        if ours.sections:
            assert ours.shstrndx == ref.get_shstrndx()

        for seg, rseg in zip(ours.segments, ref.iter_segments(), strict=True):
            assert _same("P_TYPE", rseg["p_type"], seg.p_type)
            for field in E.Segment._fields[1:]:
                assert getattr(seg, field) == rseg[field], field
            if seg.p_offset + seg.p_filesz <= size:
                data = ours.segment_data(seg)
                assert data == rseg.data()
                counts["bytes"] += len(data)
            else:   # a debug file's segments describe bytes it does not hold
                with pytest.raises(ElfError, match="runs past the end"):
                    ours.segment_data(seg)
            counts["segments"] += 1

        names = [sec.name for sec in ours.sections]
        for sec, rsec in zip(ours.sections, ref.iter_sections(), strict=True):
            assert sec.name == rsec.name
            assert _same("SH_TYPE", rsec["sh_type"], sec.sh_type), (sec.name, rsec["sh_type"])
            for field in ("sh_name", "sh_addr", "sh_offset", "sh_size", "sh_flags", "sh_link",
                          "sh_info", "sh_addralign", "sh_entsize"):
                assert getattr(sec, field) == rsec[field], (sec.name, field)
            if names.count(sec.name) == 1:
                assert ours.find_section(sec.name) == sec
            if sec.sh_type == E.SHT_NOBITS:
                assert ours.section_data(sec) == b""
            elif sec.sh_offset + sec.sh_size <= size:
                data = ours.section_data(sec)
                assert data == rsec.data(), sec.name
                assert ours.section_data(sec, 100) == data[:100]
                counts["bytes"] += len(data)
            counts["sections"] += 1
            if sec.sh_type in (E.SHT_SYMTAB, E.SHT_DYNSYM):
                counts["symbols"] += _compare_symbols(ours, sec, rsec)
            elif sec.sh_type in (E.SHT_REL, E.SHT_RELA):
                counts["relocations"] += _compare_relocations(ours, sec, rsec)

        assert ours.build_id() == _ref_build_id(ref)
        assert ours.debuglink() == _ref_debuglink(ref)
    return counts



def _compare_symbols(ours: ElfFile, sec: E.Section, rsec: Any) -> int:
    rows = ours.read_symbols(sec, 1 << 30)
    assert len(rows) == rsec.num_symbols()
    strtab = ours.section_data(ours.linked_section(sec))
    for k in _sample(len(rows)):
        st_name, st_value, st_size, st_info, st_other, st_shndx = rows[k]
        sym = rsec.get_symbol(k)
        assert E.c_string(strtab, st_name) == sym.name
        assert (st_name, st_value, st_size) == (sym["st_name"], sym["st_value"], sym["st_size"])
        assert _same("ST_INFO_BIND", sym["st_info"]["bind"], st_info >> 4)
        assert _same("ST_INFO_TYPE", sym["st_info"]["type"], st_info & 0xF)
        assert _same("ST_VISIBILITY", sym["st_other"]["visibility"], st_other & 3)
        assert _same("ST_SHNDX", sym["st_shndx"], st_shndx)
    assert ours.read_symbols(sec, 3) == rows[:3]
    return len(rows)


def _compare_relocations(ours: ElfFile, sec: E.Section, rsec: Any) -> int:
    infos = ours.relocation_infos(sec, 1 << 30)
    count = rsec.num_relocations()
    assert len(infos) == count      # (no offset is relocated twice in these files)
    for k in _sample(count):
        rel = rsec.get_relocation(k)
        info = infos[rel["r_offset"]]
        assert (info >> ours.r_sym_shift, info & ours.r_type_mask) == \
            (rel["r_info_sym"], rel["r_info_type"])
    return count


# -- files built here: the classes and byte orders the fixtures lack -------------------

_SOURCE = """
int counter = 3;
static int helper(int x) { return x * 2 + counter; }
int api(int x) { return helper(x) + 1; }
int other(int x) { return api(x) - counter; }
void _start(void) { for (;;) counter = other(counter); }
"""

# name -> (compiler and flags, kind); kind "exe", "so" or "o"
_BUILDS = {
    "i386-exe": (["gcc", "-m32"], "exe"),
    "i386-so": (["gcc", "-m32"], "so"),
    "i386-o": (["gcc", "-m32"], "o"),
    "x32-exe": (["gcc", "-mx32"], "exe"),
    "x86_64-o": (["gcc"], "o"),
    "aarch64be-exe": (["aarch64-linux-gnu-gcc", "-mbig-endian"], "exe"),
    "aarch64be-so": (["aarch64-linux-gnu-gcc", "-mbig-endian"], "so"),
    "aarch64ilp32be-exe": (["aarch64-linux-gnu-gcc", "-mbig-endian", "-mabi=ilp32"], "exe"),
    "aarch64ilp32be-so": (["aarch64-linux-gnu-gcc", "-mbig-endian", "-mabi=ilp32"], "so"),
}
_KIND_FLAGS = {"exe": ["-static", "-Wl,--build-id", "-Wl,--compress-debug-sections=zlib"],
               "so": ["-shared", "-fPIC", "-Wl,--build-id"], "o": ["-c"]}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The programs of _BUILDS that the toolchains here can build, plus a split debug
    file ("i386-exe.debug") and the stripped program linking to it ("i386-stripped")."""
    tmp = tmp_path_factory.mktemp("elf")
    src = tmp / "t.c"
    src.write_text(_SOURCE)
    out: dict[str, Path] = {}
    for name, (cc, kind) in _BUILDS.items():
        dst = tmp / name
        cmd = [*cc, "-O2", "-g", "-nostdlib", *_KIND_FLAGS[kind], "-o", str(dst), str(src)]
        if shutil.which(cc[0]) and subprocess.run(cmd, capture_output=True).returncode == 0:
            out[name] = dst
    if "i386-exe" in out and shutil.which("objcopy"):
        exe, debug, stripped = out["i386-exe"], tmp / "i386-exe.debug", tmp / "i386-stripped"
        ok = subprocess.run(["objcopy", "--only-keep-debug", str(exe), str(debug)]).returncode \
            == 0 and subprocess.run(["objcopy", "--strip-debug",
                                     f"--add-gnu-debuglink={debug}", str(exe),
                                     str(stripped)]).returncode == 0
        if ok:
            out["i386-exe.debug"], out["i386-stripped"] = debug, stripped
    return out


def _need(built: dict[str, Path], name: str) -> Path:
    if name not in built:
        pytest.fail(f"{name}: cannot build it here (scripts/setup.sh installs the toolchains)")
    return built[name]


# -- comparisons --------------------------------------------------------------------

@pytest.mark.parametrize("path", [*TARGET_FILES, *SNAPSHOT_FILES],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixtures_match_pyelftools(path: Path) -> None:
    counts = compare_with_pyelftools(str(path))
    assert counts["sections"] and counts["segments"] and counts["symbols"]


@pytest.mark.parametrize("path", HOST_FILES, ids=os.path.basename)
def test_host_files_match_pyelftools(path: str) -> None:
    if not os.path.exists(path):
        pytest.fail(f"{path} missing: run scripts/setup.sh")
    counts = compare_with_pyelftools(path)
    assert counts["symbols"] >= 30 and counts["relocations"]


def test_debug_files_match_pyelftools() -> None:
    paths = _debug_files()
    if not paths:
        pytest.fail("no /usr/lib/debug files: scripts/setup.sh installs libc6-dbg")
    compressed = 0
    for path in paths:
        compare_with_pyelftools(path)
        with open(path, "rb") as f:
            compressed += sum(1 for s in ElfFile(f).sections if s.sh_flags & E.SHF_COMPRESSED)
    assert compressed


@pytest.mark.parametrize("name", [*_BUILDS, "i386-exe.debug", "i386-stripped"])
def test_built_files_match_pyelftools(built: dict[str, Path], name: str) -> None:
    path = _need(built, name)
    counts = compare_with_pyelftools(str(path))
    assert counts["sections"] and counts["symbols"]
    with open(path, "rb") as f:
        elf = ElfFile(f)
        wide, little = {"i386": (False, True), "x32": (False, True), "x86_64": (True, True),
                        "aarch64be": (True, False),
                        "aarch64ilp32be": (False, False)}[name.split("-")[0]]
        assert (elf.elfclass == 64, elf.little_endian) == (wide, little)
        names = {E.c_string(elf.section_data(elf.linked_section(s)), row[0])
                 for s in elf.sections if s.sh_type == E.SHT_SYMTAB
                 for row in elf.read_symbols(s, 1000)}
        assert {"api", "other", "counter"} <= names


def test_debuglink_names_the_debug_file(built: dict[str, Path]) -> None:
    stripped, debug = _need(built, "i386-stripped"), _need(built, "i386-exe.debug")
    with open(stripped, "rb") as f, open(debug, "rb") as g:
        link = ElfFile(f).debuglink()
        assert link == (debug.name, zlib.crc32(debug.read_bytes()))
        assert ElfFile(f).build_id() == ElfFile(g).build_id() != ""


def test_compressed_debug_sections_are_decompressed(built: dict[str, Path]) -> None:
    exe = _need(built, "i386-exe")
    with open(exe, "rb") as f:
        elf = ElfFile(f)
        packed = [s for s in elf.sections if s.sh_flags & E.SHF_COMPRESSED]
        assert packed
        for sec in packed:
            data = elf.section_data(sec)
            assert len(data) > sec.sh_size - 12
            assert elf.section_data(sec, 10) == data[:10]


def test_objects_of_other_classes_are_used_end_to_end(built: dict[str, Path]) -> None:
    """ObjectFile, the symbol table and the CFI reader on the built files: one code path
    for every class and byte order."""
    from profiler.symbolize.symbols import ElfSymbols
    from profiler.unwind.cfi import CfiError, CfiTable
    from profiler.unwind.elfsyms import dynamic_exports
    seen = 0
    for name in ("i386-so", "aarch64be-so", "aarch64ilp32be-so", "x32-exe", "aarch64be-exe"):
        if name not in built:
            continue
        obj = ObjectFile.open(str(built[name]))
        syms = ElfSymbols.load(obj, debug_dirs=(), root=None)
        with open(built[name], "rb") as f:
            ref = ELFFile(f)
            api = ref.get_section_by_name(".symtab").get_symbol_by_name("api")[0]["st_value"]
        assert syms.lookup(api) == ("api", 0), name
        assert syms.lookup(api + 1) == ("api", 1), name
        if name.endswith("-so"):
            assert {"api", "other"} <= set(dynamic_exports(obj.elf, 1 << 20))
            assert obj.exports("api") == [(api, False)]
        if obj.machine == "EM_386":
            with pytest.raises(CfiError, match="unsupported machine EM_386"):
                CfiTable.from_elf(obj.elf, name)
        else:
            table = CfiTable.from_elf(obj.elf, name)
            assert table is not None and table.has_pc(api), name
        seen += 1
    if not seen:
        pytest.fail("no aarch64 cross toolchain: scripts/setup.sh installs it")


def test_extended_numbering() -> None:
    """e_shnum 0, e_shstrndx SHN_XINDEX and e_phnum PN_XNUM: the counts and the index
    come from section 0 (as pyelftools reads them too)."""
    data = bytearray(TINY.read_bytes())
    elf = ElfFile(io.BytesIO(bytes(data)))
    want = ([tuple(s) for s in elf.sections], elf.segments)
    shoff = elf.e_shoff
    struct.pack_into("<Q", data, shoff + 32, len(elf.sections))     # section 0: sh_size
    struct.pack_into("<I", data, shoff + 40, elf.e_shstrndx)        # sh_link
    struct.pack_into("<I", data, shoff + 44, len(elf.segments))     # sh_info
    struct.pack_into("<HHHH", data, 0x38, E.PN_XNUM, 64, 0, E.SHN_XINDEX)
    ext = ElfFile(io.BytesIO(bytes(data)))
    got = ([tuple(s) for s in ext.sections], ext.segments)
    assert got[1] == want[1] and [s[:9] for s in got[0][1:]] == [s[:9] for s in want[0][1:]]
    assert ext.shstrndx == elf.e_shstrndx and ext.sections[0].sh_size == len(elf.sections)
    ref = ELFFile(io.BytesIO(bytes(data)))
    assert (ref.num_sections(), ref.num_segments(), ref.get_shstrndx()) == (
        len(ext.sections), len(ext.segments), ext.shstrndx)


def test_larger_entries_are_read_with_their_stride() -> None:
    """Section headers 80 bytes apart (e_shentsize larger than Elf64_Shdr)."""
    data = bytearray(TINY.read_bytes())
    elf = ElfFile(io.BytesIO(bytes(data)))
    table = b"".join(data[elf.e_shoff + 64 * k:elf.e_shoff + 64 * (k + 1)] + bytes(16)
                     for k in range(len(elf.sections)))
    struct.pack_into("<Q", data, 0x28, len(data))
    struct.pack_into("<H", data, 0x3A, 80)
    wide = ElfFile(io.BytesIO(bytes(data) + table))
    assert wide.sections == elf.sections


def test_only_the_headers_are_read() -> None:
    """Opening a file reads its headers, not the file."""
    path = HOST_FILES[0]
    if not os.path.exists(path):
        pytest.fail(f"{path} missing: run scripts/setup.sh")

    class Counting(io.FileIO):
        read_bytes = 0

        def read(self, size: int = -1) -> bytes:
            data = super().read(size)
            Counting.read_bytes += len(data or b"")
            return data or b""

    with Counting(path) as f:
        elf = ElfFile(f)
        assert Counting.read_bytes < 16384 < os.path.getsize(path)
        assert elf.find_section(".dynsym") is not None


def test_machine_names() -> None:
    assert [E.machine_name(m) for m in (62, 183, 3, 40, 9999)] == [
        "EM_X86_64", "EM_AARCH64", "EM_386", "EM_ARM", "EM_9999"]


# -- malformed files ------------------------------------------------------------------

def exercise(data: bytes) -> ElfFile | None:
    """Open `data` and ask every question of it; only ElfError may come out."""
    try:
        elf = ElfFile(io.BytesIO(data))
    except ElfError as exc:
        assert "\n" not in str(exc) and str(exc)
        return None
    for sec in elf.sections:
        for call in (lambda: elf.section_data(sec), lambda: elf.section_data(sec, 16),
                     lambda: elf.linked_section(sec), lambda: elf.read_symbols(sec, 1000),
                     lambda: elf.relocation_infos(sec, 1000),
                     lambda: list(elf.iter_notes(elf.section_data(sec), 4))):
            try:
                call()
            except ElfError as exc:
                assert "\n" not in str(exc) and str(exc)
    for seg in elf.segments:
        try:
            elf.segment_data(seg)
        except ElfError:
            pass
    elf.build_id()
    try:
        elf.debuglink()
    except ElfError:
        pass
    return elf


def _objfile(data: bytes) -> None:
    """ObjectFile over `data`: ObjectError or a usable object, nothing else."""
    from profiler.symbolize.symbols import ElfSymbols
    try:
        obj = ObjectFile.from_bytes(data, "x.so")
    except ObjectError:
        return
    ElfSymbols.load(obj, debug_dirs=(), root=None)
    obj.exports("main")
    obj.slot_symbol(0x1000)
    for vaddr, *_ in obj.loads:
        obj.lookup_rule(vaddr + 4)
        obj.read_code(vaddr, 16)


def _cuts(size: int) -> Iterator[int]:
    yield from range(0, 128)
    yield from range(128, size, 7)


@pytest.mark.parametrize("name", ["tiny", "i386-so", "aarch64ilp32be-so"])
def test_truncated_at_every_length(built: dict[str, Path], name: str) -> None:
    """A file cut anywhere: ElfError, or (cut past its header tables) an ElfFile whose
    every query raises ElfError or answers."""
    data = TINY.read_bytes() if name == "tiny" else _need(built, name).read_bytes()
    whole = exercise(data)
    assert whole is not None
    tables_end = max(whole.e_phoff + whole.e_phnum * whole.e_phentsize,
                     whole.e_shoff + whole.e_shnum * whole.e_shentsize)
    for n in _cuts(len(data)):
        assert (exercise(data[:n]) is None) == (n < tables_end), n
    for n in range(0, len(data), 97):
        _objfile(data[:n])


def _tiny() -> tuple[bytearray, ElfFile]:
    data = bytearray(TINY.read_bytes())
    return data, ElfFile(io.BytesIO(bytes(data)))


@pytest.mark.parametrize("edit,match", [
    (lambda d, e: struct.pack_into("<Q", d, 0x20, len(d) - 10), "program header table"),
    (lambda d, e: struct.pack_into("<Q", d, 0x28, len(d) - 10), "section header table"),
    (lambda d, e: struct.pack_into("<Q", d, 0x28, 1 << 63), "section header table"),
    (lambda d, e: struct.pack_into("<Q", d, 0x20, (1 << 64) - 1), "program header table"),
    (lambda d, e: struct.pack_into("<H", d, 0x3E, len(e.sections)), "section name table index"),
    (lambda d, e: struct.pack_into("<H", d, 0x3E, 0xFFF0), "section name table index"),
    (lambda d, e: struct.pack_into("<H", d, 0x38, 0xFFFE), "program header entries"),
    (lambda d, e: struct.pack_into("<H", d, 0x3C, 0xFF00), "section header table"),
    (lambda d, e: struct.pack_into("<H", d, 0x36, 0), "program header table"),
    (lambda d, e: struct.pack_into("<H", d, 0x3A, 0), "section header table"),
    (lambda d, e: struct.pack_into("<H", d, 0x3A, 40), "section header table"),
    (lambda d, e: (struct.pack_into("<H", d, 0x3C, 0),                 # e_shnum 0 and
                   struct.pack_into("<Q", d, e.e_shoff + 32, 1 << 40)),  # sh_size 2**40
     "section header entries"),
    (lambda d, e: (struct.pack_into("<H", d, 0x38, E.PN_XNUM),
                   struct.pack_into("<I", d, e.e_shoff + 44, 10 ** 6)),
     "program header entries"),
    (lambda d, e: (struct.pack_into("<H", d, 0x3E, E.SHN_XINDEX),
                   struct.pack_into("<I", d, e.e_shoff + 40, 5000)),
     "section name table index"),
    (lambda d, e: (struct.pack_into("<Q", d, 0x28, 0),
                   struct.pack_into("<H", d, 0x38, E.PN_XNUM)), "PN_XNUM"),
    (lambda d, e: struct.pack_into(    # the section name table's sh_offset past the end
        "<Q", d, e.e_shoff + 64 * e.e_shstrndx + 24, len(d)), "section name table"),
    (lambda d, e: struct.pack_into(
        "<Q", d, e.e_shoff + 64 * e.e_shstrndx + 32, 1 << 62), "section name table"),
    (lambda d, e: d.__setitem__(4, 3), "unknown ELF class"),
    (lambda d, e: d.__setitem__(5, 0), "byte order"),
    (lambda d, e: d.__setitem__(0, 0x7E), "not an ELF file"),
])
def test_bad_headers_raise_elf_error(edit: Any, match: str) -> None:
    data, elf = _tiny()
    edit(data, elf)
    with pytest.raises(ElfError, match=match):
        ElfFile(io.BytesIO(bytes(data)))
    with pytest.raises(ObjectError, match="not a usable ELF file"):
        ObjectFile.from_bytes(bytes(data), "x.so")


@pytest.mark.parametrize("data", [b"", b"\x7fELF", b"\x7fELF\x02\x01", b"\x7fELF" + bytes(60),
                                  b"\x7fELF\x02\x01\x01" + bytes(40)])
def test_not_an_elf_file(data: bytes) -> None:
    with pytest.raises(ElfError):
        ElfFile(io.BytesIO(data))


def _section(elf: ElfFile, name: str) -> tuple[int, E.Section]:
    sec = elf.find_section(name)
    assert sec is not None
    return elf.sections.index(sec), sec


def test_damaged_sections_raise_elf_error() -> None:
    data, elf = _tiny()
    i, symtab = _section(elf, ".symtab")
    at = elf.e_shoff + 64 * i

    def edited(pos: int, fmt: str, value: int) -> ElfFile:
        d = bytearray(data)
        struct.pack_into(fmt, d, pos, value)
        return ElfFile(io.BytesIO(bytes(d)))

    bad = edited(at + 40, "<I", 999)                        # sh_link: no such section
    with pytest.raises(ElfError, match="links to section 999"):
        bad.linked_section(bad.sections[i])
    bad = edited(at + 56, "<Q", 7)                          # sh_entsize 7
    with pytest.raises(ElfError, match="entries of 7 bytes"):
        bad.read_symbols(bad.sections[i], 100)
    bad = edited(at + 32, "<Q", 1 << 62)                    # sh_size past the end
    with pytest.raises(ElfError, match="runs past the end"):
        bad.read_symbols(bad.sections[i], 100)
    with pytest.raises(ElfError, match="runs past the end"):
        bad.section_data(bad.sections[i], 16)
    bad = edited(at + 24, "<Q", (1 << 64) - 8)              # sh_offset near 2**64
    with pytest.raises(ElfError, match="runs past the end"):
        bad.section_data(bad.sections[i])
    with pytest.raises(ElfError, match="not a relocation table"):
        elf.relocation_infos(symtab, 10)
    with pytest.raises(ElfError, match="not a symbol table"):
        elf.read_symbols(elf.sections[elf.shstrndx], 10)
    bad = edited(at + 4, "<I", E.SHT_NOBITS)                # NOBITS: no bytes
    assert bad.section_data(bad.sections[i]) == b""


def test_damaged_compressed_sections_raise_elf_error(built: dict[str, Path]) -> None:
    exe = _need(built, "i386-exe")
    data = exe.read_bytes()
    elf = ElfFile(io.BytesIO(data))
    i, sec = next((k, s) for k, s in enumerate(elf.sections) if s.sh_flags & E.SHF_COMPRESSED)
    for pos, fmt, value, match in (
            (sec.sh_offset, "<I", 2, "compression type 2"),               # ch_type zstd
            (sec.sh_offset + 4, "<I", 1 << 30, "bytes decompressed"),     # ch_size huge
            (sec.sh_offset + 4, "<I", sec.sh_size * 64, "decompresses to"),
            (sec.sh_offset + 12, "<I", 0xDEADBEEF, "cannot decompress"),  # the zlib stream
            (elf.e_shoff + 40 * i + 20, "<I", 6, "smaller than a compression header")):
        d = bytearray(data)
        struct.pack_into(fmt, d, pos, value)
        bad = ElfFile(io.BytesIO(bytes(d)))
        with pytest.raises(ElfError, match=match):
            bad.section_data(bad.sections[i])
    d = bytearray(data)
    struct.pack_into("<I", d, sec.sh_offset + 4, 0)     # ch_size 0: nothing is inflated
    empty = ElfFile(io.BytesIO(bytes(d)))
    assert empty.section_data(empty.sections[i]) == b""
    assert elf.section_data(sec, 0) == b""


def test_a_file_that_shrinks_gives_short_reads(tmp_path: Path) -> None:
    path = tmp_path / "victim"
    path.write_bytes(TINY.read_bytes())
    with open(path, "rb", buffering=0) as f:
        elf = ElfFile(f)
        _, text = _section(elf, ".text")
        os.truncate(path, 100)
        with pytest.raises(ElfError, match="short read"):
            elf.section_data(text)


def test_random_header_bytes_only_raise_elf_error() -> None:
    """Bytes of the ELF header, program and section headers and the section-name table
    changed at random (fixed seed)."""
    data, elf = _tiny()
    names = elf.sections[elf.shstrndx]
    spots = [*range(64), *range(elf.e_phoff, elf.e_phoff + 56 * len(elf.segments)),
             *range(elf.e_shoff, elf.e_shoff + 64 * len(elf.sections)),
             *range(names.sh_offset, names.sh_offset + names.sh_size)]
    rng = random.Random(5)
    for _ in range(400):
        d = bytearray(data)
        for _k in range(rng.randint(1, 4)):
            d[rng.choice(spots)] = rng.randrange(256)
        exercise(bytes(d))
