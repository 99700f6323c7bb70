"""The bounded CI pass of the fuzzers in tests/fuzz (issue 6, "Bad input, found by
machines").

* Every committed corpus input (the seeds built from the real fixtures, the inputs the
  long runs found new coverage with, and every input that once crashed or hung:
  ``regress-*``) is replayed in-process through its harness: no exception other than
  the parser's own one-line error may escape, and no input may take long.
* Then each harness runs under atheris/libFuzzer for a fixed input budget from that
  corpus (fixed seed, so a failure reproduces): any crash, hang (one input over
  TIMEOUT seconds) or memory blow-up fails the test with libFuzzer's report.

The long runs are scripts/fuzz.py; their execution counts are in tests/fuzz/README.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.paths import TESTS

FUZZ = TESTS / "fuzz"
sys.path.insert(0, str(FUZZ))

import common  # noqa: E402

# Mutated inputs per target in the CI pass, sized so that the whole pass (replay and
# fuzzing, seven targets) stays well under two minutes on the 2-core CI machine.
BUDGET = {"sframe": 20000, "cfi": 3000, "elf": 1500, "symbols": 1000, "capture": 6000,
          "unwind": 15000, "demangle": 15000}
TIMEOUT = 10          # seconds one input may take before libFuzzer calls it a hang
MAX_SECONDS = 60      # wall-clock guard per target on a slow or loaded machine
SLOW_INPUT = 5.0      # seconds one replayed input may take


def test_every_target_has_a_harness_and_a_corpus() -> None:
    assert set(BUDGET) == set(common.HARNESSES)
    for t in common.HARNESSES:
        assert (FUZZ / f"fuzz_{t}.py").is_file()
        files = common.corpus_files(t)
        assert any(p.name.startswith("seed-") for p in files), t
    total = sum(p.stat().st_size for t in common.HARNESSES for p in common.corpus_files(t))
    assert total < 8 << 20, f"committed corpus is {total} bytes"


@pytest.mark.parametrize("target", common.HARNESSES)
def test_corpus_replay(target: str) -> None:
    mod = common.load_harness(target)
    slow = []
    files = common.corpus_files(target)
    for p in files:
        t0 = time.monotonic()
        mod.one_input(p.read_bytes())   # raises on a crash
        dt = time.monotonic() - t0
        if dt > SLOW_INPUT:
            slow.append(f"{p.name}: {dt:.1f}s")
    assert not slow, slow
    assert files


@pytest.mark.slow
@pytest.mark.parametrize("target", common.HARNESSES)
def test_fuzz_budget(target: str, tmp_path: Path) -> None:
    import atheris  # noqa: F401  (the [test] extra; a missing fuzzer fails, never skips)
    corpus = common.corpus_files(target)
    runs = len(corpus) + BUDGET[target]
    cmd = [sys.executable, str(FUZZ / f"fuzz_{target}.py"), f"-runs={runs}", "-seed=1",
           f"-timeout={TIMEOUT}", "-rss_limit_mb=2048", f"-max_total_time={MAX_SECONDS}",
           "-print_final_stats=1", f"-artifact_prefix={tmp_path}/",
           str(tmp_path / "new"), str(common.CORPUS / target)]
    (tmp_path / "new").mkdir()
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                          timeout=MAX_SECONDS + 120, check=False)
    log = proc.stdout + proc.stderr
    execs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
    tail = "\n".join(line for line in log.splitlines()[-60:]
                     if not line.startswith("INFO: Instrumenting"))
    assert proc.returncode == 0, f"{target}: libFuzzer exited {proc.returncode}\n{tail}"
    assert execs and int(execs[-1]) >= min(runs, 500), tail
    print(f"{target}: {execs[-1]} inputs")
