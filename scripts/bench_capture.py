#!/usr/bin/env python3
"""Capture overhead and post-processing speed, against perf, on one workload, one run.

1. Slowdown: a fixed amount of work (tests/targets/v1host-x86_64-O2/prog, one thread)
   is timed alone, under `sframe-prof -p` and under `perf record --call-graph dwarf -p`,
   at 99 Hz and 999 Hz.  The workload starts stopped (SIGSTOP), the profiler attaches,
   then SIGCONT starts the clock; the time is the workload's wall time to exit.
2. Post-processing: the same workload recorded once by `sframe-prof record` and once by
   `perf record --call-graph dwarf` at 999 Hz; then `sframe-prof report` (unwind,
   symbolize, write pprof) against `perf script` (unwind, symbolize, print), compared
   per sample.

Run as root:  .venv/bin/python scripts/bench_capture.py [--rounds N] [--repeat K]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROG = REPO / "tests" / "targets" / "v1host-x86_64-O2" / "prog"
PY = sys.executable


def timed_workload(args: argparse.Namespace, attach: list[str] | None,
                   ready: str | None) -> float:
    """Wall seconds of the workload, optionally with a profiler attached to it."""
    target = subprocess.Popen([str(PROG), str(args.rounds), "1000", "0"])
    os.kill(target.pid, signal.SIGSTOP)
    prof = None
    if attach is not None:
        cmd = [a.replace("{pid}", str(target.pid)) for a in attach]
        prof = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if ready:
            assert prof.stderr is not None
            while True:
                line = prof.stderr.readline()
                if not line:
                    raise SystemExit(f"profiler exited early: {' '.join(cmd)}")
                if ready in line:
                    break
        else:
            time.sleep(1.5)
    t0 = time.perf_counter()
    os.kill(target.pid, signal.SIGCONT)
    target.wait()
    elapsed = time.perf_counter() - t0
    if prof is not None:
        try:
            prof.send_signal(signal.SIGINT)
            prof.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            prof.kill()
    return elapsed


def median_time(args: argparse.Namespace, attach: list[str] | None, ready: str | None) -> float:
    return statistics.median(timed_workload(args, attach, ready) for _ in range(args.repeat))


def slowdowns(args: argparse.Namespace, tmp: str) -> None:
    base = median_time(args, None, None)
    print(f"workload alone: {base:.3f} s (median of {args.repeat})")
    for hz in (99, 999):
        ours = median_time(args, [PY, "-m", "profiler", "-p", "{pid}", "-F", str(hz), "-o",
                                  os.path.join(tmp, "b.pb.gz")], "sframe-prof: sampling")
        perf = median_time(args, ["perf", "record", "-q", "-F", str(hz), "-e", "cpu-clock",
                                  "--call-graph", "dwarf,16384", "-o",
                                  os.path.join(tmp, "perf.data"), "-p", "{pid}"], None)
        s_ours, s_perf = ours / base - 1, perf / base - 1
        print(f"{hz:>4} Hz: sframe-prof {ours:.3f} s ({s_ours:+.2%}), "
              f"perf record --call-graph dwarf {perf:.3f} s ({s_perf:+.2%})")


def postprocessing(args: argparse.Namespace, tmp: str) -> None:
    cap = os.path.join(tmp, "run.sfcap")
    data = os.path.join(tmp, "perf999.data")
    rounds = str(args.rounds)
    subprocess.run([PY, "-m", "profiler", "record", "-q", "-F", "999", "-o", cap, "--",
                    str(PROG), rounds, "1000", "0"], check=True)  # prog's exit is its sum
    subprocess.run(["perf", "record", "-q", "-F", "999", "-e", "cpu-clock", "--call-graph",
                    "dwarf,16384", "-o", data, "--", str(PROG), rounds, "1000", "0"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # exit = prog's
    t0 = time.perf_counter()
    rep = subprocess.run([PY, "-m", "profiler", "report", cap, "-o",
                          os.path.join(tmp, "rep.pb.gz")], capture_output=True, text=True,
                         check=True)
    ours = time.perf_counter() - t0
    n_ours = int(re.search(r"(\d+) samples", rep.stderr).group(1))  # type: ignore[union-attr]
    t0 = time.perf_counter()
    out = subprocess.run(["perf", "script", "-i", data], capture_output=True, text=True,
                         check=True).stdout
    perf = time.perf_counter() - t0
    n_perf = sum(1 for line in out.splitlines() if line and not line[0].isspace())
    per_ours, per_perf = ours / n_ours, perf / n_perf
    print(f"post-processing: sframe-prof report {n_ours} samples in {ours:.2f} s "
          f"({per_ours * 1e6:.0f} us/sample, incl. interpreter start); perf script "
          f"{n_perf} samples in {perf:.2f} s ({per_perf * 1e6:.0f} us/sample)")
    print(f"ratio perf script / sframe-prof report per sample: {per_perf / per_ours:.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20000, help="workload size (default 20000)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_capture.py needs root (BPF and perf events)", file=sys.stderr)
        return 1
    if shutil.which("perf") is None:
        print("perf not found (Debian: linux-perf)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        slowdowns(args, tmp)
        postprocessing(args, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
