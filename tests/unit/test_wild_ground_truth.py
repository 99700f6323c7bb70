"""The unwinder against gdb on the wild panel: programs nobody here wrote.

tests/snapshots/wild/<arch>-<program>.jsonl.gz were captured by scripts/capture_gt.py
(x86_64: scripts/wild/capture_x86_64.sh) from Debian's CPython, perl, sqlite3, xz and
openssl, a pyenv CPython with a shared libpython, a C++ program built with Debian's g++
and Go programs.  Each has a sidecar <arch>-<program>.files.json naming every mapped
file with executable code, its sha256 and where it is found: "host" (the file at that
path on this Debian 12 image), "repo" (tests/snapshots/wild/root/<path>) or
"arm64-sysroot" (the directory printed by scripts/wild/fetch_arm64_sysroot.sh
--print-dir).  A per-arch root of symlinks is assembled from the sidecars, after
checking every hash, and each snapshot is unwound with Unwinder(ObjectCache(root)).

The rules:
  (a) a chain marked reliable equals gdb's: every pc, every CFA, the same length (where
      gdb's walk did not reach an outermost frame only its frame 0 is known, and the
      chain's frame 0 must match it);
  (b) per program and arch, at least 97% of the snapshots are reliable where gdb unwound
      fully and the copy holds the chain; the same over all Go programs of an arch;
  (c) at least 1,000 x86_64 snapshots, and 1,500 over both arches.
`pytest -s` prints a per-program table (snapshots, eligible, reliable %, reasons).
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from helpers.gdb_truth import copy_holds_chain, mismatch
from helpers.paths import SNAPSHOTS, SYSROOT_SCRIPT, arm64_sysroot

from profiler.capture.snapshots import read_snapshots
from profiler.model import RawSample, UnwoundStack
from profiler.unwind.objfile import ObjectCache
from profiler.unwind.unwinder import Unwinder

WILD = SNAPSHOTS / "wild"
FILES = sorted(WILD.glob("*.jsonl.gz"))
RATE = 0.97
MIN_ELIGIBLE = 50      # per program: fewer would make a 97% rate meaningless

Row = tuple[dict[str, Any], RawSample, UnwoundStack]


def program_of(path: Path) -> tuple[str, str]:
    """('x86_64', 'python3.11') from x86_64-python3.11.jsonl.gz."""
    arch, _, program = path.name.removesuffix(".jsonl.gz").partition("-")
    return arch, program


def is_go(program: str) -> bool:
    return program.startswith("go")


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".jsonl.gz") + ".files.json")


def owner(path: str) -> str:
    """What installs `path`: a Debian package (dpkg knows /usr-merged files by their
    old /lib paths too) or, failing that, a hint."""
    for p in (path, path.removeprefix("/usr")):
        run = subprocess.run(["dpkg-query", "-S", p], capture_output=True, text=True,
                             check=False)
        if run.returncode == 0:
            return "Debian package " + run.stdout.split(":")[0].strip()
    if "/.pyenv/" in path:
        return "the pyenv CPython of the machine image"
    return "the file's owner (no Debian package has it)"


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def source_of(path: str, entry: dict[str, str], sidecar: Path,
              sysroot: list[Path]) -> tuple[Path, str]:
    """Where a sidecar's file is, and what to do if it is wrong."""
    origin = entry.get("from")
    rel = path.lstrip("/")
    if origin == "host":
        return Path(path), f"reinstall {owner(path)} or redo the capture of {sidecar.name}"
    if origin == "repo":
        return WILD / "root" / rel, f"redo the capture of {sidecar.name} (root/ is stale)"
    if origin == "arm64-sysroot":
        if not sysroot:
            sysroot.append(arm64_sysroot())
        return sysroot[0] / rel, f"rerun {SYSROOT_SCRIPT.name} or redo {sidecar.name}"
    raise AssertionError(f"{sidecar.name}: {path}: unknown origin {origin!r}")


def assemble_root(tmp: Path, arch: str) -> Path:
    """A root of symlinks for every sidecar of `arch`, each file's sha256 checked."""
    root = tmp / arch
    root.mkdir()
    placed: dict[str, str] = {}
    sysroot: list[Path] = []
    bad = []
    for snap in FILES:
        if program_of(snap)[0] != arch:
            continue
        sidecar = sidecar_of(snap)
        if not sidecar.exists():
            pytest.fail(f"{snap.name} has no sidecar {sidecar.name}")
        for path, entry in json.loads(sidecar.read_text())["files"].items():
            src, fix = source_of(path, entry, sidecar, sysroot)
            if not src.is_file():
                bad.append(f"{path}: {src} is missing: {fix}")
                continue
            if path in placed:
                if placed[path] != entry["sha256"]:
                    bad.append(f"{path}: two sidecars of {arch} give different hashes")
                continue
            if sha256(src) != entry["sha256"]:
                bad.append(f"{path}: {src} differs from the captured file: {fix}")
                continue
            placed[path] = entry["sha256"]
            link = root / path.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(src.resolve())
    assert not bad, "\n".join(bad)
    return root


