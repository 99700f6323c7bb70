"""Live profiling on this machine's kernel: BPF sampling of real test programs.

These run the command line exactly as a user does (as root), read the pprof back with
`go tool pprof -traces` and with the project's own reader, and check that at least
95% of the samples are reliable and lie on the program's known call paths.  They need
root, bcc and BPF, which CI has: missing any of them is a failure, not a skip.
"""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import live
from helpers.paths import REPO

from profiler.emit.pprof_read import read_pprof

pytestmark = pytest.mark.bpf

TARGETS = REPO / "tests" / "targets"
# Where a complete user chain starts on x86_64: the main thread and new threads.
ENTRY_ROOTS = ("_start", "clone3", "__clone3", "clone", "__clone")


def profile(tmp_path: Path, prog: Path, *args: str, seconds: float = 4.0,
            extra: tuple[str, ...] = ()) -> tuple[Path, subprocess.CompletedProcess[str]]:
    live.require_live()
    out = tmp_path / "profile.pb.gz"
    cmd = [sys.executable, "-m", "profiler", "-d", str(seconds), "-o", str(out),
           "--folded", str(tmp_path / "folded.txt"), *extra, "--", str(prog), *args]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert run.returncode == 0, run.stderr
    return out, run


def check_profile(path: Path, tmp_path: Path, min_samples: int) -> dict[str, float]:
    """>= min_samples, >= 95% reliable and >= 95% on prog's known paths, read back by
    `go tool pprof -traces` and by our reader (tests/helpers/live.py)."""
    return live.check_profile(path, tmp_path, min_samples, roots=ENTRY_ROOTS)


def test_host_toolchain_program(tmp_path: Path) -> None:
    """SFrame V1 from the host's binutils 2.40, dynamically linked against host libc."""
    prog = TARGETS / "v1host-x86_64-O2" / "prog"
    out, run = profile(tmp_path, prog, "0", "1000", "1", "4000")
    stats = check_profile(out, tmp_path, min_samples=50)
    assert "% of user stacks reliable" in run.stderr
    folded = (tmp_path / "folded.txt").read_text().splitlines()
    assert folded and all(re.match(r"^prog;.* \d+$", x) for x in folded)
    print(stats)


def test_sid_v3_static_program(tmp_path: Path) -> None:
    """SFrame V3 from sid's binutils 2.47, static, so it runs on this host."""
    prog = TARGETS / "v3sid-x86_64-O2-static" / "prog"
    out, _ = profile(tmp_path, prog, "0", "1000", "1", "4000")
    stats = check_profile(out, tmp_path, min_samples=50)
    prof = read_pprof(str(out))
    methods_seen = {s.labels.get("unwind") for s in prof.samples}
    assert "reliable" in methods_seen
    print(stats)


def test_profile_by_pid_until_target_exits(tmp_path: Path) -> None:
    """-p PID: the target exits on its own mid-run; everything so far is written."""
    live.require_live()
    prog = TARGETS / "v3sid-x86_64-O2-static" / "prog"
    target = subprocess.Popen([str(prog), "0", "1000", "1"])
    try:
        time.sleep(0.2)
        out = tmp_path / "p.pb.gz"
        prof = subprocess.Popen([sys.executable, "-m", "profiler", "-p", str(target.pid),
                                 "-d", "60", "-o", str(out)],
                                stderr=subprocess.PIPE, text=True)
        assert prof.stderr is not None
        started = prof.stderr.readline()   # printed once sampling runs
        assert started.startswith(f"sframe-prof: sampling pid {target.pid} at 99 Hz"), started
        time.sleep(3)
        target.kill()
        target.wait()
        t0 = time.monotonic()
        _, err = prof.communicate(timeout=60)
        assert prof.returncode == 0, err
        assert time.monotonic() - t0 < 10, "the run did not end when the target exited"
    finally:
        if target.poll() is None:
            target.kill()
    read_back = read_pprof(str(out))
    assert sum(s.values[0] for s in read_back.samples) > 50
    assert gzip.open(out).read(1)


