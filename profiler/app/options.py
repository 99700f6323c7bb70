"""What a run was asked to do: the options of a live run or a recording, the PID-list
and size parsers the CLI and the agent share, and the machine's architecture."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field


@dataclass
class Options:
    pids: list[int] = field(default_factory=list)
    system_wide: bool = False
    freq: int = 99
    duration: float | None = None
    stack_size: int = 16384
    event: str = "cpu-clock"
    output: str | None = "sframe-prof.pb.gz"
    folded: str | None = None
    flamegraph: str | None = None
    command: list[str] = field(default_factory=list)
    record: str | None = None
    transport: str = "auto"
    quiet: bool = False
    pac_mask: int | None = None
    follow_children: bool = True


def machine_arch() -> str:
    m = os.uname().machine
    return "aarch64" if m in ("aarch64", "arm64") else "x86_64"


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return v


def pid_list(text: str) -> list[int]:
    try:
        pids = [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a PID list: {text!r}") from None
    if not pids or any(p <= 0 for p in pids):
        raise argparse.ArgumentTypeError(f"not a PID list: {text!r}")
    return pids


def stack_size(text: str) -> int:
    v = positive_int(text)
    if v % 512 or v > 65536:
        raise argparse.ArgumentTypeError("must be a multiple of 512, at most 65536")
    return v
