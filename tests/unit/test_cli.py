"""The command line, run as a user runs it: output, exit status, one-line errors."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

from helpers.paths import REPO, SNAPSHOTS

from profiler.reasons import REASONS


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "profiler", *args], capture_output=True,
                          text=True, cwd=REPO)


def test_readme_documents_every_reason() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Reliability verdicts"):]
    documented = set(re.findall(r"^\| `([a-z-]+)` \|", section, re.M))
    assert documented == set(REASONS)


def test_unwind_snapshots_round_trip(tmp_path: Path) -> None:
    src = sorted(SNAPSHOTS.glob("*x86_64*.jsonl.gz"))[0]
    lines = gzip.open(src, "rt").read().splitlines()[:20]
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    res = run("unwind-snapshots", str(inp), "--root", str(SNAPSHOTS / "root"), "-o", str(out))
    assert res.returncode == 0, res.stderr
    results = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(results) == 20
    for line, r in zip(lines, results):
        obj = json.loads(line)
        assert r["id"] == obj["id"]
        assert r["frames"][0]["pc"] == obj["regs"]["pc"]
        assert set(r) == {"id", "frames", "reliable", "reason"}
        assert (r["reason"] == "") == r["reliable"]
        assert r["reason"] in REASONS or r["reason"] == ""
    assert re.fullmatch(r"20 snapshots, \d+ reliable\n", res.stderr)


def test_corrupt_snapshot_line_keeps_earlier_results(tmp_path: Path) -> None:
    src = sorted(SNAPSHOTS.glob("*x86_64*.jsonl.gz"))[0]
    good = gzip.open(src, "rt").readline()
    inp = tmp_path / "in.jsonl"
    inp.write_text(good + '{"arch": "x86_64", "regs": {"pc": 1}}\n')
    out = tmp_path / "out.jsonl"
    res = run("unwind-snapshots", str(inp), "--root", str(SNAPSHOTS / "root"), "-o", str(out))
    assert res.returncode == 1
    assert res.stderr == f"sframe-prof: error: {inp}:2: regs.sp missing\n"
    assert len(out.read_text().splitlines()) == 1


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    res = run("unwind-snapshots", str(tmp_path / "nope.jsonl"))
    assert res.returncode == 1 and res.stderr.startswith("sframe-prof: error: ")
    assert len(res.stderr.splitlines()) == 1
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF" + bytes(range(256)) * 4)
    res = run("sframe-dump", str(junk))
    assert res.returncode == 1
    assert res.stderr.startswith(f"sframe-prof: error: {junk}: not a usable ELF file")
    assert len(res.stderr.splitlines()) == 1
    gz = tmp_path / "bad.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"a": 1}\n')[:-6])
    res = run("unwind-snapshots", str(gz))
    assert res.returncode == 1 and len(res.stderr.splitlines()) == 1
