"""Bugs the fuzzers (tests/fuzz) found, each pinned by the input that found it (kept in
tests/fuzz/corpus/<target>/regress-*) and by what the code must do with it."""

from __future__ import annotations

import lzma
import sys
import time
from pathlib import Path

import pytest
from helpers.paths import DATA, TESTS

from profiler.model import Mapping, RawSample
from profiler.unwind.objfile import ObjectCache, ObjectError, ObjectFile
from profiler.unwind.unwinder import Unwinder

CORPUS = TESTS / "fuzz" / "corpus"


def regress(target: str, name: str) -> bytes:
    return (CORPUS / target / f"regress-{name}").read_bytes()


def test_read_code_with_a_p_offset_past_2_63() -> None:
    # objfile.read_code seeked to p_offset + delta: OverflowError from BytesIO.seek.
    obj = ObjectFile.from_bytes(regress("elf", "read-code-huge-p-offset"), "x.so")
    vaddr, offset, filesz, _, _ = next(s for s in obj.loads if s[1] >= 1 << 63)
    assert obj.read_code(vaddr, 8) == b""
    assert obj.is_sigreturn(vaddr + 9) is False


def test_sframe_section_larger_than_the_file() -> None:
    # _load_sframe read sh_size bytes: OverflowError for a size past 2**63.
    obj = ObjectFile.from_bytes(regress("elf", "sframe-size-past-file"), "x.so")
    assert obj.sframe is None
    assert obj.sframe_error == "x.so: bad .sframe: section runs past the end of the file"
    assert obj.lookup_rule(0x1000) == (None, "bad-sframe")


def test_mapped_path_with_a_nul_byte(tmp_path: Path) -> None:
    # A capture's maps named "/x\0y": open() raised ValueError out of the unwinder.
    with pytest.raises(ObjectError, match="not a valid path"):
        ObjectFile.open("/tmp/x\0y")
    cache = ObjectCache(str(tmp_path))
    assert cache.get("/x\0y") is None and "not a valid path" in cache.errors["/x\0y"]
    sample = RawSample("x86_64", {"pc": 0x1010, "sp": 0x8000, "fp": 0}, 0x8000, bytes(64),
                       (Mapping(0x1000, 0x2000, 0, "r-xp", "/x\0y"),))
    st = Unwinder(cache).unwind(sample)
    assert not st.reliable and st.reason == "object-unavailable"


@pytest.mark.parametrize("missing", ["pc", "sp", "fp"])
def test_sample_without_a_register(missing: str) -> None:
    # A capture sample whose regs map lacks "pc": KeyError in the unwinder.
    regs = {"pc": 0x1010, "sp": 0x8000, "fp": 0x8010}
    del regs[missing]
    sample = RawSample("x86_64", regs, 0x8000, bytes(64),
                       (Mapping(0x1000, 0x2000, 0, "r-xp", ""),))
    st = Unwinder(ObjectCache()).unwind(sample)
    assert not st.reliable and st.reason
    if missing == "pc":
        assert st.reason == "pc-not-mapped" and st.frames[0].pc == 0


def test_capture_regressions_replay() -> None:
    sys.path.insert(0, str(CORPUS.parent))
    import common
    mod = common.load_harness("capture")
    for name in ("nul-in-mapped-path", "sample-without-pc"):
        mod.one_input(regress("capture", name))


def test_build_id_note_segment_past_2_63() -> None:
    from profiler.symbolize.debugfiles import read_build_id
    from profiler.symbolize.symbols import ElfSymbols
    obj = ObjectFile.from_bytes(regress("symbols", "build-id-note-huge-p-offset"), "/f/x.so")
    assert read_build_id(obj) == ""
    ElfSymbols.load(obj, debug_dirs=(), root=None)


class _DebugdataOnly:
    """The part of an ElfFile mini_debuginfo uses: a .gnu_debugdata section."""

    def __init__(self, data: bytes) -> None:
        from profiler.unwind.elf import SHT_PROGBITS, Section
        self.sec = Section(".gnu_debugdata", SHT_PROGBITS, 0, 0, len(data), 0, 0, 0, 1, 0, 0)
        self.data = data

    def find_section(self, name: str) -> object:
        return self.sec

    def section_data(self, sec: object) -> bytes:
        return self.data


def test_minidebuginfo_bomb_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from profiler.symbolize import debugfiles as symbolize
    assert symbolize.MAX_MINIDEBUGINFO_BYTES <= 1 << 28
    monkeypatch.setattr(symbolize, "MAX_MINIDEBUGINFO_BYTES", 1 << 20)

    bomb = lzma.compress(bytes(symbolize.MAX_MINIDEBUGINFO_BYTES + 1))
    assert len(bomb) < 4096
    errors: list[str] = []
    t0 = time.monotonic()
    assert symbolize.mini_debuginfo(_DebugdataOnly(bomb), errors) is None  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 10
    assert errors == [".gnu_debugdata: unusable (truncated, or larger than "
                      f"{symbolize.MAX_MINIDEBUGINFO_BYTES} bytes decompressed)"]