def test_record_then_report(tmp_path: Path) -> None:
    live.require_live()
    prog = TARGETS / "v1host-x86_64-O2" / "prog"
    cap = tmp_path / "run.sfcap"
    run = subprocess.run([sys.executable, "-m", "profiler", "record", "-d", "3", "-o", str(cap),
                          "--", str(prog), "0", "1000", "1"], capture_output=True, text=True,
                         timeout=180)
    assert run.returncode == 0, run.stderr
    assert re.search(r"(\d+) samples recorded", run.stderr)
    out = tmp_path / "report.pb.gz"
    rep = subprocess.run([sys.executable, "-m", "profiler", "report", str(cap), "-o", str(out),
                          "--flamegraph", str(tmp_path / "f.html")], capture_output=True,
                         text=True, timeout=180)
    assert rep.returncode == 0, rep.stderr
    check_profile(out, tmp_path, min_samples=50)
    assert (tmp_path / "f.html").stat().st_size > 1000


def test_errors_are_one_line(tmp_path: Path) -> None:
    live.require_live()
    run = subprocess.run([sys.executable, "-m", "profiler", "-p", "999999999", "-d", "1"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert run.stderr.strip().count("\n") == 0 and "999999999" in run.stderr
    run = subprocess.run([sys.executable, "-m", "profiler", "-d", "1", "--",
                          "/nonexistent/cmd"], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert run.stderr.strip().count("\n") == 0 and "/nonexistent/cmd" in run.stderr


def test_without_root_is_one_line(tmp_path: Path) -> None:
    """An unprivileged user gets one line naming what is missing, and status 1."""
    live.require_live()
    run = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          sys.executable, "-m", "profiler", "-p", "1", "-d", "1",
                          "-o", str(tmp_path / "x.pb.gz")],
                         capture_output=True, text=True, timeout=60, cwd="/")
    assert run.returncode == 1
    assert run.stderr == ("sframe-prof: error: live profiling needs root (BPF and perf "
                          "events): run with sudo\n")


def test_report_refuses_a_different_build(tmp_path: Path) -> None:
    """A capture analysed with another build of a library at the recorded path: that
    file is not used (its build ID differs), so no chain through it is called reliable."""
    live.require_live()
    import shutil
    d = TARGETS / "v1host-x86_64-O2-shlib"
    cap = tmp_path / "run.sfcap"
    run = subprocess.run([sys.executable, "-m", "profiler", "record", "-F", "999", "-d", "3",
                          "-o", str(cap), "--", str(d / "prog"), "0", "1000", "1"],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    root = tmp_path / "root"
    fake = root / str(d).lstrip("/")
    fake.mkdir(parents=True)
    shutil.copy(d / "prog", fake / "prog")
    shutil.copy(TARGETS / "v2trixie-x86_64-O2-shlib" / "libsfpshape.so", fake / "libsfpshape.so")
    libc = Path("/usr/lib/x86_64-linux-gnu/libc.so.6")
    (root / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    shutil.copy(libc, root / "usr/lib/x86_64-linux-gnu/libc.so.6")
    out = tmp_path / "r.pb.gz"
    rep = subprocess.run([sys.executable, "-m", "profiler", "report", str(cap), "--root",
                          str(root), "-o", str(out)], capture_output=True, text=True, timeout=180)
    assert rep.returncode == 0, rep.stderr
    assert "libsfpshape.so is not the recorded file" in rep.stderr
    prof = read_pprof(str(out))
    for s in prof.samples:
        if s.labels.get("unwind") == "reliable":
            assert not any(f.mapping and f.mapping.path.endswith("libsfpshape.so")
                           for f in s.frames)
    # with the right files, the same capture unwinds through the library
    good = subprocess.run([sys.executable, "-m", "profiler", "report", str(cap), "-o",
                           str(tmp_path / "g.pb.gz")], capture_output=True, text=True,
                          timeout=180)
    assert good.returncode == 0 and "not the recorded file" not in good.stderr
    gprof = read_pprof(str(tmp_path / "g.pb.gz"))
    assert any(s.labels.get("unwind") == "reliable" and any(
        f.mapping and f.mapping.path.endswith("libsfpshape.so") for f in s.frames)
        for s in gprof.samples)
