#!/usr/bin/env python3
"""Run the atheris harnesses in tests/fuzz and report executions, crashes and hangs.

    .venv/bin/python scripts/fuzz.py --seconds 600            # every target, 10 min each
    .venv/bin/python scripts/fuzz.py --runs 200000 -t sframe,cfi --jobs 2
    .venv/bin/python scripts/fuzz.py --seed                   # rewrite the seed corpus
    .venv/bin/python scripts/fuzz.py --merge                  # fold new coverage into it
    .venv/bin/python scripts/fuzz.py --summary                # executions so far, per target

Each target runs as its own libFuzzer process: ``tests/fuzz/fuzz_<t>.py`` with the work
corpus ``<workdir>/<t>/corpus`` (new inputs go there) and the committed corpus
``tests/fuzz/corpus/<t>`` (read only).  A crash or a timeout (``--timeout`` seconds on
one input: a hang) stops that target; its input is saved under
``<workdir>/<t>/artifacts/``.  Every run appends one JSON line per target to
``<workdir>/stats.jsonl``; ``--summary`` adds them up.

Exit status: 0 when no target crashed, hung or ran out of memory, 1 otherwise.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FUZZ = REPO / "tests" / "fuzz"
sys.path.insert(0, str(FUZZ))

import common  # noqa: E402

PYTHON = REPO / ".venv" / "bin" / "python"


def python() -> str:
    return str(PYTHON) if PYTHON.exists() else sys.executable


def seed(targets: list[str]) -> None:
    """Write each harness's seeds (built from the real fixtures) into its corpus folder."""
    for t in targets:
        mod = common.load_harness(t)
        d = common.CORPUS / t
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("seed-*"):
            old.unlink()
        n = size = 0
        for name, data in mod.seeds():
            if len(data) > mod.MAX_LEN:
                continue
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:80]
            (d / f"seed-{safe}").write_bytes(data)
            n += 1
            size += len(data)
        print(f"{t}: {n} seeds, {size} bytes in {d.relative_to(REPO)}")


def parse_log(text: str) -> dict[str, object]:
    """Executions and the kind of failure (if any) from a libFuzzer log."""
    m = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text)
    execs = int(m[-1]) if m else 0
    if not execs:
        done = re.findall(r"#(\d+)\s+(?:DONE|pulse|NEW|REDUCE|INITED)", text)
        execs = int(done[-1]) if done else 0
    rate = re.findall(r"stat::average_exec_per_sec:\s*(\d+)", text)
    hang = "ALARM: working on the last Unit" in text or "ERROR: libFuzzer: timeout" in text
    oom = "out-of-memory" in text or "ERROR: libFuzzer: out-of-memory" in text
    crash = (not hang and not oom and (
        "Uncaught Python exception" in text or "ERROR: libFuzzer: deadly signal" in text
        or "ERROR: AddressSanitizer" in text or "ERROR: libFuzzer:" in text))
    artifacts = re.findall(r"Test unit written to (\S+)", text)
    return {"execs": execs, "exec_per_sec": int(rate[-1]) if rate else 0,
            "crash": crash, "hang": hang, "oom": oom, "artifacts": artifacts}


def run_target(t: str, args: argparse.Namespace) -> dict[str, object]:
    work = Path(args.workdir) / t
    corpus = work / "corpus"
    artifacts = work / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [python(), str(FUZZ / f"fuzz_{t}.py"), "-print_final_stats=1",
           f"-timeout={args.timeout}", f"-rss_limit_mb={args.rss_limit_mb}",
           f"-artifact_prefix={artifacts}/"]
    if args.runs:
        cmd.append(f"-runs={args.runs}")
    if args.seconds:
        cmd.append(f"-max_total_time={args.seconds}")
    cmd += [str(corpus), str(common.CORPUS / t)]
    log = work / f"log-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    t0 = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, check=False,
                              env={**os.environ, "PYTHONHASHSEED": "0"})
    elapsed = time.monotonic() - t0
    res = parse_log(log.read_text(errors="replace"))
    if proc.returncode != 0 and not (res["crash"] or res["hang"] or res["oom"]):
        res["crash"] = True
    res.update(target=t, seconds=round(elapsed, 1), returncode=proc.returncode,
               log=str(log), corpus=sum(1 for _ in corpus.iterdir()),
               when=time.strftime("%Y-%m-%dT%H:%M:%S"))
    with open(Path(args.workdir) / "stats.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")
    return res


