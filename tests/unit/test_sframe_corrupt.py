"""Malformed .sframe sections: a clear error naming the file and the defect, never a
traceback from somewhere else, never a hang."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.paths import DATA, REPO, TARGETS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiler.unwind.sframe.dump import dump_section
from profiler.unwind.sframe.section import SFrameError, SFrameSection

CASES = DATA / "sframe-testcases"
SEEDS = [
    (bytes(d["content"]), d["section_base"])
    for d in (json.loads(p.read_text()) for p in sorted(CASES.glob("*.json")))
    if d["content"]
]


def _v3_x86() -> bytearray:
    d = json.loads((CASES / "cfi-sframe-x86_64-esc-expr-1-2.46.json").read_text())
    return bytearray(d["content"])


def _err(data: bytes) -> str:
    with pytest.raises(SFrameError) as info:
        sec = SFrameSection(bytes(data), 0x1000, "victim.so")
        dump_section(sec)
    msg = str(info.value)
    assert msg.startswith("victim.so: bad .sframe: ")
    assert "\n" not in msg
    return msg


def test_bad_magic() -> None:
    d = _v3_x86()
    d[0:2] = b"\x00\x00"
    assert "bad magic" in _err(d)


def test_unknown_version() -> None:
    d = _v3_x86()
    d[2] = 9
    assert "unknown version 9" in _err(d)


def test_unknown_flags() -> None:
    d = _v3_x86()
    d[3] |= 0x2  # FRAME_POINTER is not a V3 flag
    assert "unknown flags 0x2" in _err(d)


def test_fde_count_past_end() -> None:
    d = _v3_x86()
    struct.pack_into("<I", d, 8, 1000)
    assert "run past the end" in _err(d)


def test_fre_offset_past_end() -> None:
    d = _v3_x86()
    struct.pack_into("<I", d, 0x10, 5000)
    assert "past the end" in _err(d)


def test_unsorted_fdes() -> None:
    data = bytes(json.loads((CASES / "test-x86_64-2.46.json").read_text())["content"])
    d = bytearray(data)
    # V3 index entries are 16 bytes from offset 28: swap the first two.
    d[28:44], d[44:60] = d[44:60], d[28:44]
    msg = _err(d)
    assert "not sorted" in msg or "overlaps" in msg or "FRE" in msg


def test_fre_runs_off_end() -> None:
    d = _v3_x86()
    fre_len_off = 0x10
    (fre_len,) = struct.unpack_from("<I", d, fre_len_off)
    struct.pack_into("<I", d, fre_len_off, fre_len - 3)
    assert "runs off the end" in _err(d)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=st.sampled_from(SEEDS), data=st.data())
def test_corrupted_sections_never_escape(case: tuple[bytes, int], data: st.DataObject) -> None:
    raw, base = case
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["flip", "set", "truncate", "extend"]))
        if kind == "flip" and buf:
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and buf:
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] = data.draw(st.integers(0, 255))
        elif kind == "truncate":
            del buf[data.draw(st.integers(0, len(buf))):]
        else:
            buf += data.draw(st.binary(max_size=16))
    try:
        sec = SFrameSection(bytes(buf), base, "fuzz")
        dump_section(sec)
        for fde in sec.fdes:
            for off in (0, fde.func_size // 2, max(fde.func_size - 1, 0)):
                sec.find_rule(fde.func_start + off)
    except SFrameError as exc:
        assert str(exc).startswith("fuzz: bad .sframe: ")


def test_cli_reports_corrupt_file(tmp_path: Path) -> None:
    """sframe-dump on an ELF whose .sframe is damaged: one line, exit status 1."""
    src = TARGETS / "v3sid-x86_64-O2" / "prog"
    blob = bytearray(src.read_bytes())
    from profiler.unwind.objfile import ObjectFile
    addr, offset, size = ObjectFile.open(str(src)).find_sframe_location() or (0, 0, 0)
    assert size
    blob[offset + 2] = 7  # unknown version
    bad = tmp_path / "prog"
    bad.write_bytes(bytes(blob))
    run = subprocess.run([sys.executable, "-m", "profiler", "sframe-dump", str(bad)],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        f"sframe-prof: error: {bad}: bad .sframe: unknown version 7"]
