"""The arm64 end-to-end stage: sframe-prof on a real arm64 kernel.

On an x86_64 host the guest half (tests/arm64/guest/e2e.sh) runs in the arm64 VM of
scripts/arm64-vm.sh, whose image is built first when it is not cached (about 11
minutes; never skipped).  On an arm64 machine the same script runs natively, as root,
without a VM.  Either way it runs once per session; the tests in this directory check
what it wrote.

These tests run after every other test of the session, so that a plain
`scripts/run_tests.sh` reports the x86_64 suite before the long arm64 stage.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import GuestRun, Terminal, stream  # tests/arm64/harness.py

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

VM = REPO / "scripts" / "arm64-vm.sh"
GUEST_SCRIPT = "tests/arm64/guest/e2e.sh"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "arm64vm: the arm64 end-to-end stage (a VM on x86_64, native on arm64)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [i for i in items if HERE in Path(str(i.fspath)).parents]
    if ours:
        rest = [i for i in items if HERE not in Path(str(i.fspath)).parents]
        items[:] = rest + ours
        for i in ours:
            i.add_marker(pytest.mark.arm64vm)


def native() -> bool:
    return platform.machine() in ("aarch64", "arm64")


@pytest.fixture(scope="session")
def arm64_run(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuestRun]:
    if os.geteuid() != 0:
        pytest.fail("the arm64 stage needs root (the VM image build, BPF in the guest)")
    term = Terminal(request.config)
    given = os.environ.get("SFRAME_PROF_ARM64_RESULTS")
    if given:   # check a directory e2e.sh wrote elsewhere (e.g. on an arm64 board)
        out = Path(given).resolve()
        yield GuestRun(out=out / "e2e" if (out / "e2e").is_dir() else out, status=0, log="",
                       mode="given")
        return
    out = tmp_path_factory.mktemp("arm64")
    log: list[str] = []
    seconds: dict[str, float] = {}
    # the wild panel's own programs for the guest (e2e.sh runs them from the /src share)
    build = stream(["bash", "scripts/wild/build_arm64_guest.sh"], term, log)
    if build != 0:
        pytest.fail("scripts/wild/build_arm64_guest.sh failed:\n" + "".join(log[-20:]))
    if native():
        term.write(f"\n==> arm64 stage: running {GUEST_SCRIPT} natively\n")
        t0 = time.monotonic()
        env = dict(os.environ, SFP_VM_OUT=str(out), PYTHONPATH=str(REPO))
        status = stream(["bash", GUEST_SCRIPT], term, log, env=env)
        seconds["guest"] = time.monotonic() - t0
        mode = "native"
    else:
        term.write("\n==> arm64 stage: guest image (built when not cached)\n")
        t0 = time.monotonic()
        status = stream([str(VM), "image"], term, log)
        seconds["image"] = time.monotonic() - t0
        if status != 0:
            pytest.fail(f"scripts/arm64-vm.sh image failed ({status}):\n" + "".join(log[-40:]))
        term.write("==> arm64 stage: booting the guest and running " + GUEST_SCRIPT + "\n")
        t0 = time.monotonic()
        status = stream([str(VM), "run", "--out", str(out), "--timeout", "1200", "--",
                          "bash", GUEST_SCRIPT], term, log)
        seconds["vm"] = time.monotonic() - t0
        mode = "vm"
    term.write("==> arm64 stage: guest part took "
               + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + "\n")
    yield GuestRun(out=out / "e2e", status=status, log="".join(log), seconds=seconds,
                   mode=mode)


@pytest.fixture(scope="session")
def terminal(request: pytest.FixtureRequest) -> Terminal:
    return Terminal(request.config)
