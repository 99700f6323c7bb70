"""Checks shared by the live profiling tests: require a machine that can run them, read
a pprof written by sframe-prof back with `go tool pprof -traces` and with the project's
own reader, and measure how many samples are reliable and lie on a program's known call
paths.

Used by tests/integration (test_live, test_agent, test_wild_live) and tests/arm64
(profiles taken inside the arm64 VM).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from profiler.emit.pprof_read import ReadProfile, ReadSample, read_pprof

# Functions of tests/targets/src/prog.c a sample can be in or called from.
PROG_FUNCS = frozenset({
    "leaf", "nest1", "nest2", "nest3", "deep", "hook_target", "call_hook", "by_value",
    "sort_some", "big_frame", "vla_frame", "usr1_handler", "tick_handler", "tick_work",
    "one_round", "worker", "main", "drap_frame",
})
# Where every complete user chain starts: the main thread and new threads (glibc's
# aarch64 clone3 names the new thread's outermost frame thread_start).
ENTRY_ROOTS = frozenset({"_start", "clone3", "__clone3", "clone", "__clone", "thread_start"})

Trace = tuple[dict[str, str], float, list[str]]   # labels, value in ms, functions leaf first

_SEPARATOR = "-----------+-------------------------------------------------------"


_traces_cache: dict[tuple[str, int, int], list[Trace]] = {}


def require_live(perf: bool = False) -> None:
    """Fail (never skip) when this machine cannot run live BPF tests (or, with `perf`,
    has no `perf` to compare with)."""
    if os.geteuid() != 0:
        pytest.fail("live BPF tests need root (CI runs them as root)")
    try:
        import bcc  # noqa: F401
    except ImportError:
        pytest.fail("bcc is not importable: run scripts/setup.sh")
    if perf and subprocess.run(["perf", "--version"], capture_output=True).returncode != 0:
        pytest.fail("perf is missing: install Debian's linux-perf")


def go_traces(path: Path, tmp_path: Path) -> list[Trace]:
    """(labels, value in ms, functions leaf first) per trace, from `go tool pprof -traces`
    (run once per file version)."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _traces_cache:
        _traces_cache[key] = _go_traces(path, tmp_path)
    return _traces_cache[key]


