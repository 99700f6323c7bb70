#!/usr/bin/env python3
"""Capture overhead and post-processing speed, against perf, on one workload, one run.

1. Slowdown: a fixed amount of work (tests/targets/v1host-x86_64-O2/prog, one thread)
   is timed alone, under `sframe-prof -p` and under `perf record --call-graph dwarf -p`,
   at 99 Hz and 999 Hz.  The workload starts stopped (SIGSTOP), the profiler attaches,
   then SIGCONT starts the clock; the time is the workload's wall time to exit.
   The three configurations run in rounds (alone, sframe-prof, perf; the order
   rotates every round), so a load change on a shared host hits all three; each
   figure is the median over the rounds, with the spread (min..max) and the median of
   the per-round slowdowns (each run against the same round's run alone).  Besides
   the wall time, the workload's own CPU time is reported: on a shared host the wall
   time moves with everyone else's load, the CPU time only with what sampling costs
   the workload itself.
2. Post-processing: for each --pp-rounds size, one larger run of the same workload
   recorded once by `sframe-prof record` and once by `perf record --call-graph dwarf`,
   at 999 Hz; then `sframe-prof report` (unwind, symbolize, write pprof) against
   `perf script` (unwind, symbolize, print), alternated, medians of --pp-repeat runs
   each, per sample, in wall time and in CPU time (report unwinds a large capture in
   several processes).  Both are whole commands, interpreter start-up included; the
   project's Python bytecode is compiled once first, as an installed package has it.

Run as root:  .venv/bin/python scripts/bench_capture.py [--rounds N] [--repeat K]
                  [--pp-rounds N [N ...]] [--pp-repeat K]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PROG = REPO / "tests" / "targets" / "v1host-x86_64-O2" / "prog"
PY = sys.executable
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed_workload(rounds: int, attach: list[str] | None,
                   ready: str | None) -> tuple[float, float]:
    """(wall, CPU) seconds of the workload, optionally with a profiler attached to it.

    The wall time includes any wait for a CPU (another process on a shared host, or
    the profiler's own consumer); the CPU time (user + system, from wait4) is what
    the workload itself ran, including what the sampling interrupts cost it, and
    is not disturbed by other processes' load."""
    target = subprocess.Popen([str(PROG), str(rounds), "1000", "0"])
    os.kill(target.pid, signal.SIGSTOP)
    prof = None
    if attach is not None:
        cmd = [a.replace("{pid}", str(target.pid)) for a in attach]
        prof = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env=ENV)
        if ready:
            assert prof.stderr is not None
            while True:
                line = prof.stderr.readline()
                if not line:
                    target.kill()
                    raise SystemExit(f"profiler exited early: {' '.join(cmd)}")
                if ready in line:
                    break
        time.sleep(1.0)   # perf prints nothing when ready; both get the same settling time
    before = _cpu_of(target.pid)
    t0 = time.perf_counter()
    os.kill(target.pid, signal.SIGCONT)
    _pid, status, usage = os.wait4(target.pid, 0)
    elapsed = time.perf_counter() - t0
    target.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime - before
    if prof is not None:
        try:
            prof.send_signal(signal.SIGINT)
            prof.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            prof.kill()
            prof.wait()
    return elapsed, cpu


def _cpu_of(pid: int) -> float:
    """CPU seconds `pid` used so far (its start-up before SIGSTOP took effect)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spread(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.3f} s ({min(xs):.3f}..{max(xs):.3f})"


def slowdowns(args: argparse.Namespace, tmp: str) -> None:
    print(f"workload: {PROG.relative_to(REPO)} {args.rounds} 1000 0 (one thread); "
          f"{args.repeat} rounds per rate, order rotating")
    for hz in (99, 999):
        configs = {
            "alone": (None, None),
            "sframe-prof": ([PY, "-m", "profiler", "-p", "{pid}", "-F", str(hz), "-o",
                             os.path.join(tmp, "b.pb.gz")], "sframe-prof: sampling"),
            "perf": (["perf", "record", "-q", "-F", str(hz), "-e", "cpu-clock",
                      "--call-graph", "dwarf,16384", "-o", os.path.join(tmp, "perf.data"),
                      "-p", "{pid}"], None),
        }
        names = list(configs)
        wall: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.repeat):
            order = names[r % 3:] + names[:r % 3]
            for name in order:
                attach, ready = configs[name]
                w, c = timed_workload(args.rounds, attach, ready)
                wall[name].append(w)
                cpu[name].append(c)
        print(f"{hz:>4} Hz  alone          wall {spread(wall['alone'])}, "
              f"cpu {spread(cpu['alone'])}")
        slow: dict[str, dict[str, float]] = {}
        for name in ("sframe-prof", "perf"):
            med = {k: statistics.median(v[name]) / statistics.median(v["alone"]) - 1
                   for k, v in (("wall", wall), ("cpu", cpu))}
            best = min(wall[name]) / min(wall["alone"]) - 1
            paired = [t / b - 1 for t, b in zip(wall[name], wall["alone"])]
            slow[name] = med
            print(f"{hz:>4} Hz  {name:<14} wall {spread(wall[name])}, "
                  f"cpu {spread(cpu[name])}")
            print(f"{'':>9}{'':<14} slowdown: wall {med['wall']:+.2%} (of the fastest runs "
                  f"{best:+.2%}; per round {min(paired):+.2%}..{max(paired):+.2%}), "
                  f"cpu {med['cpu']:+.2%}")
        goal = " (goal: <= +1%)" if hz == 99 else ""
        print(f"{hz:>4} Hz  RESULT sframe-prof wall {slow['sframe-prof']['wall']:+.2%} "
              f"cpu {slow['sframe-prof']['cpu']:+.2%} | perf record --call-graph dwarf wall "
              f"{slow['perf']['wall']:+.2%} cpu {slow['perf']['cpu']:+.2%}{goal}")


def _timed(cmd: list[str], stdout: Any = subprocess.DEVNULL) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the command and its children, its stderr)."""
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, env=ENV)
    _out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}: {err.strip()}")
    return wall, _children_cpu() - cpu0, err


