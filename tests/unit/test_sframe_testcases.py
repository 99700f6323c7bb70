"""The decoder against binutils: every public SFrame test case dumps as binutils did.

Each case in tests/data/sframe-testcases holds a section's bytes and the
`objdump --sframe` text of the binutils release named in its file name.  Every case
is dumped with no layout option: the default is the layout of the binutils that
reads the section's version.  For SFrame V1 that is 2.40 (2.46 and later refuse V1),
whose dumper left out the "CFA fixed RA offset: -8" header line and printed the fixed
x86_64 RA column as "u" where 2.41 and later print "f".  Everything must match
exactly.

V1 sections are also dumped live by this host's binutils (2.40, and its aarch64
cross build for aarch64 sections): the section's bytes are put into an object file at
the section's address and `objdump --sframe` is run on it.  `sframe-prof sframe-dump`
with no option must print what that objdump prints for our V1 test binaries.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from profiler.unwind.sframe import constants as C
from profiler.unwind.sframe.dump import dump_section
from profiler.unwind.sframe.section import SFrameSection

TESTS = Path(__file__).parent.parent
REPO = TESTS.parent
CASES = sorted((TESTS / "data" / "sframe-testcases").glob("*.json"))
V1_CASES = [p for p in CASES
            if json.loads(p.read_text())["content"][2:3] == [C.SFRAME_VERSION_1]]
V1_TARGETS = sorted(TESTS.glob("targets/v1host-*/prog"))
AARCH64 = (C.SFRAME_ABI_AARCH64_ENDIAN_LITTLE, C.SFRAME_ABI_AARCH64_ENDIAN_BIG)


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
    got = dump_section(SFrameSection(data, base, path.name))
    assert got.rstrip("\n").splitlines() == want.rstrip("\n").splitlines()


def _host_tool(name: str, aarch64: bool) -> str:
    tool = ("aarch64-linux-gnu-" if aarch64 else "") + name
    path = shutil.which(tool)
    assert path, (f"{tool} not found: install binutils"
                  f"{'-aarch64-linux-gnu' if aarch64 else ''} (the host's 2.40 reads SFrame V1)")
    return path


def _contents(objdump_out: str) -> list[str]:
    start = objdump_out.find("Contents of the SFrame section")
    assert start >= 0, f"objdump printed no SFrame section:\n{objdump_out}"
    return objdump_out[start:].rstrip("\n").splitlines()


def _objdump_sframe(path: Path, aarch64: bool) -> list[str]:
    run = subprocess.run([_host_tool("objdump", aarch64), "--sframe", str(path)],
                         capture_output=True, text=True)
    assert run.returncode == 0 and not run.stderr, f"objdump --sframe {path}: {run.stderr}"
    return _contents(run.stdout)


def test_v1_cases_present() -> None:
    assert len(V1_CASES) >= 16
    assert {SFrameSection(*_load(p)[:2], p.name).abi_arch for p in V1_CASES} == {
        C.SFRAME_ABI_AMD64_ENDIAN_LITTLE, C.SFRAME_ABI_AARCH64_ENDIAN_LITTLE}
    assert len(V1_TARGETS) >= 10


@pytest.mark.parametrize("path", V1_CASES, ids=lambda p: p.stem)
def test_v1_dump_matches_live_host_objdump(path: Path, tmp_path: Path) -> None:
    """The V1 section in an object file of its own, dumped by the host's objdump."""
    data, base, _ = _load(path)
    sec = SFrameSection(data, base, path.name)
    assert sec.version == C.SFRAME_VERSION_1
    aarch64 = sec.abi_arch in AARCH64
    (tmp_path / "empty.s").write_text("")
    (tmp_path / "sframe.bin").write_bytes(data)
    subprocess.run([_host_tool("as", aarch64), "-o", str(tmp_path / "empty.o"),
                    str(tmp_path / "empty.s")], check=True)
    subprocess.run([_host_tool("objcopy", aarch64),
                    "--add-section", f".sframe={tmp_path / 'sframe.bin'}",
                    "--set-section-flags", ".sframe=alloc,readonly,contents",
                    "--change-section-address", f".sframe={base:#x}",
                    str(tmp_path / "empty.o"), str(tmp_path / "sframe.o")], check=True)
    want = _objdump_sframe(tmp_path / "sframe.o", aarch64)
    assert dump_section(sec).rstrip("\n").splitlines() == want


@pytest.mark.parametrize("binary", V1_TARGETS, ids=lambda p: p.parent.name)
def test_v1_sframe_dump_command_matches_host_objdump(binary: Path) -> None:
    """`sframe-prof sframe-dump FILE`, no option, on our V1 binaries: objdump's text."""
    run = subprocess.run([sys.executable, "-m", "profiler", "sframe-dump", str(binary)],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    want = _objdump_sframe(binary, "aarch64" in binary.parent.name)
    assert run.stdout.rstrip("\n").splitlines() == want


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
