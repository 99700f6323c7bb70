"""Where the tests find the repository, its committed test material and the downloaded
arm64 sysroot."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
TARGETS = TESTS / "targets"               # committed test binaries (tests/targets/README.md)
SNAPSHOTS = TESTS / "snapshots"           # gdb ground truth (docs/snapshot-format.md)
DATA = TESTS / "data"
SYSROOT_SCRIPT = REPO / "scripts" / "wild" / "fetch_arm64_sysroot.sh"


def arm64_sysroot() -> Path:
    """The directory of Debian's arm64 packages that scripts/setup.sh unpacks (the wild
    panel's sysroot); a test fails, with what to run, when it is missing."""
    if not SYSROOT_SCRIPT.exists():
        pytest.fail(f"the arm64 sysroot is needed but {SYSROOT_SCRIPT} is missing")
    run = subprocess.run([str(SYSROOT_SCRIPT), "--print-dir"], capture_output=True,
                         text=True, check=False)
    where = run.stdout.strip()
    if run.returncode != 0 or not where or not Path(where).is_dir():
        pytest.fail(f"the arm64 sysroot is missing (`{SYSROOT_SCRIPT} --print-dir` said "
                    f"{where!r}, rc={run.returncode}): run {SYSROOT_SCRIPT} to make it")
    return Path(where)