def postprocessing(args: argparse.Namespace, tmp: str, rounds: int) -> None:
    cap = os.path.join(tmp, "run.sfcap")
    data = os.path.join(tmp, "perf999.data")
    subprocess.run([PY, "-m", "profiler", "record", "-q", "-F", "999", "-o", cap, "--",
                    str(PROG), str(rounds), "1000", "0"], check=True, env=ENV)
    subprocess.run(["perf", "record", "-q", "-F", "999", "-e", "cpu-clock", "--call-graph",
                    "dwarf,16384", "-o", data, "--", str(PROG), str(rounds), "1000", "0"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # exit = prog's
    ours: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    n_ours = n_perf = 0
    script_out = os.path.join(tmp, "perf-script.txt")
    for _ in range(args.pp_repeat):
        wall, cpu, err = _timed([PY, "-m", "profiler", "report", cap, "-o",
                                 os.path.join(tmp, "rep.pb.gz")])
        ours.append((wall, cpu))
        n_ours = int(re.search(r"(\d+) samples", err).group(1))  # type: ignore[union-attr]
        # perf script writes to a file (as a user would redirect it): reading its
        # output through a pipe into Python would add our decoding time to perf's.
        with open(script_out, "wb") as sink:
            wall, cpu, _err = _timed(["perf", "script", "-i", data], stdout=sink)
            theirs.append((wall, cpu))
        with open(script_out, "rb") as f:
            n_perf = sum(1 for line in f if line.strip() and not line[:1].isspace())
    for path in (cap, data, script_out):
        os.unlink(path)
    t_ours = statistics.median(w for w, _c in ours)
    t_perf = statistics.median(w for w, _c in theirs)
    c_ours = statistics.median(c for _w, c in ours)
    c_perf = statistics.median(c for _w, c in theirs)
    per_ours, per_perf = t_ours / n_ours, t_perf / n_perf
    print(f"post-processing ({rounds} rounds of the workload at 999 Hz, medians of "
          f"{args.pp_repeat}, whole commands incl. start-up; {len(os.sched_getaffinity(0))} "
          "CPUs, report's default -j):")
    print(f"  sframe-prof report  N = {n_ours} samples: {t_ours:.3f} s wall "
          f"({min(w for w, _c in ours):.3f}..{max(w for w, _c in ours):.3f}), "
          f"{per_ours * 1e6:.1f} us/sample; CPU {c_ours:.3f} s")
    print(f"  perf script         N = {n_perf} samples: {t_perf:.3f} s wall "
          f"({min(w for w, _c in theirs):.3f}..{max(w for w, _c in theirs):.3f}), "
          f"{per_perf * 1e6:.1f} us/sample; CPU {c_perf:.3f} s")
    print(f"  RESULT N={n_ours}: perf script / sframe-prof report per sample: wall "
          f"{per_perf / per_ours:.2f}x, CPU {(c_perf / n_perf) / (c_ours / n_ours):.2f}x "
          "(goal: >= 5x)")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20000,
                    help="workload size for the slowdowns (default 20000, about 2 s)")
    ap.add_argument("--repeat", type=int, default=7, help="rounds per rate (default 7)")
    ap.add_argument("--pp-rounds", type=int, nargs="+", default=[200000, 600000],
                    help="workload sizes for post-processing (default 200000 600000: "
                         "about 20,000 and 65,000 samples at 999 Hz)")
    ap.add_argument("--pp-repeat", type=int, default=3)
    ap.add_argument("--skip-slowdown", action="store_true")
    ap.add_argument("--skip-post", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_capture.py needs root (BPF and perf events)", file=sys.stderr)
        return 1
    if shutil.which("perf") is None:
        print("perf not found (Debian: linux-perf)", file=sys.stderr)
        return 1
    # As an installed package: bytecode compiled once, not at every start.
    subprocess.run([PY, "-m", "compileall", "-q", str(REPO / "profiler")], check=True,
                   stdout=subprocess.DEVNULL, env=ENV)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_slowdown:
            slowdowns(args, tmp)
        if not args.skip_post:
            for rounds in args.pp_rounds:
                postprocessing(args, tmp, rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
