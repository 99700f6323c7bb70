#!/usr/bin/env python3
"""What the user-stack copy size (`--stack-size`) buys and costs on the wild panel (root).

For each program, over one window, one `sframe-prof -p PID` per size (default 16384,
32768, 65536) samples the same process at the same time, so every size sees the same
work.  Per size it reports:

  trunc%     samples whose chain ends in `stack-truncated` (a read past the copy)
  root%      samples whose user chain reaches a true root (scripts/wild/stackcmp.py)
  rel%       samples labelled reliable
  bpf ns/run     the BPF handler's mean run time, run_time_ns / run_cnt from the prog
                 fd's /proc/PID/fdinfo with kernel.bpf_stats_enabled=1 (every run: in -p
                 mode the handler also runs, and returns at once, for other processes'
                 ticks; bpf runs is run_cnt)
  bpf ns/sample  run_time_ns over the samples taken: the handler's cost per sample kept
  ring B     ring-buffer bytes reserved per sample (the fixed record: 1608 + size)
  cpu s      the profiler's user+system CPU over the whole run (getrusage of the child:
             start-up, sampling and the unwinding at the end)
  maxrss MB  its peak resident set

Beside them, perf --call-graph dwarf at 16384 and at its maximum, 65528 bytes, gives an
independent view: its root% at both sizes (programs perf unwinds with DWARF only).

A separate `sframe-prof record --stack-size 65536` over a second window, unwound here,
gives what each sample's chain needs: the bytes from SP to the CFA of the outermost
frame of each reliable chain, so the share a smaller copy cuts short is read off:
  >16K%, >32K%   samples whose chain needs more than 16 / 32 KiB (or more than 64 KiB)
  >64K%          samples still stack-truncated at 64 KiB
  need p50/p99   bytes from SP to the outermost CFA (reliable chains)

    sudo .venv/bin/python scripts/wild/bench_stack_size.py [--only py310,cxx]
        [--stack-sizes 16384,32768,65536] [--seconds 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]

import live_panel  # noqa: E402
import stackcmp  # noqa: E402

RECORD_HEADER = 1608          # struct sframe_sample without stack[] + the CHUNK slack


def prog_stats(pid: int) -> tuple[int, int]:
    """Summed run_time_ns and run_cnt of the perf_event BPF programs `pid` holds."""
    ns = cnt = 0
    try:
        infos = list(Path(f"/proc/{pid}/fdinfo").iterdir())
    except OSError:                  # exited
        return 0, 0
    for info in infos:
        try:
            text = info.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if fields.get("prog_type", "").strip() != "7":      # BPF_PROG_TYPE_PERF_EVENT
            continue
        ns += int(fields.get("run_time_ns", "0"))
        cnt += int(fields.get("run_cnt", "0"))
    return ns, cnt


def wait_rusage(proc: subprocess.Popen[str]) -> tuple[float, float]:
    """Wait for `proc`; its CPU seconds and peak RSS in MB."""
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024


def live_sizes(prog: live_panel.Program, sizes: list[int], seconds: float, outdir: Path
               ) -> dict[int, dict[str, float]]:
    """One sframe-prof per size, started together, plus (for programs perf unwinds with
    DWARF) perf at 16 KiB and at its 65528-byte maximum over the same window."""
    target, helpers = live_panel.start(prog, seconds + 60)
    stats: dict[int, tuple[int, int]] = {}
    usage: dict[int, tuple[float, float]] = {}
    perf_data = {n: outdir / f"{prog.name}.perf{n}.data" for n in (16384, 65528)}
    try:
        time.sleep(prog.warmup)
        spawned = {s: live_panel.spawn_sframe_prof(
            target.pid, outdir / f"{prog.name}-{s}.pb.gz", seconds, s) for s in sizes}
        procs = {s: live_panel.wait_sampling(p) for s, p in spawned.items()}
        perfs = ([live_panel.perf_record(target.pid, d, seconds, n)
                  for n, d in perf_data.items()] if prog.callgraph == "dwarf" else [])
        # the handlers' totals, read every 0.2 s until each profiler closes its prog fd
        # (when sampling stops): the last reading misses at most 0.2 s of runs
        deadline = time.monotonic() + seconds + 30
        while time.monotonic() < deadline:
            # (no poll(): it would reap the child, whose rusage wait4 reads below)
            now = {s: prog_stats(p.pid) for s, p in procs.items()}
            live = {s: v for s, v in now.items() if v[1]}
            stats.update(live)
            if stats and not live:
                break
            time.sleep(0.2)
        errs: dict[int, str] = {}
        readers = [threading.Thread(target=lambda s=s, p=p: errs.__setitem__(
            s, p.stderr.read() if p.stderr else "")) for s, p in procs.items()]
        for t in readers:
            t.start()
        usage = {s: wait_rusage(p) for s, p in procs.items()}
        for t in readers:
            t.join()
        for perf in perfs:
            perf.wait(timeout=seconds + 60)
        for s, p in procs.items():
            if p.returncode != 0:
                raise RuntimeError(f"sframe-prof --stack-size {s}: {errs[s][-300:]}")
    finally:
        live_panel.stop([target, *helpers])
    out: dict[int, dict[str, float]] = {}
    for s in sizes:
        sym = stackcmp.Symbolizer(prog.twins)
        sf = stackcmp.read_sframe_prof(outdir / f"{prog.name}-{s}.pb.gz", sym, target.pid)
        n = sf.samples or 1
        ns, cnt = stats.get(s, (0, 0))
        out[s] = {"samples": sf.samples, "trunc": sf.reasons["stack-truncated"] / n,
                  "root": stackcmp.root_share(sf), "rel": sf.reliable / n,
                  "bpf_ns": ns / cnt if cnt else 0.0, "runs": cnt,
                  "bpf_per_sample": ns / n,
                  "ring": RECORD_HEADER + s, "cpu": usage[s][0], "rss": usage[s][1]}
    if perfs:
        sym = stackcmp.Symbolizer(prog.twins)
        for n, d in perf_data.items():
            out[-n] = {"root": stackcmp.root_share(stackcmp.read_perf(d, sym, target.pid))}
    return out


def depths(prog: live_panel.Program, seconds: float, outdir: Path) -> list[int | None]:
    """Per sample of a 64 KiB recording: bytes from SP to the CFA of the outermost frame
    of a reliable chain (the stack the chain needs), None when even 64 KiB did not
    reach the root (stack-truncated)."""
    from profiler.capture.reader import read_capture
    from profiler.unwind.objfile import ObjectCache
    from profiler.unwind.unwinder import Unwinder
    cap = outdir / f"{prog.name}.sfcap"
    target, helpers = live_panel.start(prog, seconds + 60)
    try:
        time.sleep(prog.warmup)
        run = subprocess.run([str(live_panel.SFRAME_PROF), "record", "-p", str(target.pid),
                              "-d", str(seconds), "--stack-size", "65536", "-o", str(cap)],
                             capture_output=True, text=True, timeout=seconds + 120)
        if run.returncode != 0:
            raise RuntimeError(f"sframe-prof record: {run.stderr[-300:]}")
    finally:
        live_panel.stop([target, *helpers])
    unwinder = Unwinder(ObjectCache())
    out: list[int | None] = []
    for sample in read_capture(cap).iter_samples():
        if sample.pid != target.pid or not sample.stack:
            continue
        chain = unwinder.unwind(sample)
        if chain.reason == "stack-truncated":
            out.append(None)
        elif chain.reliable:
            cfas = [f.cfa for f in chain.frames if f.cfa is not None]
            if cfas:
                out.append(max(cfas) - sample.regs["sp"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="py311,py310,perl,cxx,go1.19.8-goroutines")
    ap.add_argument("--stack-sizes", default="16384,32768,65536")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--outdir", type=Path, default=live_panel.BUILD / "stack-size")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_stack_size: needs root", file=sys.stderr)
        return 1
    sizes = [int(x) for x in args.stack_sizes.split(",")]
    args.outdir.mkdir(parents=True, exist_ok=True)
    live_panel.build_cxx()
    live_panel.corpus()
    wanted = args.only.split(",")
    progs = [p for p in live_panel.panel() + live_panel.go_programs(live_panel.build_go())
             if p.name in wanted and all(n.exists() for n in p.needs)]
    knob = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = knob.read_text().strip()
    knob.write_text("1")
    rows: list[list[str]] = []
    copies: list[list[str]] = []
    try:
        for prog in progs:
            try:
                res = live_sizes(prog, sizes, args.seconds, args.outdir)
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                rows.append([prog.name, "error: " + str(e)[:80]] + [""] * 10)
                continue
            for s, r in res.items():
                if s < 0:
                    continue
                rows.append([prog.name, str(s), str(int(r["samples"])),
                             f"{100 * r['trunc']:.1f}", f"{100 * r['root']:.1f}",
                             f"{100 * r['rel']:.1f}", f"{r['bpf_ns']:.0f}",
                             f"{r['bpf_per_sample']:.0f}",
                             str(int(r["runs"])), str(int(r["ring"])),
                             f"{r['cpu']:.2f}", f"{r['rss']:.0f}"])
            perf_roots = "/".join(f"{100 * res[-n]['root']:.1f}" for n in (16384, 65528)
                                  if -n in res) or "-"
            try:
                need = depths(prog, args.seconds, args.outdir)
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                copies.append([prog.name, "error: " + str(e)[:80]] + [""] * 6)
                continue
            known = sorted(d for d in need if d is not None)
            if need and known:
                q = (statistics.quantiles(known, n=100, method="inclusive") if len(known) > 1
                     else known * 99)
                copies.append([prog.name, str(len(need)),
                               f"{100 * sum(d is None or d > 16384 for d in need) / len(need):.1f}",
                               f"{100 * sum(d is None or d > 32768 for d in need) / len(need):.1f}",
                               f"{100 * sum(d is None for d in need) / len(need):.1f}",
                               str(int(q[49])), str(int(q[98])), str(known[-1]), perf_roots])
            print(f"  {prog.name} done", file=sys.stderr, flush=True)
    finally:
        knob.write_text(old)
        report(rows, copies)
    return 0


def report(rows: list[list[str]], copies: list[list[str]]) -> None:
    print(live_panel.git_state())
    print(stackcmp.rows_table(["program", "size", "samples", "trunc%", "root%", "rel%",
                               "bpf ns/run", "bpf ns/sample", "bpf runs", "ring B", "cpu s",
                               "maxrss MB"], rows))
    print()
    print(stackcmp.rows_table(["program", "samples", ">16K%", ">32K%", ">64K%", "need p50",
                               "need p99", "need max", "perf root% 16K/64K"], copies))


if __name__ == "__main__":
    sys.exit(main())