def test_rust_v0_binder_with_a_huge_lifetime_count() -> None:
    # "G" + a base-62 count of billions: the binder loop ran for ever (not printing).
    from profiler.symbolize.demangle import demangle
    name = regress("demangle", "v0-binder-huge-lifetime-count").decode("utf-8",
                                                                         "surrogateescape")
    t0 = time.monotonic()
    assert demangle(name) == name
    assert time.monotonic() - t0 < 1


@pytest.mark.parametrize("target,name", [("elf", "phentsize-0-phnum-65340"),
                                         ("symbols", "phentsize-0-phnum-43947")])
def test_header_tables_that_do_not_fit_the_file(target: str, name: str) -> None:
    # e_phentsize 0 and e_phnum in the tens of thousands: pyelftools parsed the ELF
    # header again for every "segment" on every walk (a hang of seconds per lookup).
    t0 = time.monotonic()
    with pytest.raises(ObjectError, match="program header entries"):
        ObjectFile.from_bytes(regress(target, name), "x.so")
    assert time.monotonic() - t0 < 1


def test_minidebuginfo_with_a_bad_header_table(tmp_path: Path) -> None:
    import io

    from profiler.symbolize import symbols as symbolize
    from profiler.unwind.elf import ElfError, ElfFile
    inner = bytearray((CORPUS / "elf" / "seed-tiny-x86_64-exe").read_bytes())
    inner[0x36:0x38] = (0).to_bytes(2, "little")       # e_phentsize = 0
    with pytest.raises(ElfError, match="does not fit"):
        ElfFile(io.BytesIO(bytes(inner)))

    errors: list[str] = []
    elf = _DebugdataOnly(lzma.compress(bytes(inner)))
    assert symbolize.mini_debuginfo(elf, errors) is None  # type: ignore[arg-type]
    assert len(errors) == 1 and "program header table" in errors[0]


def test_sframe_fres_per_function_bound() -> None:
    import json
    import struct as st

    from profiler.unwind.sframe import constants as C
    from profiler.unwind.sframe.section import SFrameError, SFrameSection
    case = DATA / "sframe-testcases"
    d = bytearray(json.loads((case / "cfi-sframe-common-1-2.45.json").read_text())["content"])
    assert d[2] == 2 and st.unpack_from("<I", d, 8)[0] == 1      # V2, one function
    n = C.MAX_FRES_PER_FDE + 1
    st.pack_into("<I", d, 12, n)                                  # header num_fres
    fde = C.SFRAME_HEADER_SIZE + d[7] + st.unpack_from("<I", d, 20)[0]
    st.pack_into("<I", d, fde + 12, n)                            # the FDE's num_fres
    with pytest.raises(SFrameError, match=f"FDE 0: {n} FREs \\(at most"):
        SFrameSection(bytes(d), 0x1000, "x.so")


def test_cfi_instruction_bound() -> None:
    import struct as st

    from profiler.unwind.cfi import MAX_CFI_INSTRUCTIONS, CfiError, CfiTable
    from profiler.unwind.cfi.entries import Section as _Section
    cie_body = (b"\0\0\0\0" + b"\x01zR\0" + b"\x01\x78\x10" + b"\x01\x1b"
                + b"\x0c\x07\x08\x90\x01" + b"\0" * 2)
    cie = st.pack("<I", len(cie_body)) + cie_body
    fde_at = len(cie)
    body = st.pack("<I", fde_at + 4) + st.pack("<i", 0x1000 - (fde_at + 8)) \
        + st.pack("<I", 0x100) + b"\0" + b"\0" * (MAX_CFI_INSTRUCTIONS + 1)
    eh = cie + st.pack("<I", len(body)) + body + b"\0\0\0\0"
    table = CfiTable("x.so", "EM_X86_64")
    table._sections.append(_Section(table, ".eh_frame", eh, 0, True, 8, True))
    assert table.fde_ranges() == [(0x1000, 0x1100)]
    with pytest.raises(CfiError, match="more than 65536 call-frame instructions"):
        table.find(0x1010)


def test_symbol_running_past_the_address_space() -> None:
    # A FUNC symbol near 2**64 with a size: its end overflowed the segment table.
    from profiler.symbolize.symbols import ElfSymbols
    obj = ObjectFile.from_bytes(regress("symbols", "symbol-past-2-64"), "/f/x.so")
    es = ElfSymbols.load(obj, debug_dirs=(), root=None)
    assert all(start + size < 1 << 64 for start, size, _ in es.symbols())
