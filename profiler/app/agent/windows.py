"""Windows: wall-clock aligned profile periods, one aggregate per process group.

A sample belongs to the window that holds its own timestamp (converted from
CLOCK_MONOTONIC to wall-clock time), not to the one in which it was read, so windows
are exact at their edges.  Window k covers [k * W, (k + 1) * W) in Unix time; the first
window of a run starts when sampling starts and the last one ends at the flush.

At the end of a window every group becomes one ProfileData (through the project's
Resolver) carrying the labels a fleet needs: ``host``, ``service``, ``container_id``
(when there is one), ``agent_version`` and any configured extra labels.  The pprof
writer puts them on every sample, next to the CLI's ``pid``, ``tid``, ``thread``,
``process``, ``unwind`` and ``unwind_reason``; the OTLP sink builds its request from the
same ProfileData (profiler.emit.otlp).  The comments name the window, the group's place
in the window (``group=3/7``, so a receiver can tell a window is complete) and the
agent's metrics.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from profiler.aggregate import Aggregator

if TYPE_CHECKING:
    from profiler.app.agent.procs import ProcInfo
    from profiler.model import ProfileData
    from profiler.symbolize.resolve import Resolver


def window_index(wall_ns: int, window_ns: int) -> int:
    return wall_ns // window_ns


class Clock:
    """CLOCK_MONOTONIC (sample timestamps) to wall-clock nanoseconds.

    The offset is re-read at each window so a stepped wall clock moves the windows
    with it."""

    def __init__(self) -> None:
        self.offset = 0
        self.update()

    def update(self) -> None:
        self.offset = time.time_ns() - time.monotonic_ns()

    def wall(self, mono_ns: int) -> int:
        return mono_ns + self.offset


@dataclass(frozen=True, slots=True)
class GroupKey:
    service: str
    pid: int            # 0 when grouping by service or container
    container_id: str


def group_key(info: ProcInfo, group_by: str) -> GroupKey:
    if info.kernel_thread:
        return GroupKey(info.service, 0, "")
    if group_by == "service":
        return GroupKey(info.service, 0, info.container_id)
    if group_by == "container":
        return GroupKey(info.service if not info.container_id else "", 0, info.container_id)
    return GroupKey(info.service, info.pid, info.container_id)


@dataclass
class Group:
    key: GroupKey
    agg: Aggregator = field(default_factory=Aggregator)
    exe: dict[int, str] = field(default_factory=dict)     # pid -> executable basename
    services: set[str] = field(default_factory=set)


@dataclass
class Window:
    index: int
    start_ns: int            # wall clock; later than index * W for a run's first window
    end_ns: int
    groups: dict[GroupKey, Group] = field(default_factory=dict)
    samples: int = 0

    def group(self, key: GroupKey) -> Group:
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = Group(key)
        return g


@dataclass
class Shipment:
    """One group's profile of one window, ready for the sinks."""

    window_start_ns: int
    window_end_ns: int
    seq: int                 # 1-based place of this group in its window
    count: int               # groups in the window
    service: str
    labels: dict[str, str]   # fleet labels (host, service, pid, container_id, ...)
    pprof_gz: bytes
    data: ProfileData        # what pprof_gz was written from, labels and comments included
    samples: int

    @property
    def window_id(self) -> str:
        return f"{self.window_start_ns // 1_000_000:d}"


def fleet_labels(key: GroupKey, host: str, version: str,
                 extra: dict[str, str]) -> dict[str, str]:
    labels = dict(extra)
    labels["host"] = host
    labels["service"] = key.service or (f"container-{key.container_id[:12]}"
                                        if key.container_id else "unknown")
    if key.pid:
        labels["pid"] = str(key.pid)
    if key.container_id:
        labels["container_id"] = key.container_id
    labels["agent_version"] = version
    return labels


def gzip_bytes(raw: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=buf, mode="wb", mtime=0, compresslevel=6) as gz:
        gz.write(raw)
    return buf.getvalue()


def build_shipments(win: Window, resolver: Resolver, *, period_ns: int, host: str,
                    version: str, extra_labels: dict[str, str], comments: list[str],
                    between: Callable[[], None] | None = None) -> list[Shipment]:
    """Every group of a closed window as a pprof with fleet labels, in a stable order."""
    from profiler.emit.pprof import build_profile
    keys = sorted(win.groups, key=lambda k: (k.service, k.container_id, k.pid))
    out: list[Shipment] = []
    start_s = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(win.start_ns / 1e9))
    for seq, key in enumerate(keys, 1):
        if between is not None:
            between()
        g = win.groups[key]
        data = resolver.profile(g.agg, period_ns=period_ns, start_ns=win.start_ns,
                                duration_ns=max(0, win.end_ns - win.start_ns),
                                process_names=g.exe)
        labels = fleet_labels(key, host, version, extra_labels)
        notes = [f"sframe-prof agent {version} host={host} window={win.start_ns // 1_000_000}"
                 f" start={start_s} group={seq}/{len(keys)}", *comments]
        data = dataclasses.replace(data, labels=labels, comments=[*data.comments, *notes])
        profile = build_profile(data)       # checked with check_valid there
        raw = profile.SerializeToString(deterministic=True)
        out.append(Shipment(win.start_ns, win.end_ns, seq, len(keys), labels["service"],
                            labels, gzip_bytes(raw), data, g.agg.samples))
    return out


def safe_name(text: str, limit: int = 64) -> str:
    """A file-name-safe version of a label value."""
    keep = "".join(c if c.isalnum() or c in "._-" else "_" for c in text)
    return keep[:limit].strip(".") or "_"


def iso_name(wall_ns: int) -> str:
    t = time.gmtime(wall_ns // 1_000_000_000)
    return time.strftime("%Y%m%dT%H%M%SZ", t) + f"{(wall_ns // 1_000_000) % 1000:03d}"