def _go_traces(path: Path, tmp_path: Path) -> list[Trace]:
    env = dict(os.environ, HOME=str(tmp_path), GOCACHE=str(tmp_path / "gocache"),
               GOFLAGS="-mod=mod", GOTOOLCHAIN="local")
    run = subprocess.run(["go", "tool", "pprof", "-traces", str(path)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    traces: list[Trace] = []
    for block in run.stdout.split(_SEPARATOR)[1:]:
        labels: dict[str, str] = {}
        value = 0.0
        funcs: list[str] = []
        for line in block.splitlines():
            if not line.strip():
                continue
            m = re.match(r"^\s*(\w+):\s+(.*)$", line)
            if m and not funcs and not re.match(r"^\s*[\d.]+(ms|s|us)\s", line):
                labels[m.group(1)] = m.group(2).strip()
                continue
            m = re.match(r"^\s*([\d.]+)(ms|s|us)\s+(.*)$", line)
            if m:
                scale = {"ms": 1.0, "s": 1000.0, "us": 0.001}[m.group(2)]
                value = float(m.group(1)) * scale
                funcs.append(m.group(3).strip())
            else:
                funcs.append(line.strip())
        if funcs:
            traces.append((labels, value, funcs))
    return traces


def on_known_path(funcs_leaf_first: list[str], known: Iterable[str] = PROG_FUNCS,
                  roots: Iterable[str] = ENTRY_ROOTS) -> bool:
    """A user chain of the program: rooted at a real entry and through its own functions.

    Kernel frames come first (leaf end) and synthetic ones are bracketed, so the root is
    the last frame whenever the sample has a user stack at all."""
    user = [f for f in funcs_leaf_first if not f.startswith("[")]
    if not user or user[-1] not in set(roots):
        return False
    known = set(known)
    return any(f in known for f in user)


@dataclass
class Stats:
    samples: int          # our reader's sample count
    reliable: float       # share of cpu time (go's reading) labelled reliable
    on_path: float        # share that is reliable and on a known path
    kernel: int = 0       # samples with kernel frames (the tick hit kernel mode)
    kernel_on_path: float = 0.0   # share of those that are reliable and on a known path

    def as_dict(self) -> dict[str, float]:
        return {"samples": self.samples, "reliable": round(self.reliable, 4),
                "on_path": round(self.on_path, 4), "kernel_samples": self.kernel,
                "kernel_on_path": round(self.kernel_on_path, 4)}


def profile_stats(path: Path, tmp_path: Path, known: Iterable[str] = PROG_FUNCS,
                  roots: Iterable[str] = ENTRY_ROOTS,
                  select: Callable[[dict[str, str]], bool] | None = None,
                  select_own: Callable[[ReadSample], bool] | None = None) -> Stats:
    """Reliable and on-path shares from go's reading, counts from ours; the two readers
    must agree on the totals.  `select`/`select_own` restrict both to some samples (for
    example one process, by its labels)."""
    known = frozenset(known)
    roots = frozenset(roots)
    prof = read_pprof(str(path))
    own = [s for s in prof.samples if select_own is None or select_own(s)]
    # go -traces does not say which frames are the kernel's: kernel frames come first
    # in a sample, so a trace whose leaf is a kernel frame (by our reader) is one.
    # Unnamed kernel frames (a profile reported away from the recording kernel) are
    # "[[kernel.kallsyms]]" there.
    kernel_names = {f.name for s in prof.samples for f in s.frames if f.is_kernel}
    kernel_names.add("[[kernel.kallsyms]]")
    traces = [t for t in go_traces(path, tmp_path) if select is None or select(t[0])]
    total = sum(v for _, v, _ in traces)
    reliable = sum(v for lab, v, _ in traces if lab.get("unwind") == "reliable")
    good = sum(v for lab, v, f in traces
               if lab.get("unwind") == "reliable" and on_known_path(f, known, roots))
    ktraces = [(lab, v, f) for lab, v, f in traces if f[0] in kernel_names]
    ktotal = sum(v for _, v, _ in ktraces)
    kgood = sum(v for lab, v, f in ktraces
                if lab.get("unwind") == "reliable" and on_known_path(f, known, roots))
    own_total = sum(s.values[0] for s in own)
    own_reliable = sum(s.values[0] for s in own if s.labels.get("unwind") == "reliable")
    own_kernel = sum(s.values[0] for s in own if s.frames and s.frames[0].is_kernel)
    # the two readers agree (go shows cpu time: samples * period)
    period_ms = prof.period / 1e6
    assert abs(total - own_total * period_ms) < 0.01 * total + 1, (total, own_total)
    assert abs(reliable - own_reliable * period_ms) < 0.01 * total + 1, (reliable, own_reliable)
    assert abs(ktotal - own_kernel * period_ms) < 0.01 * total + 1, (ktotal, own_kernel)
    if not total:
        return Stats(own_total, 0.0, 0.0, own_kernel, 0.0)
    return Stats(own_total, reliable / total, good / total, own_kernel,
                 kgood / ktotal if ktotal else 0.0)


def check_profile(path: Path, tmp_path: Path, min_samples: int,
                  known: Iterable[str] = PROG_FUNCS,
                  roots: Iterable[str] = ENTRY_ROOTS) -> dict[str, float]:
    """At least `min_samples`, >= 95% reliable and >= 95% on the known paths."""
    stats = profile_stats(path, tmp_path, known, roots)
    assert stats.samples >= min_samples, f"only {stats.samples} samples"
    assert stats.reliable >= 0.95, stats
    assert stats.on_path >= 0.95, stats
    return stats.as_dict()


def read(path: Path) -> ReadProfile:
    return read_pprof(str(path))
