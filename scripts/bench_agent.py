#!/usr/bin/env python3
"""The fleet agent's cost on this machine, against `perf record -a -F 19 -g`.

Both run at the same time, over the same period, on the same busy workload:

* one long-running tests/targets prog with a worker thread per CPU (all CPUs busy);
* churn: a short-lived child process (prog, ~50-100 ms of CPU) started every
  `--churn-interval` seconds (default 1: "processes starting and exiting every
  second"; the churn test uses 0.1);

`sframe-prof agent` samples the whole host at 19 Hz in 10 s windows and ships every
profile to a loopback Pyroscope receiver (profiler.app.agent.receiver) and to a directory;
`perf record -a -F 19 -g` records the whole host to a file.  Both are measured over the
same period (from the agent's first window on), with the same workload.  Every
`--every` seconds the script reads each one's CPU time (all threads) and RSS (psutil);
at the end it prints, for each, CPU % of one core over the whole run and over each
half, RSS at the first reading, the middle, the end and its maximum, RSS over time, and
the RSS slope over the second half (MB per hour: flat means close to 0).  It also says
how busy the host's CPUs were and how many processes started on it during the run:
other jobs on a shared machine are profiled by the agent too, and each new program
costs it its first-sight work.  Goals (issue 5): agent under 1% of one core and under
150 MB RSS, flat over time; the JSON has the verdicts, stderr a summary table.

Run as root:  .venv/bin/python scripts/bench_agent.py [--duration 600] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from profiler.app.agent.receiver import Receiver  # noqa: E402

ARCH = "aarch64" if platform.machine() in ("aarch64", "arm64") else "x86_64"
PROG = REPO / "tests" / "targets" / f"v1host-{ARCH}-O2" / "prog"


def workload(stop: threading.Event, cpus: int,
             interval: float = 1.0) -> tuple[subprocess.Popen[bytes], threading.Thread]:
    busy = subprocess.Popen([str(PROG), "0", "2000", str(max(1, cpus - 1))],
                            stdout=subprocess.DEVNULL)

    def churn() -> None:
        kids: list[subprocess.Popen[bytes]] = []
        while not stop.is_set():
            kids.append(subprocess.Popen([str(PROG), "1", "300000", "0"],
                                         stdout=subprocess.DEVNULL))
            time.sleep(interval)
            kids = [k for k in kids if k.poll() is None]
        for k in kids:
            k.wait()

    t = threading.Thread(target=churn, daemon=True)
    t.start()
    return busy, t


def self_every(r: list[tuple[float, float, float]]) -> float:
    return r[1][0] - r[0][0] if len(r) > 1 else 1.0


class HostMeter:
    """The host around the run: how busy its CPUs were and how many processes started
    (other sessions' jobs are profiled by the agent too; they are part of its cost)."""

    def __init__(self) -> None:
        self.busy0, self.total0, self.forks0 = self._read()
        self.load0 = os.getloadavg()[0]

    @staticmethod
    def _read() -> tuple[int, int, int]:
        busy = total = forks = 0
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu "):
                    v = [int(x) for x in line.split()[1:]]
                    total = sum(v[:8])
                    busy = total - v[3] - v[4]          # minus idle and iowait
                elif line.startswith("processes "):
                    forks = int(line.split()[1])
        return busy, total, forks

    def summary(self, seconds: float) -> dict[str, float]:
        busy, total, forks = self._read()
        return {"cpus_busy_pct": round(100 * (busy - self.busy0) / max(1, total - self.total0), 1),
                "processes_started": forks - self.forks0,
                "processes_started_per_s": round((forks - self.forks0) / max(seconds, 1e-9), 2),
                "load_avg_1m_start": round(self.load0, 2),
                "load_avg_1m_end": round(os.getloadavg()[0], 2)}


class Meter:
    """CPU seconds and RSS of one process, read every few seconds."""

    def __init__(self, name: str, pid: int) -> None:
        self.name = name
        self.proc = psutil.Process(pid)
        self.t0 = time.monotonic()
        self.readings: list[tuple[float, float, float]] = []   # (t, cpu s, rss MB)

    def read(self) -> None:
        try:
            c = self.proc.cpu_times()
            rss = self.proc.memory_info().rss / (1 << 20)
        except psutil.Error:
            return
        self.readings.append((time.monotonic() - self.t0, c.user + c.system, rss))

    def summary(self) -> dict[str, Any]:
        r = self.readings
        t_end, cpu_end, _ = r[-1]
        half = [x for x in r if x[0] >= t_end / 2]
        t_mid, cpu_mid, rss_mid = half[0]
        slope = 0.0
        if len(half) >= 3:
            n = len(half)
            mt = sum(x[0] for x in half) / n
            mr = sum(x[2] for x in half) / n
            var = sum((x[0] - mt) ** 2 for x in half)
            slope = sum((x[0] - mt) * (x[2] - mr) for x in half) / var * 3600 if var else 0.0
        t_half, cpu_half, _ = half[0]
        t0, cpu0, _ = r[0]
        # one reading per minute (or per tenth of the run if shorter): RSS over time
        step = max(self_every(r), min(60.0, t_end / 10))
        series, next_t = [], 0.0
        for t, c, rss in r:
            if t >= next_t:
                series.append([round(t), round(rss, 1)])
                next_t = t + step - 1e-6
        if series[-1][0] != round(t_end):
            series.append([round(t_end), round(r[-1][2], 1)])
        return {
            "seconds": round(t_end - t0, 1),
            "cpu_pct": round(100 * (cpu_end - cpu0) / (t_end - t0), 3) if t_end > t0 else 0.0,
            "cpu_pct_first_half": round(100 * (cpu_mid - cpu0) / (t_mid - t0), 3)
            if t_mid > t0 else 0.0,
            "cpu_pct_second_half": round(100 * (cpu_end - cpu_half) / (t_end - t_half), 3)
            if t_end > t_half else 0.0,
            "cpu_seconds": round(cpu_end - cpu0, 2),
            "rss_first_mb": round(r[0][2], 1),
            "rss_mid_mb": round(rss_mid, 1),
            "rss_end_mb": round(r[-1][2], 1),
            "rss_max_mb": round(max(x[2] for x in r), 1),
            "rss_slope_mb_per_h": round(slope, 2),
            "rss_mb_over_time": series,
        }


def table(result: dict[str, Any], names: list[str]) -> str:
    """The figures issue 5 asks for, one row per measured process."""
    rows = [f"{'':34} {'CPU % of one core':>30}   {'RSS MB':>32}",
            f"{'':34} {'whole':>9} {'1st half':>9} {'2nd half':>9}   "
            f"{'first':>7} {'mid':>7} {'end':>7} {'max':>7}  slope MB/h"]
    for name in names:
        s = result[name]
        rows.append(f"{name:34} {s['cpu_pct']:9.3f} {s['cpu_pct_first_half']:9.3f} "
                    f"{s['cpu_pct_second_half']:9.3f}   {s['rss_first_mb']:7.1f} "
                    f"{s['rss_mid_mb']:7.1f} {s['rss_end_mb']:7.1f} {s['rss_max_mb']:7.1f}  "
                    f"{s['rss_slope_mb_per_h']:+.1f}")
    for name in names:
        series = " ".join(f"{t}s:{mb}" for t, mb in result[name]["rss_mb_over_time"])
        rows.append(f"RSS over time, {name}: {series}")
    h = result["host during the run"]
    rows.append(f"host: CPUs {h['cpus_busy_pct']}% busy, {h['processes_started']} processes "
                f"started ({h['processes_started_per_s']}/s), load {h['load_avg_1m_start']} -> "
                f"{h['load_avg_1m_end']}")
    rows.append("goals: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}"
                                      for k, v in result["goals (issue 5)"].items()))
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    p.add_argument("--every", type=float, default=10.0, help="reading interval (default 10)")
    p.add_argument("--freq", type=int, default=19)
    p.add_argument("--no-perf", action="store_true", help="measure the agent alone")
    p.add_argument("--churn-interval", type=float, default=1.0,
                   help="seconds between short-lived processes (default 1)")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--agent-arg", action="append", default=[],
                   help="extra agent option, e.g. --agent-arg=--group-by=service; repeatable")
    args = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_agent.py: run as root (BPF, perf -a)")
    cpus = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="bench-agent-"))
    recv = Receiver().start()
    stop = threading.Event()
    busy, churn = workload(stop, cpus, args.churn_interval)
    agent_log = open(tmp / "agent.log", "w")
    agent = subprocess.Popen(
        [sys.executable, "-m", "profiler", "agent", "-F", str(args.freq), "--window", "10",
         "--spool", str(tmp / "spool"), "--output-dir", str(tmp / "out"),
         "--output-max-bytes", "200M", "--pyroscope", recv.url, *args.agent_arg],
        cwd=REPO, stdout=agent_log, stderr=subprocess.STDOUT)
    perf = None
    if not args.no_perf:
        perf = subprocess.Popen(["perf", "record", "-a", "-F", str(args.freq), "-g", "-q",
                                 "-o", str(tmp / "perf.data")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # the agent is measured from its first window on (BPF compiled, first files read)
    deadline = time.monotonic() + 180
    while "window " not in (tmp / "agent.log").read_text():
        if agent.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the agent did not start:\n" + (tmp / "agent.log").read_text())
        time.sleep(0.5)
    meters = [Meter("sframe-prof agent", agent.pid)]
    if perf is not None:
        meters.append(Meter(f"perf record -a -F {args.freq} -g", perf.pid))
    for m in meters:
        m.read()
    host = HostMeter()
    started = time.monotonic()
    end = started + args.duration
    try:
        while time.monotonic() < end:
            time.sleep(min(args.every, max(0.0, end - time.monotonic())))
            for m in meters:
                m.read()
            if agent.poll() is not None:
                raise SystemExit("the agent exited:\n" + (tmp / "agent.log").read_text()[-2000:])
    finally:
        stop.set()
        busy.terminate()
        busy.wait()
        churn.join(10)
        agent.send_signal(signal.SIGTERM)
        if perf is not None:
            perf.send_signal(signal.SIGINT)
            perf.wait(120)
        agent.wait(120)
        recv.stop()
    result: dict[str, Any] = {m.name: m.summary() for m in meters}
    result["host during the run"] = host.summary(time.monotonic() - started)
    perf_size = (tmp / "perf.data").stat().st_size if (tmp / "perf.data").exists() else 0
    status = json.loads((tmp / "spool" / "status.json").read_text())
    result["agent totals"] = {k: status["totals"][k] for k in
                              ("samples", "lost", "reliable_pct", "windows", "profiles")}
    result["received by the loopback Pyroscope"] = {"profiles": len(recv.received),
                                                     "rejected": len(recv.rejected)}
    result["perf.data bytes"] = perf_size
    result["workload"] = {"busy_threads": cpus, "churn_interval_s": args.churn_interval,
                          "freq_hz": args.freq}
    result["machine"] = {"cpus": cpus, "arch": ARCH, "kernel": platform.release()}
    a = result[meters[0].name]
    result["goals (issue 5)"] = {
        "cpu_under_1pct_of_a_core": a["cpu_pct"] < 1.0,
        "rss_under_150mb": a["rss_max_mb"] < 150.0,
        "rss_flat (second-half slope under 10 MB/h)": abs(a["rss_slope_mb_per_h"]) < 10.0}
    print(json.dumps(result, indent=1))
    print(table(result, [m.name for m in meters]), file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"(work files in {tmp})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