def merge(targets: list[str], workdir: str, max_bytes: int) -> None:
    """Add the work-corpus inputs that bring new coverage to the committed corpus."""
    for t in targets:
        src = Path(workdir) / t / "corpus"
        dst = common.CORPUS / t
        if not src.is_dir():
            continue
        before = {p.name for p in dst.iterdir()}
        cmd = [str(FUZZ / f"fuzz_{t}.py"), "-merge=1", "-timeout=30",
               f"-max_len={max_bytes}", str(dst), str(src)]
        # libFuzzer's merge reruns argv[0] (the harness, via its shebang): put the
        # interpreter that has atheris first on PATH.
        env = {**os.environ, "PATH": f"{Path(python()).parent}:{os.environ.get('PATH', '')}"}
        subprocess.run(cmd, cwd=REPO, check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=env)
        added = [p for p in dst.iterdir() if p.name not in before]
        # libFuzzer names files by their SHA-1; keep that, with a marker prefix.
        for p in added:
            p.rename(dst / f"cov-{p.name[:16]}")
        print(f"{t}: {len(added)} inputs added to {dst.relative_to(REPO)}")


def summary(workdir: str) -> int:
    path = Path(workdir) / "stats.jsonl"
    if not path.exists():
        print(f"no runs recorded in {path}")
        return 0
    totals: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        s = totals.setdefault(r["target"], {"execs": 0, "runs": 0, "crash": 0, "hang": 0,
                                            "oom": 0, "seconds": 0.0})
        s["execs"] += r["execs"]
        s["runs"] += 1
        s["seconds"] += r["seconds"]
        for k in ("crash", "hang", "oom"):
            s[k] += bool(r[k])
    print(f"{'target':<10} {'executions':>12} {'runs':>5} {'cpu-s':>8} {'crash':>6} "
          f"{'hang':>5} {'oom':>4}")
    for t in common.HARNESSES:
        if t in totals:
            s = totals[t]
            print(f"{t:<10} {int(s['execs']):>12,} {int(s['runs']):>5} {s['seconds']:>8.0f} "
                  f"{int(s['crash']):>6} {int(s['hang']):>5} {int(s['oom']):>4}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-t", "--targets", default=",".join(common.HARNESSES),
                    help="comma-separated targets (default: all)")
    ap.add_argument("--seconds", type=int, default=0, help="time budget per target")
    ap.add_argument("--runs", type=int, default=0, help="input budget per target")
    ap.add_argument("--jobs", type=int, default=2, help="targets run at once")
    ap.add_argument("--timeout", type=int, default=10,
                    help="seconds one input may take before it counts as a hang")
    ap.add_argument("--rss-limit-mb", type=int, default=2048)
    ap.add_argument("--workdir", default=str(REPO / "build" / "fuzz"))
    ap.add_argument("--seed", action="store_true", help="rewrite the seed corpus and exit")
    ap.add_argument("--merge", action="store_true",
                    help="fold the work corpus into the committed corpus and exit")
    ap.add_argument("--merge-max-len", type=int, default=65536)
    ap.add_argument("--summary", action="store_true", help="totals of the recorded runs")
    args = ap.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(common.HARNESSES)
    if unknown:
        ap.error(f"unknown targets {sorted(unknown)}; known: {', '.join(common.HARNESSES)}")
    if args.summary:
        return summary(args.workdir)
    if args.seed:
        seed(targets)
        return 0
    if args.merge:
        merge(targets, args.workdir, args.merge_max_len)
        return 0
    if not args.runs and not args.seconds:
        args.seconds = 60
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    bad = False
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_target, t, args): t for t in targets}
        for fut in concurrent.futures.as_completed(futures):
            r = fut.result()
            verdict = ("CRASH" if r["crash"] else "HANG" if r["hang"] else
                       "OOM" if r["oom"] else "ok")
            bad |= verdict != "ok"
            print(f"{r['target']:<10} {r['execs']:>10,} execs in {r['seconds']:>7.1f}s "
                  f"({r['exec_per_sec']}/s)  corpus {r['corpus']:>5}  {verdict}"
                  + (f"  {r['artifacts']}" if r["artifacts"] else "") + f"  log {r['log']}",
                  flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