class Results(NamedTuple):
    rows: dict[Path, list[Row]]
    cfi: dict[str, CfiCoverage]            # per arch


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Results:
    assert FILES, f"no wild ground truth in {WILD}"
    tmp = tmp_path_factory.mktemp("wild-root")
    out: dict[Path, list[Row]] = {}
    cfi = {}
    for arch in sorted({program_of(p)[0] for p in FILES}):
        root = assemble_root(tmp, arch)
        cfi[arch] = CfiCoverage(root)
        unwinder = Unwinder(ObjectCache(str(root)))
        for path in FILES:
            if program_of(path)[0] == arch:
                out[path] = [(obj, s, unwinder.unwind(s))
                             for _, obj, s in read_snapshots(str(path))]
    return Results(out, cfi)


FDE_LINE = re.compile(r"\bFDE cie=\w+ pc=([0-9a-f]+)\.\.([0-9a-f]+)")


class CfiCoverage:
    """Which code has CFI, by binutils' readelf (an oracle independent of our parser).

    Where no FDE covers a frame's pc, gdb found the caller with its prologue analyser:
    its chain may be right, but no unwinder that trusts only unwind tables can call it
    reliable, so such snapshots are left out of the reliable-rate denominator (and
    counted in the table).  Go code is not checked: its unwinder reads .gopclntab.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fdes: dict[str, tuple[list[int], list[int]]] = {}
        self.loads: dict[str, list[tuple[int, int, int]]] = {}

    def _read(self, path: str) -> None:
        real = str(self.root / path.lstrip("/"))
        frames = subprocess.run(["readelf", "--debug-dump=frames", real], capture_output=True,
                                text=True, check=False).stdout
        ranges = sorted((int(a, 16), int(b, 16)) for a, b in FDE_LINE.findall(frames))
        self.fdes[path] = ([a for a, _ in ranges], [b for _, b in ranges])
        heads = subprocess.run(["readelf", "-lW", real], capture_output=True, text=True,
                               check=False).stdout
        self.loads[path] = [(int(w[1], 16), int(w[2], 16), int(w[4], 16))
                            for w in map(str.split, heads.splitlines())
                            if w and w[0] == "LOAD"]

    def covered(self, sample: RawSample, pc: int) -> bool:
        m = next((m for m in sample.mappings if m.start <= pc < m.end), None)
        if m is None:
            return False
        if m.path == "[vdso]":
            return True        # the vDSO's .eh_frame covers its functions
        if not m.path.startswith("/"):
            return False
        if m.path not in self.fdes:
            self._read(m.path)
        off = pc - m.start + m.offset
        seg = next((s for s in self.loads[m.path] if s[0] <= off < s[0] + s[2]), None)
        if seg is None:
            return False
        vaddr = off - seg[0] + seg[1]
        starts, ends = self.fdes[m.path]
        i = bisect.bisect_right(starts, vaddr) - 1
        return i >= 0 and vaddr < ends[i]

    def chain_covered(self, obj: dict[str, Any], sample: RawSample) -> bool:
        """Every frame but the outermost has CFI (callers looked up at pc - 1)."""
        pcs = [e["pc"] - (i > 0) for i, e in enumerate(obj["expected"][:-1])]
        return all(self.covered(sample, pc) for pc in pcs)


class Tally:
    """One table row: a program's (or a group's) figures."""

    def __init__(self) -> None:
        self.snapshots = self.held = self.no_cfi = self.eligible = self.reliable = 0
        self.unsure_reliable = 0
        self.reasons: collections.Counter[str] = collections.Counter()

    def add(self, rows: list[Row], cfi: CfiCoverage | None) -> None:
        """cfi: check the chain's CFI coverage (None for Go)."""
        for obj, sample, st in rows:
            self.snapshots += 1
            if not obj.get("expected_complete"):
                self.unsure_reliable += st.reliable
                continue
            if not copy_holds_chain(obj, sample):
                continue
            self.held += 1
            if cfi is not None and not cfi.chain_covered(obj, sample):
                self.no_cfi += 1
                continue
            self.eligible += 1
            self.reliable += st.reliable
            if not st.reliable:
                self.reasons[st.reason] += 1

    @property
    def rate(self) -> float:
        return self.reliable / self.eligible if self.eligible else 0.0

    HEAD = (f"{'program':<36} {'snaps':>6} {'held':>6} {'no-CFI':>6} {'eligible':>8} "
            f"{'reliable':>9} {'unsure':>6}  unreliable (eligible) by reason")

    def row(self, name: str) -> str:
        why = ", ".join(f"{r} {n}" for r, n in self.reasons.most_common())
        return (f"{name:<36} {self.snapshots:>6} {self.held:>6} {self.no_cfi:>6} "
                f"{self.eligible:>8} {self.rate:>9.1%} {self.unsure_reliable:>6}  {why}")


