"""Pieces of the arm64 stage shared by conftest.py and the tests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.paths import REPO


@dataclass
class GuestRun:
    out: Path                  # what e2e.sh wrote (live.pb.gz, run.sfcap, ...)
    status: int
    log: str
    seconds: dict[str, float] = field(default_factory=dict)
    mode: str = "vm"

    def json(self, name: str) -> dict:  # type: ignore[type-arg]
        return json.loads((self.out / name).read_text())


class Terminal:
    """Lines straight to the terminal, past pytest's capture: a long stage shows progress."""

    def __init__(self, config: pytest.Config) -> None:
        self.capman = config.pluginmanager.getplugin("capturemanager")

    def write(self, text: str) -> None:
        with self.capman.global_and_fixture_disabled():
            sys.stderr.write(text)
            sys.stderr.flush()


def stream(cmd: list[str], term: Terminal, log: list[str], env: dict[str, str] | None = None,
            timeout: float = 3600) -> int:
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", env=env)
    assert proc.stdout is not None
    end = time.monotonic() + timeout
    for line in proc.stdout:
        log.append(line)
        term.write("  arm64| " + line)
        if time.monotonic() > end:
            proc.kill()
    return proc.wait()
