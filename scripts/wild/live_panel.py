#!/usr/bin/env python3
"""The live half of the wild panel: `sframe-prof -p PID` against `perf record
--call-graph dwarf` on real programs, over the same sampling window (root).

For each program: start it, let it warm up, start `sframe-prof -p PID -d S -F 99` and,
as soon as it samples, two concurrent `perf record -e cpu-clock -F 99 --call-graph
dwarf,STACK -p PID -- sleep S` (two perf runs give the noise floor: perf A against
perf B, which samples at 101 Hz so that its instants are not perf A's).  Same pid,
every thread of it, same event, same stack copy size, windows a few ms apart (Go:
perf unwinds with frame pointers, `[fp]`, since its DWARF unwinding of Go 1.19
binaries stops after the leaf here: mean chain 1.0, 0% rooted; frame pointers miss the
caller of a leaf that has not pushed its frame yet, and every frame of cgo's C code
built without them, so for Go the whole-stack figures overstate the difference and the
leaf figures are the exact ones).  Then `perf script`
and sframe-prof's pprof are reduced to user chains of function keys by one symbolizer
(scripts/wild/stackcmp.py explains the normalisation: file offsets looked up in the
files' own symbol tables, so neither tool's naming counts), and the figures are
printed:

  samples      sframe-prof / perf A / perf B
  rel%         sframe-prof samples labelled reliable (pprof `unwind` label)
  root%        samples whose outermost frame is a true root (_start, clone3 /
               start_thread, Go's goexit / mstart / rt0_go): sframe-prof, perf A, perf B
  len          mean (median) user chain length, sframe-prof then perf A
  short%       chains that are a proper leaf-first prefix of one of perf A's (the same
               stack, cut before the root): sframe-prof, then perf B as the noise floor
  leafTVD      total variation distance of the leaf-function distributions,
               sframe-prof vs perf A, then perf B vs perf A (noise)
  stackTVD     the same for whole user chains
  reasons      sframe-prof's top unreliable reasons, in samples

    sudo .venv/bin/python scripts/wild/live_panel.py [--only NAME[,NAME]] [--seconds 8]

Names: py311 py310 perl cxx gzip xz sqlite3 openssl and go<version>-<program>[.stripped]
(scripts/wild/build_go.sh's amd64 builds with the host's go; .pie builds only with
--only).  --only takes name prefixes.  The whole panel takes about 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(REPO)]

import stackcmp  # noqa: E402

BUILD = REPO / "build" / "wild"
SRC = REPO / "tests" / "wild" / "src"
SFRAME_PROF = REPO / ".venv" / "bin" / "sframe-prof"
# perf B samples at another rate: two per-thread cpu-clock events started together at
# the same rate fire at nearly the same instants (their leaf counts matched to +-1),
# which hides the sampling noise the noise floor is for.
PERF_B_HZ = 101


@dataclass
class Program:
    name: str
    argv: list[str]                          # {S} is replaced by the run's seconds
    stdin_cmd: list[str] | None = None       # a producer piped into stdin
    stdin_file: Path | None = None
    twins: dict[str, str] = field(default_factory=dict)
    warmup: float = 0.7
    needs: list[Path] = field(default_factory=list)
    callgraph: str = "dwarf"                 # perf's unwinding: dwarf, or fp (Go)


def build_cxx() -> Path:
    src = SRC / "cxx" / "cxxload.cpp"
    out = BUILD / "cxxload"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        BUILD.mkdir(parents=True, exist_ok=True)
        subprocess.run(["g++", "-O2", "-g", "-pthread", "-o", str(out), str(src)], check=True)
    return out


def build_go() -> list[Path]:
    """The amd64 Go programs of scripts/wild/build_go.sh, built with the host's go."""
    script = REPO / "scripts" / "wild" / "build_go.sh"
    if not script.exists():
        return []
    goroot = subprocess.run(["go", "env", "GOROOT"], capture_output=True, text=True,
                            check=True).stdout.strip()
    out = BUILD / "go"
    subprocess.run([str(script), str(out), goroot], check=True, stdout=subprocess.DEVNULL)
    return sorted(p for p in out.glob("go*/amd64/*") if p.name != "BUILT" and p.is_file())


