"""The unwinder against gdb on the aarch64 wild panel: a per-program table.

    .venv/bin/python scripts/wild/measure_aarch64.py [FILE.jsonl.gz...]

For each tests/snapshots/wild/aarch64-*.jsonl.gz (or the files given): a root of
symlinks from its .files.json sidecar (Debian files from the arm64 sysroot of
scripts/wild/fetch_arm64_sysroot.sh, our builds from tests/snapshots/wild/root/), then
Unwinder(ObjectCache(root)) on every snapshot.  Prints snapshots, eligible (gdb's walk
complete and the copy holds the chain), reliable among eligible, the reasons of the
unreliable ones, and every chain marked reliable that differs from gdb's (by id).
It also checks gdb's chains themselves: every caller pc (but one above a signal
frame) must follow a call instruction (BL, BLR or a PAC BLRA*), read from the mapped
file at the pc's file offset.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO))

from profiler.model import RawSample, UnwoundStack  # noqa: E402
from profiler.objfile import ObjectCache  # noqa: E402
from profiler.snapshots import read_snapshots  # noqa: E402
from profiler.unwind import Unwinder  # noqa: E402

WILD = REPO / "tests" / "snapshots" / "wild"


def mismatch(stack: UnwoundStack, expected: list[dict[str, int]], complete: bool) -> str:
    """Why `stack` differs from gdb's chain ("" when it agrees)."""
    if not complete:
        if not stack.frames or stack.frames[0].pc != expected[0]["pc"]:
            return "frame 0 differs from gdb's"
        return ""
    if len(stack.frames) != len(expected):
        return f"{len(stack.frames)} frames, gdb has {len(expected)}"
    for i, (fr, exp) in enumerate(zip(stack.frames, expected)):
        if fr.pc != exp["pc"]:
            return f"frame {i}: pc 0x{fr.pc:x}, gdb 0x{exp['pc']:x}"
        if "cfa" in exp and fr.cfa != exp["cfa"]:
            return f"frame {i}: cfa {fr.cfa!r}, gdb 0x{exp['cfa']:x}"
    return ""


def holds_chain(obj: dict[str, Any], sample: RawSample) -> bool:
    top = sample.stack_base + len(sample.stack)
    return all(e.get("cfa", 0) <= top for e in obj["expected"])


def is_call(word: int) -> bool:
    """BL imm26; BLR Xn; BLRAA/BLRAAZ/BLRAB/BLRABZ Xn(, Xm)."""
    return ((word & 0xFC000000) == 0x94000000 or (word & 0xFFFFFC1F) == 0xD63F0000
            or (word & 0xFEFFF800) == 0xD63F0800)


def bad_callers(obj: dict[str, Any], root: Path) -> list[int]:
    """Caller pcs of gdb's chain that do not follow a call instruction."""
    bad = []
    types = obj.get("expected_types", [])
    for i, e in enumerate(obj["expected"][1:], start=1):
        if i - 1 < len(types) and types[i - 1] == "SIGTRAMP":
            continue
        m = next((m for m in obj["mappings"] if m["start"] <= e["pc"] - 4 < m["end"]), None)
        if m is None or not m["path"].startswith("/"):
            bad.append(e["pc"])
            continue
        with open(root / m["path"].lstrip("/"), "rb") as f:
            f.seek(e["pc"] - 4 - m["start"] + m["offset"])
            word = int.from_bytes(f.read(4), "little")
        if not is_call(word):
            bad.append(e["pc"])
    return bad


def build_root(files: list[Path], root: Path) -> None:
    sysroot = subprocess.run([str(REPO / "scripts/wild/fetch_arm64_sysroot.sh"),
                              "--print-dir"], capture_output=True, text=True,
                             check=True).stdout.strip()
    for f in files:
        side = json.loads(f.with_name(f.name.removesuffix(".jsonl.gz")
                                      + ".files.json").read_text())
        for path, ent in side["files"].items():
            src = (Path(sysroot) if ent["from"] == "arm64-sysroot" else WILD / "root")
            dst = root / path.lstrip("/")
            if dst.exists():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(src / path.lstrip("/"), dst)


def main() -> int:
    files = [Path(a) for a in sys.argv[1:]] or sorted(WILD.glob("aarch64-*.jsonl.gz"))
    with tempfile.TemporaryDirectory() as tmp:
        build_root(files, Path(tmp))
        unw = Unwinder(ObjectCache(tmp))
        print("| program | snapshots | complete | eligible | reliable | % | reasons |")
        print("|---|---|---|---|---|---|---|")
        wrong: list[str] = []
        not_calls: list[str] = []
        callers = 0
        for f in files:
            n = comp = elig = rel = 0
            reasons: collections.Counter[str] = collections.Counter()
            for _, obj, sample in read_snapshots(str(f)):
                st = unw.unwind(sample)
                n += 1
                complete = bool(obj.get("expected_complete"))
                callers += max(0, len(obj["expected"]) - 1)
                not_calls += [f"{obj.get('id')}: 0x{pc:x}" for pc in bad_callers(obj, Path(tmp))]
                comp += complete
                if st.reliable and (why := mismatch(st, obj["expected"], complete)):
                    wrong.append(f"{obj.get('id')}: {why}")
                if complete and holds_chain(obj, sample):
                    elig += 1
                    rel += st.reliable
                    if not st.reliable:
                        reasons[st.reason or "?"] += 1
            name = f.name.removesuffix(".jsonl.gz")
            pct = 100.0 * rel / elig if elig else 0.0
            print(f"| {name} | {n} | {comp} | {elig} | {rel} | {pct:.1f} | "
                  f"{dict(reasons.most_common())} |")
        print(f"\ngdb caller pcs checked: {callers}; not after a call: {len(not_calls)}")
        for w in not_calls[:20]:
            print("  " + w)
        print(f"\nreliable chains that differ from gdb: {len(wrong)}")
        for w in wrong:
            print("  " + w)
    return 0


if __name__ == "__main__":
    sys.exit(main())
