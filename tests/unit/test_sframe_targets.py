"""Our own binaries, built with three toolchains, dump exactly as their own objdump did.

tests/targets/<toolchain>-<arch>-<variant>/ holds each binary next to
`sframe.objdump.txt`, the `objdump --sframe` output of the binutils that built it
(host 2.40 for SFrame V1, trixie 2.44 for V2, sid 2.47 for V3).  V1 files are compared
in the 2.40 layout (see test_sframe_testcases.py for the difference).  Where the host
objdump can read the file, it is also run live.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers.paths import TARGETS

from profiler.unwind.objfile import ObjectFile
from profiler.unwind.sframe.dump import dump_section

PAIRS = sorted(
    (golden.parent / name, golden)
    for golden in TARGETS.glob("*/*sframe.objdump.txt")
    for name in [golden.name.removesuffix("sframe.objdump.txt").rstrip(".") or "prog"]
)


def _elf_files(directory: Path) -> list[Path]:
    return [p for p in sorted(directory.iterdir())
            if p.is_file() and p.read_bytes()[:4] == b"\x7fELF"]


def _contents(text: str) -> str:
    i = text.find("Contents of the SFrame section")
    return text[i:].rstrip("\n") if i >= 0 else ""


def test_every_toolchain_and_arch_present() -> None:
    assert len(PAIRS) >= 40
    names = {p.parent.name.split("-")[0] + "-" + p.parent.name.split("-")[1]
             for p, _ in PAIRS}
    for tc in ("v1host", "v2trixie", "v3sid"):
        for arch in ("x86_64", "aarch64"):
            assert f"{tc}-{arch}" in names


@pytest.mark.parametrize("binary,golden", PAIRS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_dump_matches_own_objdump(binary: Path, golden: Path) -> None:
    obj = ObjectFile.open(str(binary))
    assert obj.sframe is not None, obj.sframe_error
    compat = "2.40" if binary.parent.name.startswith("v1") else "2.46"
    assert dump_section(obj.sframe, compat=compat).rstrip("\n") == _contents(golden.read_text())


@pytest.mark.parametrize("directory", sorted(TARGETS.glob("v1host-x86_64-*")), ids=lambda p: p.name)
def test_dump_matches_live_host_objdump(directory: Path) -> None:
    """Host binutils 2.40 reads its own V1 x86_64 output: compare with it live."""
    for binary in _elf_files(directory):
        run = subprocess.run(["objdump", "--sframe", str(binary)], capture_output=True,
                             text=True, check=True)
        obj = ObjectFile.open(str(binary))
        assert obj.sframe is not None
        assert dump_section(obj.sframe, compat="2.40").rstrip("\n") == _contents(run.stdout)