def corpus() -> Path:
    """About 8 MB of text that compresses like text (seeded, so the same every run)."""
    out = BUILD / "corpus.txt"
    if not out.exists():
        BUILD.mkdir(parents=True, exist_ok=True)
        rng = random.Random(7)
        words = ["".join(rng.choice("etaoinshrdlucmfw") for _ in range(rng.randint(2, 9)))
                 for _ in range(3000)]
        with open(out, "w") as f:
            for _ in range(1_300_000):
                f.write(rng.choice(words) + (" " if rng.random() < 0.9 else "\n"))
    return out


def panel() -> list[Program]:
    pyload = str(SRC / "pyload.py")
    loop = ["sh", "-c", f'while :; do cat "{BUILD / "corpus.txt"}"; done']
    progs = [
        Program("py311", ["/usr/bin/python3.11", pyload, "{S}"]),
        Program("py310", ["/root/.pyenv/versions/3.10.13/bin/python3.10", pyload, "{S}"]),
        Program("perl", ["/usr/bin/perl", str(SRC / "plload.pl"), "{S}"],
                needs=[SRC / "plload.pl"]),
        Program("cxx", [str(BUILD / "cxxload"), "{S}"]),
        Program("gzip", ["gzip", "-6"], stdin_cmd=loop),
        Program("xz", ["xz", "-6", "-T1"], stdin_cmd=loop),
        Program("sqlite3", ["sqlite3", ":memory:"],
                stdin_file=REPO / "scripts" / "wild" / "panel_sqlload.sql", warmup=2.0),
        Program("openssl", ["openssl", "speed", "-seconds", "3", "-bytes", "8192",
                            "sha256", "rsa2048", "ecdsap256"], warmup=0.5),
    ]
    return progs


def text_of(path: Path) -> tuple[int, bytes] | None:
    from elftools.elf.elffile import ELFFile
    with open(path, "rb") as f:
        sec = ELFFile(f).get_section_by_name(".text")
        return (sec["sh_addr"], sec.data()) if sec is not None else None


def go_programs(binaries: list[Path]) -> list[Program]:
    out = []
    for b in binaries:
        ver = b.parent.parent.name
        if b.name.endswith(".stripped"):
            # named from its DWARF build when the code is the same bytes at the same place
            twin = b.with_name(b.name.removesuffix(".stripped"))
            twins = {str(b): str(twin)} if text_of(b) == text_of(twin) else {}
            out.append(Program(f"{ver}-{b.name}", [str(b), "{S}"], twins=twins,
                               callgraph="fp"))
        else:
            out.append(Program(f"{ver}-{b.name}", [str(b), "{S}"], callgraph="fp"))
    return out


def start(prog: Program, seconds: float) -> tuple[subprocess.Popen[bytes], list[
        subprocess.Popen[bytes]]]:
    argv = [a.replace("{S}", str(int(seconds))) for a in prog.argv]
    helpers: list[subprocess.Popen[bytes]] = []
    stdin: int | object = subprocess.DEVNULL
    if prog.stdin_cmd:
        producer = subprocess.Popen(prog.stdin_cmd, stdout=subprocess.PIPE,
                                    start_new_session=True)
        helpers.append(producer)
        stdin = producer.stdout
    elif prog.stdin_file:
        stdin = open(prog.stdin_file, "rb")  # noqa: SIM115 -- closed with the process
    target = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.DEVNULL,  # type: ignore
                              stderr=subprocess.DEVNULL, start_new_session=True)
    return target, helpers


