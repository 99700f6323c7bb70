#!/usr/bin/env python3
"""Unwinder throughput on the committed ground-truth snapshots, against `perf script`.

Prints, for sframe-prof's unwinder (one core, pure Python):
  * cold: a fresh object cache, every ELF file and unwind table loaded on demand;
  * warm: the same snapshots again with tables loaded (best of several rounds);
and, measured in the same run on the same core, perf's own DWARF unwinder: `perf
record --call-graph dwarf` on a test program, then `perf script` (which unwinds the
copied stacks with libdw/libunwind and symbolizes them) timed over the recording.
The last line is the ratio of warm frames per second to perf script's.

    .venv/bin/python scripts/bench_unwind.py [--rounds N] [--no-perf] [--panel]

--panel adds the wild panel's snapshots (tests/snapshots/wild: programs nobody here
built, x86_64 and aarch64), each arch against its root of pinned files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from profiler.capture.snapshots import read_snapshots  # noqa: E402
from profiler.model import RawSample  # noqa: E402
from profiler.unwind.objfile import ObjectCache  # noqa: E402
from profiler.unwind.unwinder import Unwinder  # noqa: E402

SNAPSHOTS = REPO / "tests" / "snapshots"
PEER_PROG = REPO / "tests" / "targets" / "v1host-x86_64-O2" / "prog"


def load_samples() -> list[RawSample]:
    samples = []
    for path in sorted(SNAPSHOTS.glob("*.jsonl.gz")):
        samples += [s for _, _, s in read_snapshots(str(path))]
    return samples


def unwind_all(unwinder: Unwinder, samples: list[RawSample]) -> tuple[int, float]:
    t0 = time.perf_counter()
    frames = 0
    for s in samples:
        frames += len(unwinder.unwind(s).frames)
    return frames, time.perf_counter() - t0


def measure_ours(samples: list[RawSample], rounds: int, root: str) -> dict[str, float]:
    cold_unwinder = Unwinder(ObjectCache(root))
    frames, cold = unwind_all(cold_unwinder, samples)
    best = min(unwind_all(cold_unwinder, samples)[1] for _ in range(rounds))
    return {"frames": frames, "snapshots": len(samples), "cold_s": cold, "warm_s": best}


def measure_perf(seconds: float) -> dict[str, float] | None:
    perf = shutil.which("perf")
    if perf is None:
        print("perf not found (Debian: linux-perf); no peer measured", file=sys.stderr)
        return None
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        rec = subprocess.run(
            [perf, "record", "-q", "-e", "cpu-clock", "-F", "999", "--call-graph", "dwarf,8192",
             "-o", data, "--", "timeout", str(seconds), str(PEER_PROG), "0", "50", "1"],
            capture_output=True, text=True)
        if not os.path.exists(data):
            print(f"perf record failed: {rec.stderr.strip()}", file=sys.stderr)
            return None
        best = float("inf")
        out = ""
        for _ in range(3):
            t0 = time.perf_counter()
            run = subprocess.run([perf, "script", "-i", data], capture_output=True, text=True)
            best = min(best, time.perf_counter() - t0)
            out = run.stdout
        samples = sum(1 for line in out.splitlines() if line and not line[0].isspace())
        user_frames = sum(1 for line in out.splitlines()
                          if line[:1].isspace() and line.strip() and "[kernel" not in line)
        all_frames = sum(1 for line in out.splitlines() if line[:1].isspace() and line.strip())
    return {"samples": samples, "user_frames": user_frames, "frames": all_frames, "s": best}


def report(what: str, ours: dict[str, float]) -> None:
    print(f"{what}, {ours['snapshots']:.0f} snapshots, {ours['frames']:.0f} frames")
    print(f"  cold (tables loaded on demand): {ours['cold_s']:.3f} s, "
          f"{ours['frames'] / ours['cold_s']:,.0f} frames/s, "
          f"{ours['snapshots'] / ours['cold_s']:,.0f} snapshots/s")
    print(f"  warm (tables loaded):           {ours['warm_s']:.3f} s, "
          f"{ours['frames'] / ours['warm_s']:,.0f} frames/s, "
          f"{ours['snapshots'] / ours['warm_s']:,.0f} snapshots/s")


def panel_samples(tmp: Path) -> list[tuple[str, str, list[RawSample]]]:
    """(arch, root, snapshots) of the wild panel; the root is assembled as its test
    does (tests/unit/test_wild_ground_truth.py), every file's sha256 checked."""
    sys.path.insert(0, str(REPO / "tests" / "unit"))
    import test_wild_ground_truth as wild
    out = []
    for arch in ("x86_64", "aarch64"):
        root = wild.assemble_root(tmp, arch)
        files = [f for f in wild.FILES if f.name.startswith(arch)]
        out.append((arch, str(root), [s for f in files for _, _, s in read_snapshots(str(f))]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--perf-seconds", type=float, default=4.0)
    ap.add_argument("--no-perf", action="store_true")
    ap.add_argument("--panel", action="store_true", help="the wild panel's snapshots too")
    ap.add_argument("--root", default=str(SNAPSHOTS / "root"),
                    help="where the snapshots' mapped files live")
    args = ap.parse_args()
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    except OSError:
        pass
    samples = load_samples()
    if not samples:
        print("no snapshots under tests/snapshots", file=sys.stderr)
        return 1
    ours = measure_ours(samples, args.rounds, args.root)
    fps_warm = ours["frames"] / ours["warm_s"]
    report("sframe-prof unwinder", ours)
    if args.panel:
        with tempfile.TemporaryDirectory() as tmp:
            for arch, root, panel in panel_samples(Path(tmp)):
                report(f"  wild panel, {arch}", measure_ours(panel, args.rounds, root))
    if args.no_perf:
        return 0
    peer = measure_perf(args.perf_seconds)
    if peer is None:
        return 1
    peer_fps = peer["user_frames"] / peer["s"]
    print(f"perf script --call-graph dwarf (same core), {peer['samples']:.0f} samples, "
          f"{peer['user_frames']:.0f} user frames ({peer['frames']:.0f} with kernel): "
          f"{peer['s']:.3f} s, {peer_fps:,.0f} user frames/s, "
          f"{peer['frames'] / peer['s']:,.0f} frames/s incl. kernel")
    print(f"ratio warm sframe-prof / perf script user frames/s: {fps_warm / peer_fps:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
