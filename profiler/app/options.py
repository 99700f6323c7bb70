"""What a run was asked to do: the options of a live run or a recording, the PID-list
and size parsers the CLI and the agent share, and the machine's architecture."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

N = TypeVar("N", int, float)


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


def positive(kind: Callable[[str], N], what: str) -> Callable[[str], N]:
    """An argparse type: a number of `kind` above 0 (`what` names it in errors)."""
    def parse(text: str) -> N:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return v
    return parse


positive_int = positive(int, "an integer")


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