def perf_record(pid: int, out: Path, seconds: float, stack: int,
                callgraph: str = "dwarf", hz: int = 99) -> subprocess.Popen[bytes]:
    mode = f"dwarf,{min(stack, 65528)}" if callgraph == "dwarf" else callgraph
    out.unlink(missing_ok=True)          # else perf keeps the previous run as .old
    return subprocess.Popen(
        ["perf", "record", "-q", "-N", "-B", "-e", "cpu-clock", "-F", str(hz),
         "--call-graph", mode, "-p", str(pid), "-o", str(out),
         "--", "sleep", str(seconds)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def spawn_sframe_prof(pid: int, out: Path, seconds: float, stack: int,
                      extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(SFRAME_PROF), "-p", str(pid), "-d", str(seconds), "-F", "99",
         "--stack-size", str(stack), "-o", str(out), "--folded",
         str(out.with_suffix("").with_suffix(".folded")), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def sframe_prof(pid: int, out: Path, seconds: float, stack: int,
                extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """Start sframe-prof and return once it samples (its first stderr line)."""
    return wait_sampling(spawn_sframe_prof(pid, out, seconds, stack, extra))


def wait_sampling(proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
    assert proc.stderr is not None
    first = proc.stderr.readline()
    if not first.startswith("sframe-prof: sampling"):
        proc.kill()
        rest = proc.stderr.read()
        raise RuntimeError(f"sframe-prof did not start: {first.strip()} {rest.strip()[:300]}")
    return proc


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait()


def record(prog: Program, seconds: float, outdir: Path, stack: int = 16384) -> int:
    """Profile `prog` with sframe-prof and two perf runs over one window; its pid."""
    outdir.mkdir(parents=True, exist_ok=True)
    target, helpers = start(prog, seconds + 60)
    try:
        time.sleep(prog.warmup)
        if target.poll() is not None:
            raise RuntimeError(f"{prog.name} exited early (status {target.returncode})")
        pb = outdir / f"{prog.name}.pb.gz"
        sf = sframe_prof(target.pid, pb, seconds, stack)
        perfs = [perf_record(target.pid, outdir / f"{prog.name}.perf{x}.data", seconds, stack,
                             prog.callgraph, hz) for x, hz in (("A", 99), ("B", PERF_B_HZ))]
        for p in perfs:
            _, err = p.communicate(timeout=seconds + 60)
            if p.returncode != 0:
                raise RuntimeError(f"perf record failed: {err.decode()[-300:]}")
        _, sf_err = sf.communicate(timeout=seconds + 300)
        if sf.returncode != 0:
            raise RuntimeError(f"sframe-prof failed: {sf_err.strip()[-300:]}")
    finally:
        stop([target, *helpers])
    return target.pid


def compare(prog: Program, pid: int, outdir: Path) -> dict[str, object]:
    sym = stackcmp.Symbolizer(prog.twins)
    sf = stackcmp.read_sframe_prof(outdir / f"{prog.name}.pb.gz", sym, pid)
    pa = stackcmp.read_perf(outdir / f"{prog.name}.perfA.data", sym, pid)
    pb = stackcmp.read_perf(outdir / f"{prog.name}.perfB.data", sym, pid)
    summary = stackcmp.summarize(sf, pa, pb)
    names = stackcmp.demangle(stackcmp.top(stackcmp.leaves(pa), 5)
                              + stackcmp.top(stackcmp.leaves(sf), 5))
    summary["top_leaves_perf"] = [names[k] for k in stackcmp.top(stackcmp.leaves(pa), 5)]
    summary["top_leaves_sf"] = [names[k] for k in stackcmp.top(stackcmp.leaves(sf), 5)]
    return summary


def saved_pid(pprof: Path) -> int:
    """The pid most samples of a saved sframe-prof profile belong to."""
    from collections import Counter

    from profiler.emit.pprof_read import read_pprof
    pids: Counter[int] = Counter()
    for s in read_pprof(str(pprof)).samples:
        pids[int(s.labels.get("pid", 0))] += s.values[0]
    if not pids:
        raise RuntimeError(f"{pprof}: no samples")
    return pids.most_common(1)[0][0]


def table(results: dict[str, dict[str, object]]) -> str:
    pct = stackcmp.format_pct
    rows = []
    for name, r in results.items():
        if "error" in r:
            rows.append([name, "error"] + [""] * 7)
            continue
        ls, lp = r["len_sf"], r["len_perf"]
        assert isinstance(ls, tuple) and isinstance(lp, tuple)
        reasons = r["reasons"]
        assert isinstance(reasons, list)
        rows.append([
            name, f"{r['samples']}/{r['perf_a']}/{r['perf_b']}",
            pct(float(r["reliable"])),  # type: ignore[arg-type]
            "/".join(pct(float(r[k])).strip()  # type: ignore[arg-type]
                     for k in ("root_sf", "root_perf", "root_perf_b")),
            f"{ls[0]:.1f}({ls[1]:.0f})/{lp[0]:.1f}({lp[1]:.0f})",
            f"{pct(float(r['shorter_sf'])).strip()}/{pct(float(r['shorter_b'])).strip()}",  # type: ignore[arg-type]
            f"{float(r['leaf_tvd']):.3f}/{float(r['leaf_tvd_noise']):.3f}",  # type: ignore[arg-type]
            f"{float(r['stack_tvd']):.3f}/{float(r['stack_tvd_noise']):.3f}",  # type: ignore[arg-type]
            " ".join(f"{k}:{n}" for k, n in reasons[:3]),
        ])
    return stackcmp.rows_table(
        ["program", "samples sf/A/B", "rel%", "root% sf/A/B", "len mean(med) sf/A",
         "short% sf/B", "leafTVD sf/noise", "stackTVD sf/noise", "top reasons"], rows)


def git_state() -> str:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    stat = subprocess.run(["git", "-C", str(REPO), "diff", "--stat"],
                          capture_output=True, text=True).stdout.strip().splitlines()
    return f"HEAD {head}; git diff --stat: {stat[-1].strip() if stat else 'clean'}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated program names (prefixes match)")
    ap.add_argument("--seconds", type=float, default=8.0, help="sampling window (8)")
    ap.add_argument("--stack-size", type=int, default=16384)
    ap.add_argument("--outdir", type=Path, default=BUILD / "live")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--reuse", action="store_true",
                    help="compare the recordings already in --outdir, record nothing")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("live_panel: needs root (BPF, perf)", file=sys.stderr)
        return 1
    for tool in ("perf", "g++", "sqlite3", "xz", "gzip", "openssl", "c++filt"):
        if not shutil.which(tool):
            print(f"live_panel: {tool} is missing", file=sys.stderr)
            return 1
    build_cxx()
    corpus()
    progs = panel() + go_programs(build_go())
    if args.only:
        wanted = args.only.split(",")
        progs = [p for p in progs if any(p.name.startswith(w) for w in wanted)]
    else:   # the Go PIE builds only when asked for, to keep the panel under 3 minutes
        progs = [p for p in progs if not p.name.endswith(".pie")]
    print(git_state(), flush=True)
    results: dict[str, dict[str, object]] = {}
    pending: dict[str, Future[dict[str, object]]] = {}
    # perf script and the comparison of one program run while the next one is sampled
    with ThreadPoolExecutor(max_workers=1) as pool:
        for prog in progs:
            label = prog.name + ("[fp]" if prog.callgraph == "fp" else "")
            missing = [str(n) for n in prog.needs if not n.exists()]
            if missing:
                results[label] = {"error": f"missing {', '.join(missing)}"}
                continue
            t0 = time.monotonic()
            try:
                pid = (saved_pid(args.outdir / f"{prog.name}.pb.gz") if args.reuse
                       else record(prog, args.seconds, args.outdir, args.stack_size))
                pending[label] = pool.submit(compare, prog, pid, args.outdir)
                results[label] = {}
            except (RuntimeError, subprocess.SubprocessError, OSError) as e:
                results[label] = {"error": str(e)}
            print(f"  {label}: {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
        for label, fut in pending.items():
            try:
                results[label] = fut.result()
            except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as e:
                results[label] = {"error": str(e)}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=list))
    print(table(results))
    for name, r in results.items():
        if "error" in r:
            print(f"{name}: {r['error']}")
        if "top_leaves_perf" in r:
            print(f"{name}: top leaves perf A {r['top_leaves_perf']}\n"
                  f"{' ' * len(name)}  sframe-prof {r['top_leaves_sf']}\n"
                  f"{' ' * len(name)}  shorter chains stop in {r['short_stops']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