def tallies(res: Results) -> Iterator[tuple[str, Tally]]:
    for path, rows in res.rows.items():
        arch, program = program_of(path)
        t = Tally()
        t.add(rows, None if is_go(program) else res.cfi[arch])
        yield f"{arch}-{program}", t


def test_sidecars_name_every_code_mapping() -> None:
    """Every mapped path with executable code in any snapshot is in the sidecar."""
    missing: set[str] = set()
    for path in FILES:
        sidecar = sidecar_of(path)
        assert sidecar.exists(), f"{path.name} has no sidecar {sidecar.name}"
        named = set(json.loads(sidecar.read_text())["files"])
        for _, obj, _ in read_snapshots(str(path)):
            missing |= {f"{sidecar.name}: {m['path']}" for m in obj["mappings"]
                        if "x" in m["perms"] and m["path"].startswith("/")
                        and m["path"] not in named}
    assert not missing, "\n".join(sorted(missing))


@pytest.mark.slow
@pytest.mark.parametrize("name", [p.name for p in FILES])
def test_reliable_chains_equal_gdb(name: str, results: Results) -> None:
    wrong = [f"{obj.get('id')}: {why}" for obj, _, st in results.rows[WILD / name]
             if st.reliable
             and (why := mismatch(st, obj["expected"], bool(obj.get("expected_complete"))))]
    assert not wrong, f"{len(wrong)} reliable chains differ from gdb:\n" + "\n".join(wrong[:20])


@pytest.mark.slow
def test_reliable_rate_per_program(results: Results) -> None:
    print("\n" + Tally.HEAD)
    low = []
    for name, t in tallies(results):
        print(t.row(name))
        if t.eligible < MIN_ELIGIBLE or t.rate < RATE:
            low.append(f"{name}: {t.reliable}/{t.eligible} reliable, {dict(t.reasons)}")
    print("held: gdb's walk complete and the copy holds it; no-CFI: of those, a frame "
          "without CFI (left out);\neligible = held - no-CFI; unsure: reliable where gdb's "
          "walk was incomplete (only frame 0 compared)")
    assert not low, (f"below {RATE:.0%} reliable (or under {MIN_ELIGIBLE} eligible):\n"
                     + "\n".join(low))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_reliable_rate_go(arch: str, results: Results) -> None:
    t = Tally()
    for path, rows in results.rows.items():
        if program_of(path)[0] == arch and is_go(program_of(path)[1]):
            t.add(rows, None)
    print("\n" + Tally.HEAD + "\n" + t.row(f"{arch} Go, all programs"))
    assert t.eligible >= MIN_ELIGIBLE, (
        f"{t.eligible} eligible Go snapshots for {arch} (files {arch}-go*.jsonl.gz): "
        "the Go ground truth is missing")
    assert t.rate >= RATE, f"{arch} Go: {t.reliable}/{t.eligible} reliable, {dict(t.reasons)}"


@pytest.mark.slow
def test_enough_wild_ground_truth(results: Results) -> None:
    per_file = {"-".join(program_of(p)): len(rows) for p, rows in results.rows.items()}
    per_arch: collections.Counter[str] = collections.Counter()
    for path, rows in results.rows.items():
        per_arch[program_of(path)[0]] += len(rows)
    told = f"per file {per_file}"
    assert per_arch["x86_64"] >= 1000, f"{per_arch['x86_64']} x86_64 snapshots, want 1000; {told}"
    assert per_arch["aarch64"] > 0, ("no aarch64 wild snapshots yet (tests/snapshots/wild/"
                                     f"aarch64-*.jsonl.gz); {told}")
    total = sum(per_arch.values())
    assert total >= 1500, (f"{total} wild snapshots ({dict(per_arch)}), want 1500 over both "
                           f"arches; {told}")
