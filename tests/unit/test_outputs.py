"""Outputs are written atomically, never through a planted symlink, and bad output
paths are refused before any work is done."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.paths import REPO

from profiler.app.options import Options
from profiler.app.outputs import check_outputs, write_outputs
from profiler.errors import SframeProfError
from profiler.model import Location, MappingInfo, ProfileData, StackSample


def small_profile() -> ProfileData:
    m = MappingInfo(0x400000, 0x401000, 0, "/bin/demo", "ab12", True)
    s = StackSample((Location(0x400100, m, "leaf"), Location(0x400200, m, "main")),
                    pid=7, tid=7, thread_name="demo", reliable=True, reason="", count=3,
                    cpu_ns=30_000_000)
    return ProfileData([s], 10_000_000, 1_700_000_000_000_000_000, 1_000_000_000)


def test_planted_symlinks_are_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    outs = {}
    for name in ("p.pb.gz", "f.folded", "g.html"):
        link = tmp_path / name
        link.symlink_to(victim)
        outs[name] = link
    write_outputs(small_profile(), Options(output=str(outs["p.pb.gz"]),
                                           folded=str(outs["f.folded"]),
                                           flamegraph=str(outs["g.html"])))
    assert victim.read_text() == "precious\n"
    for link in outs.values():
        assert not link.is_symlink() and link.is_file()
        assert oct(link.stat().st_mode & 0o777) in ("0o644", oct(0o644 & ~_umask()))
    assert gzip.open(outs["p.pb.gz"]).read(2)
    assert (tmp_path / "f.folded").read_text() == "demo;main;leaf 3\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_failed_write_leaves_old_file(tmp_path: Path) -> None:
    out = tmp_path / "p.pb.gz"
    out.write_bytes(b"old")
    bad = small_profile()
    bad.samples[0].locations = (Location(0x999999, bad.samples[0].locations[0].mapping, "x"),)
    with pytest.raises(Exception):
        write_outputs(bad, Options(output=str(out)))  # address outside its mapping
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["p.pb.gz"]


def test_unwritable_outputs_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(SframeProfError, match="no such directory"):
        check_outputs(Options(output=str(tmp_path / "nope" / "x.pb.gz")))
    with pytest.raises(SframeProfError, match="is a directory"):
        check_outputs(Options(output=str(tmp_path)))
    run = subprocess.run([sys.executable, "-m", "profiler", "report", "/nonexistent.sfcap",
                          "-o", str(tmp_path / "missing" / "x.pb.gz")],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 1
    assert run.stderr.startswith("sframe-prof: error: cannot write ")
    assert len(run.stderr.splitlines()) == 1
