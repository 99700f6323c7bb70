"""Running the tools the tests compare against, and waiting for a condition."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping


def run_ok(*args: str, stdin: str | None = None, env: Mapping[str, str] | None = None,
           cwd: str | None = None, tail: int | None = None) -> str:
    """stdout of `args`; an AssertionError naming the command and its stderr (its last
    `tail` characters when given) when it exits non-zero."""
    res = subprocess.run(list(args), input=stdin, capture_output=True, text=True, env=env,
                         cwd=cwd)
    if res.returncode != 0:
        err = res.stderr if tail is None else res.stderr[-tail:]
        raise AssertionError(f"{' '.join(args)} failed ({res.returncode}): {err}")
    return res.stdout


def wait_for(cond: Callable[[], object], timeout: float = 10.0, what: str = "",
             interval: float = 0.1) -> None:
    """Poll `cond` every `interval` seconds until it is true; fail after `timeout`."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}" if what
                         else "timed out")
