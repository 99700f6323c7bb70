"""The decoder against binutils: every public SFrame test case dumps as binutils did.

Each case in tests/data/sframe-testcases holds a section's bytes and the
`objdump --sframe` text of the binutils release named in its file name.  Cases made
by binutils 2.40 are compared with our `compat="2.40"` layout: that release's dumper
left out the "CFA fixed RA offset: -8" header line and printed the fixed x86_64 RA
column as "u" where 2.41 and later print "f".  Everything else must match exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profiler.unwind.sframe import constants as C
from profiler.unwind.sframe.dump import dump_section
from profiler.unwind.sframe.section import SFrameSection

CASES = sorted((Path(__file__).parent.parent / "data" / "sframe-testcases").glob("*.json"))


def _load(path: Path) -> tuple[bytes, int, str]:
    d = json.loads(path.read_text())
    return bytes(d["content"]), d["section_base"], d["groundtruth"]


def test_corpus_present() -> None:
    assert len(CASES) >= 100


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_dump_matches_binutils(path: Path) -> None:
    data, base, truth = _load(path)
    start = truth.find("Contents of the SFrame section")
    want = truth[start:] if start >= 0 else ""
    if not data:
        assert want == "", "binutils printed a section where there are no bytes"
        return
    compat = "2.40" if path.stem.endswith("-2.40") else "2.46"
    got = dump_section(SFrameSection(data, base, path.name), compat=compat)
    assert got.rstrip("\n") == want.rstrip("\n")


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_lookup_finds_every_row(path: Path) -> None:
    """find_fde/find_fre pick each FRE at its first and last covered pc."""
    data, base, _ = _load(path)
    if not data:
        return
    sec = SFrameSection(data, base, path.name)
    for fde in sec.fdes:
        if fde.func_size == 0:
            assert sec.find_fde(fde.func_start) != fde
            continue
        fres = sec.get_fres(fde)
        assert sec.find_fde(fde.func_start) == fde
        assert sec.find_fde(fde.func_start + fde.func_size - 1) == fde
        if fde.pc_type == C.SFRAME_PC_TYPE_MASK:
            span = fde.rep_size
            for block in range(0, fde.func_size, span):
                for j, fre in enumerate(fres):
                    pc = fde.func_start + block + fre.start
                    if pc < fde.func_start + fde.func_size:
                        assert sec.find_fre(fde, pc) == j
            continue
        for j, fre in enumerate(fres):
            end = fres[j + 1].start if j + 1 < len(fres) else fde.func_size
            if fre.start >= fde.func_size:
                continue
            assert sec.find_fre(fde, fde.func_start + fre.start) == j
            assert sec.find_fre(fde, fde.func_start + end - 1) == j
            assert sec.find_rule(fde.func_start + fre.start) is not None
        if fres and fres[0].start > 0:
            assert sec.find_rule(fde.func_start) is None
