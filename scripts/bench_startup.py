#!/usr/bin/env python3
"""Start-up of a live run: time from `sframe-prof -p PID` to the first sample, and peak RSS.

Each round starts the profiler on a busy target (by default a Python busy loop, whose
interpreter is a large binary with .eh_frame) on a quiet machine and again with CPU
hogs running beside it (the loaded case: by default 2, one per core here).  The
profiler runs with SFRAME_PROF_TIMINGS=1, so its sampler prints the CLOCK_MONOTONIC
times of its start-up steps (profiler/capture/bcc_source.py, StartupTimes); with the
time of the spawn taken here, the time to the first sample splits into

    start     interpreter start, imports, checks, up to the BPF compile
    compile   bcc: clang on bpf/sample.bpf.c, maps created, program loaded
              (also given as the CPU time the profiler spent in it, which another
              process's load does not inflate)
    attach    the perf event opened on every CPU
    first     until the first sample is read (the session's set-up before its loop,
              then the first poll)
    total     spawn to the first sample read; `total_cpu` the profiler's CPU time
              over the same span (nearly what the total comes to on a quiet machine:
              the start-up is CPU-bound but for the wait for the first sample, about
              one sampling period); `kernel` spawn to the kernel's timestamp of that
              sample

On a shared host nobody can make quiet, --quiet-nice -10 runs the quiet case's
profiler ahead of the others' work; the CPU times hold either way.

Peak RSS (wait4's ru_maxrss) is taken for `sframe-prof -p` and `sframe-prof record` and,
in the same rounds, for `perf record --call-graph dwarf,16384 -p` on the same target;
besides the peak, the profiler's VmRSS is traced every 20 ms and its largest value
while it samples (first sample to the end of -d) is given.  Every figure is the
median over the rounds, with min..max.

Run as root:  .venv/bin/python scripts/bench_startup.py [--rounds N] [--hogs N]
                  [--duration S] [--quiet-nice N] [-- TARGET COMMAND]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
BUSY_LOOP = ["/usr/bin/python3", "-c", "while 1: pass"]
TIMES_LINE = re.compile(r"sframe-prof: startup \(CLOCK_MONOTONIC ns\): (.*)")
PHASES = ("start", "compile", "compile_cpu", "attach", "first", "total", "total_cpu",
          "kernel")


@dataclass
class Run:
    rc: int
    maxrss_kb: int
    phases: dict[str, float] = field(default_factory=dict)   # seconds
    stderr: str = ""
    rss_trace: list[tuple[int, int]] = field(default_factory=list)  # (monotonic ns, kB)

    def rss_between(self, lo_ns: int, hi_ns: int) -> float:
        """Largest VmRSS (MB) seen between two CLOCK_MONOTONIC times."""
        kbs = [kb for t, kb in self.rss_trace if lo_ns <= t <= hi_ns]
        return max(kbs) / 1024 if kbs else float("nan")


def trace_rss(pid: int, out: list[tuple[int, int]], done: threading.Event) -> None:
    """VmRSS of `pid` every 20 ms until `done` is set or the process is gone."""
    while not done.wait(0.02):
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as f:
                kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration, ValueError):
            return
        out.append((time.monotonic_ns(), kb))


def spawn_waited(cmd: list[str], env: dict[str, str], stop_after: float | None,
                 nice: int = 0) -> Run:
    """Run `cmd` (at `nice`); SIGINT it after `stop_after` seconds (None: let it end by
    itself).  Returns its exit status, peak RSS and stderr, the spawn time in `phases`."""
    t0 = time.monotonic_ns()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, env=env, cwd=REPO,
                         preexec_fn=(lambda: os.nice(nice)) if nice else None)
    trace: list[tuple[int, int]] = []
    done = threading.Event()
    tracer = threading.Thread(target=trace_rss, args=(p.pid, trace, done), daemon=True)
    tracer.start()
    if stop_after is not None:
        time.sleep(stop_after)
        p.send_signal(signal.SIGINT)
    assert p.stderr is not None
    err = p.stderr.read()
    done.set()
    tracer.join()
    _pid, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    run = Run(p.returncode, usage.ru_maxrss, stderr=err, rss_trace=trace)
    run.phases["spawn_ns"] = t0
    return run


def sframe_prof(args: list[str], duration: float, nice: int = 0) -> Run:
    env = dict(os.environ, SFRAME_PROF_TIMINGS="1")
    run = spawn_waited([PY, "-m", "profiler", *args, "-q", "-d", str(duration)], env, None,
                       nice)
    m = TIMES_LINE.search(run.stderr)
    if run.rc != 0 or m is None:
        raise SystemExit(f"sframe-prof {' '.join(args)} failed (exit {run.rc}), or printed "
                         f"no start-up times:\n{run.stderr}")
    t = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    t0 = run.phases.pop("spawn_ns")
    run.phases = {
        "start": (t["compile_start"] - t0) / 1e9,
        "compile": (t["compile_end"] - t["compile_start"]) / 1e9,
        "compile_cpu": t["compile_cpu"] / 1e9,
        "attach": (t["attach_end"] - t["compile_end"]) / 1e9,
        "first": (t["first_read"] - t["attach_end"]) / 1e9,
        "total": (t["first_read"] - t0) / 1e9,
        "total_cpu": t.get("cpu_to_first", 0) / 1e9,
        "kernel": (t["first_sample"] - t0) / 1e9,
    }
    # RSS while sampling: from the first sample to the end of the -d window
    run.phases["rss_sampling"] = run.rss_between(
        t["first_read"], t["first_read"] + int(duration * 0.9e9))
    return run


def perf_record(pid: int, duration: float, out: str) -> Run:
    run = spawn_waited(["perf", "record", "-q", "-F", "99", "-e", "cpu-clock",
                        "--call-graph", "dwarf,16384", "-o", out, "-p", str(pid)],
                       dict(os.environ), duration)
    if run.rc not in (0, -signal.SIGINT, 130):
        raise SystemExit(f"perf record failed (exit {run.rc}):\n{run.stderr}")
    return run


def hogs(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen(BUSY_LOOP) for _ in range(n)]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def spread(xs: list[float], unit: str = "s", fmt: str = ".3f") -> str:
    return (f"{statistics.median(xs):{fmt}} {unit} "
            f"({min(xs):{fmt}}..{max(xs):{fmt}})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hogs", type=int, default=2, help="CPU hogs in the loaded case")
    ap.add_argument("--duration", type=float, default=1.0,
                    help="seconds each profiler samples (default 1)")
    ap.add_argument("--quiet-nice", type=int, default=0, metavar="N",
                    help="run the quiet case's `sframe-prof -p` at nice N (e.g. -10: a "
                         "quiet machine where other people's work cannot be stopped)")
    ap.add_argument("target", nargs="*", help="busy target command (default: a Python "
                    "busy loop)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_startup.py needs root (BPF and perf events)")
    target_cmd = args.target or BUSY_LOOP
    # The project's bytecode compiled once, as an installed package has it.
    subprocess.run([PY, "-m", "compileall", "-q", str(REPO / "profiler")], check=True)

    runs: dict[str, list[Run]] = {"quiet": [], "loaded": []}
    rss: dict[str, list[float]] = {"-p": [], "record": [], "perf record": []}
    steady: dict[str, list[float]] = {"-p": [], "record": []}
    loads: dict[str, list[float]] = {"quiet": [], "loaded": []}
    target = subprocess.Popen(target_cmd)
    try:
        time.sleep(0.5)
        with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
            out = os.path.join(tmp, "p.pb.gz")
            for r in range(args.rounds):
                loads["quiet"].append(os.getloadavg()[0])
                run = sframe_prof(["-p", str(target.pid), "-o", out], args.duration,
                                  args.quiet_nice)
                runs["quiet"].append(run)
                rss["-p"].append(run.maxrss_kb / 1024)
                steady["-p"].append(run.phases["rss_sampling"])
                rec = sframe_prof(["record", "-p", str(target.pid), "-o",
                                   os.path.join(tmp, f"c{r}.sfpcap")], args.duration)
                rss["record"].append(rec.maxrss_kb / 1024)
                steady["record"].append(rec.phases["rss_sampling"])
                rss["perf record"].append(
                    perf_record(target.pid, args.duration,
                                os.path.join(tmp, "perf.data")).maxrss_kb / 1024)
                if args.hogs:
                    busy = hogs(args.hogs)
                    try:
                        time.sleep(0.5)
                        loads["loaded"].append(os.getloadavg()[0])
                        runs["loaded"].append(
                            sframe_prof(["-p", str(target.pid), "-o", out], args.duration))
                    finally:
                        stop(busy)
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        target.kill()
        target.wait()

    print(f"target: {' '.join(target_cmd)}; {args.rounds} rounds; loaded = {args.hogs} CPU "
          f"hogs on {os.cpu_count()} CPUs; quiet at nice {args.quiet_nice}; "
          "medians (min..max)")
    for mode, rs in runs.items():
        if not rs:
            continue
        print(f"{mode} (1-min load average at the runs: {spread(loads[mode], '', '.2f')})")
        for ph in PHASES:
            print(f"  {ph:<12} {spread([x.phases[ph] for x in rs])}")
    base = statistics.median(rss["perf record"])
    print("peak RSS (ru_maxrss)")
    for name, xs in rss.items():
        print(f"  {name:<12} {spread(xs, 'MB', '.1f')}  "
              f"x{statistics.median(xs) / base:.1f} perf record")
    print("RSS while sampling (largest VmRSS from the first sample to the end of -d)")
    for name, xs in steady.items():
        print(f"  {name:<12} {spread(xs, 'MB', '.1f')}  "
              f"x{statistics.median(xs) / base:.1f} perf record's peak")
    return 0


if __name__ == "__main__":
    sys.exit(main())
